// The contract between the training loop and a model family. The loop (train.ts) knows nothing about
// experts, heads or channel groups: it asks a family for steps, measurements and state, and steers
// "units" by index. Every family keeps each unit's variables apart so freezing a unit is leaving its
// variables out of the update, and pruning is masking its contribution in the forward pass.
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats } from '../../protocol';

/** One batch ready for a model: family-specific tensors. The caller disposes them. */
export interface Batch {
  /** Images: float32 [b, features]. Text: int32 [b, T] token ids. */
  x: TF.Tensor;
  /** Classifiers: float32 one-hot [b, classes]. Language models: int32 [b, T] next-token ids. */
  y: TF.Tensor;
  size: number;
}

/** A task's data, addressed by example index so the loop can shuffle, checkpoint and probe it. */
export interface TaskData {
  /** For logs: what was loaded and from where. */
  name: string;
  kind: 'images' | 'text';
  /** Accuracy (0…1) for classifiers, perplexity for language models. */
  taskMetric: 'accuracy' | 'perplexity';
  /** Examples per split (images; for text, the number of sequence windows). */
  trainSize: number;
  testSize: number;
  /** Images: features per example (rows × cols) and the grid; text: vocabulary size in `classes`. */
  features: number;
  rows: number;
  cols: number;
  classes: number;
  /** Tensors for these examples of a split. */
  batch(tf: typeof TF, split: 'train' | 'test', indices: ArrayLike<number>): Batch;
}

export interface StepResult {
  /** The optimized objective: task loss + α·(regularizer). */
  loss: number;
  taskLoss: number;
  /** κ̄: the κ of the model's kernel on the probe (docs/method.md, contract 6), the term α multiplies. */
  regularizer: number;
  /** Accuracy (0…1) of this batch, or perplexity exp(taskLoss) for a language model. */
  taskMetric: number;
  /** ‖∇f‖² over every variable that had a gradient this step (the PL* check), where StepOptions.gradNorm asked for it. */
  gradNormSq?: number;
  /**
   * Where the step measured in its own graph (PlModel.measuresInStep, α > 0): every unit's μ, L_f, κ
   * on the weights the step started from, and the time spent on that alone (read-backs and float64
   * eigen-solves), for the benchmark's overhead figure.
   */
  measured?: UnitStats[];
  monitorMs?: number;
  /**
   * ∂(the step's objective)/∂mask_e per unit, when the step ran under a soft mask (StepOptions.softMask):
   * the task loss's, plus α·κ̄'s where a family's regularizer reads the mask.
   */
  maskGrad?: number[];
  /**
   * The fraction of the model's routing mass through each unit on this step's batch (sums to 1;
   * docs/method.md, contract 9), where the family routes (moe-mlp, switch-transformer). Families
   * without a router report shares in measure() instead.
   */
  shares?: number[];
}

/** A saved parameter or optimizer slot. */
export interface SavedTensor {
  shape: number[];
  data: Float32Array;
}

export interface ModelState {
  /** Variables by model-relative name (`gate/w`, `expert2/b1`, …). */
  variables: Record<string, SavedTensor>;
  /** Optimizer slots per group (`gate`, `expert0`, …), in the optimizer's own order. */
  optimizers: Record<string, SavedTensor[]>;
}

export interface StepOptions {
  alpha: number;
  /** Units that get updates (not frozen, not pruned). */
  trainable: number[];
  /** Units masked out of the forward pass. */
  pruned: ReadonlySet<number>;
  /**
   * Per-unit weights of the regularizer's mean κ (the gating network's keep-probabilities); uniform
   * over `trainable` when absent.
   */
  unitWeights?: ArrayLike<number>;
  /**
   * The pruning gate's soft mask for this step, one value in [0, 1] per unit (1 = untouched, 0 =
   * as if pruned), multiplying each unit's contribution in the forward pass (docs/method.md,
   * "Pruning: the gating network"). The step then reports ∂(its objective)/∂mask in `maskGrad`.
   */
  softMask?: ArrayLike<number>;
  /**
   * Also compute ‖∇f‖² (StepResult.gradNormSq) for the PL* check. The loop asks on monitor steps only,
   * where plRatio is reported next to the same step's μ: reading every gradient once more is a few
   * percent of a small step (docs/method.md, "The PL* check").
   */
  gradNorm?: boolean;
}

export interface PlModel {
  /** Number of prunable units (experts, heads, channel groups). */
  readonly units: number;
  /** Fixes the probe batch (the same examples for the whole run, so κ over time is comparable). The model owns it. */
  setProbe(probe: Batch): void;
  /** One optimizer step on L_S + α·κ̄; frozen units get no update at all (bit-identical weights). */
  trainStep(batch: Batch, o: StepOptions): StepResult;
  /**
   * True when a regularized step (α > 0) measures the eigenvectors it differentiates along itself,
   * so the loop need not call measure() between steps to keep them fresh.
   */
  readonly measuresInStep?: boolean;
  /** μ, L_f and κ of every unit on the probe batch (float64 eigen-solve); frozen and pruned are measured too. */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[];
  /** Mean κ of the last measurement over these units. */
  meanKappa(ids: number[]): number;
  /** The task metric on a whole split (accuracy, or perplexity). */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number>): number;
  /** Family-specific scalars streamed with each metrics event (e.g. hyperspherical energy under OPT). */
  extraMetrics?(): Record<string, number>;
  /** A copy of one unit's weights (tests: frozen means bit-identical). */
  unitWeights(i: number): Float32Array[];
  getState(): Promise<ModelState>;
  setState(state: ModelState): Promise<void>;
  dispose(): void;
}
