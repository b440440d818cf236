// Pieces every model family shares: its variables in groups with their optimizers (checkpoint state,
// weight copies, disposal: ParameterGroups, FamilyBase), the pruning gate's soft mask, the regularizer's
// unit weights, the routerless measurement, and a classifier's accuracy over a whole split. What a new
// family implements itself is listed in docs/method.md, "Units of the other families".
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats } from '../../protocol';
import type { ModelState, SavedTensor, TaskData } from './types';
import { conditioning, conditioningValues, dampedKappa } from '../pl/tangentKernel';

/** A set of variables with the optimizer that updates them (one per unit, one for shared variables). */
export type VariableGroup = [name: string, vars: TF.Variable[], optimizer: TF.Optimizer];

const saveTensor = async (t: TF.Tensor): Promise<SavedTensor> => ({ shape: t.shape.slice(), data: Float32Array.from(await t.data()) });

/** Variables by model-relative name (the `prefix/` of their tfjs names cut off) and each group's optimizer slots. */
export async function saveGroups(prefix: string, groups: VariableGroup[], extra: TF.Variable[] = []): Promise<ModelState> {
  const state: ModelState = { variables: {}, optimizers: {} };
  for (const [group, vars, opt] of groups) {
    for (const v of vars) state.variables[v.name.slice(prefix.length + 1)] = await saveTensor(v);
    // An optimizer that never stepped (a unit frozen from the start) has no slots yet.
    state.optimizers[group] = await Promise.all((await opt.getWeights()).map((w) => saveTensor(w.tensor)));
  }
  // Variables no optimizer owns (OPT's fixed neurons) are part of the model all the same.
  for (const v of extra) state.variables[v.name.slice(prefix.length + 1)] = await saveTensor(v);
  return state;
}

/** The inverse of saveGroups; refuses a checkpoint whose variables do not fit. */
export async function restoreGroups(tf: typeof TF, prefix: string, groups: VariableGroup[], state: ModelState, extra: TF.Variable[] = []): Promise<void> {
  const assign = (v: TF.Variable) => {
    const saved = state.variables[v.name.slice(prefix.length + 1)];
    if (!saved || saved.shape.join() !== v.shape.join()) throw new Error(`checkpoint does not fit the model: ${v.name}`);
    v.assign(tf.tensor(saved.data, saved.shape));
  };
  for (const [group, vars, opt] of groups) {
    vars.forEach(assign);
    const slots = state.optimizers[group] ?? [];
    if (slots.length) {
      // Adam's slots: [iterations, m per variable…, v per variable…], matched by position.
      const names = ['iter', ...vars.map((v) => `${v.name}/m`), ...vars.map((v) => `${v.name}/v`)];
      await opt.setWeights(slots.map((s, k) => ({ name: names[k] ?? `slot${k}`, tensor: tf.tensor(s.data, s.shape) })));
    }
  }
  extra.forEach(assign);
}

/** Accuracy (0…1) of a classifier over a whole split, in batches of `batch` examples (one read-back each). */
export function classifierAccuracy(tf: typeof TF, data: TaskData, split: 'train' | 'test', logits: (x: TF.Tensor) => TF.Tensor2D, batch: number): number {
  const n = split === 'train' ? data.trainSize : data.testSize;
  let correct = 0;
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const b = data.batch(tf, split, Int32Array.from({ length: m }, (_, k) => i + k));
    correct += tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(logits(b.x), 1), tf.argMax(b.y, 1)), 'int32')).dataSync()[0]);
    tf.dispose([b.x, b.y]);
  }
  return correct / n;
}

/** Weights of the regularizer's mean over units: the given per-unit weights (clamped at 0) or 1, for trainable units only. */
export interface UnitWeights {
  w: number[];
  total: number;
}

export function regularizerWeights(units: number, trainable: number[], given: ArrayLike<number> | undefined): UnitWeights {
  const w = Array.from({ length: units }, (_, i) => (trainable.includes(i) ? (given ? Math.max(0, given[i] ?? 0) : 1) : 0));
  return { w, total: w.reduce((a, b) => a + b, 0) };
}


/**
 * Each unit's factor in the model's kernel Σ_e w_e·K_e (docs/method.md, contract 4): its regularizer
 * weight scaled so the largest is 1 (uniform weights over the trainable units give 1 each, 0 elsewhere).
 */
export function kernelWeights(weights: readonly number[]): Float32Array {
  const top = Math.max(0, ...weights);
  return Float32Array.from(weights, (w) => (top > 0 ? Math.max(0, w) / top : 0));
}

/** K[S, S] of an n×n row-major kernel, for the index set S. */
export function principalSubmatrix(k: ArrayLike<number>, n: number, rows: readonly number[]): Float64Array {
  const m = rows.length;
  const out = new Float64Array(m * m);
  for (let a = 0; a < m; a++) for (let b = 0; b < m; b++) out[a * m + b] = k[rows[a] * n + rows[b]];
  return out;
}

/**
 * top_i = max_{j≠label} log p_j per row (−∞ when no other class has probability): the row scales of
 * outputDirectionsTf, from read-back log-probabilities and one-hot labels.
 */
export function rowScales(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, n: number, c: number): Float64Array {
  const top = new Float64Array(n).fill(-Infinity);
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) if (oneHot[i * c + j] !== 1) top[i] = Math.max(top[i], logProbs[i * c + j]);
  return top;
}

/** κ of a model's kernel with the eigenvectors its regularizer is differentiated along. */
export interface ModelConditioning {
  mu: number;
  lf: number;
  kappa: number;
  vMin: Float64Array;
  vMax: Float64Array;
}

/**
 * Families without a router (heads, channel groups; docs/method.md, contract 3–9): every unpruned unit
 * serves every probe example, its share is its fraction tr(K_g)/Σ tr(K_g') of the model's output-gradient
 * energy on the probe, a pruned unit serves nothing (null κ, share 0). The model's kernel is
 * Σ_{g∈T} K_g + U·Uᵀ, U·Uᵀ the output layer's bias (∂s_i/∂b = u_i). `lfOf` replaces λ_max as a unit's
 * L_f (spectral norm); the model's κ always uses its own kernel.
 */
export function routerlessMeasurement(
  kernels: readonly Float64Array[],
  probeU: ArrayLike<number>,
  n: number,
  c: number,
  frozen: ReadonlySet<number>,
  pruned: ReadonlySet<number>,
  damping: number,
  lfOf?: (id: number) => number,
): { stats: UnitStats[]; model: ModelConditioning } {
  const trace = (K: Float64Array) => {
    let t = 0;
    for (let i = 0; i < n; i++) t += K[i * n + i];
    return t;
  };
  const energy = kernels.map((K, id) => (pruned.has(id) ? 0 : trace(K)));
  const total = energy.reduce((a, b) => a + b, 0);
  const model = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let uu = 0;
      for (let k = 0; k < c; k++) uu += probeU[i * c + k] * probeU[j * c + k];
      model[i * n + j] = uu;
    }
  }
  const stats = kernels.map((K, id): UnitStats => {
    const share = total > 0 ? energy[id] / total : 0;
    if (pruned.has(id)) return { id, mu: null, lf: null, kappa: null, share: 0, served: 0, frozen: frozen.has(id), pruned: true };
    if (!frozen.has(id)) for (let k = 0; k < n * n; k++) model[k] += K[k];
    // A unit needs its extreme eigenvalues only, the model's kernel also their eigenvectors: the extremes
    // solver (accurate to a few ε·λ_max, as moe-mlp's) instead of a full Jacobi solve for each.
    const cond = conditioningValues(K, n, damping);
    const lf = lfOf ? lfOf(id) : cond.lf;
    return { id, mu: cond.mu, lf, kappa: lfOf ? dampedKappa(lf, cond.mu, damping) : cond.kappa, share, served: n, frozen: frozen.has(id), pruned: false };
  });
  const { mu, lf, kappa, vMin, vMax } = conditioning(model, n, damping, { solver: 'extremes' });
  return { stats, model: { mu, lf, kappa, vMin, vMax } };
}

/**
 * The pruning gate's soft mask as a variable of the model, so a step can differentiate its task loss
 * with respect to it (tf.variableGrads differentiates variables only). No optimizer owns it and no
 * checkpoint saves it: the gate sets it before every masked step and reads its gradient after.
 */
export class SoftMask {
  private variable: TF.Variable | undefined;
  constructor(
    private readonly tf: typeof TF,
    private readonly name: string,
    private readonly units: number,
  ) {}

  /** The mask variable holding `values` for this step, or undefined when the step is unmasked. */
  bind(values: ArrayLike<number> | undefined): TF.Variable | undefined {
    if (!values) return undefined;
    if (values.length !== this.units) throw new RangeError(`soft mask has ${values.length} values for ${this.units} units`);
    const t = this.tf.tensor1d(Array.from(values, (v) => Math.min(1, Math.max(0, Number(v)))));
    if (!this.variable) this.variable = this.tf.variable(t, true, this.name);
    else this.variable.assign(t);
    t.dispose();
    return this.variable;
  }

  /**
   * Takes the mask's gradient out of `grads` (no optimizer step and no gradient norm sees it) and
   * reads it back; zeros where the mask did not reach the loss.
   */
  take(grads: TF.NamedTensorMap): number[] {
    const g = this.variable ? grads[this.variable.name] : undefined;
    if (!g) return new Array(this.units).fill(0);
    delete grads[this.variable!.name];
    const values = Array.from(g.dataSync());
    g.dispose();
    return values;
  }

  /** Unit i's mask as a [1] tensor (broadcasts against anything). */
  unit(mask: TF.Tensor1D, i: number): TF.Tensor1D {
    return this.tf.slice(mask, [i], [1]);
  }

  dispose(): void {
    this.variable?.dispose();
    this.variable = undefined;
  }
}

/**
 * A family's trainable variables in groups, each with its own optimizer: one group for the variables
 * no unit owns and one per unit (tfjs's Adam keys its moments by list position, so one optimizer over
 * a list that shrinks when a unit is frozen would hand the other units each other's moments). It owns
 * what every family does alike with them: checkpoint state, copies of a unit's weights, and disposal.
 * The variable lists are read when needed, so a family may make its variables after this object.
 */
export interface GroupLayout {
  /** The shared group's name in checkpoints (`gate`, `shared`, `dense`) and its variables. */
  sharedName: string;
  sharedVars: () => TF.Variable[];
  /** Unit i's group name in checkpoints (`expert3`, `head3`, `group3`) and its variables. */
  unitName: (i: number) => string;
  unitVars: (i: number) => TF.Variable[];
  /** Variables no optimizer owns but a checkpoint keeps (OPT's fixed neurons). */
  extraVars?: () => TF.Variable[];
}

export class ParameterGroups {
  private readonly sharedOptimizer: TF.Optimizer;
  private readonly unitOptimizers: TF.Optimizer[];

  constructor(
    private readonly tf: typeof TF,
    /** The tfjs name prefix of the model's variables, cut off in checkpoints. */
    private readonly prefix: string,
    readonly units: number,
    private readonly layout: GroupLayout,
    makeOptimizer: () => TF.Optimizer,
  ) {
    this.sharedOptimizer = makeOptimizer();
    this.unitOptimizers = Array.from({ length: units }, () => makeOptimizer());
  }

  /** The variables a step differentiates, in this order: the shared group's, then each trainable unit's. */
  stepVariables(trainable: readonly number[]): TF.Variable[] {
    const vars = [...this.layout.sharedVars()];
    for (const i of trainable) vars.push(...this.layout.unitVars(i));
    return vars;
  }

  /**
   * One optimizer step for the shared group and for each trainable unit, from a step's gradients. With
   * `skipUnitsWithoutGradient`, a unit none of whose variables got a gradient (an expert no token was
   * routed to) is not stepped at all, so its Adam's bias correction does not advance either.
   */
  applyGradients(grads: TF.NamedTensorMap, trainable: readonly number[], skipUnitsWithoutGradient = false): void {
    const group = (vars: TF.Variable[]) => vars.map((v) => ({ name: v.name, tensor: grads[v.name] }));
    this.sharedOptimizer.applyGradients(group(this.layout.sharedVars()));
    for (const i of trainable) {
      const g = group(this.layout.unitVars(i));
      if (!skipUnitsWithoutGradient || g.some((x) => x.tensor)) this.unitOptimizers[i].applyGradients(g);
    }
  }

  private groups(): VariableGroup[] {
    const l = this.layout;
    return [[l.sharedName, l.sharedVars(), this.sharedOptimizer], ...this.unitOptimizers.map((opt, i): VariableGroup => [l.unitName(i), l.unitVars(i), opt])];
  }

  /** Everything needed to continue training exactly where it stopped (for checkpoints). */
  save(): Promise<ModelState> {
    return saveGroups(this.prefix, this.groups(), this.layout.extraVars?.());
  }

  restore(state: ModelState): Promise<void> {
    return restoreGroups(this.tf, this.prefix, this.groups(), state, this.layout.extraVars?.());
  }

  /** A copy of unit i's weights. */
  unitWeights(i: number): Float32Array[] {
    return this.layout.unitVars(i).map((v) => Float32Array.from(v.dataSync()));
  }

  /** Disposes every variable of every group, the extra ones, and the optimizers. */
  dispose(): void {
    const l = this.layout;
    this.tf.dispose([...l.sharedVars(), ...Array.from({ length: this.units }, (_, i) => l.unitVars(i)).flat(), ...(l.extraVars?.() ?? [])]);
    this.sharedOptimizer.dispose();
    for (const o of this.unitOptimizers) o.dispose();
  }
}

/**
 * What PlModel asks of every family alike, answered from its ParameterGroups: checkpoint state and a
 * unit's weight copies. A family extends it and sets `parameters` in its constructor.
 */
export abstract class FamilyBase {
  protected abstract readonly parameters: ParameterGroups;

  /** Everything needed to continue training exactly where it stopped (for checkpoints). */
  getState(): Promise<ModelState> {
    return this.parameters.save();
  }

  setState(state: ModelState): Promise<void> {
    return this.parameters.restore(state);
  }

  unitWeights(i: number): Float32Array[] {
    return this.parameters.unitWeights(i);
  }
}
