// Bundles the three parts: extension host (CJS, `vscode` external), trainer (Node CLI), webview (browser).
// TensorFlow.js stays external in the trainer: its wasm backend loads .wasm files next to its own dist/,
// and the native backends are optional packages that may be absent.
import * as esbuild from 'esbuild';
import { readdirSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');
const common = { bundle: true, mainFields: ['module', 'main'], sourcemap: !production, minify: production, logLevel: 'info', legalComments: 'none' };
const wsOptional = ['bufferutil', 'utf-8-validate'];

const suiteDir = 'test/vscode/suite';
const suiteEntries = existsSync(suiteDir) ? readdirSync(suiteDir).filter((f) => f.endsWith('.ts')).map((f) => join(suiteDir, f)) : [];

const builds = [
  { ...common, entryPoints: { extension: 'src/extension/extension.ts' }, outdir: 'dist', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', ...wsOptional] },
  { ...common, entryPoints: { trainer: 'src/trainer/cli.ts' }, outdir: 'dist', platform: 'node', format: 'cjs', target: 'node18', external: ['@tensorflow/*', ...wsOptional] },
  { ...common, entryPoints: { 'webview/main': 'webview/main.ts' }, outdir: 'dist', platform: 'browser', format: 'iife', target: 'chrome110', loader: { '.css': 'css' } },
];
if (suiteEntries.length) {
  // Extension-host tests run inside the real VS Code; they import the extension's modules directly.
  builds.push({ ...common, entryPoints: suiteEntries, outdir: 'dist/test/suite', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'mocha', '@tensorflow/*', ...wsOptional] });
}

mkdirSync('dist', { recursive: true });
// A deleted suite file must not leave its old bundle behind for the runner to load.
rmSync('dist/test/suite', { recursive: true, force: true });
if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
