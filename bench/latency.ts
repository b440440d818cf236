// Trainer → extension host → webview latency and loss at a fixed rate of metrics messages.
//
//   trainer process (child)           extension host side (this process)        webview (headless Chromium)
//   EventLog + TrainerServer   ──ws──▶ TrainerConnection → RunSession  ──CDP──▶ panel bundle: message listener
//   (src/trainer: events.ts,           (src/extension/run: the real classes,      → schema check → RunModel → chart
//    server.ts; metrics.jsonl          batching included), relayed as the         draw on the next animation frame
//    written as in a run)              panel does (`events` and `run` messages)
//
// Real code on every hop except two stand-ins, named in the output: the trainer's events come from a
// paced loop instead of training steps (a training loop cannot hold exactly N steps/s), and the last
// hop is the DevTools protocol (Playwright's evaluate → window.postMessage), where VS Code would use its
// own IPC for `webview.postMessage`. One clock: every process reads performance.timeOrigin + now(),
// corrected to Date.now() at a millisecond tick, so sender and receiver stamps compare directly.
// usage: node --import tsx bench/latency.ts [--rate 200] [--seconds 10] [--experts 4] [--monitor-every 10] [--busy-ms 8]
// Prints progress on stderr and one `BENCH_RESULT {json}` line on stdout.
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PROTOCOL_VERSION, RUN_FILES, TrainingConfigSchema, type HostToWebview, type TrainerEndpoint } from '../src/protocol';
import { PanelRelay } from '../src/extension/panelRelay';
import { RunSession } from '../src/extension/run/runSession';
import { TrainerConnection } from '../src/extension/run/trainerConnection';
import { EventLog } from '../src/trainer/events';
import { establishToken } from '../src/trainer/runDir';
import { TrainerServer, chooseTransport } from '../src/trainer/server';
import { argValue, emitResult, installPageScript, openPanelPage, quantiles, round } from './panel-page';

const rate = argValue('rate', 200);
const seconds = argValue('seconds', 10);
const experts = argValue('experts', 4);
const monitorEvery = argValue('monitor-every', 10);
/** The host's busy interval (RunSession's BUSY_INTERVAL_MS unless given): A/B runs of the batching. */
const busyMs = process.argv.includes('--busy-ms') ? argValue('busy-ms', 8) : undefined;
const log = (m: string) => process.stderr.write(`[latency] ${m}\n`);

/** Wall-clock ms with sub-ms resolution: the monotonic clock, pinned to Date.now() at one of its ticks. */
function makeClock(): () => number {
  let tick = Date.now();
  while (Date.now() === tick);
  tick = Date.now();
  const correction = tick - (performance.timeOrigin + performance.now());
  return () => performance.timeOrigin + performance.now() + correction;
}

type TrainerMessage = { type: 'listening'; endpoint: TrainerEndpoint; token: string; runId: string; runDir: string } | { type: 'done'; sent: number; seconds: number; lateMs: number[] };

/** The trainer side, in its own process: the real event log and WebSocket server, metrics at a fixed rate. */
async function trainerRole(): Promise<void> {
  const clock = makeClock();
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-bench-latency-'));
  const runId = path.basename(runDir);
  const events = new EventLog(runDir);
  const token = establishToken(runDir, {});
  const server = new TrainerServer(token, { events, onCommand: () => undefined, log: (m) => process.stderr.write(`[latency trainer] ${m}\n`) });
  // The trainer's own transport (a Unix socket on Linux and macOS).
  const endpoint = await server.listen(chooseTransport(runDir, RUN_FILES.socket));
  const config = TrainingConfigSchema.parse({ name: 'bench-latency', steps: Math.ceil(rate * seconds), model: { experts }, monitor: { every: monitorEvery } });
  events.emit({
    type: 'hello', protocol: PROTOCOL_VERSION, runId, pid: process.pid, backend: { name: 'wasm', gpu: false, detail: 'latency benchmark (paced events, no training)' },
    startedAt: Date.now(), totalSteps: config.steps, unitCount: experts, unitName: 'expert', alpha: config.alpha, taskMetric: 'accuracy', config: config as unknown as Record<string, unknown>,
  });
  events.emit({ type: 'state', state: 'running', step: 0, time: Date.now() });
  const send = (m: TrainerMessage) => process.send!(m);
  send({ type: 'listening', endpoint, token, runId, runDir });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));

  const total = Math.ceil(rate * seconds);
  const periodMs = 1000 / rate;
  const t0 = clock();
  const lateMs: number[] = [];
  let step = 0;
  // Paced by the clock, not by timer counts: each event goes out at t0 + k·period (or as soon after as the loop gets to it).
  while (step < total) {
    const now = clock();
    while (step < total && t0 + step * periodMs <= now) {
      lateMs.push(now - (t0 + step * periodMs));
      step++;
      const kappa = Array.from({ length: experts }, (_, i) => 40 + 10 * i + Math.sin(step / 50 + i));
      events.emit({
        type: 'metrics', step, time: clock(), loss: 0.5 + 1 / step, taskLoss: 0.4 + 1 / step, regularizer: 50, alpha: config.alpha, taskMetric: Math.min(0.95, step / total), stepsPerSec: rate,
        ...(step > 1 ? { plRatio: 1.5 } : {}),
        ...(step % monitorEvery === 0 ? { units: kappa.map((k, id) => ({ id, mu: 30 / k, lf: 30, kappa: k, frozen: false, pruned: false })) } : {}),
      });
    }
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + step * periodMs - clock())));
  }
  const elapsed = (clock() - t0) / 1000;
  events.emit({ type: 'state', state: 'completed', step, time: Date.now() });
  send({ type: 'done', sent: step, seconds: elapsed, lateMs });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  await server.close();
  fs.rmSync(runDir, { recursive: true, force: true });
  process.exit(0);
}

async function hostRole(): Promise<void> {
  const clock = makeClock();
  const trainer = fork(__filename, ['--role', 'trainer', ...process.argv.slice(2)], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const fromTrainer = <T extends TrainerMessage['type']>(type: T) =>
    new Promise<Extract<TrainerMessage, { type: T }>>((resolve, reject) => {
      trainer.on('message', (m: TrainerMessage) => m.type === type && resolve(m as Extract<TrainerMessage, { type: T }>));
      trainer.once('exit', (code) => reject(new Error(`the trainer side exited (${code})`)));
    });
  const panel = await openPanelPage();
  try {
    const listening = await fromTrainer('listening');
    await installPageScript(panel.page, 'latency.page.js');
    // The extension host's real run model, connection and relay to the panel (MetricsPanel's).
    const session = new RunSession(listening.runId, listening.runDir, undefined, { log: (m) => log(`session: ${m}`), ...(busyMs !== undefined ? { busyIntervalMs: busyMs } : {}) });
    const connection = new TrainerConnection({ endpoint: listening.endpoint, token: listening.token, lastSeq: () => session.seq, shouldReconnect: () => false, log: (m) => log(`connection: ${m}`) });
    const atHost: number[] = [];
    connection.onEvent.on((e) => e.type === 'metrics' && atHost.push(clock() - e.time));
    // DevTools calls are pipelined, delivered in order.
    const pending = new Set<Promise<void>>();
    let closing = false;
    const post = (message: HostToWebview) => {
      const p = panel.post(message).catch((e: Error) => {
        if (!closing) log(`relay: ${e.message}`);
      });
      pending.add(p);
      void p.finally(() => pending.delete(p));
      return p;
    };
    const relay = new PanelRelay((message) => void post(message));
    relay.follow(session);
    session.attach(connection);
    const connected = new Promise<void>((resolve) => connection.onConnectedChange.on((c) => c && resolve()));
    await connected;
    // The webview said `ready` on load: the host answers with a snapshot, then streams.
    relay.webviewReady();
    const done = fromTrainer('done');
    trainer.send('go');
    log(`${rate} metrics/s for ${seconds} s`);
    const result = await done;
    // Let the last batch (RunSession coalesces while busy, BUSY_INTERVAL_MS) and its frame arrive.
    const deadline = Date.now() + 5000;
    let page = await panel.page.evaluate(() => (window as any).__benchLatency.results());
    while (page.received.length < result.sent && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      page = await panel.page.evaluate(() => (window as any).__benchLatency.results());
    }
    closing = true;
    relay.dispose();
    session.dispose();
    await Promise.all(pending);
    trainer.send('exit');
    if (panel.problems.length) throw new Error(`the panel reported problems: ${panel.problems.slice(0, 3).join(' | ')}`);
    const q = { p50: 0.5, p99: 0.99, max: 1 };
    emitResult({
      rate,
      seconds: round(result.seconds),
      achievedRate: round(result.sent / result.seconds),
      experts,
      monitorEvery,
      sent: result.sent,
      receivedByHost: atHost.length,
      receivedByWebview: page.received.length,
      lost: result.sent - page.received.length,
      webviewStep: page.step,
      senderLateMs: quantiles(result.lateMs, q),
      trainerToHostMs: quantiles(atHost, q),
      trainerToWebviewMs: quantiles(page.received, q),
      trainerToDrawnMs: quantiles(page.drawn, q),
      hops: {
        trainer: 'real EventLog + TrainerServer (src/trainer/events.ts, server.ts) in a child process, metrics.jsonl written; events paced by a loop, not produced by training',
        host: 'real TrainerConnection + RunSession (src/extension/run) in Node, outside VS Code; relayed as MetricsPanel does',
        webview: 'real panel bundle (dist/webview) in headless Chromium; host→webview over the DevTools protocol instead of VS Code IPC',
      },
    });
  } finally {
    trainer.kill();
    await panel.close();
  }
}

const role = process.argv.includes('--role') ? process.argv[process.argv.indexOf('--role') + 1] : 'host';
(role === 'trainer' ? trainerRole() : hostRole()).catch((e) => {
  process.stderr.write(`[latency] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
