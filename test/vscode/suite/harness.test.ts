// Checks the harness itself (test/vscode/run.sh → code-server → this mocha suite): that we run inside
// a real VS Code extension host, with this repository loaded as the development extension and the
// test workspace open. If these fail, every other suite's failure is the harness's, not the extension's.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';

describe('the real-VS-Code harness', () => {
  it('runs inside a VS Code extension host with the real API', () => {
    assert.equal(typeof vscode.version, 'string');
    assert.match(vscode.version, /^\d+\.\d+\.\d+/);
    assert.equal(typeof vscode.commands.executeCommand, 'function');
  });

  it('loads this repository as the development extension pl-trainer.pl-trainer', () => {
    const ext = vscode.extensions.all.find((e) => e.id === 'pl-trainer.pl-trainer');
    assert.ok(ext, `pl-trainer.pl-trainer among ${vscode.extensions.all.length} extensions`);
    // The bundle the manifest points at must be the one `npm run build` wrote into this checkout.
    const main = path.join(ext.extensionPath, 'dist', 'extension.js');
    assert.ok(fs.existsSync(main), `${main} exists`);
    assert.equal(ext.packageJSON.name, 'pl-trainer');
  });

  it('opens a writable workspace folder', () => {
    const folder = vscode.workspace.workspaceFolders?.[0];
    assert.ok(folder, 'a workspace folder is open');
    assert.equal(folder.uri.scheme, 'file');
    const probe = path.join(folder.uri.fsPath, '.harness-probe');
    fs.writeFileSync(probe, 'ok');
    assert.equal(fs.readFileSync(probe, 'utf8'), 'ok');
    fs.unlinkSync(probe);
  });
});
