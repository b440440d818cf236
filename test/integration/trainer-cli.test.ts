// The `pltrain` CLI as a user runs it: bad configs start nothing, a real run completes and leaves a
// valid run directory, and the progress output suits its destination (terminal or log).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { MetricsEventSchema, RunInfoSchema } from '../../src/protocol';
import { ENGINES, forEngine, root } from '../support/engines';

const cli = path.join(root, 'bin', 'pltrain.js');

for (const engine of ENGINES) describe(`engine ${engine}`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `plt-cli-${engine}-`));

  function config(name: string, body: object): string {
    const f = path.join(tmp, `${name}.pltrain.json`);
    fs.writeFileSync(f, JSON.stringify(forEngine(engine, body)));
    return f;
  }

  test('an invalid config exits 2, names each problem, and starts nothing', () => {
    const runDir = path.join(tmp, 'never');
    const r = spawnSync(process.execPath, [cli, '--config', config('bad', { alpha: -1, model: { experts: 1 } }), '--run-dir', runDir], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /alpha: α must be ≥ 0/);
    assert.match(r.stderr, /model\.experts: /);
    assert.equal(fs.existsSync(runDir), false);
    const missing = spawnSync(process.execPath, [cli], { encoding: 'utf8' });
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /usage: pltrain --config FILE/);
  });

  test('a named backend (device) that cannot load is an error, not a silent fallback', () => {
    // tfjs: the GPU backend, not installed here; pytorch: a CUDA device this machine does not have.
    const [args, message] =
      engine === 'tfjs'
        ? [['--config', config('gpu', { steps: 5 }), '--backend', 'tensorflow-gpu'], /backend "tensorflow-gpu" could not be loaded: not installed/]
        : [['--config', config('gpu', { steps: 5, device: 'cuda:42' })], /device "cuda:42" is not available/];
    const r = spawnSync(process.execPath, [cli, ...args, '--run-dir', path.join(tmp, 'gpu')], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stdout + r.stderr, message);
    assert.equal(RunInfoSchema.parse(JSON.parse(fs.readFileSync(path.join(tmp, 'gpu', 'run.json'), 'utf8'))).state, 'failed');
  });

  test('a real run, piped: plain log lines, a complete run directory, κ per expert', () => {
    const runDir = path.join(tmp, 'run');
    const r = spawnSync(process.execPath, [cli, '--config', config('ok', { steps: 1000, model: { experts: 3, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 8 } }), '--steps', '40', '--run-dir', runDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0], /^PLTRAIN_LISTENING \{"socket":"[^"]+trainer\.sock"/);
    assert.ok(!r.stdout.includes('\r'), 'no carriage returns in a log');
    assert.match(r.stdout, engine === 'tfjs' ? /backend: (wasm|cpu|tensorflow)/ : /backend: pytorch \((CPU|GPU)\) — (cpu|cuda:\d+ .+), torch /);
    assert.match(r.stdout, /step 40\/40 {2}loss \d+\.\d+ {2}acc [\d.]+% {2}mean κ [\d.e+]+ {2}[\d.]+ steps\/s {2}ETA 0s/);
    assert.match(r.stdout, /test accuracy [\d.]+% after 40 steps/);
    const progressLines = lines.filter((l) => / step \d+\/40 /.test(l));
    assert.ok(progressLines.length >= 5 && progressLines.length <= 25, `${progressLines.length} progress lines, not one per step`);
    const info = RunInfoSchema.parse(JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8')));
    assert.equal(info.state, 'completed');
    assert.equal(info.totalSteps, 40);
    const metrics = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l)));
    assert.deepEqual(metrics.map((m) => m.step), Array.from({ length: 40 }, (_, i) => i + 1));
    const monitored = metrics.filter((m) => m.units);
    assert.deepEqual(monitored.map((m) => m.step), [5, 10, 15, 20, 25, 30, 35, 40]);
    for (const m of monitored) assert.equal(m.units!.length, 3);
    // The PL* check rides along on monitor steps, next to the same step's μ (docs/method.md).
    assert.deepEqual(metrics.filter((m) => m.plRatio !== undefined).map((m) => m.step), [5, 10, 15, 20, 25, 30, 35, 40]);
    for (const m of monitored) assert.ok(m.plRatio! > 0 && Number.isFinite(m.plRatio), `plRatio ${m.plRatio} at step ${m.step}`);
    assert.equal(JSON.parse(fs.readFileSync(path.join(runDir, 'config.json'), 'utf8')).steps, 40, 'the snapshot has the override');
  });

  test('on a terminal: one live line rewritten in place', () => {
    const runDir = path.join(tmp, 'tty');
    const cmd = `${process.execPath} ${cli} --config ${config('tty', { steps: 30, model: { experts: 2, hiddenUnits: 8 } })} --run-dir ${runDir}`;
    // `script` gives the trainer a pseudo-terminal, as a user's shell would.
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '160' } });
    assert.equal(r.status, 0, r.stdout);
    assert.ok(r.stdout.includes('\r\x1b[2Kstep '), 'rewrites the line in place');
    assert.match(r.stdout, /step 30\/30 {2}loss/);
    assert.match(r.stdout, /ETA/);
  });

  test('pruning in a real run: gate values streamed, soft masks then final decisions at the end of the anneal, frozen kept, budget held, checkpointed', () => {
    const runDir = path.join(tmp, 'prune');
    // exact: the budget's two experts go at step 40 whatever the gate learned in 20 steps.
    const body = { steps: 60, alpha: 0, frozenExperts: [0], model: { experts: 4, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 8 }, pruning: { enabled: true, warmup: 20, anneal: 20, budget: 0.5, exact: true } };
    const r = spawnSync(process.execPath, [cli, '--config', config('prune', body), '--run-dir', runDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /model: moe-mlp, 4 experts, pruning exactly 2: soft masks from step 20, final at step 40/);
    const metrics = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l)));
    const monitored = metrics.filter((m) => m.units);
    assert.ok(monitored.every((m) => m.gate?.length === 4), 'the gate rides on every monitor step');
    const prunedAtEnd = monitored.at(-1)!.units!.filter((e) => e.pruned).map((e) => e.id);
    assert.equal(prunedAtEnd.length, 2, `pruned ${prunedAtEnd}`);
    assert.ok(!prunedAtEnd.includes(0), 'the frozen expert is never pruned');
    const logged = [...r.stdout.matchAll(/pruned expert (\d) at step (\d+)/g)].map((m) => ({ expert: Number(m[1]), step: Number(m[2]) }));
    assert.deepEqual(logged.map((l) => l.expert).sort(), [...prunedAtEnd].sort());
    for (const l of logged) {
      assert.equal(l.step, 40, 'the decisions fall at the end of the anneal');
      // Before its decision the expert is live; from then on it is reported pruned, with gate 0 later.
      assert.ok(monitored.filter((m) => m.step < l.step).every((m) => !m.units![l.expert].pruned));
      assert.ok(monitored.filter((m) => m.step >= l.step).every((m) => m.units![l.expert].pruned));
      assert.ok(monitored.filter((m) => m.step > l.step).every((m) => m.gate![l.expert] === 0));
    }
    const manifest = JSON.parse(fs.readFileSync(path.join(runDir, 'checkpoint', 'manifest.json'), 'utf8'));
    assert.deepEqual([...manifest.pruned].sort(), [...prunedAtEnd].sort());
    assert.ok(Array.isArray(manifest.pruner.weights), 'the gate state is checkpointed for resume');
    // The gate learned during the anneal: keep-probabilities moved off their common start (σ(3) for all).
    const during = monitored.filter((m) => m.step > 20 && m.step < 40).at(-1)!.gate!;
    assert.ok(new Set(during.slice(1).map((g) => g.toFixed(4))).size > 1, `gate during the anneal ${during}`);
    assert.equal(during[0], 1, 'a frozen expert is kept with probability 1');
  });

  test('a unit at the damping floor is reported once per episode, with its share of the loss, exactly where metrics.jsonl shows it', () => {
    // δ = 0.02 puts the floor (λ_min ≤ δ·λ_max, κ ≥ 1/(2δ)) at κ = 25, which young experts cross both ways within a hundred steps.
    const runDir = path.join(tmp, 'floor');
    // The seed is one whose run crosses the floor both ways (the engines draw different initial weights).
    const body = { steps: 100, alpha: 0.01, seed: engine === 'tfjs' ? 1 : 3, model: { experts: 3, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 8, damping: 0.02 } };
    const r = spawnSync(process.execPath, [cli, '--config', config('floor', body), '--run-dir', runDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const metrics = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l))).filter((m) => m.units);
    // Expected from the recorded κ alone: an entry where κ reaches 50 after a monitor step below it.
    const expected: string[] = [];
    const atFloor = new Set<number>();
    for (const m of metrics) {
      for (const e of m.units!) {
        const floor = e.kappa !== null && e.kappa >= 25 * (1 - 1e-9);
        if (floor && !atFloor.has(e.id)) (atFloor.add(e.id), expected.push(`enter ${e.id}@${m.step}`));
        else if (!floor && atFloor.delete(e.id)) expected.push(`leave ${e.id}@${m.step}`);
      }
    }
    assert.ok(expected.some((x) => x.startsWith('enter')) && expected.some((x) => x.startsWith('leave')), `the run enters and leaves the floor (else the test tests little): ${expected}`);
    const events = fs.readFileSync(path.join(runDir, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'log');
    const reported: string[] = [];
    for (const e of events) {
      const enter = /^expert (\d+) at step (\d+): λ_min ≤ δ·λ_max on the \d+ probe examples it serves \(μ [\d.e+-]+, L_f [\d.e+-]+\), so its κ [\d.e+-]+ is near the damping floor 1\/δ = 50\.0: its kernel is \(nearly\) singular there/.exec(e.message);
      const leave = /^expert (\d+) at step (\d+): off the damping floor, (κ [\d.]+|κ not measurable)$/.exec(e.message);
      // Both carry the topic that lets the panel drop the warning once it has ended.
      if (enter) (assert.equal(e.level, 'warn'), assert.equal(e.topic, `damping-floor/${enter[1]}`), reported.push(`enter ${enter[1]}@${enter[2]}`));
      if (leave) (assert.equal(e.level, 'info'), assert.equal(e.topic, `damping-floor/${leave[1]}`), reported.push(`leave ${leave[1]}@${leave[2]}`));
    }
    assert.deepEqual(reported, expected);
    assert.match(r.stdout, /expert \d+ at step \d+: λ_min ≤ δ·λ_max/, 'the CLI prints it too');
  });

  test('OPT in a real run: hyperspherical energy and ‖QᵀQ − I‖ streamed per expert, energy constant', () => {
    const runDir = path.join(tmp, 'opt');
    const body = { steps: 30, model: { experts: 2, hiddenUnits: 8, opt: true }, monitor: { every: 10, probeSize: 8 } };
    const r = spawnSync(process.execPath, [cli, '--config', config('opt', body), '--run-dir', runDir], { encoding: 'utf8' });
    if (engine === 'pytorch') {
      // Not in the PyTorch engine: refused before anything starts, naming the field.
      assert.equal(r.status, 2);
      assert.match(r.stderr, /model\.opt: OPT mode is implemented in the tfjs engine only/);
      assert.equal(fs.existsSync(runDir), false);
      return;
    }
    assert.equal(r.status, 0, r.stderr);
    const monitored = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l))).filter((m) => m.units);
    assert.deepEqual(monitored.map((m) => m.step), [10, 20, 30]);
    for (const e of [0, 1]) {
      const energies = monitored.map((m) => m.extra![`energy/expert${e}`]);
      assert.ok(energies.every((x) => Math.abs(x - energies[0]) <= 1e-4 * energies[0]), `energy of expert ${e}: ${energies}`);
      assert.ok(monitored.every((m) => m.extra![`orthogonality/expert${e}`] <= 1e-5));
    }
  });

  test('every model family runs end to end through pltrain: units named, measured, the right metric', () => {
    const cases = [
      { family: 'switch-transformer', unit: 'expert', metric: 'perplexity', body: { model: { family: 'switch-transformer', experts: 3, dModel: 16, layers: 2, contextLength: 16, hiddenUnits: 16 }, data: { source: 'text' }, batchSize: 8 } },
      { family: 'bert-encoder', unit: 'head', metric: 'accuracy', body: { model: { family: 'bert-encoder', experts: 2, dModel: 8, layers: 1, hiddenUnits: 8 }, batchSize: 16 } },
      { family: 'vgg', unit: 'channel group', metric: 'accuracy', body: { model: { family: 'vgg', experts: 2, hiddenUnits: 2, layers: 2 }, batchSize: 16 } },
    ];
    for (const c of cases) {
      const runDir = path.join(tmp, `family-${c.family}`);
      const body = { ...c.body, steps: 12, alpha: 0.01, monitor: { every: 4, probeSize: 6 }, frozenExperts: [1] };
      const r = spawnSync(process.execPath, [cli, '--config', config(c.family, body), '--run-dir', runDir], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${c.family}: ${r.stdout}\n${r.stderr}`);
      const events = fs.readFileSync(path.join(runDir, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const hello = events.find((e) => e.type === 'hello');
      assert.equal(hello.unitName, c.unit, c.family);
      assert.equal(hello.unitCount, (c.body.model as { experts: number }).experts, c.family);
      assert.equal(hello.taskMetric, c.metric, c.family);
      const monitored = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => MetricsEventSchema.parse(JSON.parse(l))).filter((m) => m.units);
      assert.deepEqual(monitored.map((m) => m.step), [4, 8, 12], c.family);
      for (const m of monitored) {
        assert.equal(m.units!.length, (c.body.model as { experts: number }).experts, c.family);
        assert.ok(m.units!.every((e) => e.kappa === null || (e.kappa >= 1 / (1 + 1e-6) && e.lf! >= e.mu!)), c.family);
        assert.ok(m.units!.every((e) => e.served !== undefined && e.active !== undefined && e.share !== undefined), `${c.family}: served, share, active on every unit`);
        assert.ok(Math.abs(m.units!.reduce((a, e) => a + e.share!, 0) - 1) <= 1e-5, `${c.family}: shares sum to 1`);
        assert.ok(m.units![1].frozen, `${c.family}: the frozen unit is reported frozen`);
      }
      assert.match(r.stdout, c.metric === 'accuracy' ? /test accuracy [\d.]+% after 12 steps/ : /test perplexity [\d.]+ after 12 steps/);
      if (c.family === 'switch-transformer') assert.ok(monitored.every((m) => m.extra && 'load/0' in m.extra), 'routing load streamed');
    }
  });
});

test('engine pytorch without a usable Python: a clear error naming what is missing, nothing started', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-cli-nopython-'));
  const file = path.join(tmp, 'py.pltrain.json');
  fs.writeFileSync(file, JSON.stringify({ engine: 'pytorch', steps: 5 }));
  const run = (python: string) => spawnSync(process.execPath, [cli, '--config', file, '--run-dir', path.join(tmp, 'run')], { encoding: 'utf8', env: { ...process.env, PLTRAIN_PYTHON: python } });
  const missing = run(path.join(tmp, 'no-such-python3'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /engine "pytorch": the PyTorch engine needs Python 3, and ".*no-such-python3" could not run \(not found\)/);
  // An interpreter without torch (a stand-in answering the probe as such a Python does).
  const fake = path.join(tmp, 'python-without-torch');
  const answer = JSON.stringify({ version: [3, 11], torchError: "No module named 'torch'", websockets: '10.4' });
  fs.writeFileSync(fake, `#!/bin/sh\ncat <<'EOF'\n${answer}\nEOF\n`, { mode: 0o755 });
  const noTorch = run(fake);
  assert.equal(noTorch.status, 1);
  assert.match(noTorch.stderr, /cannot import torch \(No module named 'torch'\): run ".*python-without-torch -m pip install torch websockets"/);
  assert.equal(fs.existsSync(path.join(tmp, 'run')), false, 'nothing started');
  fs.rmSync(tmp, { recursive: true, force: true });
});
