// The `moe-mlp` model: a dense, soft-gated mixture of two-layer experts, with each expert's variables
// kept apart so freezing an expert is just leaving its variables out of the optimizer's list.
import type * as TF from '@tensorflow/tfjs';
import { MIN_SERVED, type TrainingConfig, type UnitStats } from '../../protocol';
import { createAdam } from '../engine/adam';
import { type MoeForward, moeForward, moeLogits } from '../engine/moeForward';
import { sumOfSquares } from '../engine/sumOfSquares';
import { hypersphericalEnergy, OrthogonalLayer } from '../pl/opt';
import { hutchinsonTrace } from '../pl/hessianTrace';
import { conditioning, conditioningValues, dampedKappa, kappaSurrogateTf, moeKernelsTf, outputDirectionsTf, SpectralNormState, spectralNormProduct } from '../pl';
import { classifierAccuracy, FamilyBase, kernelWeights, ParameterGroups, principalSubmatrix, regularizerWeights, rowScales, SoftMask, type ModelConditioning } from './shared';
import type { Batch, PlModel, StepOptions, StepResult, TaskData } from './types';

export interface ExpertVars {
  /** d×h first layer; under OPT, the Cayley parameter R of its orthogonal transform (W1 = Q(R)·V). */
  w1: TF.Variable;
  b1: TF.Variable; // h
  w2: TF.Variable; // h×c
  b2: TF.Variable; // c
}

/** The probe kernels of the last measurement, in float64 (tests hold them to explicit Jacobians). */
export interface MoeProbeKernels {
  /** n×n each: K_e = (p_e p_eᵀ) ⊙ K_e^alone, expert e as the model uses it. */
  units: Float64Array[];
  /** n×n: the gate's kernel. */
  gate: Float64Array;
  /** n×n: Σ_{e∈T} K_e + K_gate, the model's kernel. */
  model: Float64Array;
  /** n×E: the gate's probabilities on the probe (pruned experts 0). */
  gateProbs: Float64Array;
}

let modelCount = 0;

export class MoeMlp extends FamilyBase implements PlModel {
  readonly experts: ExpertVars[];
  readonly gateW: TF.Variable;
  readonly gateB: TF.Variable;
  /** The gate's group and one per expert, each with its own Adam (see ParameterGroups). */
  protected readonly parameters: ParameterGroups;
  private readonly prefix = `moe${modelCount++}`;
  private probeX: TF.Tensor2D | undefined;
  private probeY: TF.Tensor2D | undefined;
  /** X·Xᵀ + 1 of the probe batch and its one-hot labels on the host: constants of the run. */
  private probeGram: TF.Tensor2D | undefined;
  private probeLabels: Float32Array | undefined;
  /**
   * With the tangent-kernel L_f, a regularized step measures the eigenvectors it differentiates along
   * itself, from the kernels its own graph builds (see trainStep), so the loop need not measure
   * between steps. The spectral-norm and Hessian-trace L_f need the separate measure().
   */
  readonly measuresInStep: boolean;
  private unitStats: UnitStats[] = [];
  /** The model's kernel at the last measurement: the regularizer's value at α = 0 and the headline κ̄. */
  private modelConditioning: ModelConditioning | undefined;
  /** The float64 probe kernels of the last measurement (tests). */
  lastKernels: MoeProbeKernels | undefined;
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
    super();
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
    const optLayers = this.optLayers;
    this.parameters = new ParameterGroups(
      tf,
      this.prefix,
      experts,
      { sharedName: 'gate', sharedVars: () => [this.gateW, this.gateB], unitName: (i) => `expert${i}`, unitVars: (i) => this.expertVars(i), extraVars: () => (optLayers ?? []).map((l) => l.v) },
      () => createAdam(tf, config.learningRate),
    );
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
   * One optimizer step on L_S + α·κ(K), K the model's kernel on the probe (docs/method.md, "Definitions
   * (contract)"). Frozen experts are left out of the variable list (no update at all) and out of K;
   * α = 0 skips the regularizer graph. The step's routing shares come back with the loss.
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    const tf = this.tf;
    const { alpha, trainable, pruned } = o;
    const x = batch.x as TF.Tensor2D;
    const yOneHot = batch.y as TF.Tensor2D;
    const weights = regularizerWeights(this.experts.length, trainable, o.unitWeights);
    const regularized = alpha > 0 && this.probeX !== undefined;
    let monitorMs = 0;
    const varList = this.parameters.stepVariables(trainable);
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      let logitsT: TF.Tensor2D | undefined;
      let sharesT: TF.Tensor1D | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        // Under OPT each W1 = Q·V costs a Cayley solve: build them once per step for the loss and κ.
        const w1s = this.firstLayers();
        const b = x.shape[0];
        const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
        // The probe rides along as extra rows of a regularized step's batch: its products come out of
        // the matmuls the step runs anyway.
        const forward = moeForward(tf, regularized ? tf.concat([x, this.probeX!]) : x, { gateW: this.gateW, gateB: this.gateB, experts }, this.c, pruned, mask);
        logitsT = tf.keep(regularized ? (tf.slice(forward.logits, [0, 0], [b, this.c]) as TF.Tensor2D) : forward.logits);
        sharesT = tf.keep(tf.mean(regularized ? tf.slice(forward.gate, [0, 0], [b, this.experts.length]) : forward.gate, 0) as TF.Tensor1D);
        taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
        if (!regularized) return taskLossT;
        const r = this.regularizerInStep(forward, b, w1s, pruned, trainable, weights.w);
        regT = tf.keep(r.kappa);
        monitorMs = r.monitorMs;
        return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      if (mask) maskGrad = this.softMask.take(grads);
      this.parameters.applyGradients(grads, trainable);
      const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logitsT!, 1), tf.argMax(yOneHot, 1)), 'float32'));
      const figures = [total, taskLossT!, regT ?? tf.scalar(this.modelConditioning?.kappa ?? 0), accuracy];
      if (o.gradNorm) figures.push(sumOfSquares(tf, Object.values(grads)));
      const stacked = tf.concat([tf.stack(figures), sharesT!]);
      tf.dispose([logitsT!, taskLossT!, sharesT!, ...(regT ? [regT] : [])]);
      return stacked;
    });
    // One device→host transfer per step for everything reported.
    const values = reported.dataSync();
    reported.dispose();
    const shares = Array.from(values.subarray(o.gradNorm ? 5 : 4), (v) => Math.min(1, Math.max(0, v)));
    const inStep = regularized && this.measuresInStep;
    return { loss: values[0], taskLoss: values[1], regularizer: values[2], taskMetric: values[3], ...(o.gradNorm ? { gradNormSq: values[4] } : {}), shares, ...(inStep ? { measured: this.unitStats, monitorMs } : {}), ...(maskGrad ? { maskGrad } : {}) };
  }

  /**
   * κ(K) of the model's probe kernel as a differentiable function of every weight, inside the step's
   * variableGrads: K is built from the step's own forward pass over the probe rows (from `offset` on),
   * read back once and eigen-solved in float64, then differentiated along those eigenvectors
   * (Hellmann–Feynman: exact for simple extreme eigenvalues of the weights this step starts from). u,
   * the gate and the output biases are inside K, so the gradient follows them too. The same read-back
   * gives every expert's own κ (measured in step; docs/method.md, contract 8).
   */
  private regularizerInStep(forward: MoeForward, offset: number, w1s: TF.Tensor2D[], pruned: ReadonlySet<number>, trainable: number[], weights: number[]): { kappa: TF.Scalar; monitorMs: number } {
    const tf = this.tf;
    const probe = this.probeKernels(forward, offset, w1s, pruned, weights);
    const t0 = performance.now();
    this.condition(probe.flat.dataSync() as Float32Array, (id) => !trainable.includes(id) && !pruned.has(id), pruned, weights);
    const monitorMs = probe.readMs + performance.now() - t0;
    const m = this.modelConditioning!;
    return { kappa: kappaSurrogateTf(probe.model, m.vMin, m.vMax, this.config.monitor.damping), monitorMs };
  }

  /**
   * The probe's kernels (docs/method.md, contract 3–4) from a forward pass whose rows from `offset` on
   * are the probe batch, differentiable w.r.t. every weight: the log-probabilities are read back once
   * (timed in readMs) for the direction's row scales; u is then built from the pass's own logits.
   * `flat` holds the experts' kernels, the gate's kernel and the gate's probabilities for one read-back.
   */
  private probeKernels(forward: MoeForward, offset: number, w1s: TF.Tensor2D[], pruned: ReadonlySet<number>, weights: number[]): { model: TF.Tensor2D; flat: TF.Tensor1D; readMs: number } {
    const tf = this.tf;
    const probeX = this.probeX!;
    const [n, h, c, experts] = [probeX.shape[0], this.config.model.hiddenUnits, this.c, this.experts.length];
    const probeLogits = offset === 0 ? forward.logits : (tf.slice(forward.logits, [offset, 0], [n, c]) as TF.Tensor2D);
    const logProbs = tf.logSoftmax(probeLogits) as TF.Tensor2D;
    const t0 = performance.now();
    const top = rowScales(logProbs.dataSync() as Float32Array, this.probeLabels!, n, c);
    const readMs = performance.now() - t0;
    const u = outputDirectionsTf(logProbs, this.probeY!, top);
    // A pruned expert has no rows in the forward pass (and gate 0): its kernel is 0 whatever its product.
    const pre = this.experts.map((e, i) => {
      const p = forward.preActivations[i];
      return p ? (offset === 0 ? p : tf.slice(p, [offset, 0], [n, h])) : (tf.add(tf.matMul(probeX, w1s[i]), e.b1) as TF.Tensor2D);
    });
    const gate = offset === 0 ? forward.gate : (tf.slice(forward.gate, [offset, 0], [n, experts]) as TF.Tensor2D);
    const outputs = offset === 0 ? forward.outputs : (tf.slice(forward.outputs, [offset, 0, 0], [n, experts, c]) as TF.Tensor3D);
    const kernels = moeKernelsTf(tf.stack(pre) as TF.Tensor3D, u, tf.stack(this.experts.map((e) => e.w2)) as TF.Tensor3D, this.probeGram!, gate, outputs);
    const scale = kernelWeights(weights);
    const model = tf.add(tf.sum(tf.mul(kernels.units, tf.tensor3d(scale, [experts, 1, 1])), 0), kernels.gate) as TF.Tensor2D;
    const flat = tf.concat([tf.reshape(kernels.units, [-1]), tf.reshape(kernels.gate, [-1]), tf.reshape(gate, [-1])]) as TF.Tensor1D;
    return { model, flat, readMs };
  }

  /**
   * From one read-back of the experts' kernels, the gate's kernel and the gate's probabilities: every
   * expert's own μ, L_f, κ over the probe examples it serves (p_e ≥ 1/(2E); null below MIN_SERVED), and
   * the model's kernel Σ_e w_e·K_e + K_gate with its κ and eigenvectors. Float64 extreme eigenpairs
   * (extremeEigen: accurate to a few ε·λ_max, far below the float32 kernels' own round-off; docs/method.md,
   * "Eigen-solver"), the units' without vectors.
   */
  private condition(flat: Float32Array, isFrozen: (id: number) => boolean, pruned: ReadonlySet<number>, weights: number[]): void {
    const n = this.probeX!.shape[0];
    const experts = this.experts.length;
    const damping = this.config.monitor.damping;
    const units = Array.from({ length: experts }, (_, e) => Float64Array.from(flat.subarray(e * n * n, (e + 1) * n * n)));
    const gate = Float64Array.from(flat.subarray(experts * n * n, (experts + 1) * n * n));
    const gateProbs = Float64Array.from(flat.subarray((experts + 1) * n * n));
    const scale = kernelWeights(weights);
    const model = Float64Array.from(gate);
    units.forEach((K, e) => {
      if (scale[e] > 0) for (let k = 0; k < n * n; k++) model[k] += scale[e] * K[k];
    });
    this.lastKernels = { units, gate, model, gateProbs };
    const { mu, lf, kappa, vMin, vMax } = conditioning(model, n, damping, { solver: 'extremes' });
    this.modelConditioning = { mu, lf, kappa, vMin, vMax };
    this.unitStats = units.map((K, id) => {
      const served = servedExamples(gateProbs, n, experts, id);
      const kernel = served.length === n ? K : principalSubmatrix(K, n, served); // serving every example: the whole kernel
      const measured = served.length >= MIN_SERVED ? conditioningValues(kernel, served.length, damping) : undefined;
      return { id, mu: measured?.mu ?? null, lf: measured?.lf ?? null, kappa: measured?.kappa ?? null, served: served.length, frozen: isFrozen(id), pruned: pruned.has(id) };
    });
  }

  /**
   * Measures every expert's μ, L_f, κ over the probe examples it serves and the model's κ (the
   * regularizer) from the same kernels as a regularized step's (float32 kernels, float64 eigen-solves).
   */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const damping = this.config.monitor.damping;
    const h = this.config.model.hiddenUnits;
    const trainable = this.experts.map((_, i) => i).filter((i) => !frozen.has(i) && !pruned.has(i));
    const weights = regularizerWeights(this.experts.length, trainable, undefined).w;
    const w1s = this.firstLayers();
    const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
    // The kernels leave the tidy as a tensor and are read back outside it: a typed array returned from
    // tf.tidy is walked entry by entry for tensors (E·n² + … entries: 12 ms at 64 experts × probe 32).
    const flatTensor = tf.tidy(() => this.probeKernels(moeForward(tf, this.probeX!, { gateW: this.gateW, gateB: this.gateB, experts }, this.c, pruned), 0, w1s, pruned, weights).flat);
    const flat = flatTensor.dataSync() as Float32Array;
    flatTensor.dispose();
    this.condition(flat, (id) => frozen.has(id), pruned, weights);
    const spectral = this.config.monitor.lipschitz === 'spectral-norm';
    // OPT's promise is that the neurons' hyperspherical energy never moves: stream it, with ‖QᵀQ − I‖.
    if (this.optLayers) this.measureOpt(w1s);
    // Another L_f than λ_max: the unit's κ uses it with the served kernel's μ (the regularizer stays κ(K)).
    if (spectral || this.config.monitor.lipschitz === 'hessian-trace') {
      this.unitStats = this.unitStats.map((st) => {
        const id = st.id;
        let lf: number;
        if (spectral) {
          const [w1d, w2] = [w1s[id].dataSync(), this.experts[id].w2.dataSync()];
          lf = spectralNormProduct([{ key: `expert${id}/w1`, matrix: { data: w1d, rows: this.d, cols: h } }], this.spectral) * spectralNormProduct([{ key: `expert${id}/w2`, matrix: { data: w2, rows: h, cols: this.c } }], this.spectral);
        } else lf = Math.max(0, this.hessianTrace(id, pruned));
        return { ...st, lf: st.mu === null ? null : lf, kappa: st.mu === null ? null : dampedKappa(lf, st.mu, damping) };
      });
    }
    if (this.optLayers) tf.dispose(w1s);
    return this.unitStats;
  }

  /**
   * κ̃ of the model's probe kernel (with fresh eigenvectors) and its gradient w.r.t. every variable, the
   * frozen experts' included, without an update: what a regularized step adds to the task gradient per
   * unit of α (tests hold it to finite differences of the float64 κ).
   */
  regularizerGradients(trainable: number[], pruned: ReadonlySet<number>): { value: number; grads: Record<string, Float32Array> } {
    const tf = this.tf;
    if (!this.probeX) throw new Error('setProbe first');
    const weights = regularizerWeights(this.experts.length, trainable, undefined).w;
    const vars = [this.gateW, this.gateB, ...this.experts.flatMap((_, i) => this.expertVars(i))];
    return tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const w1s = this.firstLayers();
        const experts = this.experts.map((e, i) => ({ ...e, w1: w1s[i] }));
        const forward = moeForward(tf, this.probeX!, { gateW: this.gateW, gateB: this.gateB, experts }, this.c, pruned);
        return this.regularizerInStep(forward, 0, w1s, pruned, trainable, weights).kappa;
      }, vars);
      const out: Record<string, Float32Array> = {};
      for (const v of vars) out[v.name.slice(this.prefix.length + 1)] = grads[v.name] ? Float32Array.from(grads[v.name].dataSync()) : new Float32Array(v.size);
      return { value: value.dataSync()[0], grads: out };
    });
  }

  /** OPT's hyperspherical energy and orthogonality error per expert (docs/method.md, "OPT mode"). */
  private measureOpt(w1s: TF.Tensor2D[]): void {
    const h = this.config.model.hiddenUnits;
    this.lastEnergy = {};
    this.optLayers!.forEach((layer, i) => {
      this.lastEnergy[`energy/expert${i}`] = hypersphericalEnergy(w1s[i].dataSync() as Float32Array, this.d, h);
      this.lastEnergy[`orthogonality/expert${i}`] = layer.orthogonalityError();
    });
  }

  /** The headline κ̄ of the last measurement: κ of the model's kernel (docs/method.md, contract 6). */
  modelKappa(): number | undefined {
    return this.modelConditioning?.kappa;
  }

  /**
   * Hyperspherical energy and orthogonality error per expert under OPT, measured afresh on every call
   * (the loop asks on every monitor step, whatever α: a regularized step measures κ in its own graph and
   * never calls measure(), which once left these at their values from before step 1).
   */
  extraMetrics(): Record<string, number> {
    if (this.optLayers) {
      const w1s = this.firstLayers();
      this.measureOpt(w1s);
      this.tf.dispose(w1s);
    }
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

  /** The headline κ̄ of the last measurement, κ of the model's kernel (whatever `ids`: K sums the trainable units). */
  meanKappa(_ids: number[]): number {
    return this.modelConditioning?.kappa ?? 0;
  }

  /** Accuracy on a whole split, in batches. */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number> = new Set(), batch = 500): number {
    return classifierAccuracy(this.tf, data, split, (x) => this.logits(x as TF.Tensor2D, pruned), batch);
  }

  private expertVars(i: number): TF.Variable[] {
    const e = this.experts[i];
    return [e.w1, e.b1, e.w2, e.b2];
  }

  dispose(): void {
    this.parameters.dispose();
    this.softMask.dispose();
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeGram?.dispose();
  }
}

/**
 * The probe examples expert `id` serves: gate probability ≥ 1/(2E), half the uniform share (docs/method.md,
 * contract 8). Inside that set the gate factors of K_e differ by at most 2E, so κ describes the expert
 * and not the gate's dynamic range over inputs it does not handle.
 */
export function servedExamples(gateProbs: ArrayLike<number>, n: number, experts: number, id: number): number[] {
  const threshold = 1 / (2 * experts);
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (gateProbs[i * experts + id] >= threshold) out.push(i);
  return out;
}

/** Block size for OPT's block-diagonal Q: the largest divisor of d up to 256 (a dense 784×784 Cayley solve per step is too slow on a CPU). */
export function optBlockSize(d: number): number {
  for (let b = Math.min(d, 256); b > 1; b--) if (d % b === 0) return b;
  return d;
}
