// The training run: backend, data, model, the step loop with steering at step boundaries, events.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { AckEvent, LISTENING_PREFIX, PROTOCOL_VERSION, RUN_FILES, RunState, TrainerEndpoint, TrainingConfig, UNIT_NAMES, describeCommand } from '../protocol';
import { selectBackend } from './backend';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { EventLog } from './events';
import { createModel, loadTaskData, probeBatch, type PlModel } from './models';
import { DampingFloorWatch, type FloorChanges } from './pl/dampingFloor';
import { GatingPruner, unitWeightNorms } from './pl/pruner';
import { ShareWatch } from './pl/share';
import { Progress } from './progress';
import { RunAnnouncement, RunDirLock, establishToken, prepareRunDir, writeJsonAtomic } from './runDir';
import { TrainerServer, chooseTransport } from './server';
import { DURABLE_KINDS, SteeringState } from './steering';

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
const injectFdExhaustionAt = Number(process.env.PLTRAIN_TEST_EXHAUST_FDS_AT_STEP) || -1;

/** Fault injection: takes every free file descriptor, as a flood of connections would (docs/reliability.md). */
function exhaustFileDescriptors(): void {
  try {
    for (;;) fs.openSync(process.platform === 'win32' ? 'NUL' : '/dev/null', 'r');
  } catch {
    /* EMFILE: none left */
  }
}

export async function runTraining(o: RunOptions): Promise<RunState> {
  const { config, runDir } = o;
  const progress = o.progress ?? new Progress();
  // Owner-only, fresh for a new run, and ours alone (RunDirRefused otherwise) before anything is read or written.
  prepareRunDir(runDir, !!o.resume);
  const lock = RunDirLock.acquire(runDir);
  const checkpoint = o.resume ? loadCheckpoint(runDir) : undefined;
  if (o.resume && !checkpoint) {
    lock.release();
    throw new Error(`no checkpoint to resume from in ${runDir}`);
  }
  if (!o.resume) writeJsonAtomic(path.join(runDir, RUN_FILES.config), config);
  const runId = path.basename(runDir);
  const events = checkpoint ? EventLog.resume(runDir, checkpoint.progress.seq, undefined, checkpoint.progress.acks) : new EventLog(runDir);
  const unitName = UNIT_NAMES[config.model.family];
  const steering = checkpoint
    ? new SteeringState(config.model.experts, checkpoint.progress.alpha, checkpoint.progress.frozen, unitName)
    : new SteeringState(config.model.experts, config.alpha, config.frozenExperts, unitName);
  for (const p of checkpoint?.progress.pruned ?? []) steering.pruned.add(p);
  steering.remember(checkpoint?.progress.commandIds ?? []);
  const announce = new RunAnnouncement(runDir, runId, config.steps);
  const token = establishToken(runDir);
  let step = checkpoint?.progress.step ?? 0;
  let state: RunState = 'starting';
  const setState = (s: RunState, reason?: string) => {
    state = s;
    announce.update({ state: s, step, ...(reason ? { reason } : {}) });
    if (events.lastSeq >= 0) events.emit({ type: 'state', state: s, step, time: Date.now(), ...(reason ? { reason } : {}) });
  };
  const log = (level: 'info' | 'warn' | 'error', message: string, topic?: string) => {
    progress.log(message);
    if (events.lastSeq >= 0) events.emit({ type: 'log', level, message, time: Date.now(), ...(topic ? { topic } : {}) });
  };
  const server = new TrainerServer(token, {
    events,
    onCommand: (id, command) => steering.enqueue(id, command),
    log: (m) => {
      // A connection's story must never end the run: if it cannot be recorded, it goes to stderr only.
      try {
        log('warn', m);
      } catch (e) {
        process.stderr.write(`${m} (not recorded: ${(e as Error).message})\n`);
      }
    },
  });
  /**
   * A fatal error's last word: run.json says `failed` and why (written first, with the descriptor held
   * in reserve, so a run out of descriptors still says it), then the log and state events if they can
   * still be written.
   */
  const fail = (reason: string) => {
    state = 'failed';
    try {
      announce.final({ state: 'failed', step, reason });
    } catch (e) {
      process.stderr.write(`could not record the failure in run.json: ${(e as Error).message}\n`);
    }
    try {
      log('error', `training failed: ${reason}`);
      if (events.lastSeq >= 0) events.emit({ type: 'state', state: 'failed', step, time: Date.now(), reason });
    } catch (e) {
      process.stderr.write(`training failed: ${reason} (events not recorded: ${(e as Error).message})\n`);
    }
  };
  const onUncaught = (e: Error) => {
    fail(`${e.message ?? e}`);
    process.stderr.write(`${e.stack ?? e}\n`);
    lock.release();
    process.exit(1);
  };
  process.on('uncaughtException', onUncaught);

  // Announce first: backend loading (and GPU warm-up) can take long, and the extension shows progress.
  let endpoint: TrainerEndpoint;
  try {
    endpoint = await server.listen(chooseTransport(runDir, RUN_FILES.socket));
    announce.update({ ...('socket' in endpoint ? { socket: endpoint.socket } : { host: '127.0.0.1', port: endpoint.port }), state: 'starting' });
  } catch (e) {
    fail(`could not serve the run's socket: ${(e as Error).message}`);
    lock.release();
    return state;
  }
  process.stdout.write(`${LISTENING_PREFIX}${JSON.stringify({ ...endpoint, runDir, runId, pid: process.pid })}\n`);

  let stopSignal = '';
  const onSignal = (sig: string) => {
    stopSignal = sig;
    steering.enqueue(`signal-${sig}-${Date.now()}`, { kind: 'stop' });
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  let model: PlModel | undefined;
  let tf: typeof TF | undefined;
  try {
    const backend = await selectBackend(config.backend);
    tf = backend.tf;
    announce.update({ backend: backend.info });
    progress.log(`backend: ${backend.info.name} (${backend.info.gpu ? 'GPU' : 'CPU'}) — ${backend.info.detail}`);
    const data = loadTaskData(config, o.configDir);
    progress.log(
      data.kind === 'text'
        ? `data: ${data.name}: ${data.trainSize} train / ${data.testSize} test sequences, vocabulary ${data.classes}`
        : `data: ${data.name}: ${data.trainSize} train / ${data.testSize} test, ${data.features} features, ${data.classes} classes`,
    );
    model = createModel(tf, config, data);
    const p = config.pruning;
    progress.log(`model: ${config.model.family}, ${model.units} ${unitName}s${p.enabled ? `, pruning ${p.exact ? 'exactly' : 'up to'} ${Math.floor(p.budget * model.units + 1e-9)}: soft masks from step ${p.warmup}, final at step ${p.warmup + p.anneal}` : ''}`);
    if (checkpoint) await model.setState(checkpoint.state);
    model.setProbe(probeBatch(tf, config, data));
    const pruner = config.pruning.enabled ? new GatingPruner(tf, model.units, config.pruning, config.seed) : undefined;
    if (pruner && checkpoint?.progress.pruner) pruner.setState(checkpoint.progress.pruner);

    events.emit({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      runId,
      pid: process.pid,
      backend: backend.info,
      startedAt: announce.info.startedAt,
      totalSteps: config.steps,
      unitCount: config.model.experts,
      unitName,
      alpha: steering.alpha,
      taskMetric: data.taskMetric,
      config: config as unknown as Record<string, unknown>,
      ...(checkpoint ? { resumedFromStep: step } : {}),
    });
    setState('running', checkpoint ? `resumed from the checkpoint at step ${step}` : undefined);
    if (checkpoint) progress.log(`resumed from the checkpoint at step ${step} (α ${steering.alpha}, frozen [${[...steering.frozen].join(', ')}])`);
    const m = model;
    const progressNow = (seq: number, acks?: AckEvent[]) => ({
      step,
      seq,
      alpha: steering.alpha,
      frozen: [...steering.frozen],
      pruned: [...steering.pruned],
      time: Date.now(),
      ...(pruner ? { pruner: pruner.getState() } : {}),
      ...(acks ? { acks } : {}),
      commandIds: steering.recentIds(),
    });
    const save = async () => {
      const seq = events.lastSeq;
      saveCheckpoint(runDir, progressNow(seq), await m.getState());
    };

    let experts = model.measure(steering.frozen, steering.pruned);
    const floorWatch = new DampingFloorWatch(config.monitor.damping);
    // A resumed run reshuffles from a seed derived from its step (not the exact batch sequence).
    const order = batches(data.trainSize, Math.min(config.batchSize, data.trainSize), config.seed + step);
    let emaRate = 0;
    const shareWatch = new ShareWatch(model.units);
    let lastAnnounce = Date.now();
    let last = performance.now();

    const reportDampingFloor = ({ entered, left }: FloorChanges) => {
      const floor = 1 / config.monitor.damping;
      for (const e of entered) {
        log(
          'warn',
          `${unitName} ${e.id} at step ${step}: λ_min ≤ δ·λ_max on the ${e.served ?? ''} probe examples it serves (μ ${e.mu?.toPrecision(3)}, L_f ${e.lf?.toPrecision(3)}), so its κ ${e.kappa?.toPrecision(3)} is near the damping floor 1/δ = ${floor.toPrecision(3)}: its kernel is (nearly) singular there, and its κ says little more. ` +
            `Check its share; freeze or prune it if it stays there.`,
          `damping-floor/${e.id}`,
        );
      }
      for (const e of left) {
        const why = e.frozen || e.pruned ? `${e.frozen ? 'frozen' : 'pruned'}` : `off the damping floor, ${e.kappa === null ? 'κ not measurable' : `κ ${e.kappa.toPrecision(4)}`}`;
        log('info', `${unitName} ${e.id} at step ${step}: ${why}`, `damping-floor/${e.id}`);
      }
    };

    const applyCommands = async () => {
      const decisions = steering.drain();
      if (!decisions.length) return;
      // "Applied" means saved: when a command changed what a resume restores (α, frozen units), a
      // checkpoint holding it — and the acks themselves, with the seqs they are about to take — is
      // written and fsynced before any ack is appended or sent. A kill in between loses nothing:
      // the resume restores the effect and records the acks (EventLog.resume).
      const durable = decisions.some((d) => d.status === 'applied' && DURABLE_KINDS.has(d.command.kind));
      const modelState = durable ? await m.getState() : undefined;
      // From here on synchronous: no other event can take the seqs reserved for the acks.
      const time = Date.now();
      const first = events.lastSeq + 1;
      const acks: AckEvent[] = decisions.map((d, i) => ({ type: 'ack', seq: first + i, commandId: d.commandId, command: d.command, status: d.status, step, time, ...(d.reason ? { reason: d.reason } : {}) }));
      if (modelState) saveCheckpoint(runDir, progressNow(first + acks.length - 1, acks), modelState);
      for (const { seq, ...ack } of acks) {
        const recorded = events.emit(ack);
        if (recorded.seq !== seq) throw new Error(`ack ${ack.commandId} took seq ${recorded.seq}, not the ${seq} its checkpoint holds`);
      }
      for (const d of decisions) progress.log(`command ${d.commandId}: ${describeCommand(d.command, unitName)} → ${d.status === 'applied' ? `applied at step ${step}` : `rejected: ${d.reason}`}`);
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

      const batch = data.batch(tf, 'train', order.next().value as Int32Array);
      const alpha = steering.alpha;
      // κ is reported, like the loss, for the weights a step starts from. A regularized step of a
      // family that measures in its own graph measures them itself; otherwise they are measured here,
      // before every step while α > 0 (the regularizer differentiates κ along the current extreme
      // eigenvectors: Hellmann–Feynman), else before monitor steps only.
      const monitorStep = (step + 1) % config.monitor.every === 0 || step + 1 === config.steps;
      const measuredInStep = alpha > 0 && model.measuresInStep === true;
      const measuredBefore = !measuredInStep && (monitorStep || alpha > 0) ? model.measure(steering.frozen, steering.pruned) : undefined;
      // The regularizer stays uniform over trainable units: a unit the gate would close but the budget
      // keeps is still in the model and must stay regularized (docs/method.md, "Pruning").
      // During the pruning anneal the gate's soft mask multiplies each unit's contribution, and the
      // gate learns from the step's ∂L/∂mask (docs/method.md, "Pruning: the gating network").
      const softMask = pruner?.sampleMask(step, steering.frozen, steering.pruned);
      // ‖∇f‖² for the PL* check on monitor steps only, where it is reported next to the step's μ.
      const result = model.trainStep(batch, { alpha, trainable: steering.trainableExperts(), pruned: steering.pruned, gradNorm: monitorStep, ...(softMask ? { softMask } : {}) });
      if (softMask && result.maskGrad) pruner!.update(result.maskGrad, steering.frozen, steering.pruned);
      tf.dispose([batch.x, batch.y]);
      step++;
      // Fault injection for the failure-path tests (docs/reliability.md); never set in normal use.
      if (step === injectNanAt) result.loss = NaN;
      if (step === injectFdExhaustionAt) exhaustFileDescriptors();
      if (!Number.isFinite(result.loss)) throw new NonFiniteLoss(step);

      // PL* check: ½‖∇f‖² / (f − f*) with f* = 0, a lower bound of f (cross-entropy and κ are ≥ 0),
      // exact under interpolation; so the ratio is a lower bound of PL*'s (docs/method.md, contract 11).
      const plRatio = result.gradNormSq !== undefined && result.loss > 1e-12 ? (0.5 * result.gradNormSq) / result.loss : undefined;
      // Routing shares of this step's batch (families with a router); the others report them on measurement.
      if (result.shares) shareWatch.observe(result.shares);
      const now = performance.now();
      const rate = 1000 / Math.max(1e-3, now - last);
      last = now;
      emaRate = emaRate ? 0.9 * emaRate + 0.1 * rate : rate;
      if (monitorStep) {
        const raw = result.measured ?? measuredBefore;
        if (!raw) throw new Error(`step ${step}: the model measured nothing on a monitor step`);
        if (!result.shares && raw.every((u) => u.share !== undefined)) shareWatch.observe(raw.map((u) => u.share!));
        const measured = shareWatch.annotate(raw, steering.pruned);
        experts = measured;
        for (const c of shareWatch.changes(measured)) {
          log(
            c.active ? 'info' : 'warn',
            c.active
              ? `${unitName} ${c.id} at step ${step}: active again (share EMA ${(c.ema * 100).toFixed(1)}%)`
              : `${unitName} ${c.id} at step ${step}: inactive — the model routes ${(c.ema * 100).toFixed(2)}% of its mass through it (EMA; below 1/(10·${model.units})). Its κ does not describe the model; it is not "well conditioned".`,
            `inactive/${c.id}`,
          );
        }
        const m = model;
        pruner?.observe(measured, unitWeightNorms(m.units, (i) => m.unitWeights(i)), steering.pruned);
        reportDampingFloor(floorWatch.observe(measured));
      }
      // Pruning decisions on the schedule; a pruned unit is masked from the next step on, for good.
      let prunedNow: number[] = [];
      if (pruner?.isDecisionStep(step)) {
        const keep = pruner.decisionKeepProbabilities(steering.frozen, steering.pruned);
        prunedNow = pruner.decide(steering.frozen, steering.pruned);
        for (const u of prunedNow) {
          steering.pruned.add(u);
          const k = experts.find((e) => e.id === u)?.kappa;
          log('info', `pruned ${unitName} ${u} at step ${step}: keep-probability ${keep[u].toFixed(3)}, ${k === undefined ? 'κ ?' : k === null ? 'κ not measurable' : `κ ${k.toPrecision(4)}`}`);
        }
        if (!prunedNow.length) log('info', `pruning at step ${step}: the gate keeps every ${unitName} (keep-probabilities ${keep.map((g) => g.toFixed(2)).join(', ')})`);
        if (prunedNow.length) experts = experts.map((e) => ({ ...e, pruned: steering.pruned.has(e.id) }));
      }
      const extra = monitorStep ? model.extraMetrics?.() : undefined;
      const participation = shareWatch.participation;
      if (step % config.logEvery === 0 || monitorStep) {
        events.emit({
          type: 'metrics',
          step,
          time: Date.now(),
          loss: result.loss,
          taskLoss: result.taskLoss,
          regularizer: result.regularizer,
          alpha,
          taskMetric: result.taskMetric,
          stepsPerSec: emaRate,
          ...(plRatio !== undefined && Number.isFinite(plRatio) ? { plRatio } : {}),
          ...(participation !== undefined ? { participation } : {}),
          ...(monitorStep || prunedNow.length ? { units: experts } : {}),
          ...((monitorStep || prunedNow.length) && pruner ? { gate: pruner.keepProbabilities(steering.frozen, steering.pruned) } : {}),
          ...(extra && Object.keys(extra).length ? { extra } : {}),
        });
      }
      progress.update({
        step,
        totalSteps: config.steps,
        loss: result.loss,
        meanKappa: model.meanKappa(steering.trainableExperts()),
        stepsPerSec: emaRate,
        ...(data.taskMetric === 'accuracy' ? { accuracy: result.taskMetric } : { perplexity: result.taskMetric }),
      });
      // A pruning decision changes what a resume must restore, like an applied command.
      if ((config.checkpointEvery > 0 && step % config.checkpointEvery === 0) || (prunedNow.length && config.checkpointEvery > 0)) await save();
      if (Date.now() - lastAnnounce > 2000) {
        lastAnnounce = Date.now();
        announce.update({ step });
      }
      // Let the event loop serve the socket (commands, subscriptions) between steps.
      await new Promise((r) => setImmediate(r));
    }
    await applyCommands();
    await save();
    const testMetric = model.evaluate(data, 'test', steering.pruned);
    log('info', data.taskMetric === 'accuracy' ? `test accuracy ${(testMetric * 100).toFixed(2)}% after ${step} steps` : `test perplexity ${testMetric.toFixed(3)} after ${step} steps`);
    setState(steering.stopRequested ? 'stopped' : 'completed', stopSignal ? `stopped by ${stopSignal}` : undefined);
  } catch (e) {
    const reason = e instanceof NonFiniteLoss ? e.message : `${(e as Error).message ?? e}`;
    fail(reason);
    if (!(e instanceof NonFiniteLoss) && (e as Error).stack) process.stderr.write(`${(e as Error).stack}\n`);
  } finally {
    model?.dispose();
    // Give subscribers a moment to receive the final events before the socket closes.
    await new Promise((r) => setTimeout(r, 200));
    await server.close();
    process.off('uncaughtException', onUncaught);
    lock.release();
  }
  return state;
}

export class NonFiniteLoss extends Error {
  constructor(step: number) {
    super(`loss became NaN or infinite at step ${step}`);
  }
}
