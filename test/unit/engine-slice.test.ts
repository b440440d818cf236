// The engine's wasm Slice, Unpack and SplitV (src/trainer/engine/kernels.ts: read their input in place on
// the heap instead of copying all of it first per slice) against an index-by-index reference: ranks 1–5, float32/int32/bool, contiguous
// and strided slices, size −1, empty slices (tfjs refuses to slice a scalar); unstack and split along
// every axis; and the gradient of tf.stack (unstack).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { collapseSlice, installEngineKernels } from '../../src/trainer/engine/kernels';
import { mulberry32 } from '../support/prng';

before(async () => {
  await tf.setBackend('wasm');
  const { kernels } = installEngineKernels(tf, 'wasm');
  for (const name of ['Slice', 'Unpack', 'SplitV']) assert.ok(kernels.includes(name), `the engine's ${name} is installed (${kernels.join(', ')})`);
});

/** x[begin + idx] for every idx of `extent`, in row-major order, from the flat values. */
function referenceSlice(values: ArrayLike<number>, shape: number[], begin: number[], extent: number[]): number[] {
  const out: number[] = [];
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((p, v) => p * v, 1));
  const total = extent.reduce((p, v) => p * v, 1);
  for (let flat = 0; flat < total; flat++) {
    let rest = flat;
    let at = 0;
    for (let d = extent.length - 1; d >= 0; d--) {
      at += (begin[d] + (rest % extent[d])) * strides[d];
      rest = Math.floor(rest / extent[d]);
    }
    out.push(values[at]);
  }
  return out;
}

test('collapseSlice merges every axis taken whole into the axis before it', () => {
  assert.deepEqual(collapseSlice([16, 4, 15, 8], [0, 1, 0, 0], [16, 1, 15, 8]), { shape: [16, 480], begin: [0, 120], extent: [16, 120] });
  assert.deepEqual(collapseSlice([5, 6], [1, 0], [2, 6]), { shape: [30], begin: [6], extent: [12] });
  // A whole leading axis has nothing before it to merge into; partial axes stay.
  assert.deepEqual(collapseSlice([3, 4, 5], [0, 1, 2], [3, 2, 2]), { shape: [3, 4, 5], begin: [0, 1, 2], extent: [3, 2, 2] });
  assert.deepEqual(collapseSlice([2, 3, 4, 5], [1, 0, 1, 0], [1, 3, 2, 5]), { shape: [6, 20], begin: [3, 5], extent: [3, 10] });
  assert.deepEqual(collapseSlice([3, 4, 5], [1, 1, 2], [1, 2, 2]), { shape: [3, 4, 5], begin: [1, 1, 2], extent: [1, 2, 2] });
});

test('wasm Slice equals the index-by-index reference: ranks 1–5, float32, int32 and bool, contiguous, strided and empty', () => {
  const rnd = mulberry32(5);
  const pick = (n: number) => Math.floor(rnd() * n);
  let checked = 0;
  for (const shape of [[7], [5, 6], [4, 1, 5], [3, 4, 5, 6], [2, 3, 2, 4, 3]]) {
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const count = shape.reduce((p, v) => p * v, 1);
      const values = Array.from({ length: count }, () => (dtype === 'bool' ? pick(2) : dtype === 'int32' ? pick(1000) - 500 : rnd() - 0.5));
      const x = tf.tensor(dtype === 'float32' ? Float32Array.from(values) : dtype === 'int32' ? Int32Array.from(values) : Uint8Array.from(values), shape, dtype);
      const stored = Array.from(x.dataSync());
      for (let t = 0; t < 12; t++) {
        const begin = shape.map((d) => pick(d));
        const extent = shape.map((d, i) => (t === 0 ? d - begin[i] : t === 1 ? 0 : 1 + pick(d - begin[i])));
        // size −1 on one axis: to the end.
        const asked = t === 2 ? extent.map((v, i) => (i === 0 ? -1 : v)) : extent;
        if (t === 2) extent[0] = shape[0] - begin[0];
        const got = tf.slice(x, begin, asked);
        assert.deepEqual(got.shape, extent, `shape ${shape} begin ${begin} size ${asked}`);
        assert.equal(got.dtype, dtype);
        assert.deepEqual(Array.from(got.dataSync()), referenceSlice(stored, shape, begin, extent), `${dtype} ${shape} begin ${begin} size ${asked}`);
        got.dispose();
        checked++;
      }
      x.dispose();
    }
  }
  assert.equal(checked, 5 * 3 * 12, "every slice checked");
});

test('wasm Slice through unstack: the gradient of tf.stack hands each input its own block (a 64-way stack)', () => {
  const rnd = mulberry32(6);
  const parts = Array.from({ length: 64 }, () => tf.tensor2d(Float32Array.from({ length: 12 }, () => rnd()), [3, 4]));
  const weights = tf.tensor3d(Float32Array.from({ length: 64 * 12 }, () => rnd() - 0.5), [64, 3, 4]);
  const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(tf.stack(xs), weights)))(parts);
  const w = weights.dataSync();
  grads.forEach((g, e) => assert.deepEqual(Array.from(g.dataSync()), Array.from(w.subarray(e * 12, (e + 1) * 12)), `input ${e}`));
  tf.dispose([...parts, weights, ...grads]);
});

test('wasm Unpack and SplitV along every axis of rank 1–4 tensors equal the reference slices; int32 too', () => {
  const rnd = mulberry32(7);
  for (const shape of [[6], [3, 5], [4, 3, 2], [2, 3, 4, 5]]) {
    const count = shape.reduce((p, v) => p * v, 1);
    for (const dtype of ['float32', 'int32'] as const) {
      const values = Array.from({ length: count }, () => Math.floor(rnd() * 1000) - 500);
      const x = tf.tensor(values, shape, dtype);
      for (let axis = 0; axis < shape.length; axis++) {
        const parts = tf.unstack(x, axis);
        assert.equal(parts.length, shape[axis]);
        parts.forEach((part, i) => {
          const begin = shape.map((_, d) => (d === axis ? i : 0));
          const extent = shape.map((v, d) => (d === axis ? 1 : v));
          assert.deepEqual(part.shape, shape.filter((_, d) => d !== axis));
          assert.deepEqual(Array.from(part.dataSync()), referenceSlice(values, shape, begin, extent), `unstack ${shape} axis ${axis} #${i}`);
        });
        const sizes = shape[axis] === 1 ? [1] : [1, shape[axis] - 1];
        const pieces = tf.split(x, sizes, axis);
        let at = 0;
        pieces.forEach((piece, i) => {
          const begin = shape.map((_, d) => (d === axis ? at : 0));
          const extent = shape.map((v, d) => (d === axis ? sizes[i] : v));
          assert.deepEqual(piece.shape, extent);
          assert.deepEqual(Array.from(piece.dataSync()), referenceSlice(values, shape, begin, extent), `split ${shape} axis ${axis} #${i}`);
          at += sizes[i];
        });
        tf.dispose([...parts, ...pieces]);
      }
      x.dispose();
    }
  }
});
