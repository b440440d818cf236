// OpenBLAS threads chosen by product size (src/trainer/engine/native.ts): the policy read from the
// environment, the choice per product, a wrapper that changes the thread count only when the choice
// changes, and, where the addon is built, products computed with the choice switching between one and
// two threads equal a float64 reference.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TWO_THREADS_MIN_MACS, loadNativeBlas, resetNativeBlasForTests, threadPolicyFromEnv, threadsBySize, threadsForProduct, type NativeBlas } from '../../src/trainer/engine/native';
import { mulberry32 } from '../support/prng';

test('the policy: PLTRAIN_BLAS_THREADS fixes the count, OpenBLAS variables are left alone, one core means one thread', () => {
  assert.deepEqual(threadPolicyFromEnv({ PLTRAIN_BLAS_THREADS: '2' }, 2), { kind: 'fixed', threads: 2 });
  assert.deepEqual(threadPolicyFromEnv({ PLTRAIN_BLAS_THREADS: '1', OPENBLAS_NUM_THREADS: '4' }, 8), { kind: 'fixed', threads: 1 });
  assert.deepEqual(threadPolicyFromEnv({ OPENBLAS_NUM_THREADS: '4' }, 8), { kind: 'fixed' });
  assert.deepEqual(threadPolicyFromEnv({ OMP_NUM_THREADS: '3' }, 8), { kind: 'fixed' });
  assert.deepEqual(threadPolicyFromEnv({}, 1), { kind: 'fixed', threads: 1 });
  assert.deepEqual(threadPolicyFromEnv({}, 2), { kind: 'bySize', maxThreads: 2, minMacs: TWO_THREADS_MIN_MACS });
  assert.deepEqual(threadPolicyFromEnv({ PLTRAIN_BLAS_TWO_THREADS_MACS: '1000' }, 16), { kind: 'bySize', maxThreads: 2, minMacs: 1000 });
  // Nonsense falls back to the default, never to 0 (every product threaded) or NaN (none).
  for (const bad of ['0', '-5', 'lots', '']) assert.equal((threadPolicyFromEnv({ PLTRAIN_BLAS_TWO_THREADS_MACS: bad }, 2) as { minMacs: number }).minMacs, TWO_THREADS_MIN_MACS);
  for (const bad of ['0', '1.5', 'x']) assert.equal(threadPolicyFromEnv({ PLTRAIN_BLAS_THREADS: bad }, 2).kind, 'bySize');
});

test('the choice per product: one thread below the threshold, two from it on', () => {
  const policy = { maxThreads: 2, minMacs: 1000 };
  assert.equal(threadsForProduct(999, policy), 1);
  assert.equal(threadsForProduct(1000, policy), 2);
  assert.equal(threadsForProduct(0, policy), 1);
  // The reference MoE's 128×784×256 products stay on one thread at the default.
  assert.equal(threadsForProduct(128 * 784 * 256, { maxThreads: 2, minMacs: TWO_THREADS_MIN_MACS }), 1);
});

test('the wrapper sets the thread count before a gemm only when the choice changes, and passes everything through', () => {
  const calls: string[] = [];
  const fake = {
    gemm: (_a: Float32Array, _b: Float32Array, _c: Float32Array, batch: number, m: number, n: number, k: number) => calls.push(`gemm ${batch}×${m}×${n}×${k}`),
    adam: () => calls.push('adam'),
    sumSquares: () => 7,
    setThreads: (t: number) => calls.push(`threads ${t}`),
    info: () => ({ corename: 'x', config: 'y', threads: 1 }),
    // The optional kernels an addon may have: a wrapper that listed only the ones it knew hid these.
    extremeEigenvalues: () => calls.push('eigen'),
    layerNormBackward: () => calls.push('layer norm'),
    clsAttentionGradient: () => calls.push('attention'),
  } as unknown as NativeBlas;
  const blas = threadsBySize(fake, { maxThreads: 2, minMacs: 1000 });
  const f64 = new Float64Array(1);
  blas.extremeEigenvalues!(f64, 1, f64);
  blas.layerNormBackward!(f64, 0, f64, f64, 0, 1, f64, f64, f64, f64);
  blas.clsAttentionGradient!([1, 1, 1, 1], 1, 0, ...([] as unknown as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float64Array, Float64Array, Float64Array, Float32Array, Float32Array, Float32Array, Float32Array, Float64Array]));
  assert.deepEqual(calls.splice(1), ['eigen', 'layer norm', 'attention']);
  const f = new Float32Array(1);
  const gemm = (batch: number, m: number, n: number, k: number) => blas.gemm(f, f, f, batch, m, n, k, false, false, 0, 0, null, false);
  gemm(50, 2, 2, 2); // 8 per product: the batch does not count
  gemm(1, 10, 10, 10);
  gemm(1, 10, 10, 20);
  gemm(1, 2, 2, 2);
  assert.equal(blas.sumSquares([]), 7);
  assert.deepEqual(calls, ['threads 1', 'gemm 50×2×2×2', 'threads 2', 'gemm 1×10×10×10', 'gemm 1×10×10×20', 'threads 1', 'gemm 1×2×2×2']);
});

test('with the addon: products whose thread count switches between one and two equal a float64 reference', () => {
  const saved = process.env.PLTRAIN_BLAS_THREADS;
  process.env.PLTRAIN_BLAS_THREADS = '1';
  resetNativeBlasForTests();
  const { blas: raw, note } = loadNativeBlas();
  if (saved === undefined) delete process.env.PLTRAIN_BLAS_THREADS;
  else process.env.PLTRAIN_BLAS_THREADS = saved;
  if (!raw) {
    // Without the addon (engine-native.test.ts decides whether it must be built here) the reason is kept.
    assert.match(note, /native/);
    resetNativeBlasForTests();
    return;
  }
  const blas = threadsBySize(raw, { maxThreads: 2, minMacs: 64 * 64 * 64 });
  const rand = mulberry32(16);
  for (const [m, n, k] of [[8, 8, 8], [96, 80, 72], [5, 3, 2], [64, 64, 64], [130, 70, 90]]) {
    const a = Float32Array.from({ length: m * k }, () => rand() - 0.5);
    const b = Float32Array.from({ length: k * n }, () => rand() - 0.5);
    const c = new Float32Array(m * n);
    blas.gemm(a, b, c, 1, m, n, k, false, false, 0, 0, null, false);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let l = 0; l < k; l++) s += a[i * k + l] * b[l * n + j];
        assert.ok(Math.abs(c[i * n + j] - s) <= 1e-5 * (1 + Math.abs(s)) + 1e-5, `${m}×${n}×${k} at ${i},${j}: ${c[i * n + j]} vs ${s}`);
      }
  }
  raw.setThreads(1);
  resetNativeBlasForTests();
});
