// The panel's DOM-free logic in Node: number formatting, EMA, the run model's message handling (over
// the shared reducer), α validation, persisted settings, CSV export and the HTML/CSP it is served in.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ALPHA_MAX, CommandIdSchema, backendLabel, describeCommand, describeStatus, formatNumber, newCommandId, type HostToWebview, type MetricsEvent, type RunState, type SteeringCommand } from '../../src/protocol';
import { CHART_CARDS, OPTIONAL_CHARTS, contentSecurityPolicy, renderPanelHtml } from '../../src/protocol/panelDocument';
import { parseAlphaInput } from '../../webview/commands';
import { toCsv, toJson } from '../../webview/export';
import { MASK_LEVEL, RunModel, decodeMaskLevel, extraSeriesKey, gateSeriesKey, maskSeriesKey, maskStatus } from '../../webview/runModel';
import { Ema, Series } from '../../webview/series';
import { defaultSettings, fromPersisted, toPersisted } from '../../webview/settings';
import { syntheticRun } from '../webview-harness/fixtures';

test('formatNumber: 4 significant digits in range, 3-digit exponent form outside', () => {
  const cases: [number, string][] = [
    [12.3449, '12.34'],
    [0, '0'],
    [0.05, '0.05'],
    [0.0005, '0.0005'],
    [1234.5, '1235'],
    [123456, '1.23e+5'],
    [0.0000123, '1.23e-5'],
    [-42.125, '-42.13'],
  ];
  for (const [x, want] of cases) assert.equal(formatNumber(x), want, String(x));
  // Whatever the magnitude, the text parses back within the stated precision.
  for (let e = -8; e <= 8; e += 0.37) {
    const x = 3.14159 * 10 ** e;
    assert.ok(Math.abs(Number(formatNumber(x)) - x) / x < 5e-3, `${x} → ${formatNumber(x)}`);
  }
});

test('describeStatus spells out each phase of a command; describeCommand and backendLabel read the same everywhere', () => {
  assert.equal(describeCommand({ kind: 'freeze', unit: 2 }, 'head'), 'Freeze head 2');
  assert.equal(describeCommand({ kind: 'unfreeze', unit: 0 }, 'channel group'), 'Unfreeze channel group 0');
  assert.equal(describeCommand({ kind: 'setAlpha', alpha: 0.00001 }, 'expert'), 'Set α = 1.00e-5');
  assert.equal(backendLabel({ name: 'wasm', gpu: false, detail: '' }), 'wasm · CPU');
  assert.equal(backendLabel({ name: 'tensorflow-gpu', gpu: true, detail: '' }), 'tensorflow-gpu · GPU');
  assert.equal(backendLabel({ name: 'pytorch', engine: 'pytorch', gpu: true, device: 'cuda:0 NVIDIA H200', detail: '' }), 'PyTorch · cuda:0 NVIDIA H200');
  assert.equal(backendLabel({ name: 'pytorch', engine: 'pytorch', gpu: false, detail: '' }), 'PyTorch · CPU', 'no device named: where the tensors live');
  assert.equal(describeStatus({ status: 'pending' }), 'pending');
  assert.equal(describeStatus({ status: 'applied', step: 12 }), 'applied at step 12');
  assert.equal(describeStatus({ status: 'rejected', reason: 'run is paused' }), 'rejected: run is paused');
  assert.equal(describeStatus({ status: 'failed', reason: 'not connected' }), 'failed: not connected');
});

test('Series: incremental EMA equals the closed form, history is capped, arrays keep their identity', () => {
  const w = 0.9;
  const s = new Series(w, 400);
  const raw = s.raw;
  const smoothed = s.smoothed;
  const ys: number[] = [];
  for (let i = 1; i <= 300; i++) {
    const y = Math.sin(i / 7) * 10 + i / 50;
    ys.push(y);
    s.append(i, y);
  }
  for (let n = 1; n <= ys.length; n++) {
    let sum = 0;
    for (let i = 1; i <= n; i++) sum += w ** (n - i) * (1 - w) * ys[i - 1];
    const reference = sum / (1 - w ** n);
    assert.ok(Math.abs(s.smoothed[n - 1].y - reference) <= 1e-12 * Math.max(1, Math.abs(reference)), `n=${n}`);
  }
  // Recomputing from scratch (a weight change and back) gives the same numbers.
  const before = s.smoothed.map((p) => p.y);
  s.setSmoothing(0);
  assert.deepEqual(s.smoothed.map((p) => p.y), ys);
  s.setSmoothing(w);
  assert.deepEqual(s.smoothed.map((p) => p.y), before);
  // A repeated step replaces its value; an older step is dropped.
  s.append(300, 1000);
  s.append(5, 1);
  assert.equal(s.raw.length, 300);
  assert.equal(s.last!.y, 1000);
  // Past the capacity the history halves, keeping the newest point and index alignment.
  for (let i = 301; i <= 1000; i++) s.append(i, Math.cos(i));
  assert.ok(s.raw.length <= 400 && s.raw.length >= 200, `length ${s.raw.length}`);
  assert.equal(s.thinned, true);
  assert.equal(s.last!.x, 1000);
  assert.deepEqual(s.raw.map((p) => p.x), s.smoothed.map((p) => p.x));
  assert.ok(s.raw === raw && s.smoothed === smoothed, 'charts hold these arrays');
  assert.equal(new Ema(0).next(7), 7);
});

test('Series.version changes with every change to the points (append, replacement, thinning, smoothing, clear), not on a refused append', () => {
  const s = new Series(0.5, 8);
  const seen = [s.version];
  const changed = (what: string) => {
    assert.notEqual(s.version, seen.at(-1), what);
    seen.push(s.version);
  };
  s.append(1, 1);
  changed('append');
  s.append(1, 2);
  changed('replacement of the last step');
  for (let x = 2; x <= 9; x++) s.append(x, x);
  changed('appends up to thinning');
  assert.equal(s.thinned, true);
  const before = s.version;
  s.append(3, 5); // behind the last step: refused
  assert.equal(s.version, before, 'a refused append changes nothing');
  assert.equal(s.last!.x, 9);
  s.setSmoothing(0.9);
  changed('smoothing');
  s.clear();
  changed('clear');
});

test('RunModel: snapshot, append without duplicates, other runs ignored', () => {
  const f = syntheticRun({ steps: 30 });
  const m = new RunModel();
  const d = m.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: f.commands });
  assert.ok(d.structure && d.charts);
  assert.equal(m.runId, f.runId);
  assert.equal(m.series.get('loss')!.raw.length, 30);
  assert.deepEqual(m.unitIds, [0, 1, 2, 3]);
  const more = f.more(10);
  m.apply({ type: 'events', runId: f.runId, events: [...f.events.slice(5, 15), ...more] });
  assert.equal(m.series.get('loss')!.raw.length, 40);
  assert.equal(m.view.step, 40);
  assert.equal(m.series.get('kappa:2')!.raw.length, 4);
  const ignored = m.apply({ type: 'events', runId: 'other', events: syntheticRun({ runId: 'other', steps: 80 }).events });
  assert.deepEqual(Object.values(ignored), [false, false, false, false, false]);
  assert.equal(m.view.step, 40);
  // A new snapshot replaces everything.
  m.apply({ type: 'snapshot', run: null, events: [], commands: [] });
  assert.equal(m.runId, undefined);
  assert.equal(m.series.size, 0);
  assert.equal(m.view.units.length, 0);
});

test('RunModel: α, frozen flags and command outcomes only change on acknowledgements, each arriving once as an event', () => {
  const f = syntheticRun({ steps: 20, alpha: 0.01 });
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: [] });
  assert.equal(m.view.alpha, 0.01);
  m.recordSent('c1', { kind: 'setAlpha', alpha: 0.3 });
  assert.equal(m.view.alpha, 0.01, 'sending is not applying');
  let seq = f.events.at(-1)!.seq;
  const ack = (commandId: string, command: SteeringCommand, status: 'applied' | 'rejected'): HostToWebview => ({
    type: 'events',
    runId: f.runId,
    events: [{ type: 'ack', seq: ++seq, commandId, command, status, step: 20, time: 0, ...(status === 'rejected' ? { reason: 'no' } : {}) }],
  });
  const pending = (id: string, command: SteeringCommand): HostToWebview => ({ type: 'fact', runId: f.runId, fact: { type: 'command', status: { id, command, status: 'pending' } } });
  m.apply(ack('c1', { kind: 'setAlpha', alpha: 0.3 }, 'rejected'));
  assert.equal(m.view.alpha, 0.01);
  assert.equal(m.view.commands.get('c1')!.status, 'rejected');
  m.apply(ack('c2', { kind: 'setAlpha', alpha: 0.2 }, 'applied'));
  assert.equal(m.view.alpha, 0.2);
  m.recordSent('c3', { kind: 'freeze', unit: 1 });
  assert.equal(m.view.unitCommandPending(1), true);
  assert.equal(m.view.unit(1)!.frozen, false);
  m.apply(pending('c3', { kind: 'freeze', unit: 1 }));
  m.apply(ack('c3', { kind: 'freeze', unit: 1 }, 'applied'));
  assert.equal(m.view.unit(1)!.frozen, true);
  assert.equal(m.view.unitCommandPending(1), false);
  // A stale pending after the outcome never steps back.
  m.apply(pending('c3', { kind: 'freeze', unit: 1 }));
  assert.equal(m.view.commands.get('c3')!.status, 'applied');
  // The same ack again (a replay's overlap) is a duplicate seq: nothing changes.
  const again = m.apply({ type: 'events', runId: f.runId, events: [{ type: 'ack', seq, commandId: 'c3', command: { kind: 'freeze', unit: 1 }, status: 'applied', step: 20, time: 0 }] });
  assert.deepEqual(Object.values(again), [false, false, false, false, false]);
  assert.deepEqual([...m.view.commands.keys()], ['c1', 'c2', 'c3']);
});

test('RunModel: controls follow the acknowledged run state and the connection', () => {
  const f = syntheticRun({ steps: 5 });
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: [] });
  const table: [RunState, boolean, string][] = [
    ['starting', true, 'stop'],
    ['running', true, 'pause stop setAlpha unitToggle'],
    ['paused', true, 'resume stop setAlpha unitToggle'],
    ['completed', true, ''],
    ['stopped', true, ''],
    ['failed', true, ''],
    ['running', false, ''],
  ];
  for (const [state, connected, enabled] of table) {
    m.apply({ type: 'fact', runId: f.runId, fact: { type: 'state', state } });
    m.apply({ type: 'fact', runId: f.runId, fact: { type: 'connection', connected } });
    const c = m.controls();
    const on = Object.entries(c).filter(([, v]) => v).map(([k]) => k).join(' ');
    assert.equal(on, enabled, `${state}, connected=${connected}`);
  }
});

test('α input: only finite numbers inside setAlpha\'s bounds, the config schema\'s too', () => {
  assert.deepEqual(parseAlphaInput(' 0.05 '), { ok: true, alpha: 0.05 });
  assert.deepEqual(parseAlphaInput('1e-3'), { ok: true, alpha: 0.001 });
  assert.deepEqual(parseAlphaInput('0'), { ok: true, alpha: 0 });
  assert.deepEqual(parseAlphaInput(String(ALPHA_MAX)), { ok: true, alpha: ALPHA_MAX });
  for (const bad of ['', '  ', '-0.1', 'NaN', 'Infinity', '0x10', '1,5', '1e7', 'abc', '.']) {
    const r = parseAlphaInput(bad);
    assert.equal(r.ok, false, bad);
  }
  const ids = new Set(Array.from({ length: 200 }, newCommandId));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.ok(CommandIdSchema.safeParse(id).success, id);
});

test('persisted settings: round trip, and each damaged field falls back on its own', () => {
  const s = { ...defaultSettings(), smoothing: 0.7, hidden: ['kappa:3'], expertMetric: 'lf' as const };
  s.logScale.loss = true;
  assert.deepEqual(fromPersisted(JSON.parse(JSON.stringify(toPersisted(s)))), s);
  assert.deepEqual(fromPersisted(undefined), defaultSettings());
  assert.deepEqual(fromPersisted('junk'), defaultSettings());
  const damaged = fromPersisted({ v: 1, smoothing: 5, logScale: { loss: true, metric: 'yes' }, hidden: 'x', expertMetric: 'mu' });
  assert.deepEqual(damaged, { smoothing: 0, logScale: { loss: true, metric: false, expert: true, pl: true, share: false, participation: false, alpha: false, mask: false, gate: false, extra: true }, hidden: [], expertMetric: 'mu' });
});

test('CSV export: one row per step, empty cells where experts were not measured', () => {
  const f = syntheticRun({ steps: 12, experts: 2, monitorEvery: 5 });
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: [] });
  const lines = toCsv(m).trimEnd().split('\n');
  assert.equal(lines[0], 'step,loss,taskLoss,accuracy,alpha,regularizer,stepsPerSec,plRatio,kappa_0,mu_0,lf_0,kappa_1,mu_1,lf_1');
  assert.equal(lines.length, 13);
  const metrics = f.events.filter((e): e is MetricsEvent => e.type === 'metrics');
  const row5 = lines[5].split(',');
  assert.equal(Number(row5[8]), metrics[4].units![0].kappa);
  assert.equal(lines[4].split(',')[8], '');
  assert.equal(lines[1].split(',')[7], '', 'no PL* ratio on the first step');
  assert.equal(Number(row5[7]), metrics[4].plRatio);
});

test('renderPanelHtml: strict CSP, nonce on the script, escaped values, the test ids the E2E tests use', () => {
  const html = renderPanelHtml({ cspSource: 'https://x.vscode-cdn.net', nonce: 'abc123==', scriptUri: 'https://x/main.js?a=1&b=2', styleUri: 'https://x/main.css', title: '<run> & "co"' });
  assert.equal(contentSecurityPolicy('https://x.vscode-cdn.net', 'abc123=='), "default-src 'none'; script-src 'nonce-abc123=='; style-src https://x.vscode-cdn.net 'nonce-abc123=='; img-src https://x.vscode-cdn.net data:; font-src https://x.vscode-cdn.net;");
  assert.ok(html.includes(`content="default-src 'none'; script-src 'nonce-abc123==';`));
  assert.ok(!/unsafe-inline|unsafe-eval|connect-src/.test(html));
  assert.ok(html.includes('<script nonce="abc123==" src="https://x/main.js?a=1&amp;b=2"></script>'));
  assert.ok(html.includes('<title>&lt;run&gt; &amp; &quot;co&quot;</title>'));
  assert.equal((html.match(/<script/g) ?? []).length, 1, 'one script, the nonced bundle');
  assert.ok(!/\sstyle=/.test(html), 'no inline style attributes (blocked by the CSP)');
  for (const id of ['run-state', 'backend', 'step', 'alpha', 'btn-pause', 'btn-resume', 'btn-stop', 'alpha-input', 'btn-set-alpha', 'command-log', 'chart-expert']) {
    assert.ok(html.includes(`data-testid="${id}"`), id);
  }
});

const metricsIn = (events: readonly { type: string }[]) => events.filter((e): e is MetricsEvent => e.type === 'metrics');

test('compare: the recorded run gets series of its own and never touches the current run', () => {
  const current = syntheticRun({ steps: 80, freezeAt: { step: 40, expert: 1 }, alphaChangeAt: 50, alphaChangeTo: 0.003 });
  const other = syntheticRun({ runId: 'baseline-run', steps: 120, seed: 99, alpha: 0.01, experts: 3 });
  const m = new RunModel(0.5);
  m.apply({ type: 'snapshot', run: current.summary, events: current.events, commands: current.commands });
  const now = new Date(0);
  const before = { csv: toCsv(m), json: toJson(m, now), alpha: m.view.alpha, state: m.view.state, step: m.view.step, runId: m.runId, units: JSON.stringify(m.view.units), keys: [...m.series.keys()] };

  const dirty = m.apply({ type: 'compare', run: { runId: other.runId, events: other.events } });
  assert.deepEqual(dirty, { header: true, charts: true, units: false, commands: false, structure: true });
  assert.equal(m.compare?.runId, 'baseline-run');
  const cm = m.compare!.model;
  assert.deepEqual(cm.seriesFor('loss').raw, metricsIn(other.events).map((e) => ({ x: e.step, y: e.loss })));
  assert.deepEqual(cm.unitIds, [0, 1, 2]);
  assert.equal(cm.seriesFor('loss').smoothing, 0.5, 'the overlay is smoothed like the current run');
  // The current run is exactly as before: exports, α, state, experts, the set of series.
  const after = { csv: toCsv(m), json: toJson(m, now), alpha: m.view.alpha, state: m.view.state, step: m.view.step, runId: m.runId, units: JSON.stringify(m.view.units), keys: [...m.series.keys()] };
  assert.deepEqual(after, before);
  assert.equal(m.view.alpha, 0.003);
  assert.ok(!toCsv(m).includes(String(metricsIn(other.events)[5].loss)), 'no overlay value in the CSV');

  m.setSmoothing(0.9);
  assert.equal(cm.seriesFor('loss').smoothing, 0.9);
  // A fresh snapshot of the current run (e.g. after the panel was hidden) keeps the overlay.
  m.apply({ type: 'snapshot', run: current.summary, events: current.events, commands: current.commands });
  assert.equal(m.compare?.runId, 'baseline-run');
  // Events for the current run do not feed the overlay.
  m.apply({ type: 'events', runId: current.runId, events: current.more(5) });
  assert.equal(cm.seriesFor('loss').raw.length, 120);
  assert.equal(m.seriesFor('loss').raw.length, 85);
  // null clears it; so does the local ✕ (clearCompare), which reports nothing to redo when there is nothing.
  assert.deepEqual(m.apply({ type: 'compare', run: null }), { header: true, charts: true, units: false, commands: false, structure: true });
  assert.equal(m.compare, null);
  m.apply({ type: 'compare', run: { runId: other.runId, events: other.events } });
  assert.equal(m.clearCompare().structure, true);
  assert.equal(m.compare, null);
  assert.equal(m.clearCompare().structure, false);
});

test('mask series: one point per monitor step and expert, at exactly the status the event reports', () => {
  // All kept (what the trainer reports today): every point at its lane's top level.
  const allKept = syntheticRun({ steps: 60, experts: 3, monitorEvery: 10 });
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: allKept.summary, events: allKept.events, commands: [] });
  for (const id of [0, 1, 2]) {
    assert.deepEqual(m.seriesFor(maskSeriesKey(id)).raw, [10, 20, 30, 40, 50, 60].map((x) => ({ x, y: id + MASK_LEVEL.trainable })));
  }
  // Pruned on hand-picked (step, expert) pairs only, plus a freeze: the series must reflect exactly those.
  const f = syntheticRun({ steps: 100, experts: 4, monitorEvery: 10, freezeAt: { step: 35, expert: 3 } });
  const prunedAt = new Set(['20:1', '30:1', '90:1', '50:2', '100:0']);
  for (const e of metricsIn(f.events)) for (const x of e.units ?? []) x.pruned = prunedAt.has(`${e.step}:${x.id}`);
  const model = new RunModel();
  model.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: f.commands });
  for (const id of [0, 1, 2, 3]) {
    const points = model.seriesFor(maskSeriesKey(id)).raw;
    assert.deepEqual(points.map((p) => p.x), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    for (const p of points) {
      const want = prunedAt.has(`${p.x}:${id}`) ? 'pruned' : id === 3 && p.x > 35 ? 'frozen' : 'trainable';
      assert.deepEqual(decodeMaskLevel(p.y), { unit: id, status: want }, `unit ${id} at step ${p.x}`);
    }
  }
  assert.equal(maskStatus({ frozen: true, pruned: true }), 'pruned', 'pruning wins over freezing');
  assert.equal(decodeMaskLevel(2.5), undefined);
  // The mask is not a measurement: exports keep their columns.
  assert.ok(!toCsv(model).split('\n')[0].includes('mask'));
});

test('persisted settings from before the mask, gate, diagnostics, share and participation charts keep their values and get their defaults', () => {
  const old = { v: 1, smoothing: 0.3, logScale: { loss: true, metric: true, expert: false, pl: true, alpha: true }, hidden: ['loss'], expertMetric: 'lf' };
  assert.deepEqual(fromPersisted(old), { smoothing: 0.3, logScale: { loss: true, metric: true, expert: false, pl: true, share: false, participation: false, alpha: true, mask: false, gate: false, extra: true }, hidden: ['loss'], expertMetric: 'lf' });
  assert.equal(defaultSettings().logScale.mask, false);
  // Diagnostics mix magnitudes (an energy near 1, an orthogonality error near 1e-7): they start logarithmic.
  assert.equal(defaultSettings().logScale.extra, true);
});

test('renderPanelHtml: the mask card, a zoom reset per chart, the compare chip', () => {
  const html = renderPanelHtml({ cspSource: 'https://x', nonce: 'n', scriptUri: 'https://x/m.js', styleUri: 'https://x/m.css', title: 't' });
  assert.ok(CHART_CARDS.some((c) => c.id === 'mask'));
  for (const card of CHART_CARDS) {
    assert.ok(html.includes(`data-testid="chart-${card.id}"`), card.id);
    assert.match(html, new RegExp(`data-testid="zoom-reset-${card.id}"[^>]*hidden>Reset zoom`));
    // Lanes (mask), shares (0…1) and the participation ratio (1…units) have fixed ranges: no log toggle.
    assert.equal(html.includes(`data-testid="log-${card.id}"`), !['mask', 'share', 'participation'].includes(card.id), `log toggle of ${card.id}`);
  }
  assert.match(html, /data-testid="compare" hidden>comparing with <span[^>]*data-testid="compare-label"><\/span><button[^>]*data-testid="compare-range"[^>]*hidden>all steps<\/button><button[^>]*data-testid="compare-clear"/);
});

test('pruning gate and model diagnostics: series per unit and per name, in the CSV and JSON exports; absent for runs without them', () => {
  const f = syntheticRun({ steps: 30, experts: 2, monitorEvery: 10 });
  // What a pruning run under OPT streams on monitor steps: keep-probabilities and diagnostics by name.
  const gateAt = (step: number) => [1 - step / 100, step / 100];
  const extraAt = (step: number) => ({ 'energy/expert0': 3 + step / 1000, 'orthogonality/expert0': 1e-7 * step, 'load,odd "name"': 0.5 });
  const events = f.events.map((e) => (e.type === 'metrics' && e.units ? { ...e, gate: gateAt(e.step), extra: extraAt(e.step) } : e));
  const m = new RunModel();
  const dirty = m.apply({ type: 'snapshot', run: f.summary, events, commands: [] });
  assert.ok(dirty.structure, 'new series: the charts rebuild their lines');
  assert.equal(m.gateUnits, 2);
  assert.deepEqual(m.extraNames, ['energy/expert0', 'orthogonality/expert0', 'load,odd "name"']);
  assert.deepEqual(m.seriesFor(gateSeriesKey(1)).raw, [10, 20, 30].map((x) => ({ x, y: gateAt(x)[1] })));
  assert.deepEqual(m.seriesFor(extraSeriesKey('orthogonality/expert0')).raw, [10, 20, 30].map((x) => ({ x, y: 1e-7 * x })));

  const lines = toCsv(m).trimEnd().split('\n');
  assert.ok(lines[0].endsWith(',lf_1,gate_0,gate_1,energy/expert0,orthogonality/expert0,"load,odd ""name"""'), lines[0]);
  const row20 = lines[20].split(',');
  assert.equal(Number(row20[14]), gateAt(20)[0]);
  assert.equal(Number(row20[16]), 3.02);
  assert.equal(lines[19].split(',')[14], '', 'no gate value between monitor steps');
  const json = JSON.parse(toJson(m));
  assert.deepEqual(json.gate['0'], [10, 20, 30].map((x) => [x, gateAt(x)[0]]));
  assert.deepEqual(json.extra['energy/expert0'], [10, 20, 30].map((x) => [x, 3 + x / 1000]));

  // A run without them: no columns, no keys, and the charts that would show them are optional.
  const plain = new RunModel();
  plain.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: [] });
  assert.equal(plain.gateUnits, 0);
  assert.deepEqual(plain.extraNames, []);
  assert.ok(!toCsv(plain).split('\n')[0].includes('gate'));
  assert.ok(!('gate' in JSON.parse(toJson(plain))) && !('extra' in JSON.parse(toJson(plain))));
  assert.deepEqual([...OPTIONAL_CHARTS], ['gate', 'extra', 'share', 'participation']);
  assert.ok(OPTIONAL_CHARTS.every((id) => CHART_CARDS.some((c) => c.id === id)));
  // Switching the model to the plain run forgets the other run's gate and diagnostics.
  m.apply({ type: 'snapshot', run: { ...f.summary, runId: 'other' }, events: f.events, commands: [] });
  assert.equal(m.gateUnits, 0);
  assert.deepEqual(m.extraNames, []);
});

test('RunModel: a warning stays until a later message on its topic ends it; other messages leave it', () => {
  const f = syntheticRun({ steps: 20 });
  const m = new RunModel();
  m.apply({ type: 'snapshot', run: f.summary, events: f.events, commands: f.commands });
  let seq = f.events.at(-1)!.seq;
  const log = (level: 'info' | 'warn' | 'error', message: string, topic?: string) =>
    m.apply({ type: 'events', runId: f.runId, events: [{ type: 'log', seq: ++seq, level, message, time: 0, ...(topic ? { topic } : {}) }] });
  log('warn', 'expert 2 at the damping floor', 'damping-floor/2');
  assert.deepEqual(m.view.problem, { level: 'warn', message: 'expert 2 at the damping floor', topic: 'damping-floor/2' });
  log('info', 'expert 1 off the damping floor', 'damping-floor/1');
  log('info', 'a message without a topic');
  assert.equal(m.view.problem?.topic, 'damping-floor/2', 'other topics and plain info leave it');
  const d = log('info', 'expert 2 off the damping floor', 'damping-floor/2');
  const problem = () => m.view.problem; // read afresh (an assertion would narrow the field for good)
  assert.equal(problem(), undefined);
  assert.equal(d.header, true, 'the header redraws');
  log('error', 'something without a topic');
  log('info', 'unrelated', 'damping-floor/2');
  assert.equal(problem()?.message, 'something without a topic', 'a problem without a topic is never ended by one');
});
