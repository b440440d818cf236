// Ops whose gradients can be differentiated again, for the regularizers that take the gradient of a
// gradient (bert-encoder, switch-transformer). tfjs 4.22 gets that silently wrong for every op whose
// gradient reads its own output (Softmax, Tanh, Exp, Sigmoid, …): the engine records the saved
// output's clone on the tape *before* the op that produced it, so the backward pass never connects the
// saved output to the op's input and the second derivative through it is dropped (no error; bert's
// regularizer gradient was 20 % off, switch's 5–45 %). Softmax, tanh and sigmoid (the one inside GELU's
// backward pass) are therefore tf.customGrad ops that save their input and recompute the output in the
// backward pass; GELU and layer norm are single ops with closed-form backward passes; the hand-written backward's own ops (GELU′, layer
// norm's backward pass, affine maps; bertEncoder.ts has the attention's) are differentiable once. Everything else (matMul, reshape,
// transpose, concat) differentiates twice as is. Checked against float64 finite differences in
// test/unit/model-bert-encoder.test.ts.
import type * as TF from '@tensorflow/tfjs';
import { loadNativeBlas, type RealArray } from '../engine/native';

const LN_EPSILON = 1e-5;
const GELU_C = Math.sqrt(2 / Math.PI);
/**
 * GELU′ and layer norm's backward pass (the hand-written backward's) run on the host in float64 up to
 * `maxElements` elements of x, as tf ops above it (and bertEncoder.ts's attentionBackward for [CLS]'s
 * query up to this many elements of k): on the bert example's probe (16 examples: [240, 32] and the
 * last layer's [16, 32]) the host beats the 10–20 kernels each way, whose cost is per-kernel overhead
 * and wasm's broadcasts; per element the JavaScript loops are slower (Math.exp, ~10 ns an element on
 * the shared machine), so large inputs keep the ops (docs/performance.md, "Sixth pass"). Where the
 * native addon has these steps compiled, they run on the host up to `compiledMaxElements` (a bound on
 * the host arrays' memory, not a speed limit): compiled, they beat the ops at every size measured,
 * 6–10 % of the regularized step at probes 32 and 64 ("Tenth pass"). `maxElements` 0 turns the host
 * path off (the tests check both paths so). Only on backends whose tensors are in this process's
 * memory (`backends`): on tfjs-node (`tensorflow`, which may run on a GPU) a read-back in the middle of
 * the graph would be a device sync per op, so the ops run there whatever the size.
 */
export const hostElementwise = { maxElements: 8192, compiledMaxElements: 1 << 24, backends: new Set(['wasm', 'cpu']) };

/** Whether the loaded native addon has every host step compiled (a build of this tree; an older one lacks them). */
export function compiledHostSteps(): boolean {
  const blas = loadNativeBlas().blas;
  return !!(blas?.layerNormBackward && blas.layerNormBackwardAdjoint && blas.geluDerivatives && blas.geluDerivativeAdjoint && blas.clsAttentionValue && blas.clsAttentionGradient);
}

/** Whether an op reading this many elements runs on the host (hostElementwise: size, compiled steps and backend). */
export function runsOnHost(tf: typeof TF, elements: number): boolean {
  const { maxElements, compiledMaxElements, backends } = hostElementwise;
  if (maxElements <= 0 || !backends.has(tf.getBackend())) return false;
  return elements <= (compiledHostSteps() ? Math.max(maxElements, compiledMaxElements) : maxElements);
}

/** Whether the native addon's element-wise kernels can read x (a float32 or float64 typed array). */
function isReal(x: ArrayLike<number>): x is RealArray {
  return x instanceof Float32Array || x instanceof Float64Array;
}

/**
 * GELU′ and GELU″ (float64) of xs[from], …, xs[from + n − 1]: with s = σ(2u), u = √(2/π)·(x + 0.044715·x³),
 * GELU′ = s + x·s·(1 − s)·2u′ and GELU″ = s·(1 − s)·(2·2u′ + x·((1 − 2s)·(2u′)² + 2u″)) (twiceDifferentiableActivations).
 */
export function hostGeluDerivatives(xs: ArrayLike<number>, from: number, n: number, scratch = new HostScratch()): { prime: Float64Array; second: Float64Array } {
  const prime = scratch.f64('gelu.prime', n);
  const second = scratch.f64('gelu.second', n);
  const compiled = loadNativeBlas().blas?.geluDerivatives;
  if (compiled && isReal(xs)) {
    compiled(xs, from, n, prime, second);
    return { prime, second };
  }
  for (let i = 0; i < n; i++) {
    const z = xs[from + i];
    const z2 = z * z;
    const s = 1 / (1 + Math.exp(-z * (2 * GELU_C + 2 * 0.044715 * GELU_C * z2)));
    const sc = s * (1 - s);
    const du2 = 2 * GELU_C + 6 * 0.044715 * GELU_C * z2;
    prime[i] = s + z * sc * du2;
    second[i] = sc * (2 * du2 + z * ((1 - 2 * s) * du2 * du2 + 12 * 0.044715 * GELU_C * z));
  }
  return { prime, second };
}

/**
 * The adjoint of dy⊙GELU′(x) (or GELU′(x) without dys) for an upstream ws, from hostGeluDerivatives'
 * arrays: ∂/∂x = ws⊙dy⊙GELU″ into dx[dxFrom …], ∂/∂dy = ws⊙GELU′ into ddy. The host loops are functions
 * of their own, every array a parameter: V8 keeps arrays that a closure captures in its context and
 * reloads them in every iteration (2–5× slower loops, measured).
 */
export function hostGeluDerivativeAdjoint(
  ws: ArrayLike<number>,
  dys: ArrayLike<number> | undefined,
  prime: Float64Array,
  second: Float64Array,
  dx: Float32Array,
  dxFrom: number,
  ddy: Float32Array | undefined,
): void {
  const n = prime.length;
  const compiled = loadNativeBlas().blas?.geluDerivativeAdjoint;
  if (compiled && isReal(ws) && (!dys || isReal(dys))) return compiled(ws, dys ?? null, prime, second, dx, dxFrom, ddy ?? null);
  if (dys) for (let i = 0; i < n; i++) dx[dxFrom + i] = ws[i] * dys[i] * second[i];
  else for (let i = 0; i < n; i++) dx[dxFrom + i] = ws[i] * second[i];
  if (ddy) for (let i = 0; i < n; i++) ddy[i] = ws[i] * prime[i];
}

/** Layer norm's backward pass on the host: F = dx for dy (float64), with what its adjoint reads (hostLayerNormBackward). */
export interface HostLayerNormBackward {
  N: number;
  D: number;
  xhat: Float64Array;
  F: Float64Array;
  r: Float64Array;
  mxaR: Float64Array;
}

/**
 * Layer norm's backward pass (twiceDifferentiableActivations' layerNormBackward) on N rows of D: x's
 * rows from xs[from] on, gain gs, upstream dys [N, D]. Per row, x̂ = (x − mean)·r, r = 1/√(var + ε),
 * a = g⊙dy: F = r·(a − mean(a) − x̂·mean(a⊙x̂)).
 */
export function hostLayerNormBackward(
  xs: ArrayLike<number>,
  from: number,
  gs: ArrayLike<number>,
  dys: ArrayLike<number>,
  N: number,
  D: number,
  scratch = new HostScratch(),
  key = 'ln',
): HostLayerNormBackward {
  const xhat = scratch.f64(`${key}.xhat`, N * D);
  const F = scratch.f64(`${key}.F`, N * D);
  const r = scratch.f64(`${key}.r`, N);
  const mxaR = scratch.f64(`${key}.mxaR`, N);
  const compiled = loadNativeBlas().blas?.layerNormBackward;
  if (compiled && isReal(xs) && isReal(gs) && isReal(dys)) {
    compiled(xs, from, gs, dys, N, D, xhat, F, r, mxaR);
    return { N, D, xhat, F, r, mxaR };
  }
  for (let i = 0, o = 0; i < N; i++, o += D) {
    const x0 = from + o;
    let mean = 0;
    for (let j = 0; j < D; j++) mean += xs[x0 + j];
    mean /= D;
    let variance = 0;
    for (let j = 0; j < D; j++) variance += (xs[x0 + j] - mean) ** 2;
    const ri = 1 / Math.sqrt(variance / D + LN_EPSILON);
    let ma = 0;
    let mxa = 0;
    for (let j = 0; j < D; j++) {
      const xh = (xs[x0 + j] - mean) * ri;
      const a = dys[o + j] * gs[j];
      xhat[o + j] = xh;
      ma += a;
      mxa += a * xh;
    }
    ma /= D;
    mxa /= D;
    for (let j = 0; j < D; j++) F[o + j] = (dys[o + j] * gs[j] - ma - xhat[o + j] * mxa) * ri;
    r[i] = ri;
    mxaR[i] = mxa * ri;
  }
  return { N, D, xhat, F, r, mxaR };
}

/**
 * hostLayerNormBackward's adjoint for an upstream ws [N, D]: ∂/∂x into dx[dxFrom …] (written), ∂/∂g added
 * into dg, ∂/∂dy into ddy (written). With P(w) = r·(w − mean(w) − x̂·mean(w⊙x̂)): ∂/∂dy = g⊙P(w),
 * ∂/∂g = Σ_rows dy⊙P(w), ∂/∂x = −(x̂·r·mean(w⊙F) + P(w)·r·mean(a⊙x̂) + F·r·mean(w⊙x̂)).
 */
export function hostLayerNormBackwardAdjoint(
  forward: HostLayerNormBackward,
  gs: ArrayLike<number>,
  dys: ArrayLike<number>,
  ws: ArrayLike<number>,
  dx: Float32Array | Float64Array,
  dxFrom: number,
  dg: Float64Array,
  ddy: Float32Array | Float64Array,
): void {
  const { N, D, xhat, F, r, mxaR } = forward;
  const compiled = loadNativeBlas().blas?.layerNormBackwardAdjoint;
  if (compiled && isReal(gs) && isReal(dys) && isReal(ws)) return compiled(xhat, F, r, mxaR, N, D, gs, dys, ws, dx, dxFrom, dg, ddy);
  for (let i = 0, o = 0; i < N; i++, o += D) {
    let mw = 0;
    let mxw = 0;
    let mwF = 0;
    for (let j = 0; j < D; j++) {
      mw += ws[o + j];
      mxw += ws[o + j] * xhat[o + j];
      mwF += ws[o + j] * F[o + j];
    }
    [mw, mxw, mwF] = [mw / D, mxw / D, mwF / D];
    const ri = r[i];
    for (let j = 0; j < D; j++) {
      const pw = (ws[o + j] - mw - xhat[o + j] * mxw) * ri;
      dx[dxFrom + o + j] = -(xhat[o + j] * mwF * ri + pw * mxaR[i] + F[o + j] * mxw * ri);
      dg[j] += dys[o + j] * pw;
      ddy[o + j] = pw * gs[j];
    }
  }
}

/**
 * Typed arrays for a host op's working values, kept from call to call (each key's array sized on first
 * use, replaced when its size changes), so that a step's host ops allocate nothing after the first: layer
 * 0's allocated ~1.3 MB a call. Measured, it did not pay by itself (V8 keeps typed arrays off the JS heap,
 * so they barely fed the scavenges: docs/performance.md, "Ninth pass"); the ranged reads write into it.
 * One scratch per op site (a model's layer): an op's forward pass claims it (`claim`), its gradient
 * reads the arrays the forward filled and checks that no later forward pass of the same site has
 * claimed them since (`check`: an error, never silently wrong values). Never hand a scratch array to tf
 * as a tensor's values (the cpu backend keeps the array). A fresh HostScratch allocates as before.
 */
export class HostScratch {
  private readonly arrays = new Map<string, Float32Array | Float64Array>();
  private claims = 0;

  f32(key: string, n: number): Float32Array {
    return this.array(key, n, Float32Array);
  }

  f64(key: string, n: number): Float64Array {
    return this.array(key, n, Float64Array);
  }

  /** key's array of n elements of this type: the kept one, or a fresh one kept in its place. */
  private array<A extends Float32Array | Float64Array>(key: string, n: number, type: new (n: number) => A): A {
    const a = this.arrays.get(key);
    if (a instanceof type && a.length === n) return a;
    const fresh = new type(n);
    this.arrays.set(key, fresh);
    return fresh;
  }

  /** A forward pass starts using the arrays: the token its gradient checks. */
  claim(): number {
    return ++this.claims;
  }

  /** Throws if a forward pass claimed the arrays after the one holding `token` (its values are gone). */
  check(token: number, what: string): void {
    if (token !== this.claims) throw new Error(`${what}: its host scratch was reused by a later forward pass before this gradient ran (one scratch per op site and step)`);
  }
}

/** Whether hostProduct multiplies with the native addon's sgemm (loaded in this process), not JavaScript loops. */
export function nativeHostProducts(): boolean {
  return loadNativeBlas().blas !== undefined;
}

/**
 * C [m, n] = op(A)·op(B) in float32 for the host ops (A [m, k] or, transposed, [k, m]; B [k, n] or [n, k]):
 * the native addon's sgemm where it is loaded (what tf.matMul runs on wasm), JavaScript loops otherwise.
 */
export function hostProduct(a: Float32Array, b: Float32Array, m: number, n: number, k: number, transA = false, transB = false, into?: Float32Array): Float32Array {
  if (into && into.length !== m * n) throw new Error(`hostProduct: a [${m}, ${n}] product into an array of ${into.length}`);
  const c = into ?? new Float32Array(m * n);
  const blas = loadNativeBlas().blas;
  if (blas) {
    blas.gemm(a, b, c, 1, m, n, k, transA, transB, 0, 0, null, false);
    return c;
  }
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = sum;
    }
  return c;
}

export interface TwiceDifferentiableActivations {
  /** Softmax over the last axis. */
  softmax<T extends TF.Tensor>(x: T): T;
  tanh<T extends TF.Tensor>(x: T): T;
  /** GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
  gelu<T extends TF.Tensor>(x: T): T;
  /** Layer norm over the last axis of x [N, D] with gain g and bias b [D] (variance of the row, ε inside the root). */
  layerNorm(x: TF.Tensor2D, g: TF.Tensor1D, b: TF.Tensor1D): TF.Tensor2D;
  /**
   * GELU′(x), or dy⊙GELU′(x) with `upstream` dy, one op whose gradient is in closed form (GELU″; once
   * differentiable: the hand-written backward's). On the host up to hostElementwise.maxElements.
   * With `fromRow`, of x's rows from that one on (as many as `upstream` has, or the rest): a joint
   * pass's tensor, its gradient zero at the other rows (without a slice op and its pad).
   */
  geluDerivative<T extends TF.Tensor>(x: T, hold?: TF.Tensor[], upstream?: T, fromRow?: number): T;
  /**
   * Layer norm's backward pass as one op: dx = ∂⟨dy, layerNorm(x, g, ·)⟩/∂x [N, D], once differentiable
   * in x, g and dy (closed form; the hand-written backward's). On the host up to hostElementwise.maxElements.
   * With `fromRow`, of x's rows from that one on, as many as dy has (as geluDerivative).
   */
  layerNormBackward(x: TF.Tensor2D, g: TF.Tensor1D, dy: TF.Tensor2D, hold?: TF.Tensor[], fromRow?: number): TF.Tensor2D;
  /**
   * a·W (a·Wᵀ with `transposeW`) + bias + residual as one op (bias and residual optional): its gradient
   * is dy·Wᵀ, aᵀ·dy, Σ_rows dy and dy, without a matMul's and two adds' bookkeeping (tape nodes, saved
   * clones, the adds' reshapes). Saves a and W; once differentiable (the hand-written backward's).
   */
  affine(a: TF.Tensor2D, w: TF.Tensor2D, o?: { bias?: TF.Tensor1D; residual?: TF.Tensor2D; transposeW?: boolean; hold?: TF.Tensor[] }): TF.Tensor2D;
}

// `hold` (the once-differentiable ops above): what the op's backward reads is kept by reference and
// pushed onto `hold`, whose owner disposes it after the backward pass (a training step: BertEncoder's
// endStep), instead of handed to the tape's save, which clones each tensor (an Identity kernel and a
// tape node each, ~60 per bert step). So the hold owns the op's inputs too: pass only tensors of the
// same step (its intermediates), variables or kept tensors; the last two are read as they are, never
// held (their owners dispose them, not before the backward pass).

const activationsCache = new WeakMap<object, TwiceDifferentiableActivations>();

/**
 * What a tf.customGrad op's backward reads (call it in the op's forward with the op's save function):
 * the tape's saved clones, or with `hold` the tensors themselves, kept and pushed onto it (see above:
 * the hold owns them; variables and kept tensors are read as they are). Returns the reader of `saved`.
 */
export function keptForBackward(tf: typeof TF, tensors: TF.Tensor[], save: TF.GradSaveFunc, hold: TF.Tensor[] | undefined): (saved: TF.Tensor[]) => TF.Tensor[] {
  if (!hold) {
    save(tensors);
    return (saved) => saved;
  }
  for (const t of tensors) if (!(t instanceof tf.Variable) && !t.kept) hold.push(tf.keep(t));
  return () => tensors;
}

/**
 * Softmax, tanh, GELU and layer norm whose gradients can be differentiated again, and the hand-written
 * backward's ops, differentiable once (see the file comment). One set per tf instance.
 */
export function twiceDifferentiableActivations(tf: typeof TF): TwiceDifferentiableActivations {
  const cached = activationsCache.get(tf);
  if (cached) return cached;
  const keepForBackward = (tensors: TF.Tensor[], save: TF.GradSaveFunc, hold: TF.Tensor[] | undefined) => keptForBackward(tf, tensors, save, hold);
  // Σ over the rows of [N, D] as a product with a row of ones: tfjs-backend-wasm reduces over a leading
  // axis by transposing first (~70 against ~40 µs of CPU on [720, 32], 84 against 11 on [480, 96]).
  const columnSums = (t: TF.Tensor) => tf.reshape(tf.matMul(tf.ones([1, t.shape[0]]), t as TF.Tensor2D), [t.shape[1]!]);
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
  // GELU through the logistic function: 1 + tanh(u) = 2·σ(2u), so GELU(x) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³),
  // and GELU′(x) = s + x·s·(1 − s)·2u′ with s = σ(2u) (tfjs-backend-wasm's Tanh costs 10–20× its Sigmoid: about 250
  // against 20 µs of CPU on [480, 32], docs/performance.md). A sigmoid that recomputes its output in the backward pass, as twiceTanh.
  const twiceSigmoid = recomputing(
    (x) => tf.sigmoid(x),
    (dy, y) => tf.mul(dy, tf.mul(y, tf.sub(1, y))),
  );
  // 2u = x·(2c + 2c·0.044715·x²) and 2u′ = 2c + 6c·0.044715·x² from x² (c = √(2/π)).
  const twoU = (x: TF.Tensor, x2: TF.Tensor) => tf.mul(x, tf.add(tf.mul(x2, 2 * 0.044715 * GELU_C), 2 * GELU_C));
  const twoDu = (x2: TF.Tensor) => tf.add(tf.mul(x2, 6 * 0.044715 * GELU_C), 2 * GELU_C);
  const recomputingGelu = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const x = args[0] as TF.Tensor;
    (args[1] as TF.GradSaveFunc)([x]);
    return {
      value: tf.mul(x, tf.sigmoid(twoU(x, tf.square(x)))),
      gradFunc: (dy: TF.Tensor, [saved]: TF.Tensor[]) => {
        const x2 = tf.square(saved);
        const sg = twiceSigmoid(twoU(saved, x2));
        return tf.mul(dy, tf.add(sg, tf.mul(tf.mul(saved, tf.mul(sg, tf.sub(1, sg))), twoDu(x2))));
      },
    };
  }) as <T extends TF.Tensor>(x: T) => T;
  // With s = σ(2u): GELU′ = s + x·s·(1 − s)·2u′ and GELU″ = s·(1 − s)·(2·2u′ + x·((1 − 2s)·(2u′)² + 2u″)),
  // u′ = √(2/π)·(1 + 3·0.044715·x²), u″ = 6·0.044715·√(2/π)·x (the tanh forms' 1 − t² = 4s·(1 − s)).
  // Once differentiable (the outer gradient does not differentiate its gradFunc), so the backward pass may
  // read s, s·(1 − s) and 2u′ as the forward computed them (saved) instead of recomputing them from x.
  // With `upstream` dy the op is dy⊙GELU′(x) (the hand-written backward's step through GELU): ∂/∂x = w⊙dy⊙GELU″, ∂/∂dy = w⊙GELU′.
  const geluDerivativeOps = <T extends TF.Tensor>(input: T, hold?: TF.Tensor[], upstream?: T): T =>
    (
      tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
        const x = args[0] as TF.Tensor;
        const dy = upstream ? (args[1] as TF.Tensor) : undefined;
        const x2 = tf.square(x);
        const sg = tf.sigmoid(twoU(x, x2));
        const sgc = tf.mul(sg, tf.sub(1, sg));
        const du2 = twoDu(x2);
        const prime = tf.add(sg, tf.mul(tf.mul(x, sgc), du2));
        const read = keepForBackward(dy ? [x, sg, sgc, du2, dy, prime] : [x, sg, sgc, du2], args[args.length - 1] as TF.GradSaveFunc, hold);
        return {
          value: dy ? tf.mul(dy, prime) : prime,
          gradFunc: (w: TF.Tensor, saved: TF.Tensor[]) => {
            const [sx, ss, ssc, sdu2, sdy, sPrime] = read(saved);
            // GELU″ = s(1 − s)·(2·2u′ + x·((1 − 2s)·(2u′)² + 2u″)), 2u″ = 12c·0.044715·x.
            const inner = tf.add(tf.mul(tf.sub(1, tf.mul(ss, 2)), tf.square(sdu2)), tf.mul(sx, 12 * 0.044715 * GELU_C));
            const dx = tf.mul(sdy ? tf.mul(w, sdy) : w, tf.mul(ssc, tf.add(tf.mul(sdu2, 2), tf.mul(sx, inner))));
            return sdy ? [dx, tf.mul(w, sPrime)] : dx;
          },
        };
      }) as (...t: TF.Tensor[]) => T
    )(...(upstream ? [input, upstream] : [input]));
  // Per row, with x̂ = (x − mean)·r, r = 1/√(var + ε), a = g⊙dy and P(w) = w − mean(w) − x̂·mean(w⊙x̂)
  // (symmetric): dx = F = r·P(a). Its adjoint for an upstream w: ∂/∂dy = g⊙r·P(w), ∂/∂g = Σ_rows dy⊙r·P(w),
  // ∂/∂x = −r·(mean(w⊙F)·x̂ + r·mean(a⊙x̂)·P(w) + r·mean(w⊙x̂)·P(a)) (from δx̂ = r·P(δx) and δr = −r²·mean(x̂⊙δx)).
  // Once differentiable: the backward pass reads x̂, r, F = r·P(a) (the value) and r·mean(a⊙x̂) as the
  // forward computed them.
  const layerNormBackwardOps = (input: TF.Tensor2D, gain: TF.Tensor1D, upstream: TF.Tensor2D, hold?: TF.Tensor[]): TF.Tensor2D =>
    (
      tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
        const [x, g, dy] = args as TF.Tensor[];
        const mean = (t: TF.Tensor) => tf.mean(t, -1, true);
        const centered = tf.sub(x, mean(x));
        const inv = tf.rsqrt(tf.add(mean(tf.square(centered)), LN_EPSILON));
        const xhat = tf.mul(centered, inv);
        const a = tf.mul(dy, g);
        const mxa = mean(tf.mul(a, xhat));
        const F = tf.mul(tf.sub(tf.sub(a, mean(a)), tf.mul(xhat, mxa)), inv);
        const read = keepForBackward([xhat, inv, g, dy, F, tf.mul(mxa, inv)], args[3] as TF.GradSaveFunc, hold);
        return {
          value: F,
          gradFunc: (w: TF.Tensor, saved: TF.Tensor[]) => {
            const [sxhat, r, sg, sdy, sF, mxaR] = read(saved);
            const mxw = mean(tf.mul(w, sxhat));
            const Pw = tf.mul(tf.sub(tf.sub(w, mean(w)), tf.mul(sxhat, mxw)), r);
            const dx = tf.neg(tf.add(tf.add(tf.mul(sxhat, tf.mul(mean(tf.mul(w, sF)), r)), tf.mul(Pw, mxaR)), tf.mul(sF, tf.mul(mxw, r))));
            return [dx, columnSums(tf.mul(sdy, Pw)), tf.mul(Pw, sg)];
          },
        };
      }) as (x: TF.Tensor2D, g: TF.Tensor1D, dy: TF.Tensor2D) => TF.Tensor2D
    )(input, gain, upstream);
  // The same two ops on the host (hostElementwise): value in float64 from the read-back inputs (dataSync,
  // a copy out of the backend's memory), gradient in float64 from the read-back upstream, the formulas
  // above; one op each way in place of 10–20 element-wise kernels each way. What the gradient reads
  // stays in the closure as host arrays: no saved clones, nothing held (`hold` is not needed).
  // With `fromRow`, x holds more rows than the op reads (a joint pass's tensor): it reads rows fromRow,
  // fromRow + 1, … (as many as the upstream has), and its gradient in x is zero at the others.
  const geluDerivativeHost = <T extends TF.Tensor>(input: T, upstream: T | undefined, fromRow: number): T =>
    (
      tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
        const x = args[0] as TF.Tensor;
        const perRow = x.size / x.shape[0];
        const outShape = upstream ? upstream.shape : [x.shape[0] - fromRow, ...x.shape.slice(1)];
        const n = outShape.reduce((a, b) => a * b, 1);
        const dys = upstream ? ((args[1] as TF.Tensor).dataSync() as Float32Array) : undefined;
        const { prime, second } = hostGeluDerivatives(x.dataSync() as Float32Array, fromRow * perRow, n);
        const value = new Float32Array(n);
        for (let i = 0; i < n; i++) value[i] = dys ? dys[i] * prime[i] : prime[i];
        return {
          value: tf.tensor(value, outShape),
          gradFunc: (w: TF.Tensor) => {
            const dx = new Float32Array(x.size);
            const ddy = dys ? new Float32Array(n) : undefined;
            hostGeluDerivativeAdjoint(w.dataSync() as Float32Array, dys, prime, second, dx, fromRow * perRow, ddy);
            return ddy ? [tf.tensor(dx, x.shape), tf.tensor(ddy, outShape)] : tf.tensor(dx, x.shape);
          },
        };
      }) as (...t: TF.Tensor[]) => T
    )(...(upstream ? [input, upstream] : [input]));
  // Layer norm's backward pass, the formulas of layerNormBackwardOps: the gradient reads x̂, r, F and r·mean(a⊙x̂) as the forward computed them.
  const layerNormBackwardHost = (input: TF.Tensor2D, gain: TF.Tensor1D, upstream: TF.Tensor2D, fromRow: number): TF.Tensor2D =>
    (
      tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
        const [x, g, dy] = args as TF.Tensor[];
        const [N, D] = dy.shape as [number, number];
        const [gs, dys] = [g, dy].map((t) => t.dataSync() as Float32Array);
        const forward = hostLayerNormBackward(x.dataSync() as Float32Array, fromRow * D, gs, dys, N, D);
        return {
          value: tf.tensor2d(new Float32Array(forward.F), [N, D]),
          gradFunc: (w: TF.Tensor) => {
            const dx = new Float32Array(x.size);
            const dg = new Float64Array(D);
            const ddy = new Float32Array(N * D);
            hostLayerNormBackwardAdjoint(forward, gs, dys, w.dataSync() as Float32Array, dx, fromRow * D, dg, ddy);
            return [tf.tensor(dx, x.shape), tf.tensor1d(new Float32Array(dg)), tf.tensor2d(ddy, [N, D])];
          },
        };
      }) as (x: TF.Tensor2D, g: TF.Tensor1D, dy: TF.Tensor2D) => TF.Tensor2D
    )(input, gain, upstream);
  // x's rows fromRow, fromRow + 1, … (`rows` of them) for the tf ops: a slice (its gradient pads).
  const rowsOf = <T extends TF.Tensor>(x: T, fromRow: number, rows: number): T =>
    fromRow === 0 && rows === x.shape[0] ? x : (tf.slice(x, [fromRow, ...x.shape.slice(1).map(() => 0)], [rows, ...x.shape.slice(1)]) as T);
  const onHost = (rows: number, x: TF.Tensor) => runsOnHost(tf, (rows * x.size) / x.shape[0]);
  const geluDerivative = <T extends TF.Tensor>(x: T, hold?: TF.Tensor[], upstream?: T, fromRow = 0): T => {
    const rows = upstream ? upstream.shape[0] : x.shape[0] - fromRow;
    return onHost(rows, x) ? geluDerivativeHost(x, upstream, fromRow) : geluDerivativeOps(rowsOf(x, fromRow, rows), hold, upstream);
  };
  const layerNormBackward = (x: TF.Tensor2D, g: TF.Tensor1D, dy: TF.Tensor2D, hold?: TF.Tensor[], fromRow = 0): TF.Tensor2D =>
    onHost(dy.shape[0], x) ? layerNormBackwardHost(x, g, dy, fromRow) : layerNormBackwardOps(rowsOf(x, fromRow, dy.shape[0]), g, dy, hold);
  const affine = (a: TF.Tensor2D, w: TF.Tensor2D, o: { bias?: TF.Tensor1D; residual?: TF.Tensor2D; transposeW?: boolean; hold?: TF.Tensor[] } = {}): TF.Tensor2D => {
    const extra = [...(o.bias ? [o.bias] : []), ...(o.residual ? [o.residual] : [])];
    const tw = o.transposeW === true;
    return (
      tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
        const [x, m] = args as TF.Tensor2D[];
        const read = keepForBackward([x, m], args[args.length - 1] as TF.GradSaveFunc, o.hold);
        let value: TF.Tensor = tf.matMul(x, m, false, tw);
        for (const t of args.slice(2, args.length - 1) as TF.Tensor[]) value = tf.add(value, t);
        return {
          value,
          gradFunc: (dy: TF.Tensor, saved: TF.Tensor[]) => {
            const [sx, sm] = read(saved);
            return [
              tf.matMul(dy as TF.Tensor2D, sm as TF.Tensor2D, false, !tw),
              tw ? tf.matMul(dy as TF.Tensor2D, sx as TF.Tensor2D, true, false) : tf.matMul(sx as TF.Tensor2D, dy as TF.Tensor2D, true, false),
              ...(o.bias ? [columnSums(dy)] : []),
              ...(o.residual ? [dy] : []),
            ];
          },
        };
      }) as (...t: TF.Tensor[]) => TF.Tensor2D
    )(a, w, ...extra);
  };
  const activations: TwiceDifferentiableActivations = {
    affine,
    geluDerivative,
    layerNormBackward,
    softmax: recomputing(
      (x) => tf.softmax(x),
      (dy, y) => tf.mul(y, tf.sub(dy, tf.sum(tf.mul(dy, y), -1, true))),
    ),
    tanh: twiceTanh,
    // One op on the tape (its forward ops are not recorded); the backward is its closed-form derivative
    // s + x·s·(1 − s)·2u′, s = σ(2u) recomputed with the twice-differentiable sigmoid above.
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
          return [dx, columnSums(tf.mul(dy, normalized)), columnSums(dy)];
        },
      };
    }) as (x: TF.Tensor2D, g: TF.Tensor1D, b: TF.Tensor1D) => TF.Tensor2D,
  };
  activationsCache.set(tf, activations);
  return activations;
}
