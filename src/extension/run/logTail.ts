// Follows the trainer's log file (it writes there, not to a pipe, so it survives the window) and
// hands new complete lines to a callback: they go to the "PL Trainer" output channel.
import * as fs from 'node:fs';

export class LogTail {
  private offset: number;
  private partial = '';
  private timer: NodeJS.Timeout;

  constructor(private readonly file: string, private readonly onLines: (lines: string[]) => void, fromStart = true, intervalMs = 500) {
    this.offset = fromStart ? 0 : safeSize(file);
    this.timer = setInterval(() => this.poll(), intervalMs);
  }

  poll(): void {
    const size = safeSize(this.file);
    if (size < this.offset) this.offset = 0; // truncated or replaced
    if (size === this.offset) return;
    const fd = fs.openSync(this.file, 'r');
    try {
      const buf = Buffer.alloc(Math.min(size - this.offset, 1 << 20));
      const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      // The trainer's live progress line uses \r when on a TTY; keep only the last rewrite.
      const clean = lines.map((l) => l.split('\r').pop()!.trimEnd()).filter((l) => l.length);
      if (clean.length) this.onLines(clean);
    } finally {
      fs.closeSync(fd);
    }
  }

  dispose(): void {
    clearInterval(this.timer);
    try {
      this.poll();
    } catch {
      /* file gone */
    }
  }
}

function safeSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}
