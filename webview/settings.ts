// View settings the user changes in the panel, persisted through the webview's getState/setState so
// they survive the panel being hidden (VS Code drops the document then) and window reloads.
import { z } from 'zod';
import type { ChartId } from '../src/protocol/panelDocument';
import { MAX_SMOOTHING } from './series';

/** The per-unit quantities (κ, μ, L_f). `expert` in these names is the persisted settings' key, kept so saved settings load. */
export const EXPERT_METRICS = ['kappa', 'mu', 'lf'] as const;
export type ExpertMetric = (typeof EXPERT_METRICS)[number];

export interface UiSettings {
  /** EMA weight in [0, MAX_SMOOTHING]; 0 = raw lines only. */
  smoothing: number;
  /** Logarithmic y axis per chart. */
  logScale: Record<ChartId, boolean>;
  /** Series hidden through the legend, by series key (`loss`, `kappa:2`, …). */
  hidden: string[];
  /** Which per-unit quantity the per-unit chart shows. */
  expertMetric: ExpertMetric;
}

export function defaultSettings(): UiSettings {
  // κ and the PL* ratio span orders of magnitude, so their charts start logarithmic. The mask chart
  // draws fixed lane levels, where a log axis means nothing: its card offers no toggle, the key is
  // here so every chart has one.
  return { smoothing: 0, logScale: { loss: false, metric: false, expert: true, pl: true, share: false, participation: false, alpha: false, mask: false, gate: false, extra: true }, hidden: [], expertMetric: 'kappa' };
}

const defaults = defaultSettings();

// Every field falls back on its own: a stale or damaged state must never blank the panel.
const PersistedSchema = z.object({
  v: z.literal(1),
  smoothing: z.number().min(0).max(MAX_SMOOTHING).catch(defaults.smoothing),
  logScale: z
    .object({
      loss: z.boolean().catch(defaults.logScale.loss),
      metric: z.boolean().catch(defaults.logScale.metric),
      expert: z.boolean().catch(defaults.logScale.expert),
      pl: z.boolean().catch(defaults.logScale.pl),
      share: z.boolean().catch(defaults.logScale.share),
      participation: z.boolean().catch(defaults.logScale.participation),
      alpha: z.boolean().catch(defaults.logScale.alpha),
      // Absent from states saved before the mask chart existed: `.catch` fills it in.
      mask: z.boolean().catch(defaults.logScale.mask),
      gate: z.boolean().catch(defaults.logScale.gate),
      extra: z.boolean().catch(defaults.logScale.extra),
    })
    .catch(defaults.logScale),
  hidden: z.array(z.string().max(64)).max(1024).catch([]),
  expertMetric: z.enum(EXPERT_METRICS).catch(defaults.expertMetric),
});

/** What goes into `vscode.setState`. */
export function toPersisted(s: UiSettings): unknown {
  return { v: 1, ...s, hidden: [...s.hidden] };
}

/** Reads `vscode.getState()`; anything unusable yields the defaults. */
export function fromPersisted(state: unknown): UiSettings {
  const r = PersistedSchema.safeParse(state);
  if (!r.success) return defaultSettings();
  const { v: _version, ...settings } = r.data;
  return settings;
}
