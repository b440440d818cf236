// What the run lifecycle (RunManager) needs from its surroundings, without the `vscode` module: the
// workspace and its settings, the trainer bundle, an output log, and a few ways to tell the user
// something. src/extension/vscode/runHost.ts supplies them from VS Code; tests supply their own.

/** A button on a notification. */
export interface NoticeAction {
  title: string;
  run(): void;
}

/** The run lifecycle's way of talking to the user. */
export interface RunUi {
  /** A notification; `detail` is shown on demand (VS Code: a modal-free expandable detail). */
  notify(level: 'info' | 'warn' | 'error', message: string, options?: { detail?: string; actions?: NoticeAction[] }): void;
  /** A short-lived status-bar message. */
  flash(message: string, ms: number): void;
  /** Long work with a visible progress notification; `cancel` (when given) makes it cancellable. */
  progress<T>(title: string, work: (report: (message: string) => void) => Promise<T>, cancel?: () => void): Promise<T>;
  /** Opens a file with a range selected (a config problem's line). */
  reveal(file: string, start: number, end: number): void;
}

/** The output channel. */
export interface RunLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
  /** Brings the channel to the front. */
  show(): void;
}

export interface RunHost {
  /** dist/trainer.js of this extension. */
  trainerScript: string;
  /** The Node executable that runs the trainer (setting, else the extension host's own runtime). */
  nodePath(): string;
  /**
   * The Python interpreter of the PyTorch engine as the user chose it: the `pythonPath` setting, else
   * the Python extension's selected interpreter; undefined for none (then PLTRAIN_PYTHON,
   * /usr/bin/python3 with torch, python3: findPython).
   */
  pythonPath?(): Promise<string | undefined>;
  /** The folder holding the `pltrain` Python package (python/ of this extension). */
  pythonPackageDir?: string;
  /** Workspace folder paths, in order. */
  workspaceFolders(): string[];
  /** Where a folder's run directories go (the `runsDirectory` setting, resolved). */
  runsRoot(folder: string): string;
  /** False in an untrusted workspace: no trainer is started there. */
  isTrusted(): boolean;
  /** A config file's text as the editor has it (unsaved edits included). */
  readConfig(file: string): Promise<string>;
  ui: RunUi;
  log: RunLog;
}
