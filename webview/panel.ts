// The metrics panel's controller. It only talks to the extension host (postMessage), never to the
// trainer: host messages are validated, folded into a RunModel, and drawn at most once per frame.
// main.ts starts it in VS Code; the browser tests start it through their own entry point.
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-checkbox/index.js';
import '@vscode-elements/elements/dist/vscode-progress-bar/index.js';
import './style.css';
import { HostToWebviewSchema, formatNumber, newCommandId, pluralUnit, unitLabel, type SteeringCommand, type WebviewToHost } from '../src/protocol';
import { CHART_CARDS, OPTIONAL_CHARTS, hasLogToggle, type ChartId } from '../src/protocol/panelDocument';
import { MetricChart, type ChartLine } from './charts';
import { parseAlphaInput } from './commands';
import { exportFileName, toCsv, toJson } from './export';
import { OUTSTANDING_STORAGE_KEY, OutstandingCommands, mergeStored, resolveRestored, restoredFrom } from './outstanding';
import { RunModel, cleanDirty, decodeMaskLevel, extraSeriesKey, gateSeriesKey, maskSeriesKey, mergeDirty, shareSeriesKey, unitSeriesKey, type Dirty } from './runModel';
import { MAX_SMOOTHING, Series } from './series';
import { EXPERT_METRICS, fromPersisted, toPersisted, type ExpertMetric, type UiSettings } from './settings';
import { readChartTheme, rgba, seriesColor, type ChartTheme } from './theme';
import { PanelView } from './view';

/** The part of VS Code's webview API this panel uses. */
interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const EXPERT_METRIC_LABELS: Record<ExpertMetric, string> = { kappa: 'κ', mu: 'μ', lf: 'L_f' };


/** How long the panel waits for the host to take a command before it says it has had no answer. */
const UNANSWERED_AFTER_MS = 5000;
const UNANSWERED_REASON = 'the extension host has not received it (is the window disconnected from the remote?); it is applied at most once if it gets through — if the link stays down, reload the window: the panel sends it again then, with the same id';
/** A command restored from before a window reload, waiting for the new extension host to re-attach to its run. */
const RESTORED_WAITING_REASON = 'the window reloaded before the extension host took it; it is sent again, with the same id, once the extension host is connected to the run';

export class PanelController {
  /** What the panel knows (read by the browser tests and benchmarks through their own entry point). */
  readonly model: RunModel;
  readonly charts = {} as Record<ChartId, MetricChart>;
  private readonly view: PanelView;
  private settings: UiSettings;
  private theme: ChartTheme;
  private dirty: Dirty = cleanDirty();
  /** Chart datasets must be rebuilt (settings, theme or the set of series changed). */
  private linesDirty = true;
  /** The compared run is drawn over all of its steps, not cut at this run's length. */
  private compareAllSteps = false;
  /** The loss chart draws the task loss against its own axis (the loss is more than LOSS_SPLIT × it). */
  private taskLossOwnAxis = false;
  private frame = 0;
  /** Charts scrolled out of view (IntersectionObserver): live data does not redraw them until they come back. */
  private readonly outOfView = new Set<ChartId>();
  /** Commands no host has answered yet, persisted with the settings so they survive a window reload. */
  private readonly outstanding: OutstandingCommands;

  constructor(private readonly vscode: VsCodeApi) {
    const state = vscode.getState();
    this.settings = fromPersisted(state);
    this.outstanding = new OutstandingCommands(restoredFrom(state, readStored()));
    this.model = new RunModel(this.settings.smoothing);
    this.view = new PanelView((unit) => this.toggleUnit(unit));
    this.theme = readChartTheme();
    for (const card of CHART_CARDS) {
      const canvas = document.getElementById(`chart-${card.id}`) as HTMLCanvasElement;
      const resetButton = document.querySelector<HTMLButtonElement>(`[data-testid="zoom-reset-${card.id}"]`)!;
      const chart = new MetricChart(canvas, this.theme, {
        formatY: card.id === 'metric' ? (y) => this.formatTaskMetricTick(y) : card.id === 'mask' ? (y) => maskLaneTick(y, this.model.unitIds.length, this.model.view.unitName) : undefined,
        formatTooltipY: card.id === 'mask' ? (y) => decodeMaskLevel(y)?.status ?? formatNumber(y) : undefined,
        yTicks: card.id === 'mask' ? () => this.model.unitIds.map((id) => id + MASK_LANE_LABEL) : undefined,
        onToggleSeries: (key) => this.toggleSeries(key),
        overlayLegend: () => `${this.model.compare?.runId ?? 'compared run'} (dashed)`,
        onZoomChange: (zoomed) => (resetButton.hidden = !zoomed),
        rightAxis: card.id === 'loss',
      });
      resetButton.addEventListener('click', () => {
        chart.resetZoom();
        resetButton.hidden = true;
      });
      this.charts[card.id] = chart;
    }
    this.watchVisibility();
    this.bindControls();
    this.applySettingsToControls();
    this.watchTheme();
    this.invalidate({ header: true, charts: true, units: true, commands: true, structure: true });
  }

  /** Entry point for everything the host posts. */
  receive(data: unknown): void {
    const parsed = HostToWebviewSchema.safeParse(data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      console.warn(`[PL Trainer] ignored an invalid message: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
      return;
    }
    this.invalidate(this.model.apply(parsed.data));
    if (this.outstanding.size) this.reconcileOutstanding();
  }

  /**
   * Settles the commands the host has answered, and resolves those restored from before a reload:
   * sent again with their original id once the host is connected to their run, or refused with the
   * reason when they can no longer apply. Never dropped silently.
   */
  private reconcileOutstanding(): void {
    const view = this.model.view;
    const answered = (id: string) => {
      const entry = view.commands.get(id);
      return entry !== undefined && entry.status !== 'sent';
    };
    let changed = false;
    for (const c of this.outstanding.ownCommands()) if (answered(c.id)) changed = this.outstanding.settle(c.id) || changed;
    for (const c of this.outstanding.restoredCommands()) {
      const runId = this.model.runId;
      const r = resolveRestored(c, { runId, active: view.active, state: view.state, connected: view.connected, known: answered(c.id) });
      if (r.kind === 'taken') changed = this.outstanding.settle(c.id) || changed;
      else if (r.kind === 'refuse') {
        changed = this.outstanding.settle(c.id) || changed;
        this.invalidate(this.model.recordNotSent(c.id, c.command, r.reason));
      } else if (r.kind === 'reissue') {
        this.outstanding.markReissued(c.id);
        this.send(c.id, c.command);
      } else if (runId === c.runId && !view.commands.has(c.id)) {
        // Shown while it waits (a snapshot replaces the table the panel draws).
        this.invalidate(this.model.recordSent(c.id, c.command));
        this.invalidate(this.model.recordUnanswered(c.id, RESTORED_WAITING_REASON));
      }
    }
    if (changed) this.persist();
  }

  /** Settings and unanswered commands, in the webview's persisted state. */
  private persist(): void {
    const outstanding = this.outstanding.toPersisted();
    const settings = toPersisted(this.settings) as object;
    this.vscode.setState(outstanding.length ? { ...settings, outstanding } : settings);
    writeStored(mergeStored(readStored(), outstanding, this.outstanding.resolved));
  }

  private post(message: WebviewToHost): void {
    this.vscode.postMessage(message);
  }

  private issue(command: SteeringCommand): void {
    const id = newCommandId('wv');
    const runId = this.model.runId;
    if (runId !== undefined) {
      // Saved before it is posted: a reload right after still knows of it.
      this.outstanding.add({ id, runId, command });
      for (const old of this.outstanding.takeDropped()) this.invalidate(this.model.recordNotSent(old.id, old.command, 'no answer from the extension host, and too many commands were waiting: not sent again'));
      this.persist();
    }
    this.send(id, command);
  }

  /** Posts a command (new, or restored with its original id) and says so if the host does not answer. */
  private send(id: string, command: SteeringCommand): void {
    this.invalidate(this.model.recordSent(id, command));
    this.post({ type: 'command', id, command });
    // The host answers at once (pending, or a refusal). No answer means the window's link to the
    // extension host is down (a cut Remote-SSH tunnel): say so instead of a silent `sent`. The
    // command keeps its id, so if it gets through later it is applied at most once.
    setTimeout(() => this.invalidate(this.model.recordUnanswered(id, UNANSWERED_REASON)), UNANSWERED_AFTER_MS);
  }

  private toggleUnit(unit: number): void {
    const row = this.model.view.unit(unit);
    if (!row || !this.model.controls().unitToggle) return;
    this.issue({ kind: row.frozen ? 'unfreeze' : 'freeze', unit });
  }

  private submitAlpha(): void {
    const parsed = parseAlphaInput(this.view.alphaInput.value);
    if (!parsed.ok) {
      this.view.showAlphaError(parsed.error);
      return;
    }
    this.view.showAlphaError(undefined);
    if (this.model.controls().setAlpha) this.issue({ kind: 'setAlpha', alpha: parsed.alpha });
  }

  private bindControls(): void {
    const v = this.view;
    const onClick = (el: HTMLElement, action: () => void) =>
      el.addEventListener('click', () => {
        if (!el.hasAttribute('disabled')) action();
      });
    onClick(v.pause, () => this.model.controls().pause && this.issue({ kind: 'pause' }));
    onClick(v.resume, () => this.model.controls().resume && this.issue({ kind: 'resume' }));
    onClick(v.stop, () => this.model.controls().stop && this.issue({ kind: 'stop' }));
    // The Set α button is a submit button of this form, and Enter in the field submits it too.
    v.alphaForm.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitAlpha();
    });
    v.alphaInput.addEventListener('input', () => v.showAlphaError(undefined));
    onClick(v.exportCsv, () => this.post({ type: 'saveFile', fileName: exportFileName(this.model, 'csv'), content: toCsv(this.model) }));
    onClick(v.exportJson, () => this.post({ type: 'saveFile', fileName: exportFileName(this.model, 'json'), content: toJson(this.model) }));
    v.compareRange.addEventListener('click', () => {
      this.compareAllSteps = !this.compareAllSteps;
      this.linesDirty = true;
      this.invalidate({ ...cleanDirty(), header: true, charts: true });
    });
    v.compareClear.addEventListener('click', () => {
      this.invalidate(this.model.clearCompare());
      this.post({ type: 'clearCompare' });
    });

    v.smoothing.max = String(MAX_SMOOTHING);
    v.smoothing.addEventListener('input', () => {
      const w = Math.min(MAX_SMOOTHING, Math.max(0, Number(v.smoothing.value) || 0));
      this.settings.smoothing = w;
      this.model.setSmoothing(w);
      this.settingsChanged();
    });
    for (const card of CHART_CARDS) {
      if (!hasLogToggle(card.id)) continue;
      const box = document.querySelector<HTMLElement & { checked: boolean }>(`[data-testid="log-${card.id}"]`)!;
      box.addEventListener('change', () => {
        this.settings.logScale[card.id] = box.checked;
        this.settingsChanged();
      });
    }
    for (const metric of EXPERT_METRICS) {
      const button = document.querySelector<HTMLButtonElement>(`[data-testid="expert-metric-${metric}"]`)!;
      button.addEventListener('click', () => {
        this.settings.expertMetric = metric;
        this.settingsChanged();
      });
    }
  }

  private toggleSeries(key: string): void {
    const hidden = new Set(this.settings.hidden);
    if (hidden.has(key)) hidden.delete(key);
    else hidden.add(key);
    this.settings.hidden = [...hidden];
    this.settingsChanged();
  }

  /** A view setting changed: persist it, reflect it in the controls, redraw. */
  private settingsChanged(): void {
    this.persist();
    this.applySettingsToControls();
    this.linesDirty = true;
    this.invalidate({ ...cleanDirty(), charts: true });
  }

  private applySettingsToControls(): void {
    const s = this.settings;
    this.view.smoothing.value = String(s.smoothing);
    this.view.smoothingValue.textContent = s.smoothing.toFixed(2);
    for (const card of CHART_CARDS) {
      if (!hasLogToggle(card.id)) continue;
      const box = document.querySelector<HTMLElement & { checked: boolean }>(`[data-testid="log-${card.id}"]`)!;
      box.checked = s.logScale[card.id];
    }
    for (const metric of EXPERT_METRICS) {
      const button = document.querySelector<HTMLButtonElement>(`[data-testid="expert-metric-${metric}"]`)!;
      button.setAttribute('aria-checked', String(metric === s.expertMetric));
    }
  }

  /** VS Code swaps the `--vscode-*` variables (on <html>) and the body class when the theme changes. */
  private watchTheme(): void {
    const observer = new MutationObserver(() => {
      this.theme = readChartTheme();
      for (const chart of Object.values(this.charts)) chart.applyTheme(this.theme);
      this.linesDirty = true;
      this.invalidate({ ...cleanDirty(), charts: true, units: true });
    });
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ['style', 'class'] });
    observer.observe(document.body, { attributes: true, attributeFilter: ['class'] });
  }

  /** Where the compared run is cut: this run's planned steps, when the compared run goes beyond them. */
  private compareLimit(): number | undefined {
    const compare = this.model.compare;
    const planned = this.model.view.totalSteps;
    if (!compare || !(planned > 0)) return undefined;
    return compare.model.view.step > planned ? planned : undefined;
  }

  private formatTaskMetricTick(y: number): string {
    return this.model.view.taskMetric === 'accuracy' ? `${Number((y * 100).toFixed(1))}%` : String(Number(y.toPrecision(4)));
  }

  /** The current run's lines of chart `id`, then the compared run's counterparts of them. */
  private linesFor(id: ChartId): ChartLine[] {
    const lines = this.runLinesFor(this.model, id);
    const compare = this.model.compare;
    // α is steered, not learned, and the mask, the gate and the diagnostics are per run: none is compared.
    if (!compare || id === 'alpha' || id === 'mask' || id === 'gate' || id === 'extra' || id === 'share' || id === 'participation') return lines;
    // Aligned on this run's steps: a longer compared run is cut at this run's planned length, so this
    // run is not squeezed into the left of a long axis ("all steps" shows the whole of it).
    const limit = this.compareAllSteps ? undefined : this.compareLimit();
    const overlay = this.runLinesFor(compare.model, id).map((line) => ({
      ...line,
      series: limit === undefined ? line.series : clipSeries(line.series, limit, this.settings.smoothing),
      key: `compare:${line.key}`,
      label: `${line.label} (${compare.runId})`,
      overlay: true,
    }));
    return [...lines, ...overlay];
  }

  private runLinesFor(m: RunModel, id: ChartId): ChartLine[] {
    const color = (i: number) => seriesColor(this.theme, i);
    switch (id) {
      case 'loss':
        return [
          { key: 'loss', label: 'loss', color: color(0), series: m.seriesFor('loss'), smoothable: true },
          // On its own axis when α·κ̄ dwarfs it: on the loss's axis it would be a flat line at the bottom.
          { key: 'taskLoss', label: 'task loss L_S', color: color(1), series: m.seriesFor('taskLoss'), smoothable: true, rightAxis: m === this.model && this.taskLossOwnAxis },
        ];
      case 'metric':
        return [{ key: 'taskMetric', label: m.view.taskMetric, color: color(2), series: m.seriesFor('taskMetric'), smoothable: true }];
      case 'expert': {
        const metric = this.settings.expertMetric;
        return m.unitIds.map((unit) => {
          const key = unitSeriesKey(metric, unit);
          return { key, label: `${EXPERT_METRIC_LABELS[metric]} ${unitLabel(m.view.unitName, unit)}`, color: color(unit), series: m.seriesFor(key), smoothable: true };
        });
      }
      case 'pl':
        return [
          { key: 'regularizer', label: 'κ̄ (regularizer)', color: color(4), series: m.seriesFor('regularizer'), smoothable: true },
          { key: 'plRatio', label: 'PL* ratio ½‖∇f‖²/(f − f*)', color: color(5), series: m.seriesFor('plRatio'), smoothable: true },
        ];
      case 'share':
        return m.unitIds.map((unit) => ({ key: shareSeriesKey(unit), label: `share ${unitLabel(m.view.unitName, unit)}`, color: color(unit), series: m.seriesFor(shareSeriesKey(unit)), smoothable: true }));
      case 'participation':
        return [{ key: 'participation', label: `participation ratio (of ${m.unitIds.length} ${pluralUnit(m.view.unitName)})`, color: color(2), series: m.seriesFor('participation'), smoothable: true }];
      case 'alpha':
        return [{ key: 'alpha', label: 'α', color: color(3), series: m.seriesFor('alpha'), smoothable: false, stepped: true }];
      case 'mask':
        return m.unitIds.map((unit) => ({ key: maskSeriesKey(unit), label: unitLabel(m.view.unitName, unit), color: color(unit), series: m.seriesFor(maskSeriesKey(unit)), smoothable: false, stepped: true }));
      case 'gate':
        return Array.from({ length: m.gateUnits }, (_, unit) => ({ key: gateSeriesKey(unit), label: `keep p ${unitLabel(m.view.unitName, unit)}`, color: color(unit), series: m.seriesFor(gateSeriesKey(unit)), smoothable: false }));
      case 'extra':
        // Named for a person ("energy expert 0", not `energy/expert0`), coloured by unit like the other per-unit charts.
        return m.extraNames.map((name, i) => {
          const d = describeDiagnostic(name, m.view.unitName);
          return { key: extraSeriesKey(name), label: d.label, color: color(d.unit ?? m.unitIds.length + i), series: m.seriesFor(extraSeriesKey(name)), smoothable: false };
        });
    }
  }

  /**
   * A panel shows a few of its charts at a time: the others need not redraw on every live point.
   * A chart that scrolls back into view (or within a margin of it) redraws on the next frame with
   * everything that arrived meanwhile.
   */
  private watchVisibility(): void {
    if (typeof IntersectionObserver !== 'function') return;
    const observer = new IntersectionObserver(
      (entries) => {
        let back = false;
        for (const entry of entries) {
          const id = (entry.target as HTMLElement).dataset.plChart as ChartId;
          if (entry.isIntersecting) back = this.outOfView.delete(id) || back;
          else this.outOfView.add(id);
        }
        if (back) this.invalidate({ ...cleanDirty(), charts: true });
      },
      { rootMargin: `${VIEW_MARGIN_PX}px 0px` },
    );
    for (const card of CHART_CARDS) {
      const canvas = this.charts[card.id].canvas;
      canvas.dataset.plChart = card.id;
      observer.observe(canvas);
    }
  }

  /** Coalesces redraws: many messages within a frame cost one render. */
  private invalidate(d: Dirty): void {
    mergeDirty(this.dirty, d);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  private render(): void {
    this.frame = 0;
    const d = this.dirty;
    this.dirty = cleanDirty();
    const m = this.model;
    const hasData = m.series.get('loss')?.raw.length ? true : false;
    if (d.header) {
      this.view.renderHeader(m);
      const limit = this.compareLimit();
      this.view.compareRange.hidden = limit === undefined;
      this.view.compareRange.textContent = this.compareAllSteps ? `first ${limit ?? ''} steps` : 'all steps';
      document.getElementById('title-metric')!.textContent = m.view.taskMetric === 'accuracy' ? 'Accuracy' : 'Perplexity';
    }
    this.view.renderControls(m.controls(), hasData);
    if (d.units || d.structure) this.view.renderUnits(m, (unit) => rgba(seriesColor(this.theme, unit)));
    if (d.commands) this.view.renderCommands(m);
    const latest = m.view.latestMetrics;
    const split = latest !== undefined && latest.taskLoss > 0 && latest.loss > LOSS_SPLIT * latest.taskLoss;
    if (split !== this.taskLossOwnAxis) {
      this.taskLossOwnAxis = split;
      this.linesDirty = true;
    }
    const rebuild = this.linesDirty || d.structure;
    if (rebuild || d.charts) {
      for (const card of CHART_CARDS) {
        const chart = this.charts[card.id];
        if (rebuild) {
          chart.setLines(this.linesFor(card.id), {
            smoothing: this.settings.smoothing,
            hidden: new Set(this.settings.hidden),
            logScale: hasLogToggle(card.id) && this.settings.logScale[card.id],
            // One lane per unit, with room above the top line; shares are fractions; participation runs 1…units.
            yRange: card.id === 'mask' ? { min: 0, max: Math.max(1, m.unitIds.length) } : card.id === 'share' ? { min: 0, max: 1 } : card.id === 'participation' ? { min: 1, max: Math.max(2, m.unitIds.length) } : undefined,
            // α is a weight ≥ 0 that is set, not learned: from 0, so a constant α is not drawn as noise on a 1 % axis.
            beginAtZero: card.id === 'alpha',
          });
        }
        // Out of view, only a rebuild draws (settings and new series are rare; live points are not).
        if (rebuild || !this.outOfView.has(card.id)) chart.draw();
        const empty = document.querySelector<HTMLElement>(`[data-testid="empty-${card.id}"]`)!;
        empty.hidden = chart.hasData;
        if (!chart.hasData) empty.textContent = emptyChartText(card.id, m);
        // A run without a gate or diagnostics does not get an empty card for them, nor a mask without pruning.
        const section = document.querySelector<HTMLElement>(`section[data-chart="${card.id}"]`)!;
        if (OPTIONAL_CHARTS.includes(card.id)) section.hidden = !chart.hasData;
        else if (card.id === 'mask') section.hidden = !pruningEnabled(m);
      }
      this.linesDirty = false;
    }
  }
}

/** Charts this close below or above the visible area still redraw live, so scrolling shows them current. */
const VIEW_MARGIN_PX = 100;

/** The localStorage copy of the unanswered commands (see OUTSTANDING_STORAGE_KEY); none where storage is unavailable. */
function readStored(): unknown {
  try {
    const raw = window.localStorage.getItem(OUTSTANDING_STORAGE_KEY);
    return raw === null ? [] : JSON.parse(raw);
  } catch {
    return [];
  }
}

function writeStored(list: readonly unknown[]): void {
  try {
    if (list.length) window.localStorage.setItem(OUTSTANDING_STORAGE_KEY, JSON.stringify(list));
    else window.localStorage.removeItem(OUTSTANDING_STORAGE_KEY);
  } catch {
    // Storage off or full: the webview state still holds them.
  }
}

/** The run's resolved config, as its hello carries it (the trainer's, after defaults). */
function helloConfig(m: RunModel): { monitor?: { every?: unknown }; pruning?: { enabled?: unknown } } | undefined {
  return m.view.hello?.config as { monitor?: { every?: unknown }; pruning?: { enabled?: unknown } } | undefined;
}

/** Pruning is on for this run (the mask chart is about pruning decisions). */
function pruningEnabled(m: RunModel): boolean {
  return helloConfig(m)?.pruning?.enabled === true;
}

/** Charts fed on monitor steps only: until the first one, they say when it comes. */
const MONITOR_CHARTS: readonly ChartId[] = ['expert', 'share', 'mask', 'gate', 'extra'];

/** What an empty chart says: when the first measurement comes, if the run has said how often it measures. */
export function emptyChartText(id: ChartId, m: RunModel): string {
  const every = helloConfig(m)?.monitor?.every;
  if (!MONITOR_CHARTS.includes(id) || typeof every !== 'number' || m.view.lastMonitorStep !== undefined) return 'No data yet';
  const first = Math.min(every, m.view.totalSteps || every);
  return m.view.step < first ? `First measurement at step ${first}` : 'No data yet';
}

/** A copy of `series` up to step `limit` (the compared run, cut at this run's length). */
function clipSeries(series: Series, limit: number, smoothing: number): Series {
  const out = new Series(smoothing);
  for (const p of series.raw) {
    if (p.x > limit) break;
    out.append(p.x, p.y);
  }
  return out;
}

/** What the model families' diagnostics are called (`energy/expert0` → hyperspherical energy of expert 0). */
const DIAGNOSTIC_NAMES: Record<string, string> = { energy: 'energy', orthogonality: '‖QᵀQ − I‖', load: 'load' };

/** A diagnostic's legend label and the unit it belongs to: `energy/expert0` → "energy expert 0", unit 0. */
export function describeDiagnostic(name: string, unitName: string): { label: string; unit?: number } {
  const m = /^([A-Za-z]+)\/(?:[a-z ]*?)(\d+)$/.exec(name);
  if (!m) return { label: name };
  const unit = Number(m[2]);
  return { label: `${DIAGNOSTIC_NAMES[m[1]] ?? m[1]} ${unitLabel(unitName, unit)}`, unit };
}

/** Above this ratio of the loss to the task loss, the task loss gets its own axis. */
export const LOSS_SPLIT = 3;

/** Where in its lane a unit's name sits on the mask chart's axis: mid-lane, between its levels. */
const MASK_LANE_LABEL = 0.5;

function maskLaneTick(y: number, units: number, unitName: string): string {
  const unit = Math.round(y - MASK_LANE_LABEL);
  return unit >= 0 && unit < units && Math.abs(y - unit - MASK_LANE_LABEL) < 1e-9 ? unitLabel(unitName, unit) : '';
}

/** Starts the panel in its webview: the controller, the host's messages, and `ready`. */
export function startPanel(): PanelController {
  // The API object stays in this closure: page scripts (none here, but defence in depth) cannot post as us.
  const vscode = acquireVsCodeApi();
  const controller = new PanelController(vscode);
  window.addEventListener('message', (event: MessageEvent) => controller.receive(event.data));
  // The host answers with a snapshot; anything it sent before this was dropped by design.
  vscode.postMessage({ type: 'ready' } satisfies WebviewToHost);
  return controller;
}
