// The run lifecycle (RunManager) in plain Node, against the real trainer: it no longer needs the
// `vscode` module, so what it tells the user is read from a recording RunHost instead of a screen.
// Start, steer, a kill -9 announced once, resume from the checkpoint with the same step numbering,
// the stop announced once; the refusals of resume; a protocol-1 run opened from its directory.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { RunManager } from '../../src/extension/runManager';
import type { RunHost } from '../../src/extension/run/runHost';
import { processAlive } from '../../src/extension/run/runDirectory';
import type { MetricsEvent } from '../../src/protocol';
import { ENGINES, PYTHON, forEngine, type EngineName } from '../support/engines';
import { testRunHost } from '../support/runHost';
import { until } from '../support/until';

const root = path.resolve(__dirname, '..', '..');
const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-manager-'));
const notices: { level: string; message: string; detail?: string; actions: string[] }[] = [];
const host = testRunHost(workspace, (level, message, options) => notices.push({ level, message, detail: options?.detail, actions: (options?.actions ?? []).map((a) => a.title) }));
const runs = new RunManager(host);
// The PyTorch engine's runs: its own workspace and manager, the interpreter from the host (as the
// pythonPath setting or the Python extension would give it).
const pyWorkspace = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-manager-py-'));
const pyHost: RunHost = { ...host, workspaceFolders: () => [pyWorkspace], pythonPath: async () => PYTHON, pythonPackageDir: path.join(root, 'python') };
const managers: Record<EngineName, { runs: RunManager; workspace: string }> = { tfjs: { runs, workspace }, pytorch: { runs: PYTHON ? new RunManager(pyHost) : runs, workspace: pyWorkspace } };
const pids: number[] = [];
const metricsOf = (events: readonly { type: string }[]) => events.filter((e): e is MetricsEvent => e.type === 'metrics');

after(() => {
  runs.dispose();
  managers.pytorch.runs.dispose();
  for (const pid of pids) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
});

for (const engine of ENGINES) {
  test(`${engine}: start, a kill -9 announced once, resume with the same step numbering, the stop announced once`, async () => {
  const { runs, workspace } = managers[engine];
  notices.length = 0;
  assert.ok(fs.existsSync(host.trainerScript), 'run `npm run build` first');
  const config = path.join(workspace, 'crash.pltrain.json');
  fs.writeFileSync(config, JSON.stringify(forEngine(engine, { name: 'crash', steps: 100000, batchSize: 16, checkpointEvery: 10, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } })));
  const announced: string[] = [];
  runs.onDidAnnounceEnd((s) => announced.push(`${s.view.state}`));
  const session = (await runs.start(config))!;
  assert.ok(session, 'started');
  assert.equal(runs.current, session);
  assert.equal(session.view.hello?.unitName, 'expert', 'start waits for the hello');
  assert.equal(session.view.hello?.backend.engine ?? 'tfjs', engine, 'the engine the config names');
  pids.push(session.view.hello!.pid);
  const alpha = await runs.issue({ kind: 'setAlpha', alpha: 0.2 });
  assert.equal(alpha?.status, 'applied');
  await until('25 steps', () => session.view.step >= 25);
  process.kill(session.view.hello!.pid, 'SIGKILL');
  await until('failed', () => session.view.state === 'failed', 15_000);
  assert.deepEqual(announced, ['failed']);
  const failure = notices.find((n) => n.level === 'error' && /crash.* failed at step/.test(n.message));
  assert.ok(failure, JSON.stringify(notices));
  assert.deepEqual(failure.actions, ['Show log']);

  // A resume while it still trains is refused; this one is not training any more.
  const resumed = await runs.resumeRun(session.runDir);
  assert.equal(resumed, session, 'the same session continues');
  const hello = await until('the resumed hello', () => (session.view.hello?.resumedFromStep !== undefined ? session.view.hello : undefined), 60_000);
  pids.push(hello.pid);
  assert.equal(session.view.alpha, 0.2, 'α restored from the checkpoint');
  await until('steps after the resume', () => session.view.step > hello.resumedFromStep! + 5);
  const steps = metricsOf(session.events).map((m) => m.step);
  assert.deepEqual(steps, steps.map((_, i) => i + 1), 'one record per step in the host, no gap, no duplicate');
  notices.length = 0;
  assert.equal(await runs.resumeRun(session.runDir), session);
  assert.deepEqual(notices.map((n) => n.message), ['That run is still training.']);
  const stopped = await runs.issue({ kind: 'stop' });
  assert.equal(stopped?.status, 'applied');
  await until('the stop announced', () => announced.length === 2, 15_000);
  assert.deepEqual(announced, ['failed', 'stopped'], 'the old failure is not announced again');
  });
}

test('engine pytorch with an interpreter that cannot run it: nothing starts, the notification says what is missing and shows the engine line', async () => {
  const badHost: RunHost = { ...host, pythonPath: async () => path.join(workspace, 'no-such-python3') };
  const bad = new RunManager(badHost);
  const config = path.join(workspace, 'py.pltrain.json');
  const text = JSON.stringify({ name: 'py', engine: 'pytorch', steps: 5 }, null, 2);
  fs.writeFileSync(config, text);
  const revealed: number[][] = [];
  const actions: (() => void)[] = [];
  badHost.ui = { ...host.ui, notify: (level, message, options) => (notices.push({ level, message, actions: (options?.actions ?? []).map((a) => a.title) }), actions.push(...(options?.actions ?? []).map((a) => a.run))), reveal: (_f, start, end) => revealed.push([start, end]) };
  notices.length = 0;
  assert.equal(await bad.start(config), undefined, 'nothing started');
  assert.equal(notices.length, 1);
  assert.equal(notices[0].level, 'error');
  assert.match(notices[0].message, /^Cannot start the PyTorch engine: the PyTorch engine needs Python 3, and ".*no-such-python3" could not run \(not found\)/);
  assert.deepEqual(notices[0].actions, ['Show config']);
  actions[0]();
  assert.deepEqual(revealed, [[text.indexOf('"engine"'), text.indexOf('"engine"') + '"engine"'.length]]);
  assert.equal(fs.existsSync(path.join(workspace, '.pltrain', 'runs')) && fs.readdirSync(path.join(workspace, '.pltrain', 'runs')).some((d) => d.startsWith('py-')), false, 'no run directory');
  bad.dispose();
});

test('resume refuses a run without a checkpoint, naming it; opening a protocol-1 run that died announces it once, as failed', async () => {
  const empty = path.join(workspace, '.pltrain', 'runs', 'no-checkpoint');
  fs.mkdirSync(empty, { recursive: true });
  notices.length = 0;
  assert.equal(await runs.resumeRun(empty), undefined);
  assert.deepEqual(notices.map((n) => [n.level, n.message]), [['error', 'Run no-checkpoint has no checkpoint to resume from.']]);

  // A recorded run whose run.json says "running" for a pid that is certainly not a trainer now.
  const killed = path.join(workspace, '.pltrain', 'runs', 'killed');
  fs.cpSync(path.join(root, 'test', 'fixtures', 'v1-runs', 'killed'), killed, { recursive: true });
  const info = JSON.parse(fs.readFileSync(path.join(killed, 'run.json'), 'utf8'));
  const { spawnSync } = await import('node:child_process');
  fs.writeFileSync(path.join(killed, 'run.json'), JSON.stringify({ ...info, pid: spawnSync(process.execPath, ['-e', '0']).pid }));
  notices.length = 0;
  const opened = runs.openRecorded(killed);
  assert.equal(runs.current, opened);
  assert.equal(opened.view.state, 'failed');
  assert.equal(opened.view.unitName, 'expert');
  assert.deepEqual(notices.map((n) => n.level), ['error']);
  assert.match(notices[0].message, /^PL training killed failed at step 13: the trainer process exited unexpectedly$/);
  // A finished run's recorded end is old news: opening it says nothing.
  notices.length = 0;
  const stopped = path.join(workspace, '.pltrain', 'runs', 'moe');
  fs.cpSync(path.join(root, 'test', 'fixtures', 'v1-runs', 'moe'), stopped, { recursive: true });
  assert.equal(runs.openRecorded(stopped).view.state, 'stopped');
  assert.deepEqual(notices, []);
});

test('a reload re-attaches with the last known state at once, then the replay adds only what came after; a second Start of the same config offers "Show run"', async () => {
  const config = path.join(workspace, 'reattach.pltrain.json');
  fs.writeFileSync(config, JSON.stringify({ name: 'reattach', steps: 100000, batchSize: 16, alpha: 0.02, model: { experts: 3, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } }));
  const session = (await runs.start(config))!;
  pids.push(session.view.hello!.pid);
  await until('a κ measurement', () => session.view.lastMonitorStep);
  const paused = await runs.issue({ kind: 'pause' }, session.runDir);
  assert.equal(paused?.status, 'applied');
  await until('paused', () => session.view.state === 'paused');
  await until('the pause is recorded', () => fs.readFileSync(path.join(session.runDir, 'commands.jsonl'), 'utf8').includes('"pause"'));

  notices.length = 0;
  assert.equal(await runs.start(config), session, 'the same config again: the run that is live');
  assert.deepEqual(notices.map((n) => [n.level, n.actions]), [['info', ['Show run']]]);
  assert.match(notices[0].message, /already paused/);
  const shown: string[] = [];
  runs.onDidRequestShow((s) => shown.push(s.runId));

  // A second manager stands in for the extension after a window reload.
  const fresh = new RunManager(host);
  try {
    const [again] = fresh.reattachAll().filter((s) => s.runDir === session.runDir);
    assert.ok(again, 'found the live run');
    // Before any frame from the trainer: what the views show right after the reload.
    assert.equal(again.view.connected, false);
    assert.equal(again.view.state, 'paused');
    assert.equal(again.view.step, session.view.step, 'the step, not 0');
    assert.equal(again.view.alpha, 0.02);
    assert.equal(again.view.backend?.name, session.view.backend?.name);
    assert.equal(again.view.units.length, 3);
    assert.equal(again.view.lastMonitorStep, session.view.lastMonitorStep);
    const target = session.seq;
    await until('connected and replayed', () => again.view.connected && again.seq >= target);
    const seqs = again.events.map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => i), 'seq 0…n with no gap or duplicate');
  } finally {
    fresh.dispose();
  }
  assert.equal(shown.length, 0);
  assert.equal(runs.live.includes(session), true);
  assert.equal((await runs.issue({ kind: 'stop' }, session.runDir))?.status, 'applied');
});

test('recordedPrefix keeps the events from seq 0 up to the first gap or repeat', async () => {
  const { recordedPrefix } = await import('../../src/extension/runManager');
  const ev = (seq: number) => ({ type: 'log', seq, level: 'info', message: '' }) as never;
  assert.deepEqual(recordedPrefix([ev(0), ev(1), ev(2)]).map((e: { seq: number }) => e.seq), [0, 1, 2]);
  assert.deepEqual(recordedPrefix([ev(0), ev(1), ev(3), ev(4)]).map((e: { seq: number }) => e.seq), [0, 1]);
  assert.deepEqual(recordedPrefix([ev(0), ev(1), ev(1), ev(2)]).map((e: { seq: number }) => e.seq), [0, 1]);
  assert.deepEqual(recordedPrefix([ev(1), ev(2)]), []);
});
