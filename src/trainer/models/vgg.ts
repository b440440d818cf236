// The `vgg` family: a small VGG-style conv net (blocks of 3×3 conv + ReLU + 2×2 max-pool, then a
// dense classifier) whose prunable units are channel groups. Group g owns its own filters and biases
// in every conv layer (each reads all input channels and writes its own `hiddenUnits` channels), so
// freezing g is leaving exactly its variables out of the update and pruning g zeroes its channels.
//
// Conv and pool avoid tf.conv2d and tf.maxPool, so they can be differentiated twice (the regularizer
// needs the gradient of a gradient) on every backend. Two gaps in tfjs 4.22 force this:
// Conv2DBackpropFilter and MaxPoolGrad have no registered gradient (second order fails on every
// backend), and the wasm backend has no Conv2DBackpropFilter kernel at all, so even first-order
// training of tf.conv2d fails there. Both are tf.customGrad ops: the conv's backward passes are convs
// again (Conv2D kernel only), the pool's is a mask multiply. (An im2col conv from built-in slice/concat/
// matMul also differentiates twice, but was 2.5× slower per step on wasm.)
import type * as TF from '@tensorflow/tfjs';
import type { UnitStats, TrainingConfig } from '../../protocol';
import { classifierUnitKernels, outputDirections, smoothKappaTf, spectralNormProduct, SpectralNormState } from '../pl';
import { biasRayleigh, classifierAccuracy, regularizerWeights, restoreGroups, routerlessMeasurement, saveGroups, SoftMask, type ModelConditioning } from './shared';
import type { Batch, ModelState, PlModel, StepOptions, StepResult, TaskData } from './types';

type Tensor4D = TF.Tensor4D;

export interface TwiceDifferentiableOps {
  /** 3×3 'same' convolution, stride 1, of x [b,h,w,cin] with f [3,3,cin,cout]. */
  convSame(x: Tensor4D, f: Tensor4D): Tensor4D;
  /** The same for a network input: its gradient with respect to x is not computed (reported as zero). */
  convSameOfInput(x: Tensor4D, f: Tensor4D): Tensor4D;
  /** 2×2 max-pool, stride 2; odd trailing rows/columns are dropped (floor, as 'valid' pooling). */
  maxPool2(x: Tensor4D): Tensor4D;
}

const opsCache = new WeakMap<object, TwiceDifferentiableOps>();

type Binary = (a: TF.Tensor, b: TF.Tensor) => Tensor4D;

/** A two-input op with its own backward pass, which reads the inputs marked in `keep`. */
function customBinary(tf: typeof TF, forward: (a: Tensor4D, b: Tensor4D) => TF.Tensor, keep: [boolean, boolean], backward: (dy: Tensor4D, saved: Tensor4D[]) => TF.Tensor[]): Binary {
  return tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const [a, b] = args as Tensor4D[];
    (args[2] as TF.GradSaveFunc)([a, b].filter((_, i) => keep[i]));
    return { value: forward(a, b), gradFunc: (dy: TF.Tensor, saved: TF.Tensor[]) => backward(dy as Tensor4D, saved as Tensor4D[]) };
  }) as Binary;
}

/** Conv and pool whose gradients can be differentiated again, on every backend (see the file comment). */
export function twiceDifferentiableOps(tf: typeof TF): TwiceDifferentiableOps {
  const cached = opsCache.get(tf);
  if (cached) return cached;
  // V(a, f): 'valid' correlation, stride 1, a [b,h,w,ci] ⋆ f [kh,kw,ci,co] → [b, h−kh+1, w−kw+1, co]. Both
  // of its gradients are V again (plus pad, reverse, transpose), so every order runs on Conv2D alone.
  // da[b,p,q,c] = Σ_{y,x,o} dy[b,y,x,o]·f[p−y,q−x,c,o]: the full correlation of dy with the flipped f,
  // or, when f is spatially larger than dy (the filter-gradient convs below, differentiated again),
  // the same sum with the roles of f and dy swapped, which skips the zero padding's wasted products.
  const inputGrad = (dy: Tensor4D, f: Tensor4D): Tensor4D => {
    const [kh, kw] = f.shape;
    const [oh, ow] = [dy.shape[1], dy.shape[2]];
    if (kh * kw <= oh * ow) return validConv(tf.pad(dy, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]]), tf.transpose(tf.reverse(f, [0, 1]), [0, 1, 3, 2]));
    const fAsImage = tf.pad(tf.transpose(f, [2, 0, 1, 3]), [[0, 0], [oh - 1, oh - 1], [ow - 1, ow - 1], [0, 0]]); // [ci, kh+2(oh−1), kw+2(ow−1), co]
    const dyAsFilter = tf.transpose(tf.reverse(dy, [1, 2]), [1, 2, 3, 0]); // [oh, ow, co, b]
    return tf.transpose(validConv(fAsImage, dyAsFilter), [3, 1, 2, 0]);
  };
  // df[i,j,ci,co] = Σ_{b,y,x} a[b,y+i,x+j,ci]·dy[b,y,x,co]: V with the batch as the contracted channel axis.
  const filterGrad = (a: Tensor4D, dy: Tensor4D): Tensor4D => tf.transpose(validConv(tf.transpose(a, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3])), [1, 2, 0, 3]);
  const validConv: Binary = customBinary(tf, (a, f) => tf.conv2d(a, f, 1, 'valid'), [true, true], (dy, [a, f]) => [inputGrad(dy, f), filterGrad(a, dy)]);
  const validConvOfInput = customBinary(tf, (a, f) => tf.conv2d(a, f, 1, 'valid'), [true, false], (dy, [a]) => [tf.zerosLike(a), filterGrad(a, dy)]);
  const padSame = (x: Tensor4D) => tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]);
  // The argmax mask is computed in the forward pass, which runs off the tape, so it is a constant to
  // every derivative (as relu′ is); the backward pass is linear in dy and differentiable again. Ties go
  // to the first position in the window, one position per window, like tf.maxPool's own gradient.
  // (oneHot is cast rather than asked for float32: the wasm OneHot kernel writes int32 bits into a
  // float32 buffer, 1 becomes 1.4e-45.)
  const pool = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const x = args[0] as Tensor4D;
    const save = args[1] as TF.GradSaveFunc;
    const [b, h2, w2, c] = x.shape;
    const [h, w] = [h2 / 2, w2 / 2];
    const windows = tf.reshape(tf.transpose(tf.reshape(x, [b, h, 2, w, 2, c]), [0, 1, 3, 5, 2, 4]), [b, h, w, c, 4]);
    const value = tf.max(windows, -1) as Tensor4D;
    const mask = tf.transpose(tf.reshape(tf.cast(tf.oneHot(tf.argMax(windows, -1), 4), 'float32'), [b, h, w, c, 2, 2]), [0, 1, 4, 2, 5, 3]);
    save([mask]);
    return { value, gradFunc: (dy: Tensor4D, [m]: TF.Tensor[]) => tf.reshape(tf.mul(tf.reshape(dy, [b, h, 1, w, 1, c]), m), [b, h2, w2, c]) };
  }) as (x: TF.Tensor) => Tensor4D;
  const ops: TwiceDifferentiableOps = {
    convSame: (x, f) => validConv(padSame(x), f),
    convSameOfInput: (x, f) => validConvOfInput(padSame(x), f),
    maxPool2: (x) => {
      const [b, h, w, c] = x.shape;
      const even = h % 2 || w % 2 ? tf.slice(x, [0, 0, 0, 0], [b, h - (h % 2), w - (w % 2), c]) : x;
      return pool(even);
    },
  };
  opsCache.set(tf, ops);
  return ops;
}

/** One channel group's variables in one conv layer. */
interface GroupLayer {
  w: TF.Variable; // [3, 3, cin, channelsPerGroup]
  b: TF.Variable; // [channelsPerGroup]
}

let modelCount = 0;

export class VggNet implements PlModel {
  readonly units: number;
  readonly channelsPerGroup: number;
  readonly rows: number;
  readonly cols: number;
  readonly classes: number;
  /** layers[l][g]: group g's filters in conv layer l. */
  readonly layers: GroupLayer[][];
  readonly denseW: TF.Variable;
  readonly denseB: TF.Variable;
  /** One Adam per group and one for the classifier: tfjs's Adam keys its moments by list position. */
  private readonly sharedOptimizer: TF.Optimizer;
  private readonly groupOptimizers: TF.Optimizer[];
  private readonly ops: TwiceDifferentiableOps;
  private readonly prefix = `vgg${modelCount++}`;
  private readonly spectral: SpectralNormState;
  private readonly softMask: SoftMask;
  private probeX: TF.Tensor2D | undefined;
  private probeY: TF.Tensor2D | undefined;
  private probeU: Float64Array | undefined;
  private unitStats: UnitStats[] = [];
  /** κ of the model's kernel at the last measurement (the regularizer), with its eigenvectors. */
  private modelConditioning: ModelConditioning | undefined;

  constructor(
    private readonly tf: typeof TF,
    private readonly config: TrainingConfig,
    data: TaskData,
  ) {
    if (data.kind !== 'images') throw new Error(`the vgg family classifies images, not ${data.kind}`);
    if (data.rows * data.cols !== data.features) throw new Error(`image grid ${data.rows}×${data.cols} does not match ${data.features} features`);
    const { experts: groups, hiddenUnits: c, layers } = config.model;
    this.units = groups;
    this.channelsPerGroup = c;
    this.rows = data.rows;
    this.cols = data.cols;
    this.classes = data.classes;
    let [h, w] = [data.rows, data.cols];
    for (let l = 0; l < layers; l++) [h, w] = [Math.floor(h / 2), Math.floor(w / 2)];
    if (h < 1 || w < 1) throw new Error(`${layers} conv blocks pool a ${data.rows}×${data.cols} image away to nothing: use fewer layers`);
    this.ops = twiceDifferentiableOps(tf);
    let seed = config.seed * 1000;
    const name = (n: string) => `${this.prefix}/${n}`;
    const normal = (n: string, shape: number[], std: number) => tf.variable(tf.randomNormal(shape, 0, std, 'float32', seed++), true, name(n));
    const zeros = (n: string, shape: number[]) => tf.variable(tf.zeros(shape), true, name(n));
    // He initialization: every group's filter reads all cin input channels.
    this.layers = Array.from({ length: layers }, (_, l) => {
      const cin = l === 0 ? 1 : groups * c;
      return Array.from({ length: groups }, (_, g) => ({ w: normal(`group${g}/conv${l}/w`, [3, 3, cin, c], Math.sqrt(2 / (9 * cin))), b: zeros(`group${g}/conv${l}/b`, [c]) }));
    });
    const flat = h * w * groups * c;
    this.denseW = normal('dense/w', [flat, this.classes], Math.sqrt(1 / flat));
    this.denseB = zeros('dense/b', [this.classes]);
    this.spectral = new SpectralNormState(config.seed);
    this.softMask = new SoftMask(tf, name('pruningMask'), groups);
    this.sharedOptimizer = tf.train.adam(config.learningRate);
    this.groupOptimizers = Array.from({ length: groups }, () => tf.train.adam(config.learningRate));
  }

  setProbe(probe: Batch): void {
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeX = probe.x as TF.Tensor2D;
    this.probeY = probe.y as TF.Tensor2D;
  }

  /** Logits [b, classes] of images x [b, rows·cols]; a pruned group's channels are exactly zero in every layer. */
  logits(x: TF.Tensor, pruned: ReadonlySet<number> = new Set(), softMask?: TF.Tensor1D): TF.Tensor2D {
    const tf = this.tf;
    return tf.tidy(() => {
      let h = tf.reshape(x, [x.shape[0], this.rows, this.cols, 1]) as Tensor4D;
      this.layers.forEach((groups, l) => {
        // One conv for all groups: the groups' filters side by side, zeros in a pruned group's place, so
        // its channels are zero and its own variables are never read.
        const filters = groups.map((p, g) => (pruned.has(g) ? tf.zerosLike(p.w) : p.w));
        const biases = groups.map((p, g) => (pruned.has(g) ? tf.zerosLike(p.b) : p.b));
        const f = tf.concat(filters, 3) as Tensor4D;
        const conv = l === 0 ? this.ops.convSameOfInput(h, f) : this.ops.convSame(h, f);
        h = this.ops.maxPool2(tf.relu(tf.add(conv, tf.concat(biases))) as Tensor4D);
        // The pruning gate's soft mask scales group g's channels (pooling commutes with a scale ≥ 0).
        if (softMask) h = tf.mul(h, tf.concat(groups.map((_, g) => tf.tile(tf.slice(softMask, [g], [1]), [this.channelsPerGroup])))) as Tensor4D;
      });
      return tf.add(tf.matMul(tf.reshape(h, [h.shape[0], -1]) as TF.Tensor2D, this.denseW as unknown as TF.Tensor2D), this.denseB) as TF.Tensor2D;
    });
  }

  /**
   * One optimizer step on L_S + α·κ̄, κ̄ the (unit-weighted) mean κ over trainable groups. Frozen groups
   * are left out of the variable list; α = 0 skips the regularizer graph entirely.
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    const tf = this.tf;
    const { alpha, pruned } = o;
    // A pruned group has no gradient (it never reaches the logits), so it takes no optimizer step either.
    const trainable = o.trainable.filter((g) => !pruned.has(g));
    const yOneHot = batch.y as TF.Tensor2D;
    const weights = regularizerWeights(this.units, trainable, o.unitWeights);
    const regularized = alpha > 0 && this.probeU !== undefined && this.modelConditioning !== undefined;
    const varList: TF.Variable[] = [this.denseW, this.denseB];
    for (const g of trainable) varList.push(...this.groupVars(g));
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      let logitsT: TF.Tensor2D | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        logitsT = tf.keep(this.logits(batch.x, pruned, mask));
        taskLossT = tf.keep(tf.losses.softmaxCrossEntropy(yOneHot, logitsT) as TF.Scalar);
        if (!regularized) return taskLossT;
        regT = tf.keep(this.modelKappaTf(trainable.filter((g) => weights.w[g] > 0), pruned));
        return tf.add(taskLossT, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      if (mask) maskGrad = this.softMask.take(grads);
      const group = (vars: TF.Variable[]) => vars.map((v) => ({ name: v.name, tensor: grads[v.name] }));
      this.sharedOptimizer.applyGradients(group([this.denseW, this.denseB]));
      for (const g of trainable) this.groupOptimizers[g].applyGradients(group(this.groupVars(g)));
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
   * vᵀ(Σ_{g∈units} K_g)v as a differentiable function of the weights: K_g = J_g·J_gᵀ, so the sum is
   * ‖∇_{θ_units} Σ_i v_i s_i‖² with s_i = u_iᵀ logits(x_i): one probe forward and backward per Rayleigh
   * quotient, differentiated again by the caller's tf.variableGrads (the custom conv/pool make that
   * possible). u is held at the last measurement's.
   */
  rayleighTf(units: number | number[], v: Float64Array, pruned: ReadonlySet<number>): TF.Scalar {
    const tf = this.tf;
    const n = this.probeX!.shape[0];
    const u = this.probeU!;
    const weighted = new Float32Array(n * this.classes);
    for (let i = 0; i < n; i++) for (let k = 0; k < this.classes; k++) weighted[i * this.classes + k] = v[i] * u[i * this.classes + k];
    const vars = (Array.isArray(units) ? units : [units]).flatMap((g) => this.groupVars(g));
    return tf.tidy(() => {
      if (!vars.length) return tf.scalar(0);
      const vu = tf.tensor2d(weighted, [n, this.classes]);
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(this.logits(this.probeX!, pruned), vu)) as TF.Scalar, vars);
      value.dispose();
      return tf.addN(Object.values(grads).map((d) => tf.sum(tf.square(d)))) as TF.Scalar;
    });
  }

  /**
   * κ̃ of the model's kernel Σ_{g∈trainable} K_g + U·Uᵀ with the last measurement's eigenvectors (and u)
   * held: Hellmann–Feynman. vᵀU·Uᵀv = ‖Σ_i v_i u_i‖² is a constant here. Its gradient reaches every
   * trainable variable, since each K_g depends on the whole network.
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
   * The per-group tangent kernels of s_i = u_iᵀ logits(x_i) on the probe batch, row i of J_g = ∇_{θ_g} s_i
   * (one backward pass per probe example for all groups). Pruned when `pruned` says so, except that a
   * pruned group's own kernel is taken with that group restored (the rest as they are): the group is
   * measured as it would act, the way a gated-off expert is.
   */
  groupKernels(pruned: ReadonlySet<number>): Float64Array[] {
    if (!this.probeX || !this.probeU) throw new Error('measure needs a probe batch and output directions');
    return classifierUnitKernels(this.tf, { probeX: this.probeX, probeU: this.probeU, classes: this.classes, units: this.units, logits: (x, mask) => this.logits(x, mask), unitVars: (u) => this.groupVars(u) }, pruned);
  }

  /** μ, L_f, κ of every group on the probe batch (float64 eigen-solve), refreshing the regularizer's vectors. */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const n = this.probeX.shape[0];
    const logProbs = tf.tidy(() => tf.logSoftmax(this.logits(this.probeX!, pruned)).dataSync());
    this.probeU = outputDirections(logProbs, this.probeY.dataSync(), n, this.classes);
    const damping = this.config.monitor.damping;
    const kernels = this.groupKernels(pruned);
    // The standard reshaped-kernel estimate (as in spectral normalization): σ_max of each layer's
    // (9·cin × c) filter matrix. Not the conv operator norm, which lies anywhere up to 3σ (a pixel enters
    // at most 9 patches): an estimate, not a bound.
    const spectralLf = (id: number) =>
      this.layers.reduce((a, layer, l) => {
        const w = layer[id].w;
        return a * spectralNormProduct([{ key: `group${id}/conv${l}`, matrix: { data: w.dataSync(), rows: w.size / this.channelsPerGroup, cols: this.channelsPerGroup } }], this.spectral);
      }, 1);
    const r = routerlessMeasurement(kernels, this.probeU, n, this.classes, frozen, pruned, damping, this.config.monitor.lipschitz === 'spectral-norm' ? spectralLf : undefined);
    this.unitStats = r.stats;
    this.modelConditioning = r.model;
    return this.unitStats;
  }

  /** κ of the model's kernel at the last measurement (the headline κ̄). */
  modelKappa(): number | undefined {
    return this.modelConditioning?.kappa;
  }

  meanKappa(ids: number[]): number {
    void ids; // κ of the model's kernel: it sums the trainable groups
    return this.modelConditioning?.kappa ?? 0;
  }

  /** Accuracy on a whole split, in batches. */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number> = new Set(), batch = 500): number {
    return classifierAccuracy(this.tf, data, split, (x) => this.logits(x, pruned), batch);
  }

  /** Group g's variables, layer by layer: [w0, b0, w1, b1, …]. */
  groupVars(g: number): TF.Variable[] {
    return this.layers.flatMap((layer) => [layer[g].w, layer[g].b]);
  }

  private groups(): [string, TF.Variable[], TF.Optimizer][] {
    return [['dense', [this.denseW, this.denseB], this.sharedOptimizer], ...this.groupOptimizers.map((opt, g): [string, TF.Variable[], TF.Optimizer] => [`group${g}`, this.groupVars(g), opt])];
  }

  /** Everything needed to continue training exactly where it stopped (for checkpoints). */
  getState(): Promise<ModelState> {
    return saveGroups(this.prefix, this.groups());
  }

  setState(state: ModelState): Promise<void> {
    return restoreGroups(this.tf, this.prefix, this.groups(), state);
  }

  unitWeights(i: number): Float32Array[] {
    return this.groupVars(i).map((v) => Float32Array.from(v.dataSync()));
  }

  dispose(): void {
    this.tf.dispose([...this.layers.flat().flatMap((p) => [p.w, p.b]), this.denseW, this.denseB]);
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.sharedOptimizer.dispose();
    for (const o of this.groupOptimizers) o.dispose();
    this.softMask.dispose();
  }
}
