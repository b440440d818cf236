// The `switch-transformer` family on real TF.js (cpu backend, small dims): honest top-1 dispatch
// against a float64 recomputation, the router's gradient through p_top, pruning and freezing, the
// per-expert tangent kernels against per-sample gradients and the float64 closed form, the
// regularizer, spectral-norm L_f, checkpoints, perplexity, and training below the unigram entropy
// of the built-in corpus.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { conditioning, perSampleKernels, scaledLogitGradients, symmetricEigen, twoLayerTangentKernel } from '../../src/trainer/pl';
import { LOAD_BALANCE_COEFFICIENT, SwitchTransformerLm, type ExpertVars } from '../../src/trainer/models/switchTransformer';
import { scaledLogitGradientsTf } from '../../src/trainer/pl';
import type { Batch } from '../../src/trainer/models/types';
import { loadTextData, textTaskData, type TextTaskData } from '../../src/trainer/textData';
import { mulberry32 } from '../support/prng';
import { centralDifference, relative, relativeFrobenius } from '../support/linalg';

let corpus: TextTaskData;
before(async () => {
  await tf.setBackend('cpu');
  corpus = loadTextData(config(), '.');
});

function config(over: { model?: object; monitor?: object; [k: string]: unknown } = {}): TrainingConfig {
  const { model, monitor, ...rest } = over;
  const r = parseTrainingConfig({
    model: { family: 'switch-transformer', experts: 4, dModel: 8, layers: 2, hiddenUnits: 8, contextLength: 8, ...model },
    data: { source: 'text' },
    learningRate: 0.01,
    monitor: { probeSize: 8, ...monitor },
    ...rest,
  });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, k) => from + k);
const all = (m: SwitchTransformerLm) => Array.from({ length: m.units }, (_, e) => e);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => Math.max(s, Math.abs(v - b[i])), 0);
const maxOf = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => Math.max(s, Math.abs(v)), 0);

function newModel(c: TrainingConfig, data: TextTaskData = corpus): SwitchTransformerLm {
  const m = new SwitchTransformerLm(tf, c, data);
  m.setProbe(data.batch(tf, 'train', range(0, c.monitor.probeSize)));
  return m;
}

interface StepsOptions {
  alpha?: number;
  trainable?: number[];
  pruned?: Set<number>;
  unitWeights?: number[];
  measure?: boolean;
  from?: number;
  batch?: number;
}

function steps(m: SwitchTransformerLm, n: number, o: StepsOptions = {}, data: TextTaskData = corpus) {
  const results = [];
  const b = o.batch ?? 8;
  for (let i = 0; i < n; i++) {
    const batch = data.batch(tf, 'train', range((((o.from ?? 0) + i) * b * 37) % (data.trainSize - b), b));
    const trainable = o.trainable ?? all(m);
    results.push(m.trainStep(batch, { alpha: o.alpha ?? 0, trainable, pruned: o.pruned ?? new Set(), unitWeights: o.unitWeights }));
    tf.dispose([batch.x, batch.y]);
    if (o.measure) m.measure(new Set(all(m).filter((e) => !trainable.includes(e))), o.pruned ?? new Set());
  }
  return results;
}

/** Float64 expert: W2ᵀ·relu(W1ᵀx + b1) + b2 for one token x (length D). */
function expert64(v: ExpertVars, x: ArrayLike<number>): Float64Array {
  const [w1, b1, w2, b2] = [v.w1, v.b1, v.w2, v.b2].map((t) => t.dataSync());
  const [D, F] = v.w1.shape;
  const hidden = Float64Array.from({ length: F }, (_, k) => {
    let s = b1[k];
    for (let a = 0; a < D; a++) s += x[a] * w1[a * F + k];
    return Math.max(s, 0);
  });
  return Float64Array.from({ length: D }, (_, o) => {
    let s = b2[o];
    for (let k = 0; k < F; k++) s += hidden[k] * w2[k * D + o];
    return s;
  });
}

const crossEntropySum = (m: SwitchTransformerLm, b: Batch) =>
  tf.mul(tf.losses.softmaxCrossEntropy(tf.cast(tf.oneHot(tf.reshape(b.y, [-1]) as tf.Tensor1D, m.vocabulary), 'float32'), m.forward(b.x, new Set()).logits), b.y.size) as tf.Scalar;

test('top-1 dispatch: each token goes to its argmax expert and gets p_top·expert(x) (float64 recomputation); a pruned expert gets no token', () => {
  const m = newModel(config());
  assert.deepEqual(m.switchBlocks, [1], 'layers = 2: the last block is the Switch layer');
  steps(m, 3);
  const b = corpus.batch(tf, 'train', range(100, 8));
  const D = m.dModel;
  const E = m.units;
  const block = m.blocks[1];
  const [wr, br] = [block.router!.w.dataSync(), block.router!.b.dataSync()];
  const check = (pruned: Set<number>) => {
    const [layer] = m.inspect(b.x, pruned).layers;
    const N = layer.expertOf.length;
    assert.equal(N, 64);
    for (let t = 0; t < N; t++) {
      const x = layer.input.subarray(t * D, (t + 1) * D);
      // Router probabilities in float64, pruned logits masked.
      const logits = Array.from({ length: E }, (_, e) => (pruned.has(e) ? -Infinity : br[e] + x.reduce((s, v, a) => s + v * wr[a * E + e], 0)));
      const top = Math.max(...logits);
      const z = logits.reduce((s, l) => s + Math.exp(l - top), 0);
      const probs = logits.map((l) => Math.exp(l - top) / z);
      assert.ok(maxAbs(layer.probs.subarray(t * E, (t + 1) * E), probs) <= 1e-6, `token ${t}: router probabilities`);
      const e = layer.expertOf[t];
      assert.equal(e, probs.indexOf(Math.max(...probs)), `token ${t} goes to its argmax expert`);
      const expected = expert64(block.experts![e], x).map((v) => v * layer.probs[t * E + e]);
      assert.ok(maxAbs(layer.output.subarray(t * D, (t + 1) * D), expected) <= 1e-5 * (1 + maxOf(expected)), `token ${t}: output = p_top·expert_top(x)`);
    }
    return layer;
  };
  const free = check(new Set());
  const counts = Array.from({ length: E }, (_, e) => free.expertOf.filter((x) => x === e).length);
  assert.ok(counts.filter((c) => c > 0).length >= 2, `routing is not trivial: ${counts}`);
  const busiest = counts.indexOf(Math.max(...counts));
  const pruned = check(new Set([busiest]));
  assert.ok(pruned.expertOf.every((e) => e !== busiest), 'no token goes to a pruned expert');
  for (let t = 0; t < 64; t++) assert.equal(pruned.probs[t * E + busiest], 0);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('an expert no token chose: perturbing its weights leaves the logits bit-identical, and a step leaves it untouched', () => {
  const m = newModel(config());
  const block = m.blocks[1];
  // Expert 3 is never chosen (its router bias is far below), but not masked as pruned.
  block.router!.b.assign(tf.tensor1d([0, 0, 0, -30]));
  const b = corpus.batch(tf, 'train', range(200, 8));
  const before = m.inspect(b.x);
  assert.ok(before.layers[0].expertOf.every((e) => e !== 3));
  const perturb = (e: number) => {
    const rnd = mulberry32(e + 1);
    for (const v of m.expertVars(e)) v.assign(tf.add(v, tf.tensor(Float32Array.from({ length: v.size }, () => rnd() - 0.5), v.shape)));
  };
  perturb(3);
  assert.deepEqual(m.inspect(b.x).logits, before.logits, 'bit-identical logits');
  // Control: the same perturbation of an expert that was chosen changes them.
  perturb(before.layers[0].expertOf[0]);
  assert.ok(maxAbs(m.inspect(b.x).logits, before.logits) > 1e-3);
  // Without tokens an expert has no task gradient: Adam does not touch it (α = 0).
  const w3 = m.unitWeights(3);
  const chosen = before.layers[0].expertOf[5];
  const wChosen = m.unitWeights(chosen);
  steps(m, 3);
  assert.deepEqual(m.unitWeights(3), w3);
  assert.notDeepEqual(m.unitWeights(chosen), wChosen);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('gradients: g = ∂L/∂(Switch output) reproduces tf\'s gradient of each expert\'s b2 and of the router (which learns through p_top only)', () => {
  const m = newModel(config());
  steps(m, 3);
  const b = corpus.batch(tf, 'train', range(300, 8));
  const { gradients, layers } = m.outputGradients(b.x, b.y);
  const [g, layer] = [gradients[0], layers[0]];
  const [D, E, N] = [m.dModel, m.units, layer.expertOf.length];
  const block = m.blocks[1];
  const vars = [block.router!.b, ...block.experts!.map((v) => v.b2)];
  const grads = tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => crossEntropySum(m, b), vars);
    value.dispose();
    return vars.map((v) => (grads[v.name] ? grads[v.name].dataSync() : new Float32Array(v.size)));
  });
  // ∂L/∂b2_e = Σ_{t → e} p_top,t·g_t.
  for (let e = 0; e < E; e++) {
    const expected = new Float64Array(D);
    for (let t = 0; t < N; t++) if (layer.expertOf[t] === e) for (let k = 0; k < D; k++) expected[k] += layer.probs[t * E + e] * g[t * D + k];
    assert.ok(maxAbs(grads[1 + e], expected) <= 1e-4 * (1e-3 + maxOf(expected)), `expert ${e} b2`);
  }
  // ∂L/∂r_t = ⟨g_t, out_t⟩·(onehot(e_t) − p_t): out = p_top·y, and ∂p_top/∂r = p_top·(onehot − p).
  const expected = new Float64Array(E);
  for (let t = 0; t < N; t++) {
    let dot = 0;
    for (let k = 0; k < D; k++) dot += g[t * D + k] * layer.output[t * D + k];
    for (let e = 0; e < E; e++) expected[e] += dot * ((layer.expertOf[t] === e ? 1 : 0) - layer.probs[t * E + e]);
  }
  assert.ok(maxOf(expected) > 1e-3, 'the router gets a task gradient');
  assert.ok(maxAbs(grads[0], expected) <= 1e-4 * maxOf(expected), `router: ${Array.from(grads[0])} vs ${Array.from(expected)}`);
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('kernels: the measured K_e equals the Gram of per-sample gradients (tf) and the float64 closed form, summed over two Switch layers', () => {
  const m = newModel(config({ model: { layers: 3 } }));
  assert.deepEqual(m.switchBlocks, [0, 2]);
  steps(m, 4);
  const stats = m.measure(new Set(), new Set());
  const tokens = m.probeTokens();
  const n = tokens.length;
  assert.equal(n, 8);
  assert.equal(new Set(tokens).size, n, 'distinct probe tokens');
  const probe = corpus.batch(tf, 'train', range(0, 8));
  const [px, py] = [probe.x.dataSync(), probe.y.dataSync()];
  assert.equal(new Set(Array.from(tokens, (t) => `${px[t]}→${py[t]}`)).size, n, 'distinct (character, next character) pairs');
  assert.ok(new Set(Array.from(tokens, (t) => t % 8)).size >= 4, 'spread over positions');
  const [D, F] = [m.dModel, m.hidden];
  const { x, u, routing } = m.probeQuantities();
  // x = the layers' inputs at the probe tokens; u = ∂L/∂(layer output) there, normalized.
  const { gradients, layers } = m.outputGradients(probe.x, probe.y);
  tokens.forEach((t, i) => {
    layers.forEach((layer, s) => {
      assert.ok(maxAbs(x[s].subarray(i * D, (i + 1) * D), layer.input.subarray(t * D, (t + 1) * D)) <= 1e-6);
      const g = gradients[s].subarray(t * D, (t + 1) * D);
      const norm = Math.hypot(...g);
      assert.ok(norm > 1e-6);
      assert.ok(maxAbs(u[s].subarray(i * D, (i + 1) * D), Array.from(g, (v) => v / norm)) <= 1e-5);
    });
  });
  const xs = x.map((a) => tf.tensor2d(a, [n, D]));
  const us = u.map((a) => tf.tensor2d(a, [n, D]));
  for (let e = 0; e < m.units; e++) {
    const experts = m.switchBlocks.map((l) => m.blocks[l].experts![e]);
    // As the model uses it: s_i = Σ_s r_is·u_iᵀ·expert_e^s(x_i^s), r_is = p_top if token i is dispatched
    // to e in layer s, else 0; differentiated by tf one probe token at a time.
    const E = m.units;
    const r = (s: number, i: number) => routing[s][i * E + e];
    const scalar = (i: number) =>
      tf.tidy(() => {
        const terms = experts.map((v, s) => {
          const row = tf.slice(xs[s], [i, 0], [1, D]);
          const out = tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(row, v.w1 as unknown as tf.Tensor2D), v.b1)), v.w2 as unknown as tf.Tensor2D), v.b2);
          return tf.mul(tf.sum(tf.mul(out, tf.slice(us[s], [i, 0], [1, D]))), r(s, i));
        });
        return tf.addN(terms) as tf.Scalar;
      });
    const perSample = perSampleKernels(tf, n, scalar, [m.expertVars(e)])[0];
    const closed = new Float64Array(n * n);
    experts.forEach((v, s) => {
      const K = twoLayerTangentKernel({ d: D, h: F, c: D, w1: v.w1.dataSync(), b1: v.b1.dataSync(), w2: v.w2.dataSync(), b2: v.b2.dataSync() }, x[s], u[s], n);
      K.forEach((k, ij) => (closed[ij] += k * r(s, Math.floor(ij / n)) * r(s, ij % n)));
    });
    const measured = m.lastKernel(e);
    if (relativeFrobenius(perSample, new Float64Array(n * n)) > 0) {
      assert.ok(relativeFrobenius(measured, perSample) <= 1e-4, `expert ${e}: vs per-sample gradients ${relativeFrobenius(measured, perSample)}`);
      assert.ok(relativeFrobenius(measured, closed) <= 1e-4, `expert ${e}: vs float64 closed form ${relativeFrobenius(measured, closed)}`);
    } else assert.ok(measured.every((k) => k === 0), `expert ${e} serves no probe token: a zero kernel`);
    // Its own κ: over the probe tokens routed to it (in any Switch layer), null below MIN_SERVED.
    const rows = range(0, n).filter((i) => m.switchBlocks.some((_, s) => r(s, i) > 0));
    assert.equal(stats[e].served, rows.length, `expert ${e} served`);
    if (rows.length < 4) {
      assert.equal(stats[e].kappa, null, `expert ${e}: ${rows.length} tokens, not measurable`);
      continue;
    }
    const sub = Float64Array.from({ length: rows.length ** 2 }, (_, k) => closed[rows[Math.floor(k / rows.length)] * n + rows[k % rows.length]]);
    const c = conditioning(sub, rows.length, 1e-6);
    assert.ok(relative(stats[e].lf!, c.lf) <= 1e-4, `expert ${e}: L_f`);
    if (c.kappa < 1e3) {
      assert.ok(Math.abs(stats[e].mu! - c.mu) <= 1e-4 * c.lf, `expert ${e}: μ ${stats[e].mu} vs ${c.mu}`);
      assert.ok(relative(stats[e].kappa!, c.kappa) <= 1e-3, `expert ${e}: κ`);
    }
  }
  assert.ok(stats.reduce((a, st) => a + st.served!, 0) >= n, 'every probe token is served by some expert in some layer');
  tf.dispose([...xs, ...us, probe.x, probe.y]);
  m.dispose();
});

test('regularizer: κ̃ = κ of the model kernel Σ_{e∈T} K_e at fresh eigenvectors; frozen experts stay bit-identical; α lowers κ', () => {
  const m = newModel(config());
  steps(m, 3);
  m.measure(new Set(), new Set());
  const sumOf = (ids: number[]) => {
    const K = new Float64Array(64);
    for (const e of ids) m.lastKernel(e).forEach((k, i) => (K[i] += k));
    return conditioning(K, 8, 1e-6).kappa;
  };
  assert.ok(relative(m.modelKappa()!, sumOf([0, 1, 2, 3])) <= 1e-9);
  const k = tf.tidy(() => m.modelKappaTf([0, 1, 2, 3]).dataSync()[0]);
  assert.ok(relative(k, m.modelKappa()!) <= 1e-4, `κ̃ ${k} vs κ ${m.modelKappa()}`);
  // Expert 1 frozen: the regularizer is κ of the kernel of the trainable ones, over the probe tokens
  // they serve. A token routed only to expert 1 has a zero row in Σ_{e∈T} K_e (exactly: its routing
  // weight is 0 there), so over the whole probe that kernel is singular and κ would sit at its cap 1/δ.
  const trainable = [0, 2, 3];
  const stats = m.measure(new Set([1]), new Set());
  const expected = m.modelKappa()!;
  const KT = new Float64Array(64);
  for (const e of trainable) m.lastKernel(e).forEach((k, i) => (KT[i] += k));
  const rows = [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => KT[i * 8 + i] > 0);
  const sub = new Float64Array(rows.length * rows.length);
  rows.forEach((r, a) => rows.forEach((c, b) => (sub[a * rows.length + b] = KT[r * 8 + c])));
  assert.ok(relative(expected, conditioning(sub, rows.length, 1e-6).kappa) <= 1e-9, `${expected} vs the submatrix on rows ${rows}`);
  assert.ok(stats[1].served! > 0 && rows.length < 8, `the planted case: expert 1 serves ${stats[1].served} probe tokens that no trainable expert serves (rows ${rows})`);
  assert.ok(sumOf(trainable) >= 0.5e6 && expected < 1e4, `over the whole probe κ ${sumOf(trainable)} (at the cap); over the served tokens ${expected}`);
  const [first] = steps(m, 1, { alpha: 0.05, trainable, from: 10 });
  assert.ok(relative(first.regularizer, expected) <= 1e-4, `${first.regularizer} vs ${expected}`);
  assert.ok(first.shares && Math.abs(first.shares.reduce((a, b) => a + b, 0) - 1) <= 1e-9, 'the step reports its routing shares');
  // loss = task + 0.01·(load balancing, E·Σ f_e·P_e ∈ (0, E]) + α·κ̄.
  const balance = (first.loss - first.taskLoss - 0.05 * first.regularizer) / LOAD_BALANCE_COEFFICIENT;
  assert.ok(balance > 0.5 && balance <= 4 + 1e-3, `load-balancing loss ${balance}`);
  m.measure(new Set([1]), new Set());
  const frozen = m.unitWeights(1);
  const moving = [0, 2, 3].map((e) => m.unitWeights(e));
  steps(m, 5, { alpha: 0.05, trainable, measure: true, from: 20 });
  assert.deepEqual(m.unitWeights(1), frozen, 'frozen expert bit-identical');
  [0, 2, 3].forEach((e, k) => assert.notDeepEqual(m.unitWeights(e), moving[k], `expert ${e} moved`));
  m.dispose();

  // The same start and batches with and without the regularizer: κ ends lower with it.
  const meanKappa = (alpha: number) => {
    const model = newModel(config({ model: { dModel: 16, hiddenUnits: 16 } }));
    model.measure(new Set(), new Set());
    steps(model, 30, { alpha, measure: true });
    const k = model.meanKappa(all(model));
    model.dispose();
    return k;
  };
  const [plain, regularized] = [meanKappa(0), meanKappa(0.2)];
  // ×11–63 over seeds 1–4 since the gradient follows x, u and p_top; ×1.6–4.8 when they were held.
  assert.ok(regularized < 0.2 * plain, `model κ ${regularized} with α = 0.2 vs ${plain} without`);
});

test('pruning: a pruned expert gets no tokens (load 0), no update even with α > 0, and serves no probe token (κ not measurable)', () => {
  const m = newModel(config());
  m.measure(new Set(), new Set());
  const pruned = new Set([2]);
  const w2 = m.unitWeights(2);
  const others = [0, 1, 3].map((e) => m.unitWeights(e));
  steps(m, 4, { alpha: 0.05, pruned, measure: true });
  const load = m.extraMetrics();
  assert.deepEqual(Object.keys(load).sort(), ['load/0', 'load/1', 'load/2', 'load/3']);
  assert.equal(load['load/2'], 0);
  assert.ok(Math.abs(load['load/0'] + load['load/1'] + load['load/3'] - 1) < 1e-12);
  assert.deepEqual(m.unitWeights(2), w2);
  assert.ok([0, 1, 3].some((e, k) => maxAbs(m.unitWeights(e)[0], others[k][0]) > 0), 'the live experts train');
  const stats = m.measure(new Set(), pruned);
  assert.ok(stats[2].pruned && !stats[0].pruned);
  assert.deepEqual([stats[2].served, stats[2].kappa], [0, null], 'a pruned expert serves nothing: not measurable');
  m.dispose();
});

test('spectral-norm L_f: Σ over Switch layers of σ(W1)·σ(W2) (float64 SVD), κ = L_f/μ, and the regularizer runs on it', () => {
  const m = newModel(config({ monitor: { lipschitz: 'spectral-norm' } }));
  steps(m, 2);
  let stats = m.measure(new Set(), new Set());
  for (let k = 0; k < 30; k++) stats = m.measure(new Set(), new Set()); // power iteration converges across measurements
  const sigmaMax = (w: tf.Variable) => {
    const [r, c] = w.shape;
    const a = w.dataSync();
    const ata = new Float64Array(c * c);
    for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) for (let k = 0; k < r; k++) ata[i * c + j] += a[k * c + i] * a[k * c + j];
    return Math.sqrt(symmetricEigen(ata, c).values[c - 1]);
  };
  assert.ok(stats.some((st) => st.lf !== null), 'some expert serves enough probe tokens');
  for (let e = 0; e < m.units; e++) {
    if (stats[e].lf === null) continue; // fewer than MIN_SERVED routed tokens: no numbers at all
    const v = m.blocks[1].experts![e];
    const exact = sigmaMax(v.w1) * sigmaMax(v.w2);
    assert.ok(relative(stats[e].lf!, exact) <= 1e-4, `expert ${e}: L_f ${stats[e].lf} vs ${exact}`);
    if (stats[e].mu === null) continue; // fewer than MIN_SERVED routed tokens
    assert.ok(relative(stats[e].kappa!, stats[e].lf! / (stats[e].mu! + 1e-6 * stats[e].lf!)) <= 1e-9);
  }
  const [r] = steps(m, 1, { alpha: 0.01 });
  assert.ok(Number.isFinite(r.loss) && relative(r.regularizer, m.meanKappa(all(m))) <= 1e-4);
  m.dispose();
});

test('checkpoint: a model restored from getState continues with exactly the same losses (α > 0, an expert frozen from the start)', async () => {
  const c = config();
  const a = newModel(c);
  const trainable = [0, 1, 3]; // expert 2 never steps: its optimizer has no slots
  a.measure(new Set([2]), new Set());
  steps(a, 4, { alpha: 0.05, trainable, measure: true });
  const state = await a.getState();
  assert.equal(state.optimizers.expert2.length, 1, 'only the iteration count: no moments');
  assert.ok(state.optimizers.shared.length > 1 && state.optimizers.expert0.length > 1);
  const b = newModel(config({ seed: 99 }));
  await b.setState(state);
  b.measure(new Set([2]), new Set());
  const after = (m: SwitchTransformerLm) => steps(m, 4, { alpha: 0.05, trainable, measure: true, from: 50 }).map((r) => [r.loss, r.taskLoss, r.regularizer]);
  assert.deepEqual(after(b), after(a));
  for (let e = 0; e < 4; e++) assert.deepEqual(b.unitWeights(e), a.unitWeights(e));
  const wrong = newModel(config({ model: { hiddenUnits: 4 } }));
  await assert.rejects(() => wrong.setState(state), /checkpoint does not fit the model/);
  [a, b, wrong].forEach((m) => m.dispose());
});

test('perplexity: evaluate = exp(mean cross-entropy over every position of the split), from float64 log-softmax', () => {
  const tiny = textTaskData('It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.', 'tiny', 8);
  const m = newModel(config(), tiny);
  steps(m, 3, { batch: 4 }, tiny);
  const V = tiny.classes;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < tiny.testSize; i++) {
    const b = tiny.batch(tf, 'test', [i]);
    const logits = m.inspect(b.x).logits;
    const y = b.y.dataSync();
    for (let t = 0; t < y.length; t++) {
      const row = Array.from(logits.subarray(t * V, (t + 1) * V));
      const top = Math.max(...row);
      sum += top + Math.log(row.reduce((s, l) => s + Math.exp(l - top), 0)) - row[y[t]];
      count++;
    }
    tf.dispose([b.x, b.y]);
  }
  assert.equal(count, tiny.testSize * 8);
  assert.ok(relative(m.evaluate(tiny, 'test'), Math.exp(sum / count)) <= 1e-5);
  m.dispose();
});

test('training on the built-in corpus: the loss falls clearly below the unigram entropy within 150 steps', () => {
  const c = config({ model: { dModel: 16, hiddenUnits: 16, contextLength: 16 }, learningRate: 0.01 });
  const data = loadTextData(c, '.');
  const counts = new Float64Array(data.classes);
  for (const t of data.tokens.train) counts[t]++;
  const total = data.tokens.train.length;
  const unigram = -Array.from(counts).reduce((s, k) => (k ? s + (k / total) * Math.log(k / total) : s), 0);
  assert.ok(unigram > 3 && unigram < 3.2, `unigram entropy ${unigram} nats`);
  const m = newModel(c, data);
  const results = steps(m, 150, { batch: 16 }, data);
  const last = results.slice(-20).reduce((s, r) => s + r.taskLoss, 0) / 20;
  assert.ok(results[0].taskLoss > unigram, `starts above the unigram entropy (${results[0].taskLoss})`);
  assert.ok(last < unigram - 0.35, `mean task loss of the last 20 steps ${last} vs unigram ${unigram}`);
  assert.ok(relative(results.at(-1)!.taskMetric, Math.exp(results.at(-1)!.taskLoss)) <= 1e-6, 'the step metric is the batch perplexity');
  m.dispose();
});

test('wasm: the same logits and routing as cpu (its OneHot kernel ignores a float32 dtype)', async () => {
  const m = newModel(config());
  const b = corpus.batch(tf, 'train', range(400, 4));
  const onCpu = m.inspect(b.x);
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  try {
    const x = tf.tensor2d(b.x.dataSync(), b.x.shape as [number, number], 'int32');
    const onWasm = m.inspect(x);
    assert.deepEqual(onWasm.layers[0].expertOf, onCpu.layers[0].expertOf);
    assert.ok(maxAbs(onWasm.logits, onCpu.logits) <= 1e-4 * (1 + maxOf(onCpu.logits)), `${maxAbs(onWasm.logits, onCpu.logits)}`);
    x.dispose();
  } finally {
    await tf.setBackend('cpu');
  }
  tf.dispose([b.x, b.y]);
  m.dispose();
});

test('a probe the model predicts with huge margins keeps a finite κ (directions back-propagated from underflow-free logit pulls)', () => {
  const c = config({ seed: 3 });
  const m = newModel(c);
  steps(m, 3);
  const probe = corpus.batch(tf, 'train', range(0, 8));
  const V = m.vocabulary;
  const smallestMargin = () => {
    const z = m.inspect(probe.x).logits;
    let smallest = Infinity;
    for (let i = 0; i < z.length / V; i++) {
      const row = Array.from(z.subarray(i * V, (i + 1) * V)).sort((a, b) => b - a);
      smallest = Math.min(smallest, row[0] - row[1]);
    }
    return smallest;
  };
  // Scale the output projection to a smallest margin of 60; labels = the model's own predictions.
  const scale = 60 / smallestMargin();
  m.head.w.assign(tf.mul(m.head.w, scale));
  m.head.b.assign(tf.mul(m.head.b, scale));
  assert.ok(smallestMargin() > 40, `margin ${smallestMargin()}`);
  const z = m.inspect(probe.x).logits;
  const predicted = Int32Array.from({ length: z.length / V }, (_, i) => {
    let best = 0;
    for (let o = 1; o < V; o++) if (z[i * V + o] > z[i * V + best]) best = o;
    return best;
  });
  const y = tf.tensor2d(predicted, probe.y.shape as [number, number], 'int32');
  m.setProbe({ x: probe.x, y, size: probe.size });
  // The plain cross-entropy gradient has nothing left to normalize at any probe token…
  const { gradients } = m.outputGradients(probe.x, y);
  const D = m.dModel;
  for (const t of m.probeTokens()) for (const g of gradients) assert.ok(Math.hypot(...g.subarray(t * D, (t + 1) * D)) < 1e-12, 'float32 softmax − y underflows');
  // …the measurement still has a direction at every token, and a finite κ for every expert.
  const floor = 1 / c.monitor.damping;
  const stats = m.measure(new Set(), new Set());
  for (const s of stats) if (s.kappa !== null) assert.ok(s.mu! > 0 && s.kappa < floor / 10, `expert ${s.id}: μ ${s.mu}, κ ${s.kappa}`);
  // With 8 probe tokens over 4 experts an expert may serve fewer than 4 (null); the model's kernel
  // covers every token, so it is the finite κ to check.
  assert.ok(m.modelKappa()! < floor / 10, `model κ ${m.modelKappa()}`);
  const { u } = m.probeQuantities();
  for (const layer of u) for (let i = 0; i < m.probeTokens().length; i++) assert.ok(Math.abs(Math.hypot(...layer.subarray(i * D, (i + 1) * D)) - 1) < 1e-5, `token ${i}: unit direction`);
  m.dispose();
});

// ---- The regularizer's gradient against a float64 reference of the whole model ----
// The model in float64 from copies of its variables (perturbable one entry at a time): embeddings, pre-LN
// blocks with causal attention, dense and Switch FFNs (top-1, recomputed at every evaluation), final LN and
// output layer. u at a probe token is g/‖g‖ with g = ∂⟨pulls, logits⟩/∂(Switch output there) by float64
// central differences with the pulls (scaledLogitGradients of the float64 log-probabilities) held, as g is
// defined; then the closed-form kernels, the routing and the model's κ over the tokens it serves. Everything
// the reported κ depends on is recomputed from the perturbed weights: its central differences are ∇κ.

class Reference64 {
  private readonly arrays = new Map<tf.Variable, Float64Array>();
  constructor(readonly m: SwitchTransformerLm) {
    for (const v of [...m.sharedVars(), ...all(m).flatMap((e) => m.expertVars(e))]) this.arrays.set(v, Float64Array.from(v.dataSync()));
  }
  of(v: tf.Variable): Float64Array {
    return this.arrays.get(v)!;
  }
}

function layerNorm64(h: Float64Array, T: number, D: number, g: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let k = 0; k < D; k++) mean += h[t * D + k] / D;
    let variance = 0;
    for (let k = 0; k < D; k++) variance += (h[t * D + k] - mean) ** 2 / D;
    for (let k = 0; k < D; k++) out[t * D + k] = ((h[t * D + k] - mean) / Math.sqrt(variance + 1e-5)) * g[k] + b[k];
  }
  return out;
}

/** a (T×K) · w (K×M) + bias. */
function affine64(a: Float64Array, T: number, K: number, w: Float64Array, M: number, bias?: Float64Array): Float64Array {
  const out = new Float64Array(T * M);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < M; j++) out[t * M + j] = bias ? bias[j] : 0;
    for (let k = 0; k < K; k++) {
      const x = a[t * K + k];
      for (let j = 0; j < M; j++) out[t * M + j] += x * w[k * M + j];
    }
  }
  return out;
}

function mlp64(net: Reference64, v: ExpertVars, x: Float64Array, T: number): Float64Array {
  const [D, F] = v.w1.shape;
  const hidden = affine64(x, T, D, net.of(v.w1), F, net.of(v.b1)).map((z) => Math.max(z, 0));
  return affine64(hidden, T, F, net.of(v.w2), D, net.of(v.b2));
}

/** One sequence through the float64 model; `offsets[s]` (T×D) is added to Switch layer s's output. */
function forward64(net: Reference64, ids: ArrayLike<number>, pruned: ReadonlySet<number>, offsets?: Float64Array[]) {
  const m = net.m;
  const [D, E, H, V, T] = [m.dModel, m.units, m.heads, m.vocabulary, ids.length];
  const dh = D / H;
  const [tokens, positions] = [net.of(m.embedding.tokens), net.of(m.embedding.positions)];
  let h = Float64Array.from({ length: T * D }, (_, i) => tokens[ids[Math.floor(i / D)] * D + (i % D)] + positions[i]);
  const layers: { input: Float64Array; probs: Float64Array; expertOf: number[] }[] = [];
  m.blocks.forEach((blk) => {
    const a = layerNorm64(h, T, D, net.of(blk.ln1g), net.of(blk.ln1b));
    const [q, k, v] = [blk.wq, blk.wk, blk.wv].map((w) => affine64(a, T, D, net.of(w), D));
    const merged = new Float64Array(T * D);
    for (let head = 0; head < H; head++) {
      for (let t = 0; t < T; t++) {
        const scores = Array.from({ length: t + 1 }, (_, j) => {
          let s = 0;
          for (let c = 0; c < dh; c++) s += q[t * D + head * dh + c] * k[j * D + head * dh + c];
          return s / Math.sqrt(dh);
        });
        const top = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - top));
        const z = weights.reduce((x, y) => x + y, 0);
        for (let j = 0; j <= t; j++) for (let c = 0; c < dh; c++) merged[t * D + head * dh + c] += (weights[j] / z) * v[j * D + head * dh + c];
      }
    }
    const attended = affine64(merged, T, D, net.of(blk.wo), D, net.of(blk.bo));
    h = h.map((x, i) => x + attended[i]);
    const f = layerNorm64(h, T, D, net.of(blk.ln2g), net.of(blk.ln2b));
    if (blk.dense) {
      const out = mlp64(net, blk.dense, f, T);
      h = h.map((x, i) => x + out[i]);
      return;
    }
    const logits = affine64(f, T, D, net.of(blk.router!.w), E, net.of(blk.router!.b));
    const probs = new Float64Array(T * E);
    const expertOf: number[] = [];
    for (let t = 0; t < T; t++) {
      const row = Array.from({ length: E }, (_, e) => (pruned.has(e) ? -Infinity : logits[t * E + e]));
      const top = Math.max(...row);
      const z = row.reduce((s, l) => s + Math.exp(l - top), 0);
      row.forEach((l, e) => (probs[t * E + e] = Math.exp(l - top) / z));
      expertOf.push(row.indexOf(top));
    }
    const s = layers.length;
    for (let t = 0; t < T; t++) {
      const e = expertOf[t];
      const out = mlp64(net, blk.experts![e], f.subarray(t * D, (t + 1) * D), 1);
      for (let k = 0; k < D; k++) h[t * D + k] += probs[t * E + e] * out[k] + (offsets ? offsets[s][t * D + k] : 0);
    }
    layers.push({ input: f, probs, expertOf });
  });
  const top = layerNorm64(h, T, D, net.of(m.head.lnG), net.of(m.head.lnB));
  return { logits: affine64(top, T, D, net.of(m.head.w), V, net.of(m.head.b)), layers };
}

/** The reported model κ in float64: everything recomputed from the reference's (perturbed) weights. */
function referenceKappa(net: Reference64, probeX: Int32Array, probeY: Int32Array, tokens: Int32Array, pruned: ReadonlySet<number>, inModel: number[], damping: number) {
  const m = net.m;
  const [D, E, V, F, T] = [m.dModel, m.units, m.vocabulary, m.hidden, m.contextLength];
  const S = m.switchBlocks.length;
  const n = tokens.length;
  const x = Array.from({ length: S }, () => new Float64Array(n * D));
  const u = Array.from({ length: S }, () => new Float64Array(n * D));
  const routing = Array.from({ length: S }, () => new Float64Array(n * E));
  const served = Array.from({ length: E }, () => new Set<number>());
  tokens.forEach((flat, i) => {
    const [b, p] = [Math.floor(flat / T), flat % T];
    const ids = probeX.subarray(b * T, (b + 1) * T);
    const base = forward64(net, ids, pruned);
    const logProbs = new Float64Array(T * V);
    const oneHot = new Float64Array(T * V);
    for (let t = 0; t < T; t++) {
      const row = base.logits.subarray(t * V, (t + 1) * V);
      const top = Math.max(...row);
      const lse = top + Math.log(row.reduce((s, z) => s + Math.exp(z - top), 0));
      for (let c = 0; c < V; c++) logProbs[t * V + c] = row[c] - lse;
      oneHot[t * V + probeY[b * T + t]] = 1;
    }
    const pulls = scaledLogitGradients(logProbs, oneHot, T, V, T);
    const pulled = (offsets: Float64Array[]) => forward64(net, ids, pruned, offsets).logits.reduce((s, z, k) => s + z * pulls[k], 0);
    for (let s = 0; s < S; s++) {
      const layer = base.layers[s];
      x[s].set(layer.input.subarray(p * D, (p + 1) * D), i * D);
      const e = layer.expertOf[p];
      routing[s][i * E + e] = layer.probs[p * E + e];
      served[e].add(i);
      const g = Float64Array.from({ length: D }, (_, k) => {
        const offsets = Array.from({ length: S }, () => new Float64Array(T * D));
        return centralDifference(offsets[s], p * D + k, 1e-4, () => pulled(offsets));
      });
      const norm = Math.hypot(...g);
      if (norm > 1e-12) g.forEach((v, k) => (u[s][i * D + k] = v / norm));
    }
  });
  const model = new Float64Array(n * n);
  for (const e of inModel) {
    m.switchBlocks.forEach((l, s) => {
      const v = m.blocks[l].experts![e];
      const alone = twoLayerTangentKernel({ d: D, h: F, c: D, w1: net.of(v.w1), b1: net.of(v.b1), w2: net.of(v.w2), b2: net.of(v.b2) }, x[s], u[s], n);
      alone.forEach((k, ij) => (model[ij] += k * routing[s][Math.floor(ij / n) * E + e] * routing[s][(ij % n) * E + e]));
    });
  }
  const rows = [...new Set(inModel.flatMap((e) => [...served[e]]))].sort((a, b) => a - b);
  const sub = Float64Array.from({ length: rows.length ** 2 }, (_, k) => model[rows[Math.floor(k / rows.length)] * n + rows[k % rows.length]]);
  return { ...conditioning(sub, rows.length, damping), sub, size: rows.length, served };
}

/**
 * ∇κ̃ (tf, float32: modelKappaTf after measure()) against float64 central differences of the reference's
 * κ, on two coordinates of each variable in `checked`. Returns the worst relative error and how many
 * coordinates had a non-zero derivative.
 */
function checkKappaGradient(m: SwitchTransformerLm, pruned: ReadonlySet<number>, inModel: number[], checked: tf.Variable[], label: string) {
  const probe = corpus.batch(tf, 'train', range(0, m.probeTokens().length));
  const [probeX, probeY] = [Int32Array.from(probe.x.dataSync()), Int32Array.from(probe.y.dataSync())];
  const tokens = m.probeTokens();
  const damping = 1e-6;
  const net = new Reference64(m);
  const kappa = () => referenceKappa(net, probeX, probeY, tokens, pruned, inModel, damping);
  const at = kappa();
  const { values } = symmetricEigen(at.sub, at.size);
  assert.ok(values[1] > 1.05 * values[0] && values[at.size - 1] > 1.05 * values[at.size - 2], `${label}: simple extreme eigenvalues: ${Array.from(values)}`);
  assert.ok(Math.abs(m.modelKappa()! - at.kappa) <= 1e-3 * at.kappa, `${label}: measured model κ ${m.modelKappa()} vs float64 ${at.kappa}`);
  const vars = [...m.sharedVars(), ...all(m).flatMap((e) => m.expertVars(e))];
  const { value, grads } = tf.variableGrads(() => m.modelKappaTf(inModel, pruned), vars);
  assert.ok(Math.abs(value.dataSync()[0] - at.kappa) <= 1e-3 * at.kappa, `${label}: κ̃ ${value.dataSync()[0]} vs κ ${at.kappa}`);
  const gradientOf = (v: tf.Variable) => grads[v.name]?.dataSync() ?? new Float32Array(v.size); // absent: no path at all
  const rmsOf = (g: ArrayLike<number>) => Math.sqrt(Array.from(g).reduce((s, x) => s + x * x, 0) / g.length);
  const overall = rmsOf(vars.flatMap((v) => Array.from(gradientOf(v))));
  let worst = 0;
  let nonzero = 0;
  const results: Record<string, number[]> = {};
  // The token embedding: the rows of tokens in the probe sequences (the others have derivative 0).
  const embedded = [probeX[tokens[0]], probeX[tokens[1]]].map((id, j) => id * m.dModel + j);
  for (const v of checked) {
    const arr = net.of(v);
    const got = gradientOf(v);
    const rms = rmsOf(got);
    const coords = v === m.embedding.tokens ? embedded : [Math.floor(arr.length / 3), arr.length - 1];
    results[v.name] = [];
    for (const k of coords) {
      const fd = (step: number) => centralDifference(arr, k, step, () => kappa().kappa);
      const coarse = fd(2e-4);
      const fine = fd(1e-4);
      const scale = Math.max(Math.abs(fine), rms, 1e-3 * overall);
      assert.ok(Math.abs(coarse - fine) <= 1e-3 * scale, `${label}: differences converged (${v.name}[${k}]): ${coarse} vs ${fine}`);
      const err = Math.abs(got[k] - fine) / scale;
      worst = Math.max(worst, err);
      if (Math.abs(fine) > 1e-3 * scale) nonzero++;
      results[v.name].push(fine);
      assert.ok(err <= 1e-3, `${label}: ${v.name}[${k}]: tf ${got[k]} vs fd ${fine} (rms ${rms})`);
    }
  }
  tf.dispose([value, ...Object.values(grads), probe.x, probe.y]);
  return { worst, nonzero, kappa: at.kappa, served: at.served, results, gradientOf: (v: tf.Variable) => Float32Array.from(gradientOf(v)) };
}

test('∇κ̃ matches float64 central differences of the reported κ on shared and expert coordinates (x, u, p_top follow the weights; two Switch layers)', () => {
  const m = newModel(config({ model: { layers: 3 } }));
  steps(m, 3);
  m.measure(new Set(), new Set());
  const [b0, b1, b2] = m.blocks;
  const checked = [
    m.embedding.tokens, m.embedding.positions,
    b0.ln1g, b0.wq, b0.wk, b0.wv, b0.wo, b0.ln2b, b0.router!.w, b0.router!.b,
    b1.ln1b, b1.wv, b1.dense!.w1, b1.dense!.b2, b1.ln2g,
    b2.wq, b2.bo, b2.ln2g, b2.router!.w, b2.router!.b,
    m.head.lnG, m.head.lnB, m.head.w, m.head.b,
    ...m.expertVars(0), ...m.expertVars(1),
  ];
  const r = checkKappaGradient(m, new Set(), all(m), checked, 'generic');
  console.log(`switch ∇κ̃ vs float64 central differences of κ (κ = ${r.kappa.toFixed(2)}): ${checked.length * 2} coordinates (${r.nonzero} non-zero), worst relative error ${r.worst.toExponential(2)}`);
  assert.ok(r.nonzero >= 40, `only ${r.nonzero} coordinates with a non-zero derivative`);
  // The shared layers get a gradient: attention, embeddings, routers (held before 2026-12-06: exactly 0).
  for (const v of [m.embedding.positions, b0.wq, b0.router!.w, b2.router!.b, b1.ln2g]) assert.ok(r.results[v.name].some((d) => Math.abs(d) > 0), `${v.name}: a non-zero derivative`);
  m.dispose();
});

test('∇κ̃ in the degenerate cases: a pruned expert, a frozen one, one no token is routed to (float64 central differences)', () => {
  // 5 experts: 2 pruned, 1 frozen (out of the model's kernel, but still in the forward pass that makes
  // x, u and p_top), 3 never chosen (router bias −30 in both Switch layers), 0 and 4 regularized.
  const m = newModel(config({ model: { layers: 3, experts: 5 }, seed: 2 }));
  const pruned = new Set([2]);
  for (const l of m.switchBlocks) m.blocks[l].router!.b.assign(tf.tensor1d([0, 0, 0, -30, 0]));
  steps(m, 3, { pruned, trainable: [0, 1, 3, 4] });
  const stats = m.measure(new Set([1]), pruned);
  assert.deepEqual([stats[2].pruned, stats[2].served, stats[2].kappa], [true, 0, null], 'pruned: serves nothing');
  assert.deepEqual([stats[3].served, stats[3].kappa], [0, null], 'never chosen: serves nothing');
  assert.ok(stats[1].frozen && stats[1].served! > 0, `the frozen expert serves probe tokens (${stats[1].served})`);
  const inModel = [0, 3, 4];
  const [b0, , b2] = m.blocks;
  const checked = [m.embedding.positions, b0.wk, b0.router!.w, b0.ln1g, b2.wo, b2.router!.b, m.head.w, ...m.expertVars(0), ...m.expertVars(1), ...m.expertVars(2), ...m.expertVars(3)];
  const r = checkKappaGradient(m, pruned, inModel, checked, 'degenerate');
  console.log(`switch ∇κ̃ (pruned, frozen, unrouted experts) vs float64 central differences (κ = ${r.kappa.toFixed(2)}): worst relative error ${r.worst.toExponential(2)}, ${r.nonzero} non-zero`);
  // The pruned and the never-chosen expert reach nothing: exactly zero gradient.
  for (const e of [2, 3]) for (const v of m.expertVars(e)) assert.ok(r.gradientOf(v).every((g) => g === 0), `expert ${e}: ${v.name} has no gradient`);
  // The frozen expert is outside the model's kernel, yet moves it through layer 2's inputs.
  assert.ok(m.expertVars(1).some((v) => r.results[v.name].some((d) => Math.abs(d) > 0)), 'the frozen expert moves κ through the forward pass');
  // The step: frozen and pruned experts bit-identical, the never-chosen one too (no gradient at all, no Adam step).
  const before = [1, 2, 3].map((e) => m.unitWeights(e));
  const [result] = steps(m, 1, { alpha: 0.05, pruned, trainable: [0, 3, 4], from: 7 });
  assert.ok(result.measured && relative(result.regularizer, r.kappa) <= 1e-3, `the step's κ̄ ${result.regularizer} vs ${r.kappa}`);
  [1, 2, 3].forEach((e, k) => assert.deepEqual(m.unitWeights(e), before[k], `expert ${e} untouched`));
  m.dispose();
});

test('the regularized step: its gradient is ∇(task + 0.01·balance) + α·∇κ̃ (modelKappaTf after measure()), its own measurement is measure()\'s; on wasm too', async () => {
  const m = newModel(config({ model: { layers: 3 } }));
  const pruned = new Set([2]);
  const options = { alpha: 0.1, trainable: [0, 3], pruned };
  steps(m, 2, { pruned });
  const stats = m.measure(new Set([1]), pruned);
  const vars = [...m.sharedVars(), ...[0, 3].flatMap((e) => m.expertVars(e))];
  const regularizer = tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => m.modelKappaTf([0, 3], pruned), vars);
    return { value: value.dataSync()[0], grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, Float32Array.from(g.dataSync())])) };
  });
  const batch = corpus.batch(tf, 'train', range(500, 8));
  const plain = m.objectiveGradients(batch, { ...options, alpha: 0 });
  const full = m.objectiveGradients(batch, options);
  assert.equal(plain.result.measured, undefined, 'α = 0: no measurement in the step');
  assert.deepEqual(full.result.measured, stats, 'the step measures what measure() does, on the same weights');
  assert.ok(relative(full.result.regularizer, regularizer.value) <= 1e-6 && relative(full.result.regularizer, m.modelKappa()!) <= 1e-4);
  let worst = 0;
  for (const v of vars) {
    const expected = Float64Array.from(plain.gradients[v.name] ?? new Float32Array(v.size), (g, k) => g + 0.1 * (regularizer.grads[v.name]?.[k] ?? 0));
    const got = full.gradients[v.name] ?? new Float32Array(v.size);
    const scale = Math.max(1e-6, maxOf(expected));
    worst = Math.max(worst, maxAbs(got, expected) / scale);
  }
  assert.ok(worst <= 1e-4, `step gradient vs ∇task + α∇κ̃: ${worst}`);
  assert.ok(Object.keys(full.gradients).some((k) => k.includes('attention') && maxOf(full.gradients[k]) > 0));
  const tensors = tf.memory().numTensors;
  m.objectiveGradients(batch, options);
  assert.equal(tf.memory().numTensors, tensors, 'the nested pass leaves no tensor behind');
  // wasm: every kernel of the probe pass, its backward pass and their gradients exists there, with the same result.
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  try {
    const x = tf.tensor2d(batch.x.dataSync(), batch.x.shape as [number, number], 'int32');
    const y = tf.tensor2d(batch.y.dataSync(), batch.y.shape as [number, number], 'int32');
    const onWasm = m.objectiveGradients({ x, y, size: batch.size }, options);
    assert.ok(relative(onWasm.result.regularizer, full.result.regularizer) <= 1e-3, `wasm κ̄ ${onWasm.result.regularizer} vs cpu ${full.result.regularizer}`);
    const all64 = (g: Record<string, Float32Array>) => Float64Array.from(vars.flatMap((v) => Array.from(g[v.name] ?? new Float32Array(v.size))));
    assert.ok(relativeFrobenius(all64(onWasm.gradients), all64(full.gradients)) <= 1e-3, `wasm vs cpu gradient ${relativeFrobenius(all64(onWasm.gradients), all64(full.gradients))}`);
    tf.dispose([x, y]);
  } finally {
    await tf.setBackend('cpu');
  }
  tf.dispose([batch.x, batch.y]);
  m.dispose();
});

test('scaledLogitGradientsTf: the float64 pulls\' value, and their derivative (float64 central differences), a row at the e^−20 floor included', () => {
  const [n, c, group] = [8, 5, 4];
  const labels = Int32Array.from({ length: n }, (_, i) => (i * 3) % c);
  // Row 1 fitted by a margin of 40: its pull is below e^−20 of its group's strongest, so at the floor.
  const z0 = Float64Array.from({ length: n * c }, (_, k) => Math.sin(k * 1.3) * 2 + (k === 1 * c + labels[1] ? 40 : 0));
  const weights = Float64Array.from({ length: n * c }, (_, k) => Math.cos(k * 0.7));
  const logProbsOf = (z: ArrayLike<number>) => {
    const out = new Float64Array(n * c);
    for (let i = 0; i < n; i++) {
      const row = Array.from({ length: c }, (_, j) => z[i * c + j]);
      const top = Math.max(...row);
      const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
      row.forEach((v, j) => (out[i * c + j] = Math.fround(v - lse)));
    }
    return out;
  };
  const oneHot = new Float64Array(n * c);
  labels.forEach((l, i) => (oneHot[i * c + l] = 1));
  const reference = (z: ArrayLike<number>) => scaledLogitGradients(logProbsOf(z), oneHot, n, c, group);
  const g0 = reference(z0);
  const norms = Array.from({ length: n }, (_, i) => Math.hypot(...g0.subarray(i * c, (i + 1) * c)));
  assert.ok(Math.abs(norms[1] / Math.exp(-20) - 1) < 1e-9, `row 1 at the floor: ${norms[1]}`);
  const z = tf.variable(tf.tensor2d(Float32Array.from(z0), [n, c]));
  const { value, grads } = tf.variableGrads(() => {
    const logProbs = tf.logSoftmax(z) as tf.Tensor2D;
    const read = logProbs.dataSync();
    const pulls = scaledLogitGradientsTf(logProbs, labels, group, read);
    assert.deepEqual(pulls.dataSync(), Float32Array.from(scaledLogitGradients(read, oneHot, n, c, group)), 'the value: the float64 function\'s, rounded once');
    return tf.sum(tf.mul(pulls, tf.tensor2d(Float32Array.from(weights), [n, c]))) as tf.Scalar;
  }, [z]);
  const got = grads[z.name].dataSync();
  const objective = (zz: ArrayLike<number>) => reference(zz).reduce((s, g, k) => s + g * weights[k], 0);
  const arr = Float64Array.from(z.dataSync());
  let worst = 0;
  for (let k = 0; k < n * c; k++) {
    // Steps large against float32 log-probabilities (the reference rounds them as the model reads them).
    const fd = centralDifference(arr, k, 1e-2, () => objective(arr));
    worst = Math.max(worst, Math.abs(got[k] - fd));
  }
  assert.ok(worst <= 2e-4 * Math.max(...Array.from(got, Math.abs)), `worst ${worst}`);
  // At the floor the row's size is fixed: its own logits move only its direction (derivative e^−20-small).
  assert.ok(Math.max(...Array.from(got.subarray(c, 2 * c), Math.abs)) < 1e-6, 'the floored row');
  tf.dispose([value, ...Object.values(grads), z]);
});
