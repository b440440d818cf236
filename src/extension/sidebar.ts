// The sidebar "Metrics" view: run state, step and throughput, backend, α, and a per-expert table
// with inline freeze/unfreeze; below it the runs recorded in the workspace.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ExpertStats, kappaAtDampingFloor, runDamping } from '../protocol';
import { describeDampingFloor, formatNumber as formatPanelNumber } from '../../webview/format';
import { RunManager } from './runManager';
import { listRunDirs } from './run/runDirectory';
import { RunSession } from './run/runSession';

export type MetricsNode =
  | { kind: 'info'; label: string; description?: string; icon: string; tooltip?: string }
  | { kind: 'experts'; session: RunSession }
  | { kind: 'expert'; session: RunSession; expert: ExpertStats }
  | { kind: 'runs' }
  | { kind: 'run'; dir: string; label: string; description: string };

/** Numbers read the same in the sidebar, the code lenses, the status bar and the panel. */
export function formatNumber(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '–' : formatPanelNumber(v);
}

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
        const m = s.lastMetrics;
        out.push(
          { kind: 'info', label: `Run ${s.runId}`, description: `${s.state}${s.connected || !s.active ? '' : ' · reconnecting…'}`, icon: stateIcon(s.state), tooltip: s.stateReason ?? s.runDir },
          { kind: 'info', label: 'Step', description: `${s.step} / ${s.totalSteps}${m ? ` · ${m.stepsPerSec.toFixed(1)} steps/s` : ''}`, icon: 'pulse' },
          { kind: 'info', label: 'Backend', description: s.backend ? `${s.backend.name} (${s.backend.gpu ? 'GPU' : 'CPU'})` : '–', icon: s.backend?.gpu ? 'circuit-board' : 'server-process', tooltip: s.backend?.detail },
          { kind: 'info', label: 'α', description: formatNumber(s.alpha), icon: 'symbol-constant' },
          { kind: 'info', label: 'Loss', description: m ? `${formatNumber(m.loss)} (task ${formatNumber(m.taskLoss)}, acc ${(m.taskMetric * 100).toFixed(1)}%)` : '–', icon: 'graph-line' },
          { kind: 'experts', session: s },
        );
      }
      // With no run at all, an empty tree lets VS Code show the welcome content (package.json viewsWelcome).
      if (s || this.recordedRuns().length) out.push({ kind: 'runs' });
      return out;
    }
    if (node.kind === 'experts') return node.session.experts.map((expert) => ({ kind: 'expert', session: node.session, expert }));
    if (node.kind === 'runs') return this.recordedRuns();
    return [];
  }

  private recordedRuns(): MetricsNode[] {
    const out: MetricsNode[] = [];
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      for (const { dir, info } of listRunDirs(this.runs.runsRoot(folder)).slice(0, 50)) {
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
      case 'experts': {
        const unit = node.session.unitName;
        const item = new vscode.TreeItem(`${unit[0].toUpperCase()}${unit.slice(1)}s`, vscode.TreeItemCollapsibleState.Expanded);
        const ks = node.session.experts.filter((e) => !e.pruned).map((e) => e.kappa);
        item.description = ks.length ? `mean κ ${formatNumber(ks.reduce((a, b) => a + b, 0) / ks.length)}` : 'waiting for the first measurement';
        item.iconPath = new vscode.ThemeIcon('layers');
        return item;
      }
      case 'expert': {
        const e = node.expert;
        const item = new vscode.TreeItem(`${node.session.unitName} ${e.id}`);
        const damping = runDamping(node.session.hello?.config);
        const atFloor = kappaAtDampingFloor(e.kappa, damping);
        const flags = [e.frozen ? 'frozen' : '', e.pruned ? 'pruned' : '', atFloor ? 'at the damping floor' : ''].filter(Boolean).join(', ');
        const keep = node.session.gate?.[e.id];
        item.description = `κ ${formatNumber(e.kappa)} · μ ${formatNumber(e.mu)} · L ${formatNumber(e.lf)}${keep !== undefined && !e.pruned ? ` · keep ${keep.toFixed(2)}` : ''}${flags ? ` · ${flags}` : ''}`;
        item.iconPath = new vscode.ThemeIcon(e.frozen ? 'lock' : e.pruned ? 'circle-slash' : atFloor ? 'warning' : 'circle-outline');
        if (atFloor) item.tooltip = describeDampingFloor(node.session.unitName, damping);
        // Drives the inline freeze/unfreeze action (package.json menus view/item/context).
        item.contextValue = e.pruned ? 'expert.pruned' : e.frozen ? 'expert.frozen' : 'expert.trainable';
        item.id = `expert-${node.session.runId}-${e.id}`;
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

function stateIcon(state: string): string {
  return ({ starting: 'loading~spin', running: 'play-circle', paused: 'debug-pause', completed: 'pass', stopped: 'debug-stop', failed: 'error' } as Record<string, string>)[state] ?? 'circle';
}
