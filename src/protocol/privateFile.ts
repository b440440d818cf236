// Files in a run directory are the run's owner's alone, and no planted symlink is ever followed when
// one is created or appended to: the trainer and the extension host open every run file through
// these. Node-only (not re-exported from the protocol index; the webview never imports it).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A run directory: owner only (metrics, logs and the token are nobody else's business). */
export const PRIVATE_DIR_MODE = 0o700;
/** Every file in a run directory. */
export const PRIVATE_FILE_MODE = 0o600;

const { O_WRONLY, O_CREAT, O_APPEND, O_TRUNC, O_EXCL, O_NOFOLLOW = 0 } = fs.constants;

/**
 * Opens `file` for writing without following a symlink at its last component (ELOOP instead), created
 * 0600. `append` for logs, `create` for a fresh file that must not exist yet (temporary files).
 * Where the platform has no O_NOFOLLOW (Windows), an lstat check stands in for it.
 */
export function openPrivate(file: string, how: 'append' | 'truncate' | 'create'): number {
  if (!O_NOFOLLOW) refuseSymlink(file);
  const flags = O_WRONLY | O_CREAT | O_NOFOLLOW | (how === 'append' ? O_APPEND : how === 'truncate' ? O_TRUNC : O_EXCL);
  const fd = fs.openSync(file, flags, PRIVATE_FILE_MODE);
  // An existing file keeps its old mode on open: make it private too (fchmod: the file opened, not a path).
  if (how !== 'create') fs.fchmodSync(fd, PRIVATE_FILE_MODE);
  return fd;
}

/** Appends one piece of text to a private file (see openPrivate). */
export function appendPrivate(file: string, text: string): void {
  const fd = openPrivate(file, 'append');
  try {
    fs.writeSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replaces `file` with `text` atomically: a fresh temporary file (O_EXCL, so never a planted one),
 * fsynced, then renamed over it. A symlink at `file` is replaced, never written through.
 */
export function writePrivateAtomic(file: string, text: string, durable = false): void {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`;
  const fd = openPrivate(tmp, 'create');
  try {
    fs.writeSync(fd, text);
    if (durable) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  if (durable) fsyncDir(path.dirname(file));
}

/** Makes the rename or creation of entries in `dir` durable (a no-op where directories cannot be opened). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* Windows cannot fsync a directory */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Creates `dir` (and missing parents) owner-only, or makes an existing one owner-only. Refuses a
 * symlink or anything that is not a directory at `dir` itself.
 */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const st = fs.lstatSync(dir);
  if (st.isSymbolicLink()) throw new Error(`${dir} is a symbolic link; a run directory must be a real directory`);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if ((st.mode & 0o777) !== PRIVATE_DIR_MODE) fs.chmodSync(dir, PRIVATE_DIR_MODE);
}

function refuseSymlink(file: string): void {
  try {
    if (fs.lstatSync(file).isSymbolicLink()) throw Object.assign(new Error(`refusing to write through the symbolic link ${file}`), { code: 'ELOOP' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
