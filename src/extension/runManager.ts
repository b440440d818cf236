// Owns the runs the extension knows about: starts trainers, re-attaches to live ones found in run
// directories (after a reload or a dropped Remote-SSH link), and routes steering commands.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { RUN_FILES, SteeringCommand, TERMINAL_STATES, TrainerEvent } from '../protocol';
import { analyzeConfigText, lineOf } from './config/configAnalysis';
import { LAUNCH_FILE, launchTrainer, makeRunDirName } from './run/launcher';
import { isLiveRun, listRunDirs, processAlive, readRecordedEvents, readRunInfo, readToken, tailLog } from './run/runDirectory';
import { RunSession, describeCommand } from './run/runSession';
import { TrainerConnection } from './run/trainerConnection';
import { LogTail } from './run/logTail';
import { hasCheckpoint } from '../trainer/checkpoint';

export class RunManager implements vscode.Disposable {
  private readonly sessions = new Map<string, RunSession>();
  private readonly tails = new Map<string, LogTail>();
  /** Runs whose end was already announced (a resumed run can end again). */
  private readonly announcedEnd = new Set<string>();
  private _current: RunSession | undefined;
  private readonly _onDidChangeCurrent = new vscode.EventEmitter<RunSession | undefined>();
  /** The current run changed (another run became current). */
  readonly onDidChangeCurrent = this._onDidChangeCurrent.event;
  private readonly _onDidChange = new vscode.EventEmitter<RunSession>();
  /** Something a view shows changed in some run (state, step, α, experts, connection). */
  readonly onDidChange = this._onDidChange.event;
  private readonly _onDidAnnounceEnd = new vscode.EventEmitter<RunSession>();
  /** A run's end (completed, stopped, failed) was announced to the user: once per end. */
  readonly onDidAnnounceEnd = this._onDidAnnounceEnd.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  get current(): RunSession | undefined {
    return this._current;
  }

  get all(): RunSession[] {
    return [...this.sessions.values()];
  }

  /** The run started from this config file, if it is still active. */
  activeRunFor(configPath: string): RunSession | undefined {
    return this.all.find((s) => s.active && s.configPath && path.resolve(s.configPath) === path.resolve(configPath));
  }

  setCurrent(s: RunSession | undefined): void {
    if (this._current === s) return;
    this._current = s;
    this._onDidChangeCurrent.fire(s);
  }

  runsRoot(folder: vscode.WorkspaceFolder): string {
    const rel = vscode.workspace.getConfiguration('plTrainer', folder.uri).get<string>('runsDirectory') || '.pltrain/runs';
    return path.resolve(folder.uri.fsPath, rel);
  }

  /** Validates the config, starts a detached trainer and attaches to it. */
  async start(configUri: vscode.Uri): Promise<RunSession | undefined> {
    if (!vscode.workspace.isTrusted) {
      void vscode.window.showErrorMessage('PL Trainer does not start training in an untrusted workspace.');
      return undefined;
    }
    const doc = await vscode.workspace.openTextDocument(configUri);
    const analysis = analyzeConfigText(doc.getText(), path.dirname(configUri.fsPath));
    if (!analysis.config) {
      const first = analysis.problems[0];
      const line = first ? lineOf(doc.getText(), first.range.start) : 1;
      const more = analysis.problems.length > 1 ? ` (and ${analysis.problems.length - 1} more)` : '';
      const msg = `Cannot start: ${path.basename(configUri.fsPath)} line ${line}: ${first?.message ?? 'invalid config'}${more}`;
      this.log.error(msg);
      void vscode.window.showErrorMessage(msg, 'Show config').then((a) => {
        if (a && first) {
          const pos = doc.positionAt(first.range.start);
          void vscode.window.showTextDocument(doc, { selection: new vscode.Range(pos, doc.positionAt(first.range.end)) });
        }
      });
      return undefined;
    }
    const existing = this.activeRunFor(configUri.fsPath);
    if (existing) {
      this.setCurrent(existing);
      void vscode.window.showInformationMessage(`A run of ${path.basename(configUri.fsPath)} is already ${existing.state}.`);
      return existing;
    }
    const folder = vscode.workspace.getWorkspaceFolder(configUri) ?? vscode.workspace.workspaceFolders?.[0];
    const root = folder ? this.runsRoot(folder) : path.join(path.dirname(configUri.fsPath), '.pltrain', 'runs');
    const runDir = path.join(root, makeRunDirName(analysis.config.name));
    const nodePath = vscode.workspace.getConfiguration('plTrainer').get<string>('nodePath') || process.execPath;
    const trainerScript = vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'trainer.js').fsPath;
    this.log.info(`starting trainer: ${nodePath} ${trainerScript} --config ${configUri.fsPath} --run-dir ${runDir}`);

    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `PL training: ${analysis.config.name}`, cancellable: true },
      async (progress, cancel) => {
        progress.report({ message: 'starting the trainer and loading the TensorFlow.js backend…' });
        const launched = launchTrainer({ nodePath, trainerScript, configPath: configUri.fsPath, runDir, cwd: path.dirname(configUri.fsPath) });
        cancel.onCancellationRequested(() => {
          try {
            process.kill(launched.pid, 'SIGTERM');
          } catch {
            /* already gone */
          }
        });
        let info;
        try {
          info = await launched.announced;
        } catch (e) {
          const message = (e as Error).message;
          this.log.error(`trainer failed to start: ${message}`);
          void vscode.window.showErrorMessage(`PL training failed to start: ${message.split('\n')[0]}`, { detail: message, modal: false }, 'Show log').then((a) => {
            if (a) this.log.show(true);
          });
          return undefined;
        }
        progress.report({ message: `backend ${info.backend?.name ?? '?'} ready, connecting…` });
        const session = this.track(info.runId, runDir, configUri.fsPath);
        this.connect(session, info.port, launched.token, launched.pid);
        this.setCurrent(session);
        await new Promise<void>((resolve) => {
          if (session.hello) return resolve();
          const sub = session.onDidChange.on(() => {
            if (session.hello || !session.active) {
              sub.dispose();
              resolve();
            }
          });
          setTimeout(() => {
            sub.dispose();
            resolve();
          }, 20_000);
        });
        this.log.info(`run ${info.runId}: backend ${info.backend?.name} (${info.backend?.gpu ? 'GPU' : 'CPU'}) — ${info.backend?.detail ?? ''}`);
        return session;
      },
    );
  }

  /** Finds trainers still running in the workspace's run directories and re-attaches to them. */
  reattachAll(): RunSession[] {
    const attached: RunSession[] = [];
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      for (const { dir, info } of listRunDirs(this.runsRoot(folder))) {
        if (!isLiveRun(info) || this.sessions.has(dir)) continue;
        const token = readToken(dir);
        if (!token) {
          this.log.warn(`run ${info.runId} is alive but its token file is unreadable; not re-attaching`);
          continue;
        }
        const configPath = this.configPathOf(dir);
        const session = this.track(info.runId, dir, configPath);
        session.state = info.state;
        session.totalSteps = info.totalSteps;
        this.connect(session, info.port, token, info.pid);
        this.log.info(`re-attached to run ${info.runId} (pid ${info.pid}, port ${info.port})`);
        attached.push(session);
      }
    }
    if (attached.length && !this._current) this.setCurrent(attached[0]);
    return attached;
  }

  /** Opens a finished run from its directory (history from metrics.jsonl and commands.jsonl). */
  openRecorded(runDir: string): RunSession {
    const known = this.sessions.get(runDir);
    if (known) {
      this.setCurrent(known);
      return known;
    }
    const info = readRunInfo(runDir);
    const session = this.track(info?.runId ?? path.basename(runDir), runDir, this.configPathOf(runDir));
    session.loadFromDisk();
    this.setCurrent(session);
    return session;
  }

  /**
   * Continues a run that is no longer training (killed, failed, stopped) from its last checkpoint, in
   * the same run directory and with the same step numbering; the panel keeps the history.
   */
  async resumeRun(runDir: string): Promise<RunSession | undefined> {
    if (isLiveRun(readRunInfo(runDir))) {
      void vscode.window.showInformationMessage('That run is still training.');
      return this.sessions.get(runDir);
    }
    if (!hasCheckpoint(runDir)) {
      void vscode.window.showErrorMessage(`Run ${path.basename(runDir)} has no checkpoint to resume from.`);
      return undefined;
    }
    const nodePath = vscode.workspace.getConfiguration('plTrainer').get<string>('nodePath') || process.execPath;
    const trainerScript = vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'trainer.js').fsPath;
    const launched = launchTrainer({ nodePath, trainerScript, configPath: this.configPathOf(runDir) ?? '', runDir, cwd: runDir, resume: true });
    let info;
    try {
      info = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Resuming ${path.basename(runDir)} from its checkpoint…` }, () => launched.announced);
    } catch (e) {
      const message = (e as Error).message;
      this.log.error(`resume failed: ${message}`);
      void vscode.window.showErrorMessage(`Could not resume: ${message.split('\n')[0]}`, 'Show log').then((a) => a && this.log.show(true));
      return undefined;
    }
    let session = this.sessions.get(runDir);
    if (!session) {
      session = this.track(info.runId, runDir, this.configPathOf(runDir));
      session.loadFromDisk();
    } else if (!this.tails.has(runDir)) {
      this.tails.set(runDir, new LogTail(path.join(runDir, RUN_FILES.log), (lines) => lines.forEach((l) => this.log.info(`[${info.runId} trainer] ${l}`)), false));
    }
    // The session still says how the run ended; it is starting again (and may end again, announced anew).
    session.markResuming();
    this.announcedEnd.delete(runDir);
    this.connect(session, info.port, launched.token, launched.pid);
    this.setCurrent(session);
    this.log.info(`resumed run ${info.runId} (pid ${info.pid})`);
    return session;
  }

  /** A run's recorded history (metrics and acks from its JSONL files), for overlays. */
  recordedEvents(runDir: string): { runId: string; events: TrainerEvent[] } {
    return { runId: readRunInfo(runDir)?.runId ?? path.basename(runDir), events: readRecordedEvents(runDir) };
  }

  /** Deletes a finished run's directory (a live run must be stopped first). */
  deleteRun(runDir: string): boolean {
    const s = this.sessions.get(runDir);
    if ((s && s.active) || isLiveRun(readRunInfo(runDir))) return false;
    s?.dispose();
    this.sessions.delete(runDir);
    if (this._current === s) this.setCurrent(undefined);
    fs.rmSync(runDir, { recursive: true, force: true });
    return true;
  }

  /** Sends a command to a run (default: the current one) and returns its final status. */
  async issue(command: SteeringCommand, runDir?: string) {
    const s = runDir ? this.sessions.get(runDir) : this._current;
    if (!s) {
      void vscode.window.showWarningMessage('No PL training run is active.');
      return undefined;
    }
    const status = s.issue(command);
    const final = status.status === 'pending' ? await s.waitForCommand(status.id) : status;
    if (final.status === 'rejected' || final.status === 'failed') {
      void vscode.window.showWarningMessage(`PL training: ${describeCommand(command)} ${final.status}: ${final.reason ?? ''}`);
    } else {
      vscode.window.setStatusBarMessage(`PL training: ${describeCommand(command)} applied at step ${final.step}`, 5000);
    }
    return final;
  }

  dispose(): void {
    // Detach only: trainers keep running without the window and are re-attached next time.
    for (const s of this.sessions.values()) s.dispose();
    for (const t of this.tails.values()) t.dispose();
    this.sessions.clear();
    this.tails.clear();
    this._onDidChange.dispose();
    this._onDidChangeCurrent.dispose();
    this._onDidAnnounceEnd.dispose();
  }

  private configPathOf(runDir: string): string | undefined {
    try {
      const launch = JSON.parse(fs.readFileSync(path.join(runDir, LAUNCH_FILE), 'utf8')) as { configPath?: unknown };
      return typeof launch.configPath === 'string' ? launch.configPath : undefined;
    } catch {
      return undefined;
    }
  }

  private track(runId: string, runDir: string, configPath: string | undefined): RunSession {
    const session = new RunSession(runId, runDir, configPath, (m) => this.log.info(`[${runId}] ${m}`));
    this.sessions.set(runDir, session);
    if (session.active) {
      // Mirror the trainer's own output (backend loading, progress lines, stack traces) into the channel.
      const tail = new LogTail(path.join(runDir, RUN_FILES.log), (lines) => {
        for (const l of lines) this.log.info(`[${runId} trainer] ${l}`);
      });
      this.tails.set(runDir, tail);
    }
    session.onDidChange.on(() => {
      this._onDidChange.fire(session);
      if (!this.announcedEnd.has(runDir) && TERMINAL_STATES.includes(session.state)) {
        this.announcedEnd.add(runDir);
        this.tails.get(runDir)?.dispose();
        this.tails.delete(runDir);
        this.announceEnd(session);
      }
    });
    return session;
  }

  private connect(session: RunSession, port: number, token: string, pid: number): void {
    const connection = new TrainerConnection({
      port,
      token,
      lastSeq: () => session.seq,
      shouldReconnect: () => session.active && processAlive(pid),
      log: (m) => this.log.debug(`[${session.runId}] ${m}`),
    });
    connection.onConnectedChange.on((up) => {
      if (up || !session.active) return;
      // Lost the trainer: if its process is gone without saying why, it crashed (OOM, kill -9…).
      setTimeout(() => {
        if (session.active && !processAlive(pid)) {
          const info = readRunInfo(session.runDir);
          const ended = info && TERMINAL_STATES.includes(info.state);
          session.markEnded(ended ? info.state : 'failed', info?.reason ?? 'the trainer process exited unexpectedly (killed, out of memory, or crashed); its data and last checkpoint are kept');
        }
      }, 500);
    });
    session.attach(connection);
  }

  private announceEnd(session: RunSession): void {
    this._onDidAnnounceEnd.fire(session);
    const what = `PL training ${session.runId} ${session.state} at step ${session.step}`;
    if (session.state === 'failed') {
      const tail = tailLog(session.runDir, 10);
      this.log.error(`${what}: ${session.stateReason ?? ''}\n${tail}`);
      void vscode.window.showErrorMessage(`${what}: ${session.stateReason ?? 'unknown cause'}`, { detail: tail }, 'Show log').then((a) => {
        if (a) this.log.show(true);
      });
    } else {
      this.log.info(`${what}${session.stateReason ? ` (${session.stateReason})` : ''}`);
      void vscode.window.showInformationMessage(`${what}.`);
    }
  }
}
