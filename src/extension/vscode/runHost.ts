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
    pythonPath: async () => vscode.workspace.getConfiguration('plTrainer').get<string>('pythonPath') || (await pythonExtensionInterpreter()),
    pythonPackageDir: vscode.Uri.joinPath(extensionUri, 'python').fsPath,
    workspaceFolders: () => (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
    runsRoot: (folder) => path.resolve(folder, vscode.workspace.getConfiguration('plTrainer', vscode.Uri.file(folder)).get<string>('runsDirectory') || DEFAULT_RUNS_DIRECTORY),
    isTrusted: () => vscode.workspace.isTrusted,
    readConfig: async (file) => (await vscode.workspace.openTextDocument(vscode.Uri.file(file))).getText(),
    ui: { notify, flash, progress, reveal: (file, start, end) => void reveal(file, start, end) },
    log: { info: (m) => log.info(m), warn: (m) => log.warn(m), error: (m) => log.error(m), debug: (m) => log.debug(m), show: () => log.show(true) },
  };
}

/** The Python extension's exports we read (ms-python.python; both its current and its older API). */
interface PythonExtensionApi {
  environments?: { getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined };
  settings?: { getExecutionDetails(resource?: vscode.Uri): { execCommand?: string[] } | undefined };
}

/** The interpreter selected in the Python extension, when it is installed; undefined otherwise. */
async function pythonExtensionInterpreter(): Promise<string | undefined> {
  const ext = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
  if (!ext) return undefined;
  try {
    const api = ext.isActive ? ext.exports : await ext.activate();
    const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
    const active = api?.environments?.getActiveEnvironmentPath(resource)?.path;
    if (active && active !== 'python') return active;
    return api?.settings?.getExecutionDetails(resource)?.execCommand?.[0];
  } catch {
    return undefined; // an extension that fails to activate chooses nothing
  }
}
