// Status bar item: the current run's step and loss; click opens the panel.
import * as vscode from 'vscode';
import { RunManager } from './runManager';
import { formatNumber } from './sidebar';

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
    const icon = { starting: '$(loading~spin)', running: '$(pulse)', paused: '$(debug-pause)', completed: '$(pass)', stopped: '$(debug-stop)', failed: '$(error)' }[s.state];
    const loss = s.lastMetrics ? ` · loss ${formatNumber(s.lastMetrics.loss)}` : '';
    this.item.text = `${icon} PL ${s.step}/${s.totalSteps}${loss}`;
    this.item.tooltip = `PL training ${s.runId}: ${s.state}${s.backend ? ` on ${s.backend.name} (${s.backend.gpu ? 'GPU' : 'CPU'})` : ''}${s.connected || !s.active ? '' : ' — reconnecting'}\nClick to open the metrics panel`;
    this.item.show();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.subs) s.dispose();
    this.item.dispose();
  }
}
