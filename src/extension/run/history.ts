// The extension host's bounds on a run's history. A metrics event costs the host about 300 bytes
// (4 experts measured every 10 steps), so a million-step run would hold ~300 MB in the extension host,
// which every extension shares, and hand the panel a snapshot of a million events. Past a capacity,
// the older history is thinned the way the panel thins its series: by equal step widths, each bucket
// keeping its extremes. The newest quarter of the capacity is never touched, and everything stays on
// disk (metrics.jsonl) at full resolution. Every other kind of event is bounded too (a token holder,
// or a trainer in a loop, can produce any number of logs, acks and states): past its own capacity the
// oldest go, and they too stay on disk (events.jsonl, commands.jsonl).
import type { MetricsEvent, TrainerEvent, UnitStats } from '../../protocol';

/**
 * Metrics events the host keeps per run. At least twice the panel's points per series
 * (webview/series.ts MAX_POINTS_PER_SERIES, 50,000), so whenever the host has thinned, the panel
 * receives more than it keeps and marks its own series (and exports) as thinned too.
 */
export const HOST_HISTORY_CAPACITY = 200_000;

/**
 * Hello, state, ack and log events the host keeps per run. A real run has a handful (plus one log
 * line per damping-floor episode or pruning decision); this is far above that and far below what
 * would weigh on the extension host or the panel's snapshot.
 */
export const HOST_OTHER_EVENTS_CAPACITY = 10_000;

/** A metrics event that carries a measurement (monitor steps, pruning decisions): κ lines and the mask come from these. */
function isMeasured(e: MetricsEvent): boolean {
  return e.units !== undefined || e.gate !== undefined || e.extra !== undefined;
}

/** Mean κ of a measurement's units that have one (NaN when none has). */
function meanKappa(units: readonly Partial<UnitStats>[] | undefined): number {
  let s = 0;
  let n = 0;
  for (const x of units ?? []) {
    if (x.kappa === undefined || x.kappa === null) continue;
    s += x.kappa;
    n++;
  }
  return n ? s / n : NaN;
}

/** Frozen/pruned flags of a measurement, as one comparable string: a change is a mask transition. */
function maskOf(e: MetricsEvent): string {
  return e.units ? e.units.map((x) => (x.pruned ? 'p' : x.frozen ? 'f' : 't')).join('') : '';
}

/**
 * Thins `events` in place when it holds more than `capacity` metrics events, to 3/4 of it. The first
 * metrics event and the newest quarter of the capacity are never touched. Older metrics are thinned
 * the way the panel thins its series, by equal step widths: the plain ones into buckets each keeping
 * its lowest- and highest-loss event, the measured ones (monitor steps: κ lines and the mask) into
 * buckets each keeping its lowest and highest mean κ, plus every change of the pruning mask. Every
 * other event (hello, state, ack, log) is kept; order is unchanged. Returns how many were dropped.
 */
export function thinHistory(events: TrainerEvent[], capacity = HOST_HISTORY_CAPACITY): number {
  const metricsIdx: number[] = [];
  for (let i = 0; i < events.length; i++) if (events[i].type === 'metrics') metricsIdx.push(i);
  if (metricsIdx.length <= capacity) return 0;
  const older = metricsIdx.slice(1, metricsIdx.length - Math.floor(capacity / 4));
  const plain = older.filter((i) => !isMeasured(events[i] as MetricsEvent));
  const measured = older.filter((i) => isMeasured(events[i] as MetricsEvent));
  // The older part gets half the capacity: measured events up to a quarter of it, plain ones the rest.
  const measuredBudget = Math.min(measured.length, Math.floor(capacity / 4));
  const plainBudget = Math.floor(capacity / 2) - measuredBudget;
  const drop = new Set<number>();
  const step = (i: number) => (events[i] as MetricsEvent).step;
  if (measured.length > measuredBudget) {
    // Mask transitions first: they are kept whatever their bucket.
    const transitions = new Set<number>();
    let lastMask: string | undefined;
    for (const i of metricsIdx) {
      const e = events[i] as MetricsEvent;
      if (!isMeasured(e)) continue;
      const mask = maskOf(e);
      if (lastMask !== undefined && mask !== lastMask) transitions.add(i);
      lastMask = mask;
    }
    const others = measured.filter((i) => !transitions.has(i));
    thinByWidth(others, Math.max(2, measuredBudget - transitions.size), step, (i) => meanKappa((events[i] as MetricsEvent).units) || (events[i] as MetricsEvent).loss, drop);
  }
  if (plain.length > plainBudget) thinByWidth(plain, Math.max(2, plainBudget), step, (i) => (events[i] as MetricsEvent).loss, drop);
  if (!drop.size) return 0;
  let w = 0;
  for (let r = 0; r < events.length; r++) if (!drop.has(r)) events[w++] = events[r];
  events.length = w;
  return drop.size;
}

/**
 * Drops the oldest events other than metrics when `events` holds more than `capacity` of them, down to
 * 3/4 of it, never one in `keep` (the run's current hello: what the run is). Order is unchanged.
 * Returns how many were dropped.
 */
export function boundOtherEvents(events: TrainerEvent[], capacity: number, keep: ReadonlySet<TrainerEvent>): number {
  let others = 0;
  for (const e of events) if (e.type !== 'metrics') others++;
  if (others <= capacity) return 0;
  let excess = others - Math.floor((3 * capacity) / 4);
  let w = 0;
  for (const e of events) {
    if (excess > 0 && e.type !== 'metrics' && !keep.has(e)) {
      excess--;
      continue;
    }
    events[w++] = e;
  }
  const dropped = events.length - w;
  events.length = w;
  return dropped;
}

/**
 * Adds to `drop` all but about `budget` of `indices` (in step order): the step range is cut into
 * budget/2 buckets of equal width, and each keeps its lowest and highest `value`.
 */
function thinByWidth(indices: number[], budget: number, x: (i: number) => number, value: (i: number) => number, drop: Set<number>): void {
  if (indices.length <= budget) return;
  const buckets = Math.max(1, Math.floor(budget / 2));
  const x0 = x(indices[0]);
  const width = (x(indices[indices.length - 1]) - x0) / buckets || 1;
  let k = 0;
  while (k < indices.length) {
    const bucket = Math.min(buckets - 1, Math.floor((x(indices[k]) - x0) / width));
    let lo = indices[k];
    let hi = indices[k];
    let end = k;
    while (end < indices.length && Math.min(buckets - 1, Math.floor((x(indices[end]) - x0) / width)) === bucket) {
      const i = indices[end];
      if (value(i) < value(lo)) lo = i;
      if (value(i) > value(hi)) hi = i;
      end++;
    }
    for (let j = k; j < end; j++) if (indices[j] !== lo && indices[j] !== hi) drop.add(indices[j]);
    k = end;
  }
}
