// The gating network that prunes poorly-conditioned units (experts, heads, channel groups).
// Chen et al. (ICLR 2023) learn a gate "by minimizing the condition number of the target model";
// the paper's exact gate inputs, rule and schedule could not be read, so this design is ours
// (docs/method.md, "Pruning"): per-unit features → a small tanh network → keep-probability g_e,
// trained on each new measurement to minimize
//   L_gate = (1/E) Σ_e g_e·(log κ_e − log κ_med − log F) + β·max(0, (1 − budget) − mean g)²
// i.e. the kept units' log condition number, against a keep reward of log κ_med + log F: a unit
// pays for being kept exactly when its κ is more than F× the median unit's. The budget term stops
// the gate from closing more than the budget allows. Decisions are hard and permanent: after the
// warm-up, every `every` steps, units with g < threshold are pruned, most ill-conditioned first,
// never a frozen one, never beyond the budget, never the last trainable unit.
// Plain float64 JS: the network has a few dozen weights, so tfjs would only add overhead.
import type { UnitStats } from '../../protocol';

export interface PrunerSettings {
  enabled: boolean;
  warmup: number;
  every: number;
  budget: number;
  threshold: number;
  gateLearningRate: number;
  kappaFactor: number;
}

/** Everything needed to continue pruning exactly where a checkpoint left off. */
export interface PrunerState {
  weights: number[];
  adamM: number[];
  adamV: number[];
  adamT: number;
  lastLogKappa: (number | null)[];
}

const FEATURES = 4; // log κ, log μ, log L_f (each relative to the median unit), trend of log κ
const HIDDEN = 6;
const BUDGET_WEIGHT = 10;
const GATE_STEPS_PER_MEASUREMENT = 20;

export class GatingPruner {
  /** [W1 (HIDDEN×FEATURES), b1 (HIDDEN), w2 (HIDDEN), b2] flattened. */
  private weights: Float64Array;
  private m: Float64Array;
  private v: Float64Array;
  private t = 0;
  private lastLogKappa: (number | null)[];
  private features: Float64Array[] = [];
  private logKappa: number[] = [];
  /** The gate's current keep-probability per unit (1 before the first measurement). */
  gate: number[];

  constructor(readonly units: number, readonly settings: PrunerSettings, seed = 1) {
    const size = HIDDEN * FEATURES + HIDDEN + HIDDEN + 1;
    let s = (seed * 7919 + 17) >>> 0 || 1;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
    this.weights = Float64Array.from({ length: size }, (_, i) => (i < HIDDEN * FEATURES || (i >= HIDDEN * FEATURES + HIDDEN && i < size - 1) ? rnd() * 0.5 : 0));
    // Start open: b2 = 3 gives g ≈ 0.95 for every unit until the gate has learned something.
    this.weights[size - 1] = 3;
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
    this.lastLogKappa = new Array(units).fill(null);
    this.gate = new Array(units).fill(1);
  }

  /**
   * A new measurement: recompute features and train the gate on it. Pruned units are out of the
   * game (gate 0); frozen units are measured and shown but excluded from training and decisions.
   */
  observe(stats: UnitStats[], frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): void {
    const live = stats.filter((s) => !pruned.has(s.id));
    if (!live.length) return;
    // A unit without a κ (null: it serves fewer than MIN_SERVED probe examples, so the model barely
    // uses it) is left out of the medians and reads as a unit 100× past the keep threshold: a pruning
    // candidate, never one the gate keeps for a κ it does not have.
    const measured = live.filter((s) => s.kappa !== null && s.mu !== null && s.lf !== null);
    const logs = (f: (s: UnitStats) => number | null) => measured.map((s) => Math.log(Math.max(f(s) ?? 0, 1e-300)));
    const medK = median(logs((s) => s.kappa));
    const medMu = median(logs((s) => s.mu));
    const medL = median(logs((s) => s.lf));
    this.features = new Array(this.units);
    this.logKappa = new Array(this.units).fill(0);
    for (const s of stats) {
      if (s.kappa === null || s.mu === null || s.lf === null) {
        const unused = Math.log(this.settings.kappaFactor) + Math.log(100);
        this.features[s.id] = Float64Array.from([unused, 0, 0, 0]);
        this.logKappa[s.id] = unused - Math.log(this.settings.kappaFactor);
        continue;
      }
      const lk = Math.log(Math.max(s.kappa, 1e-300));
      const last = this.lastLogKappa[s.id];
      this.features[s.id] = Float64Array.from([lk - medK, Math.log(Math.max(s.mu, 1e-300)) - medMu, Math.log(Math.max(s.lf, 1e-300)) - medL, last === null ? 0 : lk - last]);
      this.logKappa[s.id] = lk - medK - Math.log(this.settings.kappaFactor);
      this.lastLogKappa[s.id] = lk;
    }
    const trainable = live.filter((s) => !frozen.has(s.id)).map((s) => s.id);
    if (trainable.length) for (let k = 0; k < GATE_STEPS_PER_MEASUREMENT; k++) this.adamStep(trainable);
    this.gate = Array.from({ length: this.units }, (_, i) => (pruned.has(i) ? 0 : this.features[i] ? this.forward(this.features[i]).g : 1));
  }

  /** Whether `step` is a decision step of the schedule. */
  isDecisionStep(step: number): boolean {
    return this.settings.enabled && step >= this.settings.warmup && (step - this.settings.warmup) % this.settings.every === 0;
  }

  /** Units to prune now (most ill-conditioned first), within the budget; none that are frozen. */
  decide(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): number[] {
    if (!this.settings.enabled || !this.features.length) return [];
    const allowed = Math.floor(this.settings.budget * this.units + 1e-9) - pruned.size;
    const trainable = Array.from({ length: this.units }, (_, i) => i).filter((i) => !pruned.has(i) && !frozen.has(i));
    const room = Math.min(allowed, trainable.length - 1);
    if (room <= 0) return [];
    return trainable
      .filter((i) => this.gate[i] < this.settings.threshold)
      .sort((a, b) => this.gate[a] - this.gate[b] || this.logKappa[b] - this.logKappa[a])
      .slice(0, room);
  }

  getState(): PrunerState {
    return { weights: [...this.weights], adamM: [...this.m], adamV: [...this.v], adamT: this.t, lastLogKappa: [...this.lastLogKappa] };
  }

  setState(s: PrunerState): void {
    if (s.weights.length !== this.weights.length || s.lastLogKappa.length !== this.units) throw new Error('pruner state does not fit this model');
    this.weights = Float64Array.from(s.weights);
    this.m = Float64Array.from(s.adamM);
    this.v = Float64Array.from(s.adamV);
    this.t = s.adamT;
    this.lastLogKappa = [...s.lastLogKappa];
  }

  /** The gate loss over `ids` and its gradient w.r.t. the weights (exposed for the gradient test). */
  lossAndGradient(ids: number[]): { loss: number; grad: Float64Array } {
    const grad = new Float64Array(this.weights.length);
    const E = ids.length;
    const outs = ids.map((i) => this.forward(this.features[i]));
    const meanG = outs.reduce((a, o) => a + o.g, 0) / E;
    const shortfall = Math.max(0, 1 - this.settings.budget - meanG);
    let loss = BUDGET_WEIGHT * shortfall * shortfall;
    ids.forEach((i, k) => {
      loss += (outs[k].g * this.logKappa[i]) / E;
      // dL/dg for this unit: the κ term plus the budget hinge.
      const dg = this.logKappa[i] / E - (2 * BUDGET_WEIGHT * shortfall) / E;
      this.backward(this.features[i], outs[k], dg, grad);
    });
    return { loss, grad };
  }

  private adamStep(ids: number[]): void {
    const { grad } = this.lossAndGradient(ids);
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

  private forward(phi: Float64Array): { hidden: Float64Array; g: number } {
    const w = this.weights;
    const hidden = new Float64Array(HIDDEN);
    let z = w[w.length - 1];
    for (let j = 0; j < HIDDEN; j++) {
      let a = w[HIDDEN * FEATURES + j];
      for (let f = 0; f < FEATURES; f++) a += w[j * FEATURES + f] * phi[f];
      hidden[j] = Math.tanh(a);
      z += w[HIDDEN * FEATURES + HIDDEN + j] * hidden[j];
    }
    return { hidden, g: 1 / (1 + Math.exp(-z)) };
  }

  private backward(phi: Float64Array, o: { hidden: Float64Array; g: number }, dg: number, grad: Float64Array): void {
    const w = this.weights;
    const dz = dg * o.g * (1 - o.g);
    grad[w.length - 1] += dz;
    for (let j = 0; j < HIDDEN; j++) {
      grad[HIDDEN * FEATURES + HIDDEN + j] += dz * o.hidden[j];
      const da = dz * w[HIDDEN * FEATURES + HIDDEN + j] * (1 - o.hidden[j] * o.hidden[j]);
      grad[HIDDEN * FEATURES + j] += da;
      for (let f = 0; f < FEATURES; f++) grad[j * FEATURES + f] += da * phi[f];
    }
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
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
