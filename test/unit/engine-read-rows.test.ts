// src/trainer/engine/readRows.ts: a ranged read of a tensor equals dataSync().subarray(...) on wasm and
// cpu, into a reused array or a fresh one, for tensors made from values and by kernels; the copy stays
// right after the wasm heap grows (no view is returned); bad ranges are refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { readRange, readRows } from '../../src/trainer/engine/readRows';
import { mulberry32 } from '../support/prng';

for (const backend of ['wasm', 'cpu'] as const) {
  test(`readRows equals dataSync().subarray on ${backend}, into a reused array and a fresh one`, async () => {
    assert.ok(await tf.setBackend(backend));
    const rnd = mulberry32(backend === 'wasm' ? 3 : 4);
    const scratch = new Float32Array(720 * 32);
    for (const [rows, cols] of [[720, 32], [5, 3], [1, 7]] as const) {
      const values = Float32Array.from({ length: rows * cols }, () => rnd() - 0.5);
      const made = tf.tensor2d(values, [rows, cols]);
      // A kernel's output too (not only a tensor written from values).
      const computed = tf.mul(made, tf.scalar(3));
      for (const t of [made, computed]) {
        const all = t.dataSync() as Float32Array;
        for (const [fromRow, count] of [[0, rows], [Math.floor(rows / 3), Math.ceil(rows / 3)], [rows - 1, 1], [rows, 0]]) {
          const expected = Array.from(all.subarray(fromRow * cols, (fromRow + count) * cols));
          const into = readRows(tf, t, fromRow, count, scratch);
          assert.equal(into.buffer, scratch.buffer, 'read into the caller array');
          assert.deepEqual(Array.from(into), expected);
          assert.deepEqual(Array.from(readRows(tf, t, fromRow, count)), expected);
        }
      }
      tf.dispose([made, computed]);
    }
  });

  test(`readRange on ${backend}: the copy survives the heap growing; bad ranges and disposed tensors are refused`, async () => {
    assert.ok(await tf.setBackend(backend));
    const t = tf.tensor1d(Float32Array.from({ length: 100 }, (_, i) => i * 0.5));
    const got = readRange(tf, t, 10, 20);
    const big = tf.zeros([64, 1024, 1024]); // 256 MB: grows the wasm heap, detaching older views
    assert.deepEqual(Array.from(got), Array.from({ length: 20 }, (_, i) => (10 + i) * 0.5));
    big.dispose();
    assert.throws(() => readRange(tf, t, 90, 11), /elements 90 … 100 of a tensor of 100/);
    assert.throws(() => readRange(tf, t, 0, 10, new Float32Array(5)), /10 elements into an array of 5/);
    // int32: through dataSync.
    const ints = tf.tensor1d([1, 2, 3, 4], 'int32');
    assert.deepEqual(Array.from(readRange(tf, ints, 1, 2)), [2, 3]);
    t.dispose();
    ints.dispose();
    assert.throws(() => readRange(tf, t, 0, 1), /disposed/);
  });
}
