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
// The regularizer takes the gradient of a gradient: softmax, GELU and layer norm come from
// twiceDifferentiable.ts (tfjs 4.22 silently drops second derivatives through saved outputs).
import type * as TF from '@tensorflow/tfjs';
import type { TrainingConfig } from '../../protocol';
import { spectralNormProduct } from '../pl';
import { RouterlessClassifier, type BackToTaps } from './routerlessClassifier';
import { readInPlace, readRange, readRows, tensorFilledBy, tensorFromRows } from '../engine/readRows';
import { loadNativeBlas } from '../engine/native';
import { HostScratch, hostElementwise, hostGeluDerivativeAdjoint, hostGeluDerivatives, hostLayerNormBackward, hostLayerNormBackwardAdjoint, hostProduct, keptForBackward, nativeHostProducts, runsOnHost, twiceDifferentiableActivations, type TwiceDifferentiableActivations } from './twiceDifferentiable';
import type { TaskData } from './types';

type T2 = TF.Tensor2D;


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


let modelCount = 0;

/**
 * One layer's inputs of its tapped maps (block input h, the heads' merged output) and δ at its two taps.
 * With `clsOnly` (the last layer of the hand-written backward), `merged` and `dOut` hold the [CLS] rows
 * alone ([b, ·]): δ at the output projection is exactly zero at every other token.
 */
export interface LayerDeltas {
  h: TF.Tensor;
  merged: TF.Tensor;
  dqkv: TF.Tensor;
  dOut: TF.Tensor;
  clsOnly?: boolean;
}

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
  /** δ at the taps by the tape (nested tf.grads) instead of the hand-written backward: the tests' reference. */
  deltasByTape = false;
  /** Layer maps built once per step (layerMaps), between beginStep and endStep. */
  private stepMaps: Map<string, TF.Tensor> | undefined;
  /** What the hand-written backward's ops keep for the step's backward pass (their `hold`), disposed in endStep. */
  private stepHeld: TF.Tensor[] | undefined;
  /** ffnBlockBackward's working arrays per layer, reused from step to step (HostScratch: no garbage a step). */
  private readonly ffnScratch: HostScratch[] = [];

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

  /** [CLS] rows [b, W] placed in token-major rows [b·T, W], zeros at every other token. */
  private atCls(t: T2, b: number): T2 {
    const tf = this.tf;
    const W = t.shape[1];
    return tf.reshape(tf.pad(tf.reshape(t, [b, 1, W]), [[0, 0], [0, this.rows], [0, 0]]), [b * (this.rows + 1), W]) as T2;
  }

  /** atCls' inverse: the [CLS] rows [n, D] of token-major rows [n·T, D] (n examples). */
  private clsRows(t: TF.Tensor, n: number): T2 {
    const tf = this.tf;
    const [T, D] = [this.rows + 1, this.dModel];
    return tf.reshape(tf.slice(tf.reshape(t, [n, T, D]), [0, 0, 0], [n, 1, D]), [n, D]) as T2;
  }

  /**
   * [b·T, 3·H·dh] (q|k|v side by side, each all heads side by side) → q, k, v [b, H, T, dh]. The parts
   * are split as [b, 3, H·T·dh], where each example's part is one contiguous run (split and its
   * gradient, concat, copy b runs per part instead of b·H·T runs of dh).
   */
  private splitHeads(t: T2, b: number): TF.Tensor4D[] {
    const tf = this.tf;
    const [T, H, dh] = [this.rows + 1, this.units, this.dHead];
    const heads = tf.transpose(tf.reshape(t, [b, T, 3 * H, dh]), [0, 2, 1, 3]);
    return tf.split(tf.reshape(heads, [b, 3, H * T * dh]), 3, 1).map((p) => tf.reshape(p, [b, H, T, dh]) as TF.Tensor4D);
  }

  /** The heads' outputs [b, H, T, dh] → [b·T, H·dh]. */
  private mergeHeads(heads: TF.Tensor, b: number): T2 {
    const tf = this.tf;
    const [T, H, dh] = [this.rows + 1, this.units, this.dHead];
    return tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [b * T, H * dh]) as T2;
  }

  /** Embedding: [CLS] and the row tokens, positions, layer norm: the first block's input [b·T, D]. */
  private embed(x: TF.Tensor): T2 {
    const tf = this.tf;
    const [b, T, D] = [x.shape[0], this.rows + 1, this.dModel];
    const e = this.embedding;
    const tokens = tf.reshape(tf.add(tf.matMul(tf.reshape(x, [b * this.rows, this.cols]) as T2, e.tokW as unknown as T2), e.tokB), [b, this.rows, D]);
    // [CLS] enters as a zero token whose position row carries it (broadcast over the batch: tf.tile's
    // gradient is a slice and an add per example).
    const clsAndPositions = tf.add(tf.pad(tf.reshape(e.cls, [1, D]), [[0, T - 1], [0, 0]]), e.pos);
    return this.layerNorm(tf.reshape(tf.add(tf.pad(tokens, [[0, 0], [1, 0], [0, 0]]), clsAndPositions), [b * T, D]) as T2, e.lnG, e.lnB);
  }

  /**
   * Layer l's head-owned linear maps with all heads side by side, zeros in a pruned head's place:
   * [W_q | W_k | W_v] [D, 3·H·dh] with its bias (the keys' an exact zero: there is no key bias), and W_o
   * [H·dh, D], its head k rows scaled by the soft mask's entry k when there is one.
   */
  private layerMaps(l: number, pruned: ReadonlySet<number>, softMask?: TF.Tensor1D): { projections: T2; biases: TF.Tensor1D; wo: T2 } {
    const tf = this.tf;
    const heads = this.heads[l];
    const H = this.units;
    const pickAll = (picks: ((v: HeadVars) => TF.Variable)[]) => picks.flatMap((pick) => heads.map((v, k) => (pruned.has(k) ? tf.zerosLike(pick(v)) : pick(v))));
    // Within a step the batch pass and the probe pass build the same side-by-side tensors: once (stepMaps).
    const shared = <T extends TF.Tensor>(what: string, make: () => T): T => {
      if (!this.stepMaps) return make();
      const key = `${l}/${what}/${[...pruned].sort((a, c) => a - c).join(',')}`;
      let t = this.stepMaps.get(key) as T | undefined;
      if (!t) this.stepMaps.set(key, (t = tf.keep(make())));
      return t;
    };
    const projections = shared('qkv', () => tf.concat(pickAll([(v) => v.wq, (v) => v.wk, (v) => v.wv]), 1) as T2);
    const biases = shared('bias', () => tf.concat([...pickAll([(v) => v.bq]), tf.zeros([H * this.dHead]), ...pickAll([(v) => v.bv])], 0) as TF.Tensor1D);
    // The pruning gate's soft mask scales head k's rows of W_o: its output before the merge (per pass, not shared).
    const wo = softMask ? tf.concat(heads.map((v, k) => tf.mul(pruned.has(k) ? tf.zerosLike(v.wo) : v.wo, tf.slice(softMask, [k], [1]))), 0) : shared('wo', () => tf.concat(pickAll([(v) => v.wo]), 0));
    return { projections, biases, wo: wo as T2 };
  }

  protected override beginStep(): void {
    this.endStep();
    this.stepMaps = new Map();
    this.stepHeld = [];
  }

  protected override endStep(): void {
    if (this.stepMaps) this.tf.dispose([...this.stepMaps.values()]);
    if (this.stepHeld) this.tf.dispose(this.stepHeld);
    this.stepMaps = undefined;
    this.stepHeld = undefined;
  }


  /**
   * The encoder; with `tapped`, zero taps are added after each layer's joint query|key|value projection
   * and after its output projection (tapped.taps, 2 per layer, in that order) and the inputs of those projections are kept in
   * tapped.inputs (per layer: the block input h, then the heads' merged outputs): the tape's way to δ
   * (tapeDeltas), the reference of the hand-written backward (handDeltas).
   */
  private forward(x: TF.Tensor, pruned: ReadonlySet<number>, softMask: TF.Tensor1D | undefined, tapped?: { taps: TF.Tensor[]; inputs: TF.Tensor[] }): T2 {
    const tf = this.tf;
    const [b, H, dh] = [x.shape[0], this.units, this.dHead];
    const tap = (t: TF.Tensor, l: number, k: number) => (tapped ? tf.add(t, tapped.taps[2 * l + k]) : t);
    let h = this.embed(x);
    this.heads.forEach((_, l) => {
      const blk = this.blocks[l];
      // Only [CLS] reaches the logits: after the last layer's keys and values everything runs on its row
      // alone, as in the regularized step's joint pass (the tapped reference keeps every token).
      const last = !tapped && l === this.heads.length - 1;
      // Queries, keys and values of all heads in one matmul and one tap.
      const { projections, biases, wo } = this.layerMaps(l, pruned, softMask);
      const [qAll, k, v] = this.splitHeads(tap(tf.add(tf.matMul(h, projections), biases), l, 0) as T2, b);
      const q = last ? (tf.slice(qAll, [0, 0, 0, 0], [b, H, 1, dh]) as TF.Tensor4D) : qAll;
      const attention = this.activations.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)));
      // One query row per head: [b, H, 1, dh] is already [b, H·dh] in memory.
      const merged = last ? (tf.reshape(tf.matMul(attention, v), [b, H * dh]) as T2) : this.mergeHeads(tf.matMul(attention, v), b);
      tapped?.inputs.push(tf.keep(h), tf.keep(merged));
      const attended = tf.add(tap(tf.matMul(merged, wo), l, 1), blk.bo) as T2;
      h = this.layerNorm(tf.add(last ? this.clsRows(h, b) : h, attended) as T2, blk.ln1g, blk.ln1b);
      const ff = tf.add(tf.matMul(this.gelu(tf.add(tf.matMul(h, blk.ff1w as unknown as T2), blk.ff1b) as T2), blk.ff2w as unknown as T2), blk.ff2b) as T2;
      h = this.layerNorm(tf.add(h, ff) as T2, blk.ln2g, blk.ln2b);
    });
    // Untapped, h is already the last layer's [CLS] rows [b, D].
    const clsOut = tapped ? this.clsRows(h, b) : h;
    return tf.add(tf.matMul(clsOut, this.embedding.outW as unknown as T2), this.embedding.outB) as T2;
  }

  /** δ at every tap by the tape: tfjs's gradients of the tapped forward (`backToTaps`, a nested tf.grads). */
  private tapeDeltas(x: TF.Tensor, pruned: ReadonlySet<number>, backToTaps: BackToTaps): LayerDeltas[] {
    const tf = this.tf;
    const [b, T, D, H, dh, L] = [x.shape[0], this.rows + 1, this.dModel, this.units, this.dHead, this.heads.length];
    const inputs: TF.Tensor[] = [];
    const taps = Array.from({ length: L }, () => [tf.zeros([b * T, 3 * H * dh]), tf.zeros([b * T, D])]).flat();
    const deltas = backToTaps((t) => this.forward(x, pruned, undefined, { taps: t, inputs }), taps);
    return Array.from({ length: L }, (_, l) => ({ h: inputs[2 * l], merged: inputs[2 * l + 1], dqkv: deltas[2 * l], dOut: deltas[2 * l + 1] }));
  }

  /**
   * δ at every tap by a hand-written backward pass (docs/method.md, "The hand-written backward to the
   * taps"): the probe's forward with its intermediates kept, u from its logits (`directions`), then the
   * chain rule layer by layer in reverse with explicit ops (layer norm, GELU and softmax in closed
   * form, the linear maps' transposes). The same δ as tapeDeltas, with no inner tape: written with
   * differentiable ops, so the outer gradient (the regularizer's) differentiates it once, and follows u.
   */
  private handDeltas(x: TF.Tensor, pruned: ReadonlySet<number>, directions: (z: T2) => T2, batch?: { x: TF.Tensor; logits?: T2 }): LayerDeltas[] {
    const tf = this.tf;
    const act = this.activations;
    // With `batch`, the forward runs over [batch; probe] (batch.logits gets the batch's rows) and the
    // backward over the probe's rows alone: every kept intermediate is cut to them (one contiguous run each).
    const B = batch ? batch.x.shape[0] : 0;
    const [b, T, D, H, dh, L] = [x.shape[0], this.rows + 1, this.dModel, this.units, this.dHead, this.heads.length];
    const all = B + b;
    const scale = 1 / Math.sqrt(dh);
    const maps = this.heads.map((_, l) => this.layerMaps(l, pruned));
    // Inside a step, the once-differentiable ops keep what their backward reads by reference (no clones).
    const hold = this.stepHeld;
    const mat = (v: TF.Variable) => v as unknown as T2;
    const vec = (v: TF.Variable) => v as unknown as TF.Tensor1D;
    interface Saved {
      h: T2;
      q: TF.Tensor4D;
      k: TF.Tensor4D;
      v: TF.Tensor4D;
      attention: TF.Tensor4D;
      merged: T2;
      // The layer norms' inputs and the FFN's pre-activation over [batch; probe] (token rows, or [CLS]
      // rows in the last layer) with the probe's first row: GELU′ and layer norm's backward read the
      // probe's rows themselves (on the host: no slice op, and no pad in its gradient).
      r1: T2;
      pre: T2;
      r2: T2;
      probeFrom: number;
      // The probe's first example in q, k, v and attention (the joint tensors, or 0: their probe rows).
      attentionFrom: number;
    }
    const saved: Saved[] = [];
    // The probe's rows of a kept intermediate: token rows [b·T, ·] or examples [b, …].
    // As one op whose gradient pads (tf.slice's saves a clone of the whole joint tensor for its shape).
    const probeRows = <R extends TF.Tensor>(t: R, perExample: number): R => {
      if (!B) return t;
      const [rows, ...rest] = t.shape;
      return (
        tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => ({
          value: tf.slice(args[0] as TF.Tensor, [B * perExample, ...rest.map(() => 0)], [b * perExample, ...rest]),
          gradFunc: (dy: TF.Tensor) => tf.pad(dy, [[B * perExample, rows - (B + b) * perExample], ...rest.map((): [number, number] => [0, 0])]),
        })) as (x: TF.Tensor) => TF.Tensor
      )(t) as R;
    };
    let h = this.embed(batch ? tf.concat([batch.x, x], 0) : x);
    for (let l = 0; l < L; l++) {
      const blk = this.blocks[l];
      const { projections, biases, wo } = maps[l];
      // Only [CLS] reaches the logits: after the last layer's keys and values everything runs on its row
      // alone (its query, attention row, W_o, layer norms, FFN); the other tokens' outputs are never read.
      const last = l === L - 1;
      const [qAll, k, v] = this.splitHeads(act.affine(h, projections, { bias: biases, hold }), all);
      const q = last ? (tf.slice(qAll, [0, 0, 0, 0], [all, H, 1, dh]) as TF.Tensor4D) : qAll;
      const attention = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale)) as TF.Tensor4D;
      // One query row per head: [all, H, 1, dh] is already [all, H·dh] in memory.
      const merged = last ? (tf.reshape(tf.matMul(attention, v), [all, H * dh]) as T2) : this.mergeHeads(tf.matMul(attention, v), all);
      const r1 = act.affine(merged, wo, { bias: vec(blk.bo), residual: last ? this.clsRows(h, all) : h, hold });
      const h1 = act.layerNorm(r1, vec(blk.ln1g), vec(blk.ln1b));
      const pre = act.affine(h1, mat(blk.ff1w), { bias: vec(blk.ff1b), hold });
      const r2 = act.affine(act.gelu(pre), mat(blk.ff2w), { bias: vec(blk.ff2b), residual: h1, hold });
      // The host's attentionBackward ([CLS]'s query) reads the probe's examples of the joint tensors itself.
      const whole = attentionBackwardOnHost(tf, { b, T, H, dh }, q.shape[2]);
      const attentionInput = <R extends TF.Tensor>(t: R): R => (whole ? t : probeRows(t, 1));
      saved.push({
        h: probeRows(h, T),
        q: attentionInput(q),
        k: attentionInput(k),
        v: attentionInput(v),
        attention: attentionInput(attention),
        attentionFrom: whole ? B : 0,
        merged: probeRows(merged, last ? 1 : T),
        r1,
        pre,
        r2,
        probeFrom: B * (last ? 1 : T),
      });
      h = act.layerNorm(r2, vec(blk.ln2g), vec(blk.ln2b));
    }
    const e = this.embedding;
    // h is the last layer's [CLS] rows [all, D].
    const z = act.affine(h, mat(e.outW), { bias: vec(e.outB), hold });
    if (batch) batch.logits = tf.slice(z, [0, 0], [B, this.classes]);
    const U = directions(probeRows(z, 1));
    // The FFN half of a block and both layer norms as one host op where they fit (ffnBlockOnHost; the last
    // layer's [CLS] rows from U itself), then for the last layer W_o's backward and [CLS]'s attention as another.
    const ffnOnHost = (l: number) => ffnBlockOnHost(tf, l === L - 1 ? b : b * T, D, this.ffn);
    // ∂s/∂h at the last layer's output: u·W_outᵀ at [CLS] ([b, D]; zero at every other token).
    let dh2 = ffnOnHost(L - 1) ? undefined : (tf.matMul(U, mat(e.outW), false, true) as T2);
    const out: LayerDeltas[] = new Array(L);
    for (let l = L - 1; l >= 0; l--) {
      const blk = this.blocks[l];
      const s = saved[l];
      const last = l === L - 1;
      let dr1: T2;
      if (ffnOnHost(l)) {
        const upstream = dh2 ? { dh: dh2 } : { U, outW: mat(e.outW) };
        dr1 = ffnBlockBackward(tf, { upstream, r2: s.r2, ln2g: vec(blk.ln2g), ff2w: mat(blk.ff2w), pre: s.pre, ff1w: mat(blk.ff1w), r1: s.r1, ln1g: vec(blk.ln1g) }, s.probeFrom, (this.ffnScratch[l] ??= new HostScratch()));
      } else {
        const dr2 = act.layerNormBackward(s.r2, vec(blk.ln2g), dh2!, hold, s.probeFrom);
        const dPre = act.geluDerivative(s.pre, hold, act.affine(dr2, mat(blk.ff2w), { transposeW: true, hold }), s.probeFrom);
        dr1 = act.layerNormBackward(s.r1, vec(blk.ln1g), act.affine(dPre, mat(blk.ff1w), { residual: dr2, transposeW: true, hold }), hold, s.probeFrom);
      }
      // The output projection's tap sees dr1; the heads' merged output dr1·W_oᵀ (with [CLS]'s attention on the host: one op).
      const onHost = last && attentionBackwardOnHost(tf, { b, T, H, dh }, 1) && nativeHostProducts();
      const dqkv = onHost
        ? clsAttentionBackwardFromOutput(tf, { b, T, H, dh, scale }, dr1, maps[l].wo, s.attention, s.q, s.k, s.v, s.attentionFrom)
        : attentionBackward(tf, { b, T, H, dh, scale }, act.affine(dr1, maps[l].wo, { transposeW: true, hold }), s.attention, s.q, s.k, s.v, hold, s.attentionFrom);
      out[l] = { h: s.h, merged: s.merged, dqkv, dOut: dr1, clsOnly: last };
      if (l > 0) dh2 = act.affine(dqkv, maps[l].projections, { residual: last ? this.atCls(dr1, b) : dr1, transposeW: true, hold });
    }
    return out;
  }

  /**
   * Every head's per-sample Jacobian rows [heads, b, p_head] from one forward pass and one backward
   * pass to the taps (δ = ∂s/∂tap: handDeltas, or tapeDeltas with `backToTaps`): each of a head's matrices enters as a linear
   * map y = a·W, so ∂s_i/∂W = Σ_t a_{i,t} ⊗ δ_{i,t} (t over the example's tokens; examples do not
   * interact) and ∂s_i/∂b = Σ_t δ_{i,t}. Columns per layer: W_q|W_k|W_v with their biases (b_q|0|b_v),
   * then W_o (headJacobians), a fixed permutation of the head's parameters plus dh zero columns where a
   * key bias would be (K = J·Jᵀ sees neither).
   */
  protected probeJacobians(x: TF.Tensor, pruned: ReadonlySet<number>, backToTaps: BackToTaps, directions: (z: T2) => T2): TF.Tensor3D {
    const layers = this.deltasByTape ? this.tapeDeltas(x, pruned, backToTaps) : this.handDeltas(x, pruned, directions);
    const J = this.assembleJacobians(layers, x.shape[0]);
    if (this.deltasByTape) this.tf.dispose(layers.flatMap((d) => [d.h, d.merged]));
    return J;
  }

  /**
   * The regularized step's batch and probe in one forward pass (RouterlessClassifier.jointJacobians):
   * handDeltas over [batch; probe], its backward over the probe's rows.
   */
  protected override jointJacobians(batchX: TF.Tensor, probeX: TF.Tensor, pruned: ReadonlySet<number>, directions: (z: T2) => T2): { logits: T2; J: TF.Tensor3D } | undefined {
    if (this.deltasByTape) return undefined;
    const batch: { x: TF.Tensor; logits?: T2 } = { x: batchX };
    const J = this.assembleJacobians(this.handDeltas(probeX, pruned, directions, batch), probeX.shape[0]);
    return { logits: batch.logits!, J };
  }

  /** J [heads, b, p_head] from each layer's tapped-map inputs and δ (probeJacobians): headJacobians, holding for the step. */
  private assembleJacobians(layers: LayerDeltas[], b: number): TF.Tensor3D {
    return headJacobians(this.tf, { b, T: this.rows + 1, D: this.dModel, H: this.units, dh: this.dHead }, layers, this.stepHeld);
  }

  /**
   * δ = ∂(Σ_i u_iᵀ logits(x_i))/∂tap at every tap, u the rows of U [b, classes] (held), read back per
   * layer as [δ at q|k|v [b·T, 3·H·dh], δ at the output projection [b·T, D]]: by the hand-written
   * backward, or by the tape (a tf.grads of the tapped forward). For the tests.
   */
  tapDeltas(x: TF.Tensor, U: T2, pruned: ReadonlySet<number>, byTape: boolean): Float32Array[][] {
    const tf = this.tf;
    return tf.tidy(() => {
      const layers = byTape
        ? this.tapeDeltas(x, pruned, (forward, taps) => tf.grads((...t: TF.Tensor[]) => tf.sum(tf.mul(forward(t), U)))(taps))
        : this.handDeltas(x, pruned, () => U);
      const read = layers.map((d) => [d.dqkv.dataSync() as Float32Array, (d.clsOnly ? this.atCls(d.dOut as T2, x.shape[0]) : d.dOut).dataSync() as Float32Array]);
      if (byTape) tf.dispose(layers.flatMap((d) => [d.h, d.merged]));
      return read;
    });
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

/**
 * Every head's per-sample Jacobian rows J [H, b, Σ_l p_l] from each layer's tapped-map inputs and δ
 * (BertEncoder.probeJacobians) as one op with a hand-written backward: the forward's reshapes, pad,
 * products, mask, transposes and concatenation leave no tape nodes and no saved clones (with `hold`),
 * and the backward is the products' transposes. Per layer: W_q, W_k, W_v and the biases in one matmul
 * per example, δᵀ·A with A the block input and a column of ones, so the last column of [3·H·dh, D + 1]
 * is Σ_t δ_t (the biases'). The keys have no bias: that column's key rows are masked to exact zeros (it
 * is Σ_t δk_t = 0 up to rounding, since softmax ignores a shift), a zero column of J that K = J·Jᵀ does
 * not see; [b, (q|k|v), H, dh·(D + 1)] → [b, H, (q|k|v)·dh·(D + 1)]. Then W_o's rows of head k, which
 * read the head's merged output: [b, H·dh, D] is [b, H, dh·D] as it stands (clsOnly: the [CLS] rows
 * alone, δ is zero at the other tokens). One transpose to [H, b, ·] at the end. A head's columns are
 * thus a fixed permutation of its parameters (plus the zero key-bias columns): K = J·Jᵀ sees neither.
 * Backward, per example, for Gᵀ = Δᵀ·A (Δ the δ rows): ∂A = Δ·dGᵀ, ∂Δ = A·dGᵀᵀ.
 */
export function headJacobians(tf: typeof TF, dims: { b: number; T: number; D: number; H: number; dh: number }, layers: LayerDeltas[], hold?: TF.Tensor[]): TF.Tensor3D {
  if (headJacobiansOnHost(tf)) return headJacobiansHost(tf, dims, layers);
  const { b, T, D, H, dh } = dims;
  const HD = H * dh;
  const mask = new Float32Array(3 * HD * (D + 1)).fill(1);
  for (let r = HD; r < 2 * HD; r++) mask[r * (D + 1) + D] = 0;
  // Made where it is read (the forward's and the backward's own scopes dispose it).
  const keyBiasMask = () => tf.tensor2d(mask, [3 * HD, D + 1]);
  const tokens = layers.map((d) => (d.clsOnly ? 1 : T));
  const sizes = layers.flatMap(() => [3 * dh * (D + 1), dh * D]);
  const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const inputs = args.slice(0, -1) as TF.Tensor[];
    const blocks: TF.Tensor[] = [];
    const kept: TF.Tensor[] = [];
    const forwardMask = keyBiasMask();
    layers.forEach((_, l) => {
      const [h, dqkv, merged, dOut] = inputs.slice(4 * l, 4 * l + 4);
      const withOnes = tf.pad(tf.reshape(h, [b, T, D]), [[0, 0], [0, 0], [0, 1]], 1) as TF.Tensor3D;
      const deltas = tf.reshape(dqkv, [b, T, 3 * HD]) as TF.Tensor3D;
      const gT = tf.mul(tf.matMul(deltas, withOnes, true, false), forwardMask);
      blocks.push(tf.reshape(tf.transpose(tf.reshape(gT, [b, 3, H, dh * (D + 1)]), [0, 2, 1, 3]), [b, H, 3 * dh * (D + 1)]));
      const m3 = tf.reshape(merged, [b, tokens[l], HD]) as TF.Tensor3D;
      const o3 = tf.reshape(dOut, [b, tokens[l], D]) as TF.Tensor3D;
      blocks.push(tf.reshape(tf.matMul(m3, o3, true, false), [b, H, dh * D]));
      kept.push(withOnes, deltas, m3, o3);
    });
    const read = keptForBackward(tf, kept, args[args.length - 1] as TF.GradSaveFunc, hold);
    return {
      value: tf.transpose(tf.concat(blocks, 2), [1, 0, 2]),
      gradFunc: (dy: TF.Tensor, saved: TF.Tensor[]) => {
        const parts = tf.split(tf.transpose(dy, [1, 0, 2]), sizes, 2);
        const ins = read(saved) as TF.Tensor3D[];
        const backwardMask = keyBiasMask();
        return layers.flatMap((_, l) => {
          const [withOnes, deltas, m3, o3] = ins.slice(4 * l, 4 * l + 4);
          const dGT = tf.mul(tf.reshape(tf.transpose(tf.reshape(parts[2 * l], [b, H, 3, dh * (D + 1)]), [0, 2, 1, 3]), [b, 3 * HD, D + 1]), backwardMask) as TF.Tensor3D;
          const dWithOnes = tf.matMul(deltas, dGT);
          const dO = tf.reshape(parts[2 * l + 1], [b, HD, D]) as TF.Tensor3D;
          return [
            tf.reshape(tf.slice(dWithOnes, [0, 0, 0], [b, T, D]), [b * T, D]),
            tf.reshape(tf.matMul(withOnes, dGT, false, true), [b * T, 3 * HD]),
            tf.reshape(tf.matMul(o3, dO, false, true), [b * tokens[l], HD]),
            tf.reshape(tf.matMul(m3, dO), [b * tokens[l], D]),
          ];
        });
      },
    };
  }) as (...t: TF.Tensor[]) => TF.Tensor3D;
  return op(...layers.flatMap((d) => [d.h, d.dqkv, d.merged, d.dOut]));
}

/**
 * Whether headJacobians runs on the host (headJacobiansHost): on the backends whose tensors are in this
 * process's memory, where the native addon's sgemm does the products (the tf ops' 56 kernels are
 * per-kernel overhead and transposes at the bert example's sizes: 0.69 ms forward against 0.34 ms on
 * the host, and 0.3 ms of the regularized step with the backward; docs/performance.md, "Tenth pass").
 */
export function headJacobiansOnHost(tf: typeof TF): boolean {
  return hostElementwise.backends.has(tf.getBackend()) && nativeHostProducts();
}

/**
 * headJacobians as one host op: the same products, in float32 by the native sgemm (batched over the
 * examples), and the same layout, written in place instead of transposed. Per layer and example i, with
 * Ā_i = [h_i | 1] [T, D + 1] and Δ_i the δ rows [T, 3·H·dh]: G_i = Δ_iᵀ·Ā_i [3·H·dh, D + 1] (the key rows'
 * bias column zeroed), whose rows (part, head, dh) are copied to J[head, i] as (part, dh, D + 1); and
 * O_i = merged_iᵀ·dOut_i [H·dh, D], whose head rows are copied after them. Backward, from dJ gathered
 * back into dG_i and dO_i: ∂Ā_i = Δ_i·dG_i (its last column dropped), ∂Δ_i = Ā_i·dG_iᵀ, ∂merged_i =
 * dOut_i·dO_iᵀ, ∂dOut_i = merged_i·dO_i. What the gradient reads stays in the closure as host arrays.
 */
function headJacobiansHost(tf: typeof TF, dims: { b: number; T: number; D: number; H: number; dh: number }, layers: LayerDeltas[]): TF.Tensor3D {
  const { b, T, D, H, dh } = dims;
  const HD = H * dh;
  const D1 = D + 1;
  const blas = loadNativeBlas().blas!;
  const tokens = layers.map((d) => (d.clsOnly ? 1 : T));
  // Each layer's columns of a head: (q|k|v, dh, D + 1), then W_o's (dh, D).
  const layerWidth = 3 * dh * D1 + dh * D;
  const P = layers.length * layerWidth;
  const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const inputs = args.slice(0, 4 * layers.length) as TF.Tensor[];
    const kept = layers.map((_, l) => {
      const [tH, tDqkv, tMerged, tDOut] = inputs.slice(4 * l, 4 * l + 4);
      const tok = tokens[l];
      if (tH.size !== b * T * D || tDqkv.size !== b * T * 3 * HD || tMerged.size !== b * tok * HD || tDOut.size !== b * tok * D)
        throw new Error(`headJacobians: layer ${l}'s inputs do not match b ${b}, T ${T}, D ${D}, H·dh ${HD}`);
      // Ā = [h | 1] and the others, read once (ranged copies) and kept for the gradient.
      const withOnes = new Float32Array(b * T * D1);
      readInPlace(tf, tH, (h) => withOnesColumn(h, withOnes, b * T, D));
      const [dqkv, merged, dOut] = [tDqkv, tMerged, tDOut].map((t) => readRange(tf, t, 0, t.size));
      const G = new Float32Array(b * 3 * HD * D1);
      blas.gemm(dqkv, withOnes, G, b, 3 * HD, D1, T, true, false, T * 3 * HD, T * D1, null, false);
      const O = new Float32Array(b * HD * D);
      blas.gemm(merged, dOut, O, b, HD, D, tok, true, false, tok * HD, tok * D, null, false);
      return { withOnes, dqkv, merged, dOut, G, O };
    });
    const J = tensorFilledBy(tf, [H, b, P], (values) => kept.forEach((k, l) => scatterHeadColumns(values, k.G, k.O, { b, H, dh, D, P, offset: l * layerWidth }, false)));
    return {
      value: J as TF.Tensor3D,
      gradFunc: (dy: TF.Tensor) => {
        // dJ back into each layer's dG and dO (read in place: nothing allocates tensors meanwhile).
        const back = layers.map(() => ({ dG: new Float32Array(b * 3 * HD * D1), dO: new Float32Array(b * HD * D) }));
        readInPlace(tf, dy, (dJ) => back.forEach(({ dG, dO }, l) => scatterHeadColumns(dJ, dG, dO, { b, H, dh, D, P, offset: l * layerWidth }, true)));
        return layers.flatMap((_, l) => {
          const { withOnes, dqkv, merged, dOut } = kept[l];
          const { dG, dO } = back[l];
          const tok = tokens[l];
          const dWithOnes = new Float32Array(b * T * D1);
          blas.gemm(dqkv, dG, dWithOnes, b, T, D1, 3 * HD, false, false, T * 3 * HD, 3 * HD * D1, null, false);
          return [
            tensorFilledBy(tf, [b * T, D], (dH) => withoutLastColumn(dWithOnes, dH, b * T, D)),
            tensorFilledBy(tf, [b * T, 3 * HD], (dDelta) => blas.gemm(withOnes, dG, dDelta, b, T, 3 * HD, D1, false, true, T * D1, 3 * HD * D1, null, false)),
            tensorFilledBy(tf, [b * tok, HD], (dMerged) => blas.gemm(dOut, dO, dMerged, b, tok, HD, D, false, true, tok * D, HD * D, null, false)),
            tensorFilledBy(tf, [b * tok, D], (dDOut) => blas.gemm(merged, dO, dDOut, b, tok, D, HD, false, false, tok * HD, HD * D, null, false)),
          ];
        });
      },
    };
  }) as (...t: TF.Tensor[]) => TF.Tensor3D;
  return op(...layers.flatMap((d) => [d.h, d.dqkv, d.merged, d.dOut]));
}

/**
 * Between one layer's G [b, 3·H·dh, D + 1] and O [b, H·dh, D] and its columns of J [H, b, P] (from
 * `offset` in each row): each (example, part, head) is dh·(D + 1) contiguous values on both sides, each
 * (example, head) of O dh·D. Forward it writes J (the key rows' bias column of G zeroed first: Σ_t δk_t is
 * zero but for rounding, and J's column must be exactly zero); `back` reads J into G and O (the same
 * column zeroed in dG: it is not a function of the inputs).
 */
function scatterHeadColumns(J: Float32Array, G: Float32Array, O: Float32Array, at: { b: number; H: number; dh: number; D: number; P: number; offset: number }, back: boolean): void {
  const { b, H, dh, D, P, offset } = at;
  const D1 = D + 1;
  const HD = H * dh;
  const run = dh * D1;
  for (let i = 0; i < b; i++) {
    if (!back) for (let r = HD; r < 2 * HD; r++) G[(i * 3 * HD + r) * D1 + D] = 0;
    for (let h = 0; h < H; h++) {
      const row = (h * b + i) * P + offset;
      for (let part = 0; part < 3; part++) copyRun(J, row + part * run, G, (i * 3 * HD + part * HD + h * dh) * D1, run, back);
      copyRun(J, row + 3 * run, O, (i * HD + h * dh) * D, dh * D, back);
    }
    if (back) for (let r = HD; r < 2 * HD; r++) G[(i * 3 * HD + r) * D1 + D] = 0;
  }
}

/** n values between a[at …] and b[bt …]: a → b with `toB`, else b → a (typed-array set: a memcpy, faster than a loop here). */
function copyRun(a: Float32Array, at: number, b: Float32Array, bt: number, n: number, toB: boolean): void {
  if (toB) b.set(a.subarray(at, at + n), bt);
  else a.set(b.subarray(bt, bt + n), at);
}

/** [rows, D] → [rows, D + 1] with a last column of ones (Ā = [h | 1]). */
function withOnesColumn(src: Float32Array, dst: Float32Array, rows: number, D: number): void {
  for (let r = 0, s = 0, d = 0; r < rows; r++, s += D, d += D + 1) {
    for (let j = 0; j < D; j++) dst[d + j] = src[s + j];
    dst[d + D] = 1;
  }
}

/** [rows, D + 1] → [rows, D]. */
function withoutLastColumn(src: Float32Array, dst: Float32Array, rows: number, D: number): void {
  for (let r = 0, s = 0, d = 0; r < rows; r++, s += D + 1, d += D) for (let j = 0; j < D; j++) dst[d + j] = src[s + j];
}

/**
 * The attention's backward pass to its queries, keys and values as one op (BertEncoder's hand-written
 * backward): from δ at the heads' merged output dMerged ([b·T, H·dh], or [b, H·dh] when only [CLS]'s
 * query is read: A [b, H, 1, T], q [b, H, 1, dh]), with A = softmax(scale·q·kᵀ) and o = A·v per head:
 * dO = dMerged per head, dA = dO·vᵀ, dS = scale·A⊙(dA − Σ_last A⊙dA) (softmax's backward), dq = dS·k
 * (zero at queries that are not read), dk = dSᵀ·q, dv = Aᵀ·dO, merged as [b·T, (q|k|v)·H·dh]. Its
 * gradient, for an upstream W = (W_q, W_k, W_v): ω = ∂/∂dS = W_q·kᵀ + q·W_kᵀ, ∂k = dSᵀ·W_q, ∂q = dS·W_k;
 * through softmax's backward with ω̃ = scale·(ω − Σ_last ω⊙A): ∂dA = A⊙ω̃, ∂A = ω̃⊙dA − scale·ω·Σ_last A⊙dA
 * + dO·W_vᵀ; ∂dO = A·W_v + ∂dA·v, ∂v = ∂dAᵀ·dO. Once differentiable; no tape nodes or clones inside
 * (with `hold`, see twiceDifferentiable.ts). For [CLS]'s query alone, small, on the host
 * (attentionBackwardOnHost), where A, q, k and v may be a joint pass's tensors whose examples from
 * `fromExample` on are the b read (the tf ops read all of them: fromExample 0).
 */
export function attentionBackward(
  tf: typeof TF,
  dims: { b: number; T: number; H: number; dh: number; scale: number },
  dMerged: T2,
  A: TF.Tensor4D,
  q: TF.Tensor4D,
  k: TF.Tensor4D,
  v: TF.Tensor4D,
  hold?: TF.Tensor[],
  fromExample = 0,
): T2 {
  const { b, T, H, dh, scale } = dims;
  const Tq = q.shape[2];
  if (attentionBackwardOnHost(tf, dims, Tq)) return clsAttentionBackwardHost(tf, dims, dMerged, A, q, k, v, fromExample);
  if (fromExample !== 0 || A.shape[0] !== b) throw new Error(`attentionBackward: the tf ops read ${b} examples from 0, got ${A.shape[0]} from ${fromExample}`);
  const perHead = (t: TF.Tensor) => (Tq === 1 ? tf.reshape(t, [b, H, 1, dh]) : tf.transpose(tf.reshape(t, [b, T, H, dh]), [0, 2, 1, 3]));
  const merged = (t: TF.Tensor) => (Tq === 1 ? tf.reshape(t, [b, H * dh]) : tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [b * T, H * dh]));
  const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const [dm, sa, sq, sk, sv] = args as TF.Tensor4D[];
    const dO = perHead(dm) as TF.Tensor4D;
    const dA = tf.matMul(dO, sv, false, true);
    const weighted = tf.mul(sa, dA);
    const sScaled = tf.mul(tf.sum(weighted, -1, true), scale);
    const dS = tf.sub(tf.mul(weighted, scale), tf.mul(sa, sScaled)) as TF.Tensor4D;
    const dq = Tq === 1 ? tf.pad(tf.matMul(dS, sk), [[0, 0], [0, 0], [0, T - 1], [0, 0]]) : tf.matMul(dS, sk);
    // (q|k|v) then heads: [b, 3H, T, dh] → [b·T, 3·H·dh]
    const parts = tf.concat([dq, tf.matMul(dS, sq, true, false), tf.matMul(sa, dO, true, false)], 1);
    const read = keptForBackward(tf, [sa, sq, sk, sv, dO, dA, dS, sScaled], args[5] as TF.GradSaveFunc, hold);
    return {
      value: tf.reshape(tf.transpose(parts, [0, 2, 1, 3]), [b * T, 3 * H * dh]),
      gradFunc: (w: TF.Tensor, saved: TF.Tensor[]) => {
        const [a, qq, kk, vv, o, da, ds, cs] = read(saved) as TF.Tensor4D[];
        const [wqAll, wk, wv] = tf.split(tf.transpose(tf.reshape(w, [b, T, 3 * H, dh]), [0, 2, 1, 3]), 3, 1) as TF.Tensor4D[];
        const wq = Tq === 1 ? (tf.slice(wqAll, [0, 0, 0, 0], [b, H, 1, dh]) as TF.Tensor4D) : wqAll;
        const omega = tf.add(tf.matMul(wq, kk, false, true), tf.matMul(qq, wk, false, true));
        const omegaTilde = tf.mul(tf.sub(omega, tf.sum(tf.mul(omega, a), -1, true)), scale);
        const dDA = tf.mul(a, omegaTilde) as TF.Tensor4D;
        const dAttention = tf.add(tf.sub(tf.mul(omegaTilde, da), tf.mul(omega, cs)), tf.matMul(o, wv, false, true));
        const dO = tf.add(tf.matMul(a, wv), tf.matMul(dDA, vv));
        return [merged(dO), dAttention, tf.matMul(ds, wk), tf.matMul(ds, wq, true, false), tf.matMul(dDA, o, true, false)];
      },
    };
  }) as (...t: TF.Tensor[]) => T2;
  return op(dMerged, A, q, k, v);
}

/**
 * Whether attentionBackward runs on the host: [CLS]'s query alone (Tq = 1: the last layer's tiny
 * products, ~40 kernels each way) up to hostElementwise.maxElements elements of k, on the backends whose
 * tensors are in this process's memory (as GELU′ and layer norm's backward, twiceDifferentiable.ts).
 */
export function attentionBackwardOnHost(tf: typeof TF, dims: { b: number; T: number; H: number; dh: number }, Tq: number): boolean {
  return Tq === 1 && runsOnHost(tf, dims.b * dims.H * dims.T * dims.dh);
}

/**
 * Whether ffnBlockBackward runs for N rows of a block of width D with an FFN of width ffn: on the
 * backends whose tensors are in this process's memory, up to hostElementwise's limit on N·max(D, ffn)
 * (runsOnHost), and only where the host's products are the native addon's sgemm (nativeHostProducts: in
 * JavaScript loops they cost twice the ops they replace).
 */
export function ffnBlockOnHost(tf: typeof TF, N: number, D: number, ffn: number): boolean {
  return runsOnHost(tf, N * Math.max(D, ffn)) && nativeHostProducts();
}

/**
 * A post-LN block's FFN half and both layer norms in the hand-written backward, from δ at the block's
 * output (`dh` [N, D], or U·W_outᵀ from the output directions U [N, classes] and the classifier's W_out
 * [D, classes]: the last layer's [CLS] rows) to δ at the attention output projection's tap [N, D], as
 * one host op (the ops it replaces: two layer norm backward passes, GELU′, two affine maps, and the
 * matMul with U):
 *   dr₂ = LN′(r₂; g₂, dh), dPre = (dr₂·W₂ᵀ)⊙GELU′(pre), dr₁ = LN′(r₁; g₁, dPre·W₁ᵀ + dr₂),
 * LN′ layer norm's backward pass (hostLayerNormBackward), W₂ = ff2w [ffn, D], W₁ = ff1w [D, ffn]; the
 * products in float32 by the native sgemm (hostProduct, what tf.matMul runs), the element-wise steps in
 * float64. Its gradient is each step's adjoint in reverse (hostLayerNormBackwardAdjoint, GELU″, the
 * products' transposes) from the read-back upstream; nothing saved or held. r₂, pre and r₁ may be a
 * joint pass's tensors: it reads rows fromRow … fromRow + N − 1 (their gradient zero elsewhere).
 */
export function ffnBlockBackward(
  tf: typeof TF,
  t: { upstream: { dh: T2 } | { U: T2; outW: T2 }; r2: T2; ln2g: TF.Tensor1D; ff2w: T2; pre: T2; ff1w: T2; r1: T2; ln1g: TF.Tensor1D },
  fromRow = 0,
  scratch = new HostScratch(),
): T2 {
  const fromU = 'U' in t.upstream;
  const head = 'U' in t.upstream ? [t.upstream.U, t.upstream.outW] : [t.upstream.dh];
  const b = head[0].shape[0];
  const c = fromU ? head[0].shape[1] : 0;
  const [D, F] = t.ff1w.shape;
  // Every working array from the scratch (read by the gradient: it must not be claimed again before
  // then); the read-backs are ranged reads into it (only the probe's rows of a joint tensor); only what
  // becomes a tensor's values is fresh.
  const read = (x: TF.Tensor, key: string, fromRowOf = 0, rows = x.shape[0]) => readRows(tf, x, fromRowOf, rows, scratch.f32(key, (rows * x.size) / x.shape[0]));
  const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const tIn = args.slice(0, head.length) as TF.Tensor[];
    const [tR2, tG2, tW2, tPre, tW1, tR1, tG1] = args.slice(head.length) as TF.Tensor[];
    for (const [what, x, width] of [['r2', tR2, D], ['pre', tPre, F], ['r1', tR1, D]] as const)
      if (x.shape[0] < fromRow + b || x.shape[1] !== width) throw new Error(`ffnBlockBackward: ${what} [${x.shape}], reading ${b} rows of ${width} from ${fromRow}`);
    const token = scratch.claim();
    const [g2, W2, W1, g1] = [read(tG2, 'g2'), read(tW2, 'W2'), read(tW1, 'W1'), read(tG1, 'g1')];
    const [r2s, pres, r1s] = [read(tR2, 'r2', fromRow, b), read(tPre, 'pre', fromRow, b), read(tR1, 'r1', fromRow, b)];
    const [us, outW] = fromU ? [read(tIn[0], 'U'), read(tIn[1], 'outW')] : ([] as Float32Array[]);
    // δ at the block's output: as given, or U·W_outᵀ.
    const dh = fromU ? hostProduct(us, outW, b, D, c, false, true, scratch.f32('dh', b * D)) : read(tIn[0], 'dh');
    const ln2 = hostLayerNormBackward(r2s, 0, g2, dh, b, D, scratch, 'ln2');
    const dr2F = ln2.F;
    const dr2 = scratch.f32('dr2', b * D);
    dr2.set(dr2F);
    // u = dr₂·W₂ᵀ [b, F], dPre = u⊙GELU′(pre)
    const u = hostProduct(dr2, W2, b, F, D, false, true, scratch.f32('u', b * F));
    const { prime, second } = hostGeluDerivatives(pres, 0, b * F, scratch);
    const dPre = scratch.f32('dPre', b * F);
    productInto(dPre, u, prime);
    // s = dPre·W₁ᵀ + dr₂ [b, D]
    const s = sumInto(scratch.f64('s', b * D), hostProduct(dPre, W1, b, D, F, false, true, scratch.f32('s32', b * D)), dr2F);
    const ln1 = hostLayerNormBackward(r1s, 0, g1, s, b, D, scratch, 'ln1');
    return {
      value: tf.tensor2d(new Float32Array(ln1.F), [b, D]),
      gradFunc: (w: TF.Tensor) => {
        scratch.check(token, 'ffnBlockBackward');
        const ws = read(w, 'w');
        // The joint tensors' gradients as their read rows (tensorFromRows pads them with zeros).
        const [gR1, gG1, gS] = [scratch.f32('gR1', b * D), new Float64Array(D), scratch.f32('gS', b * D)];
        hostLayerNormBackwardAdjoint(ln1, g1, s, ws, gR1, 0, gG1, gS);
        // s = dPre·W₁ᵀ + dr₂
        const gDPre = hostProduct(gS, W1, b, F, D, false, false, scratch.f32('gDPre', b * F));
        const gW1 = hostProduct(gS, dPre, D, F, b, true, false);
        // dPre = u⊙GELU′(pre)
        const gU = scratch.f32('gU', b * F);
        const gPre = scratch.f32('gPre', b * F);
        hostGeluDerivativeAdjoint(gDPre, u, prime, second, gPre, 0, gU);
        // u = dr₂·W₂ᵀ
        const gDr2 = sumInto(scratch.f64('gDr2', b * D), hostProduct(gU, W2, b, D, F, false, false, scratch.f32('gDr2.32', b * D)), gS);
        const gW2 = hostProduct(gU, dr2, F, D, b, true, false);
        const [gR2, gG2, gDh] = [scratch.f32('gR2', b * D), new Float64Array(D), new Float32Array(b * D)];
        hostLayerNormBackwardAdjoint(ln2, g2, dh, gDr2, gR2, 0, gG2, gDh);
        // dh = U·W_outᵀ, or given.
        const upstreamGrads = fromU ? [tf.tensor2d(hostProduct(gDh, outW, b, c, D), [b, c]), tf.tensor2d(hostProduct(gDh, us, D, c, b, true, false), [D, c])] : [tf.tensor2d(gDh, [b, D])];
        return [
          ...upstreamGrads,
          tensorFromRows(tf, tR2.shape, fromRow, gR2),
          tf.tensor1d(new Float32Array(gG2)),
          tf.tensor2d(gW2, [F, D]),
          tensorFromRows(tf, tPre.shape, fromRow, gPre),
          tf.tensor2d(gW1, [D, F]),
          tensorFromRows(tf, tR1.shape, fromRow, gR1),
          tf.tensor1d(new Float32Array(gG1)),
        ];
      },
    };
  }) as (...x: TF.Tensor[]) => T2;
  return op(...head, t.r2, t.ln2g, t.ff2w, t.pre, t.ff1w, t.r1, t.ln1g);
}

/** out[k] = a[k]·b[k]. The host ops' loops are functions of their arrays: V8 reloads arrays a closure captures on every iteration. */
function productInto(out: Float32Array, a: ArrayLike<number>, b: ArrayLike<number>): void {
  for (let k = 0; k < out.length; k++) out[k] = a[k] * b[k];
}

/** out[k] = a[k] + b[k] (float64), returned. */
function sumInto(out: Float64Array, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  for (let k = 0; k < out.length; k++) out[k] = a[k] + b[k];
  return out;
}

/**
 * attentionBackward for [CLS]'s query alone, preceded by the output projection's backward (the
 * hand-written backward's last layer): δ at the heads' merged output dMerged = dOut·W_oᵀ from δ at the
 * projection's tap dOut [b, D] and W_o [H·dh, D], then the attention's backward, as one host op
 * (attentionBackwardOnHost decides; clsAttentionBackwardHost). Its gradient adds ∂dOut = ∂dMerged·W_o and
 * ∂W_o = ∂dMergedᵀ·dOut to attentionBackward's.
 */
export function clsAttentionBackwardFromOutput(
  tf: typeof TF,
  dims: { b: number; T: number; H: number; dh: number; scale: number },
  dOut: T2,
  wo: T2,
  A: TF.Tensor4D,
  q: TF.Tensor4D,
  k: TF.Tensor4D,
  v: TF.Tensor4D,
  fromExample = 0,
): T2 {
  if (!attentionBackwardOnHost(tf, dims, q.shape[2])) throw new Error('clsAttentionBackwardFromOutput: [CLS]\'s query on the host only (attentionBackwardOnHost)');
  return clsAttentionBackwardHost(tf, dims, dOut, A, q, k, v, fromExample, wo);
}

/**
 * attentionBackward for [CLS]'s query alone (A [n, H, 1, T], q [n, H, 1, dh], k, v [n, H, T, dh]) on the
 * host in float64, the formulas above: value from the read-back inputs, gradient from the read-back
 * upstream, what the gradient reads kept in the closure as host arrays (nothing saved or held). It reads
 * examples fromExample … fromExample + b − 1 of A, q, k and v (a joint pass's tensors, n ≥ b): their
 * gradients are zero at the other examples, with no slice op and no pad. With `wo`, its first input is
 * δ at the output projection's tap [b, D] and dMerged = that·W_oᵀ (clsAttentionBackwardFromOutput).
 */
function clsAttentionBackwardHost(
  tf: typeof TF,
  dims: { b: number; T: number; H: number; dh: number; scale: number },
  dMerged: T2,
  A: TF.Tensor4D,
  q: TF.Tensor4D,
  k: TF.Tensor4D,
  v: TF.Tensor4D,
  fromExample: number,
  wo?: T2,
): T2 {
  const { b, T, H, dh, scale } = dims;
  const HD = H * dh;
  const D = wo ? wo.shape[1] : 0;
  const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const [dm, sa, sq, sk, sv] = args as TF.Tensor[];
    const n = sa.shape[0];
    if (n < fromExample + b) throw new Error(`attentionBackward: ${n} examples, reading ${b} from ${fromExample}`);
    const dIn = dm.dataSync() as Float32Array;
    // The last argument is the op's save function.
    const wos = wo ? ((args[5] as TF.Tensor).dataSync() as Float32Array) : undefined;
    // dMerged [b, H·dh]: as given, or dOut·W_oᵀ.
    const dO = wos ? hostProduct(dIn, wos, b, HD, D, false, true) : dIn;
    // The probe's examples of the joint tensors only (ranged reads, not whole-tensor copies).
    const [a, qs, ks, vs] = [sa, sq, sk, sv].map((t) => readRows(tf, t, fromExample, b));
    const st: ClsAttention = { dO, a, qs, ks, vs, dA: new Float64Array(b * H * T), dS: new Float64Array(b * H * T), cs: new Float64Array(b * H) };
    const value = clsAttentionValue(dims, st);
    return {
      value: tf.tensor2d(value, [b * T, 3 * HD]),
      gradFunc: (w: TF.Tensor) => {
        // The probe's examples' gradients only (from example 0 of these arrays), then padded with zeros (tensorFromRows).
        const [ga, gq, gk, gv] = [sa, sq, sk, sv].map((t) => new Float32Array((b * t.size) / t.shape[0]));
        const gdm = clsAttentionGradient(dims, 0, w.dataSync() as Float32Array, st, { ga, gq, gk, gv });
        const rest = ([[sa, ga], [sq, gq], [sk, gk], [sv, gv]] as const).map(([t, g]) => tensorFromRows(tf, t.shape, fromExample, g));
        if (!wos) return [tf.tensor2d(new Float32Array(gdm), [b, HD]), ...rest];
        // dMerged = dOut·W_oᵀ: ∂dOut = ∂dMerged·W_o [b, D], ∂W_o = ∂dMergedᵀ·dOut [H·dh, D].
        const gMerged = new Float32Array(gdm);
        return [tf.tensor2d(hostProduct(gMerged, wos, b, D, HD), [b, D]), ...rest, tf.tensor2d(hostProduct(gMerged, dIn, HD, D, b, true, false), [HD, D])];
      },
    };
  }) as (...t: TF.Tensor[]) => T2;
  return wo ? op(dMerged, A, q, k, v, wo) : op(dMerged, A, q, k, v);
}

/**
 * What clsAttentionBackwardHost's value reads (dMerged, and A, q, k, v at the probe's examples) and
 * writes for its gradient (dA, dS, cs). The loops destructure it into locals: V8 reloads arrays that a
 * closure captures on every iteration, not a function's own locals.
 */
interface ClsAttention {
  dO: Float32Array;
  a: Float32Array;
  qs: Float32Array;
  ks: Float32Array;
  vs: Float32Array;
  dA: Float64Array;
  dS: Float64Array;
  cs: Float64Array;
}

/**
 * clsAttentionBackwardHost's value [b·T, (q|k|v)·H·dh] (a function of its own, as clsAttentionGradient):
 * per (example, head) row r = i·H + h, dA_t = Σ_d dO_d·v_td, cs = scale·Σ_t A_t·dA_t, dS_t = scale·A_t·dA_t − A_t·cs
 * (written into dA, dS, cs for the gradient); q at [CLS]: Σ_t dS_t·k_t, k_t: dS_t·q, v_t: A_t·dO.
 */
function clsAttentionValue(dims: { b: number; T: number; H: number; dh: number; scale: number }, st: ClsAttention): Float32Array {
  const { b, T, H, dh, scale } = dims;
  const { dO, a, qs, ks, vs, dA, dS, cs } = st;
  const HD = H * dh;
  const row = 3 * HD;
  const value = new Float32Array(b * T * row);
  const compiled = loadNativeBlas().blas?.clsAttentionValue;
  if (compiled) {
    compiled([b, T, H, dh], scale, dO, a, qs, ks, vs, dA, dS, cs, value);
    return value;
  }
  for (let i = 0; i < b; i++)
    for (let h = 0; h < H; h++) {
      const r = i * H + h;
      const o = r * dh; // dO's and q's row (dMerged [b, H·dh] is [b, H, 1, dh])
      let sum = 0;
      for (let t = 0; t < T; t++) {
        const vRow = (r * T + t) * dh;
        let s = 0;
        for (let d = 0; d < dh; d++) s += dO[o + d] * vs[vRow + d];
        dA[r * T + t] = s;
        sum += a[r * T + t] * s;
      }
      const c = (cs[r] = scale * sum);
      // value[(i·T + t), (part·H + h)·dh + d]
      const q0 = i * T * row + h * dh;
      for (let t = 0; t < T; t++) {
        const at_ = a[r * T + t];
        const ds = (dS[r * T + t] = scale * at_ * dA[r * T + t] - at_ * c);
        const kRow = (r * T + t) * dh;
        const kOut = (i * T + t) * row + HD + h * dh;
        const vOut = kOut + HD;
        for (let d = 0; d < dh; d++) {
          value[q0 + d] += ds * ks[kRow + d];
          value[kOut + d] = ds * qs[o + d];
          value[vOut + d] = at_ * dO[o + d];
        }
      }
    }
  return value;
}

/**
 * clsAttentionBackwardHost's gradient loops (the formulas of attentionBackward) for an upstream ws
 * [b·T, (q|k|v)·H·dh]: ∂A, ∂q, ∂k, ∂v written into ga, gq, gk, gv at example fromExample on, ∂dMerged
 * returned. A function of its own, its arrays locals (ClsAttention: a closure's captured arrays are
 * reloaded in every iteration, ~5× slower loops, measured).
 */
function clsAttentionGradient(
  dims: { b: number; T: number; H: number; dh: number; scale: number },
  fromExample: number,
  ws: Float32Array,
  st: ClsAttention,
  grads: { ga: Float32Array; gq: Float32Array; gk: Float32Array; gv: Float32Array },
): Float64Array {
  const { b, T, H, dh, scale } = dims;
  const { dO, a, qs, ks, vs, dA, dS, cs } = st;
  const { ga, gq, gk, gv } = grads;
  const HD = H * dh;
  const row = 3 * HD;
  const gdm = new Float64Array(b * HD);
  const compiled = loadNativeBlas().blas?.clsAttentionGradient;
  if (compiled) {
    compiled([b, T, H, dh], scale, fromExample, ws, dO, a, qs, ks, vs, dA, dS, cs, ga, gq, gk, gv, gdm);
    return gdm;
  }
  const [aFrom, qFrom, kvFrom] = [fromExample * H * T, fromExample * HD, fromExample * H * T * dh];
  const omega = new Float64Array(T);
  const dDO = new Float64Array(dh);
  const gqRow = new Float64Array(dh);
  for (let i = 0; i < b; i++)
    for (let h = 0; h < H; h++) {
      const r = i * H + h;
      const o = r * dh;
      // W's entries of (example i, token t, part, head h) start at (i·T + t)·3·H·dh + (part·H + h)·dh.
      const wq = i * T * row + h * dh;
      // ω_t = Σ_d W_q,d·k_td + q_d·W_k,td; ω̃ = scale·(ω − Σ_t ω_t·A_t)
      let omegaA = 0;
      for (let t = 0; t < T; t++) {
        const kRow = (r * T + t) * dh;
        const wk = (i * T + t) * row + HD + h * dh;
        let s = 0;
        for (let d = 0; d < dh; d++) s += ws[wq + d] * ks[kRow + d] + qs[o + d] * ws[wk + d];
        omega[t] = s;
        omegaA += s * a[r * T + t];
      }
      dDO.fill(0);
      gqRow.fill(0);
      for (let t = 0; t < T; t++) {
        const rt = r * T + t;
        const at_ = a[rt];
        const omegaTilde = scale * (omega[t] - omegaA);
        const dDA = at_ * omegaTilde;
        const kvRow = rt * dh;
        const wk = (i * T + t) * row + HD + h * dh;
        const wv = wk + HD;
        const ds = dS[rt];
        let dOwv = 0;
        for (let d = 0; d < dh; d++) {
          dOwv += dO[o + d] * ws[wv + d];
          dDO[d] += at_ * ws[wv + d] + dDA * vs[kvRow + d];
          gqRow[d] += ds * ws[wk + d];
          gk[kvFrom + kvRow + d] = ds * ws[wq + d];
          gv[kvFrom + kvRow + d] = dDA * dO[o + d];
        }
        ga[aFrom + rt] = omegaTilde * dA[rt] - omega[t] * cs[r] + dOwv;
      }
      for (let d = 0; d < dh; d++) {
        gdm[o + d] = dDO[d];
        gq[qFrom + o + d] = gqRow[d];
      }
    }
  return gdm;
}
