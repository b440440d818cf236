// The gating pruner trained inside the objective: its gradient against a float64 recomputation, the
// soft mask and schedule, the budget, frozen units, degenerate cases (all units equal, routing
// collapsed onto one unit, a gate saturated shut), its state, every family's ∂L/∂mask against finite
// differences through the real forward pass, and the planted problem of issue 11 on the real
// moe-mlp: one unit that carries most of the routing with an elevated κ and one unused unit that
// reads the lowest κ; the pruner must take the unused one.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig, type TrainingConfigInput } from '../../src/protocol';
import { createModel, loadTaskData, probeBatch } from '../../src/trainer/models';
import { MoeMlp } from '../../src/trainer/models/moeMlp';
import { FEATURE_NAMES, GatingPruner, unitWeightNorms, type PrunerSettings, type UnitMeasurement } from '../../src/trainer/pl/pruner';
import { mulberry32 } from '../support/prng';

before(async () => {
  await tf.setBackend('cpu');
});

const settings = (over: Partial<PrunerSettings> = {}): PrunerSettings => ({ enabled: true, warmup: 0, anneal: 100, budget: 0.5, kappaFactor: 10, keepCost: 0.05, exact: false, gateLearningRate: 0.02, ...over });
const none = new Set<number>();

/** Measurements with κ around 20 (±40 %), the listed units' κ multiplied, and the given shares. */
function measured(units: number, rnd: () => number, o: { kappaTimes?: Record<number, number>; share?: number[]; unmeasurable?: number[] } = {}): UnitMeasurement[] {
  return Array.from({ length: units }, (_, id) => {
    if (o.unmeasurable?.includes(id)) return { id, kappa: null, mu: null, lf: null, ...(o.share ? { share: o.share[id] } : {}) };
    const kappa = 20 * (0.6 + 0.8 * rnd()) * (o.kappaTimes?.[id] ?? 1);
    const lf = 5 * (0.8 + 0.4 * rnd());
    return { id, mu: lf / kappa, lf, kappa, ...(o.share ? { share: o.share[id] } : {}) };
  });
}

/**
 * Runs the anneal on a synthetic task loss whose gradient w.r.t. the mask is −s_e·g (a unit's mask
 * matters in proportion to its routing share s_e), returns the final decisions.
 */
function anneal(p: GatingPruner, meas: UnitMeasurement[], taskGrad: (mask: number[]) => number[], frozen: ReadonlySet<number> = none, pruned: ReadonlySet<number> = none): number[] {
  p.observe(meas, new Array(p.units).fill(1), pruned);
  for (let step = p.settings.warmup; step < p.settings.warmup + p.settings.anneal; step++) {
    const mask = p.sampleMask(step, frozen, pruned)!;
    p.update(taskGrad(mask), frozen, pruned);
  }
  assert.ok(p.isDecisionStep(p.settings.warmup + p.settings.anneal));
  return p.decide(frozen, pruned).sort();
}
const shareGrad = (share: number[], scale = 1) => () => share.map((s) => -scale * s);

/** The gate loss recomputed in float64 from the flattened weights (independent of TF.js). */
function gateLoss64(w: number[], phi: number[][], ghat: number[], cost: number[], trainable: boolean[], fixedKept: number, target: number, exact: boolean): number {
  const F = FEATURE_NAMES.length;
  const E = phi.length;
  const H = (w.length - 1 - E) / (F + 2);
  let task = 0, keepCost = 0, kept = fixedKept, decay = 0;
  for (let e = 0; e < E; e++) {
    let a = w[F * H + 2 * H] + w[F * H + 2 * H + 1 + e];
    for (let j = 0; j < H; j++) {
      let z = w[F * H + j];
      for (let f = 0; f < F; f++) z += phi[e][f] * w[f * H + j];
      a += Math.tanh(z) * w[F * H + H + j];
    }
    if (!trainable[e]) continue;
    const p = 1 / (1 + Math.exp(-a));
    task += ghat[e] * p;
    keepCost += cost[e] * p;
    kept += p;
    decay += (1e-3 * a * a) / E;
  }
  const gap = target - kept / E;
  let shared = 0; // weight decay on W1 and w2
  for (let k = 0; k < F * H; k++) shared += 1e-2 * w[k] * w[k];
  for (let k = F * H + H; k < F * H + 2 * H; k++) shared += 1e-2 * w[k] * w[k];
  return task + keepCost + 10 * (exact ? gap : Math.max(0, gap)) ** 2 + decay + shared;
}

test('the gate loss gradient (TF.js autodiff) matches central differences of a float64 recomputation', () => {
  for (const exact of [false, true]) {
    const rnd = mulberry32(3);
    const p = new GatingPruner(tf, 5, settings({ exact, budget: 0.4 }), 7);
    const meas = measured(5, rnd, { kappaTimes: { 2: 1e3 }, share: [0.4, 0.3, 0.2, 0.1, 0] });
    p.observe(meas, [1, 2, 3, 4, 5], none);
    p.observe(measured(5, rnd, { kappaTimes: { 2: 2e3 }, share: [0.35, 0.3, 0.25, 0.1, 0] }), [1.1, 2, 3, 4, 6], none); // trends ≠ 0
    const state = p.getState();
    const frozen = new Set([3]);
    const ghat = [-0.3, 0.1, -0.05, 0.7, 0.02];
    const { loss, grad } = p.lossAndGradient(ghat, frozen, none);
    const trainable = [true, true, true, false, true];
    const cost = state.excess.map((x) => (x + 0.05) / 5);
    assert.ok(state.excess[2] > 0 && state.excess[0] === 0, `excess ${state.excess}`);
    const f = (w: number[]) => gateLoss64(w, state.features!, ghat, cost, trainable, 1, 1 - 2 / 5, exact);
    assert.ok(Math.abs(f(state.weights) - loss) < 1e-5 * (1 + Math.abs(loss)), `loss ${loss} vs float64 ${f(state.weights)}`);
    for (let k = 0; k < p.weightCount; k++) {
      const h = 1e-6;
      const up = [...state.weights], down = [...state.weights];
      up[k] += h;
      down[k] -= h;
      const fd = (f(up) - f(down)) / (2 * h);
      assert.ok(Math.abs(fd - grad[k]) <= 2e-5 + 2e-3 * Math.abs(fd), `exact ${exact}, weight ${k}: autodiff ${grad[k]} vs float64 difference ${fd}`);
    }
  }
});

test('the soft mask: only during the anneal, 1 for frozen, 0 for pruned, temperature 1 → 0.05; decisions at its end', () => {
  const p = new GatingPruner(tf, 4, settings({ warmup: 10, anneal: 20 }), 1);
  assert.equal(p.sampleMask(10, none, none), undefined, 'no features yet: unmasked');
  p.observe(measured(4, mulberry32(1)), [1, 1, 1, 1], none);
  assert.equal(p.sampleMask(9, none, none), undefined, 'warm-up: unmasked');
  assert.equal(p.sampleMask(30, none, none), undefined, 'after the anneal: unmasked');
  const mask = p.sampleMask(10, new Set([1]), new Set([2]))!;
  assert.equal(mask[1], 1);
  assert.equal(mask[2], 0);
  assert.ok(mask[0] > 0 && mask[0] <= 1 && mask[3] > 0 && mask[3] <= 1);
  assert.ok(Math.abs(p.temperature(10) - 1) < 1e-12 && Math.abs(p.temperature(29) - 0.05) < 1e-12 && p.temperature(20) < 1 && p.temperature(20) > 0.05);
  assert.deepEqual([29, 30, 31].map((s) => p.isDecisionStep(s)), [false, true, false]);
  // At a low temperature the sample is (nearly) hard, and P(m > ½) = σ(a): the open gate keeps ~95 %.
  const q = new GatingPruner(tf, 4, settings({ warmup: 0, anneal: 2 }), 2);
  q.observe(measured(4, mulberry32(2)), [1, 1, 1, 1], none);
  let open = 0;
  for (let k = 0; k < 400; k++) open += q.sampleMask(1, none, none)!.filter((m) => m > 0.5).length;
  const expected = q.keepProbabilities(none, none).reduce((a, b) => a + b, 0) * 400;
  assert.ok(Math.abs(open - expected) < 4 * Math.sqrt(expected * 0.1), `open ${open} vs expected ${expected.toFixed(0)}`);
  const off = new GatingPruner(tf, 4, settings({ enabled: false }));
  off.observe(measured(4, mulberry32(1)), [1, 1, 1, 1], none);
  assert.equal(off.sampleMask(0, none, none), undefined);
  assert.equal(off.isDecisionStep(100), false);
  assert.deepEqual(off.decide(none, none), []);
});

test('unused units go, used ones stay; the budget caps it; exact mode prunes exactly ⌊budget·E⌋', () => {
  const share = [0.4, 0, 0.3, 0, 0.3, 0];
  // Three unused units, budget 2 of 6: two go, both unused.
  const p = new GatingPruner(tf, 6, settings({ budget: 1 / 3 }), 3);
  const gone = anneal(p, measured(6, mulberry32(4), { share }), shareGrad(share));
  assert.equal(gone.length, 2, `pruned ${gone}`);
  assert.ok(gone.every((u) => share[u] === 0), `pruned ${gone}`);
  // Budget 0.5: the three unused go and none of the used.
  const q = new GatingPruner(tf, 6, settings({ budget: 0.5 }), 3);
  assert.deepEqual(anneal(q, measured(6, mulberry32(4), { share }), shareGrad(share)), [1, 3, 5]);
  // Exact at 4 of 6: the three unused and the least used of the rest.
  const share2 = [0.45, 0, 0.35, 0, 0.2, 0];
  const r = new GatingPruner(tf, 6, settings({ budget: 4 / 6, exact: true }), 3);
  assert.deepEqual(anneal(r, measured(6, mulberry32(4), { share: share2 }), shareGrad(share2)), [1, 3, 4, 5]);
});

test('frozen units are never pruned (mask 1 throughout), even unused and ill-conditioned; one unit always stays', () => {
  const share = [0.5, 0, 0.5, 0];
  const frozen = new Set([1]);
  const p = new GatingPruner(tf, 4, settings({ budget: 0.75 }), 5);
  const meas = measured(4, mulberry32(6), { share, kappaTimes: { 1: 1e5 } });
  p.observe(meas, [1, 1, 1, 1], none);
  for (let step = 0; step < 100; step++) {
    const mask = p.sampleMask(step, frozen, none)!;
    assert.equal(mask[1], 1);
    p.update(shareGrad(share)(), frozen, none);
  }
  const gone = p.decide(frozen, none);
  assert.ok(!gone.includes(1), `pruned ${gone}`);
  assert.deepEqual(gone, [3]);
  // A gate saturated shut (every p ≈ 0) with every unit but one frozen: the last trainable stays.
  const q = new GatingPruner(tf, 3, settings({ budget: 0.95, exact: true }), 6);
  q.observe(measured(3, mulberry32(7)), [1, 1, 1], none);
  q.setWeight(q.outputBiasIndex, -50);
  assert.deepEqual(q.decide(new Set([0, 1]), none), []);
  // Saturated shut with nothing frozen: at most the budget, and never every unit.
  const r = new GatingPruner(tf, 4, settings({ budget: 0.95 }), 6);
  r.observe(measured(4, mulberry32(7)), [1, 1, 1, 1], none);
  r.setWeight(r.outputBiasIndex, -50);
  assert.equal(r.decide(none, none).length, 3);
  assert.deepEqual(r.decide(none, new Set([0, 1, 2])), [], 'budget used up');
});

test('degenerate: all units equal → nothing pruned (exact: any ⌊budget·E⌋); routing collapsed onto one unit → that one stays', () => {
  const same: UnitMeasurement[] = Array.from({ length: 4 }, (_, id) => ({ id, kappa: 30, mu: 0.1, lf: 3, share: 0.25 }));
  const p = new GatingPruner(tf, 4, settings({ budget: 0.5 }), 8);
  assert.deepEqual(anneal(p, same, shareGrad([0.25, 0.25, 0.25, 0.25])), []);
  // Exact: two go, whichever the noise of the relaxation singled out (nothing else tells them apart).
  const q = new GatingPruner(tf, 4, settings({ budget: 0.5, exact: true }), 8);
  assert.equal(anneal(q, same, shareGrad([0.25, 0.25, 0.25, 0.25])).length, 2);
  // Collapsed routing: unit 2 carries everything; the dead ones read not measurable (or the lowest κ).
  for (const unmeasurable of [[0, 1, 3], []]) {
    const share = [0, 0, 1, 0];
    const r = new GatingPruner(tf, 4, settings({ budget: 0.75 }), 9);
    const meas = measured(4, mulberry32(10), { share, unmeasurable, ...(unmeasurable.length ? {} : { kappaTimes: { 0: 0.1, 1: 0.1, 3: 0.1 } }) });
    assert.deepEqual(anneal(r, meas, shareGrad(share)), [0, 1, 3], `unmeasurable ${unmeasurable}`);
  }
});

test('a unit that carries most of the routing goes only when ill-conditioned (κ > kappaFactor × median)', () => {
  const share = [0.7, 0, 0.15, 0.15];
  // κ 5× the median: elevated, not ill-conditioned. Budget 1: the unused unit goes.
  const p = new GatingPruner(tf, 4, settings({ budget: 0.25 }), 11);
  assert.deepEqual(anneal(p, measured(4, mulberry32(12), { share, kappaTimes: { 0: 5, 1: 0.1 } }), shareGrad(share, 0.3)), [1]);
  // κ 10⁴× the median: ill-conditioned; with room for two, it goes too.
  const q = new GatingPruner(tf, 4, settings({ budget: 0.5 }), 11);
  const gone = anneal(q, measured(4, mulberry32(12), { share, kappaTimes: { 0: 1e4, 1: 0.1 } }), shareGrad(share, 0.3));
  assert.deepEqual(gone, [0, 1], `keep-probabilities ${q.keepProbabilities(none, none).map((x) => x.toFixed(3))}`);
});

test('state round trip: a restored pruner samples, learns and decides like the original', () => {
  const share = [0.5, 0.3, 0.2, 0, 0];
  const a = new GatingPruner(tf, 5, settings(), 5);
  a.observe(measured(5, mulberry32(12), { share }), [1, 2, 3, 4, 5], none);
  for (let s = 0; s < 10; s++) {
    a.sampleMask(s, none, none);
    a.update(shareGrad(share)(), none, none);
  }
  const b = new GatingPruner(tf, 5, settings(), 99);
  b.setState(JSON.parse(JSON.stringify(a.getState())));
  const next = measured(5, mulberry32(13), { share });
  a.observe(next, [1, 2, 3, 4, 5], none);
  b.observe(next, [1, 2, 3, 4, 5], none);
  for (let s = 10; s < 20; s++) {
    assert.deepEqual(b.sampleMask(s, none, none), a.sampleMask(s, none, none));
    a.update(shareGrad(share)(), none, none);
    b.update(shareGrad(share)(), none, none);
  }
  assert.deepEqual(b.keepProbabilities(none, none), a.keepProbabilities(none, none));
  assert.throws(() => new GatingPruner(tf, 4, settings()).setState(a.getState()), /does not fit/);
});

function parse(input: TrainingConfigInput): TrainingConfig {
  const r = parseTrainingConfig(input);
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const FAMILIES: Record<string, TrainingConfigInput> = {
  'moe-mlp': { model: { family: 'moe-mlp', experts: 3, hiddenUnits: 8 } },
  'switch-transformer': { model: { family: 'switch-transformer', experts: 3, dModel: 8, layers: 2, hiddenUnits: 8, contextLength: 8 }, data: { source: 'text' } },
  'bert-encoder': { model: { family: 'bert-encoder', experts: 2, dModel: 8, layers: 1, hiddenUnits: 8 } },
  vgg: { model: { family: 'vgg', experts: 2, hiddenUnits: 2, layers: 2 } },
};

test("every family: mask 1 ≡ unmasked, mask 0 ≡ pruned, and the step's ∂L/∂mask matches central differences", () => {
  for (const [family, input] of Object.entries(FAMILIES)) {
    const config = parse({ ...input, learningRate: 0.01, monitor: { probeSize: 4 }, alpha: 0 });
    const data = loadTaskData(config, '.');
    const batch = () => data.batch(tf, 'train', Int32Array.from({ length: 8 }, (_, k) => 3 * k));
    // Identically seeded models, one step each from the same weights: the loss reported is the loss before the update.
    const lossAt = (o: { softMask?: number[]; pruned?: Set<number> }) => {
      const m = createModel(tf, config, data);
      m.setProbe(probeBatch(tf, config, data));
      const b = batch();
      const r = m.trainStep(b, { alpha: 0, trainable: [], pruned: o.pruned ?? none, ...(o.softMask ? { softMask: o.softMask } : {}) });
      tf.dispose([b.x, b.y]);
      m.dispose();
      return r;
    };
    const E = config.model.experts;
    const plain = lossAt({});
    const ones = lossAt({ softMask: new Array(E).fill(1) });
    assert.ok(Math.abs(ones.taskLoss - plain.taskLoss) < 1e-5, `${family}: mask 1 ${ones.taskLoss} vs unmasked ${plain.taskLoss}`);
    assert.equal(plain.maskGrad, undefined);
    const zero = lossAt({ softMask: [0, ...new Array(E - 1).fill(1)] });
    const prunedLoss = lossAt({ pruned: new Set([0]) });
    assert.ok(Math.abs(zero.taskLoss - prunedLoss.taskLoss) < 1e-5, `${family}: mask 0 ${zero.taskLoss} vs pruned ${prunedLoss.taskLoss}`);
    const at = Array.from({ length: E }, (_, i) => 0.5 + 0.15 * i);
    const g = lossAt({ softMask: at }).maskGrad!;
    assert.equal(g.length, E);
    for (let i = 0; i < E; i++) {
      // Small enough that no top-1 routing decision flips (switch-transformer), large for float32.
      const h = 2e-3;
      const up = [...at], down = [...at];
      up[i] += h;
      down[i] -= h;
      // The step's objective: the task loss, plus switch-transformer's load-balancing term (α = 0).
      const fd = (lossAt({ softMask: up }).loss - lossAt({ softMask: down }).loss) / (2 * h);
      assert.ok(Math.abs(fd - g[i]) <= 2e-3 + 0.03 * Math.abs(fd), `${family} unit ${i}: ∂L/∂m ${g[i]} vs central difference ${fd}`);
    }
  }
});

// The planted problem of issue 11, item 6, on the real moe-mlp: expert 0 carries most of the routing
// (gate bias +2) and reads a κ 5× the median, elevated but not ill-conditioned; expert 1 is unused
// (gate bias −30: p ≈ 1e-13) and reads the lowest κ, as the ungated per-expert kernel made it read
// before. The old pruner, fed κ alone, removed the used experts. The measurements are planted (κ is
// not what is tested here); the task loss the gate learns from is the model's own.
test('planted problem: the pruner removes the unused expert and keeps the used one with the elevated κ', () => {
  const config = parse({ model: { family: 'moe-mlp', experts: 3, hiddenUnits: 16 }, learningRate: 0.01, monitor: { probeSize: 8 }, pruning: { enabled: true, warmup: 30, anneal: 100, budget: 1 / 3 } });
  const data = loadTaskData(config, '.');
  const m = new MoeMlp(tf, data.features, data.classes, config);
  m.setProbe(probeBatch(tf, config, data));
  m.gateB.assign(tf.tensor1d([2, -30, 0]));
  const pruner = new GatingPruner(tf, 3, config.pruning, config.seed);
  const rnd = mulberry32(21);
  const pruned = new Set<number>();
  const all = [0, 1, 2];
  let shares: number[] = [];
  for (let step = 0; step < 130; step++) {
    if (step % 10 === 0) {
      // The routing share on the probe, from the model's gate.
      shares = Array.from(tf.tidy(() => tf.mean(tf.softmax(tf.add(tf.matMul(m['probeX']!, m.gateW as unknown as tf.Tensor2D), m.gateB)), 0).dataSync()));
      // The expert that carries most of the routing now reads κ 5× the others'; the unused one the lowest.
      const top = shares.indexOf(Math.max(...shares));
      const meas = measured(3, rnd, { share: shares, kappaTimes: { [top]: 5, 1: 0.1 } });
      pruner.observe(meas, unitWeightNorms(3, (i) => m.unitWeights(i)), pruned);
    }
    const b = data.batch(tf, 'train', Int32Array.from({ length: 32 }, (_, k) => (step * 32 + k) % data.trainSize));
    const softMask = pruner.sampleMask(step, none, pruned);
    const r = m.trainStep(b, { alpha: 0, trainable: all, pruned, ...(softMask ? { softMask } : {}) });
    tf.dispose([b.x, b.y]);
    if (softMask) pruner.update(r.maskGrad!, none, pruned);
  }
  assert.ok(Math.max(...shares) > 0.4 && shares[1] < 1e-6, `planted shares ${shares.map((s) => s.toFixed(3))}`);
  assert.ok(pruner.isDecisionStep(130));
  const keep = pruner.decisionKeepProbabilities(none, pruned);
  assert.deepEqual(pruner.decide(none, pruned), [1], `keep-probabilities ${keep.map((p) => p.toFixed(2))}`);
  assert.ok(keep[1] < 0.5 && keep.filter((p) => p >= 0.5).length === 2, `the decisions read these: ${keep}`);
  m.dispose();
});
