// `npm test`: every layer, in order, streamed live; ends with one line "N passed, M failed".
//   build → typecheck → unit (node --test) → integration (real trainer, WebSocket, Chromium) → real VS Code
//   → the packaged VSIX installed in it
// A phase that fails to run, or runs zero tests, counts as a failure.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

// Test files of one folder. Empty when there are none: `node --test` with no file argument would
// instead discover every test in the repository, so an empty phase must be caught here (see run()).
const files = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.test.ts')).sort().map((f) => `${dir}/${f}`) : []);
// The PyTorch engine's pytest suite needs an interpreter with torch, websockets and pytest (CI installs
// Debian's python3-torch python3-websockets python3-pytest; /usr/bin/python3 sees them). Without one the
// phase says so and counts nothing: the TF.js path needs no Python.
const python = process.env.PLTRAIN_PYTHON || '/usr/bin/python3';
const pythonProbe = spawnSync(python, ['-c', 'import torch, websockets, pytest'], { encoding: 'utf8' });
const pythonMissing = pythonProbe.error ? `${python} not found` : pythonProbe.status !== 0 ? `${python}: ${pythonProbe.stderr.trim().split('\n').at(-1)}` : undefined;

const phases = [
  { name: 'build', cmd: 'node', args: ['scripts/build.mjs'] },
  // The optional OpenBLAS addon (engine-native tests expect it where OpenBLAS and a compiler exist).
  { name: 'native', cmd: 'node', args: ['scripts/build-native.mjs'] },
  { name: 'typecheck', cmd: 'npx', args: ['tsc', '-p', '.'] },
  { name: 'unit', needsFiles: 'test/unit', cmd: 'node', args: ['--import', 'tsx', '--test', '--test-reporter=spec', ...files('test/unit')], counts: 'node' },
  { name: 'python', cmd: python, args: ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'python/tests'], counts: 'pytest', unavailable: pythonMissing },
  { name: 'integration', needsFiles: 'test/integration', cmd: 'node', args: ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=300000', '--test-reporter=spec', ...files('test/integration')], counts: 'node' },
  { name: 'vscode', cmd: 'bash', args: ['test/vscode/run.sh'], counts: 'vscode' },
  // The packaged VSIX, installed into code-server, under the same UI test.
  { name: 'vsix', cmd: 'bash', args: ['scripts/test-vsix.sh'], counts: 'vscode' },
];

function run(phase) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    console.log(`\n=== ${phase.name}`);
    if (phase.unavailable) {
      console.log(`not run: ${phase.unavailable} (the PyTorch engine's tests need torch, websockets and pytest)`);
      return resolve({ code: 0, out: '', seconds: 0, skipped: phase.unavailable });
    }
    if (phase.needsFiles && !files(phase.needsFiles).length) {
      console.log(`no *.test.ts in ${phase.needsFiles}`);
      return resolve({ code: 1, out: '', seconds: 0 });
    }
    const child = spawn(phase.cmd, phase.args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    let out = '';
    const relay = (stream) => (d) => {
      out += d.toString();
      stream.write(d);
    };
    child.stdout.on('data', relay(process.stdout));
    child.stderr.on('data', relay(process.stderr));
    child.on('close', (code) => resolve({ code, out, seconds: (Date.now() - t0) / 1000 }));
  });
}

function count(kind, out) {
  if (kind === 'node') {
    // run summary: "ℹ pass N" / "ℹ fail N" (spec reporter) or "# pass N" / "# fail N" (TAP)
    const pass = [...out.matchAll(/^(?:ℹ|#) pass (\d+)/gm)].at(-1)?.[1];
    const fail = [...out.matchAll(/^(?:ℹ|#) fail (\d+)/gm)].at(-1)?.[1];
    return pass === undefined ? undefined : { passed: Number(pass), failed: Number(fail ?? 0) };
  }
  if (kind === 'pytest') {
    // "41 passed in 2.9s", "2 failed, 39 passed in 3.1s", "1 error in 0.2s"
    const line = [...out.matchAll(/^=*\s*(.*\bin [\d.]+s)\b.*$/gm)].at(-1)?.[1];
    if (!line) return undefined;
    const n = (what) => Number(line.match(new RegExp(`(\\d+) ${what}`))?.[1] ?? 0);
    return { passed: n('passed'), failed: n('failed') + n('errors?') };
  }
  const m = [...out.matchAll(/^vscode: (\d+) passed, (\d+) failed$/gm)].at(-1);
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : undefined;
}

let passed = 0;
let failed = 0;
const summary = [];
for (const phase of phases) {
  const r = await run(phase);
  if (r.skipped) {
    summary.push(`${phase.name}: not run (${r.skipped})`);
    continue;
  }
  if (!phase.counts) {
    summary.push(`${phase.name}: ${r.code === 0 ? 'ok' : 'FAILED'} (${r.seconds.toFixed(0)}s)`);
    if (r.code !== 0) {
      failed++;
      break; // nothing after a broken build is meaningful
    }
    continue;
  }
  const c = count(phase.counts, r.out);
  if (!c || c.passed + c.failed === 0) {
    summary.push(`${phase.name}: ran no test (exit ${r.code})`);
    failed++;
    continue;
  }
  if (r.code !== 0 && c.failed === 0) c.failed = 1; // crashed after its tests
  passed += c.passed;
  failed += c.failed;
  summary.push(`${phase.name}: ${c.passed} passed, ${c.failed} failed (${r.seconds.toFixed(0)}s)`);
}
console.log('\n=== summary');
for (const s of summary) console.log(`  ${s}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
