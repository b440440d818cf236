// What bench/routerless-step.ts and bench/routerless-ab.ts share: a routerless family set up at its
// example config (examples/<family>.pltrain.json: its batch and α, the default probe) with one fixed
// batch, the step the training loop runs at a given α, a timer of wall-clock and process CPU time, and
// the median. The models module is a parameter: the A/B bench builds a base commit's copy beside this
// tree's.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { parseTrainingConfig, type TrainingConfig } from '../src/protocol';
import type * as Models from '../src/trainer/models';
import type { Batch, PlModel, StepOptions } from '../src/trainer/models';

export const ROOT = path.resolve(__dirname, '..');

/** The family's example config, parsed (its file relative to the repository in errors). */
export function exampleConfig(family: string): { file: string; config: TrainingConfig } {
  const file = path.join(ROOT, 'examples', `${family}.pltrain.json`);
  const parsed = parseTrainingConfig(JSON.parse(fs.readFileSync(file, 'utf8')));
  if (!parsed.ok) throw new Error(`${path.relative(ROOT, file)} does not parse`);
  if (!(parsed.config.alpha > 0)) throw new Error(`${path.relative(ROOT, file)}: α is ${parsed.config.alpha}, nothing to regularize`);
  return { file, config: parsed.config };
}

export interface FamilyBench {
  m: PlModel;
  batch: Batch;
  /** Every unit trainable, none pruned, at α = 0 and at the config's α. */
  plain: StepOptions;
  regularized: StepOptions;
  /** What src/trainer/train.ts runs for one step at this α: a measure() first unless the family measures in its own step. */
  step: (o: StepOptions) => void;
  dispose: () => void;
}

/** The model of `config` on its data, its probe set, and the first batchSize training examples as the batch. */
export function setUpFamily(M: typeof Models, tf: typeof TF, config: TrainingConfig, file: string): FamilyBench {
  const data = M.loadTaskData(config, path.dirname(file));
  const m: PlModel = M.createModel(tf, config, data);
  m.setProbe(M.probeBatch(tf, config, data));
  const batch: Batch = data.batch(tf, 'train', Int32Array.from({ length: config.batchSize }, (_, i) => i));
  const none = new Set<number>();
  const plain: StepOptions = { alpha: 0, trainable: Array.from({ length: m.units }, (_, i) => i), pruned: none };
  const regularized: StepOptions = { ...plain, alpha: config.alpha };
  const step = (o: StepOptions) => {
    if (o.alpha > 0 && !m.measuresInStep) m.measure(none, none);
    m.trainStep(batch, o);
  };
  return {
    m,
    batch,
    plain,
    regularized,
    step,
    dispose: () => {
      tf.dispose([batch.x, batch.y]);
      m.dispose();
    },
  };
}

/** f's wall-clock and this process's CPU time (user + system), in ms. */
export function timed(f: () => void): { wall: number; cpu: number } {
  const [t0, c0] = [performance.now(), process.cpuUsage()];
  f();
  const c = process.cpuUsage(c0);
  return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
