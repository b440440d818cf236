// A synthetic but protocol-exact run history for the panel tests: what the host would relay from a
// PL-regularized mixture-of-experts run. Every event is validated against the shared schemas, so the
// fixture cannot drift from the contract. Deterministic (seeded) so failures reproduce.
import {
  PROTOCOL_VERSION,
  inactiveShareThreshold,
  RunSummarySchema,
  TrainerEventSchema,
  type CommandStatus,
  type MetricsEvent,
  type RunSummary,
  type SteeringCommand,
  type TrainerEvent,
  type UnitStats,
} from '../../src/protocol';
import { mulberry32 as rng } from '../support/prng';

export interface FixtureOptions {
  runId?: string;
  totalSteps?: number;
  /** Steps already done. */
  steps?: number;
  experts?: number;
  /** What a unit is (hello.unitName); `expert` by default. */
  unitName?: string;
  monitorEvery?: number;
  alpha?: number;
  seed?: number;
  /** setAlpha applied after this step (to `alphaChangeTo`). */
  alphaChangeAt?: number;
  alphaChangeTo?: number;
  /** Expert frozen by an applied command after this step. */
  freezeAt?: { step: number; expert: number };
  /** Expert the trainer prunes from this step on. */
  pruneAt?: { step: number; expert: number };
  /** config.pruning.enabled in the hello (default true: the mask chart shows). */
  pruning?: boolean;
  /** Routing shares on monitor steps (the last unit starved: inactive), and the participation ratio. */
  shares?: boolean;
}

/** The shares of `n` units at progress `p` (0…1): the last unit starves, the others split the rest unevenly. */
export function fixtureShares(n: number, p: number): number[] {
  const w = Array.from({ length: n }, (_, i) => (i === n - 1 ? 0.001 : 1 + i * (0.5 + p)));
  const sum = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / sum);
}

export interface Fixture {
  runId: string;
  events: TrainerEvent[];
  summary: RunSummary;
  commands: CommandStatus[];
  /** Continues the same run: `steps` more metrics events with seqs after the last one. */
  more(steps: number): TrainerEvent[];
}

export function syntheticRun(o: FixtureOptions = {}): Fixture {
  const runId = o.runId ?? 'fmnist-moe-20250101-120000';
  const totalSteps = o.totalSteps ?? 300;
  const expertCount = o.experts ?? 4;
  const monitorEvery = o.monitorEvery ?? 10;
  const random = rng(o.seed ?? 7);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  let seq = 0;
  let step = 0;
  let time = 1_735_732_800_000;
  let alpha = o.alpha ?? 0.0002;
  const frozen = new Set<number>();
  const pruned = new Set<number>();
  const events: TrainerEvent[] = [];
  const commands: CommandStatus[] = [];
  const push = (e: TrainerEvent) => events.push(TrainerEventSchema.parse(e));
  // Each expert's κ starts large and settles at its own level, as the PL term conditions it.
  const kappaStart = Array.from({ length: expertCount }, (_, i) => 10 ** (3.2 + 0.55 * i));
  const kappaEnd = Array.from({ length: expertCount }, (_, i) => 12 + 25 * i);
  const lfLevel = Array.from({ length: expertCount }, (_, i) => 40 + 15 * i);
  let regularizer = kappaStart.reduce((a, k) => a + k, 0) / expertCount;

  push({
    type: 'hello', seq: seq++, protocol: PROTOCOL_VERSION, runId, pid: 4242,
    backend: { name: 'wasm', gpu: false, detail: 'tensorflow-gpu and tensorflow not installed; wasm with SIMD' },
    startedAt: time, totalSteps, unitCount: expertCount, unitName: o.unitName ?? 'expert', alpha, taskMetric: 'accuracy',
    config: { name: 'fmnist-moe', steps: totalSteps, frozenExperts: [], model: { family: 'moe-mlp', experts: expertCount, hiddenUnits: 32 }, monitor: { every: monitorEvery }, pruning: { enabled: o.pruning ?? true } },
  });
  push({ type: 'state', seq: seq++, state: 'running', step: 0, time });

  const ack = (command: SteeringCommand, at: number) => {
    const id = `cmd${String(commands.length + 1).padStart(3, '0')}`;
    push({ type: 'ack', seq: seq++, commandId: id, command, status: 'applied', step: at, time });
    commands.push({ id, command, status: 'applied', step: at });
  };

  const metricsFor = (s: number): MetricsEvent => {
    const progress = s / totalSteps;
    const experts: UnitStats[] | undefined =
      s % monitorEvery === 0
        ? Array.from({ length: expertCount }, (_, i) => {
            const decay = Math.exp(-s / (60 + 30 * i));
            const kappa = (kappaEnd[i] + (kappaStart[i] - kappaEnd[i]) * decay) * Math.exp(0.08 * gauss());
            const lf = lfLevel[i] * (1 + 0.05 * gauss());
            const routing = o.shares ? fixtureShares(expertCount, progress) : undefined;
            const share = routing ? { share: routing[i], served: Math.round(routing[i] * 64), active: routing[i] >= inactiveShareThreshold(expertCount) } : {};
            return { id: i, mu: lf / kappa, lf, kappa, frozen: frozen.has(i), pruned: pruned.has(i), ...share };
          })
        : undefined;
    const participation = experts && o.shares ? { participation: 1 / fixtureShares(expertCount, progress).reduce((a, x) => a + x * x, 0) } : {};
    // κ̄ is re-measured on monitor steps and carried between them.
    const kept = experts?.filter((e) => !e.pruned) ?? [];
    if (kept.length) regularizer = kept.reduce((a, e) => a + e.kappa!, 0) / kept.length;
    const taskLoss = 0.32 + 2.0 * Math.exp(-s / 70) + 0.05 * Math.abs(gauss()) * (1 - progress * 0.5);
    const accuracy = Math.min(0.99, 0.1 + 0.78 * (1 - Math.exp(-s / 60)) + 0.02 * gauss());
    return {
      type: 'metrics', seq: seq++, step: s, time: (time += 180), loss: taskLoss + alpha * regularizer, taskLoss, regularizer, alpha,
      taskMetric: Math.max(0, accuracy), stepsPerSec: 5.2 + 0.4 * gauss(), ...(step > 1 ? { plRatio: 2 + Math.abs(gauss()) } : {}), ...(experts ? { units: experts } : {}), ...participation,
    };
  };

  const advance = (n: number): TrainerEvent[] => {
    const start = events.length;
    for (let k = 0; k < n; k++) {
      step++;
      if (o.pruneAt && step === o.pruneAt.step) pruned.add(o.pruneAt.expert);
      push(metricsFor(step));
      if (o.alphaChangeAt === step) {
        alpha = o.alphaChangeTo ?? alpha * 5;
        ack({ kind: 'setAlpha', alpha }, step);
      }
      if (o.freezeAt?.step === step) {
        frozen.add(o.freezeAt.expert);
        ack({ kind: 'freeze', unit: o.freezeAt.expert }, step);
      }
    }
    return events.slice(start);
  };

  advance(o.steps ?? 240);
  const summary = RunSummarySchema.parse({ runId, runDir: `/workspace/.pltrain/runs/${runId}`, state: 'running', step, totalSteps, connected: true });
  return { runId, events, summary, commands, more: advance };
}
