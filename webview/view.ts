// Renders the run model into the static skeleton from src/protocol/panelDocument.ts: header, steering
// controls, unit table and command log. Text goes in through textContent only; nothing from a message
// becomes markup.
import {
  backendLabel,
  capitalize,
  describeCommand,
  describeDampingFloor,
  describeInactive,
  describeNotMeasurable,
  describeStatus,
  MIN_SERVED,
  formatNumber,
  formatRate,
  formatTaskMetric,
  pluralUnit,
  unitLabel,
  type CommandEntry,
  type ControlState,
} from '../src/protocol';
import { unitChartTitle } from '../src/protocol/panelDocument';
import type { RunModel } from './runModel';

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

interface UnitRowElements {
  row: HTMLTableRowElement;
  kappa: HTMLElement;
  mu: HTMLElement;
  lf: HTMLElement;
  frozen: HTMLElement;
  pruned: HTMLElement;
  toggle: HTMLElement;
  swatch: HTMLElement;
  label: HTMLElement;
  /** "frozen" / "pruned" next to the name, shown where the Frozen and Pruned columns give way (narrow panels). */
  flags: HTMLElement;
  /** "inactive" badge next to the name: the model barely routes through the unit (shown whatever its κ). */
  inactive: HTMLElement;
}

function placeholderRow(unitName: string): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.className = 'placeholder';
  const td = document.createElement('td');
  td.colSpan = 7;
  td.textContent = `No ${pluralUnit(unitName)} yet`;
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
  readonly runMessageBox = byTestId(document, 'run-message-box');
  readonly runMessageMore = byTestId<HTMLButtonElement>(document, 'run-message-more');
  readonly runMessageRemedy = byTestId(document, 'run-message-remedy');
  /** The unit the banner's remedy button freezes (a damping-floor warning's unit). */
  private remedyUnit: number | undefined;
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
  readonly unitsTitle = byTestId(document, 'units-title');
  readonly unitColumn = byTestId(document, 'unit-column');
  readonly unitChartTitle = document.getElementById('title-expert')!;
  readonly compare = byTestId(document, 'compare');
  readonly compareLabel = byTestId(document, 'compare-label');
  readonly compareClear = byTestId<HTMLButtonElement>(document, 'compare-clear');
  readonly compareRange = byTestId<HTMLButtonElement>(document, 'compare-range');
  private readonly unitElements = new Map<number, UnitRowElements>();
  private readonly commandElements = new Map<string, { item: HTMLLIElement; status: HTMLElement }>();

  constructor(private readonly onToggleUnit: (unit: number) => void) {
    this.runMessageMore.addEventListener('click', () => {
      const expanded = this.runMessageBox.classList.toggle('expanded');
      this.runMessageMore.setAttribute('aria-expanded', String(expanded));
      setText(this.runMessageMore, expanded ? 'Less' : 'More');
    });
    this.runMessageRemedy.addEventListener('click', () => {
      if (this.remedyUnit !== undefined && !this.runMessageRemedy.hasAttribute('disabled')) this.onToggleUnit(this.remedyUnit);
    });
  }

  renderHeader(m: RunModel): void {
    const v = m.view;
    setText(this.runId, m.runId ?? 'No run');
    this.runId.title = m.run?.runDir ?? '';
    const state = v.state ?? (m.runId ? 'unknown' : 'no run');
    setText(this.runState, state);
    this.runState.dataset.state = v.state ?? 'none';
    // An ended run has nothing to reconnect to: it never reads "reconnecting".
    const linked = v.connected || !v.active;
    setText(this.connection, !m.run ? '—' : linked ? 'connected' : 'reconnecting…');
    this.connection.dataset.connected = String(m.run !== null && linked);
    setText(this.step, m.runId ? `${v.step} / ${v.totalSteps}` : '—');
    const backend = v.backend;
    setText(this.backend, backend ? backendLabel(backend) : '—');
    this.backend.title = backend?.detail ?? '';
    setText(this.alpha, v.alpha === undefined ? '—' : formatNumber(v.alpha));
    const latest = v.latestMetrics;
    setText(this.latestLoss, latest ? formatNumber(latest.loss) : '—');
    setText(this.latestMetricLabel, v.taskMetric === 'accuracy' ? 'Accuracy' : 'Perplexity');
    setText(this.latestMetric, latest ? formatTaskMetric(latest.taskMetric, v.taskMetric) : '—');
    setText(this.speed, latest ? formatRate(latest.stepsPerSec) : '—');
    // The family's own word for a unit: "Heads", "Channel groups", "Experts".
    setText(this.unitsTitle, capitalize(pluralUnit(v.unitName)));
    setText(this.unitColumn, capitalize(v.unitName));
    setText(this.unitChartTitle, unitChartTitle(v.unitName));
    // Indeterminate while the trainer starts up (loading data, picking a backend).
    this.progress.max = Math.max(1, v.totalSteps);
    this.progress.value = v.state === 'starting' ? undefined : Math.min(v.step, v.totalSteps);
    const message = this.runMessageFor(m);
    const changed = this.runMessage.textContent !== (message?.text ?? '');
    this.runMessageBox.hidden = message === undefined;
    setText(this.runMessage, message?.text ?? '');
    this.runMessage.title = message?.text ?? '';
    this.runMessageBox.dataset.level = message?.level ?? '';
    if (changed) {
      // A new message starts on one line; More is offered when it does not fit.
      this.runMessageBox.classList.remove('expanded');
      setText(this.runMessageMore, 'More');
      this.runMessageMore.setAttribute('aria-expanded', 'false');
    }
    this.runMessageMore.hidden = !message || (!this.runMessageBox.classList.contains('expanded') && this.runMessage.scrollWidth <= this.runMessage.clientWidth);
    // A unit at the damping floor: the remedy the message names, as a button.
    const floor = /^damping-floor\/(\d+)$/.exec(message?.topic ?? '');
    const unit = floor ? v.unit(Number(floor[1])) : undefined;
    this.remedyUnit = unit && !unit.frozen && !unit.pruned ? unit.id : undefined;
    this.runMessageRemedy.hidden = this.remedyUnit === undefined;
    if (this.remedyUnit !== undefined) {
      setText(this.runMessageRemedy, `Freeze ${unitLabel(v.unitName, this.remedyUnit)}`);
      setEnabled(this.runMessageRemedy, m.controls().unitToggle && !v.unitCommandPending(this.remedyUnit));
    }
    this.compare.hidden = m.compare === null;
    setText(this.compareLabel, m.compare?.runId ?? '');
  }

  private runMessageFor(m: RunModel): { text: string; level: 'info' | 'warn' | 'error'; topic?: string } | undefined {
    const v = m.view;
    if (v.state === 'failed') return { text: `Training failed${v.stateReason ? `: ${v.stateReason}` : ''}`, level: 'error' };
    if (v.state === 'stopped' && v.stateReason) return { text: `Stopped: ${v.stateReason}`, level: 'info' };
    if (v.problem) return { text: v.problem.message, level: v.problem.level, topic: v.active ? v.problem.topic : undefined };
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

  /** `colorOf(id)`: the unit's line colour, so the table doubles as the per-unit chart's legend. */
  renderUnits(m: RunModel, colorOf: (unit: number) => string): void {
    const v = m.view;
    const units = v.units;
    for (const [id, els] of this.unitElements) {
      if (!v.unit(id)) {
        els.row.remove();
        this.unitElements.delete(id);
      }
    }
    const placeholder = this.expertRows.querySelector('tr.placeholder');
    if (units.length && placeholder) placeholder.remove();
    if (!units.length && !placeholder) this.expertRows.appendChild(placeholderRow(v.unitName));
    const steerable = m.controls().unitToggle;
    let previous: HTMLTableRowElement | undefined;
    for (const e of units) {
      const id = e.id;
      let els = this.unitElements.get(id);
      if (!els) {
        els = this.createUnitRow(id);
        this.unitElements.set(id, els);
      }
      // Rows stay in id order even when a unit first shows up late.
      if (!els.row.isConnected || els.row.previousElementSibling !== (previous ?? null)) {
        if (previous) previous.after(els.row);
        else this.expertRows.prepend(els.row);
      }
      previous = els.row;
      els.swatch.style.backgroundColor = colorOf(id);
      // The unit is an expert, a head or a channel group, by model family.
      setText(els.label, capitalize(unitLabel(v.unitName, id)));
      // null: the unit serves too few probe examples for a κ; it reads "—" with the reason, never a number.
      setText(els.kappa, formatNumber(e.kappa));
      const atFloor = v.atDampingFloor(e);
      els.kappa.dataset.floor = String(atFloor);
      els.kappa.dataset.measurable = String(e.kappa !== null);
      els.kappa.title = e.kappa === null ? describeNotMeasurable(v.unitName, e.served, MIN_SERVED) : atFloor ? describeDampingFloor(v.unitName, v.damping) : '';
      const inactive = v.inactive(e);
      els.row.dataset.inactive = String(inactive);
      els.inactive.hidden = !inactive;
      // Text only while shown: a hidden badge must not read as part of the unit's name.
      setText(els.inactive, inactive ? 'inactive' : '');
      els.inactive.title = inactive ? describeInactive(v.unitName, e.share) : '';
      setText(els.mu, formatNumber(e.mu));
      setText(els.lf, formatNumber(e.lf));
      setText(els.frozen, e.frozen ? 'yes' : 'no');
      setText(els.pruned, e.pruned ? 'yes' : 'no');
      setText(els.flags, e.pruned ? 'pruned' : e.frozen ? 'frozen' : '');
      els.row.dataset.frozen = String(e.frozen);
      els.row.dataset.pruned = String(e.pruned);
      const pending = v.unitCommandPending(id);
      setText(els.toggle, pending ? (e.frozen ? 'Unfreezing…' : 'Freezing…') : e.frozen ? 'Unfreeze' : 'Freeze');
      els.toggle.dataset.action = e.frozen ? 'unfreeze' : 'freeze';
      els.toggle.title = e.pruned ? `Pruned ${pluralUnit(v.unitName)} cannot be frozen or unfrozen` : '';
      setEnabled(els.toggle, steerable && !pending && !e.pruned);
    }
    setText(this.expertsMeasured, v.lastMonitorStep === undefined ? 'not measured yet' : `measured at step ${v.lastMonitorStep}`);
  }

  private createUnitRow(id: number): UnitRowElements {
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
    const flags = document.createElement('span');
    flags.className = 'unit-flags';
    flags.dataset.testid = `flags-${id}`;
    const inactive = document.createElement('span');
    inactive.className = 'badge-inactive';
    inactive.dataset.testid = `inactive-${id}`;
    inactive.hidden = true;
    name.append(swatch, label, inactive, flags);
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
      if (!toggle.hasAttribute('disabled')) this.onToggleUnit(id);
    });
    actionCell.appendChild(toggle);
    return { row, kappa, mu, lf, frozen, pruned, toggle, swatch, label, flags, inactive };
  }

  /** Newest command first; entries are keyed by id and updated in place. */
  renderCommands(m: RunModel): void {
    const placeholder = this.commandLog.querySelector('li.placeholder');
    if (m.view.commands.size && placeholder) placeholder.remove();
    for (const [id, els] of this.commandElements) {
      if (!m.view.commands.has(id)) {
        els.item.remove();
        this.commandElements.delete(id);
      }
    }
    const commands = m.view.commands;
    for (const c of commands.values()) {
      let els = this.commandElements.get(c.id);
      if (!els) {
        els = this.createCommandItem(c, m.view.unitName);
        this.commandElements.set(c.id, els);
        this.commandLog.prepend(els.item);
      }
      setText(els.status, describeStatus(c));
      els.item.dataset.status = c.status;
    }
    if (!commands.size && !this.commandLog.querySelector('li.placeholder')) {
      const li = document.createElement('li');
      li.className = 'placeholder';
      li.textContent = 'No commands yet';
      this.commandLog.appendChild(li);
    }
  }

  private createCommandItem(c: CommandEntry, unitName: string): { item: HTMLLIElement; status: HTMLElement } {
    const item = document.createElement('li');
    item.dataset.testid = `command-${c.id}`;
    const what = document.createElement('span');
    what.className = 'command-what';
    what.textContent = describeCommand(c.command, unitName);
    const status = document.createElement('span');
    status.className = 'command-status';
    item.title = `command id ${c.id}`;
    item.append(what, status);
    return { item, status };
  }
}
