// Runs inside a real VS Code (code-server's extension host): the real `vscode` API, the real
// trainer process, the real WebSocket. Driven by test/vscode/run.sh.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { PlTrainerApi } from '../../../src/extension/extension';
import { RunManager } from '../../../src/extension/runManager';
import type { RunSession } from '../../../src/extension/run/runSession';
import { vscodeRunHost } from '../../../src/extension/vscode/runHost';
import { formatNumber, type MetricsEvent } from '../../../src/protocol';
import { tcpListenPorts } from '../../support/endpoint';
import { until } from '../../support/until';

const EXTENSION_ID = 'pl-trainer.pl-trainer';

async function api(): Promise<PlTrainerApi> {
  const ext = vscode.extensions.getExtension<PlTrainerApi>(EXTENSION_ID);
  assert.ok(ext, 'extension is installed');
  return ext.activate();
}

function workspaceDir(): string {
  const f = vscode.workspace.workspaceFolders?.[0];
  assert.ok(f, 'a workspace folder is open');
  return f.uri.fsPath;
}


function writeConfig(name: string, body: object): vscode.Uri {
  const file = path.join(workspaceDir(), name);
  fs.writeFileSync(file, JSON.stringify(body, null, 2) + '\n');
  return vscode.Uri.file(file);
}

const metricsOf = (s: RunSession) => s.events.filter((e): e is MetricsEvent => e.type === 'metrics');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls an async condition (a command's answer) until it holds. */
async function untilAsync<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

const hoverText = async (uri: vscode.Uri, at: vscode.Position) =>
  ((await vscode.commands.executeCommand<vscode.Hover[]>('vscode.executeHoverProvider', uri, at)) ?? [])
    .flatMap((h) => h.contents)
    .map((c) => (typeof c === 'string' ? c : c.value))
    .join('\n');

// First in the file: the workspace holds no config yet.
describe('the first hour', function () {
  this.timeout(120_000);

  it('Start with no config offers the New-config picker (no toast); it writes the family\'s starter with no $schema and opens it', async () => {
    await api();
    assert.equal((await vscode.workspace.findFiles('**/*.pltrain.json')).length, 0, 'an empty workspace');
    let done = false;
    const started = Promise.resolve(vscode.commands.executeCommand('plTrainer.start')).finally(() => (done = true));
    // The picker's first entry (moe-mlp), then the proposed name: Enter, as a user would.
    for (let i = 0; i < 60 && !done; i++) {
      await sleep(300);
      await vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
    }
    assert.equal(await started, undefined, 'nothing starts before the user has seen the config');
    const created = await vscode.workspace.findFiles('**/*.pltrain.json');
    assert.deepEqual(created.map((u) => path.basename(u.fsPath)), ['default.pltrain.json']);
    assert.equal(vscode.window.activeTextEditor?.document.uri.fsPath, created[0].fsPath, 'opened');
    const config = JSON.parse(fs.readFileSync(created[0].fsPath, 'utf8'));
    assert.deepEqual([config.name, config.model.family, '$schema' in config], ['default', 'moe-mlp', false]);
    // IntelliSense without a $schema line: the contributed schema describes the fields.
    const doc = vscode.window.activeTextEditor!.document;
    const at = doc.positionAt(doc.getText().indexOf('"learningRate"') + 2);
    assert.match(await untilAsync('a hover from the contributed schema', async () => ((await hoverText(doc.uri, at)).includes('Adam learning rate') ? 'yes' : undefined)), /yes/);
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    fs.rmSync(created[0].fsPath);
  });

  it('a config problem is reported once, by the extension, with "did you mean" and a quick fix; a syntax error once, by the JSON service', async () => {
    const { diagnostics } = await api();
    const uri = vscode.Uri.file(path.join(workspaceDir(), 'typo.pltrain.json'));
    fs.writeFileSync(uri.fsPath, '{\n  "name": "typo",\n  "learningrate": 0.01,\n  "steps": "many"\n}\n');
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc);
    // The JSON service has loaded the contributed schema once it answers a hover from it.
    await untilAsync('the JSON service reads the schema', async () => (await hoverText(uri, new vscode.Position(1, 4))).includes('Run name'));
    await until('our diagnostics', () => (diagnostics.get(uri)?.length === 2 ? true : undefined), 10_000);
    await sleep(2500); // the JSON service validates after a short delay: give it time to add its own
    const all = vscode.languages.getDiagnostics(uri);
    assert.deepEqual(all.map((d) => [d.source, d.range.start.line + 1]).sort(), [['PL Trainer', 3], ['PL Trainer', 4]], all.map((d) => `${d.source}: ${d.message}`).join(' | '));
    const typo = all.find((d) => d.range.start.line === 2)!;
    assert.equal(typo.message, 'learningrate: unknown field "learningrate" (did you mean "learningRate"?)');
    const actions = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', uri, typo.range);
    const fix = actions.find((a) => a.title === 'Change to "learningRate"');
    assert.ok(fix?.edit, actions.map((a) => a.title).join(' | '));
    assert.ok(await vscode.workspace.applyEdit(fix.edit));
    assert.match(doc.getText(), /"learningRate": 0.01/);
    await until('the typo diagnostic gone', () => (diagnostics.get(uri)?.length === 1 ? true : undefined), 10_000);

    const broken = vscode.Uri.file(path.join(workspaceDir(), 'comma.pltrain.json'));
    fs.writeFileSync(broken.fsPath, '{\n  "name": "comma",\n}\n');
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(broken));
    const syntax = await until('the JSON service marks the trailing comma', () => (vscode.languages.getDiagnostics(broken).length ? vscode.languages.getDiagnostics(broken) : undefined), 20_000);
    await sleep(1000);
    assert.equal(vscode.languages.getDiagnostics(broken).length, 1, syntax.map((d) => `${d.source}: ${d.message}`).join(' | '));
    assert.notEqual(vscode.languages.getDiagnostics(broken)[0].source, 'PL Trainer');
    assert.equal(await vscode.commands.executeCommand('plTrainer.start', broken), undefined, 'Start still refuses it');
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    fs.rmSync(uri.fsPath);
    fs.rmSync(broken.fsPath);
  });
});

describe('PL Trainer in a real VS Code', function () {
  this.timeout(180_000);

  it('activates and registers every command', async () => {
    await api();
    const all = await vscode.commands.getCommands(true);
    for (const c of ['plTrainer.start', 'plTrainer.stop', 'plTrainer.pause', 'plTrainer.resume', 'plTrainer.setAlpha', 'plTrainer.freezeExpert', 'plTrainer.unfreezeExpert', 'plTrainer.showPanel']) {
      assert.ok(all.includes(c), `${c} registered`);
    }
  });

  it('puts a diagnostic on the exact line of a bad config field, and Start refuses it', async () => {
    const { diagnostics, runs } = await api();
    const uri = vscode.Uri.file(path.join(workspaceDir(), 'bad.pltrain.json'));
    fs.writeFileSync(uri.fsPath, '{\n  "name": "bad",\n  "model": {\n    "experts": 1\n  },\n  "alpha": -2\n}\n');
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri));
    const diags = await until('diagnostics', () => (diagnostics.get(uri)?.length ? diagnostics.get(uri) : undefined), 10_000);
    const lines = diags.map((d) => d.range.start.line + 1).sort();
    assert.deepEqual(lines, [4, 6]);
    assert.match(diags.find((d) => d.range.start.line === 3)!.message, /model\.experts/);
    const before = runs.all.length;
    const result = await vscode.commands.executeCommand('plTrainer.start', uri);
    assert.equal(result, undefined, 'nothing started');
    assert.equal(runs.all.length, before);
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  it('offers "$(play) Start PL training" as a code lens on a config (a codicon, not a glyph the font may lack)', async () => {
    const uri = writeConfig('lens.pltrain.json', { name: 'lens', steps: 10 });
    await vscode.workspace.openTextDocument(uri);
    const lenses = await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', uri);
    assert.ok(lenses.some((l) => l.command?.title === '$(play) Start PL training' && l.command.command === 'plTrainer.start'));
  });

  describe('a real training run', () => {
    let runs: RunManager;
    let session: RunSession;
    let configUri: vscode.Uri;

    before(async () => {
      runs = (await api()).runs;
      configUri = writeConfig('steer.pltrain.json', {
        name: 'steer',
        steps: 100000,
        batchSize: 32,
        model: { experts: 3, hiddenUnits: 16 },
        monitor: { every: 5, probeSize: 8 },
        alpha: 0.01,
      });
      const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', configUri);
      assert.ok(runDir, 'start returns the run directory');
      session = runs.all.find((s) => s.runDir === runDir)!;
      assert.ok(session);
    });

    after(async () => {
      if (session?.active) await vscode.commands.executeCommand('plTrainer.stop', session.runDir);
    });

    it('reports the backend and streams per-expert κ', async () => {
      await until('hello', () => session.view.hello);
      assert.ok(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'].includes(session.view.backend!.name));
      const withExperts = await until('a κ measurement', () => metricsOf(session).find((m) => m.units?.length === 3));
      for (const e of withExperts.units!) {
        // Smooth damping: κ = L_f/(μ + δ·L_f) ≥ 1/(1 + δ); null only for an expert serving < 4 probe examples.
        assert.ok(e.kappa === null ? e.served! < 4 : Number.isFinite(e.kappa) && e.kappa >= 1 / (1 + 1e-6), `κ ≥ 1/(1+δ), got ${e.kappa}`);
        if (e.kappa !== null) assert.ok(e.lf! >= e.mu!, 'L_f ≥ μ');
      }
      const files = fs.readdirSync(session.runDir);
      for (const f of ['run.json', 'token', 'config.json', 'metrics.jsonl', 'launch.json', 'trainer.sock']) assert.ok(files.includes(f), `${f} written`);
      // The transport: a Unix socket in the run directory, no TCP port, so code-server's port
      // detection (it reads /proc/net/tcp) has nothing to list in the Ports view or forward.
      const info = JSON.parse(fs.readFileSync(path.join(session.runDir, 'run.json'), 'utf8'));
      assert.equal(info.socket, path.join(session.runDir, 'trainer.sock'));
      assert.equal(info.port, undefined);
      assert.deepEqual(tcpListenPorts(info.pid), [], 'the trainer listens on no TCP port');
    });

    it('pauses at a step boundary and acknowledges that step', async () => {
      const status = await vscode.commands.executeCommand<{ status: string; step: number }>('plTrainer.pause', session.runDir);
      assert.equal(status.status, 'applied');
      await until('paused state', () => session.view.state === 'paused');
      await new Promise((r) => setTimeout(r, 1000));
      const last = metricsOf(session).at(-1)!;
      assert.ok(last.step <= status.step, `no step after ${status.step} while paused (saw ${last.step})`);
    });

    it('shows Resume/Stop lenses and the live α while paused', async () => {
      const list = await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', configUri);
      const titles = list.map((l) => l.command?.title ?? '');
      assert.ok(titles.includes('$(debug-continue) Resume'), titles.join(' | '));
      assert.ok(titles.includes('$(debug-stop) Stop'));
      assert.ok(titles.some((t) => /^paused · step \d+\/100000$/.test(t)), titles.join(' | '));
      assert.ok(!titles.some((t) => /[▶⏸■🔒]/u.test(t)), 'no emoji or geometric glyphs');
      assert.ok(titles.some((t) => t.startsWith('α = 0.01')), titles.join(' | '));
      // Above the experts block: one lens per expert with its live κ and the freeze action.
      const expertLenses = list.filter((l) => /^expert \d κ [\d.e+]+ · freeze$/.test(l.command?.title ?? ''));
      assert.equal(expertLenses.length, 3, titles.join(' | '));
      assert.deepEqual(expertLenses.map((l) => l.command!.arguments![0]), [0, 1, 2]);
      assert.equal(expertLenses[0].command!.command, 'plTrainer.freezeExpert');
    });

    it('changes α live: metrics after the acknowledged step carry the new α', async () => {
      const status = await vscode.commands.executeCommand<{ status: string; step: number }>('plTrainer.setAlpha', 0.25, session.runDir);
      assert.equal(status.status, 'applied');
      const resumed = await vscode.commands.executeCommand<{ status: string; step: number }>('plTrainer.resume', session.runDir);
      assert.equal(resumed.status, 'applied');
      await until('metrics after resume', () => metricsOf(session).some((m) => m.step > status.step + 2));
      for (const m of metricsOf(session)) {
        if (m.step > status.step) assert.equal(m.alpha, 0.25, `step ${m.step}`);
        else assert.equal(m.alpha, 0.01, `step ${m.step}`);
      }
    });

    it('refuses a negative α with the reason', async () => {
      const status = await vscode.commands.executeCommand<{ status: string; reason?: string }>('plTrainer.setAlpha', -1, session.runDir);
      assert.equal(status.status, 'rejected');
      assert.match(status.reason ?? '', /α|alpha/i);
    });

    it('freezes and unfreezes an expert, acknowledged with the step', async () => {
      const frozen = await vscode.commands.executeCommand<{ status: string; step: number }>('plTrainer.freezeExpert', 1, session.runDir);
      assert.equal(frozen.status, 'applied');
      const m = await until('a measurement after the freeze', () => metricsOf(session).find((x) => x.step > frozen.step && x.units));
      assert.equal(m.units![1].frozen, true);
      assert.equal(m.units![0].frozen, false);
      const un = await vscode.commands.executeCommand<{ status: string }>('plTrainer.unfreezeExpert', 1, session.runDir);
      assert.equal(un.status, 'applied');
    });

    it('the sidebar shows state, backend, α and a per-expert κ table whose inline toggle freezes', async () => {
      const { sidebar } = await api();
      assert.equal(runs.current, session);
      const root = sidebar.getChildren();
      const item = (label: string) => {
        const node = root.find((n) => sidebar.getTreeItem(n).label === label);
        assert.ok(node, `a "${label}" row`);
        return sidebar.getTreeItem(node);
      };
      const runRow = sidebar.getTreeItem(root.find((n) => n.kind === 'info' && n.row === 'run')!);
      assert.match(String(runRow.label), /^Run steer · \d\d:\d\d$/, 'config name and a short time');
      assert.match(String(runRow.tooltip), new RegExp(`^${session.runId}\n`), 'the full id in the tooltip');
      assert.match(String(runRow.description), /running|paused/);
      assert.match(String(item('Backend').description), /^(wasm|cpu|tensorflow|tensorflow-gpu) · (CPU|GPU)$/);
      assert.equal(item('α').description, '0.25');
      assert.match(String(item('Loss').description), /^[\d.e+-]+ \(task [\d.e+-]+, accuracy [\d.]+%\)$/);
      const expertsNode = root.find((n) => n.kind === 'units')!;
      const group = sidebar.getTreeItem(expertsNode);
      assert.equal(group.label, 'Experts');
      // The same κ̄ as the panel's regularizer line: the trainer's mean over trainable units, not the sidebar's own.
      assert.match(String(group.description), /^κ̄ [\d.e+]+ \(regularizer\)$/);
      const rows = sidebar.getChildren(expertsNode);
      assert.equal(rows.length, 3);
      const row2 = sidebar.getTreeItem(rows[2]);
      assert.equal(row2.label, 'expert 2');
      // The routing share sits next to κ once the trainer streams it.
      assert.match(String(row2.description), /^κ [\d.e+]+( · share [\d.]+%)? · μ [\d.e+-]+ · L [\d.e+]+$/);
      assert.equal(row2.contextValue, 'unit.trainable', 'offers the inline freeze action');
      // The inline action passes the tree node itself.
      const status = await vscode.commands.executeCommand<{ status: string; step: number }>('plTrainer.freezeExpert', rows[2]);
      assert.equal(status.status, 'applied');
      await until('the frozen flag in the tree', () => sidebar.getTreeItem(sidebar.getChildren(expertsNode)[2]).contextValue === 'unit.frozen', 10_000);
      // κ̄ leaves the frozen expert out, as the regularizer does: the sidebar shows the trainer's number.
      await until('κ̄ after the freeze', () => session.view.latestMetrics!.step > status.step + 5);
      assert.equal(sidebar.getTreeItem(expertsNode).description, `κ̄ ${formatNumber(session.view.latestMetrics!.regularizer)} (regularizer)`);
      const back = await vscode.commands.executeCommand<{ status: string }>('plTrainer.unfreezeExpert', sidebar.getChildren(expertsNode)[2]);
      assert.equal(back.status, 'applied');
    });

    it('re-attaches from the run directory with the full history, no gap, no duplicate', async () => {
      // A second manager stands in for the extension after a window reload.
      const ext = vscode.extensions.getExtension(EXTENSION_ID)!;
      const log = vscode.window.createOutputChannel('PL Trainer (re-attach test)', { log: true });
      const fresh = new RunManager(vscodeRunHost(ext.extensionUri, log));
      try {
        const [again] = fresh.reattachAll().filter((s) => s.runDir === session.runDir);
        assert.ok(again, 'found the live run');
        // The recorded history is there at once; the replay over the connection brings the rest.
        const target = session.seq;
        await until('connected and replayed', () => again.view.connected && again.seq >= target);
        const seqs = again.events.map((e) => e.seq);
        assert.deepEqual(seqs, seqs.map((_, i) => i), 'seq 0…n with no gap or duplicate');
        assert.deepEqual(again.events.slice(0, session.events.length).map((e) => JSON.stringify(e)), session.events.slice(0, again.events.length).map((e) => JSON.stringify(e)));
        assert.equal(again.view.hello?.runId, session.runId);
      } finally {
        fresh.dispose();
        log.dispose();
      }
    });

    it('stops: acknowledged, state stopped, the process exits', async () => {
      const status = await vscode.commands.executeCommand<{ status: string }>('plTrainer.stop', session.runDir);
      assert.equal(status.status, 'applied');
      await until('stopped state', () => session.view.state === 'stopped');
      const pid = session.view.hello!.pid;
      await until('process exit', () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      }, 15_000);
      const acks = fs.readFileSync(path.join(session.runDir, 'commands.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.ok(acks.some((a) => a.command.kind === 'stop' && a.status === 'applied'));
    });
  });
});

describe('units named by family', function () {
  this.timeout(120_000);

  it('a BERT run says "head" in the sidebar, the code lenses and the trainer\'s refusals', async () => {
    const { runs, sidebar } = await api();
    const uri = writeConfig('heads.pltrain.json', { name: 'heads', steps: 100000, batchSize: 8, model: { family: 'bert-encoder', experts: 2, dModel: 8, layers: 1, hiddenUnits: 8 }, monitor: { every: 2, probeSize: 4 } });
    const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    const session = runs.all.find((s) => s.runDir === runDir)!;
    try {
      await until('a measurement', () => session.view.lastMonitorStep);
      assert.equal(session.view.hello?.unitName, 'head');
      assert.equal(runs.current, session);
      const group = sidebar.getChildren().find((n) => n.kind === 'units')!;
      assert.equal(sidebar.getTreeItem(group).label, 'Heads');
      assert.deepEqual(sidebar.getChildren(group).map((n) => sidebar.getTreeItem(n).label), ['head 0', 'head 1']);
      await vscode.workspace.openTextDocument(uri);
      const titles = (await vscode.commands.executeCommand<vscode.CodeLens[]>('vscode.executeCodeLensProvider', uri)).map((l) => l.command?.title ?? '');
      assert.equal(titles.filter((t) => /^head [01] κ [\d.e+]+ · freeze$/.test(t)).length, 2, titles.join(' | '));
      const refused = await vscode.commands.executeCommand<{ status: string; reason?: string }>('plTrainer.freezeExpert', 7, runDir);
      assert.deepEqual([refused.status, refused.reason], ['rejected', 'head 7 does not exist (the model has 2: 0…1)']);
    } finally {
      await vscode.commands.executeCommand('plTrainer.stop', runDir);
    }
  });
});

describe('a unit at the damping floor', function () {
  this.timeout(120_000);

  it('is flagged in the sidebar with a warning icon and the reason', async () => {
    const { runs, sidebar } = await api();
    // δ = 0.5 puts the floor (λ_min ≤ δ·λ_max, κ ≥ 1/(2δ)) at κ = 1: young experts start on it.
    const uri = writeConfig('floor.pltrain.json', { name: 'floor', steps: 20, alpha: 0.01, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4, damping: 0.5 } });
    const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    const session = runs.all.find((s) => s.runDir === runDir)!;
    await until('a measurement', () => session.view.units.length === 2 && session.view.units.some((e) => session.view.atDampingFloor(e)));
    assert.equal(runs.current, session);
    const expertsNode = sidebar.getChildren().find((n) => n.kind === 'units')!;
    const rows = sidebar.getChildren(expertsNode).map((n) => sidebar.getTreeItem(n));
    const floor = rows.filter((r) => /at the damping floor/.test(String(r.description)));
    assert.ok(floor.length >= 1, `rows: ${rows.map((r) => r.description).join(' | ')}`);
    for (const r of floor) {
      assert.equal((r.iconPath as vscode.ThemeIcon).id, 'warning');
      assert.match(String(r.tooltip), /damping floor 1\/δ = 2.*singular.*freeze or prune/);
    }
    await until('the run ends', () => !session.active, 60_000);
  });
});

describe('starter config and run housekeeping', function () {
  this.timeout(120_000);

  it('"New training config" writes a valid config and opens it', async () => {
    const { diagnostics } = await api();
    const uri = await vscode.commands.executeCommand<vscode.Uri>('plTrainer.newConfig', { family: 'moe-mlp', name: 'training' });
    assert.ok(uri && uri.fsPath.endsWith('training.pltrain.json'));
    assert.equal(vscode.window.activeTextEditor?.document.uri.fsPath, uri.fsPath);
    const config = JSON.parse(fs.readFileSync(uri.fsPath, 'utf8'));
    assert.equal(config.model.experts, 4);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(diagnostics.get(uri)?.length ?? 0, 0, 'no problems in the starter');
    const second = await vscode.commands.executeCommand<vscode.Uri>('plTrainer.newConfig', { family: 'bert-encoder', name: 'training' });
    assert.notEqual(second.fsPath, uri.fsPath, 'never overwrites an existing config');
    const heads = JSON.parse(fs.readFileSync(second.fsPath, 'utf8'));
    assert.deepEqual([heads.name, heads.model.family, '$schema' in heads], ['training', 'bert-encoder', false], 'the family\'s defaults, the chosen name, no $schema');
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    fs.rmSync(uri.fsPath);
    fs.rmSync(second.fsPath);
  });

  it('a live run cannot be deleted; a finished one can', async () => {
    const { runs } = await api();
    const uri = writeConfig('del.pltrain.json', { name: 'del', steps: 100000, model: { experts: 2, hiddenUnits: 8 } });
    const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    const session = runs.all.find((s) => s.runDir === runDir)!;
    await until('running', () => session.view.step > 3);
    assert.equal(runs.deleteRun(runDir), false, 'refused while training');
    assert.ok(fs.existsSync(runDir));
    await vscode.commands.executeCommand('plTrainer.stop', runDir);
    await until('stopped', () => session.view.state === 'stopped');
    await until('exit', () => {
      try {
        process.kill(session.view.hello!.pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 15_000);
    assert.equal(runs.deleteRun(runDir), true);
    assert.equal(fs.existsSync(runDir), false);
  });
});

describe('several runs at once', function () {
  this.timeout(120_000);

  it('a second config starts alongside; the views follow it, and "Show another run" brings the first back to the panel', async () => {
    const { runs, panel } = await api();
    const a = writeConfig('first.pltrain.json', { name: 'first', steps: 100000, model: { experts: 2, hiddenUnits: 8 } });
    const b = writeConfig('second.pltrain.json', { name: 'second', steps: 100000, model: { experts: 2, hiddenUnits: 8 } });
    const dirA = await vscode.commands.executeCommand<string>('plTrainer.start', a);
    const dirB = await vscode.commands.executeCommand<string>('plTrainer.start', b);
    try {
      assert.notEqual(dirA, dirB);
      assert.equal(runs.current?.runDir, dirB, 'the new run is the one the views show');
      assert.deepEqual(runs.live.map((s) => s.runDir).filter((d) => d === dirA || d === dirB).sort(), [dirA, dirB].sort(), 'both train');
      assert.equal(await vscode.commands.executeCommand('plTrainer.selectRun', dirA), dirA);
      assert.equal(runs.current?.runDir, dirA);
      const shown = await until('the panel shows the first run', () => (panel()?.panel.title.includes(path.basename(dirA)) ? panel()!.panel.title : undefined), 10_000);
      assert.match(shown, /first-/);
    } finally {
      await vscode.commands.executeCommand('plTrainer.stop', dirA);
      await vscode.commands.executeCommand('plTrainer.stop', dirB);
    }
  });
});

describe('a trainer that dies', function () {
  this.timeout(180_000);

  it('a backend that fails to load at start is reported with the cause', async () => {
    const runs = (await api()).runs;
    const uri = writeConfig('gpu.pltrain.json', { name: 'gpu', steps: 50, backend: 'tensorflow-gpu' });
    const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    const session = runs.all.find((s) => s.runDir === runDir)!;
    await until('failed state', () => session.view.state === 'failed', 30_000);
    assert.match(session.view.stateReason ?? '', /backend "tensorflow-gpu" could not be loaded/);
    assert.match(fs.readFileSync(path.join(runDir, 'trainer.log'), 'utf8'), /could not be loaded/);
  });

  it('a NaN loss fails the run with the step, keeping what was recorded', async () => {
    const runs = (await api()).runs;
    const uri = writeConfig('nan.pltrain.json', { name: 'nan', steps: 1000, model: { experts: 2, hiddenUnits: 8 } });
    process.env.PLTRAIN_TEST_NAN_AT_STEP = '12'; // read by the trainer this start spawns
    let runDir: string;
    try {
      runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    } finally {
      delete process.env.PLTRAIN_TEST_NAN_AT_STEP;
    }
    const session = runs.all.find((s) => s.runDir === runDir)!;
    await until('failed state', () => session.view.state === 'failed', 30_000);
    assert.match(session.view.stateReason ?? '', /loss became NaN or infinite at step 12/);
    assert.equal(metricsOf(session).at(-1)!.step, 11, 'steps 1–11 recorded, the bad step not');
    assert.equal(fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 11);

    // The sidebar's runs list opens a recorded run, and a finished run can be deleted (a live one cannot).
    const { runs: manager } = await api();
    const opened = manager.openRecorded(runDir);
    assert.equal(manager.current, opened);
    assert.equal(manager.deleteRun(path.join(workspaceDir(), 'no-such-run')), true, 'deleting nothing is harmless');
        // A recorded run can be overlaid on the panel's charts.
    const { panel } = await api();
    const compared = await vscode.commands.executeCommand<string>('plTrainer.compareRun', runDir);
    assert.equal(compared, session.runId);
    assert.equal(panel()?.compareRunId, session.runId);
    await vscode.commands.executeCommand('plTrainer.clearCompare');
    assert.equal(panel()?.compareRunId, undefined);
  });

  it('is reported failed with the cause, keeps its data, and resumes from its checkpoint', async () => {
    const runs = (await api()).runs;
    const uri = writeConfig('crash.pltrain.json', { name: 'crash', steps: 100000, batchSize: 16, checkpointEvery: 10, model: { experts: 2, hiddenUnits: 8 }, monitor: { every: 5, probeSize: 4 } });
    const runDir = await vscode.commands.executeCommand<string>('plTrainer.start', uri);
    const session = runs.all.find((s) => s.runDir === runDir)!;
    const announced: string[] = [];
    const announcements = runs.onDidAnnounceEnd((s) => s.runDir === runDir && announced.push(s.view.state!));
    await until('25 steps', () => session.view.step >= 25);
    const pid = session.view.hello!.pid;
    process.kill(pid, 'SIGKILL');
    await until('failed state', () => session.view.state === 'failed', 15_000);
    assert.match(session.view.stateReason ?? '', /exited unexpectedly/);
    const recorded = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').length;
    assert.ok(recorded >= 25, 'the recorded metrics are kept');

    const resumed = await vscode.commands.executeCommand<string>('plTrainer.resumeRun', runDir);
    assert.equal(resumed, runDir);
    const hello = await until('resumed hello', () => (session.view.hello?.resumedFromStep !== undefined && session.view.hello.pid !== pid ? session.view.hello : undefined));
    assert.equal(session.view.state, 'running');
    await until('steps after the resume', () => session.view.step > hello.resumedFromStep! + 5);
    const steps = metricsOf(session).map((m) => m.step);
    assert.deepEqual(steps, steps.map((_, i) => i + 1), 'one record per step in the host, no gap, no duplicate');
    const stopped = await vscode.commands.executeCommand<{ status: string }>('plTrainer.stop', runDir);
    assert.equal(stopped.status, 'applied');
    await until('stopped announced', () => announced.length >= 2, 15_000);
    announcements.dispose();
    // The crash once, the stop once: resuming must not announce the old failure again.
    assert.deepEqual(announced, ['failed', 'stopped']);
  });
});
