// The run's event history: one seq counter, an in-memory ring for replay, durable JSONL on disk.
// A client that subscribes from seq k gets every later event in order, then the live stream.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RUN_FILES, TrainerEvent } from '../protocol';

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
   */
  static resume(runDir: string, lastSeq: number, capacity = RING_CAPACITY): EventLog {
    const log = new EventLog(runDir, capacity);
    const kept: TrainerEvent[] = [];
    let maxSeq = lastSeq;
    for (const file of [RUN_FILES.metrics, RUN_FILES.commands, RUN_FILES.events]) {
      const full = path.join(runDir, file);
      let text = '';
      try {
        text = fs.readFileSync(full, 'utf8');
      } catch {
        continue;
      }
      const keep: string[] = [];
      const drop: string[] = [];
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        try {
          const e = JSON.parse(line) as TrainerEvent;
          maxSeq = Math.max(maxSeq, e.seq);
          // hello/state/log stay: they record what happened (a crash included), not a step's result.
          const stays = e.seq <= lastSeq || file === RUN_FILES.events;
          (stays ? keep : drop).push(line);
          if (stays) kept.push(e);
        } catch {
          drop.push(line); // the truncated last line of a kill -9
        }
      }
      if (drop.length) fs.appendFileSync(full.replace(/\.jsonl$/, '.discarded.jsonl'), drop.join('\n') + '\n');
      fs.writeFileSync(full, keep.length ? keep.join('\n') + '\n' : '');
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
    if (this.ring.length > this.capacity) this.ring.splice(0, this.ring.length - this.capacity);
    // One write() per line, flushed by the OS on return: a kill -9 leaves at most a truncated last line.
    if (event.type === 'metrics') fs.appendFileSync(path.join(this.runDir, RUN_FILES.metrics), JSON.stringify(event) + '\n');
    else if (event.type === 'ack') fs.appendFileSync(path.join(this.runDir, RUN_FILES.commands), JSON.stringify(event) + '\n');
    else fs.appendFileSync(path.join(this.runDir, RUN_FILES.events), JSON.stringify(event) + '\n');
    for (const l of this.listeners) l(event);
    return event;
  }

  /** Every event with seq > sinceSeq, in order (those older than the ring are read back from disk). */
  since(sinceSeq: number): TrainerEvent[] {
    const first = this.ring[0]?.seq ?? this.next;
    const out: TrainerEvent[] = [];
    if (sinceSeq + 1 < first) {
      out.push(...this.fromDisk(sinceSeq, first));
    }
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
      let text = '';
      try {
        text = fs.readFileSync(path.join(this.runDir, file), 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) {
        try {
          const e = JSON.parse(line) as TrainerEvent;
          if (e.seq > after && e.seq < before) out.push(e);
        } catch {
          /* truncated line */
        }
      }
    }
    return out;
  }
}
