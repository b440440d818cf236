// The engine's wasm Transpose (src/trainer/engine/kernels.ts: runs every permutation at its smallest rank,
// collapseTranspose, because tfjs-backend-wasm 4.22 moves ranks above 4 index by index) against an
// index-by-index reference: ranks 1–6 with axes of size 1, float32/int32/bool, permutations that collapse
// to the identity (shared, not copied), to rank 2 or 3, or not at all; and the gradient of a transpose.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { collapseTranspose, installEngineKernels } from '../../src/trainer/engine/kernels';
import { mulberry32 } from '../support/prng';

before(async () => {
  await tf.setBackend('wasm');
  const { kernels } = installEngineKernels(tf, 'wasm');
  assert.ok(kernels.includes('Transpose'), `the engine's Transpose is installed (${kernels.join(', ')})`);
});

/** out[i_0…] = x[i at the axes perm names], in row-major order of the output. */
function referenceTranspose(values: ArrayLike<number>, shape: number[], perm: number[]): number[] {
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((p, v) => p * v, 1));
  const outShape = perm.map((axis) => shape[axis]);
  const total = shape.reduce((p, v) => p * v, 1);
  const out: number[] = [];
  for (let flat = 0; flat < total; flat++) {
    let rest = flat;
    let at = 0;
    for (let d = outShape.length - 1; d >= 0; d--) {
      at += (rest % outShape[d]) * strides[perm[d]];
      rest = Math.floor(rest / outShape[d]);
    }
    out.push(values[at]);
  }
  return out;
}

test('collapseTranspose: size-1 axes dropped, adjacent runs merged, the identity recognised', () => {
  assert.deepEqual(collapseTranspose([16, 32, 3, 4, 8], [3, 0, 1, 2, 4]), { shape: [1536, 4, 8], perm: [1, 0, 2] });
  assert.deepEqual(collapseTranspose([2, 3, 4], [2, 0, 1]), { shape: [6, 4], perm: [1, 0] });
  assert.deepEqual(collapseTranspose([5, 1, 7], [1, 0, 2]), { shape: [35], perm: [0] });
  assert.deepEqual(collapseTranspose([1, 1], [1, 0]), { shape: [], perm: [] });
  assert.deepEqual(collapseTranspose([2, 3, 4, 5], [0, 2, 1, 3]), { shape: [2, 3, 4, 5], perm: [0, 2, 1, 3] });
  assert.deepEqual(collapseTranspose([2, 3, 4, 5, 6], [3, 4, 0, 1, 2]), { shape: [24, 30], perm: [1, 0] });
});

test('wasm Transpose equals the index-by-index reference: ranks 1–6, size-1 axes, float32, int32 and bool', () => {
  const rnd = mulberry32(11);
  const pick = (n: number) => Math.floor(rnd() * n);
  const shuffle = (n: number) => {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = pick(i + 1);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  };
  let checked = 0;
  for (const shape of [[7], [5, 6], [4, 1, 5], [3, 4, 5, 6], [2, 3, 1, 4, 3], [16, 6, 3, 4, 2], [2, 1, 3, 2, 1, 4]]) {
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const count = shape.reduce((p, v) => p * v, 1);
      const values = Array.from({ length: count }, () => (dtype === 'bool' ? pick(2) : dtype === 'int32' ? pick(1000) - 500 : rnd() - 0.5));
      const x = tf.tensor(dtype === 'float32' ? Float32Array.from(values) : dtype === 'int32' ? Int32Array.from(values) : Uint8Array.from(values), shape, dtype);
      const stored = Array.from(x.dataSync());
      // The identity, the full reversal, and random permutations.
      const perms = [shape.map((_, i) => i), shape.map((_, i) => shape.length - 1 - i), ...Array.from({ length: 6 }, () => shuffle(shape.length))];
      for (const perm of perms) {
        const got = tf.transpose(x, perm);
        assert.deepEqual(got.shape, perm.map((axis) => shape[axis]), `shape ${shape} perm ${perm}`);
        assert.equal(got.dtype, dtype);
        assert.deepEqual(Array.from(got.dataSync()), referenceTranspose(stored, shape, perm), `${dtype} ${shape} perm ${perm}`);
        got.dispose();
        checked++;
      }
      // Shared or copied, the input is unchanged and still readable after the outputs are gone.
      assert.deepEqual(Array.from(x.dataSync()), stored);
      x.dispose();
    }
  }
  assert.equal(checked, 7 * 3 * 8, 'every permutation checked');
});

test("wasm Transpose in a gradient: d/dx Σ w ⊙ transpose(x) is w transposed back, bert's rank-5 case", () => {
  const rnd = mulberry32(12);
  const shape = [4, 5, 3, 2, 3];
  const perm = [3, 0, 1, 2, 4];
  const count = shape.reduce((p, v) => p * v, 1);
  const x = tf.tensor(Float32Array.from({ length: count }, () => rnd()), shape);
  const wShape = perm.map((axis) => shape[axis]);
  const w = tf.tensor(Float32Array.from({ length: count }, () => rnd() - 0.5), wShape);
  const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.transpose(t, perm), w)))(x);
  const inverse = perm.map((_, i) => perm.indexOf(i));
  assert.deepEqual(Array.from(grad.dataSync()), referenceTranspose(Array.from(w.dataSync()), wShape, inverse));
  tf.dispose([x, w, grad]);
});
