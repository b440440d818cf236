// The extension host's bound on a run's history (src/extension/run/history.ts): a long run's metrics
// are thinned in the older half, extremes and mask changes kept, everything else untouched.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExpertStats, MetricsEvent, TrainerEvent } from '../../src/protocol';
import { HOST_HISTORY_CAPACITY, thinHistory } from '../../src/extension/run/history';
import { RunSession } from '../../src/extension/run/runSession';
import { MAX_POINTS_PER_SERIES } from '../../webview/series';

/** A seeded run: loss a noisy decay with planted spikes, 4 experts measured every 10 steps, expert 2 pruned from step 50,000. */
function* stream(steps: number, spikes: Map<number, number>): Generator<TrainerEvent> {
  let seq = 0;
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  yield { type: 'hello', seq: seq++, protocol: 1, runId: 'long', pid: 1, backend: { name: 'wasm', gpu: false, detail: '' }, startedAt: 0, totalSteps: steps, experts: 4, alpha: 0.01, taskMetric: 'accuracy', config: {} } as TrainerEvent;
  for (let step = 1; step <= steps; step++) {
    const loss = spikes.get(step) ?? 1 / Math.sqrt(step) + 0.01 * rnd();
    const e: MetricsEvent = { type: 'metrics', seq: seq++, step, time: step, loss, taskLoss: loss, regularizer: 3, alpha: 0.01, taskMetric: 0.8, stepsPerSec: 300 };
    if (step % 10 === 0) e.experts = [0, 1, 2, 3].map((id): ExpertStats => ({ id, mu: 1, lf: 2 + rnd(), kappa: 2 + rnd() + (step === 4_000 && id === 1 ? 1e6 : 0), frozen: false, pruned: id === 2 && step >= 50_000 }));
    yield e;
    if (step % 25_000 === 0) yield { type: 'ack', seq: seq++, commandId: `c${step}`, command: { kind: 'setAlpha', alpha: 0.02 }, status: 'applied', step, time: step } as TrainerEvent;
  }
}

test('a long run in the host: metrics held stay within the capacity, recent history whole, extremes, mask changes and every other event kept, seq order intact', () => {
  const capacity = 20_000;
  const steps = 200_000;
  const spikes = new Map([[1_234, 50], [77_777, 40], [150_001, 30]]);
  const session = new RunSession('long', '/nonexistent', undefined, () => undefined, capacity);
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
  assert.ok(metrics.some((m) => m.step === 4_000 && m.experts![1].kappa > 1e6), 'κ spike of expert 1 at step 4,000');
  // The pruning mask's transition and every non-metrics event.
  assert.ok(metrics.some((m) => m.step === 50_000), 'the first measurement with expert 2 pruned');
  assert.deepEqual(session.events.filter((e) => e.type !== 'metrics').map((e) => e.seq), [...stream(steps, spikes)].filter((e) => e.type !== 'metrics').map((e) => e.seq));
  // The summary state is the newest, not a thinned one.
  assert.equal(session.step, steps);
  assert.equal(session.experts[2].pruned, true);
});

test('thinHistory leaves a history within the capacity untouched, and the host keeps at least twice what the panel keeps per series', () => {
  const events = [...stream(1_000, new Map())];
  const copy = events.slice();
  assert.equal(thinHistory(events, 1_000), 0);
  assert.deepEqual(events, copy);
  assert.ok(HOST_HISTORY_CAPACITY / 2 >= MAX_POINTS_PER_SERIES, 'host-thinned history still overflows the panel, so the panel marks its series thinned');
});
