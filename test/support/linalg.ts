// Float64 reference linear algebra for the estimator tests (row-major dense matrices).

export const gaussian = (rnd: () => number) => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
export const randomArray = (rnd: () => number, length: number, scale = 1) => Float64Array.from({ length }, () => gaussian(rnd) * scale);
export const relative = (got: number, expected: number) => Math.abs(got - expected) / Math.abs(expected);

export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, n: number, k: number, m: number): Float64Array {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < k; t++) {
      const ait = a[i * k + t];
      for (let j = 0; j < m; j++) out[i * m + j] += ait * b[t * m + j];
    }
  }
  return out;
}

export function transpose(a: ArrayLike<number>, n: number, m: number): Float64Array {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[j * n + i] = a[i * m + j];
  return out;
}

export function frobenius(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

export const difference = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from({ length: a.length }, (_, i) => a[i] - b[i]);

export function relativeFrobenius(got: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    diff += (got[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** Random orthogonal n×n matrix: Gram–Schmidt (twice, for float64 orthogonality) on Gaussian columns. */
export function randomOrthogonal(rnd: () => number, n: number): Float64Array {
  const q = randomArray(rnd, n * n);
  for (let c = 0; c < n; c++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < c; p++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += q[i * n + c] * q[i * n + p];
        for (let i = 0; i < n; i++) q[i * n + c] -= dot * q[i * n + p];
      }
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += q[i * n + c] ** 2;
    for (let i = 0; i < n; i++) q[i * n + c] /= Math.sqrt(norm);
  }
  return q;
}

/**
 * The central difference (f(a + step·e_k) − f(a − step·e_k)) / (2·step) of a scalar function of the
 * array `arr` (changed in place while f runs, restored after): the float64 check of one gradient entry.
 */
export function centralDifference(arr: { [k: number]: number }, k: number, step: number, f: () => number): number {
  const keep = arr[k];
  arr[k] = keep + step;
  const up = f();
  arr[k] = keep - step;
  const down = f();
  arr[k] = keep;
  return (up - down) / (2 * step);
}
