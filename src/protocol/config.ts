// The training config (`*.pltrain.json`): one schema, used by the trainer to run it and by the
// extension to put diagnostics on the offending line before anything starts.
import { z } from 'zod';
import { AlphaSchema, MAX_DATA_FILE_BYTES, MAX_UNITS, MIN_UNITS } from './limits';

export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Which trainer runs a config: the embedded TensorFlow.js one, or the Python package python/pltrain. */
export const ENGINES = ['tfjs', 'pytorch'] as const;
export type Engine = (typeof ENGINES)[number];

/** `device` values of the PyTorch engine: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`. */
export const DEVICE_PATTERN = /^(auto|cpu|cuda|cuda:\d{1,2})$/;

const positiveInt = (max: number) => z.number().int().min(1).max(max);

export const MODEL_FAMILIES = ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg'] as const;
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/**
 * What a family's prunable unit is called, singular and lower case, as a person reads it ("head 2");
 * the plural adds "s". The trainer announces it in `hello.unitName`; every UI takes it from there.
 */
export const UNIT_NAMES: Record<ModelFamily, string> = {
  'moe-mlp': 'expert',
  'switch-transformer': 'expert',
  'bert-encoder': 'head',
  vgg: 'channel group',
};

export const ModelConfigSchema = z
  .object({
    family: z
      .enum(MODEL_FAMILIES)
      .default('moe-mlp')
      .describe(
        'Model family. `moe-mlp`: dense soft-gated mixture of two-layer experts (image classifier, the default). `switch-transformer`: Switch-style top-1 mixture-of-experts transformer language model (data.source `text`). `bert-encoder`: BERT-style encoder whose attention heads are the units (sequence classification; images are read row by row). `vgg`: VGG-style conv net whose channel groups are the units (images).',
      ),
    experts: z
      .number()
      .int()
      .min(MIN_UNITS)
      .max(MAX_UNITS)
      .default(4)
      .describe('Number of prunable units: experts (`moe-mlp`, `switch-transformer`), attention heads per layer (`bert-encoder`), channel groups per conv layer (`vgg`). The PL method needs at least two to compare.'),
    hiddenUnits: positiveInt(4096)
      .optional()
      .describe('Hidden units of each expert (the feed-forward width for `switch-transformer` and `bert-encoder`; channels per group for `vgg`). Default 32, or 4 channels per group for `vgg` (convolutions are costly on a CPU).'),
    dModel: positiveInt(1024).default(32).describe('Model width of `switch-transformer` and `bert-encoder` (must be a multiple of `experts` for `bert-encoder`: head size = dModel / heads).'),
    layers: positiveInt(16).default(2).describe('Transformer blocks (`switch-transformer`, `bert-encoder`) or conv blocks (`vgg`).'),
    contextLength: z.number().int().min(2).max(1024).default(32).describe('Tokens per training sequence (`switch-transformer`).'),
    opt: z.boolean().default(false).describe('OPT (orthogonal over-parameterized training): freeze each expert\'s randomly initialized first-layer neurons and learn an orthogonal transform of them (Cayley parameterization) instead; hyperspherical energy is streamed. `moe-mlp` only.'),
  })
  .strict()
  // A family-dependent default: resolved here so every consumer sees a number.
  .transform((m) => ({ ...m, hiddenUnits: m.hiddenUnits ?? (m.family === 'vgg' ? 4 : 32) }));

export const DataConfigSchema = z
  .object({
    source: z
      .enum(['builtin', 'fashion-mnist', 'text'])
      .default('builtin')
      .describe('`builtin`: the Fashion-MNIST subset shipped with the extension (14×14, works offline anywhere). `fashion-mnist`: the full IDX files, e.g. Debian\'s `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist. `text`: a UTF-8 text file for the `switch-transformer` language model (character level; the built-in corpus when `path` is not given).'),
    path: z
      .string()
      .min(1)
      .max(4096)
      .optional()
      .describe(`Folder with the IDX files when source is \`fashion-mnist\`; the UTF-8 text file when source is \`text\`. Data files must be regular files (not a device, pipe or folder) of at most ${MAX_DATA_FILE_BYTES / (1024 * 1024)} MiB each.`),
    maxTrainExamples: z.number().int().min(0).default(0).describe('Use at most this many training examples (0 = all).'),
  })
  .strict();

/** δ when a config names none (`monitor.damping`). */
export const DEFAULT_DAMPING = 1e-6;

export const MonitorConfigSchema = z
  .object({
    every: positiveInt(1_000_000).default(10).describe('Measure μ, L_f and κ per unit (expert, head or channel group) every this many steps.'),
    probeSize: z.number().int().min(2).max(256).default(16).describe('Probe batch size n for the n×n tangent kernel (must stay well below each unit\'s parameter count).'),
    damping: z.number().positive().max(1).default(DEFAULT_DAMPING).describe('Relative damping δ: κ = λ_max / (λ_min + δ·λ_max) (smooth, so a singular but live unit still gets a gradient): at most 1/δ, reached by a singular kernel; a unit counts as at the damping floor from κ ≥ 1/(2δ).'),
    lipschitz: z
      .enum(['tangent-kernel', 'spectral-norm', 'hessian-trace'])
      .default('tangent-kernel')
      .describe('How L_f is estimated. `tangent-kernel`: λ_max of the unit\'s tangent kernel on the probe batch. `spectral-norm`: the product of the unit\'s weight spectral norms by power iteration (vectors reused across measurements). `hessian-trace` (moe-mlp): tr(∇²L) of the probe loss over the unit\'s parameters by Hutchinson\'s estimator (4 Rademacher vectors), the quantity of the paper\'s pseudocode; held constant by the regularizer.'),
  })
  .strict();

export const PruningConfigSchema = z
  .object({
    enabled: z.boolean().default(false).describe('Train a gating network inside the objective that prunes units: soft masks on each unit\'s contribution during the anneal, hard and final decisions at its end (frozen units are never pruned). See docs/method.md, "Pruning: the gating network".'),
    warmup: z.number().int().min(0).max(10_000_000).default(100).describe('Steps of plain training before the anneal starts (the estimates need time to settle).'),
    anneal: positiveInt(10_000_000).default(200).describe('Steps of soft-masked training while the relaxation\'s temperature falls from 1 to 0.05; the hard, final pruning decisions fall at step warmup + anneal.'),
    budget: z.number().min(0).max(0.95).default(0.5).describe('Largest fraction of units that may be pruned in total (⌊budget·units⌋ units).'),
    exact: z.boolean().default(false).describe('Prune exactly ⌊budget·units⌋ units (the lowest keep-probabilities) instead of at most that many: for comparisons at matched sparsity.'),
    kappaFactor: z.number().gt(1).max(1e12).default(10).describe('A unit counts as ill-conditioned when its κ exceeds the median unit\'s κ by more than this factor: keeping it costs the gate the log of the excess (see docs/method.md).'),
    keepCost: z.number().min(0).max(100).default(0.05).describe('What keeping a unit costs the gate, in task loss per unit of keep-probability: a unit whose mask moves the task loss less than this is pruned (within the budget).'),
    gateLearningRate: z.number().positive().max(10).default(0.02).describe('Learning rate (Adam) of the gating network.'),
  })
  .strict();

export const TrainingConfigSchema = z
  .object({
    $schema: z.string().optional().describe('Path or URL of the JSON schema (editor support only).'),
    name: z.string().min(1).max(200).default('pl-run').describe('Run name; the run directory is named after it.'),
    model: ModelConfigSchema.default({}),
    data: DataConfigSchema.default({}),
    steps: positiveInt(10_000_000).default(300).describe('Training steps (optimizer updates). `pltrain --steps N` overrides it.'),
    batchSize: positiveInt(65536).default(64).describe('Examples per training step.'),
    learningRate: z.number().positive().max(10).default(0.003).describe('Adam learning rate.'),
    seed: z.number().int().min(0).max(2 ** 31 - 1).default(1).describe('Seed for initialization, data order and the probe batch: the same seed gives the same run.'),
    alpha: AlphaSchema.default(0.01).describe('Weight of the condition-number regularizer in L_S(w) + α·κ̄. Changeable live.'),
    monitor: MonitorConfigSchema.default({}),
    pruning: PruningConfigSchema.default({}),
    frozenExperts: z.array(z.number().int().min(0)).default([]).describe('Units frozen from the start, by index (experts, heads or channel groups, as `model.experts` counts them): no updates, never pruned, still measured.'),
    backend: z.enum(['auto', ...BACKEND_NAMES]).default('auto').describe('TensorFlow.js backend (engine `tfjs`). `auto` picks the first that loads: tensorflow-gpu → tensorflow → wasm → cpu.'),
    engine: z
      .enum(ENGINES)
      .default('tfjs')
      .describe('Which trainer runs the config. `tfjs`: the embedded TensorFlow.js trainer (needs nothing else). `pytorch`: the PyTorch engine (python/pltrain; needs Python 3 with `torch` and `websockets`), for CUDA GPUs; the interpreter is `PLTRAIN_PYTHON`, else the setting `plTrainer.pythonPath`, else `python3`.'),
    device: z
      .string()
      .regex(DEVICE_PATTERN, 'device must be "auto", "cpu", "cuda" or "cuda:N"')
      .default('auto')
      .describe('Where the PyTorch engine puts its tensors: `auto` (the first CUDA GPU when one is usable, else the CPU), `cpu`, `cuda`, `cuda:N`. Engine `pytorch` only.'),
    script: z
      .string()
      .min(1)
      .max(1000)
      .optional()
      .describe('Your own PyTorch training script (path relative to this config), attached with `pltrain.attach` (docs/pytorch.md): Start runs it with the PyTorch engine\'s interpreter, `pltrain` on PYTHONPATH, the run directory in PLTRAIN_RUN_DIR and this config in PLTRAIN_CONFIG, whose alpha, steps, logEvery, monitor.every/damping and name apply to the run. The script builds its own model and data; `engine` must be `pytorch`.'),
    checkpointEvery: z.number().int().min(0).max(10_000_000).default(200).describe('Save a checkpoint (weights, optimizer state, step, α, frozen units) every this many steps, and after every applied command; 0 = only at the end. A killed run resumes from the last one.'),
    logEvery: positiveInt(1_000_000).default(1).describe('Emit a metrics event every this many steps (κ rides along on monitor steps).'),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [i, e] of c.frozenExperts.entries()) {
      if (e >= c.model.experts) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['frozenExperts', i], message: `${UNIT_NAMES[c.model.family]} ${e} does not exist (the model has ${c.model.experts}: 0…${c.model.experts - 1})` });
      }
    }
    if (c.model.family === 'switch-transformer' && c.data.source !== 'text') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'source'], message: 'the switch-transformer language model trains on text: set data.source to "text"' });
    }
    if (c.model.family !== 'switch-transformer' && c.data.source === 'text') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'source'], message: `text data needs model.family "switch-transformer" (${c.model.family} classifies images)` });
    }
    if (c.model.family === 'bert-encoder' && c.model.dModel % c.model.experts !== 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['model', 'dModel'], message: `dModel ${c.model.dModel} must be a multiple of the ${c.model.experts} attention heads` });
    }
    if (c.monitor.lipschitz === 'hessian-trace' && c.model.family !== 'moe-mlp') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['monitor', 'lipschitz'], message: `the hessian-trace L_f is implemented for moe-mlp only, not ${c.model.family}` });
    }
    if (c.model.opt && c.model.family !== 'moe-mlp') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['model', 'opt'], message: `OPT mode is implemented for moe-mlp only, not ${c.model.family}` });
    }
    if (c.engine === 'tfjs' && c.device !== 'auto') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['device'], message: 'device is a setting of the PyTorch engine: set "engine": "pytorch", or choose a TensorFlow.js backend with "backend"' });
    }
    if (c.script !== undefined && c.engine !== 'pytorch') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['script'], message: 'script runs your own PyTorch loop: set "engine": "pytorch"' });
    }
    if (c.engine === 'pytorch') {
      if (c.backend !== 'auto') ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['backend'], message: `backend "${c.backend}" is a TensorFlow.js backend; the PyTorch engine picks its device with "device"` });
      // Not in the PyTorch engine: refused on the config line rather than silently ignored (it trains
      // all four families; OPT mode and the spectral-norm L_f are tfjs-only).
      if (c.model.opt) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['model', 'opt'], message: 'OPT mode is implemented in the tfjs engine only, not the pytorch engine' });
      if (c.monitor.lipschitz !== 'tangent-kernel') ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['monitor', 'lipschitz'], message: `the ${c.monitor.lipschitz} L_f is implemented in the tfjs engine only; the pytorch engine uses tangent-kernel` });
    }
    if (new Set(c.frozenExperts.filter((e) => e < c.model.experts)).size >= c.model.experts) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['frozenExperts'], message: `at least one ${UNIT_NAMES[c.model.family]} must stay trainable` });
    }
  });

export type TrainingConfig = z.infer<typeof TrainingConfigSchema>;
export type TrainingConfigInput = z.input<typeof TrainingConfigSchema>;

export const DEFAULT_FASHION_MNIST_PATH = '/usr/share/datasets/fashion-mnist';

/** One problem in a config, addressed by JSON path so the extension can find its line. */
export interface ConfigProblem {
  path: (string | number)[];
  message: string;
  /** For an unknown field: the known field it most likely misspells (offered as a quick fix). */
  suggestion?: string;
}

/** The fields each object of the config accepts, by the object's path ('' for the top level). */
export const CONFIG_FIELDS: Record<string, readonly string[]> = {
  '': Object.keys(TrainingConfigSchema.innerType().shape),
  model: Object.keys(ModelConfigSchema.innerType().shape),
  data: Object.keys(DataConfigSchema.shape),
  monitor: Object.keys(MonitorConfigSchema.shape),
  pruning: Object.keys(PruningConfigSchema.shape),
};

/** Edit distance between two strings (insertions, deletions, substitutions, adjacent swaps). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known field an unknown one most likely misspells: the same letters in another case, or the
 * closest by edit distance when at most a third of the name (at least 1, at most 3 edits) differs.
 */
export function suggestField(unknown: string, known: readonly string[]): string | undefined {
  const lower = unknown.toLowerCase();
  const sameLetters = known.find((k) => k.toLowerCase() === lower);
  if (sameLetters) return sameLetters;
  const limit = Math.min(3, Math.max(1, Math.floor(unknown.length / 3)));
  let best: { key: string; distance: number } | undefined;
  for (const k of known) {
    if (k === '$schema') continue;
    const distance = editDistance(lower, k.toLowerCase());
    if (distance <= limit && (!best || distance < best.distance)) best = { key: k, distance };
  }
  return best?.key;
}

export type ConfigParseResult =
  | { ok: true; config: TrainingConfig }
  | { ok: false; problems: ConfigProblem[] };

/** Validates an already-parsed JSON value. */
export function parseTrainingConfig(value: unknown): ConfigParseResult {
  const r = TrainingConfigSchema.safeParse(value);
  if (r.success) return { ok: true, config: r.data };
  const problems: ConfigProblem[] = [];
  for (const i of r.error.issues) {
    // Point unknown keys at the key itself, so the diagnostic lands on the exact line.
    if (i.code === z.ZodIssueCode.unrecognized_keys) {
      const known = CONFIG_FIELDS[i.path.join('.')] ?? [];
      for (const k of i.keys) {
        const suggestion = suggestField(k, known);
        problems.push({ path: [...i.path, k], message: `unknown field "${k}"${suggestion ? ` (did you mean "${suggestion}"?)` : ''}`, ...(suggestion ? { suggestion } : {}) });
      }
    } else {
      problems.push({ path: i.path, message: i.message });
    }
  }
  return { ok: false, problems };
}

/** Human-readable form of a problem: `model.experts: Number must be greater than or equal to 2`. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.path.length ? p.path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${k}`)).join('').replace(/^\./, '') : '(root)';
  return `${where}: ${p.message}`;
}
