// Everything the panel knows about the current run, built only from host messages. The run's state is
// the shared reducer's (RunView, src/protocol/runView.ts), fed the same trainer events and host facts
// as the extension host's; this adds what only the panel keeps: the chart series, the compared run,
// and which parts of the view a message touched. No DOM, so tests exercise it directly.
import { RunView, type ControlState, type HostToWebview, type MetricsEvent, type RunChange, type RunSummary, type SteeringCommand, type TrainerEvent, type UnitStats } from '../src/protocol';
import { EXPERT_METRICS, type ExpertMetric } from './settings';
import { MAX_POINTS_PER_SERIES, Series } from './series';

/** Scalar series taken from every metrics event. */
export const SCALAR_SERIES = ['loss', 'taskLoss', 'taskMetric', 'alpha', 'regularizer', 'stepsPerSec', 'plRatio'] as const;
export type ScalarSeries = (typeof SCALAR_SERIES)[number];

/** Key of a unit's routing-share series, e.g. `share:2`. */
export function shareSeriesKey(unit: number): string {
  return `share:${unit}`;
}

/** Key of a per-unit series, e.g. `kappa:2`. */
export function unitSeriesKey(metric: ExpertMetric, unit: number): string {
  return `${metric}:${unit}`;
}

/** Key of a unit's pruning-gate series (`gate:2`): its keep-probability on monitor steps (pruning runs). */
export function gateSeriesKey(unit: number): string {
  return `gate:${unit}`;
}

/** Key of a family diagnostic from `metrics.extra` (`extra:energy/expert0`). */
export function extraSeriesKey(name: string): string {
  return `extra:${name}`;
}

/** Key of a unit's mask series (`mask:2`): its status at each monitor step, see MASK_LEVEL. */
export function maskSeriesKey(unit: number): string {
  return `mask:${unit}`;
}

/**
 * Height of a unit's mask line inside its lane (the lane of unit i spans [i, i + 1)). A timing
 * diagram, like a logic analyser's: one stepped line per unit that drops when the unit is frozen
 * and drops to near the lane floor when it is pruned, so every transition is visible at a glance and
 * lines of different units never overlap (a 0/1 line per unit would stack them on top of each
 * other). Pruned units are frozen too, so `pruned` wins.
 */
export const MASK_LEVEL = { trainable: 0.8, frozen: 0.45, pruned: 0.1 } as const;
export type MaskStatus = keyof typeof MASK_LEVEL;

export function maskStatus(s: { frozen: boolean; pruned: boolean }): MaskStatus {
  return s.pruned ? 'pruned' : s.frozen ? 'frozen' : 'trainable';
}

/** Reads a mask-chart y value back as (unit, status); undefined for a value no status maps to. */
export function decodeMaskLevel(y: number): { unit: number; status: MaskStatus } | undefined {
  const unit = Math.floor(y + 1e-9);
  const level = y - unit;
  for (const status of Object.keys(MASK_LEVEL) as MaskStatus[]) {
    if (Math.abs(MASK_LEVEL[status] - level) < 1e-9) return { unit, status };
  }
  return undefined;
}

/** A finished run shown as an overlay. Held apart from the current run, so it can never leak into its state or exports. */
export interface CompareRun {
  runId: string;
  model: RunModel;
}

/** Which parts of the view a message touched, so rendering redoes only those. */
export interface Dirty {
  header: boolean;
  charts: boolean;
  /** The unit table (values, flags, and its toggles, which follow the run state and pending commands). */
  units: boolean;
  commands: boolean;
  /** The set of series or units changed (new run, new unit): chart datasets must be rebuilt. */
  structure: boolean;
}

export function cleanDirty(): Dirty {
  return { header: false, charts: false, units: false, commands: false, structure: false };
}

export function mergeDirty(into: Dirty, from: Dirty): Dirty {
  for (const k of Object.keys(into) as (keyof Dirty)[]) into[k] = into[k] || from[k];
  return into;
}

const everything = (): Dirty => ({ header: true, charts: true, units: true, commands: true, structure: true });

/** What a reducer change means for the panel's parts. */
function dirtyOf(change: RunChange, into: Dirty): Dirty {
  const commands = change.commands.length > 0;
  into.header ||= change.run || change.problem || commands;
  into.units ||= change.run || change.units || commands;
  into.commands ||= commands;
  into.structure ||= change.unitSet;
  return into;
}

export class RunModel {
  /** Who the current run is (from the host's snapshot); null with no run. */
  run: RunSummary | null = null;
  /** The run's state, as the shared reducer reads it. Replaced by a snapshot. */
  view = new RunView();
  readonly series = new Map<string, Series>();
  /** Units the pruning gate reported (0 when the run does not prune), and the family diagnostics' names in first-seen order. */
  gateUnits = 0;
  readonly extraNames: string[] = [];
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
    return this.run?.runId ?? this.view.hello?.runId;
  }

  /** Unit ids in ascending order. */
  get unitIds(): number[] {
    return this.view.units.map((u) => u.id);
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
        if (msg.run) {
          // The host's reading of what no event says (the link, an end it concluded), then its command table.
          this.view.applyFact({ type: 'connection', connected: msg.run.connected });
          this.view.applyFact({ type: 'state', state: msg.run.state, reason: msg.run.reason, step: msg.run.step, totalSteps: msg.run.totalSteps });
        }
        this.view.replaceCommands(msg.commands);
        return everything();
      }
      case 'events': {
        if (!this.isCurrent(msg.runId)) return dirty;
        this.ingest(msg.events, dirty);
        return dirty;
      }
      case 'fact': {
        if (!this.isCurrent(msg.runId)) return dirty;
        return dirtyOf(this.view.applyFact(msg.fact), dirty);
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

  /** Records a command the panel just posted, before the host answers. */
  recordSent(id: string, command: SteeringCommand): Dirty {
    return dirtyOf(this.view.recordSent(id, command), cleanDirty());
  }

  recordUnanswered(id: string, reason: string): Dirty {
    return dirtyOf(this.view.recordUnanswered(id, reason), cleanDirty());
  }

  /** Records a command of an earlier document of this panel that is refused without being sent. */
  recordNotSent(id: string, command: SteeringCommand, reason: string): Dirty {
    return dirtyOf(this.view.recordNotSent(id, command, reason), cleanDirty());
  }

  /** Which steering controls make sense: the reducer's, and none without a run. */
  controls(): ControlState {
    const c = this.view.controls();
    return this.run === null ? { pause: false, resume: false, stop: false, setAlpha: false, unitToggle: false } : c;
  }

  private isCurrent(runId: string): boolean {
    return this.runId === undefined || runId === this.runId;
  }

  private reset(): void {
    this.run = null;
    this.view = new RunView();
    this.series.clear();
    this.gateUnits = 0;
    this.extraNames.length = 0;
  }

  private ingest(events: readonly TrainerEvent[], dirty: Dirty): void {
    for (const e of events) {
      const change = this.view.applyEvent(e);
      if (!change) continue; // a duplicate
      dirtyOf(change, dirty);
      if (e.type === 'hello') dirty.structure = true;
      if (e.type === 'metrics') this.appendSeries(e, dirty);
    }
  }

  private appendSeries(e: MetricsEvent, dirty: Dirty): void {
    for (const key of SCALAR_SERIES) {
      const v = e[key];
      if (v !== undefined) this.seriesFor(key).append(e.step, v); // plRatio is absent on some steps
    }
    // Charted, not exported (the export's columns are the protocol-1 set plus units).
    if (e.participation !== undefined) this.seriesFor('participation').append(e.step, e.participation);
    for (const u of e.units ?? []) {
      for (const metric of EXPERT_METRICS) {
        // A quantity the trainer could not measure on this step is a gap in its line, never a number.
        const v = (u as Partial<UnitStats>)[metric];
        if (v !== undefined && v !== null) this.seriesFor(unitSeriesKey(metric, u.id)).append(e.step, v);
      }
      this.seriesFor(maskSeriesKey(u.id)).append(e.step, u.id + MASK_LEVEL[maskStatus(u)]);
      if (u.share !== undefined) this.seriesFor(shareSeriesKey(u.id)).append(e.step, u.share);
    }
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
  }
}
