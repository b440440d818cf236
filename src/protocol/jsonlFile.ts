// Reading the run directory's JSONL files (metrics.jsonl and friends) line by line, in chunks: a long
// run's metrics.jsonl can outgrow what one string may hold (V8 caps strings near 512 MB), and reading
// it whole would also hold it all in memory at once. Node-only: the webview never imports this (it is
// not re-exported from the protocol index).
import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

/**
 * Calls `onLine` for every line of `file` (without its '\n'; a last line without one included), in
 * order. Returns false, calling nothing, when the file cannot be opened. UTF-8 characters split
 * across chunk boundaries are decoded whole.
 */
export function forEachLine(file: string, onLine: (line: string) => void, chunkBytes = 1 << 22): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const decoder = new StringDecoder('utf8');
    let rest = '';
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, chunkBytes, null);
      if (n === 0) break;
      const lines = (rest + decoder.write(buffer.subarray(0, n))).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) onLine(line);
    }
    rest += decoder.end();
    if (rest) onLine(rest);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}
