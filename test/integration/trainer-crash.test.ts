// Nothing lost: a kill -9 at an arbitrary moment leaves valid JSONL and a checkpoint, and
// `pltrain --resume` continues from it with the same step numbering and the steered state (α).
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { MetricsEvent, MetricsEventSchema, TOKEN_HEADER, TrainerEvent } from '../../src/protocol';
import { loadCheckpoint } from '../../src/trainer/checkpoint';
import { TrainerEndpoint, endpointOf, endpointUrl, listeningEndpoint } from '../support/endpoint';
import { mulberry32 } from '../support/prng';
import { until } from '../support/until';

import { ENGINES, forEngine, root, spawnTrainer, spawnTrainerSync } from '../support/engines';

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-crash-'));
  const runDir = path.join(tmp, 'run');
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.kill('SIGKILL')));

  function start(args: string[]): Promise<{ child: ChildProcess; port: TrainerEndpoint }> {
    const child = spawnTrainer(engine, [...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    return new Promise((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const listening = listeningEndpoint(buf);
        if (listening) resolve({ child, port: endpointOf(listening) });
      });
      child.on('exit', (c) => reject(new Error(`trainer exited ${c}`)));
    });
  }

  function client(port: TrainerEndpoint): Promise<{ ws: WebSocket; events: TrainerEvent[] }> {
    const token = fs.readFileSync(path.join(runDir, 'token'), 'utf8').trim();
    const ws = new WebSocket(endpointUrl(port), { headers: { [TOKEN_HEADER]: token } });
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

  /** Waits for a child's exit; resolves to its code. */
  const exited = (c: ChildProcess) => new Promise<number | null>((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));
  const acksIn = (dir: string) =>
    fs.existsSync(path.join(dir, 'commands.jsonl')) ? fs.readFileSync(path.join(dir, 'commands.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } }) : [];

  function clientOf(dir: string, port: TrainerEndpoint): Promise<{ ws: WebSocket; events: TrainerEvent[] }> {
    const token = fs.readFileSync(path.join(dir, 'token'), 'utf8').trim();
    const ws = new WebSocket(endpointUrl(port), { headers: { [TOKEN_HEADER]: token } });
    const events: TrainerEvent[] = [];
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString());
      if (f.type !== 'error') events.push(f);
    });
    ws.on('error', () => undefined);
    return new Promise((resolve) => ws.on('open', () => (ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 })), resolve({ ws, events }))));
  }

  test('"applied" means saved: kill -9 at random instants right after acks, and every resume has the acked α and frozen units, each ack once', { timeout: 300_000 }, async () => {
    const dir = path.join(tmp, 'durable');
    const config = path.join(tmp, 'durable.pltrain.json');
    // Checkpoints far apart: only the command's own save can hold its effect.
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'durable', alpha: 0, steps: 1_000_000, batchSize: 16, checkpointEvery: 100_000, model: { experts: 4, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const rnd = mulberry32(20261206);
    let alpha = 0;
    const frozen = new Set<number>();
    const CYCLES = 6;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const t = await start(cycle === 0 ? ['--config', config, '--run-dir', dir] : ['--resume', dir]);
      const c = await clientOf(dir, t.port);
      // This trainer's hello (the replay holds those of earlier resumes too).
      const hello = await until('hello', () => c.events.find((e): e is Extract<TrainerEvent, { type: 'hello' }> => e.type === 'hello' && e.pid === t.child.pid));
      assert.equal(hello.alpha, alpha, `cycle ${cycle}: the resume restored the acked α`);
      const firstUnits = await until('a measurement', () => c.events.find((e): e is MetricsEvent => e.type === 'metrics' && !!e.units && e.seq > hello.seq));
      assert.deepEqual(firstUnits.units!.filter((u) => u.frozen).map((u) => u.id), [...frozen].sort(), `cycle ${cycle}: the resume restored the acked frozen units`);
      // One α change and one freeze toggle, sent together; the kill lands 0–2 ms after the second ack arrives.
      alpha = Math.round(rnd() * 1000) / 1000;
      const unit = cycle % 3;
      const freeze = !frozen.has(unit);
      const ids = [`a${cycle}`, `f${cycle}`];
      c.ws.send(JSON.stringify({ type: 'command', id: ids[0], command: { kind: 'setAlpha', alpha } }));
      c.ws.send(JSON.stringify({ type: 'command', id: ids[1], command: { kind: freeze ? 'freeze' : 'unfreeze', unit } }));
      const acks = await until('both acks', () => {
        const a = c.events.filter((e): e is Extract<TrainerEvent, { type: 'ack' }> => e.type === 'ack' && ids.includes(e.commandId));
        return a.length === 2 ? a : undefined;
      });
      const delay = rnd() * 2;
      await new Promise((r) => setTimeout(r, delay));
      t.child.kill('SIGKILL');
      await exited(t.child);
      c.ws.close();
      assert.ok(acks.every((a) => a.status === 'applied'), JSON.stringify(acks));
      if (freeze) frozen.add(unit);
      else frozen.delete(unit);
      const cp = loadCheckpoint(dir);
      assert.ok(cp, 'a checkpoint');
      assert.equal(cp.progress.alpha, alpha, `cycle ${cycle} (kill ${delay.toFixed(2)} ms after the ack): the checkpoint holds the acked α`);
      assert.deepEqual([...cp.progress.frozen].sort(), [...frozen].sort(), `cycle ${cycle}: the checkpoint holds the acked frozen units`);
    }
    // A last resume: every ack recorded exactly once, and a command resent after a resume is refused as a duplicate.
    const t = await start(['--resume', dir]);
    const c = await clientOf(dir, t.port);
    await until('resumed', () => c.events.find((e) => e.type === 'hello' && e.pid === t.child.pid));
    c.ws.send(JSON.stringify({ type: 'command', id: 'a0', command: { kind: 'setAlpha', alpha: 9 } }));
    const dup = await until('the duplicate refused', () => c.events.find((e): e is Extract<TrainerEvent, { type: 'ack' }> => e.type === 'ack' && e.commandId === 'a0' && e.status === 'rejected'));
    assert.match(dup.reason ?? '', /duplicate command id a0/);
    c.ws.send(JSON.stringify({ type: 'command', id: 'stopAll', command: { kind: 'stop' } }));
    await exited(t.child);
    c.ws.close();
    const recorded = acksIn(dir).filter((a) => a.status === 'applied');
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (const id of [`a${cycle}`, `f${cycle}`]) assert.equal(recorded.filter((a) => a.commandId === id).length, 1, `ack ${id} recorded once`);
    }
    const seqs = acksIn(dir).map((a) => a.seq);
    assert.equal(new Set(seqs).size, seqs.length, 'no seq recorded twice');
  });

  test('one trainer per run directory: a --resume of a live run is refused, naming the live pid; a finished run directory is never reused', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'locked');
    const config = path.join(tmp, 'locked.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'locked', steps: 1_000_000, batchSize: 16, checkpointEvery: 10, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const t = await start(['--config', config, '--run-dir', dir]);
    await until('a checkpoint', () => fs.existsSync(path.join(dir, 'checkpoint', 'manifest.json')), 30_000);
    const metricsBefore = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').length;
    const second = spawnTrainerSync(engine, ['--resume', dir], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`in use by the trainer with pid ${t.child.pid}`));
    const fresh = spawnTrainerSync(engine, ['--config', config, '--run-dir', dir], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(fresh.status, 2, fresh.stderr);
    assert.match(fresh.stderr, /a run directory is never reused/);
    assert.equal(t.child.exitCode, null, 'the live trainer goes on');
    assert.ok(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').length >= metricsBefore, 'its files untouched by the refused ones');
    t.child.kill('SIGTERM');
    assert.equal(await exited(t.child), 0);
    assert.equal(fs.existsSync(path.join(dir, 'lock')), false, 'the lock is released at the end');
    // Finished: a new run is still refused there; a resume (of the stopped run) is not.
    const again = spawnTrainerSync(engine, ['--config', config, '--run-dir', dir], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(again.status, 2);
    assert.match(again.stderr, /never reused/);
    // A lock left by a kill -9 (its pid dead) is taken over by a resume.
    const r = await start(['--resume', dir]);
    r.child.kill('SIGKILL');
    await exited(r.child);
    assert.ok(fs.existsSync(path.join(dir, 'lock')), 'the killed trainer left its lock');
    const r2 = await start(['--resume', dir]);
    r2.child.kill('SIGKILL');
    await exited(r2.child);
  });

  test('a fatal error (file descriptors exhausted) still ends with run.json failed and the cause recorded', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'emfile');
    const config = path.join(tmp, 'emfile.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'emfile', steps: 80, batchSize: 16, checkpointEvery: 0, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const child = spawnTrainer(engine, ['--config', config, '--run-dir', dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PLTRAIN_TEST_EXHAUST_FDS_AT_STEP: '30' },
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    assert.equal(await exited(child), 1, stderr);
    const info = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8'));
    assert.equal(info.state, 'failed', stderr);
    assert.match(info.reason, /EMFILE|too many open files/);
  });
});
