// The metrics panel (a WebviewPanel): relays the current run's history and live events to the
// webview and the webview's steering commands back to the run. The webview never opens a socket.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { HostToWebview, TrainerEvent, WebviewToHostSchema, describeCommand } from '../protocol';
import { renderPanelHtml } from '../protocol/panelDocument';
import { PanelRelay } from './panelRelay';
import { RunManager } from './runManager';
import { notify } from './vscode/ui';

export const PANEL_VIEW_TYPE = 'plTrainer.panel';
/** workspaceState key: the run directory overlaid on the charts. */
const COMPARE_STATE_KEY = 'plTrainer.compareRunDir';

export class MetricsPanel implements vscode.Disposable {
  private static instance: MetricsPanel | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly relay = new PanelRelay((message) => void this.panel.webview.postMessage(message));
  private ready = false;
  /** A recorded run overlaid on the charts (re-sent whenever the webview reloads). */
  private compare: { runId: string; events: TrainerEvent[] } | null = null;

  get compareRunId(): string | undefined {
    return this.compare?.runId;
  }

  /**
   * Overlays a recorded run on the charts, or clears the overlay with null. The run directory is kept in
   * the workspace state: a window reload brings the overlay back.
   */
  setCompare(run: { runId: string; events: TrainerEvent[] } | null, runDir?: string): void {
    this.compare = run;
    void this.context.workspaceState.update(COMPARE_STATE_KEY, run && runDir ? runDir : undefined);
    this.post({ type: 'compare', run });
  }

  /** Shows the panel (creating it if needed) for the current run. */
  static show(context: vscode.ExtensionContext, runs: RunManager, preserveFocus = false): MetricsPanel {
    if (MetricsPanel.instance) {
      MetricsPanel.instance.panel.reveal(undefined, preserveFocus);
      return MetricsPanel.instance;
    }
    const panel = vscode.window.createWebviewPanel(PANEL_VIEW_TYPE, 'PL Training', { viewColumn: vscode.ViewColumn.Active, preserveFocus }, MetricsPanel.options(context));
    MetricsPanel.instance = new MetricsPanel(panel, context, runs);
    return MetricsPanel.instance;
  }

  static get current(): MetricsPanel | undefined {
    return MetricsPanel.instance;
  }

  /** Restores a panel after a window reload (VS Code keeps the tab; we give it content again). */
  static registerSerializer(context: vscode.ExtensionContext, runs: RunManager): vscode.Disposable {
    return vscode.window.registerWebviewPanelSerializer(PANEL_VIEW_TYPE, {
      async deserializeWebviewPanel(panel: vscode.WebviewPanel) {
        panel.webview.options = MetricsPanel.options(context);
        MetricsPanel.instance?.dispose();
        MetricsPanel.instance = new MetricsPanel(panel, context, runs);
      },
    });
  }

  private static options(context: vscode.ExtensionContext): vscode.WebviewOptions & vscode.WebviewPanelOptions {
    return {
      enableScripts: true,
      // Charts keep their own state; the host re-sends a snapshot when the webview is recreated.
      retainContextWhenHidden: false,
      localResourceRoots: [vscode.Uri.joinPath(context.extensionUri, 'dist', 'webview'), vscode.Uri.joinPath(context.extensionUri, 'media')],
    };
  }

  private constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly context: vscode.ExtensionContext,
    private readonly runs: RunManager,
  ) {
    const webview = panel.webview;
    const dist = vscode.Uri.joinPath(context.extensionUri, 'dist', 'webview');
    panel.iconPath = vscode.Uri.joinPath(context.extensionUri, 'media', 'icon.svg');
    webview.html = renderPanelHtml({
      cspSource: webview.cspSource,
      nonce: randomBytes(16).toString('base64'),
      scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'main.js')).toString(),
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'main.css')).toString(),
      title: 'PL Training',
    });
    this.disposables.push(
      webview.onDidReceiveMessage((m) => this.receive(m)),
      panel.onDidDispose(() => this.dispose()),
      // A hidden webview misses messages; on becoming visible it reloads and says `ready` again.
      panel.onDidChangeViewState(() => {
        if (!panel.visible) {
          this.ready = false;
          this.relay.webviewGone();
        }
      }),
      runs.onDidChangeCurrent((s) => {
        this.panel.title = s ? `PL Training · ${s.runId}` : 'PL Training';
        this.relay.follow(s);
      }),
    );
    this.panel.title = runs.current ? `PL Training · ${runs.current.runId}` : 'PL Training';
    this.relay.follow(runs.current);
    // The overlay chosen before a reload, if its run directory is still there.
    const compareDir = context.workspaceState.get<string>(COMPARE_STATE_KEY);
    if (compareDir && fs.existsSync(compareDir)) this.compare = runs.recordedEvents(compareDir);
  }

  private post(message: HostToWebview): void {
    // Until the webview says `ready` it would drop messages; the snapshot it asks for covers them.
    if (this.ready) void this.panel.webview.postMessage(message);
  }

  private receive(raw: unknown): void {
    const r = WebviewToHostSchema.safeParse(raw);
    if (!r.success) return;
    const m = r.data;
    if (m.type === 'ready') {
      this.ready = true;
      this.relay.webviewReady();
      if (this.compare) this.post({ type: 'compare', run: this.compare });
      return;
    }
    if (m.type === 'clearCompare') {
      this.compare = null;
      void this.context.workspaceState.update(COMPARE_STATE_KEY, undefined);
      return;
    }
    if (m.type === 'saveFile') {
      void this.saveExport(m.fileName, m.content);
      return;
    }
    const session = this.runs.current;
    if (!session) {
      // The panel's `sent` entry needs an answer; with no run there is no run id to address a fact to.
      void this.panel.webview.postMessage({ type: 'snapshot', run: null, events: [], commands: [] } satisfies HostToWebview);
      notify('warn', `PL training: ${describeCommand(m.command, 'unit')} failed: no run is active`);
      return;
    }
    const status = session.issue(m.command, m.id);
    if (status.status !== 'pending') notify('warn', `PL training: ${describeCommand(m.command, session.view.unitName)} ${status.status}: ${status.reason}`);
  }

  /** Export from the panel: ask where (the workspace folder, not the hidden run directory), then say where it went. */
  private async saveExport(fileName: string, content: string): Promise<vscode.Uri | undefined> {
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const target = await vscode.window.showSaveDialog({
      defaultUri: folder ? vscode.Uri.joinPath(folder, fileName) : undefined,
      filters: fileName.endsWith('.csv') ? { CSV: ['csv'] } : { JSON: ['json'] },
      title: 'Export PL training metrics',
    });
    if (!target) return undefined;
    await vscode.workspace.fs.writeFile(target, Buffer.from(content, 'utf8'));
    this.lastExport = target;
    notify('info', `Exported ${vscode.workspace.asRelativePath(target)}`, {
      actions: [
        { title: 'Open', run: () => void vscode.window.showTextDocument(target) },
        { title: 'Reveal', run: () => void vscode.commands.executeCommand('revealInExplorer', target) },
      ],
    });
    return target;
  }

  /** Where the last export from this panel went (tests read it). */
  lastExport: vscode.Uri | undefined;

  dispose(): void {
    if (MetricsPanel.instance === this) MetricsPanel.instance = undefined;
    this.relay.dispose();
    for (const d of this.disposables) d.dispose();
    this.panel.dispose();
  }
}
