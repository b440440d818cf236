// Extension host entry point: wires the run manager to the views (panel, sidebar, status bar),
// the config editor (diagnostics, code lenses) and the commands.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ALPHA_MAX, ALPHA_MIN, SteeringCommand, alphaProblem, formatNumber, type ModelFamily } from '../protocol';
import { FAMILY_STARTERS, describeStarter, freeConfigPath, starterConfig, starterFor, starterSteps } from './config/starters';
import { ConfigCodeLensProvider, ConfigDiagnostics, ConfigQuickFixes, CONFIG_SELECTOR, isConfigDocument } from './configEditor';
import { installGpuBackend } from './gpuBackend';
import { MetricsPanel } from './panel';
import { RunManager } from './runManager';
import { listRunDirs } from './run/runDirectory';
import { recordedName, runLabel } from './run/runLabel';
import { MetricsNode, MetricsTreeProvider } from './sidebar';
import { RunStatusBar } from './statusBar';
import { unitPrompt } from './unitPrompt';
import { vscodeRunHost } from './vscode/runHost';
import { askValid, confirm, notify, pickOne } from './vscode/ui';

/** When this module's body started (its imports already loaded): `activationMs` counts from here. */
const loadedAt = performance.now();

/** What `activate` returns: used by the extension-host tests and available to other extensions. */
export interface PlTrainerApi {
  runs: RunManager;
  diagnostics: vscode.DiagnosticCollection;
  /** The sidebar's tree (what the Metrics view shows). */
  sidebar: MetricsTreeProvider;
  /** The metrics panel, when open. */
  panel(): MetricsPanel | undefined;
  /** Milliseconds from this module's body starting to the end of `activate` (read by bench/activation.ts). */
  activationMs: number;
}

export function activate(context: vscode.ExtensionContext): PlTrainerApi {
  const log = vscode.window.createOutputChannel('PL Trainer', { log: true });
  const runs = new RunManager(vscodeRunHost(context.extensionUri, log));
  const diagnostics = new ConfigDiagnostics();
  const tree = new MetricsTreeProvider(runs);
  const lenses = new ConfigCodeLensProvider(runs);
  context.subscriptions.push(
    log,
    runs,
    diagnostics,
    tree,
    lenses,
    new RunStatusBar(runs),
    vscode.window.registerTreeDataProvider('plTrainer.metrics', tree),
    vscode.languages.registerCodeLensProvider(CONFIG_SELECTOR, lenses),
    vscode.languages.registerCodeActionsProvider(CONFIG_SELECTOR, new ConfigQuickFixes(), { providedCodeActionKinds: ConfigQuickFixes.kinds }),
    MetricsPanel.registerSerializer(context, runs),
  );

  const updateContext = () => {
    const s = runs.current;
    void vscode.commands.executeCommand('setContext', 'plTrainer.runState', s ? (s.view.state ?? 'starting') : 'none');
    void vscode.commands.executeCommand('setContext', 'plTrainer.runActive', !!s?.active);
    void vscode.commands.executeCommand('setContext', 'plTrainer.runCount', runs.all.length);
  };
  context.subscriptions.push(runs.onDidChange(updateContext), runs.onDidChangeCurrent(updateContext), runs.onDidTrack(updateContext), runs.onDidRequestShow(() => MetricsPanel.show(context, runs)));

  const steer = (command: SteeringCommand, runDir?: unknown) => runs.issue(command, typeof runDir === 'string' ? runDir : undefined);
  const register = (id: string, fn: (...args: any[]) => unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, fn));

  register('plTrainer.start', async (uri?: vscode.Uri) => {
    const target = uri instanceof vscode.Uri ? uri : await pickConfig(context);
    if (!target) return undefined;
    const session = await runs.start(target.fsPath);
    if (session) MetricsPanel.show(context, runs, true);
    return session?.runDir;
  });
  register('plTrainer.pause', (runDir?: string) => steer({ kind: 'pause' }, runDir));
  register('plTrainer.resume', (runDir?: string) => steer({ kind: 'resume' }, runDir));
  register('plTrainer.stop', (runDir?: string) => steer({ kind: 'stop' }, runDir));
  register('plTrainer.setAlpha', async (value?: unknown, runDir?: string) => {
    let alpha = typeof value === 'number' ? value : undefined;
    if (alpha === undefined) {
      // The bounds are setAlpha's own (limits.ts): what this box accepts, the trainer applies.
      const text = await askValid(
        'Set α (weight of the condition-number regularizer)',
        runs.current?.view.alpha?.toString() ?? '',
        (t) => (t.trim() === '' || !Number.isFinite(Number(t)) ? 'α must be a number' : alphaProblem(Number(t))),
        `between ${ALPHA_MIN} and ${formatNumber(ALPHA_MAX)}`,
      );
      if (text === undefined) return undefined;
      alpha = Number(text);
    }
    return steer({ kind: 'setAlpha', alpha }, runDir);
  });
  const unitCommand = (kind: 'freeze' | 'unfreeze') => async (arg?: unknown, runDir?: string) => {
    let unit = typeof arg === 'number' ? arg : (arg as Extract<MetricsNode, { kind: 'unit' }> | undefined)?.unitId;
    if (unit === undefined) {
      const v = (typeof runDir === 'string' ? runs.all.find((s) => s.runDir === runDir) : runs.current)?.view;
      if (!v) {
        notify('warn', 'No PL training run is active.');
        return undefined;
      }
      const prompt = unitPrompt(v, kind);
      unit = await pickOne(prompt.title, prompt.items);
      if (unit === undefined) return undefined;
    }
    return steer({ kind, unit }, runDir);
  };
  register('plTrainer.freezeExpert', unitCommand('freeze'));
  register('plTrainer.unfreezeExpert', unitCommand('unfreeze'));
  register('plTrainer.showPanel', () => MetricsPanel.show(context, runs));
  register('plTrainer.openWalkthrough', () => vscode.commands.executeCommand('workbench.action.openWalkthrough', `${context.extension.id}#firstRun`, false));
  // Several runs: the panel, the sidebar and the status bar follow one of them, the one picked here.
  register('plTrainer.selectRun', async (runDir?: unknown) => {
    const choices = [...runs.live, ...runs.all.filter((s) => !s.active)];
    const chosen =
      typeof runDir === 'string'
        ? runs.all.find((s) => s.runDir === runDir)
        : await pickOne(
            'Show which run in the panel, sidebar and status bar?',
            choices.map((s) => ({
              label: `${s === runs.current ? '$(eye) ' : ''}${runLabel(s.runDir, typeof s.view.hello?.config.name === 'string' ? s.view.hello.config.name : undefined, s.view.hello?.startedAt)}`,
              description: `${s.view.state ?? 'starting'} · step ${s.view.step}/${s.view.totalSteps}`,
              detail: s.runId,
              value: s,
            })),
          );
    if (!chosen) return undefined;
    runs.show(chosen);
    return chosen.runDir;
  });
  register('plTrainer.resumeRun', async (arg?: unknown) => {
    const dir = typeof arg === 'string' ? arg : (arg as { dir?: string } | undefined)?.dir ?? runs.current?.runDir;
    if (!dir) return undefined;
    const session = await runs.resumeRun(dir);
    if (session) MetricsPanel.show(context, runs, true);
    return session?.runDir;
  });
  register('plTrainer.compareRun', async (arg?: unknown) => {
    let dir = typeof arg === 'string' ? arg : (arg as { dir?: string } | undefined)?.dir;
    if (!dir) {
      const choices = vscode.workspace.workspaceFolders?.flatMap((f) => listRunDirs(runs.runsRoot(f.uri.fsPath))).filter((r) => r.dir !== runs.current?.runDir) ?? [];
      dir = await pickOne(
        'Overlay which run on the charts?',
        choices.map((r) => ({ label: runLabel(r.dir, recordedName(r.dir), r.info?.startedAt), description: r.info ? `${r.info.state} · step ${r.info.step}/${r.info.totalSteps}` : '', detail: path.basename(r.dir), value: r.dir })),
      );
    }
    if (!dir) return undefined;
    const panel = MetricsPanel.show(context, runs);
    const recorded = runs.recordedEvents(dir);
    panel.setCompare(recorded, dir);
    return recorded.runId;
  });
  register('plTrainer.clearCompare', () => MetricsPanel.current?.setCompare(null));
  register('plTrainer.installGpuBackend', () => installGpuBackend(context.extensionUri.fsPath, log));
  register('plTrainer.newConfig', (options?: unknown) => newConfig(context, typeof options === 'object' && options ? (options as NewConfigOptions) : {}));
  register('plTrainer.deleteRun', async (arg?: unknown) => {
    const dir = typeof arg === 'string' ? arg : (arg as { dir?: string } | undefined)?.dir;
    if (!dir) return false;
    if (!(await confirm(`Delete run ${path.basename(dir)} and all its recorded data?`, 'Delete'))) return false;
    if (!runs.deleteRun(dir)) {
      notify('error', 'That run is still training; stop it first.');
      return false;
    }
    tree.refreshRuns();
    return true;
  });
  register('plTrainer.openRun', (dir: string) => {
    runs.openRecorded(dir);
    MetricsPanel.show(context, runs);
  });

  // Training outlives the window: pick up trainers that kept running while it was closed.
  const reattached = runs.reattachAll();
  if (reattached.length) log.info(`re-attached to ${reattached.length} running trainer(s)`);
  updateContext();
  return { runs, diagnostics: diagnostics.collection, sidebar: tree, panel: () => MetricsPanel.current, activationMs: performance.now() - loadedAt };
}

async function pickConfig(context: vscode.ExtensionContext): Promise<vscode.Uri | undefined> {
  const active = vscode.window.activeTextEditor?.document;
  if (active && isConfigDocument(active)) return active.uri;
  const found = await vscode.workspace.findFiles('**/*.pltrain.json', '**/{node_modules,.pltrain}/**', 50);
  if (found.length === 1) return found[0];
  if (!found.length) {
    // No toast that outlives the answer: the picker that creates one is the answer. The new config
    // opens with its ▶ Start lens; nothing starts before the user has seen it.
    await newConfig(context, { title: 'No training config (*.pltrain.json) in this workspace yet: create one' });
    return undefined;
  }
  return pickOne('Start PL training with which config?', found.map((u) => ({ label: vscode.workspace.asRelativePath(u), value: u })));
}

interface NewConfigOptions {
  /** Skip the family picker (tests, the walkthrough). */
  family?: ModelFamily;
  /** Skip the name box. */
  name?: string;
  /** The picker's title (Start uses it to say why it asks). */
  title?: string;
}

/** Asks for a model family (with its speed on a CPU) and a name, writes that family's starter config and opens it. */
async function newConfig(context: vscode.ExtensionContext, options: NewConfigOptions): Promise<vscode.Uri | undefined> {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) {
    notify('error', 'Open a folder first: the config and its runs live in the workspace.');
    return undefined;
  }
  const examples = vscode.Uri.joinPath(context.extensionUri, 'examples').fsPath;
  const family =
    options.family ??
    (await pickOne(
      options.title ?? 'New training config: which model?',
      FAMILY_STARTERS.map((s) => ({ label: s.family, description: s.summary, detail: describeStarter(s, starterSteps(examples, s.family)), value: s.family })),
      'The model family; its defaults fill the config',
    ));
  if (!family) return undefined;
  const name =
    options.name ??
    (await askValid('Name of the training config (runs are named after it)', suggestName(examples, family, family), (t) => (t.trim() ? undefined : 'a name is needed'), 'e.g. heads-alpha-0.01'));
  if (name === undefined) return undefined;
  const file = vscode.Uri.file(freeConfigPath(folder.uri.fsPath, name.trim()));
  fs.writeFileSync(file.fsPath, JSON.stringify(starterConfig(examples, family, name.trim()), null, 2) + '\n');
  await vscode.window.showTextDocument(file);
  return file;
}

/** The example's own name for the family ("bert-heads"), so the first config reads like the docs. */
function suggestName(examplesDir: string, family: ModelFamily, fallback: string): string {
  try {
    const name = JSON.parse(fs.readFileSync(path.join(examplesDir, starterFor(family).example), 'utf8')).name;
    return typeof name === 'string' && name ? name : fallback;
  } catch {
    return fallback;
  }
}

export function deactivate(): void {
  // Nothing to stop: trainers are detached on purpose and keep running.
}
