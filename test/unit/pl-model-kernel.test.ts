// The model's kernel and each unit's kernel as the model uses it (docs/method.md, "Definitions
// (contract)"), for the soft mixture (moe-mlp): the trainer's float32 kernels against explicit float64
// Jacobians of the whole model's output, each expert's κ over the examples it serves, the regularizer's
// gradient (through u, the gate and the output biases) against finite differences of the float64 κ,
// and the degenerate cases: a dead expert, a nearly singular kernel.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { inactiveShareThreshold, MIN_SERVED, parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { MoeMlp, servedExamples } from '../../src/trainer/models/moeMlp';
import { conditioning, dampedKappa, gramOfJacobian, kappaSurrogateTf, participationRatio, ShareWatch, symmetricEigen } from '../../src/trainer/pl';
import { closedFormKernels, directions64, explicitJacobian, groupArray, modelKappa64, moeForward64, PARAM_GROUPS, type MoeParams } from '../support/moeReference';
import { centralDifference, gaussian, relativeFrobenius } from '../support/linalg';
import { mulberry32 } from '../support/prng';

before(async () => {
  await tf.setBackend('cpu');
});

const [D, H, C, E, N] = [6, 5, 3, 3, 8];

function config(over: object = {}): TrainingConfig {
  const r = parseTrainingConfig({ model: { experts: E, hiddenUnits: H }, monitor: { probeSize: N }, ...over });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

interface Setup {
  model: MoeMlp;
  params: MoeParams;
  x: Float64Array;
  y: Float64Array;
}

/**
 * A small mixture with random float32 weights (read back into the float64 reference, so both see the
 * same numbers) and a random probe. `gateBias` plants gate logits (a dead expert: −30).
 */
function setup(seed: number, gateBias: number[] = [0, 0, 0], damping = 1e-6): Setup {
  const rnd = mulberry32(seed);
  const f32 = (len: number, scale: number) => Float32Array.from({ length: len }, () => gaussian(rnd) * scale);
  const model = new MoeMlp(tf, D, C, config({ seed, monitor: { probeSize: N, damping } }));
  model.gateW.assign(tf.tensor2d(f32(D * E, 0.8), [D, E]));
  model.gateB.assign(tf.tensor1d(Float32Array.from(gateBias)));
  model.experts.forEach((e) => {
    e.w1.assign(tf.tensor2d(f32(D * H, 0.7), [D, H]));
    e.b1.assign(tf.tensor1d(f32(H, 0.3)));
    e.w2.assign(tf.tensor2d(f32(H * C, 0.7), [H, C]));
    e.b2.assign(tf.tensor1d(f32(C, 0.3)));
  });
  const x = Float64Array.from(f32(N * D, 1));
  const y = new Float64Array(N * C);
  for (let i = 0; i < N; i++) y[i * C + (i % C)] = 1;
  model.setProbe({ x: tf.tensor2d(Float32Array.from(x), [N, D]), y: tf.tensor2d(Float32Array.from(y), [N, C]), size: N });
  const read = (v: tf.Variable) => Float64Array.from(v.dataSync());
  const params: MoeParams = {
    d: D,
    h: H,
    c: C,
    experts: E,
    gateW: read(model.gateW),
    gateB: read(model.gateB),
    w1: model.experts.map((e) => read(e.w1)),
    b1: model.experts.map((e) => read(e.b1)),
    w2: model.experts.map((e) => read(e.w2)),
    b2: model.experts.map((e) => read(e.b2)),
  };
  return { model, params, x, y };
}

/** Smallest |pre-activation| on the probe: central differences of step h must not cross a ReLU kink. */
function kinkDistance(s: Setup): number {
  return Math.min(...Array.from(moeForward64(s.params, s.x, N).pre, Math.abs));
}

const expertGroups = (e: number) => (['w1', 'b1', 'w2', 'b2'] as const).map((group) => ({ group, e }));
const gateGroups = [{ group: 'gateW' as const, e: 0 }, { group: 'gateB' as const, e: 0 }];

test('moe-mlp kernels equal J·Jᵀ of explicit float64 Jacobians of the whole model: each gated expert, the gate, and their sum', () => {
  const s = setup(11);
  assert.ok(kinkDistance(s) > 1e-4, `precondition: no pre-activation within the difference step of a kink (${kinkDistance(s)})`);
  s.model.measure(new Set(), new Set());
  const got = s.model.lastKernels!;
  const u = directions64(s.params, s.x, s.y, N);
  const closed = closedFormKernels(s.params, s.x, u, N);
  const explicit = (groups: { group: (typeof PARAM_GROUPS)[number]; e: number }[]) => {
    const { j, p } = explicitJacobian(s.params, s.x, u, N, groups);
    return gramOfJacobian(j, N, p);
  };
  for (let e = 0; e < E; e++) {
    const K = explicit(expertGroups(e));
    assert.ok(relativeFrobenius(closed.units[e], K) <= 1e-7, `closed form of expert ${e} vs explicit: ${relativeFrobenius(closed.units[e], K)}`);
    assert.ok(relativeFrobenius(got.units[e], K) <= 1e-4, `trainer's K_${e} vs explicit: ${relativeFrobenius(got.units[e], K)}`);
  }
  const Kg = explicit(gateGroups);
  assert.ok(relativeFrobenius(closed.gate, Kg) <= 1e-7, `closed-form gate kernel vs explicit: ${relativeFrobenius(closed.gate, Kg)}`);
  assert.ok(relativeFrobenius(got.gate, Kg) <= 1e-4, `trainer's gate kernel vs explicit: ${relativeFrobenius(got.gate, Kg)}`);
  const all = explicit([...gateGroups, ...[0, 1, 2].flatMap(expertGroups)]);
  assert.ok(relativeFrobenius(got.model, all) <= 1e-4, `model kernel vs J·Jᵀ of the whole Jacobian: ${relativeFrobenius(got.model, all)}`);
  // The model's κ (the reported regularizer) is that kernel's, float64 eigen-solve.
  const ref = conditioning(all, N, 1e-6);
  assert.ok(Math.abs(s.model.modelKappa()! - ref.kappa) <= 1e-3 * ref.kappa, `model κ ${s.model.modelKappa()} vs ${ref.kappa}`);
  // A frozen expert is out of the model's kernel (its parameters do not train).
  s.model.measure(new Set([1]), new Set());
  const frozenOut = explicit([...gateGroups, ...expertGroups(0), ...expertGroups(2)]);
  assert.ok(relativeFrobenius(s.model.lastKernels!.model, frozenOut) <= 1e-4);
  s.model.dispose();
});

test('each expert\'s κ is its gated kernel over the probe examples it serves (p_e ≥ 1/(2E)); fewer than MIN_SERVED reads null', () => {
  const s = setup(12, [0.5, 0, -1.2]);
  const stats = s.model.measure(new Set(), new Set());
  const u = directions64(s.params, s.x, s.y, N);
  const closed = closedFormKernels(s.params, s.x, u, N);
  let measuredSome = false;
  for (let e = 0; e < E; e++) {
    const served = servedExamples(closed.p, N, E, e);
    assert.equal(stats[e].served, served.length, `expert ${e} served`);
    if (served.length < MIN_SERVED) {
      assert.deepEqual([stats[e].mu, stats[e].lf, stats[e].kappa], [null, null, null], `expert ${e} serves ${served.length}: not measurable`);
      continue;
    }
    measuredSome = true;
    const sub = Float64Array.from({ length: served.length ** 2 }, (_, k) => closed.units[e][served[Math.floor(k / served.length)] * N + served[k % served.length]]);
    const ref = conditioning(sub, served.length, 1e-6);
    assert.ok(Math.abs(stats[e].lf! - ref.lf) <= 1e-4 * ref.lf, `expert ${e} L_f ${stats[e].lf} vs ${ref.lf}`);
    assert.ok(Math.abs(stats[e].mu! - ref.mu) <= 1e-4 * ref.lf, `expert ${e} μ ${stats[e].mu} vs ${ref.mu}`);
    assert.ok(Math.abs(stats[e].kappa! - ref.kappa) <= 1e-3 * ref.kappa, `expert ${e} κ ${stats[e].kappa} vs ${ref.kappa}`);
    assert.equal(stats[e].kappa, dampedKappa(stats[e].lf!, stats[e].mu!, 1e-6));
  }
  assert.ok(measuredSome, 'the planted gate leaves at least one expert measurable');
  assert.ok(stats.some((st) => st.kappa === null), 'and at least one below MIN_SERVED');
  // A pruned expert gets no gate mass: it serves nothing.
  const pruned = s.model.measure(new Set(), new Set([0]));
  assert.equal(pruned[0].served, 0);
  assert.equal(pruned[0].kappa, null);
  s.model.dispose();
});

test('a planted dead expert (gate logit −30, p ≈ 1e-13) reads not measurable and inactive, never best conditioned; the others stay active', () => {
  const s = setup(13, [0, 0, -30]);
  const stats = s.model.measure(new Set(), new Set());
  assert.equal(stats[2].served, 0);
  assert.equal(stats[2].kappa, null, 'no number for an expert the model does not use');
  const numbers = stats.filter((st) => st.kappa !== null).map((st) => st.kappa!);
  assert.ok(numbers.length === 2 && numbers.every((k) => k >= 1 / 2), 'the live experts have κ');
  // Its share on a batch, from the step's own gate, is ≈ 0: flagged inactive by the share EMA.
  const watch = new ShareWatch(E);
  const rnd = mulberry32(5);
  for (let k = 0; k < 3; k++) {
    const x = tf.tensor2d(Float32Array.from({ length: 32 * D }, () => gaussian(rnd)), [32, D]);
    const y = tf.oneHot(tf.tensor1d(Int32Array.from({ length: 32 }, (_, i) => i % C), 'int32'), C).toFloat() as tf.Tensor2D;
    const r = s.model.trainStep({ x, y, size: 32 }, { alpha: 0.01, trainable: [0, 1, 2], pruned: new Set() });
    tf.dispose([x, y]);
    assert.ok(r.shares && Math.abs(r.shares.reduce((a, b) => a + b, 0) - 1) <= 1e-5, 'shares sum to 1');
    assert.ok(r.shares![2] < 1e-9, `dead expert's share ${r.shares![2]}`);
    watch.observe(r.shares!);
    assert.equal(r.measured![2].kappa, null, 'in-step measurement agrees: not measurable');
  }
  const annotated = watch.annotate(stats, new Set());
  assert.deepEqual(annotated.map((u) => u.active), [true, true, false]);
  assert.ok(annotated[2].share! < inactiveShareThreshold(E));
  assert.deepEqual(watch.changes(annotated), [{ id: 2, active: false, ema: watch.ema![2] }], 'one inactive episode');
  assert.deepEqual(watch.changes(annotated), [], 'reported once');
  s.model.dispose();
});

test('participation ratio: 1/Σshare², E for uniform routing, 1 for collapse', () => {
  assert.equal(participationRatio([0.25, 0.25, 0.25, 0.25]), 4);
  assert.equal(participationRatio([1, 0, 0, 0]), 1);
  assert.ok(Math.abs(participationRatio([0.5, 0.5, 0, 0]) - 2) <= 1e-15);
});

/** Largest relative gap of the extreme eigenvalues to their neighbours (Hellmann–Feynman needs simple ones). */
function extremeGaps(K: Float64Array, n: number): number {
  const v = symmetricEigen(K, n).values;
  return Math.min((v[1] - v[0]) / v[n - 1], (v[n - 1] - v[n - 2]) / v[n - 1]);
}

test('the regularizer\'s gradient is the gradient of the reported κ(K): through u, the gate and the output biases (central differences of the float64 κ)', () => {
  const s = setup(14);
  const trainable = [0, 1, 2];
  const ref = modelKappa64(s.params, s.x, s.y, N, trainable, 1e-6);
  assert.ok(extremeGaps(ref.K, N) > 0.01, `precondition: simple extreme eigenvalues (gap ${extremeGaps(ref.K, N)})`);
  const step = 1e-6;
  assert.ok(kinkDistance(s) > 10 * step, 'precondition: no kink within the difference step');
  const { value, grads } = s.model.regularizerGradients(trainable, new Set());
  assert.ok(Math.abs(value - ref.kappa) <= 1e-3 * ref.kappa, `κ̃ ${value} vs float64 κ ${ref.kappa}`);
  const rnd = mulberry32(99);
  let worst = 0;
  for (const group of PARAM_GROUPS) {
    for (const e of group.startsWith('gate') ? [0] : [0, 1, 2]) {
      const name = group === 'gateW' ? 'gate/w' : group === 'gateB' ? 'gate/b' : `expert${e}/${group}`;
      const g = grads[name];
      const rms = Math.sqrt(g.reduce((a, b) => a + b * b, 0) / g.length);
      assert.ok(rms > 0, `${name} gets regularizer gradient`);
      for (let t = 0; t < 4; t++) {
        const k = Math.floor(rnd() * g.length);
        const arr = groupArray(s.params, group, e);
        const fd = centralDifference(arr, k, step, () => modelKappa64(s.params, s.x, s.y, N, trainable, 1e-6).kappa);
        const err = Math.abs(g[k] - fd) / Math.max(Math.abs(fd), rms);
        worst = Math.max(worst, err);
        assert.ok(err <= 2e-3, `${name}[${k}]: tf ${g[k]} vs central difference ${fd} (rms ${rms})`);
      }
    }
  }
  s.model.dispose();
});

test('smooth damping passes a nearly singular kernel a gradient (λ_min = δ·λ_max/10, where max(λ_min, δ·λ_max) passes none)', () => {
  // K = A·Aᵀ with A = Q·diag(σ) (Q orthogonal, n×n): λ = σ², planted so λ_min is a tenth of δ·λ_max.
  const n = 5;
  const delta = 1e-2;
  const rnd = mulberry32(7);
  const { vectors: Q } = symmetricEigen(Float64Array.from({ length: n * n }, (_, k) => {
    const [i, j] = [Math.floor(k / n), k % n];
    return i === j ? 1 + rnd() : 0.1 * (rnd() + rnd());
  }), n);
  const lambdas = [0.1 * delta * 4, 0.6, 1.3, 2.2, 4];
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = Q[i * n + j] * Math.sqrt(lambdas[j]);
  const kappa64 = (m: Float64Array) => {
    const K = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let t = 0; t < n; t++) K[i * n + j] += m[i * n + t] * m[j * n + t];
    return conditioning(K, n, delta);
  };
  const c0 = kappa64(a);
  assert.ok(c0.mu < delta * c0.lf, 'below the hard floor');
  const A = tf.variable(tf.tensor2d(Float32Array.from(a), [n, n]));
  const { grads } = tf.variableGrads(() => kappaSurrogateTf(tf.matMul(A, A, false, true) as tf.Tensor2D, c0.vMin, c0.vMax, delta), [A]);
  const g = grads[A.name].dataSync() as Float32Array;
  const rms = Math.sqrt(g.reduce((s2, v) => s2 + v * v, 0) / g.length);
  assert.ok(rms > 1, `a gradient, not zero (rms ${rms})`);
  for (let k = 0; k < n * n; k += 3) {
    const h = 1e-6;
    const p = a.slice();
    p[k] += h;
    const m = a.slice();
    m[k] -= h;
    const fd = (kappa64(p).kappa - kappa64(m).kappa) / (2 * h);
    assert.ok(Math.abs(g[k] - fd) <= 1e-3 * Math.max(Math.abs(fd), rms), `A[${k}]: ${g[k]} vs ${fd}`);
  }
  tf.dispose([A, ...Object.values(grads)]);
});
