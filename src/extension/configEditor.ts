// Editor integration for `*.pltrain.json`: diagnostics on the exact line, and code lenses that
// start the run, steer it (pause/resume/stop; codicons, not emoji, which some fonts lack), apply the file's α live, and freeze units.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { describeKappa, formatNumber, unitLabel } from '../protocol';
import { analyzeConfigText } from './config/configAnalysis';
import { RunManager } from './runManager';

export const CONFIG_SELECTOR: vscode.DocumentSelector = { pattern: '**/*.pltrain.json' };

export function isConfigDocument(doc: vscode.TextDocument): boolean {
  return doc.uri.scheme === 'file' && doc.fileName.endsWith('.pltrain.json');
}

export class ConfigDiagnostics implements vscode.Disposable {
  readonly collection = vscode.languages.createDiagnosticCollection('plTrainer');
  private readonly subs: vscode.Disposable[];

  constructor() {
    this.subs = [
      vscode.workspace.onDidOpenTextDocument((d) => this.update(d)),
      vscode.workspace.onDidChangeTextDocument((e) => this.update(e.document)),
      vscode.workspace.onDidCloseTextDocument((d) => this.collection.delete(d.uri)),
    ];
    for (const d of vscode.workspace.textDocuments) this.update(d);
  }

  update(doc: vscode.TextDocument): void {
    if (!isConfigDocument(doc)) return;
    const analysis = analyzeConfigText(doc.getText(), path.dirname(doc.uri.fsPath));
    // JSON syntax errors are marked by VS Code's JSON language service already; one mark per error.
    // Schema problems are ours alone: the contributed schema carries descriptions, not constraints.
    this.collection.set(
      doc.uri,
      analysis.problems.filter((p) => !p.syntax).map((p) => {
        const d = new vscode.Diagnostic(new vscode.Range(doc.positionAt(p.range.start), doc.positionAt(p.range.end)), p.message, vscode.DiagnosticSeverity.Error);
        d.source = 'PL Trainer';
        return d;
      }),
    );
  }

  dispose(): void {
    for (const s of this.subs) s.dispose();
    this.collection.dispose();
  }
}

/** Quick fix for a misspelled field: put the known field's name in its place. */
export class ConfigQuickFixes implements vscode.CodeActionProvider {
  static readonly kinds = [vscode.CodeActionKind.QuickFix];

  provideCodeActions(doc: vscode.TextDocument, range: vscode.Range, context: vscode.CodeActionContext): vscode.CodeAction[] {
    if (!isConfigDocument(doc)) return [];
    const out: vscode.CodeAction[] = [];
    for (const p of analyzeConfigText(doc.getText(), path.dirname(doc.uri.fsPath)).problems) {
      if (!p.suggestion) continue;
      const keyRange = new vscode.Range(doc.positionAt(p.range.start), doc.positionAt(p.range.end));
      if (!keyRange.intersection(range)) continue;
      const action = new vscode.CodeAction(`Change to "${p.suggestion}"`, vscode.CodeActionKind.QuickFix);
      action.edit = new vscode.WorkspaceEdit();
      action.edit.replace(doc.uri, keyRange, JSON.stringify(p.suggestion));
      action.diagnostics = context.diagnostics.filter((d) => d.source === 'PL Trainer' && d.range.isEqual(keyRange));
      action.isPreferred = true;
      out.push(action);
    }
    return out;
  }
}

export class ConfigCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly _onDidChange = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this._onDidChange.event;
  private timer: NodeJS.Timeout | undefined;
  private readonly subs: vscode.Disposable[];

  constructor(private readonly runs: RunManager) {
    // Lenses show live state (α, κ); refresh at most twice a second.
    const soon = () => (this.timer ??= setTimeout(() => ((this.timer = undefined), this._onDidChange.fire()), 500));
    this.subs = [runs.onDidChange(soon), runs.onDidChangeCurrent(soon)];
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const analysis = analyzeConfigText(doc.getText(), path.dirname(doc.uri.fsPath));
    const top = new vscode.Range(doc.positionAt(analysis.keyOffsets.root ?? 0), doc.positionAt(analysis.keyOffsets.root ?? 0));
    const run = this.runs.activeRunFor(doc.uri.fsPath);
    const lenses: vscode.CodeLens[] = [];
    if (!run) {
      lenses.push(new vscode.CodeLens(top, { title: '$(play) Start PL training', command: 'plTrainer.start', arguments: [doc.uri] }));
      return lenses;
    }
    const target = [run.runDir];
    const v = run.view;
    if (v.state === 'paused') lenses.push(new vscode.CodeLens(top, { title: '$(debug-continue) Resume', command: 'plTrainer.resume', arguments: target }));
    else lenses.push(new vscode.CodeLens(top, { title: '$(debug-pause) Pause', command: 'plTrainer.pause', arguments: target }));
    lenses.push(new vscode.CodeLens(top, { title: '$(debug-stop) Stop', command: 'plTrainer.stop', arguments: target }));
    // Until the trainer's hello there is no step count to show (it would read "step 0/0").
    const progress = v.hello ? `${v.state ?? 'starting'} · step ${v.step}/${v.totalSteps}` : 'starting…';
    lenses.push(new vscode.CodeLens(top, { title: progress, command: 'plTrainer.showPanel' }));
    if (analysis.keyOffsets.alpha !== undefined) {
      const at = doc.positionAt(analysis.keyOffsets.alpha);
      const fileAlpha = analysis.config?.alpha;
      // The file's α passed the config schema, whose bounds are setAlpha's (limits.ts).
      const differs = fileAlpha !== undefined && fileAlpha !== v.alpha;
      const title = differs ? `α = ${formatNumber(v.alpha)} · apply ${formatNumber(fileAlpha)} to the running training` : `α = ${formatNumber(v.alpha)} (live)`;
      lenses.push(new vscode.CodeLens(new vscode.Range(at, at), differs ? { title, command: 'plTrainer.setAlpha', arguments: [fileAlpha, run.runDir] } : { title, command: '' }));
    }
    if (analysis.keyOffsets.experts !== undefined) {
      const at = doc.positionAt(analysis.keyOffsets.experts);
      for (const u of v.units) {
        if (u.pruned) continue; // a pruned unit can be neither frozen nor unfrozen
        const verb = u.frozen ? 'unfreeze' : 'freeze';
        lenses.push(new vscode.CodeLens(new vscode.Range(at, at), { title: `${u.frozen ? '$(lock) ' : ''}${unitLabel(v.unitName, u.id)} ${describeKappa(u.kappa)}${v.inactive(u) ? ' · inactive' : ''} · ${verb}`, command: u.frozen ? 'plTrainer.unfreezeExpert' : 'plTrainer.freezeExpert', arguments: [u.id, run.runDir] }));
      }
    }
    return lenses;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.subs) s.dispose();
    this._onDidChange.dispose();
  }
}
