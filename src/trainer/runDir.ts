// The run directory: announcement (run.json, rewritten atomically), token, config snapshot, and the
// lock that keeps it one trainer's. Owner-only (0700, files 0600), no symlink followed (privateFile.ts).
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROTOCOL_VERSION, RUN_FILES, RunInfo, TOKEN_ENV, TrainingConfig, runStamp, safeRunName } from '../protocol';
import { ensurePrivateDir, openPrivate, writePrivateAtomic } from '../protocol/privateFile';

export function defaultRunDir(config: TrainingConfig, cwd: string, now = new Date()): string {
  return path.join(cwd, '.pltrain', 'runs', `${safeRunName(config.name)}-${runStamp(now)}`);
}

/** The token from the extension (environment) or a fresh 256-bit one; stored owner-only. */
export function establishToken(runDir: string, env = process.env): string {
  const token = env[TOKEN_ENV] && env[TOKEN_ENV]!.length >= 32 ? env[TOKEN_ENV]! : randomBytes(32).toString('hex');
  // Replaced atomically: a planted `token` symlink is replaced, its target neither written nor chmodded.
  writePrivateAtomic(path.join(runDir, RUN_FILES.token), token + '\n');
  return token;
}

export function writeJsonAtomic(file: string, value: unknown, durable = false): void {
  writePrivateAtomic(file, JSON.stringify(value, null, 2) + '\n', durable);
}

/** The lock file: which trainer process owns the run directory. */
export const LOCK_FILE = 'lock';
/** What the extension puts in a run directory before the trainer starts (launch.json and the trainer's log). */
const PRE_START_FILES = new Set(['launch.json', RUN_FILES.log]);

export class RunDirRefused extends Error {}

/**
 * Makes `runDir` ready for a trainer: owner-only, and for a new run, fresh. A run directory is never
 * reused: a new run refuses one that already holds a run's files (its seqs would restart at 0 in the
 * same files); the extension's launch.json and trainer.log, written just before the start, are fine.
 */
export function prepareRunDir(runDir: string, resume: boolean): void {
  ensurePrivateDir(runDir);
  if (resume) return;
  const taken = fs.readdirSync(runDir).filter((n) => !PRE_START_FILES.has(n));
  if (taken.length) {
    throw new RunDirRefused(
      `${runDir} already holds ${taken.slice(0, 4).join(', ')}${taken.length > 4 ? ', …' : ''}: a run directory is never reused. Choose a new --run-dir, or continue that run with --resume ${runDir}`,
    );
  }
}

/** When a process started (Linux: clock ticks since boot, /proc/<pid>/stat field 22), to tell a reused pid apart. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Whether `pid` is a process we could signal (EPERM: another user's process, so not our trainer). */
function ownProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The exclusive lock on a run directory: a `lock` file created with O_EXCL naming the owner's pid (and
 * its start time, so a pid reused after a kill -9 is not mistaken for the owner). A second trainer on
 * the same directory is refused, naming the live pid; a lock left by a dead trainer is taken over.
 */
export class RunDirLock {
  private constructor(private readonly file: string, private released = false) {}

  static acquire(runDir: string): RunDirLock {
    const file = path.join(runDir, LOCK_FILE);
    const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) ?? null }) + '\n';
    for (let attempt = 0; attempt < 2; attempt++) {
      let fd: number;
      try {
        fd = openPrivate(file, 'create');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const holder = readLock(file);
        if (holder && ownProcessAlive(holder.pid) && (holder.startTime == null || holder.startTime === processStartTime(holder.pid))) {
          throw new RunDirRefused(`${runDir} is in use by the trainer with pid ${holder.pid}: one trainer per run directory`);
        }
        // A dead owner's lock (a kill -9, a crash): take it over.
        fs.rmSync(file, { force: true });
        continue;
      }
      try {
        fs.writeSync(fd, mine);
      } finally {
        fs.closeSync(fd);
      }
      const lock = new RunDirLock(file);
      process.once('exit', () => lock.release());
      return lock;
    }
    throw new RunDirRefused(`${runDir}: could not take the run directory's lock (another trainer took it at the same moment)`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    if (readLock(this.file)?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}

function readLock(file: string): { pid: number; startTime?: string | null } | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid?: unknown; startTime?: unknown };
    return Number.isInteger(v.pid) ? { pid: v.pid as number, startTime: typeof v.startTime === 'string' ? v.startTime : null } : undefined;
  } catch {
    return undefined;
  }
}

export class RunAnnouncement {
  info: RunInfo;
  /**
   * A file descriptor held in reserve: when descriptors run out (EMFILE), the failure path closes it
   * so that run.json can still say `failed` and why.
   */
  private reserveFd: number | undefined;

  constructor(private readonly runDir: string, runId: string, totalSteps: number) {
    const now = Date.now();
    // Where it listens (socket, or host + port) is added once it does.
    this.info = { protocol: PROTOCOL_VERSION, runId, pid: process.pid, state: 'starting', startedAt: now, updatedAt: now, step: 0, totalSteps };
    try {
      this.reserveFd = fs.openSync(process.platform === 'win32' ? 'NUL' : '/dev/null', 'r');
    } catch {
      this.reserveFd = undefined;
    }
  }

  update(patch: Partial<RunInfo>): void {
    this.info = { ...this.info, ...patch, updatedAt: Date.now() };
    writeJsonAtomic(path.join(this.runDir, RUN_FILES.runInfo), this.info);
  }

  /** The last word of a failing run: frees the reserve descriptor first, so this write cannot fail for lack of one. */
  final(patch: Partial<RunInfo>): void {
    if (this.reserveFd !== undefined) {
      fs.closeSync(this.reserveFd);
      this.reserveFd = undefined;
    }
    this.update(patch);
  }
}
