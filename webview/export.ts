// CSV and JSON exports of every series the panel holds, built in the webview (no host round trip).
// Values are written with JavaScript's shortest round-trip representation, so nothing is rounded.
import { EXPERT_METRICS } from './settings';
import { SCALAR_SERIES, extraSeriesKey, gateSeriesKey, unitSeriesKey, type RunModel } from './runModel';

/** Column name of a scalar series; the task metric is named after what it measures. */
function scalarColumn(model: RunModel, key: (typeof SCALAR_SERIES)[number]): string {
  return key === 'taskMetric' ? model.view.taskMetric : key;
}

/** `run-42-metrics.csv`, with anything outside [A-Za-z0-9._-] replaced. */
export function exportFileName(model: RunModel, extension: 'csv' | 'json'): string {
  const base = (model.runId ?? 'pl-run').replace(/[^A-Za-z0-9._-]+/g, '_');
  return `${base}-metrics.${extension}`;
}

/**
 * One row per step that has any value, one column per series (`step, loss, …, kappa_0, mu_0, lf_0, …`,
 * then `gate_0, …` for a pruning run and the family's diagnostics by name); per-unit columns are
 * empty on steps without a measurement.
 */
export function toCsv(model: RunModel): string {
  const columns: { name: string; key: string }[] = SCALAR_SERIES.map((k) => ({ name: scalarColumn(model, k), key: k }));
  for (const id of model.unitIds) {
    for (const m of EXPERT_METRICS) columns.push({ name: `${m}_${id}`, key: unitSeriesKey(m, id) });
  }
  for (let unit = 0; unit < model.gateUnits; unit++) columns.push({ name: `gate_${unit}`, key: gateSeriesKey(unit) });
  for (const name of model.extraNames) columns.push({ name: csvName(name), key: extraSeriesKey(name) });
  const rows = new Map<number, (number | undefined)[]>();
  columns.forEach((col, c) => {
    for (const p of model.series.get(col.key)?.raw ?? []) {
      let row = rows.get(p.x);
      if (!row) rows.set(p.x, (row = new Array(columns.length).fill(undefined)));
      row[c] = p.y;
    }
  });
  const lines = [['step', ...columns.map((c) => c.name)].join(',')];
  for (const step of [...rows.keys()].sort((a, b) => a - b)) {
    lines.push([step, ...(rows.get(step) as (number | undefined)[]).map((v) => (v === undefined ? '' : String(v)))].join(','));
  }
  return lines.join('\n') + '\n';
}

export interface SeriesExport {
  format: 'pl-trainer-series';
  /** 2: per-unit series under `units` (version 1 called them `experts`), and `unitName`. */
  version: 2;
  runId: string | null;
  exportedAt: string;
  taskMetric: 'accuracy' | 'perplexity';
  /** What a unit is in this run (`expert`, `head`, `channel group`). */
  unitName: string;
  totalSteps: number;
  /** True if long history was thinned in the panel (min/max per bucket kept); the run's metrics.jsonl has everything. */
  thinned: boolean;
  /** `[step, value]` pairs per scalar series. */
  series: Record<string, [number, number][]>;
  /** Per unit id: κ, μ and L_f as `[step, value]` pairs. */
  units: Record<string, Record<string, [number, number][]>>;
  /** Keep-probability per unit (pruning runs only). */
  gate?: Record<string, [number, number][]>;
  /** The model family's diagnostics by name (`energy/expert0`, `load/1`, …), when it reports any. */
  extra?: Record<string, [number, number][]>;
  commands: { id: string; command: unknown; status: string; step?: number; reason?: string }[];
}

export function toJson(model: RunModel, now = new Date()): string {
  const pairs = (key: string): [number, number][] => (model.series.get(key)?.raw ?? []).map((p) => [p.x, p.y]);
  const out: SeriesExport = {
    format: 'pl-trainer-series',
    version: 2,
    runId: model.runId ?? null,
    exportedAt: now.toISOString(),
    taskMetric: model.view.taskMetric,
    unitName: model.view.unitName,
    totalSteps: model.view.totalSteps,
    thinned: [...model.series.values()].some((s) => s.thinned),
    series: Object.fromEntries(SCALAR_SERIES.map((k) => [k, pairs(k)])),
    units: Object.fromEntries(model.unitIds.map((id) => [String(id), Object.fromEntries(EXPERT_METRICS.map((m) => [m, pairs(unitSeriesKey(m, id))]))])),
    ...(model.gateUnits ? { gate: Object.fromEntries(Array.from({ length: model.gateUnits }, (_, unit) => [String(unit), pairs(gateSeriesKey(unit))])) } : {}),
    ...(model.extraNames.length ? { extra: Object.fromEntries(model.extraNames.map((name) => [name, pairs(extraSeriesKey(name))])) } : {}),
    commands: [...model.view.commands.values()].map((c) => ({ ...c })),
  };
  return JSON.stringify(out, null, 1);
}

/** A diagnostic's name as a CSV header: quoted when it holds a comma, quote or line break. */
function csvName(name: string): string {
  return /[",\r\n]/.test(name) ? `"${name.replace(/"/g, '""')}"` : name;
}
