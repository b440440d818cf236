// `pltrain`: the trainer process. Validates the config, trains, serves the WebSocket, exits 0 when
// the run completes or is stopped, 1 when it fails, 2 for a bad command line or config.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { BACKEND_NAMES, TrainingConfig, formatProblem, parseTrainingConfig, upgradeConfigSnapshot } from '../protocol';
import { findPython, pythonPackageDir } from '../protocol/pythonEngine';
import { packageRoot } from './data';
import { RunDirRefused, defaultRunDir } from './runDir';
import { runTraining } from './train';

/**
 * Engine `pytorch`: the same command line, run by the Python package (python/pltrain) under the
 * interpreter findPython picks; its exit code is ours, and a signal to us is passed on to it.
 */
async function runPython(args: string[]): Promise<number> {
  const check = findPython();
  if (!check.ok) {
    console.error(`pltrain: engine "pytorch": ${check.problem!.message}`);
    return 1;
  }
  const env = { ...process.env, PYTHONPATH: [pythonPackageDir(packageRoot()), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) };
  const child = spawn(check.python, ['-m', 'pltrain', ...args], { stdio: 'inherit', env });
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  process.on('SIGTERM', forward('SIGTERM'));
  process.on('SIGINT', forward('SIGINT'));
  return new Promise((resolve) => {
    child.once('error', (e) => (console.error(`pltrain: could not start ${check.python}: ${e.message}`), resolve(1)));
    child.once('exit', (code, signal) => resolve(code ?? (signal === 'SIGKILL' ? 137 : 1)));
  });
}

const engineOf = (c: TrainingConfig) => c.engine;

const USAGE = `usage: pltrain --config FILE [--steps N] [--run-dir DIR] [--backend ${['auto', ...BACKEND_NAMES].join('|')}]
       pltrain --resume RUN_DIR        continue a killed or failed run from its last checkpoint`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: { resume: { type: 'string' }, config: { type: 'string' }, steps: { type: 'string' }, 'run-dir': { type: 'string' }, backend: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  if (args.resume) {
    // The run's own config snapshot is the config: a resumed run is the same run.
    const runDir = path.resolve(args.resume);
    const parsed = parseTrainingConfig(upgradeConfigSnapshot(JSON.parse(fs.readFileSync(path.join(runDir, 'config.json'), 'utf8'))));
    if (!parsed.ok) {
      console.error(`${runDir}/config.json: ${parsed.problems.map(formatProblem).join('; ')}`);
      return 2;
    }
    if (engineOf(parsed.config) === 'pytorch') return runPython(['--resume', runDir]);
    const state = await runTraining({ config: parsed.config, configDir: runDir, runDir, resume: true });
    return state === 'failed' ? 1 : 0;
  }
  if (!args.config) {
    console.error(`missing --config\n${USAGE}`);
    return 2;
  }
  const configPath = path.resolve(args.config);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  } catch (e) {
    console.error(`${configPath}: ${(e as Error).message}`);
    return 2;
  }
  if (raw && typeof raw === 'object') {
    const obj = raw as Record<string, unknown>;
    if (args.steps !== undefined) obj.steps = Number(args.steps);
    if (args.backend !== undefined) obj.backend = args.backend;
  }
  const parsed = parseTrainingConfig(raw);
  if (!parsed.ok) {
    console.error(`${configPath}: invalid config`);
    for (const p of parsed.problems) console.error(`  ${formatProblem(p)}`);
    return 2;
  }
  const runDir = path.resolve(args['run-dir'] ?? defaultRunDir(parsed.config, process.cwd()));
  if (engineOf(parsed.config) === 'pytorch') {
    return runPython(['--config', configPath, '--run-dir', runDir, ...(args.steps !== undefined ? ['--steps', String(parsed.config.steps)] : [])]);
  }
  const state = await runTraining({ config: parsed.config, configDir: path.dirname(configPath), runDir });
  return state === 'failed' ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    // A run directory in use or already used: the user's mistake, said in one line (exit 2, like a bad config).
    if (e instanceof RunDirRefused) {
      console.error(e.message);
      process.exit(2);
    }
    console.error(e);
    process.exit(1);
  },
);
