// Renders the run model into the static skeleton from html.ts: header, steering controls, expert
// table and command log. Text goes in through textContent only; nothing from a message becomes markup.
import { kappaAtDampingFloor } from '../src/protocol';
import { describeCommand, describeDampingFloor, describeStatus, formatBackend, formatNumber, formatRate, formatTaskMetric } from './format';
import type { CommandEntry, ControlState, RunModel } from './runModel';

function byTestId<T extends Element = HTMLElement>(root: ParentNode, id: string): T {
  const el = root.querySelector<T & Element>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`panel markup lacks data-testid="${id}"`);
  return el as T;
}

function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** Enables/disables a native or vscode-elements button; aria-disabled keeps assistive tech (and Playwright) in step. */
export function setEnabled(el: HTMLElement, enabled: boolean): void {
  const button = el as HTMLElement & { disabled: boolean };
  if (button.disabled === !enabled) return;
  button.disabled = !enabled;
  el.toggleAttribute('disabled', !enabled);
  el.setAttribute('aria-disabled', String(!enabled));
}

interface ExpertRowElements {
  row: HTMLTableRowElement;
  kappa: HTMLElement;
  mu: HTMLElement;
  lf: HTMLElement;
  frozen: HTMLElement;
  pruned: HTMLElement;
  toggle: HTMLElement;
  swatch: HTMLElement;
  label: HTMLElement;
}

function placeholderRow(): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.className = 'placeholder';
  const td = document.createElement('td');
  td.colSpan = 7;
  td.textContent = 'No experts yet';
  tr.appendChild(td);
  return tr;
}

export class PanelView {
  readonly runId = byTestId(document, 'run-id');
  readonly runState = byTestId(document, 'run-state');
  readonly connection = byTestId(document, 'connection');
  readonly step = byTestId(document, 'step');
  readonly backend = byTestId(document, 'backend');
  readonly alpha = byTestId(document, 'alpha');
  readonly latestLoss = byTestId(document, 'latest-loss');
  readonly latestMetricLabel = byTestId(document, 'latest-metric-label');
  readonly latestMetric = byTestId(document, 'latest-metric');
  readonly speed = byTestId(document, 'speed');
  readonly progress = byTestId<HTMLElement & { value?: number; max: number }>(document, 'progress');
  readonly runMessage = byTestId(document, 'run-message');
  readonly pause = byTestId(document, 'btn-pause');
  readonly resume = byTestId(document, 'btn-resume');
  readonly stop = byTestId(document, 'btn-stop');
  readonly alphaForm = byTestId<HTMLFormElement>(document, 'alpha-form');
  readonly alphaInput = byTestId<HTMLInputElement>(document, 'alpha-input');
  readonly setAlpha = byTestId(document, 'btn-set-alpha');
  readonly alphaError = byTestId(document, 'alpha-error');
  readonly smoothing = byTestId<HTMLInputElement>(document, 'smoothing');
  readonly smoothingValue = byTestId(document, 'smoothing-value');
  readonly exportCsv = byTestId(document, 'btn-export-csv');
  readonly exportJson = byTestId(document, 'btn-export-json');
  readonly expertRows = byTestId<HTMLTableSectionElement>(document, 'expert-rows');
  readonly expertsMeasured = byTestId(document, 'experts-measured');
  readonly commandLog = byTestId<HTMLOListElement>(document, 'command-log');
  readonly compare = byTestId(document, 'compare');
  readonly compareLabel = byTestId(document, 'compare-label');
  readonly compareClear = byTestId<HTMLButtonElement>(document, 'compare-clear');
  private readonly expertElements = new Map<number, ExpertRowElements>();
  private readonly commandElements = new Map<string, { item: HTMLLIElement; status: HTMLElement }>();

  constructor(private readonly onToggleExpert: (expert: number) => void) {}

  renderHeader(m: RunModel): void {
    setText(this.runId, m.runId ?? 'No run');
    this.runId.title = m.run?.runDir ?? '';
    const state = m.state ?? (m.runId ? 'unknown' : 'no run');
    setText(this.runState, state);
    this.runState.dataset.state = m.state ?? 'none';
    const connection = !m.run ? '—' : m.connected ? 'connected' : 'reconnecting…';
    setText(this.connection, connection);
    this.connection.dataset.connected = String(m.connected);
    setText(this.step, m.runId ? `${m.step} / ${m.totalSteps}` : '—');
    const backend = m.backend;
    setText(this.backend, backend ? formatBackend(backend) : '—');
    this.backend.title = backend?.detail ?? '';
    setText(this.alpha, m.alpha === undefined ? '—' : formatNumber(m.alpha));
    const latest = m.latestMetrics;
    setText(this.latestLoss, latest ? formatNumber(latest.loss) : '—');
    setText(this.latestMetricLabel, m.taskMetric === 'accuracy' ? 'Accuracy' : 'Perplexity');
    setText(this.latestMetric, latest ? formatTaskMetric(latest.taskMetric, m.taskMetric) : '—');
    setText(this.speed, latest ? formatRate(latest.stepsPerSec) : '—');
    // Indeterminate while the trainer starts up (loading data, picking a backend).
    this.progress.max = Math.max(1, m.totalSteps);
    this.progress.value = m.state === 'starting' ? undefined : Math.min(m.step, m.totalSteps);
    const message = this.runMessageFor(m);
    this.runMessage.hidden = message === undefined;
    setText(this.runMessage, message?.text ?? '');
    this.runMessage.title = message?.text ?? '';
    this.runMessage.dataset.level = message?.level ?? '';
    this.compare.hidden = m.compare === null;
    setText(this.compareLabel, m.compare?.runId ?? '');
  }

  private runMessageFor(m: RunModel): { text: string; level: 'info' | 'warn' | 'error' } | undefined {
    if (m.state === 'failed') return { text: `Training failed${m.stateReason ? `: ${m.stateReason}` : ''}`, level: 'error' };
    if (m.state === 'stopped' && m.stateReason) return { text: `Stopped: ${m.stateReason}`, level: 'info' };
    if (m.lastProblem) return { text: m.lastProblem.message, level: m.lastProblem.level };
    return undefined;
  }

  renderControls(c: ControlState, hasData: boolean): void {
    setEnabled(this.pause, c.pause);
    setEnabled(this.resume, c.resume);
    setEnabled(this.stop, c.stop);
    setEnabled(this.setAlpha, c.setAlpha);
    this.alphaInput.disabled = !c.setAlpha;
    setEnabled(this.exportCsv, hasData);
    setEnabled(this.exportJson, hasData);
  }

  showAlphaError(message: string | undefined): void {
    this.alphaError.hidden = message === undefined;
    setText(this.alphaError, message ?? '');
    this.alphaInput.setAttribute('aria-invalid', String(message !== undefined));
  }

  /** `colorOf(id)`: the expert's line colour, so the table doubles as the per-expert chart's legend. */
  renderExperts(m: RunModel, colorOf: (expert: number) => string): void {
    const ids = m.expertIds;
    for (const [id, els] of this.expertElements) {
      if (!m.experts.has(id)) {
        els.row.remove();
        this.expertElements.delete(id);
      }
    }
    const placeholder = this.expertRows.querySelector('tr.placeholder');
    if (ids.length && placeholder) placeholder.remove();
    if (!ids.length && !placeholder) this.expertRows.appendChild(placeholderRow());
    const steerable = m.controls().expertToggle;
    let previous: HTMLTableRowElement | undefined;
    for (const id of ids) {
      const e = m.experts.get(id)!;
      let els = this.expertElements.get(id);
      if (!els) {
        els = this.createExpertRow(id);
        this.expertElements.set(id, els);
      }
      // Rows stay in id order even when an expert first shows up late.
      if (!els.row.isConnected || els.row.previousElementSibling !== (previous ?? null)) {
        if (previous) previous.after(els.row);
        else this.expertRows.prepend(els.row);
      }
      previous = els.row;
      els.swatch.style.backgroundColor = colorOf(id);
      // The unit is an expert, an attention head or a channel group, by model family.
      setText(els.label, `${m.unitName[0].toUpperCase()}${m.unitName.slice(1)} ${id}`);
      setText(els.kappa, e.kappa === undefined ? '—' : formatNumber(e.kappa));
      const atFloor = e.kappa !== undefined && kappaAtDampingFloor(e.kappa, m.damping);
      els.kappa.dataset.floor = String(atFloor);
      els.kappa.title = atFloor ? describeDampingFloor(m.unitName, m.damping) : '';
      setText(els.mu, e.mu === undefined ? '—' : formatNumber(e.mu));
      setText(els.lf, e.lf === undefined ? '—' : formatNumber(e.lf));
      setText(els.frozen, e.frozen ? 'yes' : 'no');
      setText(els.pruned, e.pruned ? 'yes' : 'no');
      els.row.dataset.frozen = String(e.frozen);
      els.row.dataset.pruned = String(e.pruned);
      const pending = m.expertCommandPending(id);
      setText(els.toggle, pending ? (e.frozen ? 'Unfreezing…' : 'Freezing…') : e.frozen ? 'Unfreeze' : 'Freeze');
      els.toggle.dataset.action = e.frozen ? 'unfreeze' : 'freeze';
      els.toggle.title = e.pruned ? `Pruned ${m.unitName}s cannot be frozen or unfrozen` : '';
      setEnabled(els.toggle, steerable && !pending && !e.pruned);
    }
    setText(this.expertsMeasured, m.lastMonitorStep === undefined ? 'not measured yet' : `measured at step ${m.lastMonitorStep}`);
  }

  private createExpertRow(id: number): ExpertRowElements {
    const row = document.createElement('tr');
    row.dataset.testid = `expert-${id}`;
    const cell = (testId: string, className = ''): HTMLElement => {
      const td = document.createElement('td');
      td.dataset.testid = testId;
      if (className) td.className = className;
      row.appendChild(td);
      return td;
    };
    const name = cell(`expert-name-${id}`);
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.setAttribute('aria-hidden', 'true');
    const label = document.createElement('span');
    label.textContent = `Expert ${id}`;
    name.append(swatch, label);
    const kappa = cell(`kappa-${id}`, 'num');
    const mu = cell(`mu-${id}`, 'num');
    const lf = cell(`lf-${id}`, 'num');
    const frozen = cell(`frozen-${id}`, 'flag');
    const pruned = cell(`pruned-${id}`, 'flag');
    const actionCell = cell(`action-${id}`, 'action');
    const toggle = document.createElement('vscode-button');
    toggle.setAttribute('secondary', '');
    toggle.dataset.testid = `freeze-${id}`;
    toggle.addEventListener('click', () => {
      if (!toggle.hasAttribute('disabled')) this.onToggleExpert(id);
    });
    actionCell.appendChild(toggle);
    return { row, kappa, mu, lf, frozen, pruned, toggle, swatch, label };
  }

  /** Newest command first; entries are keyed by id and updated in place. */
  renderCommands(m: RunModel): void {
    const placeholder = this.commandLog.querySelector('li.placeholder');
    if (m.commands.size && placeholder) placeholder.remove();
    for (const [id, els] of this.commandElements) {
      if (!m.commands.has(id)) {
        els.item.remove();
        this.commandElements.delete(id);
      }
    }
    for (const c of m.commands.values()) {
      let els = this.commandElements.get(c.id);
      if (!els) {
        els = this.createCommandItem(c);
        this.commandElements.set(c.id, els);
        this.commandLog.prepend(els.item);
      }
      setText(els.status, describeStatus(c));
      els.item.dataset.status = c.status;
    }
    if (!m.commands.size && !this.commandLog.querySelector('li.placeholder')) {
      const li = document.createElement('li');
      li.className = 'placeholder';
      li.textContent = 'No commands yet';
      this.commandLog.appendChild(li);
    }
  }

  private createCommandItem(c: CommandEntry): { item: HTMLLIElement; status: HTMLElement } {
    const item = document.createElement('li');
    item.dataset.testid = `command-${c.id}`;
    const what = document.createElement('span');
    what.className = 'command-what';
    what.textContent = describeCommand(c.command);
    const status = document.createElement('span');
    status.className = 'command-status';
    item.title = `command id ${c.id}`;
    item.append(what, status);
    return { item, status };
  }
}
