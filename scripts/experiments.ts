// `npm run experiments`: baseline vs PL-regularized vs PL-regularized + pruning, for each model
// family, over several seeds, each a real `pltrain` run on the built-in data. Writes the tables into
// docs/results.md (between the markers, leaving the prose around them) and every figure into
// experiments/results.json.
//   node --import tsx scripts/experiments.ts [--families moe-mlp,vgg] [--seeds 3] [--steps N] [--quick]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TrainingConfigInput } from '../src/protocol';
import { summarize } from './collapse';
import { runPltrain } from './runPltrain';

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');

/** Each family at a size that trains on a 2-core CPU in about a minute; α chosen per family. */
const FAMILIES: Record<string, { steps: number; alpha: number; config: TrainingConfigInput }> = {
  'moe-mlp': { steps: 1500, alpha: 0.01, config: { model: { family: 'moe-mlp', experts: 6, hiddenUnits: 32 }, batchSize: 64 } },
  'switch-transformer': {
    steps: 400,
    alpha: 0.001,
    config: { model: { family: 'switch-transformer', experts: 4, hiddenUnits: 32, dModel: 32, layers: 2, contextLength: 32 }, data: { source: 'text' }, batchSize: 16 },
  },
  'bert-encoder': { steps: 400, alpha: 0.001, config: { model: { family: 'bert-encoder', experts: 4, dModel: 16, layers: 1, hiddenUnits: 32 }, batchSize: 32, learningRate: 0.005 } },
  vgg: { steps: 400, alpha: 0.001, config: { model: { family: 'vgg', experts: 4, hiddenUnits: 4, layers: 2 }, batchSize: 32, learningRate: 0.01 } },
};
const VARIANTS = ['baseline', 'pl', 'pl+pruning'] as const;
type Variant = (typeof VARIANTS)[number];

const families = (flag('families') ?? Object.keys(FAMILIES).join(',')).split(',');
const seeds = Number(flag('seeds') ?? (quick ? 1 : 3));
const stepsOverride = flag('steps') ? Number(flag('steps')) : quick ? 100 : undefined;
/** The code the runs measure: HEAD, marked when the work tree differs from it (src/, scripts/ or bin/). */
const commit = (() => {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'scripts', 'bin', 'webview'], { cwd: root, encoding: 'utf8' }).trim();
    return dirty ? `${head}+uncommitted` : head;
  } catch {
    return '?';
  }
})();

interface RunResult {
  family: string;
  variant: Variant;
  seed: number;
  steps: number;
  testMetric: number;
  taskMetric: 'accuracy' | 'perplexity';
  meanKappa: number;
  maxKappa: number;
  unitsKept: number;
  units: number;
  /** κ of the model's kernel (the streamed regularizer) at the last monitor step. */
  modelKappa: number;
  /** Routing shares at the end (mean over the last 10 % of monitor records, normalized; scripts/collapse.ts). */
  shares: number[];
  /** Smallest end share over the kept (unpruned) units. */
  minShare: number;
  /** 1/Σ share² of the end shares. */
  participation: number;
  /** Commit of the code that ran (see `commit`). */
  commit: string;
  /** Smoothed task loss per step (EMA 0.05), for steps-to-target. */
  smoothedLoss: number[];
  seconds: number;
  backend: string;
}

function runOne(family: string, variant: Variant, seed: number): Promise<RunResult> {
  const f = FAMILIES[family];
  const steps = stepsOverride ?? f.steps;
  const units = (f.config.model?.experts as number) ?? 4;
  const config: TrainingConfigInput = {
    ...f.config,
    name: `${family}-${variant}-s${seed}`,
    steps,
    seed,
    alpha: variant === 'baseline' ? 0 : f.alpha,
    monitor: { every: 10, probeSize: 16 },
    checkpointEvery: 0,
    pruning: variant === 'pl+pruning' ? { enabled: true, warmup: Math.round(steps / 5), anneal: Math.max(10, Math.round(steps / 5)), budget: 0.5, kappaFactor: 2 } : { enabled: false },
  };
  return runPltrain(config as { name: string }, 'plt-exp-').then(({ metrics, testMetric, taskMetric, backend, seconds }) => {
    const last = [...metrics].reverse().find((m) => m.units)!;
    const live = last.units!.filter((e) => !e.pruned);
    const routing = summarize(metrics);
    const liveKappas = live.map((e) => e.kappa).filter((k): k is number => k !== null); // null: not measurable
    let ema = metrics[0].taskLoss;
    const smoothedLoss = metrics.map((m) => (ema = 0.95 * ema + 0.05 * m.taskLoss));
    return {
      family,
      variant,
      seed,
      steps,
      testMetric,
      taskMetric,
      meanKappa: liveKappas.reduce((a, k) => a + k, 0) / liveKappas.length,
      maxKappa: Math.max(...liveKappas),
      unitsKept: live.length,
      units,
      modelKappa: routing.modelKappa,
      shares: routing.shares,
      minShare: Math.min(...routing.shares.filter((_, e) => !last.units![e].pruned)),
      participation: routing.participation,
      commit,
      smoothedLoss,
      seconds,
      backend,
    };
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => (xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)) : 0);
const fmt = (x: number, digits = 3) => (Math.abs(x) >= 1e5 ? x.toExponential(2) : Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(digits));
const pm = (xs: number[], scale = 1, digits = 3) => `${fmt(mean(xs) * scale, digits)} ± ${fmt(sd(xs) * scale, 2)}`;

function table(family: string, results: RunResult[]): string {
  const rs = results.filter((r) => r.family === family);
  if (!rs.length) return '';
  const metric = rs[0].taskMetric;
  // Steps to target: the target is a smoothed task loss every variant reaches on average (the worst
  // variant's mean final smoothed loss, +2%), so the column compares speed, not the end point.
  const finals = VARIANTS.map((v) => mean(rs.filter((r) => r.variant === v).map((r) => r.smoothedLoss.at(-1)!))).filter(Number.isFinite);
  const target = Math.max(...finals) * 1.02;
  const stepsTo = (r: RunResult) => {
    const i = r.smoothedLoss.findIndex((l) => l <= target);
    return i < 0 ? NaN : i + 1;
  };
  const lines = [
    `### ${family}`,
    '',
    `${rs[0].steps} steps, ${new Set(rs.map((r) => r.seed)).size} seeds, backend ${rs[0].backend}, code at commit ${[...new Set(rs.map((r) => r.commit ?? '?'))].join(', ')}; target smoothed task loss ${fmt(target)}.`,
    '',
    `| variant | test ${metric} | model κ (end) | mean unit κ (end) | max unit κ (end) | min share (end) | participation (end) | steps to target | units kept | s/run |`,
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const v of VARIANTS) {
    const g = rs.filter((r) => r.variant === v);
    if (!g.length) continue;
    const s = g.map(stepsTo);
    lines.push(
      `| ${v} | ${metric === 'accuracy' ? `${pm(g.map((r) => r.testMetric), 100, 3)} %` : pm(g.map((r) => r.testMetric))} | ${pm(g.map((r) => r.modelKappa))} | ${pm(g.map((r) => r.meanKappa))} | ${pm(g.map((r) => r.maxKappa))} | ${g.map((r) => `${(r.minShare * 100).toFixed(1)} %`).join(', ')} | ${pm(g.map((r) => r.participation))} | ${s.some(Number.isNaN) ? `${s.filter((x) => !Number.isNaN(x)).length}/${s.length} reached; ` : ''}${s.some((x) => !Number.isNaN(x)) ? pm(s.filter((x) => !Number.isNaN(x)), 1, 3) : '–'} | ${g.map((r) => r.unitsKept).join(', ')} of ${g[0].units} | ${fmt(mean(g.map((r) => r.seconds)), 2)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const results: RunResult[] = [];
  for (const family of families) {
    if (!FAMILIES[family]) throw new Error(`unknown family ${family} (known: ${Object.keys(FAMILIES).join(', ')})`);
    for (let seed = 1; seed <= seeds; seed++) {
      for (const variant of VARIANTS) {
        const r = await runOne(family, variant, seed);
        results.push(r);
        console.log(`${family} ${variant} seed ${seed}: test ${r.taskMetric} ${fmt(r.testMetric, 4)}, model κ ${fmt(r.modelKappa)}, unit κ mean ${fmt(r.meanKappa)} max ${fmt(r.maxKappa)}, min share ${(r.minShare * 100).toFixed(1)} %, PR ${fmt(r.participation)}, kept ${r.unitsKept}/${r.units}, ${r.seconds.toFixed(0)} s`);
      }
      // Written after every seed, so a long family leaves complete seeds behind if it is stopped.
      writeOut(results);
    }
  }
}

/**
 * Merges this process's runs into experiments/results.json and rewrites the tables in docs/results.md.
 * The file is read again just before writing, so one process per family can run side by side. Runs
 * without a `commit` predate the current estimators and are dropped: no table row is older than the
 * code it describes.
 */
function writeOut(results: RunResult[]): void {
  const outJson = path.join(root, 'experiments', 'results.json');
  const mine = new Set(results.map((r) => r.family));
  const previous: RunResult[] = fs.existsSync(outJson) ? JSON.parse(fs.readFileSync(outJson, 'utf8')).runs.map((r: RunResult) => ({ ...r, smoothedLoss: expand(r.smoothedLoss) })) : [];
  const all = [...previous.filter((r) => r.commit && !mine.has(r.family)), ...results];
  const tables = Object.keys(FAMILIES)
    .map((f) => table(f, all))
    .filter(Boolean)
    .join('\n\n');
  if (quick) {
    console.log(tables);
    console.log('(--quick: docs/results.md and experiments/results.json left as they are)');
    return;
  }
  fs.mkdirSync(path.dirname(outJson), { recursive: true });
  fs.writeFileSync(outJson, `${JSON.stringify({ date: new Date().toISOString(), runs: all.map(({ smoothedLoss, ...r }) => ({ ...r, finalSmoothedLoss: smoothedLoss.at(-1), smoothedLoss: smoothedLoss.filter((_, i) => i % 10 === 9) })) }, null, 1)}\n`);
  const doc = path.join(root, 'docs', 'results.md');
  const text = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : '<!-- results:begin -->\n<!-- results:end -->\n';
  const begin = '<!-- results:begin -->', end = '<!-- results:end -->';
  fs.writeFileSync(doc, `${text.slice(0, text.indexOf(begin) + begin.length)}\n${tables}\n${text.slice(text.indexOf(end))}`);
  console.log(`wrote ${path.relative(root, doc)} and ${path.relative(root, outJson)}`);
}

/** results.json keeps every 10th smoothed loss (steps 10, 20, …); steps-to-target from it is exact to 10 steps. */
function expand(every10: number[]): number[] {
  return every10.flatMap((l) => new Array(10).fill(l));
}

main().catch((e) => {
  console.error(e.message ?? e);
  process.exit(1);
});
