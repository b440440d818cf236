// A RunHost for tests that drive RunManager outside VS Code: the built trainer (dist/trainer.js) under
// this Node, one workspace folder, trusted, configs read from disk, and a UI that only records notices.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RunHost } from '../../src/extension/run/runHost';

const root = path.resolve(__dirname, '..', '..');

export function testRunHost(workspace: string, notify: RunHost['ui']['notify'], more: Partial<RunHost> = {}): RunHost {
  return {
    trainerScript: path.join(root, 'dist', 'trainer.js'),
    nodePath: () => process.execPath,
    workspaceFolders: () => [workspace],
    runsRoot: (folder) => path.join(folder, '.pltrain', 'runs'),
    isTrusted: () => true,
    readConfig: async (file) => fs.readFileSync(file, 'utf8'),
    ui: {
      notify,
      flash: () => undefined,
      progress: (_title, work) => work(() => undefined),
      reveal: () => undefined,
    },
    log: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined, show: () => undefined },
    ...more,
  };
}
