import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import { loadBuiltin, loadFashionMnist, readIdx } from '../../src/trainer/data';

const DEBIAN = '/usr/share/datasets/fashion-mnist';

test('the built-in dataset: shapes, balanced labels, pixels in [0, 1]', () => {
  const d = loadBuiltin();
  assert.equal(d.features, 196);
  assert.equal(d.classes, 10);
  assert.equal(d.train.n, 4000);
  assert.equal(d.test.n, 1000);
  assert.equal(d.train.x.length, 4000 * 196);
  const counts = new Array(10).fill(0);
  for (const l of d.train.labels) counts[l]++;
  assert.deepEqual(counts, new Array(10).fill(400));
  let min = Infinity, max = -Infinity;
  for (const v of d.train.x) (min = Math.min(min, v)), (max = Math.max(max, v));
  assert.equal(min, 0);
  assert.ok(max > 0.9 && max <= 1);
});

test('IDX reader: a hand-made file round-trips (gzipped and plain); a wrong magic is refused', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-idx-'));
  const body = Buffer.from([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  fs.writeFileSync(path.join(dir, 'a.gz'), gzipSync(body));
  fs.writeFileSync(path.join(dir, 'b'), body);
  for (const f of ['a', 'b']) {
    const r = readIdx(path.join(dir, f));
    assert.deepEqual(r.shape, [2, 2, 3]);
    assert.deepEqual(Array.from(r.data), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  }
  assert.deepEqual(Array.from(readIdx(path.join(dir, 'b'), 1).data), [1, 2, 3, 4, 5, 6]);
  fs.writeFileSync(path.join(dir, 'c'), Buffer.from([1, 2, 3, 4]));
  assert.throws(() => readIdx(path.join(dir, 'c')), /not an unsigned-byte IDX/);
  assert.throws(() => readIdx(path.join(dir, 'missing')), /missing Fashion-MNIST file/);
});

// Needs Debian's dataset-fashion-mnist (.ci/run installs it).
test("Debian's Fashion-MNIST loads (first 300 examples)", () => {
  const d = loadFashionMnist(DEBIAN, 300, 100);
  assert.equal(d.features, 784);
  assert.equal(d.train.n, 300);
  assert.equal(d.test.n, 100);
  assert.ok(d.train.labels.every((l) => l < 10));
  // The built-in set is a 2×2-mean downsample of these very images: its pixel statistics agree.
  const mean = (a: Float32Array) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(Math.abs(mean(d.train.x) - mean(loadBuiltin().train.x)) < 0.03);
});
