// The `switch-transformer` family: a small decoder-only language model (character level, text data)
// whose prunable units are the experts of its Switch feed-forward layers (Fedus, Zoph & Shazeer 2021).
//
// Token embedding + learned positions; `layers` pre-LayerNorm blocks, each x += MHA(LN(x)) with
// causal self-attention (4 heads, or 2 or 1 when dModel is not a multiple of 4; heads are not units
// here), then x += FFN(LN(x)); final LayerNorm and a projection to the vocabulary; cross-entropy
// over every position. As in the Switch Transformer, every other FFN is a Switch FFN, counting back
// from the last block (so the last block always has one; at layers = 2 only block 1 does):
//
// - router: softmax(LN(x)·W_r + b_r) over the E experts, top-1: each token goes to its argmax expert
//   only, and the expert's output is scaled by that router probability p_top, which is how the task
//   loss reaches the router. Dispatch is real: the tokens are gathered per expert, each expert runs
//   on its own tokens only, and the outputs are gathered back into token order (one host read of
//   the routing decisions per Switch layer and step). No capacity limit: no token is dropped.
// - experts: ReLU MLPs dModel → hiddenUnits → dModel with separate variables per expert.
// - load balancing: Switch's auxiliary loss E_live·Σ_e f_e·P_e per Switch layer (f_e the fraction
//   of tokens sent to expert e, P_e its mean router probability), weighted LOAD_BALANCE_COEFFICIENT
//   = 0.01 as in the paper, added to the optimized loss (not to the reported task loss).
//
// Unit e = expert e of every Switch layer: freezing e leaves its variables out of the update,
// pruning e masks its router logit (−1e9) in every Switch layer, so no token is sent to it.
//
// Per-expert estimators (docs/method.md): expert e is measured as a function of its own input, like
// a moe-mlp expert. The probe is n = monitor.probeSize token positions of the probe sequences,
// spread over sequences and positions, with distinct (character, next character) pairs where the
// probe batch has enough (see probeTokens).
// Per Switch layer s: x_i = the LayerNorm'd input of the layer at token i, u_i = g_i/‖g_i‖ with g_i
// = ∂L/∂(Switch FFN output at token i), L the summed cross-entropy of the probe sequences, back-
// propagated from underflow-free logit pulls (scaledLogitGradients; u_i = 0 only without any
// pull). Then s_i = Σ_s u_iᵀ·expert_e^s(x_i^s), so K_e = Σ_s (the two-layer closed-form kernel of
// expert e in layer s), and μ, L_f, κ from its float64 eigen-solve. A regularized step measures in
// its own graph (probePass inside its variableGrads): x, u (through a backward pass nested in the
// step) and the routing probabilities p_top are differentiable functions of every weight, the top-1
// choices held; the kernels are read back and eigen-solved, and κ is differentiated along those
// eigenvectors (Hellmann–Feynman) through the same pass (docs/method.md, "Switch").
import type * as TF from '@tensorflow/tfjs';
import { MIN_SERVED, type TrainingConfig, type UnitStats } from '../../protocol';
import { conditioning, conditioningValues, dampedKappa, heldSeed, heldValue, kappaSurrogateTf, scaledLogitGradientsTf, SpectralNormState, spectralNormProduct, tangentKernelTf } from '../pl';
import { spreadingStride } from '../textData';
import { FamilyBase, ParameterGroups, principalSubmatrix, regularizerWeights, SoftMask } from './shared';
import type { Batch, PlModel, StepOptions, StepResult, TaskData } from './types';
import { createAdam } from '../engine/adam';
import { sumOfSquares } from '../engine/sumOfSquares';
import { twiceDifferentiableActivations } from './twiceDifferentiable';

type T2 = TF.Tensor2D;

/** Weight of Switch's load-balancing loss (the paper's α = 10⁻²). */
export const LOAD_BALANCE_COEFFICIENT = 0.01;
/** Router logit of a pruned expert: its softmax probability underflows to exactly 0. */
const MASKED_LOGIT = -1e9;

export interface ExpertVars {
  w1: TF.Variable; // dModel×hidden
  b1: TF.Variable;
  w2: TF.Variable; // hidden×dModel
  b2: TF.Variable;
}

interface BlockVars {
  ln1g: TF.Variable;
  ln1b: TF.Variable;
  wq: TF.Variable; // dModel×dModel, heads side by side
  wk: TF.Variable;
  wv: TF.Variable;
  wo: TF.Variable;
  bo: TF.Variable;
  ln2g: TF.Variable;
  ln2b: TF.Variable;
  /** A dense block's FFN (same shape as an expert). */
  dense?: ExpertVars;
  /** A Switch block's router (dModel×E, E) and experts[e]. */
  router?: { w: TF.Variable; b: TF.Variable };
  experts?: ExpertVars[];
}

/** What a Switch layer did on one forward pass (host copies, token-major). */
export interface SwitchLayerTrace {
  block: number;
  /** [N, dModel]: the LayerNorm'd input that the router and the experts see. */
  input: Float32Array;
  /** [N, E]: router probabilities (0 for a pruned expert). */
  probs: Float32Array;
  /** [N]: the expert each token was sent to. */
  expertOf: Int32Array;
  /** [N, dModel]: the layer's output p_top·expert_top(x). */
  output: Float32Array;
}

/** What a Switch layer did on one forward pass, as tensors on the pass's tape (the probe pass's capture). */
interface SwitchLayerTensors {
  /** [N, dModel]: the LayerNorm'd input. */
  input: T2;
  /** [N, E]: router probabilities. */
  probs: T2;
  /** [N]: the expert each token was sent to (host: the top-1 choice is held). */
  expertOf: Int32Array;
}

/**
 * The probe tokens' quantities per Switch layer s, as tensors [n, ·]: x^s, u^s and the routing (p_top at the
 * dispatched expert, 0 elsewhere), differentiable in every weight when made on a tape; `served[e]` the
 * probe tokens routed to e in any Switch layer.
 */
interface ProbeQuantities {
  x: T2[];
  u: T2[];
  routing: T2[];
  served: Set<number>[];
}

interface Measurement {
  stats: UnitStats;
  /** The n×n kernel as the model uses the expert (float64 copy of the float32 backend kernel, symmetrized). */
  kernel: Float64Array;
}

let modelCount = 0;

export class SwitchTransformerLm extends FamilyBase implements PlModel {
  readonly units: number;
  readonly dModel: number;
  readonly heads: number;
  readonly hidden: number;
  readonly vocabulary: number;
  readonly contextLength: number;
  /** Indices of the blocks whose FFN is a Switch layer. */
  readonly switchBlocks: number[];
  readonly embedding: { tokens: TF.Variable; positions: TF.Variable };
  readonly blocks: BlockVars[];
  readonly head: { lnG: TF.Variable; lnB: TF.Variable; w: TF.Variable; b: TF.Variable };
  /** One Adam per expert and one for everything shared: tfjs's Adam keys its moments by list position. */
  protected readonly parameters: ParameterGroups;
  private readonly prefix = `switch${modelCount++}`;
  private readonly spectral: SpectralNormState;
  private readonly softMask: SoftMask;
  private probeX: T2 | undefined;
  private probeY: T2 | undefined;
  private probeTokenIds: Int32Array | undefined;
  /** The regularized step measures in its own graph: the loop need not measure before it. */
  readonly measuresInStep = true;
  /** Per Switch layer, the probe tokens' inputs x and directions u of the last measurement (float32, n×dModel). */
  private probeInputs: T2[] = [];
  private probeDirs: T2[] = [];
  /**
   * Per Switch layer, n×E: the router probability p_top of each probe token at the expert it is
   * dispatched to, 0 at every other expert: how the model uses each expert on each token.
   */
  private probeRouting: T2[] = [];
  private measurements: Measurement[] = [];
  /** κ of the model's kernel Σ_{e∈T} K_e at the last measurement, with the eigenvectors it is differentiated along. */
  private modelConditioning: { mu: number; lf: number; kappa: number; vMin: Float64Array; vMax: Float64Array } | undefined;
  private lastLoad: number[] = [];

  constructor(
    private readonly tf: typeof TF,
    private readonly config: TrainingConfig,
    data: TaskData,
  ) {
    super();
    if (data.kind !== 'text') throw new Error(`the switch-transformer family is a language model: it needs text data, not ${data.kind}`);
    const { experts, dModel: D, layers, hiddenUnits: F, contextLength } = config.model;
    if (data.features > contextLength) throw new Error(`text windows of ${data.features} tokens are longer than contextLength ${contextLength}`);
    this.units = experts;
    this.dModel = D;
    this.heads = [4, 2, 1].find((h) => D % h === 0)!;
    this.hidden = F;
    this.vocabulary = data.classes;
    this.contextLength = contextLength;
    this.switchBlocks = Array.from({ length: layers }, (_, l) => l).filter((l) => (layers - 1 - l) % 2 === 0);
    let seed = config.seed * 1000;
    const name = (n: string) => `${this.prefix}/${n}`;
    const normal = (n: string, shape: number[], std: number) => tf.variable(tf.randomNormal(shape, 0, std, 'float32', seed++), true, name(n));
    const zeros = (n: string, shape: number[]) => tf.variable(tf.zeros(shape), true, name(n));
    const ones = (n: string, shape: number[]) => tf.variable(tf.ones(shape), true, name(n));
    // He initialization into the ReLU, variance-preserving elsewhere; seeded so a config reproduces its run.
    const mlp = (n: string): ExpertVars => ({
      w1: normal(`${n}/w1`, [D, F], Math.sqrt(2 / D)),
      b1: zeros(`${n}/b1`, [F]),
      w2: normal(`${n}/w2`, [F, D], Math.sqrt(1 / F)),
      b2: zeros(`${n}/b2`, [D]),
    });
    this.embedding = { tokens: normal('embed/tokens', [this.vocabulary, D], 1), positions: normal('embed/positions', [contextLength, D], 0.1) };
    this.blocks = Array.from({ length: layers }, (_, l) => {
      const block: BlockVars = {
        ln1g: ones(`layer${l}/ln1/g`, [D]),
        ln1b: zeros(`layer${l}/ln1/b`, [D]),
        wq: normal(`layer${l}/attention/wq`, [D, D], Math.sqrt(1 / D)),
        wk: normal(`layer${l}/attention/wk`, [D, D], Math.sqrt(1 / D)),
        wv: normal(`layer${l}/attention/wv`, [D, D], Math.sqrt(1 / D)),
        wo: normal(`layer${l}/attention/wo`, [D, D], Math.sqrt(1 / D)),
        bo: zeros(`layer${l}/attention/bo`, [D]),
        ln2g: ones(`layer${l}/ln2/g`, [D]),
        ln2b: zeros(`layer${l}/ln2/b`, [D]),
      };
      if (this.switchBlocks.includes(l)) {
        // A small router start (as in the paper's reduced init scale): routing begins near uniform.
        block.router = { w: normal(`layer${l}/router/w`, [D, experts], 0.1 / Math.sqrt(D)), b: zeros(`layer${l}/router/b`, [experts]) };
        block.experts = Array.from({ length: experts }, (_, e) => mlp(`expert${e}/layer${l}`));
      } else {
        block.dense = mlp(`layer${l}/ffn`);
      }
      return block;
    });
    this.head = {
      lnG: ones('final/ln/g', [D]),
      lnB: zeros('final/ln/b', [D]),
      w: normal('output/w', [D, this.vocabulary], Math.sqrt(1 / D)),
      b: zeros('output/b', [this.vocabulary]),
    };
    this.spectral = new SpectralNormState(config.seed);
    this.softMask = new SoftMask(tf, name('pruningMask'), this.units);
    this.parameters = new ParameterGroups(
      tf,
      this.prefix,
      experts,
      { sharedName: 'shared', sharedVars: () => this.sharedVars(), unitName: (e) => `expert${e}`, unitVars: (e) => this.expertVars(e) },
      () => createAdam(tf, config.learningRate),
    );
  }

  setProbe(probe: Batch): void {
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.probeX = probe.x as T2;
    this.probeY = probe.y as T2;
    this.probeTokenIds = this.chooseProbeTokens(probe.x, probe.y);
  }

  /**
   * (x − mean)/√(variance + ε)·g + b over the last axis, as one op with a closed-form backward (bert's,
   * twiceDifferentiableActivations; ε = 1e-5 there too): the same values as the mean/sqrt/div ops, and
   * under the regularizer's nested tape a few ops to differentiate again instead of ~35.
   */
  private layerNorm(x: T2, g: TF.Variable, b: TF.Variable): T2 {
    return twiceDifferentiableActivations(this.tf).layerNorm(x, g as unknown as TF.Tensor1D, b as unknown as TF.Tensor1D);
  }

  private mlp(v: ExpertVars, x: T2): T2 {
    const tf = this.tf;
    const hidden = tf.relu(tf.add(tf.matMul(x, v.w1 as unknown as T2), v.b1)) as T2;
    return tf.add(tf.matMul(hidden, v.w2 as unknown as T2), v.b2) as T2;
  }

  /**
   * The network on token ids x [b, T]: logits [b·T, vocabulary] (token-major), the load-balancing loss
   * summed over Switch layers, and the tokens each expert received (summed over Switch layers).
   * Call inside a tidy or a gradient scope. `offsets[s]` [b·T, dModel] is added to Switch layer s's
   * output (zeros: the gradient with respect to it is ∂L/∂output); `trace` collects host copies.
   */
  forward(x: TF.Tensor, pruned: ReadonlySet<number>, o: { offsets?: TF.Tensor[]; trace?: SwitchLayerTrace[]; capture?: SwitchLayerTensors[]; softMask?: TF.Tensor1D } = {}): { logits: T2; aux: TF.Scalar; routed: number[] } {
    const tf = this.tf;
    const [b, T] = x.shape as [number, number];
    if (T > this.contextLength) throw new RangeError(`sequences of ${T} tokens are longer than contextLength ${this.contextLength}`);
    const [D, H, E, N] = [this.dModel, this.heads, this.units, b * T];
    const dh = D / H;
    // tfjs 4.22's own softmax gradient reads its saved output, whose second derivative the engine drops
    // (twiceDifferentiable.ts, file comment); the regularizer differentiates the probe pass's backward pass again.
    const { softmax } = twiceDifferentiableActivations(tf);
    const positions = tf.slice(this.embedding.positions, [0, 0], [T, D]);
    // The embedding lookup as one-hot × table: tf.gather's gradient (unsortedSegmentSum) runs one op
    // per vocabulary entry on the cpu backend and has no wasm kernel at all.
    const oneHot = this.oneHot(tf.reshape(x, [N]) as TF.Tensor1D, this.vocabulary);
    let h = tf.add(tf.matMul(oneHot, this.embedding.tokens as unknown as T2), tf.tile(positions, [b, 1])) as T2;
    // Causal: position t attends to positions ≤ t.
    const causal = tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([T, T]), -1, 0)), MASKED_LOGIT);
    const prunedMask = pruned.size ? tf.tensor1d(Array.from({ length: E }, (_, e) => (pruned.has(e) ? MASKED_LOGIT : 0))) : undefined;
    const live = Array.from({ length: E }, (_, e) => e).filter((e) => !pruned.has(e)).length;
    const routed = new Array(E).fill(0);
    let aux = tf.scalar(0);
    let s = 0;
    this.blocks.forEach((blk, l) => {
      const a = this.layerNorm(h, blk.ln1g, blk.ln1b);
      const split = (t: TF.Tensor) => tf.transpose(tf.reshape(t, [b, T, H, dh]), [0, 2, 1, 3]); // [b, H, T, dh]
      const q = split(tf.matMul(a, blk.wq as unknown as T2));
      const k = split(tf.matMul(a, blk.wk as unknown as T2));
      const v = split(tf.matMul(a, blk.wv as unknown as T2));
      const attention = softmax(tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)), causal));
      const merged = tf.reshape(tf.transpose(tf.matMul(attention, v), [0, 2, 1, 3]), [N, D]) as T2;
      h = tf.add(h, tf.add(tf.matMul(merged, blk.wo as unknown as T2), blk.bo)) as T2;
      const f = this.layerNorm(h, blk.ln2g, blk.ln2b);
      if (blk.dense) {
        h = tf.add(h, this.mlp(blk.dense, f)) as T2;
        return;
      }
      const logits = tf.add(tf.matMul(f, blk.router!.w as unknown as T2), blk.router!.b);
      let probs = softmax(prunedMask ? tf.add(logits, prunedMask) : logits) as T2;
      // The pruning gate's soft mask scales each expert's router probability, renormalized (m_e = 0 is
      // a pruned expert): it moves the top-1 choice and, through p_top, the routed output.
      if (o.softMask) {
        const weighted = tf.mul(probs, o.softMask);
        probs = tf.div(weighted, tf.add(tf.sum(weighted, 1, true), 1e-12)) as T2;
      }
      // Top-1 routing. The decisions come to the host: dispatch sizes are data-dependent.
      const expertOf = tf.argMax(probs, 1).dataSync() as Int32Array;
      const members: number[][] = Array.from({ length: E }, () => []);
      for (let t = 0; t < N; t++) members[expertOf[t]].push(t);
      const orderHost = Int32Array.from(members.flat()); // tokens sorted by expert
      const backHost = new Int32Array(N); // position of token t in that order
      orderHost.forEach((t, r) => (backHost[t] = r));
      const [order, back] = [tf.tensor1d(orderHost, 'int32'), tf.tensor1d(backHost, 'int32')];
      const sorted = this.permuteRows(f, order, back);
      let start = 0;
      const pieces: T2[] = [];
      members.forEach((tokens, e) => {
        if (tokens.length) pieces.push(this.mlp(blk.experts![e], tf.slice(sorted, [start, 0], [tokens.length, D])));
        start += tokens.length;
      });
      const pTop = tf.sum(tf.mul(probs, this.oneHot(tf.tensor1d(expertOf, 'int32'), E)), 1, true); // [N, 1], differentiable
      let out = tf.mul(this.permuteRows(pieces.length === 1 ? pieces[0] : (tf.concat(pieces, 0) as T2), back, order), pTop) as T2;
      if (o.offsets) out = tf.add(out, o.offsets[s]) as T2;
      // Load balancing: E_live·Σ f_e·P_e (f from the hard decisions, constant; P carries the gradient).
      const fractions = tf.tensor1d(members.map((m) => m.length / N));
      aux = tf.add(aux, tf.mul(tf.sum(tf.mul(tf.mean(probs, 0), fractions)), live)) as TF.Scalar;
      members.forEach((m, e) => (routed[e] += m.length));
      if (o.trace) o.trace.push({ block: l, input: f.dataSync() as Float32Array, probs: probs.dataSync() as Float32Array, expertOf, output: out.dataSync() as Float32Array });
      o.capture?.push({ input: f, probs, expertOf });
      h = tf.add(h, out) as T2;
      s++;
    });
    const top = this.layerNorm(h, this.head.lnG, this.head.lnB);
    return { logits: tf.add(tf.matMul(top, this.head.w as unknown as T2), this.head.b) as T2, aux, routed };
  }

  /**
   * Rows of x reordered, row r = x[perm[r]], for a permutation perm with inverse `inverse` (int32
   * tensors). Its gradient is the inverse reordering, itself a permuteRows, so a gradient of a gradient
   * (the regularizer's, through the probe pass's backward pass) is a gather too, never tf.gather's
   * general scatter-add (one op per row on the cpu backend, no wasm kernel).
   */
  private permuteRows(x: TF.Tensor, perm: TF.Tensor, inverse: TF.Tensor): T2 {
    const tf = this.tf;
    const op = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
      (args[1] as TF.GradSaveFunc)([perm, inverse]);
      return { value: tf.gather(args[0] as TF.Tensor, perm), gradFunc: (dy: TF.Tensor, [p, q]: TF.Tensor[]) => this.permuteRows(dy, q, p) };
    });
    return op(x) as T2;
  }

  /**
   * float32 one-hot rows. Cast from int32: tfjs-backend-wasm 4.22's OneHot kernel ignores a float32
   * dtype and writes the int32 bit pattern of 1 (a 1.4e-45 denormal) into the float32 buffer.
   */
  private oneHot(indices: TF.Tensor1D, depth: number): T2 {
    return this.tf.cast(this.tf.oneHot(indices, depth), 'float32') as T2;
  }

  /** Mean cross-entropy of logits [b·T, V] against next tokens y [b, T]. */
  private crossEntropy(logits: T2, y: TF.Tensor): TF.Scalar {
    const tf = this.tf;
    return tf.losses.softmaxCrossEntropy(this.oneHot(tf.reshape(y, [-1]) as TF.Tensor1D, this.vocabulary), logits) as TF.Scalar;
  }

  /** Logits and every Switch layer's routing on x [b, T] (host copies; tests, inspection). */
  inspect(x: TF.Tensor, pruned: ReadonlySet<number> = new Set()): { logits: Float32Array; layers: SwitchLayerTrace[] } {
    const trace: SwitchLayerTrace[] = [];
    const logitsT = this.tf.tidy(() => this.forward(x, pruned, { trace }).logits);
    const logits = logitsT.dataSync() as Float32Array;
    logitsT.dispose();
    return { logits, layers: trace };
  }

  /**
   * g = ∂L/∂(Switch FFN output) at every token, per Switch layer [b·T, dModel], L the summed
   * cross-entropy of the batch, with the layers' inputs and routing from the same pass: plain tf
   * gradients, the tests' independent reference for the probe pass's u (probePass, which scales each
   * sequence's pulls to stay defined where float32's softmax − y rounds to 0).
   */
  outputGradients(x: TF.Tensor, y: TF.Tensor, pruned: ReadonlySet<number> = new Set()): { gradients: Float32Array[]; layers: SwitchLayerTrace[] } {
    const tf = this.tf;
    const N = x.shape[0] * (x.shape[1] as number);
    const trace: SwitchLayerTrace[] = [];
    const grads = tf.tidy(() => {
      const offsets = this.switchBlocks.map(() => tf.zeros([N, this.dModel]));
      return tf.grads((...offs: TF.Tensor[]) => tf.mul(this.crossEntropy(this.forward(x, pruned, { offsets: offs, trace }).logits, y), N) as TF.Scalar)(offsets);
    });
    const gradients = grads.map((g) => g.dataSync() as Float32Array);
    tf.dispose(grads);
    return { gradients, layers: trace };
  }

  /**
   * The probe's n token positions (flat indices seq·T + pos into the probe batch), fixed with it.
   * Candidates run round by round over the sequences, candidate (round r, sequence q) at position
   * T − 1 − ((q·s + r) mod T), s ≈ T/φ coprime to T, so the first round already spreads over the
   * context. A candidate whose (character, next character) pair is already in the probe is passed
   * over while others remain: at the start two such tokens have nearly the same input and the same
   * loss direction, which makes every expert's kernel nearly singular whatever its weights.
   */
  probeTokens(): Int32Array {
    if (!this.probeTokenIds) throw new Error('setProbe first');
    return Int32Array.from(this.probeTokenIds);
  }

  private chooseProbeTokens(x: TF.Tensor, y: TF.Tensor): Int32Array {
    const [B, T] = x.shape as [number, number];
    const n = Math.min(this.config.monitor.probeSize, B * T);
    const [xs, ys] = [x.dataSync(), y.dataSync()];
    const s = spreadingStride(T);
    const chosen: number[] = [];
    const passed: number[] = [];
    const pairs = new Set<number>();
    for (let c = 0; c < B * T && chosen.length < n; c++) {
      const [q, r] = [c % B, Math.floor(c / B)];
      const flat = q * T + (T - 1 - ((q * s + r) % T));
      const pair = xs[flat] * this.vocabulary + ys[flat];
      if (pairs.has(pair)) passed.push(flat);
      else (pairs.add(pair), chosen.push(flat));
    }
    return Int32Array.from([...chosen, ...passed.slice(0, n - chosen.length)]);
  }

  /** The last measurement's probe inputs x, directions u and routing (n×E: p_top at the dispatched expert) per Switch layer (tests). */
  probeQuantities(): { x: Float32Array[]; u: Float32Array[]; routing: Float32Array[] } {
    const read = (ts: T2[]) => ts.map((t) => Float32Array.from(t.dataSync()));
    return { x: read(this.probeInputs), u: read(this.probeDirs), routing: read(this.probeRouting) };
  }

  /**
   * The probe pass: one forward pass of the probe sequences with a zero tap added to every Switch
   * layer's output, and one backward pass of ⟨pulls, logits⟩ to the taps (the pulls: scaledLogitGradients
   * of the pass's own logits). Per Switch layer, at the probe tokens: x = the layer's LayerNorm'd input,
   * u = g/‖g‖ with g the tap's gradient, and the routing (p_top at the dispatched expert). Made on a tape
   * (a step's variableGrads), all three are differentiable in every weight: x and p_top through the
   * forward pass, u through the backward pass (a gradient of a gradient) and through the pulls. The
   * backward pass holds the pulls (its seed's derivative is the pulls as a constant), as g's definition
   * does, while the outer gradient follows them (scaledLogitGradientsTf). Held, as piecewise constants:
   * the top-1 choices, which tokens have no direction (u = 0), the pulls' choices. The values are the
   * float64 pulls' and the host-normalized g's, rounded once.
   */
  private probePass(pruned: ReadonlySet<number>): ProbeQuantities {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const x = this.probeX;
    const [B, T] = x.shape as [number, number];
    const [N, D, E] = [B * T, this.dModel, this.units];
    const tokens = this.probeTokens();
    const n = tokens.length;
    const labels = this.probeY.dataSync();
    // The probe tokens' rows as a product with a 0/1 selection matrix: exact, and its gradient a matmul
    // (tf.gather's is a scatter-add: one op per row on the cpu backend, no wasm kernel).
    const pick = new Float32Array(n * N);
    tokens.forEach((t, i) => (pick[i * N + t] = 1));
    const select = tf.tensor2d(pick, [n, N]);
    const captured: SwitchLayerTensors[] = [];
    let pulls: T2 | undefined;
    const offsets = this.switchBlocks.map(() => tf.zeros([N, D]));
    // (Kept: the pass's function runs in a scope of its own, and its backward pass and the products
    // below still read these.)
    const gradients = tf.grads((...taps: TF.Tensor[]) => {
      const logits = this.forward(x, pruned, { offsets: taps, capture: captured }).logits;
      for (const c of captured) [c.input, c.probs].forEach((t) => tf.keep(t));
      const logProbs = tf.logSoftmax(logits) as T2;
      pulls = tf.keep(scaledLogitGradientsTf(logProbs, labels, T, logProbs.dataSync()));
      // Σ ⟨pulls, logits⟩: the backward pass to the taps holds the pulls, the outer gradient reaches them.
      return heldSeed(pulls, logits);
    })(offsets) as T2[];
    pulls!.dispose();
    const served = Array.from({ length: E }, () => new Set<number>());
    const q: ProbeQuantities = { x: [], u: [], routing: [], served };
    captured.forEach((layer, s) => {
      const g = gradients[s].dataSync();
      const direction = new Float32Array(n * D);
      const alive = new Float32Array(n);
      tokens.forEach((t, i) => {
        let norm = 0;
        for (let k = 0; k < D; k++) norm += g[t * D + k] ** 2;
        norm = Math.sqrt(norm);
        // A token the loss does not pull on gets u = 0. g is scaled to a largest per-token logit pull
        // of 1, so only a token whose pull vanishes relative to the others' lands here.
        if (norm <= 1e-12) return;
        alive[i] = 1;
        for (let k = 0; k < D; k++) direction[i * D + k] = g[t * D + k] / norm;
      });
      const picked = tf.matMul(select, gradients[s]);
      const followed = tf.mul(tf.div(picked, tf.sqrt(tf.maximum(tf.sum(tf.square(picked), 1, true), 1e-30))), tf.tensor2d(alive, [n, 1])) as T2;
      q.u.push(heldValue(direction, followed));
      q.x.push(tf.matMul(select, layer.input));
      const dispatched = new Float32Array(n * E);
      tokens.forEach((t, i) => {
        dispatched[i * E + layer.expertOf[t]] = 1;
        served[layer.expertOf[t]].add(i);
      });
      q.routing.push(tf.mul(tf.matMul(select, layer.probs), tf.tensor2d(dispatched, [n, E])) as T2);
    });
    // The captured tensors were kept through the pass's scope; the products above hold them on the tape.
    tf.dispose(captured.flatMap((c) => [c.input, c.probs]));
    return q;
  }

  /** Replaces the kept copies of the last measurement's probe quantities (probeQuantities, dispose). */
  private keepProbe(q: ProbeQuantities): void {
    const tf = this.tf;
    tf.dispose([...this.probeInputs, ...this.probeDirs, ...this.probeRouting]);
    const copy = (ts: T2[]) => ts.map((t) => tf.keep(tf.clone(t)) as T2);
    [this.probeInputs, this.probeDirs, this.probeRouting] = [copy(q.x), copy(q.u), copy(q.routing)];
  }

  /**
   * Expert e's kernel as the model uses it, K_e = Σ_s (r_s r_sᵀ) ⊙ K_{e,s}^alone, r_s the routing column
   * (p_top where the token is dispatched to e, else 0), K_{e,s}^alone the closed form of layer s, from the
   * probe quantities, as tf ops (float32), differentiable in them and in the expert's weights.
   */
  private kernelTf(e: number, q: ProbeQuantities): T2 {
    const tf = this.tf;
    return tf.tidy(() => {
      const parts = this.switchBlocks.map((l, s) => {
        const v = this.blocks[l].experts![e];
        const alone = tangentKernelTf(q.x[s], q.u[s], v.w1 as unknown as T2, v.b1 as unknown as TF.Tensor1D, v.w2 as unknown as T2);
        const r = tf.slice(q.routing[s], [0, e], [-1, 1]); // n×1
        return tf.mul(alone, tf.matMul(r, r, false, true));
      });
      return (parts.length === 1 ? parts[0] : tf.addN(parts)) as T2;
    });
  }

  /**
   * κ̃ of Σ_{e∈units} K_e along the last measurement's eigenvectors (Hellmann–Feynman), from `kernels[e]`.
   * An expert that serves no probe token has K_e = 0 exactly and is left out of the sum, so it gets no
   * gradient (and, without tokens in the batch either, no Adam step).
   */
  private surrogateKappa(kernels: T2[], units: number[], served: Set<number>[]): TF.Scalar {
    const tf = this.tf;
    const m = this.modelConditioning!;
    const n = m.vMin.length;
    const live = units.filter((e) => served[e].size > 0);
    const K = live.length ? (live.length === 1 ? kernels[live[0]] : tf.addN(live.map((e) => kernels[e]))) : tf.zeros([n, n]);
    return kappaSurrogateTf(K as T2, m.vMin, m.vMax, this.config.monitor.damping);
  }

  /**
   * κ̃ of the model's kernel Σ_{e∈trainable} K_e with the last measurement's eigenvectors held
   * (Hellmann–Feynman) and the probe quantities x, u, p_top computed afresh from the current weights,
   * differentiably (probePass): what a regularized step adds α times (it measures in its own pass
   * first). Its gradient reaches every variable the kernel depends on: experts, routers, attention,
   * layer norms, embeddings, the output layer. Public for the gradient tests.
   */
  modelKappaTf(trainable: number[], pruned: ReadonlySet<number> = new Set()): TF.Scalar {
    if (!this.modelConditioning) throw new Error('modelKappaTf needs a measurement first');
    return this.tf.tidy(() => {
      const q = this.probePass(pruned);
      const kernels = Array.from({ length: this.units }, (_, e) => (trainable.includes(e) ? this.kernelTf(e, q) : undefined));
      return this.surrogateKappa(kernels as T2[], trainable, q.served);
    });
  }

  /** κ of the model's kernel at the last measurement (the headline κ̄). */
  modelKappa(): number | undefined {
    return this.modelConditioning?.kappa;
  }

  /**
   * One optimizer step on CE + 0.01·(load balancing) + α·κ̄, κ̄ the κ of the model's kernel over the
   * trainable experts. Frozen and pruned experts are left out of the variable list; α = 0 skips the
   * regularizer graph. An expert that received no token (batch or probe) has no gradient and is not
   * stepped. A regularized step measures in its own graph (measuresInStep): the probe pass, the experts'
   * kernels read back once and eigen-solved in float64, then κ̃ differentiated along those eigenvectors
   * through the same pass, so the gradient follows x, u and p_top (docs/method.md, "Switch").
   */
  trainStep(batch: Batch, o: StepOptions): StepResult {
    return this.step(batch, o);
  }

  /**
   * The gradients a trainStep with these options would apply (read back by variable name), without
   * applying them, and the step's result: for the tests that hold the in-step regularizer to modelKappaTf.
   */
  objectiveGradients(batch: Batch, o: StepOptions): { gradients: Record<string, Float32Array>; result: StepResult } {
    const gradients: Record<string, Float32Array> = {};
    const result = this.step(batch, o, gradients);
    return { gradients, result };
  }

  /** trainStep; with `captured`, the gradients are read back into it instead of applied. */
  private step(batch: Batch, o: StepOptions, captured?: Record<string, Float32Array>): StepResult {
    const tf = this.tf;
    const { alpha, pruned } = o;
    const trainable = o.trainable.filter((e) => !pruned.has(e));
    const weights = regularizerWeights(this.units, trainable, o.unitWeights);
    const regularized = alpha > 0 && this.probeX !== undefined;
    const varList = this.parameters.stepVariables(trainable);
    const mask = this.softMask.bind(o.softMask) as TF.Tensor1D | undefined;
    if (mask) varList.push(mask as unknown as TF.Variable);
    let maskGrad: number[] | undefined;
    let routed: number[] = [];
    let measured: UnitStats[] | undefined;
    let monitorMs = 0;
    const reported = tf.tidy(() => {
      let taskLossT: TF.Scalar | undefined;
      let regT: TF.Scalar | undefined;
      const { value: total, grads } = tf.variableGrads(() => {
        const out = this.forward(batch.x, pruned, { softMask: mask });
        routed = out.routed;
        taskLossT = tf.keep(this.crossEntropy(out.logits, batch.y));
        let objective = tf.add(taskLossT, tf.mul(out.aux, LOAD_BALANCE_COEFFICIENT)) as TF.Scalar;
        if (!regularized) return objective;
        // The probe's own pass, unmasked (the kernel is the model's as it stands, pruned experts masked).
        const experts = Array.from({ length: this.units }, (_, e) => e);
        const inModel = trainable.filter((e) => weights.w[e] > 0);
        const frozen = new Set(experts.filter((e) => !trainable.includes(e) && !pruned.has(e)));
        const q = this.probePass(pruned);
        this.keepProbe(q);
        const kernels = experts.map((e) => this.kernelTf(e, q));
        const t0 = performance.now();
        const stack = tf.stack(kernels);
        const flat = stack.dataSync() as Float32Array;
        measured = this.record(flat, q.served, frozen, pruned, inModel);
        monitorMs = performance.now() - t0;
        regT = tf.keep(this.surrogateKappa(kernels, inModel, q.served));
        return tf.add(objective, tf.mul(regT, alpha)) as TF.Scalar;
      }, varList);
      if (mask) maskGrad = this.softMask.take(grads);
      if (captured) for (const [name, g] of Object.entries(grads)) captured[name] = Float32Array.from(g.dataSync());
      else this.parameters.applyGradients(grads, trainable, true);
      const figures = [total, taskLossT!, regT ?? tf.scalar(this.modelConditioning?.kappa ?? 0)];
      if (o.gradNorm) figures.push(sumOfSquares(tf, Object.values(grads)));
      const stacked = tf.stack(figures);
      tf.dispose([taskLossT!, ...(regT ? [regT] : [])]);
      return stacked;
    });
    // One device→host transfer per step for everything reported (plus the routing reads in forward).
    const values = reported.dataSync();
    reported.dispose();
    const dispatched = routed.reduce((a, c) => a + c, 0);
    this.lastLoad = routed.map((c) => (dispatched ? c / dispatched : 0));
    // The routing shares of this batch: the fraction of its tokens dispatched to each expert (all Switch layers).
    return {
      loss: values[0],
      taskLoss: values[1],
      regularizer: values[2],
      taskMetric: Math.exp(values[1]),
      ...(o.gradNorm ? { gradNormSq: values[3] } : {}),
      ...(dispatched ? { shares: [...this.lastLoad] } : {}),
      ...(maskGrad ? { maskGrad } : {}),
      ...(measured ? { measured, monitorMs } : {}),
    };
  }

  /**
   * μ, L_f, κ of every expert on the probe tokens (float64 eigen-solve), refreshing the x, u and
   * eigenvectors the regularizer holds. Frozen and pruned experts are measured too: an expert is
   * measured as a function of its own input, whether or not the router currently sends it tokens.
   */
  measure(frozen: ReadonlySet<number>, pruned: ReadonlySet<number>): UnitStats[] {
    const tf = this.tf;
    if (!this.probeX || !this.probeY) throw new Error('setProbe first');
    const experts = Array.from({ length: this.units }, (_, e) => e);
    let served: Set<number>[] = [];
    // Every expert's n×n kernel from backend matmuls in one read-back; the eigen-solve runs in float64.
    // Read back outside tidy: tidy walks a returned typed array entry by entry looking for tensors.
    const kernelStack = tf.tidy(() => {
      const q = this.probePass(pruned);
      served = q.served;
      this.keepProbe(q);
      return tf.stack(experts.map((e) => this.kernelTf(e, q)));
    });
    const kernels = kernelStack.dataSync() as Float32Array;
    kernelStack.dispose();
    return this.record(kernels, served, frozen, pruned, experts.filter((e) => !frozen.has(e) && !pruned.has(e)));
  }

  /**
   * Every expert's stats and the model's conditioning (with the eigenvectors the regularizer holds) from
   * the experts' kernels (E×n×n, float32, read back) and the probe tokens each serves; `inModel`: the
   * experts the model's kernel sums.
   */
  private record(kernels: Float32Array, served: Set<number>[], frozen: ReadonlySet<number>, pruned: ReadonlySet<number>, inModel: number[]): UnitStats[] {
    const n = this.probeTokens().length;
    const damping = this.config.monitor.damping;
    const model = new Float64Array(n * n);
    this.measurements = Array.from({ length: this.units }, (_, id) => {
      const K = Float64Array.from(kernels.subarray(id * n * n, (id + 1) * n * n));
      // Symmetrize: float32 round-off can leave K(i,j) and K(j,i) a few ulps apart.
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) K[i * n + j] = K[j * n + i] = (K[i * n + j] + K[j * n + i]) / 2;
      if (inModel.includes(id)) for (let k = 0; k < n * n; k++) model[k] += K[k];
      // The expert's own κ over the probe tokens routed to it (in any Switch layer); too few: null.
      const rows = [...served[id]].sort((a, b) => a - b);
      const cond = rows.length >= MIN_SERVED ? conditioningValues(principalSubmatrix(K, n, rows), rows.length, damping) : undefined;
      let lf = cond?.lf ?? null;
      if (cond && this.config.monitor.lipschitz === 'spectral-norm') {
        lf = 0;
        for (const l of this.switchBlocks) {
          const v = this.blocks[l].experts![id];
          const sigmas = [v.w1, v.w2].map((w, k) => spectralNormProduct([{ key: `expert${id}/layer${l}/${k ? 'w2' : 'w1'}`, matrix: { data: w.dataSync(), rows: w.shape[0], cols: w.shape[1] as number } }], this.spectral));
          lf += sigmas[0] * sigmas[1];
        }
      }
      const kappa = cond && lf !== null ? dampedKappa(lf, cond.mu, damping) : null;
      return { stats: { id, mu: cond?.mu ?? null, lf, kappa, served: rows.length, frozen: frozen.has(id), pruned: pruned.has(id) }, kernel: K };
    });
    // The model's κ over the probe tokens an expert of the model serves. A token routed only to frozen or
    // pruned experts has a zero row in Σ_{e∈inModel} K_e (the routers and shared layers are left out), so
    // the whole probe's kernel is singular as soon as an expert is frozen: κ would sit at its cap 1/δ and
    // add α/δ to the loss with no useful gradient. Its eigenvectors are embedded back (zeros at the other
    // tokens), so the regularizer's vᵀKv on the full kernel is this submatrix's Rayleigh quotient.
    const modelRows = [...new Set(inModel.flatMap((e) => [...served[e]]))].sort((a, b) => a - b);
    this.modelConditioning = modelRows.length > 0 && modelRows.length < n ? embeddedConditioning(model, n, modelRows, damping) : conditioning(model, n, damping, { solver: 'extremes' });
    return this.measurements.map((m) => m.stats);
  }

  /** Expert e's kernel from the last measurement (tests). */
  lastKernel(e: number): Float64Array {
    const m = this.measurements[e];
    if (!m) throw new Error('measure first');
    return Float64Array.from(m.kernel);
  }


  meanKappa(ids: number[]): number {
    void ids; // κ of the model's kernel: it sums the trainable experts
    return this.modelConditioning?.kappa ?? 0;
  }

  /** Perplexity exp(mean cross-entropy over every position of every window) of a split. */
  evaluate(data: TaskData, split: 'train' | 'test', pruned: ReadonlySet<number> = new Set(), batch = 32): number {
    const tf = this.tf;
    const n = split === 'train' ? data.trainSize : data.testSize;
    let sum = 0;
    let count = 0;
    for (let i = 0; i < n; i += batch) {
      const m = Math.min(batch, n - i);
      const b = data.batch(tf, split, Int32Array.from({ length: m }, (_, k) => i + k));
      const tokens = b.y.size;
      sum += tf.tidy(() => this.crossEntropy(this.forward(b.x, pruned).logits, b.y).dataSync()[0]) * tokens;
      count += tokens;
      tf.dispose([b.x, b.y]);
    }
    return Math.exp(sum / count);
  }

  /** Fraction of the last training batch's tokens routed to each expert (all Switch layers together). */
  extraMetrics(): Record<string, number> {
    return Object.fromEntries(this.lastLoad.map((f, e) => [`load/${e}`, f]));
  }

  /** Expert e's variables, Switch layer by Switch layer: [w1, b1, w2, b2] each. */
  expertVars(e: number): TF.Variable[] {
    return this.switchBlocks.flatMap((l) => {
      const v = this.blocks[l].experts![e];
      return [v.w1, v.b1, v.w2, v.b2];
    });
  }

  /** Everything that belongs to no expert: embeddings, attention, layer norms, dense FFNs, routers, output. */
  sharedVars(): TF.Variable[] {
    const perBlock = this.blocks.flatMap((b) => [
      b.ln1g, b.ln1b, b.wq, b.wk, b.wv, b.wo, b.bo, b.ln2g, b.ln2b,
      ...(b.dense ? [b.dense.w1, b.dense.b1, b.dense.w2, b.dense.b2] : []),
      ...(b.router ? [b.router.w, b.router.b] : []),
    ]);
    return [this.embedding.tokens, this.embedding.positions, ...perBlock, this.head.lnG, this.head.lnB, this.head.w, this.head.b];
  }

  dispose(): void {
    this.parameters.dispose();
    this.tf.dispose([...this.probeInputs, ...this.probeDirs, ...this.probeRouting]);
    this.probeX?.dispose();
    this.probeY?.dispose();
    this.softMask.dispose();
  }
}

/** κ of the principal submatrix of `k` (n×n) on `rows`, its eigenvectors embedded back into length n. */
export function embeddedConditioning(k: ArrayLike<number>, n: number, rows: readonly number[], damping: number): { mu: number; lf: number; kappa: number; vMin: Float64Array; vMax: Float64Array } {
  const c = conditioning(principalSubmatrix(k, n, rows), rows.length, damping, { solver: 'extremes' });
  const embed = (v: Float64Array) => {
    const out = new Float64Array(n);
    rows.forEach((r, i) => (out[r] = v[i]));
    return out;
  };
  return { mu: c.mu, lf: c.lf, kappa: c.kappa, vMin: embed(c.vMin), vMax: embed(c.vMax) };
}
