// The MoE model on real TF.js (cpu backend for determinism), on the built-in data.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { imageTaskData, loadBuiltin, type Dataset } from '../../src/trainer/data';
import { MoeMlp } from '../../src/trainer/models/moeMlp';

let data: Dataset;
before(async () => {
  await tf.setBackend('cpu');
  data = loadBuiltin();
});

function config(over: object = {}): TrainingConfig {
  const r = parseTrainingConfig({ model: { experts: 3, hiddenUnits: 16 }, learningRate: 0.01, monitor: { probeSize: 8 }, ...over });
  assert.ok(r.ok);
  return (r as { ok: true; config: TrainingConfig }).config;
}

function batch(i: number, b = 32) {
  const x = tf.tensor2d(data.train.x.subarray(i * b * 196, (i + 1) * b * 196), [b, 196]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from(data.train.labels.subarray(i * b, (i + 1) * b)), 'int32'), 10).toFloat() as tf.Tensor2D;
  return { x, y };
}

function newModel(c: TrainingConfig) {
  const m = new MoeMlp(tf, 196, 10, c);
  m.setProbe(imageTaskData(data).batch(tf, 'train', [0, 1, 2, 3, 4, 5, 6, 7]));
  return m;
}

test('training reduces the loss and beats chance', () => {
  const m = newModel(config());
  const first = m.trainStep({ ...batch(0), size: 32 }, { alpha: 0, trainable: [0, 1, 2], pruned: new Set() });
  let last = first;
  for (let i = 1; i < 60; i++) {
    const { x, y } = batch(i % 100);
    last = m.trainStep({ x, y, size: x.shape[0] }, { alpha: 0, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
  }
  assert.ok(last.taskLoss < first.taskLoss * 0.6, `${first.taskLoss} → ${last.taskLoss}`);
  assert.ok(m.evaluate(imageTaskData(data), 'test', new Set()) > 0.5);
  m.dispose();
});

test('a frozen expert keeps bit-identical weights while the others train', () => {
  const m = newModel(config());
  const before = [0, 1, 2].map((i) => m.unitWeights(i));
  m.measure(new Set([1]), new Set());
  for (let i = 0; i < 10; i++) {
    const { x, y } = batch(i);
    m.trainStep({ x, y, size: x.shape[0] }, { alpha: 0.05, trainable: [0, 2], pruned: new Set() }); // expert 1 frozen, with the regularizer on
    m.measure(new Set([1]), new Set());
    tf.dispose([x, y]);
  }
  const after = [0, 1, 2].map((i) => m.unitWeights(i));
  after[1].forEach((w, k) => assert.deepEqual(w, before[1][k], 'frozen expert unchanged, bit for bit'));
  assert.notDeepEqual(after[0][0], before[0][0]);
  assert.notDeepEqual(after[2][2], before[2][2]);
  m.dispose();
});

test('the regularizer acts: α > 0 moves the weights differently and lowers κ relative to α = 0', () => {
  const run = (alpha: number) => {
    const m = newModel(config({ seed: 3 }));
    m.measure(new Set(), new Set());
    const k0 = m.meanKappa([0, 1, 2]);
    let reg = 0;
    for (let i = 0; i < 40; i++) {
      const { x, y } = batch(i);
      reg = m.trainStep({ x, y, size: x.shape[0] }, { alpha, trainable: [0, 1, 2], pruned: new Set() }).regularizer;
      m.measure(new Set(), new Set());
      tf.dispose([x, y]);
    }
    const w = m.unitWeights(0)[0];
    const k = m.meanKappa([0, 1, 2]);
    m.dispose();
    return { w, k, k0, reg };
  };
  const plain = run(0);
  const regularized = run(0.05);
  assert.equal(plain.k0, regularized.k0, 'same start');
  assert.notDeepEqual(plain.w, regularized.w);
  assert.ok(regularized.k < plain.k, `mean κ with α: ${regularized.k} vs without: ${plain.k}`);
  assert.ok(Math.abs(regularized.reg - regularized.k) / regularized.k < 0.5, 'reported regularizer tracks mean κ');
});

test('measurements are consistent: L_f ≥ μ ≥ 0, κ = L_f/(μ + δ·L_f), served counts, frozen/pruned flags reported', () => {
  const m = newModel(config());
  const stats = m.measure(new Set([2]), new Set([1]));
  assert.equal(stats.length, 3);
  for (const s of stats) {
    assert.ok(s.served !== undefined && s.served >= 0 && s.served <= 8);
    if (s.kappa === null) {
      assert.ok(s.served! < 4 && s.mu === null && s.lf === null, `expert ${s.id}: null only below MIN_SERVED`);
      continue;
    }
    assert.ok(s.lf! >= s.mu! && s.mu! >= 0);
    assert.ok(Math.abs(s.kappa - s.lf! / (s.mu! + 1e-6 * s.lf!)) <= 1e-12 * s.kappa);
  }
  assert.equal(stats[1].served, 0, 'a pruned expert serves nothing');
  assert.deepEqual(stats.map((s) => [s.frozen, s.pruned]), [[false, false], [false, true], [true, false]]);
  m.dispose();
});

test('a checkpoint round trip continues training exactly (weights and Adam moments)', async () => {
  const { saveCheckpoint, loadCheckpoint } = await import('../../src/trainer/checkpoint');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const a = newModel(config({ seed: 5 }));
  for (let i = 0; i < 5; i++) {
    const { x, y } = batch(i);
    a.trainStep({ x, y, size: x.shape[0] }, { alpha: 0, trainable: i < 3 ? [0, 2] : [0, 1, 2], pruned: new Set() }); // expert 1 frozen at first: its Adam starts later
    tf.dispose([x, y]);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-ckpt-'));
  saveCheckpoint(dir, { step: 5, seq: 9, alpha: 0, frozen: [], pruned: [], time: 0 }, await a.getState());
  const restored = loadCheckpoint(dir)!;
  assert.equal(restored.progress.step, 5);
  const b = newModel(config({ seed: 99 })); // different initialization, overwritten by the checkpoint
  await b.setState(restored.state);
  for (const m of [a, b]) {
    const { x, y } = batch(7);
    m.trainStep({ x, y, size: x.shape[0] }, { alpha: 0, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
  }
  // Equal up to float32 rounding: tfjs's Adam.setWeights recomputes β^t by pow() where training
  // accumulated it by repeated products, which differ in the last bit.
  for (let e = 0; e < 3; e++) {
    a.unitWeights(e).forEach((w, k) => {
      const v = b.unitWeights(e)[k];
      const worst = w.reduce((m, x, i) => Math.max(m, Math.abs(x - v[i])), 0);
      assert.ok(worst <= 1e-6, `expert ${e} tensor ${k}: max |Δ| ${worst}`);
    });
  }
  // And the restore is not vacuous: the fresh model alone would be far away.
  const c = newModel(config({ seed: 99 }));
  assert.ok(Math.abs(c.unitWeights(0)[0][0] - a.unitWeights(0)[0][0]) > 1e-3);
  c.dispose();
  a.dispose();
  b.dispose();
});

test('measure() (float32 kernels from the backend) agrees with the float64 closed form on the built-in data: gated experts over served examples, the model κ', async () => {
  const { twoLayerTangentKernel, conditioning, outputDirections } = await import('../../src/trainer/pl');
  const { servedExamples } = await import('../../src/trainer/models/moeMlp');
  const c = config({ seed: 8 });
  const m = newModel(c);
  for (let i = 0; i < 20; i++) {
    const { x, y } = batch(i);
    m.trainStep({ x, y, size: 32 }, { alpha: 0, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
  }
  const stats = m.measure(new Set(), new Set());
  const probe = imageTaskData(data).batch(tf, 'train', [0, 1, 2, 3, 4, 5, 6, 7]);
  // Log-probabilities in float64 from the model's logits; the gate's probabilities in float64.
  const z = m.logits(probe.x as tf.Tensor2D).dataSync();
  const logProbs = new Float64Array(80);
  for (let i = 0; i < 8; i++) {
    const row = Array.from(z.subarray(i * 10, i * 10 + 10));
    const top = Math.max(...row);
    const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    row.forEach((v, o) => (logProbs[i * 10 + o] = v - lse));
  }
  const xs = probe.x.dataSync();
  const [gw, gb] = [m.gateW.dataSync(), m.gateB.dataSync()];
  const p = new Float64Array(8 * 3);
  for (let i = 0; i < 8; i++) {
    const a = [0, 1, 2].map((e) => {
      let s = gb[e];
      for (let k = 0; k < 196; k++) s += xs[i * 196 + k] * gw[k * 3 + e];
      return s;
    });
    const top = Math.max(...a);
    const t = a.reduce((s, v) => s + Math.exp(v - top), 0);
    a.forEach((v, e) => (p[i * 3 + e] = Math.exp(v - top) / t));
  }
  const u = outputDirections(logProbs, probe.y.dataSync(), 8, 10);
  const model = new Float64Array(64);
  for (let e = 0; e < 3; e++) {
    const [w1, b1, w2, b2] = m.unitWeights(e);
    const K = twoLayerTangentKernel({ d: 196, h: 16, c: 10, w1, b1, w2, b2 }, xs, u, 8);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) K[i * 8 + j] *= p[i * 3 + e] * p[j * 3 + e];
    K.forEach((v, k) => (model[k] += v));
    const served = servedExamples(p, 8, 3, e);
    assert.equal(stats[e].served, served.length);
    if (served.length < 4) {
      assert.equal(stats[e].kappa, null);
      continue;
    }
    const sub = Float64Array.from({ length: served.length ** 2 }, (_, k) => K[served[Math.floor(k / served.length)] * 8 + served[k % served.length]]);
    const ref = conditioning(sub, served.length, c.monitor.damping);
    for (const k of ['mu', 'lf', 'kappa'] as const) {
      assert.ok(Math.abs(stats[e][k]! - ref[k]) <= 1e-4 * Math.abs(ref[k]), `expert ${e} ${k}: ${stats[e][k]} vs float64 ${ref[k]}`);
    }
  }
  // The model's κ is the κ of Σ_e K_e + K_gate; the gate's kernel is checked against explicit Jacobians
  // in pl-model-kernel.test.ts, so here: the sum of the experts' kernels bounds it from below.
  const gate = m.lastKernels!.gate;
  gate.forEach((v, k) => (model[k] += v));
  const ref = conditioning(model, 8, c.monitor.damping);
  assert.ok(Math.abs(m.modelKappa()! - ref.kappa) <= 1e-3 * ref.kappa, `model κ ${m.modelKappa()} vs ${ref.kappa}`);
  tf.dispose([probe.x, probe.y]);
  m.dispose();
});

test('spectral-norm L_f: σ(W1)·σ(W2) of each expert (vs explicit SVD), and its regularizer lowers it', async () => {
  const { symmetricEigen } = await import('../../src/trainer/pl');
  const { matmul, transpose } = await import('../support/linalg');
  const sigma = (a: Float32Array, r: number, k: number) => Math.sqrt(symmetricEigen(matmul(transpose(a, r, k), a, k, r, k), k).values[k - 1]);
  const c = config({ seed: 4, monitor: { probeSize: 8, lipschitz: 'spectral-norm' } });
  const m = newModel(c);
  // Power iteration converges over repeated measurements (its vectors are kept): measure a few times.
  let stats = m.measure(new Set(), new Set());
  for (let i = 0; i < 40; i++) stats = m.measure(new Set(), new Set());
  for (let e = 0; e < 3; e++) {
    const [w1, , w2] = m.unitWeights(e);
    const exact = sigma(w1, 196, 16) * sigma(w2, 16, 10);
    // Random Gaussian weights have close top singular values, so power iteration converges slowly: 1e-4.
    assert.ok(Math.abs(stats[e].lf! - exact) <= 1e-4 * exact, `expert ${e}: ${stats[e].lf} vs ${exact}`);
    if (stats[e].mu !== null) assert.ok(Math.abs(stats[e].kappa! - stats[e].lf! / (stats[e].mu! + 1e-6 * stats[e].lf!)) <= 1e-9 * stats[e].kappa!);
  }
  m.dispose();
  // The spectral-norm L_f is shown per unit; the regularizer stays κ of the model's kernel, and with
  // α > 0 that ends lower than without, from the same start.
  const run = (alpha: number) => {
    const r = newModel(c);
    for (let i = 0; i < 30; i++) {
      const { x, y } = batch(i);
      r.trainStep({ x, y, size: 32 }, { alpha, trainable: [0, 1, 2], pruned: new Set() });
      tf.dispose([x, y]);
    }
    r.measure(new Set(), new Set());
    const k = r.modelKappa()!;
    r.dispose();
    return k;
  };
  const [plain, regularized] = [run(0), run(0.05)];
  assert.ok(regularized < plain, `model κ with α: ${regularized} vs without: ${plain}`);
});

test('OPT mode: W1 = Q·V trains through R only, Q stays orthogonal, the neurons\' energy stays put, freeze holds', () => {
  const c = config({ seed: 6, model: { experts: 3, hiddenUnits: 16, opt: true } });
  const m = newModel(c);
  const before = m.unitWeights(1);
  m.measure(new Set(), new Set());
  const e0 = m.extraMetrics();
  assert.deepEqual(Object.keys(e0).sort(), ['energy/expert0', 'energy/expert1', 'energy/expert2', 'orthogonality/expert0', 'orthogonality/expert1', 'orthogonality/expert2']);
  const first = m.trainStep({ ...batch(0), size: 32 }, { alpha: 0.01, trainable: [0, 2], pruned: new Set() });
  let last = first;
  for (let i = 1; i < 40; i++) {
    const { x, y } = batch(i);
    last = m.trainStep({ x, y, size: 32 }, { alpha: 0.01, trainable: [0, 2], pruned: new Set() }); // expert 1 frozen
    m.measure(new Set([1]), new Set());
    tf.dispose([x, y]);
  }
  const e1 = m.extraMetrics();
  assert.ok(last.taskLoss < first.taskLoss * 0.8, `loss ${first.taskLoss} → ${last.taskLoss}`);
  for (let i = 0; i < 3; i++) {
    assert.ok(e1[`orthogonality/expert${i}`] <= 1e-5, `‖QᵀQ − I‖ of expert ${i}: ${e1[`orthogonality/expert${i}`]}`);
    const drift = Math.abs(e1[`energy/expert${i}`] - e0[`energy/expert${i}`]) / e0[`energy/expert${i}`];
    assert.ok(drift <= 1e-4, `energy of expert ${i} moved by ${drift}`);
  }
  // The transform really moved for trained experts (W1 ≠ V), and not at all for the frozen one.
  assert.ok(m.unitWeights(0)[0].some((r) => r !== 0), 'R of a trained expert moved off zero');
  m.unitWeights(1).forEach((w, k) => assert.deepEqual(w, before[k], 'frozen expert bit-identical'));
  m.dispose();
});

test('hessian-trace L_f: measured without disturbing the weights, κ = L_f/μ, and usable by the regularizer', () => {
  const c = config({ seed: 2, monitor: { probeSize: 8, lipschitz: 'hessian-trace' } });
  const m = newModel(c);
  for (let i = 0; i < 5; i++) {
    const { x, y } = batch(i);
    m.trainStep({ x, y, size: 32 }, { alpha: 0, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
  }
  const before = [0, 1, 2].map((e) => m.unitWeights(e));
  const stats = m.measure(new Set(), new Set());
  [0, 1, 2].forEach((e) => m.unitWeights(e).forEach((w, k) => assert.deepEqual(w, before[e][k], 'weights restored bit for bit')));
  for (const s of stats) {
    if (s.mu === null) continue; // too few served examples
    assert.ok(s.lf! > 0 && Number.isFinite(s.lf), `L_f ${s.lf}`);
    assert.ok(Math.abs(s.kappa! - s.lf! / (s.mu + 1e-6 * s.lf!)) <= 1e-9 * s.kappa!);
  }
  const modelKappa = m.modelKappa()!;
  const { x, y } = batch(9);
  const r = m.trainStep({ x, y, size: 32 }, { alpha: 0.01, trainable: [0, 1, 2], pruned: new Set() });
  tf.dispose([x, y]);
  assert.ok(Number.isFinite(r.loss) && Math.abs(r.regularizer - modelKappa) <= 1e-3 * r.regularizer, `regularizer ${r.regularizer} vs the model κ measured before the step ${modelKappa}`);
  m.dispose();
});

test('a regularized step measures in its own graph: its κ̄ is what measure() finds on the weights it starts from, and measuring between steps changes nothing', () => {
  // Step 1: the step's reported regularizer is the model κ of a measurement of the weights it started
  // from, and the model holds that measurement afterwards (float32 kernels from the same ops).
  const m = newModel(config({ seed: 5 }));
  const measured = m.measure(new Set(), new Set());
  const want = m.modelKappa()!;
  const { x, y } = batch(3);
  const r = m.trainStep({ x, y, size: x.shape[0] }, { alpha: 0.05, trainable: [0, 1, 2], pruned: new Set() });
  assert.deepEqual(r.measured, measured, 'the in-step per-unit measurement is measure()\'s, to the bit');
  assert.ok(Math.abs(r.regularizer - want) <= 1e-4 * want, `in-step κ̄ ${r.regularizer} vs measure() before the step ${want}`);
  assert.ok(Math.abs(m.meanKappa([0, 1, 2]) - want) <= 1e-4 * want);
  assert.ok(typeof r.monitorMs === 'number' && r.monitorMs >= 0, 'the step reports what its measurement cost');
  assert.ok(m.measuresInStep, 'the loop need not measure between regularized steps');
  tf.dispose([x, y]);
  m.dispose();

  // So the trajectory does not depend on whether anyone measured between steps: bit-identical weights.
  const run = (measureBetween: boolean) => {
    const model = newModel(config({ seed: 6 }));
    for (let i = 0; i < 8; i++) {
      const b = batch(i);
      model.trainStep({ x: b.x, y: b.y, size: b.x.shape[0] }, { alpha: 0.05, trainable: [0, 2], pruned: new Set([1]) });
      if (measureBetween) model.measure(new Set(), new Set([1]));
      tf.dispose([b.x, b.y]);
    }
    const w = [0, 1, 2].map((i) => model.unitWeights(i));
    model.dispose();
    return w;
  };
  const [plain, measuredBetween] = [run(false), run(true)];
  plain.forEach((expert, i) => expert.forEach((w, k) => assert.deepEqual(w, measuredBetween[i][k], `expert ${i} tensor ${k}`)));
});

test('a regularized step leaves no tensors behind, with and without pruned experts', () => {
  const m = newModel(config({ seed: 7 }));
  const { x, y } = batch(1); // (batch() itself leaves its label intermediates behind: made once, before counting)
  const step = (pruned: Set<number>) => m.trainStep({ x, y, size: x.shape[0] }, { alpha: 0.05, trainable: [0, 1, 2].filter((i) => !pruned.has(i)), pruned });
  step(new Set()); // the optimizers create their slots on the first step
  step(new Set([1]));
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) step(new Set());
  for (let i = 0; i < 3; i++) step(new Set([1]));
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x, y]);
  m.dispose();
});

test('a probe the model fits with huge margins keeps a finite κ (directions from log-probabilities, not float32 softmax)', async () => {
  // Long runs get here: on the built-in data, probe examples reached margins of 30+ by step ~24k, where
  // float32 softmax − y rounds to 0, every kernel lost a row and every expert read κ = 1/δ.
  const c = config({ seed: 5 });
  const m = newModel(c);
  const x = imageTaskData(data).batch(tf, 'train', [0, 1, 2, 3, 4, 5, 6, 7]).x as tf.Tensor2D;
  const smallestMargin = () =>
    tf.tidy(() => Math.min(...(tf.topk(m.logits(x), 2).values.arraySync() as number[][]).map(([a, b]) => a - b)));
  // Scale every expert's output layer (the mixture's logits scale with it) to a smallest margin of 60.
  const scale = 60 / smallestMargin();
  const state = await m.getState();
  for (const [name, t] of Object.entries(state.variables)) if (/expert\d+\/(w2|b2)$/.test(name)) t.data = t.data.map((v) => v * scale);
  await m.setState(state);
  const margin = smallestMargin();
  assert.ok(margin > 40, `the test needs fitted examples past float32 softmax's reach: smallest margin ${margin}`);
  // Labels = the model's own predictions, so every probe example is fitted, by that margin.
  const logits = m.logits(x);
  const y = tf.oneHot(tf.argMax(logits, 1), 10).toFloat() as tf.Tensor2D;
  logits.dispose();
  m.setProbe({ x, y, size: 8 });
  const floor = 1 / c.monitor.damping;
  const stats = m.measure(new Set(), new Set());
  for (const s of stats) if (s.kappa !== null) assert.ok(s.mu! > 0 && s.kappa < floor / 10, `expert ${s.id}: μ ${s.mu}, κ ${s.kappa} (floor ${floor})`);
  assert.ok(stats.some((s) => s.kappa !== null), 'some expert serves enough of the probe');
  assert.ok(m.modelKappa()! < floor / 10, `model κ ${m.modelKappa()}`);
  // The regularized step measures the same way in its own graph.
  const b = batch(3);
  const r = m.trainStep({ ...b, size: 32 }, { alpha: 0.01, trainable: [0, 1, 2], pruned: new Set() });
  tf.dispose([b.x, b.y]);
  for (const s of r.measured ?? []) assert.ok(s.kappa! < floor / 10, `in-step: expert ${s.id}: κ ${s.kappa}`);
  assert.equal(r.measured?.length, 3);
  m.dispose();
});

test('OPT under α > 0: energy and orthogonality are measured afresh on every extraMetrics() call, not left at their values from before step 1', async () => {
  const { hypersphericalEnergy } = await import('../../src/trainer/pl');
  const c = config({ seed: 9, model: { experts: 3, hiddenUnits: 16, opt: true } });
  const m = newModel(c);
  m.measure(new Set(), new Set());
  const e0 = m.extraMetrics();
  // Regularized steps measure κ in their own graph: measure() is never called again.
  for (let i = 0; i < 6; i++) {
    const { x, y } = batch(i);
    m.trainStep({ x, y, size: 32 }, { alpha: 0.01, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
  }
  const e1 = m.extraMetrics();
  for (let i = 0; i < 3; i++) {
    const w = m.firstLayer(i);
    const now = hypersphericalEnergy(w.dataSync() as Float32Array, 196, 16);
    w.dispose();
    assert.equal(e1[`energy/expert${i}`], now, `expert ${i}: the energy of the current weights`);
  }
  // R moved off 0, so Q = Cayley(R) is no longer exactly I: a fresh ‖QᵀQ − I‖ differs from the first one.
  assert.ok([0, 1, 2].some((i) => e1[`orthogonality/expert${i}`] !== e0[`orthogonality/expert${i}`]), 'orthogonality re-measured');
  m.dispose();
});
