// Times MoeMlp.trainStep on the reference MoE (784 → 8 experts × (256 ReLU → 10), softmax gate, batch
// 128, softmax cross-entropy, Adam; the step bench/moe_torch.py times in PyTorch) and prints one JSON line.
// usage: node --import tsx bench/moe-step.ts [--backend wasm|cpu|…] [--native auto|on|off] [--steps 20] [--warmup 3] [--measures 15] [--profile]
// --native off: the addon is treated as absent (PLTRAIN_NATIVE=off); PLTRAIN_ENGINE=off in the environment
// also drops the pure-JS kernel replacements (tfjs's own kernels only, the state before the engine work).
// --profile: per-kernel times of one step (tf.profile) and forward/backward/Adam wall times, on stderr.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import type * as TF from '@tensorflow/tfjs';
import { DEFAULT_FASHION_MNIST_PATH, parseTrainingConfig, type BackendName, type TrainingConfig } from '../src/protocol';
import { selectBackend } from '../src/trainer/backend';
import { loadFashionMnist } from '../src/trainer/data';
import { createAdam } from '../src/trainer/engine/adam';
import { MoeMlp } from '../src/trainer/models/moeMlp';

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    native: { type: 'string', default: 'auto' },
    steps: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    measures: { type: 'string', default: '15' },
    profile: { type: 'boolean', default: false },
  },
});
const D = 784;
const C = 10;
const B = 128;

async function main(): Promise<void> {
  if (args.native === 'off') process.env.PLTRAIN_NATIVE = 'off';
  const { tf, info } = await selectBackend(args.backend as BackendName);
  const native = /native addon/.test(info.detail);
  if (args.native === 'on' && !native) throw new Error(`--native on, but the native kernels are not active (${info.detail})`);
  const parsed = parseTrainingConfig({ model: { experts: 8, hiddenUnits: 256 }, batchSize: B, alpha: 0 });
  if (!parsed.ok) throw new Error('reference config does not parse');
  const config: TrainingConfig = parsed.config;
  const model = new MoeMlp(tf, D, C, config);
  const batches = makeBatches(tf, 8);
  model.setProbe(makeBatches(tf, 1, config.monitor.probeSize)[0]);
  const options = { alpha: 0, trainable: [0, 1, 2, 3, 4, 5, 6, 7], pruned: new Set<number>() };
  const steps = Number(args.steps);
  const warmup = Number(args.warmup);
  for (let i = 0; i < warmup; i++) model.trainStep(batches[i % batches.length], options);
  if (args.profile) {
    await profile(tf, () => model.trainStep(batches[0], options));
    phases(tf, model, batches);
  }
  const times: number[] = [];
  const cpuTimes: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    model.trainStep(batches[i % batches.length], options);
    const c = process.cpuUsage(c0);
    times.push(performance.now() - t0);
    cpuTimes.push((c.user + c.system) / 1000);
  }
  const measureTimes: number[] = [];
  for (let i = 0; i < Number(args.measures); i++) {
    const t0 = performance.now();
    model.measure(new Set(), new Set());
    measureTimes.push(performance.now() - t0);
  }
  // The step at the default α (> 0): the regularized step, which measures every expert's κ in its own
  // graph; monitorMs is the part of it that is monitoring alone (read-backs and eigen-solves).
  const defaults = parseTrainingConfig({});
  if (!defaults.ok) throw new Error('defaults do not parse');
  const alphaOptions = { ...options, alpha: defaults.config.alpha };
  for (let i = 0; i < warmup; i++) model.trainStep(batches[i % batches.length], alphaOptions);
  const regularizedTimes: number[] = [];
  const monitorTimes: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const r = model.trainStep(batches[i % batches.length], alphaOptions);
    regularizedTimes.push(performance.now() - t0);
    if (r.monitorMs === undefined) throw new Error('the regularized step did not measure in its graph');
    monitorTimes.push(r.monitorMs);
  }
  const liveTensors = tf.memory().numTensors; // model, optimizer slots and batches: a number that grows between runs is a leak
  model.dispose();
  for (const b of batches) tf.dispose([b.x, b.y]);
  const round = (v: number) => Math.round(v * 100) / 100;
  const result = {
    backend: info.name,
    native,
    msPerStep: { median: round(quantile(times, 0.5)), p10: round(quantile(times, 0.1)), p90: round(quantile(times, 0.9)) },
    // CPU time of this process per step: steadier than wall time on a shared machine (it leaves out waiting for a core).
    cpuMsPerStep: round(quantile(cpuTimes, 0.5)),
    steps,
    measureMs: round(quantile(measureTimes, 0.5)),
    regularized: { alpha: defaults.config.alpha, msPerStep: round(quantile(regularizedTimes, 0.5)), monitorMs: round(quantile(monitorTimes, 0.5) * 100) / 100 },
    detail: info.detail,
    data: dataName,
    tensors: liveTensors,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

let dataName = 'random';
let dataset: ReturnType<typeof loadFashionMnist> | undefined;

/** Fashion-MNIST batches when the Debian package is installed, else seeded random ones (timing does not depend on the values). */
function makeBatches(tf: typeof TF, count: number, size = B) {
  if (!dataset && fs.existsSync(DEFAULT_FASHION_MNIST_PATH)) {
    dataset = loadFashionMnist(DEFAULT_FASHION_MNIST_PATH, 8 * B, 1);
    dataName = 'fashion-mnist';
  }
  return Array.from({ length: count }, (_, k) =>
    tf.tidy(() => {
      const x = dataset ? tf.tensor2d(dataset.train.x.subarray(k * size * D, (k + 1) * size * D), [size, D]) : tf.randomUniform([size, D], 0, 1, 'float32', k + 1);
      const labels = dataset ? tf.tensor1d(Int32Array.from(dataset.train.labels.subarray(k * size, (k + 1) * size)), 'int32') : tf.randomUniform([size], 0, C, 'int32', k + 7);
      return { x, y: tf.oneHot(labels as TF.Tensor1D, C).toFloat(), size };
    }),
  );
}

/** Per-kernel time of one step, on stderr (tf.profile's kernelMs), largest first. */
async function profile(tf: typeof TF, step: () => void): Promise<void> {
  const info = await tf.profile(() => {
    step();
  });
  const byKernel = new Map<string, { ms: number; n: number }>();
  for (const k of info.kernels) {
    const e = byKernel.get(k.name) ?? { ms: 0, n: 0 };
    e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    e.n++;
    byKernel.set(k.name, e);
  }
  const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, [, e]) => s + e.ms, 0);
  process.stderr.write(`profile: ${info.kernels.length} kernels, ${total.toFixed(1)} ms in kernels\n`);
  for (const [name, e] of rows) process.stderr.write(`  ${name.padEnd(24)} ${e.ms.toFixed(2).padStart(8)} ms  ×${e.n}\n`);
}

/** Wall time of the step's phases, the way trainStep runs them: forward+backward (variableGrads), then Adam. */
function phases(tf: typeof TF, model: MoeMlp, batches: ReturnType<typeof makeBatches>): void {
  const vars = [model.gateW, model.gateB, ...model.experts.flatMap((e) => [e.w1, e.b1, e.w2, e.b2])];
  const optimizer = createAdam(tf, 1e-3); // the engine's Adam: fused where the native kernel is active, tfjs's otherwise
  const t = { forward: [] as number[], backward: [] as number[], adam: [] as number[] };
  for (let i = 0; i < 12; i++) {
    const b = batches[i % batches.length];
    const t0 = performance.now();
    tf.tidy(() => tf.losses.softmaxCrossEntropy(b.y, model.logits(b.x as TF.Tensor2D)));
    const t1 = performance.now();
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(b.y, model.logits(b.x as TF.Tensor2D)) as TF.Scalar, vars);
    const t2 = performance.now();
    optimizer.applyGradients(Object.entries(grads).map(([name, tensor]) => ({ name, tensor })));
    const t3 = performance.now();
    tf.dispose([value, ...Object.values(grads)]);
    if (i >= 2) {
      t.forward.push(t1 - t0);
      t.backward.push(t2 - t1 - (t1 - t0));
      t.adam.push(t3 - t2);
    }
  }
  optimizer.dispose();
  const median = (v: number[]) => quantile(v, 0.5).toFixed(2);
  process.stderr.write(`phases (median ms): forward ${median(t.forward)}, backward ${median(t.backward)}, adam ${median(t.adam)}\n`);
}

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (pos - lo);
}

main().catch((e) => {
  // A backend that is not installed is an expected skip: its message is enough (the runner prints it).
  const expected = e instanceof Error && /could not be loaded: not installed/.test(e.message);
  process.stderr.write(`${e instanceof Error ? (expected ? e.message : e.stack) : e}\n`);
  process.exit(1);
});
