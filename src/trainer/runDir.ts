// The run directory: announcement (run.json, rewritten atomically), token (0600), config snapshot.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROTOCOL_VERSION, RUN_FILES, RunInfo, TOKEN_ENV, TrainingConfig, runStamp, safeRunName } from '../protocol';

export function defaultRunDir(config: TrainingConfig, cwd: string, now = new Date()): string {
  return path.join(cwd, '.pltrain', 'runs', `${safeRunName(config.name)}-${runStamp(now)}`);
}

/** The token from the extension (environment) or a fresh 256-bit one; stored owner-only. */
export function establishToken(runDir: string, env = process.env): string {
  const token = env[TOKEN_ENV] && env[TOKEN_ENV]!.length >= 32 ? env[TOKEN_ENV]! : randomBytes(32).toString('hex');
  const file = path.join(runDir, RUN_FILES.token);
  fs.writeFileSync(file, token + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600); // an existing file keeps its old mode on write
  return token;
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

export class RunAnnouncement {
  info: RunInfo;

  constructor(private readonly runDir: string, runId: string, totalSteps: number) {
    const now = Date.now();
    this.info = { protocol: PROTOCOL_VERSION, runId, pid: process.pid, host: '127.0.0.1', port: 0, state: 'starting', startedAt: now, updatedAt: now, step: 0, totalSteps };
  }

  update(patch: Partial<RunInfo>): void {
    this.info = { ...this.info, ...patch, updatedAt: Date.now() };
    writeJsonAtomic(path.join(this.runDir, RUN_FILES.runInfo), this.info);
  }
}
