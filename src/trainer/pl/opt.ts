// OPT (orthogonal over-parameterized training, Liu et al., CVPR 2021): a layer's neurons V are drawn
// once and frozen, and what trains is an orthogonal transform Q of the space they live in, W = Q·V.
// Q comes from an unconstrained R by the Cayley map, S = triu(R,1) − triu(R,1)ᵀ, Q = (I + S)(I − S)⁻¹.
// Since Q is orthogonal, every angle between neurons, and so the hyperspherical energy of the layer,
// stays that of the random initialization (see docs/opt.md).
import type * as TF from '@tensorflow/tfjs';

/**
 * I − S for S = triu(R,1) − triu(R,1)ᵀ, float64. It is always invertible and well conditioned: its
 * symmetric part is I, so its singular values are √(1 + σᵢ(S)²) ≥ 1 and ‖(I − S)⁻¹‖ ≤ 1.
 */
function iMinusSkew(r: ArrayLike<number>, m: number): Float64Array {
  if (r.length !== m * m) throw new RangeError(`expected ${m}×${m} = ${m * m} entries, got ${r.length}`);
  const a = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    a[i * m + i] = 1;
    for (let j = i + 1; j < m; j++) {
      const rij = r[i * m + j];
      if (!Number.isFinite(rij)) throw new RangeError(`R(${i}, ${j}) is ${rij}`);
      a[i * m + j] = -rij; // (I − S)ij = −Sij
      a[j * m + i] = rij;
    }
  }
  return a;
}

/**
 * The Cayley map in float64, Q = (I + S)(I − S)⁻¹ = 2(I − S)⁻¹ − I (since I + S = 2I − (I − S)): one
 * inverse and no product. r is row-major m×m; only its strict upper triangle is used.
 */
export function cayleyFloat64(r: ArrayLike<number>, m: number): Float64Array {
  const a = iMinusSkew(r, m);
  invertInPlace(a, m);
  for (let i = 0; i < a.length; i++) a[i] *= 2;
  for (let i = 0; i < m; i++) a[i * m + i] -= 1;
  return a;
}

/** row_i −= f·row_k over columns [from, width): this loop is all of the O(m³) work. */
function axpyRow(a: Float64Array, rowI: number, rowK: number, f: number, from: number, width: number): void {
  for (let j = from; j < width; j++) a[rowI + j] -= f * a[rowK + j];
}

function swapRows(a: Float64Array, i: number, k: number, width: number): void {
  for (let j = 0; j < width; j++) {
    const t = a[i * width + j];
    a[i * width + j] = a[k * width + j];
    a[k * width + j] = t;
  }
}

function pivotRow(a: Float64Array, k: number, m: number): number {
  let p = k;
  for (let i = k + 1; i < m; i++) if (Math.abs(a[i * m + k]) > Math.abs(a[p * m + k])) p = i;
  return p;
}

/**
 * In-place Gauss–Jordan inverse with partial (row) pivoting, m³ multiply-adds; the row swaps become
 * column swaps of the inverse, undone in reverse order. tfjs 4.22 has no solve or inverse op, so this
 * runs in JS, in float64, inside the custom gradient of `cayley`.
 */
function invertInPlace(a: Float64Array, m: number): void {
  const swaps = new Int32Array(m);
  for (let k = 0; k < m; k++) {
    const p = (swaps[k] = pivotRow(a, k, m));
    if (p !== k) swapRows(a, k, p, m);
    const rowK = k * m;
    const inv = 1 / a[rowK + k];
    a[rowK + k] = 1;
    for (let j = 0; j < m; j++) a[rowK + j] *= inv;
    for (let i = 0; i < m; i++) {
      const f = a[i * m + k];
      if (i === k || f === 0) continue;
      a[i * m + k] = 0;
      axpyRow(a, i * m, rowK, f, 0, m);
    }
  }
  for (let k = m - 1; k >= 0; k--) {
    const p = swaps[k];
    if (p === k) continue;
    for (let i = 0; i < m; i++) {
      const t = a[i * m + k];
      a[i * m + k] = a[i * m + p];
      a[i * m + p] = t;
    }
  }
}

/** P·A = L·U in place (L unit lower, U upper), partial pivoting, m³/3 multiply-adds; swaps[k] is step k's pivot row. */
function luInPlace(a: Float64Array, m: number): Int32Array {
  const swaps = new Int32Array(m);
  for (let k = 0; k < m; k++) {
    const p = (swaps[k] = pivotRow(a, k, m));
    if (p !== k) swapRows(a, k, p, m);
    const pivot = a[k * m + k];
    for (let i = k + 1; i < m; i++) {
      const f = (a[i * m + k] /= pivot);
      if (f !== 0) axpyRow(a, i * m, k * m, f, k + 1, m);
    }
  }
  return swaps;
}

/** A·X = B for the factored A; B is row-major m×k, overwritten by X. 2m²k multiply-adds. */
function luSolve(lu: Float64Array, swaps: Int32Array, b: Float64Array, m: number, k: number): void {
  for (let i = 0; i < m; i++) if (swaps[i] !== i) swapRows(b, i, swaps[i], k);
  for (let i = 0; i < m; i++) for (let t = 0; t < i; t++) axpyBlock(b, i, t, lu[i * m + t], k);
  for (let i = m - 1; i >= 0; i--) {
    for (let t = i + 1; t < m; t++) axpyBlock(b, i, t, lu[i * m + t], k);
    const inv = 1 / lu[i * m + i];
    for (let j = 0; j < k; j++) b[i * k + j] *= inv;
  }
}

/** Aᵀ·Y = G for the factored A (Aᵀ = Uᵀ·Lᵀ·P); G is row-major m×k, overwritten by Y. */
function luSolveTransposed(lu: Float64Array, swaps: Int32Array, g: Float64Array, m: number, k: number): void {
  for (let t = 0; t < m; t++) {
    const inv = 1 / lu[t * m + t];
    for (let j = 0; j < k; j++) g[t * k + j] *= inv;
    for (let i = t + 1; i < m; i++) axpyBlock(g, i, t, lu[t * m + i], k); // Uᵀ: row t of U is column t of Uᵀ
  }
  for (let t = m - 1; t >= 0; t--) for (let i = 0; i < t; i++) axpyBlock(g, i, t, lu[t * m + i], k);
  for (let i = m - 1; i >= 0; i--) if (swaps[i] !== i) swapRows(g, i, swaps[i], k);
}

/** row_i −= f·row_t of a row-major matrix with k columns. */
function axpyBlock(x: Float64Array, i: number, t: number, f: number, k: number): void {
  if (f !== 0) axpyRow(x, i * k, t * k, f, 0, k);
}

/**
 * ∂L/∂R from G = ∂L/∂Q (float64 reference of the tf gradient). With P = (I − S)⁻¹, Q = 2P − I gives
 * dQ = 2P·dS·P, so ∂L/∂S = 2PᵀGPᵀ = ½(I + Qᵀ)·G·(I + Qᵀ), using Pᵀ = (I + Qᵀ)/2: no second inverse.
 * Then Sij = Rij − Rji above the diagonal gives ∂L/∂Rij = (∂L/∂S)ij − (∂L/∂S)ji for i < j, 0 elsewhere.
 */
export function cayleyVjpFloat64(q: ArrayLike<number>, g: ArrayLike<number>, m: number): Float64Array {
  if (q.length !== m * m || g.length !== m * m) throw new RangeError(`expected two ${m}×${m} matrices, got ${q.length} and ${g.length} entries`);
  const ip = new Float64Array(m * m); // I + Qᵀ
  for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) ip[i * m + j] = q[j * m + i] + (i === j ? 1 : 0);
  const gs = matmul(matmul(ip, g, m), ip, m);
  const gr = new Float64Array(m * m);
  for (let i = 0; i < m; i++) for (let j = i + 1; j < m; j++) gr[i * m + j] = (gs[i * m + j] - gs[j * m + i]) / 2;
  return gr;
}

function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number): Float64Array {
  const out = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < m; t++) {
      const ait = a[i * m + t];
      if (ait === 0) continue;
      for (let j = 0; j < m; j++) out[i * m + j] += ait * b[t * m + j];
    }
  }
  return out;
}

/**
 * The orthogonal Q = cayley(R) as a tf op, differentiable w.r.t. r (also a tf.Variable under
 * tf.variableGrads). r is m×m, or b×m×m for b independent blocks (a block-diagonal Q). The forward pass
 * reads R back (one sync) and inverts in float64 (cayleyFloat64), so Q is orthogonal to float32
 * rounding whatever the optimizer did to R: nothing accumulates over steps. The backward pass is the
 * closed form of cayleyVjpFloat64 in backend matmuls (float32), from the saved Q.
 */
export function cayley(tf: typeof TF, r: TF.Tensor): TF.Tensor {
  const shape = r.shape;
  if ((shape.length !== 2 && shape.length !== 3) || shape[shape.length - 1] !== shape[shape.length - 2]) {
    throw new RangeError(`cayley needs an m×m or b×m×m parameter, got ${shape.join('×')}`);
  }
  const m = shape[shape.length - 1];
  const blocks = shape.length === 3 ? shape[0] : 1;
  // customGrad passes inputs and the save function as one untyped list.
  const forward = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const [rIn, save] = args as [TF.Tensor, TF.GradSaveFunc];
    const rData = rIn.dataSync();
    const qData = new Float32Array(blocks * m * m);
    for (let b = 0; b < blocks; b++) qData.set(cayleyFloat64(rData.subarray(b * m * m, (b + 1) * m * m), m), b * m * m);
    const q = tf.tensor(qData, shape);
    save([q]);
    return {
      value: q,
      gradFunc: (dy: TF.Tensor, saved: TF.Tensor[]) => {
        const qT = tf.transpose(saved[0], shape.length === 3 ? [0, 2, 1] : [1, 0]);
        const left = tf.add(dy, tf.matMul(qT, dy)); // (I + Qᵀ)·G
        const gs = tf.mul(tf.add(left, tf.matMul(left, qT)), 0.5); // ½(I + Qᵀ)·G·(I + Qᵀ)
        const upper = tf.tensor2d(strictUpperMask(m), [m, m]);
        return tf.mul(tf.sub(gs, tf.transpose(gs, shape.length === 3 ? [0, 2, 1] : [1, 0])), upper);
      },
    };
  });
  return forward(r);
}

/**
 * cayley(r)·v without forming Q, for a few neurons in a wide space (v m×k, k ≪ m): Q·V = 2(I − S)⁻¹V − V
 * needs one LU of I − S (m³/3) and k solves (2m²k), about a third of the m³ of the inverse `cayley` builds.
 * The backward pass reuses the LU: with Y = (I − S)⁻ᵀ·G and Z = (I − S)⁻¹·V (kept from the forward pass),
 * ∂L/∂S = 2PᵀG·VᵀPᵀ = 2Y·Zᵀ, so ∂L/∂R = triu(2(Y·Zᵀ − Z·Yᵀ), 1), and ∂L/∂V = Qᵀ·G = 2Y − G.
 * r is m×m with v m×k, or b×m×m with v b×m×k (a block-diagonal Q, block i acting on v[i]).
 */
export function cayleyMatMul(tf: typeof TF, r: TF.Tensor, v: TF.Tensor): TF.Tensor {
  const rank = r.shape.length;
  const m = r.shape[rank - 1];
  if ((rank !== 2 && rank !== 3) || r.shape[rank - 2] !== m || v.shape.length !== rank || v.shape[rank - 2] !== m || (rank === 3 && v.shape[0] !== r.shape[0])) {
    throw new RangeError(`cayleyMatMul needs R m×m with V m×k, or R b×m×m with V b×m×k; got ${r.shape.join('×')} and ${v.shape.join('×')}`);
  }
  const blocks = rank === 3 ? r.shape[0] : 1;
  const k = v.shape[rank - 1];
  const product = tf.customGrad((...args: (TF.Tensor | TF.GradSaveFunc)[]) => {
    const [rIn, vIn] = args as [TF.Tensor, TF.Tensor];
    const rData = rIn.dataSync();
    const vData = vIn.dataSync();
    const factors: { lu: Float64Array; swaps: Int32Array }[] = [];
    const z = Float64Array.from(vData); // becomes (I − S)⁻¹·V, block by block
    const w = new Float32Array(vData.length);
    for (let b = 0; b < blocks; b++) {
      const lu = iMinusSkew(rData.subarray(b * m * m, (b + 1) * m * m), m);
      const swaps = luInPlace(lu, m);
      factors.push({ lu, swaps });
      const zb = z.subarray(b * m * k, (b + 1) * m * k);
      luSolve(lu, swaps, zb, m, k);
      for (let i = 0; i < zb.length; i++) w[b * m * k + i] = 2 * zb[i] - vData[b * m * k + i];
    }
    return {
      value: tf.tensor(w, v.shape),
      gradFunc: (dy: TF.Tensor) => {
        const y = Float64Array.from(dy.dataSync());
        for (let b = 0; b < blocks; b++) luSolveTransposed(factors[b].lu, factors[b].swaps, y.subarray(b * m * k, (b + 1) * m * k), m, k);
        const yT = tf.tensor(Float32Array.from(y), v.shape);
        const zT = tf.tensor(Float32Array.from(z), v.shape);
        const outer = tf.sub(tf.matMul(yT, zT, false, true), tf.matMul(zT, yT, false, true));
        const gradR = tf.mul(outer, tf.mul(tf.tensor2d(strictUpperMask(m), [m, m]), 2));
        const gradV = tf.sub(tf.mul(yT, 2), dy);
        return [gradR, gradV];
      },
    };
  });
  return product(r, v);
}

function strictUpperMask(m: number): Float32Array {
  const mask = new Float32Array(m * m);
  for (let i = 0; i < m; i++) mask.fill(1, i * m + i + 1, (i + 1) * m);
  return mask;
}

/** ‖QᵀQ − I‖ of a row-major m×m matrix, computed in float64: Frobenius and largest entry. */
export function orthogonalityError(q: ArrayLike<number>, m: number): { frobenius: number; maxAbs: number } {
  if (q.length !== m * m) throw new RangeError(`expected ${m}×${m} = ${m * m} entries, got ${q.length}`);
  let sumSq = 0;
  let maxAbs = 0;
  for (let i = 0; i < m; i++) {
    for (let j = i; j < m; j++) {
      let dot = 0;
      for (let t = 0; t < m; t++) dot += q[t * m + i] * q[t * m + j];
      const e = Math.abs(dot - (i === j ? 1 : 0));
      sumSq += i === j ? e * e : 2 * e * e;
      if (e > maxAbs) maxAbs = e;
    }
  }
  return { frobenius: Math.sqrt(sumSq), maxAbs };
}

/**
 * Hyperspherical energy of a layer's neurons (float64): with ŵᵢ = wᵢ/‖wᵢ‖, E_s = Σ_{i≠j} ‖ŵᵢ − ŵⱼ‖^(−s)
 * over ordered pairs (each pair twice, as in the MHE/OPT papers), and for s = 0 the logarithmic energy
 * E_0 = Σ_{i≠j} −log‖ŵᵢ − ŵⱼ‖. w is row-major rows×cols; neuronAxis 'columns' means neuron i is column i
 * (a d×h first-layer weight used as x·W), 'rows' that it is row i. Coincident neurons give +Infinity; a
 * zero neuron has no direction and throws.
 */
export function hypersphericalEnergy(w: Float32Array | Float64Array, rows: number, cols: number, s = 1, neuronAxis: 'columns' | 'rows' = 'columns'): number {
  if (w.length !== rows * cols) throw new RangeError(`expected ${rows}×${cols} = ${rows * cols} entries, got ${w.length}`);
  if (!(s >= 0) || !Number.isFinite(s)) throw new RangeError(`energy power s must be finite and ≥ 0, got ${s}`);
  const count = neuronAxis === 'columns' ? cols : rows;
  const dim = neuronAxis === 'columns' ? rows : cols;
  // Unit neurons, contiguous, so the pair loop reads memory in order.
  const unit = new Float64Array(count * dim);
  for (let i = 0; i < count; i++) {
    let norm = 0;
    for (let t = 0; t < dim; t++) {
      const x = neuronAxis === 'columns' ? w[t * cols + i] : w[i * cols + t];
      unit[i * dim + t] = x;
      norm += x * x;
    }
    norm = Math.sqrt(norm);
    if (!(norm > 0) || !Number.isFinite(norm)) throw new RangeError(`neuron ${i} has norm ${norm}`);
    for (let t = 0; t < dim; t++) unit[i * dim + t] /= norm;
  }
  let energy = 0;
  for (let i = 0; i < count; i++) {
    for (let j = i + 1; j < count; j++) {
      // The difference directly, not 2 − 2·cos: no cancellation for nearby neurons.
      let distSq = 0;
      for (let t = 0; t < dim; t++) {
        const d = unit[i * dim + t] - unit[j * dim + t];
        distSq += d * d;
      }
      energy += s === 0 ? -0.5 * Math.log(distSq) : distSq ** (-s / 2);
    }
  }
  return 2 * energy;
}

export interface OrthogonalLayerOptions {
  /** Input dimension m (fan-in): W is m×k, used as x·W, neurons are its columns. */
  rows: number;
  /** Number of neurons k. */
  cols: number;
  /** The fixed neurons V, row-major m×k; by default drawn from N(0, 2/m) (He) with `seed`. */
  v?: Float32Array;
  seed?: number;
  /**
   * 'inputs' (the paper's OPT): W = Q·V, Q rotates the m-dimensional space the neurons live in, so all
   * angles between neurons are kept. 'neurons': W = V·Q with Q k×k, far cheaper for wide inputs, but it
   * mixes neurons: it keeps the rows' Gram matrix W·Wᵀ, not the angles between neurons (see docs/opt.md).
   */
  side?: 'inputs' | 'neurons';
  /**
   * Q block-diagonal with blocks of this size (must divide the transformed dimension): still exactly
   * orthogonal, so the neuron energy is kept on the 'inputs' side, at (size/dim)² of the cost of one dense
   * Cayley map. Default: one dense block.
   */
  blockSize?: number;
}

/**
 * A first-layer weight trained the OPT way: W = Q·V (or V·Q) with V fixed and Q = cayley(R), R starting
 * at zero (Q = I, so training starts from the random V). Only `r` is trainable; `v` is a non-trainable
 * variable so checkpoints that save every variable keep it.
 */
export class OrthogonalLayer {
  readonly r: TF.Variable;
  readonly v: TF.Variable;
  readonly rows: number;
  readonly cols: number;
  readonly side: 'inputs' | 'neurons';
  /** Size of Q's square blocks, and their count. */
  readonly blockSize: number;
  readonly blocks: number;

  constructor(private readonly tf: typeof TF, name: string, options: OrthogonalLayerOptions) {
    const { rows, cols, seed = 1, side = 'inputs' } = options;
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) throw new RangeError(`bad layer shape ${rows}×${cols}`);
    const dim = side === 'inputs' ? rows : cols;
    const blockSize = options.blockSize ?? dim;
    if (!Number.isInteger(blockSize) || blockSize < 1 || dim % blockSize !== 0) throw new RangeError(`block size ${blockSize} does not divide ${dim}`);
    if (options.v && options.v.length !== rows * cols) throw new RangeError(`V has ${options.v.length} entries, expected ${rows}×${cols}`);
    this.rows = rows;
    this.cols = cols;
    this.side = side;
    this.blockSize = blockSize;
    this.blocks = dim / blockSize;
    const v = options.v ? tf.tensor2d(options.v, [rows, cols]) : tf.randomNormal([rows, cols], 0, Math.sqrt(2 / rows), 'float32', seed);
    this.v = tf.variable(v, false, `${name}/v`);
    v.dispose();
    const rShape = this.blocks === 1 ? [blockSize, blockSize] : [this.blocks, blockSize, blockSize];
    this.r = tf.variable(tf.zeros(rShape), true, `${name}/r`);
  }

  /** Q: blockSize×blockSize, or blocks×blockSize×blockSize for a block-diagonal Q. */
  transform(): TF.Tensor {
    return cayley(this.tf, this.r);
  }

  /** W, rows×cols, differentiable w.r.t. r. */
  weight(): TF.Tensor2D {
    const tf = this.tf;
    return tf.tidy(() => {
      const b = this.blockSize;
      if (this.side === 'inputs') {
        if (this.blocks === 1) return cayleyMatMul(tf, this.r, this.v) as TF.Tensor2D;
        // Block i of Q rotates input rows [i·b, (i+1)·b) of V.
        return tf.reshape(cayleyMatMul(tf, this.r, tf.reshape(this.v, [this.blocks, b, this.cols])), [this.rows, this.cols]) as TF.Tensor2D;
      }
      const q = this.transform();
      if (this.blocks === 1) return tf.matMul(this.v, q as TF.Tensor2D);
      // Block i of Q mixes neurons [i·b, (i+1)·b): V as blocks×rows×b, then back to rows×cols.
      const vBlocks = tf.transpose(tf.reshape(this.v, [this.rows, this.blocks, b]), [1, 0, 2]);
      return tf.reshape(tf.transpose(tf.matMul(vBlocks, q as TF.Tensor3D), [1, 0, 2]), [this.rows, this.cols]) as TF.Tensor2D;
    });
  }

  /** Hyperspherical energy of the current neurons (columns of W), float64 from one read-back. */
  energy(s = 1): number {
    const w = this.weight();
    const data = w.dataSync() as Float32Array;
    w.dispose();
    return hypersphericalEnergy(data, this.rows, this.cols, s, 'columns');
  }

  /** Largest Frobenius ‖QᵀQ − I‖ over Q's blocks, float64 from the float32 Q the forward pass uses. */
  orthogonalityError(): number {
    // Read back outside tidy: tidy walks a returned typed array entry by entry looking for tensors.
    const qTensor = this.tf.tidy(() => this.transform());
    const q = qTensor.dataSync() as Float32Array;
    qTensor.dispose();
    const b = this.blockSize;
    let worst = 0;
    for (let i = 0; i < this.blocks; i++) worst = Math.max(worst, orthogonalityError(q.subarray(i * b * b, (i + 1) * b * b), b).frobenius);
    return worst;
  }

  dispose(): void {
    this.r.dispose();
    this.v.dispose();
  }
}
