// A protocol-2 trainer resumes a run directory a protocol-1 trainer recorded (test/fixtures/v1-runs/killed:
// killed at step 13, its checkpoint at step 10): the history it keeps is rewritten in protocol 2, so
// every file and every replay speaks one protocol, and nothing recorded is lost.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { PROTOCOL_VERSION, TrainerEventSchema, type TrainerEvent } from '../../src/protocol';

const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'bin', 'pltrain.js');

test('pltrain --resume on a protocol-1 run directory continues it in protocol 2, keeping and upgrading what it kept', () => {
  assert.ok(fs.existsSync(path.join(root, 'dist', 'trainer.js')), 'run `npm run build` first');
  const runDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'plt-v1-')), 'killed');
  fs.cpSync(path.join(root, 'test', 'fixtures', 'v1-runs', 'killed'), runDir, { recursive: true });
  // The recorded run asked for 1000 steps; 20 are enough to see it continue.
  const config = JSON.parse(fs.readFileSync(path.join(runDir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(runDir, 'config.json'), JSON.stringify({ ...config, steps: 20 }));
  const before = (file: string) => fs.readFileSync(path.join(runDir, file), 'utf8').trim().split('\n');
  const recorded = { metrics: before('metrics.jsonl'), commands: before('commands.jsonl'), events: before('events.jsonl') };

  const r = spawnSync(process.execPath, [cli, '--resume', runDir], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /resumed from the checkpoint at step 10/);

  const read = (file: string): TrainerEvent[] =>
    fs.readFileSync(path.join(runDir, file), 'utf8').trim().split('\n').map((l, i) => {
      const parsed = TrainerEventSchema.safeParse(JSON.parse(l));
      assert.ok(parsed.success, `${file} line ${i + 1} is not protocol 2: ${l.slice(0, 120)}`);
      return parsed.data;
    });
  const metrics = read('metrics.jsonl');
  const acks = read('commands.jsonl');
  const events = read('events.jsonl');
  const all = [...metrics, ...acks, ...events].sort((a, b) => a.seq - b.seq);
  assert.ok(all.every((e, i) => i === 0 || e.seq > all[i - 1].seq), 'no seq twice');
  assert.deepEqual(metrics.map((m) => (m.type === 'metrics' ? m.step : -1)), Array.from({ length: 20 }, (_, i) => i + 1), 'steps 1–10 kept, 11–20 redone');
  // The acks up to the checkpoint stay, upgraded; the later one was for steps that are redone.
  assert.deepEqual(acks.map((a) => (a.type === 'ack' ? [a.commandId, a.command] : [])), [
    ['alpha1', { kind: 'setAlpha', alpha: 0.05 }],
    ['freeze1', { kind: 'freeze', unit: 1 }],
    ['unfreeze1', { kind: 'unfreeze', unit: 1 }],
  ]);
  const hellos = events.filter((e) => e.type === 'hello');
  assert.equal(hellos.length, 2);
  assert.deepEqual(hellos.map((h) => (h.type === 'hello' ? [h.protocol, h.unitCount, h.unitName, h.resumedFromStep] : [])), [
    [PROTOCOL_VERSION, 2, 'expert', undefined],
    [PROTOCOL_VERSION, 2, 'expert', 10],
  ]);
  // Nothing recorded is lost: what was not kept is in the discarded files, as the old trainer wrote it.
  const discarded = (file: string) => (fs.existsSync(path.join(runDir, file)) ? fs.readFileSync(path.join(runDir, file), 'utf8').trim().split('\n') : []);
  assert.equal(recorded.metrics.length, 13);
  assert.deepEqual(discarded('metrics.discarded.jsonl'), recorded.metrics.slice(10), 'steps 11–13 as the old trainer wrote them');
  assert.deepEqual(discarded('commands.discarded.jsonl'), recorded.commands.slice(3), 'the rejected freeze 9 of step 12');
  assert.equal(events.length, recorded.events.length + 4, 'the old hello and state stay; the resume adds its hello, running, the test result and completed');
});
