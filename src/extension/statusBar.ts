// Status bar item: the current run's step and loss, and how many other runs are live; a click opens
// the panel, or with several live runs, asks which one the panel, sidebar and status bar show.
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
      // Where the extension is, before any run: a way to the first one.
      this.item.text = '$(rocket) PL Trainer';
      this.item.tooltip = 'PL Trainer: get to a first training run (walkthrough)';
      this.item.command = 'plTrainer.openWalkthrough';
      this.item.show();
      return;
    }
    const v = s.view;
    const state = v.state ?? 'starting';
    const loss = v.latestMetrics ? ` · loss ${formatNumber(v.latestMetrics.loss)}` : '';
    const others = this.runs.live.filter((r) => r !== s);
    this.item.text = `$(${STATE_ICONS[state]}) PL ${v.step}/${v.totalSteps}${loss}${others.length ? ` · +${others.length} live` : ''}`;
    const lines = [`PL training ${s.runId}: ${state}${v.backend ? ` on ${backendLabel(v.backend)}` : ''}${v.connected || !v.active ? '' : ' — reconnecting'}`];
    for (const r of others) lines.push(`also live: ${r.runId}: ${r.view.state ?? 'starting'} at step ${r.view.step}/${r.view.totalSteps}`);
    lines.push(others.length ? 'Click to choose the run the panel shows' : 'Click to open the metrics panel');
    this.item.tooltip = lines.join('\n');
    this.item.command = others.length ? 'plTrainer.selectRun' : 'plTrainer.showPanel';
    this.item.show();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.subs) s.dispose();
    this.item.dispose();
  }
}
