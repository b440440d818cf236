// Reading a run directory written by the trainer: announcement (run.json), token, and history on disk.
// Used to re-attach after a window reload, to resume, and to show finished runs. Records of a
// protocol-1 run are upgraded on read (upgradeRecord), so old runs open like new ones.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AckEvent, MetricsEvent, RUN_FILES, RunInfo, RunInfoSchema, TERMINAL_STATES, TrainerEvent, TrainerEventSchema, runEndpoint, upgradeRecord } from '../../protocol';
import { forEachLine } from '../../protocol/jsonlFile';
import { hasCheckpoint } from '../../protocol/runDirectory';

/** Written by the extension (not the trainer) into the run directory: which config started the run. */
export const LAUNCH_FILE = 'launch.json';

/**
 * A run directory as read once: its announcement, whether its trainer was alive at that moment, the
 * config file that started it and whether it can be resumed. The resume, re-attach and open paths
 * pass this on instead of reading the directory again.
 */
export interface RunDirectory {
  dir: string;
  /** run.json, when present and valid. */
  info: RunInfo | undefined;
  /** Its trainer was alive and had announced its socket (or port) when the directory was read (isLiveRun). */
  alive: boolean;
  /** The config file that started it (launch.json), for code lenses and resumes. */
  configPath: string | undefined;
  /** It holds a complete checkpoint. */
  resumable: boolean;
}

export function readRunDirectory(dir: string): RunDirectory {
  const info = readRunInfo(dir);
  return { dir, info, alive: isLiveRun(info), configPath: readLaunchConfigPath(dir), resumable: hasCheckpoint(dir) };
}

export function readRunInfo(runDir: string): RunInfo | undefined {
  try {
    const r = RunInfoSchema.safeParse(upgradeRecord(JSON.parse(fs.readFileSync(path.join(runDir, RUN_FILES.runInfo), 'utf8'))));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

function readLaunchConfigPath(runDir: string): string | undefined {
  try {
    const launch = JSON.parse(fs.readFileSync(path.join(runDir, LAUNCH_FILE), 'utf8')) as { configPath?: unknown };
    return typeof launch.configPath === 'string' ? launch.configPath : undefined;
  } catch {
    return undefined;
  }
}

export function readToken(runDir: string): string | undefined {
  try {
    return fs.readFileSync(path.join(runDir, RUN_FILES.token), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * True when a process with this pid exists and is ours (signal 0 probes without killing). EPERM means
 * the pid belongs to another user (pid 1, or a pid reused after the trainer died): not our trainer,
 * so the run is not live (no endless reconnects, and Delete/Resume stay possible).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A run whose trainer is still alive and announced where it listens: worth re-attaching to. */
export function isLiveRun(info: RunInfo | undefined): info is RunInfo {
  return !!info && runEndpoint(info) !== undefined && !TERMINAL_STATES.includes(info.state) && processAlive(info.pid);
}

/**
 * Reads a JSONL file; a kill -9 can leave a truncated last line, which is skipped, as is any
 * line that does not validate (the file may come from an older trainer).
 */
export function readJsonl<T>(file: string, parse: (v: unknown) => T | undefined): T[] {
  const out: T[] = [];
  // Line by line in chunks: a long run's metrics.jsonl may not fit in one string.
  forEachLine(file, (line) => {
    if (!line.trim()) return;
    try {
      const v = parse(JSON.parse(line));
      if (v !== undefined) out.push(v);
    } catch {
      /* truncated line */
    }
  });
  return out;
}

/** A run's whole recorded history (metrics, acks, and hello/state/log events), in seq order, in protocol 2. */
export function readRecordedEvents(runDir: string): TrainerEvent[] {
  const parse = (v: unknown) => {
    const r = TrainerEventSchema.safeParse(upgradeRecord(v));
    return r.success ? r.data : undefined;
  };
  return [RUN_FILES.metrics, RUN_FILES.commands, RUN_FILES.events]
    .flatMap((f) => readJsonl(path.join(runDir, f), parse))
    .sort((a, b) => a.seq - b.seq);
}

export function readRecordedHistory(runDir: string): { metrics: MetricsEvent[]; acks: AckEvent[] } {
  const events = readRecordedEvents(runDir);
  return { metrics: events.filter((e): e is MetricsEvent => e.type === 'metrics'), acks: events.filter((e): e is AckEvent => e.type === 'ack') };
}

/** Run directories under `root`, newest first (by run.json startedAt, else mtime), each read once. */
export function listRunDirs(root: string): RunDirectory[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const runs = names
    .map((n) => path.join(root, n))
    .filter((d) => {
      try {
        return fs.statSync(d).isDirectory() && fs.existsSync(path.join(d, RUN_FILES.config));
      } catch {
        return false;
      }
    })
    .map((dir) => ({ run: readRunDirectory(dir), mtime: fs.statSync(dir).mtimeMs }));
  runs.sort((a, b) => (b.run.info?.startedAt ?? b.mtime) - (a.run.info?.startedAt ?? a.mtime));
  return runs.map(({ run }) => run);
}

/** Last `maxLines` lines of the trainer's log, for error messages. */
export function tailLog(runDir: string, maxLines = 15): string {
  try {
    const text = fs.readFileSync(path.join(runDir, RUN_FILES.log), 'utf8');
    return text.trimEnd().split('\n').slice(-maxLines).join('\n');
  } catch {
    return '';
  }
}
