// Reading a run directory written by the trainer: announcement (run.json), token, and history on disk.
// Used to re-attach after a window reload and to show finished runs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AckEvent, MetricsEvent, RUN_FILES, RunInfo, RunInfoSchema, TERMINAL_STATES, TrainerEvent, TrainerEventSchema } from '../../protocol';
import { forEachLine } from '../../protocol/jsonlFile';

export function readRunInfo(runDir: string): RunInfo | undefined {
  try {
    const r = RunInfoSchema.safeParse(JSON.parse(fs.readFileSync(path.join(runDir, RUN_FILES.runInfo), 'utf8')));
    return r.success ? r.data : undefined;
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

/** True when a process with this pid exists (signal 0 probes without killing). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A run whose trainer is still alive and announced a port: worth re-attaching to. */
export function isLiveRun(info: RunInfo | undefined): info is RunInfo {
  return !!info && info.port > 0 && !TERMINAL_STATES.includes(info.state) && processAlive(info.pid);
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

/** A run's whole recorded history (metrics, acks, and hello/state/log events), in seq order. */
export function readRecordedEvents(runDir: string): TrainerEvent[] {
  const parse = (v: unknown) => {
    const r = TrainerEventSchema.safeParse(v);
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

/** Run directories under `root`, newest first (by run.json startedAt, else mtime). */
export function listRunDirs(root: string): { dir: string; info?: RunInfo }[] {
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
    .map((dir) => ({ dir, info: readRunInfo(dir), mtime: fs.statSync(dir).mtimeMs }));
  runs.sort((a, b) => (b.info?.startedAt ?? b.mtime) - (a.info?.startedAt ?? a.mtime));
  return runs.map(({ dir, info }) => ({ dir, info }));
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
