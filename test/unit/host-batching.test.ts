// The host's adaptive batching (RunSession → PanelRelay): idle, an event goes out at the end of the
// event-loop turn that brought it (no fixed wait); busy, events are coalesced until the busy interval
// after the last delivery; in every case each event is delivered once, in seq order, before any fact
// that followed it. No timing assertions: "not yet" is checked over event-loop turns, "eventually" with
// a generous deadline.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HostToWebviewSchema, PROTOCOL_VERSION, type HostToWebview, type TrainerEvent } from '../../src/protocol';
import { PanelRelay } from '../../src/extension/panelRelay';
import { RunSession } from '../../src/extension/run/runSession';

const hello: TrainerEvent = {
  type: 'hello', seq: 0, protocol: PROTOCOL_VERSION, runId: 'r', pid: 1, backend: { name: 'wasm', gpu: false, detail: '' },
  startedAt: 0, totalSteps: 100_000, unitCount: 2, unitName: 'expert', alpha: 0.01, taskMetric: 'accuracy', config: {},
};
const metrics = (seq: number): TrainerEvent => ({ type: 'metrics', seq, step: seq, time: seq, loss: 1, taskLoss: 1, regularizer: 3, alpha: 0.01, taskMetric: 0.5, stepsPerSec: 100 });
const turn = () => new Promise<void>((r) => setImmediate(r));

/** A session and a relay whose posts are recorded (each checked against the schema the webview uses). */
function relayed(busyIntervalMs: number) {
  const session = new RunSession('r', '/runs/r', undefined, { busyIntervalMs });
  const posts: HostToWebview[] = [];
  const relay = new PanelRelay((m) => posts.push(HostToWebviewSchema.parse(JSON.parse(JSON.stringify(m)))));
  relay.follow(session);
  relay.webviewReady();
  posts.length = 0; // the snapshot
  const eventBatches = () => posts.filter((p): p is Extract<HostToWebview, { type: 'events' }> => p.type === 'events').map((p) => p.events.map((e) => e.seq));
  return { session, relay, posts, eventBatches, dispose: () => (relay.dispose(), session.dispose()) };
}

test('idle: the events of one turn go out together at the end of that turn, with no wait', async () => {
  const r = relayed(60_000);
  r.session.ingest(hello);
  r.session.ingest(metrics(1));
  assert.deepEqual(r.eventBatches(), [], 'not inside the turn that ingested them');
  await turn();
  assert.deepEqual(r.eventBatches(), [[0, 1]], 'one delivery for the turn, in order');
  r.dispose();
});

test('busy: within the interval after a delivery, events are coalesced; a fact flushes them first', async () => {
  const r = relayed(60_000);
  r.session.ingest(hello);
  await turn();
  for (let seq = 1; seq <= 50; seq++) {
    r.session.ingest(metrics(seq));
    await turn();
  }
  assert.deepEqual(r.eventBatches(), [[0]], 'held while busy (the interval has not passed)');
  r.session.applyFact({ type: 'connection', connected: false });
  assert.deepEqual(r.eventBatches(), [[0], Array.from({ length: 50 }, (_, i) => i + 1)], 'one batch, in order, before the fact');
  const kinds = r.posts.map((p) => p.type);
  assert.deepEqual(kinds.slice(-2), ['events', 'fact'], 'the fact follows the events that preceded it');
  r.dispose();
});

test('a steady stream: every event delivered once, in seq order, in fewer deliveries than events', async () => {
  const r = relayed(4);
  r.session.ingest(hello);
  const total = 400;
  for (let seq = 1; seq <= total; seq++) {
    r.session.ingest(metrics(seq));
    // An event every turn, with a pause now and then so the interval passes (idle again).
    if (seq % 40 === 0) await new Promise((res) => setTimeout(res, 10));
    else await turn();
  }
  const deadline = Date.now() + 10_000;
  while (r.eventBatches().flat().length < total + 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  const seqs = r.eventBatches().flat();
  assert.deepEqual(seqs, Array.from({ length: total + 1 }, (_, i) => i), 'none lost, none twice, in order');
  assert.ok(r.eventBatches().length < total, `coalesced: ${r.eventBatches().length} deliveries for ${total + 1} events`);
  r.dispose();
});

test('a replayed duplicate is not delivered again, and dispose cancels a pending delivery', async () => {
  const r = relayed(60_000);
  r.session.ingest(hello);
  r.session.ingest(metrics(1));
  await turn();
  r.session.ingest(metrics(1));
  r.session.ingest(metrics(2));
  r.session.flush();
  assert.deepEqual(r.eventBatches(), [[0, 1], [2]]);
  r.session.ingest(metrics(3));
  r.dispose();
  await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(r.eventBatches(), [[0, 1], [2]], 'nothing after dispose');
});
