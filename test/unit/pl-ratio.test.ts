// The PL* check's ‖∇f‖² (StepResult.gradNormSq, streamed as plRatio = ½‖∇f‖²/f on monitor steps):
// for every family, exactly the squared norm of the gradients the step applies, summed here in float64
// from the tensors handed to the optimizer; computed only when the step asks for it (StepOptions.gradNorm).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { createModel, loadTaskData, probeBatch, type PlModel, type StepOptions } from '../../src/trainer/models';

before(async () => {
  await tf.setBackend('cpu');
});

const ROOT = path.resolve(__dirname, '..', '..');
const FAMILIES: Record<string, object> = {
  'moe-mlp': { model: { family: 'moe-mlp', experts: 3, hiddenUnits: 16 } },
  'switch-transformer': { model: { family: 'switch-transformer', experts: 3, hiddenUnits: 16, dModel: 16, layers: 2, contextLength: 16 }, data: { source: 'text' }, batchSize: 8 },
  'bert-encoder': { model: { family: 'bert-encoder', experts: 3, dModel: 12, layers: 1, hiddenUnits: 16 } },
  vgg: { model: { family: 'vgg', experts: 3, hiddenUnits: 4, layers: 2 } },
};

function config(over: object): TrainingConfig {
  const r = parseTrainingConfig({ batchSize: 16, learningRate: 0.01, monitor: { probeSize: 8 }, ...over });
  assert.ok(r.ok, JSON.stringify(r));
  return (r as { ok: true; config: TrainingConfig }).config;
}

/** Σ g² in float64 over the gradients each applyGradients call hands to the optimizers. */
function recordAppliedGradients(m: PlModel): { sumSq: number; calls: number } {
  const seen = { sumSq: 0, calls: 0 };
  const parameters = (m as unknown as { parameters: { applyGradients: (grads: tf.NamedTensorMap, ...rest: unknown[]) => void } }).parameters;
  const apply = parameters.applyGradients.bind(parameters);
  parameters.applyGradients = (grads, ...rest) => {
    seen.calls++;
    seen.sumSq = 0;
    for (const g of Object.values(grads)) for (const v of g.dataSync()) seen.sumSq += v * v;
    apply(grads, ...rest);
  };
  return seen;
}

for (const [family, over] of Object.entries(FAMILIES)) {
  test(`${family}: ‖∇f‖² is the applied gradients' squared norm (float64), with a unit frozen, at α = 0 and α > 0; absent unless asked`, () => {
    const c = config(over);
    const data = loadTaskData(c, ROOT);
    const m = createModel(tf, c, data);
    m.setProbe(probeBatch(tf, c, data));
    const seen = recordAppliedGradients(m);
    const none = new Set<number>();
    try {
      for (const [k, o] of [
        { alpha: 0, trainable: [0, 1, 2], pruned: none },
        { alpha: 0.01, trainable: [0, 2], pruned: none }, // unit 1 frozen: its variables get no gradient
        { alpha: 0.01, trainable: [0, 1, 2], pruned: none },
      ].entries() as Iterable<[number, StepOptions]>) {
        const batch = data.batch(tf, 'train', Int32Array.from({ length: c.batchSize }, (_, i) => (i + k * c.batchSize) % data.trainSize));
        if (o.alpha > 0 && !m.measuresInStep) m.measure(none, none);
        const skipped = m.trainStep(batch, o);
        assert.equal(skipped.gradNormSq, undefined, 'not computed unless the step asks for it');
        const calls = seen.calls;
        const r = m.trainStep(batch, { ...o, gradNorm: true });
        assert.equal(seen.calls, calls + 1);
        assert.ok(seen.sumSq > 0, 'a real gradient');
        assert.ok(r.gradNormSq !== undefined && Math.abs(r.gradNormSq - seen.sumSq) <= 1e-5 * seen.sumSq, `step ${k}: ${r.gradNormSq} vs float64 ${seen.sumSq}`);
        tf.dispose([batch.x, batch.y]);
      }
    } finally {
      m.dispose();
    }
  });
}
