// Nothing lost: a kill -9 at an arbitrary moment leaves valid JSONL and a checkpoint, and
// `pltrain --resume` continues from it with the same step numbering and the steered state (α).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { LISTENING_PREFIX, MetricsEventSchema, TOKEN_HEADER, TrainerEvent } from '../../src/protocol';
import { loadCheckpoint } from '../../src/trainer/checkpoint';
import { until } from '../support/until';

import { ENGINES, forEngine, spawnTrainer } from '../support/engines';

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-crash-'));
  const runDir = path.join(tmp, 'run');
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.kill('SIGKILL')));

  function start(args: string[]): Promise<{ child: ChildProcess; port: number }> {
    const child = spawnTrainer(engine, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    return new Promise((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const line = buf.split('\n').find((l) => l.startsWith(LISTENING_PREFIX));
        if (line) resolve({ child, port: JSON.parse(line.slice(LISTENING_PREFIX.length)).port });
      });
      child.on('exit', (c) => reject(new Error(`trainer exited ${c}`)));
    });
  }

  function client(port: number): Promise<{ ws: WebSocket; events: TrainerEvent[] }> {
    const token = fs.readFileSync(path.join(runDir, 'token'), 'utf8').trim();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { [TOKEN_HEADER]: token } });
    const events: TrainerEvent[] = [];
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString());
      if (f.type !== 'error') events.push(f);
    });
    return new Promise((resolve) => ws.on('open', () => (ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 })), resolve({ ws, events }))));
  }


  const metricLines = () => fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.trim());

  test('kill -9 mid-run, then resume from the checkpoint with the same numbering and α', { timeout: 120_000 }, async () => {
    const config = path.join(tmp, 'crash.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'crash', steps: 1_000_000, batchSize: 16, checkpointEvery: 20, model: { experts: 3, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const first = await start(['--config', config, '--run-dir', runDir]);
    const c1 = await client(first.port);
    await until('step 30', () => c1.events.some((e) => e.type === 'metrics' && e.step >= 30));
    c1.ws.send(JSON.stringify({ type: 'command', id: 'alpha1', command: { kind: 'setAlpha', alpha: 0.3 } }));
    const ack = await until('ack', () => c1.events.find((e): e is Extract<TrainerEvent, { type: 'ack' }> => e.type === 'ack'));
    assert.equal(ack.status, 'applied');
    await until('more steps', () => c1.events.some((e) => e.type === 'metrics' && e.step >= ack.step + 27));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    c1.ws.close();

    // What a kill -9 leaves: JSONL whose every complete line parses, steps contiguous from 1.
    const lines = metricLines();
    const parsed = lines.map((l) => {
      try {
        return MetricsEventSchema.parse(JSON.parse(l));
      } catch {
        return undefined;
      }
    });
    parsed.slice(0, -1).forEach((m, i) => assert.ok(m, `line ${i + 1} is valid`));
    const steps = parsed.filter(Boolean).map((m) => m!.step);
    assert.deepEqual(steps, steps.map((_, i) => i + 1));
    const cp = loadCheckpoint(runDir);
    assert.ok(cp, 'a checkpoint survived');
    assert.equal(cp.progress.alpha, 0.3, 'the checkpoint holds the steered α');
    assert.ok(cp.progress.step >= ack.step && cp.progress.step % 20 === 0, `checkpoint at step ${cp.progress.step}`);
    const lastBefore = steps.at(-1)!;

    const second = await start(['--resume', runDir]);
    const c2 = await client(second.port);
    const hello = await until('hello', () => c2.events.find((e): e is Extract<TrainerEvent, { type: 'hello' }> => e.type === 'hello' && e.resumedFromStep !== undefined));
    assert.equal(hello.resumedFromStep, cp.progress.step);
    assert.equal(hello.alpha, 0.3);
    await until('resumed steps', () => c2.events.some((e) => e.type === 'metrics' && e.step >= lastBefore + 5));
    c2.ws.send(JSON.stringify({ type: 'command', id: 'stop1', command: { kind: 'stop' } }));
    await new Promise((r) => second.child.once('exit', r));
    c2.ws.close();

    const all = metricLines().map((l) => MetricsEventSchema.parse(JSON.parse(l)));
    assert.deepEqual(all.map((m) => m.step), all.map((_, i) => i + 1), 'one record per step, in order, no gap');
    for (const m of all) if (m.step > ack.step) assert.equal(m.alpha, 0.3, `α at step ${m.step}`);
    const seqs = all.map((m) => m.seq);
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'seqs strictly increase across the crash');
    // The kill can land right after a checkpoint; otherwise the steps past it were set aside, not lost.
    if (lastBefore > cp.progress.step) {
      const discarded = fs.readFileSync(path.join(runDir, 'metrics.discarded.jsonl'), 'utf8').trim().split('\n');
      assert.ok(discarded.length >= lastBefore - cp.progress.step, 'redone steps were kept aside, not lost');
    }
  });
});
