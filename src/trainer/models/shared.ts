// Pieces every model family shares: checkpointing variables with their optimizer slots, group by
// group, the mean κ of the last measurement, and a classifier's accuracy over a whole split.
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats } from '../../protocol';
import type { ModelState, SavedTensor, TaskData } from './types';

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

/** Mean κ of the last measurement over these units (0 before the first). */
export function meanKappaOf(stats: readonly (UnitStats | undefined)[], ids: number[]): number {
  const ks = ids.map((i) => stats[i]?.kappa).filter((k): k is number => typeof k === 'number');
  return ks.length ? ks.reduce((a, b) => a + b, 0) / ks.length : 0;
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

/** The weighted mean κ of the last measurement over trainable units (the plain mean when no weight is positive). */
export function weightedKappaOf(stats: readonly (UnitStats | undefined)[], trainable: number[], weights: UnitWeights): number {
  if (!(weights.total > 0)) return meanKappaOf(stats, trainable);
  let s = 0;
  for (const i of trainable) s += (weights.w[i] * (stats[i]?.kappa ?? 0)) / weights.total;
  return s;
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
