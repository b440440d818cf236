// The step loop reports κ, like the loss, for the weights a step starts from (docs/method.md). Two
// real `pltrain` runs of the same seed, 9 and 10 steps: the κ in step 10's metrics must be what the
// model measures on the 9-step run's final checkpoint, and not what it measures after step 10.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { before, test } from 'node:test';
import type * as TF from '@tensorflow/tfjs';
import { MetricsEventSchema, parseTrainingConfig, type TrainingConfig } from '../../src/protocol';
import { selectBackend } from '../../src/trainer/backend';
import { loadCheckpoint } from '../../src/trainer/checkpoint';
import { createModel, loadTaskData, probeBatch } from '../../src/trainer/models';

const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'bin', 'pltrain.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-kappa-timing-'));

let tf: typeof TF;
before(async () => {
  // The trainers run on the cpu backend too: set up as the trainer sets it up, so both sides
  // compute with the same kernels (the engine's, native when the addon is built).
  tf = (await selectBackend('cpu')).tf;
});

/** κ of every expert (null: not measurable), measured in this process on the weights of a run's last checkpoint. */
async function kappaOfCheckpoint(runDir: string, config: TrainingConfig): Promise<(number | null)[]> {
  const cp = loadCheckpoint(runDir);
  assert.ok(cp, `a checkpoint in ${runDir}`);
  const data = loadTaskData(config, tmp);
  const model = createModel(tf, config, data);
  await model.setState(cp.state);
  model.setProbe(probeBatch(tf, config, data)); // the probe the trainer measured on
  const kappa = model.measure(new Set(cp.progress.frozen), new Set(cp.progress.pruned)).map((e) => e.kappa);
  model.dispose();
  return kappa;
}

function run(name: string, body: object, steps: number): string {
  const file = path.join(tmp, `${name}.pltrain.json`);
  fs.writeFileSync(file, JSON.stringify(body));
  const runDir = path.join(tmp, `${name}-${steps}`);
  const r = spawnSync(process.execPath, [cli, '--config', file, '--steps', String(steps), '--run-dir', runDir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return runDir;
}

const relative = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b));

// α = 0: measure() before monitor steps; α > 0: the regularized step measures in its own graph.
for (const alpha of [0, 0.01]) {
  test(`κ in step N's metrics is measured on the weights after step N − 1 (α = ${alpha})`, async () => {
    const body = { alpha, backend: 'cpu', seed: 3, learningRate: 0.01, model: { experts: 3, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 8 } };
    const parsed = parseTrainingConfig(body);
    assert.ok(parsed.ok);
    const config = (parsed as { ok: true; config: TrainingConfig }).config;
    const name = `a${alpha}`;
    const nine = run(name, body, 9);
    const ten = run(name, body, 10);
    const metrics = fs.readFileSync(path.join(ten, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l)));
    const reported = metrics.find((m) => m.step === 10)?.units?.map((e) => e.kappa);
    assert.ok(reported && reported.length === 3, 'step 10 carries κ of 3 experts');

    const before = await kappaOfCheckpoint(nine, config); // weights after 9 steps
    const after = await kappaOfCheckpoint(ten, config); // weights after 10 steps
    if (alpha === 0) {
      // measure() in the loop and here: the same code on the same weights, bit for bit.
      assert.deepEqual(reported, before, 'reported κ = κ measured on the weights after step 9');
    } else {
      // Measured inside the regularized step's graph (batched kernels): float32 round-off apart.
      for (let i = 0; i < 3; i++) {
        if (before[i] === null) assert.equal(reported[i], null, `expert ${i}: not measurable either way`);
        else assert.ok(relative(reported[i]!, before[i]!) <= 1e-5, `expert ${i}: reported κ ${reported[i]} vs measured before step 10 ${before[i]}`);
      }
    }
    // The test can tell the two apart: one step moves κ far more than the agreement above.
    const moved = Math.max(...after.map((k, i) => (k === null || before[i] === null ? 0 : relative(k, before[i]!))));
    assert.ok(moved > 1e-3, `one step moved κ by only ${moved}`);
  });
}
