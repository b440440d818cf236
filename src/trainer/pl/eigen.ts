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
