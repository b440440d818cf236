// Evidence for issue 11, item 3: does the regularizer (κ of the model's kernel) keep every unit in use?
// Real `pltrain` runs (the CLI) over seeds and α values; per run: the routing shares at the end (mean of
// the streamed per-unit shares over the last 10 % of monitor records), the participation ratio
// 1/Σshare², the model's κ (the streamed regularizer, κ of the model's kernel) at the end, and the test
// metric. Prints a markdown table and writes experiments/collapse-<family>.json.
//   node --import tsx scripts/collapse.ts [--config examples/default.pltrain.json] [--family moe-mlp]
//        [--seeds 3] [--steps 2000] [--alphas 0,0.01] [--set '{"batchSize":32}']
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MetricsEvent } from '../src/protocol';
import { runPltrain } from './runPltrain';

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};

/** Small presets for the families other than the default moe-mlp config (a 2-core CPU). */
const PRESETS: Record<string, object> = {
  'switch-transformer': { model: { family: 'switch-transformer', experts: 4, hiddenUnits: 32, dModel: 32, layers: 2, contextLength: 32 }, data: { source: 'text' }, batchSize: 16, monitor: { every: 10, probeSize: 32 } },
  'bert-encoder': { model: { family: 'bert-encoder', experts: 4, dModel: 16, layers: 1, hiddenUnits: 32 }, batchSize: 32, learningRate: 0.005, monitor: { every: 10, probeSize: 16 } },
  vgg: { model: { family: 'vgg', experts: 4, hiddenUnits: 4, layers: 2 }, batchSize: 32, learningRate: 0.01, monitor: { every: 10, probeSize: 16 } },
};

export interface CollapseRun {
  family: string;
  alpha: number;
  seed: number;
  steps: number;
  shares: number[];
  participation: number;
  minShare: number;
  modelKappa: number;
  unitKappas: (number | null)[];
  inactive: number[];
  testMetric: number;
  taskMetric: 'accuracy' | 'perplexity';
  seconds: number;
}

export function summarize(metrics: MetricsEvent[]): { shares: number[]; participation: number; modelKappa: number; unitKappas: (number | null)[]; inactive: number[] } {
  const monitored = metrics.filter((m) => m.units);
  const last = monitored.at(-1)!;
  const tail = monitored.slice(Math.floor(monitored.length * 0.9));
  const units = last.units!.length;
  const shares = Array.from({ length: units }, (_, e) => tail.reduce((a, m) => a + (m.units![e].share ?? 0), 0) / tail.length);
  const total = shares.reduce((a, b) => a + b, 0);
  const normalized = shares.map((s) => s / total);
  return {
    shares: normalized,
    participation: 1 / normalized.reduce((a, s) => a + s * s, 0),
    modelKappa: last.regularizer,
    unitKappas: last.units!.map((u) => u.kappa),
    inactive: last.units!.filter((u) => u.active === false).map((u) => u.id),
  };
}

function runOne(base: object, family: string, alpha: number, seed: number, steps: number): Promise<CollapseRun> {
  const config = { ...base, name: `collapse-${family}-a${alpha}-s${seed}`, steps, seed, alpha, checkpointEvery: 0 };
  return runPltrain(config, 'plt-collapse-').then((r) => {
    const s = summarize(r.metrics);
    return { family, alpha, seed, steps, ...s, minShare: Math.min(...s.shares), testMetric: r.testMetric, taskMetric: r.taskMetric, seconds: r.seconds };
  });
}

const f = (x: number, d = 3) => (Math.abs(x) >= 1e4 ? x.toExponential(2) : Number(x.toPrecision(d)).toString());

export function collapseTable(runs: CollapseRun[]): string {
  const metric = runs[0]?.taskMetric ?? 'accuracy';
  const lines = [`| α | seed | shares at the end | min share | participation | model κ at the end | inactive | test ${metric} |`, '|---|---|---|---|---|---|---|---|'];
  for (const r of runs) {
    lines.push(
      `| ${r.alpha} | ${r.seed} | [${r.shares.map((s) => s.toFixed(3)).join(', ')}] | ${(r.minShare * 100).toFixed(1)} % | ${f(r.participation)} | ${f(r.modelKappa)} | ${r.inactive.length ? r.inactive.join(', ') : '–'} | ${metric === 'accuracy' ? `${(r.testMetric * 100).toFixed(1)} %` : f(r.testMetric, 4)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const family = flag('family') ?? 'moe-mlp';
  const configFile = flag('config') ?? (family === 'moe-mlp' ? path.join(root, 'examples', 'default.pltrain.json') : undefined);
  let base: object = configFile ? JSON.parse(fs.readFileSync(configFile, 'utf8')) : PRESETS[family];
  if (!base) throw new Error(`no preset for ${family}`);
  delete (base as { $schema?: string }).$schema;
  if (flag('set')) base = { ...base, ...JSON.parse(flag('set')!) };
  const seeds = Number(flag('seeds') ?? 3);
  const steps = Number(flag('steps') ?? 2000);
  const alphas = (flag('alphas') ?? '0,0.01').split(',').map(Number);
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout.trim();
  const runs: CollapseRun[] = [];
  for (const alpha of alphas) {
    for (let seed = 1; seed <= seeds; seed++) {
      const r = await runOne(base, family, alpha, seed, steps);
      runs.push(r);
      console.log(`${family} α=${alpha} seed ${seed}: shares [${r.shares.map((s) => s.toFixed(3))}], PR ${f(r.participation)}, model κ ${f(r.modelKappa)}, test ${f(r.testMetric, 4)}, ${r.seconds.toFixed(0)} s`);
    }
  }
  const out = path.join(root, 'experiments', `collapse-${family}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), commit, family, steps, config: base, runs }, null, 1)}\n`);
  console.log(`\n${family}, ${steps} steps, commit ${commit}:\n\n${collapseTable(runs)}\n\nwrote ${path.relative(root, out)}`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e.message ?? e);
    process.exit(1);
  });
}
