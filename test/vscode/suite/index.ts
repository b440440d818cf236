// Mocha runner loaded by VS Code's extension host (the `extensionTestsPath` contract shared by
// @vscode/test-electron and our code-server harness). Runs every *.test.js bundled next to it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha from 'mocha';

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', color: false, timeout: 60_000, reporter: 'spec' });
  const grep = process.env.PLTRAIN_TEST_GREP;
  if (grep) mocha.grep(grep);
  const files = fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js'));
  if (!files.length) return Promise.reject(new Error(`no *.test.js next to ${__filename}`));
  for (const f of files) mocha.addFile(path.join(__dirname, f));
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      // One machine-readable line for the harness (relayed through the workbench console).
      console.log(`vscode-suite-result passed=${runner.stats?.passes ?? 0} failed=${failures}`);
      failures ? reject(new Error(`${failures} test(s) failed`)) : resolve();
    });
  });
}
