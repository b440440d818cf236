// How κ monitoring scales: its cost as a fraction of the training step for 4, 16 and 64 units and
// probe sizes 16, 32 and 64, on moe-mlp and bert-encoder, through the models' public API
// (createModel, setProbe, trainStep, measure) on the built-in data, the default backend.
//   plain step: median ms of trainStep at α = 0 (batch 64, the default config otherwise)
//   measure: median ms of one measure() (every unit's n×n kernel on the probe, float64 eigen-solves)
//   fraction at α = 0: measure / (monitor.every × plain step), the default monitor.every = 10
//   moe-mlp only, at the default α: the regularized step measures in its own graph (StepResult.monitorMs);
//   in-step fraction = monitorMs / regularized step, and the regularized step over the plain one.
//   *CpuMs: the same medians in the process's CPU time (user + system), which other processes on a
//   shared machine inflate much less than wall time; fractionAlphaZeroCpu from those.
// usage: node --import tsx bench/monitoring.ts [--steps 6] [--measures 3] [--families moe-mlp,bert-encoder] [--units 4,16,64] [--probes 16,32,64]
// Prints progress on stderr and one `BENCH_RESULT {json}` line on stdout.
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { parseTrainingConfig } from '../src/protocol';
import { selectBackend } from '../src/trainer/backend';
import { createModel, loadTaskData, probeBatch, type Batch, type PlModel } from '../src/trainer/models';
import { emitResult, round } from './panel-page';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '6' },
    measures: { type: 'string', default: '3' },
    families: { type: 'string', default: 'moe-mlp,bert-encoder' },
    units: { type: 'string', default: '4,16,64' },
    probes: { type: 'string', default: '16,32,64' },
  },
  allowPositionals: false,
  strict: false,
});
const list = (s: unknown) => String(s).split(',').filter(Boolean);
const log = (m: string) => process.stderr.write(`[monitoring] ${m}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const { tf, info } = await selectBackend('auto');
  const steps = Number(args.steps);
  const measures = Number(args.measures);
  const rows: Record<string, unknown>[] = [];
  for (const family of list(args.families)) {
    for (const units of list(args.units).map(Number)) {
      for (const probe of list(args.probes).map(Number)) {
        // bert-encoder: the model width must be a multiple of the heads; 64 holds 64 heads of 1.
        const model = family === 'bert-encoder' ? { family, experts: units, dModel: Math.max(64, units) } : { family, experts: units };
        const parsed = parseTrainingConfig({ model, batchSize: 64, monitor: { probeSize: probe } });
        if (!parsed.ok) throw new Error(`${family} × ${units} × probe ${probe}: the config does not parse`);
        const config = parsed.config;
        const data = loadTaskData(config, path.resolve(__dirname, '..'));
        const m: PlModel = createModel(tf, config, data);
        m.setProbe(probeBatch(tf, config, data));
        const batch: Batch = data.batch(tf, 'train', Int32Array.from({ length: config.batchSize }, (_, i) => i));
        const trainable = Array.from({ length: units }, (_, i) => i);
        const plain = { alpha: 0, trainable, pruned: new Set<number>() };
        const cpuMs = () => {
          const u = process.cpuUsage();
          return (u.user + u.system) / 1000;
        };
        // Wall and CPU medians of n calls.
        const timed = (f: () => void, n: number) => {
          const wall: number[] = [];
          const cpu: number[] = [];
          for (let i = 0; i < n; i++) {
            const [t0, c0] = [performance.now(), cpuMs()];
            f();
            wall.push(performance.now() - t0);
            cpu.push(cpuMs() - c0);
          }
          return { wall: median(wall), cpu: median(cpu) };
        };
        timed(() => m.trainStep(batch, plain), 4); // warm-up: the first steps of a model compile its kernels
        const { wall: stepMs, cpu: stepCpuMs } = timed(() => m.trainStep(batch, plain), steps);
        timed(() => m.measure(new Set(), new Set()), 3); // warm-up: the first cell of a process also compiles the JavaScript
        const { wall: measureMs, cpu: measureCpuMs } = timed(() => m.measure(new Set(), new Set()), measures);
        const row: Record<string, unknown> = {
          family, units, probe, stepMs: round(stepMs), measureMs: round(measureMs),
          fractionPerMeasure: round(measureMs / stepMs), fractionAlphaZero: round(measureMs / (config.monitor.every * stepMs)),
          stepCpuMs: round(stepCpuMs), measureCpuMs: round(measureCpuMs), fractionAlphaZeroCpu: round(measureCpuMs / (config.monitor.every * stepCpuMs)),
        };
        let line = `${family.padEnd(13)} ${String(units).padStart(2)} units probe ${String(probe).padStart(2)}: step ${stepMs.toFixed(1)} ms, measure ${measureMs.toFixed(1)} ms, α=0 every ${config.monitor.every}: ${(100 * measureMs / (config.monitor.every * stepMs)).toFixed(1)} % (CPU: ${stepCpuMs.toFixed(1)} / ${measureCpuMs.toFixed(1)} ms, ${(100 * measureCpuMs / (config.monitor.every * stepCpuMs)).toFixed(1)} %)`;
        if (m.measuresInStep) {
          const regularized = { ...plain, alpha: config.alpha };
          timed(() => m.trainStep(batch, regularized), 1);
          const reg: number[] = [];
          const regCpu: number[] = [];
          const mon: number[] = [];
          const share: number[] = [];
          for (let i = 0; i < steps; i++) {
            const [t0, c0] = [performance.now(), cpuMs()];
            const r = m.trainStep(batch, regularized);
            const wall = performance.now() - t0;
            reg.push(wall);
            regCpu.push(cpuMs() - c0);
            mon.push(r.monitorMs ?? NaN);
            share.push((r.monitorMs ?? NaN) / wall);
          }
          const regMs = median(reg);
          const monMs = median(mon);
          const regCpuMs = median(regCpu);
          // The monitoring's share of its own step, median over steps (less sensitive to one preempted step).
          const inStepShare = median(share);
          Object.assign(row, {
            regularizedStepMs: round(regMs), inStepMonitorMs: round(monMs), fractionInStep: round(monMs / regMs), regularizerCost: round(regMs / stepMs),
            regularizedStepCpuMs: round(regCpuMs), regularizerCostCpu: round(regCpuMs / stepCpuMs), fractionInStepPerStep: round(inStepShare),
          });
          line += `; α=${config.alpha}: step ${regMs.toFixed(1)} ms (×${(regMs / stepMs).toFixed(2)}; CPU ${regCpuMs.toFixed(1)} ms, ×${(regCpuMs / stepCpuMs).toFixed(2)}), in-step monitoring ${(100 * monMs / regMs).toFixed(1)} % (per step ${(100 * inStepShare).toFixed(1)} %)`;
        }
        log(line);
        rows.push(row);
        tf.dispose([batch.x, batch.y]);
        m.dispose();
      }
    }
  }
  emitResult({ backend: info.name, detail: info.detail, loadAverage: os.loadavg().map((x) => round(x)), batchSize: 64, rows });
}

main().catch((e) => {
  process.stderr.write(`[monitoring] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
