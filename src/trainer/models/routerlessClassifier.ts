// The common body of the image classifiers whose units have no router (bert-encoder's heads, vgg's
// channel groups; docs/method.md, contracts 3–9): every unpruned unit serves every probe example. A
// family extends RouterlessClassifier with only what is its own: its variables (made in its
// constructor), `logits` (pruned units zeroed, the soft mask applied), which variables belong to each
// unit and to none, and its spectral-norm estimate of a unit's L_f. The base owns the probe, the
// training step on L_S + α·κ̄, the measurement, checkpoint state and disposal.
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats, TrainingConfig } from '../../protocol';
import { heldSeed, oneHotLabel, outputDirections, SpectralNormState } from '../pl';
import { classifierAccuracy, FamilyBase, ParameterGroups, regularizerWeights, routerlessMeasurement, SoftMask, type GroupLayout, type ModelConditioning } from './shared';
import type { Batch, PlModel, StepOptions, StepResult, TaskData } from './types';
import { createAdam } from '../engine/adam';
import { sumOfSquares } from '../engine/sumOfSquares';

type T2 = TF.Tensor2D;

/**
 * Given a forward pass with additive zero taps and the taps, the gradients of Σ_i u_iᵀ logits(x_i) with
 * respect to each tap (u the probe's output directions, held inside the Jacobian): δ at every tap.
 */
export type BackToTaps = (forward: (taps: TF.Tensor[]) => T2, taps: TF.Tensor[]) => TF.Tensor[];

export abstract class RouterlessClassifier extends FamilyBase implements PlModel {
  readonly units: number;
  readonly classes: number;
  protected readonly parameters: ParameterGroups;
  private readonly softMask: SoftMask;
  protected readonly spectral: SpectralNormState;
  private probeX: T2 | undefined;
  private probeY: T2 | undefined;
  private probeU: Float64Array | undefined;
  /** The regularized step measures in its own graph: the loop need not measure before it. */
  readonly measuresInStep = true;
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
    this.parameters = new ParameterGroups(tf, prefix, units, { ...groupNames, sharedVars: () => this.sharedVars(), unitVars: (i) => this.unitVars(i) }, () => createAdam(tf, config.learningRate));
  }

  /** Logits [b, classes] of images x; a pruned unit's variables are replaced by zeros, `softMask` scales each unit's output. */
  abstract logits(x: TF.Tensor, pruned?: ReadonlySet<number>, softMask?: TF.Tensor1D): T2;
  /** Unit i's variables, in a fixed order. */
  abstract unitVars(i: number): TF.Variable[];
  /** Every variable that belongs to no unit. */
  abstract sharedVars(): TF.Variable[];
  /** A unit's L_f under `monitor.lipschitz: spectral-norm` (an estimate from its weight matrices' σ_max). */
  protected abstract spectralLipschitz(id: number): number;
  /**
   * J [units, n, p_unit] on probe inputs x, J[u, i, :] = ∂s_i/∂θ_u (a fixed order of the unit's
   * parameters), from one forward pass with zero taps after the units' linear maps and one backward pass
   * to the taps (`backToTaps`), or a family's own backward seeded with `directions(z)` (U [n, classes]
   * of the probe's logits z: hold it inside the Jacobian, the outer gradient follows it); differentiable
   * w.r.t. every weight. A pruned unit's rows are 0.
   */
  protected abstract probeJacobians(x: TF.Tensor, pruned: ReadonlySet<number>, backToTaps: BackToTaps, directions: (z: T2) => T2): TF.Tensor3D;

  /**
   * The batch's logits [B, classes] and the probe's J (as probeJacobians) from one forward pass over the
   * batch and the probe together, where a family can (none by default): the regularized step's forward
   * then runs once. Only without a soft mask (the probe's pass is unmasked).
   */
  protected jointJacobians(batchX: TF.Tensor, probeX: TF.Tensor, pruned: ReadonlySet<number>, directions: (z: T2) => T2): { logits: T2; J: TF.Tensor3D } | undefined {
    void [batchX, probeX, pruned, directions];
    return undefined;
  }

  /**
   * Called before and after a step's variableGrads: a family may share tensors between the batch pass
   * and the probe pass in between (kept across their tidy scopes, disposed in endStep; beginStep also
   * disposes what a step that threw left behind).
   */
  protected beginStep(): void {}
  protected endStep(): void {}

  setProbe(probe: Batch): void {
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeX = probe.x as T2;
    this.probeY = probe.y as T2;
  }

  /**
   * One optimizer step on L_S + α·κ̄, κ̄ the κ of the model's kernel over the trainable units. Frozen
   * units are left out of the variable list; α = 0 skips the regularizer graph entirely. A regularized
   * step measures in its own graph (measuresInStep): the probe's per-unit kernels come from one tapped
   * probe pass (probeJacobians), are read back once and eigen-solved in float64, and κ̃ is then
   * differentiated along those eigenvectors (Hellmann–Feynman) through the same pass.
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    return this.step(batch, o);
  }

  /**
   * The gradients a trainStep with these options would apply (read back by variable name), without
   * applying them: for the tests that hold the in-step regularizer to modelKappaTf.
   */
  objectiveGradients(batch: Batch, o: StepOptions): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    this.step(batch, o, out);
    return out;
  }

  /** trainStep; with `captured`, the gradients are read back into it instead of applied. */
  private step(batch: Batch, o: StepOptions, captured?: Record<string, Float32Array>): StepResult {
    const tf = this.tf;
    const { alpha, pruned } = o;
    // A pruned unit never reaches the logits: no gradient, so no optimizer step either.
    const trainable = o.trainable.filter((u) => !pruned.has(u));
    const yOneHot = batch.y as T2;
    const weights = regularizerWeights(this.units, trainable, o.unitWeights);
    const regularized = alpha > 0 && this.probeX !== undefined;
    const varList = this.parameters.stepVariables(trainable);
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    let monitorMs = 0;
    this.beginStep();
    let reported: TF.Tensor;
    try {
      reported = tf.tidy(() => {
        let taskLossT: TF.Scalar | undefined;
        let regT: TF.Scalar | undefined;
        let logitsT: T2 | undefined;
        const { value: total, grads } = tf.variableGrads(() => {
          // The probe's own pass, unmasked (the kernel is the model's as it stands, pruned units zeroed),
          // with the batch's where the family can (jointJacobians).
          const pass = regularized && !mask ? this.unitJacobians(pruned, undefined, batch.x) : undefined;
          logitsT = tf.keep(pass?.logits ?? this.logits(batch.x, pruned, mask));
          taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
          if (!regularized) return taskLossT;
          // Frozen: neither trainable nor pruned (reported so); the model's kernel sums the regularized units.
          const inModel = trainable.filter((u) => weights.w[u] > 0);
          const frozen = new Set(Array.from({ length: this.units }, (_, u) => u).filter((u) => !trainable.includes(u) && !pruned.has(u)));
          const { J, U, uValue } = pass ?? this.unitJacobians(pruned);
          const t0 = performance.now();
          const kernels = this.kernelsOf(J);
          this.record(kernels, new Set(Array.from({ length: this.units }, (_, u) => u).filter((u) => !inModel.includes(u) && !pruned.has(u))), pruned);
          this.unitStats = this.unitStats.map((st) => ({ ...st, frozen: frozen.has(st.id) }));
          monitorMs = performance.now() - t0;
          regT = tf.keep(this.surrogateKappa(J, U, uValue, kernels, inModel));
          return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
        }, varList);
        if (mask) maskGrad = this.softMask.take(grads);
        if (captured) for (const [name, g] of Object.entries(grads)) captured[name] = Float32Array.from(g.dataSync());
        else this.parameters.applyGradients(grads, trainable);
        const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logitsT!, 1), tf.argMax(yOneHot, 1)), 'float32'));
        const figures = [total, taskLossT!, regT ?? tf.scalar(this.modelConditioning?.kappa ?? 0), accuracy];
        // One native kernel where the addon is loaded (as moe-mlp), a square and a sum per variable otherwise.
        if (o.gradNorm) figures.push(sumOfSquares(tf, Object.values(grads)));
        const stacked = tf.stack(figures);
        tf.dispose([logitsT!, taskLossT!, ...(regT ? [regT] : [])]);
        return stacked;
      });
    } finally {
      // Also when the step threw: its shared tensors go now, so nothing reads them later.
      this.endStep();
    }
    // One device→host transfer per step for everything reported.
    const values = reported.dataSync();
    reported.dispose();
    return { loss: values[0], taskLoss: values[1], regularizer: values[2], taskMetric: values[3], ...(o.gradNorm ? { gradNormSq: values[4] } : {}), ...(regularized ? { measured: this.unitStats, monitorMs } : {}), ...(maskGrad ? { maskGrad } : {}) };
  }

  /**
   * J [units, n, p_unit] of s_i = u_iᵀ logits(x_i) on the probe (probeJacobians) and the directions U
   * [n, classes] it used. With `held`, u is those directions, a constant. Without, u is computed from
   * this very pass's logits (outputDirections, read back once, stored as the measurement's) and U is
   * that as a differentiable function of the logits (directionsOp: the gradient of outputDirections in closed form, docs/method.md contract 2):
   * the kernel is defined with u held inside the Jacobian, so the backward pass to the taps is seeded
   * with U as a constant, while an outer gradient through J (the regularizer's) also follows u.
   */
  private unitJacobians(pruned: ReadonlySet<number>, held?: Float64Array, batchX?: TF.Tensor): { J: TF.Tensor3D; U: T2; uValue: Float64Array; logits?: T2 } {
    const tf = this.tf;
    const n = this.probeX!.shape[0];
    const c = this.classes;
    let U: T2 | undefined;
    let uValue = held;
    const directions = (z: T2): T2 => {
      if (held) return tf.tensor2d(Float32Array.from(held), [n, c]);
      const logProbs = logSoftmaxRows(z.dataSync(), n, c);
      const labels = this.probeY!.dataSync();
      uValue = this.probeU = outputDirections(logProbs, labels, n, c);
      // The value is the measurement's u (float64, rounded once), bit for bit what a held pass uses;
      // the derivative is u's as a function of the logits (directionsOp).
      return directionsOp(tf, uValue, logProbs, labels, n, c)(z);
    };
    const directionsOf = (z: T2): T2 => (U = tf.keep(directions(z)));
    const joint = batchX ? this.jointJacobians(batchX, this.probeX!, pruned, directionsOf) : undefined;
    const J =
      joint?.J ??
      this.probeJacobians(
        this.probeX!,
        pruned,
        (forward, taps) =>
          tf.grads((...t: TF.Tensor[]) => {
            const z = forward(t);
            // Σ_i u_iᵀz_i with u held by the backward pass to the taps, followed by the outer gradient.
            return heldSeed(directionsOf(z), z);
          })(taps),
        directionsOf,
      );
    // Out of the pass's scope into the caller's (a clone stays on the tape, connected to U).
    const directionsOut = tf.clone(U!);
    U!.dispose();
    return { J, U: directionsOut, uValue: uValue!, ...(joint ? { logits: joint.logits } : {}) };
  }

  /** K_u = J_u·J_uᵀ of every unit, read back (one transfer) into float64 n×n arrays. */
  private kernelsOf(J: TF.Tensor3D): Float64Array[] {
    const [units, n] = J.shape;
    // Read back, never differentiated: as an op of its own, so the tape saves no clones of J for it.
    const K = (
      this.tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => ({
        value: this.tf.matMul(args[0] as TF.Tensor3D, args[0] as TF.Tensor3D, false, true),
        gradFunc: () => {
          throw new Error('the probe kernels are read back, not differentiated');
        },
      })) as (j: TF.Tensor3D) => TF.Tensor3D
    )(J);
    const flat = K.dataSync();
    K.dispose();
    return Array.from({ length: units }, (_, u) => Float64Array.from(flat.subarray(u * n * n, (u + 1) * n * n)));
  }

  /** Every unit's kernel from one probe pass outside any step (u: `held`, or the pass's own). */
  private probeKernels(pruned: ReadonlySet<number>, held?: Float64Array): Float64Array[] {
    const J = this.tf.tidy(() => this.unitJacobians(pruned, held).J);
    try {
      return this.kernelsOf(J);
    } finally {
      J.dispose();
    }
  }

  /** μ, L_f, κ of every unit and of the model's kernel (routerlessMeasurement) from the units' kernels. */
  private record(kernels: Float64Array[], frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): void {
    const n = this.probeX!.shape[0];
    const r = routerlessMeasurement(kernels, this.probeU!, n, this.classes, frozen, pruned, this.config.monitor.damping, this.config.monitor.lipschitz === 'spectral-norm' ? (id) => this.spectralLipschitz(id) : undefined);
    this.unitStats = r.stats;
    this.modelConditioning = r.model;
  }

  /**
   * vᵀ(Σ_{u∈units} K_u)v = Σ_u ‖J_uᵀv‖² for each row v of `vs` [m, n]: a tensor [m], differentiable through J.
   */
  private rayleighOfJacobians(J: TF.Tensor3D, units: number[], vs: Float64Array[]): TF.Tensor1D {
    const tf = this.tf;
    const [count, n] = J.shape;
    if (!units.length) return tf.zeros([vs.length]);
    // v_kᵀJ_u for every unit in one batched matmul (v, a constant, repeated per unit), not J transposed to [n, units·p].
    const v = tf.tile(tf.tensor3d(Float32Array.from(vs.flatMap((x) => Array.from(x))), [1, vs.length, n]), [count, 1, 1]);
    const perUnit = tf.sum(tf.square(tf.matMul(v, J)), 2); // [units, m]
    if (units.length === count && units.every((u, k) => u === k)) return tf.sum(perUnit, 0) as TF.Tensor1D;
    // The units outside the sum are masked, not gathered (tf.gather's gradient has no wasm kernel).
    const inSum = tf.tensor2d(Float32Array.from({ length: count }, (_, u) => (units.includes(u) ? 1 : 0)), [count, 1]);
    return tf.sum(tf.mul(perUnit, inSum), 0) as TF.Tensor1D;
  }

  /**
   * κ̃ of Σ_{u∈units} K_u + U·Uᵀ along the last measurement's eigenvectors, both terms differentiable:
   * vᵀU·Uᵀv = ‖Uᵀv‖² (the output bias's kernel) moves with u too. `kernels` are J's K_u read back and
   * `uValue` U's value (float64): κ̃ is evaluated on the host, and the gradient is one op in closed form
   * (kappaSurrogateOp), not the ops of the quotient and their gradients.
   */
  private surrogateKappa(J: TF.Tensor3D, U: T2, uValue: ArrayLike<number>, kernels: Float64Array[], units: number[]): TF.Scalar {
    const m = this.modelConditioning!;
    return kappaSurrogateOp(this.tf, [m.vMax, m.vMin], kernels, uValue, units, this.classes, this.config.monitor.damping)(J, U);
  }

  /**
   * vᵀ(Σ_{u∈units} K_u)v as a differentiable function of the weights (one tapped probe pass: the
   * per-sample Jacobians J_u of probeJacobians), u held at the last measurement's. For the gradient tests.
   */
  rayleighTf(units: number | number[], v: Float64Array, pruned: ReadonlySet<number>): TF.Scalar {
    if (!this.probeX || !this.probeU) throw new Error('rayleighTf needs a measurement first');
    return this.tf.tidy(() => this.tf.reshape(this.rayleighOfJacobians(this.unitJacobians(pruned, this.probeU).J, Array.isArray(units) ? units : [units], [v]), []) as TF.Scalar);
  }

  /**
   * κ̃ of the model's kernel Σ_{u∈trainable} K_u + U·Uᵀ with the last measurement's eigenvectors held
   * (Hellmann–Feynman) and u computed afresh from the current weights, differentiably: what the step
   * adds α times (it measures in its own pass first). Its gradient reaches every trainable variable,
   * since each K_u and u depend on the whole network. Public for the gradient tests.
   */
  modelKappaTf(trainable: number[], pruned: ReadonlySet<number>): TF.Scalar {
    if (!this.modelConditioning || !this.probeU) throw new Error('modelKappaTf needs a measurement first');
    return this.tf.tidy(() => {
      const { J, U, uValue } = this.unitJacobians(pruned);
      return this.surrogateKappa(J, U, uValue, this.kernelsOf(J), trainable);
    });
  }

  /**
   * The per-unit tangent kernels of s_i = u_iᵀ logits(x_i) on the probe batch, with the last measurement's
   * u (probeJacobians: one tapped pass for all units). Pruned when `pruned` says so, except that a
   * pruned unit's own kernel is taken with that unit restored (the rest as they are): the unit is
   * measured as it would act, the way a gated-off expert is.
   */
  unitKernels(pruned: ReadonlySet<number>): Float64Array[] {
    if (!this.probeX || !this.probeU) throw new Error('unitKernels needs a measurement first');
    const kernels = this.probeKernels(pruned, this.probeU);
    for (const u of pruned) {
      if (u >= this.units) continue;
      const restored = new Set(pruned);
      restored.delete(u);
      kernels[u] = this.probeKernels(restored, this.probeU)[u];
    }
    return kernels;
  }

  /** μ, L_f, κ of every unit on the probe batch (float64 eigen-solve), refreshing u and the regularizer's vectors. */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    // A pruned unit's stats are null whatever its kernel: one pass, u from its own logits.
    const kernels = this.probeKernels(pruned);
    this.record(kernels, frozen, pruned);
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
    this.endStep();
    this.parameters.dispose();
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.softMask.dispose();
  }
}

/** log softmax of each row of z [n, c] (read back), in float64. */
function logSoftmaxRows(z: ArrayLike<number>, n: number, c: number): Float64Array {
  const out = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    let top = -Infinity;
    for (let j = 0; j < c; j++) top = Math.max(top, z[i * c + j]);
    let sum = 0;
    for (let j = 0; j < c; j++) sum += Math.exp(z[i * c + j] - top);
    const lse = top + Math.log(sum);
    for (let j = 0; j < c; j++) out[i * c + j] = z[i * c + j] - lse;
  }
  return out;
}

/**
 * The output directions u = g/‖g‖, g_i = softmax(z_i) − y_i (outputDirections), as one op of the logits
 * z [n, c]: its value is `u` (float64, rounded once), its gradient u's derivative in closed form, computed
 * on the host in float64 from the read-back upstream w (n·c numbers; no kernels, where the ops of
 * outputDirectionsTf and their gradients were ~80). With v = w − u·⟨u, w⟩ (the projection off u, as
 * ∂(g/‖g‖) = (I − u·uᵀ)·∂g/‖g‖) and softmax's Jacobian diag(p) − p·pᵀ: ∂/∂z_j = p_j·(v_j − ⟨p, v⟩)/‖g‖.
 * For a one-hot label t this is written without ‖g‖, which underflows at large margins: off the label
 * p_j/‖g‖ = u_j, and at it p_t·Σ_{j≠t} u_j·(v_t − v_j). A row without pull (u_i = 0) gets 0, as it did.
 */
export function directionsOp(tf: typeof TF, u: Float64Array, logProbs: Float64Array, labels: ArrayLike<number>, n: number, c: number): (z: T2) => T2 {
  return tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    void args;
    return {
      value: tf.tensor2d(Float32Array.from(u), [n, c]),
      gradFunc: (dy: TF.Tensor) => {
        const w = dy.dataSync();
        const dz = new Float64Array(n * c);
        for (let i = 0; i < n; i++) {
          const r = i * c;
          let uw = 0;
          for (let j = 0; j < c; j++) uw += u[r + j] * w[r + j];
          const v = Float64Array.from({ length: c }, (_, j) => w[r + j] - u[r + j] * uw);
          const label = oneHotLabel(labels, r, c);
          if (label >= 0) {
            // Off the label a_j = p_j/‖g‖ = u_j; at it Σ_{j≠t} a_j = −u_t.
            let pv = 0;
            let av = 0;
            for (let j = 0; j < c; j++) {
              pv += Math.exp(logProbs[r + j]) * v[j];
              if (j !== label) av += u[r + j] * v[j];
            }
            for (let j = 0; j < c; j++) dz[r + j] = j === label ? Math.exp(logProbs[r + j]) * (-u[r + label] * v[label] - av) : u[r + j] * (v[j] - pv);
          } else {
            // Soft labels: g = p − y as it stands (outputDirections does the same).
            let norm = 0;
            let pv = 0;
            for (let j = 0; j < c; j++) {
              const p = Math.exp(logProbs[r + j]);
              norm += (p - labels[r + j]) ** 2;
              pv += p * v[j];
            }
            norm = Math.sqrt(norm);
            if (norm > 0) for (let j = 0; j < c; j++) dz[r + j] = (Math.exp(logProbs[r + j]) * (v[j] - pv)) / norm;
          }
        }
        return tf.tensor2d(Float32Array.from(dz), [n, c]);
      },
    };
  }) as (z: T2) => T2;
}

/**
 * κ̃ = q_max/max(relu(q_min) + δ·q_max, 1e-30) (smoothKappaTf's function), q_k = v_kᵀ(Σ_{u∈units} K_u + U·Uᵀ)v_k
 * along the eigenvectors `vs` (v_max, v_min), as one op of J [units, n, p] and U [n, classes]: the value
 * from the read-back kernels and U's value in float64, the gradient in closed form. With c_k = ∂κ̃/∂q_k
 * (smoothKappaTf's subgradients: relu′(0) = 0, max's to the first argument on a tie),
 * ∂/∂J_u = Σ_k 2c_k·v_k·(v_kᵀJ_u) for u in the sum (two batched matmuls) and ∂/∂U = Σ_k 2c_k·v_k·(v_kᵀU)
 * (host). The quotient's ~25 ops and their ~35 gradient ops become one op and two matmuls.
 */
export function kappaSurrogateOp(
  tf: typeof TF,
  vs: Float64Array[],
  kernels: Float64Array[],
  uValue: ArrayLike<number>,
  units: number[],
  classes: number,
  damping: number,
): (J: TF.Tensor3D, U: T2) => TF.Scalar {
  const n = vs[0].length;
  const count = kernels.length;
  const inSum = Float64Array.from({ length: count }, (_, u) => (units.includes(u) ? 1 : 0));
  // v_kᵀU [classes] and q_k.
  const vU = vs.map((v) => Float64Array.from({ length: classes }, (_, o) => v.reduce((a, vi, i) => a + vi * uValue[i * classes + o], 0)));
  const q = vs.map((v, k) => {
    let sum = vU[k].reduce((a, x) => a + x * x, 0);
    kernels.forEach((K, u) => {
      if (!inSum[u]) return;
      for (let i = 0; i < n; i++) {
        let row = 0;
        for (let j = 0; j < n; j++) row += K[i * n + j] * v[j];
        sum += v[i] * row;
      }
    });
    return sum;
  });
  const [qMax, qMin] = q;
  const raw = Math.max(qMin, 0) + damping * qMax;
  const den = Math.max(raw, 1e-30);
  const value = qMax / den;
  const live = raw >= 1e-30 ? 1 : 0;
  const c = [1 / den - (qMax * damping * live) / (den * den), (-qMax * (qMin > 0 ? 1 : 0) * live) / (den * den)];
  return tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const J = args[0] as TF.Tensor3D;
    (args[2] as TF.GradSaveFunc)([J]);
    return {
      value: tf.scalar(value),
      gradFunc: (dy: TF.Tensor, [savedJ]: TF.Tensor[]) => {
        const d = dy.dataSync()[0];
        const m = vs.length;
        const V = new Float32Array(count * m * n);
        const C = new Float32Array(count * m * n);
        for (let u = 0; u < count; u++)
          vs.forEach((v, k) => {
            V.set(Float32Array.from(v), (u * m + k) * n);
            C.set(Float32Array.from(v, (x) => 2 * c[k] * d * inSum[u] * x), (u * m + k) * n);
          });
        // [count, m, p] then [count, n, p]
        const vJ = tf.matMul(tf.tensor3d(V, [count, m, n]), savedJ as TF.Tensor3D);
        const dJ = tf.matMul(tf.tensor3d(C, [count, m, n]), vJ, true, false);
        const dU = new Float64Array(n * classes);
        vs.forEach((v, k) => {
          for (let i = 0; i < n; i++) for (let o = 0; o < classes; o++) dU[i * classes + o] += 2 * c[k] * d * v[i] * vU[k][o];
        });
        return [dJ, tf.tensor2d(Float32Array.from(dU), [n, classes])];
      },
    };
  }) as (J: TF.Tensor3D, U: T2) => TF.Scalar;
}
