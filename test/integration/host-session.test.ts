// The extension host's run model against the real trainer, without VS Code: the detached launcher,
// the authenticated WebSocket client, command lifecycles, and replay after a reconnect.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { launchTrainer } from '../../src/extension/run/launcher';
import { isLiveRun, processAlive, readRecordedEvents, readRecordedHistory, readRunDirectory, readRunInfo, readToken } from '../../src/extension/run/runDirectory';
import { RunSession } from '../../src/extension/run/runSession';
import { TrainerConnection } from '../../src/extension/run/trainerConnection';
import { runEndpoint, type MetricsEvent, type RunInfo } from '../../src/protocol';
import { until } from '../support/until';

const root = path.resolve(__dirname, '..', '..');
const trainerScript = path.join(root, 'dist', 'trainer.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-host-'));
const configPath = path.join(tmp, 'host.pltrain.json');
const runDir = path.join(tmp, 'run');
let pid = -1;
let info: RunInfo;
let token = '';


function attach(): RunSession {
  const s = new RunSession(info.runId, runDir, configPath);
  s.attach(new TrainerConnection({ endpoint: runEndpoint(info)!, token, lastSeq: () => s.seq, shouldReconnect: () => s.active && processAlive(pid) }));
  return s;
}
const metricsOf = (s: RunSession) => s.events.filter((e): e is MetricsEvent => e.type === 'metrics');

before(async () => {
  assert.ok(fs.existsSync(trainerScript), 'run `npm run build` first');
  fs.writeFileSync(configPath, JSON.stringify({ name: 'host', steps: 100000, batchSize: 16, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 3, probeSize: 4 } }));
  const launched = launchTrainer({ nodePath: process.execPath, trainerScript, configPath, runDir, cwd: tmp });
  pid = launched.pid;
  token = launched.token;
  info = await launched.announced;
});

after(() => {
  if (processAlive(pid)) process.kill(pid, 'SIGKILL');
});

test('the launcher announces a live run with an owner-only token file', () => {
  assert.equal(info.pid, pid);
  // Linux: a Unix socket in the owner-only run directory, and no TCP port at all (docs/security.md).
  assert.equal(info.socket, path.join(runDir, 'trainer.sock'));
  assert.equal(info.port, undefined);
  assert.ok(fs.lstatSync(info.socket).isSocket());
  assert.equal(fs.statSync(info.socket).mode & 0o777, 0o600);
  assert.ok(isLiveRun(readRunInfo(runDir)));
  assert.equal(readToken(runDir), token, 'the token handed over in the environment is the one on disk');
  assert.equal(fs.statSync(path.join(runDir, 'token')).mode & 0o777, 0o600);
});

test('commands go pending → applied with the step; bad ones are rejected with a reason', async () => {
  const s = attach();
  try {
    await until('κ', () => metricsOf(s).find((m) => m.units));
    const seen: string[] = [];
    s.onCommandStatus.on((c) => seen.push(`${c.id}:${c.status}`));
    const p = s.issue({ kind: 'pause' }, 'pause1');
    assert.equal(p.status, 'pending');
    const done = await s.waitForCommand('pause1');
    assert.equal(done.status, 'applied');
    assert.equal(typeof done.step, 'number');
    assert.deepEqual(seen, ['pause1:pending', 'pause1:applied']);
    await until('paused', () => s.view.state === 'paused');

    const bad = await s.waitForCommand(s.issue({ kind: 'freeze', unit: 7 }).id);
    assert.equal(bad.status, 'rejected');
    assert.equal(bad.reason, 'expert 7 does not exist (the model has 2: 0…1)');
    const dup = s.issue({ kind: 'resume' }, 'pause1');
    assert.equal(dup.status, 'failed');
    assert.equal(s.view.commands.get('pause1')?.status, 'applied', 'a duplicate id leaves the first command\'s entry alone');
    // Outside setAlpha's bounds: refused by the host with the bound's reason, nothing sent.
    const tooBig = s.issue({ kind: 'setAlpha', alpha: 2e6 });
    assert.deepEqual([tooBig.status, tooBig.reason], ['rejected', 'α must be ≤ 1e+6']);
    const noSuchIndex = s.issue({ kind: 'freeze', unit: 64 });
    assert.deepEqual([noSuchIndex.status, noSuchIndex.reason], ['rejected', 'a unit index is < 64'], 'answered at once, not left pending on a refused frame');

    const a = await s.waitForCommand(s.issue({ kind: 'setAlpha', alpha: 0.5 }).id);
    assert.equal(a.status, 'applied');
    assert.equal(s.view.alpha, 0.5);
    const r = await s.waitForCommand(s.issue({ kind: 'resume' }).id);
    assert.equal(r.status, 'applied');
    await until('steps after resume', () => metricsOf(s).some((m) => m.step > a.step! + 1));
    for (const m of metricsOf(s)) if (m.step > a.step!) assert.equal(m.alpha, 0.5);
  } finally {
    s.dispose();
  }
});

test('a client that reconnects replays from its last seq: no gap, no duplicate', async () => {
  const first = attach();
  await until('some history', () => first.seq > 20);
  const cut = first.seq;
  first.dispose(); // the window goes away; the trainer keeps training
  await new Promise((r) => setTimeout(r, 500));
  const second = attach();
  try {
    await until('replay past the cut', () => second.seq > cut + 5);
    const seqs = second.events.map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => i));
    assert.deepEqual(second.events.slice(0, first.events.length), first.events.slice(0, second.events.length));
  } finally {
    second.dispose();
  }
});

test('stop ends the run; the recorded history on disk matches what was streamed', async () => {
  const s = attach();
  await until('caught up', () => s.view.hello);
  const st = await s.waitForCommand(s.issue({ kind: 'stop' }).id);
  assert.equal(st.status, 'applied');
  await until('stopped', () => s.view.state === 'stopped');
  await until('exit', () => !processAlive(pid), 15_000);
  const recorded = readRecordedHistory(runDir);
  const streamed = metricsOf(s);
  assert.deepEqual(recorded.metrics.map((m) => m.seq), streamed.map((m) => m.seq));
  assert.ok(recorded.acks.some((a) => a.command.kind === 'stop'));
  // A late command after the end fails at once instead of hanging.
  const late = s.issue({ kind: 'pause' });
  assert.equal(late.status, 'failed');
  s.dispose();
  const info2 = readRunInfo(runDir);
  assert.equal(info2?.state, 'stopped');
});

test('a recorded run whose run.json still says running but whose trainer is gone opens as failed, with its hello', async () => {
  const { spawnSync } = await import('node:child_process');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // a pid that has exited
  const dir = path.join(tmp, 'orphan');
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'metrics.jsonl', 'commands.jsonl', 'events.jsonl']) fs.copyFileSync(path.join(runDir, f), path.join(dir, f));
  const info = { ...readRunInfo(runDir)!, pid: dead, state: 'running' as const, reason: undefined };
  fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify(info));
  const s = new RunSession(info.runId, dir, undefined);
  s.loadRecorded(readRunDirectory(dir), readRecordedEvents(dir));
  assert.equal(s.view.state, 'failed');
  assert.match(s.view.stateReason ?? '', /exited unexpectedly/);
  assert.ok(s.view.hello, 'hello (backend, config) comes back from events.jsonl');
  assert.equal(s.view.backend?.name, readRunInfo(runDir)!.backend!.name);
  s.dispose();
});

test('a run.json naming a pid that answers EPERM (another user\'s process, e.g. pid 1) is not live: no reconnect loop, Delete/Resume allowed', () => {
  // Asked by a process that may not signal pid 1: as root, that is a child running as `nobody`.
  const code = `const m = require('./src/extension/run/runDirectory.ts');
    const info = { protocol: 2, runId: 'x', pid: 1, host: '127.0.0.1', port: 1234, state: 'running', startedAt: 0, updatedAt: 0, step: 0, totalSteps: 1 };
    let eperm = false;
    try { process.kill(1, 0); } catch (e) { eperm = e.code === 'EPERM'; }
    console.log(JSON.stringify({ eperm, alive: m.processAlive(1), live: m.isLiveRun(info) }));`;
  const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { cwd: root, encoding: 'utf8', ...asNobody });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { eperm: true, alive: false, live: false });
});
