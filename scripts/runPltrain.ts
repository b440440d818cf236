// One real `pltrain` run for the experiment scripts (collapse.ts, experiments.ts): writes the config to a
// temp folder, runs bin/pltrain.js on it, and hands back what the run recorded and printed.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MetricsEventSchema, type MetricsEvent } from '../src/protocol';

const root = path.resolve(__dirname, '..');

export interface PltrainRun {
  /** metrics.jsonl, validated. */
  metrics: MetricsEvent[];
  /** The test metric the run printed at its end: accuracy (0…1) or perplexity. */
  testMetric: number;
  taskMetric: 'accuracy' | 'perplexity';
  /** The backend its log named (`?` when it named none). */
  backend: string;
  seconds: number;
}

/** Runs `config` to its end; rejects with the output's tail when pltrain exits non-zero. The temp folder is removed. */
export function runPltrain(config: { name: string }, tmpPrefix: string): Promise<PltrainRun> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  const file = path.join(dir, 'run.pltrain.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const runDir = path.join(dir, 'run');
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin', 'pltrain.js'), '--config', file, '--run-dir', runDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(`${config.name} exited ${code}:\n${out.slice(-2000)}`);
        const metrics = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l)));
        const acc = /test accuracy ([\d.]+)%/.exec(out);
        const ppl = /test perplexity ([\d.]+)/.exec(out);
        if (!acc && !ppl) throw new Error(`${config.name}: no test metric in its output:\n${out.slice(-2000)}`);
        resolve({ metrics, testMetric: acc ? Number(acc[1]) / 100 : Number(ppl![1]), taskMetric: acc ? 'accuracy' : 'perplexity', backend: /backend: (\S+)/.exec(out)?.[1] ?? '?', seconds: (Date.now() - t0) / 1000 });
      } catch (e) {
        reject(e);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
