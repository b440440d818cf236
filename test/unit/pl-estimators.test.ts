// The PL estimators against closed forms and independent float64 routes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { conditioning, gramOfJacobian, kappaSurrogateTf, outputDirections, symmetricEigen, tangentKernelTf, twoLayerTangentKernel, type TwoLayerExpert } from '../../src/trainer/pl';
import { mulberry32 } from '../support/prng';

const randn = (rnd: () => number) => Math.sqrt(-2 * Math.log(rnd() + 1e-300)) * Math.cos(2 * Math.PI * rnd());
const randomArray = (rnd: () => number, len: number, scale = 1) => Float64Array.from({ length: len }, () => randn(rnd) * scale);

function matmul(a: ArrayLike<number>, b: ArrayLike<number>, n: number, k: number, m: number): Float64Array {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    let s = 0;
    for (let t = 0; t < k; t++) s += a[i * k + t] * b[t * m + j];
    out[i * m + j] = s;
  }
  return out;
}
const transpose = (a: ArrayLike<number>, n: number, m: number) => {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[j * n + i] = a[i * m + j];
  return out;
};
const frob = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));

/** A random orthonormal n×n matrix (Gram–Schmidt on Gaussian columns). */
function randomOrthogonal(rnd: () => number, n: number): Float64Array {
  const q = randomArray(rnd, n * n);
  for (let c = 0; c < n; c++) {
    for (let p = 0; p < c; p++) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += q[i * n + c] * q[i * n + p];
      for (let i = 0; i < n; i++) q[i * n + c] -= dot * q[i * n + p];
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += q[i * n + c] ** 2;
    for (let i = 0; i < n; i++) q[i * n + c] /= Math.sqrt(norm);
  }
  return q;
}

test('eigen: diagonal, 2×2 closed form, n = 1', () => {
  const d = symmetricEigen([3, 0, 0, 0, -1, 0, 0, 0, 2], 3);
  assert.deepEqual(Array.from(d.values), [-1, 2, 3]);
  const [a, b, c] = [2, 1.5, -0.5];
  const e = symmetricEigen([a, b, b, c], 2);
  const mid = (a + c) / 2, rad = Math.hypot((a - c) / 2, b);
  assert.ok(Math.abs(e.values[0] - (mid - rad)) < 1e-14 && Math.abs(e.values[1] - (mid + rad)) < 1e-14);
  assert.deepEqual(Array.from(symmetricEigen([7], 1).values), [7]);
});

test('eigen: random symmetric 40×40 reconstructs to 1e-10 with orthonormal vectors, ascending', () => {
  const rnd = mulberry32(7);
  const n = 40;
  const r = randomArray(rnd, n * n);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = (r[i * n + j] + r[j * n + i]) / 2;
  const { values, vectors } = symmetricEigen(a, n);
  for (let k = 1; k < n; k++) assert.ok(values[k] >= values[k - 1]);
  const lam = new Float64Array(n * n);
  for (let k = 0; k < n; k++) lam[k * n + k] = values[k];
  const rec = matmul(matmul(vectors, lam, n, n, n), transpose(vectors, n, n), n, n, n);
  assert.ok(frob(rec.map((v, i) => v - a[i])) / frob(a) <= 1e-10);
  const vtv = matmul(transpose(vectors, n, n), vectors, n, n, n);
  for (let i = 0; i < n; i++) vtv[i * n + i] -= 1;
  assert.ok(frob(vtv) <= 1e-10);
});

test('eigen: repeated eigenvalues (Q·diag(1,1,1,5)·Qᵀ)', () => {
  const rnd = mulberry32(3);
  const q = randomOrthogonal(rnd, 4);
  const a = matmul(matmul(q, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 5], 4, 4, 4), transpose(q, 4, 4), 4, 4, 4);
  const { values } = symmetricEigen(a, 4);
  [1, 1, 1, 5].forEach((v, i) => assert.ok(Math.abs(values[i] - v) < 1e-12));
});

test('linear model: K = X·Xᵀ, μ = σ_min², L = σ_max², κ = (σ_max/σ_min)² (relative error ≤ 1e-4)', () => {
  const rnd = mulberry32(11);
  const n = 8, p = 20;
  // X = U·[diag(s) 0]·Vᵀ with known singular values.
  const s = [0.5, 0.9, 1.3, 2, 2.5, 3.1, 4, 6];
  const U = randomOrthogonal(rnd, n), V = randomOrthogonal(rnd, p);
  const S = new Float64Array(n * p);
  s.forEach((v, i) => (S[i * p + i] = v));
  const X = matmul(matmul(U, S, n, n, p), transpose(V, p, p), n, p, p);
  const K = gramOfJacobian(X, n, p);
  const xxt = matmul(X, transpose(X, n, p), n, p, n);
  assert.ok(frob(K.map((v, i) => v - xxt[i])) / frob(xxt) < 1e-12);
  const c = conditioning(K, n, 1e-12);
  const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
  assert.ok(rel(c.mu, 0.25) <= 1e-4, `μ ${c.mu}`);
  assert.ok(rel(c.lf, 36) <= 1e-4, `L ${c.lf}`);
  assert.ok(rel(c.kappa, 144) <= 1e-4, `κ ${c.kappa}`);
});

test('a linear expert through the two-layer formula: identity hidden layer, u = 1 gives X·Xᵀ + bias terms', () => {
  // With h = 1 unit carrying a positive constant and c = 1, K reduces to closed form too; here we
  // check the general formula against an explicit finite-difference Jacobian instead.
  const rnd = mulberry32(5);
  const n = 6, d = 5, h = 7, c = 3;
  const e: TwoLayerExpert = { d, h, c, w1: randomArray(rnd, d * h), b1: randomArray(rnd, h), w2: randomArray(rnd, h * c), b2: randomArray(rnd, c) };
  const x = randomArray(rnd, n * d), u = randomArray(rnd, n * c);
  const params = [e.w1, e.b1, e.w2, e.b2].flatMap((a) => Array.from(a));
  const P = params.length;
  const scalar = (q: number[], i: number) => {
    let out = 0;
    const hid: number[] = [];
    for (let k = 0; k < h; k++) {
      let z = q[d * h + k];
      for (let a = 0; a < d; a++) z += x[i * d + a] * q[a * h + k];
      hid.push(Math.max(z, 0));
    }
    for (let o = 0; o < c; o++) {
      let v = q[d * h + h + h * c + o];
      for (let k = 0; k < h; k++) v += hid[k] * q[d * h + h + k * c + o];
      out += u[i * c + o] * v;
    }
    return out;
  };
  const J = new Float64Array(n * P);
  for (let i = 0; i < n; i++) for (let k = 0; k < P; k++) {
    const a = [...params], b = [...params];
    a[k] += 1e-6;
    b[k] -= 1e-6;
    J[i * P + k] = (scalar(a, i) - scalar(b, i)) / 2e-6;
  }
  const K = twoLayerTangentKernel(e, x, u, n);
  const ref = gramOfJacobian(J, n, P);
  assert.ok(frob(K.map((v, i) => v - ref[i])) / frob(ref) <= 1e-6);
});

test('tangentKernelTf (float32) matches the float64 kernel to 1e-4', async () => {
  await tf.setBackend('cpu');
  const rnd = mulberry32(9);
  const n = 8, d = 12, h = 10, c = 4;
  const e: TwoLayerExpert = { d, h, c, w1: randomArray(rnd, d * h, 0.3), b1: randomArray(rnd, h, 0.1), w2: randomArray(rnd, h * c, 0.3), b2: randomArray(rnd, c) };
  const x = randomArray(rnd, n * d), u = randomArray(rnd, n * c);
  const ref = twoLayerTangentKernel(e, x, u, n);
  const K = tf.tidy(() => tangentKernelTf(tf.tensor2d(Float32Array.from(x), [n, d]), tf.tensor2d(Float32Array.from(u), [n, c]), tf.tensor2d(Float32Array.from(e.w1), [d, h]), tf.tensor1d(Float32Array.from(e.b1)), tf.tensor2d(Float32Array.from(e.w2), [h, c])));
  const got = K.dataSync();
  K.dispose();
  assert.ok(frob(ref.map((v, i) => v - got[i])) / frob(ref) <= 1e-4);
});

test('∇κ through the Hellmann–Feynman surrogate matches finite differences of the exact float64 κ', async () => {
  await tf.setBackend('cpu');
  const rnd = mulberry32(21);
  const n = 5, d = 8, h = 12, c = 3;
  const e: TwoLayerExpert = { d, h, c, w1: randomArray(rnd, d * h, 0.5), b1: randomArray(rnd, h, 0.5).map((v) => Math.abs(v) + 0.2), w2: randomArray(rnd, h * c, 0.5), b2: new Float64Array(c) };
  const x = randomArray(rnd, n * d), u = randomArray(rnd, n * c);
  const damping = 1e-9;
  const exactKappa = (w1: ArrayLike<number>, w2: ArrayLike<number>) => conditioning(twoLayerTangentKernel({ ...e, w1, w2 }, x, u, n), n, damping).kappa;
  const c0 = conditioning(twoLayerTangentKernel(e, x, u, n), n, damping);
  const xs = tf.tensor2d(Float32Array.from(x), [n, d]), us = tf.tensor2d(Float32Array.from(u), [n, c]), b1 = tf.tensor1d(Float32Array.from(e.b1));
  const [g1, g2] = tf.grads((w1: tf.Tensor, w2: tf.Tensor) => kappaSurrogateTf(tangentKernelTf(xs, us, w1 as tf.Tensor2D, b1, w2 as tf.Tensor2D), c0.vMin, c0.vMax, damping))([
    tf.tensor2d(Float32Array.from(e.w1), [d, h]),
    tf.tensor2d(Float32Array.from(e.w2), [h, c]),
  ]);
  const grad1 = g1.dataSync(), grad2 = g2.dataSync();
  const gnorm = Math.sqrt([...grad1, ...grad2].reduce((s, v) => s + v * v, 0));
  const eps = 1e-6;
  for (let trial = 0; trial < 8; trial++) {
    const which = trial % 2;
    const len = which === 0 ? d * h : h * c;
    const k = Math.floor(rnd() * len);
    const plus = Float64Array.from(which === 0 ? e.w1 : e.w2), minus = Float64Array.from(plus);
    plus[k] += eps;
    minus[k] -= eps;
    const fd = which === 0 ? (exactKappa(plus, e.w2) - exactKappa(minus, e.w2)) / (2 * eps) : (exactKappa(e.w1, plus) - exactKappa(e.w1, minus)) / (2 * eps);
    const got = which === 0 ? grad1[k] : grad2[k];
    // float32 autodiff vs float64 finite differences: compare relative to the gradient's scale.
    assert.ok(Math.abs(got - fd) <= 2e-2 * Math.max(Math.abs(fd), gnorm / Math.sqrt(len)), `w${which + 1}[${k}]: ${got} vs ${fd}`);
  }
  tf.dispose([xs, us, b1, g1, g2]);
});

test('output directions are unit rows, zero for a perfect prediction', () => {
  const probs = [0.7, 0.2, 0.1, 1, 0, 0];
  const y = [0, 1, 0, 1, 0, 0];
  const u = outputDirections(probs, y, 2, 3);
  assert.ok(Math.abs(Math.hypot(u[0], u[1], u[2]) - 1) < 1e-12);
  assert.deepEqual(Array.from(u.slice(3)), [0, 0, 0]);
  assert.ok(u[1] < 0 && u[0] > 0, 'points from the label towards the wrong classes');
});

test('a dead expert (zero kernel) gives μ = L = 0 and κ = 1/δ, never NaN', () => {
  const c = conditioning(new Float64Array(16), 4, 1e-6);
  assert.equal(c.mu, 0);
  assert.equal(c.lf, 0);
  assert.equal(c.kappa, 1e6);
});
