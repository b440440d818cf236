// The one reading of a run's state (src/protocol/runView.ts), and both of its users: the extension
// host's RunSession (sidebar, status bar, code lenses, notifications) and the panel's RunModel, fed
// through the host's relay. Same events and facts in, same state out, each event delivered once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  HostToWebviewSchema,
  MAX_COMMANDS_KEPT,
  PROTOCOL_VERSION,
  RunView,
  describeStatus,
  formatNumber,
  type HostToWebview,
  type MetricsEvent,
  type TrainerEvent,
  type UnitStats,
} from '../../src/protocol';
import { PanelRelay } from '../../src/extension/panelRelay';
import { unitPrompt } from '../../src/extension/unitPrompt';
import { RunSession } from '../../src/extension/run/runSession';
import { RunModel } from '../../webview/runModel';

const hello = (seq: number, extra: Partial<Extract<TrainerEvent, { type: 'hello' }>> = {}): TrainerEvent => ({
  type: 'hello',
  seq,
  protocol: PROTOCOL_VERSION,
  runId: 'r',
  pid: 1,
  backend: { name: 'wasm', gpu: false, detail: '' },
  startedAt: 0,
  totalSteps: 100,
  unitCount: 3,
  unitName: 'head',
  alpha: 0.01,
  taskMetric: 'accuracy',
  config: { frozenExperts: [2], monitor: { damping: 0.01 } },
  ...extra,
});
const unit = (id: number, kappa: number, flags: Partial<UnitStats> = {}): UnitStats => ({ id, mu: 1 / kappa, lf: 1, kappa, frozen: false, pruned: false, ...flags });
const metrics = (seq: number, step: number, units?: UnitStats[], extra: Partial<MetricsEvent> = {}): MetricsEvent => ({
  type: 'metrics',
  seq,
  step,
  time: step,
  loss: 1 / step,
  taskLoss: 1 / step,
  regularizer: 3,
  alpha: 0.01,
  taskMetric: 0.5,
  stepsPerSec: 100,
  ...(units ? { units } : {}),
  ...extra,
});

test('seq deduplication: an event at or below the last seq is dropped, whatever its content', () => {
  const v = new RunView();
  assert.ok(v.applyEvent(hello(0)));
  assert.ok(v.applyEvent(metrics(1, 1)));
  assert.equal(v.applyEvent(metrics(1, 99)), undefined, 'a replay overlap');
  assert.equal(v.applyEvent(hello(0, { alpha: 7 })), undefined);
  assert.equal(v.step, 1);
  assert.equal(v.alpha, 0.01);
  assert.equal(v.lastSeq, 1);
});

test('units: named by the hello, rows from its count (frozen from the config), each measurement copied through whole', () => {
  const v = new RunView();
  const c = v.applyEvent(hello(0))!;
  assert.equal(c.unitSet, true);
  assert.equal(v.unitName, 'head');
  assert.deepEqual(v.units, [
    { id: 0, frozen: false, pruned: false },
    { id: 1, frozen: false, pruned: false },
    { id: 2, frozen: true, pruned: false },
  ]);
  // A field this reducer does not know (a later trainer's per-unit `share`) is carried, not dropped.
  const withShare = { ...unit(0, 5), share: 0.25 } as UnitStats;
  v.applyEvent(metrics(1, 10, [withShare, unit(1, 49), unit(2, 100, { frozen: true })]));
  assert.equal((v.unit(0) as unknown as { share: number }).share, 0.25);
  assert.equal(v.lastMonitorStep, 10);
  assert.equal(v.unit(1)!.kappa, 49);
  // At the damping floor: κ ≥ 1/(2δ) = 50 (δ = 0.01 from the hello's config): unit 2 only.
  assert.deepEqual(v.units.map((u) => v.atDampingFloor(u)), [false, false, true]);
});

test('a unit without a measured κ, μ or L_f (not measured yet, or not measurable) reads "—", never NaN, and is never at the floor', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  const unmeasured: UnitStats = { id: 1, mu: null, lf: null, kappa: null, frozen: false, pruned: false }; // what a trainer sends for "not measurable"
  v.applyEvent(metrics(1, 10, [unit(0, 5), unmeasured, unit(2, 7)]));
  const u1 = v.unit(1)!;
  assert.deepEqual([formatNumber(u1.kappa), formatNumber(u1.mu), formatNumber(u1.lf)], ['—', '—', '—']);
  assert.equal(v.atDampingFloor(u1), false);
  // The panel draws a gap, not a number, for it.
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: null, events: [hello(0), metrics(1, 10, [unit(0, 5), unmeasured, unit(2, 7)])], commands: [] });
  assert.equal(m.series.get('kappa:1'), undefined);
  assert.deepEqual(m.seriesFor('kappa:0').raw, [{ x: 10, y: 5 }]);
  assert.equal(m.seriesFor('mask:1').raw.length, 1, 'its status is still on the mask chart');
});

test('acks: an applied setAlpha or freeze changes α and the frozen flag at once; a rejected one changes nothing', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  v.applyEvent(metrics(1, 10, [unit(0, 5), unit(1, 6), unit(2, 7, { frozen: true })]));
  v.applyEvent({ type: 'ack', seq: 2, commandId: 'a', command: { kind: 'setAlpha', alpha: 0.5 }, status: 'rejected', reason: 'no', step: 10, time: 0 });
  assert.equal(v.alpha, 0.01);
  v.applyEvent({ type: 'ack', seq: 3, commandId: 'b', command: { kind: 'setAlpha', alpha: 0.2 }, status: 'applied', step: 10, time: 0 });
  assert.equal(v.alpha, 0.2);
  const c = v.applyEvent({ type: 'ack', seq: 4, commandId: 'c', command: { kind: 'freeze', unit: 1 }, status: 'applied', step: 10, time: 0 })!;
  assert.equal(c.units, true);
  assert.equal(v.unit(1)!.frozen, true);
  assert.equal(v.unit(1)!.kappa, 6, 'the measured values stay');
  v.applyEvent({ type: 'ack', seq: 5, commandId: 'd', command: { kind: 'unfreeze', unit: 2 }, status: 'applied', step: 10, time: 0 });
  assert.equal(v.unit(2)!.frozen, false);
  assert.deepEqual([...v.commands.values()].map((x) => [x.id, x.status]), [['a', 'rejected'], ['b', 'applied'], ['c', 'applied'], ['d', 'applied']]);
});

test('command lifecycle: sent → pending → outcome, never stepping back; an end fails what is outstanding', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  v.recordSent('x', { kind: 'pause' });
  v.applyFact({ type: 'command', status: { id: 'x', command: { kind: 'pause' }, status: 'pending' } });
  v.applyEvent({ type: 'ack', seq: 1, commandId: 'x', command: { kind: 'pause' }, status: 'applied', step: 3, time: 0 });
  v.applyFact({ type: 'command', status: { id: 'x', command: { kind: 'pause' }, status: 'pending' } });
  v.recordSent('x', { kind: 'pause' });
  assert.deepEqual(v.commands.get('x'), { id: 'x', command: { kind: 'pause' }, status: 'applied', step: 3 });
  v.applyFact({ type: 'command', status: { id: 'y', command: { kind: 'freeze', unit: 1 }, status: 'pending' } });
  assert.equal(v.unitCommandPending(1), true);
  assert.equal(v.unitCommandPending(0), false);
  const c = v.applyEvent({ type: 'state', seq: 2, state: 'stopped', step: 3, time: 0 })!;
  assert.deepEqual(c.commands.map((x) => [x.id, x.status, x.reason]), [['y', 'failed', 'run stopped']]);
  assert.equal(v.unitCommandPending(1), false);
  assert.equal(v.commands.get('x')!.status, 'applied', 'an outcome is final');
});

test('the command table is bounded: the oldest finished commands go first, an outstanding one never', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  v.applyFact({ type: 'command', status: { id: 'outstanding', command: { kind: 'pause' }, status: 'pending' } });
  for (let i = 0; i < 5 * MAX_COMMANDS_KEPT; i++) {
    v.applyEvent({ type: 'ack', seq: i + 1, commandId: `c${i}`, command: { kind: 'resume' }, status: 'rejected', reason: 'not paused', step: 0, time: 0 });
    assert.ok(v.commands.size <= MAX_COMMANDS_KEPT);
  }
  assert.equal(v.commands.get('outstanding')?.status, 'pending');
  assert.ok(v.commands.has(`c${5 * MAX_COMMANDS_KEPT - 1}`), 'the newest is kept');
  assert.ok(!v.commands.has('c0'));
});

test('controls follow the acknowledged state and the link', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  const on = () => Object.entries(v.controls()).filter(([, x]) => x).map(([k]) => k).join(' ');
  assert.equal(on(), '', 'no link, no state');
  v.applyFact({ type: 'connection', connected: true });
  assert.equal(on(), '', 'no state yet');
  let seq = 1;
  const table: [string, string][] = [
    ['starting', 'stop'],
    ['running', 'pause stop setAlpha unitToggle'],
    ['paused', 'resume stop setAlpha unitToggle'],
    ['completed', ''],
  ];
  for (const [state, want] of table) {
    v.applyEvent({ type: 'state', seq: seq++, state: state as 'running', step: 0, time: 0 });
    assert.equal(on(), want, state);
  }
  v.applyFact({ type: 'state', state: 'running' });
  v.applyFact({ type: 'connection', connected: false });
  assert.equal(on(), '', 'running but not connected');
});

test('a resume: the hello names the step it restarted from, and rewind folds the kept history again', () => {
  const v = new RunView();
  const kept: TrainerEvent[] = [hello(0), metrics(1, 5, [unit(0, 5), unit(1, 6), unit(2, 7)]), metrics(2, 10, [unit(0, 8), unit(1, 9), unit(2, 10)])];
  for (const e of kept) v.applyEvent(e);
  v.applyEvent({ type: 'state', seq: 3, state: 'failed', reason: 'killed', step: 10, time: 0 });
  const resumed = hello(4, { resumedFromStep: 5, alpha: 0.3 });
  const c = v.applyEvent(resumed)!;
  assert.equal(c.rewoundTo, 5);
  assert.equal(v.state, 'running');
  v.rewind([kept[0], kept[1], resumed]);
  assert.equal(v.step, 5);
  assert.equal(v.unit(0)!.kappa, 5, 'the measurement the resume restarted from');
  assert.equal(v.alpha, 0.3);
  assert.equal(v.lastSeq, 4, 'seqs are never reused');
});

/**
 * The host folds a run; its relay tells a panel model; both end with the same reading. Every
 * message the panel gets passes the host ⇄ webview schema, and no trainer event reaches it twice.
 */
test('host and panel: the same events and facts give the same reading, each event delivered once', () => {
  const session = new RunSession('r', '/runs/r', undefined);
  const model = new RunModel();
  const delivered: number[] = [];
  const relay = new PanelRelay((message: HostToWebview) => {
    const m = HostToWebviewSchema.parse(JSON.parse(JSON.stringify(message)));
    if (m.type === 'events') delivered.push(...m.events.map((e) => e.seq));
    model.apply(m);
  });
  relay.follow(session);
  relay.webviewReady();
  const events: TrainerEvent[] = [
    hello(0),
    { type: 'state', seq: 1, state: 'running', step: 0, time: 0 },
    metrics(2, 1),
    metrics(3, 2, [unit(0, 5), unit(1, 6), unit(2, 100, { frozen: true })]),
    { type: 'log', seq: 4, level: 'warn', message: 'head 2 at the damping floor', time: 0, topic: 'damping-floor/2' },
  ];
  for (const e of events) session.ingest(e);
  session.applyFact({ type: 'connection', connected: true });
  // A replay overlap after a reconnect: the host drops it, so the panel never sees it.
  for (const e of events.slice(2)) session.ingest(e);
  session.applyFact({ type: 'command', status: { id: 'f1', command: { kind: 'freeze', unit: 0 }, status: 'pending' } });
  session.ingest({ type: 'ack', seq: 5, commandId: 'f1', command: { kind: 'freeze', unit: 0 }, status: 'applied', step: 2, time: 0 });
  session.ingest({ type: 'ack', seq: 6, commandId: 'a1', command: { kind: 'setAlpha', alpha: 0.5 }, status: 'applied', step: 2, time: 0 });
  session.ingest(metrics(7, 3, undefined, { alpha: 0.5 }));
  // Still in the host's coalescing batch when the next fact comes: the fact must not overtake it.
  session.ingest({ type: 'state', seq: 8, state: 'paused', step: 3, time: 0 });
  session.applyFact({ type: 'command', status: { id: 'p1', command: { kind: 'pause' }, status: 'pending' } });
  // The trainer vanished: the host concludes the end, the panel is told the same.
  session.markEnded('failed', 'the trainer process exited unexpectedly');
  session.flush();
  const reading = (v: RunView) => ({
    state: v.state,
    reason: v.stateReason,
    step: v.step,
    alpha: v.alpha,
    connected: v.connected,
    units: v.units,
    problem: v.problem,
    commands: [...v.commands.values()],
    lastMonitorStep: v.lastMonitorStep,
    floor: v.units.map((u) => v.atDampingFloor(u)),
  });
  assert.deepEqual(reading(model.view), reading(session.view));
  assert.deepEqual(delivered, [0, 1, 2, 3, 4, 5, 6, 7, 8], 'each trainer event once, in order');
  assert.equal(session.view.state, 'failed');
  assert.equal(session.view.commands.get('p1')!.status, 'failed');
  assert.equal(session.view.unit(0)!.frozen, true);
  // A panel that loads later gets a snapshot and reads the same.
  const late = new RunModel();
  const relay2 = new PanelRelay((m) => late.apply(HostToWebviewSchema.parse(JSON.parse(JSON.stringify(m)))));
  relay2.follow(session);
  relay2.webviewReady();
  assert.deepEqual(reading(late.view), reading(session.view));
  relay.dispose();
  relay2.dispose();
  session.dispose();
});

test('the Freeze/Unfreeze prompt asks in the family\'s word and offers only the units the command applies to', () => {
  const v = new RunView();
  v.applyEvent(hello(0)); // a BERT run: heads, head 2 frozen from the config
  v.applyEvent(metrics(1, 10, [unit(0, 5), unit(1, 6, { pruned: true }), unit(2, 7, { frozen: true })]));
  assert.deepEqual(unitPrompt(v, 'freeze'), { title: 'Freeze which head?', items: [{ label: 'head 0', description: 'κ 5', value: 0 }] });
  assert.deepEqual(unitPrompt(v, 'unfreeze'), { title: 'Unfreeze which head?', items: [{ label: 'head 2', description: 'κ 7', value: 2 }] });
});

test('a unit with too few served examples has a null κ: it reads "not measurable" / "—", never a number, and is not at the floor', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  const silent: UnitStats = { id: 1, mu: null, lf: null, kappa: null, share: 0.001, served: 2, active: false, frozen: false, pruned: false };
  v.applyEvent(metrics(1, 10, [unit(0, 5, { share: 0.6, served: 16, active: true }), silent, unit(2, 1e9, { frozen: true, share: 0.399, served: 14, active: true })], { participation: 1.93 }));
  const u1 = v.unit(1)!;
  assert.equal(u1.kappa, null);
  assert.equal(formatNumber(u1.kappa), '—');
  assert.equal(v.atDampingFloor(u1), false, 'null is not at the floor');
  assert.equal(v.inactive(u1), true, 'flagged inactive by the trainer');
  assert.equal(v.inactive(v.unit(0)!), false);
  assert.deepEqual(unitPrompt(v, 'freeze').items.map((i) => i.description), ['κ 5', 'κ not measurable · inactive']);
  // The panel's series: a null measurement is a gap, not a point.
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: null, events: [hello(0), metrics(1, 10, [unit(0, 5), silent])], commands: [] });
  assert.equal(m.series.get('kappa:1'), undefined);
  assert.equal(m.seriesFor('kappa:0').raw.length, 1);
});

test('records without share/served/active (protocol 1, early protocol 2) read active, and parse', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  v.applyEvent(metrics(1, 10, [unit(0, 5), unit(1, 7)]));
  assert.equal(v.inactive(v.unit(0)!), false);
  const bad = HostToWebviewSchema.safeParse({ type: 'events', runId: 'r', events: [metrics(2, 20, [unit(0, 5, { share: 1.5 })])] });
  assert.ok(!bad.success, 'a share above 1 is refused');
});

test('a command the host never answered says so (still sent, with the reason), and a late answer still settles it once', () => {
  const v = new RunView();
  v.applyEvent(hello(0));
  v.recordSent('x', { kind: 'pause' });
  const c = v.recordUnanswered('x', 'the extension host has not received it');
  assert.deepEqual(c.commands.map((e) => [e.id, e.status, e.reason]), [['x', 'sent', 'the extension host has not received it']]);
  assert.equal(describeStatus(v.commands.get('x')!), 'sent, no answer yet: the extension host has not received it');
  // The link comes back: the host takes it, the trainer applies it; the note goes.
  v.applyFact({ type: 'command', status: { id: 'x', command: { kind: 'pause' }, status: 'pending' } });
  assert.equal(v.commands.get('x')!.reason, undefined);
  v.applyEvent({ type: 'ack', seq: 1, commandId: 'x', command: { kind: 'pause' }, status: 'applied', step: 3, time: 0 });
  // A late timer changes nothing once the host has answered.
  assert.equal(v.recordUnanswered('x', 'late').commands.length, 0);
  assert.deepEqual(v.commands.get('x'), { id: 'x', command: { kind: 'pause' }, status: 'applied', step: 3 });
});

test('formatShare: a routing share as a percentage that can be compared (closed forms)', async () => {
  const { formatShare } = await import('../../src/protocol');
  assert.equal(formatShare(0.3125), '31%');
  assert.equal(formatShare(0.1), '10%');
  assert.equal(formatShare(0.042), '4.2%');
  assert.equal(formatShare(0.0005), '0.05%');
  assert.equal(formatShare(0), '0%');
  assert.equal(formatShare(1), '100%');
});
