// The common body of the image classifiers whose units have no router (bert-encoder's heads, vgg's
// channel groups; docs/method.md, contracts 3–9): every unpruned unit serves every probe example. A
// family extends RouterlessClassifier with only what is its own: its variables (made in its
// constructor), `logits` (pruned units zeroed, the soft mask applied), which variables belong to each
// unit and to none, and its spectral-norm estimate of a unit's L_f. The base owns the probe, the
// training step on L_S + α·κ̄, the measurement, checkpoint state and disposal.
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats, TrainingConfig } from '../../protocol';
import { classifierUnitKernels, outputDirections, smoothKappaTf, SpectralNormState } from '../pl';
import { biasRayleigh, classifierAccuracy, FamilyBase, ParameterGroups, regularizerWeights, routerlessMeasurement, SoftMask, type GroupLayout, type ModelConditioning } from './shared';
import type { Batch, PlModel, StepOptions, StepResult, TaskData } from './types';

type T2 = TF.Tensor2D;

export abstract class RouterlessClassifier extends FamilyBase implements PlModel {
  readonly units: number;
  readonly classes: number;
  protected readonly parameters: ParameterGroups;
  private readonly softMask: SoftMask;
  protected readonly spectral: SpectralNormState;
  private probeX: T2 | undefined;
  private probeY: T2 | undefined;
  private probeU: Float64Array | undefined;
  private unitStats: UnitStats[] = [];
  /** κ of the model's kernel at the last measurement (the regularizer), with its eigenvectors. */
  private modelConditioning: ModelConditioning | undefined;

  /** `prefix` starts every tfjs variable name of this model (unique per model); `evaluationBatch` is evaluate()'s default batch. */
  protected constructor(
    protected readonly tf: typeof TF,
    protected readonly config: TrainingConfig,
    protected readonly prefix: string,
    units: number,
    classes: number,
    groupNames: Pick<GroupLayout, 'sharedName' | 'unitName'>,
    private readonly evaluationBatch: number,
  ) {
    super();
    this.units = units;
    this.classes = classes;
    this.spectral = new SpectralNormState(config.seed);
    this.softMask = new SoftMask(tf, `${prefix}/pruningMask`, units);
    this.parameters = new ParameterGroups(tf, prefix, units, { ...groupNames, sharedVars: () => this.sharedVars(), unitVars: (i) => this.unitVars(i) }, () => tf.train.adam(config.learningRate));
  }

  /** Logits [b, classes] of images x; a pruned unit's variables are replaced by zeros, `softMask` scales each unit's output. */
  abstract logits(x: TF.Tensor, pruned?: ReadonlySet<number>, softMask?: TF.Tensor1D): T2;
  /** Unit i's variables, in a fixed order. */
  abstract unitVars(i: number): TF.Variable[];
  /** Every variable that belongs to no unit. */
  abstract sharedVars(): TF.Variable[];
  /** A unit's L_f under `monitor.lipschitz: spectral-norm` (an estimate from its weight matrices' σ_max). */
  protected abstract spectralLipschitz(id: number): number;

  setProbe(probe: Batch): void {
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeX = probe.x as T2;
    this.probeY = probe.y as T2;
  }

  /**
   * One optimizer step on L_S + α·κ̄, κ̄ the κ of the model's kernel over the (unit-weighted) trainable
   * units. Frozen units are left out of the variable list; α = 0 skips the regularizer graph entirely.
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    const tf = this.tf;
    const { alpha, pruned } = o;
    // A pruned unit never reaches the logits: no gradient, so no optimizer step either.
    const trainable = o.trainable.filter((u) => !pruned.has(u));
    const yOneHot = batch.y as T2;
    const weights = regularizerWeights(this.units, trainable, o.unitWeights);
    const regularized = alpha > 0 && this.probeU !== undefined && this.modelConditioning !== undefined;
    const varList = this.parameters.stepVariables(trainable);
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      let logitsT: T2 | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        logitsT = tf.keep(this.logits(batch.x, pruned, mask));
        taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
        if (!regularized) return taskLossT;
        regT = tf.keep(this.modelKappaTf(trainable.filter((u) => weights.w[u] > 0), pruned));
        return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      if (mask) maskGrad = this.softMask.take(grads);
      this.parameters.applyGradients(grads, trainable);
      const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logitsT!, 1), tf.argMax(yOneHot, 1)), 'float32'));
      const gradNormSq = tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g))));
      const stacked = tf.stack([total, taskLossT!, regT ?? tf.scalar(this.modelConditioning?.kappa ?? 0), accuracy, gradNormSq]);
      tf.dispose([logitsT!, taskLossT!, ...(regT ? [regT] : [])]);
      return stacked;
    });
    // One device→host transfer per step for everything reported.
    const values = reported.dataSync();
    reported.dispose();
    return { loss: values[0], taskLoss: values[1], regularizer: values[2], taskMetric: values[3], gradNormSq: values[4], ...(maskGrad ? { maskGrad } : {}) };
  }

  /**
   * vᵀ(Σ_{u∈units} K_u)v as a differentiable function of the weights: K_u = J_u·J_uᵀ, so the sum is
   * ‖∇_{θ_units} Σ_i v_i s_i‖² with s_i = u_iᵀ logits(x_i): one probe forward and backward per Rayleigh
   * quotient, differentiated again by the caller's tf.variableGrads (a gradient of a gradient; the
   * family's forward pass must allow that). u is held at the last measurement's.
   */
  rayleighTf(units: number | number[], v: Float64Array, pruned: ReadonlySet<number>): TF.Scalar {
    const tf = this.tf;
    const n = this.probeX!.shape[0];
    const u = this.probeU!;
    const c = this.classes;
    const weighted = new Float32Array(n * c);
    for (let i = 0; i < n; i++) for (let k = 0; k < c; k++) weighted[i * c + k] = v[i] * u[i * c + k];
    const vars = (Array.isArray(units) ? units : [units]).flatMap((id) => this.unitVars(id));
    return tf.tidy(() => {
      if (!vars.length) return tf.scalar(0);
      const vu = tf.tensor2d(weighted, [n, c]);
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(this.logits(this.probeX!, pruned), vu)) as TF.Scalar, vars);
      value.dispose();
      return tf.addN(Object.values(grads).map((d) => tf.sum(tf.square(d)))) as TF.Scalar;
    });
  }

  /**
   * κ̃ of the model's kernel Σ_{u∈trainable} K_u + U·Uᵀ with the last measurement's eigenvectors (and u)
   * held: Hellmann–Feynman. vᵀU·Uᵀv = ‖Σ_i v_i u_i‖² is a constant here. Its gradient reaches every
   * trainable variable, since each K_u depends on the whole network. Public for the gradient tests.
   */
  modelKappaTf(trainable: number[], pruned: ReadonlySet<number>): TF.Scalar {
    const tf = this.tf;
    const m = this.modelConditioning;
    if (!m || !this.probeU) throw new Error('modelKappaTf needs a measurement first');
    const bias = (v: Float64Array) => biasRayleigh(this.probeU!, v, this.classes);
    return tf.tidy(() => {
      const lMax = tf.add(this.rayleighTf(trainable, m.vMax, pruned), bias(m.vMax));
      const lMin = tf.add(this.rayleighTf(trainable, m.vMin, pruned), bias(m.vMin));
      return smoothKappaTf(lMax, lMin, this.config.monitor.damping) as TF.Scalar;
    });
  }

  /**
   * The per-unit tangent kernels of s_i = u_iᵀ logits(x_i) on the probe batch, row i of J_u = ∇_{θ_u} s_i
   * (one backward pass per probe example for all units). Pruned when `pruned` says so, except that a
   * pruned unit's own kernel is taken with that unit restored (the rest as they are): the unit is
   * measured as it would act, the way a gated-off expert is.
   */
  unitKernels(pruned: ReadonlySet<number>): Float64Array[] {
    if (!this.probeX || !this.probeU) throw new Error('measure needs a probe batch and output directions');
    return classifierUnitKernels(this.tf, { probeX: this.probeX, probeU: this.probeU, classes: this.classes, units: this.units, logits: (x, mask) => this.logits(x, mask), unitVars: (u) => this.unitVars(u) }, pruned);
  }

  /** μ, L_f, κ of every unit on the probe batch (float64 eigen-solve), refreshing the regularizer's vectors. */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const n = this.probeX.shape[0];
    const logProbs = tf.tidy(() => tf.logSoftmax(this.logits(this.probeX!, pruned)).dataSync());
    this.probeU = outputDirections(logProbs, this.probeY.dataSync(), n, this.classes);
    const damping = this.config.monitor.damping;
    const kernels = this.unitKernels(pruned);
    const r = routerlessMeasurement(kernels, this.probeU, n, this.classes, frozen, pruned, damping, this.config.monitor.lipschitz === 'spectral-norm' ? (id) => this.spectralLipschitz(id) : undefined);
    this.unitStats = r.stats;
    this.modelConditioning = r.model;
    return this.unitStats;
  }

  /** κ of the model's kernel at the last measurement (the headline κ̄). */
  modelKappa(): number | undefined {
    return this.modelConditioning?.kappa;
  }

  meanKappa(ids: number[]): number {
    void ids; // κ of the model's kernel: it sums the trainable units
    return this.modelConditioning?.kappa ?? 0;
  }

  /** Accuracy on a whole split, in batches. */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number> = new Set(), batch = this.evaluationBatch): number {
    return classifierAccuracy(this.tf, data, split, (x) => this.logits(x, pruned), batch);
  }

  dispose(): void {
    this.parameters.dispose();
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.softMask.dispose();
  }
}
