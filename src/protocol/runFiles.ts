// Names in a run directory that more than one side derives (RUN_FILES and RunInfo, in messages.ts,
// are the files themselves): how a run directory is named and where its checkpoint lives.

/** `20261123-004512`: run directory names sort by start time. */
export function runStamp(now = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
}

/** A config's `name` as a directory name: anything outside [A-Za-z0-9_.-] becomes '-', at most 60 characters. */
export const safeRunName = (name: string) => name.replace(/[^A-Za-z0-9_.-]+/g, '-').slice(0, 60) || 'run';

/** The checkpoint folder in a run directory; `.old` is the previous one while a new one is swapped in. */
export const CHECKPOINT_DIR = 'checkpoint';
/** Checkpoint folders a resume may read, newest first (a crash between the two renames leaves only `.old`). */
export const CHECKPOINT_DIRS = [CHECKPOINT_DIR, `${CHECKPOINT_DIR}.old`] as const;
/** The file that makes a checkpoint folder complete (written after the tensors). */
export const CHECKPOINT_MANIFEST = 'manifest.json';
