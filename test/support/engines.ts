// The trainer engines the trainer-side integration and attack suites run against: the embedded
// TensorFlow.js trainer always, the PyTorch engine (python/pltrain) where an interpreter imports torch
// and websockets (PLTRAIN_PYTHON, else /usr/bin/python3, else python3; CI installs Debian's
// python3-torch). Each suite is the same tests for both: `for (const engine of ENGINES)`.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type SpawnSyncOptionsWithStringEncoding, type SpawnSyncReturns } from 'node:child_process';
import * as path from 'node:path';
import { findPython, pythonPackageDir } from '../../src/protocol/pythonEngine';

export type EngineName = 'tfjs' | 'pytorch';
export const root = path.resolve(__dirname, '..', '..');

const python = findPython();
/** The interpreter of the PyTorch engine here, or undefined (with why in PYTHON_PROBLEM). */
export const PYTHON = python.ok ? python.python : undefined;
export const PYTHON_PROBLEM = python.ok ? undefined : python.problem!.message;
export const ENGINES: EngineName[] = PYTHON ? ['tfjs', 'pytorch'] : ['tfjs'];
if (!PYTHON) console.log(`# pytorch engine not tested here: ${PYTHON_PROBLEM}`);

/** A config for `engine`: the same fields, plus `engine: "pytorch"` for the PyTorch one. */
export function forEngine<T extends object>(engine: EngineName, config: T): T & { engine?: EngineName } {
  return engine === 'pytorch' ? { ...config, engine } : config;
}

/** The environment that lets `python -m pltrain` find the package. */
export function engineEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, PYTHONPATH: [pythonPackageDir(root), env.PYTHONPATH].filter(Boolean).join(path.delimiter) };
}

/**
 * The trainer process itself (not the `pltrain` wrapper), so its pid is the one the LISTENING line and
 * run.json announce: `node dist/trainer.js …` or `python -m pltrain …`.
 */
export function spawnTrainer(engine: EngineName, args: string[], options: SpawnOptions = {}): ChildProcess {
  if (engine === 'tfjs') return spawn(process.execPath, [path.join(root, 'dist', 'trainer.js'), ...args], options);
  return spawn(PYTHON!, ['-m', 'pltrain', ...args], { ...options, env: engineEnv(options.env ?? process.env) });
}

/** hello.backend as each engine announces it. */
export function backendMatches(engine: EngineName, backend: { name: string; engine?: string; device?: string }): boolean {
  if (engine === 'tfjs') return ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'].includes(backend.name);
  return backend.name === 'pytorch' && backend.engine === 'pytorch' && /^(cpu|cuda:\d+ .+)$/.test(backend.device ?? '');
}

/** The command that runs `engine`'s trainer process, with the environment it needs (for `bash -c … exec`). */
export function trainerCommand(engine: EngineName): { command: string; args: string[]; env: Record<string, string> } {
  if (engine === 'tfjs') return { command: process.execPath, args: [path.join(root, 'dist', 'trainer.js')], env: {} };
  return { command: PYTHON!, args: ['-m', 'pltrain'], env: { PYTHONPATH: engineEnv().PYTHONPATH! } };
}

/** spawnSync of the trainer process itself (a refused start, say). */
export function spawnTrainerSync(engine: EngineName, args: string[], options: SpawnSyncOptionsWithStringEncoding): SpawnSyncReturns<string> {
  const t = trainerCommand(engine);
  return spawnSync(t.command, [...t.args, ...args], { ...options, env: { ...(options.env ?? process.env), ...t.env } });
}
