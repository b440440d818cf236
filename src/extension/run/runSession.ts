// The extension host's model of one run: the full event history (from the trainer's replay or from
// disk), derived state for the views, and each steering command's lifecycle. The UI reads state
// from here only, so what it shows is always what the trainer acknowledged.
import { randomBytes } from 'node:crypto';
import {
  AckEvent,
  BackendInfo,
  CommandStatus,
  ExpertStats,
  HelloEvent,
  MetricsEvent,
  RunState,
  RunSummary,
  SteeringCommand,
  TERMINAL_STATES,
  TrainerEvent,
} from '../../protocol';
import { HOST_HISTORY_CAPACITY, thinHistory } from './history';
import { processAlive, readRecordedEvents, readRunInfo } from './runDirectory';
import { Signal } from './signal';
import { TrainerConnection } from './trainerConnection';

export function newCommandId(): string {
  return randomBytes(9).toString('base64url');
}

export function describeCommand(c: SteeringCommand): string {
  switch (c.kind) {
    case 'setAlpha':
      return `set α = ${c.alpha}`;
    case 'freeze':
    case 'unfreeze':
      return `${c.kind} expert ${c.expert}`;
    default:
      return c.kind;
  }
}

export class RunSession {
  readonly onEvents = new Signal<TrainerEvent[]>();
  readonly onCommandStatus = new Signal<CommandStatus>();
  /** Summary-level change (state, connection, step): views refresh. */
  readonly onDidChange = new Signal<void>();
  /** History was rewritten (a resume dropped the steps it redoes): views reload everything. */
  readonly onReset = new Signal<void>();

  /**
   * The run's events in seq order. Bounded (history.ts): past `historyCapacity` metrics events the
   * older ones are thinned, extremes kept; metrics.jsonl keeps everything.
   */
  readonly events: TrainerEvent[] = [];
  private metricsHeld = 0;
  private thinAt: number;
  readonly commands = new Map<string, CommandStatus>();
  hello: HelloEvent | undefined;
  state: RunState = 'starting';
  stateReason: string | undefined;
  step = 0;
  totalSteps = 0;
  alpha: number | undefined;
  lastMetrics: MetricsEvent | undefined;
  /** Latest per-expert measurement (metrics events carry experts on monitor steps only). */
  experts: ExpertStats[] = [];
  /** The pruning gate's keep-probability per unit, from the latest monitor step (pruning runs only). */
  gate: number[] | undefined;
  private lastSeq = -1;
  private connection: TrainerConnection | undefined;
  private pendingBatch: TrainerEvent[] = [];
  private batchTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly runId: string,
    readonly runDir: string,
    readonly configPath: string | undefined,
    private readonly log: (message: string) => void = () => undefined,
    private readonly historyCapacity = HOST_HISTORY_CAPACITY,
  ) {
    this.thinAt = historyCapacity;
  }

  get seq(): number {
    return this.lastSeq;
  }

  get connected(): boolean {
    return this.connection?.connected ?? false;
  }

  get active(): boolean {
    return !TERMINAL_STATES.includes(this.state);
  }

  get backend(): BackendInfo | undefined {
    return this.hello?.backend;
  }

  /** What a unit is in this run's model family (`expert`, `attention head`, `channel group`). */
  get unitName(): string {
    return this.hello?.unitName ?? 'expert';
  }

  summary(): RunSummary {
    return {
      runId: this.runId,
      runDir: this.runDir,
      state: this.state,
      backend: this.backend,
      step: this.step,
      totalSteps: this.totalSteps,
      alpha: this.alpha,
      // An ended run has nothing to reconnect to: do not show it as "reconnecting".
      connected: this.connected || !this.active,
    };
  }

  attach(connection: TrainerConnection): void {
    this.connection?.dispose();
    this.connection = connection;
    connection.onEvent.on((e) => this.ingest(e));
    connection.onConnectedChange.on(() => this.onDidChange.fire());
    connection.onProtocolError.on((e) => this.log(`trainer refused a frame: ${e.message}`));
    connection.connect();
  }

  /** Loads what a finished (or unreachable) run recorded on disk. */
  loadFromDisk(): void {
    for (const e of readRecordedEvents(this.runDir)) this.ingest(e);
    const info = readRunInfo(this.runDir);
    if (info) {
      this.totalSteps = info.totalSteps;
      this.step = Math.max(this.step, info.step);
      // A run.json still saying "running" whose process is gone means the trainer died.
      const died = !TERMINAL_STATES.includes(info.state) && !processAlive(info.pid);
      this.state = died ? 'failed' : info.state;
      this.stateReason = died ? 'the trainer process exited unexpectedly' : info.reason;
    }
    this.flush();
  }

  /** A resumed trainer is starting in this run's directory: no longer ended (its `hello` follows). */
  markResuming(): void {
    this.state = 'starting';
    this.stateReason = undefined;
    this.onDidChange.fire();
  }

  /**
   * The trainer vanished without a final state event (kill -9, OOM, crash): mark the run ended
   * without inventing an event, so the seq space stays the trainer's alone (a resume continues it).
   */
  markEnded(state: RunState, reason: string): void {
    this.state = state;
    this.stateReason = reason;
    this.failOutstanding(`run ${state}`);
    this.onDidChange.fire();
  }

  /** Adds one event in seq order; duplicates from a replay overlap are dropped. */
  ingest(e: TrainerEvent): void {
    if (e.seq <= this.lastSeq) return;
    this.lastSeq = e.seq;
    this.events.push(e);
    if (e.type === 'metrics' && ++this.metricsHeld > this.thinAt) {
      this.metricsHeld -= thinHistory(this.events, this.historyCapacity);
      // Thinning is O(history): it leaves at most 3/4 of the capacity, so the next pass is a quarter
      // capacity of events away; if it could not get there, wait as long anyway (never per event).
      this.thinAt = Math.max(this.historyCapacity, this.metricsHeld + this.historyCapacity / 4);
    }
    let summaryChanged = false;
    switch (e.type) {
      case 'hello':
        this.hello = e;
        this.totalSteps = e.totalSteps;
        this.alpha = e.alpha;
        summaryChanged = true;
        if (e.resumedFromStep !== undefined) {
          // The trainer restarted from a checkpoint and redoes the steps after it.
          this.dropMetricsAfter(e.resumedFromStep);
          this.state = 'running';
          this.stateReason = undefined;
        }
        break;
      case 'metrics':
        this.lastMetrics = e;
        this.step = e.step;
        this.alpha = e.alpha;
        if (e.experts) this.experts = e.experts;
        if (e.gate) this.gate = e.gate;
        summaryChanged = true;
        break;
      case 'state':
        this.state = e.state;
        this.stateReason = e.reason;
        this.step = Math.max(this.step, e.step);
        summaryChanged = true;
        if (!this.active) this.failOutstanding(`run ${e.state}`);
        break;
      case 'ack':
        this.applyAck(e);
        if (e.status === 'applied' && e.command.kind === 'setAlpha') this.alpha = e.command.alpha;
        if (e.status === 'applied' && (e.command.kind === 'freeze' || e.command.kind === 'unfreeze')) {
          const frozen = e.command.kind === 'freeze';
          const id = e.command.expert;
          this.experts = this.experts.map((x) => (x.id === id ? { ...x, frozen } : x));
        }
        summaryChanged = true;
        break;
      case 'log':
        this.log(`[trainer ${e.level}] ${e.message}`);
        break;
    }
    this.pendingBatch.push(e);
    // Coalesce bursts (a replay, or hundreds of metrics/s) into one notification per tick.
    this.batchTimer ??= setTimeout(() => this.flush(), 30);
    if (summaryChanged) this.summaryDirty = true;
  }

  private summaryDirty = false;

  private dropMetricsAfter(step: number): void {
    // In place (a spread of a long history into push() would overflow the call stack).
    let w = 0;
    for (const x of this.events) if (x.type !== 'metrics' || x.step <= step) this.events[w++] = x;
    this.events.length = w;
    this.pendingBatch = this.pendingBatch.filter((x) => x.type !== 'metrics' || x.step <= step);
    const metrics = this.events.filter((x): x is MetricsEvent => x.type === 'metrics');
    this.metricsHeld = metrics.length;
    this.lastMetrics = metrics.at(-1);
    this.step = this.lastMetrics?.step ?? step;
    const measured = metrics.filter((m) => m.experts).at(-1);
    if (measured?.experts) this.experts = measured.experts;
    this.resetPending = true;
  }
  private resetPending = false;

  /** Delivers the coalesced batch now. */
  flush(): void {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    const batch = this.pendingBatch;
    this.pendingBatch = [];
    if (this.resetPending) {
      this.resetPending = false;
      this.onReset.fire();
    } else if (batch.length) this.onEvents.fire(batch);
    if (this.summaryDirty) {
      this.summaryDirty = false;
      this.onDidChange.fire();
    }
  }

  /**
   * Sends a steering command; its status starts `pending` and only the trainer's ack moves it to
   * `applied`/`rejected`. A command that cannot be sent is `failed` at once, with the reason.
   */
  issue(command: SteeringCommand, id: string = newCommandId()): CommandStatus {
    let status: CommandStatus = { id, command, status: 'pending' };
    if (this.commands.has(id)) {
      status = { id, command, status: 'failed', reason: 'duplicate command id' };
    } else if (!this.active) {
      status = { ...status, status: 'failed', reason: `the run has ${this.state}` };
    } else if (!this.connection || !this.connection.send({ type: 'command', id, command })) {
      status = { ...status, status: 'failed', reason: 'not connected to the trainer' };
    }
    this.setStatus(status);
    return status;
  }

  /** Resolves when the command is acknowledged or fails (for callers that want to await it). */
  waitForCommand(id: string, timeoutMs = 30_000): Promise<CommandStatus> {
    return new Promise((resolve) => {
      const done = (s: CommandStatus) => {
        clearTimeout(timer);
        sub.dispose();
        resolve(s);
      };
      const current = this.commands.get(id);
      const sub = this.onCommandStatus.on((s) => {
        if (s.id === id && s.status !== 'pending') done(s);
      });
      const timer = setTimeout(() => done({ ...(current ?? { id, command: { kind: 'pause' } }), status: 'failed', reason: 'no acknowledgement in time' }), timeoutMs);
      if (current && current.status !== 'pending') done(current);
    });
  }

  dispose(): void {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.connection?.dispose();
    this.onEvents.clear();
    this.onCommandStatus.clear();
    this.onDidChange.clear();
    this.onReset.clear();
  }

  private applyAck(a: AckEvent): void {
    const status: CommandStatus = {
      id: a.commandId,
      command: a.command,
      status: a.status,
      step: a.step,
      ...(a.reason ? { reason: a.reason } : {}),
    };
    this.setStatus(status);
    this.log(`[command ${a.commandId}] ${describeCommand(a.command)} → ${a.status === 'applied' ? `applied at step ${a.step}` : `rejected: ${a.reason ?? 'no reason given'}`}`);
  }

  private setStatus(s: CommandStatus): void {
    this.commands.set(s.id, s);
    if (s.status === 'pending') this.log(`[command ${s.id}] ${describeCommand(s.command)} → sent`);
    if (s.status === 'failed') this.log(`[command ${s.id}] ${describeCommand(s.command)} → failed: ${s.reason}`);
    this.onCommandStatus.fire(s);
  }

  private failOutstanding(reason: string): void {
    for (const s of this.commands.values()) {
      if (s.status === 'pending') this.setStatus({ ...s, status: 'failed', reason });
    }
  }
}
