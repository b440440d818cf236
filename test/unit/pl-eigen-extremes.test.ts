// The extreme-eigenpair solver (Householder + bisection + inverse iteration) against the float64 Jacobi
// reference and closed forms: random PSD kernels, rank-deficient and singular ones, repeated and equal
// eigenvalues, diagonal and tridiagonal inputs, 1×1 and 2×2, scales 1e±200, a dead unit's zero kernel;
// and moe-mlp's measure(), which uses it, against Jacobi on the same float32 kernels.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { kappaAtDampingFloor, parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { MoeMlp, servedExamples } from '../../src/trainer/models/moeMlp';
import { principalSubmatrix } from '../../src/trainer/models/shared';
import { loadNativeBlas } from '../../src/trainer/engine/native';
import { conditioning, conditioningValues, extremeEigen, symmetricEigen } from '../../src/trainer/pl';
import { gaussian, matmul, randomArray, randomOrthogonal, transpose } from '../support/linalg';
import { mulberry32 } from '../support/prng';

before(async () => {
  await tf.setBackend('cpu');
});

const EPS = Number.EPSILON;

/** J·Jᵀ of a random n×p Gaussian J: PSD, rank min(n, p). */
function psdKernel(rnd: () => number, n: number, p: number): Float64Array {
  const j = randomArray(rnd, n * p);
  return matmul(j, transpose(j, n, p), n, p, n);
}

/** Q·diag(spectrum)·Qᵀ for a random orthogonal Q. */
function withSpectrum(rnd: () => number, spectrum: number[]): Float64Array {
  const n = spectrum.length;
  const q = randomOrthogonal(rnd, n);
  const lambda = new Float64Array(n * n);
  spectrum.forEach((v, i) => (lambda[i * n + i] = v));
  return matmul(matmul(q, lambda, n, n, n), transpose(q, n, n), n, n, n);
}

/** max_i |(A·v − λ·v)_i|. */
function residual(a: ArrayLike<number>, n: number, v: Float64Array, lambda: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += a[i * n + j] * v[j];
    worst = Math.max(worst, Math.abs(s - lambda * v[i]));
  }
  return worst;
}

const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);

/**
 * Both extreme eigenvalues within `slack`·n·ε·‖A‖ of Jacobi's (run at tolerance ε), unit vectors with
 * residuals of the same size, orthogonal to each other; where an extreme eigenvalue is separated from
 * its neighbour by a relative gap above 1e-3, its vector equals Jacobi's up to sign (to ε·‖A‖/gap).
 */
function assertMatchesJacobi(a: Float64Array, n: number, label: string, slack = 4): void {
  const ref = symmetricEigen(a, n);
  const norm = Math.max(Math.abs(ref.values[0]), Math.abs(ref.values[n - 1]));
  const got = extremeEigen(a, n, { vectors: true });
  const tol = slack * n * EPS * norm;
  assert.ok(Math.abs(got.min - ref.values[0]) <= tol, `${label}: λ_min ${got.min} vs ${ref.values[0]}`);
  assert.ok(Math.abs(got.max - ref.values[n - 1]) <= tol, `${label}: λ_max ${got.max} vs ${ref.values[n - 1]}`);
  for (const [name, v, lambda] of [['vMin', got.vMin!, got.min], ['vMax', got.vMax!, got.max]] as const) {
    assert.ok(Math.abs(Math.hypot(...v) - 1) <= 4 * EPS * n, `${label}: ‖${name}‖ = ${Math.hypot(...v)}`);
    assert.ok(residual(a, n, v, lambda) <= tol, `${label}: ${name} residual ${residual(a, n, v, lambda)} > ${tol}`);
  }
  if (n >= 2) assert.ok(Math.abs(dot(got.vMin!, got.vMax!)) <= 1e-10, `${label}: vMin·vMax = ${dot(got.vMin!, got.vMax!)}`);
  const column = (k: number) => Float64Array.from({ length: n }, (_, i) => ref.vectors[i * n + k]);
  if (n >= 2) {
    const gapMin = (ref.values[1] - ref.values[0]) / norm;
    const gapMax = (ref.values[n - 1] - ref.values[n - 2]) / norm;
    if (gapMin > 1e-3) assert.ok(1 - Math.abs(dot(got.vMin!, column(0))) <= 1e-10, `${label}: vMin vs Jacobi's`);
    if (gapMax > 1e-3) assert.ok(1 - Math.abs(dot(got.vMax!, column(n - 1))) <= 1e-10, `${label}: vMax vs Jacobi's`);
  }
  const values = extremeEigen(a, n);
  assert.deepEqual([values.min, values.max], [got.min, got.max], `${label}: the same eigenvalues without vectors`);
  assert.equal(values.vMin, undefined);
}

test('extremes: random PSD kernels n = 2…64, full rank, against Jacobi (values to 4nε·λ_max, vectors to sign)', () => {
  const rnd = mulberry32(101);
  for (const n of [2, 3, 5, 8, 16, 24, 32, 48, 64]) {
    for (let t = 0; t < 3; t++) assertMatchesJacobi(psdKernel(rnd, n, n + 20), n, `n = ${n} #${t}`);
  }
});

test('extremes: rank-deficient and singular kernels (J·Jᵀ of rank p < n, a dead unit\'s U·Uᵀ of rank c = 10): λ_min within nε·λ_max of 0, κ at the damping floor', () => {
  const rnd = mulberry32(102);
  for (const [n, p] of [[16, 10], [32, 10], [32, 1], [64, 10], [64, 63]] as const) {
    const a = psdKernel(rnd, n, p);
    assertMatchesJacobi(a, n, `n = ${n}, rank ${p}`);
    const c = conditioning(a, n, 1e-6, { solver: 'extremes' });
    assert.ok(c.mu <= 4 * n * EPS * c.lf, `n = ${n}, rank ${p}: μ = ${c.mu} of λ_max ${c.lf}`);
    assert.ok(kappaAtDampingFloor(c.kappa, 1e-6), `n = ${n}, rank ${p}: κ = ${c.kappa} at the floor`);
  }
});

test('extremes: random symmetric indefinite matrices (the solver is not limited to PSD input)', () => {
  const rnd = mulberry32(103);
  for (const n of [4, 17, 40]) {
    const r = randomArray(rnd, n * n);
    const a = Float64Array.from({ length: n * n }, (_, k) => (r[k] + r[(k % n) * n + Math.floor(k / n)]) / 2);
    assertMatchesJacobi(a, n, `indefinite n = ${n}`);
  }
});

test('extremes: repeated extreme eigenvalues Q·diag(1, 1, 1, 2, 5, 5)·Qᵀ give 1 and 5 to 1e-14 with orthonormal eigenvectors', () => {
  const a = withSpectrum(mulberry32(104), [1, 1, 1, 2, 5, 5]);
  const got = extremeEigen(a, 6, { vectors: true });
  assert.ok(Math.abs(got.min - 1) <= 1e-14 && Math.abs(got.max - 5) <= 1e-14, `${got.min}, ${got.max}`);
  assert.ok(residual(a, 6, got.vMin!, 1) <= 1e-14 && residual(a, 6, got.vMax!, 5) <= 1e-14);
  assertMatchesJacobi(a, 6, 'repeated');
});

test('extremes: every eigenvalue equal (c·I, and Q·(c·I)·Qᵀ with round-off): min = max = c, two orthonormal vectors', () => {
  for (const [label, a, n] of [['3·I', Float64Array.from({ length: 25 }, (_, k) => (k % 6 === 0 ? 3 : 0)), 5], ['rotated 3·I', withSpectrum(mulberry32(105), [3, 3, 3, 3, 3, 3, 3]), 7]] as const) {
    const got = extremeEigen(a, n, { vectors: true });
    assert.ok(Math.abs(got.min - 3) <= 1e-14 && Math.abs(got.max - 3) <= 1e-14, `${label}: ${got.min}, ${got.max}`);
    assert.ok(Math.abs(dot(got.vMin!, got.vMin!) - 1) <= 1e-14 && Math.abs(dot(got.vMax!, got.vMax!) - 1) <= 1e-14, label);
    assert.ok(Math.abs(dot(got.vMin!, got.vMax!)) <= 1e-14, `${label}: vMin·vMax = ${dot(got.vMin!, got.vMax!)}`);
  }
});

test('extremes: a diagonal matrix is not rotated: its smallest and largest entries (to the bisection\'s 2ε), coordinate vectors to round-off', () => {
  const d = [3, -1, 2, 1e-30, 7.5];
  const a = new Float64Array(25);
  d.forEach((v, i) => (a[i * 5 + i] = v));
  const got = extremeEigen(a, 5, { vectors: true });
  assert.ok(Math.abs(got.min + 1) <= 2 * EPS && Math.abs(got.max - 7.5) <= 2 * EPS * 7.5, `${got.min}, ${got.max}`);
  const coordinate = (v: Float64Array, k: number) => v.every((x, i) => Math.abs(Math.abs(x) - (i === k ? 1 : 0)) <= 1e-15);
  assert.ok(coordinate(got.vMin!, 1) && coordinate(got.vMax!, 4), `${got.vMin} / ${got.vMax}`);
});

test('extremes: the tridiagonal Toeplitz matrix tridiag(−1, 2, −1): λ_k = 2 − 2cos(kπ/(n+1)), v_k(i) ∝ sin(ikπ/(n+1))', () => {
  for (const n of [2, 7, 32, 64]) {
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      a[i * n + i] = 2;
      if (i + 1 < n) a[i * n + i + 1] = a[(i + 1) * n + i] = -1;
    }
    const got = extremeEigen(a, n, { vectors: true });
    const lambda = (k: number) => 2 - 2 * Math.cos((k * Math.PI) / (n + 1));
    assert.ok(Math.abs(got.min - lambda(1)) <= 8 * EPS, `n = ${n}: λ_min ${got.min} vs ${lambda(1)}`);
    assert.ok(Math.abs(got.max - lambda(n)) <= 8 * EPS, `n = ${n}: λ_max ${got.max} vs ${lambda(n)}`);
    for (const [v, k] of [[got.vMin!, 1], [got.vMax!, n]] as const) {
      const exact = Float64Array.from({ length: n }, (_, i) => Math.sin(((i + 1) * k * Math.PI) / (n + 1)));
      const cos = dot(v, exact) / Math.hypot(...exact);
      // The gap next to the extremes shrinks as 1/n²: the vector is accurate to about ε·‖A‖/gap.
      assert.ok(1 - Math.abs(cos) <= 1e-11, `n = ${n}, k = ${k}: 1 − |cos| = ${1 - Math.abs(cos)}`);
    }
  }
});

test('extremes: 1×1 and the 2×2 closed form λ = (a+c)/2 ± √(((a−c)/2)² + b²)', () => {
  const one = extremeEigen([7], 1, { vectors: true });
  assert.deepEqual([one.min, one.max, Array.from(one.vMin!), Array.from(one.vMax!)], [7, 7, [1], [1]]);
  for (const [a, b, c] of [[2, 1.5, -0.5], [1, 1e-8, 1], [4, -3, 4], [1e-3, 2, 5e3]]) {
    const got = extremeEigen([a, b, b, c], 2, { vectors: true });
    const mid = (a + c) / 2;
    const radius = Math.hypot((a - c) / 2, b);
    const scale = Math.max(Math.abs(mid - radius), Math.abs(mid + radius));
    assert.ok(Math.abs(got.min - (mid - radius)) <= 4 * EPS * scale, `[${a}, ${b}, ${c}]: λ_min ${got.min}`);
    assert.ok(Math.abs(got.max - (mid + radius)) <= 4 * EPS * scale, `[${a}, ${b}, ${c}]: λ_max ${got.max}`);
    assert.ok(residual([a, b, b, c], 2, got.vMin!, got.min) <= 8 * EPS * scale && residual([a, b, b, c], 2, got.vMax!, got.max) <= 8 * EPS * scale);
  }
});

test('extremes: scaling A by 1e±200 scales λ_min, λ_max and changes the vectors by round-off only', () => {
  const n = 24;
  const a = psdKernel(mulberry32(106), n, 30);
  const reference = extremeEigen(a, n, { vectors: true });
  for (const scale of [1e200, 1e-200, 2 ** -1000]) {
    const got = extremeEigen(a.map((v) => v * scale), n, { vectors: true });
    assert.ok(Math.abs(got.min / scale - reference.min) <= 1e-13 * reference.max, `scale ${scale}: λ_min ${got.min / scale} vs ${reference.min}`);
    assert.ok(Math.abs(got.max / scale - reference.max) <= 1e-13 * reference.max, `scale ${scale}: λ_max`);
    assert.ok(1 - Math.abs(dot(got.vMin!, reference.vMin!)) <= 1e-12 && 1 - Math.abs(dot(got.vMax!, reference.vMax!)) <= 1e-12, `scale ${scale}: vectors`);
  }
});

test('extremes: a dead unit\'s zero kernel reads μ = L_f = 0 and κ = 1/δ exactly, with coordinate vectors', () => {
  const zero = extremeEigen(new Float64Array(16), 4, { vectors: true });
  assert.deepEqual([zero.min, zero.max, Array.from(zero.vMin!), Array.from(zero.vMax!)], [0, 0, [1, 0, 0, 0], [0, 0, 0, 1]]);
  assert.deepEqual(conditioningValues(new Float64Array(16), 4, 1e-6), { mu: 0, lf: 0, kappa: 1e6 });
  assert.equal(conditioning(new Float64Array(16), 4, 1e-6, { solver: 'extremes' }).kappa, 1e6);
});

test('extremes: λ_min far below ε·λ_max (graded spectrum over 20 decades) reads within a few nε·λ_max of it: absolute accuracy, as documented', () => {
  const n = 16;
  const spectrum = Array.from({ length: n }, (_, i) => 10 ** (-20 + (20 * i) / (n - 1)));
  const a = withSpectrum(mulberry32(107), spectrum);
  const got = extremeEigen(a, n);
  assert.ok(Math.abs(got.min - 1e-20) <= 4 * n * EPS, `λ_min ${got.min}`);
  assert.ok(Math.abs(got.max - 1) <= 4 * n * EPS, `λ_max ${got.max}`);
  // κ with δ = 1e-6 does not see the difference: μ's error ε·λ_max is 1e-10 of δ·λ_max.
  const exact = 1 / (1e-20 + 1e-6);
  assert.ok(Math.abs(conditioningValues(a, n, 1e-6).kappa - exact) <= 1e-8 * exact);
});

test('extremes: reads the symmetric part (A + Aᵀ)/2 of an asymmetric (float32-rounded) input; deterministic to the bit', () => {
  const n = 20;
  const a = psdKernel(mulberry32(108), n, 25);
  const rounded = Float32Array.from(a);
  const skewed = Float64Array.from(a);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      skewed[i * n + j] += 1e-7;
      skewed[j * n + i] -= 1e-7;
    }
  }
  const want = extremeEigen(a, n);
  const got = extremeEigen(skewed, n);
  assert.ok(Math.abs(got.min - want.min) <= 1e-13 * want.max && Math.abs(got.max - want.max) <= 1e-13 * want.max);
  assert.deepEqual(extremeEigen(rounded, n, { vectors: true }), extremeEigen(rounded, n, { vectors: true }));
  assertMatchesJacobi(Float64Array.from(rounded), n, 'float32 kernel');
});

test('extremes: rejects a wrong length, n < 1 and non-finite entries with a message that names them', () => {
  assert.throws(() => extremeEigen([1, 2, 3], 2), /expected 2×2 = 4 entries, got 3/);
  assert.throws(() => extremeEigen([], 0), /positive integer, got 0/);
  assert.throws(() => extremeEigen([1, NaN, NaN, 1], 2), /entry \(0, 1\) is NaN/);
  assert.throws(() => extremeEigen([1, 0, 0, -Infinity], 2), /entry \(1, 1\) is -Infinity/);
  assert.throws(() => conditioningValues([1], 1, 0), /damping must be in \(0, 1\]/);
});

test('extremes: the native addon\'s eigenvalues (a C port of the same steps) equal the JavaScript solver\'s bit for bit; without the addon the JavaScript runs', (t) => {
  const { blas, note } = loadNativeBlas();
  t.diagnostic(`native addon: ${note}; extremeEigenvalues ${blas?.extremeEigenvalues ? 'present' : 'absent'}`);
  const rnd = mulberry32(110);
  let compared = 0;
  for (const n of [1, 2, 3, 9, 16, 32, 64]) {
    for (const [p, scale] of [[n + 5, 1], [Math.max(1, n >> 2), 1], [n + 5, 1e-200], [n, 1e200]] as const) {
      const a = psdKernel(rnd, n, p).map((v) => v * scale);
      const js = extremeEigen(a, n, { native: false });
      const dispatched = extremeEigen(a, n);
      assert.deepEqual([dispatched.min, dispatched.max], [js.min, js.max], `n = ${n}, rank ${p}, scale ${scale}`);
      if (blas?.extremeEigenvalues) {
        const out = new Float64Array(2);
        blas.extremeEigenvalues(a, n, out);
        assert.deepEqual(Array.from(out), [js.min, js.max], `native, n = ${n}`);
        compared++;
      }
    }
  }
  assert.deepEqual(extremeEigen(new Float64Array(9), 3), { min: 0, max: 0 });
  if (blas?.extremeEigenvalues) {
    assert.equal(compared, 28);
    const out = new Float64Array(2);
    assert.throws(() => blas.extremeEigenvalues!(new Float64Array(5), 2, out), /n² entries/);
    assert.throws(() => blas.extremeEigenvalues!(Float64Array.from([1, NaN, NaN, 1]), 2, out), /non-finite/);
    assert.throws(() => blas.extremeEigenvalues!(new Float32Array(4) as unknown as Float64Array, 2, out), /must be a Float64Array/);
  }
});

function moeConfig(experts: number, probe: number): TrainingConfig {
  const r = parseTrainingConfig({ model: { experts, hiddenUnits: 12 }, monitor: { probeSize: probe }, seed: 3 });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

test('moe-mlp measure(): every expert\'s μ, L_f, κ and the model\'s κ and eigenvectors equal the Jacobi reference on the same float32 kernels', () => {
  const [d, c, experts, n] = [10, 4, 6, 32];
  const rnd = mulberry32(109);
  const model = new MoeMlp(tf, d, c, moeConfig(experts, n));
  // A gate strong enough that the experts serve different subsets of the probe.
  model.gateW.assign(tf.tensor2d(Float32Array.from({ length: d * experts }, () => gaussian(rnd)), [d, experts]));
  const x = tf.tensor2d(Float32Array.from({ length: n * d }, () => gaussian(rnd)), [n, d]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from({ length: n }, (_, i) => i % c), 'int32'), c).toFloat() as tf.Tensor2D;
  model.setProbe({ x, y, size: n });
  const stats = model.measure(new Set(), new Set([4]));
  const kernels = model.lastKernels!;
  let compared = 0;
  for (const s of stats) {
    const served = servedExamples(kernels.gateProbs, n, experts, s.id);
    assert.equal(s.served, served.length);
    if (s.kappa === null) continue;
    const ref = conditioning(principalSubmatrix(kernels.units[s.id], n, served), served.length, 1e-6);
    assert.ok(Math.abs(s.lf! - ref.lf) <= 1e-13 * ref.lf, `expert ${s.id}: L_f ${s.lf} vs ${ref.lf}`);
    assert.ok(Math.abs(s.mu! - ref.mu) <= 1e-13 * ref.lf, `expert ${s.id}: μ ${s.mu} vs ${ref.mu}`);
    assert.ok(Math.abs(s.kappa - ref.kappa) <= 1e-7 * ref.kappa, `expert ${s.id}: κ ${s.kappa} vs ${ref.kappa}`);
    compared++;
  }
  assert.ok(compared >= 3, `${compared} experts measurable`);
  assert.equal(stats[4].kappa, null, 'the pruned expert serves nothing');
  const ref = conditioning(kernels.model, n, 1e-6);
  assert.ok(Math.abs(model.modelKappa()! - ref.kappa) <= 1e-7 * ref.kappa, `model κ ${model.modelKappa()} vs ${ref.kappa}`);
  // The regularizer's gradient follows these vectors: they must be Jacobi's, up to sign.
  const surrogate = conditioning(kernels.model, n, 1e-6, { solver: 'extremes' });
  assert.ok(1 - Math.abs(dot(surrogate.vMin, ref.vMin)) <= 1e-9 && 1 - Math.abs(dot(surrogate.vMax, ref.vMax)) <= 1e-9);
  model.dispose();
  tf.dispose([x, y]);
});
