// The extension host's hold on one run: its history (from the trainer's replay or from disk, bounded),
// the facts only the host knows (the link, the commands it sent, an end the trainer could not report),
// and the run's state as the shared reducer reads it (`view`, src/protocol/runView.ts). The sidebar,
// the status bar, the code lenses and notifications read `view`; the panel folds the same events and
// facts through the same reducer, so both show the same thing, and only what the trainer acknowledged.
import {
  RunView,
  SteeringCommandSchema,
  TERMINAL_STATES,
  describeCommand,
  newCommandId,
  type CommandEntry,
  type CommandStatus,
  type RunFact,
  type RunSummary,
  type SteeringCommand,
  type TrainerEvent,
} from '../../protocol';
import { HOST_HISTORY_CAPACITY, HOST_OTHER_EVENTS_CAPACITY, boundOtherEvents, thinHistory } from './history';
import { OutputBudget } from './outputBudget';
import type { RunDirectory } from './runDirectory';
import { Signal } from './signal';
import { TrainerConnection } from './trainerConnection';

export interface RunSessionOptions {
  /** Output-channel lines (host lines, and the trainer's own messages within their budget). */
  log?: (message: string) => void;
  /** Metrics events held before the older ones are thinned. */
  historyCapacity?: number;
  /** Events other than metrics held before the oldest go. */
  otherEventsCapacity?: number;
  /** Budget for the trainer's lines in the output channel. */
  trainerLines?: { perWindow: number; windowMs: number; now?: () => number };
  /** Shortest time between two deliveries of events while they keep coming (BUSY_INTERVAL_MS). */
  busyIntervalMs?: number;
}

/**
 * Adaptive batching. Idle (nothing delivered in the last BUSY_INTERVAL_MS), an event goes out at the end
 * of the current turn of the event loop (setImmediate), together with whatever else that socket read
 * carried: no fixed wait. Busy (a replay, hundreds of metrics/s), the events are coalesced until
 * BUSY_INTERVAL_MS after the last delivery, so there are at most ~1000/BUSY_INTERVAL_MS deliveries a
 * second whatever the rate. Half a frame: the panel coalesces per animation frame anyway.
 */
export const BUSY_INTERVAL_MS = 8;

export class RunSession {
  /** New trainer events, coalesced per tick, each delivered once. */
  readonly onEvents = new Signal<TrainerEvent[]>();
  /** A host fact, after the events that preceded it were delivered. */
  readonly onFact = new Signal<RunFact>();
  /** A command's entry changed (sent, failed, or the trainer's ack). */
  readonly onCommandStatus = new Signal<CommandEntry>();
  /** Something the views show changed: they refresh. */
  readonly onDidChange = new Signal<void>();
  /** History was rewritten (a resume dropped the steps it redoes): views reload everything. */
  readonly onReset = new Signal<void>();

  /** The run's state, one reading for every view. */
  readonly view = new RunView();
  /**
   * The run's events in seq order. Bounded (history.ts): past `historyCapacity` metrics events the
   * older ones are thinned, extremes kept; past `otherEventsCapacity` other events the oldest go.
   * The run directory keeps everything.
   */
  readonly events: TrainerEvent[] = [];
  private metricsHeld = 0;
  private otherEventsHeld = 0;
  private thinAt: number;
  private readonly historyCapacity: number;
  private readonly otherEventsCapacity: number;
  private readonly log: (message: string) => void;
  private readonly trainerLines: OutputBudget;
  private connection: TrainerConnection | undefined;
  private pendingBatch: TrainerEvent[] = [];
  /** The scheduled delivery of `pendingBatch`: right after this turn when idle, or at the end of the busy interval. */
  private batchTimer: { immediate: NodeJS.Immediate } | { timeout: NodeJS.Timeout } | undefined;
  /** When the last batch went out (performance.now()); -∞ before the first. */
  private lastFlushAt = -Infinity;
  private readonly busyIntervalMs: number;
  private changed = false;
  private resetPending = false;

  constructor(
    readonly runId: string,
    readonly runDir: string,
    readonly configPath: string | undefined,
    options: RunSessionOptions = {},
  ) {
    this.log = options.log ?? (() => undefined);
    this.historyCapacity = options.historyCapacity ?? HOST_HISTORY_CAPACITY;
    this.otherEventsCapacity = options.otherEventsCapacity ?? HOST_OTHER_EVENTS_CAPACITY;
    this.thinAt = this.historyCapacity;
    const budget = options.trainerLines;
    this.trainerLines = new OutputBudget(this.log, budget?.perWindow, budget?.windowMs, budget?.now);
    this.busyIntervalMs = options.busyIntervalMs ?? BUSY_INTERVAL_MS;
  }

  /** Seq of the last event held: a reconnect asks the trainer for everything after it. */
  get seq(): number {
    return this.view.lastSeq;
  }

  get active(): boolean {
    return this.view.active;
  }

  /** The host's reading of the run for a snapshot. */
  summary(): RunSummary {
    const v = this.view;
    return {
      runId: this.runId,
      runDir: this.runDir,
      state: v.state ?? 'starting',
      ...(v.stateReason !== undefined ? { reason: v.stateReason } : {}),
      step: v.step,
      totalSteps: v.totalSteps,
      connected: v.connected,
    };
  }

  /** The host's command table, in issue order, as statuses (the panel's `sent` is never the host's). */
  commandStatuses(): CommandStatus[] {
    return [...this.view.commands.values()].filter((c): c is CommandStatus => c.status !== 'sent');
  }

  attach(connection: TrainerConnection): void {
    this.connection?.dispose();
    this.connection = connection;
    connection.onEvent.on((e) => this.ingest(e));
    connection.onConnectedChange.on((connected) => this.applyFact({ type: 'connection', connected }));
    connection.onProtocolError.on((e) => this.log(`trainer refused a frame: ${e.message}`));
    connection.connect();
  }

  /**
   * Folds in what a run directory recorded (read once by readRunDirectory, events by
   * readRecordedEvents): the history, then run.json's state. A run.json that still says the run is
   * live while its process is gone means the trainer died without a word.
   */
  loadRecorded(run: RunDirectory, events: readonly TrainerEvent[]): void {
    for (const e of events) this.ingest(e);
    if (run.info) {
      const died = !TERMINAL_STATES.includes(run.info.state) && !run.alive;
      this.applyFact({
        type: 'state',
        state: died ? 'failed' : run.info.state,
        ...(died ? { reason: 'the trainer process exited unexpectedly' } : run.info.reason !== undefined ? { reason: run.info.reason } : {}),
        step: run.info.step,
        totalSteps: run.info.totalSteps,
      });
    }
    this.flush();
  }

  /** A resumed trainer is starting in this run's directory: no longer ended (its `hello` follows). */
  markResuming(): void {
    this.applyFact({ type: 'state', state: 'starting' });
  }

  /**
   * The trainer vanished without a final state event (kill -9, OOM, crash): the run ends as a host
   * fact, not an invented event, so the seq space stays the trainer's alone (a resume continues it).
   */
  markEnded(state: 'completed' | 'stopped' | 'failed', reason: string): void {
    this.applyFact({ type: 'state', state, reason });
  }

  /** Adds one event in seq order; duplicates from a replay overlap are dropped (by the reducer). */
  ingest(e: TrainerEvent): void {
    const change = this.view.applyEvent(e);
    if (!change) return;
    this.events.push(e);
    if (e.type === 'metrics') {
      if (++this.metricsHeld > this.thinAt) {
        this.metricsHeld -= thinHistory(this.events, this.historyCapacity);
        // Thinning is O(history): it leaves at most 3/4 of the capacity, so the next pass is a quarter
        // capacity of events away; if it could not get there, wait as long anyway (never per event).
        this.thinAt = Math.max(this.historyCapacity, this.metricsHeld + this.historyCapacity / 4);
      }
    } else if (++this.otherEventsHeld > this.otherEventsCapacity) {
      const hello = this.view.hello;
      this.otherEventsHeld -= boundOtherEvents(this.events, this.otherEventsCapacity, new Set(hello ? [hello] : []));
    }
    if (change.rewoundTo !== undefined) this.rewind(change.rewoundTo);
    if (e.type === 'log') this.trainerLines.line(`[trainer ${e.level}] ${e.message}`);
    for (const c of change.commands) {
      // Acks of any client's commands are the trainer's words (budgeted); a failure an end implies is ours.
      const line = `[command ${c.id}] ${describeCommand(c.command, this.view.unitName)} → ${c.status === 'applied' ? `applied at step ${c.step}` : `${c.status}: ${c.reason ?? 'no reason given'}`}`;
      if (e.type === 'ack') this.trainerLines.line(line);
      else this.log(line);
      this.onCommandStatus.fire(c);
    }
    this.pendingBatch.push(e);
    this.changed = true;
    this.scheduleFlush();
  }

  /** Arms the next delivery (see BUSY_INTERVAL_MS); one is armed at a time. */
  private scheduleFlush(): void {
    if (this.batchTimer) return;
    const wait = this.lastFlushAt + this.busyIntervalMs - performance.now();
    this.batchTimer = wait > 0 ? { timeout: setTimeout(() => this.flush(), wait) } : { immediate: setImmediate(() => this.flush()) };
  }

  private cancelFlush(): void {
    const t = this.batchTimer;
    if (!t) return;
    if ('timeout' in t) clearTimeout(t.timeout);
    else clearImmediate(t.immediate);
    this.batchTimer = undefined;
  }

  /** Applies a host fact, after delivering the events before it, so every view folds the same order. */
  applyFact(fact: RunFact): void {
    this.flush();
    const change = this.view.applyFact(fact);
    this.onFact.fire(fact);
    for (const c of change.commands) {
      if (c.status === 'pending') this.log(`[command ${c.id}] ${describeCommand(c.command, this.view.unitName)} → sent`);
      else this.log(`[command ${c.id}] ${describeCommand(c.command, this.view.unitName)} → ${c.status}: ${c.reason ?? 'no reason given'}`);
      this.onCommandStatus.fire(c);
    }
    this.onDidChange.fire();
  }

  /** Delivers the coalesced batch now. */
  flush(): void {
    this.cancelFlush();
    const batch = this.pendingBatch;
    this.pendingBatch = [];
    if (batch.length) this.lastFlushAt = performance.now();
    if (this.resetPending) {
      this.resetPending = false;
      this.onReset.fire();
    } else if (batch.length) this.onEvents.fire(batch);
    if (this.changed) {
      this.changed = false;
      this.onDidChange.fire();
    }
  }

  /**
   * Sends a steering command; its status starts `pending` and only the trainer's ack moves it to
   * `applied`/`rejected`. One outside the protocol's bounds is `rejected` here with the bound's reason
   * (the trainer would refuse the frame); one that cannot be sent is `failed` at once, with the reason.
   */
  issue(command: SteeringCommand, id: string = newCommandId()): CommandStatus {
    let status: CommandStatus = { id, command, status: 'pending' };
    const checked = SteeringCommandSchema.safeParse(command);
    const outOfBounds = checked.success ? undefined : checked.error.issues[0].message;
    if (this.view.commands.has(id)) {
      status = { ...status, status: 'failed', reason: 'duplicate command id' };
    } else if (outOfBounds) {
      status = { ...status, status: 'rejected', reason: outOfBounds };
    } else if (!this.active) {
      status = { ...status, status: 'failed', reason: `the run has ${this.view.state}` };
    } else if (!this.connection || !this.connection.send({ type: 'command', id, command })) {
      status = { ...status, status: 'failed', reason: 'not connected to the trainer' };
    }
    // A duplicate id keeps the first command's entry; the caller still gets its own failure.
    if (status.reason !== 'duplicate command id') this.applyFact({ type: 'command', status });
    return status;
  }

  /** Resolves when the command is acknowledged or fails (for callers that want to await it). */
  waitForCommand(id: string, timeoutMs = 30_000): Promise<CommandStatus> {
    return new Promise((resolve) => {
      const done = (s: CommandEntry) => {
        clearTimeout(timer);
        sub.dispose();
        resolve(s as CommandStatus);
      };
      const current = this.view.commands.get(id);
      const sub = this.onCommandStatus.on((s) => {
        if (s.id === id && s.status !== 'pending' && s.status !== 'sent') done(s);
      });
      const timer = setTimeout(() => done({ ...(current ?? { id, command: { kind: 'pause' } }), status: 'failed', reason: 'no acknowledgement in time' }), timeoutMs);
      if (current && current.status !== 'pending' && current.status !== 'sent') done(current);
    });
  }

  dispose(): void {
    this.cancelFlush();
    this.trainerLines.reportSuppressed();
    this.connection?.dispose();
    this.onEvents.clear();
    this.onFact.clear();
    this.onCommandStatus.clear();
    this.onDidChange.clear();
    this.onReset.clear();
  }

  /** The trainer restarted from `step`: its metrics after it are redone, so they leave the history. */
  private rewind(step: number): void {
    // In place (a spread of a long history into push() would overflow the call stack).
    let w = 0;
    for (const x of this.events) if (x.type !== 'metrics' || x.step <= step) this.events[w++] = x;
    this.events.length = w;
    this.metricsHeld = this.events.reduce((n, x) => n + (x.type === 'metrics' ? 1 : 0), 0);
    this.pendingBatch = [];
    this.view.rewind(this.events);
    this.resetPending = true;
  }
}
