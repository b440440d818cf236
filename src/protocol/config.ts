// The training config (`*.pltrain.json`): one schema, used by the trainer to run it and by the
// extension to put diagnostics on the offending line before anything starts.
import { z } from 'zod';

export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

const positiveInt = (max: number) => z.number().int().min(1).max(max);

export const ModelConfigSchema = z
  .object({
    /** Model family. `moe-mlp`: dense soft-gated mixture of two-layer experts (the default classifier). */
    family: z.literal('moe-mlp').default('moe-mlp'),
    /** Number of experts; the PL method needs at least two to compare. */
    experts: z.number().int().min(2).max(64).default(4),
    /** Hidden units of each expert. */
    hiddenUnits: positiveInt(4096).default(32),
  })
  .strict();

export const DataConfigSchema = z
  .object({
    /**
     * `builtin`: the Fashion-MNIST subset shipped with the extension (14×14, works offline anywhere).
     * `fashion-mnist`: the full IDX files, e.g. Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist.
     */
    source: z.enum(['builtin', 'fashion-mnist']).default('builtin'),
    /** Folder with the IDX files when source is `fashion-mnist`. */
    path: z.string().min(1).optional(),
    /** Use at most this many training examples (0 = all). */
    maxTrainExamples: z.number().int().min(0).default(0),
  })
  .strict();

export const MonitorConfigSchema = z
  .object({
    /** Measure μ, L_f and κ per expert every this many steps. */
    every: positiveInt(1_000_000).default(10),
    /** Probe batch size n for the n×n tangent kernel (must stay well below each expert's parameter count). */
    probeSize: z.number().int().min(2).max(256).default(16),
    /** Relative damping δ: κ = λ_max / max(λ_min, δ·λ_max), so a singular kernel gives a finite κ = 1/δ. */
    damping: z.number().positive().max(1).default(1e-6),
  })
  .strict();

export const TrainingConfigSchema = z
  .object({
    $schema: z.string().optional(),
    name: z.string().min(1).max(200).default('pl-run'),
    model: ModelConfigSchema.default({}),
    data: DataConfigSchema.default({}),
    steps: positiveInt(10_000_000).default(300),
    batchSize: positiveInt(65536).default(64),
    learningRate: z.number().positive().max(10).default(0.003),
    seed: z.number().int().min(0).max(2 ** 31 - 1).default(1),
    /** Weight of the condition-number regularizer in L_S(w) + α·κ̄. Changeable live. */
    alpha: z.number().min(0).max(1e6).default(0.01),
    monitor: MonitorConfigSchema.default({}),
    /** Experts frozen from the start (no updates, never pruned, still measured). */
    frozenExperts: z.array(z.number().int().min(0)).default([]),
    /** `auto` picks the first that loads: tensorflow-gpu → tensorflow → wasm → cpu. */
    backend: z.enum(['auto', ...BACKEND_NAMES]).default('auto'),
    /** Emit a metrics event every this many steps (κ rides along on monitor steps). */
    logEvery: positiveInt(1_000_000).default(1),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [i, e] of c.frozenExperts.entries()) {
      if (e >= c.model.experts) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['frozenExperts', i], message: `expert ${e} does not exist (the model has ${c.model.experts}: 0…${c.model.experts - 1})` });
      }
    }
    if (new Set(c.frozenExperts).size >= c.model.experts) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['frozenExperts'], message: 'at least one expert must stay trainable' });
    }
    if (c.data.source === 'fashion-mnist' && !c.data.path) {
      // The trainer falls back to Debian's location; the extension checks that it exists.
    }
  });

export type TrainingConfig = z.infer<typeof TrainingConfigSchema>;
export type TrainingConfigInput = z.input<typeof TrainingConfigSchema>;

export const DEFAULT_FASHION_MNIST_PATH = '/usr/share/datasets/fashion-mnist';

/** One problem in a config, addressed by JSON path so the extension can find its line. */
export interface ConfigProblem {
  path: (string | number)[];
  message: string;
}

export type ConfigParseResult =
  | { ok: true; config: TrainingConfig }
  | { ok: false; problems: ConfigProblem[] };

/** Validates an already-parsed JSON value. */
export function parseTrainingConfig(value: unknown): ConfigParseResult {
  const r = TrainingConfigSchema.safeParse(value);
  if (r.success) return { ok: true, config: r.data };
  return {
    ok: false,
    problems: r.error.issues.map((i) => ({ path: i.path, message: i.message })),
  };
}

/** Human-readable form of a problem: `model.experts: Number must be greater than or equal to 2`. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.path.length ? p.path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${k}`)).join('').replace(/^\./, '') : '(root)';
  return `${where}: ${p.message}`;
}
