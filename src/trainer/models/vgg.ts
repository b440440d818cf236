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
import type { TrainingConfig } from '../../protocol';
import { spectralNormProduct } from '../pl';
import { RouterlessClassifier, type BackToTaps } from './routerlessClassifier';
import type { TaskData } from './types';

type Tensor4D = TF.Tensor4D;

export interface TwiceDifferentiableOps {
  /** 3×3 'same' convolution, stride 1, of x [b,h,w,cin] with f [3,3,cin,cout]. */
  convSame(x: Tensor4D, f: Tensor4D): Tensor4D;
  /** The same for a network input: its gradient with respect to x is not computed (reported as zero). */
  convSameOfInput(x: Tensor4D, f: Tensor4D): Tensor4D;
  /** 2×2 max-pool, stride 2; odd trailing rows/columns are dropped (floor, as 'valid' pooling). */
  maxPool2(x: Tensor4D): Tensor4D;
  /**
   * Runs f, in which every backward pass of these convs returns zeros as the filter's gradient instead
   * of computing it: for gradients with respect to activations only (tf.customGrad computes every
   * input's gradient whether asked for or not). Ops recorded inside f keep their full backward pass.
   */
  withoutFilterGradients<T>(f: () => T): T;
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
  // Set while a caller wants activation gradients only: read when a backward pass runs, not when the op was recorded.
  let skipFilterGradients = false;
  const filterGradOrZeros = (a: Tensor4D, dy: Tensor4D, f: Tensor4D | number[]) => (skipFilterGradients ? tf.zeros(Array.isArray(f) ? f : f.shape) : filterGrad(a, dy));
  const validConv: Binary = customBinary(tf, (a, f) => tf.conv2d(a, f, 1, 'valid'), [true, true], (dy, [a, f]) => [inputGrad(dy, f), filterGradOrZeros(a, dy, f)]);
  const validConvOfInput = customBinary(tf, (a, f) => tf.conv2d(a, f, 1, 'valid'), [true, false], (dy, [a]) => [tf.zerosLike(a), filterGradOrZeros(a, dy, [a.shape[1] - dy.shape[1] + 1, a.shape[2] - dy.shape[2] + 1, a.shape[3], dy.shape[3]])]);
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
    withoutFilterGradients: (f) => {
      const before = skipFilterGradients;
      skipFilterGradients = true;
      try {
        return f();
      } finally {
        skipFilterGradients = before;
      }
    },
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

export class VggNet extends RouterlessClassifier {
  readonly channelsPerGroup: number;
  readonly rows: number;
  readonly cols: number;
  /** layers[l][g]: group g's filters in conv layer l. */
  readonly layers: GroupLayer[][];
  readonly denseW: TF.Variable;
  readonly denseB: TF.Variable;
  private readonly ops: TwiceDifferentiableOps;

  constructor(tf: typeof TF, config: TrainingConfig, data: TaskData) {
    if (data.kind !== 'images') throw new Error(`the vgg family classifies images, not ${data.kind}`);
    if (data.rows * data.cols !== data.features) throw new Error(`image grid ${data.rows}×${data.cols} does not match ${data.features} features`);
    const { experts: groups, hiddenUnits: c, layers } = config.model;
    let [h, w] = [data.rows, data.cols];
    for (let l = 0; l < layers; l++) [h, w] = [Math.floor(h / 2), Math.floor(w / 2)];
    if (h < 1 || w < 1) throw new Error(`${layers} conv blocks pool a ${data.rows}×${data.cols} image away to nothing: use fewer layers`);
    super(tf, config, `vgg${modelCount++}`, groups, data.classes, { sharedName: 'dense', unitName: (g) => `group${g}` }, 500);
    this.channelsPerGroup = c;
    this.rows = data.rows;
    this.cols = data.cols;
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
  }

  /** Logits [b, classes] of images x [b, rows·cols]; a pruned group's channels are exactly zero in every layer. */
  logits(x: TF.Tensor, pruned: ReadonlySet<number> = new Set(), softMask?: TF.Tensor1D): TF.Tensor2D {
    return this.tf.tidy(() => this.forward(x, pruned, softMask));
  }

  /**
   * The net; with `tapped`, a zero tap is added to each conv layer's pre-activation (tapped.taps, one per
   * layer) and each conv layer's input is kept in tapped.inputs, for probeJacobians.
   */
  private forward(x: TF.Tensor, pruned: ReadonlySet<number>, softMask: TF.Tensor1D | undefined, tapped?: { taps: TF.Tensor[]; inputs: TF.Tensor[] }): TF.Tensor2D {
    const tf = this.tf;
    let h = tf.reshape(x, [x.shape[0], this.rows, this.cols, 1]) as Tensor4D;
    this.layers.forEach((groups, l) => {
      // One conv for all groups: the groups' filters side by side, zeros in a pruned group's place, so
      // its channels are zero and its own variables are never read.
      const filters = groups.map((p, g) => (pruned.has(g) ? tf.zerosLike(p.w) : p.w));
      const biases = groups.map((p, g) => (pruned.has(g) ? tf.zerosLike(p.b) : p.b));
      const f = tf.concat(filters, 3) as Tensor4D;
      tapped?.inputs.push(tf.keep(h));
      const conv = l === 0 ? this.ops.convSameOfInput(h, f) : this.ops.convSame(h, f);
      const pre = tf.add(conv, tf.concat(biases));
      h = this.ops.maxPool2(tf.relu(tapped ? tf.add(pre, tapped.taps[l]) : pre) as Tensor4D);
      // The pruning gate's soft mask scales group g's channels (pooling commutes with a scale ≥ 0).
      if (softMask) h = tf.mul(h, tf.concat(groups.map((_, g) => tf.tile(tf.slice(softMask, [g], [1]), [this.channelsPerGroup])))) as Tensor4D;
    });
    return tf.add(tf.matMul(tf.reshape(h, [h.shape[0], -1]) as TF.Tensor2D, this.denseW as unknown as TF.Tensor2D), this.denseB) as TF.Tensor2D;
  }

  /**
   * Every group's per-sample Jacobian rows [groups, b, p_group] from one tapped forward pass and one
   * backward pass to the taps (δ = ∂s/∂(pre-activation), `backToTaps`): a 3×3 'same' conv is a linear
   * map of the input's 3×3 patches, so ∂s_i/∂W = Σ_{y,x} patch_i(y,x) ⊗ δ_i(y,x) (im2col, one batched
   * matmul per layer for all groups) and ∂s_i/∂b = Σ_{y,x} δ_i(y,x). Columns per layer: the filter in
   * [3,3,c_in,c] order, then the bias.
   */
  protected probeJacobians(x: TF.Tensor, pruned: ReadonlySet<number>, backToTaps: BackToTaps): TF.Tensor3D {
    const tf = this.tf;
    const [b, G, c] = [x.shape[0], this.units, this.channelsPerGroup];
    const inputs: TF.Tensor[] = [];
    let [hh, ww] = [this.rows, this.cols];
    const taps = this.layers.map(() => {
      const t = tf.zeros([b, hh, ww, G * c]);
      [hh, ww] = [Math.floor(hh / 2), Math.floor(ww / 2)];
      return t;
    });
    // δ at the taps needs no filter gradient inside that backward pass (the outer one, through δ, does).
    const deltas = this.ops.withoutFilterGradients(() => backToTaps((t) => this.forward(x, pruned, undefined, { taps: t, inputs }), taps));
    const blocks: TF.Tensor[] = [];
    this.layers.forEach((_, l) => {
      const input = inputs[l] as Tensor4D;
      const [, H, W, cin] = input.shape;
      const padded = tf.pad(input, [[0, 0], [1, 1], [1, 1], [0, 0]]);
      const delta = tf.reshape(deltas[l], [b, H * W, G * c]) as TF.Tensor3D;
      // One small matmul per 3×3 shift, concatenated after the contraction: concatenating the patches
      // instead made the outer backward split a [b, H·W, 9·c_in] gradient 9 ways (tfjs-backend-wasm's own
      // Slice copies its whole input per part; with the engine's Slice, which does not, this is still
      // 3–5 % of the regularized step faster, docs/performance.md).
      const perShift: TF.Tensor[] = [];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) perShift.push(tf.matMul(tf.reshape(tf.slice(padded, [0, i, j, 0], [b, H, W, cin]), [b, H * W, cin]) as TF.Tensor3D, delta, true, false));
      const filters = tf.concat(perShift, 1); // [b, 9·c_in, G·c], rows in (3×3, c_in) order
      blocks.push(tf.reshape(tf.transpose(tf.reshape(filters, [b, 9 * cin, G, c]), [2, 0, 1, 3]), [G, b, 9 * cin * c]));
      blocks.push(tf.transpose(tf.reshape(tf.sum(delta, 1), [b, G, c]), [1, 0, 2]));
    });
    tf.dispose(inputs);
    return tf.concat(blocks, 2) as TF.Tensor3D;
  }

  /**
   * The standard reshaped-kernel estimate (as in spectral normalization): σ_max of each layer's
   * (9·cin × c) filter matrix. Not the conv operator norm, which lies anywhere up to 3σ (a pixel enters
   * at most 9 patches): an estimate, not a bound.
   */
  protected spectralLipschitz(id: number): number {
    return this.layers.reduce((a, layer, l) => {
      const w = layer[id].w;
      return a * spectralNormProduct([{ key: `group${id}/conv${l}`, matrix: { data: w.dataSync(), rows: w.size / this.channelsPerGroup, cols: this.channelsPerGroup } }], this.spectral);
    }, 1);
  }

  /** Group g's variables, layer by layer: [w0, b0, w1, b1, …]. */
  groupVars(g: number): TF.Variable[] {
    return this.layers.flatMap((layer) => [layer[g].w, layer[g].b]);
  }

  unitVars(g: number): TF.Variable[] {
    return this.groupVars(g);
  }

  /** The dense classifier: the only variables no group owns. */
  sharedVars(): TF.Variable[] {
    return [this.denseW, this.denseB];
  }
}
