// The float64 Jacobi eigen-solver against closed forms and the defining identities A = VΛVᵀ, VᵀV = I.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { symmetricEigen } from '../../src/trainer/pl';
import { difference, frobenius, matmul, randomArray, randomOrthogonal, transpose } from '../support/linalg';
import { mulberry32 } from '../support/prng';

/** Checks A = VΛVᵀ and VᵀV = I to `tolerance` (relative Frobenius) and ascending order. */
function assertDecomposes(a: Float64Array, n: number, tolerance: number, { values, vectors } = symmetricEigen(a, n)): void {
  for (let k = 1; k < n; k++) assert.ok(values[k] >= values[k - 1], `values not ascending at ${k}`);
  const lambda = new Float64Array(n * n);
  for (let k = 0; k < n; k++) lambda[k * n + k] = values[k];
  const rebuilt = matmul(matmul(vectors, lambda, n, n, n), transpose(vectors, n, n), n, n, n);
  const reconstruction = frobenius(difference(rebuilt, a)) / frobenius(a);
  assert.ok(reconstruction <= tolerance, `‖A − VΛVᵀ‖/‖A‖ = ${reconstruction}`);
  const gram = matmul(transpose(vectors, n, n), vectors, n, n, n);
  for (let i = 0; i < n; i++) gram[i * n + i] -= 1;
  assert.ok(frobenius(gram) <= tolerance, `‖VᵀV − I‖ = ${frobenius(gram)}`);
}

function randomSymmetric(rnd: () => number, n: number): Float64Array {
  const r = randomArray(rnd, n * n);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = (r[i * n + j] + r[j * n + i]) / 2;
  return a;
}

test('eigen: a diagonal matrix gives its diagonal, ascending, with unit coordinate vectors', () => {
  const { values, vectors } = symmetricEigen([3, 0, 0, 0, -1, 0, 0, 0, 2], 3);
  assert.deepEqual(Array.from(values), [-1, 2, 3]);
  // Column k is the coordinate vector of the k-th smallest diagonal entry: e₁, e₂, e₀.
  assert.deepEqual(Array.from(vectors), [0, 0, 1, 1, 0, 0, 0, 1, 0]);
});

test('eigen: 2×2 closed form λ = (a+c)/2 ± √(((a−c)/2)² + b²), and A·v = λ·v', () => {
  const [a, b, c] = [2, 1.5, -0.5];
  const { values, vectors } = symmetricEigen([a, b, b, c], 2);
  const mid = (a + c) / 2;
  const radius = Math.hypot((a - c) / 2, b);
  assert.ok(Math.abs(values[0] - (mid - radius)) <= 1e-14);
  assert.ok(Math.abs(values[1] - (mid + radius)) <= 1e-14);
  for (let k = 0; k < 2; k++) {
    const [v0, v1] = [vectors[k], vectors[2 + k]];
    assert.ok(Math.abs(a * v0 + b * v1 - values[k] * v0) <= 1e-14 && Math.abs(b * v0 + c * v1 - values[k] * v1) <= 1e-14);
    assert.ok(Math.abs(Math.hypot(v0, v1) - 1) <= 1e-15);
  }
});

test('eigen: n = 1 and the zero matrix', () => {
  const one = symmetricEigen([7], 1);
  assert.deepEqual(Array.from(one.values), [7]);
  assert.deepEqual(Array.from(one.vectors), [1]);
  const zero = symmetricEigen(new Float64Array(9), 3);
  assert.deepEqual(Array.from(zero.values), [0, 0, 0]);
  assert.deepEqual(Array.from(zero.vectors), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
});

test('eigen: random symmetric 40×40 reconstructs to 1e-10 with orthonormal vectors, ascending', () => {
  const n = 40;
  assertDecomposes(randomSymmetric(mulberry32(7), n), n, 1e-10);
});

test('eigen: repeated eigenvalues, Q·diag(1, 1, 1, 5)·Qᵀ', () => {
  const rnd = mulberry32(3);
  const q = randomOrthogonal(rnd, 4);
  const a = matmul(matmul(q, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 5], 4, 4, 4), transpose(q, 4, 4), 4, 4, 4);
  const { values } = symmetricEigen(a, 4);
  [1, 1, 1, 5].forEach((expected, i) => assert.ok(Math.abs(values[i] - expected) <= 1e-13, `λ${i} = ${values[i]}`));
  // The three vectors of the repeated eigenvalue are not unique; they must still be orthonormal.
  assertDecomposes(a, 4, 1e-13);
});

test('eigen: known spectrum of a PSD kernel Q·diag(λ)·Qᵀ at n = 24, spread over 8 decades', () => {
  const rnd = mulberry32(17);
  const n = 24;
  const q = randomOrthogonal(rnd, n);
  const spectrum = Float64Array.from({ length: n }, (_, i) => 10 ** (-8 + (8 * i) / (n - 1)));
  const lambda = new Float64Array(n * n);
  spectrum.forEach((v, i) => (lambda[i * n + i] = v));
  const a = matmul(matmul(q, lambda, n, n, n), transpose(q, n, n), n, n, n);
  const { values } = symmetricEigen(a, n);
  // Forming A rounds its entries at about ε·‖A‖, so that is the accuracy any solver can promise.
  for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i] - spectrum[i]) <= 1e-14, `λ${i} = ${values[i]} vs ${spectrum[i]}`);
});

test('eigen: a tiny eigenvalue of a graded matrix keeps its relative accuracy (λ_min = det/λ_max)', () => {
  // [[1, 1e-15], [1e-15, 1e-28]]: λ_min = (1e-28 − 1e-30)/λ_max ≈ 9.9e-29. An absolute stopping rule
  // (|a_pq| ≤ ε·‖A‖) would stop at once and report the diagonal 1e-28, 1% off.
  const [a, b, c] = [1, 1e-15, 1e-28];
  const { values } = symmetricEigen([a, b, b, c], 2);
  const lMax = (a + c) / 2 + Math.hypot((a - c) / 2, b);
  const lMin = (a * c - b * b) / lMax;
  assert.ok(Math.abs(values[0] - lMin) / lMin <= 1e-14, `λ_min = ${values[0]} vs ${lMin}`);
  assert.ok(Math.abs(values[1] - lMax) / lMax <= 1e-15);
});

test('eigen: the largest supported size, a 256×256 PSD kernel, decomposes to 1e-10', () => {
  const n = 256;
  const p = 300;
  const j = randomArray(mulberry32(29), n * p);
  assertDecomposes(matmul(j, transpose(j, n, p), n, p, n), n, 1e-10);
});

test('eigen: reads the symmetric part (A + Aᵀ)/2 of a slightly asymmetric input', () => {
  const rnd = mulberry32(41);
  const n = 6;
  const a = randomSymmetric(rnd, n);
  const skewed = Float64Array.from(a);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      skewed[i * n + j] += 1e-7;
      skewed[j * n + i] -= 1e-7;
    }
  }
  const expected = symmetricEigen(a, n).values;
  symmetricEigen(skewed, n).values.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-14));
});

test('eigen: scaling A by 1e±200 scales the eigenvalues and changes nothing else (no overflow, no underflow)', () => {
  const n = 12;
  const a = randomSymmetric(mulberry32(43), n);
  const reference = symmetricEigen(a, n);
  for (const scale of [1e200, 1e-200]) {
    const { values, vectors } = symmetricEigen(a.map((v) => v * scale), n);
    const unscaled = values.map((v) => v / scale);
    unscaled.forEach((v, i) => assert.ok(Math.abs(v - reference.values[i]) <= 1e-13 * Math.abs(reference.values[n - 1]), `scale ${scale}: λ${i}`));
    // Squares of 1e200 overflow, so check the decomposition in unscaled units.
    assertDecomposes(a, n, 1e-12, { values: unscaled, vectors, sweeps: 0 });
  }
});

test('eigen: rejects a wrong length and non-finite entries with a message that names them', () => {
  assert.throws(() => symmetricEigen([1, 2, 3], 2), /expected 2×2 = 4 entries, got 3/);
  assert.throws(() => symmetricEigen([1, NaN, NaN, 1], 2), /entry \(0, 1\) is NaN/);
  assert.throws(() => symmetricEigen([Infinity, 0, 0, 1], 2), /entry \(0, 0\) is Infinity/);
});

test('eigen: tolerance √ε stops sooner and keeps eigenvalues to 1e-13·λ_max and eigenvectors to 1e-7; out-of-range tolerances are refused', () => {
  // A PSD kernel like the trainer's (n = 16, spectrum over 4 decades).
  const rnd = mulberry32(71);
  const n = 16;
  const q = randomOrthogonal(rnd, n);
  const lambda = new Float64Array(n * n);
  for (let i = 0; i < n; i++) lambda[i * n + i] = 10 ** (-2 + (4 * i) / (n - 1));
  const a = matmul(matmul(q, lambda, n, n, n), transpose(q, n, n), n, n, n);
  const strict = symmetricEigen(a, n);
  const loose = symmetricEigen(a, n, { tolerance: Math.sqrt(Number.EPSILON) });
  assert.ok(loose.sweeps < strict.sweeps, `√ε: ${loose.sweeps} sweeps, ε: ${strict.sweeps}`);
  loose.values.forEach((v, i) => assert.ok(Math.abs(v - strict.values[i]) <= 1e-13 * strict.values[n - 1], `λ${i}: ${v} vs ${strict.values[i]}`));
  for (const k of [0, n - 1]) {
    let cos = 0;
    for (let i = 0; i < n; i++) cos += loose.vectors[i * n + k] * strict.vectors[i * n + k];
    assert.ok(1 - Math.abs(cos) <= 1e-7, `eigenvector ${k}: 1 − |cos| = ${1 - Math.abs(cos)}`);
  }
  assertDecomposes(a, n, 1e-7, loose); // A = VΛVᵀ to about √ε: the dropped off-diagonals
  assert.throws(() => symmetricEigen(a, n, { tolerance: 1 }), /tolerance must be in \[ε, 1\), got 1/);
  assert.throws(() => symmetricEigen(a, n, { tolerance: 0 }), /tolerance must be in/);
});
