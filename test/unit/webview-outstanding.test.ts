// The panel's unanswered commands across a window reload (webview/outstanding.ts): which are sent
// again with their original id, which wait, which are refused with a reason. The browser-level
// mechanism (persisted state, reload, re-post) is test/integration/webview-panel.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_OUTSTANDING, OutstandingCommands, mergeStored, outstandingFromPersisted, resolveRestored, restoredFrom, type HostSide, type OutstandingCommand } from '../../webview/outstanding';
import { fromPersisted } from '../../webview/settings';

const pause: OutstandingCommand = { id: 'wv-1', runId: 'run-a', command: { kind: 'pause' } };
const host = (over: Partial<HostSide>): HostSide => ({ runId: 'run-a', active: true, state: 'running', connected: true, known: false, ...over });

test('a restored command is sent again only to its own run, live and connected, and only if the host does not have it', () => {
  assert.deepEqual(resolveRestored(pause, host({})), { kind: 'reissue' });
  // The new host took it already (it came through before the reload): nothing to send.
  assert.deepEqual(resolveRestored(pause, host({ known: true })), { kind: 'taken' });
  // Not attached yet: no run shown, or the host not yet connected to the trainer (it could not send).
  assert.deepEqual(resolveRestored(pause, host({ runId: undefined })), { kind: 'wait' });
  assert.deepEqual(resolveRestored(pause, host({ connected: false })), { kind: 'wait' });
  // A paused run is live: a restored Resume goes to it.
  assert.deepEqual(resolveRestored({ ...pause, command: { kind: 'resume' } }, host({ state: 'paused' })), { kind: 'reissue' });
});

test('a restored command that can no longer apply is refused with the reason, never sent to another run', () => {
  const ended = resolveRestored(pause, host({ active: false, state: 'stopped', connected: false }));
  assert.equal(ended.kind, 'refuse');
  assert.match((ended as { reason: string }).reason, /^not applied: the window reloaded before the extension host took it, and the run has stopped$/);
  const other = resolveRestored(pause, host({ runId: 'run-b' }));
  assert.equal(other.kind, 'refuse');
  assert.match((other as { reason: string }).reason, /panel now shows run run-b, not run-a/);
  // Another run's table having the same id says nothing about this run's command.
  assert.equal(resolveRestored(pause, host({ runId: 'run-b', known: true })).kind, 'refuse');
});

test('restored, sent again, settled: each command leaves the list once answered, and persists until then', () => {
  const list = new OutstandingCommands([pause]);
  assert.deepEqual(list.restoredCommands(), [pause]);
  assert.deepEqual(list.ownCommands(), []);
  const alpha: OutstandingCommand = { id: 'wv-2', runId: 'run-a', command: { kind: 'setAlpha', alpha: 0.5 } };
  list.add(alpha);
  assert.deepEqual(list.ownCommands(), [alpha]);
  list.markReissued(pause.id);
  assert.deepEqual(list.restoredCommands(), []);
  assert.deepEqual(list.ownCommands().map((c) => c.id), ['wv-1', 'wv-2']);
  // Round trip through the persisted state, next to the view settings (which still read).
  const state = { v: 1, smoothing: 0.3, outstanding: list.toPersisted() };
  assert.deepEqual(outstandingFromPersisted(state), [pause, alpha]);
  assert.equal(fromPersisted(state).smoothing, 0.3);
  assert.equal(list.settle('wv-1'), true);
  assert.equal(list.settle('wv-1'), false);
  assert.deepEqual(list.toPersisted(), [alpha]);
});

test('the list is bounded: past the bound the oldest is dropped and reported, not lost silently', () => {
  const list = new OutstandingCommands();
  for (let i = 0; i < MAX_OUTSTANDING + 2; i++) list.add({ id: `wv-${i}`, runId: 'run-a', command: { kind: 'pause' } });
  assert.equal(list.size, MAX_OUTSTANDING);
  assert.deepEqual(list.takeDropped().map((c) => c.id), ['wv-0', 'wv-1']);
  assert.deepEqual(list.takeDropped(), []);
  assert.equal(list.has('wv-0'), false);
  assert.equal(list.has(`wv-${MAX_OUTSTANDING + 1}`), true);
});

test('a damaged or foreign persisted state yields no commands (and never one outside the protocol)', () => {
  assert.deepEqual(outstandingFromPersisted(undefined), []);
  assert.deepEqual(outstandingFromPersisted(null), []);
  assert.deepEqual(outstandingFromPersisted({ v: 1 }), []);
  assert.deepEqual(outstandingFromPersisted({ outstanding: 'x' }), []);
  assert.deepEqual(outstandingFromPersisted({ outstanding: [{ id: 'bad id!', runId: 'r', command: { kind: 'pause' } }] }), []);
  assert.deepEqual(outstandingFromPersisted({ outstanding: [{ id: 'wv-1', runId: 'r', command: { kind: 'setAlpha', alpha: -1 } }] }), []);
  assert.deepEqual(outstandingFromPersisted({ outstanding: Array.from({ length: MAX_OUTSTANDING + 1 }, (_, i) => ({ id: `wv-${i}`, runId: 'r', command: { kind: 'pause' } })) }), []);
});

test('the localStorage copy reaches a panel opened anew; it keeps other documents\' commands and drops the ones this one resolved', () => {
  const other: OutstandingCommand = { id: 'wv-9', runId: 'run-b', command: { kind: 'stop' } };
  const alpha: OutstandingCommand = { id: 'wv-2', runId: 'run-a', command: { kind: 'setAlpha', alpha: 0.5 } };
  // A restored panel has both copies: each id once, the webview state's first.
  assert.deepEqual(restoredFrom({ v: 1, outstanding: [pause] }, [pause, other]), [pause, other]);
  // A panel opened anew (no webview state) still gets them.
  assert.deepEqual(restoredFrom(undefined, [pause]), [pause]);
  assert.deepEqual(restoredFrom(undefined, 'garbage'), []);
  const list = new OutstandingCommands([pause]);
  list.add(alpha);
  list.settle(pause.id);
  assert.deepEqual(mergeStored([pause, other], list.toPersisted(), list.resolved), [other, alpha]);
  assert.deepEqual(mergeStored(null, [], new Set()), []);
  const many = Array.from({ length: MAX_OUTSTANDING }, (_, i) => ({ id: `x-${i}`, runId: 'run-b', command: { kind: 'pause' } as const }));
  const merged = mergeStored(many, [alpha], new Set());
  assert.equal(merged.length, MAX_OUTSTANDING);
  assert.deepEqual(merged.at(-1), alpha);
});
