// src/trainer/engine/readRows.ts: a ranged read of a tensor equals dataSync().subarray(...) on wasm and
// cpu, into a reused array or a fresh one, for tensors made from values and by kernels; the copy stays
// right after the wasm heap grows (no view is returned); bad ranges are refused. tensorFromRows equals
// the zero-padded array, keeps no reference to its input, and leaks nothing; tensorFilledBy and
// readInPlace write and read a tensor's values where they live.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { readInPlace, readRange, readRows, tensorFilledBy, tensorFromRows } from '../../src/trainer/engine/readRows';
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

  test(`tensorFromRows on ${backend}: zero except the given rows, its input copied (reusable), nothing leaked; bad rows refused`, async () => {
    assert.ok(await tf.setBackend(backend));
    const before = tf.memory().numTensors;
    for (const [shape, fromRow, count] of [[[720, 32], 480, 240], [[5, 2, 3], 0, 5], [[5, 2, 3], 4, 1], [[4, 3], 2, 0]] as [number[], number, number][]) {
      const perRow = shape.slice(1).reduce((p, d) => p * d, 1);
      // Dirty the heap first where wasm may reuse memory: the tensor must still be zero outside the rows.
      tf.dispose(tf.fill(shape, 7));
      const rows = Float32Array.from({ length: count * perRow }, (_, i) => i + 0.25);
      const t = tensorFromRows(tf, shape, fromRow, rows);
      const expected = new Float32Array(shape.reduce((p, d) => p * d, 1));
      expected.set(rows, fromRow * perRow);
      rows.fill(-1); // the caller reuses its array
      assert.deepEqual(t.shape, shape);
      assert.equal(t.dtype, 'float32');
      assert.deepEqual(t.dataSync(), expected);
      // Usable by kernels like any tensor.
      const doubled = tf.mul(t, 2);
      assert.deepEqual(Array.from(doubled.dataSync()), Array.from(expected, (v) => 2 * v));
      tf.dispose([t, doubled]);
    }
    assert.equal(tf.memory().numTensors, before, 'no tensor left');
    assert.throws(() => tensorFromRows(tf, [4, 3], 3, new Float32Array(6)), /6 values from row 3 of a tensor \[4,3\]/);
    assert.throws(() => tensorFromRows(tf, [4, 3], 0, new Float32Array(5)), /5 values from row 0/);
  });

  test(`tensorFilledBy and readInPlace on ${backend}: a host op's output written where the tensor lives (every value, on a dirtied heap), its input read without a copy; int32 read through dataSync; nothing leaked`, async () => {
    assert.ok(await tf.setBackend(backend));
    const before = tf.memory().numTensors;
    for (const shape of [[4, 16, 2096], [3, 5], [1]]) {
      const size = shape.reduce((p, d) => p * d, 1);
      tf.dispose(tf.fill(shape, 7));
      const t = tensorFilledBy(tf, shape, (values) => {
        assert.equal(values.length, size);
        for (let i = 0; i < size; i++) values[i] = i * 0.5 - 3;
      });
      assert.deepEqual(t.shape, shape);
      const expected = Float32Array.from({ length: size }, (_, i) => i * 0.5 - 3);
      assert.deepEqual(t.dataSync(), expected);
      // A kernel's output read in place equals its dataSync; the reader's result is returned.
      const doubled = tf.mul(t, 2);
      const sum = readInPlace(tf, doubled, (values) => {
        assert.equal(values.length, size);
        return values.reduce((a, v) => a + v, 0);
      });
      assert.equal(sum, Array.from(doubled.dataSync()).reduce((a, v) => a + v, 0));
      tf.dispose([t, doubled]);
    }
    const ints = tf.tensor1d([1, 2, 3], 'int32');
    assert.deepEqual(readInPlace(tf, ints, (v) => Array.from(v)), [1, 2, 3]);
    ints.dispose();
    assert.throws(() => readInPlace(tf, ints, () => 0), /disposed/);
    assert.equal(tf.memory().numTensors, before, 'no tensor left');
  });
}
