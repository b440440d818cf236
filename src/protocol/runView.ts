// One reading of a run's state, for every side that shows it: the extension host (sidebar, status bar,
// code lenses, notifications) and the panel fold the same trainer events and the same host facts
// through this one reducer. It owns seq deduplication, the run and unit state, the effects of
// acknowledged commands on α and frozen units, command lifecycles and the damping-floor flags.
// No DOM, no Node, nothing optimistic: values change only when an event or a fact says so.
import type { CommandPhase } from './format';
import {
  TERMINAL_STATES,
  kappaAtDampingFloor,
  runDamping,
  type BackendInfo,
  type CommandStatus,
  type HelloEvent,
  type MetricsEvent,
  type RunFact,
  type RunState,
  type SteeringCommand,
  type TrainerEvent,
  type UnitStats,
} from './messages';

/**
 * A unit as last reported: the trainer's per-unit record copied through whole (whatever fields the
 * protocol gives it), with `frozen` updated by acknowledged commands between measurements. Before the
 * first measurement, and for a quantity the trainer could not measure, the values are absent.
 */
export type UnitView = Partial<UnitStats> & Pick<UnitStats, 'id' | 'frozen' | 'pruned'>;

/** A command's lifecycle, in issue order. */
export interface CommandEntry {
  id: string;
  command: SteeringCommand;
  status: CommandPhase;
  step?: number;
  reason?: string;
}

/** The newest warning or error, until a later message on its topic says it has ended. */
export interface RunProblem {
  level: 'warn' | 'error';
  message: string;
  topic?: string;
}

/** Which steering controls make sense in the acknowledged state. */
export interface ControlState {
  pause: boolean;
  resume: boolean;
  stop: boolean;
  setAlpha: boolean;
  unitToggle: boolean;
}

/** What one event or fact changed, so views redo only that. */
export interface RunChange {
  /** Run-level values: hello, state, step, α, the latest metrics, the connection. */
  run: boolean;
  /** Some unit's values or flags. */
  units: boolean;
  /** A unit id seen for the first time (charts add lines). */
  unitSet: boolean;
  /** Commands whose entry changed, in the order they changed. */
  commands: CommandEntry[];
  /** The newest warning (`problem`) appeared or ended. */
  problem: boolean;
  /**
   * A resumed trainer restarted from this step: the steps after it are redone, so a holder of the
   * history drops its metrics after it and folds the rest again (`rewind`).
   */
  rewoundTo?: number;
}

const noChange = (): RunChange => ({ run: false, units: false, unitSet: false, commands: [], problem: false });

const TERMINAL_PHASES: readonly CommandPhase[] = ['applied', 'rejected', 'failed'];

/**
 * Commands kept per run. Another token holder (or a loop) can send any number; past this many the
 * oldest finished ones are forgotten (every ack stays in commands.jsonl).
 */
export const MAX_COMMANDS_KEPT = 1000;

export class RunView {
  /** Highest event seq folded in; an event at or below it is a duplicate (a replay's overlap) and is dropped. */
  lastSeq = -1;
  hello: HelloEvent | undefined;
  /** Undefined until an event or a fact says it. */
  state: RunState | undefined;
  /** Why the run is in its state (failed, stopped), or what it waits for. */
  stateReason: string | undefined;
  step = 0;
  totalSteps = 0;
  /** α as the trainer last reported or acknowledged it. */
  alpha: number | undefined;
  latestMetrics: MetricsEvent | undefined;
  /** Step of the latest per-unit measurement. */
  lastMonitorStep: number | undefined;
  /** The pruning gate's keep-probability per unit, from the latest monitor step (pruning runs only). */
  gate: number[] | undefined;
  problem: RunProblem | undefined;
  /** The host's link to the trainer (a host fact). */
  connected = false;
  readonly commands = new Map<string, CommandEntry>();
  private readonly unitsById = new Map<number, UnitView>();

  /** Units in id order. */
  get units(): UnitView[] {
    return [...this.unitsById.values()].sort((a, b) => a.id - b.id);
  }

  unit(id: number): UnitView | undefined {
    return this.unitsById.get(id);
  }

  /** What a unit is in this run's family, as the trainer's hello names it (`expert`, `head`, `channel group`). */
  get unitName(): string {
    return this.hello?.unitName ?? 'unit';
  }

  get taskMetric(): 'accuracy' | 'perplexity' {
    return this.hello?.taskMetric ?? 'accuracy';
  }

  get backend(): BackendInfo | undefined {
    return this.hello?.backend;
  }

  /** δ of κ's damping floor 1/δ for this run. */
  get damping(): number {
    return runDamping(this.hello?.config);
  }

  /** Not ended (an unknown state counts as live: nothing has said it ended). */
  get active(): boolean {
    return this.state === undefined || !TERMINAL_STATES.includes(this.state);
  }

  /** Whether a unit's reported κ sits at the damping floor (false while it has no κ, or a null one). */
  atDampingFloor(unit: UnitView): boolean {
    return unit.kappa !== undefined && kappaAtDampingFloor(unit.kappa, this.damping);
  }

  /**
   * Whether the trainer flagged the unit inactive (its share EMA below inactiveShareThreshold): the model
   * barely routes through it, so whatever its κ reads it is not "well conditioned". Unknown (records
   * before shares were streamed) reads active.
   */
  inactive(unit: UnitView): boolean {
    return unit.active === false && !unit.pruned;
  }

  /** True while a freeze/unfreeze of `unit` awaits its outcome. */
  unitCommandPending(unit: number): boolean {
    for (const c of this.commands.values()) {
      if ((c.command.kind === 'freeze' || c.command.kind === 'unfreeze') && c.command.unit === unit && !TERMINAL_PHASES.includes(c.status)) return true;
    }
    return false;
  }

  controls(): ControlState {
    const live = this.connected && this.state !== undefined;
    const steerable = live && (this.state === 'running' || this.state === 'paused');
    return {
      pause: live && this.state === 'running',
      resume: live && this.state === 'paused',
      stop: live && this.active,
      setAlpha: steerable,
      unitToggle: steerable,
    };
  }

  /** Folds one trainer event in; undefined when it is a duplicate (seq already held). */
  applyEvent(e: TrainerEvent): RunChange | undefined {
    if (e.seq <= this.lastSeq) return undefined;
    this.lastSeq = e.seq;
    const change = noChange();
    switch (e.type) {
      case 'hello': {
        this.hello = e;
        this.totalSteps = e.totalSteps;
        this.alpha = e.alpha;
        const frozen = new Set(Array.isArray(e.config.frozenExperts) ? (e.config.frozenExperts as unknown[]) : []);
        for (let id = 0; id < e.unitCount; id++) {
          if (this.unitsById.has(id)) continue;
          this.unitsById.set(id, { id, frozen: frozen.has(id), pruned: false });
          change.unitSet = change.units = true;
        }
        if (e.resumedFromStep !== undefined) {
          this.state = 'running';
          this.stateReason = undefined;
          change.rewoundTo = e.resumedFromStep;
        }
        change.run = true;
        break;
      }
      case 'metrics': {
        this.latestMetrics = e;
        this.step = Math.max(this.step, e.step);
        this.alpha = e.alpha;
        if (e.units) {
          this.lastMonitorStep = e.step;
          for (const u of e.units) {
            if (!this.unitsById.has(u.id)) change.unitSet = true;
            this.unitsById.set(u.id, { ...u });
          }
          change.units = true;
        }
        if (e.gate) this.gate = e.gate;
        change.run = true;
        break;
      }
      case 'state':
        this.applyState(e.state, e.reason, e.step, undefined, change);
        break;
      case 'ack': {
        this.upsertCommand({ id: e.commandId, command: e.command, status: e.status, step: e.step, ...(e.reason !== undefined ? { reason: e.reason } : {}) }, change);
        if (e.status === 'applied') this.applyAcknowledged(e.command, change);
        break;
      }
      case 'log': {
        if (e.level !== 'info') {
          this.problem = { level: e.level, message: e.message, ...(e.topic !== undefined ? { topic: e.topic } : {}) };
          change.problem = true;
        } else if (e.topic !== undefined && this.problem?.topic === e.topic) {
          this.problem = undefined; // the condition it warned about has ended
          change.problem = true;
        }
        break;
      }
    }
    return change;
  }

  /** Folds one host fact in (see RunFactSchema). */
  applyFact(f: RunFact): RunChange {
    const change = noChange();
    switch (f.type) {
      case 'connection':
        change.run = this.connected !== f.connected;
        this.connected = f.connected;
        break;
      case 'command':
        this.upsertCommand(f.status, change);
        break;
      case 'state':
        this.applyState(f.state, f.reason, f.step, f.totalSteps, change);
        break;
    }
    return change;
  }

  /** A command the panel has posted and the host has not answered yet (the panel's own fact). */
  recordSent(id: string, command: SteeringCommand): RunChange {
    const change = noChange();
    this.upsertCommand({ id, command, status: 'sent' }, change);
    return change;
  }

  /**
   * A command the panel posted that the host has not answered after a while (the panel's own fact):
   * it stays `sent`, with the reason shown, until the host answers. Never a guess at the outcome.
   */
  recordUnanswered(id: string, reason: string): RunChange {
    const change = noChange();
    const c = this.commands.get(id);
    if (c && c.status === 'sent') this.upsertCommand({ ...c, reason }, change);
    return change;
  }

  /**
   * A command the panel posted that never reached the host and will not be sent again (the panel's
   * own fact, after a window reload): `failed` with the reason, so it is refused visibly, not lost.
   */
  recordNotSent(id: string, command: SteeringCommand, reason: string): RunChange {
    const change = noChange();
    this.upsertCommand({ id, command, status: 'failed', reason }, change);
    return change;
  }

  /** Replaces the command table with the host's (a snapshot: the host's table is the complete one). */
  replaceCommands(statuses: readonly CommandStatus[]): void {
    this.commands.clear();
    for (const s of statuses) this.commands.set(s.id, entryOf(s));
  }

  /**
   * After a resume rewrote the history: forgets everything the events said and folds `kept` (the
   * history up to the resume, and the resume's hello) again. The connection and the command table
   * are the host's facts and stay.
   */
  rewind(kept: readonly TrainerEvent[]): void {
    this.lastSeq = -1;
    this.hello = undefined;
    this.state = undefined;
    this.stateReason = undefined;
    this.step = 0;
    this.totalSteps = 0;
    this.alpha = undefined;
    this.latestMetrics = undefined;
    this.lastMonitorStep = undefined;
    this.gate = undefined;
    this.problem = undefined;
    this.unitsById.clear();
    const commands = [...this.commands.values()];
    for (const e of kept) this.applyEvent(e);
    this.commands.clear();
    for (const c of commands) this.commands.set(c.id, c);
  }

  private applyState(state: RunState, reason: string | undefined, step: number | undefined, totalSteps: number | undefined, change: RunChange): void {
    this.state = state;
    this.stateReason = reason;
    if (step !== undefined) this.step = Math.max(this.step, step);
    if (totalSteps !== undefined) this.totalSteps = totalSteps;
    change.run = true;
    // A command nobody will answer any more fails with the reason, rather than staying pending.
    if (!this.active) {
      for (const c of this.commands.values()) {
        if (!TERMINAL_PHASES.includes(c.status)) this.upsertCommand({ ...c, status: 'failed', reason: `run ${state}` }, change);
      }
    }
  }

  /** Effects of an applied command that show before the next measurement does. */
  private applyAcknowledged(c: SteeringCommand, change: RunChange): void {
    if (c.kind === 'setAlpha') {
      this.alpha = c.alpha;
      change.run = true;
    }
    if (c.kind === 'freeze' || c.kind === 'unfreeze') {
      const row = this.unitsById.get(c.unit);
      if (row) {
        this.unitsById.set(c.unit, { ...row, frozen: c.kind === 'freeze' });
        change.units = true;
      }
    }
  }

  private upsertCommand(s: CommandEntry, change: RunChange): void {
    const previous = this.commands.get(s.id);
    // An outcome is final: a late `pending` (or the panel's `sent`) never steps it back.
    if (previous && TERMINAL_PHASES.includes(previous.status) && !TERMINAL_PHASES.includes(s.status)) return;
    const entry = entryOf(s);
    this.commands.set(s.id, entry);
    change.commands.push(entry);
    if (this.commands.size > MAX_COMMANDS_KEPT) this.forgetOldCommands();
  }

  /** Down to 3/4 of the bound, oldest finished first (an outstanding command is never forgotten). */
  private forgetOldCommands(): void {
    let excess = this.commands.size - Math.floor((3 * MAX_COMMANDS_KEPT) / 4);
    for (const [id, c] of this.commands) {
      if (excess <= 0) break;
      if (!TERMINAL_PHASES.includes(c.status)) continue;
      this.commands.delete(id);
      excess--;
    }
  }
}

function entryOf(s: CommandEntry): CommandEntry {
  return { id: s.id, command: s.command, status: s.status, ...(s.step !== undefined ? { step: s.step } : {}), ...(s.reason !== undefined ? { reason: s.reason } : {}) };
}
