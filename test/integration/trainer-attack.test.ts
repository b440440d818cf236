// Attacks on the trainer's WebSocket (issue "Reliability and security"): nobody but the token holder
// gets in, browsers and DNS-rebinding hosts are refused, and no frame — huge, malformed or
// randomly mutated — disturbs training.
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ClientFrameSchema, MetricsEventSchema, TOKEN_ENV, TOKEN_HEADER, TrainerFrameSchema } from '../../src/protocol';
import { TrainerEndpoint, endpointOf, endpointUrl, hostHeader, httpTarget, listeningEndpoint, rawConnect, tcpListenPorts } from '../support/endpoint';
import { mulberry32 } from '../support/prng';
import { until } from '../support/until';

import { ENGINES, forEngine, root, spawnTrainerSync, trainerCommand } from '../support/engines';

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-attack-'));
  const runDir = path.join(tmp, 'run');
  const TOKEN = 'a'.repeat(64);
  let child: ChildProcess;
  /** The main trainer's endpoint: its Unix socket (the transport on Linux). */
  let endpoint: TrainerEndpoint;

  async function startTrainer(dir: string, env: Record<string, string> = {}, o: { maxFds?: number; args?: string[] } = {}): Promise<{ child: ChildProcess; endpoint: TrainerEndpoint }> {
    const config = path.join(tmp, 'attack.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'attack', steps: 1_000_000, batchSize: 16, checkpointEvery: 0, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const trainer = trainerCommand(engine);
    const args = [...trainer.args, ...(o.args ?? ['--config', config, '--run-dir', dir])];
    // With maxFds, under `ulimit -n` (the shell execs the trainer, so the limit is the trainer's own).
    const [cmd, argv] = o.maxFds ? ['bash', ['-c', `ulimit -n ${o.maxFds} && exec "$0" "$@"`, trainer.command, ...args]] : [trainer.command, args];
    const c = spawn(cmd as string, argv as string[], {
      env: { ...process.env, ...trainer.env, [TOKEN_ENV]: TOKEN, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    others.push(c);
    const e = await new Promise<TrainerEndpoint>((resolve, reject) => {
      let buf = '';
      c.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const listening = listeningEndpoint(buf);
        if (listening) resolve(endpointOf(listening));
      });
      c.on('exit', (code) => reject(new Error(`trainer exited ${code}`)));
    });
    return { child: c, endpoint: e };
  }
  const others: ChildProcess[] = [];

  before(async () => {
    ({ child, endpoint } = await startTrainer(runDir));
  });

  after(() => others.forEach((c) => c.kill('SIGKILL')));

  /** A raw upgrade request, so we see exactly what the server answers before any WebSocket frame. */
  function upgrade(headers: Record<string, string>, to = endpoint): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = http.request({ ...httpTarget(to), path: '/', headers: { Host: hostHeader(to), Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers } });
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

  function connect(to = endpoint): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(endpointUrl(to), { headers: { [TOKEN_HEADER]: TOKEN }, maxPayload: 64 * 1024 * 1024 });
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  }

  /** The latest completed step, read through a fresh authenticated subscription. */
  async function latestStep(to = endpoint): Promise<number> {
    const ws = await connect(to);
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

  /** The upgrade checks, on either transport: token, browser Origin, Host. */
  async function upgradeChecks(to: TrainerEndpoint): Promise<void> {
    const host = hostHeader(to);
    assert.equal(await upgrade({ Host: host }, to), 401, 'no token');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: 'b'.repeat(64) }, to), 401, 'wrong token');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN.slice(1) }, to), 401, 'token of another length');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN, Origin: 'https://evil.example' }, to), 403, 'browser Origin');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN, Origin: 'null' }, to), 403, 'opaque Origin');
    assert.equal(await upgrade({ Host: 'evil.example', [TOKEN_HEADER]: TOKEN }, to), 403, 'DNS-rebinding Host');
    assert.equal(await upgrade({ Host: '127.0.0.1:1', [TOKEN_HEADER]: TOKEN }, to), 403, 'wrong port in Host');
    assert.equal(await upgrade({ Host: host, [TOKEN_HEADER]: TOKEN }, to), 101, 'the owner gets in');
  }

  test('the upgrade is refused without the token, with a wrong one, from a browser Origin, or for a foreign Host (Unix socket)', async () => {
    await upgradeChecks(endpoint);
  });

  test('the same on loopback TCP (the Windows transport, PLTRAIN_TRANSPORT=tcp), where localhost is loopback too', async () => {
    const t = await startTrainer(path.join(tmp, 'tcp'), { PLTRAIN_TRANSPORT: 'tcp' });
    assert.ok('port' in t.endpoint && t.endpoint.port > 0);
    await upgradeChecks(t.endpoint);
    const port = (t.endpoint as { port: number }).port;
    assert.equal(await upgrade({ Host: `localhost:${port}`, [TOKEN_HEADER]: TOKEN }, t.endpoint), 101, 'localhost is loopback too');
    assert.equal(await upgrade({ Host: `evil.example:${port}`, [TOKEN_HEADER]: TOKEN }, t.endpoint), 403, 'DNS-rebinding Host with the port');
    assert.deepEqual(tcpListenPorts(t.child.pid!), [port], 'the TCP transport does listen on its port (the check below can see one)');
    t.child.kill('SIGKILL');
  });

  test('Linux: the trainer listens on a Unix socket in its owner-only run directory and on no TCP port at all (nothing for the Ports view to list)', () => {
    assert.ok('socket' in endpoint, JSON.stringify(endpoint));
    assert.equal(endpoint.socket, path.join(runDir, 'trainer.sock'));
    assert.ok(fs.lstatSync(endpoint.socket).isSocket());
    assert.equal(fs.statSync(endpoint.socket).mode & 0o777, 0o600);
    assert.equal(fs.statSync(runDir).mode & 0o777, 0o700);
    const info = JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8'));
    assert.equal(info.socket, endpoint.socket, 'run.json names the socket');
    assert.equal('port' in info, false, 'and no port');
    assert.deepEqual(tcpListenPorts(child.pid!), [], 'no TCP listening socket in the trainer process');
  });

  test('plain HTTP gets nothing', async () => {
    const status = await new Promise<number>((resolve) => http.get({ ...httpTarget(endpoint), path: '/' }, (r) => (r.resume(), resolve(r.statusCode ?? 0))));
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
    const main = endpoint;
    ({ endpoint } = await startTrainer(path.join(tmp, 'heartbeat'), { PLTRAIN_HEARTBEAT_MS: '400' }));
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
    endpoint = main;
  });

  /** Every frame a client receives, parsed, until it is closed. */
  function collect(ws: WebSocket): Record<string, unknown>[] {
    const frames: Record<string, unknown>[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    return frames;
  }

  const readRunJson = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8'));
  const eventLines = (dir: string) =>
    fs.existsSync(path.join(dir, 'events.jsonl')) ? fs.readFileSync(path.join(dir, 'events.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const ackLines = (dir: string) =>
    fs.existsSync(path.join(dir, 'commands.jsonl')) ? fs.readFileSync(path.join(dir, 'commands.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];

  for (const transport of ['unix', 'tcp'] as const) {
    test(`640 idle connections (${transport}) to a trainer limited to 300 descriptors: it keeps training, holds few of them, and the owner gets in once they stop`, { timeout: 120_000 }, async () => {
      const dir = path.join(tmp, `flood-${transport}`);
      const t = await startTrainer(dir, { PLTRAIN_HANDSHAKE_MS: '1000', ...(transport === 'tcp' ? { PLTRAIN_TRANSPORT: 'tcp' } : {}) }, { maxFds: 300 });
      await latestStep(t.endpoint);
      const metricsFile = path.join(dir, 'metrics.jsonl');
      const stepsOnDisk = () => (fs.existsSync(metricsFile) ? fs.readFileSync(metricsFile, 'utf8').trim().split('\n').filter(Boolean).length : 0);
      // The stream can run ahead of the file (appends are batched): wait for the first line on disk.
      for (let k = 0; k < 100 && stepsOnDisk() === 0; k++) await new Promise((r) => setTimeout(r, 100));
      const before = stepsOnDisk();
      const sockets: net.Socket[] = [];
      let mostFds = 0;
      const fdCount = () => (mostFds = Math.max(mostFds, fs.readdirSync(`/proc/${t.child.pid}/fd`).length));
      // Two waves, the first still held open by the attacker when the second comes.
      for (let wave = 0; wave < 2; wave++) {
        for (let i = 0; i < 320; i++) {
          const sock = rawConnect(t.endpoint);
          sock.on('error', () => undefined); // a full backlog (EAGAIN, dropped SYNs) is the kernel's, not the trainer's
          sock.resume();
          sockets.push(sock);
        }
        for (let k = 0; k < 10; k++) {
          await new Promise((r) => setTimeout(r, 100));
          fdCount();
        }
      }
      try {
        assert.equal(t.child.exitCode, null, 'the trainer is alive');
        assert.ok(stepsOnDisk() > before, `training went on through the flood: ${before} → ${stepsOnDisk()} steps`);
        assert.ok(mostFds < 100, `the trainer held at most ${mostFds} descriptors (unfinished handshakes are bounded)`);
        assert.equal(readRunJson(dir).state, 'running');
      } finally {
        sockets.forEach((x) => x.destroy());
      }
      // The flood over, the owner gets in and finds training going on.
      let after: number | undefined;
      for (let tries = 0; after === undefined; tries++) {
        after = await latestStep(t.endpoint).catch((e) => (tries < 30 ? undefined : Promise.reject(e)));
        if (after === undefined) await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(after > 0, 'the owner reads the live stream');
      const refusals = eventLines(dir).filter((e) => e.type === 'log' && /^refused/.test(e.message));
      assert.ok(refusals.length <= 6, `refusals logged at a bounded rate, not one each: ${refusals.length} lines`);
      t.child.kill('SIGKILL');
    });
  }

  test('refused upgrades are counted and logged at a bounded rate, never one event each', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'refusals');
    const WINDOW_MS = 1500;
    const t = await startTrainer(dir, { PLTRAIN_REFUSAL_WINDOW_MS: String(WINDOW_MS) });
    await latestStep(t.endpoint); // training started: logs are events from here on
    const t0 = Date.now();
    for (let i = 0; i < 300; i++) assert.equal(await upgrade({ [TOKEN_HEADER]: `wrong-${i}` }, t.endpoint), 401);
    for (let i = 0; i < 20; i++) assert.equal(await upgrade({ [TOKEN_HEADER]: TOKEN, Origin: 'https://evil.example' }, t.endpoint), 403);
    const windows = Math.ceil((Date.now() - t0) / WINDOW_MS);
    const refusalLines = () => eventLines(dir).filter((e) => e.type === 'log' && /^refused/.test(e.message)).map((e) => e.message as string);
    const counted = (lines: string[], kind: RegExp) => lines.reduce((n, l) => n + Number(kind.exec(l)?.[1] ?? 0), 0);
    await until('the last summary', () => counted(refusalLines(), /browser origin ×(\d+)/) === 20 || undefined, 20_000);
    const lines = refusalLines();
    assert.ok(lines.length <= windows + 2, `one line when refusals start, then at most one per ${WINDOW_MS} ms window (${windows} windows): ${lines.length} lines`);
    assert.ok(lines.length < 30, `${lines.length} lines for 320 refusals`);
    assert.match(lines[0], /^refused a connection: missing or wrong token/);
    assert.equal(1 + counted(lines, /missing or wrong token ×(\d+)/), 300, `every refusal counted: ${JSON.stringify(lines)}`);
    assert.match(lines.at(-1)!, /; 320 since the run started$/);
    assert.equal(fs.readFileSync(path.join(dir, 'events.jsonl'), 'utf8').includes('wrong-299'), false, 'what a refused peer sent is not a record');
    t.child.kill('SIGKILL');
  });

  test('binary frames are refused, whatever they hold', async () => {
    const ws = await connect();
    const frames = collect(ws);
    ws.send(Buffer.from(JSON.stringify({ type: 'command', id: 'binary1', command: { kind: 'pause' } })), { binary: true });
    await until('an error frame', () => frames.find((f) => f.type === 'error'), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    ws.close();
    assert.match(String(frames.find((f) => f.type === 'error')!.message), /binary frames are refused/);
    assert.equal(ackLines(runDir).filter((a) => a.commandId === 'binary1').length, 0, 'no ack: the command was never decided');
  });

  test('a non-finite α (1e309 parses as Infinity) is refused as a frame, before any ack', async () => {
    const ws = await connect();
    const frames = collect(ws);
    ws.send('{"type":"command","id":"huge1","command":{"kind":"setAlpha","alpha":1e309}}');
    await until('an error frame', () => frames.find((f) => f.type === 'error'), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    ws.close();
    assert.match(String(frames.find((f) => f.type === 'error')!.message), /alpha: α must be a finite number/);
    assert.equal(ackLines(runDir).filter((a) => a.commandId === 'huge1').length, 0, 'no ack written (none with "alpha": null)');
  });

  test('the run directory is owner-only: the directory 0700, every file in it 0600', () => {
    assert.equal(fs.statSync(runDir).mode & 0o777, 0o700);
    const files = fs.readdirSync(runDir).filter((n) => fs.statSync(path.join(runDir, n)).isFile());
    assert.ok(files.includes('metrics.jsonl') && files.includes('run.json') && files.includes('config.json'), files.join(', '));
    for (const f of files) assert.equal(fs.statSync(path.join(runDir, f)).mode & 0o777, 0o600, f);
  });

  test('multi-client policy: up to 8 token holders, all equal (each sees every ack), a ninth is refused with 503', async () => {
    const dir = path.join(tmp, 'clients');
    const t = await startTrainer(dir);
    const clients = await Promise.all(Array.from({ length: 8 }, () => connect(t.endpoint)));
    const seen = clients.map((ws) => {
      const frames = collect(ws);
      ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 }));
      return frames;
    });
    assert.equal(await upgrade({ [TOKEN_HEADER]: TOKEN }, t.endpoint), 503, 'a ninth client');
    clients[3].send(JSON.stringify({ type: 'command', id: 'fromThree', command: { kind: 'setAlpha', alpha: 0.25 } }));
    for (const [i, frames] of seen.entries()) await until(`client ${i} sees the ack`, () => frames.find((f) => f.type === 'ack' && f.commandId === 'fromThree'), 20_000);
    clients[0].close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await upgrade({ [TOKEN_HEADER]: TOKEN }, t.endpoint), 101, 'a slot freed by a closed client');
    clients.forEach((ws) => ws.close());
    t.child.kill('SIGKILL');
  });

  test('planted symlinks in a run directory are never followed: a new run refuses the directory, a resume replaces the links', { timeout: 120_000 }, async () => {
    const victim = path.join(tmp, 'victim.txt');
    fs.writeFileSync(victim, 'not yours\n', { mode: 0o644 });
    fs.chmodSync(victim, 0o644);
    // A new run into a directory holding anything of a run's is refused (a run directory is never reused).
    const planted = path.join(tmp, 'planted');
    fs.mkdirSync(planted);
    fs.symlinkSync(victim, path.join(planted, 'token'));
    const refused = spawnTrainerSync(engine, ['--config', path.join(tmp, 'attack.pltrain.json'), '--run-dir', planted], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, [TOKEN_ENV]: TOKEN } });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /already holds token: a run directory is never reused/);
    // A resume: links planted where the trainer writes. Those it replaces atomically are replaced.
    const config = path.join(tmp, 'links.pltrain.json');
    fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'links', steps: 1_000_000, batchSize: 16, checkpointEvery: 10, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
    const dir = path.join(tmp, 'links');
    const first = await startTrainer(dir, {}, { args: ['--config', config, '--run-dir', dir] });
    await until('a checkpoint', () => fs.existsSync(path.join(dir, 'checkpoint', 'manifest.json')), 30_000);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    for (const name of ['token', 'run.json', 'lock']) {
      fs.rmSync(path.join(dir, name), { force: true });
      fs.symlinkSync(victim, path.join(dir, name));
    }
    fs.chmodSync(dir, 0o755);
    const second = await startTrainer(dir, {}, { args: ['--resume', dir] });
    await until('run.json rewritten', () => !fs.lstatSync(path.join(dir, 'run.json')).isSymbolicLink(), 10_000);
    second.child.kill('SIGKILL');
    await new Promise((r) => second.child.once('exit', r));
    assert.equal(fs.readFileSync(victim, 'utf8'), 'not yours\n', 'the link targets were not written');
    assert.equal(fs.statSync(victim).mode & 0o777, 0o644, 'nor chmodded');
    for (const name of ['token', 'run.json']) {
      assert.equal(fs.lstatSync(path.join(dir, name)).isSymbolicLink(), false, `the ${name} link was replaced by a file`);
      assert.equal(fs.statSync(path.join(dir, name)).mode & 0o777, 0o600, name);
    }
    // One it appends to (the steps a resume sets aside): refused (ELOOP), never written through.
    await new Promise((r) => setTimeout(r, 10));
    fs.rmSync(path.join(dir, 'metrics.discarded.jsonl'), { force: true });
    fs.symlinkSync(victim, path.join(dir, 'metrics.discarded.jsonl'));
    fs.appendFileSync(path.join(dir, 'metrics.jsonl'), JSON.stringify({ type: 'metrics', seq: 1e9, step: 1e9 }) + '\n'); // a step past the checkpoint, to set aside
    const third = spawnTrainerSync(engine, ['--resume', dir], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(third.status, 0);
    assert.match(third.stderr, /ELOOP/);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'not yours\n', 'the appended-to link target was not written');
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700, 'the directory made owner-only again');
  });
});
