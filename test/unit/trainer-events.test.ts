// The run's event history on disk and in memory: JSONL read line by line in chunks, replay of a long
// history (from disk and the ring), the ring's bound, and resume after a crash.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { RUN_FILES, type TrainerEvent } from '../../src/protocol';
import { forEachLine } from '../../src/protocol/jsonlFile';
import { EventLog } from '../../src/trainer/events';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'plt-events-'));

test('forEachLine: the same lines as split("\\n"), in chunks as small as 7 bytes, multi-byte characters split across chunks decoded whole', () => {
  const dir = tmp();
  const file = path.join(dir, 'x.jsonl');
  const text = ['{"κ":1.5,"μ":"λ_min"}', '', 'αβγδ — ü ✓ 𝜅', 'plain', 'no newline at the end'].join('\n');
  fs.writeFileSync(file, text);
  for (const chunk of [7, 8, 13, 1 << 22]) {
    const lines: string[] = [];
    assert.equal(forEachLine(file, (l) => lines.push(l), chunk), true);
    assert.deepEqual(lines, text.split('\n'), `chunk ${chunk}`);
  }
  fs.writeFileSync(file, 'a\nb\n');
  const lines: string[] = [];
  forEachLine(file, (l) => lines.push(l), 3);
  assert.deepEqual(lines, ['a', 'b'], 'a final newline ends the last line; no empty line after it');
  assert.equal(forEachLine(path.join(dir, 'missing.jsonl'), () => assert.fail('called')), false);
  fs.rmSync(dir, { recursive: true });
});

function metrics(seq: number): TrainerEvent {
  return { type: 'metrics', seq, step: seq, time: 1, loss: 1 / (seq + 1), taskLoss: 0.5, regularizer: 3, alpha: 0.01, taskMetric: 0.8, stepsPerSec: 100 } as TrainerEvent;
}

test('EventLog: replay from any seq = the events after it, in order, from disk and the ring; the ring stays bounded', () => {
  const dir = tmp();
  const log = new EventLog(dir, 100);
  for (let i = 0; i < 1000; i++) {
    const { seq: _seq, ...e } = metrics(i) as TrainerEvent & { seq: number };
    log.emit(e as never);
  }
  assert.ok((log as unknown as { ring: TrainerEvent[] }).ring.length <= 125, 'ring trimmed by a quarter at a time, never past 1.25 × capacity');
  for (const since of [-1, 0, 499, 874, 998, 999]) {
    const got = log.since(since);
    assert.deepEqual(got.map((e) => e.seq), Array.from({ length: 999 - since }, (_, k) => since + 1 + k), `since ${since}`);
  }
  fs.rmSync(dir, { recursive: true });
});

test('EventLog: a history of 250,000 events replays whole (a spread into push() would overflow the call stack) and resumes with the newest in the ring', () => {
  const dir = tmp();
  const N = 250_000;
  const lines: string[] = [];
  for (let i = 1; i <= N; i++) lines.push(JSON.stringify(metrics(i)));
  fs.writeFileSync(path.join(dir, RUN_FILES.metrics), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(dir, RUN_FILES.events), JSON.stringify({ type: 'state', seq: 0, state: 'running', step: 0, time: 1 }) + '\n');
  // A crash after the checkpoint at seq 240,000: the tail moves aside, the rest stays byte for byte.
  const log = EventLog.resume(dir, 240_000, 1000);
  assert.equal(log.lastSeq, N, 'seqs are never reused');
  const replay = log.since(-1);
  assert.equal(replay.length, 240_001);
  assert.ok(replay.every((e, k) => e.seq === k), 'every seq 0…240,000, in order');
  assert.deepEqual((log as unknown as { ring: TrainerEvent[] }).ring.map((e) => e.seq), Array.from({ length: 1000 }, (_, k) => 239_001 + k), 'the ring holds the newest 1000 kept');
  assert.equal(fs.readFileSync(path.join(dir, RUN_FILES.metrics), 'utf8'), lines.slice(0, 240_000).join('\n') + '\n');
  assert.equal(fs.readFileSync(path.join(dir, 'metrics.discarded.jsonl'), 'utf8'), lines.slice(240_000).join('\n') + '\n');
  assert.ok(!fs.existsSync(path.join(dir, 'events.discarded.jsonl')) && !fs.existsSync(path.join(dir, 'commands.discarded.jsonl')), 'nothing discarded, no file');
  assert.ok(!fs.existsSync(path.join(dir, RUN_FILES.commands)), 'a file that did not exist is not created');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.resume-')), [], 'no temporary file left');
  fs.rmSync(dir, { recursive: true });
});

test('a subscriber to a long history gets all of it, paced by its socket (never dropped for a full buffer), then the live events with none lost', { timeout: 120_000 }, async () => {
  const { TrainerServer } = await import('../../src/trainer/server');
  const { WebSocket } = await import('ws');
  const { TOKEN_HEADER } = await import('../../src/protocol');
  const dir = tmp();
  // 150,000 events of ~300 bytes: 45 MB, three times what the server lets queue for one client.
  const N = 150_000;
  const lines: string[] = [];
  for (let i = 0; i < N; i++) lines.push(JSON.stringify({ ...metrics(i), extra: { note: 'x'.repeat(120) } }));
  fs.writeFileSync(path.join(dir, RUN_FILES.metrics), lines.join('\n') + '\n');
  const log = EventLog.resume(dir, N - 1, 1000);
  const logged: string[] = [];
  const server = new TrainerServer('secret', { events: log, onCommand: () => undefined, log: (m) => logged.push(m) });
  const { port } = (await server.listen({ tcp: true })) as { port: number };
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { [TOKEN_HEADER]: 'secret' } });
  const seqs: number[] = [];
  let closed = false;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (d) => {
      seqs.push((JSON.parse(d.toString()) as TrainerEvent).seq);
      if (seqs.length === N + 50) resolve();
    });
    ws.on('close', () => {
      closed = true;
      reject(new Error(`the server closed the connection after ${seqs.length} of ${N + 50} events`));
    });
  });
  await new Promise<void>((r) => ws.on('open', () => r()));
  ws.send(JSON.stringify({ type: 'subscribe', sinceSeq: -1 }));
  // Training goes on during the replay: 50 live events, emitted while the history streams.
  for (let k = 0; k < 50; k++) {
    await new Promise((r) => setTimeout(r, 2));
    const { seq: _seq, ...e } = metrics(N + k) as TrainerEvent & { seq: number };
    log.emit(e as never);
  }
  await done;
  assert.equal(closed, false, 'the client was not dropped');
  assert.deepEqual(logged.filter((m) => /dropped/.test(m)), []);
  assert.ok(seqs.every((s, k) => s === k), 'every seq 0…N+49 exactly once, in order');
  ws.close();
  await server.close();
  fs.rmSync(dir, { recursive: true });
});
