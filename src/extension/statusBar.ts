// Status bar item: the current run's step and loss; click opens the panel.
import * as vscode from 'vscode';
import { backendLabel, formatNumber } from '../protocol';
import { RunManager } from './runManager';
import { STATE_ICONS } from './stateIcons';

export class RunStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('plTrainer.status', vscode.StatusBarAlignment.Left, 50);
  private readonly subs: vscode.Disposable[];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly runs: RunManager) {
    this.item.name = 'PL Training';
    this.item.command = 'plTrainer.showPanel';
    const soon = () => (this.timer ??= setTimeout(() => ((this.timer = undefined), this.render()), 200));
    this.subs = [runs.onDidChange(soon), runs.onDidChangeCurrent(soon)];
    this.render();
  }

  render(): void {
    const s = this.runs.current;
    if (!s) {
      this.item.hide();
      return;
    }
    const v = s.view;
    const state = v.state ?? 'starting';
    const loss = v.latestMetrics ? ` · loss ${formatNumber(v.latestMetrics.loss)}` : '';
    this.item.text = `$(${STATE_ICONS[state]}) PL ${v.step}/${v.totalSteps}${loss}`;
    this.item.tooltip = `PL training ${s.runId}: ${state}${v.backend ? ` on ${backendLabel(v.backend)}` : ''}${v.connected || !v.active ? '' : ' — reconnecting'}\nClick to open the metrics panel`;
    this.item.show();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.subs) s.dispose();
    this.item.dispose();
  }
}
