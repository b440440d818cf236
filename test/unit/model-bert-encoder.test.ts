// The `bert-encoder` family on real TF.js (cpu backend): images read row by row as token sequences,
// attention heads as units (pruning, freezing), per-head tangent kernels and the regularizer's gradient
// (a gradient of a gradient) against a float64 reference encoder by finite differences, spectral-norm
// L_f, checkpoint state, and both image sizes (14×14 built-in, 28×28 Fashion-MNIST).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_FASHION_MNIST_PATH, parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { conditioning, gramOfJacobian, outputDirections, symmetricEigen } from '../../src/trainer/pl';
import { imageTaskData, loadBuiltin, loadFashionMnist } from '../../src/trainer/data';
import { attentionBackward, attentionBackwardOnHost, BertEncoder, clsAttentionBackwardFromOutput, ffnBlockBackward, ffnBlockOnHost, headJacobians, headJacobiansOnHost } from '../../src/trainer/models/bertEncoder';
import { HostScratch, hostElementwise, nativeHostProducts, twiceDifferentiableActivations } from '../../src/trainer/models/twiceDifferentiable';
import type { Batch, TaskData } from '../../src/trainer/models/types';
import { centralDifference, relativeFrobenius } from '../support/linalg';

let builtin: TaskData;
before(async () => {
  await tf.setBackend('cpu');
  builtin = imageTaskData(loadBuiltin());
});

function config(over: { model?: object; monitor?: object; [k: string]: unknown } = {}): TrainingConfig {
  const { model, monitor, ...rest } = over;
  const r = parseTrainingConfig({
    model: { family: 'bert-encoder', experts: 2, dModel: 4, layers: 2, hiddenUnits: 4, ...model },
    learningRate: 0.01,
    monitor: { probeSize: 4, ...monitor },
    ...rest,
  });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, k) => from + k);
const trainBatch = (data: TaskData, i: number, b: number): Batch => data.batch(tf, 'train', range((i * b) % (data.trainSize - b), b));
const all = (m: BertEncoder) => Array.from({ length: m.units }, (_, h) => h);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => Math.max(s, Math.abs(v - b[i])), 0);

function newModel(c: TrainingConfig, data = builtin, probe = c.monitor.probeSize): BertEncoder {
  const m = new BertEncoder(tf, c, data);
  m.setProbe(data.batch(tf, 'train', range(0, probe)));
  return m;
}

interface StepsOptions {
  alpha?: number;
  trainable?: number[];
  pruned?: Set<number>;
  measure?: boolean;
  from?: number;
  batch?: number;
}

function steps(m: BertEncoder, data: TaskData, n: number, o: StepsOptions = {}) {
  const losses: number[] = [];
  for (let i = 0; i < n; i++) {
    const b = trainBatch(data, (o.from ?? 0) + i, o.batch ?? 16);
    losses.push(m.trainStep(b, { alpha: o.alpha ?? 0, trainable: o.trainable ?? all(m), pruned: o.pruned ?? new Set() }).loss);
    tf.dispose([b.x, b.y]);
    if (o.measure) m.measure(new Set(all(m).filter((h) => !(o.trainable ?? all(m)).includes(h))), o.pruned ?? new Set());
  }
  return losses;
}

test('softmax and tanh: tfjs drops the second derivative through their saved outputs; ours match float64 on cpu and wasm', async () => {
  const act = twiceDifferentiableActivations(tf);
  const [r, c] = [3, 5];
  const x = tf.randomNormal([r, c], 0, 1.5, 'float32', 1);
  const w = tf.randomNormal([r, c], 0, 1, 'float32', 2);
  const [xs, ws] = [Float64Array.from(x.dataSync()), Float64Array.from(w.dataSync())];
  // q(x) = ‖∇_x Σ w⊙f(x)‖²: its gradient needs f's gradient differentiated again.
  const q = (f: (t: tf.Tensor) => tf.Tensor) => (t: tf.Tensor) => tf.sum(tf.square(tf.grad((y: tf.Tensor) => tf.sum(tf.mul(f(y), w)))(t)));
  const gradQ = (f: (t: tf.Tensor) => tf.Tensor) => Float64Array.from(tf.grad(q(f))(x).dataSync());
  assert.ok(maxAbs(act.softmax(x).dataSync(), tf.softmax(x).dataSync()) === 0 && maxAbs(act.tanh(x).dataSync(), tf.tanh(x).dataSync()) === 0);
  // Built-in: the path from x to q runs only through the saved output, which the tape never connects.
  assert.throws(() => gradQ(tf.softmax), /Cannot compute gradient/);
  assert.throws(() => gradQ(tf.tanh), /Cannot compute gradient/);
  // tanh: q = Σ w²(1 − t²)², so ∂q/∂x = −4·w²·t·(1 − t²)² exactly.
  const tanhExact = xs.map((v, k) => -4 * ws[k] ** 2 * Math.tanh(v) * (1 - Math.tanh(v) ** 2) ** 2);
  const ours = gradQ(act.tanh);
  assert.ok(maxAbs(ours, tanhExact) <= 1e-5 * Math.max(...tanhExact.map(Math.abs)), `tanh: ${maxAbs(ours, tanhExact)}`);
  // softmax: central differences of q in float64 (per row, g = y⊙(w − yᵀw)).
  const qSoftmax = (v: Float64Array) => {
    let total = 0;
    for (let i = 0; i < r; i++) {
      const row = v.subarray(i * c, (i + 1) * c);
      const max = Math.max(...row);
      const e = Array.from(row, (z) => Math.exp(z - max));
      const y = e.map((z) => z / e.reduce((a, b) => a + b, 0));
      const yw = y.reduce((a, yk, k) => a + yk * ws[i * c + k], 0);
      for (let k = 0; k < c; k++) total += (y[k] * (ws[i * c + k] - yw)) ** 2;
    }
    return total;
  };
  const fd = xs.map((_, k) => {
    const [up, down] = [Float64Array.from(xs), Float64Array.from(xs)];
    up[k] += 1e-6;
    down[k] -= 1e-6;
    return (qSoftmax(up) - qSoftmax(down)) / 2e-6;
  });
  const oursSoftmax = gradQ(act.softmax);
  assert.ok(maxAbs(oursSoftmax, fd) <= 1e-5 * Math.max(...fd.map(Math.abs)), `softmax: ${maxAbs(oursSoftmax, fd)}`);
  // The same on wasm (the trainer's usual backend).
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  try {
    const onWasm = twiceDifferentiableActivations(tf);
    const [xw, ww] = [tf.tensor2d(x.dataSync(), [r, c]), tf.tensor2d(w.dataSync(), [r, c])];
    const qw = (f: (t: tf.Tensor) => tf.Tensor) => (t: tf.Tensor) => tf.sum(tf.square(tf.grad((y: tf.Tensor) => tf.sum(tf.mul(f(y), ww)))(t)));
    assert.ok(maxAbs(tf.grad(qw(onWasm.tanh))(xw).dataSync(), tanhExact) <= 1e-5 * Math.max(...tanhExact.map(Math.abs)), 'wasm tanh');
    assert.ok(maxAbs(tf.grad(qw(onWasm.softmax))(xw).dataSync(), fd) <= 1e-5 * Math.max(...fd.map(Math.abs)), 'wasm softmax');
    tf.dispose([xw, ww]);
  } finally {
    await tf.setBackend('cpu');
  }
  tf.dispose([x, w]);
});

test('GELU (one op, closed-form backward): value, gradient and gradient of the gradient match float64', () => {
  const act = twiceDifferentiableActivations(tf);
  const x = tf.randomNormal([4, 5], 0, 2, 'float32', 7);
  const w = tf.randomNormal([4, 5], 0, 1, 'float32', 8);
  const [xs, ws] = [Float64Array.from(x.dataSync()), Float64Array.from(w.dataSync())];
  const dGelu = (v: number) => (gelu(v + 1e-6) - gelu(v - 1e-6)) / 2e-6;
  const close = (ours: ArrayLike<number>, ref: Float64Array, what: string) => assert.ok(maxAbs(ours, ref) <= 1e-4 * Math.max(...ref.map(Math.abs)), `${what}: ${maxAbs(ours, ref)}`);
  close(act.gelu(x).dataSync(), xs.map(gelu), 'value');
  close(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(act.gelu(t), w)))(x).dataSync(), xs.map((v, k) => ws[k] * dGelu(v)), 'gradient');
  // q = Σ (w⊙gelu′(x))², ∂q/∂x = 2·w²·gelu′·gelu″ (gelu″ by central differences of gelu′ in float64).
  const q = (t: tf.Tensor) => tf.sum(tf.square(tf.grad((y: tf.Tensor) => tf.sum(tf.mul(act.gelu(y), w)))(t)));
  const exact = xs.map((v, k) => 2 * ws[k] ** 2 * dGelu(v) * ((dGelu(v + 1e-4) - dGelu(v - 1e-4)) / 2e-4));
  close(tf.grad(q)(x).dataSync(), exact, 'gradient of the gradient');
  tf.dispose([x, w]);
});

test('layer norm (one op, closed-form backward): value, gradient and gradient of the gradient match float64', () => {
  const act = twiceDifferentiableActivations(tf);
  const [r, c, eps] = [3, 6, 1e-5];
  const x = tf.randomNormal([r, c], 0.3, 1.5, 'float32', 3) as tf.Tensor2D;
  const g = tf.randomNormal([c], 1, 0.5, 'float32', 4) as tf.Tensor1D;
  const b = tf.randomNormal([c], 0, 0.5, 'float32', 5) as tf.Tensor1D;
  const w = tf.randomNormal([r, c], 0, 1, 'float32', 6);
  const [xs, gs, bs, ws] = [x, g, b, w].map((t) => Float64Array.from(t.dataSync()));
  // Float64 layer norm and Σ w⊙LN(x), by definition.
  const norm = (v: Float64Array) => {
    const out = new Float64Array(r * c);
    for (let i = 0; i < r; i++) {
      const row = v.subarray(i * c, (i + 1) * c);
      const mean = row.reduce((a, z) => a + z, 0) / c;
      const sd = Math.sqrt(row.reduce((a, z) => a + (z - mean) ** 2, 0) / c + eps);
      row.forEach((z, k) => (out[i * c + k] = (z - mean) / sd));
    }
    return out;
  };
  const loss = (v: Float64Array, gv: Float64Array, bv: Float64Array) => norm(v).reduce((a, z, k) => a + ws[k] * (z * gv[k % c] + bv[k % c]), 0);
  const central = (f: (v: Float64Array) => number, at: Float64Array) =>
    at.map((_, k) => {
      const [up, down] = [Float64Array.from(at), Float64Array.from(at)];
      up[k] += 1e-6;
      down[k] -= 1e-6;
      return (f(up) - f(down)) / 2e-6;
    });
  const close = (ours: ArrayLike<number>, ref: Float64Array, what: string) => assert.ok(maxAbs(ours, ref) <= 1e-4 * Math.max(...ref.map(Math.abs)), `${what}: ${maxAbs(ours, ref)}`);
  assert.ok(maxAbs(act.layerNorm(x, g, b).dataSync(), norm(xs).map((z, k) => z * gs[k % c] + bs[k % c])) <= 1e-5);
  const first = (t: tf.Tensor2D, gt: tf.Tensor1D) => tf.grads((a: tf.Tensor, ga: tf.Tensor, ba: tf.Tensor) => tf.sum(tf.mul(act.layerNorm(a as tf.Tensor2D, ga as tf.Tensor1D, ba as tf.Tensor1D), w)))([t, gt, b]);
  const [dx, dg, db] = first(x, g);
  close(dx.dataSync(), central((v) => loss(v, gs, bs), xs), '∂/∂x');
  close(dg.dataSync(), central((v) => loss(xs, v, bs), gs), '∂/∂g');
  close(db.dataSync(), central((v) => loss(xs, gs, v), bs), '∂/∂b');
  // q = ‖∂/∂x‖² + ‖∂/∂g‖², differentiated again; float64 reference: central differences of q with its
  // inner gradients by central differences too would be too noisy, so q uses the (just checked) closed form.
  const qOf = (v: Float64Array, gv: Float64Array) => {
    const xhat = norm(v);
    let q = 0;
    for (let i = 0; i < r; i++) {
      const row = v.subarray(i * c, (i + 1) * c);
      const mean = row.reduce((a, z) => a + z, 0) / c;
      const sd = Math.sqrt(row.reduce((a, z) => a + (z - mean) ** 2, 0) / c + eps);
      const gw = Array.from({ length: c }, (_, k) => gv[k] * ws[i * c + k]);
      const m1 = gw.reduce((a, z) => a + z, 0) / c;
      const m2 = gw.reduce((a, z, k) => a + z * xhat[i * c + k], 0) / c;
      for (let k = 0; k < c; k++) q += ((gw[k] - m1 - xhat[i * c + k] * m2) / sd) ** 2;
    }
    for (let k = 0; k < c; k++) {
      let s = 0;
      for (let i = 0; i < r; i++) s += ws[i * c + k] * xhat[i * c + k];
      q += s * s;
    }
    return q;
  };
  const [qx, qg] = tf.grads((a: tf.Tensor, ga: tf.Tensor) => {
    const [gx, gg] = first(a as tf.Tensor2D, ga as tf.Tensor1D);
    return tf.add(tf.sum(tf.square(gx)), tf.sum(tf.square(gg)));
  })([x, g]);
  close(qx.dataSync(), central((v) => qOf(v, gs), xs), '∂q/∂x');
  close(qg.dataSync(), central((v) => qOf(xs, v), gs), '∂q/∂g');
  tf.dispose([x, g, b, w, dx, dg, db, qx, qg]);
});

test('the hand-written backward\'s ops (GELU′, layer norm\'s backward pass, affine maps as one op each): values and gradients match float64 central differences, GELU′ and layer norm\'s backward on the host and as tf ops, a constant row', () => {
  const act = twiceDifferentiableActivations(tf);
  const [r, c, eps] = [3, 6, 1e-5];
  const rnd = (shape: number[], mean: number, sd: number, seed: number) => tf.randomNormal(shape, mean, sd, 'float32', seed);
  const [x, dy, w] = [rnd([r, c], 0.3, 1.5, 11) as tf.Tensor2D, rnd([r, c], 0, 1, 12) as tf.Tensor2D, rnd([r, c], 0, 1, 13)];
  const g = rnd([c], 1, 0.5, 14) as tf.Tensor1D;
  const [xs, dys, ws, gs] = [x, dy, w, g].map((t) => Float64Array.from(t.dataSync()));
  const rows = (f: (i: number) => number[]) => Float64Array.from(Array.from({ length: r }, (_, i) => f(i)).flat());
  const row = (a: Float64Array, i: number) => Array.from(a.subarray(i * c, (i + 1) * c));
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  // Float64 references, by definition.
  const geluPrime = (v: Float64Array) => v.map((z) => (gelu(z + 1e-5) - gelu(z - 1e-5)) / 2e-5);
  const lnBack = (xv: Float64Array, gv: Float64Array, dv: Float64Array) =>
    rows((i) => {
      // dx_k = Σ_j dy_j·g_j·∂x̂_j/∂x_k, ∂x̂_j/∂x_k = r·(δ_jk − 1/c − x̂_j·x̂_k/c)
      const xr = row(xv, i);
      const m = mean(xr);
      const inv = 1 / Math.sqrt(mean(xr.map((z) => (z - m) ** 2)) + eps);
      const xhat = xr.map((z) => (z - m) * inv);
      const a = row(dv, i).map((d, j) => d * gv[j]);
      return xhat.map((_, k) => a.reduce((s, aj, j) => s + aj * inv * ((j === k ? 1 : 0) - 1 / c - (xhat[j] * xhat[k]) / c), 0));
    });
  const close = (ours: ArrayLike<number>, ref: Float64Array, what: string, tol = 1e-4) => assert.ok(maxAbs(ours, ref) <= tol * Math.max(...ref.map(Math.abs)), `${what}: ${maxAbs(ours, ref)}`);
  const weighted = (v: Float64Array) => v.reduce((s, z, k) => s + z * ws[k], 0);
  const central = (at: Float64Array, f: (v: Float64Array) => number, step = 1e-4) => at.map((_, k) => centralDifference(at, k, step, () => f(at)));
  // x with its middle row constant (layer norm: x̂ = 0, r = 1/√ε).
  const xFlat = Float32Array.from(x.dataSync());
  xFlat.fill(0.7, c, 2 * c);
  const xc = tf.tensor2d(xFlat, [r, c]);
  const xcs = Float64Array.from(xFlat);
  const limit = hostElementwise.maxElements;
  // GELU′ and layer norm's backward on the host (this size is far below the limit), then as tf ops.
  for (const [path, maxElements] of [['host', limit], ['tf ops', 0]] as const) {
    hostElementwise.maxElements = maxElements;
    try {
      close(act.geluDerivative(x).dataSync(), geluPrime(xs), `${path}: GELU′`);
      close(act.layerNormBackward(x, g, dy).dataSync(), lnBack(xs, gs, dys), `${path}: layer norm backward`);
      // Gradients of Σ w⊙op against central differences of the float64 references.
      const [dGelu] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(act.geluDerivative(t), w)))([x]);
      close(dGelu.dataSync(), central(Float64Array.from(xs), (v) => weighted(geluPrime(v)), 1e-3), `${path}: GELU″`, 1e-3);
      // With an upstream dy: dy⊙GELU′(x), gradients in x and dy.
      const upstreamRef = (xv: Float64Array, dv: Float64Array) => geluPrime(xv).map((p, k) => p * dv[k]);
      close(act.geluDerivative(x, undefined, dy).dataSync(), upstreamRef(xs, dys), `${path}: dy⊙GELU′`);
      const [ux, ud] = tf.grads((t: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(act.geluDerivative(t, undefined, d), w)))([x, dy]);
      close(ux.dataSync(), central(Float64Array.from(xs), (v) => weighted(upstreamRef(v, dys)), 1e-3), `${path}: dy⊙GELU′: ∂/∂x`, 1e-3);
      close(ud.dataSync(), central(Float64Array.from(dys), (v) => weighted(upstreamRef(xs, v))), `${path}: dy⊙GELU′: ∂/∂dy`);
      for (const [rows, input, inputs] of [['', x, xs], [', a constant row', xc, xcs]] as const) {
        close(act.layerNormBackward(input, g, dy).dataSync(), lnBack(inputs, gs, dys), `${path}${rows}: layer norm backward`);
        const [lx, lg, ld] = tf.grads((t: tf.Tensor, gt: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(act.layerNormBackward(t as tf.Tensor2D, gt as tf.Tensor1D, d as tf.Tensor2D), w)))([input, g, dy]);
        close(lx.dataSync(), central(Float64Array.from(inputs), (v) => weighted(lnBack(v, gs, dys))), `${path}${rows}: layer norm backward: ∂/∂x`);
        close(lg.dataSync(), central(Float64Array.from(gs), (v) => weighted(lnBack(inputs, v, dys))), `${path}${rows}: layer norm backward: ∂/∂g`);
        close(ld.dataSync(), central(Float64Array.from(dys), (v) => weighted(lnBack(inputs, gs, v))), `${path}${rows}: layer norm backward: ∂/∂dy`);
        tf.dispose([lx, lg, ld]);
      }
      tf.dispose([dGelu, ux, ud]);
    } finally {
      hostElementwise.maxElements = limit;
    }
  }
  xc.dispose();
  // affine: a·W (+ bias + residual), W transposed or not; gradients for every input.
  const [ra, rw, rb, rr] = [rnd([r, 4], 0, 1, 16) as tf.Tensor2D, rnd([4, c], 0, 1, 17) as tf.Tensor2D, rnd([c], 0, 1, 18) as tf.Tensor1D, rnd([r, c], 0, 1, 19) as tf.Tensor2D];
  const [as, wsAff, bs, rs] = [ra, rw, rb, rr].map((t) => Float64Array.from(t.dataSync()));
  const affineRef = (av: Float64Array, wv: Float64Array, bv: Float64Array, resv: Float64Array) => rows((i) => Array.from({ length: c }, (_, j) => bv[j] + resv[i * c + j] + [0, 1, 2, 3].reduce((sum, k) => sum + av[i * 4 + k] * wv[k * c + j], 0)));
  close(act.affine(ra, rw, { bias: rb, residual: rr }).dataSync(), affineRef(as, wsAff, bs, rs), 'affine');
  const wT = tf.transpose(rw) as tf.Tensor2D;
  close(act.affine(ra, wT, { transposeW: true }).dataSync(), affineRef(as, wsAff, new Float64Array(c), new Float64Array(r * c)), 'affine, Wᵀ');
  const grads = tf.grads((a: tf.Tensor, m: tf.Tensor, bb: tf.Tensor, res: tf.Tensor) => tf.sum(tf.mul(act.affine(a as tf.Tensor2D, m as tf.Tensor2D, { bias: bb as tf.Tensor1D, residual: res as tf.Tensor2D }), w)))([ra, rw, rb, rr]);
  const refs = [
    central(Float64Array.from(as), (v) => weighted(affineRef(v, wsAff, bs, rs))),
    central(Float64Array.from(wsAff), (v) => weighted(affineRef(as, v, bs, rs))),
    central(Float64Array.from(bs), (v) => weighted(affineRef(as, wsAff, v, rs))),
    central(Float64Array.from(rs), (v) => weighted(affineRef(as, wsAff, bs, v))),
  ];
  grads.forEach((gr, k) => close(gr.dataSync(), refs[k], `affine: ∂/∂${['a', 'W', 'bias', 'residual'][k]}`));
  const [gaT, gwT] = tf.grads((a: tf.Tensor, m: tf.Tensor) => tf.sum(tf.mul(act.affine(a as tf.Tensor2D, m as tf.Tensor2D, { transposeW: true }), w)))([ra, wT]);
  const zeroB = new Float64Array(c);
  const zeroR = new Float64Array(r * c);
  close(gaT.dataSync(), central(Float64Array.from(as), (v) => weighted(affineRef(v, wsAff, zeroB, zeroR))), 'affine, Wᵀ: ∂/∂a');
  const gwRef = central(Float64Array.from(wsAff), (v) => weighted(affineRef(as, v, zeroB, zeroR))); // [4, c]; ours is ∂/∂Wᵀ [c, 4]
  close(gwT.dataSync(), Float64Array.from({ length: 4 * c }, (_, k) => gwRef[(k % 4) * c + Math.floor(k / 4)]), 'affine, Wᵀ: ∂/∂Wᵀ');
  tf.dispose([x, dy, w, g, ra, rw, rb, rr, wT, gaT, gwT, ...grads]);
});

test('GELU′ and layer norm\'s backward on a joint pass\'s rows (fromRow): bit for bit the values and gradients of the rows sliced first, an exact zero gradient at the other rows, on the host and as tf ops', () => {
  const act = twiceDifferentiableActivations(tf);
  const [rows, from, c] = [7, 3, 5];
  const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0.1, 1.3, 'float32', seed);
  const [joint, dy, w] = [rnd([rows, c], 31) as tf.Tensor2D, rnd([rows - from - 1, c], 32) as tf.Tensor2D, rnd([rows - from - 1, c], 33)];
  const g = rnd([c], 34) as tf.Tensor1D;
  const n = dy.shape[0];
  const sliced = (x: tf.Tensor) => tf.slice(x, [from, 0], [n, c]) as tf.Tensor2D;
  const ops: [string, (x: tf.Tensor2D, d: tf.Tensor2D, fromRow?: number) => tf.Tensor][] = [
    ['dy⊙GELU′', (x, d, fromRow) => act.geluDerivative(x, undefined, d, fromRow)],
    ['layer norm backward', (x, d, fromRow) => act.layerNormBackward(x, g, d, undefined, fromRow)],
  ];
  const limit = hostElementwise.maxElements;
  for (const [path, maxElements] of [['host', limit], ['tf ops', 0]] as const) {
    hostElementwise.maxElements = maxElements;
    try {
      for (const [name, op] of ops) {
        const [ours, reference] = [
          (x: tf.Tensor, d: tf.Tensor) => op(x as tf.Tensor2D, d as tf.Tensor2D, from),
          (x: tf.Tensor, d: tf.Tensor) => op(sliced(x), d as tf.Tensor2D),
        ].map((f) => tf.tidy(() => [f(joint, dy), ...tf.grads((x: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(f(x, d), w)))([joint, dy])].map((t) => Array.from(t.dataSync()))));
        ['value', '∂/∂x', '∂/∂dy'].forEach((what, k) => assert.deepEqual(ours[k], reference[k], `${path}, ${name}: ${what}`));
        const outside = ours[1].filter((_, k) => k < from * c || k >= (from + n) * c);
        assert.ok(outside.length === (rows - n) * c && outside.every((v) => v === 0), `${path}, ${name}: zero gradient at the other rows`);
        assert.ok(ours[1].some((v) => v !== 0), `${path}, ${name}: a gradient at the rows read`);
      }
    } finally {
      hostElementwise.maxElements = limit;
    }
  }
  tf.dispose([joint, dy, w, g]);
});

test('the hand-written backward\'s ops with `hold` (a step\'s): the same values and gradients bit for bit, no saved clones on the tape, nothing left once the hold is disposed; on the host, nothing saved or held at all', async () => {
  const act = twiceDifferentiableActivations(tf);
  const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0.2, 1.2, 'float32', seed);
  const [x, dy, w, m] = [rnd([3, 5], 21) as tf.Tensor2D, rnd([3, 5], 22) as tf.Tensor2D, rnd([3, 5], 23) as tf.Tensor2D, rnd([5, 5], 24) as tf.Tensor2D];
  const g = tf.variable(rnd([5], 25));
  type Op = (t: tf.Tensor[], hold?: tf.Tensor[]) => tf.Tensor;
  // [name, inputs, op, tensors its backward reads (each a clone on the tape without a hold)]
  const ops: [string, tf.Tensor[], Op, number][] = [
    ['GELU′', [x], ([a], hold) => act.geluDerivative(a, hold), 4],
    ['dy⊙GELU′', [x, dy], ([a, d], hold) => act.geluDerivative(a, hold, d), 6],
    ['layer norm backward', [x, g, dy], ([a, gain, d], hold) => act.layerNormBackward(a as tf.Tensor2D, gain as tf.Tensor1D, d as tf.Tensor2D, hold), 6],
    ['affine', [x, m, g, dy], ([a, mm, b, r], hold) => act.affine(a as tf.Tensor2D, mm as tf.Tensor2D, { bias: b as tf.Tensor1D, residual: r as tf.Tensor2D, transposeW: true, hold }), 2],
  ];
  const clones = async (f: () => void) => (await tf.profile(f)).kernels.filter((k) => k.name === 'Identity').length;
  const limit = hostElementwise.maxElements;
  // GELU′ and layer norm's backward as tf ops (their host path follows).
  hostElementwise.maxElements = 0;
  for (const [name, inputs, op, saved] of ops) {
    const run = (t: tf.Tensor[], hold?: tf.Tensor[]) => tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(op(a, hold), w)))(t);
    const plain = run(inputs);
    const withoutHold = await clones(() => tf.dispose(run(inputs)));
    const before = tf.memory().numTensors;
    // The hold owns the inputs it keeps (a step's intermediates): here copies, the variable as it is.
    const owned = inputs.map((t) => (t === g ? t : tf.clone(t)));
    const hold: tf.Tensor[] = [];
    const withHold = await clones(() => {
      const grads = run(owned, hold);
      grads.forEach((gr, k) => assert.deepEqual(Array.from(gr.dataSync()), Array.from(plain[k].dataSync()), `${name}: gradient ${k}`));
      tf.dispose(grads);
    });
    assert.ok(hold.length > 0 && !hold.includes(g), `${name}: held tensors, the variable not among them`);
    assert.equal(withoutHold - withHold, saved, `${name}: no saved clones of its own`);
    tf.dispose(hold);
    tf.dispose(owned.filter((t) => t !== g));
    assert.equal(tf.memory().numTensors, before, `${name}: nothing left`);
    assert.deepEqual(Array.from(op(inputs, []).dataSync()), Array.from(op(inputs).dataSync()), `${name}: value`);
    tf.dispose(plain);
  }
  hostElementwise.maxElements = limit;
  // On the host the gradient reads host arrays: no clone on the tape and nothing in the hold, with or
  // without one; the same value either way, and nothing left.
  const harnessClones = await clones(() => tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(tf.mul(a, w)))([x])));
  for (const [name, inputs, op] of ops.slice(0, 3)) {
    const before = tf.memory().numTensors;
    const hold: tf.Tensor[] = [];
    const run = (h?: tf.Tensor[]) => tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(op(a, h), w)))(inputs);
    const reference = run();
    assert.equal((await clones(() => tf.dispose(run(hold)))) - harnessClones, 0, `${name} on the host: no saved clones of its own`);
    assert.equal(hold.length, 0, `${name} on the host: nothing held`);
    const again = run(hold);
    again.forEach((gr, k) => assert.deepEqual(Array.from(gr.dataSync()), Array.from(reference[k].dataSync()), `${name} on the host: gradient ${k}`));
    tf.tidy(() => assert.deepEqual(Array.from(op(inputs, hold).dataSync()), Array.from(op(inputs).dataSync()), `${name} on the host: value`));
    tf.dispose([...reference, ...again]);
    assert.equal(tf.memory().numTensors, before, `${name} on the host: nothing left`);
  }
  assert.ok(!g.isDisposed, 'the variable outlives the hold');
  tf.dispose([x, dy, w, m, g]);
});

test('the host path of GELU′ and layer norm\'s backward runs only on backends whose tensors are in host memory: elsewhere the tf ops, with the same values', async () => {
  const act = twiceDifferentiableActivations(tf);
  const x = tf.randomNormal([6, 8], 0, 1, 'float32', 41) as tf.Tensor2D;
  const g = tf.randomNormal([8], 1, 0.1, 'float32', 42) as tf.Tensor1D;
  const dy = tf.randomNormal([6, 8], 0, 1, 'float32', 43) as tf.Tensor2D;
  const kernels = async (f: () => tf.Tensor) => {
    let out: Float32Array | undefined;
    const p = await tf.profile(() => {
      const t = f();
      out = t.dataSync() as Float32Array;
      t.dispose();
    });
    return { count: p.kernels.length, out: out! };
  };
  const backends = hostElementwise.backends;
  try {
    assert.ok(backends.has(tf.getBackend()), `this suite runs on ${tf.getBackend()}, a host-memory backend`);
    const onHost = [await kernels(() => act.layerNormBackward(x, g, dy)), await kernels(() => act.geluDerivative(x, undefined, dy))];
    // A backend that may hold tensors on a device (tfjs-node's `tensorflow`): not in the set.
    hostElementwise.backends = new Set(['tensorflow']);
    const asOps = [await kernels(() => act.layerNormBackward(x, g, dy)), await kernels(() => act.geluDerivative(x, undefined, dy))];
    for (const k of [0, 1]) {
      assert.ok(asOps[k].count > onHost[k].count + 3, `op ${k}: ${asOps[k].count} kernels as tf ops against ${onHost[k].count} on the host`);
      asOps[k].out.forEach((v, i) => assert.ok(Math.abs(v - onHost[k].out[i]) <= 1e-5 * (1 + Math.abs(v)), `op ${k}, element ${i}: ${v} vs ${onHost[k].out[i]}`));
    }
  } finally {
    hostElementwise.backends = backends;
    tf.dispose([x, g, dy]);
  }
});

test('headJacobians (J assembly as one op, on the host with the addon\'s sgemm or as tf ops): value and gradients equal the tf ops it replaces, with and without a hold; the last layer on [CLS] rows (cpu and wasm)', async () => {
  await import('@tensorflow/tfjs-backend-wasm');
  const savedBackends = new Set(hostElementwise.backends);
  try {
    for (const [backend, onHost] of [['cpu', true], ['cpu', false], ['wasm', true], ['wasm', false]] as const) {
      await tf.setBackend(backend);
      if (!onHost) hostElementwise.backends.clear();
      else for (const b of savedBackends) hostElementwise.backends.add(b);
      // On the host only where the addon is loaded (engine-native.test.ts requires it where OpenBLAS is installed).
      assert.equal(headJacobiansOnHost(tf), onHost && nativeHostProducts(), `${backend}: which path`);
      headJacobiansCase(`${backend}, ${onHost && nativeHostProducts() ? 'host' : 'tf ops'}`);
    }
  } finally {
    for (const b of savedBackends) hostElementwise.backends.add(b);
    await tf.setBackend('cpu');
  }
});

function headJacobiansCase(label: string) {
  const [b, T, D, H, dh] = [3, 4, 4, 2, 2];
  const HD = H * dh;
  const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const layers = [
    { h: rnd([b * T, D], 31), dqkv: rnd([b * T, 3 * HD], 32), merged: rnd([b * T, HD], 33), dOut: rnd([b * T, D], 34) },
    { h: rnd([b * T, D], 35), dqkv: rnd([b * T, 3 * HD], 36), merged: rnd([b, HD], 37), dOut: rnd([b, D], 38), clsOnly: true },
  ];
  const inputs = layers.flatMap((d) => [d.h, d.dqkv, d.merged, d.dOut]);
  // The composition of tf ops headJacobians replaced (BertEncoder before it; its columns permuted to
  // headJacobians' order), differentiated by tfjs.
  const reference = (t: tf.Tensor[]) => {
    const mask = new Float32Array((D + 1) * 3 * HD).fill(1);
    mask.fill(0, D * 3 * HD + HD, D * 3 * HD + 2 * HD);
    const blocks = layers.flatMap((d, l) => {
      const [h, dqkv, merged, dOut] = t.slice(4 * l, 4 * l + 4);
      const tokens = d.clsOnly ? 1 : T;
      const withOnes = tf.pad(tf.reshape(h, [b, T, D]), [[0, 0], [0, 0], [0, 1]], 1) as tf.Tensor3D;
      const qkv = tf.mul(tf.matMul(withOnes, tf.reshape(dqkv, [b, T, 3 * HD]) as tf.Tensor3D, true, false), tf.tensor2d(mask, [D + 1, 3 * HD]));
      const out = tf.matMul(tf.reshape(merged, [b, tokens, HD]) as tf.Tensor3D, tf.reshape(dOut, [b, tokens, D]) as tf.Tensor3D, true, false);
      // headJacobians' column order: (q|k|v, dh, D + 1) per head, then W_o's (dh, D).
      return [tf.reshape(tf.transpose(tf.reshape(qkv, [b, D + 1, 3, H, dh]), [3, 0, 2, 4, 1]), [H, b, 3 * dh * (D + 1)]), tf.transpose(tf.reshape(out, [b, H, dh * D]), [1, 0, 2])];
    });
    return tf.concat(blocks, 2);
  };
  const ours = (t: tf.Tensor[], hold?: tf.Tensor[]) => headJacobians(tf, { b, T, D, H, dh }, layers.map((d, l) => ({ ...d, h: t[4 * l], dqkv: t[4 * l + 1], merged: t[4 * l + 2], dOut: t[4 * l + 3] })), hold);
  const ref = reference(inputs);
  const w = rnd(ref.shape, 39);
  assert.deepEqual(ours(inputs).shape, ref.shape);
  assert.ok(maxAbs(ours(inputs).dataSync(), ref.dataSync()) <= 1e-6 * Math.max(...Array.from(ref.dataSync(), Math.abs)), `${label}: value`);
  const refGrads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(reference(t), w)))(inputs);
  for (const hold of [undefined, [] as tf.Tensor[]]) {
    const owned = hold ? inputs.map((t) => tf.clone(t)) : inputs;
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(ours(t, hold), w)))(owned);
    grads.forEach((g, k) => assert.ok(maxAbs(g.dataSync(), refGrads[k].dataSync()) <= 1e-5 * Math.max(1, ...Array.from(refGrads[k].dataSync(), Math.abs)), `${label}, ${hold ? 'held' : 'saved'}: gradient ${k}`));
    if (hold) tf.dispose([...hold, ...owned]);
    tf.dispose(grads);
  }
  tf.dispose([...inputs, ref, w, ...refGrads]);
}

test('attentionBackward (the attention\'s backward to q, k, v as one op): value and gradients equal the tf ops it replaces, every query and [CLS]\'s alone (on the host and as tf ops), with and without a hold', () => {
  const [b, T, H, dh, scale] = [2, 4, 2, 3, 0.6];
  const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const limit = hostElementwise.maxElements;
  for (const [Tq, maxElements] of [[T, limit], [1, limit], [1, 0]]) {
    hostElementwise.maxElements = maxElements;
    assert.equal(attentionBackwardOnHost(tf, { b, T, H, dh }, Tq), Tq === 1 && maxElements > 0);
    const [q, k, v] = [rnd([b, H, Tq, dh], 41), rnd([b, H, T, dh], 42), rnd([b, H, T, dh], 43)] as tf.Tensor4D[];
    const A = tf.softmax(rnd([b, H, Tq, T], 44)) as tf.Tensor4D;
    const dMerged = rnd([b * Tq, H * dh], 45) as tf.Tensor2D;
    const inputs = [dMerged, A, q, k, v];
    // The composition it replaced (splitHeads, softmax's backward written out, the three products, mergeHeads).
    const reference = ([dm, a, qq, kk, vv]: tf.Tensor[]) => {
      const dO = Tq === 1 ? tf.reshape(dm, [b, H, 1, dh]) : tf.transpose(tf.reshape(dm, [b, T, H, dh]), [0, 2, 1, 3]);
      const dA = tf.matMul(dO as tf.Tensor4D, vv as tf.Tensor4D, false, true);
      const dS = tf.mul(tf.mul(a, tf.sub(dA, tf.sum(tf.mul(a, dA), -1, true))), scale) as tf.Tensor4D;
      const dqRead = tf.matMul(dS, kk as tf.Tensor4D);
      const dq = Tq === 1 ? tf.pad(dqRead, [[0, 0], [0, 0], [0, T - 1], [0, 0]]) : dqRead;
      const parts = [dq, tf.matMul(dS, qq as tf.Tensor4D, true, false), tf.matMul(a as tf.Tensor4D, dO as tf.Tensor4D, true, false)];
      return tf.reshape(tf.transpose(tf.concat(parts, 1), [0, 2, 1, 3]), [b * T, 3 * H * dh]);
    };
    const ours = (t: tf.Tensor[], hold?: tf.Tensor[]) => attentionBackward(tf, { b, T, H, dh, scale }, t[0] as tf.Tensor2D, t[1] as tf.Tensor4D, t[2] as tf.Tensor4D, t[3] as tf.Tensor4D, t[4] as tf.Tensor4D, hold);
    const ref = reference(inputs);
    const w = rnd(ref.shape, 46);
    assert.ok(maxAbs(ours(inputs).dataSync(), ref.dataSync()) <= 1e-6 * Math.max(...Array.from(ref.dataSync(), Math.abs)), `Tq ${Tq}: value`);
    const refGrads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(reference(t), w)))(inputs);
    for (const hold of [undefined, [] as tf.Tensor[]]) {
      const owned = hold ? inputs.map((t) => tf.clone(t)) : inputs;
      const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(ours(t, hold), w)))(owned);
      grads.forEach((g, i) => assert.ok(maxAbs(g.dataSync(), refGrads[i].dataSync()) <= 1e-5 * Math.max(1, ...Array.from(refGrads[i].dataSync(), Math.abs)), `Tq ${Tq}, ${hold ? 'held' : 'saved'}: gradient ${i}`));
      if (hold) tf.dispose([...hold, ...owned]);
      tf.dispose(grads);
    }
    tf.dispose([...inputs, ref, w, ...refGrads]);
  }
  hostElementwise.maxElements = limit;
});

test('attentionBackward against float64: its value and gradients match central differences of a float64 attention backward (every query and [CLS]\'s alone, on the host and as tf ops)', () => {
  const [b, T, H, dh, scale] = [2, 3, 2, 2, 0.7];
  const limit = hostElementwise.maxElements;
  for (const [Tq, maxElements] of [[T, limit], [1, limit], [1, 0]]) {
    hostElementwise.maxElements = maxElements;
    assert.equal(attentionBackwardOnHost(tf, { b, T, H, dh }, Tq), Tq === 1 && maxElements > 0);
    const sizes = [b * Tq * H * dh, b * H * Tq * T, b * H * Tq * dh, b * H * T * dh, b * H * T * dh];
    const rnd = (len: number, seed: number) => Float64Array.from({ length: len }, (_, k) => Math.sin(seed * 3.7 + k * 1.3) * 0.9);
    const ins = sizes.map((n, i) => rnd(n, i + 1));
    // A: rows of positive weights summing to 1 (any A is a valid input; a softmax output is what the model passes).
    for (let r = 0; r < b * H * Tq; r++) {
      const row = ins[1].subarray(r * T, (r + 1) * T).map((v) => Math.exp(v));
      const sum = row.reduce((x, y) => x + y, 0);
      row.forEach((v, t) => (ins[1][r * T + t] = v / sum));
    }
    // Float64 definition: dO per head, dA = dO·vᵀ, dS = scale·A⊙(dA − Σ A⊙dA), dq = dS·k (zero rows past Tq), dk = dSᵀ·q, dv = Aᵀ·dO; out [b·T, (q|k|v)·H·dh].
    const f64 = ([dm, A, q, k, v]: Float64Array[]) => {
      const out = new Float64Array(b * T * 3 * H * dh);
      const at = (i: number, t: number, part: number, h: number, d: number) => (i * T + t) * 3 * H * dh + (part * H + h) * dh + d;
      for (let i = 0; i < b; i++)
        for (let h = 0; h < H; h++) {
          const dO = (s: number, d: number) => dm[(i * Tq + s) * H * dh + h * dh + d];
          const Aof = (s: number, t: number) => A[((i * H + h) * Tq + s) * T + t];
          const qv = (s: number, d: number) => q[((i * H + h) * Tq + s) * dh + d];
          const kv = (t: number, d: number) => k[((i * H + h) * T + t) * dh + d];
          const vv = (t: number, d: number) => v[((i * H + h) * T + t) * dh + d];
          const dS = (s: number, t: number) => {
            const dA = (tt: number) => Array.from({ length: dh }, (_, d) => dO(s, d) * vv(tt, d)).reduce((x, y) => x + y, 0);
            const sum = Array.from({ length: T }, (_, tt) => Aof(s, tt) * dA(tt)).reduce((x, y) => x + y, 0);
            return scale * Aof(s, t) * (dA(t) - sum);
          };
          for (let t = 0; t < T; t++)
            for (let d = 0; d < dh; d++) {
              let [gq, gk, gv] = [0, 0, 0];
              if (t < Tq) for (let u = 0; u < T; u++) gq += dS(t, u) * kv(u, d);
              for (let s2 = 0; s2 < Tq; s2++) {
                gk += dS(s2, t) * qv(s2, d);
                gv += Aof(s2, t) * dO(s2, d);
              }
              out[at(i, t, 0, h, d)] = gq;
              out[at(i, t, 1, h, d)] = gk;
              out[at(i, t, 2, h, d)] = gv;
            }
        }
      return out;
    };
    const shapes = [[b * Tq, H * dh], [b, H, Tq, T], [b, H, Tq, dh], [b, H, T, dh], [b, H, T, dh]];
    const tensors = ins.map((a, i) => tf.tensor(Float32Array.from(a), shapes[i]));
    const op = (t: tf.Tensor[]) => attentionBackward(tf, { b, T, H, dh, scale }, t[0] as tf.Tensor2D, t[1] as tf.Tensor4D, t[2] as tf.Tensor4D, t[3] as tf.Tensor4D, t[4] as tf.Tensor4D);
    const ref = f64(ins);
    const scaleOf = (a: ArrayLike<number>) => Math.max(...Array.from(a, Math.abs));
    assert.ok(maxAbs(op(tensors).dataSync(), ref) <= 1e-5 * scaleOf(ref), `Tq ${Tq}: value`);
    const w = rnd(ref.length, 9);
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(op(t), tf.tensor(Float32Array.from(w), [b * T, 3 * H * dh]))))(tensors);
    ins.forEach((a, i) => {
      const central = a.map((_, k) => centralDifference(a, k, 1e-5, () => f64(ins).reduce((x, y, m) => x + y * w[m], 0)));
      assert.ok(maxAbs(grads[i].dataSync(), central) <= 1e-4 * Math.max(1, scaleOf(central)), `Tq ${Tq}: gradient ${i}: ${maxAbs(grads[i].dataSync(), central)}`);
    });
    tf.dispose([...tensors, ...grads]);
  }
  hostElementwise.maxElements = limit;
});

test('attentionBackward on the host reads a joint pass\'s examples (fromExample): bit for bit the value and gradients of the examples sliced first, an exact zero gradient at the other examples; the tf ops refuse an offset', () => {
  const [b, T, H, dh, scale, before, after] = [3, 4, 2, 3, 0.6, 2, 1];
  const n = before + b + after;
  const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const [q, k, v] = [rnd([n, H, 1, dh], 51), rnd([n, H, T, dh], 52), rnd([n, H, T, dh], 53)] as tf.Tensor4D[];
  const A = tf.softmax(rnd([n, H, 1, T], 54)) as tf.Tensor4D;
  const dMerged = rnd([b, H * dh], 55) as tf.Tensor2D;
  const w = rnd([b * T, 3 * H * dh], 56);
  assert.ok(attentionBackwardOnHost(tf, { b, T, H, dh }, 1));
  const dims = { b, T, H, dh, scale };
  const sliced = (t: tf.Tensor) => tf.slice(t, [before, 0, 0, 0], [b, ...t.shape.slice(1)]);
  const joint = (t: tf.Tensor[]) => attentionBackward(tf, dims, t[0] as tf.Tensor2D, t[1] as tf.Tensor4D, t[2] as tf.Tensor4D, t[3] as tf.Tensor4D, t[4] as tf.Tensor4D, undefined, before);
  const first = (t: tf.Tensor[]) => attentionBackward(tf, dims, t[0] as tf.Tensor2D, ...(t.slice(1).map(sliced) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor4D]));
  const inputs = [dMerged, A, q, k, v];
  assert.deepEqual(joint(inputs).dataSync(), first(inputs).dataSync());
  const gJoint = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(joint(t), w)))(inputs);
  const gFirst = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(first(t), w)))(inputs);
  gJoint.forEach((g, i) => {
    assert.deepEqual(g.dataSync(), gFirst[i].dataSync(), `gradient ${i}`);
    if (i === 0) return;
    const perExample = g.size / n;
    const data = g.dataSync();
    assert.ok([...data.subarray(0, before * perExample), ...data.subarray((before + b) * perExample)].every((x) => x === 0), `gradient ${i}: zero at the other examples`);
    assert.ok(data.subarray(before * perExample, (before + b) * perExample).some((x) => x !== 0), `gradient ${i}: the read examples'`);
  });
  const limit = hostElementwise.maxElements;
  hostElementwise.maxElements = 0;
  assert.throws(() => joint(inputs), /the tf ops read 3 examples from 0/);
  hostElementwise.maxElements = limit;
  tf.dispose([...inputs, w, ...gJoint, ...gFirst]);
});

test('ffnBlockBackward (a block\'s FFN half and both layer norms in the hand-written backward as one host op): value and gradients match float64 central differences, from δ at the block\'s output and from U·W_outᵀ, on a joint pass\'s rows (zero gradient elsewhere); the same as the ops it replaces', () => {
  const [N, D, F, c, from, after] = [3, 4, 5, 3, 2, 1];
  const rows = from + N + after;
  const rnd = (len: number, seed: number, scale = 0.9, offset = 0) => Float64Array.from(Float32Array.from({ length: len }, (_, k) => offset + Math.sin(seed * 3.1 + k * 1.7) * scale));
  const C = Math.sqrt(2 / Math.PI);
  // GELU′ of the tanh form, by its own formula (the op uses the logistic one).
  const geluPrime = (z: number) => {
    const t = Math.tanh(C * (z + 0.044715 * z ** 3));
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * C * (1 + 3 * 0.044715 * z * z);
  };
  // Layer norm's backward pass by definition: dx_k = Σ_j dy_j·g_j·r·(δ_jk − 1/D − x̂_j·x̂_k/D).
  const lnBack = (x: Float64Array, g: Float64Array, dy: Float64Array) => {
    const out = new Float64Array(N * D);
    for (let i = 0; i < N; i++) {
      const xr = x.subarray((from + i) * D, (from + i + 1) * D);
      const mean = xr.reduce((a, v) => a + v, 0) / D;
      const r = 1 / Math.sqrt(xr.reduce((a, v) => a + (v - mean) ** 2, 0) / D + 1e-5);
      const xhat = Array.from(xr, (v) => (v - mean) * r);
      for (let k = 0; k < D; k++) for (let j = 0; j < D; j++) out[i * D + k] += dy[i * D + j] * g[j] * r * ((j === k ? 1 : 0) - 1 / D - (xhat[j] * xhat[k]) / D);
    }
    return out;
  };
  const product = (a: Float64Array, b: Float64Array, m: number, n: number, k: number, transB: boolean) =>
    Float64Array.from({ length: m * n }, (_, e) => {
      const [i, j] = [Math.floor(e / n), e % n];
      let sum = 0;
      for (let p = 0; p < k; p++) sum += a[i * k + p] * (transB ? b[j * k + p] : b[p * n + j]);
      return sum;
    });
  for (const fromU of [false, true]) {
    // [upstream…, r2, g2, W2 [F, D], pre, W1 [D, F], r1, g1]
    const upstreamShapes = fromU ? [[N, c], [D, c]] : [[N, D]];
    const shapes = [...upstreamShapes, [rows, D], [D], [F, D], [rows, F], [D, F], [rows, D], [D]];
    const ins = shapes.map((sh, i) => rnd(sh.reduce((a, v) => a * v, 1), i + 1, i === shapes.length - 1 || i === upstreamShapes.length + 1 ? 0.3 : 0.9, i === shapes.length - 1 || i === upstreamShapes.length + 1 ? 1 : 0));
    const f64 = (v: Float64Array[]) => {
      const k0 = upstreamShapes.length;
      const dh = fromU ? product(v[0], v[1], N, D, c, true) : v[0];
      const [r2, g2, W2, pre, W1, r1, g1] = v.slice(k0);
      const dr2 = lnBack(r2, g2, dh);
      const u = product(dr2, W2, N, F, D, true);
      const dPre = u.map((x, k) => x * geluPrime(pre[(from + Math.floor(k / F)) * F + (k % F)]));
      const s2 = product(dPre, W1, N, D, F, true).map((x, k) => x + dr2[k]);
      return lnBack(r1, g1, s2);
    };
    const tensors = ins.map((a, i) => tf.tensor(Float32Array.from(a), shapes[i]));
    const named = (t: tf.Tensor[]) => {
      const k0 = upstreamShapes.length;
      const [r2, ln2g, ff2w, pre, ff1w, r1, ln1g] = t.slice(k0) as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
      return { upstream: fromU ? { U: t[0] as tf.Tensor2D, outW: t[1] as tf.Tensor2D } : { dh: t[0] as tf.Tensor2D }, r2, ln2g, ff2w, pre, ff1w, r1, ln1g };
    };
    const op = (t: tf.Tensor[]) => ffnBlockBackward(tf, named(t), from);
    // The ops it replaces (host ops or tf ops, whichever this backend runs).
    const act = twiceDifferentiableActivations(tf);
    const ops = (t: tf.Tensor[]) => {
      const x = named(t);
      const up = x.upstream as { dh?: tf.Tensor2D; U?: tf.Tensor2D; outW?: tf.Tensor2D };
      const dh = up.dh ?? (tf.matMul(up.U!, up.outW!, false, true) as tf.Tensor2D);
      const dr2 = act.layerNormBackward(x.r2, x.ln2g, dh, undefined, from);
      const dPre = act.geluDerivative(x.pre, undefined, act.affine(dr2, x.ff2w, { transposeW: true }), from);
      return act.layerNormBackward(x.r1, x.ln1g, act.affine(dPre, x.ff1w, { residual: dr2, transposeW: true }), undefined, from);
    };
    const ref = f64(ins);
    const scaleOf = (a: ArrayLike<number>) => Math.max(...Array.from(a, Math.abs));
    const what = fromU ? 'from U·W_outᵀ' : 'from δ';
    assert.ok(maxAbs(op(tensors).dataSync(), ref) <= 1e-5 * scaleOf(ref), `${what}: value ${maxAbs(op(tensors).dataSync(), ref)}`);
    assert.ok(maxAbs(op(tensors).dataSync(), ops(tensors).dataSync()) <= 1e-5 * scaleOf(ref), `${what}: value against the ops`);
    const w = rnd(N * D, 9);
    const wT = tf.tensor2d(Float32Array.from(w), [N, D]);
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(op(t), wT)))(tensors);
    const opsGrads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(ops(t), wT)))(tensors);
    ins.forEach((a, i) => {
      const central = a.map((_, k) => centralDifference(a, k, 1e-5, () => f64(ins).reduce((x, y, m) => x + y * w[m], 0)));
      const got = grads[i].dataSync();
      assert.ok(maxAbs(got, central) <= 1e-4 * Math.max(1, scaleOf(central)), `${what}: gradient ${i}: ${maxAbs(got, central)}`);
      assert.ok(maxAbs(got, opsGrads[i].dataSync()) <= 1e-5 * Math.max(1, scaleOf(central)), `${what}: gradient ${i} against the ops`);
      const joint = shapes[i][0] === rows;
      if (joint) {
        const width = shapes[i][1];
        assert.ok([...got.subarray(0, from * width), ...got.subarray((from + N) * width)].every((x) => x === 0), `${what}: gradient ${i} is zero at the rows not read`);
      }
    });
    tf.dispose([...tensors, wT, ...grads, ...opsGrads]);
  }
  const limit = hostElementwise.maxElements;
  hostElementwise.maxElements = 0;
  assert.equal(ffnBlockOnHost(tf, N, D, F), false, 'above the limit: the ops');
  hostElementwise.maxElements = limit;
  assert.equal(ffnBlockOnHost(tf, N, D, F), nativeHostProducts(), 'within it: the host op where the native products are');
});

test('ffnBlockBackward with a reused HostScratch: two forward-and-gradient rounds give bitwise what fresh buffers give, a value read after the next forward pass is unchanged, and a gradient whose scratch a later forward claimed fails loudly (cpu and wasm)', async () => {
  const [N, D, F, from, after] = [3, 4, 5, 2, 1];
  const rows = from + N + after;
  const shapes = [[N, D], [rows, D], [D], [F, D], [rows, F], [D, F], [rows, D], [D]];
  const inputsFor = (seed: number) =>
    shapes.map((sh, i) => tf.tensor(Float32Array.from({ length: sh.reduce((a, v) => a * v, 1) }, (_, k) => (i === 2 || i === 7 ? 1 : 0) + Math.sin(seed * 5.3 + i * 3.1 + k * 1.7) * 0.8), sh));
  const op = (t: tf.Tensor[], scratch?: HostScratch) => {
    const [dh, r2, ln2g, ff2w, pre, ff1w, r1, ln1g] = t as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
    return ffnBlockBackward(tf, { upstream: { dh }, r2, ln2g, ff2w, pre, ff1w, r1, ln1g }, from, scratch);
  };
  const backend = tf.getBackend();
  await import('@tensorflow/tfjs-backend-wasm');
  try {
    for (const name of ['cpu', 'wasm']) {
      await tf.setBackend(name);
      const w = tf.tensor2d(Float32Array.from({ length: N * D }, (_, k) => Math.cos(k * 0.9)), [N, D]);
      const round = (t: tf.Tensor[], scratch?: HostScratch) => {
        const value = op(t, scratch);
        const grads = tf.grads((...x: tf.Tensor[]) => tf.sum(tf.mul(op(x, scratch), w)))(t);
        return { value, grads };
      };
      const [a, b] = [inputsFor(1), inputsFor(2)];
      const scratch = new HostScratch();
      const reused = [round(a, scratch), round(b, scratch)];
      const fresh = [round(a), round(b)];
      reused.forEach((r, i) => {
        assert.deepEqual(r.value.dataSync(), fresh[i].value.dataSync(), `${name}: round ${i} value`);
        r.grads.forEach((g, j) => assert.deepEqual(g.dataSync(), fresh[i].grads[j].dataSync(), `${name}: round ${i} gradient ${j}`));
      });
      // A's value made with the scratch, then B's forward pass refills it: A's value is its own array.
      const valueA = op(a, scratch);
      const valueB = op(b, scratch);
      assert.deepEqual(valueA.dataSync(), fresh[0].value.dataSync(), `${name}: a value read after the next forward pass`);
      assert.notDeepEqual(valueA.dataSync(), valueB.dataSync());
      // One scratch, two forward passes before the gradient: an error, not the second pass's values.
      assert.throws(() => tf.grads((...x: tf.Tensor[]) => {
        const y = op(x, scratch);
        op(b, scratch);
        return tf.sum(tf.mul(y, w));
      })(a), /host scratch was reused by a later forward pass/);
      tf.dispose([...a, ...b, w, valueA, valueB, ...[...reused, ...fresh].flatMap((r) => [r.value, ...r.grads])]);
    }
  } finally {
    await tf.setBackend(backend);
  }
});

test('clsAttentionBackwardFromOutput (W_o\'s backward and [CLS]\'s attention backward as one host op): value and gradients match float64 central differences and attentionBackward of dOut·W_oᵀ; a pruned head (zero rows of W_o) gets exact zeros', () => {
  const [b, T, H, dh, D, scale] = [2, 3, 2, 2, 3, 0.7];
  const HD = H * dh;
  const rnd = (len: number, seed: number) => Float64Array.from(Float32Array.from({ length: len }, (_, k) => Math.sin(seed * 2.3 + k * 1.1) * 0.9));
  const shapes = [[b, D], [HD, D], [b, H, 1, T], [b, H, 1, dh], [b, H, T, dh], [b, H, T, dh]];
  const ins = shapes.map((sh, i) => rnd(sh.reduce((a, v) => a * v, 1), i + 1));
  // Head 1 pruned: its rows of W_o are zeros.
  ins[1].fill(0, dh * D, 2 * dh * D);
  for (let r = 0; r < b * H; r++) {
    const row = ins[2].subarray(r * T, (r + 1) * T).map((v) => Math.exp(v));
    const sum = row.reduce((x, y) => x + y, 0);
    row.forEach((v, t) => (ins[2][r * T + t] = Float32Array.of(v / sum)[0]));
  }
  // Float64: dMerged = dOut·W_oᵀ; per head dA_t = dO·v_t, dS_t = scale·A_t·(dA_t − Σ A⊙dA); q at [CLS]: Σ_t dS_t·k_t, k_t: dS_t·q, v_t: A_t·dO.
  const f64 = ([dOut, wo, A, q, k, v]: Float64Array[]) => {
    const out = new Float64Array(b * T * 3 * HD);
    for (let i = 0; i < b; i++)
      for (let h = 0; h < H; h++) {
        const dO = Array.from({ length: dh }, (_, d) => Array.from({ length: D }, (_, cc) => dOut[i * D + cc] * wo[(h * dh + d) * D + cc]).reduce((x, y) => x + y, 0));
        const base = (i * H + h) * T;
        const dA = Array.from({ length: T }, (_, t) => dO.reduce((x, o, d) => x + o * v[(base + t) * dh + d], 0));
        const sum = dA.reduce((x, a, t) => x + A[base + t] * a, 0);
        for (let t = 0; t < T; t++) {
          const dS = scale * A[base + t] * (dA[t] - sum);
          for (let d = 0; d < dh; d++) {
            out[(i * T) * 3 * HD + h * dh + d] += dS * k[(base + t) * dh + d];
            out[(i * T + t) * 3 * HD + HD + h * dh + d] = dS * q[(i * H + h) * dh + d];
            out[(i * T + t) * 3 * HD + 2 * HD + h * dh + d] = A[base + t] * dO[d];
          }
        }
      }
    return out;
  };
  const tensors = ins.map((a, i) => tf.tensor(Float32Array.from(a), shapes[i]));
  const dims = { b, T, H, dh, scale };
  assert.ok(attentionBackwardOnHost(tf, dims, 1));
  const op = (t: tf.Tensor[]) => clsAttentionBackwardFromOutput(tf, dims, t[0] as tf.Tensor2D, t[1] as tf.Tensor2D, t[2] as tf.Tensor4D, t[3] as tf.Tensor4D, t[4] as tf.Tensor4D, t[5] as tf.Tensor4D);
  const composed = (t: tf.Tensor[]) => attentionBackward(tf, dims, tf.matMul(t[0] as tf.Tensor2D, t[1] as tf.Tensor2D, false, true), t[2] as tf.Tensor4D, t[3] as tf.Tensor4D, t[4] as tf.Tensor4D, t[5] as tf.Tensor4D);
  const ref = f64(ins);
  const scaleOf = (a: ArrayLike<number>) => Math.max(...Array.from(a, Math.abs));
  const value = op(tensors).dataSync();
  assert.ok(maxAbs(value, ref) <= 1e-5 * scaleOf(ref), `value ${maxAbs(value, ref)}`);
  assert.ok(maxAbs(value, composed(tensors).dataSync()) <= 1e-5 * scaleOf(ref), 'value against attentionBackward of dOut·W_oᵀ');
  for (let r = 0; r < b * T; r++) for (let part = 0; part < 3; part++) for (let d = 0; d < dh; d++) assert.ok(value[r * 3 * HD + part * HD + dh + d] === 0, 'the pruned head\'s δ');
  const w = rnd(ref.length, 9);
  const wT = tf.tensor2d(Float32Array.from(w), [b * T, 3 * HD]);
  const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(op(t), wT)))(tensors);
  const composedGrads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(composed(t), wT)))(tensors);
  ins.forEach((a, i) => {
    const central = a.map((_, k) => centralDifference(a, k, 1e-5, () => f64(ins).reduce((x, y, m) => x + y * w[m], 0)));
    assert.ok(maxAbs(grads[i].dataSync(), central) <= 1e-4 * Math.max(1, scaleOf(central)), `gradient ${i}: ${maxAbs(grads[i].dataSync(), central)}`);
    assert.ok(maxAbs(grads[i].dataSync(), composedGrads[i].dataSync()) <= 1e-5 * Math.max(1, scaleOf(central)), `gradient ${i} against the composition`);
  });
  tf.dispose([...tensors, wT, ...grads, ...composedGrads]);
});

test('training on the built-in 14×14 data (14 row tokens + [CLS]) beats chance clearly', () => {
  const m = newModel(config({ model: { experts: 2, dModel: 8, layers: 1, hiddenUnits: 8 }, learningRate: 0.01 }));
  const losses = steps(m, builtin, 250, { batch: 32 });
  const accuracy = m.evaluate(builtin, 'test', new Set());
  console.log(`bert H=2 d=8 L=1, 250 steps of 32: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}, test accuracy ${accuracy}`);
  assert.ok(accuracy > 0.55, `test accuracy ${accuracy} (chance 0.1)`);
  m.dispose();
});

test('a pruned head does not reach the logits: perturbing its weights leaves them bit-identical', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 } }));
  steps(m, builtin, 2);
  const b = trainBatch(builtin, 9, 16);
  const logits = (pruned: Set<number>) => Float32Array.from(tf.tidy(() => m.logits(b.x, pruned).dataSync()));
  const full = logits(new Set());
  const prunedOne = logits(new Set([1]));
  assert.ok(maxAbs(full, prunedOne) > 1e-3, 'pruning head 1 changes the output');
  for (const v of m.headVars(1)) v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 1, 'float32', 7)));
  assert.deepEqual(logits(new Set([1])), prunedOne);
  assert.ok(maxAbs(logits(new Set()), full) > 1e-3, 'the perturbation is real');
  // Training with it pruned leaves it alone, even if it is (wrongly) listed as trainable.
  const before = m.unitWeights(1);
  m.trainStep(b, { alpha: 0, trainable: [0, 1, 2], pruned: new Set([1]) });
  m.unitWeights(1).forEach((w, k) => assert.deepEqual(w, before[k]));
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('frozen heads keep bit-identical weights while the others train with the regularizer on', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 } }));
  const before = all(m).map((h) => m.unitWeights(h));
  m.measure(new Set([1]), new Set());
  const losses = steps(m, builtin, 3, { alpha: 0.05, trainable: [0, 2], measure: true });
  assert.ok(losses.every(Number.isFinite));
  const after = all(m).map((h) => m.unitWeights(h));
  after[1].forEach((w, k) => assert.deepEqual(w, before[1][k], 'frozen head unchanged, bit for bit'));
  for (const h of [0, 2]) assert.ok(after[h].some((w, k) => maxAbs(w, before[h][k]) > 0), `head ${h} trained`);
  m.dispose();
});

test('a regularized step leaves no tensor behind: the joint batch+probe pass and its shared layer maps, a soft-masked step, the tape reference; a step that threw leaves no stale maps', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 } }));
  const b = trainBatch(builtin, 2, 8);
  const softMask = [0.5, 1, 0.7];
  // The first soft-masked step creates the mask's variable (kept for every later one).
  m.trainStep(b, { alpha: 0.1, trainable: all(m), pruned: new Set(), softMask });
  m.measure(new Set(), new Set());
  const cases: [string, () => void][] = [
    ['joint pass, head 1 pruned, head 2 frozen', () => m.trainStep(b, { alpha: 0.1, trainable: [0], pruned: new Set([1]) })],
    ['soft mask (separate probe pass)', () => m.trainStep(b, { alpha: 0.1, trainable: all(m), pruned: new Set(), softMask })],
    ['unregularized', () => m.trainStep(b, { alpha: 0, trainable: all(m), pruned: new Set() })],
    ['measurement', () => m.measure(new Set([2]), new Set([1]))],
    ['objectiveGradients', () => m.objectiveGradients(b, { alpha: 0.1, trainable: all(m), pruned: new Set() })],
    [
      'δ by the tape',
      () => {
        m.deltasByTape = true;
        m.trainStep(b, { alpha: 0.1, trainable: all(m), pruned: new Set([1]) });
        m.deltasByTape = false;
      },
    ],
  ];
  for (const [name, run] of cases) {
    const tensors = tf.memory().numTensors;
    run();
    assert.equal(tf.memory().numTensors, tensors, name);
  }
  // A step that throws inside its pass (labels of the wrong width: after the joint pass built the maps it
  // shares with the probe pass) leaves none of them to a later pass: weights set afterwards (as setState
  // does) reach the logits. (tfjs itself leaves the interrupted tape's saved tensors behind.)
  const wrongLabels = tf.zeros([8, m.classes + 1]);
  assert.throws(() => m.trainStep({ ...b, y: wrongLabels }, { alpha: 0.1, trainable: all(m), pruned: new Set() }));
  const before = m.logits(b.x);
  const wq = m.heads[0][0].wq;
  wq.assign(tf.tidy(() => tf.add(wq, 0.5)));
  const after = m.logits(b.x);
  assert.ok(maxAbs(before.dataSync(), after.dataSync()) > 1e-3, 'the logits read the weights as they are now');
  tf.dispose([b.x, b.y, wrongLabels, before, after]);
  m.dispose();
});

// ---- float64 reference: the same encoder in plain loops ----

interface RefHead {
  wq: Float64Array;
  bq: Float64Array;
  wk: Float64Array;
  wv: Float64Array;
  bv: Float64Array;
  wo: Float64Array;
}

interface RefNet {
  rows: number;
  cols: number;
  D: number;
  dh: number;
  F: number;
  classes: number;
  /** Every parameter, keyed by the model's variable, so finite differences can move any of them. */
  params: Map<tf.Variable, Float64Array>;
  of(v: tf.Variable): Float64Array;
  heads: RefHead[][];
}

function refOf(m: BertEncoder): RefNet {
  const params = new Map<tf.Variable, Float64Array>();
  for (const v of [...m.sharedVars(), ...all(m).flatMap((h) => m.headVars(h))]) params.set(v, Float64Array.from(v.dataSync()));
  const of = (v: tf.Variable) => params.get(v)!;
  return {
    rows: m.rows,
    cols: m.cols,
    D: m.dModel,
    dh: m.dHead,
    F: m.ffn,
    classes: m.classes,
    params,
    of,
    heads: m.heads.map((layer) => layer.map((v) => ({ wq: of(v.wq), bq: of(v.bq), wk: of(v.wk), wv: of(v.wv), bv: of(v.bv), wo: of(v.wo) }))),
  };
}

/** a (rows×k) · b (k×cols) + bias, row-major. */
function affine(a: Float64Array, b: Float64Array, bias: Float64Array | undefined, rows: number, k: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      let s = bias ? bias[c] : 0;
      for (let t = 0; t < k; t++) s += a[r * k + t] * b[t * cols + c];
      out[r * cols + c] = s;
    }
  }
  return out;
}

function layerNorm(x: Float64Array, g: Float64Array, b: Float64Array, rows: number, D: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let d = 0; d < D; d++) mean += x[r * D + d] / D;
    let v = 0;
    for (let d = 0; d < D; d++) v += (x[r * D + d] - mean) ** 2 / D;
    const s = Math.sqrt(v + 1e-5);
    for (let d = 0; d < D; d++) out[r * D + d] = ((x[r * D + d] - mean) / s) * g[d] + b[d];
  }
  return out;
}

const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

/**
 * An additive tap at one entry: after layer `layer`'s joint q|k|v projection (column in [W_q | W_k | W_v]
 * order, all heads side by side) or after its output projection (column d of D), at token `token`.
 */
interface RefTap {
  layer: number;
  at: 'qkv' | 'out';
  token: number;
  col: number;
  value: number;
}

function refLogits(net: RefNet, m: BertEncoder, x: ArrayLike<number>, pruned: ReadonlySet<number>, tap?: RefTap): Float64Array {
  const { rows, cols, D, dh, F } = net;
  const T = rows + 1;
  const e = m.embedding;
  const tokens = affine(Float64Array.from(x), net.of(e.tokW), net.of(e.tokB), rows, cols, D);
  const seq = new Float64Array(T * D);
  seq.set(net.of(e.cls), 0);
  seq.set(tokens, D);
  const pos = net.of(e.pos);
  for (let k = 0; k < seq.length; k++) seq[k] += pos[k];
  let h = layerNorm(seq, net.of(e.lnG), net.of(e.lnB), T, D);
  net.heads.forEach((heads, l) => {
    const blk = m.blocks[l];
    const attended = new Float64Array(T * D);
    const bo = net.of(blk.bo);
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) attended[t * D + d] = bo[d];
    heads.forEach((p, hd) => {
      if (pruned.has(hd)) return;
      const q = affine(h, p.wq, p.bq, T, D, dh);
      const k = affine(h, p.wk, undefined, T, D, dh);
      const v = affine(h, p.wv, p.bv, T, D, dh);
      if (tap?.layer === l && tap.at === 'qkv' && Math.floor((tap.col % (heads.length * dh)) / dh) === hd) [q, k, v][Math.floor(tap.col / (heads.length * dh))][tap.token * dh + (tap.col % dh)] += tap.value;
      const o = new Float64Array(T * dh);
      const scores = new Float64Array(T);
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          let s = 0;
          for (let c = 0; c < dh; c++) s += q[i * dh + c] * k[j * dh + c];
          scores[j] = s / Math.sqrt(dh);
          max = Math.max(max, scores[j]);
        }
        let z = 0;
        for (let j = 0; j < T; j++) z += scores[j] = Math.exp(scores[j] - max);
        for (let j = 0; j < T; j++) for (let c = 0; c < dh; c++) o[i * dh + c] += (scores[j] / z) * v[j * dh + c];
      }
      const out = affine(o, p.wo, undefined, T, dh, D);
      for (let k2 = 0; k2 < out.length; k2++) attended[k2] += out[k2];
    });
    if (tap?.layer === l && tap.at === 'out') attended[tap.token * D + tap.col] += tap.value;
    for (let k = 0; k < h.length; k++) attended[k] += h[k];
    h = layerNorm(attended, net.of(blk.ln1g), net.of(blk.ln1b), T, D);
    const hidden = affine(h, net.of(blk.ff1w), net.of(blk.ff1b), T, D, F).map(gelu);
    const ff = affine(hidden, net.of(blk.ff2w), net.of(blk.ff2b), T, F, D);
    for (let k = 0; k < h.length; k++) ff[k] += h[k];
    h = layerNorm(ff, net.of(blk.ln2g), net.of(blk.ln2b), T, D);
  });
  return affine(h.subarray(0, D), net.of(e.outW), net.of(e.outB), 1, D, net.classes);
}

/** Probe inputs and the output directions u the model used at its last measure (recomputed the same way). */
function probeAndDirections(m: BertEncoder, probe: Batch, pruned: ReadonlySet<number>) {
  const n = probe.size;
  const logProbs = tf.tidy(() => tf.logSoftmax(m.logits(probe.x, pruned)).dataSync());
  return { xs: Float32Array.from(probe.x.dataSync()), u: outputDirections(logProbs, probe.y.dataSync(), n, m.classes), n };
}

/** u_i of every probe example from the float64 reference's logits (outputDirections of its log-softmax). */
function refDirections(net: RefNet, m: BertEncoder, xs: Float32Array, oneHot: ArrayLike<number>, n: number, pruned: ReadonlySet<number>): Float64Array {
  const f = net.rows * net.cols;
  const c = net.classes;
  const logProbs = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const z = refLogits(net, m, xs.subarray(i * f, (i + 1) * f), pruned);
    const top = Math.max(...z);
    const lse = top + Math.log(z.reduce((a, v) => a + Math.exp(v - top), 0));
    z.forEach((v, k) => (logProbs[i * c + k] = v - lse));
  }
  return outputDirections(logProbs, oneHot, n, c);
}

/** s_i = u_iᵀ logits(x_i) for every probe example, float64. */
function refScalars(net: RefNet, m: BertEncoder, xs: Float32Array, u: Float64Array, n: number, pruned: ReadonlySet<number>): Float64Array {
  const f = net.rows * net.cols;
  return Float64Array.from({ length: n }, (_, i) => refLogits(net, m, xs.subarray(i * f, (i + 1) * f), pruned).reduce((s, z, k) => s + z * u[i * net.classes + k], 0));
}

/**
 * J_h (n × p_h, columns in headVars order) by central differences of the float64 s_i. Every op is smooth
 * (tanh-GELU, softmax, layer norm), so the error is O(step²) plus round-off O(ε/step).
 */
function refJacobian(net: RefNet, m: BertEncoder, h: number, xs: Float32Array, u: Float64Array, n: number, pruned: ReadonlySet<number>, step = 1e-5): Float64Array {
  const params = m.headVars(h).map((v) => net.of(v));
  const p = params.reduce((a, q) => a + q.length, 0);
  const J = new Float64Array(n * p);
  let col = 0;
  for (const q of params) {
    for (let k = 0; k < q.length; k++, col++) {
      const keep = q[k];
      q[k] = keep + step;
      const up = refScalars(net, m, xs, u, n, pruned);
      q[k] = keep - step;
      const down = refScalars(net, m, xs, u, n, pruned);
      q[k] = keep;
      for (let i = 0; i < n; i++) J[i * p + col] = (up[i] - down[i]) / (2 * step);
    }
  }
  return J;
}

test('float64 reference encoder reproduces the model\'s logits (pruned or not)', () => {
  const m = newModel(config({ model: { experts: 2 } }));
  steps(m, builtin, 3);
  const b = trainBatch(builtin, 4, 3);
  const net = refOf(m);
  const xs = b.x.dataSync();
  for (const pruned of [new Set<number>(), new Set([0])]) {
    const got = tf.tidy(() => m.logits(b.x, pruned).dataSync());
    for (let i = 0; i < 3; i++) {
      const ref = refLogits(net, m, xs.subarray(i * 196, (i + 1) * 196), pruned);
      assert.ok(maxAbs(got.subarray(i * 10, (i + 1) * 10), ref) <= 1e-5 * Math.max(1, ...Array.from(ref, Math.abs)), `example ${i}`);
    }
  }
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('per-head tangent kernels (perSampleKernels) equal J·Jᵀ of a float64 finite-difference Jacobian (pruned head: measured restored)', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 }, monitor: { probeSize: 5 } }));
  steps(m, builtin, 3);
  const probe = builtin.batch(tf, 'train', range(0, 5));
  const pruned = new Set([1]);
  const stats = m.measure(new Set(), pruned);
  const kernels = m.unitKernels(pruned);
  const { xs, u, n } = probeAndDirections(m, probe, pruned);
  const net = refOf(m);
  let worst = 0;
  for (let h = 0; h < m.units; h++) {
    const seen = h === 1 ? new Set<number>() : pruned; // the pruned head's own kernel is taken with it restored
    const J = refJacobian(net, m, h, xs, u, n, seen);
    const p = J.length / n;
    assert.equal(p, 2 * (3 * 6 * 2 + 2 + 2 + 2 * 6), 'head parameters: W_q, b_q, W_k, W_v, b_v, W_o per layer');
    assert.ok(p > n, 'more parameters than probe examples');
    const K = gramOfJacobian(J, n, p);
    const err = relativeFrobenius(kernels[h], K);
    worst = Math.max(worst, err);
    assert.ok(err <= 1e-4, `head ${h}: relative error ${err}`);
    if (pruned.has(h)) {
      assert.deepEqual([stats[h].served, stats[h].kappa, stats[h].share], [0, null, 0], 'a pruned head serves nothing');
      continue;
    }
    const { values } = symmetricEigen(K, n);
    assert.equal(stats[h].served, n, 'a head serves every probe example');
    assert.ok(Math.abs(stats[h].lf! - values[n - 1]) <= 1e-4 * values[n - 1], `head ${h}: L_f ${stats[h].lf} vs ${values[n - 1]}`);
    assert.ok(Math.abs(stats[h].mu! - values[0]) <= 1e-3 * values[0], `head ${h}: μ ${stats[h].mu} vs ${values[0]}`);
  }
  // Shares: each live head's fraction of Σ tr(K_h) (the pruned head's 0).
  const traces = [0, 2].map((h) => Array.from({ length: n }, (_, i) => kernels[h][i * n + i]).reduce((a, b) => a + b, 0));
  assert.ok(Math.abs(stats[0].share! - traces[0] / (traces[0] + traces[1])) <= 1e-12 && Math.abs(stats[0].share! + stats[2].share! - 1) <= 1e-12);
  console.log(`bert kernel vs float64 finite differences: worst relative Frobenius error ${worst.toExponential(2)}`);
  assert.deepEqual(stats.map((s) => s.pruned), [false, true, false]);
  tf.dispose([probe.x, probe.y]);
  m.dispose();
});

test('the hand-written backward to the taps: δ equals the tape\'s (tf.grads) and float64 central differences (pruned head); the regularized step\'s gradients equal the tape path\'s (pruned and frozen head, with and without a soft mask)', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 } }));
  steps(m, builtin, 3);
  const pruned = new Set([1]);
  const n = 2;
  const probe = builtin.batch(tf, 'train', range(7, n));
  const { xs, u } = probeAndDirections(m, probe, pruned);
  const U = tf.tensor2d(Float32Array.from(u), [n, m.classes]);
  const hand = m.tapDeltas(probe.x, U, pruned, false);
  const tape = m.tapDeltas(probe.x, U, pruned, true);
  const net = refOf(m);
  const [T, D, H, dh] = [m.rows + 1, m.dModel, m.units, m.dHead];
  let worstTape = 0;
  let worstFd = 0;
  let nonzero = 0;
  hand.forEach((layer, l) =>
    layer.forEach((got, k) => {
      const at = k === 0 ? 'qkv' : 'out';
      const width = at === 'qkv' ? 3 * H * dh : D;
      const scale = Math.max(...Array.from(got, Math.abs));
      assert.ok(scale > 0, `layer ${l} ${at}: δ is not all zero`);
      worstTape = Math.max(worstTape, maxAbs(got, tape[l][k]) / scale);
      for (let i = 0; i < n; i++) {
        const x = xs.subarray(i * 196, (i + 1) * 196);
        const s = (tap: RefTap) => refLogits(net, m, x, pruned, tap).reduce((a, z, c) => a + z * u[i * m.classes + c], 0);
        for (let token = 0; token < T; token++) {
          for (let col = 0; col < width; col++) {
            const fd = (s({ layer: l, at, token, col, value: 1e-5 }) - s({ layer: l, at, token, col, value: -1e-5 })) / 2e-5;
            const ours = got[(i * T + token) * width + col];
            worstFd = Math.max(worstFd, Math.abs(ours - fd) / scale);
            if (Math.abs(fd) > 1e-3 * scale) nonzero++;
            // A pruned head's q, k, v never reach the logits: δ is exactly 0 there.
            if (at === 'qkv' && Math.floor((col % (H * dh)) / dh) === 1) assert.equal(ours, 0, `pruned head's δ (layer ${l}, token ${token}, column ${col})`);
          }
        }
      }
    }),
  );
  console.log(`bert hand-written δ: vs the tape ${worstTape.toExponential(2)}, vs float64 central differences ${worstFd.toExponential(2)} (relative to the largest |δ| of each tap; ${nonzero} non-zero entries)`);
  assert.ok(worstTape <= 1e-5, `δ vs the tape: ${worstTape}`);
  assert.ok(worstFd <= 1e-4, `δ vs float64 central differences: ${worstFd}`);
  assert.ok(nonzero > 500, `only ${nonzero} non-zero entries`);
  // The whole regularized step (head 1 pruned, head 2 frozen): the same gradients through either δ.
  m.measure(new Set([2]), pruned);
  const b = trainBatch(builtin, 6, 12);
  const o = { alpha: 0.5, trainable: [0], pruned };
  const byHand = m.objectiveGradients(b, o);
  m.deltasByTape = true;
  const byTape = m.objectiveGradients(b, o);
  m.deltasByTape = false;
  const plain = m.objectiveGradients(b, { ...o, alpha: 0 });
  let worst = 0;
  let largest = 0;
  for (const [name, g] of Object.entries(byTape)) {
    assert.ok(byHand[name], `${name} has a gradient`);
    largest = Math.max(largest, ...Array.from(g, (v, k) => Math.abs(v - plain[name][k])));
    worst = Math.max(worst, maxAbs(byHand[name], g));
  }
  assert.deepEqual(Object.keys(byHand).sort(), Object.keys(byTape).sort());
  assert.ok(largest > 0 && worst <= 1e-4 * largest, `step gradients: worst difference ${worst} against a largest regularizer term ${largest}`);
  // With a soft mask the batch's pass is masked and the probe's is not: two passes (no joint pass), the same gradients.
  const masked = { ...o, softMask: [0.6, 1, 0.8] };
  const maskedByHand = m.objectiveGradients(b, masked);
  m.deltasByTape = true;
  const maskedByTape = m.objectiveGradients(b, masked);
  m.deltasByTape = false;
  let worstMasked = 0;
  for (const [name, g] of Object.entries(maskedByTape)) worstMasked = Math.max(worstMasked, maxAbs(maskedByHand[name], g));
  assert.ok(worstMasked <= 1e-4 * largest, `soft-masked step gradients: worst difference ${worstMasked}`);
  assert.ok(maxAbs(maskedByHand[m.heads[0][0].wq.name], byHand[m.heads[0][0].wq.name]) > 0, 'the mask changes the step');
  tf.dispose([U, probe.x, probe.y, b.x, b.y]);
  m.dispose();
});

test('the regularizer\'s gradient: ∇κ̃ of the model kernel Σ_h K_h + U·Uᵀ by nested tf gradients matches float64 central differences of its κ, u following the weights', () => {
  const c = config({ model: { experts: 2 }, monitor: { probeSize: 4 } });
  const m = newModel(c);
  steps(m, builtin, 3);
  const probe = builtin.batch(tf, 'train', range(0, 4));
  const stats = m.measure(new Set(), new Set());
  const { xs, u: measuredU, n } = probeAndDirections(m, probe, new Set());
  const h = 0;
  const net = refOf(m);
  const oneHot = probe.y.dataSync();
  assert.ok(maxAbs(refDirections(net, m, xs, oneHot, n, new Set()), measuredU) <= 1e-5, 'the reference computes the model\'s u');
  // The exact model κ: eigenvalues of Σ_h J_h·J_hᵀ + U·Uᵀ with J_h from float64 differences and u
  // recomputed from the (perturbed) reference's logits: the regularizer follows u (contract 2 and 7),
  // though each J_h holds it inside.
  const c10 = measuredU.length / n;
  const kernel = () => {
    const u = refDirections(net, m, xs, oneHot, n, new Set());
    const K = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < c10; k++) K[i * n + j] += u[i * c10 + k] * u[j * c10 + k];
    for (let head = 0; head < m.units; head++) {
      const J = refJacobian(net, m, head, xs, u, n, new Set());
      gramOfJacobian(J, n, J.length / n).forEach((v, k) => (K[k] += v));
    }
    return K;
  };
  const kappa = () => conditioning(kernel(), n, c.monitor.damping);
  const at = kappa();
  const { values } = symmetricEigen(kernel(), n);
  assert.ok(values[1] > 1.1 * values[0] && values[n - 1] > 1.1 * values[n - 2], `simple extreme eigenvalues: ${Array.from(values)}`);
  assert.ok(at.kappa < 1e5, `κ ${at.kappa} is below the damping floor`);
  assert.ok(stats.every((st) => st.kappa !== null));
  assert.ok(Math.abs(m.modelKappa()! - at.kappa) <= 1e-3 * at.kappa, `measured model κ ${m.modelKappa()} vs float64 ${at.kappa}`);
  // The model: κ̃_h (eigenvectors of the last measurement held constant) and its gradient w.r.t. everything.
  const vars = [...m.headVars(0), ...m.headVars(1), ...m.sharedVars()];
  // Head 0 everywhere (two coordinates of each of its variables); a sample of the other head's and the shared ones.
  const [e, b0, b1] = [m.embedding, m.blocks[0], m.blocks[1]];
  const sampled = [m.heads[0][1].wq, m.heads[1][1].wv, m.heads[1][1].wo, e.tokW, e.cls, e.pos, e.lnG, b0.ff1w, b0.ln1g, b1.bo, b1.ff2w, b1.ln2b, e.outW, e.outB];
  const { value, grads } = tf.variableGrads(() => m.modelKappaTf([0, 1], new Set()), vars);
  assert.ok(Math.abs(value.dataSync()[0] - at.kappa) <= 1e-3 * at.kappa, `κ̃ ${value.dataSync()[0]} vs κ ${at.kappa}`);
  let worst = 0;
  let checked = 0;
  let nonzero = 0;
  const gradientOf = (v: tf.Variable) => grads[v.name]?.dataSync() ?? new Float32Array(v.size); // absent: no path at all
  const rmsOf = (g: ArrayLike<number>) => Math.sqrt(Array.from(g).reduce((s, x) => s + x * x, 0) / g.length);
  const overall = rmsOf(vars.flatMap((v) => Array.from(gradientOf(v))));
  for (const v of [...m.headVars(0), ...sampled]) {
    const arr = net.of(v);
    const got = gradientOf(v);
    const rms = rmsOf(got);
    const coords = m.headVars(0).includes(v) ? [0, arr.length - 1] : [arr.length >> 1];
    for (const k of coords) {
      const fd = (step: number) => centralDifference(arr, k, step, () => kappa().kappa);
      const coarse = fd(2e-4);
      const fine = fd(1e-4);
      // Biases that do not enter K (classifier, last LN shift) have derivative 0: measured against the overall scale.
      const scale = Math.max(Math.abs(fine), rms, 1e-3 * overall);
      assert.ok(Math.abs(coarse - fine) <= 1e-3 * scale, `differences converged (${v.name}[${k}]): ${coarse} vs ${fine}`);
      const err = Math.abs(got[k] - fine) / scale;
      worst = Math.max(worst, err);
      checked++;
      if (Math.abs(fine) > 1e-3 * scale) nonzero++;
      assert.ok(err <= 1e-3, `${v.name}[${k}]: tf ${got[k]} vs fd ${fine} (rms ${rms})`);
    }
  }
  const summary = `${checked} coordinates (${nonzero} non-zero), worst relative error ${worst.toExponential(2)}`;
  console.log(`bert ∇κ̃ vs float64 central differences of κ (κ = ${at.kappa.toFixed(1)}): ${summary}`);
  assert.ok(nonzero >= 30, `only ${nonzero} coordinates with a non-zero derivative`);
  tf.dispose([value, ...Object.values(grads), probe.x, probe.y]);
  m.dispose();
});

test('the reported regularizer is κ̃ of the model kernel, equal to the measured model κ at fresh eigenvectors; α moves the weights', () => {
  const m = newModel(config({ model: { experts: 3, dModel: 6 } }));
  steps(m, builtin, 2);
  m.measure(new Set(), new Set());
  const b = trainBatch(builtin, 5, 16);
  const r = m.trainStep(b, { alpha: 1e-3, trainable: [0, 1, 2], pruned: new Set() });
  assert.ok(Math.abs(r.regularizer - m.modelKappa()!) <= 1e-3 * m.modelKappa()!, `κ̃ ${r.regularizer} vs κ ${m.modelKappa()}`);
  assert.ok(Math.abs(r.loss - (r.taskLoss + 1e-3 * r.regularizer)) <= 1e-5 * r.loss);
  // Same start, α = 0 vs α > 0: different weights after one step.
  const twin = (alpha: number) => {
    const t = newModel(config({ model: { experts: 3, dModel: 6 }, seed: 4 }));
    t.measure(new Set(), new Set());
    t.trainStep(b, { alpha, trainable: [0, 1, 2], pruned: new Set() });
    const w = t.unitWeights(0);
    t.dispose();
    return w;
  };
  assert.ok(maxAbs(twin(0)[3], twin(0.5)[3]) > 0);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('spectral-norm L_f is Π_l ‖W_v‖·‖W_o‖ of the head (shown per head); the regularizer stays κ of the model kernel', () => {
  const c = config({ model: { experts: 2 }, monitor: { lipschitz: 'spectral-norm' } });
  const m = newModel(c);
  steps(m, builtin, 2);
  let stats = m.measure(new Set(), new Set());
  for (let i = 0; i < 30; i++) stats = m.measure(new Set(), new Set()); // power iteration converges across measurements
  const sigma = (w: ArrayLike<number>, rows: number, cols: number) => {
    const wtw = new Float64Array(cols * cols);
    for (let a = 0; a < cols; a++) for (let b = 0; b < cols; b++) for (let r = 0; r < rows; r++) wtw[a * cols + b] += w[r * cols + a] * w[r * cols + b];
    return Math.sqrt(symmetricEigen(wtw, cols).values[cols - 1]);
  };
  const lfOf = (head: (l: number) => { wv: ArrayLike<number>; wo: ArrayLike<number> }) =>
    m.heads.reduce((prod, _, l) => prod * sigma(head(l).wv, m.dModel, m.dHead) * sigma(head(l).wo, m.dHead, m.dModel), 1);
  for (let h = 0; h < m.units; h++) {
    const expected = lfOf((l) => ({ wv: m.heads[l][h].wv.dataSync(), wo: m.heads[l][h].wo.dataSync() }));
    assert.ok(Math.abs(stats[h].lf! - expected) <= 1e-6 * expected, `head ${h}: ${stats[h].lf} vs ${expected}`);
    const kappa = stats[h].lf! / (stats[h].mu! + 1e-6 * stats[h].lf!);
    assert.ok(Math.abs(stats[h].kappa! - kappa) <= 1e-9 * kappa);
  }
  const b = trainBatch(builtin, 3, 16);
  const r = m.trainStep(b, { alpha: 1e-3, trainable: [0, 1], pruned: new Set() });
  assert.ok(Math.abs(r.regularizer - m.modelKappa()!) <= 1e-3 * m.modelKappa()!, `κ̃ ${r.regularizer} vs model κ ${m.modelKappa()}`);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('getState/setState round trip continues training with the same losses', async () => {
  const c = (seed: number, model: object = {}) => config({ model: { experts: 3, dModel: 6, ...model }, seed });
  const a = newModel(c(5));
  steps(a, builtin, 2, { trainable: [0, 2] }); // head 1 frozen at first: its Adam starts later
  steps(a, builtin, 2, { from: 2 });
  const state = await a.getState();
  assert.deepEqual(Object.keys(state.optimizers).sort(), ['head0', 'head1', 'head2', 'shared']);
  assert.equal(state.optimizers.head1[0].data[0], 2, 'head 1 took 2 Adam steps');
  const b = newModel(c(99));
  await b.setState(state);
  const la = steps(a, builtin, 3, { from: 7 });
  const lb = steps(b, builtin, 3, { from: 7 });
  // Equal up to float32 rounding: Adam.setWeights recomputes β^t by pow() where training multiplied.
  la.forEach((l, i) => assert.ok(Math.abs(l - lb[i]) <= 1e-6 * Math.abs(l), `step ${i}: ${l} vs ${lb[i]}`));
  for (let h = 0; h < 3; h++) a.unitWeights(h).forEach((w, k) => assert.ok(maxAbs(w, b.unitWeights(h)[k]) <= 1e-6));
  const fresh = newModel(c(99));
  assert.ok(steps(fresh, builtin, 1, { from: 7 })[0] !== la[0], 'the restore is not vacuous');
  const other = newModel(c(5, { hiddenUnits: 5 }));
  await assert.rejects(other.setState(state), /does not fit/);
  for (const m of [a, b, fresh, other]) m.dispose();
});

test('config checks: dModel must split into the heads, and text data is refused', () => {
  const c = config({ model: { experts: 2, dModel: 4 } });
  assert.throws(() => new BertEncoder(tf, { ...c, model: { ...c.model, dModel: 5 } }, builtin), /multiple of the 2 attention heads/);
  assert.throws(() => new BertEncoder(tf, c, { ...builtin, kind: 'text' }), /classifies images/);
});

// Needs Debian's dataset-fashion-mnist (.ci/run installs it).
test('28×28 Fashion-MNIST (Debian dataset-fashion-mnist): 28 row tokens + [CLS]; trains, measures, evaluates', () => {
  const data = imageTaskData(loadFashionMnist(DEFAULT_FASHION_MNIST_PATH, 2000, 300));
  assert.deepEqual([data.rows, data.cols, data.features], [28, 28, 784]);
  const m = newModel(config({ model: { experts: 2, dModel: 8, layers: 1, hiddenUnits: 8 }, learningRate: 0.01 }), data);
  assert.deepEqual(m.embedding.pos.shape, [29, 8]);
  const losses = steps(m, data, 40, { batch: 32 });
  const stats = m.measure(new Set(), new Set());
  assert.ok(stats.every((s) => s.lf! >= s.mu! && s.mu! >= 0 && s.kappa! >= 1 / (1 + 1e-6)));
  const accuracy = m.evaluate(data, 'test', new Set());
  console.log(`bert 28×28 H=2 d=8 L=1, 40 steps of 32: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}, test accuracy ${accuracy}`);
  assert.ok(accuracy > 0.3, `accuracy ${accuracy}`);
  m.dispose();
});
