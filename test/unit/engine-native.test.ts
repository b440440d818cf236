// The engine's kernels (src/trainer/engine): OpenBLAS products and the fused Adam through the native
// addon, and the wasm fallback for transposed products. Every product is checked against a float64
// reference, gradients against tfjs's own kernels, Adam bit for bit against tf.train.adam, and the
// fallback end to end in a process where the addon is switched off.
// Where OpenBLAS and a compiler are installed (CI installs libopenblas-dev) the addon is expected: it
// is built here if missing, and a failure to build or load fails this file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { createAdam } from '../../src/trainer/engine/adam';
import { installEngineKernels, nativeKernelCalls, setNativeKernelsActive, type EngineBackendName } from '../../src/trainer/engine/kernels';
import { loadNativeBlas, resetNativeBlasForTests } from '../../src/trainer/engine/native';
import { sumOfSquares } from '../../src/trainer/engine/sumOfSquares';
import { mulberry32 } from '../support/prng';

const root = path.resolve(__dirname, '..', '..');
const BACKENDS: EngineBackendName[] = ['cpu', 'wasm'];
let expected = false;
let buildLine = '';

before(() => {
  delete process.env.PLTRAIN_NATIVE;
  const script = path.join(root, 'scripts', 'build-native.mjs');
  const check = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' });
  expected = /^native: buildable/m.test(check.stdout);
  buildLine = check.stdout.trim();
  if (expected && !loadNativeBlas().blas) {
    const build = spawnSync(process.execPath, [script], { encoding: 'utf8' });
    buildLine = build.stdout.trim().split('\n').pop() ?? '';
    resetNativeBlasForTests();
  }
});

test('the addon loads wherever OpenBLAS and a compiler are installed', (t) => {
  const { blas, note } = loadNativeBlas();
  t.diagnostic(`build: ${buildLine}; load: ${note}`);
  if (!expected) {
    // Nothing to build against: the trainer must simply run without it.
    assert.equal(blas, undefined, 'no OpenBLAS here, so no addon should load');
    return;
  }
  assert.ok(blas, `OpenBLAS is installed but the addon did not load (${note}); run npm run build:native`);
  const info = blas.info();
  assert.ok(info.corename.length > 0 && info.threads >= 1);
});

test('the addon rejects buffers too short for the shapes instead of writing past them', () => {
  const { blas } = loadNativeBlas();
  if (!blas) return assert.equal(expected, false);
  const a = new Float32Array(6);
  const b = new Float32Array(6);
  assert.throws(() => blas.gemm(a, b, new Float32Array(3), 1, 2, 2, 3, false, false, 6, 6, null, false), /c is too short/);
  assert.throws(() => blas.gemm(a, b, new Float32Array(4), 2, 2, 2, 3, false, false, 6, 6, null, false), /a is too short/);
  assert.throws(() => blas.gemm(a, b, new Float32Array(4), 1, 2, 2, 3, false, false, 6, 6, new Float32Array(3), false), /bias must have n elements/);
  assert.throws(() => blas.gemm(a, [1, 2] as unknown as Float32Array, new Float32Array(4), 1, 2, 2, 3, false, false, 6, 6, null, false), /b must be a Float32Array/);
  // A batch and stride whose product overflows 64 bits: too short, not wrapped round to a small offset.
  assert.throws(() => blas.gemm(a, b, new Float32Array(4), 2 ** 40, 2, 2, 3, false, false, 2 ** 40, 6, null, false), /a is too short/);
});

test('a missing or broken addon file is reported, not thrown', () => {
  const saved = process.env.PLTRAIN_NATIVE_ADDON;
  try {
    process.env.PLTRAIN_NATIVE_ADDON = path.join(root, 'package.json');
    resetNativeBlasForTests();
    const broken = loadNativeBlas();
    assert.equal(broken.blas, undefined);
    assert.match(broken.note, /failed to load/);
    process.env.PLTRAIN_NATIVE = 'off';
    resetNativeBlasForTests();
    assert.match(loadNativeBlas().note, /off \(PLTRAIN_NATIVE\)/);
  } finally {
    delete process.env.PLTRAIN_NATIVE;
    if (saved === undefined) delete process.env.PLTRAIN_NATIVE_ADDON;
    else process.env.PLTRAIN_NATIVE_ADDON = saved;
    resetNativeBlasForTests();
  }
});

function randomTensor(rand: () => number, shape: number[]): tf.Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => rand() * 2 - 1), shape);
}

/** op(A)·op(B) in float64 for rank ≥ 2 operands whose batch dims are equal or 1. */
function referenceProduct(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): { shape: number[]; values: Float64Array } {
  const [av, bv] = [a.dataSync(), b.dataSync()];
  const ra = a.rank;
  const rb = b.rank;
  const m = ta ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = ta ? a.shape[ra - 2] : a.shape[ra - 1];
  const n = tb ? b.shape[rb - 2] : b.shape[rb - 1];
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const rank = Math.max(outerA.length, outerB.length);
  const pad = (s: number[]) => [...Array(rank - s.length).fill(1), ...s];
  const outer = pad(outerA).map((d, i) => Math.max(d, pad(outerB)[i]));
  const batch = outer.reduce((p, d) => p * d, 1);
  const batchA = outerA.reduce((p, d) => p * d, 1);
  const batchB = outerB.reduce((p, d) => p * d, 1);
  const values = new Float64Array(batch * m * n);
  for (let s = 0; s < batch; s++) {
    const offA = (batchA === 1 ? 0 : s) * m * k;
    const offB = (batchB === 1 ? 0 : s) * k * n;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) acc += av[offA + (ta ? p * m + i : i * k + p)] * bv[offB + (tb ? j * k + p : p * n + j)];
        values[s * m * n + i * n + j] = acc;
      }
  }
  return { shape: [...outer, m, n], values };
}

/** max |got − want| / max |want| (norm-wise, so entries near zero do not dominate). */
function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return den === 0 ? num : num / den;
}

// [a shape, b shape] before transposition: shapes are given for transposeA = transposeB = false.
const PRODUCTS: [number[], number[]][] = [
  [[7, 13], [13, 5]],
  [[1, 1], [1, 1]],
  [[33, 70], [70, 129]],
  [[3, 4, 6], [3, 6, 5]],
  [[1, 4, 6], [3, 6, 5]],
  [[3, 4, 6], [1, 6, 5]],
  [[2, 3, 4, 6], [2, 3, 6, 5]],
  [[0, 4, 6], [0, 6, 5]],
  [[0, 6], [6, 5]],
  [[4, 0], [0, 5]],
];

const swapLast = (s: number[]) => [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]];

/** Runs `fn` on the cpu and wasm backends with the engine's kernels installed; native kernels back on afterwards, whatever happens. */
async function onEachBackend(fn: (backend: EngineBackendName, native: boolean) => void | Promise<void>): Promise<void> {
  try {
    for (const backend of BACKENDS) {
      await tf.setBackend(backend);
      const kernels = installEngineKernels(tf, backend);
      if (expected) assert.ok(kernels.native, `${backend}: native kernels expected (${kernels.reason})`);
      await fn(backend, kernels.native);
    }
  } finally {
    setNativeKernelsActive(true);
    await tf.setBackend('cpu');
  }
}

test('matMul and batchMatMul equal a float64 reference for every transpose combination, native and fallback', async () => {
  const rand = mulberry32(11);
  await onEachBackend((backend, native) => {
    for (const [sa, sb] of PRODUCTS)
      for (const ta of [false, true])
        for (const tb of [false, true])
          for (const useNative of native ? [true, false] : [false]) {
            setNativeKernelsActive(useNative);
            const a = randomTensor(rand, ta ? swapLast(sa) : sa);
            const b = randomTensor(rand, tb ? swapLast(sb) : sb);
            const calls = nativeKernelCalls();
            const got = tf.matMul(a, b, ta, tb);
            const want = referenceProduct(a, b, ta, tb);
            const what = `${backend} native=${useNative} ${sa}×${sb} tA=${ta} tB=${tb}`;
            if (useNative) assert.equal(nativeKernelCalls(), calls + 1, `${what}: the native kernel ran`);
            assert.deepEqual(got.shape, want.shape, what);
            assert.ok(relativeError(got.dataSync(), want.values) <= 1e-5, `${what}: error ${relativeError(got.dataSync(), want.values)}`);
            tf.dispose([a, b, got]);
          }
  });
});

test('fused matMul with bias and ReLU equals the float64 reference; activations it does not fuse still come out right', async () => {
  const rand = mulberry32(12);
  const cases: { sa: number[]; sb: number[]; bias?: number[]; activation: 'linear' | 'relu' | 'sigmoid' }[] = [
    { sa: [9, 17], sb: [17, 11], bias: [11], activation: 'relu' },
    { sa: [9, 17], sb: [17, 11], bias: [11], activation: 'linear' },
    { sa: [9, 17], sb: [17, 11], activation: 'relu' },
    { sa: [1, 1], sb: [1, 1], bias: [1], activation: 'relu' },
    { sa: [2, 5, 3], sb: [2, 3, 4], bias: [4], activation: 'relu' },
    { sa: [128, 784], sb: [784, 8], bias: [8], activation: 'linear' },
    { sa: [9, 17], sb: [17, 11], bias: [11], activation: 'sigmoid' },
  ];
  await onEachBackend((backend, native) => {
    for (const c of cases)
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]])
        for (const useNative of native ? [true, false] : [false]) {
          setNativeKernelsActive(useNative);
          const a = randomTensor(rand, ta ? swapLast(c.sa) : c.sa);
          const b = randomTensor(rand, tb ? swapLast(c.sb) : c.sb);
          const bias = c.bias ? randomTensor(rand, c.bias) : undefined;
          const calls = nativeKernelCalls();
          const got = tf.fused.matMul({ a, b, transposeA: ta, transposeB: tb, bias, activation: c.activation });
          const want = referenceProduct(a, b, ta, tb);
          const n = want.shape[want.shape.length - 1];
          const biasValues = bias?.dataSync();
          const act = (v: number) => (c.activation === 'relu' ? Math.max(0, v) : c.activation === 'sigmoid' ? 1 / (1 + Math.exp(-v)) : v);
          const expectedValues = want.values.map((v, i) => act(v + (biasValues ? biasValues[i % n] : 0)));
          const what = `${backend} native=${useNative} ${JSON.stringify(c)} tA=${ta} tB=${tb}`;
          if (useNative && c.activation !== 'sigmoid') assert.equal(nativeKernelCalls(), calls + 1, `${what}: the native kernel ran`);
          assert.deepEqual(got.shape, want.shape, what);
          assert.ok(relativeError(got.dataSync(), expectedValues) <= 1e-5, `${what}: error ${relativeError(got.dataSync(), expectedValues)}`);
          tf.dispose([a, b, got, ...(bias ? [bias] : [])]);
        }
  });
});

test('gradients through the native kernels equal those through tfjs kernels', async () => {
  const rand = mulberry32(13);
  await onEachBackend((backend, native) => {
    const a = randomTensor(rand, [16, 24]);
    const b = randomTensor(rand, [24, 12]);
    const bias = randomTensor(rand, [12]);
    const w = randomTensor(rand, [16, 12]);
    const b3 = randomTensor(rand, [3, 12, 5]);
    // Two layers under one scalar loss: fused bias+ReLU (unfused under the tape: product, add, relu),
    // then a batched product of the stacked hidden layer, and a fused linear layer (fused under the tape).
    const loss = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) =>
      tf.tidy(() => {
        const h = tf.mul(tf.fused.matMul({ a: x, b: y, bias: z, activation: 'relu' }), w);
        const batched = tf.matMul(tf.stack([h, tf.mul(h, 2), tf.neg(h)]), b3, false, false);
        const linear = tf.fused.matMul({ a: h, b: y, bias: tf.concat([z, z]), transposeB: true }); // 16×24
        return tf.add(tf.sum(tf.square(batched)), tf.sum(linear)) as tf.Scalar;
      });
    const gradients = (useNative: boolean) => {
      setNativeKernelsActive(useNative);
      return tf.grads(loss)([a, b, bias]);
    };
    const reference = gradients(false);
    if (backend === 'cpu') {
      // With the engine off the cpu backend runs tfjs's own kernels: check those against finite differences once.
      const eps = 1e-2;
      const [ai, aj] = [3, 5];
      const shifted = (d: number) => {
        const values = a.arraySync() as number[][];
        values[ai][aj] += d;
        return loss(tf.tensor2d(values), b, bias).dataSync()[0];
      };
      const fd = (shifted(eps) - shifted(-eps)) / (2 * eps);
      const analytic = (reference[0].arraySync() as number[][])[ai][aj];
      assert.ok(Math.abs(fd - analytic) <= 1e-2 * Math.max(1, Math.abs(analytic)), `finite difference ${fd} vs ${analytic}`);
    }
    if (native) {
      const calls = nativeKernelCalls();
      const got = gradients(true);
      assert.ok(nativeKernelCalls() > calls + 3, `${backend}: backward products ran natively`);
      got.forEach((g, i) => {
        const error = relativeError(g.dataSync(), reference[i].dataSync());
        assert.ok(error <= 1e-5, `${backend} gradient ${i}: ${error}`);
      });
      tf.dispose(got);
    }
    tf.dispose([a, b, bias, w, b3, ...reference]);
  });
});

test('fused Adam updates bit for bit as tf.train.adam, across setWeights and a switch back to tfjs mid-run', async () => {
  const rand = mulberry32(14);
  await onEachBackend((backend, native) => {
    const shapes = [[37, 5], [5], [3, 4, 2]];
    const init = shapes.map((s) => randomTensor(rand, s));
    const make = (tag: string) => init.map((t, i) => tf.variable(t.clone(), true, `adam-${backend}-${tag}-${i}`));
    const plain = make('plain');
    const fused = make('fused');
    const plainOpt = tf.train.adam(0.05);
    const fusedOpt = createAdam(tf, 0.05);
    const step = (k: number) => {
      const grads = shapes.map((s) => randomTensor(rand, s));
      plainOpt.applyGradients(plain.map((v, i) => ({ name: v.name, tensor: grads[i] })));
      fusedOpt.applyGradients(fused.map((v, i) => ({ name: v.name, tensor: grads[i] })));
      plain.forEach((v, i) => assert.deepEqual(fused[i].dataSync(), v.dataSync(), `${backend} step ${k} variable ${i}`));
      tf.dispose(grads);
    };
    const calls = nativeKernelCalls();
    for (let k = 0; k < 5; k++) step(k);
    if (native) assert.equal(nativeKernelCalls(), calls + 5 * shapes.length, `${backend}: fused update ran`);
    setNativeKernelsActive(false);
    for (let k = 5; k < 7; k++) step(k); // tfjs's own code path, from the fused optimizer's state
    setNativeKernelsActive(true);
    for (let k = 7; k < 9; k++) step(k);
    tf.dispose([...plain, ...fused, ...init]);
    plainOpt.dispose();
    fusedOpt.dispose();
  });
});

test('fused Adam checkpoints load into tf.train.adam and back, and continue identically', async () => {
  const rand = mulberry32(15);
  await onEachBackend(async (backend) => {
    const v1 = tf.variable(randomTensor(rand, [6, 3]), true, `ckpt-${backend}-a`);
    const fused = createAdam(tf, 0.02);
    for (let k = 0; k < 3; k++) tf.tidy(() => fused.applyGradients([{ name: v1.name, tensor: randomTensor(rand, [6, 3]) }]));
    const saved = await fused.getWeights();
    const copy = () => saved.map((x) => ({ name: x.name, tensor: x.tensor.clone() }));
    // The same state restored into tfjs's Adam and into a new fused one: both must continue alike.
    const plain = tf.train.adam(0.02);
    await plain.setWeights(copy());
    const restored = createAdam(tf, 0.02);
    await restored.setWeights(copy());
    const v2 = tf.variable(v1.clone(), true, `ckpt-${backend}-b`);
    const v3 = tf.variable(v1.clone(), true, `ckpt-${backend}-c`);
    for (let k = 0; k < 3; k++) {
      const g = randomTensor(rand, [6, 3]);
      plain.applyGradients([{ name: v2.name, tensor: g }]);
      restored.applyGradients([{ name: v3.name, tensor: g }]);
      g.dispose();
      assert.deepEqual(v3.dataSync(), v2.dataSync(), `${backend} after restore, step ${k}`);
    }
    tf.dispose([v1, v2, v3]);
    [fused, plain, restored].forEach((o) => o.dispose());
  });
});

test('sumOfSquares equals the float64 sum over all tensors, native and fallback', async () => {
  const rand = mulberry32(16);
  await onEachBackend((backend, native) => {
    const tensors = [[784, 3], [7], [1], [0, 4], [2, 3, 5]].map((s) => randomTensor(rand, s));
    const want = tensors.reduce((acc, t) => acc + Array.from(t.dataSync()).reduce((a, v) => a + v * v, 0), 0);
    for (const useNative of native ? [true, false] : [false]) {
      setNativeKernelsActive(useNative);
      const calls = nativeKernelCalls();
      const got = sumOfSquares(tf, tensors);
      if (useNative) assert.equal(nativeKernelCalls(), calls + 1, `${backend}: one native kernel for all tensors`);
      assert.deepEqual(got.shape, []);
      // Native accumulates in float64 (only the final float32 rounding); tfjs's sums accumulate in float32.
      const tolerance = useNative ? 1e-7 : 1e-5;
      assert.ok(Math.abs(got.dataSync()[0] - want) <= tolerance * want, `${backend} native=${useNative}: ${got.dataSync()[0]} vs ${want}`);
      got.dispose();
    }
    assert.equal(sumOfSquares(tf, []).dataSync()[0], 0);
    tf.dispose(tensors);
  });
});

test('with PLTRAIN_NATIVE=off the trainer falls back to plain wasm and still trains', () => {
  const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'bench', 'moe-step.ts'), '--backend', 'wasm', '--steps', '2', '--warmup', '1', '--measures', '1'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, PLTRAIN_NATIVE: 'off' },
    timeout: 120_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split('\n').pop()!);
  assert.equal(result.backend, 'wasm');
  assert.equal(result.native, false);
  assert.match(result.detail, /no native BLAS: native kernels off \(PLTRAIN_NATIVE\)/);
  assert.ok(result.msPerStep.median > 0 && Number.isFinite(result.measureMs));
  // The default-α step, timed with its in-step κ measurement (what the bench's monitoring figure divides).
  assert.equal(result.regularized.alpha, 0.01);
  assert.ok(result.regularized.msPerStep > 0 && result.regularized.monitorMs >= 0 && result.regularized.monitorMs < result.regularized.msPerStep, JSON.stringify(result.regularized));
});
