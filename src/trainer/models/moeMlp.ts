// The `moe-mlp` model: a dense, soft-gated mixture of two-layer experts, with each expert's variables
// kept apart so freezing an expert is just leaving its variables out of the optimizer's list.
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats, TrainingConfig } from '../../protocol';
import { createAdam } from '../engine/adam';
import { type MoeForward, moeForward, moeLogits } from '../engine/moeForward';
import { sumOfSquares } from '../engine/sumOfSquares';
import { hypersphericalEnergy, OrthogonalLayer } from '../pl/opt';
import { hutchinsonTrace } from '../pl/hessianTrace';
import { conditioning, dampedKappa, kappaSurrogatesTf, kappaSurrogateTf, outputDirections, SpectralNormState, singularVectors, spectralNormProduct, tangentKernelsTf, tangentKernelTf } from '../pl';
import { classifierAccuracy, meanKappaOf, regularizerWeights, restoreGroups, saveGroups, SoftMask, weightedKappaOf } from './shared';
import type { Batch, ModelState, PlModel, StepOptions, StepResult, TaskData } from './types';

export interface ExpertVars {
  /** d×h first layer; under OPT, the Cayley parameter R of its orthogonal transform (W1 = Q(R)·V). */
  w1: TF.Variable;
  b1: TF.Variable; // h
  w2: TF.Variable; // h×c
  b2: TF.Variable; // c
}

/** The latest measurement of one expert, with the eigenvectors the regularizer differentiates along. */
interface Measurement {
  stats: UnitStats;
  vMin: Float64Array;
  vMax: Float64Array;
  /** A Hessian-trace L_f, held constant by the regularizer (no cheap derivative of it). */
  lfConstant?: number;
  /** Singular vector pairs (W1, W2) behind a spectral-norm L_f. */
  singular?: [{ u: Float64Array; v: Float64Array }, { u: Float64Array; v: Float64Array }];
}

/** The eigen-solver's relative tolerance for the trainer's kernels: √ε (see conditionKernels). */
const EIGEN_TOLERANCE = Math.sqrt(Number.EPSILON);

let modelCount = 0;

export class MoeMlp implements PlModel {
  readonly experts: ExpertVars[];
  readonly gateW: TF.Variable;
  readonly gateB: TF.Variable;
  /**
   * One Adam per expert and one for the gate: tfjs's Adam keys its moment estimates by the variable's
   * position in the list it is given, so a single optimizer over a list that shrinks when an expert
   * is frozen would hand the remaining experts each other's moments.
   */
  private readonly gateOptimizer: TF.Optimizer;
  private readonly expertOptimizers: TF.Optimizer[];
  private readonly prefix = `moe${modelCount++}`;
  private probeX: TF.Tensor2D | undefined;
  private probeY: TF.Tensor2D | undefined;
  private probeU: TF.Tensor2D | undefined;
  /** X·Xᵀ + 1 of the probe batch and its one-hot labels on the host: constants of the run. */
  private probeGram: TF.Tensor2D | undefined;
  private probeLabels: Float32Array | undefined;
  /**
   * With the tangent-kernel L_f, a regularized step measures the eigenvectors it differentiates along
   * itself, from the kernels its own graph builds (see trainStep), so the loop need not measure
   * between steps. The spectral-norm and Hessian-trace L_f need the separate measure().
   */
  readonly measuresInStep: boolean;
  private measurements: Measurement[] = [];
  private readonly optLayers: OrthogonalLayer[] | undefined;
  private lastEnergy: Record<string, number> = {};
  private readonly spectral: SpectralNormState;
  private readonly softMask: SoftMask;

  constructor(
    private readonly tf: typeof TF,
    readonly d: number,
    readonly c: number,
    private readonly config: TrainingConfig,
  ) {
    const { experts, hiddenUnits: h } = config.model;
    let seed = config.seed * 1000;
    // He initialization for ReLU layers; seeded so a config reproduces its run. Names are stable so
    // checkpoints map back to variables.
    const name = (n: string) => `${this.prefix}/${n}`;
    const normal = (n: string, shape: number[], std: number) => tf.variable(tf.randomNormal(shape, 0, std, 'float32', seed++), true, name(n));
    const zeros = (n: string, shape: number[]) => tf.variable(tf.zeros(shape), true, name(n));
    // OPT: the first layer's neurons are fixed random V and only an orthogonal transform of the input
    // space is learned (Cayley map; block-diagonal for wide inputs, which is still exactly orthogonal).
    this.optLayers = config.model.opt
      ? Array.from({ length: experts }, (_, i) => new OrthogonalLayer(tf, name(`expert${i}/w1`), { rows: d, cols: h, seed: seed + 100 * i, blockSize: optBlockSize(d) }))
      : undefined;
    this.experts = Array.from({ length: experts }, (_, i) => ({
      w1: this.optLayers ? this.optLayers[i].r : normal(`expert${i}/w1`, [d, h], Math.sqrt(2 / d)),
      b1: zeros(`expert${i}/b1`, [h]),
      w2: normal(`expert${i}/w2`, [h, this.c], Math.sqrt(1 / h)),
      b2: zeros(`expert${i}/b2`, [this.c]),
    }));
    this.gateW = normal('gate/w', [d, experts], 0.01);
    this.gateB = zeros('gate/b', [experts]);
    this.spectral = new SpectralNormState(config.seed);
    this.softMask = new SoftMask(tf, name('pruningMask'), experts);
    this.measuresInStep = config.monitor.lipschitz === 'tangent-kernel';
    this.gateOptimizer = createAdam(tf, config.learningRate);
    this.expertOptimizers = this.experts.map(() => createAdam(tf, config.learningRate));
  }

  get units(): number {
    return this.experts.length;
  }

  /** Fixes the probe batch (the same examples for the whole run, so κ over time is comparable). */
  setProbe(probe: Batch): void {
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeGram?.dispose();
    this.probeX = probe.x as TF.Tensor2D;
    this.probeY = probe.y as TF.Tensor2D;
    this.probeGram = this.tf.tidy(() => this.tf.add(this.tf.matMul(this.probeX!, this.probeX!, false, true), 1) as TF.Tensor2D);
    this.probeLabels = this.probeY.dataSync() as Float32Array;
  }

  /** Expert i's d×h first-layer weight as a tensor: the variable, or Q·V under OPT (differentiable w.r.t. R). */
  firstLayer(i: number): TF.Tensor2D {
    return this.optLayers ? this.optLayers[i].weight() : (this.experts[i].w1 as unknown as TF.Tensor2D);
  }

  private firstLayers(): TF.Tensor2D[] {
    return this.experts.map((_, i) => this.firstLayer(i));
  }

  /** Mixture logits; pruned experts get no gate mass (the engine computes them: engine/moeForward.ts). */
  logits(x: TF.Tensor2D, pruned: ReadonlySet<number> = new Set(), w1s: TF.Tensor2D[] = this.firstLayers(), softMask?: TF.Tensor1D): TF.Tensor2D {
    const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
    return moeLogits(this.tf, x, { gateW: this.gateW, gateB: this.gateB, experts }, this.c, pruned, softMask);
  }

  /**
   * One optimizer step on L_S + α·κ̄, κ̄ the (gate-weighted) mean κ over trainable experts. Frozen
   * experts are left out of the variable list (no update at all); α = 0 skips the regularizer graph.
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    const tf = this.tf;
    const { alpha, trainable, pruned } = o;
    const x = batch.x as TF.Tensor2D;
    const yOneHot = batch.y as TF.Tensor2D;
    const weights = regularizerWeights(this.experts.length, trainable, o.unitWeights);
    const inStep = alpha > 0 && this.measuresInStep && this.probeX !== undefined && weights.total > 0;
    const regularized = inStep || (alpha > 0 && this.probeU !== undefined && this.measurements.length === this.experts.length && weights.total > 0);
    let monitorMs = 0;
    const varList: TF.Variable[] = [this.gateW, this.gateB];
    for (const i of trainable) varList.push(...this.expertVars(i));
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      let logitsT: TF.Tensor2D | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        // Under OPT each W1 = Q·V costs a Cayley solve: build them once per step for the loss and κ.
        const w1s = this.firstLayers();
        if (inStep) {
          const r = this.measuredRegularizerStep(x, yOneHot, pruned, w1s, trainable, weights, mask);
          [logitsT, taskLossT, regT] = [tf.keep(r.logits), tf.keep(r.taskLoss), tf.keep(r.kappaMean)];
          monitorMs = r.monitorMs;
          return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
        }
        logitsT = tf.keep(this.logits(x, pruned, w1s, mask));
        taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
        if (!regularized) return taskLossT;
        const kappas = trainable.filter((i) => weights.w[i] > 0).map((i) => tf.mul(this.kappaTf(i, w1s[i]), weights.w[i] / weights.total));
        regT = tf.keep(tf.addN(kappas) as TF.Scalar);
        return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      if (mask) maskGrad = this.softMask.take(grads);
      const group = (vars: TF.Variable[]) => vars.map((v) => ({ name: v.name, tensor: grads[v.name] }));
      this.gateOptimizer.applyGradients(group([this.gateW, this.gateB]));
      for (const i of trainable) this.expertOptimizers[i].applyGradients(group(this.expertVars(i)));
      const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logitsT!, 1), tf.argMax(yOneHot, 1)), 'float32'));
      const gradNormSq = sumOfSquares(tf, Object.values(grads));
      const stacked = tf.stack([total, taskLossT!, regT ?? tf.scalar(weightedKappaOf(this.measurements.map((m) => m?.stats), trainable, weights)), accuracy, gradNormSq]);
      tf.dispose([logitsT!, taskLossT!, ...(regT ? [regT] : [])]);
      return stacked;
    });
    // One device→host transfer per step for everything reported.
    const values = reported.dataSync();
    reported.dispose();
    return { loss: values[0], taskLoss: values[1], regularizer: values[2], taskMetric: values[3], gradNormSq: values[4], ...(inStep ? { measured: this.measurements.map((m) => m.stats), monitorMs } : {}), ...(maskGrad ? { maskGrad } : {}) };
  }

  /**
   * The forward pass of a regularized step with its κ measurement folded in. The probe batch rides
   * along as extra rows of the batch, so its first-layer products come out of the matmuls the step
   * runs anyway; every expert's probe kernel is built once, in batched ops, and read back for the
   * float64 eigen-solve; the regularizer then differentiates along those eigenvectors, exact ones of
   * the weights this step starts from (Hellmann–Feynman). The separate measure() after every step
   * that this replaces built each kernel a second time. Must run inside the step's variableGrads.
   */
  private measuredRegularizerStep(
    x: TF.Tensor2D,
    yOneHot: TF.Tensor2D,
    pruned: ReadonlySet<number>,
    w1s: TF.Tensor2D[],
    trainable: number[],
    weights: { w: number[]; total: number },
    softMask?: TF.Tensor1D,
  ): { logits: TF.Tensor2D; taskLoss: TF.Scalar; kappaMean: TF.Scalar; monitorMs: number } {
    const tf = this.tf;
    const [b, c] = [x.shape[0], this.c];
    const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
    const forward = moeForward(tf, tf.concat([x, this.probeX!]), { gateW: this.gateW, gateB: this.gateB, experts }, c, pruned, softMask);
    const logits = tf.slice(forward.logits, [0, 0], [b, c]) as TF.Tensor2D;
    const taskLoss = tf.losses.softmaxCrossEntropy(yOneHot, logits) as TF.Scalar;
    const probe = this.probeKernels(forward, b, w1s, pruned);
    const t0 = performance.now();
    this.measurements = this.conditionKernels(probe.kernels.dataSync() as Float32Array, (id) => !trainable.includes(id) && !pruned.has(id), pruned);
    const monitorMs = probe.readMs + performance.now() - t0;
    const kernels = probe.kernels;
    const kappas = kappaSurrogatesTf(kernels, this.measurements.map((m) => m.vMin), this.measurements.map((m) => m.vMax), this.config.monitor.damping);
    const share = tf.tensor1d(weights.w.map((w) => w / weights.total));
    return { logits, taskLoss, kappaMean: tf.sum(tf.mul(kappas, share)) as TF.Scalar, monitorMs };
  }

  /**
   * Every expert's probe kernel (E×n×n, batched ops) from a forward pass whose rows from `offset` on
   * are the probe batch: the output directions come from those rows' softmax (one read-back, timed
   * in readMs), the pre-activations are cut from the pass. Differentiable w.r.t. W1, b1, W2.
   */
  private probeKernels(forward: MoeForward, offset: number, w1s: TF.Tensor2D[], pruned: ReadonlySet<number>): { kernels: TF.Tensor3D; u: TF.Tensor2D; readMs: number } {
    const tf = this.tf;
    const probeX = this.probeX!;
    const [n, h, c] = [probeX.shape[0], this.config.model.hiddenUnits, this.c];
    const t0 = performance.now();
    const logProbs = tf.tidy(() => tf.logSoftmax(tf.slice(forward.logits, [offset, 0], [n, c])).dataSync());
    const u = tf.tensor2d(Float32Array.from(outputDirections(logProbs, this.probeLabels!, n, c)), [n, c]);
    const readMs = performance.now() - t0;
    // A pruned expert has no rows in the forward pass; it is still measured, from its own product.
    const pre = this.experts.map((e, i) => {
      const p = forward.preActivations[i];
      return p ? (offset === 0 ? p : tf.slice(p, [offset, 0], [n, h])) : (tf.add(tf.matMul(probeX, w1s[i]), e.b1) as TF.Tensor2D);
    });
    const kernels = tangentKernelsTf(tf.stack(pre) as TF.Tensor3D, u, tf.stack(this.experts.map((e) => e.w2)) as TF.Tensor3D, this.probeGram!);
    return { kernels, u, readMs };
  }

  /**
   * μ, L_f (λ_max), κ and eigenvectors of every expert's kernel, read back as one E·n·n float32 array
   * and eigen-solved in float64 (which symmetrizes it) to a √ε tolerance (docs/method.md, "Probe size
   * and cost": the float32 kernel, not the solver, limits the accuracy).
   */
  private conditionKernels(kernels: Float32Array, isFrozen: (id: number) => boolean, pruned: ReadonlySet<number>): Measurement[] {
    const n = this.probeX!.shape[0];
    return this.experts.map((_, id) => {
      const K = kernels.subarray(id * n * n, (id + 1) * n * n);
      const { mu, lf, kappa, vMin, vMax } = conditioning(K, n, this.config.monitor.damping, { tolerance: EIGEN_TOLERANCE });
      return { stats: { id, mu, lf, kappa, frozen: isFrozen(id), pruned: pruned.has(id) }, vMin, vMax };
    });
  }

  /**
   * Expert i's κ as a differentiable function of its weights, with the last measurement's
   * eigenvectors (and singular vectors, for the spectral-norm L_f) held constant: Hellmann–Feynman.
   */
  private kappaTf(i: number, w1: TF.Tensor2D): TF.Scalar {
    const tf = this.tf;
    const e = this.experts[i];
    const m = this.measurements[i];
    const K = tangentKernelTf(this.probeX!, this.probeU!, w1, e.b1 as unknown as TF.Tensor1D, e.w2 as unknown as TF.Tensor2D);
    if (m.lfConstant !== undefined) {
      return tf.tidy(() => {
        const column = tf.tensor2d(Float32Array.from(m.vMin), [m.vMin.length, 1]);
        const mu = tf.sum(tf.mul(column, tf.matMul(K, column)));
        return tf.div(m.lfConstant!, tf.maximum(mu, m.lfConstant! * this.config.monitor.damping)) as TF.Scalar;
      });
    }
    if (!m.singular) return kappaSurrogateTf(K, m.vMin, m.vMax, this.config.monitor.damping);
    // L_f = σ(W1)·σ(W2), each σ = uᵀ W v at the stored singular vectors (dσ = uᵀ dW v).
    return tf.tidy(() => {
      const sigma = (w: TF.Tensor, sv: { u: Float64Array; v: Float64Array }) =>
        tf.sum(tf.mul(tf.tensor2d(Float32Array.from(sv.u), [sv.u.length, 1]), tf.matMul(w as TF.Tensor2D, tf.tensor2d(Float32Array.from(sv.v), [sv.v.length, 1]))));
      const lf = tf.mul(sigma(w1, m.singular![0]), sigma(e.w2, m.singular![1]));
      const column = tf.tensor2d(Float32Array.from(m.vMin), [m.vMin.length, 1]);
      const mu = tf.sum(tf.mul(column, tf.matMul(K, column)));
      return tf.div(lf, tf.maximum(mu, tf.mul(lf, this.config.monitor.damping))) as TF.Scalar;
    });
  }

  /**
   * Measures μ, L_f, κ of every expert on the probe batch from its closed-form tangent kernel
   * (float64; see docs/method.md), and refreshes the eigenvectors the regularizer uses.
   */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const damping = this.config.monitor.damping;
    const h = this.config.model.hiddenUnits;
    // The same batched kernels as the regularized step's, from the probe's own forward pass (float32,
    // see docs/method.md "Probe size and cost"); the eigen-solve runs in float64.
    const w1s = this.firstLayers();
    const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
    const kernels = tf.tidy(() => {
      const probe = this.probeKernels(moeForward(tf, this.probeX!, { gateW: this.gateW, gateB: this.gateB, experts }, this.c, pruned), 0, w1s, pruned);
      this.probeU?.dispose();
      this.probeU = tf.keep(probe.u); // for the regularizer of the spectral-norm and Hessian-trace L_f
      return probe.kernels.dataSync() as Float32Array;
    });
    const spectral = this.config.monitor.lipschitz === 'spectral-norm';
    // OPT's promise is that the neurons' hyperspherical energy never moves: stream it, with ‖QᵀQ − I‖.
    if (this.optLayers) {
      this.lastEnergy = {};
      this.optLayers.forEach((layer, i) => {
        this.lastEnergy[`energy/expert${i}`] = hypersphericalEnergy(w1s[i].dataSync() as Float32Array, this.d, h);
        this.lastEnergy[`orthogonality/expert${i}`] = layer.orthogonalityError();
      });
    }
    this.measurements = this.conditionKernels(kernels, (id) => frozen.has(id), pruned).map((m) => {
      const { id, mu } = m.stats;
      const e = this.experts[id];
      if (this.config.monitor.lipschitz === 'hessian-trace') {
        const lf = Math.max(0, this.hessianTrace(id, pruned));
        return { ...m, stats: { ...m.stats, lf, kappa: mu === null ? null : dampedKappa(lf, mu, damping) }, lfConstant: lf };
      }
      if (spectral) {
        const [w1d, w2] = [w1s[id].dataSync(), e.w2.dataSync()];
        const s1 = spectralNormProduct([{ key: `expert${id}/w1`, matrix: { data: w1d, rows: this.d, cols: h } }], this.spectral);
        const s2 = spectralNormProduct([{ key: `expert${id}/w2`, matrix: { data: w2, rows: h, cols: this.c } }], this.spectral);
        const lf = s1 * s2;
        return { ...m, stats: { ...m.stats, lf, kappa: mu === null ? null : dampedKappa(lf, mu, damping) }, singular: [this.singularVectors(`expert${id}/w1`, w1d, this.d, h, s1), this.singularVectors(`expert${id}/w2`, w2, h, this.c, s2)] };
      }
      return m;
    });
    if (this.optLayers) tf.dispose(w1s);
    return this.measurements.map((m) => m.stats);
  }

  /** Hyperspherical energy and orthogonality error per expert under OPT (from the last measurement). */
  extraMetrics(): Record<string, number> {
    return { ...this.lastEnergy };
  }

  /**
   * tr(∇²L) of the probe-batch cross-entropy w.r.t. expert i's parameters (Hutchinson, 4 Rademacher
   * vectors from a per-measurement seed; Hessian-vector products by central differences). The
   * weights are restored bit for bit afterwards.
   */
  private hessianTrace(i: number, pruned: ReadonlySet<number>): number {
    const tf = this.tf;
    const vars = this.expertVars(i);
    const originals = vars.map((v) => tf.clone(v));
    const params = Float64Array.from(vars.flatMap((v) => Array.from(v.dataSync())));
    const gradAt = (delta: Float32Array | null): Float64Array => {
      let at = 0;
      if (delta) {
        vars.forEach((v, k) => {
          v.assign(tf.add(originals[k], tf.tensor(delta.subarray(at, at + v.size), v.shape)));
          at += v.size;
        });
      }
      const flat = tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(this.probeY!, this.logits(this.probeX!, pruned)) as TF.Scalar, vars);
        value.dispose();
        return tf.concat(vars.map((v) => (grads[v.name] ? tf.reshape(grads[v.name], [-1]) : tf.zeros([v.size])))).dataSync();
      });
      vars.forEach((v, k) => v.assign(originals[k]));
      return Float64Array.from(flat);
    };
    let s = (this.config.seed * 7919 + i * 104729 + (this.hutchinsonCalls++) * 31) >>> 0 || 1;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    const trace = hutchinsonTrace(gradAt, params, 4, rnd);
    tf.dispose(originals);
    return trace;
  }
  private hutchinsonCalls = 0;

  private singularVectors(key: string, a: ArrayLike<number>, rows: number, cols: number, sigma: number): { u: Float64Array; v: Float64Array } {
    return singularVectors(this.spectral, key, a, rows, cols, sigma);
  }

  meanKappa(ids: number[]): number {
    return meanKappaOf(this.measurements.map((m) => m?.stats), ids);
  }

  /** Accuracy on a whole split, in batches. */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number> = new Set(), batch = 500): number {
    return classifierAccuracy(this.tf, data, split, (x) => this.logits(x as TF.Tensor2D, pruned), batch);
  }

  private expertVars(i: number): TF.Variable[] {
    const e = this.experts[i];
    return [e.w1, e.b1, e.w2, e.b2];
  }

  private groups(): [string, TF.Variable[], TF.Optimizer][] {
    return [['gate', [this.gateW, this.gateB], this.gateOptimizer], ...this.experts.map((_, i): [string, TF.Variable[], TF.Optimizer] => [`expert${i}`, this.expertVars(i), this.expertOptimizers[i]])];
  }

  /** Everything needed to continue training exactly where it stopped (for checkpoints). */
  getState(): Promise<ModelState> {
    return saveGroups(this.prefix, this.groups(), (this.optLayers ?? []).map((l) => l.v));
  }

  setState(state: ModelState): Promise<void> {
    return restoreGroups(this.tf, this.prefix, this.groups(), state, (this.optLayers ?? []).map((l) => l.v));
  }

  /** Snapshot of an expert's weights (for tests: frozen means bit-identical). */
  unitWeights(i: number): Float32Array[] {
    const e = this.experts[i];
    return [e.w1, e.b1, e.w2, e.b2].map((v) => Float32Array.from(v.dataSync()));
  }

  dispose(): void {
    this.tf.dispose([...this.experts.flatMap((e) => Object.values(e)), this.gateW, this.gateB, ...(this.optLayers ?? []).map((l) => l.v)]);
    this.softMask.dispose();
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeU?.dispose();
    this.probeGram?.dispose();
    this.gateOptimizer.dispose();
    for (const o of this.expertOptimizers) o.dispose();
  }
}

/** Block size for OPT's block-diagonal Q: the largest divisor of d up to 256 (a dense 784×784 Cayley solve per step is too slow on a CPU). */
export function optBlockSize(d: number): number {
  for (let b = Math.min(d, 256); b > 1; b--) if (d % b === 0) return b;
  return d;
}
