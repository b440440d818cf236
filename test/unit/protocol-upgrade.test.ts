// Protocol-1 run directories stay readable: run directories recorded by the protocol-1 trainer
// (test/fixtures/v1-runs) open, record by record, as protocol 2, and fold into the same run state.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { PROTOCOL_VERSION, RunInfoSchema, TrainerEventSchema, parseTrainingConfig, upgradeConfigSnapshot, upgradeRecord, type AckEvent, type HelloEvent, type MetricsEvent } from '../../src/protocol';
import { readRecordedEvents, readRunDirectory, readRunInfo } from '../../src/extension/run/runDirectory';
import { RunSession } from '../../src/extension/run/runSession';

const fixtures = path.resolve(__dirname, '..', 'fixtures', 'v1-runs');
const lines = (dir: string, file: string) => fs.readFileSync(path.join(fixtures, dir, file), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test('the fixtures really are protocol 1, and protocol 2 refuses their records as they are', () => {
  const hello = lines('moe', 'events.jsonl')[0];
  assert.equal(hello.protocol, 1);
  assert.equal(hello.experts, 2);
  assert.equal(TrainerEventSchema.safeParse(hello).success, false);
  assert.ok(lines('moe', 'metrics.jsonl').some((m) => Array.isArray(m.experts)));
  assert.equal(RunInfoSchema.safeParse(JSON.parse(fs.readFileSync(path.join(fixtures, 'moe', 'run.json'), 'utf8'))).success, false);
});

test('every record of a protocol-1 run directory upgrades to a valid protocol-2 record, nothing lost', () => {
  for (const dir of ['moe', 'bert', 'killed']) {
    for (const file of ['metrics.jsonl', 'commands.jsonl', 'events.jsonl']) {
      for (const record of lines(dir, file)) {
        const r = TrainerEventSchema.safeParse(upgradeRecord(record));
        assert.ok(r.success, `${dir}/${file} seq ${record.seq}: ${r.success ? '' : r.error.issues[0].message}`);
      }
    }
  }
  const events = readRecordedEvents(path.join(fixtures, 'moe'));
  assert.equal(events.length, lines('moe', 'metrics.jsonl').length + lines('moe', 'commands.jsonl').length + lines('moe', 'events.jsonl').length);
  assert.deepEqual(events.map((e) => e.seq), [...events.keys()], 'seq 0…n in order');
  const hello = events[0] as HelloEvent;
  assert.deepEqual([hello.protocol, hello.unitCount, hello.unitName], [PROTOCOL_VERSION, 2, 'expert']);
  const measured = events.filter((e): e is MetricsEvent => e.type === 'metrics' && e.units !== undefined);
  assert.deepEqual(measured.map((m) => m.step), [5, 10]);
  assert.deepEqual(measured[0].units, lines('moe', 'metrics.jsonl').find((m) => m.step === 5)!.experts, 'the per-unit records, value for value');
  const acks = events.filter((e): e is AckEvent => e.type === 'ack');
  assert.deepEqual(
    acks.map((a) => [a.commandId, a.command, a.status]),
    [
      ['alpha1', { kind: 'setAlpha', alpha: 0.05 }, 'applied'],
      ['freeze1', { kind: 'freeze', unit: 1 }, 'applied'],
      ['freeze9', { kind: 'freeze', unit: 9 }, 'rejected'],
      ['unfreeze1', { kind: 'unfreeze', unit: 1 }, 'applied'],
      ['stop1', { kind: 'stop' }, 'applied'],
    ],
  );
  // run.json too, so the runs list and re-attach read old runs.
  const info = readRunInfo(path.join(fixtures, 'moe'));
  assert.deepEqual([info?.protocol, info?.state, info?.step], [PROTOCOL_VERSION, 'stopped', 13]);
});

test('protocol 1 called a BERT head an "attention head"; a hello from before unitName gets its family\'s name', () => {
  const hello = readRecordedEvents(path.join(fixtures, 'bert')).find((e): e is HelloEvent => e.type === 'hello')!;
  assert.equal(hello.unitName, 'head');
  const { unitName: _dropped, ...older } = lines('bert', 'events.jsonl')[0];
  assert.equal((upgradeRecord(older) as HelloEvent).unitName, 'head', 'from config.model.family');
  const { unitName: _too, ...moe } = lines('moe', 'events.jsonl')[0];
  assert.equal((upgradeRecord({ ...moe, config: {} }) as HelloEvent).unitName, 'expert', 'no family either: expert, as protocol 1 assumed');
});

test('a protocol-2 record, or one it does not know, comes back as the same object', () => {
  const v2 = upgradeRecord(lines('moe', 'events.jsonl')[0]);
  assert.equal(upgradeRecord(v2), v2, 'idempotent');
  for (const r of [{ type: 'metrics', units: [] }, { type: 'ack', command: { kind: 'freeze', unit: 1 } }, { type: 'log' }, { protocol: 2, runId: 'x' }, null, 7, 'x', [1]]) {
    assert.equal(upgradeRecord(r), r);
  }
});

test('a protocol-1 run opens in the host with the state its commands left: α 0.05, expert 1 unfrozen again, the stop', () => {
  const dir = path.join(fixtures, 'moe');
  const s = new RunSession('moe', dir, undefined);
  s.loadRecorded(readRunDirectory(dir), readRecordedEvents(dir));
  const v = s.view;
  assert.equal(v.state, 'stopped');
  assert.equal(v.alpha, 0.05);
  assert.equal(v.unitName, 'expert');
  assert.deepEqual(v.units.map((u) => [u.id, u.frozen]), [[0, false], [1, false]]);
  assert.deepEqual([...v.commands.values()].map((c) => `${c.id}:${c.status}`), ['alpha1:applied', 'freeze1:applied', 'freeze9:rejected', 'unfreeze1:applied', 'stop1:applied']);
  assert.equal(v.step, 13);
  s.dispose();
});

test('a protocol-1 run killed mid-run (run.json still "running", its trainer gone) opens as failed, with what it recorded', () => {
  const dir = path.join(fixtures, 'killed');
  const s = new RunSession('killed', dir, undefined);
  // The recorded pid belonged to a trainer long gone; say so rather than trust that no process took the number since.
  s.loadRecorded({ ...readRunDirectory(dir), alive: false }, readRecordedEvents(dir));
  assert.equal(s.view.state, 'failed');
  assert.match(s.view.stateReason ?? '', /exited unexpectedly/);
  assert.equal(s.view.step, 13);
  assert.equal(s.view.alpha, 0.05);
  assert.deepEqual([...s.view.commands.values()].map((c) => `${c.id}:${c.status}`), ['alpha1:applied', 'freeze1:applied', 'unfreeze1:applied', 'freeze9:rejected']);
  assert.equal(readRunDirectory(dir).resumable, true);
  s.dispose();
});

test("a config snapshot from before the annealed pruner (pruning.every, pruning.threshold) parses once upgraded, its other settings kept", () => {
  for (const dir of ['bert', 'killed', 'moe']) {
    const raw = JSON.parse(fs.readFileSync(path.join(fixtures, dir, 'config.json'), 'utf8'));
    assert.equal(parseTrainingConfig(raw).ok, false, `${dir}: the old pruning fields are refused as they are`);
    const up = upgradeConfigSnapshot(raw) as { pruning: Record<string, unknown> };
    const parsed = parseTrainingConfig(up);
    assert.ok(parsed.ok, `${dir}: ${JSON.stringify(parsed)}`);
    assert.equal('every' in up.pruning || 'threshold' in up.pruning, false);
    assert.equal(parsed.config.pruning.warmup, raw.pruning.warmup);
    assert.equal(parsed.config.pruning.budget, raw.pruning.budget);
    assert.equal(parsed.config.alpha, raw.alpha);
    assert.ok('every' in raw.pruning, 'the input is left alone');
  }
  const current = { pruning: { enabled: true, anneal: 50 } };
  assert.equal(upgradeConfigSnapshot(current), current, 'a current config comes back as the same object');
});
