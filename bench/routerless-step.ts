// The regularized step of the routerless families (bert-encoder's heads, vgg's channel groups) against
// their plain step, at the families' example configs (examples/bert-encoder.pltrain.json,
// examples/vgg.pltrain.json: their batch, α and the default probe), through the models' public API on
// the default backend. What the training loop runs per step is timed:
//   plain: trainStep at α = 0 (no measurement: at α = 0 the loop measures only every monitor.every steps)
//   regularized: at the config's α > 0, measure() before the step unless the family measures in its own
//   graph (PlModel.measuresInStep), then trainStep (src/trainer/train.ts does exactly this)
// Plain and regularized steps alternate on the same model and batch (both see the same load); each is
// timed in wall-clock and in this process's CPU time (user + system: less inflated by other processes
// on a shared machine, the backend being single-threaded), and the tfjs kernels each launches are
// counted once (tf.profile), a load-independent measure of the work.
// usage: node --import tsx bench/routerless-step.ts [--steps 8] [--families bert-encoder,vgg] [--batches 32,64]
// Prints progress on stderr and one `BENCH_RESULT {json}` line on stdout.
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/trainer/backend';
import * as models from '../src/trainer/models';
import { emitResult, round } from './panel-page';
import { exampleConfig, median, ROOT, setUpFamily, timed } from './routerless-setup';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '8' },
    families: { type: 'string', default: 'bert-encoder,vgg' },
    // Other batch sizes than the example configs' (comma-separated): how the ratio moves with the batch at a fixed probe.
    batches: { type: 'string', default: '' },
  },
  allowPositionals: false,
  strict: false,
});
const log = (m: string) => process.stderr.write(`[routerless-step] ${m}\n`);

async function main(): Promise<void> {
  const { tf, info } = await selectBackend('auto');
  const steps = Number(args.steps);
  const rows: Record<string, unknown>[] = [];
  for (const family of String(args.families).split(',').filter(Boolean)) {
    const { file, config: example } = exampleConfig(family);
    for (const batchSize of args.batches ? String(args.batches).split(',').map(Number) : [example.batchSize]) {
      const config = { ...example, batchSize };
      const { m, plain, regularized, step: loopStep, dispose } = setUpFamily(models, tf, config, file);
      const none = new Set<number>();
      // Kernels launched, and the flops of the products among them (matmuls and convolutions: 2 per
      // multiply-add, from the kernels' shapes): a load-independent measure of the work, and of the ratio
      // no per-op saving can go below.
      const work = async (f: () => void) => {
        const { kernels } = await tf.profile(f);
        return { kernels: kernels.length, productMflop: round(kernels.reduce((a, k) => a + productFlops(k.name, k.inputShapes as number[][], k.outputShapes as number[][]), 0) / 1e6) };
      };
      // Warm-up: the first steps compile kernels and V8 optimizes the host loops; the first regularized
      // step needs a measurement first.
      for (let i = 0; i < 10; i++) [plain, regularized].forEach(loopStep);
      const plainRuns: { wall: number; cpu: number }[] = [];
      const regRuns: { wall: number; cpu: number }[] = [];
      for (let i = 0; i < steps; i++) {
        plainRuns.push(timed(() => loopStep(plain)));
        regRuns.push(timed(() => loopStep(regularized)));
      }
      const [plainMs, regMs] = [plainRuns.map((r) => r.wall), regRuns.map((r) => r.wall)];
      const [plainCpu, regCpu] = [median(plainRuns.map((r) => r.cpu)), median(regRuns.map((r) => r.cpu))];
      const measureMs = m.measuresInStep ? 0 : median(Array.from({ length: 3 }, () => timed(() => m.measure(none, none)).wall));
      const plainWork = await work(() => loopStep(plain));
      const regWork = await work(() => loopStep(regularized));
      const [plainKernels, regKernels] = [plainWork.kernels, regWork.kernels];
      const row = {
        family,
        config: path.relative(ROOT, file),
        units: m.units,
        batch: config.batchSize,
        probe: config.monitor.probeSize,
        alpha: config.alpha,
        measuresInStep: m.measuresInStep === true,
        plainStepMs: round(median(plainMs)),
        regularizedStepMs: round(median(regMs)),
        ratio: round(median(regMs) / median(plainMs)),
        plainStepCpuMs: round(plainCpu),
        regularizedStepCpuMs: round(regCpu),
        cpuRatio: round(regCpu / plainCpu),
        measureMs: round(measureMs),
        plainKernels,
        regularizedKernels: regKernels,
        plainProductMflop: plainWork.productMflop,
        regularizedProductMflop: regWork.productMflop,
        productFlopRatio: round(regWork.productMflop / plainWork.productMflop),
      };
      log(`${family.padEnd(13)} batch ${row.batch}, probe ${row.probe}, α ${row.alpha}: plain ${row.plainStepMs} ms (${plainKernels} kernels), regularized ${row.regularizedStepMs} ms (${regKernels} kernels${row.measuresInStep ? ', measured in the step' : `, measure() ${row.measureMs} ms of it`}) → ×${row.ratio} wall, ×${row.cpuRatio} CPU time (${row.plainStepCpuMs} / ${row.regularizedStepCpuMs} ms); products ${row.plainProductMflop} / ${row.regularizedProductMflop} MFLOP → ×${row.productFlopRatio}`);
      rows.push(row);
      dispose();
    }
  }
  emitResult({ backend: info.name, detail: info.detail, loadAverage: os.loadavg().map((x) => round(x)), rows });
}

/** 2 × multiply-adds of a matmul or convolution kernel from its shapes (tfjs kernel inputs), 0 for any other kernel. */
export function productFlops(name: string, inputs: number[][], outputs: number[][]): number {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const out = outputs[0];
  if (!out) return 0;
  switch (name) {
    case 'BatchMatMul':
    case '_FusedMatMul': {
      // a's last two axes are {m, k} in either order; the output's are [m, n].
      const a = inputs[0];
      return 2 * size(out) * ((a[a.length - 1] * a[a.length - 2]) / out[out.length - 2]);
    }
    case 'Conv2D':
    case 'FusedConv2D': // filter [kh, kw, cin, cout]
      return 2 * size(out) * size(inputs[1].slice(0, 3));
    case 'Conv2DBackpropInput': // (dy, filter): each dy element meets kh·kw·cin weights
      return 2 * size(inputs[0]) * size(inputs[1].slice(0, 3));
    case 'Conv2DBackpropFilter': // (x, dy) → filter [kh, kw, cin, cout]
      return 2 * size(inputs[1]) * size(out.slice(0, 3));
    default:
      return 0;
  }
}

main().catch((e) => {
  process.stderr.write(`[routerless-step] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
