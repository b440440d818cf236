// Ranged reads of a float32 tensor into a caller's array, for the models' host ops. `dataSync` on wasm
// copies the whole tensor out of the heap into a fresh array (BackendWasm.readSync), so a host op using
// 240 of a joint pass's 720 rows copied all 720 and left the copy as garbage. Here the range is copied
// straight from the backend's memory (the wasm heap, the cpu backend's array) into `into`, which the
// caller may reuse across calls.
import type * as TF from '@tensorflow/tfjs';
import type { CpuBackend, WasmBackend } from './kernels';

/**
 * Elements from … from + count − 1 of a float32 tensor's flat values, copied into `into` (from index 0;
 * it must hold count elements) and returned as `into.subarray(0, count)`. Without `into`, a fresh array.
 * On wasm the heap view is copied at once: a view detaches when the heap grows, so none is returned.
 * Other backends (or dtypes): dataSync, then the range copied (readInPlace).
 */
export function readRange(tf: typeof TF, t: TF.Tensor, from: number, count: number, into?: Float32Array): Float32Array {
  if (from < 0 || count < 0 || from + count > t.size) throw new Error(`readRange: elements ${from} … ${from + count - 1} of a tensor of ${t.size}`);
  if (t.isDisposed) throw new Error('readRange: the tensor is disposed');
  const out = into ? into.subarray(0, count) : new Float32Array(count);
  if (out.length < count) throw new Error(`readRange: ${count} elements into an array of ${into!.length}`);
  readInPlace(tf, t, (values) => out.set(values.subarray(from, from + count)));
  return out;
}

/** Rows fromRow … fromRow + rows − 1 of a tensor read as [shape[0], size / shape[0]] (readRange). */
export function readRows(tf: typeof TF, t: TF.Tensor, fromRow: number, rows: number, into?: Float32Array): Float32Array {
  const perRow = t.shape.length === 0 ? 1 : t.size / t.shape[0];
  return readRange(tf, t, fromRow * perRow, rows * perRow, into);
}

/**
 * A float32 tensor of `shape`, zero except rows fromRow … fromRow + rows.length / perRow − 1 (read as
 * [shape[0], size / shape[0]]), which hold `rows`: a host op's gradient for a joint tensor whose other
 * rows it did not read. On wasm the tensor is made in the heap and only the given rows are copied in
 * (not a whole zero-padded array written from JavaScript); elsewhere from a fresh array. `rows` is
 * copied, never kept: the caller may reuse it.
 */
export function tensorFromRows(tf: typeof TF, shape: number[], fromRow: number, rows: ArrayLike<number>): TF.Tensor {
  const size = shape.reduce((p, d) => p * d, 1);
  const perRow = shape.length === 0 ? 1 : size / shape[0];
  const at = fromRow * perRow;
  if (fromRow < 0 || (perRow > 0 && rows.length % perRow !== 0) || at + rows.length > size)
    throw new Error(`tensorFromRows: ${rows.length} values from row ${fromRow} of a tensor [${shape}]`);
  return tensorFilledBy(tf, shape, (values) => {
    // On wasm the heap's bytes are malloc's: zero them.
    values.fill(0, 0, at);
    values.set(rows, at);
    values.fill(0, at + rows.length);
  });
}

/**
 * A float32 tensor of `shape` whose values `fill` writes (every one of them: nothing is zeroed). On wasm
 * `fill` gets the heap view of the new tensor's memory, so it must not allocate tensors (the view would
 * detach); elsewhere a fresh array. For a host op's outputs: no JavaScript array and no copy into the heap.
 */
export function tensorFilledBy(tf: typeof TF, shape: number[], fill: (values: Float32Array) => void): TF.Tensor {
  if (tf.getBackend() === 'wasm') {
    const backend = tf.backend() as unknown as WasmBackend;
    const info = backend.makeOutput(shape, 'float32');
    fill(backend.typedArrayFromHeap(info) as Float32Array);
    return tf.engine().makeTensorFromTensorInfo(info);
  }
  const values = new Float32Array(shape.reduce((p, d) => p * d, 1));
  fill(values);
  return tf.tensor(values, shape, 'float32');
}

/**
 * `read` of a float32 tensor's values where they live, without a copy where the backend allows (the
 * wasm heap view, the cpu backend's array; dataSync elsewhere): `read` must not allocate tensors and must
 * not keep the array.
 */
export function readInPlace<R>(tf: typeof TF, t: TF.Tensor, read: (values: Float32Array) => R): R {
  if (t.isDisposed) throw new Error('readInPlace: the tensor is disposed');
  const values = (t.dtype === 'float32' ? backendValues(tf, t) : undefined) ?? Float32Array.from(t.dataSync());
  return read(values);
}

/** The tensor's values where they live, without a copy (wasm: a heap view, valid until the next allocation; cpu: its array). */
function backendValues(tf: typeof TF, t: TF.Tensor): Float32Array | undefined {
  const name = tf.getBackend();
  if (name === 'wasm') {
    const view = (tf.backend() as unknown as WasmBackend).typedArrayFromHeap({ dataId: t.dataId, shape: t.shape, dtype: t.dtype });
    return view instanceof Float32Array ? view : undefined;
  }
  if (name === 'cpu') {
    const values = (tf.backend() as unknown as CpuBackend).data.get(t.dataId)?.values;
    return values instanceof Float32Array ? values : undefined;
  }
  return undefined;
}
