// The `vgg` family on real TF.js (cpu backend): twice-differentiable conv/pool, channel groups as units
// (pruning, freezing), tangent kernels and the regularizer's gradient against a float64 reference net
// by finite differences, checkpoint state, and both image sizes (14×14 built-in, 28×28 Fashion-MNIST).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_FASHION_MNIST_PATH, parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { conditioning, outputDirections, symmetricEigen } from '../../src/trainer/pl';
import { loadBuiltin, loadFashionMnist, type Dataset } from '../../src/trainer/data';
import { twiceDifferentiableOps, VggNet } from '../../src/trainer/models/vgg';
import type { Batch, TaskData } from '../../src/trainer/models/types';
import { mulberry32 } from '../support/prng';
import { centralDifference, randomArray, relativeFrobenius } from '../support/linalg';

let builtin: TaskData;
before(async () => {
  await tf.setBackend('cpu');
  builtin = taskData(loadBuiltin(), 14, 14);
});

function taskData(ds: Dataset, rows: number, cols: number): TaskData {
  const f = ds.features;
  return {
    name: ds.name,
    kind: 'images',
    taskMetric: 'accuracy',
    trainSize: ds.train.n,
    testSize: ds.test.n,
    features: f,
    rows,
    cols,
    classes: ds.classes,
    batch(t, split, indices) {
      const s = split === 'train' ? ds.train : ds.test;
      const x = new Float32Array(indices.length * f);
      const labels = new Int32Array(indices.length);
      for (let k = 0; k < indices.length; k++) {
        x.set(s.x.subarray(indices[k] * f, (indices[k] + 1) * f), k * f);
        labels[k] = s.labels[indices[k]];
      }
      return t.tidy(() => ({ x: t.tensor2d(x, [indices.length, f]), y: t.oneHot(t.tensor1d(labels, 'int32'), ds.classes).toFloat(), size: indices.length }));
    },
  };
}

function config(over: { model?: object; monitor?: object; [k: string]: unknown } = {}): TrainingConfig {
  const { model, monitor, ...rest } = over;
  const r = parseTrainingConfig({ model: { family: 'vgg', experts: 2, hiddenUnits: 2, layers: 2, ...model }, learningRate: 0.01, monitor: { probeSize: 4, ...monitor }, ...rest });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, k) => from + k);
const trainBatch = (data: TaskData, i: number, b: number): Batch => data.batch(tf, 'train', range((i * b) % (data.trainSize - b), b));
const all = (m: VggNet) => Array.from({ length: m.units }, (_, g) => g);

function newModel(c: TrainingConfig, data = builtin, probe = c.monitor.probeSize): VggNet {
  const m = new VggNet(tf, c, data);
  m.setProbe(data.batch(tf, 'train', range(0, probe)));
  return m;
}

function steps(m: VggNet, data: TaskData, n: number, o: { alpha?: number; trainable?: number[]; pruned?: Set<number>; measure?: boolean; from?: number; batch?: number } = {}) {
  const losses: number[] = [];
  for (let i = 0; i < n; i++) {
    const b = trainBatch(data, (o.from ?? 0) + i, o.batch ?? 16);
    losses.push(m.trainStep(b, { alpha: o.alpha ?? 0, trainable: o.trainable ?? all(m), pruned: o.pruned ?? new Set() }).loss);
    tf.dispose([b.x, b.y]);
    if (o.measure) m.measure(new Set(all(m).filter((g) => !(o.trainable ?? all(m)).includes(g))), o.pruned ?? new Set());
  }
  return losses;
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => Math.max(s, Math.abs(v - b[i])), 0);

test('conv and pool: same values as tf.conv2d / tf.maxPool, same gradients, and a second derivative on cpu and wasm alike', async () => {
  const ops = twiceDifferentiableOps(tf);
  const x = tf.randomNormal([2, 7, 6, 3], 0, 1, 'float32', 1) as tf.Tensor4D; // odd height: the pool drops the last row
  const w = tf.randomNormal([3, 3, 3, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
  const ours = (xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.square(ops.maxPool2(tf.relu(ops.convSame(xx as tf.Tensor4D, ww as tf.Tensor4D)))));
  const builtinOps = (xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.square(tf.maxPool(tf.relu(tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, 1, 'same')), 2, 2, 'valid')));
  assert.ok(maxAbs(ops.convSame(x, w).dataSync(), tf.conv2d(x, w, 1, 'same').dataSync()) <= 1e-5);
  const pooled = tf.relu(tf.conv2d(x, w, 1, 'same')) as tf.Tensor4D;
  assert.deepEqual(ops.maxPool2(pooled).shape, [2, 3, 3, 4]);
  assert.deepEqual(ops.maxPool2(pooled).dataSync(), tf.maxPool(pooled, 2, 2, 'valid').dataSync());
  const [gx, gw] = tf.grads(ours)([x, w]);
  const [bx, bw] = tf.grads(builtinOps)([x, w]);
  assert.ok(maxAbs(gx.dataSync(), bx.dataSync()) <= 1e-4 * Math.max(...Array.from(bx.dataSync(), Math.abs)));
  assert.ok(maxAbs(gw.dataSync(), bw.dataSync()) <= 1e-4 * Math.max(...Array.from(bw.dataSync(), Math.abs)));
  // tf.conv2d/tf.maxPool cannot do this at all in tfjs 4.22: no gradient for Conv2DBackpropFilter /
  // MaxPoolGrad. (Should a tfjs upgrade add them, this line fails, and the custom ops may be simplified.)
  const secondOrder = (f: typeof ours) => tf.grads((ww: tf.Tensor) => tf.sum(tf.square(tf.grads((w2: tf.Tensor) => f(x, w2))([ww])[0])))([w])[0];
  assert.throws(() => secondOrder(builtinOps), /gradient function not found/);
  const onCpu = Float32Array.from(secondOrder(ours).dataSync());
  // The same on wasm, whose OneHot kernel ignores a float32 dtype and which has no Conv2DBackpropFilter.
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  try {
    const onWasm = Float32Array.from(secondOrder(ours).dataSync());
    assert.ok(maxAbs(onWasm, onCpu) <= 1e-4 * Math.max(...Array.from(onCpu, Math.abs)), 'wasm and cpu agree on the second derivative');
  } finally {
    await tf.setBackend('cpu');
  }
  // (Its correctness against finite differences is checked on the model below.)
  tf.dispose([x, w, pooled, gx, gw, bx, bw]);
});

test('training on the built-in 14×14 data beats chance clearly', () => {
  const m = newModel(config({ model: { experts: 2, hiddenUnits: 3 }, learningRate: 0.02 }));
  const losses = steps(m, builtin, 120, { batch: 32 });
  const accuracy = m.evaluate(builtin, 'test', new Set());
  console.log(`vgg G=2 c=3, 120 steps of 32: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}, test accuracy ${accuracy}`);
  assert.ok(accuracy > 0.55, `test accuracy ${accuracy} (chance 0.1)`);
  m.dispose();
});

test('a pruned group does not reach the logits: perturbing its weights leaves them bit-identical', () => {
  const m = newModel(config({ model: { experts: 3 } }));
  steps(m, builtin, 2);
  const b = trainBatch(builtin, 9, 16);
  const logits = (pruned: Set<number>) => Float32Array.from(tf.tidy(() => m.logits(b.x, pruned).dataSync()));
  const full = logits(new Set());
  const prunedOne = logits(new Set([1]));
  assert.ok(maxAbs(full, prunedOne) > 1e-3, 'pruning group 1 changes the output');
  for (const v of m.groupVars(1)) v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 1, 'float32', 7)));
  assert.deepEqual(logits(new Set([1])), prunedOne);
  assert.ok(maxAbs(logits(new Set()), full) > 1e-3, 'the perturbation is real');
  // Training with it pruned leaves it alone, even if it is (wrongly) listed as trainable.
  const before = m.unitWeights(1);
  m.trainStep(b, { alpha: 0, trainable: [0, 1, 2], pruned: new Set([1]) });
  m.unitWeights(1).forEach((w, k) => assert.deepEqual(w, before[k]));
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('frozen groups keep bit-identical weights while the others train with the regularizer on', () => {
  const m = newModel(config({ model: { experts: 3 } }));
  const before = all(m).map((g) => m.unitWeights(g));
  m.measure(new Set([1]), new Set());
  const losses = steps(m, builtin, 3, { alpha: 0.05, trainable: [0, 2], measure: true });
  assert.ok(losses.every(Number.isFinite));
  const after = all(m).map((g) => m.unitWeights(g));
  after[1].forEach((w, k) => assert.deepEqual(w, before[1][k], 'frozen group unchanged, bit for bit'));
  for (const g of [0, 2]) assert.ok(after[g].some((w, k) => maxAbs(w, before[g][k]) > 0), `group ${g} trained`);
  m.dispose();
});

// ---- float64 reference: the same network in plain loops ----

interface RefNet {
  rows: number;
  cols: number;
  groups: number;
  c: number;
  classes: number;
  /** conv[l][g] = [w (3·3·cin·c, [i][j][ci][k]), b (c)] */
  conv: [Float64Array, Float64Array][][];
  dense: [Float64Array, Float64Array];
}

function refOf(m: VggNet): RefNet {
  return {
    rows: m.rows,
    cols: m.cols,
    groups: m.units,
    c: m.channelsPerGroup,
    classes: m.classes,
    conv: m.layers.map((layer) => layer.map((p) => [Float64Array.from(p.w.dataSync()), Float64Array.from(p.b.dataSync())])),
    dense: [Float64Array.from(m.denseW.dataSync()), Float64Array.from(m.denseB.dataSync())],
  };
}

interface RefLayer {
  input: Float64Array;
  H: number;
  W: number;
  cin: number;
  pre: Float64Array; // H·W·C pre-activations (0 for a pruned group's channels)
  argmax: Int32Array; // per pooled value, the index into pre of the first maximum of its window
}

function refForward(net: RefNet, x: ArrayLike<number>, pruned: ReadonlySet<number>): { layers: RefLayer[]; flat: Float64Array; logits: Float64Array } {
  let [H, W, cin] = [net.rows, net.cols, 1];
  let h = Float64Array.from(x);
  const C = net.groups * net.c;
  const layers: RefLayer[] = [];
  for (const layer of net.conv) {
    const pre = new Float64Array(H * W * C);
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        layer.forEach(([w, b], g) => {
          if (pruned.has(g)) return;
          for (let k = 0; k < net.c; k++) {
            let s = b[k];
            for (let i = 0; i < 3; i++) {
              const yy = y + i - 1;
              if (yy < 0 || yy >= H) continue;
              for (let j = 0; j < 3; j++) {
                const xj = xx + j - 1;
                if (xj < 0 || xj >= W) continue;
                for (let ci = 0; ci < cin; ci++) s += h[(yy * W + xj) * cin + ci] * w[((i * 3 + j) * cin + ci) * net.c + k];
              }
            }
            pre[(y * W + xx) * C + g * net.c + k] = s;
          }
        });
      }
    }
    const [H2, W2] = [Math.floor(H / 2), Math.floor(W / 2)];
    const pooled = new Float64Array(H2 * W2 * C);
    const argmax = new Int32Array(H2 * W2 * C);
    for (let y = 0; y < H2; y++) {
      for (let xx = 0; xx < W2; xx++) {
        for (let ch = 0; ch < C; ch++) {
          let best = -1;
          for (const [dy, dx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) {
            const at = ((2 * y + dy) * W + 2 * xx + dx) * C + ch;
            if (best < 0 || Math.max(pre[at], 0) > Math.max(pre[best], 0)) best = at;
          }
          pooled[(y * W2 + xx) * C + ch] = Math.max(pre[best], 0);
          argmax[(y * W2 + xx) * C + ch] = best;
        }
      }
    }
    layers.push({ input: h, H, W, cin, pre, argmax });
    [h, H, W, cin] = [pooled, H2, W2, C];
  }
  const [dw, db] = net.dense;
  const logits = Float64Array.from(db);
  for (let f = 0; f < h.length; f++) for (let k = 0; k < net.classes; k++) logits[k] += h[f] * dw[f * net.classes + k];
  return { layers, flat: h, logits };
}

const refLogits = (net: RefNet, x: ArrayLike<number>, pruned: ReadonlySet<number>) => refForward(net, x, pruned).logits;

/** ∇_{θ_g} of dzᵀ·logits(x) by a hand-written float64 backward pass, in groupVars order (w0, b0, w1, b1, …). */
function refBackward(net: RefNet, x: ArrayLike<number>, dz: ArrayLike<number>, g: number, pruned: ReadonlySet<number>): Float64Array[] {
  const { layers } = refForward(net, x, pruned);
  const C = net.groups * net.c;
  const [dw] = net.dense;
  const last = layers.at(-1)!;
  let dOut = new Float64Array(last.argmax.length); // gradient w.r.t. the last pooled map
  for (let f = 0; f < dOut.length; f++) for (let k = 0; k < net.classes; k++) dOut[f] += dw[f * net.classes + k] * dz[k];
  const grads: Float64Array[] = [];
  for (let l = layers.length - 1; l >= 0; l--) {
    const { input, H, W, cin, pre, argmax } = layers[l];
    const dPre = new Float64Array(pre.length);
    for (let p = 0; p < argmax.length; p++) if (pre[argmax[p]] > 0) dPre[argmax[p]] += dOut[p];
    const [w] = net.conv[l][g];
    const gw = new Float64Array(w.length);
    const gb = new Float64Array(net.c);
    const dIn = new Float64Array(input.length);
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        for (let gg = 0; gg < net.groups; gg++) {
          if (pruned.has(gg)) continue;
          const [wg] = net.conv[l][gg];
          for (let k = 0; k < net.c; k++) {
            const d = dPre[(y * W + xx) * C + gg * net.c + k];
            if (d === 0) continue;
            if (gg === g) gb[k] += d;
            for (let i = 0; i < 3; i++) {
              const yy = y + i - 1;
              if (yy < 0 || yy >= H) continue;
              for (let j = 0; j < 3; j++) {
                const xj = xx + j - 1;
                if (xj < 0 || xj >= W) continue;
                for (let ci = 0; ci < cin; ci++) {
                  const wi = ((i * 3 + j) * cin + ci) * net.c + k;
                  if (gg === g) gw[wi] += input[(yy * W + xj) * cin + ci] * d;
                  dIn[(yy * W + xj) * cin + ci] += wg[wi] * d;
                }
              }
            }
          }
        }
      }
    }
    grads.unshift(gw, gb);
    dOut = dIn;
  }
  return grads;
}

/** ∇_{θ_g} F for F = Σ_i weight_i·u_iᵀ logits(x_i), flattened, by the float64 backward pass. */
function refGroupGradientExact(net: RefNet, g: number, xs: Float32Array, u: Float64Array, weight: ArrayLike<number>, pruned: ReadonlySet<number>): Float64Array {
  const d = net.rows * net.cols;
  let total: Float64Array | undefined;
  for (let i = 0; i < weight.length; i++) {
    const dz = Array.from({ length: net.classes }, (_, k) => weight[i] * u[i * net.classes + k]);
    const flat = Float64Array.from(refBackward(net, xs.subarray(i * d, (i + 1) * d), dz, g, pruned).flatMap((a) => Array.from(a)));
    if (!total) total = flat;
    else for (let k = 0; k < flat.length; k++) total[k] += flat[k];
  }
  return total!;
}

/** F = Σ_i weight_i·s_i with s_i = u_iᵀ logits(x_i). */
function refWeightedOutput(net: RefNet, xs: Float32Array, u: Float64Array, weight: ArrayLike<number>, pruned: ReadonlySet<number>): number {
  const d = net.rows * net.cols;
  let F = 0;
  for (let i = 0; i < weight.length; i++) {
    if (weight[i] === 0) continue;
    const z = refLogits(net, xs.subarray(i * d, (i + 1) * d), pruned);
    for (let k = 0; k < net.classes; k++) F += weight[i] * u[i * net.classes + k] * z[k];
  }
  return F;
}

/** The parameters of group g in groupVars order (w0, b0, w1, b1, …): views into the reference net. */
const groupParams = (net: RefNet, g: number) => net.conv.flatMap((layer) => layer[g]);

/** ∇_{θ_g} F by central differences (F is linear in each single parameter between ReLU/pool switches, so
 * only round-off limits the step from below). */
function refGroupGradient(net: RefNet, g: number, F: () => number, step: number): Float64Array {
  const params = groupParams(net, g);
  const grad = new Float64Array(params.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of params) for (let k = 0; k < p.length; k++, at++) grad[at] = centralDifference(p, k, step, F);
  return grad;
}

/**
 * A generic point for finite differences: after a few Adam steps some biases sit within float32 noise of
 * zero (±lr moves that cancel), and a background pre-activation equals its bias, so it would sit on a
 * ReLU kink. Random biases move every such pre-activation off it.
 */
function genericBiases(m: VggNet, seed: number): void {
  m.layers.flat().forEach((p, k) => p.b.assign(tf.randomUniform(p.b.shape, 0.02, 0.1, 'float32', seed + k).mul(tf.sign(tf.randomNormal(p.b.shape, 0, 1, 'float32', seed + 100 + k)))));
}

/** Probe inputs and the output directions u the model used at its last measure (recomputed the same way). */
function probeAndDirections(m: VggNet, probe: Batch, pruned: ReadonlySet<number>) {
  const n = probe.size;
  const logProbs = tf.tidy(() => tf.logSoftmax(m.logits(probe.x, pruned)).dataSync());
  return { xs: Float32Array.from(probe.x.dataSync()), u: outputDirections(logProbs, probe.y.dataSync(), n, m.classes), n };
}

/** The gradient tests' start: two groups, probe 4, three plain steps, generic biases (seeded), measured. */
function measuredPair(biasSeed: number) {
  const c = config({ model: { experts: 2 }, monitor: { probeSize: 4 } });
  const m = newModel(c);
  steps(m, builtin, 3);
  genericBiases(m, biasSeed);
  const probe = builtin.batch(tf, 'train', range(0, 4));
  m.measure(new Set(), new Set());
  return { c, m, probe, ...probeAndDirections(m, probe, new Set()) };
}

test('per-group tangent kernels equal J·Jᵀ of a float64 finite-difference Jacobian (pruned group: measured restored)', () => {
  const c = config({ model: { experts: 3 }, monitor: { probeSize: 5 } });
  const m = newModel(c);
  steps(m, builtin, 3);
  genericBiases(m, 30);
  const probe = builtin.batch(tf, 'train', range(0, 5));
  const pruned = new Set([1]);
  const stats = m.measure(new Set(), pruned);
  const kernels = m.unitKernels(pruned);
  const { xs, u, n } = probeAndDirections(m, probe, pruned);
  const net = refOf(m);
  let worst = 0;
  for (let g = 0; g < m.units; g++) {
    const seen = g === 1 ? new Set<number>() : pruned; // the pruned group's own kernel is taken with it restored
    const rows = Array.from({ length: n }, (_, i) => {
      const weight = Array.from({ length: n }, (_, k) => (k === i ? 1 : 0));
      const F = () => refWeightedOutput(net, xs, u, weight, seen);
      const coarse = refGroupGradient(net, g, F, 1e-6);
      const fine = refGroupGradient(net, g, F, 1e-7);
      const scale = Math.max(1e-3, ...Array.from(fine, Math.abs));
      assert.ok(maxAbs(coarse, fine) <= 1e-5 * scale, `no switch crossed within the step (group ${g}, example ${i}): ${maxAbs(coarse, fine)}`);
      // The hand-written backward pass the regularizer test relies on agrees with the differences.
      assert.ok(maxAbs(refGroupGradientExact(net, g, xs, u, weight, seen), fine) <= 1e-5 * scale, 'float64 backward pass');
      return fine;
    });
    const p = rows[0].length;
    const K = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) K[i * n + j] = rows[i].reduce((s, v, k) => s + v * rows[j][k], 0);
    const err = relativeFrobenius(kernels[g], K);
    worst = Math.max(worst, err);
    assert.ok(err <= 1e-3, `group ${g}: relative error ${err}`);
    assert.ok(p > n, 'more parameters than probe examples');
    if (pruned.has(g)) {
      assert.deepEqual([stats[g].served, stats[g].kappa, stats[g].share], [0, null, 0], 'a pruned group serves nothing');
      continue;
    }
    const { values } = symmetricEigen(K, n);
    assert.ok(Math.abs(stats[g].lf! - values[n - 1]) <= 1e-3 * values[n - 1], `group ${g}: L_f ${stats[g].lf} vs ${values[n - 1]}`);
  }
  console.log(`vgg kernel vs float64 finite differences: worst relative Frobenius error ${worst.toExponential(2)}`);
  assert.deepEqual(stats.map((s) => s.pruned), [false, true, false]);
  tf.dispose([probe.x, probe.y]);
  m.dispose();
});

test('the regularizer\'s gradient: ∇(vᵀK_g v) by nested tf gradients matches float64 central differences', () => {
  const { m, probe, xs, u, n } = measuredPair(50);
  const rnd = mulberry32(11);
  const v = randomArray(rnd, n);
  const g = 0;
  // The model: vᵀK_g v and its gradient w.r.t. every variable (K_g depends on the whole network).
  const vars = [...m.groupVars(0), ...m.groupVars(1), m.denseW, m.denseB];
  const { value, grads } = tf.variableGrads(() => m.rayleighTf(g, v, new Set()), vars);
  const net = refOf(m);
  // q = vᵀK_g v = ‖∇_{θ_g} Σ_i v_i s_i‖², with the inner gradient exact (float64 backward pass), so one
  // level of central differences remains; q is quadratic in any single parameter between switches.
  const q = () => refGroupGradientExact(net, g, xs, u, v, new Set()).reduce((s, d) => s + d * d, 0);
  const q0 = q();
  assert.ok(Math.abs(value.dataSync()[0] - q0) <= 1e-4 * q0, `vᵀKv ${value.dataSync()[0]} vs ${q0}`);
  // Every variable: group 0's own, group 1's (they feed group 0's second layer) and the dense layer's.
  const refArrays = [...groupParams(net, 0), ...groupParams(net, 1), ...net.dense];
  let worst = 0;
  let checked = 0;
  let nonzero = 0;
  refArrays.forEach((arr, a) => {
    const got = grads[vars[a].name]?.dataSync() ?? new Float32Array(arr.length); // absent: no path at all (the dense bias)
    const rms = Math.sqrt(Array.from(got).reduce((s, x) => s + x * x, 0) / got.length);
    // The two largest entries of tf's gradient (the finite differences are independent of that choice)
    // and one at random, which may be structurally zero (both must then say 0).
    const byMagnitude = Array.from(got.keys()).sort((i, j) => Math.abs(got[j]) - Math.abs(got[i]));
    for (const k of new Set([byMagnitude[0], byMagnitude[1], Math.floor(rnd() * arr.length)])) {
      const fd = (step: number) => centralDifference(arr, k, step, q);
      const coarse = fd(1e-5);
      const fine = fd(1e-6);
      const scale = Math.max(Math.abs(fine), rms, 1e-12); // the last conv layer's bias does not enter K: both are 0
      assert.ok(Math.abs(coarse - fine) <= 1e-5 * scale, `no switch crossed (${vars[a].name}[${k}])`);
      const err = Math.abs(got[k] - fine) / scale;
      worst = Math.max(worst, err);
      checked++;
      if (Math.abs(fine) > 1e-6 * Math.max(rms, 1e-12)) nonzero++;
      assert.ok(err <= 1e-3, `${vars[a].name}[${k}]: tf ${got[k]} vs fd ${fine} (rms ${rms})`);
    }
  });
  console.log(`vgg ∇(vᵀKv) vs float64 central differences: ${checked} coordinates (${nonzero} non-zero), worst relative error ${worst.toExponential(2)}`);
  assert.ok(nonzero >= 14, `only ${nonzero} coordinates with a non-zero derivative`);
  tf.dispose([value, ...Object.values(grads), probe.x, probe.y]);
  m.dispose();
});

test('the step\'s regularizer: ∇κ̃ of Σ_g K_g + U·Uᵀ (modelKappaTf) matches float64 central differences of its κ, u following the weights', () => {
  const { c, m, probe, xs, u: measuredU, n } = measuredPair(70);
  const net = refOf(m);
  const oneHot = probe.y.dataSync();
  const d = net.rows * net.cols;
  const cls = net.classes;
  // u from the float64 reference's logits, recomputed at every perturbation (the regularizer follows u).
  const directions = () => {
    const logProbs = new Float64Array(n * cls);
    for (let i = 0; i < n; i++) {
      const z = refLogits(net, xs.subarray(i * d, (i + 1) * d), new Set());
      const top = Math.max(...z);
      const lse = top + Math.log(z.reduce((a, v) => a + Math.exp(v - top), 0));
      z.forEach((v, k) => (logProbs[i * cls + k] = v - lse));
    }
    return outputDirections(logProbs, oneHot, n, cls);
  };
  assert.ok(maxAbs(directions(), measuredU) <= 1e-5, 'the reference computes the model\'s u');
  // κ of Σ_g J_g·J_gᵀ + U·Uᵀ, rows of J_g from the exact float64 backward pass (one example each).
  const kappa = () => {
    const u = directions();
    const K = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < cls; k++) K[i * n + j] += u[i * cls + k] * u[j * cls + k];
    for (let g = 0; g < m.units; g++) {
      const rows = Array.from({ length: n }, (_, i) => refGroupGradientExact(net, g, xs, u, Array.from({ length: n }, (_, k) => (k === i ? 1 : 0)), new Set()));
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) K[i * n + j] += rows[i].reduce((a, v, k) => a + v * rows[j][k], 0);
    }
    return conditioning(K, n, c.monitor.damping).kappa;
  };
  const at = kappa();
  assert.ok(Math.abs(m.modelKappa()! - at) <= 1e-3 * at, `measured κ ${m.modelKappa()} vs float64 ${at}`);
  const vars = [...m.groupVars(0), ...m.groupVars(1), m.denseW, m.denseB];
  const { value, grads } = tf.variableGrads(() => m.modelKappaTf([0, 1], new Set()), vars);
  assert.ok(Math.abs(value.dataSync()[0] - at) <= 1e-3 * at, `κ̃ ${value.dataSync()[0]} vs κ ${at}`);
  const refArrays = [...groupParams(net, 0), ...groupParams(net, 1), ...net.dense];
  const rnd = mulberry32(5);
  let [worst, checked, nonzero] = [0, 0, 0];
  refArrays.forEach((arr, a) => {
    const got = grads[vars[a].name]?.dataSync() ?? new Float32Array(arr.length);
    const rms = Math.sqrt(Array.from(got).reduce((s2, x) => s2 + x * x, 0) / got.length);
    const byMagnitude = Array.from(got.keys()).sort((i, j) => Math.abs(got[j]) - Math.abs(got[i]));
    for (const k of new Set([byMagnitude[0], Math.floor(rnd() * arr.length)])) {
      const fd = (step: number) => centralDifference(arr, k, step, kappa);
      const coarse = fd(1e-4);
      const fine = fd(5e-5);
      const scale = Math.max(Math.abs(fine), rms, 1e-9);
      assert.ok(Math.abs(coarse - fine) <= 1e-3 * scale, `no switch crossed (${vars[a].name}[${k}]): ${coarse} vs ${fine}`);
      const err = Math.abs(got[k] - fine) / scale;
      worst = Math.max(worst, err);
      checked++;
      if (Math.abs(fine) > 1e-6 * scale) nonzero++;
      assert.ok(err <= 2e-3, `${vars[a].name}[${k}]: tf ${got[k]} vs fd ${fine} (rms ${rms})`);
    }
  });
  console.log(`vgg ∇κ̃ (u following) vs float64 central differences of κ: ${checked} coordinates (${nonzero} non-zero), worst relative error ${worst.toExponential(2)}`);
  assert.ok(nonzero >= 10, `only ${nonzero} coordinates with a non-zero derivative`);
  tf.dispose([value, ...Object.values(grads), probe.x, probe.y]);
  m.dispose();
});

test('the reported regularizer is κ̃ of the model kernel Σ_g K_g + U·Uᵀ, equal to its measured κ at fresh eigenvectors; shares are tr(K_g)/Σ tr', () => {
  const m = newModel(config({ model: { experts: 3 }, monitor: { probeSize: 4 } }));
  steps(m, builtin, 2);
  const stats = m.measure(new Set(), new Set());
  const kernels = m.unitKernels(new Set());
  const tr = kernels.map((K) => [0, 1, 2, 3].reduce((a, i) => a + K[i * 4 + i], 0));
  stats.forEach((st, g) => assert.ok(Math.abs(st.share! - tr[g] / (tr[0] + tr[1] + tr[2])) <= 1e-12, `group ${g} share`));
  const b = trainBatch(builtin, 5, 16);
  const r = m.trainStep(b, { alpha: 1e-3, trainable: [0, 1, 2], pruned: new Set() });
  assert.ok(Math.abs(r.regularizer - m.modelKappa()!) <= 1e-3 * m.modelKappa()!, `κ̃ ${r.regularizer} vs κ ${m.modelKappa()}`);
  assert.ok(Math.abs(r.loss - (r.taskLoss + 1e-3 * r.regularizer)) <= 1e-5 * r.loss);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('the regularizer acts: with α > 0 the model κ ends far below the α = 0 run from the same start', () => {
  const run = (alpha: number) => {
    const m = newModel(config({ monitor: { probeSize: 6 }, seed: 2 }));
    m.measure(new Set(), new Set());
    const k0 = m.meanKappa([0, 1]);
    steps(m, builtin, 12, { alpha, measure: true });
    const k = m.meanKappa([0, 1]);
    m.dispose();
    return { k0, k };
  };
  const plain = run(0);
  const regularized = run(0.1);
  console.log(`vgg mean κ after 12 steps: α = 0: ${plain.k0.toFixed(1)} → ${plain.k.toFixed(1)}; α = 0.1: → ${regularized.k.toFixed(1)}`);
  assert.equal(plain.k0, regularized.k0, 'same start');
  assert.ok(regularized.k < 0.5 * plain.k, `mean κ with α: ${regularized.k} vs without: ${plain.k}`);
});

test('spectral-norm L_f is the product of the reshaped conv kernels\' largest singular values', () => {
  const m = newModel(config({ model: { experts: 2 }, monitor: { probeSize: 4, lipschitz: 'spectral-norm' } }));
  steps(m, builtin, 2);
  let stats = m.measure(new Set(), new Set());
  for (let i = 0; i < 30; i++) stats = m.measure(new Set(), new Set()); // power iteration converges across measurements
  for (let g = 0; g < m.units; g++) {
    // σ_max² = λ_max(WᵀW) of each (9·cin × c) kernel, exactly.
    const expected = m.layers.reduce((prod, layer) => {
      const w = layer[g].w.dataSync();
      const cols = m.channelsPerGroup;
      const rows = w.length / cols;
      const wtw = new Float64Array(cols * cols);
      for (let a = 0; a < cols; a++) for (let b = 0; b < cols; b++) for (let r = 0; r < rows; r++) wtw[a * cols + b] += w[r * cols + a] * w[r * cols + b];
      return prod * Math.sqrt(symmetricEigen(wtw, cols).values[cols - 1]);
    }, 1);
    assert.ok(Math.abs(stats[g].lf! - expected) <= 1e-6 * expected, `group ${g}: ${stats[g].lf} vs ${expected}`);
    const kappa = stats[g].lf! / (stats[g].mu! + 1e-6 * stats[g].lf!);
    assert.ok(Math.abs(stats[g].kappa! - kappa) <= 1e-9 * kappa);
  }
  // The spectral L_f is shown per group; the regularized step reports κ of the model kernel.
  const b = trainBatch(builtin, 3, 16);
  const r = m.trainStep(b, { alpha: 1e-3, trainable: [0, 1], pruned: new Set() });
  assert.ok(Math.abs(r.regularizer - m.modelKappa()!) <= 1e-3 * m.modelKappa()!, `κ̃ ${r.regularizer} vs model κ ${m.modelKappa()}`);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('getState/setState round trip continues training with the same losses', async () => {
  const a = newModel(config({ model: { experts: 3 }, seed: 5 }));
  steps(a, builtin, 2, { trainable: [0, 2] }); // group 1 frozen at first: its Adam starts later
  steps(a, builtin, 2, { from: 2 });
  const state = await a.getState();
  assert.deepEqual(Object.keys(state.optimizers).sort(), ['dense', 'group0', 'group1', 'group2']);
  assert.equal(state.optimizers.group1[0].data[0], 2, 'group 1 took 2 Adam steps');
  const b = newModel(config({ model: { experts: 3 }, seed: 99 }));
  await b.setState(state);
  const la = steps(a, builtin, 3, { from: 7 });
  const lb = steps(b, builtin, 3, { from: 7 });
  // Equal up to float32 rounding: Adam.setWeights recomputes β^t by pow() where training multiplied.
  la.forEach((l, i) => assert.ok(Math.abs(l - lb[i]) <= 1e-6 * Math.abs(l), `step ${i}: ${l} vs ${lb[i]}`));
  for (let g = 0; g < 3; g++) a.unitWeights(g).forEach((w, k) => assert.ok(maxAbs(w, b.unitWeights(g)[k]) <= 1e-6));
  const fresh = newModel(config({ model: { experts: 3 }, seed: 99 }));
  assert.ok(steps(fresh, builtin, 1, { from: 7 })[0] !== la[0], 'the restore is not vacuous');
  await assert.rejects(newModel(config({ model: { experts: 3, hiddenUnits: 3 } })).setState(state), /does not fit/);
  for (const m of [a, b, fresh]) m.dispose();
});

// Needs Debian's dataset-fashion-mnist (.ci/run installs it).
test('28×28 Fashion-MNIST (Debian dataset-fashion-mnist): trains, measures, evaluates', () => {
  const full = loadFashionMnist(DEFAULT_FASHION_MNIST_PATH, 2000, 300);
  const data = taskData(full, 28, 28);
  assert.equal(data.features, 784);
  const m = newModel(config({ learningRate: 0.02 }), data);
  assert.deepEqual(m.denseW.shape, [7 * 7 * 4, 10]);
  const losses = steps(m, data, 25, { batch: 32 });
  const stats = m.measure(new Set(), new Set());
  assert.ok(stats.every((s) => s.lf! >= s.mu! && s.mu! >= 0 && s.kappa! >= 1 / (1 + 1e-6)));
  const accuracy = m.evaluate(data, 'test', new Set());
  console.log(`vgg 28×28 G=2 c=2, 25 steps of 32: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}, test accuracy ${accuracy}`);
  assert.ok(accuracy > 0.3, `accuracy ${accuracy}`);
  m.dispose();
  // And three blocks on 28×28 (28 → 14 → 7 → 3), while too many blocks are refused.
  const deep = newModel(config({ model: { layers: 3 } }), data);
  assert.deepEqual(deep.denseW.shape, [3 * 3 * 4, 10]);
  deep.dispose();
  assert.throws(() => new VggNet(tf, config({ model: { layers: 5 } }), data), /pool a 28×28 image away/);
});
