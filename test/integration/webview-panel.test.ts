// The metrics panel in real headless Chromium, under the real CSP from renderPanelHtml: messages in,
// DOM and chart.js state out, commands posted back, settings persisted, exports downloaded.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { WebviewToHostSchema, type HostToWebview, type MetricsEvent, type TrainerEvent, type WebviewToHost } from '../../src/protocol';
import { formatNumber } from '../../src/protocol';
import { MAX_POINTS_PER_SERIES } from '../../webview/series';
import { syntheticRun, type Fixture } from '../webview-harness/fixtures';
import { buildWebview, startHarnessServer, type HarnessServer } from '../webview-harness/server';

const root = path.resolve(__dirname, '..', '..');
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser: Browser;
let server: HarnessServer;
let buildDir: string;
const openPages: Panel[] = [];

before(async () => {
  buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-webview-'));
  await buildWebview(buildDir);
  server = await startHarnessServer(buildDir);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
});

// Every test must leave a clean console: no CSP violation, no page error, no error/warning logged
// (besides the ones a test provokes on purpose and declares in `expectedWarnings`).
afterEach(async () => {
  for (const p of openPages.splice(0)) {
    const violations = await p.page.evaluate(() => (window as unknown as { __cspViolations: unknown[] }).__cspViolations);
    assert.deepEqual(violations, [], 'securitypolicyviolation events');
    assert.deepEqual(p.errors, [], 'uncaught page errors');
    const noisy = p.console.filter((m) => (m.type === 'error' || m.type === 'warning') && !p.expectedWarnings.some((re) => re.test(m.text)));
    assert.deepEqual(noisy, [], 'console errors/warnings');
    assert.ok(!p.console.some((m) => /Content Security Policy|Refused to/i.test(m.text)), 'CSP messages in the console');
    await p.page.close();
  }
});

interface Panel {
  page: Page;
  console: { type: string; text: string }[];
  errors: string[];
  expectedWarnings: RegExp[];
  send(message: HostToWebview | Record<string, unknown>): Promise<void>;
  posted(): Promise<WebviewToHost[]>;
  byTestId(id: string): Locator;
}

async function openPanel(page?: Page): Promise<Panel> {
  page ??= await browser.newPage({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const panel: Panel = {
    page,
    console: [],
    errors: [],
    expectedWarnings: [],
    // VS Code delivers host messages as `message` events on the webview's window; so does this.
    send: (message) => page.evaluate((m) => window.postMessage(m, '*'), message as unknown as Record<string, unknown>),
    posted: () => page.evaluate(() => (window as unknown as { __posted: WebviewToHost[] }).__posted),
    byTestId: (id) => page.getByTestId(id),
  };
  page.on('console', (m) => panel.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => panel.errors.push(e.message));
  openPages.push(panel);
  await page.goto(server.url);
  await waitForReady(page);
  return panel;
}

async function waitForReady(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as unknown as { __posted?: { type: string }[] }).__posted?.some((m) => m.type === 'ready'), undefined, { timeout: 10_000 });
}

/** Polls a locator's text until `want` holds; then asserts (so a failure shows the last text). */
async function expectText(locator: Locator, want: string | RegExp, timeoutMs = 5000): Promise<string> {
  const ok = (t: string) => (typeof want === 'string' ? t === want : want.test(t));
  const t0 = Date.now();
  let text = '';
  for (;;) {
    text = ((await locator.textContent({ timeout: timeoutMs })) ?? '').trim();
    if (ok(text) || Date.now() - t0 > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (typeof want === 'string') assert.equal(text, want);
  else assert.match(text, want);
  return text;
}

async function expectAttr(locator: Locator, name: string, want: string | null, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  let value: string | null = null;
  for (;;) {
    value = await locator.getAttribute(name);
    if (value === want || Date.now() - t0 > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.equal(value, want, `${name} attribute`);
}

/** Resolves after the panel's next render (it draws on animation frames). */
function nextFrames(page: Page): Promise<void> {
  return page.evaluate(() => new Promise<void>((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
}

function snapshotOf(f: Fixture): HostToWebview {
  return { type: 'snapshot', run: f.summary, events: f.events, commands: f.commands };
}

const metricsOf = (events: readonly TrainerEvent[]) => events.filter((e): e is MetricsEvent => e.type === 'metrics');
const lastExperts = (events: readonly TrainerEvent[]) => metricsOf(events).filter((m) => m.units).at(-1)!.units!;

interface ChartInfo {
  optionType: string;
  builtType: string;
  datasets: { key: string; role: string; hidden: boolean; label: string; length: number; decimated: boolean }[];
}

/** Reads a chart's state through the harness-only debug hook. */
function chartInfo(page: Page, id: string): Promise<ChartInfo> {
  return page.evaluate((chartId) => {
    const dbg = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer;
    const chart = dbg.charts[chartId].chart;
    return {
      optionType: chart.options.scales.y.type as string,
      builtType: chart.scales.y.type as string,
      datasets: chart.data.datasets.map((d: any) => ({ key: d.seriesKey, role: d.role, hidden: !!d.hidden, label: d.label, length: (d._data ?? d.data).length, decimated: !!d._decimated })),
    };
  }, id);
}

test('the panel says ready on load, and its Lit elements render under the strict CSP', async () => {
  const p = await openPanel();
  const posted = await p.posted();
  assert.deepEqual(posted, [{ type: 'ready' }]);
  assert.ok(WebviewToHostSchema.safeParse(posted[0]).success);
  const csp = await p.page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
  assert.ok(csp && !csp.includes('unsafe-inline') && !csp.includes('unsafe-eval') && !csp.includes('connect-src'), csp ?? '');
  // Lit styles arrive as constructed stylesheets; if the CSP blocked them the button would be unstyled.
  const button = await p.page.evaluate(() => {
    const el = document.querySelector('[data-testid="btn-set-alpha"]')!;
    const base = el.shadowRoot?.querySelector('.base');
    return { defined: !!customElements.get('vscode-button'), sheets: el.shadowRoot?.adoptedStyleSheets.length ?? 0, background: base ? getComputedStyle(base).backgroundColor : '' };
  });
  assert.equal(button.defined, true);
  assert.ok(button.sheets > 0, 'adopted stylesheets');
  assert.equal(button.background, 'rgb(0, 120, 212)', 'themed from --vscode-button-background');
  // Our own stylesheet loaded from cspSource applies too.
  const bodyBackground = await p.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bodyBackground, 'rgb(31, 31, 31)');
});

test('a snapshot renders the header, the expert table and κ exactly as in the data', async () => {
  const p = await openPanel();
  const f = syntheticRun({ alphaChangeAt: 150, alphaChangeTo: 0.0005, freezeAt: { step: 200, expert: 2 }, pruneAt: { step: 220, expert: 3 } });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('run-state'), 'running');
  await expectText(p.byTestId('run-id'), f.runId);
  await expectText(p.byTestId('backend'), 'wasm · CPU');
  await expectText(p.byTestId('step'), `240 / 300`);
  await expectText(p.byTestId('connection'), 'connected');
  // α: the acknowledged value (the applied setAlpha), as the latest metrics report it.
  assert.equal(metricsOf(f.events).at(-1)!.alpha, 0.0005);
  await expectText(p.byTestId('alpha'), '0.0005');
  const experts = lastExperts(f.events);
  assert.equal(experts.length, 4);
  for (const e of experts) {
    const text = await expectText(p.byTestId(`kappa-${e.id}`), formatNumber(e.kappa));
    assert.ok(Math.abs(Number(text) - e.kappa!) / e.kappa! < 5e-3, `κ ${text} vs ${e.kappa}`);
    await expectText(p.byTestId(`mu-${e.id}`), formatNumber(e.mu));
    await expectText(p.byTestId(`lf-${e.id}`), formatNumber(e.lf));
    await expectText(p.byTestId(`frozen-${e.id}`), e.frozen ? 'yes' : 'no');
    await expectText(p.byTestId(`pruned-${e.id}`), e.pruned ? 'yes' : 'no');
  }
  await expectText(p.byTestId('frozen-2'), 'yes');
  await expectText(p.byTestId('freeze-2'), 'Unfreeze');
  await expectText(p.byTestId('freeze-0'), 'Freeze');
  await expectAttr(p.byTestId('freeze-3'), 'aria-disabled', 'true'); // pruned
  // The snapshot's command history is listed with its outcomes.
  for (const c of f.commands) await expectText(p.byTestId(`command-${c.id}`), new RegExp(`applied at step ${c.step}$`));
  // Controls follow the acknowledged state: running ⇒ Pause and Stop, not Resume.
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'false');
  await expectAttr(p.byTestId('btn-stop'), 'aria-disabled', 'false');
  await expectAttr(p.byTestId('btn-resume'), 'aria-disabled', 'true');
});

test('a narrow panel (900 px window, sidebar open): every Freeze button in view without sideways scrolling, frozen said next to the name', async () => {
  const page = await browser.newPage({ viewport: { width: 540, height: 900 } });
  const p = await openPanel(page);
  // The widest name cell a run gives: expert 3 starved (the "inactive" badge) and frozen (the word, and
  // the wider Unfreeze button), as the VS Code UI run hit once.
  const f = syntheticRun({ freezeAt: { step: 200, expert: 3 }, pruneAt: { step: 220, expert: 2 }, shares: true });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('freeze-3'), 'Unfreeze');
  assert.equal(await p.byTestId('inactive-3').isVisible(), true, 'expert 3 is badged inactive');
  // A string, not a function: the test transpiler would name the inner arrows with a helper the page lacks.
  const layout = (await page.evaluate(`(() => {
    const wrap = document.querySelector('.table-wrap');
    const shown = (id) => getComputedStyle(document.querySelector('[data-testid="' + id + '"]')).display !== 'none';
    return {
      scroll: wrap.scrollWidth - wrap.clientWidth,
      right: wrap.getBoundingClientRect().right,
      buttons: [...document.querySelectorAll('[data-testid^="freeze-"]')].map((b) => ({ id: b.dataset.testid, right: b.getBoundingClientRect().right, width: b.getBoundingClientRect().width })),
      frozenColumn: shown('frozen-3'),
      flags: [0, 1, 2, 3].map((i) => (shown('flags-' + i) ? document.querySelector('[data-testid="flags-' + i + '"]').textContent : null)),
    };
  })()`)) as { scroll: number; right: number; buttons: { id: string; right: number; width: number }[]; frozenColumn: boolean; flags: (string | null)[] };
  assert.equal(layout.scroll, 0, 'no sideways scrolling');
  assert.equal(layout.buttons.length, 4);
  for (const b of layout.buttons) {
    assert.ok(b.right <= layout.right + 0.5, `${b.id} ends at ${b.right}, the table at ${layout.right}`);
    assert.ok(b.width > 30, `${b.id} is ${b.width}px wide`);
  }
  assert.equal(layout.frozenColumn, false, 'the Frozen column gives way');
  assert.deepEqual(layout.flags, ['', '', 'pruned', 'frozen']);
  // Wide: the columns are back and the words next to the names are not shown.
  await page.setViewportSize({ width: 1400, height: 900 });
  await expectText(p.byTestId('frozen-3'), 'yes');
  assert.equal(await p.byTestId('flags-3').isVisible(), false);
  assert.equal(await p.byTestId('frozen-3').isVisible(), true);
});

test('before the first measurement the per-unit chart says when it comes; no mask card without pruning; a constant α is drawn from 0', async () => {
  const p = await openPanel();
  const early = syntheticRun({ steps: 5, monitorEvery: 25, pruning: false, alpha: 0.01 });
  await p.send(snapshotOf(early));
  await expectText(p.byTestId('step'), '5 / 300');
  await nextFrames(p.page);
  await expectText(p.byTestId('empty-expert'), 'First measurement at step 25');
  assert.equal(await p.byTestId('empty-loss').isVisible(), false, 'the loss chart has data');
  assert.equal(await p.page.locator('section[data-chart="mask"]').isVisible(), false, 'pruning is off: no mask card');
  const alphaAxis = (await p.page.evaluate(`(() => { const y = window.__plTrainer.charts.alpha.chart.scales.y; return { min: y.min, max: y.max }; })()`)) as { min: number; max: number };
  assert.equal(alphaAxis.min, 0, 'α from 0');
  assert.ok(alphaAxis.max >= 0.01, `α = 0.01 within the axis (max ${alphaAxis.max})`);
  // Once measured the chart draws; a run with pruning has its mask card.
  const later = syntheticRun({ steps: 60, monitorEvery: 25, pruning: true });
  await p.send(snapshotOf(later));
  await expectText(p.byTestId('step'), '60 / 300');
  await nextFrames(p.page);
  assert.equal(await p.byTestId('empty-expert').isVisible(), false);
  assert.equal(await p.page.locator('section[data-chart="mask"]').isVisible(), true);
});

test('routing: one share line per unit (0…1) and the participation ratio (1…units), exactly as reported; the starved unit is flagged inactive; no cards for runs without shares', async () => {
  const p = await openPanel();
  const plain = syntheticRun({ steps: 40 });
  await p.send(snapshotOf(plain));
  await expectText(p.byTestId('step'), '40 / 300');
  await nextFrames(p.page);
  for (const id of ['share', 'participation']) assert.equal(await p.page.locator(`section[data-chart="${id}"]`).isVisible(), false, `${id}: no card without data`);
  const f = syntheticRun({ steps: 60, shares: true });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '60 / 300');
  await nextFrames(p.page);
  const monitored = metricsOf(f.events).filter((m) => m.units);
  const share = await datasetsOf(p.page, 'share');
  assert.deepEqual(share.map((d) => d.key), ['share:0', 'share:1', 'share:2', 'share:3']);
  for (const [i, d] of share.entries()) assert.deepEqual(d.data, monitored.map((m) => ({ x: m.step, y: m.units![i].share! })), `share of expert ${i}`);
  // Closed form at one step: the participation ratio 1/Σ share² of that step's shares.
  const last = monitored.at(-1)!;
  const ratio = 1 / last.units!.reduce((a, u) => a + u.share! ** 2, 0);
  const participation = await datasetsOf(p.page, 'participation');
  assert.equal(participation.length, 1);
  assert.ok(Math.abs(participation[0].data.at(-1)!.y - ratio) < 1e-12, `${participation[0].data.at(-1)!.y} vs ${ratio}`);
  assert.ok(ratio > 1 && ratio < 4);
  const axes = (await p.page.evaluate(`(() => { const c = window.__plTrainer.charts; return [c.share.chart.scales.y.min, c.share.chart.scales.y.max, c.participation.chart.scales.y.min, c.participation.chart.scales.y.max]; })()`)) as number[];
  assert.deepEqual(axes, [0, 1, 1, 4]);
  assert.equal(last.units![3].active, false, 'the fixture starves expert 3');
  assert.equal(await p.byTestId('inactive-3').isVisible(), true);
  assert.equal(await p.byTestId('inactive-0').isVisible(), false);
});

test('when α·κ̄ dwarfs the task loss, the task loss is drawn against its own axis; otherwise both share one', async () => {
  const p = await openPanel();
  const axisOf = async () => (await p.page.evaluate(`(() => { const c = window.__plTrainer.charts.loss.chart; return { ids: c.data.datasets.map((d) => d.seriesKey + ':' + d.yAxisID), right: c.scales.y1 ? [c.scales.y1.min, c.scales.y1.max] : null, left: [c.scales.y.min, c.scales.y.max] }; })()`)) as { ids: string[]; right: number[] | null; left: number[] };
  const close = syntheticRun({ steps: 200, alpha: 0.00001 });
  const last = metricsOf(close.events).at(-1)!;
  assert.ok(last.loss < 3 * last.taskLoss, `fixture: loss ${last.loss}, task loss ${last.taskLoss}`);
  await p.send(snapshotOf(close));
  await expectText(p.byTestId('step'), '200 / 300');
  await nextFrames(p.page);
  assert.deepEqual((await axisOf()).ids, ['loss:y', 'taskLoss:y']);
  const dwarfed = syntheticRun({ steps: 200, alpha: 0.5 });
  const end = metricsOf(dwarfed.events).at(-1)!;
  assert.ok(end.loss > 3 * end.taskLoss, `fixture: loss ${end.loss}, task loss ${end.taskLoss}`);
  await p.send(snapshotOf(dwarfed));
  await nextFrames(p.page);
  await nextFrames(p.page);
  const split = await axisOf();
  assert.deepEqual(split.ids, ['loss:y', 'taskLoss:y1']);
  // The right axis spans the task loss, not the loss: its top is below the smallest loss.
  const taskMax = Math.max(...metricsOf(dwarfed.events).map((m) => m.taskLoss));
  const lossMin = Math.min(...metricsOf(dwarfed.events).map((m) => m.loss));
  assert.ok(split.right && split.right[1] >= taskMax && split.right[1] < lossMin, `right axis ${split.right}, task loss ≤ ${taskMax}, loss ≥ ${lossMin}`);
});

test('a κ at the run\'s damping floor (λ_min ≤ δ·λ_max, κ ≥ 1/(2δ)) is marked, with the reason; κ below it is not; a null κ reads "—" with why, and an inactive unit is badged', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  const hello = f.events[0] as Extract<TrainerEvent, { type: 'hello' }>;
  hello.config = { ...hello.config, monitor: { damping: 1e-5 } }; // floor 1/(2δ) = 5e4, above the fixture's κ
  const last = lastExperts(f.events);
  Object.assign(last[1], { kappa: 1e5, mu: 0 }); // singular: exactly 1/δ
  Object.assign(last[2], { kappa: 0.99 * 5e4 }); // conditioned badly, but the damping does not dominate
  Object.assign(last[3], { kappa: null, mu: null, lf: null, served: 2, share: 0.001, active: false }); // an unused unit
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-1'), formatNumber(1e5));
  await expectAttr(p.byTestId('kappa-1'), 'data-floor', 'true');
  assert.match((await p.byTestId('kappa-1').getAttribute('title')) ?? '', /damping floor 1\/δ = .*singular.*freeze or prune/);
  assert.ok(last[0].kappa! < 5e4, 'expert 0 is below the floor');
  for (const id of [0, 2]) {
    await expectAttr(p.byTestId(`kappa-${id}`), 'data-floor', 'false');
    assert.equal(await p.byTestId(`kappa-${id}`).getAttribute('title'), '');
  }
  await expectText(p.byTestId('kappa-3'), '—');
  await expectAttr(p.byTestId('kappa-3'), 'data-floor', 'false');
  assert.match((await p.byTestId('kappa-3').getAttribute('title')) ?? '', /not measurable: this expert serves 2 probe example\(s\), fewer than 4/);
  assert.equal(await p.byTestId('inactive-3').isVisible(), true, 'the inactive badge shows');
  assert.equal(await p.byTestId('inactive-0').isVisible(), false);
  await expectAttr(p.byTestId('expert-3'), 'data-inactive', 'true');
});

test('units are named by family, from the hello: a BERT run says "head" in the table, the charts, the mask lanes and the command log', async () => {
  const p = await openPanel();
  // Before the first measurement the heads are listed from the hello, their values "—", never NaN.
  await p.send(snapshotOf(syntheticRun({ steps: 5, experts: 3, unitName: 'head' })));
  await expectText(p.byTestId('units-title'), 'Heads');
  await expectText(p.byTestId('unit-column'), 'Head');
  await expectText(p.byTestId('expert-name-2'), 'Head 2');
  for (const id of ['kappa-2', 'mu-2', 'lf-2']) await expectText(p.byTestId(id), '—');
  await expectText(p.byTestId('experts-measured'), 'not measured yet');
  const f = syntheticRun({ steps: 60, experts: 3, unitName: 'head', freezeAt: { step: 40, expert: 1 } });
  const last = lastExperts(f.events);
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('expert-name-0'), 'Head 0');
  assert.equal(await p.page.locator('#title-expert').textContent(), 'Per head');
  await expectText(p.byTestId('kappa-1'), formatNumber(last[1].kappa));
  await expectText(p.byTestId(`command-${f.commands[0].id}`), /^Freeze head 1.*applied at step 40$/);
  await nextFrames(p.page);
  assert.deepEqual((await chartInfo(p.page, 'expert')).datasets.map((d) => d.label), ['κ head 0', 'κ head 1', 'κ head 2']);
  const mask = await p.page.evaluate(() => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.mask.chart;
    return { labels: chart.data.datasets.map((d: any) => d.label), ticks: chart.scales.y.ticks.map((t: any) => t.label) };
  });
  assert.deepEqual(mask, { labels: ['head 0', 'head 1', 'head 2'], ticks: ['head 0', 'head 1', 'head 2'] });
  // A pruned head's toggle explains itself in the family's word.
  const pruned = syntheticRun({ steps: 30, experts: 2, unitName: 'channel group', pruneAt: { step: 5, expert: 1 } });
  await p.send(snapshotOf(pruned));
  await expectText(p.byTestId('units-title'), 'Channel groups');
  assert.equal(await p.byTestId('freeze-1').getAttribute('title'), 'Pruned channel groups cannot be frozen or unfrozen');
});

test('a long trainer warning shows on one line with the whole text as its tooltip: the panel below moves by that line at most', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-0'), /\d/);
  const before = await p.byTestId('expert-rows').boundingBox();
  const message = `expert 2 at step 240: λ_min ≤ δ·λ_max on the probe (μ 0.00, L_f 7.26), so κ sits at the damping floor 1/δ = 1.00e+6; ${'the regularizer passes it no gradient. '.repeat(8)}`;
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'log', seq: f.events.at(-1)!.seq + 1, level: 'warn', message, time: 0 }] });
  await expectText(p.byTestId('run-message'), /^expert 2 at step 240: /);
  assert.equal(await p.byTestId('run-message').getAttribute('title'), message);
  const box = await p.byTestId('run-message-box').boundingBox();
  const lineHeight = await p.byTestId('run-message').evaluate((el) => parseFloat(getComputedStyle(el).lineHeight) || 1.4 * parseFloat(getComputedStyle(el).fontSize));
  assert.ok(box && box.height <= lineHeight + 16, `one line: ${box?.height} px for a line of ${lineHeight} px`);
  const after = await p.byTestId('expert-rows').boundingBox();
  assert.ok(before && after && Math.abs(after.y - before.y) <= box!.height + 16, `the table moved by ${after!.y - before!.y} px`);
});

test('a damping-floor warning: More shows the whole text, its remedy is a button that freezes that unit, and the banner goes once it is frozen', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 60 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-0'), /\d/);
  const message = `expert 2 at step 60: λ_min ≤ δ·λ_max on the probe (μ 0.00, L_f 7.26), so κ sits at the damping floor 1/δ = 1.00e+6; the regularizer passes it no gradient. Usually an expert the gate abandoned: freeze or prune it to take it out of the regularizer.`;
  let seq = f.events.at(-1)!.seq + 1;
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'log', seq: seq++, level: 'warn', message, time: 0, topic: 'damping-floor/2' }] });
  await expectText(p.byTestId('run-message'), /^expert 2 at step 60: /);
  await expectText(p.byTestId('run-message-remedy'), 'Freeze expert 2');
  const oneLine = (await p.byTestId('run-message').boundingBox())!.height;
  await expectText(p.byTestId('run-message-more'), 'More');
  await p.byTestId('run-message-more').click();
  await expectText(p.byTestId('run-message-more'), 'Less');
  const whole = (await p.byTestId('run-message').boundingBox())!.height;
  assert.ok(whole > oneLine * 1.5, `the whole text: ${whole} px against one line of ${oneLine} px`);
  await p.byTestId('run-message-remedy').click();
  const cmd = WebviewToHostSchema.parse((await p.posted()).at(-1));
  assert.ok(cmd.type === 'command');
  assert.deepEqual(cmd.command, { kind: 'freeze', unit: 2 });
  await expectAttr(p.byTestId('run-message-remedy'), 'aria-disabled', 'true');
  // The trainer acknowledges, and says on the same topic that the unit left the floor's concern.
  await p.send({ type: 'events', runId: f.runId, events: [
    { type: 'ack', seq: seq++, commandId: cmd.id, command: cmd.command, status: 'applied', step: 60, time: 0 },
    { type: 'log', seq: seq++, level: 'info', message: 'expert 2 at step 60: frozen: out of the regularizer', time: 0, topic: 'damping-floor/2' },
  ] });
  await expectText(p.byTestId('frozen-2'), 'yes');
  assert.equal(await p.byTestId('run-message-box').isVisible(), false);
});

test('the κ chart has a logarithmic y axis, one line per expert, and is really drawn', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-0'), formatNumber(lastExperts(f.events)[0].kappa));
  await nextFrames(p.page);
  const info = await chartInfo(p.page, 'expert');
  assert.equal(info.optionType, 'logarithmic');
  assert.equal(info.builtType, 'logarithmic');
  const monitorSteps = metricsOf(f.events).filter((m) => m.units).length;
  assert.deepEqual(
    info.datasets.map((d) => [d.key, d.length]),
    [0, 1, 2, 3].map((id) => [`kappa:${id}`, monitorSteps]),
  );
  const loss = await chartInfo(p.page, 'loss');
  assert.equal(loss.optionType, 'linear');
  assert.deepEqual(loss.datasets.map((d) => [d.key, d.length]), [['loss', 240], ['taskLoss', 240]]);
  // Pixels in expert 0's colour (VS Code's charts blue, #3794ff) prove chart.js drew on the canvas.
  const bluePixels = await p.page.evaluate(() => {
    const canvas = document.querySelector<HTMLCanvasElement>('[data-testid="chart-expert"]')!;
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i] - 55) < 30 && Math.abs(data[i + 1] - 148) < 30 && Math.abs(data[i + 2] - 255) < 30 && data[i + 3] > 128) n++;
    return n;
  });
  assert.ok(bluePixels > 100, `expert 0 line drawn (${bluePixels} px)`);
});

test('chart colours follow a theme change (VS Code rewrites the --vscode-* variables on <html>)', async () => {
  const p = await openPanel();
  await p.send(snapshotOf(syntheticRun({ steps: 30 })));
  await expectText(p.byTestId('kappa-0'), /\d/);
  const colours = () =>
    p.page.evaluate(() => {
      const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.expert.chart;
      const swatch = document.querySelector('[data-testid="expert-name-0"] .swatch')!;
      return { line: chart.data.datasets[0].borderColor as string, swatch: getComputedStyle(swatch).backgroundColor, font: chart.options.font.family as string };
    });
  assert.deepEqual(await colours(), { line: 'rgba(55, 148, 255, 1)', swatch: 'rgb(55, 148, 255)', font: await p.page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--vscode-font-family').trim()) });
  await p.page.evaluate(() => document.documentElement.style.setProperty('--vscode-charts-blue', '#e51400'));
  await nextFrames(p.page);
  const after = await colours();
  assert.equal(after.line, 'rgba(229, 20, 0, 1)');
  assert.equal(after.swatch, 'rgb(229, 20, 0)');
});

test('events append in seq order; duplicates and other runs are ignored; invalid messages are logged', async () => {
  const p = await openPanel();
  p.expectedWarnings.push(/\[PL Trainer\] ignored an invalid message/);
  const f = syntheticRun({ steps: 100 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '100 / 300');
  const fresh = f.more(25);
  const stale = f.events.slice(50, 60); // already held
  await p.send({ type: 'events', runId: f.runId, events: [...stale, ...fresh] });
  await expectText(p.byTestId('step'), '125 / 300');
  await nextFrames(p.page);
  assert.deepEqual((await chartInfo(p.page, 'loss')).datasets.map((d) => d.length), [125, 125]);
  await expectText(p.byTestId('kappa-1'), formatNumber(lastExperts(f.events)[1].kappa));
  await expectText(p.byTestId('experts-measured'), 'measured at step 120');

  // Another run's events and malformed messages change nothing.
  const other = syntheticRun({ runId: 'someone-else', steps: 200, seed: 99 });
  await p.send({ type: 'events', runId: other.runId, events: other.events.slice(-5) });
  await p.send({ type: 'snapshot', run: null });
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'metrics', seq: 10_000, step: 1 }] });
  await nextFrames(p.page);
  await expectText(p.byTestId('step'), '125 / 300');
  assert.deepEqual((await chartInfo(p.page, 'loss')).datasets.map((d) => d.length), [125, 125]);
  assert.equal(p.console.filter((m) => /ignored an invalid message/.test(m.text)).length, 2);
});

test('a chart redraws only when a line it draws changed: the κ chart skips the frames between monitor steps, and redraws for a setting', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 100 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '100 / 300');
  await nextFrames(p.page);
  // Count chart.js updates per chart from here on (harness-only hook).
  await p.page.evaluate(() => {
    const dbg = (window as unknown as { __plTrainer: { charts: Record<string, { chart: { update: (mode?: string) => void } }> } }).__plTrainer;
    const counts: Record<string, number> = {};
    (window as unknown as { __updates: Record<string, number> }).__updates = counts;
    for (const [id, c] of Object.entries(dbg.charts)) {
      counts[id] = 0;
      const original = c.chart.update.bind(c.chart);
      c.chart.update = (mode?: string) => {
        counts[id]++;
        original(mode);
      };
    }
  });
  const updates = () => p.page.evaluate(() => ({ ...(window as unknown as { __updates: Record<string, number> }).__updates }));
  // Steps 101…109: no monitor step (every 10), so the κ chart has nothing new; the loss chart has.
  for (const e of f.more(9)) {
    await p.send({ type: 'events', runId: f.runId, events: [e] });
    await nextFrames(p.page);
  }
  await expectText(p.byTestId('step'), '109 / 300');
  let u = await updates();
  assert.equal(u.expert, 0, `κ chart redrawn without a new κ: ${JSON.stringify(u)}`);
  assert.ok(u.loss >= 1, `the loss chart redraws for new steps: ${JSON.stringify(u)}`);
  // Step 110 measures κ: the κ chart redraws, and draws the new point.
  await p.send({ type: 'events', runId: f.runId, events: f.more(1) });
  await expectText(p.byTestId('experts-measured'), 'measured at step 110');
  await nextFrames(p.page);
  u = await updates();
  assert.equal(u.expert, 1, JSON.stringify(u));
  assert.equal((await chartInfo(p.page, 'expert')).datasets[0].length, 11);
  // A view setting (κ → μ) redraws it though no point came.
  await p.byTestId('expert-metric-mu').click();
  await nextFrames(p.page);
  assert.equal((await updates()).expert, 2);
});

test('Pause posts a valid command, and the log follows its lifecycle pending → applied at step N', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'false');
  // A disabled control posts nothing even if clicked programmatically.
  await p.byTestId('btn-resume').dispatchEvent('click');
  await p.byTestId('btn-pause').click();
  const posted = await p.posted();
  assert.equal(posted.length, 2, JSON.stringify(posted));
  const parsed = WebviewToHostSchema.parse(posted[1]);
  assert.ok(parsed.type === 'command');
  assert.deepEqual(parsed.command, { kind: 'pause' });
  assert.match(parsed.id, /^[A-Za-z0-9_-]{1,64}$/);
  const entry = p.byTestId(`command-${parsed.id}`);
  await expectText(entry, /^Pause.*sent$/);
  // The host's fact: it sent the command to the trainer.
  const pending = { type: 'fact', runId: f.runId, fact: { type: 'command', status: { id: parsed.id, command: parsed.command, status: 'pending' } } } as const;
  await p.send(pending);
  await expectText(entry, /pending$/);
  // Nothing optimistic: the run is still "running" until the trainer says otherwise.
  await expectText(p.byTestId('run-state'), 'running');
  let seq = f.events.at(-1)!.seq;
  // The outcome is the trainer's ack, relayed once as an event; then its state event.
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'ack', seq: ++seq, commandId: parsed.id, command: parsed.command, status: 'applied', step: 241, time: 0 }] });
  await expectText(entry, /applied at step 241$/);
  // A late `pending` (a fact crossing the ack) must not undo the outcome.
  await p.send(pending);
  await nextFrames(p.page);
  await expectText(entry, /applied at step 241$/);
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'state', seq: ++seq, state: 'paused', step: 241, time: 0 }] });
  await expectText(p.byTestId('run-state'), 'paused');
  await expectAttr(p.byTestId('btn-resume'), 'aria-disabled', 'false');
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'true');
  await p.byTestId('btn-resume').click();
  const resume = WebviewToHostSchema.parse((await p.posted())[2]);
  assert.ok(resume.type === 'command' && resume.command.kind === 'resume');
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'ack', seq: ++seq, commandId: resume.id, command: resume.command, status: 'rejected', reason: 'run is stopping', step: 241, time: 0 }] });
  await expectText(p.byTestId(`command-${resume.id}`), /rejected: run is stopping$/);
  // Lost connection (the host's fact): nothing can be steered.
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'connection', connected: false } });
  await expectText(p.byTestId('connection'), 'reconnecting…');
  for (const id of ['btn-pause', 'btn-resume', 'btn-stop', 'btn-set-alpha', 'freeze-0']) await expectAttr(p.byTestId(id), 'aria-disabled', 'true');
});

test('Set α posts the typed number; invalid input posts nothing and explains why', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 50 });
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-set-alpha'), 'aria-disabled', 'false');
  const input = p.byTestId('alpha-input');
  const error = p.byTestId('alpha-error');
  for (const [text, message] of [
    ['-1', /^α must be ≥ 0\.$/],
    ['NaN', /not a number/],
    ['abc', /not a number/],
    ['0x10', /not a number/],
    ['2e6', /^α must be ≤ 1e\+6\.$/],
    ['', /Enter a value/],
  ] as const) {
    await input.fill(text);
    await p.byTestId('btn-set-alpha').click();
    await expectText(error, message);
    assert.equal(await error.isVisible(), true, `error shown for ${JSON.stringify(text)}`);
    assert.equal(await input.getAttribute('aria-invalid'), 'true');
  }
  assert.equal((await p.posted()).length, 1, 'only `ready` was posted');
  // Typing clears the error; Enter submits like the button.
  await input.fill('0.05');
  assert.equal(await error.isVisible(), false);
  await input.press('Enter');
  await p.page.waitForFunction(() => (window as unknown as { __posted: unknown[] }).__posted.length === 2);
  const cmd = WebviewToHostSchema.parse((await p.posted())[1]);
  assert.ok(cmd.type === 'command');
  assert.deepEqual(cmd.command, { kind: 'setAlpha', alpha: 0.05 });
  // α in the header stays the acknowledged one until the trainer's ack arrives.
  const before = formatNumber(metricsOf(f.events).at(-1)!.alpha);
  await expectText(p.byTestId('alpha'), before);
  const ackSeq = f.events.at(-1)!.seq + 1;
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'ack', seq: ackSeq, commandId: cmd.id, command: cmd.command, status: 'applied', step: 50, time: Date.now() }] });
  await expectText(p.byTestId('alpha'), '0.05');
  await expectText(p.byTestId(`command-${cmd.id}`), /Set α = 0\.05.*applied at step 50$/);
  // The button does the same as Enter.
  await input.fill('1e-3');
  await p.byTestId('btn-set-alpha').click();
  const second = WebviewToHostSchema.parse((await p.posted())[2]);
  assert.ok(second.type === 'command');
  assert.deepEqual(second.command, { kind: 'setAlpha', alpha: 0.001 });
});

test('the freeze toggle posts freeze/unfreeze and shows the result only once acknowledged', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 60 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('freeze-1'), 'Freeze');
  await p.byTestId('freeze-1').click();
  const cmd = WebviewToHostSchema.parse((await p.posted())[1]);
  assert.ok(cmd.type === 'command');
  assert.deepEqual(cmd.command, { kind: 'freeze', unit: 1 });
  await expectText(p.byTestId('freeze-1'), 'Freezing…');
  await expectAttr(p.byTestId('freeze-1'), 'aria-disabled', 'true');
  await expectText(p.byTestId('frozen-1'), 'no');
  const seq = f.events.at(-1)!.seq + 1;
  await p.send({ type: 'events', runId: f.runId, events: [{ type: 'ack', seq, commandId: cmd.id, command: cmd.command, status: 'applied', step: 60, time: Date.now() }] });
  await expectText(p.byTestId('frozen-1'), 'yes');
  await expectText(p.byTestId('freeze-1'), 'Unfreeze');
  await p.byTestId('freeze-1').click();
  const undo = WebviewToHostSchema.parse((await p.posted())[2]);
  assert.ok(undo.type === 'command');
  assert.deepEqual(undo.command, { kind: 'unfreeze', unit: 1 });
});

test('view settings persist through setState and come back after a reload', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-0'), /\d/);
  await p.byTestId('smoothing').fill('0.6');
  await expectText(p.byTestId('smoothing-value'), '0.60');
  await p.byTestId('log-loss').click();
  await p.byTestId('expert-metric-mu').click();
  // Hide "task loss" through a real click on its legend entry.
  await nextFrames(p.page);
  const legendPoint = await p.page.evaluate(() => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.loss.chart;
    const items = chart.legend.legendItems as { text: string }[];
    const i = items.findIndex((it) => it.text === 'task loss L_S');
    const box = chart.legend.legendHitBoxes[i];
    const rect = (chart.canvas as HTMLCanvasElement).getBoundingClientRect();
    return { x: rect.left + box.left + box.width / 2, y: rect.top + box.top + box.height / 2 };
  });
  await p.page.mouse.click(legendPoint.x, legendPoint.y);
  const expected = { v: 1, smoothing: 0.6, logScale: { loss: true, metric: false, expert: true, pl: true, share: false, participation: false, alpha: false, mask: false, gate: false, extra: true }, hidden: ['taskLoss'], expertMetric: 'mu' };
  await p.page.waitForFunction((want) => sessionStorage.getItem('pl-trainer-harness-state') === JSON.stringify(want), expected);
  const before = await chartInfo(p.page, 'loss');
  assert.equal(before.optionType, 'logarithmic');

  await p.page.reload();
  await waitForReady(p.page);
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('kappa-0'), /\d/);
  await nextFrames(p.page);
  assert.equal(await p.byTestId('smoothing').inputValue(), '0.6');
  await expectText(p.byTestId('smoothing-value'), '0.60');
  assert.equal(await p.byTestId('log-loss').evaluate((el) => (el as HTMLElement & { checked: boolean }).checked), true);
  assert.equal(await p.byTestId('log-expert').evaluate((el) => (el as HTMLElement & { checked: boolean }).checked), true);
  assert.equal(await p.byTestId('expert-metric-mu').getAttribute('aria-checked'), 'true');
  const loss = await chartInfo(p.page, 'loss');
  assert.equal(loss.builtType, 'logarithmic');
  // Smoothing on: each line is a faint raw twin plus its EMA; task loss (both parts) stays hidden.
  assert.deepEqual(
    loss.datasets.map((d) => [d.key, d.role, d.hidden]),
    [['loss', 'raw', false], ['loss', 'smoothed', false], ['taskLoss', 'raw', true], ['taskLoss', 'smoothed', true]],
  );
  const expert = await chartInfo(p.page, 'expert');
  assert.deepEqual([...new Set(expert.datasets.map((d) => d.key))], ['mu:0', 'mu:1', 'mu:2', 'mu:3']);
});

/** The harness's persisted webview state (VS Code's getState/setState survive a window reload). */
const persistedState = (page: Page) => page.evaluate(() => JSON.parse(sessionStorage.getItem('pl-trainer-harness-state') ?? 'null') as Record<string, unknown> | null);
const postedTypes = async (p: Panel) => (await p.posted()).map((m) => m.type);

test('a command no host answered survives a window reload: the restored panel sends it again, with its id, once the host is attached, and only once', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'false');
  await p.byTestId('btn-pause').click();
  const first = WebviewToHostSchema.parse((await p.posted()).at(-1));
  assert.ok(first.type === 'command');
  // Saved before the host answers (the link is down: it never does).
  assert.deepEqual((await persistedState(p.page))?.outstanding, [{ id: first.id, runId: f.runId, command: { kind: 'pause' } }]);

  await p.page.reload();
  await waitForReady(p.page);
  // The new extension host shows the run but is not connected to the trainer yet: it could not send.
  await p.send({ type: 'snapshot', run: { ...f.summary, connected: false }, events: f.events, commands: f.commands });
  const entry = p.byTestId(`command-${first.id}`);
  await expectText(entry, /^Pause.*sent, no answer yet: the window reloaded before the extension host took it; it is sent again, with the same id, once the extension host is connected to the run$/);
  assert.deepEqual(await postedTypes(p), ['ready']);
  // Connected: sent again, with the original id, exactly once.
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'connection', connected: true } });
  await p.page.waitForFunction(() => (window as unknown as { __posted: unknown[] }).__posted.length >= 2);
  assert.deepEqual((await p.posted())[1], { type: 'command', id: first.id, command: { kind: 'pause' } });
  await p.send(snapshotOf(f));
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'connection', connected: true } });
  await nextFrames(p.page);
  assert.deepEqual(await postedTypes(p), ['ready', 'command']);
  // The host's answer settles it: no longer kept, and a further reload sends nothing.
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'command', status: { id: first.id, command: { kind: 'pause' }, status: 'pending' } } });
  await expectText(entry, /pending$/);
  await p.page.waitForFunction(() => !('outstanding' in (JSON.parse(sessionStorage.getItem('pl-trainer-harness-state') ?? '{}') as object)));
  assert.equal(await p.page.evaluate(() => localStorage.getItem('pl-trainer.outstanding')), null);
  await p.page.reload();
  await waitForReady(p.page);
  await p.send(snapshotOf(f));
  await nextFrames(p.page);
  assert.deepEqual(await postedTypes(p), ['ready']);
});

test('after a reload, a command the host already took is not sent again; one that can no longer apply is refused with the reason and not sent', async () => {
  const p = await openPanel();
  const f = syntheticRun();
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'false');
  await p.byTestId('btn-pause').click();
  const pause = WebviewToHostSchema.parse((await p.posted()).at(-1));
  assert.ok(pause.type === 'command');
  // Taken: it got through before the reload, and the new host's table (from the trainer's acks) has it.
  // The workbench did not restore the panel (no webview state): opened anew, it reads the localStorage copy.
  await p.page.evaluate(() => sessionStorage.clear());
  await p.page.reload();
  await waitForReady(p.page);
  await p.send({ ...snapshotOf(f), commands: [...f.commands, { id: pause.id, command: { kind: 'pause' }, status: 'applied', step: f.summary.step }] } as HostToWebview);
  await expectText(p.byTestId(`command-${pause.id}`), /applied at step \d+$/);
  await nextFrames(p.page);
  assert.deepEqual(await postedTypes(p), ['ready']);
  assert.equal((await persistedState(p.page))?.outstanding, undefined);
  assert.equal(await p.page.evaluate(() => localStorage.getItem('pl-trainer.outstanding')), null);

  // Ended: the run stopped while the window was away.
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-stop'), 'aria-disabled', 'false');
  await p.byTestId('btn-stop').click();
  const stop = WebviewToHostSchema.parse((await p.posted()).at(-1));
  assert.ok(stop.type === 'command');
  await p.page.reload();
  await waitForReady(p.page);
  await p.send({ ...snapshotOf(f), run: { ...f.summary, state: 'stopped', connected: false } });
  await expectText(p.byTestId(`command-${stop.id}`), /^Stop.*failed: not applied: the window reloaded before the extension host took it, and the run has stopped$/);
  assert.deepEqual(await postedTypes(p), ['ready']);
  assert.equal((await persistedState(p.page))?.outstanding, undefined);

  // Another run: never sent to it; refused, naming both runs.
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-pause'), 'aria-disabled', 'false');
  await p.byTestId('btn-pause').click();
  const second = WebviewToHostSchema.parse((await p.posted()).at(-1));
  assert.ok(second.type === 'command');
  await p.page.reload();
  await waitForReady(p.page);
  const other = syntheticRun({ runId: 'other-run-1' });
  await p.send(snapshotOf(other));
  await expectText(p.byTestId(`command-${second.id}`), new RegExp(`failed: not applied: the window reloaded before the extension host took it, and the panel now shows run other-run-1, not ${f.runId}$`));
  assert.deepEqual(await postedTypes(p), ['ready']);
});

test('the smoothed line is the debiased EMA of the data (float64 closed form)', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 200 });
  await p.send(snapshotOf(f));
  await p.byTestId('smoothing').fill('0.85');
  await nextFrames(p.page);
  await nextFrames(p.page);
  const smoothed = await p.page.evaluate(() => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.loss.chart;
    const ds = chart.data.datasets.find((d: any) => d.seriesKey === 'loss' && d.role === 'smoothed');
    return (ds._data ?? ds.data) as { x: number; y: number }[];
  });
  const raw = metricsOf(f.events).map((m) => m.loss);
  const w = 0.85;
  assert.equal(smoothed.length, raw.length);
  for (let n = 1; n <= raw.length; n++) {
    // s_n = Σ_{i≤n} w^{n−i}(1−w) y_i / (1 − wⁿ), summed directly.
    let sum = 0;
    for (let i = 1; i <= n; i++) sum += Math.pow(w, n - i) * (1 - w) * raw[i - 1];
    const reference = sum / (1 - Math.pow(w, n));
    assert.ok(Math.abs(smoothed[n - 1].y - reference) <= 1e-12 * Math.abs(reference), `n=${n}: ${smoothed[n - 1].y} vs ${reference}`);
    assert.equal(smoothed[n - 1].x, n);
  }
});

test('CSV and JSON exports hold every series exactly', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 120, freezeAt: { step: 30, expert: 0 } });
  await p.send(snapshotOf(f));
  await expectAttr(p.byTestId('btn-export-csv'), 'aria-disabled', 'false');
  const saved = async (testId: string) => {
    const before = (await p.posted()).length;
    await p.byTestId(testId).click();
    await p.page.waitForFunction((n) => (window as unknown as { __posted: unknown[] }).__posted.length > n, before);
    const m = (await p.posted()).at(-1)!;
    assert.ok(WebviewToHostSchema.safeParse(m).success, 'a valid saveFile message');
    assert.equal(m.type, 'saveFile');
    return m as Extract<WebviewToHost, { type: 'saveFile' }>;
  };
  const csvFile = await saved('btn-export-csv');
  assert.equal(csvFile.fileName, `${f.runId}-metrics.csv`);
  const csv = csvFile.content.trimEnd().split('\n');
  const header = csv[0].split(',');
  assert.deepEqual(header.slice(0, 8), ['step', 'loss', 'taskLoss', 'accuracy', 'alpha', 'regularizer', 'stepsPerSec', 'plRatio']);
  assert.deepEqual(header.slice(8, 11), ['kappa_0', 'mu_0', 'lf_0']);
  assert.equal(header.length, 8 + 4 * 3);
  const metrics = metricsOf(f.events);
  assert.equal(csv.length - 1, metrics.length);
  for (const m of metrics) {
    const row = csv[m.step].split(',');
    assert.equal(Number(row[0]), m.step);
    assert.equal(Number(row[1]), m.loss);
    assert.equal(Number(row[3]), m.taskMetric);
    const e2 = m.units?.[2];
    assert.equal(row[8 + 2 * 3], e2 ? String(e2.kappa) : '', `kappa_2 at step ${m.step}`);
    assert.equal(row[7], m.plRatio === undefined ? '' : String(m.plRatio), `plRatio at step ${m.step}`);
  }

  const jsonFile = await saved('btn-export-json');
  assert.equal(jsonFile.fileName, `${f.runId}-metrics.json`);
  const json = JSON.parse(jsonFile.content);
  assert.equal(json.runId, f.runId);
  assert.equal(json.thinned, false);
  assert.deepEqual(json.series.loss, metrics.map((m) => [m.step, m.loss]));
  const monitored = metrics.filter((m) => m.units);
  assert.equal(json.unitName, 'expert');
  assert.deepEqual(json.units['3'].mu, monitored.map((m) => [m.step, m.units![3].mu]));
  assert.deepEqual(json.commands.map((c: { status: string }) => c.status), ['applied']);
});

test('long runs: stored history stays bounded, spikes survive thinning, drawing is decimated', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 0, totalSteps: 52_000, monitorEvery: 50 });
  await p.send(snapshotOf(f));
  const batch = 2000;
  const batches = 26; // 52k steps: past the 50k cap, so the history has been thinned once
  const spikeStep = 12_345;
  let maxFrameMs = 0;
  const t0 = Date.now();
  for (let b = 0; b < batches; b++) {
    const events = f.more(batch);
    for (const e of events) if (e.type === 'metrics' && e.step === spikeStep) e.loss = 1e6;
    // Time from posting a batch to the frame after the panel drew it.
    const ms = await p.page.evaluate(
      (msg) =>
        new Promise<number>((resolve) => {
          const start = performance.now();
          window.postMessage(msg, '*');
          requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - start)));
        }),
      { type: 'events', runId: f.runId, events } as unknown as Record<string, unknown>,
    );
    if (b > 0) maxFrameMs = Math.max(maxFrameMs, ms);
  }
  const totalMs = Date.now() - t0;
  await expectText(p.byTestId('step'), '52000 / 52000');
  const stored = await p.page.evaluate(() => {
    const model = (window as unknown as { __plTrainer: { model: any } }).__plTrainer.model;
    const loss = model.series.get('loss').raw as { x: number; y: number }[];
    return { length: loss.length, max: Math.max(...loss.map((q) => q.y)), maxAt: loss.find((q) => q.y === 1e6)?.x, first: loss[0].x, last: loss[loss.length - 1].x, sorted: loss.every((q, i) => i === 0 || q.x > loss[i - 1].x) };
  });
  assert.ok(stored.length <= MAX_POINTS_PER_SERIES && stored.length >= MAX_POINTS_PER_SERIES / 2, `stored ${stored.length}`);
  assert.equal(stored.max, 1e6);
  assert.equal(stored.maxAt, spikeStep);
  assert.deepEqual([stored.first, stored.last, stored.sorted], [1, 52_000, true]);
  await nextFrames(p.page);
  const loss = await chartInfo(p.page, 'loss');
  assert.ok(loss.datasets.every((d) => d.decimated), 'min/max decimation active when drawing');
  console.log(`  52k steps in ${batches} batches: ${totalMs} ms total, worst batch-to-frame ${maxFrameMs.toFixed(0)} ms, ${stored.length} points stored per series`);
  assert.ok(maxFrameMs < 1500, `a 2000-step batch took ${maxFrameMs} ms to show`);
});

test('screenshot of the panel with a realistic run (test-results/webview-panel.png)', async () => {
  const p = await openPanel();
  const f = syntheticRun({ alphaChangeAt: 150, alphaChangeTo: 0.0005, freezeAt: { step: 200, expert: 2 }, pruneAt: { step: 220, expert: 3 } });
  await p.send(snapshotOf(f));
  await p.byTestId('smoothing').fill('0.6');
  await p.byTestId('btn-pause').click();
  const pause = WebviewToHostSchema.parse((await p.posted())[1]);
  assert.ok(pause.type === 'command');
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'command', status: { id: pause.id, command: pause.command, status: 'pending' } } });
  await p.send({ type: 'fact', runId: f.runId, fact: { type: 'command', status: { id: 'cli-7f3a', command: { kind: 'setAlpha', alpha: 2e6 }, status: 'rejected', reason: 'α must be ≤ 1e+6' } } });
  await expectText(p.byTestId(`command-${pause.id}`), /pending$/);
  await p.byTestId('alpha-input').fill('0.001');
  await nextFrames(p.page);
  const out = path.join(root, 'test-results', 'webview-panel.png');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await p.page.screenshot({ path: out, fullPage: true });
  assert.ok(fs.statSync(out).size > 20_000, 'a real screenshot');
});

interface OverlayDataset {
  key: string;
  role: string;
  label: string;
  dash: number[];
  data: { x: number; y: number }[];
}

/** The datasets of a chart with their dash pattern and points (the compare overlay's tests need both). */
function datasetsOf(page: Page, id: string): Promise<OverlayDataset[]> {
  return page.evaluate((chartId) => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts[chartId].chart;
    return chart.data.datasets.map((d: any) => ({ key: d.seriesKey, role: d.role, label: d.label, dash: d.borderDash ?? [], data: (d._data ?? d.data).map((q: any) => ({ x: q.x, y: q.y })) }));
  }, id);
}

test('compare overlay: dashed lines of the recorded run on loss, metric, PL and per-expert charts; cleared by null and by ✕', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 120, alphaChangeAt: 60, alphaChangeTo: 0.0007 });
  const other = syntheticRun({ runId: 'baseline-alpha0', steps: 200, seed: 11, experts: 3, alpha: 0 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('alpha'), '0.0007');
  assert.equal(await p.byTestId('compare').isVisible(), false);
  await p.send({ type: 'compare', run: { runId: other.runId, events: other.events } });
  await expectText(p.byTestId('compare-label'), other.runId);
  assert.equal(await p.byTestId('compare').isVisible(), true);
  assert.match((await p.byTestId('compare').textContent()) ?? '', /comparing with baseline-alpha0/);
  await nextFrames(p.page);

  const otherMetrics = metricsOf(other.events);
  const ownMetrics = metricsOf(f.events);
  const expectOverlay = async (chartId: string, want: { key: string; label: string; values: { x: number; y: number }[] }[], ownKeys: string[]) => {
    const ds = await datasetsOf(p.page, chartId);
    assert.deepEqual(ds.filter((d) => d.role !== 'compare').map((d) => d.key), ownKeys, `${chartId}: the current run's lines stay`);
    const overlay = ds.filter((d) => d.role === 'compare');
    assert.deepEqual(overlay.map((d) => [d.key, d.label]), want.map((w) => [w.key, w.label]), `${chartId}: overlay lines`);
    for (const [i, d] of overlay.entries()) {
      assert.deepEqual(d.dash, [6, 4], `${d.key} is dashed`);
      assert.deepEqual(d.data, want[i].values, `${d.key} holds the compared run's values`);
    }
    for (const d of ds.filter((x) => x.role !== 'compare')) assert.deepEqual(d.dash, [], `${d.key} stays solid`);
  };
  const points = (pick: (m: MetricsEvent) => number | undefined, events = otherMetrics) =>
    events.flatMap((m) => (pick(m) === undefined ? [] : [{ x: m.step, y: pick(m)! }]));
  await expectOverlay('loss', [
    { key: 'compare:loss', label: 'loss (baseline-alpha0)', values: points((m) => m.loss) },
    { key: 'compare:taskLoss', label: 'task loss L_S (baseline-alpha0)', values: points((m) => m.taskLoss) },
  ], ['loss', 'taskLoss']);
  await expectOverlay('metric', [{ key: 'compare:taskMetric', label: 'accuracy (baseline-alpha0)', values: points((m) => m.taskMetric) }], ['taskMetric']);
  await expectOverlay('pl', [
    { key: 'compare:regularizer', label: 'κ̄ (regularizer) (baseline-alpha0)', values: points((m) => m.regularizer) },
    { key: 'compare:plRatio', label: 'PL* ratio ½‖∇f‖²/(f − f*) (baseline-alpha0)', values: points((m) => m.plRatio) },
  ], ['regularizer', 'plRatio']);
  const expertOverlay = (metric: 'kappa' | 'mu', symbol: string) =>
    [0, 1, 2].map((id) => ({ key: `compare:${metric}:${id}`, label: `${symbol} expert ${id} (baseline-alpha0)`, values: points((m) => m.units?.[id][metric] ?? undefined) }));
  await expectOverlay('expert', expertOverlay('kappa', 'κ'), ['kappa:0', 'kappa:1', 'kappa:2', 'kappa:3']);
  // The overlay follows the selected per-expert quantity.
  await p.byTestId('expert-metric-mu').click();
  await nextFrames(p.page);
  await expectOverlay('expert', expertOverlay('mu', 'μ'), ['mu:0', 'mu:1', 'mu:2', 'mu:3']);
  // α is steered and the mask is per run: no overlay there.
  assert.deepEqual((await datasetsOf(p.page, 'alpha')).map((d) => d.role), ['plain']);
  assert.ok((await datasetsOf(p.page, 'mask')).every((d) => d.role !== 'compare'));
  // Nothing of the overlay reaches the current run: header α, experts, exports.
  await expectText(p.byTestId('alpha'), '0.0007');
  await expectText(p.byTestId('step'), '120 / 300');
  await expectText(p.byTestId('kappa-3'), formatNumber(lastExperts(f.events)[3].kappa));
  await p.byTestId('btn-export-json').click();
  await p.page.waitForFunction(() => (window as unknown as { __posted: { type: string }[] }).__posted.some((m) => m.type === 'saveFile'));
  const saved = (await p.posted()).find((m) => m.type === 'saveFile') as Extract<WebviewToHost, { type: 'saveFile' }>;
  const json = JSON.parse(saved.content);
  assert.equal(json.runId, f.runId);
  assert.deepEqual(json.series.loss, ownMetrics.map((m) => [m.step, m.loss]));
  assert.deepEqual(Object.keys(json.units), ['0', '1', '2', '3']);

  // A new snapshot of the current run keeps the overlay.
  await p.send(snapshotOf(f));
  await nextFrames(p.page);
  assert.equal((await datasetsOf(p.page, 'loss')).filter((d) => d.role === 'compare').length, 2);
  await expectText(p.byTestId('compare-label'), other.runId);
  // null from the host removes it.
  await p.send({ type: 'compare', run: null });
  await nextFrames(p.page);
  for (const id of ['loss', 'metric', 'pl', 'expert']) assert.ok((await datasetsOf(p.page, id)).every((d) => d.role !== 'compare'), id);
  assert.equal(await p.byTestId('compare').isVisible(), false);
  // And so does the ✕.
  const postedBefore = (await p.posted()).length;
  await p.send({ type: 'compare', run: { runId: 'second-baseline', events: other.events } });
  await expectText(p.byTestId('compare-label'), 'second-baseline');
  await nextFrames(p.page);
  assert.equal((await datasetsOf(p.page, 'loss')).filter((d) => d.role === 'compare').length, 2);
  await p.byTestId('compare-clear').click();
  await nextFrames(p.page);
  assert.equal(await p.byTestId('compare').isVisible(), false);
  for (const id of ['loss', 'metric', 'pl', 'expert']) assert.ok((await datasetsOf(p.page, id)).every((d) => d.role !== 'compare'), id);
  // The host is told, so that a reload does not bring the overlay back; nothing else is posted.
  assert.deepEqual((await p.posted()).slice(postedBefore), [{ type: 'clearCompare' }]);
});

test('a compared run has one legend entry per chart (its lines are named in the tooltip), which shows or hides all of them', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 120 });
  const other = syntheticRun({ runId: 'baseline-alpha0', steps: 200, seed: 11, experts: 3, alpha: 0 });
  await p.send(snapshotOf(f));
  await p.send({ type: 'compare', run: { runId: other.runId, events: other.events } });
  await expectText(p.byTestId('compare-label'), other.runId);
  await nextFrames(p.page);
  const legend = (id: string) => p.page.evaluate(`window.__plTrainer.charts[${JSON.stringify(id)}].chart.legend.legendItems.map((i) => i.text)`) as Promise<string[]>;
  assert.deepEqual(await legend('expert'), ['κ expert 0', 'κ expert 1', 'κ expert 2', 'κ expert 3', 'baseline-alpha0 (dashed)']);
  assert.deepEqual(await legend('loss'), ['loss', 'task loss L_S', 'baseline-alpha0 (dashed)']);
  // Its entry hides every line of the compared run, and only those.
  await p.page.evaluate(`(() => { const c = window.__plTrainer.charts.expert.chart; const item = c.legend.legendItems.find((i) => i.text.endsWith('(dashed)')); c.options.plugins.legend.onClick({}, item, c.legend); })()`);
  await nextFrames(p.page);
  const ds = (await chartInfo(p.page, 'expert')).datasets;
  assert.deepEqual(ds.filter((d) => d.role === 'compare').map((d) => d.hidden), [true, true, true]);
  assert.ok(ds.filter((d) => d.role !== 'compare').every((d) => !d.hidden));
});

test('a longer compared run is cut at this run\'s planned steps (not squeezing it into the left of the axis); "all steps" shows the whole of it', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 120, totalSteps: 300 });
  const long = syntheticRun({ runId: 'long-baseline', steps: 1500, totalSteps: 2000, seed: 3 });
  await p.send(snapshotOf(f));
  await p.send({ type: 'compare', run: { runId: long.runId, events: long.events } });
  await expectText(p.byTestId('compare-label'), long.runId);
  await nextFrames(p.page);
  const lossOverlay = async () => (await datasetsOf(p.page, 'loss')).filter((d) => d.role === 'compare')[0].data;
  const cut = await lossOverlay();
  assert.deepEqual(cut, metricsOf(long.events).filter((m) => m.step <= 300).map((m) => ({ x: m.step, y: m.loss })), 'the compared loss up to step 300, exactly');
  assert.ok((await xRange(p.page, 'loss')).max <= 300, 'the axis spans this run\'s steps');
  await expectText(p.byTestId('compare-range'), 'all steps');
  await p.byTestId('compare-range').click();
  await nextFrames(p.page);
  assert.equal((await lossOverlay()).length, 1500);
  assert.ok((await xRange(p.page, 'loss')).max >= 1500);
  await expectText(p.byTestId('compare-range'), 'first 300 steps');
  // A shorter compared run is never cut, and the button is not offered.
  const short = syntheticRun({ runId: 'short', steps: 80, seed: 4 });
  await p.send({ type: 'compare', run: { runId: short.runId, events: short.events } });
  await expectText(p.byTestId('compare-label'), 'short');
  await nextFrames(p.page);
  assert.equal((await lossOverlay()).length, 80);
  assert.equal(await p.byTestId('compare-range').isVisible(), false);
});

test('pruning mask chart: one stepped lane per expert, at exactly the reported status of each monitor step', async () => {
  const p = await openPanel();
  // Today's trainer: nothing pruned, so every point sits at its lane's top.
  const kept = syntheticRun({ steps: 50, experts: 3, monitorEvery: 10 });
  await p.send(snapshotOf(kept));
  await expectText(p.byTestId('step'), '50 / 300');
  await nextFrames(p.page);
  let ds = await datasetsOf(p.page, 'mask');
  assert.deepEqual(ds.map((d) => [d.key, d.label]), [['mask:0', 'expert 0'], ['mask:1', 'expert 1'], ['mask:2', 'expert 2']]);
  for (const [id, d] of ds.entries()) assert.deepEqual(d.data, [10, 20, 30, 40, 50].map((x) => ({ x, y: id + 0.8 })));
  assert.equal(await p.byTestId('empty-mask').isVisible(), false);

  // Pruned on hand-picked monitor steps (and expert 2 frozen from step 25 on).
  const f = syntheticRun({ steps: 80, experts: 4, monitorEvery: 10, freezeAt: { step: 25, expert: 2 } });
  const prunedAt = new Set(['30:1', '40:1', '80:1', '60:3', '10:0']);
  for (const m of metricsOf(f.events)) for (const e of m.units ?? []) e.pruned = prunedAt.has(`${m.step}:${e.id}`);
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '80 / 300');
  await nextFrames(p.page);
  ds = await datasetsOf(p.page, 'mask');
  assert.deepEqual(ds.map((d) => d.key), ['mask:0', 'mask:1', 'mask:2', 'mask:3']);
  for (const [id, d] of ds.entries()) {
    const want = [10, 20, 30, 40, 50, 60, 70, 80].map((x) => ({ x, y: id + (prunedAt.has(`${x}:${id}`) ? 0.1 : id === 2 && x > 25 ? 0.45 : 0.8) }));
    assert.deepEqual(d.data, want, `expert ${id}`);
  }
  const axis = await p.page.evaluate(() => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.mask.chart;
    return { min: chart.scales.y.min, max: chart.scales.y.max, labels: chart.scales.y.ticks.map((t: any) => [t.value, t.label]), stepped: chart.data.datasets.map((d: any) => d.stepped) };
  });
  assert.deepEqual(axis, { min: 0, max: 4, labels: [[0.5, 'expert 0'], [1.5, 'expert 1'], [2.5, 'expert 2'], [3.5, 'expert 3']], stepped: ['after', 'after', 'after', 'after'] });
  // The tooltip names the status.
  const tooltip = await p.page.evaluate(() => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.mask.chart;
    const label = chart.options.plugins.tooltip.callbacks.label;
    return [0.8, 1.1, 2.45].map((y) => label({ dataset: { label: 'expert' }, raw: { x: 1, y } }));
  });
  assert.deepEqual(tooltip, ['expert: trainable', 'expert: pruned', 'expert: frozen']);
});

test('pruning gate and model diagnostics: cards only for runs that report them, one line per unit and per name, exactly as reported', async () => {
  const p = await openPanel();
  const plain = syntheticRun({ steps: 40, experts: 3, monitorEvery: 10 });
  await p.send(snapshotOf(plain));
  await expectText(p.byTestId('step'), '40 / 300');
  await nextFrames(p.page);
  const cardVisible = (id: string) => p.page.locator(`section[data-chart="${id}"]`).isVisible();
  assert.equal(await cardVisible('gate'), false, 'no gate card for a run without pruning');
  assert.equal(await cardVisible('extra'), false, 'no diagnostics card for a family that reports none');
  assert.equal(await cardVisible('mask'), true);

  // A pruning run under OPT: keep-probabilities and diagnostics on monitor steps.
  const f = syntheticRun({ runId: 'opt-pruning', steps: 40, experts: 3, monitorEvery: 10 });
  const gateAt = (step: number, unit: number) => Math.round((1 - (unit * step) / 200) * 1000) / 1000;
  const events = f.events.map((e) =>
    e.type === 'metrics' && e.units ? { ...e, gate: [0, 1, 2].map((u) => gateAt(e.step, u)), extra: { 'energy/expert0': 2.5, 'orthogonality/expert0': 1e-7 * e.step } } : e,
  );
  await p.send({ type: 'snapshot', run: f.summary, events, commands: f.commands });
  await expectText(p.byTestId('step'), '40 / 300');
  await nextFrames(p.page);
  assert.equal(await cardVisible('gate'), true);
  assert.equal(await cardVisible('extra'), true);
  const gate = await datasetsOf(p.page, 'gate');
  assert.deepEqual(gate.map((d) => [d.key, d.label]), [['gate:0', 'keep p expert 0'], ['gate:1', 'keep p expert 1'], ['gate:2', 'keep p expert 2']]);
  for (const [u, d] of gate.entries()) assert.deepEqual(d.data, [10, 20, 30, 40].map((x) => ({ x, y: gateAt(x, u) })), `unit ${u}`);
  const extra = await datasetsOf(p.page, 'extra');
  assert.deepEqual(extra.map((d) => d.key), ['extra:energy/expert0', 'extra:orthogonality/expert0']);
  // The legend names them for a person, not by their keys.
  assert.deepEqual(extra.map((d) => d.label), ['energy expert 0', '‖QᵀQ − I‖ expert 0']);
  assert.deepEqual(extra[1].data, [10, 20, 30, 40].map((x) => ({ x, y: 1e-7 * x })));
  assert.equal((await chartInfo(p.page, 'extra')).builtType, 'logarithmic', 'an energy and a 1e-7 error share the axis');
  assert.equal((await chartInfo(p.page, 'gate')).builtType, 'linear');

  // Back to a plain run: the cards go away again.
  await p.send(snapshotOf(plain));
  await expectText(p.byTestId('step'), '40 / 300');
  await nextFrames(p.page);
  assert.equal(await cardVisible('gate'), false);
  assert.equal(await cardVisible('extra'), false);
});

/** The x range a chart currently shows. */
function xRange(page: Page, id: string): Promise<{ min: number; max: number; points: number }> {
  return page.evaluate((chartId) => {
    const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts[chartId].chart;
    return { min: chart.scales.x.min, max: chart.scales.x.max, points: (chart.data.datasets[0]._data ?? chart.data.datasets[0].data).length };
  }, id);
}

/** Page coordinates of a fraction of a chart's plot area. */
function plotPoint(page: Page, id: string, fx: number, fy: number): Promise<{ x: number; y: number }> {
  return page.evaluate(
    ({ chartId, fx, fy }) => {
      const chart = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts[chartId].chart;
      const rect = (chart.canvas as HTMLCanvasElement).getBoundingClientRect();
      const a = chart.chartArea;
      return { x: rect.left + a.left + fx * (a.right - a.left), y: rect.top + a.top + fy * (a.bottom - a.top) };
    },
    { chartId: id, fx, fy },
  );
}

test('zoom: drag narrows the x range, live points keep arriving without a jump back, reset and double-click restore it', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 200 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '200 / 300');
  await nextFrames(p.page);
  // The unzoomed axis spans every step (chart.js may round its ends outwards to nice ticks).
  const full = await xRange(p.page, 'loss');
  assert.ok(full.min <= 1 && full.max >= 200 && full.max < 210 && full.points === 200, JSON.stringify(full));
  assert.equal(await p.byTestId('zoom-reset-loss').isVisible(), false);

  const from = await plotPoint(p.page, 'loss', 0.3, 0.5);
  const to = await plotPoint(p.page, 'loss', 0.6, 0.5);
  await p.page.mouse.move(from.x, from.y);
  await p.page.mouse.down();
  await p.page.mouse.move(to.x, to.y, { steps: 8 });
  await p.page.mouse.up();
  await nextFrames(p.page);
  const zoomed = await xRange(p.page, 'loss');
  // The dragged span is 30 %–60 % of the full axis.
  const at = (fraction: number) => full.min + fraction * (full.max - full.min);
  assert.ok(Math.abs(zoomed.min - at(0.3)) < 2 && Math.abs(zoomed.max - at(0.6)) < 2, `zoomed to ${zoomed.min}…${zoomed.max}, want ${at(0.3)}…${at(0.6)}`);
  assert.equal(await p.byTestId('zoom-reset-loss').isVisible(), true);
  // Only the dragged chart zoomed.
  assert.deepEqual(await xRange(p.page, 'metric'), full);

  // Live updates: points append, the zoomed view stays where the user put it.
  await p.send({ type: 'events', runId: f.runId, events: f.more(40) });
  await expectText(p.byTestId('step'), '240 / 300');
  await nextFrames(p.page);
  assert.deepEqual(await xRange(p.page, 'loss'), { min: zoomed.min, max: zoomed.max, points: 240 });
  const grown = await xRange(p.page, 'metric');
  assert.ok(grown.max >= 240 && grown.points === 240, `unzoomed charts follow new points: ${JSON.stringify(grown)}`);

  await p.byTestId('zoom-reset-loss').click();
  await nextFrames(p.page);
  assert.deepEqual(await xRange(p.page, 'loss'), grown);
  assert.equal(await p.byTestId('zoom-reset-loss').isVisible(), false);
  // After a reset the chart follows new points again.
  await p.send({ type: 'events', runId: f.runId, events: f.more(10) });
  await expectText(p.byTestId('step'), '250 / 300');
  await nextFrames(p.page);
  const after250 = await xRange(p.page, 'loss');
  assert.ok(after250.max >= 250 && after250.points === 250, JSON.stringify(after250));

  // The wheel zooms only with ctrl held (plain wheel scrolls the panel); a double-click resets.
  const centre = await plotPoint(p.page, 'pl', 0.5, 0.5);
  const plFull = await xRange(p.page, 'pl');
  await p.page.mouse.move(centre.x, centre.y);
  await p.page.mouse.wheel(0, -200);
  await nextFrames(p.page);
  assert.deepEqual(await xRange(p.page, 'pl'), plFull);
  const centreAgain = await plotPoint(p.page, 'pl', 0.5, 0.5); // the plain wheel may have scrolled the page
  await p.page.mouse.move(centreAgain.x, centreAgain.y);
  await p.page.keyboard.down('Control');
  await p.page.mouse.wheel(0, -100);
  await p.page.keyboard.up('Control');
  await nextFrames(p.page);
  const wheeled = await xRange(p.page, 'pl');
  assert.ok(wheeled.min > plFull.min && wheeled.max < plFull.max, `ctrl+wheel zoomed to ${wheeled.min}…${wheeled.max}`);
  await expectAttr(p.byTestId('zoom-reset-pl'), 'hidden', null);
  await p.page.mouse.dblclick(centreAgain.x, centreAgain.y);
  await nextFrames(p.page);
  assert.deepEqual(await xRange(p.page, 'pl'), plFull);
  await expectAttr(p.byTestId('zoom-reset-pl'), 'hidden', '');
});

test('screenshot with a compare overlay and the pruning mask (test-results/webview-compare.png)', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 240, freezeAt: { step: 120, expert: 2 }, pruneAt: { step: 181, expert: 3 } });
  const other = syntheticRun({ runId: 'baseline-alpha0', steps: 300, seed: 21, alpha: 0 });
  await p.send(snapshotOf(f));
  await p.send({ type: 'compare', run: { runId: other.runId, events: other.events } });
  await expectText(p.byTestId('compare-label'), other.runId);
  await nextFrames(p.page);
  const out = path.join(root, 'test-results', 'webview-compare.png');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await p.page.screenshot({ path: out, fullPage: true });
  assert.ok(fs.statSync(out).size > 20_000, 'a real screenshot');
});

test('every tick label of the per-unit log axis fits the axis: none clipped (issue 17, item 9: the top label read ".00")', async () => {
  const p = await openPanel(await browser.newPage({ viewport: { width: 900, height: 1000 } }));
  const f = syntheticRun({ steps: 60, experts: 4, monitorEvery: 5 });
  // κ over eleven decades: long labels at both ends (0.002, 1e+8), short ones between (10, 100).
  metricsOf(f.events).forEach((m, k) => m.units?.forEach((u, i) => (u.kappa = i === 3 ? 1.234e8 + k : 0.0021 + i)));
  await p.send(snapshotOf(f));
  await nextFrames(p.page);
  const fit = await p.page.evaluate(() => {
    const dbg = (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer;
    const chart = dbg.charts.expert.chart;
    const y = chart.scales.y;
    const ctx = chart.ctx as CanvasRenderingContext2D;
    const font = y._resolveTickFontOptions ? y._resolveTickFontOptions(0).string : ctx.font;
    ctx.save();
    ctx.font = font;
    const labels = y.ticks.map((t: { label: string | string[] }) => String(t.label)).filter((l: string) => l);
    const widest = Math.max(...labels.map((l: string) => ctx.measureText(l).width));
    ctx.restore();
    return { type: y.type as string, labels, widest, axisWidth: y.width as number };
  });
  assert.equal(fit.type, 'logarithmic');
  assert.ok(fit.labels.length >= 3, `labels ${fit.labels}`);
  assert.ok(fit.widest <= fit.axisWidth, `widest tick label ${fit.widest.toFixed(1)} px in a ${fit.axisWidth.toFixed(1)} px axis: ${fit.labels.join(' | ')}`);
});

/** The strokes one redraw of a chart makes in the colour of a line inside its plot area: their path's vertices in canvas pixels, and the points and scales behind that line. */
async function strokesOfLine(page: Page, id: string, key: string): Promise<{ strokes: { x: number; y: number }[][]; points: { x: number; y: number }[]; x: ScaleState; y: ScaleState }> {
  // Plain JS source: functions defined inside a playwright callback would carry esbuild's name helper, undefined in the page.
  return page.evaluate(`(() => {
    const chart = window.__plTrainer.charts[${JSON.stringify(id)}].chart;
    const ctx = chart.ctx;
    const dataset = chart.data.datasets.find((d) => d.seriesKey === ${JSON.stringify(key)});
    // The canvas normalizes colours; compare like with like.
    const probe = document.createElement('canvas').getContext('2d');
    probe.strokeStyle = dataset.borderColor;
    const colour = probe.strokeStyle;
    const strokes = [];
    let path = [];
    const proto = CanvasRenderingContext2D.prototype;
    ctx.beginPath = function () { path = []; return proto.beginPath.call(this); };
    ctx.moveTo = function (x, y) { path.push({ x, y }); return proto.moveTo.call(this, x, y); };
    ctx.lineTo = function (x, y) { path.push({ x, y }); return proto.lineTo.call(this, x, y); };
    ctx.stroke = function (...args) {
      // In the plot area: the legend's swatch is stroked in the same colour.
      const a = chart.chartArea;
      if (args.length === 0 && this.strokeStyle === colour && path.some((v) => v.y >= a.top && v.y <= a.bottom && v.x >= a.left && v.x <= a.right)) strokes.push(path);
      return proto.stroke.apply(this, args);
    };
    try {
      chart.draw();
    } finally {
      delete ctx.beginPath; delete ctx.moveTo; delete ctx.lineTo; delete ctx.stroke;
    }
    const scale = (s) => ({ type: s.type, min: s.min, max: s.max, left: s.left, right: s.right, top: s.top, bottom: s.bottom });
    return { strokes, points: dataset.data.map((q) => ({ x: q.x, y: q.y })), x: scale(chart.scales.x), y: scale(chart.scales[dataset.yAxisID || 'y']) };
  })()`);
}

interface ScaleState {
  type: string;
  min: number;
  max: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/** A value's pixel on a chart.js axis, in closed form (linear, or log10 for a logarithmic axis). */
function pixelOf(s: ScaleState, v: number, axis: 'x' | 'y'): number {
  const f = s.type === 'logarithmic' ? (Math.log10(v) - Math.log10(s.min)) / (Math.log10(s.max) - Math.log10(s.min)) : (v - s.min) / (s.max - s.min);
  return axis === 'x' ? s.left + f * (s.right - s.left) : s.bottom - f * (s.bottom - s.top);
}

function assertVerticesAt(vertices: { x: number; y: number }[], points: { x: number; y: number }[], line: { x: ScaleState; y: ScaleState }, what: string): void {
  assert.equal(vertices.length, points.length, `${what}: one vertex per drawn point`);
  for (const [i, q] of points.entries()) {
    const want = { x: pixelOf(line.x, q.x, 'x'), y: pixelOf(line.y, q.y, 'y') };
    assert.ok(Math.abs(vertices[i].x - want.x) < 1e-6 && Math.abs(vertices[i].y - want.y) < 1e-6, `${what}: vertex ${i} at ${JSON.stringify(vertices[i])}, point (${q.x}, ${q.y}) is at ${JSON.stringify(want)}`);
  }
}

test('each line is one stroked path through exactly the decimated points: extremes kept, a zoomed window whole, log axes too', async () => {
  const p = await openPanel();
  const steps = 6000;
  const f = syntheticRun({ steps, totalSteps: steps });
  const spikeStep = 2345;
  const dipStep = 4321;
  for (const e of f.events) {
    if (e.type !== 'metrics') continue;
    if (e.step === spikeStep) e.loss = 40;
    if (e.step === dipStep) e.loss = -5;
  }
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), `${steps} / ${steps}`);
  await nextFrames(p.page);
  const loss = metricsOf(f.events).map((m) => ({ x: m.step, y: m.loss }));

  // The whole run: decimated to 1–2 points per pixel column, every extreme kept.
  const full = await strokesOfLine(p.page, 'loss', 'loss');
  assert.equal(full.strokes.length, 1, 'one stroke for the line');
  const width = full.x.right - full.x.left;
  assert.ok(full.points.length < steps / 2 && full.points.length <= 2 * width + 2, `${full.points.length} points drawn at ${width} px`);
  assertVerticesAt(full.strokes[0], full.points, full, 'whole run');
  const ys = full.points.map((q) => q.y);
  assert.equal(Math.max(...ys), 40);
  assert.equal(full.points.find((q) => q.y === 40)?.x, spikeStep);
  assert.equal(Math.min(...ys), -5);
  assert.deepEqual([full.points[0].x, full.points.at(-1)!.x], [1, steps]);

  // A zoomed window with fewer points than pixels: every point in it, plus one beyond each end, exactly as sent.
  await p.page.evaluate(() => (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.loss.chart.zoomScale('x', { min: 3000, max: 3200 }, 'none'));
  const zoomed = await strokesOfLine(p.page, 'loss', 'loss');
  const want = loss.filter((q) => q.x >= 2999 && q.x <= 3201);
  assert.deepEqual(zoomed.points, want);
  assert.equal(zoomed.strokes.length, 1);
  assertVerticesAt(zoomed.strokes[0], want, zoomed, 'zoomed window');

  // κ on its log axis: the same, with log10 pixels.
  const kappa = await strokesOfLine(p.page, 'expert', 'kappa:2');
  assert.equal(kappa.y.type, 'logarithmic');
  assert.equal(kappa.strokes.length, 1);
  assertVerticesAt(kappa.strokes[0], kappa.points, kappa, 'κ of expert 2');
  const monitored = metricsOf(f.events).filter((m) => m.units);
  assert.deepEqual(kappa.points, monitored.map((m) => ({ x: m.step, y: m.units![2].kappa })));

  // A stepped lane (the mask, chart.js's stepped: 'after'): from each point, up or down at its x, then along to the next one's.
  const lane = await strokesOfLine(p.page, 'mask', 'mask:1');
  assert.equal(lane.strokes.length, 1);
  const corners: { x: number; y: number }[] = [lane.points[0]];
  for (let i = 1; i < lane.points.length; i++) corners.push({ x: lane.points[i - 1].x, y: lane.points[i].y }, lane.points[i]);
  assertVerticesAt(lane.strokes[0], corners, lane, 'mask lane of expert 1');
});

test('hovering a line reads the value of the point under the pointer, and still does after live points rescale the axis', async () => {
  const p = await openPanel();
  const f = syntheticRun({ steps: 150, totalSteps: 300 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '150 / 300');
  await nextFrames(p.page);
  interface TooltipState {
    title: string[];
    body: string[];
    element: { x: number; y: number };
    scale: { min: number; max: number; left: number; right: number };
  }
  const tooltipOf = (): Promise<TooltipState> =>
    p.page.evaluate(`(() => {
      const chart = window.__plTrainer.charts.loss.chart;
      const active = chart.getActiveElements();
      const element = chart.getDatasetMeta(0).data[active.length ? active[0].index : 0];
      const s = chart.scales.x;
      return { title: chart.tooltip.title, body: chart.tooltip.body.map((b) => b.lines.join(' ')), element: { x: element.x, y: element.y }, scale: { min: s.min, max: s.max, left: s.left, right: s.right } };
    })()`);
  const lossAt = (step: number) => metricsOf(f.events).find((m) => m.step === step)!.loss;
  // The step whose x is nearest the pointer's (the points are one step apart).
  const nearestStep = (t: { scale: { min: number; max: number; left: number; right: number } }, px: number) => Math.round(t.scale.min + ((px - t.scale.left) / (t.scale.right - t.scale.left)) * (t.scale.max - t.scale.min));

  const at = await plotPoint(p.page, 'loss', 0.5, 0.5);
  const rect = await p.page.evaluate(() => (window as unknown as { __plTrainer: { charts: Record<string, { chart: any }> } }).__plTrainer.charts.loss.chart.canvas.getBoundingClientRect().left);
  await p.page.mouse.move(at.x, at.y);
  await nextFrames(p.page);
  const first = await tooltipOf();
  const step = nearestStep(first, at.x - rect);
  assert.deepEqual(first.title, [`step ${step}`]);
  assert.ok(first.body.includes(`loss: ${formatNumber(lossAt(step))}`), JSON.stringify(first.body));
  assert.ok(Math.abs(first.element.x - pixelOf({ ...first.scale, type: 'linear', top: 0, bottom: 0 }, step, 'x')) < 1e-6, 'the hovered point sits at its step');

  // New steps widen the x axis under the resting pointer: the tooltip follows to the step now there.
  await p.send({ type: 'events', runId: f.runId, events: f.more(150) });
  await expectText(p.byTestId('step'), '300 / 300');
  await nextFrames(p.page);
  const second = await tooltipOf();
  assert.ok(second.scale.max > first.scale.max, 'the axis grew');
  const stepNow = nearestStep(second, at.x - rect);
  assert.notEqual(stepNow, step);
  assert.deepEqual(second.title, [`step ${stepNow}`]);
  assert.ok(second.body.includes(`loss: ${formatNumber(lossAt(stepNow))}`), JSON.stringify(second.body));
  assert.ok(Math.abs(second.element.x - pixelOf({ ...second.scale, type: 'linear', top: 0, bottom: 0 }, stepNow, 'x')) < 1e-6, 'the hovered point moved with the axis');
});

test('a chart scrolled out of view does not redraw on live points; scrolled back, it shows all of them', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 500 } });
  const p = await openPanel(page);
  const f = syntheticRun({ steps: 200 });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), '200 / 300');
  await nextFrames(p.page);
  const state = () =>
    p.page.evaluate(`(() => {
      const charts = window.__plTrainer.charts;
      const mask = charts.mask.chart;
      return { maskUpdates: mask.__updates || 0, maskMax: mask.scales.x.max, lossMax: charts.loss.chart.scales.x.max, maskTop: mask.canvas.getBoundingClientRect().top };
    })()`) as Promise<{ maskUpdates: number; maskMax: number; lossMax: number; maskTop: number }>;
  await p.page.evaluate(`(() => {
    const mask = window.__plTrainer.charts.mask.chart;
    const update = mask.update.bind(mask);
    mask.update = (mode) => { mask.__updates = (mask.__updates || 0) + 1; return update(mode); };
  })()`);
  const before = await state();
  assert.ok(before.maskTop > 500 + 100, `the mask chart starts below the view and its margin (top ${before.maskTop})`);
  assert.ok(before.maskMax < 210, `mask drawn to step 200 (${before.maskMax})`);

  // Monitor steps 210 and 220 reach the mask series; only the charts in view redraw.
  await p.send({ type: 'events', runId: f.runId, events: f.more(20) });
  await expectText(p.byTestId('step'), '220 / 300');
  await nextFrames(p.page);
  await nextFrames(p.page);
  const live = await state();
  assert.ok(live.lossMax >= 220, `the loss chart (in view) follows: ${live.lossMax}`);
  assert.equal(live.maskUpdates, 0, 'the mask chart out of view did not redraw');
  assert.equal(live.maskMax, before.maskMax);

  // Scrolled into view: it redraws once with everything that arrived.
  await p.page.evaluate(`document.querySelector('section[data-chart="mask"]').scrollIntoView()`);
  const t0 = Date.now();
  let back = await state();
  while (back.maskMax < 220 && Date.now() - t0 < 5000) {
    await nextFrames(p.page);
    back = await state();
  }
  assert.ok(back.maskMax >= 220, `the mask chart caught up: x up to ${back.maskMax}`);
  assert.ok(back.maskUpdates >= 1);
  const lanes = await datasetsOf(p.page, 'mask');
  for (const lane of lanes) assert.equal(lane.data.at(-1)!.x, 220, `${lane.key} ends at step 220`);
});

test('zoom and pan frames neither re-merge chart.js options, lay the legend out again nor read a context\'s font; axes still fit the window exactly, a legend click still hits its entry', async () => {
  const p = await openPanel();
  const steps = 3000;
  const f = syntheticRun({ steps, totalSteps: steps });
  await p.send(snapshotOf(f));
  await expectText(p.byTestId('step'), `${steps} / ${steps}`);
  await nextFrames(p.page);
  // Spies: chart.js's option merge drops its resolver caches (clearCache); the legend's layout measures its rows (_fitRows).
  await p.page.evaluate(`(() => {
    const counts = (window.__spy = {});
    // Reading a context's font serializes it (~4 µs with the theme's font list): nothing should per frame.
    const font = Object.getOwnPropertyDescriptor(CanvasRenderingContext2D.prototype, 'font');
    counts.fontReads = 0;
    Object.defineProperty(CanvasRenderingContext2D.prototype, 'font', { ...font, get() { counts.fontReads++; return font.get.call(this); } });
    window.__mergedScales = {};
    for (const [id, { chart }] of Object.entries(window.__plTrainer.charts)) {
      counts[id] = { merges: 0, legendFits: 0 };
      // A merge replaces the merged scale options (mergeScaleConfig builds a new object).
      window.__mergedScales[id] = chart.config.options.scales;
      const fitRows = chart.legend._fitRows;
      chart.legend._fitRows = function (...args) { counts[id].legendFits++; return fitRows.apply(this, args); };
    }
  })()`);
  const hitBoxes = () => p.page.evaluate(`window.__plTrainer.charts.expert.chart.legend.legendHitBoxes.map((b) => [b.left, b.top, b.width, b.height])`) as Promise<number[][]>;
  const before = await hitBoxes();
  assert.equal(before.length, 4, 'one legend entry per expert');
  // Ten frames of a pan, then of a zoom, as the benchmark drives them.
  interface Limits {
    window: { min: number; max: number };
    decimated: boolean;
    loss: { min: number; max: number };
    kappa2: { min: number; max: number };
  }
  const loss = metricsOf(f.events).map((m) => ({ x: m.step, y: m.loss }));
  const kappa2 = metricsOf(f.events)
    .filter((m) => m.units)
    .map((m) => ({ x: m.step, y: m.units![2].kappa! }));
  const extent = (pts: { x: number; y: number }[], w: { min: number; max: number }) => {
    const ys = pts.filter((q) => q.x >= w.min && q.x <= w.max).map((q) => q.y);
    return { min: Math.min(...ys), max: Math.max(...ys) };
  };
  for (let frame = 0; frame < 20; frame++) {
    const range = frame < 10 ? { min: 100 + 150 * frame, max: 1100 + 150 * frame } : { min: 10 + 100 * (frame - 10), max: steps - 7 };
    const got = (await p.page.evaluate(`(() => {
      const { charts } = window.__plTrainer;
      for (const { chart } of Object.values(charts)) chart.zoomScale('x', ${JSON.stringify(range)}, 'none');
      // Each line's own y limits (FastLineController.getMinMax over what it draws, inside the x window).
      const limits = (id, key) => {
        const chart = charts[id].chart;
        const i = chart.data.datasets.findIndex((d) => d.seriesKey === key);
        const { min, max } = chart.getDatasetMeta(i).controller.getMinMax(chart.scales.y, true);
        return { min, max, decimated: !!chart.data.datasets[i]._decimated, drawn: chart.data.datasets[i].data.map((q) => ({ x: q.x, y: q.y })) };
      };
      const l = limits('loss', 'loss');
      const k = limits('expert', 'kappa:2');
      return { window: ${JSON.stringify(range)}, decimated: l.decimated, loss: { min: l.min, max: l.max }, lossDrawn: l.drawn, kappa2: { min: k.min, max: k.max } };
    })()`)) as Limits & { lossDrawn: { x: number; y: number }[] };
    // chart.js's rule: the extremes of the points a line draws whose x is inside the window. Undecimated
    // (1,000 steps at ~600 px), that is every stored point there; decimated, the drawn points are checked
    // to be stored ones and the limits lie within the stored extremes.
    assert.deepEqual(got.kappa2, extent(kappa2, range), `κ y limits, frame ${frame}`);
    assert.deepEqual(got.loss, extent(got.lossDrawn, range), `loss y limits, frame ${frame}`);
    if (frame < 10) assert.deepEqual(got.loss, extent(loss, range), `loss y limits, frame ${frame}`);
    else {
      assert.ok(got.decimated, `a ${range.max - range.min}-step window is decimated`);
      assert.ok(got.lossDrawn.every((q) => loss[q.x - 1].y === q.y), 'drawn points are stored ones');
      const all = extent(loss, range);
      assert.ok(got.loss.min >= all.min && got.loss.max <= all.max, `frame ${frame}`);
    }
  }
  await p.page.evaluate(`(() => {
    for (const [id, { chart }] of Object.entries(window.__plTrainer.charts)) window.__spy[id].merges = chart.config.options.scales === window.__mergedScales[id] ? 0 : 1;
  })()`);
  const { fontReads, ...counts } = (await p.page.evaluate('window.__spy')) as Record<string, { merges: number; legendFits: number }> & { fontReads: number };
  for (const [id, c] of Object.entries(counts)) assert.deepEqual(c, { merges: 0, legendFits: 0 }, `${id}: 20 zoomed redraws`);
  assert.equal(fontReads, 0, 'reads of a canvas context\'s font in 20 zoomed redraws of every chart');
  assert.deepEqual(await hitBoxes(), before, 'the legend entries are where they were');
  // A click on the third entry hides expert 2's line (its hit box is where the entry is drawn); that
  // changes the datasets, so chart.js merges the options and lays the legend out again.
  const at = await p.page.evaluate(`(() => {
    const chart = window.__plTrainer.charts.expert.chart;
    const box = chart.legend.legendHitBoxes[2];
    const rect = chart.canvas.getBoundingClientRect();
    return { x: rect.left + box.left + box.width / 2, y: rect.top + box.top + box.height / 2 };
  })()`) as { x: number; y: number };
  await p.page.mouse.click(at.x, at.y);
  await nextFrames(p.page);
  const ds = (await chartInfo(p.page, 'expert')).datasets;
  assert.deepEqual(ds.map((d) => [d.key, d.hidden]), [['kappa:0', false], ['kappa:1', false], ['kappa:2', true], ['kappa:3', false]]);
  const after = (await p.page.evaluate(`({ legendFits: window.__spy.expert.legendFits, merged: window.__plTrainer.charts.expert.chart.config.options.scales !== window.__mergedScales.expert })`)) as { legendFits: number; merged: boolean };
  assert.ok(after.merged && after.legendFits >= 1, JSON.stringify(after));
  // chart.js keys some resolvers by scope arrays it builds afresh on each update: its caches are still
  // dropped on every update (only the merge is skipped), so they do not grow however long one zooms.
  const sizes = (await p.page.evaluate(`(() => {
    const chart = window.__plTrainer.charts.expert.chart;
    const sizes = [];
    for (let i = 0; i < 200; i++) {
      chart.zoomScale('x', { min: 100 + i, max: 2000 + i }, 'none');
      sizes.push(chart.config._resolverCache.size);
    }
    return sizes;
  })()`)) as number[];
  assert.ok(Math.max(...sizes) <= sizes[0], `resolver cache over 200 zoomed updates: ${sizes[0]} → max ${Math.max(...sizes)}`);
});
