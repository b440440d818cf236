// The routerless families' fast probe kernels (one tapped pass: per-sample J = activation ⊗ δ per linear
// map, RouterlessClassifier.probeJacobians) against the per-sample reference (perSampleKernels: one
// backward pass per probe example), with a pruned unit (measured restored) and a dead unit (K = 0); and
// the regularized step, which measures in its own graph, against the separately tested path: measure() then modelKappaTf. The kernels and
// modelKappaTf are held to float64 finite differences in model-bert-encoder.test.ts / model-vgg.test.ts.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { classifierUnitKernels, outputDirections } from '../../src/trainer/pl';
import { imageTaskData, loadBuiltin } from '../../src/trainer/data';
import { BertEncoder } from '../../src/trainer/models/bertEncoder';
import { VggNet } from '../../src/trainer/models/vgg';
import type { RouterlessClassifier } from '../../src/trainer/models/routerlessClassifier';
import type { Batch, TaskData } from '../../src/trainer/models/types';
import { relativeFrobenius } from '../support/linalg';

let builtin: TaskData;
before(async () => {
  await tf.setBackend('cpu');
  builtin = imageTaskData(loadBuiltin());
});

type Family = 'bert-encoder' | 'vgg';
const MODEL: Record<Family, object> = {
  'bert-encoder': { family: 'bert-encoder', experts: 3, dModel: 6, layers: 2, hiddenUnits: 8 },
  vgg: { family: 'vgg', experts: 3, hiddenUnits: 2, layers: 2 },
};

function config(family: Family, seed = 1): TrainingConfig {
  const r = parseTrainingConfig({ model: MODEL[family], learningRate: 0.01, monitor: { probeSize: 6 }, seed });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, k) => from + k);

function setUp(family: Family, seed = 1): { m: RouterlessClassifier; probe: Batch; batch: Batch } {
  const c = config(family, seed);
  const m = family === 'vgg' ? new VggNet(tf, c, builtin) : new BertEncoder(tf, c, builtin);
  const probe = builtin.batch(tf, 'train', range(0, c.monitor.probeSize));
  m.setProbe(builtin.batch(tf, 'train', range(0, c.monitor.probeSize)));
  const all = [0, 1, 2];
  for (let i = 0; i < 3; i++) {
    const b = builtin.batch(tf, 'train', range(40 + 16 * i, 16));
    m.trainStep(b, { alpha: 0, trainable: all, pruned: new Set() });
    tf.dispose([b.x, b.y]);
  }
  return { m, probe, batch: builtin.batch(tf, 'train', range(200, 12)) };
}

/** Unit 2 made dead: every variable it owns set to 0 (its output and every derivative through it vanish). */
function killUnit2(m: RouterlessClassifier): void {
  for (const v of m.unitVars(2)) v.assign(tf.zerosLike(v));
}

for (const family of ['bert-encoder', 'vgg'] as Family[]) {
  test(`${family}: the tapped pass's kernels equal the per-sample reference (pruned unit restored, dead unit 0)`, () => {
    const { m, probe, batch } = setUp(family);
    killUnit2(m);
    const pruned = new Set([1]);
    const stats = m.measure(new Set(), pruned);
    const fast = m.unitKernels(pruned);
    const n = probe.size;
    // The reference with the same u: recomputed from the pruned model's logits, as measure() does.
    const logProbs = tf.tidy(() => tf.logSoftmax(m.logits(probe.x, pruned)).dataSync());
    const probeU = outputDirections(logProbs, probe.y.dataSync(), n, m.classes);
    const reference = classifierUnitKernels(tf, { probeX: probe.x, probeU, classes: m.classes, units: m.units, logits: (x, mask) => m.logits(x, mask), unitVars: (u) => m.unitVars(u) }, pruned);
    for (const u of [0, 1]) {
      const err = relativeFrobenius(fast[u], reference[u]);
      assert.ok(err <= 1e-5, `unit ${u}: relative error ${err}`);
      assert.ok(fast[u].some((x) => x !== 0), `unit ${u} has a kernel`);
    }
    assert.ok(fast[2].every((x) => x === 0) && reference[2].every((x) => x === 0), 'a dead unit has K = 0 in both');
    // The dead unit: λ_max = 0, so κ sits at its cap 1/δ (contract 5); the pruned one is null.
    assert.equal(stats[2].kappa, 1 / m['config'].monitor.damping);
    assert.deepEqual([stats[1].kappa, stats[1].share, stats[1].served], [null, 0, 0]);
    tf.dispose([probe.x, probe.y, batch.x, batch.y]);
    m.dispose();
  });

  test(`${family}: the regularized step's gradient (measured in the step) is ∇L_S + α·∇ of modelKappaTf after measure()`, () => {
    const { m, probe, batch } = setUp(family, 3);
    const frozen = new Set([2]);
    const trainable = [0, 1];
    const alpha = 0.5;
    const o = { alpha, trainable, pruned: new Set<number>() };
    // The separately tested path at the same weights: measure(), then ∇κ̃ along its eigenvectors.
    const stats = m.measure(frozen, new Set());
    const kappa = m.modelKappa()!;
    const vars = [...m.sharedVars(), ...trainable.flatMap((u) => m.unitVars(u))];
    const { value, grads } = tf.variableGrads(() => m.modelKappaTf(trainable, new Set()), vars);
    const plain = m.objectiveGradients(batch, { ...o, alpha: 0 });
    const inStep = m.objectiveGradients(batch, o);
    let worst = 0;
    let norm = 0;
    for (const v of vars) {
      const reg = grads[v.name]?.dataSync() ?? new Float32Array(v.size);
      for (let k = 0; k < v.size; k++) norm = Math.max(norm, Math.abs(alpha * reg[k]));
    }
    for (const v of vars) {
      const reg = grads[v.name]?.dataSync() ?? new Float32Array(v.size);
      const [a, b] = [inStep[v.name], plain[v.name]];
      assert.ok(a && b, `${v.name} has a gradient`);
      for (let k = 0; k < v.size; k++) worst = Math.max(worst, Math.abs(a[k] - b[k] - alpha * reg[k]));
    }
    assert.ok(norm > 0 && worst <= 1e-4 * norm, `worst difference ${worst} against a largest regularizer term ${norm}`);
    // The step's own measurement: the same κ and unit stats as measure() (the frozen unit reported frozen).
    const r = m.trainStep(batch, o);
    assert.ok(Math.abs(r.regularizer - kappa) <= 1e-4 * kappa, `κ̃ ${r.regularizer} vs measured ${kappa}`);
    assert.ok(Math.abs(value.dataSync()[0] - kappa) <= 1e-4 * kappa);
    assert.ok(r.measured, 'a regularized step reports its measurement');
    r.measured!.forEach((st, u) => {
      assert.equal(st.frozen, frozen.has(u));
      assert.ok(Math.abs(st.kappa! - stats[u].kappa!) <= 1e-4 * stats[u].kappa!, `unit ${u}: κ ${st.kappa} vs ${stats[u].kappa}`);
    });
    tf.dispose([value, ...Object.values(grads), probe.x, probe.y, batch.x, batch.y]);
    m.dispose();
  });
}

test('bert-encoder and vgg: the regularized step runs on wasm (every kernel of the tapped pass and its gradient exists there)', async () => {
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  try {
    for (const family of ['bert-encoder', 'vgg'] as Family[]) {
      const { m, probe, batch } = setUp(family);
      const r = m.trainStep(batch, { alpha: 0.1, trainable: [0, 1, 2], pruned: new Set([1]) });
      assert.ok(Number.isFinite(r.loss) && r.measured?.length === 3 && r.measured[1].pruned);
      tf.dispose([probe.x, probe.y, batch.x, batch.y]);
      m.dispose();
    }
  } finally {
    await tf.setBackend('cpu');
  }
});
