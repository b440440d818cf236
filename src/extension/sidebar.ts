// The sidebar "Metrics" view: run state, step and throughput, backend, α, loss and the task metric,
// and a per-unit table (experts, heads or channel groups) with inline freeze/unfreeze; below it the
// runs recorded in the workspace. Everything it shows is the run's RunView, as the panel shows it.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { backendLabel, capitalize, describeDampingFloor, describeInactive, describeKappa, describeNotMeasurable, describeTaskMetric, formatNumber, MIN_SERVED, pluralUnit, unitLabel, type UnitView } from '../protocol';
import { RunManager } from './runManager';
import { listRunDirs } from './run/runDirectory';
import { RunSession } from './run/runSession';
import { STATE_ICONS } from './stateIcons';

export type MetricsNode =
  | { kind: 'info'; label: string; description?: string; icon: string; tooltip?: string }
  | { kind: 'units'; session: RunSession }
  | { kind: 'unit'; session: RunSession; unit: UnitView }
  | { kind: 'runs' }
  | { kind: 'run'; dir: string; label: string; description: string };

export class MetricsTreeProvider implements vscode.TreeDataProvider<MetricsNode>, vscode.Disposable {
  private readonly _onDidChangeTreeData = new vscode.EventEmitter<MetricsNode | undefined>();
  readonly onDidChangeTreeData = this._onDidChangeTreeData.event;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly subs: vscode.Disposable[];

  constructor(private readonly runs: RunManager) {
    this.subs = [runs.onDidChange(() => this.refreshSoon()), runs.onDidChangeCurrent(() => this.refreshSoon())];
  }

  /** Tree refreshes are throttled: metrics can arrive hundreds of times a second. */
  refreshSoon(): void {
    this.refreshTimer ??= setTimeout(() => {
      this.refreshTimer = undefined;
      this._onDidChangeTreeData.fire(undefined);
    }, 250);
  }

  getChildren(node?: MetricsNode): MetricsNode[] {
    const s = this.runs.current;
    if (!node) {
      const out: MetricsNode[] = [];
      if (s) {
        const v = s.view;
        const m = v.latestMetrics;
        const state = v.state ?? 'starting';
        out.push(
          { kind: 'info', label: `Run ${s.runId}`, description: `${state}${v.connected || !v.active ? '' : ' · reconnecting…'}`, icon: STATE_ICONS[state], tooltip: v.stateReason ?? s.runDir },
          { kind: 'info', label: 'Step', description: `${v.step} / ${v.totalSteps}${m ? ` · ${m.stepsPerSec.toFixed(1)} steps/s` : ''}`, icon: 'pulse' },
          { kind: 'info', label: 'Backend', description: v.backend ? backendLabel(v.backend) : '—', icon: v.backend?.gpu ? 'circuit-board' : 'server-process', tooltip: v.backend?.detail },
          { kind: 'info', label: 'α', description: formatNumber(v.alpha), icon: 'symbol-constant' },
          { kind: 'info', label: 'Loss', description: m ? `${formatNumber(m.loss)} (task ${formatNumber(m.taskLoss)}, ${describeTaskMetric(m.taskMetric, v.taskMetric)})` : '—', icon: 'graph-line' },
          { kind: 'units', session: s },
        );
      }
      // With no run at all, an empty tree lets VS Code show the welcome content (package.json viewsWelcome).
      if (s || this.recordedRuns().length) out.push({ kind: 'runs' });
      return out;
    }
    if (node.kind === 'units') return node.session.view.units.map((unit) => ({ kind: 'unit', session: node.session, unit }));
    if (node.kind === 'runs') return this.recordedRuns();
    return [];
  }

  private recordedRuns(): MetricsNode[] {
    const out: MetricsNode[] = [];
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      for (const { dir, info } of listRunDirs(this.runs.runsRoot(folder.uri.fsPath)).slice(0, 50)) {
        out.push({ kind: 'run', dir, label: path.basename(dir), description: info ? `${info.state} · step ${info.step}/${info.totalSteps}` : 'no run.json' });
      }
    }
    return out;
  }

  getTreeItem(node: MetricsNode): vscode.TreeItem {
    switch (node.kind) {
      case 'info': {
        const item = new vscode.TreeItem(node.label);
        item.description = node.description;
        item.iconPath = new vscode.ThemeIcon(node.icon);
        item.tooltip = node.tooltip;
        return item;
      }
      case 'units': {
        const v = node.session.view;
        const item = new vscode.TreeItem(capitalize(pluralUnit(v.unitName)), vscode.TreeItemCollapsibleState.Expanded);
        // κ̄ as the panel's regularizer chart names it: the κ of the model's kernel, the regularizer.
        const regularizer = v.latestMetrics?.regularizer;
        item.description = v.lastMonitorStep === undefined || regularizer === undefined ? 'waiting for the first measurement' : `κ̄ ${formatNumber(regularizer)} (regularizer)`;
        item.tooltip = "κ̄: the condition number of the model's tangent kernel on the probe (the trainable units' kernels as the model uses them), the term α multiplies in the loss";
        item.iconPath = new vscode.ThemeIcon('layers');
        return item;
      }
      case 'unit': {
        const e = node.unit;
        const v = node.session.view;
        const item = new vscode.TreeItem(unitLabel(v.unitName, e.id));
        const atFloor = v.atDampingFloor(e);
        const inactive = v.inactive(e);
        const flags = [inactive ? 'inactive' : '', e.frozen ? 'frozen' : '', e.pruned ? 'pruned' : '', atFloor ? 'at the damping floor' : ''].filter(Boolean).join(', ');
        const keep = v.gate?.[e.id];
        // A null κ (too few served examples) reads "κ not measurable", and then μ and L_f are left out.
        const measures = e.kappa === null ? describeKappa(null) : `${describeKappa(e.kappa)} · μ ${formatNumber(e.mu)} · L ${formatNumber(e.lf)}`;
        item.description = `${measures}${keep !== undefined && !e.pruned ? ` · keep ${keep.toFixed(2)}` : ''}${flags ? ` · ${flags}` : ''}`;
        item.iconPath = new vscode.ThemeIcon(e.frozen ? 'lock' : e.pruned ? 'circle-slash' : atFloor || inactive ? 'warning' : 'circle-outline');
        const why = [inactive ? describeInactive(v.unitName, e.share) : '', e.kappa === null ? describeNotMeasurable(v.unitName, e.served, MIN_SERVED) : '', atFloor ? describeDampingFloor(v.unitName, v.damping) : ''].filter(Boolean);
        if (why.length) item.tooltip = why.join('\n\n');
        // Drives the inline freeze/unfreeze action (package.json menus view/item/context).
        item.contextValue = e.pruned ? 'unit.pruned' : e.frozen ? 'unit.frozen' : 'unit.trainable';
        item.id = `unit-${node.session.runId}-${e.id}`;
        return item;
      }
      case 'runs': {
        const item = new vscode.TreeItem('Runs', vscode.TreeItemCollapsibleState.Collapsed);
        item.iconPath = new vscode.ThemeIcon('history');
        return item;
      }
      case 'run': {
        const item = new vscode.TreeItem(node.label);
        item.description = node.description;
        item.iconPath = new vscode.ThemeIcon('folder');
        item.contextValue = 'run';
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
