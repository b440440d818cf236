// Owns the runs the extension knows about: starts trainers, re-attaches to live ones found in run
// directories (after a reload or a dropped Remote-SSH link), resumes ended ones, and routes steering
// commands. Free of the `vscode` module: what it says to the user goes through RunHost.ui
// (src/extension/vscode/ supplies it), so the lifecycle is tested in plain Node.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RUN_FILES, TERMINAL_STATES, backendLabel, describeCommand, describeEndpoint, runEndpoint, type CommandStatus, type SteeringCommand, type TrainerEndpoint, type TrainerEvent } from '../protocol';
import { analyzeConfigText, lineOf } from './config/configAnalysis';
import { slowFamilyNotice } from './config/starters';
import { launchTrainer, makeRunDirName, type LaunchedTrainer } from './run/launcher';
import { checkPythonAsync, findPythonAsync, pythonPackageDir } from '../protocol/pythonEngine';
import { LogTail } from './run/logTail';
import type { RunHost } from './run/runHost';
import { isLiveRun, listRunDirs, processAlive, readRecordedEvents, readRunDirectory, readRunInfo, readToken, tailLog, type RunDirectory } from './run/runDirectory';
import { RunSession } from './run/runSession';
import { Signal } from './run/signal';
import { TrainerConnection } from './run/trainerConnection';

export class RunManager {
  private readonly sessions = new Map<string, RunSession>();
  private readonly tails = new Map<string, LogTail>();
  /** Runs whose end was already announced (a resumed run can end again). */
  private readonly announcedEnd = new Set<string>();
  private _current: RunSession | undefined;
  private readonly currentChanged = new Signal<RunSession | undefined>();
  private readonly changed = new Signal<RunSession>();
  private readonly endAnnounced = new Signal<RunSession>();
  private readonly tracked = new Signal<RunSession>();
  private readonly showRequested = new Signal<RunSession>();
  /** The current run changed (another run became current). */
  readonly onDidChangeCurrent = this.currentChanged.event;
  /** Something a view shows changed in some run (state, step, α, units, connection). */
  readonly onDidChange = this.changed.event;
  /** A run's end (completed, stopped, failed) was announced to the user: once per end. */
  readonly onDidAnnounceEnd = this.endAnnounced.event;
  /** A run became known (started, resumed, re-attached or opened from its directory). */
  readonly onDidTrack = this.tracked.event;
  /** The user asked to see a run (a notification's "Show run"): the panel should show it. */
  readonly onDidRequestShow = this.showRequested.event;

  constructor(private readonly host: RunHost) {}

  get current(): RunSession | undefined {
    return this._current;
  }

  get all(): RunSession[] {
    return [...this.sessions.values()];
  }

  /** Runs still training (or starting, or paused). */
  get live(): RunSession[] {
    return this.all.filter((s) => s.active);
  }

  /** Makes `s` the run the views show and asks for the panel (the extension opens it). */
  show(s: RunSession): void {
    this.setCurrent(s);
    this.showRequested.fire(s);
  }

  /** The run started from this config file, if it is still active. */
  activeRunFor(configPath: string): RunSession | undefined {
    return this.all.find((s) => s.active && s.configPath && path.resolve(s.configPath) === path.resolve(configPath));
  }

  setCurrent(s: RunSession | undefined): void {
    if (this._current === s) return;
    this._current = s;
    this.currentChanged.fire(s);
  }

  runsRoot(folder: string): string {
    return this.host.runsRoot(folder);
  }

  /** Validates the config, starts a detached trainer and attaches to it. */
  async start(configPath: string): Promise<RunSession | undefined> {
    const { ui, log } = this.host;
    if (!this.host.isTrusted()) {
      ui.notify('error', 'PL Trainer does not start training in an untrusted workspace.');
      return undefined;
    }
    const text = await this.host.readConfig(configPath);
    const analysis = analyzeConfigText(text, path.dirname(configPath));
    if (!analysis.config) {
      const first = analysis.problems[0];
      const line = first ? lineOf(text, first.range.start) : 1;
      const more = analysis.problems.length > 1 ? ` (and ${analysis.problems.length - 1} more)` : '';
      const msg = `Cannot start: ${path.basename(configPath)} line ${line}: ${first?.message ?? 'invalid config'}${more}`;
      log.error(msg);
      ui.notify('error', msg, { actions: first ? [{ title: 'Show config', run: () => ui.reveal(configPath, first.range.start, first.range.end) }] : [] });
      return undefined;
    }
    const existing = this.activeRunFor(configPath);
    if (existing) {
      ui.notify('info', `A run of ${path.basename(configPath)} is already ${existing.view.state ?? 'starting'} (${existing.runId}).`, {
        actions: [{ title: 'Show run', run: () => this.show(existing) }],
      });
      return existing;
    }
    const folder = this.folderOf(configPath) ?? this.host.workspaceFolders()[0];
    const root = folder ? this.runsRoot(folder) : path.join(path.dirname(configPath), '.pltrain', 'runs');
    const runDir = path.join(root, makeRunDirName(analysis.config.name));
    const nodePath = this.host.nodePath();
    let python: { interpreter: string; packageDir: string } | undefined;
    if (analysis.config.engine === 'pytorch') {
      python = await this.pythonFor(configPath, text);
      if (!python) return undefined;
    }
    log.info(
      analysis.config.script !== undefined
        ? `starting your script: ${python!.interpreter} ${analysis.config.script} (run directory ${runDir})`
        : `starting trainer: ${python ? `${python.interpreter} -m pltrain` : `${nodePath} ${this.host.trainerScript}`} --config ${configPath} --run-dir ${runDir}`,
    );
    const script = analysis.config.script !== undefined ? path.resolve(path.dirname(configPath), analysis.config.script) : undefined;
    let launched: LaunchedTrainer | undefined;
    const cancel = () => {
      try {
        if (launched) process.kill(launched.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    };
    // Slow families say so before anything moves (a BERT run on a CPU takes minutes).
    const slow = slowFamilyNotice(analysis.config.model.family, analysis.config.steps);
    return ui.progress(
      `PL training: ${analysis.config.name}${slow ? ` (${slow})` : ''}`,
      async (report) => {
        report(python ? 'starting the PyTorch trainer…' : 'starting the trainer and loading the TensorFlow.js backend…');
        launched = launchTrainer({ nodePath, trainerScript: this.host.trainerScript, configPath, runDir, cwd: path.dirname(configPath), python, script });
        const info = await this.announced(launched, (m) => `PL training failed to start: ${m}`);
        if (!info) return undefined;
        report(`backend ${info.backend ? backendLabel(info.backend) : '?'} ready, connecting…`);
        const session = this.track(info.runId, runDir, configPath, true);
        this.connect(session, runEndpoint(info)!, launched.token, launched.pid);
        const previous = this._current?.active ? this._current : undefined;
        this.setCurrent(session);
        // Not silently: the views now follow the new run, and the one they showed keeps training.
        if (previous) {
          ui.notify('info', `${info.runId} started; the panel, sidebar and status bar show it now. ${previous.runId} keeps training.`, {
            actions: [{ title: `Show ${previous.runId}`, run: () => this.show(previous) }],
          });
        }
        await this.helloOrEnd(session, 20_000);
        log.info(`run ${info.runId}: backend ${info.backend ? backendLabel(info.backend) : '?'} — ${info.backend?.detail ?? ''}`);
        return session;
      },
      cancel,
    );
  }

  /**
   * The interpreter for a PyTorch run, checked before anything starts: the setting, the Python
   * extension's choice, else findPython's. When it cannot run the engine (no Python, no torch, no
   * websockets), a notification says what is missing, with the config's `engine` line to show.
   */
  private async pythonFor(configPath: string | undefined, text: string | undefined): Promise<{ interpreter: string; packageDir: string } | undefined> {
    const { ui, log } = this.host;
    const chosen = await this.host.pythonPath?.();
    const check = chosen ? await checkPythonAsync(chosen) : await findPythonAsync();
    if (check.ok) {
      log.info(`PyTorch engine: ${check.python} (${check.detail})`);
      return { interpreter: check.python, packageDir: this.host.pythonPackageDir ?? pythonPackageDir(path.resolve(path.dirname(this.host.trainerScript), '..')) };
    }
    const msg = `Cannot start the PyTorch engine: ${check.problem!.message}.`;
    log.error(msg);
    const at = text?.indexOf('"engine"') ?? -1;
    ui.notify('error', msg, { actions: configPath && text && at >= 0 ? [{ title: 'Show config', run: () => ui.reveal(configPath, at, at + '"engine"'.length) }] : [] });
    return undefined;
  }

  /** Finds trainers still running in the workspace's run directories and re-attaches to them. */
  reattachAll(): RunSession[] {
    const attached: RunSession[] = [];
    for (const folder of this.host.workspaceFolders()) {
      for (const run of listRunDirs(this.runsRoot(folder))) {
        if (!run.alive || !run.info || this.sessions.has(run.dir)) continue;
        const info = run.info;
        const token = readToken(run.dir);
        if (!token) {
          this.host.log.warn(`run ${info.runId} is alive but its token file is unreadable; not re-attaching`);
          continue;
        }
        const session = this.track(info.runId, run.dir, run.configPath, true);
        session.applyFact({ type: 'state', state: info.state, step: info.step, totalSteps: info.totalSteps });
        // The last known state at once (step, backend, α, units), from what the trainer recorded; the
        // trainer then replays only what came after it, instead of every view waiting for the replay.
        for (const e of recordedPrefix(readRecordedEvents(run.dir))) session.ingest(e);
        session.flush();
        this.connect(session, runEndpoint(info)!, token, info.pid);
        this.host.log.info(`re-attached to run ${info.runId} (pid ${info.pid}, ${describeEndpoint(runEndpoint(info)!)})`);
        attached.push(session);
      }
    }
    if (attached.length && !this._current) this.setCurrent(attached[0]);
    return attached;
  }

  /** Opens a finished run from its directory (history from metrics.jsonl, commands.jsonl and events.jsonl). */
  openRecorded(runDir: string): RunSession {
    const known = this.sessions.get(runDir);
    if (known) {
      this.setCurrent(known);
      return known;
    }
    const session = this.trackRecorded(readRunDirectory(runDir), true);
    this.setCurrent(session);
    return session;
  }

  /**
   * Continues a run that is no longer training (killed, failed, stopped) from its last checkpoint, in
   * the same run directory and with the same step numbering; the panel keeps the history. The run
   * directory is read once, here, and what was read is passed on.
   */
  async resumeRun(runDir: string): Promise<RunSession | undefined> {
    const { ui, log } = this.host;
    const run = readRunDirectory(runDir);
    if (run.alive) {
      ui.notify('info', 'That run is still training.');
      return this.sessions.get(runDir);
    }
    if (!run.resumable) {
      ui.notify('error', `Run ${path.basename(runDir)} has no checkpoint to resume from.`);
      return undefined;
    }
    // A run of the PyTorch engine resumes in it (its config snapshot says which engine ran it).
    let python: { interpreter: string; packageDir: string } | undefined;
    if (engineOfRun(runDir) === 'pytorch') {
      python = await this.pythonFor(run.configPath, undefined);
      if (!python) return undefined;
    }
    const launched = launchTrainer({ nodePath: this.host.nodePath(), trainerScript: this.host.trainerScript, configPath: run.configPath ?? '', runDir, cwd: runDir, resume: true, python });
    const info = await ui.progress(`Resuming ${path.basename(runDir)} from its checkpoint…`, () => this.announced(launched, (m) => `Could not resume: ${m}`));
    if (!info) return undefined;
    const session = this.sessions.get(runDir) ?? this.trackRecorded(run, false);
    if (!this.tails.has(runDir)) this.tails.set(runDir, this.tailFrom(runDir, info.runId, false));
    // The session still says how the run ended; it is starting again (and may end again, announced anew).
    session.markResuming();
    this.announcedEnd.delete(runDir);
    this.connect(session, runEndpoint(info)!, launched.token, launched.pid);
    this.setCurrent(session);
    log.info(`resumed run ${info.runId} (pid ${info.pid})`);
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
  async issue(command: SteeringCommand, runDir?: string): Promise<CommandStatus | undefined> {
    const { ui } = this.host;
    const s = runDir ? this.sessions.get(runDir) : this._current;
    if (!s) {
      ui.notify('warn', 'No PL training run is active.');
      return undefined;
    }
    const status = s.issue(command);
    const final = status.status === 'pending' ? await s.waitForCommand(status.id) : status;
    const what = describeCommand(command, s.view.unitName);
    if (final.status === 'rejected' || final.status === 'failed') ui.notify('warn', `PL training: ${what} ${final.status}: ${final.reason ?? ''}`);
    else ui.flash(`PL training: ${what} applied at step ${final.step}`, 5000);
    return final;
  }

  dispose(): void {
    // Detach only: trainers keep running without the window and are re-attached next time.
    for (const s of this.sessions.values()) s.dispose();
    for (const t of this.tails.values()) t.dispose();
    this.sessions.clear();
    this.tails.clear();
    this.changed.clear();
    this.currentChanged.clear();
    this.endAnnounced.clear();
    this.tracked.clear();
    this.showRequested.clear();
  }

  private folderOf(file: string): string | undefined {
    const resolved = path.resolve(file);
    return this.host.workspaceFolders().find((f) => {
      const rel = path.relative(f, resolved);
      return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
    });
  }

  /** The launched trainer's announcement, or undefined after telling the user why there is none. */
  private async announced(launched: LaunchedTrainer, headline: (message: string) => string) {
    try {
      return await launched.announced;
    } catch (e) {
      const message = (e as Error).message;
      this.host.log.error(headline(message));
      this.host.ui.notify('error', headline(message.split('\n')[0]), { detail: message, actions: [{ title: 'Show log', run: () => this.host.log.show() }] });
      return undefined;
    }
  }

  /** Resolves once the trainer said hello, the run ended, or `timeoutMs` passed. */
  private helloOrEnd(session: RunSession, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (session.view.hello) return resolve();
      const sub = session.onDidChange.on(() => {
        if (session.view.hello || !session.active) done();
      });
      const timer = setTimeout(() => done(), timeoutMs);
      const done = () => {
        clearTimeout(timer);
        sub.dispose();
        resolve();
      };
    });
  }

  /**
   * A run known from its directory, its history folded in. An end its run.json records is old news and
   * is not announced again; a run.json left saying "running" by a trainer that died is announced, once,
   * when `announceDeath` (opening it), not when it is about to be resumed anyway.
   */
  private trackRecorded(run: RunDirectory, announceDeath: boolean): RunSession {
    const session = this.track(run.info?.runId ?? path.basename(run.dir), run.dir, run.configPath, false);
    if (!announceDeath || (run.info && TERMINAL_STATES.includes(run.info.state))) this.announcedEnd.add(run.dir);
    session.loadRecorded(run, readRecordedEvents(run.dir));
    return session;
  }

  private track(runId: string, runDir: string, configPath: string | undefined, live: boolean): RunSession {
    const session = new RunSession(runId, runDir, configPath, { log: (m) => this.host.log.info(`[${runId}] ${m}`) });
    this.sessions.set(runDir, session);
    // Mirror the trainer's own output (backend loading, progress lines, stack traces) into the channel.
    if (live) this.tails.set(runDir, this.tailFrom(runDir, runId, true));
    session.onDidChange.on(() => {
      this.changed.fire(session);
      if (!this.announcedEnd.has(runDir) && !session.active) {
        this.announcedEnd.add(runDir);
        this.tails.get(runDir)?.dispose();
        this.tails.delete(runDir);
        this.announceEnd(session);
      }
    });
    this.tracked.fire(session);
    return session;
  }

  private tailFrom(runDir: string, runId: string, fromStart: boolean): LogTail {
    return new LogTail(path.join(runDir, RUN_FILES.log), (lines) => lines.forEach((l) => this.host.log.info(`[${runId} trainer] ${l}`)), fromStart);
  }

  private connect(session: RunSession, endpoint: TrainerEndpoint, token: string, pid: number): void {
    const connection = new TrainerConnection({
      endpoint,
      token,
      lastSeq: () => session.seq,
      shouldReconnect: () => session.active && processAlive(pid),
      log: (m) => this.host.log.debug(`[${session.runId}] ${m}`),
    });
    connection.onConnectedChange.on((up) => {
      if (up || !session.active) return;
      // Lost the trainer: if its process is gone without saying why, it crashed (OOM, kill -9…).
      setTimeout(() => {
        if (session.active && !processAlive(pid)) {
          const info = readRunInfo(session.runDir);
          const ended = info && TERMINAL_STATES.includes(info.state) ? (info.state as 'completed' | 'stopped' | 'failed') : undefined;
          session.markEnded(ended ?? 'failed', info?.reason ?? 'the trainer process exited unexpectedly (killed, out of memory, or crashed); its data and last checkpoint are kept');
        }
      }, 500);
    });
    session.attach(connection);
  }

  private announceEnd(session: RunSession): void {
    const { ui, log } = this.host;
    this.endAnnounced.fire(session);
    const v = session.view;
    const what = `PL training ${session.runId} ${v.state} at step ${v.step}`;
    if (v.state === 'failed') {
      const tail = tailLog(session.runDir, 10);
      log.error(`${what}: ${v.stateReason ?? ''}\n${tail}`);
      ui.notify('error', `${what}: ${v.stateReason ?? 'unknown cause'}`, { detail: tail, actions: [{ title: 'Show log', run: () => log.show() }] });
    } else {
      log.info(`${what}${v.stateReason ? ` (${v.stateReason})` : ''}`);
      ui.notify('info', `${what}.`);
    }
  }
}

/** The engine a recorded run was started with (its config snapshot), `tfjs` when it does not say. */
function engineOfRun(runDir: string): 'tfjs' | 'pytorch' {
  try {
    return JSON.parse(fs.readFileSync(path.join(runDir, RUN_FILES.config), 'utf8')).engine === 'pytorch' ? 'pytorch' : 'tfjs';
  } catch {
    return 'tfjs';
  }
}

/**
 * The recorded events from seq 0 up to the first gap (a line being written, or a resume's rewound
 * steps): the trainer's replay fills in the rest, and nothing after a gap is taken on trust, since the
 * reducer never takes an event at or below the last seq it holds.
 */
export function recordedPrefix(events: readonly TrainerEvent[]): TrainerEvent[] {
  let n = 0;
  while (n < events.length && events[n].seq === n) n++;
  return events.slice(0, n);
}
