import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ALPHA_MAX } from '../../src/protocol';
import { SteeringState } from '../../src/trainer/steering';

test('commands wait for the step boundary and are decided in arrival order', () => {
  const s = new SteeringState(3, 0.01);
  s.enqueue('a', { kind: 'setAlpha', alpha: 0.5 });
  s.enqueue('b', { kind: 'pause' });
  assert.equal(s.alpha, 0.01, 'nothing applies before drain');
  assert.equal(s.paused, false);
  const d = s.drain();
  assert.deepEqual(d.map((x) => [x.commandId, x.status]), [['a', 'applied'], ['b', 'applied']]);
  assert.equal(s.alpha, 0.5);
  assert.equal(s.paused, true);
  assert.equal(s.pending, 0);
});

test('pause/resume are rejected when they would do nothing', () => {
  const s = new SteeringState(2, 0);
  s.enqueue('r', { kind: 'resume' });
  s.enqueue('p1', { kind: 'pause' });
  s.enqueue('p2', { kind: 'pause' });
  const d = s.drain();
  assert.equal(d[0].status, 'rejected');
  assert.match(d[0].reason!, /not paused/);
  assert.equal(d[1].status, 'applied');
  assert.equal(d[2].status, 'rejected');
  assert.match(d[2].reason!, /already paused/);
});

test('α must be finite and within the protocol\'s bounds (limits.ts), each refusal saying which', () => {
  const s = new SteeringState(2, 0.1);
  for (const [i, alpha] of [-1, NaN, Infinity, -Infinity, 2e6].entries()) s.enqueue(`x${i}`, { kind: 'setAlpha', alpha });
  s.enqueue('ok', { kind: 'setAlpha', alpha: 0 });
  s.enqueue('max', { kind: 'setAlpha', alpha: ALPHA_MAX });
  const d = s.drain();
  assert.deepEqual(d.map((x) => x.status), ['rejected', 'rejected', 'rejected', 'rejected', 'rejected', 'applied', 'applied']);
  assert.deepEqual(
    d.slice(0, 5).map((x) => x.reason!.replace(/ \(got .*\)$/, '')),
    ['α must be ≥ 0', 'α must be a number', 'α must be a finite number', 'α must be a finite number', 'α must be ≤ 1e+6'],
  );
  assert.equal(s.alpha, ALPHA_MAX);
});

test('freeze: unknown unit, already frozen, and the last trainable unit are refused, in the family\'s words', () => {
  const s = new SteeringState(3, 0, [0], 'head');
  s.enqueue('a', { kind: 'freeze', unit: 3 });
  s.enqueue('b', { kind: 'freeze', unit: -1 });
  s.enqueue('c', { kind: 'freeze', unit: 0 });
  s.enqueue('d', { kind: 'freeze', unit: 1 });
  s.enqueue('e', { kind: 'freeze', unit: 2 });
  s.enqueue('f', { kind: 'unfreeze', unit: 2 });
  s.enqueue('g', { kind: 'unfreeze', unit: 0 });
  const d = s.drain();
  assert.equal(d[0].reason, 'head 3 does not exist (the model has 3: 0…2)');
  assert.match(d[1].reason!, /^head -1 does not exist/);
  assert.equal(d[2].reason, 'head 0 is already frozen');
  assert.equal(d[3].status, 'applied');
  assert.equal(d[4].reason, 'cannot freeze every head: at least one must stay trainable');
  assert.equal(d[5].reason, 'head 2 is not frozen');
  assert.equal(d[6].status, 'applied');
  assert.deepEqual([...s.frozen], [1]);
  assert.deepEqual(s.trainableExperts(), [0, 2]);
});

test('a pruned expert cannot be frozen', () => {
  const s = new SteeringState(3, 0);
  s.pruned.add(2);
  s.enqueue('a', { kind: 'freeze', unit: 2 });
  assert.match(s.drain()[0].reason!, /pruned/);
});

test('duplicate ids are rejected, and nothing is accepted once stopping', () => {
  const s = new SteeringState(2, 0);
  s.enqueue('same', { kind: 'pause' });
  s.enqueue('same', { kind: 'resume' });
  s.enqueue('stop', { kind: 'stop' });
  s.enqueue('late', { kind: 'setAlpha', alpha: 1 });
  const d = s.drain();
  assert.equal(d[0].status, 'applied');
  assert.match(d[1].reason!, /duplicate command id/);
  assert.equal(d[2].status, 'applied');
  assert.equal(s.stopRequested, true);
  assert.equal(s.paused, false, 'stop also releases a pause');
  assert.match(d[3].reason!, /stopping/);
});

test('nextCommand resolves when a command arrives (the paused loop waits on it)', async () => {
  const s = new SteeringState(2, 0);
  let woke = false;
  const p = s.nextCommand().then(() => (woke = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(woke, false);
  s.enqueue('r', { kind: 'resume' });
  await p;
  assert.equal(woke, true);
});
