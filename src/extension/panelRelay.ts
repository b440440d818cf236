// What the metrics panel is told about the current run, without the `vscode` module (the panel and
// the latency benchmark share it): a snapshot when it asks or when the history was rewritten, then the
// trainer's events and the host's facts in the order the host folded them, each exactly once.
import type { HostToWebview } from '../protocol';
import type { RunSession } from './run/runSession';

export class PanelRelay {
  private subs: { dispose(): void }[] = [];
  private session: RunSession | undefined;
  /** Until the webview says `ready` it would drop messages; the snapshot it then asks for covers them. */
  private ready = false;

  constructor(private readonly post: (message: HostToWebview) => void) {}

  /** Relays `session` from now on (a snapshot first). */
  follow(session: RunSession | undefined): void {
    for (const s of this.subs) s.dispose();
    this.subs = [];
    this.session = session;
    if (session) {
      const runId = session.runId;
      this.subs.push(
        session.onEvents.on((events) => this.send({ type: 'events', runId, events })),
        session.onFact.on((fact) => this.send({ type: 'fact', runId, fact })),
        session.onReset.on(() => this.ready && this.snapshot()),
      );
    }
    if (this.ready) this.snapshot();
  }

  /** The webview loaded (again) and asks for everything. */
  webviewReady(): void {
    this.ready = true;
    this.snapshot();
  }

  /** The webview is hidden: VS Code drops its document, and it will say `ready` again. */
  webviewGone(): void {
    this.ready = false;
  }

  snapshot(): void {
    const s = this.session;
    this.post({ type: 'snapshot', run: s ? s.summary() : null, events: s ? s.events : [], commands: s ? s.commandStatuses() : [] });
  }

  dispose(): void {
    for (const s of this.subs) s.dispose();
    this.subs = [];
  }

  private send(message: HostToWebview): void {
    if (this.ready) this.post(message);
  }
}
