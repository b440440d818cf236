// The run's event history: one seq counter, an in-memory ring for replay, durable JSONL on disk.
// A client that subscribes from seq k gets every later event in order, then the live stream.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RUN_FILES, TrainerEvent, upgradeRecord } from '../protocol';
import { forEachLine } from '../protocol/jsonlFile';
import { appendPrivate, openPrivate } from '../protocol/privateFile';

type Unseq<T> = T extends unknown ? Omit<T, 'seq'> : never;
export type NewEvent = Unseq<TrainerEvent>;

/** In-memory bound: beyond it, the oldest metrics are replayed from metrics.jsonl instead. */
export const RING_CAPACITY = 200_000;

export class EventLog {
  private next = 0;
  private ring: TrainerEvent[] = [];
  private readonly listeners = new Set<(e: TrainerEvent) => void>();

  constructor(private readonly runDir: string, private readonly capacity = RING_CAPACITY) {}

  /**
   * Continues a run's history after a crash: events up to `lastSeq` (the checkpoint's) stay; later
   * ones describe steps that will be redone, so they move to `*.discarded.jsonl` (kept, not lost).
   * Kept records of a protocol-1 run are rewritten in protocol 2, so a replay speaks one protocol.
   */
  static resume(runDir: string, lastSeq: number, capacity = RING_CAPACITY, checkpointAcks: readonly TrainerEvent[] = []): EventLog {
    const log = new EventLog(runDir, capacity);
    const kept: TrainerEvent[] = [];
    const keptAckSeqs = new Set<number>();
    let maxSeq = lastSeq;
    for (const file of [RUN_FILES.metrics, RUN_FILES.commands, RUN_FILES.events]) {
      const full = path.join(runDir, file);
      // The kept lines go to a new file that replaces the old one, written in pieces as they come
      // (a long run's file can be too large to hold, or join, as one string).
      const next = `${full}.resume-${process.pid}`;
      const keep = new LineWriter(next, 'w', true);
      const drop = new LineWriter(full.replace(/\.jsonl$/, '.discarded.jsonl'), 'a', false);
      const read = forEachLine(full, (line) => {
        if (!line.trim()) return;
        try {
          const recorded: unknown = JSON.parse(line);
          const e = upgradeRecord(recorded) as TrainerEvent;
          maxSeq = Math.max(maxSeq, e.seq);
          // hello/state/log stay: they record what happened (a crash included), not a step's result.
          const stays = e.seq <= lastSeq || file === RUN_FILES.events;
          if (stays) keep.write(e === recorded ? line : JSON.stringify(e));
          else drop.write(line);
          if (stays) {
            if (e.type === 'ack') keptAckSeqs.add(e.seq);
            kept.push(e);
            // Only the newest `capacity` (by seq) can end up in the ring; trim in chunks, not per event.
            if (kept.length > 2 * capacity) kept.sort((a, b) => a.seq - b.seq).splice(0, kept.length - capacity);
          }
        } catch {
          drop.write(line); // the truncated last line of a kill -9
        }
      });
      keep.close();
      drop.close();
      if (read) fs.renameSync(next, full);
      else fs.rmSync(next, { force: true });
    }
    // Acks the checkpoint holds but a kill kept off the disk (it came between the checkpoint and the
    // append): the command's effect was saved, so its ack is recorded now, once.
    for (const ack of checkpointAcks) {
      if (ack.seq > lastSeq || keptAckSeqs.has(ack.seq)) continue;
      appendPrivate(path.join(runDir, RUN_FILES.commands), JSON.stringify(ack) + '\n');
      kept.push(ack);
      maxSeq = Math.max(maxSeq, ack.seq);
    }
    kept.sort((a, b) => a.seq - b.seq);
    log.ring = kept.slice(-capacity);
    // Seqs are never reused: a client that saw the discarded events must not mistake new ones for them.
    log.next = maxSeq + 1;
    return log;
  }

  get lastSeq(): number {
    return this.next - 1;
  }

  emit(partial: NewEvent): TrainerEvent {
    const event = { ...partial, seq: this.next++ } as TrainerEvent;
    this.ring.push(event);
    // Trimmed by a quarter at a time: splicing one event off a 200,000-long array on every emit would
    // copy the whole array each step.
    if (this.ring.length > this.capacity * 1.25) this.ring.splice(0, this.ring.length - this.capacity);
    // One write() per line, flushed by the OS on return: a kill -9 leaves at most a truncated last line.
    // Opened owner-only without following a planted symlink (privateFile.ts).
    appendPrivate(path.join(this.runDir, EventLog.fileOf(event)), JSON.stringify(event) + '\n');
    for (const l of this.listeners) l(event);
    return event;
  }

  /** The run file an event is recorded in. */
  static fileOf(e: Pick<TrainerEvent, 'type'>): string {
    return e.type === 'metrics' ? RUN_FILES.metrics : e.type === 'ack' ? RUN_FILES.commands : RUN_FILES.events;
  }

  /** Every event with seq > sinceSeq, in order (those older than the ring are read back from disk). */
  since(sinceSeq: number): TrainerEvent[] {
    const first = this.ring[0]?.seq ?? this.next;
    // Not push(...fromDisk): spreading a long history as arguments overflows the call stack.
    const out: TrainerEvent[] = sinceSeq + 1 < first ? this.fromDisk(sinceSeq, first) : [];
    for (const e of this.ring) if (e.seq > sinceSeq) out.push(e);
    return out.sort((a, b) => a.seq - b.seq);
  }

  subscribe(listener: (e: TrainerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private fromDisk(after: number, before: number): TrainerEvent[] {
    const out: TrainerEvent[] = [];
    for (const file of [RUN_FILES.metrics, RUN_FILES.commands, RUN_FILES.events]) {
      forEachLine(path.join(this.runDir, file), (line) => {
        try {
          const e = upgradeRecord(JSON.parse(line)) as TrainerEvent;
          if (e.seq > after && e.seq < before) out.push(e);
        } catch {
          /* truncated line */
        }
      });
    }
    return out;
  }
}

/**
 * Writes lines to a file through a 1 MiB buffer (one write() per buffer, not per line). The file is
 * opened at the first write, or at close() when `always` (an empty file then replaces the old one).
 */
class LineWriter {
  private fd: number | undefined;
  private parts: string[] = [];
  private size = 0;

  constructor(
    private readonly file: string,
    private readonly flags: 'w' | 'a',
    private readonly always: boolean,
  ) {}

  write(line: string): void {
    this.parts.push(line, '\n');
    this.size += line.length + 1;
    if (this.size > 1 << 20) this.flush();
  }

  close(): void {
    if (this.parts.length || this.always) this.flush();
    if (this.fd !== undefined) fs.closeSync(this.fd);
  }

  private flush(): void {
    this.fd ??= openPrivate(this.file, this.flags === 'w' ? 'truncate' : 'append');
    if (this.parts.length) fs.writeSync(this.fd, this.parts.join(''));
    this.parts = [];
    this.size = 0;
  }
}
