// The run lifecycle's surroundings (RunHost) from VS Code: settings, workspace trust and folders, the
// editor's text of a config, the output channel and the notifications of ui.ts.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { RunHost } from '../run/runHost';
import { flash, notify, progress, reveal } from './ui';

/** Where run directories go when the setting is empty. */
const DEFAULT_RUNS_DIRECTORY = '.pltrain/runs';

export function vscodeRunHost(extensionUri: vscode.Uri, log: vscode.LogOutputChannel): RunHost {
  return {
    trainerScript: vscode.Uri.joinPath(extensionUri, 'dist', 'trainer.js').fsPath,
    nodePath: () => vscode.workspace.getConfiguration('plTrainer').get<string>('nodePath') || process.execPath,
    workspaceFolders: () => (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
    runsRoot: (folder) => path.resolve(folder, vscode.workspace.getConfiguration('plTrainer', vscode.Uri.file(folder)).get<string>('runsDirectory') || DEFAULT_RUNS_DIRECTORY),
    isTrusted: () => vscode.workspace.isTrusted,
    readConfig: async (file) => (await vscode.workspace.openTextDocument(vscode.Uri.file(file))).getText(),
    ui: { notify, flash, progress, reveal: (file, start, end) => void reveal(file, start, end) },
    log: { info: (m) => log.info(m), warn: (m) => log.warn(m), error: (m) => log.error(m), debug: (m) => log.debug(m), show: () => log.show(true) },
  };
}
