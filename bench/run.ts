// `npm run bench [-- --quick] [-- --only moe,pytorch,latency,chart,activation] [-- --no-build]`: every
// benchmark of the "Speed" issue in one run, one part after another (in parallel they would measure
// each other). Prints a table and the headline `ratio ours/pytorch: X`, and writes the figures to
// bench/results/<timestamp>.json and bench/results/latest.json for comparison across commits.
// What each part measures, and which hops are real, is in bench/README.md.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TrainingConfigSchema } from '../src/protocol';

const ROOT = path.resolve(__dirname, '..');
const RESULTS_DIR = path.join(__dirname, 'results');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const onlyArg = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined;
const PARTS = ['moe', 'pytorch', 'engine', 'blas', 'monitoring', 'regularized', 'latency', 'chart', 'activation'] as const;
type Part = (typeof PARTS)[number];
const only = new Set<Part>(onlyArg ? (onlyArg.split(',') as Part[]) : PARTS);
for (const p of only) if (!PARTS.includes(p)) throw new Error(`--only: unknown part ${p} (parts: ${PARTS.join(', ')})`);

/** Sizes per mode. --quick must finish within 5 minutes on the 2-core CI machine. */
const PLAN = quick
  ? { moe: { wasm: [10, 3], cpu: [3, 1], tensorflow: [20, 5], 'tensorflow-gpu': [20, 5] }, torchSteps: 10, engineSteps: 60, latencySeconds: 10, chartPoints: 100_000, chartFrames: 60, activationSamples: 1, blasRounds: 3, monitoring: ['3', '2'], regularizedSteps: 4 }
  : { moe: { wasm: [50, 10], cpu: [10, 2], tensorflow: [100, 10], 'tensorflow-gpu': [200, 20] }, torchSteps: 50, engineSteps: 300, latencySeconds: 30, chartPoints: 1_000_000, chartFrames: 180, activationSamples: 5, blasRounds: 9, monitoring: ['8', '3'], regularizedSteps: 150 };
const BACKENDS = ['wasm', 'cpu', 'tensorflow', 'tensorflow-gpu'] as const;
/** Past these, a part is stopped and reported as failed. */
const LIMIT_S = quick ? { build: 120, moe: 120, pytorch: 120, engine: 240, latency: 120, chart: 180, activation: 150, blas: 120, monitoring: 600, regularized: 180 } : { build: 300, moe: 900, pytorch: 600, engine: 900, latency: 300, chart: 1800, activation: 600, blas: 300, monitoring: 1800, regularized: 600 };

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

/** Process groups of running parts: ended with the runner (each part runs in its own group, so a timeout can end all of it). */
const running = new Set<number>();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    for (const pid of running) killGroup(pid);
    process.exit(130);
  });
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** Runs a command, streaming its stderr (progress) through, collecting stdout. */
function run(command: string, args: string[], limitS: number, env: NodeJS.ProcessEnv = process.env): Promise<ChildResult> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    if (child.pid) running.add(child.pid);
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      process.stderr.write(d);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid!); // the child's whole group: browsers, servers, trainers
    }, limitS * 1000);
    const done = (code: number | null) => {
      clearTimeout(timer);
      if (child.pid) running.delete(child.pid);
      resolve({ code, stdout, stderr, seconds: (Date.now() - t0) / 1000, timedOut });
    };
    child.on('error', (e) => {
      stderr += `${e.message}\n`;
      done(-1);
    });
    child.on('close', done);
  });
}

const tsx = (script: string, args: string[], limitS: number) => run(process.execPath, ['--import', 'tsx', path.join('bench', script), ...args], limitS);

/** The first line of stderr that says what went wrong (not a stack frame), for a `skipped:`/`failed:` line. */
function reason(r: ChildResult): string {
  if (r.timedOut) return `stopped after ${Math.round(r.seconds)} s (limit)`;
  const lines = r.stderr.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at '));
  return (lines.find((l) => /error|not |cannot|missing|unavailable/i.test(l)) ?? lines.at(-1) ?? `exit code ${r.code}`).replace(/^\[\w+\]\s*/, '').replace(/^Error:\s*/, '');
}

/** The `BENCH_RESULT {…}` line of our own parts. */
function benchResult(r: ChildResult): Record<string, any> | undefined {
  const line = r.stdout.split('\n').reverse().find((l) => l.startsWith('BENCH_RESULT '));
  return line ? JSON.parse(line.slice('BENCH_RESULT '.length)) : undefined;
}

/** The last stdout line that is a JSON object (moe-step.ts and moe_torch.py print exactly one). */
function lastJson(r: ChildResult): Record<string, any> | undefined {
  for (const line of r.stdout.split('\n').reverse()) {
    try {
      const v = JSON.parse(line);
      if (v && typeof v === 'object') return v;
    } catch {
      /* not JSON */
    }
  }
  return undefined;
}

function gitCommit(): string | null {
  // Read, not run: the commit of the working tree's HEAD (uncommitted changes are not reflected).
  try {
    const gitDir = path.join(ROOT, '.git');
    const head = fs.readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = path.join(gitDir, ref);
    if (fs.existsSync(loose)) return fs.readFileSync(loose, 'utf8').trim();
    const packed = fs.readFileSync(path.join(gitDir, 'packed-refs'), 'utf8').split('\n').find((l) => l.endsWith(` ${ref}`));
    return packed ? packed.split(' ')[0] : null;
  } catch {
    return null;
  }
}

const fmt = (x: number | undefined | null, digits = 3) => (x === undefined || x === null || !Number.isFinite(x) ? '—' : x >= 1000 ? Math.round(x).toLocaleString('en-US') : String(Number(x.toPrecision(digits))));
const pct = (x: number) => `${fmt(100 * x, 2)} %`;

async function main(): Promise<void> {
  const started = new Date();
  const t0 = Date.now();
  const say = (line = '') => process.stdout.write(`${line}\n`);
  const failures: string[] = [];
  const defaults = TrainingConfigSchema.parse({});
  const out: Record<string, any> = {
    schema: 1,
    mode: quick ? 'quick' : 'full',
    startedAt: started.toISOString(),
    commit: gitCommit(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.release()}`, node: process.version },
    // Other work on the machine inflates every figure: compare runs made under similar load.
    loadAverage: { start: Number(os.loadavg()[0].toFixed(2)) },
  };

  if (!argv.includes('--no-build')) {
    process.stderr.write('[bench] building (node scripts/build.mjs)\n');
    const b = await run(process.execPath, ['scripts/build.mjs'], LIMIT_S.build);
    if (b.code !== 0) throw new Error(`build failed: ${reason(b)}`);
  }

  say(`PL Trainer benchmarks (${out.mode}) · ${out.machine.cpus} × ${out.machine.cpuModel} · load ${out.loadAverage.start} · Node ${process.version} · ${started.toISOString()} · commit ${(out.commit ?? 'unknown').slice(0, 10)}`);

  // 1. Reference MoE step: our backends and PyTorch.
  type Ours = { backend: string; native?: boolean; msPerStep?: { median: number; p10: number; p90: number }; cpuMsPerStep?: number; steps?: number; measureMs?: number; regularized?: { alpha: number; msPerStep: number; monitorMs: number }; detail?: string; skipped?: string; failed?: string };
  const ours: Ours[] = [];
  const torch: Record<string, any>[] = [];
  if (only.has('moe')) {
    say('');
    say('Reference MoE training step (784 → 8 experts × (256 ReLU → 10), softmax gate, batch 128, cross-entropy, Adam)');
    say(`  ${'engine'.padEnd(26)} ${'median ms'.padStart(10)} ${'p10'.padStart(8)} ${'p90'.padStart(8)}  steps  detail`);
    const script = path.join(__dirname, 'moe-step.ts');
    for (const backend of BACKENDS) {
      if (!fs.existsSync(script)) {
        ours.push({ backend, skipped: 'bench/moe-step.ts is missing' });
        say(`  ${backend.padEnd(26)} skipped: bench/moe-step.ts is missing`);
        continue;
      }
      const [steps, warmup] = PLAN.moe[backend];
      const r = await tsx('moe-step.ts', ['--backend', backend, '--steps', String(steps), '--warmup', String(warmup)], LIMIT_S.moe);
      const v = r.code === 0 ? lastJson(r) : undefined;
      if (v?.msPerStep) {
        ours.push({ ...v, backend } as Ours);
        say(`  ${`${backend}${v.native ? ' (native)' : ''}`.padEnd(26)} ${fmt(v.msPerStep.median).padStart(10)} ${fmt(v.msPerStep.p10).padStart(8)} ${fmt(v.msPerStep.p90).padStart(8)}  ${String(v.steps).padStart(5)}  ${v.detail ?? ''}`);
      } else if (r.code !== 0 && !r.timedOut && /not installed|could not be loaded|unavailable|not available/i.test(r.stderr)) {
        ours.push({ backend, skipped: reason(r) });
        say(`  ${backend.padEnd(26)} skipped: ${reason(r)}`);
      } else {
        ours.push({ backend, failed: reason(r) });
        failures.push(`moe-step ${backend}: ${reason(r)}`);
        say(`  ${backend.padEnd(26)} FAILED: ${reason(r)}`);
      }
    }
  }
  if (only.has('pytorch')) {
    if (!only.has('moe')) say('');
    const python = '/usr/bin/python3';
    // This machine tunes OpenBLAS for our addon through the environment; PyTorch gets its own defaults.
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    // Its best thread count: under load, or on small models, more threads can be much slower (they spin).
    const cpuThreads = [1, 2, 4].filter((t) => t <= os.cpus().length);
    const runs: { device: string; threads?: number }[] = cpuThreads.map((threads) => ({ device: 'cpu', threads }));
    if (fs.existsSync('/dev/nvidia0') || fs.existsSync('/dev/nvidiactl')) runs.push({ device: 'cuda' });
    for (const { device, threads } of runs) {
      const label = `pytorch ${device}${threads ? ` (${threads} thread${threads > 1 ? 's' : ''})` : ''}`;
      if (!fs.existsSync(python)) {
        torch.push({ device, skipped: `${python} not found` });
        say(`  ${label.padEnd(26)} skipped: ${python} not found (apt-get install python3-torch)`);
        break;
      }
      const r = await run(python, [path.join('bench', 'moe_torch.py'), '--device', device, '--threads', String(threads ?? 0), '--steps', String(PLAN.torchSteps)], LIMIT_S.pytorch, env);
      const v = r.code === 0 ? lastJson(r) : undefined;
      if (v?.moeStepMs) {
        torch.push({ ...v, device });
        say(`  ${label.padEnd(26)} ${fmt(v.moeStepMs).padStart(10)} ${''.padStart(8)} ${''.padStart(8)}  ${String(PLAN.torchSteps).padStart(5)}  ${v.engine} on ${v.device}${v.layout ? `, ${v.layout} layout` : ''} (mean)`);
      } else if (/No module named 'torch'/.test(r.stderr)) {
        torch.push({ device, skipped: 'python3-torch is not installed' });
        say(`  ${label.padEnd(26)} skipped: python3-torch is not installed (apt-get install python3-torch)`);
        break;
      } else if (device === 'cuda' && /CUDA|cuda|NVIDIA/.test(r.stderr)) {
        torch.push({ device, skipped: reason(r) });
        say(`  ${label.padEnd(26)} skipped: ${reason(r)}`);
      } else {
        torch.push({ device, failed: reason(r) });
        failures.push(`pytorch ${device}: ${reason(r)}`);
        say(`  ${label.padEnd(26)} FAILED: ${reason(r)}`);
      }
    }
  }
  const measuredOurs = ours.filter((o) => o.msPerStep);
  const best = measuredOurs.sort((a, b) => a.msPerStep!.median - b.msPerStep!.median)[0];
  // Like for like: a GPU backend of ours against PyTorch on CUDA, a CPU one against PyTorch on the CPU.
  // PyTorch's fastest run on that device (over thread counts) is the peer.
  const peer = best && torch.filter((t) => t.moeStepMs && t.device === (best.backend === 'tensorflow-gpu' ? 'cuda' : 'cpu')).sort((a, b) => a.moeStepMs - b.moeStepMs)[0];
  const ratio = best && peer ? best.msPerStep!.median / peer.moeStepMs : undefined;
  out.moeStep = { ours, pytorch: torch, best: best ? { backend: best.backend, native: best.native, msPerStep: best.msPerStep!.median } : null, peer: peer ? { device: peer.device, threads: peer.threads, msPerStep: peer.moeStepMs } : null, ratio: ratio ?? null };

  // 1b. The PyTorch engine (python/pltrain) against a plain PyTorch loop of the same model, in one run
  // (bench/engine_torch.py; on CUDA when an NVIDIA device exists, else the CPU at 1 thread).
  if (only.has('engine')) {
    const python = process.env.PLTRAIN_PYTHON || '/usr/bin/python3';
    const device = fs.existsSync('/dev/nvidia0') || fs.existsSync('/dev/nvidiactl') ? 'cuda' : 'cpu';
    say('');
    say(`PyTorch engine vs a plain PyTorch loop of the same model (8 × (256 → 10), 196 inputs, batch 128, Adam) on ${device}, ${PLAN.engineSteps} steps each`);
    const r = await run(python, [path.join('bench', 'engine_torch.py'), '--device', device, '--steps', String(PLAN.engineSteps), ...(device === 'cpu' ? ['--threads', '1'] : [])], LIMIT_S.engine);
    const v = r.code === 0 ? lastJson(r) : undefined;
    if (v?.plainMsPerStep) {
      out.pytorchEngine = v;
      // The fractions are medians of per-round ratios of runs next to each other; the range is those ratios' least and most.
      const range = (k: string) => (v.spread?.[k] ? ` [rounds ${pct(v.spread[k].min)} … ${pct(v.spread[k].max)}, quartiles ${pct(v.spread[k].q1)} … ${pct(v.spread[k].q3)}]` : '');
      say(`  plain loop ${fmt(v.plainMsPerStep)} ms/step; engine at α = 0, unmonitored ${fmt(v.engineMsPerStep)} ms → instrumentation ${pct(v.instrumentationFraction)}${range('instrumentation')} (goal ≤ 5 %)`);
      if (v.attachedMsPerStep) say(`  with a client attached (every event over the socket) ${fmt(v.attachedMsPerStep)} ms → ${pct(v.attachedInstrumentationFraction)}${range('attachedInstrumentation')}; paired medians of ${v.rounds} interleaved rounds, load average ${v.loadAverage?.map((x: number) => fmt(x)).join(' → ')}`);
      // κ monitoring: the monitor steps' extra time inside each monitored run (median over rounds), and the between-runs ratio beside it.
      say(`  default monitoring (every 10 steps, probe 16) ${fmt(v.monitoredMsPerStep)} ms → κ monitoring ${pct(v.monitoringFraction)}${range('monitoringInRun')} in the run (goal ≤ 5 %); between runs ${pct(v.monitoringFractionBetweenRuns ?? v.monitoringFraction)}${range('monitoring')}; default α ${fmt(v.regularizedMsPerStep)} ms (${fmt(v.regularizedCost)}× unregularized)`);
      if (v.kappaCpuVsCuda) say(`  κ on CUDA vs the CPU, same weights: largest relative difference ${fmt(v.kappaCpuVsCuda.maxRelativeDifference)}`);
    } else if (/No module named '(torch|websockets)'|not found|ENOENT/.test(r.stderr)) {
      out.pytorchEngine = { skipped: reason(r) };
      say(`  skipped: ${reason(r)} (pip install torch websockets)`);
    } else {
      out.pytorchEngine = { failed: reason(r) };
      failures.push(`pytorch engine: ${reason(r)}`);
      say(`  FAILED: ${reason(r)}`);
    }
  }

  // 2. κ monitoring overhead at default settings, from the same runs.
  if (measuredOurs.length) {
    const every = defaults.monitor.every;
    say('');
    say(`κ monitoring (all 8 experts' tangent kernels on the probe, n = ${defaults.monitor.probeSize}) as a fraction of the training step`);
    say(`  α = ${defaults.alpha} (default): the regularized step measures in its own graph; monitoring alone is its read-backs and eigen-solves`);
    say(`  α = 0: measure() before every ${every}th step (monitor.every)`);
    out.kappaMonitoring = {
      defaults: { alpha: defaults.alpha, monitorEvery: every, probeSize: defaults.monitor.probeSize },
      byBackend: measuredOurs
        .filter((o) => o.measureMs !== undefined && o.regularized)
        .map((o) => {
          const plain = o.msPerStep!.median;
          const reg = o.regularized!;
          const row = {
            backend: o.backend,
            regularizedStepMs: reg.msPerStep,
            inStepMonitorMs: reg.monitorMs,
            fractionAtDefaults: reg.monitorMs / reg.msPerStep,
            measureMs: o.measureMs!,
            stepMs: plain,
            fractionAlphaZero: o.measureMs! / every / plain,
            regularizerCost: reg.msPerStep / plain,
          };
          say(`  ${o.backend.padEnd(16)} α = ${defaults.alpha}: step ${fmt(reg.msPerStep)} ms, of which monitoring ${fmt(reg.monitorMs)} ms → ${pct(row.fractionAtDefaults)}; α = 0: measure ${fmt(row.measureMs)} ms every ${every} steps of ${fmt(plain)} ms → ${pct(row.fractionAlphaZero)} (regularized step = ${fmt(row.regularizerCost)}× the plain one)`);
          return row;
        }),
    };
  }

  // OpenBLAS at 1 and 2 threads per product shape (the engine's choice by size).
  if (only.has('blas')) {
    say('');
    const r = await tsx('blas-threads.ts', ['--rounds', String(PLAN.blasRounds)], LIMIT_S.blas);
    const v = benchResult(r);
    if (r.code === 0 && v?.skipped) {
      out.blasThreads = v;
      say(`OpenBLAS threads: skipped: ${v.skipped}`);
    } else if (r.code === 0 && v) {
      out.blasThreads = v;
      say(`OpenBLAS sgemm, 1 vs 2 threads per product (median µs; the engine gives 2 threads from ${fmt(v.twoThreadsMinMacs / 1e6)} M multiply-adds; load ${v.loadAverage.join(' ')})`);
      say(`  ${'product'.padEnd(34)} ${'M MAC'.padStart(8)} ${'1 thread'.padStart(9)} ${'2 threads'.padStart(10)} ${'speed-up'.padStart(9)}  chosen`);
      for (const row of v.rows) say(`  ${row.shape.padEnd(34)} ${fmt(row.macs / 1e6).padStart(8)} ${fmt(row.us1Thread).padStart(9)} ${fmt(row.us2Threads).padStart(10)} ${`×${fmt(row.speedup2)}`.padStart(9)}  ${row.chosen}`);
    } else {
      failures.push(`blas: ${reason(r)}`);
      out.blasThreads = { failed: reason(r) };
      say(`OpenBLAS threads: FAILED: ${reason(r)}`);
    }
  }

  // κ monitoring as models grow: units × probe size, two families.
  if (only.has('monitoring')) {
    say('');
    const r = await tsx('monitoring.ts', ['--steps', PLAN.monitoring[0], '--measures', PLAN.monitoring[1]], LIMIT_S.monitoring);
    const v = benchResult(r);
    if (r.code === 0 && v) {
      out.monitoringScaling = v;
      say(`κ monitoring by units × probe (${v.backend}, batch ${v.batchSize}; fraction at α = 0 = measure / (10 × plain step); in-step = monitoring part of the regularized step (moe-mlp))`);
      say(`  ${'family'.padEnd(13)} ${'units'.padStart(5)} ${'probe'.padStart(5)} ${'step ms'.padStart(8)} ${'measure ms'.padStart(11)} ${'α = 0'.padStart(7)} ${'in-step'.padStart(8)} ${'reg./plain'.padStart(10)}`);
      for (const row of v.rows) say(`  ${row.family.padEnd(18)} ${String(row.units).padStart(5)} ${String(row.probe).padStart(5)} ${fmt(row.stepMs).padStart(8)} ${fmt(row.measureMs).padStart(11)} ${pct(row.fractionAlphaZero).padStart(7)} ${(row.fractionInStep === undefined ? '—' : pct(row.fractionInStep)).padStart(8)} ${(row.regularizerCost === undefined ? '—' : `×${fmt(row.regularizerCost)}`).padStart(10)}`);
    } else {
      failures.push(`monitoring: ${reason(r)}`);
      out.monitoringScaling = { failed: reason(r) };
      say(`κ monitoring by units × probe: FAILED: ${reason(r)}`);
    }
  }

  // The regularized step of the routerless families against their plain step, at their example configs.
  if (only.has('regularized')) {
    say('');
    // switch-transformer rides along for information: issue 16's ≤ ×2 goal names bert-encoder and vgg.
    const r = await tsx('routerless-step.ts', ['--steps', String(PLAN.regularizedSteps), '--families', 'bert-encoder,vgg,switch-transformer'], LIMIT_S.regularized);
    const v = benchResult(r);
    if (r.code === 0 && v) {
      out.regularizedStep = v;
      say(`regularized step (default α of the example config) over the plain one, as the training loop runs them (${v.backend}; goal ≤ ×2 for bert-encoder and vgg)`);
      say(`  ${'family'.padEnd(18)} ${'batch'.padStart(5)} ${'probe'.padStart(5)} ${'plain ms'.padStart(9)} ${'reg. ms'.padStart(8)} ${'ratio'.padStart(6)} ${'CPU ratio'.padStart(9)} ${'kernels plain / reg.'.padStart(21)}`);
      for (const row of v.rows) say(`  ${row.family.padEnd(13)} ${String(row.batch).padStart(5)} ${String(row.probe).padStart(5)} ${fmt(row.plainStepMs).padStart(9)} ${fmt(row.regularizedStepMs).padStart(8)} ${`×${fmt(row.ratio)}`.padStart(6)} ${`×${fmt(row.cpuRatio)}`.padStart(9)} ${`${row.plainKernels} / ${row.regularizedKernels}`.padStart(21)}`);
    } else {
      failures.push(`regularized: ${reason(r)}`);
      out.regularizedStep = { failed: reason(r) };
      say(`regularized step: FAILED: ${reason(r)}`);
    }
  }

  // 3. Latency at 200 metrics/s.
  if (only.has('latency')) {
    say('');
    const r = await tsx('latency.ts', ['--rate', '200', '--seconds', String(PLAN.latencySeconds)], LIMIT_S.latency);
    const v = benchResult(r);
    if (r.code === 0 && v) {
      out.latency = v;
      say(`Trainer → extension host → webview at ${v.rate} metrics/s for ${fmt(v.seconds, 2)} s (${v.experts} experts, κ every ${v.monitorEvery} steps; achieved ${fmt(v.achievedRate)}/s)`);
      say(`  sent ${v.sent}, received by the host ${v.receivedByHost}, by the webview ${v.receivedByWebview}: lost ${v.lost}`);
      say(`  ${'hop'.padEnd(44)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)}`);
      for (const [name, q] of [['trainer → host (WebSocket, parsed)', v.trainerToHostMs], ['trainer → webview (validated, in the model)', v.trainerToWebviewMs], ['trainer → webview drawn (next frame)', v.trainerToDrawnMs]] as const) {
        say(`  ${name.padEnd(44)} ${fmt(q.p50).padStart(8)} ${fmt(q.p99).padStart(8)} ${fmt(q.max).padStart(8)}`);
      }
      for (const [hop, what] of Object.entries(v.hops)) say(`  ${hop}: ${what}`);
    } else {
      failures.push(`latency: ${reason(r)}`);
      out.latency = { failed: reason(r) };
      say(`Latency: FAILED: ${reason(r)}`);
    }
  }

  // 4. Chart frame time on a long run.
  if (only.has('chart')) {
    say('');
    const r = await tsx('chart.ts', ['--points', String(PLAN.chartPoints), '--frames', String(PLAN.chartFrames)], LIMIT_S.chart);
    const v = benchResult(r);
    if (r.code === 0 && v) {
      out.chart = v;
      say(`Chart: ${v.series} series × ${fmt(v.pointsPerSeries)} points (κ of ${v.series} experts every step) in the real panel, headless Chromium, ${v.viewport}`);
      say(`  stored ${fmt(v.stored.perSeries)} points per series (${v.stored.series} series, steps ${v.stored.firstStep}…${fmt(v.stored.lastStep)}); drawn ${fmt(v.stored.drawnPerLine)} per line (plot ${v.stored.canvas.width} px)`);
      say(`  ${'redraw of every chart'.padEnd(28)} ${'median ms'.padStart(10)} ${'p95 ms'.padStart(8)}   frame interval median / p95 ms   browser CPU ms/frame (load ${fmt(v.loadAverage?.start)} → ${fmt(v.loadAverage?.end)})`);
      for (const [kind, f] of Object.entries<any>(v.frames)) {
        const label = kind === 'append' ? `append (${v.liveRate} steps/s)` : kind === 'zoom' ? 'zoom (all → last 1 %)' : 'pan (10 % window)';
        say(`  ${label.padEnd(28)} ${fmt(f.redrawMs.median).padStart(10)} ${fmt(f.redrawMs.p95).padStart(8)}   ${`${fmt(f.frameIntervalMs.median)} / ${fmt(f.frameIntervalMs.p95)}`.padEnd(33)}${fmt(f.browserCpuMsPerFrame)}`);
      }
      say(`  JS heap after GC (MiB) at steps ${v.heapMiB.samples.map((s: any) => `${fmt(s.step)}: ${fmt(s.MiB)}`).join(', ')}; after the redraws ${fmt(v.heapMiB.afterRedraws)}`);
      say(`  ingest: ${fmt(v.pointsPerSeries)} steps in ${fmt(v.ingest.ms / 1000)} s (${fmt(v.ingest.stepsPerSec)} steps/s, ${v.ingest.batch} per message; batch → frame median ${fmt(v.ingest.batchToFrameMs.median)} ms)`);
    } else {
      failures.push(`chart: ${reason(r)}`);
      out.chart = { failed: reason(r) };
      say(`Chart: FAILED: ${reason(r)}`);
    }
  }

  // 5. Extension activation in the real VS Code.
  if (only.has('activation')) {
    say('');
    const r = await tsx('activation.ts', ['--samples', String(PLAN.activationSamples)], LIMIT_S.activation);
    const v = benchResult(r);
    if (r.code === 0 && v?.skipped) {
      out.activation = v;
      say(`Extension activation: skipped: ${v.skipped}`);
    } else if (r.code === 0 && v) {
      out.activation = v;
      say(`Extension activation in VS Code ${v.vscode}, ${v.samples} fresh extension host${v.samples > 1 ? 's' : ''} (median / max)`);
      say(`  activate() body: ${fmt(v.activationMs.median)} / ${fmt(v.activationMs.max)} ms; ext.activate() as another extension sees it (bundle load included): ${fmt(v.activateCallMs.median)} / ${fmt(v.activateCallMs.max)} ms`);
    } else {
      failures.push(`activation: ${reason(r)}`);
      out.activation = { failed: reason(r) };
      say(`Extension activation: FAILED: ${reason(r)}`);
    }
  }

  say('');
  const previous = readJson(path.join(RESULTS_DIR, 'latest.json'));
  if (only.has('moe') && only.has('pytorch')) {
    if (ratio !== undefined) say(`ratio ours/pytorch: ${fmt(ratio)}   (${best!.backend}${best!.native ? ' native' : ''} ${fmt(best!.msPerStep!.median)} ms / pytorch ${peer!.device}${peer!.device === 'cpu' ? `, ${peer!.threads} thread(s)` : ''} ${fmt(peer!.moeStepMs)} ms)`);
    else if (torch.some((t) => t.skipped)) say(`pytorch skipped: ${torch.find((t) => t.skipped)!.skipped}; no ratio`);
    else say('no ratio: no measured backend of ours or no PyTorch figure');
  }
  if (previous?.moeStep?.ratio && ratio !== undefined) say(`  previous run (${previous.mode}, commit ${String(previous.commit ?? '?').slice(0, 10)}, ${previous.startedAt}): ratio ${fmt(previous.moeStep.ratio)}`);
  out.seconds = Math.round((Date.now() - t0) / 1000);
  out.loadAverage.end = Number(os.loadavg()[0].toFixed(2));
  out.failures = failures;
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${started.toISOString().replace(/[:.]/g, '-')}${quick ? '-quick' : ''}.json`);
  const json = JSON.stringify(out, null, 2) + '\n';
  fs.writeFileSync(file, json);
  fs.writeFileSync(path.join(RESULTS_DIR, 'latest.json'), json);
  say(`results: ${path.relative(ROOT, file)} (and bench/results/latest.json); ${out.seconds} s in all${failures.length ? `; ${failures.length} part(s) FAILED` : ''}`);
  process.exitCode = failures.length ? 1 : 0;
}

function readJson(file: string): Record<string, any> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

main().catch((e) => {
  process.stderr.write(`[bench] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
