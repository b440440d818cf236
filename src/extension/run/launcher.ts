// Starts the trainer as a detached process on the machine where the workspace lives, so training
// outlives the window (reload, or a dropped Remote-SSH link). Its output goes to a log file in the
// run directory rather than a pipe: a pipe would break (EPIPE) when the extension host goes away.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RUN_FILES, RunInfo, TOKEN_ENV, runEndpoint, runStamp, safeRunName } from '../../protocol';
import { ensurePrivateDir, openPrivate, writePrivateAtomic } from '../../protocol/privateFile';
import { LAUNCH_FILE, readRunInfo, tailLog } from './runDirectory';

/** Where a script started from a config finds its run directory (python/pltrain/attach.py RUN_DIR_ENV). */
export const RUN_DIR_ENV = 'PLTRAIN_RUN_DIR';
/** ... and the config it was started from, whose alpha, steps, logEvery, monitor and name apply (attach.py CONFIG_ENV). */
export const CONFIG_ENV = 'PLTRAIN_CONFIG';

export interface LaunchOptions {
  /** Node executable; VS Code's own runtime works when ELECTRON_RUN_AS_NODE is set. */
  nodePath: string;
  trainerScript: string;
  configPath: string;
  runDir: string;
  cwd: string;
  /** Continue the run in runDir from its last checkpoint instead of starting afresh. */
  resume?: boolean;
  /**
   * Engine `pytorch`: the interpreter (checked beforehand: checkPython) and the folder holding the
   * `pltrain` package; the trainer is then `python -m pltrain` with the same arguments.
   */
  python?: { interpreter: string; packageDir: string };
  /**
   * The user's own script (config `script`, absolute), run by the `python` interpreter instead of
   * `python -m pltrain`: it attaches with pltrain.attach, which takes the run directory from
   * PLTRAIN_RUN_DIR, the config it was started from from PLTRAIN_CONFIG and the token from the
   * environment, like the engine.
   */
  script?: string;
}

export interface LaunchedTrainer {
  pid: number;
  token: string;
  runDir: string;
  /** Resolves once run.json announces where it listens; rejects with the log tail if the trainer dies first. */
  announced: Promise<RunInfo>;
}

/** Like the CLI's default run directory, plus a random suffix: two starts in one second stay apart. */
export function makeRunDirName(configName: string, now = new Date()): string {
  return `${safeRunName(configName)}-${runStamp(now)}-${randomBytes(2).toString('hex')}`;
}

export function launchTrainer(o: LaunchOptions, announceTimeoutMs = 180_000): LaunchedTrainer {
  // Owner-only, and no planted symlink followed (privateFile.ts), like every file the trainer writes there.
  ensurePrivateDir(o.runDir);
  // Which config started the run: lets code lenses and re-attach map a run back to its file.
  if (!o.resume) writePrivateAtomic(path.join(o.runDir, LAUNCH_FILE), JSON.stringify({ configPath: o.configPath, launchedAt: Date.now() }) + '\n');
  const token = randomBytes(32).toString('hex');
  const logFd = openPrivate(path.join(o.runDir, RUN_FILES.log), 'append');
  const args = o.resume ? ['--resume', o.runDir] : ['--config', o.configPath, '--run-dir', o.runDir];
  if (o.script && (!o.python || o.resume)) throw new Error(o.resume ? 'a script run cannot be resumed: it keeps no checkpoint of your model' : 'a script needs the PyTorch engine\'s interpreter');
  const pythonPath = o.python ? { PYTHONPATH: [o.python.packageDir, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) } : {};
  const [command, commandArgs, extraEnv] = o.script
    ? [o.python!.interpreter, [o.script], { ...pythonPath, [RUN_DIR_ENV]: o.runDir, [CONFIG_ENV]: path.resolve(o.configPath) }]
    : o.python
    ? [o.python.interpreter, ['-m', 'pltrain', ...args], pythonPath]
    : [o.nodePath, [o.trainerScript, ...args], { ELECTRON_RUN_AS_NODE: '1' }];
  const child = spawn(command, commandArgs, {
    cwd: o.cwd,
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: { ...process.env, ...extraEnv, [TOKEN_ENV]: token },
  });
  fs.closeSync(logFd);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', (e) => (spawnError = e));
  child.unref();

  const announced = new Promise<RunInfo>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const info = readRunInfo(o.runDir);
      if (info && runEndpoint(info) && info.pid === child.pid) {
        clearInterval(poll);
        resolve(info);
      } else if (spawnError || exited) {
        clearInterval(poll);
        const why = spawnError
          ? `could not start ${command}: ${spawnError.message}`
          : `the trainer exited (${exited!.signal ?? `code ${exited!.code}`}) before it was ready`;
        const tail = tailLog(o.runDir);
        reject(new Error(tail ? `${why}\n${tail}` : why));
      } else if (Date.now() - started > announceTimeoutMs) {
        clearInterval(poll);
        reject(new Error(`the trainer did not announce its socket within ${Math.round(announceTimeoutMs / 1000)} s\n${tailLog(o.runDir)}`));
      }
    }, 100);
  });
  return { pid: child.pid ?? -1, token, runDir: o.runDir, announced };
}
