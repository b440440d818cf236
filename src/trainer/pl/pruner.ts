// The gating network that prunes units (experts, heads, channel groups), trained inside the objective.
// Chen et al. (ICLR 2023) learn a gate "by minimizing the condition number of the target model";
// the paper's exact gate inputs, relaxation and schedule could not be read, so this design is ours
// (docs/method.md, "Pruning: the gating network"):
//
//   features φ_e of each unit (log κ, log μ, log L_f, routing share, weight norm, their trends)
//     → a small tanh MLP (TF.js), plus a learned offset per unit → keep-logit a_e, keep-probability
//     p_e = σ(a_e)
//   soft mask m_e = σ((a_e + ε_e)/τ), ε_e logistic noise (the hard-concrete/Gumbel-sigmoid relaxation:
//     P(m_e > ½) = p_e at every temperature), multiplies unit e's contribution in the model's forward
//     pass on every step of the anneal; τ falls geometrically from 1 to 0.05 over `anneal` steps.
//   gate loss  L_gate = L_task(m) + (1/E)·Σ_e p_e·c_e + β·budget(p)
//     L_task(m): the model's task loss through the masked forward pass, entered through ∂L_task/∂m_e
//       measured by the model's step (the chain rule to the gate's weights is taken here). Closing a
//       unit that carries routing mass costs task loss, so the gate cannot close it cheaply.
//     c_e = keepCost + max(0, log κ_e − median log κ − log kappaFactor): a unit costs keepCost to
//       keep, plus its log-excess of κ over kappaFactor× the median unit's (0 when not measurable).
//     budget(p) = max(0, (1 − k/E) − keep)² (`exact`: ((1 − k/E) − keep)²), keep the expected
//       kept fraction, k = ⌊budget·E⌋ the units that may be pruned.
// At the end of the anneal the decisions become hard and final: every trainable unit with p_e < ½
// is pruned (`exact`: exactly the k lowest p_e), lowest first, at most k, never a frozen one (its mask
// is 1 throughout), never the last trainable unit. After that the pruned set masks them for good.
import type * as TF from '@tensorflow/tfjs';

export interface PrunerSettings {
  enabled: boolean;
  /** Steps of plain training before the anneal starts. */
  warmup: number;
  /** Steps of soft-masked training, temperature annealed; the decisions fall at warmup + anneal. */
  anneal: number;
  /** Largest fraction of units that may be pruned. */
  budget: number;
  /** A unit is ill-conditioned when κ > kappaFactor × the median unit's κ. */
  kappaFactor: number;
  /** The task-loss increase, per unit of keep-probability, that a unit must prevent to be kept. */
  keepCost: number;
  /** Prune exactly ⌊budget·E⌋ units (matched-sparsity comparisons) instead of at most. */
  exact: boolean;
  gateLearningRate: number;
}

/** What the pruner reads of one unit's measurement (a protocol UnitStats fits it). */
export interface UnitMeasurement {
  id: number;
  /** null or non-finite: not measurable (e.g. an unused unit). */
  kappa: number | null;
  mu: number | null;
  lf: number | null;
  /** Fraction of the model's routing mass through the unit (sums to 1), when the model reports it. */
  share?: number;
}

/** The feature vector of a unit, in this order (docs/method.md lists them). */
export const FEATURE_NAMES = [
  'log κ − median',
  'log μ − median',
  'log L_f − median',
  'κ not measurable',
  'E·share − 1',
  'share not reported',
  'log ‖w‖ − median',
  'trend log κ',
  'trend share',
  'trend log ‖w‖',
] as const;
const FEATURES = FEATURE_NAMES.length;
const HIDDEN = 8;
const BUDGET_WEIGHT = 10;
const LOGIT_DECAY = 1e-3;
const WEIGHT_DECAY = 1e-2;
/** EMA rate of the gate's ∂L/∂m (about the last 10 steps). */
const MASK_GRAD_RATE = 0.1;
/** Adam steps of the gate per training step (the network is tiny; the model's step dominates). */
const GATE_STEPS_PER_UPDATE = 4;
/** The decisions average the keep-logits from this fraction of the anneal on. */
const DECISION_WINDOW_START = 0.75;
const TAU_START = 1;
const TAU_END = 0.05;
/** EMA rate of the trend features: trend = value − EMA(value). */
const TREND_RATE = 0.2;
/** The mask a model sees never goes below this: a unit at 0 would leave a mixture with no mass. */
export const MASK_FLOOR = 1e-3;
/** The gate starts open: p = σ(3) ≈ 0.95 for every unit. */
const INITIAL_LOGIT = 3;

/** Everything needed to continue pruning exactly where a checkpoint left off. */
export interface PrunerState {
  weights: number[];
  adamM: number[];
  adamV: number[];
  adamT: number;
  rng: number;
  /** Per unit: EMA of log κ, E·share, log ‖w‖ (null before the first measurable value). */
  ema: (number | null)[][];
  features: number[][] | null;
  excess: number[];
  maskGradMean: number[];
  logitSum: number[];
  logitCount: number;
}

export class GatingPruner {
  /**
   * [W1 (FEATURES×HIDDEN), b1 (HIDDEN), w2 (HIDDEN), b2, unit offsets (E)] flattened. The per-unit
   * offset holds what the features do not explain: a unit's own, consistent evidence from the
   * task loss (with a network shared over units alone, one unit's noisy push moved all of them).
   */
  private weights: Float64Array;
  private m: Float64Array;
  private v: Float64Array;
  private t = 0;
  private rng: number;
  private ema: (number | null)[][];
  private features: number[][] | null = null;
  /** max(0, log κ − median − log F) per unit, from the last measurement. */
  private excess: number[];
  /** Sum and count of the keep-logits over the anneal's last quarter (the decisions' average). */
  private logitSum: number[];
  private logitCount = 0;
  /** Running mean of ∂L_task/∂m_e over the anneal's steps. */
  private maskGradMean: number[];
  /** Whether a mask was sampled since the last update (the update learns from that step's slope). */
  private sampled = false;

  constructor(
    private readonly tf: typeof TF,
    readonly units: number,
    readonly settings: PrunerSettings,
    seed = 1,
  ) {
    const size = FEATURES * HIDDEN + HIDDEN + HIDDEN + 1 + units;
    let s = (seed * 7919 + 17) >>> 0 || 1;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
    this.weights = new Float64Array(size);
    for (let k = 0; k < FEATURES * HIDDEN; k++) this.weights[k] = rnd() * (2 / Math.sqrt(FEATURES));
    for (let k = FEATURES * HIDDEN + HIDDEN; k < FEATURES * HIDDEN + 2 * HIDDEN; k++) this.weights[k] = rnd() * (2 / Math.sqrt(HIDDEN));
    this.weights[FEATURES * HIDDEN + 2 * HIDDEN] = INITIAL_LOGIT;
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
    this.rng = (seed * 104729 + 7) >>> 0 || 1;
    this.ema = Array.from({ length: units }, () => [null, null, null]);
    this.excess = new Array(units).fill(0);
    this.maskGradMean = new Array(units).fill(0);
    this.logitSum = new Array(units).fill(0);
  }

  /** The number of units the budget allows to prune in total. */
  get allowed(): number {
    return Math.floor(this.settings.budget * this.units + 1e-9);
  }

  /** Whether the step about to run (`completed` steps done) trains under the soft mask. */
  inAnneal(completed: number): boolean {
    const { enabled, warmup, anneal } = this.settings;
    return enabled && completed >= warmup && completed < warmup + anneal;
  }

  /** Whether the hard, final decisions fall after this many completed steps. */
  isDecisionStep(completed: number): boolean {
    return this.settings.enabled && completed === this.settings.warmup + this.settings.anneal;
  }

  /** The relaxation's temperature for the step about to run: 1 → 0.05, geometric over the anneal. */
  temperature(completed: number): number {
    const progress = Math.min(1, Math.max(0, (completed - this.settings.warmup) / Math.max(1, this.settings.anneal - 1)));
    return TAU_START * (TAU_END / TAU_START) ** progress;
  }

  /**
   * A new measurement: the features of every unit. `weightNorms[e]` is ‖w_e‖ over unit e's own
   * parameters. Pruned units keep features but are out of every median.
   */
  observe(measured: readonly UnitMeasurement[], weightNorms: ArrayLike<number>, pruned: ReadonlySet<number>): void {
    const E = this.units;
    const finiteLog = (x: number | null | undefined) => (x !== null && x !== undefined && Number.isFinite(x) && x > 0 ? Math.log(x) : null);
    const byId = new Map(measured.map((s) => [s.id, s]));
    const logK = Array.from({ length: E }, (_, i) => finiteLog(byId.get(i)?.kappa));
    const logMu = Array.from({ length: E }, (_, i) => finiteLog(byId.get(i)?.mu));
    const logLf = Array.from({ length: E }, (_, i) => finiteLog(byId.get(i)?.lf));
    const logW = Array.from({ length: E }, (_, i) => finiteLog(weightNorms[i]));
    const share = Array.from({ length: E }, (_, i) => {
      const sh = byId.get(i)?.share;
      return sh !== undefined && Number.isFinite(sh) ? E * sh : null;
    });
    const live = (i: number) => !pruned.has(i);
    const med = (xs: (number | null)[]) => median(xs.filter((x, i): x is number => x !== null && live(i)));
    const [mK, mMu, mLf, mW] = [med(logK), med(logMu), med(logLf), med(logW)];
    const rel = (x: number | null, m: number | null) => (x !== null && m !== null ? x - m : 0);
    const logF = Math.log(this.settings.kappaFactor);
    this.features = Array.from({ length: E }, (_, i) => {
      const trend = (k: number, x: number | null) => {
        const prev = this.ema[i][k];
        if (x === null) return 0;
        this.ema[i][k] = prev === null ? x : prev + TREND_RATE * (x - prev);
        return prev === null ? 0 : x - prev;
      };
      const measurable = logK[i] !== null;
      return [
        rel(logK[i], mK),
        rel(logMu[i], mMu),
        rel(logLf[i], mLf),
        measurable ? 0 : 1,
        share[i] !== null ? share[i]! - 1 : 0,
        share[i] !== null ? 0 : 1,
        rel(logW[i], mW),
        trend(0, logK[i]),
        trend(1, share[i]),
        trend(2, logW[i]),
      ];
    });
    this.excess = Array.from({ length: E }, (_, i) => (logK[i] !== null && mK !== null ? Math.max(0, logK[i]! - mK - logF) : 0));
  }

  /** Whether a measurement has been observed (the gate has features to work on). */
  get ready(): boolean {
    return this.features !== null;
  }

  /**
   * The soft mask for the step about to run, one value per unit in [MASK_FLOOR, 1]: a fresh
   * relaxed sample for trainable units, 1 for frozen ones, 0 for pruned ones. Undefined outside the
   * anneal or before the first measurement (the model then runs unmasked).
   */
  sampleMask(completed: number, frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): number[] | undefined {
    if (!this.inAnneal(completed) || !this.features) return undefined;
    const tau = this.temperature(completed);
    const noise = Array.from({ length: this.units }, () => {
      const u = Math.min(1 - 1e-7, Math.max(1e-7, this.uniform()));
      return Math.log(u) - Math.log(1 - u);
    });
    this.sampled = true;
    const logits = this.logits();
    // The final decisions read the keep-logits averaged over the anneal's last quarter: one step's
    // logits swing with the features (refreshed each monitor step) and the noisy task slope.
    if (completed - this.settings.warmup >= DECISION_WINDOW_START * this.settings.anneal) {
      logits.forEach((a, i) => (this.logitSum[i] += a));
      this.logitCount++;
    }
    return logits.map((a, i) => (pruned.has(i) ? 0 : frozen.has(i) ? 1 : Math.max(MASK_FLOOR, sigmoid((a + noise[i]) / tau))));
  }

  /**
   * One Adam step of the gate on the last sampled mask, given ∂L_task/∂m_e from the model's step on
   * it. Frozen and pruned units take no part (their mask is fixed).
   */
  update(maskGrad: ArrayLike<number>, frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): void {
    if (!this.sampled || !this.features) return;
    if (!Array.from({ length: this.units }, (_, i) => !frozen.has(i) && !pruned.has(i)).some((x) => x)) return;
    // One batch's ∂L/∂m is noisy (its sign flips from batch to batch for a used unit) and, for a
    // unit that carries routing while its mask sits near 0, huge (the renormalization's 1/Σ): the
    // gate learns from its running mean, each step's value clipped to ±1.
    this.maskGradMean = this.maskGradMean.map((g, i) => g + MASK_GRAD_RATE * (Math.max(-1, Math.min(1, Number(maskGrad[i]) || 0)) - g));
    for (let k = 0; k < GATE_STEPS_PER_UPDATE; k++) this.adamStep(this.lossAndGradient(this.maskGradMean, frozen, pruned).grad);
    this.sampled = false;
  }

  /**
   * The gate loss (its linearized task term Σ ĝ_e·p_e, the keep costs, the budget, the decays) and its
   * gradient w.r.t. the gate's weights, by TF.js autodiff (exposed for the finite-difference test).
   */
  lossAndGradient(maskGrad: ArrayLike<number>, frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): { loss: number; grad: Float64Array } {
    const tf = this.tf;
    const E = this.units;
    const trainable = Array.from({ length: E }, (_, i) => !frozen.has(i) && !pruned.has(i));
    const phi = tf.tensor2d(this.features!.flat(), [E, FEATURES]);
    const ghat = tf.tensor1d(Array.from({ length: E }, (_, i) => (trainable[i] ? Number(maskGrad[i]) || 0 : 0)));
    const tr = tf.tensor1d(trainable.map((x) => (x ? 1 : 0)));
    const cost = tf.tensor1d(this.excess.map((x) => (x + this.settings.keepCost) / E));
    // Units outside the game still count in the kept fraction: frozen ones are kept, pruned ones not.
    const fixedKept = Array.from({ length: E }, (_, i) => i).filter((i) => frozen.has(i) && !pruned.has(i)).length;
    const target = 1 - this.allowed / E;
    const w = tf.tensor1d(Array.from(this.weights));
    const f = (wt: TF.Tensor1D): TF.Scalar => {
      const a = this.logitsOf(wt, phi);
      const p = tf.sigmoid(a);
      // The expected task loss, linearized: Σ ĝ_e·E[m_e], with E[m_e] = p_e (exact in the hard limit
      // the anneal ends in). Through p, not the sample: a saturated sample (m ≈ 0 or 1, most of them
      // at a low temperature) passes the sample's gradient almost nothing.
      const task = tf.sum(tf.mul(tf.mul(ghat, p), tr));
      const keepCost = tf.sum(tf.mul(tf.mul(cost, p), tr));
      const kept = tf.div(tf.add(tf.sum(tf.mul(p, tr)), fixedKept), E);
      const gap = tf.sub(target, kept);
      const budget = tf.mul(tf.square(this.settings.exact ? gap : tf.relu(gap)), BUDGET_WEIGHT);
      // A small decay on the logits keeps them out of σ's flat tails, where the keep cost and the
      // budget would lose their gradient and a unit could stay kept on a stale push.
      const decay = tf.mul(tf.sum(tf.mul(tf.square(a), tr)), LOGIT_DECAY / E);
      // Weight decay on the shared network's weights (not its biases, not the unit offsets): with a
      // handful of units it could otherwise fit a noise feature (a κ trend) that separates them today
      // and swaps them after the next measurement.
      const shared = tf.mul(tf.add(tf.sum(tf.square(tf.slice(wt, [0], [FEATURES * HIDDEN]))), tf.sum(tf.square(tf.slice(wt, [FEATURES * HIDDEN + HIDDEN], [HIDDEN])))), WEIGHT_DECAY);
      return tf.addN([task, keepCost, budget, decay, shared]) as TF.Scalar;
    };
    const vg = tf.tidy(() => {
      const r = tf.valueAndGrad(f)(w);
      return { value: r.value, grad: r.grad };
    });
    const out = { loss: vg.value.dataSync()[0], grad: Float64Array.from(vg.grad.dataSync()) };
    tf.dispose([phi, ghat, tr, cost, w, vg.value, vg.grad]);
    return out;
  }

  /** Keep-probability p_e = σ(a_e) per unit: 1 frozen, 0 pruned, 1 before the first measurement. */
  keepProbabilities(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): number[] {
    if (!this.features) return Array.from({ length: this.units }, (_, i) => (pruned.has(i) ? 0 : 1));
    return this.logits().map((a, i) => (pruned.has(i) ? 0 : frozen.has(i) ? 1 : sigmoid(a)));
  }

  /**
   * The hard, final decisions: trainable units with p < ½ (`exact`: the k lowest whatever p), lowest
   * p first, within the budget, never a frozen unit, never the last trainable unit.
   */
  decide(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): number[] {
    if (!this.settings.enabled || !this.features) return [];
    const trainable = Array.from({ length: this.units }, (_, i) => i).filter((i) => !pruned.has(i) && !frozen.has(i));
    const room = Math.min(this.allowed - pruned.size, trainable.length - 1);
    if (room <= 0) return [];
    const a = this.decisionLogits();
    return trainable
      .filter((i) => this.settings.exact || a[i] < 0)
      .sort((x, y) => a[x] - a[y] || x - y)
      .slice(0, room);
  }

  /** The running mean of ∂L/∂m_e the gate learns from (negative: the unit lowers the loss). */
  get taskSlope(): readonly number[] {
    return this.maskGradMean;
  }

  /** The keep-probabilities the decisions read: σ of the logits averaged over the anneal's last quarter. */
  decisionKeepProbabilities(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): number[] {
    if (!this.features) return this.keepProbabilities(frozen, pruned);
    return this.decisionLogits().map((a, i) => (pruned.has(i) ? 0 : frozen.has(i) ? 1 : sigmoid(a)));
  }

  private decisionLogits(): number[] {
    return this.logitCount ? this.logitSum.map((x) => x / this.logitCount) : this.logits();
  }

  getState(): PrunerState {
    return {
      weights: [...this.weights],
      adamM: [...this.m],
      adamV: [...this.v],
      adamT: this.t,
      rng: this.rng,
      ema: this.ema.map((r) => [...r]),
      features: this.features ? this.features.map((r) => [...r]) : null,
      excess: [...this.excess],
      maskGradMean: [...this.maskGradMean],
      logitSum: [...this.logitSum],
      logitCount: this.logitCount,
    };
  }

  setState(s: PrunerState): void {
    if (s.weights?.length !== this.weights.length || s.ema?.length !== this.units || s.excess?.length !== this.units) throw new Error('pruner state does not fit this model');
    this.weights = Float64Array.from(s.weights);
    this.m = Float64Array.from(s.adamM);
    this.v = Float64Array.from(s.adamV);
    this.t = s.adamT;
    this.rng = s.rng;
    this.ema = s.ema.map((r) => [...r]);
    this.features = s.features ? s.features.map((r) => [...r]) : null;
    this.excess = [...s.excess];
    this.maskGradMean = s.maskGradMean?.length === this.units ? [...s.maskGradMean] : new Array(this.units).fill(0);
    this.logitSum = s.logitSum?.length === this.units ? [...s.logitSum] : new Array(this.units).fill(0);
    this.logitCount = s.logitCount ?? 0;
  }

  /** The index of the network's output bias b2 among the weights (tests saturate the gate with it). */
  get outputBiasIndex(): number {
    return FEATURES * HIDDEN + 2 * HIDDEN;
  }

  /** For the gradient test: read and perturb one weight. */
  weight(k: number): number {
    return this.weights[k];
  }
  setWeight(k: number, value: number): void {
    this.weights[k] = value;
  }
  get weightCount(): number {
    return this.weights.length;
  }

  private logits(): number[] {
    const tf = this.tf;
    return tf.tidy(() => Array.from(this.logitsOf(tf.tensor1d(Array.from(this.weights)), tf.tensor2d(this.features!.flat(), [this.units, FEATURES])).dataSync()));
  }

  /** a = tanh(Φ·W1 + b1)·w2 + b2, [E], from the flattened weights (differentiable in them). */
  private logitsOf(w: TF.Tensor1D, phi: TF.Tensor2D): TF.Tensor1D {
    const tf = this.tf;
    let at = 0;
    const take = (n: number, shape: number[]) => {
      const t = tf.reshape(tf.slice(w, [at], [n]), shape);
      at += n;
      return t;
    };
    const w1 = take(FEATURES * HIDDEN, [FEATURES, HIDDEN]) as TF.Tensor2D;
    const b1 = take(HIDDEN, [HIDDEN]);
    const w2 = take(HIDDEN, [HIDDEN, 1]) as TF.Tensor2D;
    const b2 = take(1, [1]);
    const offsets = take(this.units, [this.units, 1]);
    const hidden = tf.tanh(tf.add(tf.matMul(phi, w1), b1)) as TF.Tensor2D;
    return tf.reshape(tf.add(tf.add(tf.matMul(hidden, w2), b2), offsets), [this.units]) as TF.Tensor1D;
  }

  private adamStep(grad: Float64Array): void {
    const lr = this.settings.gateLearningRate;
    this.t++;
    const b1 = 0.9, b2 = 0.999;
    for (let k = 0; k < this.weights.length; k++) {
      this.m[k] = b1 * this.m[k] + (1 - b1) * grad[k];
      this.v[k] = b2 * this.v[k] + (1 - b2) * grad[k] * grad[k];
      const mh = this.m[k] / (1 - b1 ** this.t);
      const vh = this.v[k] / (1 - b2 ** this.t);
      this.weights[k] -= (lr * mh) / (Math.sqrt(vh) + 1e-8);
    }
  }

  private uniform(): number {
    this.rng = (Math.imul(this.rng, 1664525) + 1013904223) >>> 0;
    return this.rng / 4294967296;
  }
}

/** ‖w_e‖ over each unit's own parameters (the gate's weight-norm feature; magnitude pruning's score). */
export function unitWeightNorms(units: number, weightsOf: (unit: number) => ArrayLike<number>[]): number[] {
  return Array.from({ length: units }, (_, i) => {
    let s = 0;
    for (const a of weightsOf(i)) for (let k = 0; k < a.length; k++) s += a[k] * a[k];
    return Math.sqrt(s);
  });
}

function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
