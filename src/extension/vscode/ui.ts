// VS Code's notifications, quick picks, input boxes and progress, behind a few plain functions, so
// the run lifecycle and the command handlers say what they want ("warn", "pick one", "ask for α")
// without the window API's shapes in their logic (as vscode-dvc keeps them in its src/vscode/).
import * as vscode from 'vscode';
import type { NoticeAction } from '../run/runHost';

/** A notification with optional buttons; a chosen button runs its action. `detail` shows in the expanded notification. */
export function notify(level: 'info' | 'warn' | 'error', message: string, options: { detail?: string; actions?: NoticeAction[] } = {}): void {
  const show = level === 'error' ? vscode.window.showErrorMessage : level === 'warn' ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
  const actions = options.actions ?? [];
  const titles = actions.map((a) => a.title);
  const shown = options.detail !== undefined ? show(message, { detail: options.detail, modal: false }, ...titles) : show(message, ...titles);
  void shown.then((chosen) => actions.find((a) => a.title === chosen)?.run());
}

/** A modal question with one confirming button; true when it was pressed. */
export async function confirm(message: string, button: string, detail?: string): Promise<boolean> {
  return (await vscode.window.showWarningMessage(message, { modal: true, ...(detail !== undefined ? { detail } : {}) }, button)) === button;
}

/** A short-lived status-bar message. */
export function flash(message: string, ms: number): void {
  vscode.window.setStatusBarMessage(message, ms);
}

/** Long work with a progress notification; with `cancel`, the notification has a Cancel button that calls it. */
export function progress<T>(title: string, work: (report: (message: string) => void) => Promise<T>, cancel?: () => void): Promise<T> {
  return Promise.resolve(
    vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: cancel !== undefined }, (p, token) => {
      if (cancel) token.onCancellationRequested(cancel);
      return work((message) => p.report({ message }));
    }),
  );
}

/** Opens `file` with the text between two offsets selected. */
export async function reveal(file: string, start: number, end: number): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  await vscode.window.showTextDocument(doc, { selection: new vscode.Range(doc.positionAt(start), doc.positionAt(end)) });
}

/** One item from a list, or undefined when dismissed. */
export async function pickOne<T>(title: string, items: readonly { label: string; description?: string; detail?: string; value: T }[], placeHolder?: string): Promise<T | undefined> {
  const pick = await vscode.window.showQuickPick(
    items.map((i) => ({ label: i.label, description: i.description, detail: i.detail, value: i.value })),
    { title, placeHolder, matchOnDescription: true },
  );
  return pick?.value;
}

/** A line of text that `problem` accepts (it returns why not, or undefined); undefined when dismissed. */
export async function askValid(title: string, value: string, problem: (text: string) => string | undefined, prompt?: string): Promise<string | undefined> {
  return vscode.window.showInputBox({ title, value, prompt, validateInput: problem });
}
