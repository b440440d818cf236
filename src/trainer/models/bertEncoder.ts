// The `bert-encoder` family: a small BERT-style encoder for sequence classification whose prunable
// units are attention heads. Images are read as sequences: each row of `cols` pixels is one token,
// `rows` tokens per sequence, with a learned [CLS] token prepended; the class is read from the final
// [CLS] state. Embedding: Linear(cols→dModel) + learned positions, then LayerNorm; `layers` post-LN
// blocks (BERT): x = LN(x + MHA(x)), x = LN(x + FFN(x)), no causal mask, tanh-GELU FFN.
//
// Unit h is attention head h in every layer: per layer it owns W_q, b_q, W_k, W_v, b_v (dModel×dHead,
// dHead) and its dHead rows of the output projection W_o (dHead×dModel), so freezing h leaves exactly
// these out of the update, and pruning h zeroes them in the forward pass: its output before W_o is
// exactly 0 in every layer and none of its variables is read. There is no key bias: it adds the same
// q·b_k to every score of a query, which softmax ignores (its gradient is identically zero).
//
// The regularizer takes the gradient of a gradient, and tfjs 4.22 gets that silently wrong for every op
// whose gradient reads its own output (Softmax, Tanh, Exp, Sigmoid, …): the engine records the saved
// output's clone on the tape *before* the op that produced it, so the backward pass never connects
// the saved output to the op's input and the second derivative through it is dropped (no error; the
// regularizer's gradient was 20% off here). Softmax and tanh are therefore tf.customGrad ops that
// save their input and recompute the output in the backward pass. Everything else (matMul, layer
// norm from mean/sqrt/div, reshape/transpose/concat/tile) differentiates twice as is. Checked against
// float64 finite differences in test/unit/model-bert-encoder.test.ts.
import type * as TF from '@tensorflow/tfjs';
import type { TrainingConfig } from '../../protocol';
import { spectralNormProduct } from '../pl';
import { RouterlessClassifier, type BackToTaps } from './routerlessClassifier';
import type { TaskData } from './types';

type T2 = TF.Tensor2D;

export interface TwiceDifferentiableActivations {
  /** Softmax over the last axis. */
  softmax<T extends TF.Tensor>(x: T): T;
  tanh<T extends TF.Tensor>(x: T): T;
  /** GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
  gelu<T extends TF.Tensor>(x: T): T;
  /** Layer norm over the last axis of x [N, D] with gain g and bias b [D] (variance of the row, ε inside the root). */
  layerNorm(x: TF.Tensor2D, g: TF.Tensor1D, b: TF.Tensor1D): TF.Tensor2D;
}

const activationsCache = new WeakMap<object, TwiceDifferentiableActivations>();

/** Softmax, tanh, GELU and layer norm whose gradients can be differentiated again (see the file comment). */
export function twiceDifferentiableActivations(tf: typeof TF): TwiceDifferentiableActivations {
  const cached = activationsCache.get(tf);
  if (cached) return cached;
  // The backward pass recomputes y from the saved input, so the outer tape sees y as a function of x.
  const recomputing = (forward: (x: TF.Tensor) => TF.Tensor, backward: (dy: TF.Tensor, y: TF.Tensor) => TF.Tensor) =>
    tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
      const x = args[0] as TF.Tensor;
      (args[1] as TF.GradSaveFunc)([x]);
      return { value: forward(x), gradFunc: (dy: TF.Tensor, [saved]: TF.Tensor[]) => backward(dy, forward(saved)) };
    }) as <T extends TF.Tensor>(x: T) => T;
  const twiceTanh = recomputing(
    (x) => tf.tanh(x),
    (dy, y) => tf.mul(dy, tf.sub(1, tf.square(y))),
  );
  const recomputingGelu = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const x = args[0] as TF.Tensor;
    (args[1] as TF.GradSaveFunc)([x]);
    const value = tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), GELU_C)), 1));
    return {
      value,
      gradFunc: (dy: TF.Tensor, [saved]: TF.Tensor[]) => {
        const x2 = tf.square(saved);
        const t = twiceTanh(tf.mul(saved, tf.add(tf.mul(x2, 0.044715 * GELU_C), GELU_C)));
        const dInner = tf.add(tf.mul(x2, 3 * 0.044715 * GELU_C), GELU_C);
        return tf.mul(dy, tf.add(tf.mul(tf.add(t, 1), 0.5), tf.mul(tf.mul(saved, 0.5), tf.mul(tf.sub(1, tf.square(t)), dInner))));
      },
    };
  }) as <T extends TF.Tensor>(x: T) => T;
  const activations: TwiceDifferentiableActivations = {
    softmax: recomputing(
      (x) => tf.softmax(x),
      (dy, y) => tf.mul(y, tf.sub(dy, tf.sum(tf.mul(dy, y), -1, true))),
    ),
    tanh: twiceTanh,
    // One op on the tape (its 9 forward ops are not recorded); the backward is its closed-form derivative
    // 0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²), t recomputed with the tanh above.
    gelu: recomputingGelu,
    // One op on the tape with a closed-form backward (dx = (g·dy − mean(g·dy) − x̂·mean(g·dy·x̂))/σ) instead
    // of the ~9 forward ops and their ~35 gradient ops: under the regularizer's nested tape every one of
    // those is recorded again and differentiated a second time. The backward recomputes x̂ and σ from the
    // saved input, so it is itself a function of x and g the outer tape can differentiate.
    layerNorm: tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
      const [x, g, b] = args as TF.Tensor[];
      (args[3] as TF.GradSaveFunc)([x, g]);
      const normalize = (t: TF.Tensor) => {
        const centered = tf.sub(t, tf.mean(t, -1, true));
        const scale = tf.sqrt(tf.add(tf.mean(tf.square(centered), -1, true), LN_EPSILON));
        return { normalized: tf.div(centered, scale), scale };
      };
      return {
        value: tf.add(tf.mul(normalize(x).normalized, g), b),
        gradFunc: (dy: TF.Tensor, [savedX, savedG]: TF.Tensor[]) => {
          const { normalized, scale } = normalize(savedX);
          const gdy = tf.mul(dy, savedG);
          const dx = tf.div(tf.sub(tf.sub(gdy, tf.mean(gdy, -1, true)), tf.mul(normalized, tf.mean(tf.mul(gdy, normalized), -1, true))), scale);
          return [dx, tf.sum(tf.mul(dy, normalized), 0), tf.sum(dy, 0)];
        },
      };
    }) as (x: TF.Tensor2D, g: TF.Tensor1D, b: TF.Tensor1D) => TF.Tensor2D,
  };
  activationsCache.set(tf, activations);
  return activations;
}

/** One head's variables in one layer. */
export interface HeadVars {
  wq: TF.Variable; // dModel×dHead
  bq: TF.Variable; // dHead
  wk: TF.Variable; // dModel×dHead
  wv: TF.Variable; // dModel×dHead
  bv: TF.Variable; // dHead
  wo: TF.Variable; // dHead×dModel: the head's rows of the output projection
}

/** A layer's variables that belong to no head. */
export interface BlockVars {
  bo: TF.Variable; // dModel: output projection bias
  ln1g: TF.Variable;
  ln1b: TF.Variable;
  ff1w: TF.Variable; // dModel×ffn
  ff1b: TF.Variable;
  ff2w: TF.Variable; // ffn×dModel
  ff2b: TF.Variable;
  ln2g: TF.Variable;
  ln2b: TF.Variable;
}

export interface EmbeddingVars {
  tokW: TF.Variable; // cols×dModel
  tokB: TF.Variable; // dModel
  cls: TF.Variable; // dModel
  pos: TF.Variable; // (rows+1)×dModel, position 0 is [CLS]
  lnG: TF.Variable;
  lnB: TF.Variable;
  outW: TF.Variable; // dModel×classes
  outB: TF.Variable; // classes
}


const LN_EPSILON = 1e-5;
const GELU_C = Math.sqrt(2 / Math.PI);

let modelCount = 0;

export class BertEncoder extends RouterlessClassifier {
  readonly dModel: number;
  readonly dHead: number;
  readonly ffn: number;
  readonly rows: number;
  readonly cols: number;
  /** heads[l][h]: head h's variables in layer l. */
  readonly heads: HeadVars[][];
  readonly blocks: BlockVars[];
  readonly embedding: EmbeddingVars;
  private readonly activations: TwiceDifferentiableActivations;

  constructor(tf: typeof TF, config: TrainingConfig, data: TaskData) {
    if (data.kind !== 'images') throw new Error(`the bert-encoder family classifies images read row by row, not ${data.kind}`);
    if (data.rows * data.cols !== data.features) throw new Error(`image grid ${data.rows}×${data.cols} does not match ${data.features} features`);
    const { experts: heads, dModel, layers, hiddenUnits } = config.model;
    if (dModel % heads !== 0) throw new Error(`dModel ${dModel} must be a multiple of the ${heads} attention heads`);
    super(tf, config, `bert${modelCount++}`, heads, data.classes, { sharedName: 'shared', unitName: (h) => `head${h}` }, 250);
    this.dModel = dModel;
    this.dHead = dModel / heads;
    this.ffn = hiddenUnits;
    this.rows = data.rows;
    this.cols = data.cols;
    let seed = config.seed * 1000;
    const name = (n: string) => `${this.prefix}/${n}`;
    const normal = (n: string, shape: number[], std: number) => tf.variable(tf.randomNormal(shape, 0, std, 'float32', seed++), true, name(n));
    const zeros = (n: string, shape: number[]) => tf.variable(tf.zeros(shape), true, name(n));
    const ones = (n: string, shape: number[]) => tf.variable(tf.ones(shape), true, name(n));
    const [D, dh, F] = [dModel, this.dHead, hiddenUnits];
    // Variance-preserving (1/fan-in) initialization rather than BERT's N(0, 0.02): a model this small
    // trained for minutes needs signal through every layer from the first step.
    this.embedding = {
      tokW: normal('embed/tokens/w', [this.cols, D], Math.sqrt(1 / this.cols)),
      tokB: zeros('embed/tokens/b', [D]),
      cls: normal('embed/cls', [D], 1),
      pos: normal('embed/positions', [this.rows + 1, D], 0.1),
      lnG: ones('embed/ln/g', [D]),
      lnB: zeros('embed/ln/b', [D]),
      outW: normal('classifier/w', [D, this.classes], Math.sqrt(1 / D)),
      outB: zeros('classifier/b', [this.classes]),
    };
    this.heads = [];
    this.blocks = [];
    for (let l = 0; l < layers; l++) {
      this.heads.push(
        Array.from({ length: heads }, (_, h) => ({
          wq: normal(`head${h}/layer${l}/wq`, [D, dh], Math.sqrt(1 / D)),
          bq: zeros(`head${h}/layer${l}/bq`, [dh]),
          wk: normal(`head${h}/layer${l}/wk`, [D, dh], Math.sqrt(1 / D)),
          wv: normal(`head${h}/layer${l}/wv`, [D, dh], Math.sqrt(1 / D)),
          bv: zeros(`head${h}/layer${l}/bv`, [dh]),
          wo: normal(`head${h}/layer${l}/wo`, [dh, D], Math.sqrt(1 / D)),
        })),
      );
      this.blocks.push({
        bo: zeros(`layer${l}/attention/bo`, [D]),
        ln1g: ones(`layer${l}/ln1/g`, [D]),
        ln1b: zeros(`layer${l}/ln1/b`, [D]),
        ff1w: normal(`layer${l}/ffn/w1`, [D, F], Math.sqrt(2 / D)),
        ff1b: zeros(`layer${l}/ffn/b1`, [F]),
        ff2w: normal(`layer${l}/ffn/w2`, [F, D], Math.sqrt(1 / F)),
        ff2b: zeros(`layer${l}/ffn/b2`, [D]),
        ln2g: ones(`layer${l}/ln2/g`, [D]),
        ln2b: zeros(`layer${l}/ln2/b`, [D]),
      });
    }
    this.activations = twiceDifferentiableActivations(tf);
  }

  /** Layer norm over the last axis (twiceDifferentiableActivations: one op with a compact backward). */
  private layerNorm(x: T2, g: TF.Variable, b: TF.Variable): T2 {
    return this.activations.layerNorm(x, g as unknown as TF.Tensor1D, b as unknown as TF.Tensor1D);
  }

  /** GELU, tanh form (twiceDifferentiableActivations: one op with a closed-form backward). */
  private gelu(x: T2): T2 {
    return this.activations.gelu(x);
  }

  /** Logits [b, classes] of images x [b, rows·cols]; a pruned head's variables are replaced by zeros in every layer. */
  logits(x: TF.Tensor, pruned: ReadonlySet<number> = new Set(), softMask?: TF.Tensor1D): T2 {
    return this.tf.tidy(() => this.forward(x, pruned, softMask));
  }

  /**
   * The encoder; with `tapped`, zero taps are added after each layer's joint query|key|value projection
   * and after its output projection (tapped.taps, 2 per layer, in that order) and the inputs of those projections are kept in
   * tapped.inputs (per layer: the block input h, then the heads' merged outputs), for probeJacobians.
   */
  private forward(x: TF.Tensor, pruned: ReadonlySet<number>, softMask: TF.Tensor1D | undefined, tapped?: { taps: TF.Tensor[]; inputs: TF.Tensor[] }): T2 {
    const tf = this.tf;
    const [b, T, D, H, dh] = [x.shape[0], this.rows + 1, this.dModel, this.units, this.dHead];
    const tap = (t: TF.Tensor, l: number, k: number) => (tapped ? tf.add(t, tapped.taps[2 * l + k]) : t);
    const e = this.embedding;
    const tokens = tf.reshape(tf.add(tf.matMul(tf.reshape(x, [b * this.rows, this.cols]) as T2, e.tokW as unknown as T2), e.tokB), [b, this.rows, D]);
    const cls = tf.tile(tf.reshape(e.cls, [1, 1, D]), [b, 1, 1]);
    let h = this.layerNorm(tf.reshape(tf.add(tf.concat([cls, tokens], 1), e.pos), [b * T, D]) as T2, e.lnG, e.lnB);
    this.heads.forEach((heads, l) => {
      const blk = this.blocks[l];
      // All heads in one matmul: their matrices side by side, zeros in a pruned head's place.
      const side = (pick: (v: HeadVars) => TF.Variable, axis: number) => tf.concat(heads.map((v, k) => (pruned.has(k) ? tf.zerosLike(pick(v)) : pick(v))), axis);
      const split = (t: TF.Tensor) => tf.transpose(tf.reshape(t, [b, T, H, dh]), [0, 2, 1, 3]); // [b, H, T, dh]
      // Queries, keys and values of all heads in one matmul and one tap: [W_q | W_k | W_v], each all heads
      // side by side; the keys' bias is an exact zero (there is no key bias).
      const pickAll = (picks: ((v: HeadVars) => TF.Variable)[]) => picks.flatMap((pick) => heads.map((v, k) => (pruned.has(k) ? tf.zerosLike(pick(v)) : pick(v))));
      const projections = tf.concat(pickAll([(v) => v.wq, (v) => v.wk, (v) => v.wv]), 1) as T2;
      const biases = tf.concat([...pickAll([(v) => v.bq]), tf.zeros([H * dh]), ...pickAll([(v) => v.bv])], 0);
      const [q, k, v] = tf.split(tap(tf.add(tf.matMul(h, projections), biases), l, 0), 3, 1).map(split);
      const attention = this.activations.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)));
      const merged = tf.reshape(tf.transpose(tf.matMul(attention, v), [0, 2, 1, 3]), [b * T, H * dh]) as T2;
      tapped?.inputs.push(tf.keep(h), tf.keep(merged));
      // The pruning gate's soft mask scales head k's rows of W_o: its output before the merge.
      const wo = softMask ? tf.concat(heads.map((v, k) => tf.mul(pruned.has(k) ? tf.zerosLike(v.wo) : v.wo, tf.slice(softMask, [k], [1]))), 0) : side((v) => v.wo, 0);
      const attended = tf.add(tap(tf.matMul(merged, wo as T2), l, 1), blk.bo) as T2;
      h = this.layerNorm(tf.add(h, attended) as T2, blk.ln1g, blk.ln1b);
      const ff = tf.add(tf.matMul(this.gelu(tf.add(tf.matMul(h, blk.ff1w as unknown as T2), blk.ff1b) as T2), blk.ff2w as unknown as T2), blk.ff2b) as T2;
      h = this.layerNorm(tf.add(h, ff) as T2, blk.ln2g, blk.ln2b);
    });
    const clsOut = tf.reshape(tf.slice(tf.reshape(h, [b, T, D]), [0, 0, 0], [b, 1, D]), [b, D]) as T2;
    return tf.add(tf.matMul(clsOut, e.outW as unknown as T2), e.outB) as T2;
  }

  /**
   * Every head's per-sample Jacobian rows [heads, b, p_head] from one tapped forward pass and one
   * backward pass to the taps (δ = ∂s/∂tap, `backToTaps`): each of a head's matrices enters as a linear
   * map y = a·W, so ∂s_i/∂W = Σ_t a_{i,t} ⊗ δ_{i,t} (t over the example's tokens; examples do not
   * interact) and ∂s_i/∂b = Σ_t δ_{i,t}. Columns are ordered per layer [W_q|W_k|W_v rows of each input
   * dimension, b_q|b_v, W_o], a fixed permutation of the head's parameters (K = J·Jᵀ does not see it).
   */
  protected probeJacobians(x: TF.Tensor, pruned: ReadonlySet<number>, backToTaps: BackToTaps): TF.Tensor3D {
    const tf = this.tf;
    const [b, T, D, H, dh, L] = [x.shape[0], this.rows + 1, this.dModel, this.units, this.dHead, this.heads.length];
    const inputs: TF.Tensor[] = [];
    const taps = Array.from({ length: L }, () => [tf.zeros([b * T, 3 * H * dh]), tf.zeros([b * T, D])]).flat();
    const deltas = backToTaps((t) => this.forward(x, pruned, undefined, { taps: t, inputs }), taps);
    const blocks: TF.Tensor[] = [];
    for (let l = 0; l < L; l++) {
      const [dqkv, dOut] = deltas.slice(2 * l, 2 * l + 2);
      const [h, merged] = inputs.slice(2 * l, 2 * l + 2);
      const byToken = (t: TF.Tensor, width: number) => tf.reshape(t, [b, T, width]);
      // [b, D, (q|k|v), H, dh] → [H, b, D·3·dh]
      const qkv = tf.matMul(byToken(h, D) as TF.Tensor3D, byToken(dqkv, 3 * H * dh) as TF.Tensor3D, true, false);
      blocks.push(tf.reshape(tf.transpose(tf.reshape(qkv, [b, D, 3, H, dh]), [3, 0, 1, 2, 4]), [H, b, 3 * D * dh]));
      const summed = tf.sum(tf.reshape(dqkv, [b, T, 3, H, dh]), 1); // [b, (q|k|v), H, dh]; the keys have no bias
      const biases = tf.concat([tf.slice(summed, [0, 0, 0, 0], [b, 1, H, dh]), tf.slice(summed, [0, 2, 0, 0], [b, 1, H, dh])], 1);
      blocks.push(tf.reshape(tf.transpose(biases, [2, 0, 1, 3]), [H, b, 2 * dh]));
      // W_o's rows of head k read the head's merged output: [b, H·dh, D] → [H, b, dh·D]
      const out = tf.matMul(byToken(merged, H * dh) as TF.Tensor3D, byToken(dOut, D) as TF.Tensor3D, true, false);
      blocks.push(tf.transpose(tf.reshape(out, [b, H, dh * D]), [1, 0, 2]));
    }
    tf.dispose(inputs);
    return tf.concat(blocks, 2) as TF.Tensor3D;
  }

  /**
   * Π_l ‖W_v^l‖·‖W_o^l‖: for fixed attention weights the head's path x ↦ A·x·W_v·W_o is linear in its
   * input, and A is row-stochastic; the query/key path only reweights. An estimate, not a bound: it
   * leaves out ‖A‖, the residual stream and the layer norms.
   */
  protected spectralLipschitz(id: number): number {
    return this.heads.reduce(
      (a, layer, l) =>
        a *
        [layer[id].wv, layer[id].wo].reduce((b, w, k) => b * spectralNormProduct([{ key: `head${id}/layer${l}/${k ? 'wo' : 'wv'}`, matrix: { data: w.dataSync(), rows: w.shape[0], cols: w.shape[1] as number } }], this.spectral), 1),
      1,
    );
  }

  /** Head h's variables, layer by layer: [wq, bq, wk, wv, bv, wo] per layer. */
  headVars(h: number): TF.Variable[] {
    return this.heads.flatMap((layer) => {
      const v = layer[h];
      return [v.wq, v.bq, v.wk, v.wv, v.bv, v.wo];
    });
  }

  unitVars(h: number): TF.Variable[] {
    return this.headVars(h);
  }

  /** Everything that belongs to no head: embeddings, output bias, layer norms, FFNs, classifier. */
  sharedVars(): TF.Variable[] {
    return [...Object.values(this.embedding), ...this.blocks.flatMap((b) => Object.values(b) as TF.Variable[])];
  }
}
