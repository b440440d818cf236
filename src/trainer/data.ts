// Datasets the trainer can load without any network: the built-in Fashion-MNIST subset shipped in
// data/builtin, and the full Fashion-MNIST IDX files (e.g. Debian's dataset-fashion-mnist).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DEFAULT_FASHION_MNIST_PATH, MAX_DATA_FILE_BYTES, TrainingConfig } from '../protocol';
import { readDataFile } from '../protocol/dataFile';
import type { TaskData } from './models/types';

export interface Split {
  /** n × features, pixels scaled to [0, 1]. */
  x: Float32Array;
  labels: Uint8Array;
  n: number;
}

export interface Dataset {
  name: string;
  features: number;
  classes: number;
  train: Split;
  test: Split;
}

/** The repository (or installed extension) root: the nearest folder up from here with package.json. */
export function packageRoot(from = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'data', 'builtin'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find the package root (with data/builtin) above ${from}`);
  }
}

export const BUILTIN_FILE = () => path.join(packageRoot(), 'data', 'builtin', 'fashion-mini.bin.gz');

function toFloat(pixels: Uint8Array): Float32Array {
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = pixels[i] / 255;
  return out;
}

export function loadBuiltin(file = BUILTIN_FILE()): Dataset {
  const b = gunzipSync(fs.readFileSync(file));
  if (b.toString('ascii', 0, 4) !== 'PLDS') throw new Error(`${file} is not a PL Trainer dataset`);
  const [version, nTrain, nTest, rows, cols, classes] = Array.from({ length: 6 }, (_, i) => b.readUInt32LE(4 + 4 * i));
  if (version !== 1) throw new Error(`${file}: unsupported dataset version ${version}`);
  const f = rows * cols;
  let at = 28;
  const take = (len: number) => new Uint8Array(b.buffer.slice(b.byteOffset + at, b.byteOffset + (at += len)));
  const trainPx = take(nTrain * f), trainLb = take(nTrain), testPx = take(nTest * f), testLb = take(nTest);
  return {
    name: 'builtin (Fashion-MNIST 14×14 subset)',
    features: f,
    classes,
    train: { x: toFloat(trainPx), labels: trainLb, n: nTrain },
    test: { x: toFloat(testPx), labels: testLb, n: nTest },
  };
}

/** Reads an IDX file (gzipped or not); `limit` caps the number of items read. */
export function readIdx(file: string, limit = Infinity): { shape: number[]; data: Uint8Array } {
  const candidates = [file, `${file}.gz`].filter((f) => fs.existsSync(f));
  if (!candidates.length) throw new Error(`missing Fashion-MNIST file ${file}[.gz]`);
  // Regular files only, and bounded, unzipped too (readDataFile; a wrong data.path can name anything).
  const raw = readDataFile(candidates[0]);
  let b: Buffer;
  try {
    b = candidates[0].endsWith('.gz') ? gunzipSync(raw, { maxOutputLength: MAX_DATA_FILE_BYTES }) : raw;
  } catch (e) {
    throw new Error(`${candidates[0]}: cannot unzip (${(e as Error).message}; at most ${MAX_DATA_FILE_BYTES / 1024 / 1024} MiB once unzipped)`);
  }
  if (b[0] !== 0 || b[1] !== 0 || b[2] !== 0x08) throw new Error(`${candidates[0]} is not an unsigned-byte IDX file`);
  const dims = b[3];
  const shape = Array.from({ length: dims }, (_, i) => b.readUInt32BE(4 + 4 * i));
  shape[0] = Math.min(shape[0], limit);
  const count = shape.reduce((a, v) => a * v, 1);
  return { shape, data: new Uint8Array(b.buffer.slice(b.byteOffset + 4 + 4 * dims, b.byteOffset + 4 + 4 * dims + count)) };
}

export function loadFashionMnist(dir: string, maxTrain = Infinity, maxTest = Infinity): Dataset {
  const images = readIdx(path.join(dir, 'train-images-idx3-ubyte'), maxTrain);
  const labels = readIdx(path.join(dir, 'train-labels-idx1-ubyte'), maxTrain);
  const tImages = readIdx(path.join(dir, 't10k-images-idx3-ubyte'), maxTest);
  const tLabels = readIdx(path.join(dir, 't10k-labels-idx1-ubyte'), maxTest);
  const f = images.shape[1] * images.shape[2];
  return {
    name: `Fashion-MNIST (${dir})`,
    features: f,
    classes: 10,
    train: { x: toFloat(images.data), labels: labels.data, n: images.shape[0] },
    test: { x: toFloat(tImages.data), labels: tLabels.data, n: tImages.shape[0] },
  };
}

export function loadDataset(config: TrainingConfig, configDir: string): Dataset {
  const max = config.data.maxTrainExamples > 0 ? config.data.maxTrainExamples : Infinity;
  const ds = config.data.source === 'builtin' ? loadBuiltin() : loadFashionMnist(config.data.path ? path.resolve(configDir, config.data.path) : DEFAULT_FASHION_MNIST_PATH, max);
  if (max < ds.train.n) ds.train = { x: ds.train.x.slice(0, max * ds.features), labels: ds.train.labels.slice(0, max), n: max };
  return ds;
}

/** An image dataset as the training loop sees it: example indices in, batch tensors out. */
export function imageTaskData(ds: Dataset): TaskData {
  const side = Math.round(Math.sqrt(ds.features));
  const [rows, cols] = side * side === ds.features ? [side, side] : [1, ds.features];
  const gather = (split: Split, indices: ArrayLike<number>) => {
    const x = new Float32Array(indices.length * ds.features);
    const labels = new Int32Array(indices.length);
    for (let r = 0; r < indices.length; r++) {
      const i = indices[r];
      if (!(i >= 0 && i < split.n)) throw new RangeError(`example ${i} is outside the split (0…${split.n - 1})`);
      x.set(split.x.subarray(i * ds.features, (i + 1) * ds.features), r * ds.features);
      labels[r] = split.labels[i];
    }
    return { x, labels };
  };
  return {
    name: ds.name,
    kind: 'images',
    taskMetric: 'accuracy',
    trainSize: ds.train.n,
    testSize: ds.test.n,
    features: ds.features,
    rows,
    cols,
    classes: ds.classes,
    batch(tf, split, indices) {
      const { x, labels } = gather(split === 'train' ? ds.train : ds.test, indices);
      return tf.tidy(() => ({
        x: tf.tensor2d(x, [labels.length, ds.features]),
        y: tf.oneHot(tf.tensor1d(labels, 'int32'), ds.classes).toFloat(),
        size: labels.length,
      }));
    },
  };
}
