// The `switch-transformer` family on real TF.js (cpu backend, small dims): honest top-1 dispatch
// against a float64 recomputation, the router's gradient through p_top, pruning and freezing, the
// per-expert tangent kernels against per-sample gradients and the float64 closed form, the
// regularizer, spectral-norm L_f, checkpoints, perplexity, and training below the unigram entropy
// of the built-in corpus.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { conditioning, perSampleKernels, symmetricEigen, twoLayerTangentKernel } from '../../src/trainer/pl';
import { LOAD_BALANCE_COEFFICIENT, SwitchTransformerLm, type ExpertVars } from '../../src/trainer/models/switchTransformer';
import type { Batch } from '../../src/trainer/models/types';
import { loadTextData, textTaskData, type TextTaskData } from '../../src/trainer/textData';
import { mulberry32 } from '../support/prng';
import { relative, relativeFrobenius } from '../support/linalg';

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
  assert.ok(regularized < 0.5 * plain, `model κ ${regularized} with α = 0.2 vs ${plain} without`);
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
