// The training run: backend, data, model, the step loop with steering at step boundaries, events.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { LISTENING_PREFIX, PROTOCOL_VERSION, RUN_FILES, RunState, TrainingConfig } from '../protocol';
import { selectBackend } from './backend';
import { loadDataset } from './data';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { EventLog } from './events';
import { MoeMlp } from './model';
import { Progress } from './progress';
import { RunAnnouncement, establishToken, writeJsonAtomic } from './runDir';
import { TrainerServer } from './server';
import { SteeringState } from './steering';

export interface RunOptions {
  config: TrainingConfig;
  configDir: string;
  runDir: string;
  progress?: Progress;
  /** Continue a killed or failed run from its last checkpoint. */
  resume?: boolean;
}

/** Seeded shuffling of the training set, epoch after epoch. */
function* batches(n: number, batchSize: number, seed: number): Generator<Int32Array> {
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  for (;;) {
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (let i = 0; i + batchSize <= n || (i < n && batchSize > n); i += batchSize) yield order.slice(i, Math.min(n, i + batchSize));
  }
}

const injectNanAt = Number(process.env.PLTRAIN_TEST_NAN_AT_STEP) || -1;

export async function runTraining(o: RunOptions): Promise<RunState> {
  const { config, runDir } = o;
  const progress = o.progress ?? new Progress();
  fs.mkdirSync(runDir, { recursive: true });
  const checkpoint = o.resume ? loadCheckpoint(runDir) : undefined;
  if (o.resume && !checkpoint) throw new Error(`no checkpoint to resume from in ${runDir}`);
  if (!o.resume) writeJsonAtomic(path.join(runDir, RUN_FILES.config), config);
  const runId = path.basename(runDir);
  const events = checkpoint ? EventLog.resume(runDir, checkpoint.progress.seq) : new EventLog(runDir);
  const steering = checkpoint
    ? new SteeringState(config.model.experts, checkpoint.progress.alpha, checkpoint.progress.frozen)
    : new SteeringState(config.model.experts, config.alpha, config.frozenExperts);
  for (const p of checkpoint?.progress.pruned ?? []) steering.pruned.add(p);
  const announce = new RunAnnouncement(runDir, runId, config.steps);
  const token = establishToken(runDir);
  let step = checkpoint?.progress.step ?? 0;
  let state: RunState = 'starting';
  const setState = (s: RunState, reason?: string) => {
    state = s;
    announce.update({ state: s, step, ...(reason ? { reason } : {}) });
    if (events.lastSeq >= 0) events.emit({ type: 'state', state: s, step, time: Date.now(), ...(reason ? { reason } : {}) });
  };
  const log = (level: 'info' | 'warn' | 'error', message: string) => {
    progress.log(message);
    if (events.lastSeq >= 0) events.emit({ type: 'log', level, message, time: Date.now() });
  };
  const server = new TrainerServer(token, { events, onCommand: (id, command) => steering.enqueue(id, command), log: (m) => log('warn', m) });

  // Announce first: backend loading (and GPU warm-up) can take long, and the extension shows progress.
  const port = await server.listen();
  announce.update({ port, state: 'starting' });
  process.stdout.write(`${LISTENING_PREFIX}${JSON.stringify({ port, runDir, runId, pid: process.pid })}\n`);

  let stopSignal = '';
  const onSignal = (sig: string) => {
    stopSignal = sig;
    steering.enqueue(`signal-${sig}-${Date.now()}`, { kind: 'stop' });
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  let model: MoeMlp | undefined;
  let tf: typeof TF | undefined;
  try {
    const backend = await selectBackend(config.backend);
    tf = backend.tf;
    announce.update({ backend: backend.info });
    progress.log(`backend: ${backend.info.name} (${backend.info.gpu ? 'GPU' : 'CPU'}) — ${backend.info.detail}`);
    const data = loadDataset(config, o.configDir);
    progress.log(`data: ${data.name}: ${data.train.n} train / ${data.test.n} test, ${data.features} features, ${data.classes} classes`);
    model = new MoeMlp(tf, data.features, data.classes, config);
    if (checkpoint) await model.setState(checkpoint.state);
    const probeN = Math.min(config.monitor.probeSize, data.train.n);
    model.setProbe(data.train.x.subarray(0, probeN * data.features), data.train.labels.subarray(0, probeN), probeN);

    events.emit({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      runId,
      pid: process.pid,
      backend: backend.info,
      startedAt: announce.info.startedAt,
      totalSteps: config.steps,
      experts: config.model.experts,
      alpha: steering.alpha,
      taskMetric: 'accuracy',
      config: config as unknown as Record<string, unknown>,
      ...(checkpoint ? { resumedFromStep: step } : {}),
    });
    setState('running', checkpoint ? `resumed from the checkpoint at step ${step}` : undefined);
    if (checkpoint) progress.log(`resumed from the checkpoint at step ${step} (α ${steering.alpha}, frozen [${[...steering.frozen].join(', ')}])`);
    const m = model;
    const save = async () => {
      saveCheckpoint(runDir, { step, seq: events.lastSeq, alpha: steering.alpha, frozen: [...steering.frozen], pruned: [...steering.pruned], time: Date.now() }, await m.getState());
    };

    let experts = model.measure(steering.frozen, steering.pruned);
    // A resumed run reshuffles from a seed derived from its step (not the exact batch sequence).
    const order = batches(data.train.n, Math.min(config.batchSize, data.train.n), config.seed + step);
    const xBuf = new Float32Array(config.batchSize * data.features);
    let emaRate = 0;
    let lowestLoss = Infinity; // f*, for the PL* ratio
    let lastAnnounce = Date.now();
    let last = performance.now();

    const applyCommands = async () => {
      const decisions = steering.drain();
      for (const d of decisions) {
        events.emit({ type: 'ack', commandId: d.commandId, command: d.command, status: d.status, step, time: Date.now(), ...(d.reason ? { reason: d.reason } : {}) });
        progress.log(`command ${d.commandId}: ${d.command.kind}${d.command.kind === 'setAlpha' ? ` ${d.command.alpha}` : ''}${'expert' in d.command ? ` ${d.command.expert}` : ''} → ${d.status === 'applied' ? `applied at step ${step}` : `rejected: ${d.reason}`}`);
      }
      // An applied command changes what a resume must restore (α, frozen experts): checkpoint it.
      if (decisions.some((d) => d.status === 'applied') && config.checkpointEvery > 0) await save();
    };

    while (step < config.steps) {
      // Step boundary: commands take effect here, never mid-step.
      await applyCommands();
      if (steering.paused && !steering.stopRequested) {
        setState('paused');
        while (steering.paused && !steering.stopRequested) {
          await steering.nextCommand();
          await applyCommands();
        }
        if (!steering.stopRequested) setState('running');
        last = performance.now();
      }
      if (steering.stopRequested) break;

      const idx = order.next().value as Int32Array;
      const b = idx.length;
      for (let r = 0; r < b; r++) xBuf.set(data.train.x.subarray(idx[r] * data.features, (idx[r] + 1) * data.features), r * data.features);
      const labels = Int32Array.from(idx, (i) => data.train.labels[i]);
      const alpha = steering.alpha;
      const xs = tf.tensor2d(xBuf.subarray(0, b * data.features), [b, data.features]);
      const ys = tf.tidy(() => tf!.oneHot(tf!.tensor1d(labels, 'int32'), data.classes).toFloat() as TF.Tensor2D);
      const result = model.trainStep(xs, ys, alpha, steering.trainableExperts(), steering.pruned);
      tf.dispose([xs, ys]);
      step++;
      // Fault injection for the failure-path tests (docs/reliability.md); never set in normal use.
      if (step === injectNanAt) result.loss = NaN;
      if (!Number.isFinite(result.loss)) throw new NonFiniteLoss(step);

      // PL* check: ½‖∇f‖² / (f − f*). The first step has no gap yet (f = f*).
      const gap = result.loss - lowestLoss;
      const plRatio = gap > 1e-12 ? (0.5 * result.gradNormSq) / gap : undefined;
      lowestLoss = Math.min(lowestLoss, result.loss);
      const now = performance.now();
      const rate = 1000 / Math.max(1e-3, now - last);
      last = now;
      emaRate = emaRate ? 0.9 * emaRate + 0.1 * rate : rate;
      const monitorStep = step % config.monitor.every === 0 || step === config.steps;
      // The regularizer differentiates κ along the current extreme eigenvectors (Hellmann–Feynman),
      // so while α > 0 they are refreshed every step; otherwise only monitor steps measure.
      if (monitorStep || steering.alpha > 0) {
        const measured = model.measure(steering.frozen, steering.pruned);
        if (monitorStep) experts = measured;
      }
      if (step % config.logEvery === 0 || monitorStep) {
        events.emit({
          type: 'metrics',
          step,
          time: Date.now(),
          loss: result.loss,
          taskLoss: result.taskLoss,
          regularizer: result.regularizer,
          alpha,
          taskMetric: result.accuracy,
          stepsPerSec: emaRate,
          ...(plRatio !== undefined && Number.isFinite(plRatio) ? { plRatio } : {}),
          ...(monitorStep ? { experts } : {}),
        });
      }
      progress.update({ step, totalSteps: config.steps, loss: result.loss, meanKappa: model.meanKappa(steering.trainableExperts()), stepsPerSec: emaRate, accuracy: result.accuracy });
      if (config.checkpointEvery > 0 && step % config.checkpointEvery === 0) await save();
      if (Date.now() - lastAnnounce > 2000) {
        lastAnnounce = Date.now();
        announce.update({ step });
      }
      // Let the event loop serve the socket (commands, subscriptions) between steps.
      await new Promise((r) => setImmediate(r));
    }
    await applyCommands();
    await save();
    const testAccuracy = model.evaluate(data.test.x, data.test.labels, data.test.n, steering.pruned);
    log('info', `test accuracy ${(testAccuracy * 100).toFixed(2)}% after ${step} steps`);
    setState(steering.stopRequested ? 'stopped' : 'completed', stopSignal ? `stopped by ${stopSignal}` : undefined);
  } catch (e) {
    const reason = e instanceof NonFiniteLoss ? e.message : `${(e as Error).message ?? e}`;
    log('error', `training failed: ${reason}`);
    if (!(e instanceof NonFiniteLoss) && (e as Error).stack) process.stderr.write(`${(e as Error).stack}\n`);
    setState('failed', reason);
  } finally {
    model?.dispose();
    // Give subscribers a moment to receive the final events before the socket closes.
    await new Promise((r) => setTimeout(r, 200));
    await server.close();
  }
  return state;
}

export class NonFiniteLoss extends Error {
  constructor(step: number) {
    super(`loss became NaN or infinite at step ${step}`);
  }
}
