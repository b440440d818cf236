import { loadNativeBlas } from '../engine/native';

// Symmetric eigen-decomposition in float64 by the cyclic Jacobi method. The matrices are probe-batch
// tangent kernels (n = 16–64 typical, 256 at most), so robustness and accuracy matter more than
// asymptotic speed: Jacobi is backward stable, always converges, and with the stopping rule below it
// also finds small eigenvalues (μ) to high relative accuracy whenever the matrix entries determine them.

export interface SymmetricEigen {
  /** Ascending eigenvalues. */
  values: Float64Array;
  /** Row-major n×n; column k (vectors[i*n+k]) is the unit eigenvector of values[k]. */
  vectors: Float64Array;
  /** Jacobi sweeps that rotated something (for tests and benchmarks of the tolerance). */
  sweeps: number;
}

export interface EigenOptions {
  /** Relative off-diagonal size counted as zero; ε (the default) up to below 1. */
  tolerance?: number;
}

/** Quadratic convergence makes 6–10 sweeps the norm; this is only a backstop against a pathological input. */
const MAX_SWEEPS = 60;

/**
 * Eigenvalues (ascending) and orthonormal eigenvectors of a symmetric n×n matrix (row-major).
 * The input is symmetrized as (A + Aᵀ)/2, so a kernel with float32 round-off asymmetry is accepted.
 * Throws on a wrong length or on a non-finite entry (a NaN kernel means diverged weights; a silent
 * NaN eigenvalue would only surface later, far from its cause).
 *
 * `tolerance` (default ε): an off-diagonal a_pq counts as zero once |a_pq| ≤ tolerance·√(|a_pp|·|a_qq|).
 * Dropping it moves the eigenvalues by about a_pq²/gap and the eigenvectors by about a_pq/gap, so
 * √ε still gives eigenvalues to about ε·|a_pp|·|a_qq|/gap and eigenvectors to about √ε, a sweep sooner.
 */
export function symmetricEigen(a: ArrayLike<number>, n: number, options: EigenOptions = {}): SymmetricEigen {
  const { tolerance = Number.EPSILON } = options;
  if (!(tolerance >= Number.EPSILON && tolerance < 1)) throw new RangeError(`tolerance must be in [ε, 1), got ${tolerance}`);
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`matrix size must be a non-negative integer, got ${n}`);
  if (a.length !== n * n) throw new RangeError(`expected ${n}×${n} = ${n * n} entries, got ${a.length}`);
  const m = new Float64Array(n * n);
  let largestEntry = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const aij = a[i * n + j];
      if (!Number.isFinite(aij)) throw new RangeError(`matrix entry (${i}, ${j}) is ${aij}`);
      m[i * n + j] = (aij + a[j * n + i]) / 2;
      largestEntry = Math.max(largestEntry, Math.abs(aij));
    }
  }
  // Rows of vt are the eigenvector estimates (Vᵀ), so rotations touch contiguous memory.
  const vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) vt[i * n + i] = 1;

  // An off-diagonal entry is dropped when it is negligible next to its two diagonal entries
  // (relative criterion, Demmel & Veselić 1992: keeps small eigenvalues relatively accurate), or
  // next to the largest entry at ε² (an absolute floor so that a block of near-zero eigenvalues,
  // whose size is noise anyway, cannot keep the iteration busy). Square roots are taken apart so
  // that entries near 1e±200 neither overflow nor underflow.
  const absoluteFloor = Number.EPSILON * Number.EPSILON * largestEntry;
  let sweeps = 0;
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (apq === 0) continue;
        const app = m[p * n + p];
        const aqq = m[q * n + q];
        if (Math.abs(apq) <= tolerance * Math.sqrt(Math.abs(app)) * Math.sqrt(Math.abs(aqq)) || Math.abs(apq) <= absoluteFloor) {
          m[p * n + q] = 0;
          continue;
        }
        rotated = true;
        // The rotation that zeroes (p, q), with Rutishauser's stable formulas (Golub & Van Loan,
        // sym.schur2): t = tan of the angle, the smaller root, so |angle| ≤ π/4.
        const theta = (aqq - app) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // A ← JᵀAJ touches rows and columns p and q only. Only the upper triangle is read from here
        // on (the diagonal and (p, q) are set below), so each entry is updated once, not mirrored.
        for (let k = 0; k < p; k++) {
          const akp = m[k * n + p];
          const akq = m[k * n + q];
          m[k * n + p] = c * akp - s * akq;
          m[k * n + q] = s * akp + c * akq;
        }
        for (let k = p + 1; k < q; k++) {
          const akp = m[p * n + k];
          const akq = m[k * n + q];
          m[p * n + k] = c * akp - s * akq;
          m[k * n + q] = s * akp + c * akq;
        }
        for (let k = q + 1; k < n; k++) {
          const akp = m[p * n + k];
          const akq = m[q * n + k];
          m[p * n + k] = c * akp - s * akq;
          m[q * n + k] = s * akp + c * akq;
        }
        m[p * n + p] = app - t * apq;
        m[q * n + q] = aqq + t * apq;
        m[p * n + q] = 0;
        // V ← VJ: columns p and q of V are rows p and q of vt.
        for (let k = 0; k < n; k++) {
          const vp = vt[p * n + k];
          const vq = vt[q * n + k];
          vt[p * n + k] = c * vp - s * vq;
          vt[q * n + k] = s * vp + c * vq;
        }
      }
    }
    if (!rotated) break;
    sweeps++;
  }

  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => m[i * n + i] - m[j * n + j]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, k) => {
    values[k] = m[src * n + src];
    for (let i = 0; i < n; i++) vectors[i * n + k] = vt[src * n + i];
  });
  return { values, vectors, sweeps };
}

/** The two extreme eigenpairs of a symmetric matrix (extremeEigen). */
export interface ExtremeEigen {
  /** λ_min and λ_max. */
  min: number;
  max: number;
  /** Unit eigenvectors of λ_min and λ_max (when asked for); orthogonal to round-off when n ≥ 2. */
  vMin?: Float64Array;
  vMax?: Float64Array;
}

/** 2^−1022: the smallest normal double, LAPACK's safe minimum. */
const SAFE_MINIMUM = 2 ** -1022;
/** Inverse-iteration solves per vector (three amplify the wanted component by (gap/ε)³ from any start). */
const INVERSE_ITERATIONS = 3;

/**
 * λ_min and λ_max of a symmetric n×n matrix (row-major, read as (A + Aᵀ)/2 like symmetricEigen) and,
 * with `vectors`, their unit eigenvectors, at about a tenth of symmetricEigen's cost for n = 16–64:
 * Householder reduction to a tridiagonal T = QᵀAQ (4/3·n³ flops, Q kept as its reflectors), bisection
 * on Sturm counts of T for the two extreme eigenvalues (O(n) per step, ~60 steps), inverse iteration
 * on T for their vectors and Q applied to them (O(n²)). Deterministic: the same input gives the same
 * bits (fixed start vector, no warm start).
 *
 * Without `vectors`, the native addon's C port of the same steps computes the eigenvalues where it is
 * loaded and `native` is not false (the same operations in the same order: the same bits, tested).
 *
 * Accuracy is absolute: both eigenvalues to a few ε·‖A‖ (ε·λ_max for a PSD kernel), the vectors'
 * residuals ‖Av − λv‖ to a few n·ε·‖A‖. symmetricEigen keeps small eigenvalues relatively accurate
 * where the entries determine them; this does not (a λ_min below ε·λ_max reads as noise of that
 * size). docs/method.md, "Eigen-solver", says why absolute accuracy is enough for the trainer's κ.
 * The matrix is scaled by a power of two first, so entries near 1e±200 neither overflow nor
 * underflow; a diagonal or tridiagonal input is not rotated at all.
 */
export function extremeEigen(a: ArrayLike<number>, n: number, options: { vectors?: boolean; native?: boolean } = {}): ExtremeEigen {
  const wantVectors = options.vectors ?? false;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`matrix size must be a positive integer, got ${n}`);
  if (a.length !== n * n) throw new RangeError(`expected ${n}×${n} = ${n * n} entries, got ${a.length}`);
  // Eigenvalues only: the native addon's port of the steps below where it is loaded (compiled, the same
  // operations in the same order), unless `native: false`. It checks the entries itself; on a
  // non-finite one the JavaScript below throws the error that names the entry.
  const compiled = !wantVectors && options.native !== false ? loadNativeBlas().blas?.extremeEigenvalues : undefined;
  if (compiled) {
    const out = new Float64Array(2);
    try {
      compiled(a instanceof Float64Array ? a : new Float64Array(a), n, out);
      return { min: out[0], max: out[1] };
    } catch {
      // fall through to the JavaScript, which names the bad entry
    }
  }
  let largestEntry = 0;
  for (let i = 0; i < n * n; i++) {
    const v = a[i];
    if (!Number.isFinite(v)) throw new RangeError(`matrix entry (${Math.floor(i / n)}, ${i % n}) is ${v}`);
    largestEntry = Math.max(largestEntry, Math.abs(v));
  }
  if (largestEntry === 0) {
    // The zero matrix: every vector is an eigenvector; give the first and last coordinate vectors, as symmetricEigen does.
    const unit = (k: number) => Float64Array.from({ length: n }, (_, i) => (i === k ? 1 : 0));
    return wantVectors ? { min: 0, max: 0, vMin: unit(0), vMax: unit(n - 1) } : { min: 0, max: 0 };
  }
  // Scale by a power of two (exact) so the largest entry is in [1/2, 1).
  const scale = 2 ** -(Math.floor(Math.log2(largestEntry)) + 1);
  // Lower triangle of the symmetric part, row-major (m[i*n + j], j ≤ i).
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) m[i * n + j] = ((a[i * n + j] + a[j * n + i]) / 2) * scale;

  const { diagonal, offDiagonal, tau } = tridiagonalize(m, n);
  const bound = gershgorinBound(diagonal, offDiagonal);
  let maxOffSquared = 0;
  for (const e of offDiagonal) maxOffSquared = Math.max(maxOffSquared, e * e);
  const pivotMin = SAFE_MINIMUM * Math.max(1, maxOffSquared);
  // Bisection stops at this absolute width (or at 2ε relative, or when the midpoint cannot move):
  // the Householder reduction is accurate to a small multiple of ε·‖A‖, so bisecting further buys nothing.
  const width = Number.EPSILON * bound.norm;
  const lMin = bisectExtreme(diagonal, offDiagonal, pivotMin, bound, width, 'min');
  const lMax = bisectExtreme(diagonal, offDiagonal, pivotMin, bound, width, 'max');
  if (!wantVectors) return { min: lMin / scale, max: lMax / scale };

  const tiny = Number.EPSILON * bound.norm || SAFE_MINIMUM;
  const yMin = inverseIteration(diagonal, offDiagonal, lMin, tiny, 0x9e3779b9);
  const yMax = inverseIteration(diagonal, offDiagonal, lMax, tiny, 0x7f4a7c15);
  // Inverse iteration makes the two vectors orthogonal only up to ε·‖A‖/(λ_max − λ_min): orthogonalize.
  // That moves vMax by its overlap c with vMin and its residual by c·(λ_max − λ_min) ≲ ε·‖A‖, so it stays
  // an eigenvector to working accuracy. Nearly parallel vectors mean every eigenvalue is (numerically)
  // the same; then any unit vector orthogonal to vMin will do.
  if (n >= 2 && orthogonalize(yMax, yMin) < 0.5) {
    let k = 0;
    for (let i = 1; i < n; i++) if (Math.abs(yMin[i]) < Math.abs(yMin[k])) k = i;
    yMax.fill(0);
    yMax[k] = 1;
    orthogonalize(yMax, yMin);
  }
  applyReflectors(m, n, tau, yMin);
  applyReflectors(m, n, tau, yMax);
  normalize(yMin);
  normalize(yMax);
  return { min: lMin / scale, max: lMax / scale, vMin: yMin, vMax: yMax };
}

/**
 * Householder reduction of the symmetric matrix held in m's lower triangle to tridiagonal form,
 * QᵀAQ = T, Q = H_0·H_1·…·H_{n−3}, H_k = I − τ_k·v_k·v_kᵀ. Reflector k acts on rows k+1…n−1; its
 * vector (v_k[0] = 1 implicit) overwrites m's column k below the subdiagonal. A column that is already
 * zero below the subdiagonal gets no reflector (τ = 0), so a tridiagonal input passes through exactly.
 */
function tridiagonalize(m: Float64Array, n: number): { diagonal: Float64Array; offDiagonal: Float64Array; tau: Float64Array } {
  const tau = new Float64Array(Math.max(n - 2, 0));
  const offDiagonal = new Float64Array(Math.max(n - 1, 0));
  const p = new Float64Array(n);
  const v = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const top = (k + 1) * n + k; // x = m[k+1.., k], x_0 at m[top]
    let below = 0; // ‖x_1..‖², scaled against underflow by the column's largest entry
    let largest = 0;
    for (let i = k + 2; i < n; i++) largest = Math.max(largest, Math.abs(m[i * n + k]));
    if (largest === 0) {
      offDiagonal[k] = m[top];
      continue;
    }
    largest = Math.max(largest, Math.abs(m[top]));
    for (let i = k + 2; i < n; i++) below += (m[i * n + k] / largest) ** 2;
    const x0 = m[top];
    const norm = largest * Math.sqrt((x0 / largest) ** 2 + below);
    const beta = x0 >= 0 ? -norm : norm;
    const t = (beta - x0) / beta;
    const inv = 1 / (x0 - beta);
    for (let i = k + 2; i < n; i++) m[i * n + k] *= inv;
    m[top] = beta;
    offDiagonal[k] = beta;
    tau[k] = t;
    // Trailing block A₂₂ (rows/cols k+1…n−1): A₂₂ ← H·A₂₂·H = A₂₂ − v·wᵀ − w·vᵀ,
    // p = τ·A₂₂·v, w = p − (τ/2)(pᵀv)·v; v copied out (v_0 = 1) so the loops read contiguous memory.
    v[k + 1] = 1;
    for (let i = k + 2; i < n; i++) v[i] = m[i * n + k];
    for (let i = k + 1; i < n; i++) p[i] = 0;
    for (let i = k + 1; i < n; i++) {
      const vi = v[i];
      const row = i * n;
      let s = 0;
      for (let j = k + 1; j < i; j++) {
        const aij = m[row + j];
        s += aij * v[j];
        p[j] += aij * vi;
      }
      p[i] += s + m[row + i] * vi;
    }
    let pv = 0;
    for (let i = k + 1; i < n; i++) {
      p[i] *= t;
      pv += p[i] * v[i];
    }
    const half = (t / 2) * pv;
    for (let i = k + 1; i < n; i++) p[i] -= half * v[i]; // p is now w
    for (let i = k + 1; i < n; i++) {
      const vi = v[i];
      const wi = p[i];
      const row = i * n;
      for (let j = k + 1; j <= i; j++) m[row + j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) offDiagonal[n - 2] = m[(n - 1) * n + n - 2];
  const diagonal = Float64Array.from({ length: n }, (_, i) => m[i * n + i]);
  return { diagonal, offDiagonal, tau };
}

/** Gershgorin's interval [lower, upper] holding T's spectrum (widened by `margin`), and norm = max(|lower|, |upper|). */
function gershgorinBound(d: Float64Array, e: Float64Array): { lower: number; upper: number; norm: number; margin: number } {
  const n = d.length;
  let lower = Infinity;
  let upper = -Infinity;
  for (let i = 0; i < n; i++) {
    const r = (i > 0 ? Math.abs(e[i - 1]) : 0) + (i < n - 1 ? Math.abs(e[i]) : 0);
    lower = Math.min(lower, d[i] - r);
    upper = Math.max(upper, d[i] + r);
  }
  const norm = Math.max(Math.abs(lower), Math.abs(upper));
  // Widened a little so that round-off in the Sturm counts cannot put an eigenvalue outside.
  const margin = 2 * Number.EPSILON * norm * n + 2 * SAFE_MINIMUM;
  return { lower: lower - margin, upper: upper + margin, norm, margin };
}

/**
 * How many eigenvalues of T lie below each of x1 < x2 < x3 (Sturm counts of the LDLᵀ pivots of T − xI,
 * LAPACK's dlaneg rule for tiny pivots), written to counts[0..2]. Three independent recurrences in one
 * loop: each step divides by the previous pivot, so one chain waits on the divider's latency and three
 * cost about as much as one.
 */
function countBelow3(d: Float64Array, e: Float64Array, pivotMin: number, x1: number, x2: number, x3: number, counts: Int32Array): void {
  let q1 = d[0] - x1;
  let q2 = d[0] - x2;
  let q3 = d[0] - x3;
  if (Math.abs(q1) < pivotMin) q1 = -pivotMin;
  if (Math.abs(q2) < pivotMin) q2 = -pivotMin;
  if (Math.abs(q3) < pivotMin) q3 = -pivotMin;
  let c1 = q1 < 0 ? 1 : 0;
  let c2 = q2 < 0 ? 1 : 0;
  let c3 = q3 < 0 ? 1 : 0;
  for (let i = 1; i < d.length; i++) {
    const e2 = e[i - 1] * e[i - 1];
    q1 = d[i] - x1 - e2 / q1;
    q2 = d[i] - x2 - e2 / q2;
    q3 = d[i] - x3 - e2 / q3;
    if (Math.abs(q1) < pivotMin) q1 = -pivotMin;
    if (Math.abs(q2) < pivotMin) q2 = -pivotMin;
    if (Math.abs(q3) < pivotMin) q3 = -pivotMin;
    if (q1 < 0) c1++;
    if (q2 < 0) c2++;
    if (q3 < 0) c3++;
  }
  counts[0] = c1;
  counts[1] = c2;
  counts[2] = c3;
}

/**
 * The smallest or largest eigenvalue of T by quadrisection on Sturm counts: each pass counts at the
 * interval's three quartiles and keeps the quarter where the count crosses (1 for λ_min, n for λ_max),
 * two bits per pass. Starts from Gershgorin's interval cut at the extreme diagonal entry (λ_min ≤ min d_i
 * and λ_max ≥ max d_i: Rayleigh quotients), stops at the width `width`, at 2ε relative, or when the
 * quartiles cannot move; returns the midpoint.
 */
function bisectExtreme(d: Float64Array, e: Float64Array, pivotMin: number, bound: { lower: number; upper: number; margin: number }, width: number, which: 'min' | 'max'): number {
  const n = d.length;
  if (n === 1) return d[0];
  let lo = bound.lower;
  let hi = bound.upper;
  // Invariant: for 'min', count(lo) = 0 and count(hi) ≥ 1; for 'max', count(lo) ≤ n − 1 and count(hi) = n.
  let extreme = d[0];
  for (let i = 1; i < n; i++) extreme = which === 'min' ? Math.min(extreme, d[i]) : Math.max(extreme, d[i]);
  if (which === 'min') hi = Math.min(hi, extreme + bound.margin);
  else lo = Math.max(lo, extreme - bound.margin);
  const target = which === 'min' ? 1 : n;
  const counts = new Int32Array(3);
  for (;;) {
    const step = (hi - lo) / 4;
    const x1 = lo + step;
    const x2 = lo + 2 * step;
    const x3 = lo + 3 * step;
    if (hi - lo <= Math.max(width, 2 * Number.EPSILON * Math.max(Math.abs(lo), Math.abs(hi))) || !(lo < x1 && x1 < x2 && x2 < x3 && x3 < hi)) return lo + (hi - lo) / 2;
    countBelow3(d, e, pivotMin, x1, x2, x3, counts);
    if (counts[0] >= target) hi = x1;
    else if (counts[1] >= target) {
      lo = x1;
      hi = x2;
    } else if (counts[2] >= target) {
      lo = x2;
      hi = x3;
    } else lo = x3;
  }
}

/**
 * A unit eigenvector of the tridiagonal T for the eigenvalue λ (to working accuracy), by inverse
 * iteration: solves (T − λI)·y = x by Gaussian elimination with partial pivoting, a zero pivot
 * replaced by `tiny` (≈ ε·‖T‖), from a fixed pseudo-random start (seeded, so deterministic).
 */
function inverseIteration(d: Float64Array, e: Float64Array, lambda: number, tiny: number, seed: number): Float64Array {
  const n = d.length;
  const x = new Float64Array(n);
  if (n === 1) {
    x[0] = 1;
    return x;
  }
  // LU of T − λI with row interchanges: U has the diagonal u0, and two superdiagonals u1, u2;
  // multiplier[k] eliminates row k+1 below pivot k; swapped[k] says rows k and k+1 were exchanged.
  const u0 = new Float64Array(n);
  const u1 = new Float64Array(n);
  const u2 = new Float64Array(n);
  const multiplier = new Float64Array(n);
  const swapped = new Uint8Array(n);
  let a = d[0] - lambda; // the current row k's entries in columns k and k+1
  let b = e[0];
  for (let k = 0; k < n - 1; k++) {
    const c = e[k]; // row k+1, column k (original)
    const dNext = d[k + 1] - lambda; // row k+1, column k+1 (original)
    const eNext = k + 1 < n - 1 ? e[k + 1] : 0; // row k+1, column k+2 (original)
    if (Math.abs(a) >= Math.abs(c)) {
      if (a === 0) a = tiny; // both zero: T splits here
      u0[k] = a;
      u1[k] = b;
      u2[k] = 0;
      multiplier[k] = c / a;
      a = dNext - multiplier[k] * b;
      b = eNext;
    } else {
      swapped[k] = 1;
      u0[k] = c;
      u1[k] = dNext;
      u2[k] = eNext;
      multiplier[k] = a / c;
      a = b - multiplier[k] * dNext;
      b = -multiplier[k] * eNext;
    }
  }
  u0[n - 1] = a === 0 ? tiny : a;
  for (let k = 0; k < n; k++) if (Math.abs(u0[k]) < tiny) u0[k] = u0[k] < 0 ? -tiny : tiny;

  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 4294967296 - 0.5;
  }
  normalize(x);
  for (let iteration = 0; iteration < INVERSE_ITERATIONS; iteration++) {
    // Forward: apply the row interchanges and multipliers to the right-hand side.
    for (let k = 0; k < n - 1; k++) {
      if (swapped[k]) {
        const t = x[k];
        x[k] = x[k + 1];
        x[k + 1] = t - multiplier[k] * x[k];
      } else x[k + 1] -= multiplier[k] * x[k];
    }
    // Back substitution with U.
    for (let k = n - 1; k >= 0; k--) {
      let r = x[k];
      if (k + 1 < n) r -= u1[k] * x[k + 1];
      if (k + 2 < n) r -= u2[k] * x[k + 2];
      x[k] = r / u0[k];
    }
    normalize(x);
  }
  return x;
}

/** y ← Q·y, Q = H_0·…·H_{n−3} with the reflectors tridiagonalize left in m. */
function applyReflectors(m: Float64Array, n: number, tau: Float64Array, y: Float64Array): void {
  for (let k = n - 3; k >= 0; k--) {
    const t = tau[k];
    if (t === 0) continue;
    let s = y[k + 1];
    for (let i = k + 2; i < n; i++) s += m[i * n + k] * y[i];
    s *= t;
    y[k + 1] -= s;
    for (let i = k + 2; i < n; i++) y[i] -= s * m[i * n + k];
  }
}

/**
 * y ← y − (yᵀu)·u twice (u a unit vector; twice makes y orthogonal to round-off even when most of it
 * cancels), then normalized. Returns ‖y‖ after the first pass, for a unit y the sine of its angle to u.
 */
function orthogonalize(y: Float64Array, u: Float64Array): number {
  let remaining = 0;
  for (let pass = 0; pass < 2; pass++) {
    let d = 0;
    for (let i = 0; i < y.length; i++) d += y[i] * u[i];
    for (let i = 0; i < y.length; i++) y[i] -= d * u[i];
    if (pass === 0) remaining = Math.hypot(...y);
  }
  normalize(y);
  return remaining;
}

/** Scales y to unit length (returns false, leaving y alone, for a zero vector). */
function normalize(y: Float64Array): boolean {
  let largest = 0;
  for (const v of y) largest = Math.max(largest, Math.abs(v));
  if (largest === 0) return false;
  let sum = 0;
  for (const v of y) sum += (v / largest) ** 2;
  const f = 1 / (largest * Math.sqrt(sum));
  for (let i = 0; i < y.length; i++) y[i] *= f;
  return true;
}
