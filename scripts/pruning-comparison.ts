// `npm run experiments:pruning`: the gating pruner against random, magnitude and lowest-share pruning
// at matched sparsity (issue 11, items 4 and 6). For each family and seed, one model is trained for
// `pretrain` steps; then every method starts from that same state and runs `select` more steps (the
// gate: its soft-masked anneal, in `exact` mode; the others: plain steps, measuring the same way),
// prunes exactly k units, is evaluated on the test split, fine-tuned for `finetune` steps with the
// units masked, and evaluated again. Writes experiments/pruning-comparison.json and the table into
// docs/results.md between its own markers. A run of some families (--families) merges with the
// committed JSON: the rows of families it does not run are kept (each row records its α, commit and
// backend, and the table says which commit produced which family), those of the families it runs are
// replaced. The committed rows must be at the same --scale (refused before training otherwise).
//   node --import tsx scripts/pruning-comparison.ts [--families moe-mlp,vgg] [--seeds 3] [--scale 1] [--quick]
import { execSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseTrainingConfig, type TrainingConfig, type TrainingConfigInput } from '../src/protocol';
import { selectBackend } from '../src/trainer/backend';
import type * as TF from '@tensorflow/tfjs';
import { createModel, loadTaskData, probeBatch, type Batch, type PlModel, type TaskData } from '../src/trainer/models';
import { MoeMlp } from '../src/trainer/models/moeMlp';
import { SwitchTransformerLm } from '../src/trainer/models/switchTransformer';
import { GatingPruner, unitWeightNorms, type UnitMeasurement } from '../src/trainer/pl/pruner';

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const scale = Number(flag('scale') ?? (quick ? 0.1 : 1));

/**
 * Each family small enough for a 2-core CPU; 4 units, 2 of them pruned (budget 0.5). Every family
 * trains at the α of its examples/*.pltrain.json (bert-encoder and vgg ran at α = 0 here until their
 * regularized step measured inside the step, at about twice the plain step's cost now).
 */
const FAMILIES: Record<string, { pretrain: number; select: number; finetune: number; alpha: number; config: TrainingConfigInput }> = {
  'moe-mlp': { pretrain: 600, select: 200, finetune: 150, alpha: 0.01, config: { model: { family: 'moe-mlp', experts: 4, hiddenUnits: 32 }, batchSize: 64 } },
  'switch-transformer': {
    pretrain: 200,
    select: 150,
    finetune: 60,
    alpha: 0.001,
    config: { model: { family: 'switch-transformer', experts: 4, hiddenUnits: 32, dModel: 32, layers: 2, contextLength: 32 }, data: { source: 'text' }, batchSize: 16 },
  },
  'bert-encoder': { pretrain: 400, select: 200, finetune: 100, alpha: 0.001, config: { model: { family: 'bert-encoder', experts: 4, dModel: 16, layers: 1, hiddenUnits: 32 }, batchSize: 32, learningRate: 0.005 } },
  vgg: { pretrain: 400, select: 200, finetune: 100, alpha: 0.001, config: { model: { family: 'vgg', experts: 4, hiddenUnits: 4, layers: 2 }, batchSize: 32, learningRate: 0.01 } },
};
const METHODS = ['gate', 'random', 'magnitude', 'lowest-share'] as const;
type Method = (typeof METHODS)[number];
const PRUNED = 2;
const MONITOR_EVERY = 10;

const families = (flag('families') ?? Object.keys(FAMILIES).join(',')).split(',');
const seeds = Number(flag('seeds') ?? (quick ? 1 : 3));

export interface Row {
  family: string;
  method: Method;
  seed: number;
  /** The α the family trained at, the short commit of the code and the backend that produced the row. */
  alpha: number;
  commit: string;
  backend: string;
  pruned: number[];
  /** Routing share of each pruned unit in the pretrained model (null where the family reports none). */
  prunedShare: (number | null)[];
  before: number;
  afterPrune: number;
  afterFinetune: number;
  taskMetric: 'accuracy' | 'perplexity';
  seconds: number;
}

/** experiments/pruning-comparison.json. */
export interface RunFile {
  scale: number;
  rows: Row[];
}

/**
 * The file after a run: the earlier rows of every family the run has no row for, then the run's own
 * rows, in FAMILIES order. Rows measured at another --scale are not comparable (the table states one
 * step count per family), so a scale mismatch is an error, not a silent replacement.
 */
export function mergeRuns(earlier: RunFile | undefined, run: RunFile): RunFile {
  if (!earlier) return { scale: run.scale, rows: [...run.rows] };
  if (earlier.rows.length && earlier.scale !== run.scale) throw new Error(`the recorded rows were measured at --scale ${earlier.scale}, this run is at --scale ${run.scale}: their tables would not be comparable (move the file away to start afresh)`);
  const runFamilies = new Set(run.rows.map((r) => r.family));
  const rows = [...earlier.rows.filter((r) => !runFamilies.has(r.family)), ...run.rows];
  const order = (family: string) => {
    const i = Object.keys(FAMILIES).indexOf(family);
    return i < 0 ? Infinity : i;
  };
  return { scale: run.scale, rows: rows.map((r, i) => ({ r, i })).sort((a, b) => order(a.r.family) - order(b.r.family) || a.i - b.i).map(({ r }) => r) };
}

function parse(input: TrainingConfigInput): TrainingConfig {
  const r = parseTrainingConfig(input);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

/** A seeded stream of training batches, the same for every method. */
function* batches(n: number, size: number, seed: number): Generator<Int32Array> {
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (;;) yield Int32Array.from({ length: size }, () => Math.floor(rnd() * n));
}

/** Each unit's routing share: the measurement's `share` where the protocol carries it, else the family's own routing read-out. */
function shares(tf: typeof import('@tensorflow/tfjs'), model: PlModel, probe: Batch, measured: UnitMeasurement[]): (number | null)[] {
  if (measured.every((s) => typeof s.share === 'number')) return measured.map((s) => s.share!);
  // moe-mlp: the gate's mean probability on the probe batch.
  if (model instanceof MoeMlp) return Array.from(tf.tidy(() => tf.mean(tf.softmax(tf.add(tf.matMul(probe.x as TF.Tensor2D, model.gateW as unknown as TF.Tensor2D), model.gateB)), 0).dataSync()));
  // switch-transformer: the fraction of the probe's tokens routed to each expert, over its Switch
  // layers, unmasked (the last step's load would carry the gate's own masks).
  if (model instanceof SwitchTransformerLm) {
    const counts = new Array(model.units).fill(0);
    for (const layer of model.inspect(probe.x).layers) for (const e of layer.expertOf) counts[e]++;
    const total = counts.reduce((a, b) => a + b, 0);
    return counts.map((c) => c / total);
  }
  return measured.map(() => null);
}

async function runFamily(tf: typeof import('@tensorflow/tfjs'), family: string, seed: number, meta: { commit: string; backend: string }): Promise<Row[]> {
  const f = FAMILIES[family];
  const steps = (n: number) => Math.max(MONITOR_EVERY, Math.round(n * scale));
  const [pretrain, select, finetune] = [steps(f.pretrain), steps(f.select), steps(f.finetune)];
  const units = (f.config.model?.experts as number) ?? 4;
  const config = parse({ ...f.config, seed, alpha: f.alpha, monitor: { every: MONITOR_EVERY, probeSize: 16 }, pruning: { enabled: true, warmup: 0, anneal: select, budget: PRUNED / units, exact: true } });
  const data: TaskData = loadTaskData(config, root);
  const probe = probeBatch(tf, config, data);
  const build = () => {
    const m = createModel(tf, config, data);
    m.setProbe(probeBatch(tf, config, data));
    return m;
  };
  const all = Array.from({ length: units }, (_, i) => i);
  const train = (m: PlModel, n: number, order: Generator<Int32Array>, pruned: Set<number>, hooks: { before?: (step: number) => number[] | undefined; after?: (step: number, maskGrad?: number[]) => void; measured?: (s: UnitMeasurement[]) => void } = {}) => {
    for (let step = 0; step < n; step++) {
      const b = data.batch(tf, 'train', order.next().value as Int32Array);
      const trainable = all.filter((i) => !pruned.has(i));
      const softMask = hooks.before?.(step);
      if (config.alpha > 0 && !m.measuresInStep) m.measure(new Set(), pruned);
      const r = m.trainStep(b, { alpha: config.alpha, trainable, pruned, ...(softMask ? { softMask } : {}) });
      tf.dispose([b.x, b.y]);
      hooks.after?.(step, r.maskGrad);
      if (hooks.measured && (step + 1) % MONITOR_EVERY === 0) hooks.measured(r.measured ?? m.measure(new Set(), pruned));
    }
  };
  const t0 = performance.now();
  const base = build();
  train(base, pretrain, batches(data.trainSize, config.batchSize, seed), new Set());
  const state = await base.getState();
  const before = base.evaluate(data, 'test', new Set());
  // The routing share of every unit in the pretrained model, the common reference for all methods
  // (a method's own selection phase changes it: the gate's masks take routing away from what it closes).
  const referenceShare = shares(tf, base, probe, base.measure(new Set(), new Set()));
  base.dispose();
  console.log(`${family} seed ${seed}: pretrained ${pretrain} steps in ${((performance.now() - t0) / 1000).toFixed(0)} s, test ${before.toFixed(4)}`);

  const rows: Row[] = [];
  for (const method of METHODS) {
    const t1 = performance.now();
    const m = build();
    await m.setState(state);
    const none = new Set<number>();
    const order = batches(data.trainSize, config.batchSize, seed * 7919 + 1);
    const shareSum = new Array(units).fill(0);
    let shareCount = 0;
    const gate = method === 'gate' ? new GatingPruner(tf, units, config.pruning, seed) : undefined;
    const observe = (s: UnitMeasurement[]) => {
      const sh = shares(tf, m, probe, s);
      if (sh.every((x) => x !== null)) {
        sh.forEach((x, i) => (shareSum[i] += x!));
        shareCount++;
      }
      gate?.observe(s.map((u, i) => ({ ...u, ...(sh[i] !== null ? { share: sh[i]! } : {}) })), unitWeightNorms(units, (i) => m.unitWeights(i)), none);
    };
    observe(m.measure(none, none));
    train(m, select, order, none, {
      before: (step) => gate?.sampleMask(step, none, none),
      after: (_, g) => g && gate?.update(g, none, none),
      measured: observe,
    });
    const haveShare = shareCount > 0;
    const meanShare = shareSum.map((x) => (haveShare ? x / shareCount : null));
    let pruned: number[];
    if (gate) {
      pruned = gate.decide(none, none);
      if (args.includes('--verbose')) console.log(`  gate: keep ${gate.decisionKeepProbabilities(none, none).map((x) => x.toFixed(2))}, ∂L/∂m ${gate.taskSlope.map((x) => x.toFixed(4))}, share during selection ${meanShare.map((x) => (x === null ? '–' : x.toFixed(3)))}`);
    }
    else if (method === 'random') {
      let s = (seed * 104729 + 3) >>> 0;
      const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
      pruned = [...all].sort(() => rnd() - 0.5).slice(0, PRUNED);
    } else if (method === 'magnitude') {
      const norms = unitWeightNorms(units, (i) => m.unitWeights(i));
      pruned = [...all].sort((a, b) => norms[a] - norms[b]).slice(0, PRUNED);
    } else {
      if (!haveShare) {
        m.dispose();
        continue; // the family reports no routing share: no lowest-share baseline
      }
      pruned = [...all].sort((a, b) => meanShare[a]! - meanShare[b]!).slice(0, PRUNED);
    }
    if (pruned.length !== PRUNED) throw new Error(`${method} pruned ${pruned.length}, not ${PRUNED}`);
    const prunedSet = new Set(pruned);
    const afterPrune = m.evaluate(data, 'test', prunedSet);
    train(m, finetune, order, prunedSet);
    const afterFinetune = m.evaluate(data, 'test', prunedSet);
    m.dispose();
    const row: Row = { family, method, seed, alpha: config.alpha, commit: meta.commit, backend: meta.backend, pruned: pruned.sort(), prunedShare: pruned.map((u) => referenceShare[u]), before, afterPrune, afterFinetune, taskMetric: data.taskMetric, seconds: (performance.now() - t1) / 1000 };
    console.log(`  ${method}: pruned [${row.pruned}] (share ${row.prunedShare.map((x) => (x === null ? '–' : x.toFixed(3))).join(', ')}), test ${afterPrune.toFixed(4)} → ${afterFinetune.toFixed(4)} after fine-tuning (${row.seconds.toFixed(0)} s)`);
    rows.push(row);
  }
  return rows;
}

/** The markdown tables of docs/results.md, one per family with rows, then which code produced them. */
export function table(rows: Row[], scale: number): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = (xs: number[]) => (xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)) : 0);
  const out: string[] = [];
  for (const family of Object.keys(FAMILIES)) {
    const fr = rows.filter((r) => r.family === family);
    if (!fr.length) continue;
    const f = FAMILIES[family];
    const [p, s, t] = [f.pretrain, f.select, f.finetune].map((n) => Math.max(MONITOR_EVERY, Math.round(n * scale)));
    const metric = fr[0].taskMetric === 'accuracy' ? 'test accuracy (%)' : 'test perplexity';
    const show = (x: number) => (fr[0].taskMetric === 'accuracy' ? (100 * x).toFixed(1) : x.toFixed(2));
    const pm = (xs: number[]) => `${show(mean(xs))} ± ${show(sd(xs))}`;
    out.push(`**${family}** (4 units, 2 pruned; ${p} steps of training, ${s} steps of selection, ${t} of fine-tuning; α ${[...new Set(fr.map((r) => r.alpha))].join(' and ')}; ${new Set(fr.map((r) => r.seed)).size} seeds). ${metric}, mean ± sd over seeds; before pruning: ${pm(fr.filter((r) => r.method === 'gate').map((r) => r.before))}.`);
    out.push('');
    out.push(`| method | right after pruning | after fine-tuning | pretrained routing share of the pruned units, per seed | pruned units per seed |`);
    out.push('|---|---|---|---|---|');
    for (const method of METHODS) {
      const mr = fr.filter((r) => r.method === method);
      if (!mr.length) {
        out.push(`| ${method} | n/a: the family reports no routing share | | | |`);
        continue;
      }
      const share = mr.every((r) => r.prunedShare.every((x) => x !== null)) ? mr.map((r) => r.prunedShare.reduce((a, b) => a! + b!, 0)!.toFixed(3)).join(', ') : '–';
      out.push(`| ${method} | ${pm(mr.map((r) => r.afterPrune))} | ${pm(mr.map((r) => r.afterFinetune))} | ${share} | ${mr.map((r) => `[${r.pruned.join(',')}]`).join(' ')} |`);
    }
    out.push('');
  }
  // Which backend and commit produced which families (a run of some families keeps the others' rows).
  const producers = new Map<string, Map<string, string[]>>(); // backend → commit → families
  for (const family of Object.keys(FAMILIES)) {
    for (const r of rows.filter((x) => x.family === family)) {
      const commits = producers.get(r.backend) ?? producers.set(r.backend, new Map()).get(r.backend)!;
      const fams = commits.get(r.commit) ?? commits.set(r.commit, []).get(r.commit)!;
      if (!fams.includes(family)) fams.push(family);
    }
  }
  const several = [...producers.values()].reduce((n, c) => n + c.size, 0) > 1;
  const by = [...producers].map(([backend, commits]) => `Backend ${backend}; code at commit ${[...commits].map(([commit, fams]) => (several ? `${commit} (${fams.join(', ')})` : commit)).join(' and ')}`);
  out.push(`${by.join('; ')}; \`npm run experiments:pruning\`${scale !== 1 ? ` with --scale ${scale}` : ''}.`);
  return out.join('\n');
}

async function main(): Promise<void> {
  // The commit the code was loaded from (read now: later commits do not change what runs).
  let commit = '?';
  try {
    commit = execSync('git rev-parse --short HEAD', { cwd: root }).toString().trim() + (execSync('git status --porcelain -- src scripts', { cwd: root }).toString().trim() ? ' (with uncommitted changes)' : '');
  } catch {
    /* not a git checkout */
  }
  for (const family of families) if (!FAMILIES[family]) throw new Error(`unknown family ${family} (known: ${Object.keys(FAMILIES).join(', ')})`);
  // --quick leaves the committed figures alone (its own file starts empty every time).
  const outFile = quick ? path.join(os.tmpdir(), 'pruning-comparison.quick.json') : path.join(root, 'experiments', 'pruning-comparison.json');
  const earlier: RunFile | undefined = !quick && fs.existsSync(outFile) ? JSON.parse(fs.readFileSync(outFile, 'utf8')) : undefined;
  mergeRuns(earlier, { scale, rows: [] }); // a scale mismatch is refused now, not after the training
  const backend = await selectBackend('auto');
  const tf = backend.tf as typeof import('@tensorflow/tfjs');
  console.log(`backend: ${backend.info.name} — ${backend.info.detail}`);
  const rows: Row[] = [];
  let merged = mergeRuns(earlier, { scale, rows });
  for (const family of families) {
    for (let seed = 1; seed <= seeds; seed++) {
      rows.push(...(await runFamily(tf, family, seed, { commit, backend: backend.info.name })));
      // Written after every seed: a run cut short keeps what it measured.
      merged = mergeRuns(earlier, { scale, rows });
      fs.writeFileSync(outFile, JSON.stringify(merged, null, 2) + '\n');
    }
  }
  const md = table(merged.rows, scale);
  console.log(md);
  if (quick) return console.log('(--quick: docs/results.md left as it is)');
  const doc = path.join(root, 'docs', 'results.md');
  const text = fs.readFileSync(doc, 'utf8');
  const begin = '<!-- pruning-comparison:begin -->', end = '<!-- pruning-comparison:end -->';
  const block = `${begin}\n${md}\n${end}`;
  fs.writeFileSync(doc, text.includes(begin) ? text.slice(0, text.indexOf(begin)) + block + text.slice(text.indexOf(end) + end.length) : `${text.trimEnd()}\n\n## Pruning at matched sparsity\n\n${block}\n`);
  console.log(`wrote ${doc}`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
