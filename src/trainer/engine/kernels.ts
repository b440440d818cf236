// Replaces TensorFlow.js's matrix-product kernels on the `wasm` and `cpu` backends:
//  - with the native addon: OpenBLAS sgemm reading and writing the backend's own memory (the wasm heap,
//    the cpu backend's arrays) with no copies, bias and ReLU fused into the same pass;
//  - without it, on wasm only: transposed products are transposed first and multiplied plainly, because
//    tfjs-backend-wasm 4.22 runs transposeA/transposeB products on a slow path (measured 0.4–0.7 GFLOP/s
//    against 5–35 for the plain product), and backpropagation through a dense layer is exactly those.
// On wasm, Identity shares its input's memory (as tfjs's cpu backend and wasm's own Reshape do) instead
// of copying it: the tape clones every tensor a gradient saves, which copied ~20 MB per MoE step.
// On wasm, Slice, Unpack and SplitV copy only the parts they return: tfjs-backend-wasm 4.22 first copies
// the whole input out of the heap (readSync) for every slice, so the gradient of a stack of E tensors
// (unstack: E slices) copied the stack E times: 15 ms of a 64-expert regularized step.
// Shapes or dtypes a replacement does not handle go to the original kernel, so behaviour is unchanged.
import type * as TF from '@tensorflow/tfjs';
import { loadNativeBlas, type NativeBlas } from './native';

type TensorInfo = TF.TensorInfo;
type KernelConfig = TF.KernelConfig;
type Tf = typeof TF;

/** The parts of tfjs's wasm backend the engine's kernels and readRows.ts reach past the public API for. */
export interface WasmBackend {
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  incRef(dataId: object): void;
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  disposeData(dataId: object): void;
}

/** The parts of tfjs's cpu backend the engine's kernels and readRows.ts reach past the public API for. */
export interface CpuBackend {
  data: { get(dataId: object): { values?: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
  disposeData(dataId: object): void;
}

export type EngineBackendName = 'wasm' | 'cpu';

export interface EngineKernels {
  /** OpenBLAS kernels are installed (and active unless switched off with setNativeKernelsActive). */
  native: boolean;
  /** What the user is told, e.g. "OpenBLAS sgemm (native addon, Haswell, 1 thread)". */
  detail: string;
  /** Why the native kernels are not there, when they are not. */
  reason?: string;
  kernels: string[];
}

const MATMUL_KERNELS = ['BatchMatMul', '_FusedMatMul'] as const;

const installed = new Map<EngineBackendName, EngineKernels>();
let nativeActive = true;
/** How many native kernel calls ran (tests check that the kernels they compare really ran natively). */
let nativeCalls = 0;

/**
 * Installs the engine's kernels for `backendName` (once; later calls return the first result). Call it
 * after the backend is initialized (tf.setBackend resolved), so the originals it falls back to are set up.
 */
export function installEngineKernels(tf: Tf, backendName: EngineBackendName): EngineKernels {
  const done = installed.get(backendName);
  if (done) return done;
  if (/^(off|0|false|no)$/i.test(process.env.PLTRAIN_ENGINE ?? '')) {
    // Every replacement off: tfjs's own kernels only (to rule the engine out when hunting a problem).
    const off: EngineKernels = { native: false, detail: '', reason: 'engine kernels off (PLTRAIN_ENGINE)', kernels: [] };
    installed.set(backendName, off);
    return off;
  }
  const { blas, note } = loadNativeBlas();
  const result: EngineKernels = blas
    ? { native: true, detail: nativeDetail(blas), kernels: [] }
    : { native: false, detail: '', reason: note, kernels: [] };
  if (blas || backendName === 'wasm') {
    for (const name of MATMUL_KERNELS) {
      const original = tf.getKernel(name, backendName);
      if (!original) continue;
      const kernelFunc = makeMatMulKernel(tf, name, backendName, original, blas);
      tf.unregisterKernel(name, backendName);
      tf.registerKernel({ ...original, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
      result.kernels.push(name);
    }
  }
  if (backendName === 'wasm') shareIdentity(tf, result);
  if (backendName === 'wasm') sliceFromHeap(tf, result);
  if (backendName === 'wasm') transposeCollapsed(tf, result);
  if (blas && backendName === 'wasm') sumByProduct(tf, blas, result);
  if (blas) registerAdamKernel(tf, backendName, blas, result);
  if (blas) registerSumSquaresKernel(tf, backendName, blas, result);
  installed.set(backendName, result);
  return result;
}

/** Switches the native kernels off (they then run the fallback path) or back on, within one process: A/B tests and benchmarks. */
export function setNativeKernelsActive(active: boolean): void {
  nativeActive = active;
}

/** Whether engine/adam.ts and engine/sumOfSquares.ts should use their native kernels on this backend now. */
export function nativeEngineActive(backendName: string): boolean {
  return nativeActive && (backendName === 'wasm' || backendName === 'cpu') && installed.get(backendName)?.native === true;
}

export function nativeKernelCalls(): number {
  return nativeCalls;
}

function nativeDetail(blas: NativeBlas): string {
  const i = blas.info();
  return `OpenBLAS sgemm (native addon, ${i.corename}, ${i.threads} thread${i.threads === 1 ? '' : 's'})`;
}

interface MatMulArgs {
  inputs: { a: TensorInfo; b: TensorInfo; bias?: TensorInfo; preluActivationWeights?: TensorInfo };
  backend: unknown;
  attrs: { transposeA: boolean; transposeB: boolean; activation?: string; leakyreluAlpha?: number };
}

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

/**
 * A float32 tensor's data as a view on the wasm heap, for the native kernels to read and write in place.
 * Take views after allocating outputs: allocating can grow the heap, which detaches older views.
 */
const heapFloat32 = (backend: WasmBackend, t: TensorInfo) => backend.typedArrayFromHeap(t) as Float32Array;

/** The product's geometry if it is one the native kernel handles: float32, batch dims equal or one side unbatched. */
function geometry(a: TensorInfo, b: TensorInfo, transA: boolean, transB: boolean) {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return undefined;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const k = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  if (k !== (transB ? b.shape[rb - 1] : b.shape[rb - 2])) return undefined; // the original throws tfjs's own message
  const m = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const n = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = size(outerA);
  const batchB = size(outerB);
  const outer = broadcastShape(outerA, outerB);
  if (!outer) return undefined;
  const batch = size(outer);
  if (!(batchA === batchB || batchA === 1 || batchB === 1) || batch !== Math.max(batchA, batchB)) return undefined;
  return { m, n, k, batch, strideA: batchA === 1 ? 0 : m * k, strideB: batchB === 1 ? 0 : k * n, outShape: [...outer, m, n] };
}

function broadcastShape(a: number[], b: number[]): number[] | undefined {
  const out: number[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[a.length - 1 - i] ?? 1;
    const y = b[b.length - 1 - i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.unshift(x === 1 ? y : x);
  }
  return out;
}

function makeMatMulKernel(tf: Tf, name: (typeof MATMUL_KERNELS)[number], backendName: EngineBackendName, original: KernelConfig, blas: NativeBlas | undefined) {
  const fallback = backendName === 'wasm' ? transposingWasmKernel(tf, original) : (args: MatMulArgs) => original.kernelFunc(args as never) as TensorInfo;
  if (!blas) return fallback;
  return (args: MatMulArgs): TensorInfo => {
    if (!nativeActive) return fallback(args);
    const { a, b, bias, preluActivationWeights } = args.inputs;
    const { transposeA, transposeB } = args.attrs;
    const g = geometry(a, b, transposeA, transposeB);
    const activation = name === '_FusedMatMul' ? (args.attrs.activation ?? 'linear') : 'linear';
    const fusable = activation === 'linear' || activation === 'relu';
    // A bias the kernel adds per column: n values, any leading dims of 1 (tf.add broadcasting).
    const biasOk = !bias || (g !== undefined && bias.dtype === 'float32' && size(bias.shape) === g.n && bias.shape[bias.shape.length - 1] === g.n);
    if (!g || !fusable || !biasOk || preluActivationWeights) return fallback(args);
    const relu = activation === 'relu';
    nativeCalls++;
    if (backendName === 'wasm') {
      const backend = args.backend as WasmBackend;
      // Output first: allocating may grow the wasm memory, which replaces the heap's ArrayBuffer.
      const out = backend.makeOutput(g.outShape, 'float32');
      const view = (t: TensorInfo) => heapFloat32(backend, t);
      blas.gemm(view(a), view(b), view(out), g.batch, g.m, g.n, g.k, transposeA, transposeB, g.strideA, g.strideB, bias ? view(bias) : null, relu);
      return out;
    }
    const backend = args.backend as CpuBackend;
    const values = (t: TensorInfo) => {
      const v = backend.data.get(t.dataId).values;
      return v instanceof Float32Array ? v : Float32Array.from(v ?? []);
    };
    const out = new Float32Array(size(g.outShape));
    blas.gemm(values(a), values(b), out, g.batch, g.m, g.n, g.k, transposeA, transposeB, g.strideA, g.strideB, bias ? values(bias) : null, relu);
    return backend.makeTensorInfo(g.outShape, 'float32', out);
  };
}

/**
 * The wasm kernel with transposed operands transposed first (a memory pass), so the product takes
 * XNNPACK's fast path. Also routes around tfjs-backend-wasm 4.22 adding a fused bias at the wrong
 * positions when the batch has more than one matrix: there, bias and activation run as their own kernels.
 */
function transposingWasmKernel(tf: Tf, original: KernelConfig) {
  const kernel = (name: string) => tf.getKernel(name, 'wasm');
  const transpose = kernel('Transpose');
  const separateActivations: Record<string, string> = { linear: '', relu: 'Relu', relu6: 'Relu6', sigmoid: 'Sigmoid', elu: 'Elu' };
  return (args: MatMulArgs): TensorInfo => {
    const { transposeA, transposeB, activation = 'linear' } = args.attrs;
    const { a, b, bias } = args.inputs;
    const backend = args.backend as WasmBackend;
    const run = (config: KernelConfig | undefined, inputs: object, attrs: object = {}) => config!.kernelFunc({ inputs, backend, attrs } as never) as TensorInfo;
    const batched = size(a.shape.slice(0, -2)) > 1 || size(b.shape.slice(0, -2)) > 1;
    const unfuse = bias !== undefined && batched && activation in separateActivations && kernel('Add') !== undefined;
    // (wasm's Transpose divides by zero on an empty tensor: empty products go to the original as they are.)
    const empty = size(a.shape) === 0 || size(b.shape) === 0;
    if (!transpose || empty || (!transposeA && !transposeB && !unfuse) || a.dtype !== 'float32' || b.dtype !== 'float32') return original.kernelFunc(args as never) as TensorInfo;
    const swapLast = (t: TensorInfo) => {
      const perm = t.shape.map((_, i) => i);
      [perm[perm.length - 2], perm[perm.length - 1]] = [perm[perm.length - 1], perm[perm.length - 2]];
      return run(transpose, { x: t }, { perm });
    };
    const temporaries: TensorInfo[] = [];
    const keep = (t: TensorInfo) => (temporaries.push(t), t);
    try {
      const ta = transposeA ? keep(swapLast(a)) : a;
      const tb = transposeB ? keep(swapLast(b)) : b;
      const attrs = { ...args.attrs, transposeA: false, transposeB: false };
      if (!unfuse) return original.kernelFunc({ ...args, inputs: { ...args.inputs, a: ta, b: tb }, attrs } as never) as TensorInfo;
      const product = keep(original.kernelFunc({ ...args, inputs: { a: ta, b: tb }, attrs: { ...attrs, activation: 'linear' } } as never) as TensorInfo);
      const withBias = run(kernel('Add'), { a: product, b: bias });
      const activationKernel = separateActivations[activation];
      if (!activationKernel) return withBias;
      keep(withBias);
      return run(kernel(activationKernel), { x: withBias });
    } finally {
      for (const t of temporaries) backend.disposeData(t.dataId);
    }
  };
}

/** Identity without a copy: tensors are immutable (variables swap their data, never write into it), so sharing is safe. */
function shareIdentity(tf: Tf, result: EngineKernels): void {
  const original = tf.getKernel('Identity', 'wasm');
  if (!original) return;
  const kernelFunc = (args: { inputs: { x: TensorInfo }; backend: unknown }): TensorInfo => {
    const { x } = args.inputs;
    if (x.dtype === 'string') return original.kernelFunc(args as never) as TensorInfo;
    (args.backend as WasmBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({ ...original, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
  result.kernels.push('Identity');
}

/**
 * Slice, Unpack (unstack, the gradient of stack) and SplitV (split, the gradient of concat) reading their
 * input in place on the wasm heap and copying only the parts they return (tfjs's Unpack and SplitV call
 * its Slice, which copies the whole input out of the heap first, so an E-way unstack copied E inputs).
 * Strings and ranks above 4 go to tfjs's kernels.
 */
function sliceFromHeap(tf: Tf, result: EngineKernels): void {
  const originals = { Slice: tf.getKernel('Slice', 'wasm'), Unpack: tf.getKernel('Unpack', 'wasm'), SplitV: tf.getKernel('SplitV', 'wasm') };
  if (!originals.Slice || !originals.Unpack || !originals.SplitV) return;
  const handled = (x: TensorInfo) => x.dtype !== 'string' && x.shape.length <= 4;
  type Args<A> = { inputs: { x: TensorInfo; value?: TensorInfo }; backend: unknown; attrs: A };
  const kernels: Record<keyof typeof originals, (args: Args<never>) => TensorInfo | TensorInfo[]> = {
    Slice: (args: Args<{ begin: number | number[]; size?: number | number[] }>) => {
      const { x } = args.inputs;
      if (!handled(x)) return originals.Slice!.kernelFunc(args as never) as TensorInfo;
      const [begin, extent] = tf.slice_util.parseSliceParams(x as unknown as TF.Tensor, args.attrs.begin, args.attrs.size);
      return sliceWasm(tf, args.backend as WasmBackend, x, begin, extent);
    },
    Unpack: (args: Args<{ axis: number }>) => {
      const value = args.inputs.value!;
      if (!handled(value)) return originals.Unpack!.kernelFunc(args as never) as TensorInfo[];
      const rank = value.shape.length;
      const axis = args.attrs.axis < 0 ? args.attrs.axis + rank : args.attrs.axis;
      const outShape = value.shape.filter((_, d) => d !== axis);
      const begin = value.shape.map(() => 0);
      const extent = value.shape.map((d, i) => (i === axis ? 1 : d));
      return Array.from({ length: value.shape[axis] }, (_, i) => {
        begin[axis] = i;
        const out = sliceWasm(tf, args.backend as WasmBackend, value, begin, extent);
        return { dataId: out.dataId, dtype: out.dtype, shape: outShape };
      });
    },
    SplitV: (args: Args<{ numOrSizeSplits: number | number[]; axis: number | number[] }>) => {
      const { x } = args.inputs;
      if (!handled(x)) return originals.SplitV!.kernelFunc(args as never) as TensorInfo[];
      const axis = tf.util.parseAxisParam(args.attrs.axis, x.shape)[0];
      const sizes = tf.backend_util.prepareSplitSize(x as unknown as TF.Tensor, args.attrs.numOrSizeSplits, axis);
      const begin = x.shape.map(() => 0);
      return sizes.map((part) => {
        const out = sliceWasm(tf, args.backend as WasmBackend, x, begin, x.shape.map((d, i) => (i === axis ? part : d)));
        begin[axis] += part;
        return out;
      });
    },
  };
  for (const name of ['Slice', 'Unpack', 'SplitV'] as const) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...originals[name]!, kernelFunc: kernels[name] as unknown as TF.KernelFunc });
    result.kernels.push(name);
  }
}

/**
 * x[begin : begin + extent] on the wasm heap (rank ≤ 4, not strings). The views are taken after the
 * output is allocated: allocating can grow the heap, which detaches older views.
 */
function sliceWasm(tf: Tf, backend: WasmBackend, x: TensorInfo, begin: number[], extent: number[]): TensorInfo {
  const out = backend.makeOutput(extent, x.dtype as 'float32');
  if (size(extent) === 0) return out;
  const xs = backend.typedArrayFromHeap(x);
  const os = backend.typedArrayFromHeap(out);
  const strides = tf.util.computeStrides(x.shape);
  if (tf.slice_util.isSliceContinous(x.shape, begin, extent)) {
    const offset = tf.slice_util.computeFlatOffset(begin, strides);
    os.set(xs.subarray(offset, offset + size(extent)));
    return out;
  }
  // Rank 2–4 (a rank-1 slice is contiguous): axes the slice takes whole merged into the one before them
  // (collapseSlice), then runs along the last axis copied, indices padded to rank 4.
  const c = collapseSlice(x.shape, begin, extent);
  const pad = 4 - c.shape.length;
  const b = [...Array<number>(pad).fill(0), ...c.begin];
  const e = [...Array<number>(pad).fill(1), ...c.extent];
  const st = [...Array<number>(pad).fill(0), ...tf.util.computeStrides(c.shape), 1];
  const run = e[3];
  let at = 0;
  for (let i = b[0]; i < b[0] + e[0]; i++) {
    for (let j = b[1]; j < b[1] + e[1]; j++) {
      for (let k = b[2]; k < b[2] + e[2]; k++) {
        const from = i * st[0] + j * st[1] + k * st[2] + b[3];
        // Short runs element by element: a subarray and a set cost more than a few floats' copy.
        if (run < 32) for (let r = 0; r < run; r++) os[at + r] = xs[from + r];
        else os.set(xs.subarray(from, from + run), at);
        at += run;
      }
    }
  }
  return out;
}

/**
 * The same slice at its smallest rank: an axis the slice takes whole (begin 0, full extent) merged into
 * the axis before it. E.g. [b, 4, T, dh] from [0, 1, 0, 0] size [b, 1, T, dh] is [b, 4·T·dh] from [0, T·dh]
 * size [b, T·dh]: b runs of T·dh floats instead of b·T runs of dh.
 */
export function collapseSlice(shape: readonly number[], begin: readonly number[], extent: readonly number[]): { shape: number[]; begin: number[]; extent: number[] } {
  const out = { shape: [shape[0]], begin: [begin[0]], extent: [extent[0]] };
  for (let d = 1; d < shape.length; d++) {
    const last = out.shape.length - 1;
    if (begin[d] === 0 && extent[d] === shape[d]) {
      out.shape[last] *= shape[d];
      out.begin[last] *= shape[d];
      out.extent[last] *= shape[d];
    } else {
      out.shape.push(shape[d]);
      out.begin.push(begin[d]);
      out.extent.push(extent[d]);
    }
  }
  return out;
}

/**
 * The smallest-rank transpose equal to transposing `shape` by `perm`: axes of size 1 dropped, and runs of
 * input axes that stay adjacent and in order in `perm` merged into one. E.g. [b, D, 3, H, dh] by
 * [3, 0, 1, 2, 4] is [b·D·3, H, dh] by [1, 0, 2].
 */
export function collapseTranspose(shape: readonly number[], perm: readonly number[]): { shape: number[]; perm: number[] } {
  const kept = shape.map((_, axis) => axis).filter((axis) => shape[axis] !== 1);
  const renumbered = new Map(kept.map((axis, k) => [axis, k]));
  const order = perm.filter((axis) => shape[axis] !== 1).map((axis) => renumbered.get(axis)!);
  // Runs of consecutive input axes, in output order.
  const runs: number[][] = [];
  for (const axis of order) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] + 1 === axis) last.push(axis);
    else runs.push([axis]);
  }
  const byInput = [...runs].sort((a, b) => a[0] - b[0]);
  return {
    shape: byInput.map((run) => run.reduce((p, axis) => p * shape[kept[axis]], 1)),
    perm: runs.map((run) => byInput.indexOf(run)),
  };
}

/**
 * Transpose on wasm at its smallest rank (collapseTranspose): tfjs-backend-wasm 4.22 runs ranks above 4 on
 * a generic index-by-index path, 2.4 ms for the 49k floats of bert's [b, D, 3, H, dh] → [H, b, D, 3, dh]
 * (four of those were a quarter of its regularized step), against 0.1–0.3 ms for the same move as the
 * rank-3 transpose it is. A permutation that collapses to the identity shares its input, as Reshape does.
 */
function transposeCollapsed(tf: Tf, result: EngineKernels): void {
  const original = tf.getKernel('Transpose', 'wasm');
  if (!original) return;
  const kernelFunc = (args: { inputs: { x: TensorInfo }; backend: unknown; attrs: { perm: number[] } }): TensorInfo => {
    const { x } = args.inputs;
    const outShape = args.attrs.perm.map((axis) => x.shape[axis]);
    if (x.dtype === 'string') return original.kernelFunc(args as never) as TensorInfo;
    const reduced = collapseTranspose(x.shape, args.attrs.perm);
    if (reduced.perm.every((axis, k) => axis === k)) {
      (args.backend as WasmBackend).incRef(x.dataId);
      return { dataId: x.dataId, shape: outShape, dtype: x.dtype };
    }
    const out = original.kernelFunc({ ...args, inputs: { x: { ...x, shape: reduced.shape } }, attrs: { perm: reduced.perm } } as never) as TensorInfo;
    return { ...out, shape: outShape };
  };
  tf.unregisterKernel('Transpose', 'wasm');
  tf.registerKernel({ ...original, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
  result.kernels.push('Transpose');
}

/**
 * The geometry [before, reduced, after] of a sum over `axes` of `shape` when the axes are one contiguous
 * run that is not the trailing one (e.g. a bias gradient: [N, D] over axis 0 → 1·N·D), else undefined.
 */
export function leadingReduction(shape: readonly number[], axes: readonly number[]): { before: number; reduced: number; after: number } | undefined {
  if (!axes.length) return undefined;
  const sorted = [...new Set(axes)].sort((a, b) => a - b);
  const [first, last] = [sorted[0], sorted[sorted.length - 1]];
  if (last - first + 1 !== sorted.length) return undefined;
  const after = size(shape.slice(last + 1));
  if (after === 1) return undefined; // a trailing reduction: tfjs's kernel reads it in place
  return { before: size(shape.slice(0, first)), reduced: size(shape.slice(first, last + 1)), after };
}

/** Inputs of fewer floats keep tfjs's Sum (sumByProduct). */
const SUM_BY_PRODUCT_MIN = 2048;

/**
 * Sum over leading (or middle) axes on wasm as a product with a row of ones (OpenBLAS, one call):
 * tfjs-backend-wasm 4.22 transposes the reduced axes to the end first, a memory pass that costs more than
 * the sum (84 µs against 11 for [480, 96] over axis 0, the shape of every bias gradient of bert's batch).
 * Trailing reductions, other dtypes and non-contiguous axes go to tfjs's kernel.
 */
function sumByProduct(tf: Tf, blas: NativeBlas, result: EngineKernels): void {
  const original = tf.getKernel('Sum', 'wasm');
  if (!original) return;
  let ones = new Float32Array(0);
  const kernelFunc = (args: { inputs: { x: TensorInfo }; backend: unknown; attrs: { axis: number | number[]; keepDims: boolean } }): TensorInfo => {
    const { x } = args.inputs;
    // Below ~2k floats the call costs what the transpose does (measured interleaved: equal at 2k, ×4–8 faster at 15k–46k).
    if (!nativeActive || x.dtype !== 'float32' || size(x.shape) < SUM_BY_PRODUCT_MIN) return original.kernelFunc(args as never) as TensorInfo;
    const axes = tf.util.parseAxisParam(args.attrs.axis, x.shape);
    const g = leadingReduction(x.shape, axes);
    if (!g) return original.kernelFunc(args as never) as TensorInfo;
    const outShape = args.attrs.keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    const backend = args.backend as WasmBackend;
    const out = backend.makeOutput(outShape, 'float32');
    if (ones.length < g.reduced) ones = new Float32Array(g.reduced).fill(1);
    // Views after the output is allocated: allocating can grow the heap, which detaches older views.
    const view = (t: TensorInfo) => heapFloat32(backend, t);
    nativeCalls++;
    // out[b, 1, :] = ones[1, R] · x[b, R, A] for each of the `before` blocks.
    blas.gemm(ones.subarray(0, g.reduced), view(x), view(out), g.before, 1, g.after, g.reduced, false, false, 0, g.reduced * g.after, null, false);
    return out;
  };
  tf.unregisterKernel('Sum', 'wasm');
  tf.registerKernel({ ...original, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
  result.kernels.push('Sum');
}

/** Kernel name of the fused Adam update (engine/adam.ts); registered only with the native addon. */
export const ADAM_KERNEL = 'PlTrainerAdam';

export interface AdamAttrs {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  accBeta1: number;
  accBeta2: number;
}

function registerAdamKernel(tf: Tf, backendName: EngineBackendName, blas: NativeBlas, result: EngineKernels): void {
  if (tf.getKernel(ADAM_KERNEL, backendName)) tf.unregisterKernel(ADAM_KERNEL, backendName);
  const kernelFunc = (args: { inputs: Record<'value' | 'grad' | 'm' | 'v', TensorInfo>; backend: unknown; attrs: AdamAttrs }): TensorInfo[] => {
    const { value, grad, m, v } = args.inputs;
    const { learningRate, beta1, beta2, epsilon, accBeta1, accBeta2 } = args.attrs;
    const n = size(value.shape);
    for (const t of [grad, m, v]) if (size(t.shape) !== n) throw new Error(`${ADAM_KERNEL}: shapes differ (${value.shape} vs ${t.shape})`);
    nativeCalls++;
    if (backendName === 'wasm') {
      const backend = args.backend as WasmBackend;
      const outs = [0, 1, 2].map(() => backend.makeOutput(value.shape, 'float32'));
      const view = (t: TensorInfo) => heapFloat32(backend, t);
      blas.adam(view(value), view(grad), view(m), view(v), view(outs[0]), view(outs[1]), view(outs[2]), learningRate, beta1, beta2, epsilon, accBeta1, accBeta2);
      return outs;
    }
    const backend = args.backend as CpuBackend;
    const values = (t: TensorInfo) => {
      const x = backend.data.get(t.dataId).values;
      return x instanceof Float32Array ? x : Float32Array.from(x ?? []);
    };
    const outs = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
    blas.adam(values(value), values(grad), values(m), values(v), outs[0], outs[1], outs[2], learningRate, beta1, beta2, epsilon, accBeta1, accBeta2);
    return outs.map((o) => backend.makeTensorInfo(value.shape, 'float32', o));
  };
  tf.registerKernel({ kernelName: ADAM_KERNEL, backendName, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
  result.kernels.push(ADAM_KERNEL);
}

/** Kernel name of Σ x² over any number of float32 tensors (engine/sumOfSquares.ts); registered only with the native addon. */
export const SUM_SQUARES_KERNEL = 'PlTrainerSumSquares';

function registerSumSquaresKernel(tf: Tf, backendName: EngineBackendName, blas: NativeBlas, result: EngineKernels): void {
  if (tf.getKernel(SUM_SQUARES_KERNEL, backendName)) tf.unregisterKernel(SUM_SQUARES_KERNEL, backendName);
  const kernelFunc = (args: { inputs: Record<string, TensorInfo>; backend: unknown }): TensorInfo => {
    const inputs = Object.values(args.inputs);
    for (const t of inputs) if (t.dtype !== 'float32') throw new Error(`${SUM_SQUARES_KERNEL}: ${t.dtype} input`);
    nativeCalls++;
    if (backendName === 'wasm') {
      const backend = args.backend as WasmBackend;
      const out = backend.makeOutput([], 'float32');
      const view = (t: TensorInfo) => heapFloat32(backend, t);
      view(out)[0] = blas.sumSquares(inputs.map(view));
      return out;
    }
    const backend = args.backend as CpuBackend;
    const values = (t: TensorInfo) => {
      const x = backend.data.get(t.dataId).values;
      return x instanceof Float32Array ? x : Float32Array.from(x ?? []);
    };
    return backend.makeTensorInfo([], 'float32', Float32Array.of(blas.sumSquares(inputs.map(values))));
  };
  tf.registerKernel({ kernelName: SUM_SQUARES_KERNEL, backendName, kernelFunc: kernelFunc as unknown as TF.KernelFunc });
  result.kernels.push(SUM_SQUARES_KERNEL);
}
