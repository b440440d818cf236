// Everything the panel knows about the current run, built only from host messages. No DOM, so the
// same logic is exercised directly by tests. Nothing here is optimistic: α, frozen flags and command
// outcomes change only when the trainer's events or the host's command statuses say so.
import type {
  CommandStatus,
  ExpertStats,
  HelloEvent,
  HostToWebview,
  MetricsEvent,
  RunState,
  RunSummary,
  SteeringCommand,
  TrainerEvent,
} from '../src/protocol';
import { runDamping } from '../src/protocol';
import type { CommandPhase } from './format';
import { EXPERT_METRICS, type ExpertMetric } from './settings';
import { MAX_POINTS_PER_SERIES, Series } from './series';

/** Scalar series taken from every metrics event. */
export const SCALAR_SERIES = ['loss', 'taskLoss', 'taskMetric', 'alpha', 'regularizer', 'stepsPerSec', 'plRatio'] as const;
export type ScalarSeries = (typeof SCALAR_SERIES)[number];

/** Key of a per-expert series, e.g. `kappa:2`. */
export function expertSeriesKey(metric: ExpertMetric, expert: number): string {
  return `${metric}:${expert}`;
}

/** Key of a unit's pruning-gate series (`gate:2`): its keep-probability on monitor steps (pruning runs). */
export function gateSeriesKey(unit: number): string {
  return `gate:${unit}`;
}

/** Key of a family diagnostic from `metrics.extra` (`extra:energy/expert0`). */
export function extraSeriesKey(name: string): string {
  return `extra:${name}`;
}

/** Key of an expert's mask series (`mask:2`): its status at each monitor step, see MASK_LEVEL. */
export function maskSeriesKey(expert: number): string {
  return `mask:${expert}`;
}

/**
 * Height of an expert's mask line inside its lane (the lane of expert i spans [i, i + 1)). A timing
 * diagram, like a logic analyser's: one stepped line per expert that drops when the expert is frozen
 * and drops to near the lane floor when it is pruned, so every transition is visible at a glance and
 * lines of different experts never overlap (a 0/1 line per expert would stack them on top of each
 * other). Pruned experts are frozen too, so `pruned` wins.
 */
export const MASK_LEVEL = { trainable: 0.8, frozen: 0.45, pruned: 0.1 } as const;
export type MaskStatus = keyof typeof MASK_LEVEL;

export function maskStatus(s: { frozen: boolean; pruned: boolean }): MaskStatus {
  return s.pruned ? 'pruned' : s.frozen ? 'frozen' : 'trainable';
}

/** Reads a mask-chart y value back as (expert, status); undefined for a value no status maps to. */
export function decodeMaskLevel(y: number): { expert: number; status: MaskStatus } | undefined {
  const expert = Math.floor(y + 1e-9);
  const level = y - expert;
  for (const status of Object.keys(MASK_LEVEL) as MaskStatus[]) {
    if (Math.abs(MASK_LEVEL[status] - level) < 1e-9) return { expert, status };
  }
  return undefined;
}

/** A finished run shown as an overlay. Held apart from the current run, so it can never leak into its state or exports. */
export interface CompareRun {
  runId: string;
  model: RunModel;
}

export interface ExpertRow {
  id: number;
  /** Latest measurement; undefined until the first monitor step. */
  kappa?: number;
  mu?: number;
  lf?: number;
  frozen: boolean;
  pruned: boolean;
}

export interface CommandEntry {
  id: string;
  command: SteeringCommand;
  status: CommandPhase;
  step?: number;
  reason?: string;
}

/** Which parts of the view a message touched, so rendering redoes only those. */
export interface Dirty {
  header: boolean;
  charts: boolean;
  experts: boolean;
  commands: boolean;
  /** The set of series or experts changed (new run, new expert): chart datasets must be rebuilt. */
  structure: boolean;
}

export function cleanDirty(): Dirty {
  return { header: false, charts: false, experts: false, commands: false, structure: false };
}

export function mergeDirty(into: Dirty, from: Dirty): Dirty {
  for (const k of Object.keys(into) as (keyof Dirty)[]) into[k] = into[k] || from[k];
  return into;
}

/** Which steering controls make sense in the acknowledged state. */
export interface ControlState {
  pause: boolean;
  resume: boolean;
  stop: boolean;
  setAlpha: boolean;
  expertToggle: boolean;
}

const TERMINAL_PHASES: readonly CommandPhase[] = ['applied', 'rejected', 'failed'];
const ACTIVE_STATES: readonly RunState[] = ['starting', 'running', 'paused'];

export class RunModel {
  run: RunSummary | null = null;
  hello: HelloEvent | undefined;
  /** Highest event seq ingested; events at or below it are duplicates. */
  lastSeq = -1;
  state: RunState | undefined;
  /** Why the run is in its state (failed/stopped) as the trainer said. */
  stateReason: string | undefined;
  step = 0;
  /** α as the trainer last reported or acknowledged it. */
  alpha: number | undefined;
  latestMetrics: MetricsEvent | undefined;
  /** Step of the latest per-expert measurement. */
  lastMonitorStep: number | undefined;
  /** The newest warning or error, until a later message on its topic says it has ended. */
  lastProblem: { level: 'warn' | 'error'; message: string; topic?: string } | undefined;
  readonly experts = new Map<number, ExpertRow>();
  readonly series = new Map<string, Series>();
  /** Units the pruning gate reported (0 when the run does not prune), and the family diagnostics' names in first-seen order. */
  gateUnits = 0;
  readonly extraNames: string[] = [];
  /** In issue order. */
  readonly commands = new Map<string, CommandEntry>();
  /** The recorded run overlaid on the charts; survives snapshots and run changes until cleared. */
  compare: CompareRun | null = null;
  private smoothing: number;

  constructor(
    smoothing = 0,
    private readonly capacity = MAX_POINTS_PER_SERIES,
  ) {
    this.smoothing = smoothing;
  }

  get runId(): string | undefined {
    return this.run?.runId ?? this.hello?.runId;
  }

  get totalSteps(): number {
    return this.run?.totalSteps ?? this.hello?.totalSteps ?? 0;
  }

  /** What a unit is in this run's model family: `expert`, `attention head`, `channel group`. */
  get unitName(): string {
    return this.hello?.unitName ?? 'expert';
  }

  get taskMetric(): 'accuracy' | 'perplexity' {
    return this.hello?.taskMetric ?? 'accuracy';
  }

  get backend() {
    return this.run?.backend ?? this.hello?.backend;
  }

  get connected(): boolean {
    return this.run?.connected ?? false;
  }

  /** δ of κ's damping floor 1/δ for this run. */
  get damping(): number {
    return runDamping(this.hello?.config);
  }

  /** Expert ids in ascending order. */
  get expertIds(): number[] {
    return [...this.experts.keys()].sort((a, b) => a - b);
  }

  /** The series for `key`, created on first use. */
  seriesFor(key: string): Series {
    let s = this.series.get(key);
    if (!s) {
      s = new Series(this.smoothing, this.capacity);
      this.series.set(key, s);
    }
    return s;
  }

  setSmoothing(weight: number): void {
    this.smoothing = weight;
    for (const s of this.series.values()) s.setSmoothing(weight);
    this.compare?.model.setSmoothing(weight);
  }

  /** Drops the overlay (the ✕ in the header does this without asking the host). */
  clearCompare(): Dirty {
    const had = this.compare !== null;
    this.compare = null;
    return { ...cleanDirty(), header: had, charts: had, structure: had };
  }

  /** Applies one host message; returns what changed (nothing for messages about another run). */
  apply(msg: HostToWebview): Dirty {
    const dirty = cleanDirty();
    switch (msg.type) {
      case 'snapshot': {
        this.reset();
        this.run = msg.run;
        this.ingest(msg.events, dirty);
        for (const s of msg.commands) this.upsertCommand(s);
        if (msg.run) {
          this.state = msg.run.state;
          this.step = Math.max(this.step, msg.run.step);
          this.alpha ??= msg.run.alpha;
        }
        return { header: true, charts: true, experts: true, commands: true, structure: true };
      }
      case 'events': {
        if (this.runId !== undefined && msg.runId !== this.runId) return dirty;
        this.ingest(msg.events, dirty);
        return dirty;
      }
      case 'run': {
        const run = msg.run;
        if (run && this.runId !== undefined && run.runId !== this.runId) {
          // A different run without a snapshot: start over rather than mixing two histories.
          this.reset();
          Object.assign(dirty, { charts: true, experts: true, commands: true, structure: true });
        }
        this.run = run;
        if (run) {
          this.state = run.state;
          this.step = Math.max(this.step, run.step);
          this.alpha ??= run.alpha;
        }
        dirty.header = true;
        dirty.experts = true; // toggles depend on the run state
        return dirty;
      }
      case 'commandStatus': {
        this.upsertCommand(msg.status);
        dirty.commands = true;
        dirty.experts = true; // a pending freeze disables its toggle
        return dirty;
      }
      case 'compare': {
        if (!msg.run) return this.clearCompare();
        // A model of its own, fed the recorded events as a snapshot: same series, same smoothing.
        const model = new RunModel(this.smoothing, this.capacity);
        model.apply({ type: 'snapshot', run: null, events: msg.run.events, commands: [] });
        this.compare = { runId: msg.run.runId, model };
        return { ...cleanDirty(), header: true, charts: true, structure: true };
      }
    }
  }

  /** Records a command the webview just posted, before the host answers. */
  recordSent(id: string, command: SteeringCommand): void {
    this.commands.set(id, { id, command, status: 'sent' });
  }

  /** True while a freeze/unfreeze of `expert` awaits its outcome. */
  expertCommandPending(expert: number): boolean {
    for (const c of this.commands.values()) {
      if ((c.command.kind === 'freeze' || c.command.kind === 'unfreeze') && c.command.expert === expert && !TERMINAL_PHASES.includes(c.status)) return true;
    }
    return false;
  }

  controls(): ControlState {
    const live = this.run !== null && this.connected && this.state !== undefined;
    const steerable = live && (this.state === 'running' || this.state === 'paused');
    return {
      pause: live && this.state === 'running',
      resume: live && this.state === 'paused',
      stop: live && ACTIVE_STATES.includes(this.state as RunState),
      setAlpha: steerable,
      expertToggle: steerable,
    };
  }

  private reset(): void {
    this.run = null;
    this.hello = undefined;
    this.lastSeq = -1;
    this.state = undefined;
    this.stateReason = undefined;
    this.step = 0;
    this.alpha = undefined;
    this.latestMetrics = undefined;
    this.lastMonitorStep = undefined;
    this.lastProblem = undefined;
    this.experts.clear();
    this.series.clear();
    this.gateUnits = 0;
    this.extraNames.length = 0;
    this.commands.clear();
  }

  private ingest(events: readonly TrainerEvent[], dirty: Dirty): void {
    for (const e of events) {
      if (e.seq <= this.lastSeq) continue;
      this.lastSeq = e.seq;
      this.ingestOne(e, dirty);
    }
  }

  private ingestOne(e: TrainerEvent, dirty: Dirty): void {
    switch (e.type) {
      case 'hello': {
        this.hello = e;
        this.alpha = e.alpha;
        const frozen = new Set(Array.isArray(e.config.frozenExperts) ? (e.config.frozenExperts as unknown[]) : []);
        for (let id = 0; id < e.experts; id++) {
          if (!this.experts.has(id)) this.experts.set(id, { id, frozen: frozen.has(id), pruned: false });
        }
        Object.assign(dirty, { header: true, experts: true, structure: true });
        return;
      }
      case 'metrics': {
        this.latestMetrics = e;
        this.step = Math.max(this.step, e.step);
        this.alpha = e.alpha;
        for (const key of SCALAR_SERIES) {
          const v = e[key];
          if (v !== undefined) this.seriesFor(key).append(e.step, v); // plRatio is absent on some steps
        }
        if (e.experts) this.ingestExperts(e.step, e.experts, dirty);
        if (e.gate) {
          if (e.gate.length > this.gateUnits) {
            this.gateUnits = e.gate.length;
            dirty.structure = true;
          }
          e.gate.forEach((g, unit) => this.seriesFor(gateSeriesKey(unit)).append(e.step, g));
        }
        for (const [name, v] of Object.entries(e.extra ?? {})) {
          if (!this.extraNames.includes(name)) {
            this.extraNames.push(name);
            dirty.structure = true;
          }
          this.seriesFor(extraSeriesKey(name)).append(e.step, v);
        }
        dirty.header = true;
        dirty.charts = true;
        return;
      }
      case 'ack': {
        this.upsertCommand({ id: e.commandId, command: e.command, status: e.status, step: e.step, reason: e.reason });
        if (e.status === 'applied') this.applyAcknowledged(e.command, dirty);
        dirty.commands = true;
        dirty.header = true;
        return;
      }
      case 'state': {
        this.state = e.state;
        this.stateReason = e.reason;
        this.step = Math.max(this.step, e.step);
        dirty.header = true;
        dirty.experts = true;
        return;
      }
      case 'log': {
        if (e.level !== 'info') {
          this.lastProblem = { level: e.level, message: e.message, ...(e.topic ? { topic: e.topic } : {}) };
          dirty.header = true;
        } else if (e.topic !== undefined && this.lastProblem?.topic === e.topic) {
          this.lastProblem = undefined; // the condition it warned about has ended
          dirty.header = true;
        }
        return;
      }
    }
  }

  private ingestExperts(step: number, stats: readonly ExpertStats[], dirty: Dirty): void {
    this.lastMonitorStep = step;
    for (const s of stats) {
      if (!this.experts.has(s.id)) dirty.structure = true;
      this.experts.set(s.id, { id: s.id, kappa: s.kappa, mu: s.mu, lf: s.lf, frozen: s.frozen, pruned: s.pruned });
      for (const metric of EXPERT_METRICS) this.seriesFor(expertSeriesKey(metric, s.id)).append(step, s[metric]);
      this.seriesFor(maskSeriesKey(s.id)).append(step, s.id + MASK_LEVEL[maskStatus(s)]);
    }
    dirty.experts = true;
  }

  /** Effects of an applied command that show before the next measurement does. */
  private applyAcknowledged(c: SteeringCommand, dirty: Dirty): void {
    if (c.kind === 'setAlpha') this.alpha = c.alpha;
    if (c.kind === 'freeze' || c.kind === 'unfreeze') {
      const row = this.experts.get(c.expert);
      if (row) {
        row.frozen = c.kind === 'freeze';
        dirty.experts = true;
      }
    }
  }

  private upsertCommand(s: CommandStatus): void {
    const prev = this.commands.get(s.id);
    // Messages can cross (an ack event may overtake the host's `pending`): never step back.
    if (prev && TERMINAL_PHASES.includes(prev.status) && !TERMINAL_PHASES.includes(s.status)) return;
    this.commands.set(s.id, { id: s.id, command: s.command, status: s.status, step: s.step, reason: s.reason });
  }
}
