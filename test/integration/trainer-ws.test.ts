// The real trainer process end to end over its WebSocket: hello and per-expert κ, steering at step
// boundaries (pause/resume, α, freeze), bad frames answered without harm, replay from a seq with no
// gap or duplicate, stop → exit 0, and the run directory's JSONL agreeing with what was streamed.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import {
  AckEvent,
  AckEventSchema,
  HelloEvent,
  MetricsEvent,
  MetricsEventSchema,
  RunInfoSchema,
  runEndpoint,
  SteeringCommand,
  TOKEN_HEADER,
  TrainerEvent,
  TrainerFrame,
  TrainerFrameSchema,
} from '../../src/protocol';
import { TrainerEndpoint, endpointOf, endpointUrl, hostHeader, httpTarget, listeningEndpoint } from '../support/endpoint';
import { until } from '../support/until';

import { ENGINES, backendMatches, forEngine, spawnTrainer } from '../support/engines';

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-ws-'));
  const runDir = path.join(tmp, 'run');
  const EXPERTS = 3;
  const START_ALPHA = 0.01;

  let child: ChildProcess;
  let exitCode: Promise<number | null>;
  let listening: TrainerEndpoint & { runDir: string; runId: string; pid: number };
  let token = '';

  before(async () => {
    const config = path.join(tmp, 'ws.pltrain.json');
    // Effectively endless: the test ends the run with a stop command.
    fs.writeFileSync(
      config,
      JSON.stringify(forEngine(engine, { name: 'ws', steps: 1_000_000, batchSize: 16, alpha: START_ALPHA, model: { experts: EXPERTS, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })),
    );
    child = spawnTrainer(engine, ['--config', config, '--run-dir', runDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    exitCode = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    listening = await new Promise((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const e = listeningEndpoint(buf);
        if (e) resolve(e);
      });
      child.once('exit', (c) => reject(new Error(`trainer exited ${c} before listening`)));
    });
    token = fs.readFileSync(path.join(runDir, 'token'), 'utf8').trim();
  });

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await exitCode;
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  interface Client {
    ws: WebSocket;
    /** Every frame received, schema-checked, in arrival order (errors included). */
    frames: TrainerFrame[];
    events: () => TrainerEvent[];
  }

  function connect(): Promise<Client> {
    const ws = new WebSocket(endpointUrl(listening), { headers: { [TOKEN_HEADER]: token } });
    const frames: TrainerFrame[] = [];
    ws.on('message', (d) => frames.push(TrainerFrameSchema.parse(JSON.parse(d.toString()))));
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve({ ws, frames, events: () => frames.filter((f): f is TrainerEvent => f.type !== 'error') }));
      ws.once('error', reject);
    });
  }


  const metricsOf = (c: Client) => c.events().filter((e): e is MetricsEvent => e.type === 'metrics');
  const lastStep = (c: Client) => Math.max(0, ...metricsOf(c).map((m) => m.step));

  async function command(c: Client, id: string, cmd: SteeringCommand): Promise<AckEvent> {
    // Ids may be reused on purpose (to test the duplicate rule): wait for an ack not seen before.
    const acksFor = () => c.events().filter((e): e is AckEvent => e.type === 'ack' && e.commandId === id);
    const seen = acksFor().length;
    c.ws.send(JSON.stringify({ type: 'command', id, command: cmd }));
    return until(`ack ${id}`, () => acksFor()[seen]);
  }

  /** Status of a raw upgrade request, so we see what the server answers before any WebSocket frame. */
  function upgradeStatus(headers: Record<string, string>): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = http.request({
        ...httpTarget(listening),
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
      });
      req.on('upgrade', (res, socket) => (socket.destroy(), resolve(res.statusCode ?? 0)));
      req.on('response', (res) => (res.resume(), resolve(res.statusCode ?? 0)));
      req.on('error', reject);
      req.end();
    });
  }

  test('the LISTENING line names this process, its run dir and socket; run.json agrees', () => {
    assert.equal(listening.pid, child.pid);
    assert.equal(path.resolve(listening.runDir), path.resolve(runDir));
    assert.equal(listening.runId, path.basename(runDir));
    assert.ok('socket' in listening && listening.socket === path.join(runDir, 'trainer.sock'), JSON.stringify(listening));
    const info = RunInfoSchema.parse(JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8')));
    assert.deepEqual(runEndpoint(info), endpointOf(listening), 'run.json names where the trainer listens');
    assert.equal(info.pid, child.pid);
    assert.equal(fs.statSync(path.join(runDir, 'token')).mode & 0o777, 0o600);
  });

  test('only the token holder, without Origin and with a loopback Host, gets in', async () => {
    const host = hostHeader(listening);
    assert.equal(await upgradeStatus({ Host: host }), 401, 'no token');
    assert.equal(await upgradeStatus({ Host: host, [TOKEN_HEADER]: token.replace(/.$/, (c) => (c === '0' ? '1' : '0')) }), 401, 'token off by one character');
    assert.equal(await upgradeStatus({ Host: host, [TOKEN_HEADER]: token, Origin: 'http://localhost:3000' }), 403, 'Origin header');
    assert.equal(await upgradeStatus({ Host: 'attacker.example', [TOKEN_HEADER]: token }), 403, 'wrong Host');
    assert.equal(await upgradeStatus({ Host: host, [TOKEN_HEADER]: token }), 101, 'the token holder');
    const plain = await new Promise<number>((resolve) => http.get({ ...httpTarget(listening), path: '/' }, (r) => (r.resume(), resolve(r.statusCode ?? 0))));
    assert.equal(plain, 404, 'plain HTTP learns nothing');
  });

  test('a live session: hello, κ per expert, pause, resume, α, freeze, bad frames, replay, stop', { timeout: 60_000 }, async () => {
    const a = await connect();
    a.ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 }));

    // hello names the backend, then metrics carry κ for every expert on monitor steps.
    const hello = await until('hello', () => a.events().find((e): e is HelloEvent => e.type === 'hello'));
    assert.ok(backendMatches(engine, hello.backend), JSON.stringify(hello.backend));
    assert.equal(hello.unitCount, EXPERTS);
    assert.equal(hello.alpha, START_ALPHA);
    assert.equal(hello.taskMetric, 'accuracy');
    assert.equal(hello.pid, child.pid);
    const monitored = await until('a monitor step', () => metricsOf(a).find((m) => m.units));
    assert.equal(monitored.step % 5, 0);
    assert.deepEqual(monitored.units!.map((e) => e.id), [0, 1, 2]);
    for (const e of monitored.units!) {
      assert.ok(e.served !== undefined && e.share !== undefined && e.active !== undefined, `expert ${e.id}: served, share, active`);
      if (e.kappa === null) {
        assert.ok(e.served! < 4 && e.mu === null && e.lf === null, `expert ${e.id}: null only below MIN_SERVED`);
        continue;
      }
      assert.ok(e.mu! >= 0 && e.lf! > e.mu!, `expert ${e.id}: 0 ≤ μ < L_f (μ ${e.mu}, L_f ${e.lf})`);
      // κ = L_f / (μ + δ·L_f) with the default damping δ = 1e-6 (docs/method.md, smooth damping).
      const expected = e.lf! / (e.mu! + 1e-6 * e.lf!);
      assert.ok(Math.abs(e.kappa - expected) <= 1e-9 * expected, `κ of expert ${e.id}: ${e.kappa} vs ${expected}`);
    }

    // pause: applied at a step boundary N, after which the step stops advancing.
    const pause = await command(a, 'pause-1', { kind: 'pause' });
    assert.equal(pause.status, 'applied');
    await until('state paused', () => a.events().some((e) => e.type === 'state' && e.state === 'paused' && e.step === pause.step));
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(lastStep(a), pause.step, 'no step completed while paused');
    assert.equal(RunInfoSchema.parse(JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8'))).state, 'paused');

    // Rejections while paused: each command gets exactly one ack, with a reason.
    const dup = await command(a, 'pause-1', { kind: 'resume' });
    assert.equal(dup.status, 'rejected', 'a reused command id');
    assert.match(dup.reason ?? '', /duplicate/);
    // Outside setAlpha's bounds (limits.ts): the frame is refused with the bound, nothing is applied or acked.
    const refusedBefore = a.frames.filter((f) => f.type === 'error').length;
    a.ws.send(JSON.stringify({ type: 'command', id: 'alpha-neg', command: { kind: 'setAlpha', alpha: -1 } }));
    const refused = await until('an error frame', () => a.frames.filter((f) => f.type === 'error')[refusedBefore]);
    assert.match(refused.type === 'error' ? refused.message : '', /command\.alpha: α must be ≥ 0/);
    const unknown = await command(a, 'freeze-9', { kind: 'freeze', unit: 9 });
    assert.equal(unknown.status, 'rejected');
    assert.match(unknown.reason ?? '', /does not exist/);

    const resume = await command(a, 'resume-1', { kind: 'resume' });
    assert.equal(resume.status, 'applied');
    assert.equal(resume.step, pause.step, 'nothing ran between pause and resume');
    await until('steps after resume', () => lastStep(a) >= resume.step + 3);

    // Invalid frames: an error frame each, the connection stays, training goes on.
    const errorsBefore = a.frames.filter((f) => f.type === 'error').length;
    a.ws.send('{not json');
    a.ws.send(JSON.stringify({ type: 'command', id: 'no-alpha', command: { kind: 'setAlpha' } }));
    a.ws.send(JSON.stringify({ type: 'launchMissiles' }));
    await until('three error frames', () => a.frames.filter((f) => f.type === 'error').length === errorsBefore + 3);
    assert.ok(!a.events().some((e) => e.type === 'ack' && (e.commandId === 'no-alpha' || e.commandId === 'alpha-neg')), 'an invalid command is not acked');
    const afterErrors = lastStep(a);
    await until('training continues after bad frames', () => lastStep(a) >= afterErrors + 3);

    // setAlpha while running: step ack.step ran under the old α, ack.step+1 is the first under the new.
    const alpha = await command(a, 'alpha-1', { kind: 'setAlpha', alpha: 0.5 });
    assert.equal(alpha.status, 'applied');
    await until('steps after setAlpha', () => lastStep(a) >= alpha.step + 2);
    for (const m of metricsOf(a)) assert.equal(m.alpha, m.step <= alpha.step ? START_ALPHA : 0.5, `α in the metrics of step ${m.step}`);

    // freeze 1: later monitor steps report it frozen, earlier ones not.
    const freeze = await command(a, 'freeze-1', { kind: 'freeze', unit: 1 });
    assert.equal(freeze.status, 'applied');
    await until('a monitor step after freeze', () => metricsOf(a).some((m) => m.units && m.step > freeze.step));
    for (const m of metricsOf(a)) {
      if (!m.units) continue;
      assert.equal(m.units[1].frozen, m.step > freeze.step, `expert 1 frozen at step ${m.step}`);
      assert.equal(m.units[0].frozen, false);
    }

    // A second client replaying from seq k gets exactly the events after k, in order, then live ones.
    const k = pause.seq;
    const b = await connect();
    b.ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: k }));
    await until('b catches up', () => b.events().some((e) => e.seq >= a.events().at(-1)!.seq));

    const stop = await command(a, 'stop-1', { kind: 'stop' });
    assert.equal(stop.status, 'applied');
    const stopped = await until('state stopped', () => a.events().find((e) => e.type === 'state' && e.state === 'stopped'));
    assert.equal(await exitCode, 0, 'a stopped run exits 0');
    await until('both sockets closed', () => a.ws.readyState === WebSocket.CLOSED && b.ws.readyState === WebSocket.CLOSED, 5_000);
    assert.equal(lastStep(a), stop.step, 'the step in progress finished, and no further one ran');
    assert.equal((stopped as Extract<TrainerEvent, { type: 'state' }>).step, stop.step);

    // One seq counter: client A saw every event from 0, no gap, no duplicate; B saw exactly those after k.
    const seqA = a.events().map((e) => e.seq);
    assert.deepEqual(seqA, seqA.map((_, i) => i), 'A: seqs 0,1,2,… without gap or duplicate');
    assert.deepEqual(b.events(), a.events().filter((e) => e.seq > k), 'B: exactly the events after k, identical to A\'s');
    assert.equal(b.events()[0].seq, k + 1);

    // The run directory agrees with the stream.
    const metricLines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    const onDisk = metricLines.map((l) => MetricsEventSchema.parse(JSON.parse(l)));
    assert.deepEqual(onDisk.map((m) => m.step), onDisk.map((_, i) => i + 1), 'one metrics line per step');
    assert.deepEqual(onDisk, metricsOf(a), 'metrics.jsonl holds what was streamed');
    for (const m of onDisk.filter((m) => m.step % 5 === 0)) {
      assert.equal(m.units?.length, EXPERTS, `κ for every expert at monitor step ${m.step}`);
      for (const e of m.units!) assert.ok(e.kappa === null || (Number.isFinite(e.kappa) && e.kappa >= 1 / (1 + 1e-6)));
    }
    const acksOnDisk = fs.readFileSync(path.join(runDir, 'commands.jsonl'), 'utf8').trim().split('\n').map((l) => AckEventSchema.parse(JSON.parse(l)));
    assert.deepEqual(acksOnDisk, a.events().filter((e) => e.type === 'ack'), 'commands.jsonl has every ack');
    assert.deepEqual(acksOnDisk.map((x) => x.commandId), ['pause-1', 'pause-1', 'freeze-9', 'resume-1', 'alpha-1', 'freeze-1', 'stop-1']);
    const info = RunInfoSchema.parse(JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8')));
    assert.equal(info.state, 'stopped');
    assert.equal(info.step, stop.step);
    assert.deepEqual(info.backend, hello.backend);
  });
});
