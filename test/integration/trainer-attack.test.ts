// Attacks on the trainer's WebSocket (issue "Reliability and security"): nobody but the token holder
// gets in, browsers and DNS-rebinding hosts are refused, and no frame — huge, malformed or
// randomly mutated — disturbs training.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ClientFrameSchema, LISTENING_PREFIX, MetricsEventSchema, TOKEN_ENV, TOKEN_HEADER, TrainerFrameSchema } from '../../src/protocol';
import { mulberry32 } from '../support/prng';

import { ENGINES, forEngine, spawnTrainer } from '../support/engines';

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-attack-'));
  const runDir = path.join(tmp, 'run');
  const TOKEN = 'a'.repeat(64);
  let child: ChildProcess;
  let port = 0;

  async function startTrainer(dir: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number }> {
    const config = path.join(tmp, 'attack.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'attack', steps: 1_000_000, batchSize: 16, checkpointEvery: 0, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const c = spawnTrainer(engine, ['--config', config, '--run-dir', dir], {
      env: { ...process.env, [TOKEN_ENV]: TOKEN, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    others.push(c);
    const p = await new Promise<number>((resolve, reject) => {
      let buf = '';
      c.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const line = buf.split('\n').find((l) => l.startsWith(LISTENING_PREFIX));
        if (line) resolve(JSON.parse(line.slice(LISTENING_PREFIX.length)).port);
      });
      c.on('exit', (code) => reject(new Error(`trainer exited ${code}`)));
    });
    return { child: c, port: p };
  }
  const others: ChildProcess[] = [];

  before(async () => {
    ({ child, port } = await startTrainer(runDir));
  });

  after(() => others.forEach((c) => c.kill('SIGKILL')));

  /** A raw upgrade request, so we see exactly what the server answers before any WebSocket frame. */
  function upgrade(headers: Record<string, string>): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers } });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve(res.statusCode ?? 0);
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
  }

  function connect(): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { [TOKEN_HEADER]: TOKEN }, maxPayload: 64 * 1024 * 1024 });
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  }

  /** The latest completed step, read through a fresh authenticated subscription. */
  async function latestStep(): Promise<number> {
    const ws = await connect();
    try {
      // Replay everything, then read the newest step after a short while (metrics stream continuously).
      let last = -1;
      ws.on('message', (d) => {
        const f = JSON.parse(d.toString());
        if (f.type === 'metrics') last = Math.max(last, f.step);
      });
      ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 }));
      await new Promise((r) => setTimeout(r, 500));
      return last;
    } finally {
      ws.close();
    }
  }

  test('the upgrade is refused without the token, with a wrong one, from a browser Origin, or for a foreign Host', async () => {
    const host = `127.0.0.1:${port}`;
    assert.equal(await upgrade({ Host: host }), 401, 'no token');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: 'b'.repeat(64) }), 401, 'wrong token');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN.slice(1) }), 401, 'token of another length');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN, Origin: 'https://evil.example' }), 403, 'browser Origin');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN, Origin: 'null' }), 403, 'opaque Origin');
    assert.equal(await upgrade({ Host: `evil.example:${port}`, [TOKEN_HEADER]: TOKEN }), 403, 'DNS-rebinding Host');
    assert.equal(await upgrade({ Host: '127.0.0.1:1', [TOKEN_HEADER]: TOKEN }), 403, 'wrong port in Host');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN }), 101, 'the owner gets in');
    assert.equal(await upgrade({ Host: `localhost:${port}`, [TOKEN_HEADER]: TOKEN }), 101, 'localhost is loopback too');
  });

  test('plain HTTP gets nothing', async () => {
    const status = await new Promise<number>((resolve) => http.get({ host: '127.0.0.1', port, path: '/' }, (r) => (r.resume(), resolve(r.statusCode ?? 0))));
    assert.ok(status >= 400, `status ${status}`);
  });

  test('the token file is readable by its owner only', () => {
    assert.equal(fs.statSync(path.join(runDir, 'token')).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(path.join(runDir, 'token'), 'utf8').trim(), TOKEN);
  });

  test('a 10 MB frame closes that connection and training goes on', async () => {
    const before = await latestStep();
    const ws = await connect();
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    ws.send('x'.repeat(10 * 1024 * 1024));
    assert.equal(await closed, 1009, 'message too big');
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok((await latestStep()) > before, 'steps advanced');
  });

  /** Random frames: garbage text, random JSON, and valid frames with one mutation. */
  function* fuzzFrames(seed: number, count: number): Generator<string> {
    const rnd = mulberry32(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
    const weird: unknown[] = [null, true, false, 0, -1, 1e308, -1e-308, NaN, '', 'pause', [], {}, [1, 2], { a: 1 }, '\u0000', 'x'.repeat(300), 2 ** 53, -0];
    const valid = (): Record<string, unknown> =>
      pick([
        { type: 'subscribe', sinceSeq: Math.floor(rnd() * 100) },
        { type: 'command', id: 'c' + Math.floor(rnd() * 1e9), command: { kind: 'pause' } },
        { type: 'command', id: 'c' + Math.floor(rnd() * 1e9), command: { kind: 'setAlpha', alpha: rnd() } },
        { type: 'command', id: 'c' + Math.floor(rnd() * 1e9), command: { kind: 'freeze', unit: 0 } },
      ]);
    for (let i = 0; i < count; i++) {
      const r = rnd();
      if (r < 0.2) {
        let s = '';
        const n = Math.floor(rnd() * 64);
        for (let k = 0; k < n; k++) s += String.fromCharCode(Math.floor(rnd() * 0x2fff));
        yield s;
      } else if (r < 0.35) {
        yield JSON.stringify(pick(weird));
      } else {
        const f = valid();
        const target = rnd() < 0.5 || !f.command ? f : (f.command as Record<string, unknown>);
        const keys = Object.keys(target);
        const m = rnd();
        if (m < 0.3) target[pick(keys)] = pick(weird);
        else if (m < 0.5) delete target[pick(keys)];
        else if (m < 0.7) target['extra' + Math.floor(rnd() * 10)] = pick(weird);
        else if (m < 0.85) target.type = pick(['command', 'subscribe', 'hello', 'metrics', 'COMMAND', '']);
        else if (f.command) (f.command as Record<string, unknown>).kind = pick(['Pause', 'setalpha', 'delete', 'exec', '']);
        const text = JSON.stringify(f);
        yield rnd() < 0.1 ? text.slice(0, Math.floor(rnd() * text.length)) : text;
      }
    }
  }

  test('100k random and mutated frames are all refused; the trainer keeps training, metrics unbroken', { timeout: 240_000 }, async () => {
    const SEED = 20261122;
    const frames = [...fuzzFrames(SEED, 100_000)].filter((f) => {
      // A mutation can land on a valid frame (e.g. a pause); those are not attacks, leave them out.
      try {
        return !ClientFrameSchema.safeParse(JSON.parse(f)).success;
      } catch {
        return true;
      }
    });
    assert.ok(frames.length > 95_000, `${frames.length} invalid frames generated (seed ${SEED})`);
    const before = await latestStep();
    const ws = await connect();
    let errors = 0;
    let otherFrames = 0;
    const done = new Promise<void>((resolve) =>
      ws.on('message', (d) => {
        const f = TrainerFrameSchema.parse(JSON.parse(d.toString()));
        if (f.type === 'error') errors++;
        else otherFrames++;
        if (errors === frames.length) resolve();
      }),
    );
    // Send in chunks so the socket's buffers stay bounded.
    for (let i = 0; i < frames.length; i += 2000) {
      for (const f of frames.slice(i, i + 2000)) ws.send(f);
      await new Promise((r) => setTimeout(r, 5));
    }
    await done;
    ws.close();
    assert.equal(errors, frames.length, `every invalid frame answered with an error (seed ${SEED})`);
    assert.equal(otherFrames, 0, 'no invalid frame subscribed or steered anything');
    await new Promise((r) => setTimeout(r, 1000));
    const after = await latestStep();
    assert.ok(after > before, `training went on: step ${before} → ${after}`);
    // No ack was ever written for a fuzzed frame, and the metrics log is intact and contiguous.
    const acks = fs.existsSync(path.join(runDir, 'commands.jsonl')) ? fs.readFileSync(path.join(runDir, 'commands.jsonl'), 'utf8').trim() : '';
    assert.equal(acks, '', 'no command was applied or rejected as a command');
    const lines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    const steps = lines.map((l) => MetricsEventSchema.parse(JSON.parse(l)).step);
    steps.forEach((s, i) => i && assert.equal(s, steps[i - 1] + 1, 'consecutive steps'));
  });

  test('a peer that stops reading (no pongs) is dropped, and training goes on', async () => {
    // A trainer of its own with a short heartbeat, so the test takes a second, not twenty.
    const main = port;
    ({ port } = await startTrainer(path.join(tmp, 'heartbeat'), { PLTRAIN_HEARTBEAT_MS: '400' }));
    const before = await latestStep();
    const ws = await connect();
    ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 }));
    // Stop reading: no data, no pongs, like a suspended laptop or a hung client.
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    await new Promise((r) => setTimeout(r, 2000)); // five heartbeats
    // Read again: a dropped connection now shows its end; a live one would just keep streaming.
    const socket = (ws as unknown as { _socket: NodeJS.ReadableStream & NodeJS.EventEmitter })._socket;
    const closed = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      socket.once('close', () => (clearTimeout(timer), resolve(true)));
    });
    socket.resume();
    assert.ok(await closed, 'the server dropped the silent peer');
    assert.ok((await latestStep()) > before, 'training went on');
    port = main;
  });
});
