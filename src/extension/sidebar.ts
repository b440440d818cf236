// The sidebar "Metrics" view: run state, step and throughput, backend, α, loss and the task metric,
// and a per-unit table (experts, heads or channel groups) with inline freeze/unfreeze; below it the
// runs recorded in the workspace. Everything it shows is the run's RunView, as the panel shows it.
//
// Refreshing: the rows are stable objects whose tree items are read live from the run, and a change
// refreshes only the rows whose text changed. Refreshing the whole tree on every metrics tick made VS
// Code cancel each refresh with the next one while the workbench was busy (after a window reload the
// trainer's replay and the restored panel load it): "Unable to refresh tree view … Canceled", and
// the Step row stopped moving. The whole tree is refreshed only when its shape changes.
import * as vscode from 'vscode';
import { backendLabel, capitalize, describeDampingFloor, describeInactive, describeKappa, describeNotMeasurable, describeTaskMetric, formatNumber, formatShare, MIN_SERVED, pluralUnit, unitLabel } from '../protocol';
import { RunManager } from './runManager';
import { listRunDirs } from './run/runDirectory';
import { recordedName, runLabel } from './run/runLabel';
import { RunSession } from './run/runSession';
import { STATE_ICONS } from './stateIcons';

export type InfoRow = 'run' | 'step' | 'backend' | 'alpha' | 'loss';

export type MetricsNode =
  | { kind: 'info'; row: InfoRow; session: RunSession }
  | { kind: 'units'; session: RunSession }
  | { kind: 'unit'; session: RunSession; unitId: number }
  | { kind: 'runs' }
  | { kind: 'run'; dir: string; label: string; description: string; tooltip: string };

/** The current run's rows, kept while it stays current so that refreshes can name them. */
interface RunRows {
  session: RunSession;
  info: Extract<MetricsNode, { kind: 'info' }>[];
  units: Extract<MetricsNode, { kind: 'units' }>;
  unitRows: Extract<MetricsNode, { kind: 'unit' }>[];
}

export class MetricsTreeProvider implements vscode.TreeDataProvider<MetricsNode>, vscode.Disposable {
  private readonly _onDidChangeTreeData = new vscode.EventEmitter<MetricsNode | MetricsNode[] | undefined>();
  readonly onDidChangeTreeData = this._onDidChangeTreeData.event;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly subs: vscode.Disposable[];
  private readonly runsNode: Extract<MetricsNode, { kind: 'runs' }> = { kind: 'runs' };
  private rows: RunRows | undefined;
  /** What each row showed when last handed to VS Code: a row is refreshed only when this changes. */
  private readonly shown = new Map<MetricsNode, string>();
  private shapeChanged = false;
  private runsChanged = false;

  constructor(private readonly runs: RunManager) {
    this.subs = [
      runs.onDidChange(() => this.refreshSoon()),
      runs.onDidChangeCurrent(() => {
        this.shapeChanged = true;
        this.refreshSoon();
      }),
      // A run started, ended or was resumed: the Runs list shows its state.
      runs.onDidAnnounceEnd(() => this.refreshRuns()),
      runs.onDidTrack(() => this.refreshRuns()),
    ];
  }

  /** The Runs list changed (a run was deleted, started or ended). */
  refreshRuns(): void {
    this.runsChanged = true;
    this.refreshSoon();
  }

  /** Refreshes are throttled: metrics can arrive hundreds of times a second. */
  refreshSoon(): void {
    this.refreshTimer ??= setTimeout(() => {
      this.refreshTimer = undefined;
      this.flushRefresh();
    }, 400);
  }

  private flushRefresh(): void {
    const current = this.runs.current;
    const units = current?.view.units.length ?? 0;
    if (this.shapeChanged || current !== this.rows?.session || units !== (this.rows?.unitRows.length ?? 0)) {
      this.shapeChanged = this.runsChanged = false;
      this.shown.clear();
      // The rows VS Code is about to fetch: later ticks refresh them one by one.
      if (current) this.rowsFor(current);
      else this.rows = undefined;
      this._onDidChangeTreeData.fire(undefined);
      return;
    }
    const changed: MetricsNode[] = [];
    if (this.rows) {
      for (const node of [...this.rows.info, this.rows.units, ...this.rows.unitRows]) {
        if (this.shown.get(node) !== signature(this.getTreeItem(node))) changed.push(node);
      }
    }
    if (this.runsChanged) {
      this.runsChanged = false;
      changed.push(this.runsNode);
    }
    if (changed.length) this._onDidChangeTreeData.fire(changed);
  }

  getChildren(node?: MetricsNode): MetricsNode[] {
    if (!node) {
      const s = this.runs.current;
      const out: MetricsNode[] = [];
      if (s) {
        const rows = this.rowsFor(s);
        out.push(...rows.info, rows.units);
      } else {
        this.rows = undefined;
      }
      // With no run at all, an empty tree lets VS Code show the welcome content (package.json viewsWelcome).
      if (s || this.recordedRuns().length) out.push(this.runsNode);
      return out;
    }
    if (node.kind === 'units') return this.rows?.session === node.session ? this.rows.unitRows : [];
    if (node.kind === 'runs') return this.recordedRuns();
    return [];
  }

  private rowsFor(session: RunSession): RunRows {
    const count = session.view.units.length;
    if (this.rows?.session !== session || this.rows.unitRows.length !== count) {
      const info = (['run', 'step', 'backend', 'alpha', 'loss'] as const).map((row) => ({ kind: 'info' as const, row, session }));
      this.rows = {
        session,
        info,
        units: { kind: 'units', session },
        unitRows: session.view.units.map((u) => ({ kind: 'unit' as const, session, unitId: u.id })),
      };
    }
    return this.rows;
  }

  private recordedRuns(): MetricsNode[] {
    const out: MetricsNode[] = [];
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      for (const { dir, info } of listRunDirs(this.runs.runsRoot(folder.uri.fsPath)).slice(0, 50)) {
        out.push({
          kind: 'run',
          dir,
          label: runLabel(dir, recordedName(dir), info?.startedAt),
          description: info ? `${info.state} · step ${info.step}/${info.totalSteps}` : 'no run.json',
          tooltip: `${info?.runId ?? ''}\n${dir}`.trim(),
        });
      }
    }
    return out;
  }

  getTreeItem(node: MetricsNode): vscode.TreeItem {
    const item = this.itemFor(node);
    this.shown.set(node, signature(item));
    return item;
  }

  private itemFor(node: MetricsNode): vscode.TreeItem {
    switch (node.kind) {
      case 'info':
        return infoItem(node.row, node.session);
      case 'units': {
        const v = node.session.view;
        const item = new vscode.TreeItem(capitalize(pluralUnit(v.unitName)), vscode.TreeItemCollapsibleState.Expanded);
        // κ̄ as the panel's regularizer chart names it: the κ of the model's kernel, the regularizer.
        const regularizer = v.latestMetrics?.regularizer;
        item.description = v.lastMonitorStep === undefined || regularizer === undefined ? 'waiting for the first measurement' : `κ̄ ${formatNumber(regularizer)} (regularizer)`;
        item.tooltip = "κ̄: the condition number of the model's tangent kernel on the probe (the trainable units' kernels as the model uses them), the term α multiplies in the loss";
        item.iconPath = new vscode.ThemeIcon('layers');
        item.id = `units-${node.session.runId}`;
        return item;
      }
      case 'unit': {
        const v = node.session.view;
        const e = v.units.find((u) => u.id === node.unitId);
        const item = new vscode.TreeItem(unitLabel(v.unitName, node.unitId));
        item.id = `unit-${node.session.runId}-${node.unitId}`;
        if (!e) return item;
        const atFloor = v.atDampingFloor(e);
        const inactive = v.inactive(e);
        const flags = [inactive ? 'inactive' : '', e.frozen ? 'frozen' : '', e.pruned ? 'pruned' : '', atFloor ? 'at the damping floor' : ''].filter(Boolean).join(', ');
        const keep = v.gate?.[e.id];
        // A null κ (too few served examples) reads "κ not measurable", and then μ and L_f are left out.
        // The unit's routing share next to κ: a well-conditioned unit the model does not use is no good unit.
        const share = e.share !== undefined ? ` · share ${formatShare(e.share)}` : '';
        const measures = e.kappa === null ? `${describeKappa(null)}${share}` : `${describeKappa(e.kappa)}${share} · μ ${formatNumber(e.mu)} · L ${formatNumber(e.lf)}`;
        item.description = `${measures}${keep !== undefined && !e.pruned ? ` · keep ${keep.toFixed(2)}` : ''}${flags ? ` · ${flags}` : ''}`;
        item.iconPath = new vscode.ThemeIcon(e.frozen ? 'lock' : e.pruned ? 'circle-slash' : atFloor || inactive ? 'warning' : 'circle-outline');
        const why = [inactive ? describeInactive(v.unitName, e.share) : '', e.kappa === null ? describeNotMeasurable(v.unitName, e.served, MIN_SERVED) : '', atFloor ? describeDampingFloor(v.unitName, v.damping) : ''].filter(Boolean);
        if (why.length) item.tooltip = why.join('\n\n');
        // Drives the inline freeze/unfreeze action (package.json menus view/item/context).
        item.contextValue = e.pruned ? 'unit.pruned' : e.frozen ? 'unit.frozen' : 'unit.trainable';
        return item;
      }
      case 'runs': {
        const item = new vscode.TreeItem('Runs', vscode.TreeItemCollapsibleState.Collapsed);
        item.iconPath = new vscode.ThemeIcon('history');
        item.id = 'runs';
        return item;
      }
      case 'run': {
        const item = new vscode.TreeItem(node.label);
        item.description = node.description;
        item.tooltip = node.tooltip;
        item.iconPath = new vscode.ThemeIcon('folder');
        item.contextValue = 'run';
        item.id = `run-${node.dir}`;
        item.command = { command: 'plTrainer.openRun', title: 'Open run', arguments: [node.dir] };
        return item;
      }
    }
  }

  dispose(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    for (const s of this.subs) s.dispose();
    this._onDidChangeTreeData.dispose();
  }
}

/** The run-level rows; each has a fixed id, so VS Code updates it in place. */
function infoItem(row: InfoRow, s: RunSession): vscode.TreeItem {
  const v = s.view;
  const m = v.latestMetrics;
  const item = (label: string, description: string, icon: string, tooltip?: string) => {
    const t = new vscode.TreeItem(label);
    t.description = description;
    t.iconPath = new vscode.ThemeIcon(icon);
    t.tooltip = tooltip;
    t.id = `${row}-${s.runId}`;
    return t;
  };
  switch (row) {
    case 'run': {
      const state = v.state ?? 'starting';
      const name = typeof v.hello?.config.name === 'string' ? v.hello.config.name : undefined;
      return item(`Run ${runLabel(s.runDir, name, v.hello?.startedAt)}`, `${state}${v.connected || !v.active ? '' : ' · reconnecting…'}`, STATE_ICONS[state], `${s.runId}\n${s.runDir}${v.stateReason ? `\n${v.stateReason}` : ''}`);
    }
    case 'step':
      return item('Step', `${v.step} / ${v.totalSteps}${m ? ` · ${m.stepsPerSec.toFixed(1)} steps/s` : ''}`, 'pulse');
    case 'backend':
      return item('Backend', v.backend ? backendLabel(v.backend) : '—', v.backend?.gpu ? 'circuit-board' : 'server-process', v.backend?.detail);
    case 'alpha':
      return item('α', formatNumber(v.alpha), 'symbol-constant');
    case 'loss':
      return item('Loss', m ? `${formatNumber(m.loss)} (task ${formatNumber(m.taskLoss)}, ${describeTaskMetric(m.taskMetric, v.taskMetric)})` : '—', 'graph-line');
  }
}

function signature(item: vscode.TreeItem): string {
  const icon = item.iconPath instanceof vscode.ThemeIcon ? item.iconPath.id : '';
  return JSON.stringify([item.label, item.description, icon, item.contextValue, typeof item.tooltip === 'string' ? item.tooltip : '']);
}
