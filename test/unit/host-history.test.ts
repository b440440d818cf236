// The extension host's bounds on a run's history (src/extension/run/history.ts): a long run's metrics
// are thinned in the older half, extremes and mask changes kept; every other kind of event is bounded
// too, the run's hello kept; the trainer's lines in the output channel are budgeted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROTOCOL_VERSION, type MetricsEvent, type TrainerEvent, type UnitStats } from '../../src/protocol';
import { HOST_HISTORY_CAPACITY, HOST_OTHER_EVENTS_CAPACITY, boundOtherEvents, thinHistory } from '../../src/extension/run/history';
import { OutputBudget } from '../../src/extension/run/outputBudget';
import { RunSession } from '../../src/extension/run/runSession';
import { MAX_POINTS_PER_SERIES } from '../../webview/series';

/** A seeded run: loss a noisy decay with planted spikes, 4 experts measured every 10 steps, expert 2 pruned from step 50,000. */
function* stream(steps: number, spikes: Map<number, number>): Generator<TrainerEvent> {
  let seq = 0;
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  yield { type: 'hello', seq: seq++, protocol: PROTOCOL_VERSION, runId: 'long', pid: 1, backend: { name: 'wasm', gpu: false, detail: '' }, startedAt: 0, totalSteps: steps, unitCount: 4, unitName: 'expert', alpha: 0.01, taskMetric: 'accuracy', config: {} };
  for (let step = 1; step <= steps; step++) {
    const loss = spikes.get(step) ?? 1 / Math.sqrt(step) + 0.01 * rnd();
    const e: MetricsEvent = { type: 'metrics', seq: seq++, step, time: step, loss, taskLoss: loss, regularizer: 3, alpha: 0.01, taskMetric: 0.8, stepsPerSec: 300 };
    if (step % 10 === 0) e.units = [0, 1, 2, 3].map((id): UnitStats => ({ id, mu: 1, lf: 2 + rnd(), kappa: 2 + rnd() + (step === 4_000 && id === 1 ? 1e6 : 0), frozen: false, pruned: id === 2 && step >= 50_000 }));
    yield e;
    if (step % 25_000 === 0) yield { type: 'ack', seq: seq++, commandId: `c${step}`, command: { kind: 'setAlpha', alpha: 0.02 }, status: 'applied', step, time: step } as TrainerEvent;
  }
}

test('a long run in the host: metrics held stay within the capacity, recent history whole, extremes, mask changes and every other event kept, seq order intact', () => {
  const capacity = 20_000;
  const steps = 200_000;
  const spikes = new Map([[1_234, 50], [77_777, 40], [150_001, 30]]);
  const session = new RunSession('long', '/nonexistent', undefined, { historyCapacity: capacity });
  let maxHeld = 0;
  let n = 0;
  for (const e of stream(steps, spikes)) {
    session.ingest(e);
    if (++n % 997 === 0) maxHeld = Math.max(maxHeld, session.events.filter((x) => x.type === 'metrics').length);
  }
  const metrics = session.events.filter((x): x is MetricsEvent => x.type === 'metrics');
  assert.ok(maxHeld <= capacity + 1, `held at most ${maxHeld} metrics events`);
  assert.ok(metrics.length >= capacity / 2, `${metrics.length} kept: thinning is gradual, not a purge`);
  // Order, ends, and the newest quarter at full resolution.
  assert.ok(session.events.every((e, i) => i === 0 || e.seq > session.events[i - 1].seq), 'seq strictly increasing');
  assert.equal(metrics[0].step, 1);
  assert.equal(metrics.at(-1)!.step, steps);
  const recent = metrics.filter((m) => m.step > steps - capacity / 4).map((m) => m.step);
  assert.deepEqual(recent, Array.from({ length: capacity / 4 }, (_, k) => steps - capacity / 4 + 1 + k));
  // Spikes in the loss survive however old; so does a κ spike at a monitor step.
  for (const [step, loss] of spikes) assert.ok(metrics.some((m) => m.step === step && m.loss === loss), `loss spike at ${step}`);
  assert.ok(metrics.some((m) => m.step === 4_000 && m.units![1].kappa! > 1e6), 'κ spike of expert 1 at step 4,000');
  // The pruning mask's transition and every non-metrics event.
  assert.ok(metrics.some((m) => m.step === 50_000), 'the first measurement with expert 2 pruned');
  assert.deepEqual(session.events.filter((e) => e.type !== 'metrics').map((e) => e.seq), [...stream(steps, spikes)].filter((e) => e.type !== 'metrics').map((e) => e.seq));
  // The summary state is the newest, not a thinned one.
  assert.equal(session.view.step, steps);
  assert.equal(session.view.units[2].pruned, true);
  session.dispose();
});

test('thinHistory leaves a history within the capacity untouched, and the host keeps at least twice what the panel keeps per series', () => {
  const events = [...stream(1_000, new Map())];
  const copy = events.slice();
  assert.equal(thinHistory(events, 1_000), 0);
  assert.deepEqual(events, copy);
  assert.ok(HOST_HISTORY_CAPACITY / 2 >= MAX_POINTS_PER_SERIES, 'host-thinned history still overflows the panel, so the panel marks its series thinned');
});

/** `n` trainer log lines (a trainer in a loop, or a flood of refused connections, each a warning). */
function* logFlood(from: number, n: number): Generator<TrainerEvent> {
  for (let k = 0; k < n; k++) yield { type: 'log', seq: from + k, level: 'warn', message: `refused a connection #${k}`, time: k };
}

test('the host bounds the events other than metrics: a flood of logs keeps the newest, the run\'s hello, every metric, and the output channel gets a budget', () => {
  const lines: string[] = [];
  let clock = 0;
  const capacity = 1_000;
  const session = new RunSession('flood', '/nonexistent', undefined, { otherEventsCapacity: capacity, log: (l) => lines.push(l), trainerLines: { perWindow: 50, windowMs: 10_000, now: () => clock } });
  const [hello, ...rest] = [...stream(100, new Map())];
  session.ingest(hello);
  for (const e of rest) session.ingest(e);
  const flood = 20_000;
  let maxOthers = 0;
  let k = 0;
  for (const e of logFlood(session.seq + 1, flood)) {
    session.ingest(e);
    if (++k % 97 === 0) maxOthers = Math.max(maxOthers, session.events.filter((x) => x.type !== 'metrics').length);
    if (k === flood / 2) clock += 10_000; // a second window halfway through
  }
  const others = session.events.filter((x) => x.type !== 'metrics');
  assert.ok(maxOthers <= capacity + 1, `held at most ${maxOthers} other events`);
  assert.ok(others.length >= (3 * capacity) / 4 - 1, `${others.length} kept`);
  assert.equal(session.events[0], hello, 'the hello (what the run is) is never dropped');
  assert.equal(session.view.hello, hello);
  assert.equal(session.events.filter((x) => x.type === 'metrics').length, 100, 'metrics have their own bound');
  assert.equal(session.events.at(-1)!.seq, session.seq, 'the newest event is held');
  assert.ok(session.events.every((e, i) => i === 0 || e.seq > session.events[i - 1].seq), 'seq order intact');
  // The output channel: 50 lines in the first window, the count of the rest when the next window opens, 50 more.
  const trainerLines = lines.filter((l) => l.startsWith('[trainer warn]'));
  assert.equal(trainerLines.length, 100);
  const summaries = lines.filter((l) => l.startsWith('…'));
  assert.deepEqual(summaries, [`… ${flood / 2 - 50} more trainer messages not shown here (more than 50 in 10 s); the run directory's events.jsonl and commands.jsonl have every one`]);
  session.dispose();
  assert.equal(lines.filter((l) => l.startsWith('…')).length, 2, 'the last window\'s count is written when the session ends');
  assert.ok(HOST_OTHER_EVENTS_CAPACITY >= 1_000);
});

test('boundOtherEvents: nothing dropped within the capacity; past it the oldest go, down to 3/4, never a kept one', () => {
  const events = [...logFlood(0, 10)];
  assert.equal(boundOtherEvents(events, 10, new Set()), 0);
  assert.equal(events.length, 10);
  const keep = events[0];
  events.push(...logFlood(10, 3));
  assert.equal(boundOtherEvents(events, 10, new Set([keep])), 13 - 7);
  assert.deepEqual(events.map((e) => e.seq), [0, 7, 8, 9, 10, 11, 12]);
});

test('OutputBudget: lines within the budget pass, the rest are counted once per window', () => {
  const out: string[] = [];
  let t = 0;
  const b = new OutputBudget((l) => out.push(l), 2, 1000, () => t);
  for (const l of ['a', 'b', 'c', 'd']) b.line(l);
  assert.deepEqual(out, ['a', 'b']);
  t = 999;
  b.line('e');
  assert.deepEqual(out, ['a', 'b'], 'still the same window');
  t = 1000;
  b.line('f');
  assert.deepEqual(out, ['a', 'b', '… 3 more trainer messages not shown here (more than 2 in 1 s); the run directory\'s events.jsonl and commands.jsonl have every one', 'f']);
  b.reportSuppressed();
  assert.equal(out.length, 4, 'nothing held back, nothing to report');
});
