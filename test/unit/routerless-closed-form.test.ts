// The routerless families' regularizer pieces written as one op each with a closed-form gradient
// (routerlessClassifier.ts): the output directions u(z) (directionsOp) and κ̃ of the model's kernel along
// held eigenvectors (kappaSurrogateOp). Each against float64 central differences of its definition and
// against the tf ops they replace (outputDirectionsTf, smoothKappaTf of tensor Rayleigh quotients),
// with the degenerate rows and units: a confident row (‖g‖ under float32's range), a row with no pull
// left, soft labels, a unit outside the sum, a kernel that is zero.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { outputDirections, outputDirectionsTf, smoothKappaTf } from '../../src/trainer/pl';
import { rowScales } from '../../src/trainer/models/shared';
import { directionsOp, kappaSurrogateOp } from '../../src/trainer/models/routerlessClassifier';
import { centralDifference } from '../support/linalg';

before(async () => {
  await tf.setBackend('cpu');
});

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => Math.max(s, Math.abs(v - b[i])), 0);
const scaleOf = (a: ArrayLike<number>) => Math.max(...Array.from(a, Math.abs));

function logSoftmax64(z: ArrayLike<number>, n: number, c: number): Float64Array {
  const out = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const row = Array.from({ length: c }, (_, j) => z[i * c + j]);
    const top = Math.max(...row);
    const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    row.forEach((v, j) => (out[i * c + j] = v - lse));
  }
  return out;
}

test('directionsOp: u(z) = (softmax(z) − y)/‖·‖ as one op — value, and gradient against float64 central differences and outputDirectionsTf (confident row, no-pull row, soft labels)', () => {
  const [n, c] = [5, 4];
  // Rows: ordinary, ordinary, confident (margin 40: ‖g‖ ≈ e^−40), no pull left (every other class at −∞), soft labels.
  const z = Float64Array.from([0.3, -1.2, 0.8, 0.1, 1.5, 0.2, -0.4, -0.9, 40, 0.5, -0.3, 0.1, 0, -Infinity, -Infinity, -Infinity, 0.2, 0.6, -0.5, 0.4]);
  const y = Float32Array.from([0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0.5, 0.5, 0, 0]);
  const w = Float64Array.from({ length: n * c }, (_, k) => Math.sin(1.7 * k + 0.3));
  const uOf = (zv: Float64Array) => outputDirections(logSoftmax64(zv, n, c), y, n, c);
  const u = uOf(z);
  const op = directionsOp(tf, u, logSoftmax64(z, n, c), y, n, c);
  const zT = tf.tensor2d(Float32Array.from(z), [n, c]);
  const wT = tf.tensor2d(Float32Array.from(w), [n, c]);
  assert.deepEqual(Array.from(op(zT).dataSync()), Array.from(Float32Array.from(u)));
  const [grad] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(op(t as tf.Tensor2D), wT)))([zT]);
  const ours = grad.dataSync();
  // Central differences of ⟨w, u(z)⟩ per row in float64 (finite entries only; the confident row with a
  // step relative to its own scale, the no-pull row's gradient is exactly 0).
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const k = i * c + j;
      if (!Number.isFinite(z[k])) continue;
      const ref = centralDifference(z, k, 1e-5, () => uOf(z).reduce((s, v, m) => s + v * w[m], 0));
      assert.ok(Math.abs(ours[k] - ref) <= 1e-5 + 1e-4 * Math.abs(ref), `row ${i}, class ${j}: ${ours[k]} vs ${ref}`);
    }
  }
  assert.ok(ours.subarray(3 * c, 4 * c).every((x) => x === 0), 'a row with no pull left has no gradient');
  assert.ok(scaleOf(ours.subarray(2 * c, 3 * c)) > 1e-3, 'the confident row still moves');
  // The tf ops it replaces (one-hot rows only: outputDirectionsTf has no soft-label form).
  const oneHot = 4;
  const zHot = tf.tensor2d(Float32Array.from(z.subarray(0, oneHot * c)), [oneHot, c]);
  const yHot = tf.tensor2d(y.subarray(0, oneHot * c), [oneHot, c]);
  const top = rowScales(tf.logSoftmax(zHot).dataSync(), y.subarray(0, oneHot * c), oneHot, c);
  const [old] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(outputDirectionsTf(tf.logSoftmax(t) as tf.Tensor2D, yHot, top), tf.slice(wT, [0, 0], [oneHot, c]))))([zHot]);
  const oldG = old.dataSync();
  assert.ok(maxAbs(oldG, ours.subarray(0, oneHot * c)) <= 1e-5 * Math.max(1, scaleOf(oldG)), `against outputDirectionsTf: ${maxAbs(oldG, ours.subarray(0, oneHot * c))}`);
  tf.dispose([zT, wT, grad, zHot, yHot, old]);
});

test('kappaSurrogateOp: κ̃ of Σ_{u∈units} J_u·J_uᵀ + U·Uᵀ along held vectors as one op — value and gradients against float64 central differences and smoothKappaTf of tensor Rayleigh quotients (a unit outside the sum, a zero kernel)', () => {
  const [units, n, p, classes, damping] = [3, 5, 7, 4, 1e-3];
  const rnd = (len: number, seed: number) => Float64Array.from({ length: len }, (_, k) => Math.sin(seed * 12.9898 + k * 78.233) * 0.8);
  const normalized = (v: Float64Array) => {
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    return v.map((x) => x / norm);
  };
  const vs = [normalized(rnd(n, 1)), normalized(rnd(n, 2))];
  const kappa64 = (J: Float64Array, U: Float64Array, inSum: number[]) => {
    const q = vs.map((v) => {
      let s = 0;
      for (const u of inSum)
        for (let a = 0; a < p; a++) {
          let t = 0;
          for (let i = 0; i < n; i++) t += v[i] * J[(u * n + i) * p + a];
          s += t * t;
        }
      for (let o = 0; o < classes; o++) {
        let t = 0;
        for (let i = 0; i < n; i++) t += v[i] * U[i * classes + o];
        s += t * t;
      }
      return s;
    });
    return q[0] / Math.max(Math.max(q[1], 0) + damping * q[0], 1e-30);
  };
  const kernelsOf = (J: Float64Array) =>
    Array.from({ length: units }, (_, u) => Float64Array.from({ length: n * n }, (_, k) => {
      let s = 0;
      for (let a = 0; a < p; a++) s += J[(u * n + Math.floor(k / n)) * p + a] * J[(u * n + (k % n)) * p + a];
      return s;
    }));
  for (const [what, J, inSum] of [
    ['two of three units', rnd(units * n * p, 3), [0, 2]],
    ['a zero kernel in the sum', Float64Array.from(rnd(units * n * p, 4), (x, k) => (k < n * p ? 0 : x)), [0, 1, 2]],
    ['no unit (the bias kernel alone)', rnd(units * n * p, 5), []],
  ] as [string, Float64Array, number[]][]) {
    const U = rnd(n * classes, 6);
    const J32 = Float64Array.from(Float32Array.from(J));
    const U32 = Float64Array.from(Float32Array.from(U));
    const op = kappaSurrogateOp(tf, vs, kernelsOf(J32), U32, inSum, classes, damping);
    const [JT, UT] = [tf.tensor3d(Float32Array.from(J), [units, n, p]), tf.tensor2d(Float32Array.from(U), [n, classes])];
    const [gJ, gU] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.mul(op(a as tf.Tensor3D, b as tf.Tensor2D), 3))([JT, UT]);
    const ref = kappa64(J32, U32, inSum);
    assert.ok(Math.abs(op(JT, UT).dataSync()[0] - ref) <= 1e-6 * Math.abs(ref), `${what}: value`);
    const refJ = J32.map((_, k) => 3 * centralDifference(J32, k, 1e-5, () => kappa64(J32, U32, inSum)));
    const refU = U32.map((_, k) => 3 * centralDifference(U32, k, 1e-5, () => kappa64(J32, U32, inSum)));
    const tol = 1e-4 * Math.max(scaleOf(refJ), scaleOf(refU));
    assert.ok(maxAbs(gJ.dataSync(), refJ) <= tol, `${what}: ∂/∂J ${maxAbs(gJ.dataSync(), refJ)}`);
    assert.ok(maxAbs(gU.dataSync(), refU) <= tol, `${what}: ∂/∂U ${maxAbs(gU.dataSync(), refU)}`);
    for (let u = 0; u < units; u++) if (!inSum.includes(u)) assert.ok(gJ.dataSync().subarray(u * n * p, (u + 1) * n * p).every((x) => x === 0), `${what}: unit ${u} is outside the sum`);
    // The tf ops it replaces.
    const [oJ, oU] = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
      const V = tf.tensor2d(Float32Array.from([...vs[0], ...vs[1]]), [2, n]);
      const mask = tf.tensor3d(Float32Array.from({ length: units }, (_, u) => (inSum.includes(u) ? 1 : 0)), [units, 1, 1]);
      const perUnit = tf.sum(tf.square(tf.matMul(tf.tile(tf.reshape(V, [1, 2, n]), [units, 1, 1]), tf.mul(a, mask) as tf.Tensor3D)), [0, 2]);
      const q = tf.add(perUnit, tf.sum(tf.square(tf.matMul(V, b as tf.Tensor2D)), 1));
      return tf.mul(tf.reshape(smoothKappaTf(tf.slice(q, [0], [1]), tf.slice(q, [1], [1]), damping), []), 3);
    })([JT, UT]);
    assert.ok(maxAbs(gJ.dataSync(), oJ.dataSync()) <= tol && maxAbs(gU.dataSync(), oU.dataSync()) <= tol, `${what}: against smoothKappaTf`);
    tf.dispose([JT, UT, gJ, gU, oJ, oU]);
  }
});
