// The `moe-mlp` model: a dense, soft-gated mixture of two-layer experts, with each expert's variables
// kept apart so freezing an expert is just leaving its variables out of the optimizer's list.
import type * as TF from '@tensorflow/tfjs';
import type { ExpertStats, TrainingConfig } from '../protocol';
import { conditioning, kappaSurrogateTf, outputDirections, tangentKernelTf, twoLayerTangentKernel } from './pl';

export interface ExpertVars {
  w1: TF.Variable; // d×h
  b1: TF.Variable; // h
  w2: TF.Variable; // h×c
  b2: TF.Variable; // c
}

export interface StepResult {
  loss: number;
  taskLoss: number;
  regularizer: number;
  accuracy: number;
  /** ‖∇f‖² over every variable that has a gradient this step (for the PL* check). */
  gradNormSq: number;
}

/** The latest measurement of one expert, with the eigenvectors the regularizer differentiates along. */
interface Measurement {
  stats: ExpertStats;
  vMin: Float64Array;
  vMax: Float64Array;
}

let modelCount = 0;

/** A saved parameter or optimizer slot, addressed by position within its group. */
export interface SavedTensor {
  shape: number[];
  data: Float32Array;
}

export interface ModelState {
  /** Variables by model-relative name (`gate/w`, `expert2/b1`, …). */
  variables: Record<string, SavedTensor>;
  /** Optimizer slots per group (`gate`, `expert0`, …): Adam's iteration count, then m and v per variable. */
  optimizers: Record<string, SavedTensor[]>;
}

export class MoeMlp {
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
  private measurements: Measurement[] = [];

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
    this.experts = Array.from({ length: experts }, (_, i) => ({
      w1: normal(`expert${i}/w1`, [d, h], Math.sqrt(2 / d)),
      b1: zeros(`expert${i}/b1`, [h]),
      w2: normal(`expert${i}/w2`, [h, this.c], Math.sqrt(1 / h)),
      b2: zeros(`expert${i}/b2`, [this.c]),
    }));
    this.gateW = normal('gate/w', [d, experts], 0.01);
    this.gateB = zeros('gate/b', [experts]);
    this.gateOptimizer = tf.train.adam(config.learningRate);
    this.expertOptimizers = this.experts.map(() => tf.train.adam(config.learningRate));
  }

  /** Fixes the probe batch (the same examples for the whole run, so κ over time is comparable). */
  setProbe(x: Float32Array, labels: Uint8Array, n: number): void {
    const tf = this.tf;
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeX = tf.tensor2d(x, [n, this.d]);
    this.probeY = tf.oneHot(tf.tensor1d(labels, 'int32'), this.c).toFloat() as TF.Tensor2D;
  }

  /** Mixture logits; pruned experts get no gate mass. */
  logits(x: TF.Tensor2D, pruned: ReadonlySet<number> = new Set()): TF.Tensor2D {
    const tf = this.tf;
    return tf.tidy(() => {
      let gateLogits = tf.add(tf.matMul(x, this.gateW), this.gateB);
      if (pruned.size) {
        const mask = tf.tensor1d(this.experts.map((_, i) => (pruned.has(i) ? -1e9 : 0)));
        gateLogits = tf.add(gateLogits, mask);
      }
      const gate = tf.softmax(gateLogits); // B×E
      let out: TF.Tensor = tf.zeros([x.shape[0], this.c]);
      this.experts.forEach((e, i) => {
        if (pruned.has(i)) return;
        const o = tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, e.w1), e.b1)), e.w2), e.b2);
        out = tf.add(out, tf.mul(o, tf.slice(gate, [0, i], [-1, 1])));
      });
      return out as TF.Tensor2D;
    });
  }

  /**
   * One optimizer step on L_S + α·mean κ over trainable experts. Frozen experts are left out of the
   * variable list (no update at all); α = 0 skips the regularizer graph entirely.
   */
  trainStep(x: TF.Tensor2D, yOneHot: TF.Tensor2D, alpha: number, trainable: number[], pruned: ReadonlySet<number>): StepResult {
    const tf = this.tf;
    const damping = this.config.monitor.damping;
    const regularized = alpha > 0 && this.probeU !== undefined && this.measurements.length === this.experts.length;
    const varList: TF.Variable[] = [this.gateW, this.gateB];
    for (const i of trainable) varList.push(...Object.values(this.experts[i]));
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      let logitsT: TF.Tensor2D | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        logitsT = tf.keep(this.logits(x, pruned));
        taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
        if (!regularized || !trainable.length) return taskLossT;
        const kappas = trainable.map((i) => {
          const e = this.experts[i];
          const m = this.measurements[i];
          const K = tangentKernelTf(this.probeX!, this.probeU!, e.w1 as unknown as TF.Tensor2D, e.b1 as unknown as TF.Tensor1D, e.w2 as unknown as TF.Tensor2D);
          return kappaSurrogateTf(K, m.vMin, m.vMax, damping);
        });
        regT = tf.keep(tf.div(tf.addN(kappas), kappas.length) as TF.Scalar);
        return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      const group = (vars: TF.Variable[]) => vars.map((v) => ({ name: v.name, tensor: grads[v.name] }));
      this.gateOptimizer.applyGradients(group([this.gateW, this.gateB]));
      for (const i of trainable) this.expertOptimizers[i].applyGradients(group(this.expertVars(i)));
      const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logitsT!, 1), tf.argMax(yOneHot, 1)), 'float32'));
      const gradNormSq = tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g))));
      const stacked = tf.stack([total, taskLossT!, regT ?? tf.scalar(this.meanKappa(trainable)), accuracy, gradNormSq]);
      tf.dispose([logitsT!, taskLossT!, ...(regT ? [regT] : [])]);
      return stacked;
    });
    // One device→host transfer per step for everything reported.
    const values = reported.dataSync();
    reported.dispose();
    return { loss: values[0], taskLoss: values[1], regularizer: values[2], accuracy: values[3], gradNormSq: values[4] };
  }

  /**
   * Measures μ, L_f, κ of every expert on the probe batch from its closed-form tangent kernel
   * (float64; see docs/method.md), and refreshes the eigenvectors the regularizer uses.
   */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): ExpertStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const n = this.probeX.shape[0];
    const probs = tf.tidy(() => tf.softmax(this.logits(this.probeX!, pruned)).dataSync());
    const u = outputDirections(probs, this.probeY.dataSync(), n, this.c);
    this.probeU?.dispose();
    this.probeU = tf.tensor2d(Float32Array.from(u), [n, this.c]);
    const x = this.probeX.dataSync();
    this.measurements = this.experts.map((e, id) => {
      const K = twoLayerTangentKernel({ d: this.d, h: this.config.model.hiddenUnits, c: this.c, w1: e.w1.dataSync(), b1: e.b1.dataSync(), w2: e.w2.dataSync(), b2: e.b2.dataSync() }, x, u, n);
      const cond = conditioning(K, n, this.config.monitor.damping);
      return { stats: { id, mu: cond.mu, lf: cond.lf, kappa: cond.kappa, frozen: frozen.has(id), pruned: pruned.has(id) }, vMin: cond.vMin, vMax: cond.vMax };
    });
    return this.measurements.map((m) => m.stats);
  }

  meanKappa(ids: number[]): number {
    const ks = ids.map((i) => this.measurements[i]?.stats.kappa).filter((k): k is number => k !== undefined);
    return ks.length ? ks.reduce((a, b) => a + b, 0) / ks.length : 0;
  }

  /** Accuracy on a whole split, in batches. */
  evaluate(x: Float32Array, labels: Uint8Array, n: number, pruned: ReadonlySet<number> = new Set(), batch = 500): number {
    const tf = this.tf;
    let correct = 0;
    for (let i = 0; i < n; i += batch) {
      const m = Math.min(batch, n - i);
      correct += tf.tidy(() => {
        const xs = tf.tensor2d(x.subarray(i * this.d, (i + m) * this.d), [m, this.d]);
        const pred = tf.argMax(this.logits(xs, pruned), 1);
        return tf.sum(tf.cast(tf.equal(pred, tf.tensor1d(labels.subarray(i, i + m), 'int32')), 'int32')).dataSync()[0];
      });
    }
    return correct / n;
  }

  private expertVars(i: number): TF.Variable[] {
    const e = this.experts[i];
    return [e.w1, e.b1, e.w2, e.b2];
  }

  private groups(): [string, TF.Variable[], TF.Optimizer][] {
    return [['gate', [this.gateW, this.gateB], this.gateOptimizer], ...this.experts.map((_, i): [string, TF.Variable[], TF.Optimizer] => [`expert${i}`, this.expertVars(i), this.expertOptimizers[i]])];
  }

  /** Everything needed to continue training exactly where it stopped (for checkpoints). */
  async getState(): Promise<ModelState> {
    const save = async (t: TF.Tensor): Promise<SavedTensor> => ({ shape: t.shape.slice(), data: Float32Array.from(await t.data()) });
    const state: ModelState = { variables: {}, optimizers: {} };
    for (const [group, vars, opt] of this.groups()) {
      for (const v of vars) state.variables[v.name.slice(this.prefix.length + 1)] = await save(v);
      // An optimizer that never stepped (an expert frozen from the start) has no slots yet.
      const weights = await opt.getWeights();
      state.optimizers[group] = await Promise.all(weights.map((w) => save(w.tensor)));
    }
    return state;
  }

  async setState(state: ModelState): Promise<void> {
    const tf = this.tf;
    for (const [group, vars, opt] of this.groups()) {
      for (const v of vars) {
        const saved = state.variables[v.name.slice(this.prefix.length + 1)];
        if (!saved || saved.shape.join() !== v.shape.join()) throw new Error(`checkpoint does not fit the model: ${v.name}`);
        v.assign(tf.tensor(saved.data, saved.shape));
      }
      const slots = state.optimizers[group] ?? [];
      if (slots.length) {
        // Adam's slots: [iterations, m per variable…, v per variable…], matched by position.
        const names = ['iter', ...vars.map((v) => `${v.name}/m`), ...vars.map((v) => `${v.name}/v`)];
        await opt.setWeights(slots.map((s, k) => ({ name: names[k] ?? `slot${k}`, tensor: tf.tensor(s.data, s.shape) })));
      }
    }
  }

  /** Snapshot of an expert's weights (for tests: frozen means bit-identical). */
  expertWeights(i: number): Float32Array[] {
    const e = this.experts[i];
    return [e.w1, e.b1, e.w2, e.b2].map((v) => Float32Array.from(v.dataSync()));
  }

  dispose(): void {
    this.tf.dispose([...this.experts.flatMap((e) => Object.values(e)), this.gateW, this.gateB]);
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeU?.dispose();
    this.gateOptimizer.dispose();
    for (const o of this.expertOptimizers) o.dispose();
  }
}
