// The standard @vscode/test-electron runner, for machines that can download a desktop VS Code.
// Our CI cannot (no route to update.code.visualstudio.com), so `npm test` uses code-server instead
// (test/vscode/run.sh); this runner executes the same suite (dist/test/suite/index.js).
// usage: npm run build && npm run test:electron
import * as path from 'node:path';
import { runTests } from '@vscode/test-electron';

async function main(): Promise<void> {
  const root = path.resolve(__dirname, '..', '..', '..');
  try {
    await runTests({
      extensionDevelopmentPath: root,
      extensionTestsPath: path.join(root, 'dist', 'test', 'suite', 'index.js'),
      launchArgs: ['--disable-extensions', '--disable-workspace-trust', path.join(root, 'examples')],
    });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    console.error(/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|getaddrinfo/.test(msg) ? `test-electron could not download VS Code (${msg.split('\n')[0]}). On machines without that access run \`npm run test:vscode\` (code-server).` : `test-electron run failed: ${msg}`);
    process.exit(1);
  }
}

void main();
