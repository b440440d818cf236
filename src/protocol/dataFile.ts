// Reading a data file named by the config (data.path) safely: only a regular file, under
// MAX_DATA_FILE_BYTES, read with that bound. A device (/dev/zero), a FIFO or a folder is refused before
// any byte is read, with a sentence the config diagnostic and the trainer's error both use. Node-only
// (not re-exported from the protocol index; the webview never imports it).
import * as fs from 'node:fs';
import { MAX_DATA_FILE_BYTES } from './limits';

const MIB = 1024 * 1024;
const size = (n: number) => (n >= MIB ? `${(n / MIB).toFixed(n >= 10 * MIB ? 0 : 1)} MiB` : `${n} bytes`);

/** What kind of non-regular file `st` is, in words. */
function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Why `st` is not an acceptable data file, or undefined. */
function statProblem(file: string, st: fs.Stats, maxBytes: number): string | undefined {
  if (!st.isFile()) return `${file} is ${kindOf(st)}: data files must be regular files`;
  if (st.size > maxBytes) return `${file} is ${size(st.size)}, more than the ${size(maxBytes)} a data file may have`;
  return undefined;
}

/** Why `file` cannot be a data file (missing, not a regular file, too large), or undefined when it can. Never opens it. */
export function dataFileProblem(file: string, maxBytes = MAX_DATA_FILE_BYTES): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file}: ${(e as Error).message}`;
  }
  return statProblem(file, st, maxBytes);
}

/**
 * Reads a data file whole, refusing what dataFileProblem refuses. Opened non-blocking (a FIFO can't
 * hold the open), checked on the opened descriptor (no swap between check and read), and read with
 * the bound even if the file grows meanwhile.
 */
export function readDataFile(file: string, maxBytes = MAX_DATA_FILE_BYTES): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    const bad = statProblem(file, st, maxBytes);
    if (bad) throw new Error(bad);
    const out = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let got = 0;
    for (;;) {
      const n = fs.readSync(fd, out, got, out.length - got, null);
      if (n === 0) break;
      got += n;
      if (got > maxBytes) throw new Error(`${file} grew past the ${size(maxBytes)} a data file may have while it was read`);
      if (got === out.length) break;
    }
    return out.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}
