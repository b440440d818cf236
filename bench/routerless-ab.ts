// In-process A/B of the routerless families' regularized step against their plain step: the models of
// a base commit (`src/trainer/models/` as it was there) and this working tree's, loaded side by side in
// one process on one tf instance, at the family's example config (its batch, α, the default probe).
// Plain and regularized steps alternate on each model, and the two sides alternate (their order flips
// every pair), so both see the same load; medians of wall-clock and process CPU time, and the kernels
// of one step of each (tf.profile). On a shared machine this resolves a few per cent where back-to-back
// runs of bench/routerless-step.ts swing ±10–20 %.
// The base's models are written to src/trainer/models_ab_base/ (their relative imports need the
// place; removed at exit) with their variable-name prefixes renamed, since tf.variable names are
// global to the engine.
// usage: node --import tsx bench/routerless-ab.ts [--base 9e30fef] [--pairs 200] [--families bert-encoder,vgg]
// Prints one line per side on stderr and one `BENCH_RESULT {json}` line on stdout.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/trainer/backend';
import * as branch from '../src/trainer/models';
import type { StepOptions } from '../src/trainer/models';
import { emitResult, round } from './panel-page';
import { exampleConfig, median, ROOT, setUpFamily, timed } from './routerless-setup';

const { values: args } = parseArgs({
  options: {
    base: { type: 'string', default: 'main' },
    pairs: { type: 'string', default: '200' },
    families: { type: 'string', default: 'bert-encoder' },
  },
  allowPositionals: false,
  strict: true,
});
const log = (m: string) => process.stderr.write(`[routerless-ab] ${m}\n`);
const BASE_DIR = path.join(ROOT, 'src', 'trainer', 'models_ab_base');
// The variable-name prefixes of the families this bench builds, renamed in the base's copy.
const PREFIXES: Record<string, [string, string]> = {
  'bertEncoder.ts': ['`bert${modelCount++}`', '`basebert${modelCount++}`'],
  'vgg.ts': ['`vgg${modelCount++}`', '`basevgg${modelCount++}`'],
};

type Models = typeof branch;

function writeBase(commit: string): void {
  if (fs.existsSync(BASE_DIR)) throw new Error(`${path.relative(ROOT, BASE_DIR)} exists: remove it (a previous run's leftover?)`);
  const git = (...a: string[]) => execFileSync('git', a, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  const files = git('ls-tree', '--name-only', commit, 'src/trainer/models/').split('\n').filter(Boolean);
  if (!files.length) throw new Error(`no src/trainer/models/ at ${commit}`);
  fs.mkdirSync(BASE_DIR);
  for (const file of files) {
    let text = git('show', `${commit}:${file}`);
    const rename = PREFIXES[path.basename(file)];
    if (rename) {
      if (!text.includes(rename[0])) throw new Error(`${commit}:${file} has no ${rename[0]} to rename`);
      text = text.replace(rename[0], rename[1]);
    }
    fs.writeFileSync(path.join(BASE_DIR, path.basename(file)), text);
  }
}

async function main(): Promise<void> {
  const commit = String(args.base);
  writeBase(commit);
  const removeBase = () => fs.rmSync(BASE_DIR, { recursive: true, force: true });
  process.on('exit', removeBase);
  process.on('SIGINT', () => process.exit(130));
  const base = (await import(path.join(BASE_DIR, 'index.ts'))) as Models;
  const { tf, info } = await selectBackend('auto');
  const pairs = Number(args.pairs);
  const rows: Record<string, unknown>[] = [];
  for (const family of String(args.families).split(',').filter(Boolean)) {
    const { file, config } = exampleConfig(family);
    const sides = ([['base', base], ['branch', branch]] as const).map(([name, M]) => ({
      name,
      ...setUpFamily(M, tf, config, file),
      runs: { plainWall: [] as number[], plainCpu: [] as number[], regWall: [] as number[], regCpu: [] as number[] },
    }));
    for (const s of sides) for (let i = 0; i < 5; i++) [s.plain, s.regularized].forEach(s.step);
    for (let i = 0; i < pairs; i++) {
      for (const s of i % 2 ? [...sides].reverse() : sides) {
        const p = timed(() => s.step(s.plain));
        const r = timed(() => s.step(s.regularized));
        s.runs.plainWall.push(p.wall);
        s.runs.plainCpu.push(p.cpu);
        s.runs.regWall.push(r.wall);
        s.runs.regCpu.push(r.cpu);
      }
    }
    for (const s of sides) {
      const kernels = async (o: StepOptions) => (await tf.profile(() => s.step(o))).kernels.length;
      const [pw, pc, rw, rc] = [s.runs.plainWall, s.runs.plainCpu, s.runs.regWall, s.runs.regCpu].map(median);
      const row = {
        family,
        side: s.name,
        commit: s.name === 'base' ? commit : 'working tree',
        pairs,
        plainStepMs: round(pw),
        regularizedStepMs: round(rw),
        ratio: round(rw / pw),
        plainStepCpuMs: round(pc),
        regularizedStepCpuMs: round(rc),
        cpuRatio: round(rc / pc),
        plainKernels: await kernels(s.plain),
        regularizedKernels: await kernels(s.regularized),
      };
      log(`${family} ${s.name.padEnd(6)} plain ${row.plainStepMs} / ${row.plainStepCpuMs} ms (${row.plainKernels} kernels), regularized ${row.regularizedStepMs} / ${row.regularizedStepCpuMs} ms (${row.regularizedKernels} kernels): ×${row.ratio} wall, ×${row.cpuRatio} CPU`);
      rows.push(row);
      s.dispose();
    }
  }
  emitResult({ backend: info.name, detail: info.detail, loadAverage: os.loadavg().map((x) => round(x)), rows });
}

main().catch((e) => {
  process.stderr.write(`[routerless-ab] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
