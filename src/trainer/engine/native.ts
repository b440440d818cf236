// Loads the optional native addon (native/, OpenBLAS sgemm + a fused Adam update + the extreme
// eigenvalues of the κ monitoring + the hand-written backward's element-wise host steps; built by
// `npm run build:native`). It is optional in every sense: absent, unbuildable or failing to load, the
// trainer runs on plain WebAssembly (or JavaScript) with no error, and the reason is kept for the logs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** What the element-wise kernels read and write: float32 or float64. */
export type RealArray = Float32Array | Float64Array;

export interface NativeBlas {
  /** For each of `batch` products: C_i (m×n, contiguous) = op(A_i)·op(B_i) [+ bias over columns] [ReLU]; A_i at i·strideA (0 broadcasts). */
  gemm(
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
    batch: number,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    strideA: number,
    strideB: number,
    bias: Float32Array | null,
    relu: boolean,
  ): void;
  /** tfjs's Adam update, element by element, into the three output arrays. */
  adam(
    value: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    outValue: Float32Array,
    outM: Float32Array,
    outV: Float32Array,
    learningRate: number,
    beta1: number,
    beta2: number,
    epsilon: number,
    accBeta1: number,
    accBeta2: number,
  ): void;
  /** Σ x² over every element of every array, accumulated in float64. */
  sumSquares(arrays: Float32Array[]): number;
  /**
   * out = [λ_min, λ_max] of the symmetric part of the n×n float64 matrix `a` (finite entries): the
   * JavaScript extremeEigen's eigenvalues (pl/eigen.ts), the same steps compiled. Optional: an addon
   * built before it lacks it.
   */
  extremeEigenvalues?(a: Float64Array, n: number, out: Float64Array): void;
  /**
   * The hand-written backward's element-wise host steps (models/twiceDifferentiable.ts: the functions
   * of the same names with a `host` prefix), compiled: the same float64 operations in the same order.
   * Real arrays are Float32Array or Float64Array; the outputs typed as there. Optional, as above.
   */
  layerNormBackward?(xs: RealArray, from: number, gs: RealArray, dys: RealArray, N: number, D: number, xhat: Float64Array, F: Float64Array, r: Float64Array, mxaR: Float64Array): void;
  layerNormBackwardAdjoint?(
    xhat: Float64Array,
    F: Float64Array,
    r: Float64Array,
    mxaR: Float64Array,
    N: number,
    D: number,
    gs: RealArray,
    dys: RealArray,
    ws: RealArray,
    dx: RealArray,
    dxFrom: number,
    dg: Float64Array,
    ddy: RealArray,
  ): void;
  geluDerivatives?(xs: RealArray, from: number, n: number, prime: Float64Array, second: Float64Array): void;
  geluDerivativeAdjoint?(ws: RealArray, dys: RealArray | null, prime: Float64Array, second: Float64Array, dx: RealArray, dxFrom: number, ddy: RealArray | null): void;
  /** models/bertEncoder.ts's clsAttentionValue and clsAttentionGradient loops, compiled (dims [b, T, H, dh]; value zero on entry). */
  clsAttentionValue?(dims: number[], scale: number, dO: Float32Array, a: Float32Array, qs: Float32Array, ks: Float32Array, vs: Float32Array, dA: Float64Array, dS: Float64Array, cs: Float64Array, value: Float32Array): void;
  clsAttentionGradient?(
    dims: number[],
    scale: number,
    fromExample: number,
    ws: Float32Array,
    dO: Float32Array,
    a: Float32Array,
    qs: Float32Array,
    ks: Float32Array,
    vs: Float32Array,
    dA: Float64Array,
    dS: Float64Array,
    cs: Float64Array,
    ga: Float32Array,
    gq: Float32Array,
    gk: Float32Array,
    gv: Float32Array,
    gdm: Float64Array,
  ): void;
  setThreads(n: number): void;
  info(): { corename: string; config: string; threads: number };
}

export interface NativeLoad {
  blas?: NativeBlas;
  /** Where it was loaded from, or why not. */
  note: string;
}

const ADDON = path.join('native', 'build', 'Release', 'plblas.node');

let cached: NativeLoad | undefined;

/** The addon, once per process. `PLTRAIN_NATIVE=off` pretends it is absent (tests of the fallback, A/B benchmarks). */
export function loadNativeBlas(): NativeLoad {
  if (cached) return cached;
  cached = tryLoad();
  return cached;
}

/** Forgets the cached result (tests flip PLTRAIN_NATIVE within one process). */
export function resetNativeBlasForTests(): void {
  cached = undefined;
}

function tryLoad(): NativeLoad {
  if (/^(off|0|false|no)$/i.test(process.env.PLTRAIN_NATIVE ?? '')) return { note: 'native kernels off (PLTRAIN_NATIVE)' };
  const file = process.env.PLTRAIN_NATIVE_ADDON || findAddon(__dirname);
  if (!file) return { note: 'native addon not built (npm run build:native)' };
  try {
    // process.dlopen rather than require: bundlers leave it alone, and it loads exactly this file.
    const mod = { exports: {} as NativeBlas };
    process.dlopen(mod, file);
    const blas = mod.exports;
    const complete = ['gemm', 'adam', 'sumSquares', 'setThreads', 'info'].every((f) => typeof (blas as unknown as Record<string, unknown>)[f] === 'function');
    if (!complete) return { note: `native addon at ${file} is not the expected one` };
    const policy = threadPolicyFromEnv(process.env, availableCores());
    if (policy.kind === 'fixed') {
      if (policy.threads !== undefined) blas.setThreads(policy.threads);
      return { blas, note: file };
    }
    return { blas: threadsBySize(blas, policy), note: `${file} (BLAS threads by size: ${policy.maxThreads} from ${policy.minMacs} multiply-adds per product)` };
  } catch (e) {
    const m = e instanceof Error ? e.message : String(e);
    return { note: `native addon failed to load: ${m.split('\n')[0].slice(0, 200)}` };
  }
}

/** The nearest native/build/Release/plblas.node above `from` (source tree, bundle in dist/, installed extension). */
function findAddon(from: string): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, ADDON);
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/**
 * Products with at least this many multiply-adds (m·n·k) get a second OpenBLAS thread; smaller ones run
 * on one, where a second mostly adds synchronization. Chosen from `bench/blas-threads.ts` (1 against 2
 * threads at each of the trainer's shapes, docs/performance.md): the reference MoE's 128×784×256
 * products (25.7 M) stay on one thread, so its step is unchanged; square products from 256³ up (16.8 M
 * is below, 512³ = 134 M above) gain.
 */
export const TWO_THREADS_MIN_MACS = 64 * 1024 * 1024;

export type ThreadPolicy = { kind: 'fixed'; threads?: number } | { kind: 'bySize'; maxThreads: number; minMacs: number };

function availableCores(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

/**
 * How many BLAS threads: PLTRAIN_BLAS_THREADS=n fixes n; OpenBLAS's own OPENBLAS_NUM_THREADS or
 * OMP_NUM_THREADS are left to OpenBLAS; otherwise one thread, and two for products of at least
 * PLTRAIN_BLAS_TWO_THREADS_MACS (default TWO_THREADS_MIN_MACS) multiply-adds when there are two cores.
 */
export function threadPolicyFromEnv(env: NodeJS.ProcessEnv, cores: number): ThreadPolicy {
  const wanted = Number(env.PLTRAIN_BLAS_THREADS);
  if (env.PLTRAIN_BLAS_THREADS !== undefined && Number.isInteger(wanted) && wanted >= 1) return { kind: 'fixed', threads: wanted };
  if (env.OPENBLAS_NUM_THREADS || env.OMP_NUM_THREADS) return { kind: 'fixed' };
  if (cores < 2) return { kind: 'fixed', threads: 1 };
  const minMacs = Number(env.PLTRAIN_BLAS_TWO_THREADS_MACS);
  return { kind: 'bySize', maxThreads: 2, minMacs: Number.isFinite(minMacs) && minMacs > 0 ? minMacs : TWO_THREADS_MIN_MACS };
}

/** The thread count for one product of m·n·k multiply-adds under a by-size policy. */
export function threadsForProduct(macs: number, policy: { maxThreads: number; minMacs: number }): number {
  return macs >= policy.minMacs ? policy.maxThreads : 1;
}

/**
 * `blas` with its thread count set before each gemm from the size of its products (not the batch:
 * OpenBLAS threads one product at a time). setThreads is called only when the choice changes.
 */
export function threadsBySize(blas: NativeBlas, policy: { maxThreads: number; minMacs: number }): NativeBlas {
  let current = 1;
  blas.setThreads(1);
  // A plain object with every kernel the addon has (its exports are read-only properties, and its
  // functions ignore `this`); only gemm and setThreads are wrapped.
  const wrapped: NativeBlas = {
    ...blas,
    gemm(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, bias, relu) {
      const threads = threadsForProduct(m * n * k, policy);
      if (threads !== current) {
        blas.setThreads(threads);
        current = threads;
      }
      blas.gemm(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, bias, relu);
    },
    setThreads(n) {
      blas.setThreads(n);
      current = n;
    },
  };
  return wrapped;
}
