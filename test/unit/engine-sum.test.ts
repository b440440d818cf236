// The engine's wasm Sum over leading or middle axes (src/trainer/engine/kernels.ts sumByProduct: a product
// with a row of ones in OpenBLAS instead of tfjs-backend-wasm's transpose-then-reduce) against a float64
// reference: one or several contiguous axes, keepDims, the sizes on both sides of the 2k-float threshold;
// trailing and non-contiguous reductions left to tfjs's kernel; the gradient of a broadcast bias add.
// Where the addon cannot be built the replacement is not installed, and the file says so.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { installEngineKernels, leadingReduction, nativeKernelCalls } from '../../src/trainer/engine/kernels';
import { mulberry32 } from '../support/prng';

let native = false;

before(async () => {
  await tf.setBackend('wasm');
  const installed = installEngineKernels(tf, 'wasm');
  native = installed.native;
  if (native) assert.ok(installed.kernels.includes('Sum'), `the engine's Sum is installed with the addon (${installed.kernels.join(', ')})`);
  else console.log(`# the native Sum is not tested here: ${installed.reason}`);
});

/** Σ over `axes` of x (row-major `shape`) in float64, keepDims. */
function referenceSum(values: ArrayLike<number>, shape: number[], axes: number[]): Float64Array {
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outStrides = outShape.map((_, d) => outShape.slice(d + 1).reduce((p, v) => p * v, 1));
  const out = new Float64Array(outShape.reduce((p, v) => p * v, 1));
  for (let flat = 0; flat < values.length; flat++) {
    let rest = flat;
    let at = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const i = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      if (!axes.includes(d)) at += i * outStrides[d];
    }
    out[at] += values[flat];
  }
  return out;
}

test('leadingReduction: one contiguous run of axes that is not the trailing one', () => {
  assert.deepEqual(leadingReduction([480, 96], [0]), { before: 1, reduced: 480, after: 96 });
  assert.deepEqual(leadingReduction([4, 5, 6, 7], [1, 2]), { before: 4, reduced: 30, after: 7 });
  assert.deepEqual(leadingReduction([4, 5, 6], [0, 1]), { before: 1, reduced: 20, after: 6 });
  assert.equal(leadingReduction([4, 5, 6], [2]), undefined, 'trailing');
  assert.equal(leadingReduction([4, 5, 6], [0, 2]), undefined, 'not contiguous');
  assert.equal(leadingReduction([4, 5, 1], [0, 1]), undefined, 'trailing after size-1 axes');
  assert.equal(leadingReduction([4, 5], []), undefined);
});

test('wasm Sum equals the float64 reference: leading, middle, several axes, keepDims, trailing and split axes', () => {
  const rnd = mulberry32(21);
  const cases: [number[], number[]][] = [
    [[480, 96], [0]],
    [[32, 10], [0]],
    [[64, 32], [0]],
    [[16, 15, 32], [1]],
    [[2, 240, 32], [1]],
    [[8, 12, 40], [0, 1]],
    [[3, 40, 5, 8], [1, 2]],
    [[30, 200], [1]],
    [[12, 20, 16], [0, 2]],
  ];
  let viaProduct = 0;
  for (const [shape, axes] of cases) {
    for (const keepDims of [false, true]) {
      const count = shape.reduce((p, v) => p * v, 1);
      const values = Float32Array.from({ length: count }, () => rnd() - 0.5);
      const x = tf.tensor(values, shape);
      const calls = nativeKernelCalls();
      const got = tf.sum(x, axes, keepDims);
      const g = leadingReduction(shape, axes);
      if (native && g && count >= 2048) {
        assert.equal(nativeKernelCalls(), calls + 1, `${shape} over ${axes}: the product ran`);
        viaProduct++;
      } else assert.equal(nativeKernelCalls(), calls, `${shape} over ${axes}: tfjs's kernel`);
      assert.deepEqual(got.shape, keepDims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_, i) => !axes.includes(i)));
      const want = referenceSum(values, shape, axes);
      const have = got.dataSync();
      const terms = count / want.length;
      want.forEach((w, i) => assert.ok(Math.abs(have[i] - w) <= 1e-6 * Math.sqrt(terms) + 1e-6 * Math.abs(w), `${shape} over ${axes}[${i}]: ${have[i]} vs ${w}`));
      tf.dispose([x, got]);
    }
  }
  if (native) assert.equal(viaProduct, 2 * 6, 'the large leading and middle cases took the product');
});

test("the gradient of a broadcast bias add (a sum over the batch axis) equals the reference", () => {
  const rnd = mulberry32(22);
  const [n, d] = [480, 32];
  const x = tf.tensor2d(Float32Array.from({ length: n * d }, () => rnd()), [n, d]);
  const bias = tf.tensor1d(Float32Array.from({ length: d }, () => rnd()));
  const w = Float32Array.from({ length: n * d }, () => rnd() - 0.5);
  const weights = tf.tensor2d(w, [n, d]);
  const grad = tf.grad((b: tf.Tensor) => tf.sum(tf.mul(tf.add(x, b), weights)))(bias);
  const want = referenceSum(w, [n, d], [0]);
  grad.dataSync().forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 1e-5, `${i}: ${v} vs ${want[i]}`));
  tf.dispose([x, bias, weights, grad]);
});
