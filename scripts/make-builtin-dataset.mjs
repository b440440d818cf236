// Makes data/builtin/fashion-mini.bin.gz: a class-balanced, seeded subset of Fashion-MNIST
// (Debian's dataset-fashion-mnist), downsampled 28×28 → 14×14 by 2×2 means, so the default run
// trains anywhere with no download. Run: node scripts/make-builtin-dataset.mjs [srcDir]
// Format (after gunzip): magic "PLDS", u32 version=1, u32 nTrain, u32 nTest, u32 rows, u32 cols,
// u32 classes, then train pixels (u8, nTrain×rows×cols), train labels (u8), test pixels, test labels.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { join } from 'node:path';

const src = process.argv[2] ?? '/usr/share/datasets/fashion-mnist';
const out = join(import.meta.dirname, '..', 'data', 'builtin', 'fashion-mini.bin.gz');
const PER_CLASS_TRAIN = 400, PER_CLASS_TEST = 100, CLASSES = 10, SEED = 20261122;

function idx(file) {
  const b = gunzipSync(readFileSync(join(src, file)));
  const dims = b.readUInt8(3);
  const shape = Array.from({ length: dims }, (_, i) => b.readUInt32BE(4 + 4 * i));
  return { shape, data: b.subarray(4 + 4 * dims) };
}
function rng(seed) {
  let a = seed >>> 0;
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
}
function pick(images, labels, perClass, rnd) {
  const byClass = Array.from({ length: CLASSES }, () => []);
  for (let i = 0; i < labels.length; i++) byClass[labels[i]].push(i);
  const chosen = [];
  for (const list of byClass) {
    for (let i = list.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [list[i], list[j]] = [list[j], list[i]]; }
    chosen.push(...list.slice(0, perClass));
  }
  for (let i = chosen.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [chosen[i], chosen[j]] = [chosen[j], chosen[i]]; }
  const px = new Uint8Array(chosen.length * 196), lb = new Uint8Array(chosen.length);
  chosen.forEach((src, n) => {
    lb[n] = labels[src];
    for (let r = 0; r < 14; r++) for (let c = 0; c < 14; c++) {
      const o = src * 784, at = (rr, cc) => images[o + rr * 28 + cc];
      px[n * 196 + r * 14 + c] = Math.round((at(2 * r, 2 * c) + at(2 * r, 2 * c + 1) + at(2 * r + 1, 2 * c) + at(2 * r + 1, 2 * c + 1)) / 4);
    }
  });
  return { px, lb };
}
const rnd = rng(SEED);
const train = pick(idx('train-images-idx3-ubyte.gz').data, idx('train-labels-idx1-ubyte.gz').data, PER_CLASS_TRAIN, rnd);
const test = pick(idx('t10k-images-idx3-ubyte.gz').data, idx('t10k-labels-idx1-ubyte.gz').data, PER_CLASS_TEST, rnd);
const header = Buffer.alloc(28);
header.write('PLDS', 0, 'ascii');
[1, train.lb.length, test.lb.length, 14, 14, CLASSES].forEach((v, i) => header.writeUInt32LE(v, 4 + 4 * i));
mkdirSync(join(import.meta.dirname, '..', 'data', 'builtin'), { recursive: true });
writeFileSync(out, gzipSync(Buffer.concat([header, train.px, train.lb, test.px, test.lb]), { level: 9 }));
console.log(`wrote ${out}: ${train.lb.length} train + ${test.lb.length} test, 14×14`);
