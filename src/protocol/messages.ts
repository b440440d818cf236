// The one message contract between trainer ⇄ extension host ⇄ webview.
// Every frame crossing a process or webview boundary is validated against these schemas on receipt.
// docs/protocol.md describes the same contract in prose; keep the two in step.
import { z } from 'zod';
import { BACKEND_NAMES, DEFAULT_DAMPING } from './config';
import { AlphaSchema, UnitIdSchema } from './limits';

/**
 * 2: units named for what they hold (`hello.unitCount`, `metrics.units`, `freeze {unit}`), `unitName`
 * required, bounded steering values, the backend's engine and device. Protocol-1 run directories stay
 * readable: `upgradeRecord` (upgrade.ts) turns their records into protocol 2 on read.
 */
export const PROTOCOL_VERSION = 2;

/** Largest frame either side accepts; commands are tiny, so anything bigger is hostile or a bug. */
export const MAX_FRAME_BYTES = 64 * 1024;

const finite = z.number().finite();
const step = z.number().int().min(0);

// ---------------------------------------------------------------------------------------------
// Steering commands (extension → trainer; webview → extension)

const steeringCommand = (alpha: z.ZodNumber, unit: z.ZodNumber) =>
  z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('pause') }).strict(),
    z.object({ kind: z.literal('resume') }).strict(),
    z.object({ kind: z.literal('stop') }).strict(),
    z.object({ kind: z.literal('setAlpha'), alpha }).strict(),
    z.object({ kind: z.literal('freeze'), unit }).strict(),
    z.object({ kind: z.literal('unfreeze'), unit }).strict(),
  ]);

/**
 * A command as issued (client frames, the panel's posts). Its bounds (limits.ts) are part of the
 * contract: a value outside them is refused before anything is applied.
 */
export const SteeringCommandSchema = steeringCommand(AlphaSchema, UnitIdSchema);
export type SteeringCommand = z.infer<typeof SteeringCommandSchema>;
/**
 * A command as recorded (in an ack, in a command's status): the same shapes with any number, because a
 * rejection records what was asked (an older trainer acknowledged an α < 0 as rejected).
 */
export const RecordedCommandSchema = steeringCommand(z.number(), z.number().int());
export type SteeringKind = SteeringCommand['kind'];

/** Command ids are chosen by whoever issues the command (webview or extension) and echoed in the ack. */
export const CommandIdSchema = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/);

// ---------------------------------------------------------------------------------------------
// Trainer → extension events. Each carries `seq`, strictly increasing per run, so a client that
// re-attaches asks for everything after the last seq it holds and gets no gap and no duplicate.

export const RunStateSchema = z.enum(['starting', 'running', 'paused', 'completed', 'stopped', 'failed']);
export type RunState = z.infer<typeof RunStateSchema>;
export const TERMINAL_STATES: readonly RunState[] = ['completed', 'stopped', 'failed'];

export const BackendInfoSchema = z
  .object({
    /** The TF.js backend in use, or `pytorch` for the PyTorch engine. */
    name: z.enum([...BACKEND_NAMES, 'pytorch']),
    /** True when tensors live on a GPU. */
    gpu: z.boolean(),
    /** Human-readable detail, e.g. why faster backends were skipped. */
    detail: z.string(),
    /** Which trainer engine runs the model (absent: `tfjs`). */
    engine: z.enum(['tfjs', 'pytorch']).optional(),
    /** The device tensors live on, as the engine names it (`cuda:0 NVIDIA H200`, `cpu`). */
    device: z.string().max(200).optional(),
  })
  .strict();
export type BackendInfo = z.infer<typeof BackendInfoSchema>;

/**
 * Fewest examples (tokens for Switch routing) a unit must serve on the probe for its own κ to be
 * measured; below it the unit's μ, L_f and κ are null ("not measurable"), never a number.
 */
export const MIN_SERVED = 4;

/**
 * A unit whose share EMA falls below 1/(INACTIVE_SHARE_DIVISOR · unitCount) is flagged inactive: the
 * model barely routes through it, so its κ says nothing about the model (docs/method.md, "Share").
 */
export const INACTIVE_SHARE_DIVISOR = 10;

/** The share EMA below which a unit of a model with `unitCount` units reads inactive. */
export function inactiveShareThreshold(unitCount: number): number {
  return 1 / (INACTIVE_SHARE_DIVISOR * Math.max(1, unitCount));
}

/**
 * One prunable unit (an expert, a head, a channel group) as measured on a monitor step. μ, L_f and κ
 * describe the unit's kernel as the model uses it, over the probe examples the unit serves
 * (docs/method.md, "Definitions"); null when it serves fewer than MIN_SERVED of them.
 */
export const UnitStatsSchema = z
  .object({
    id: z.number().int().min(0),
    /** PL constant estimate: λ_min of the unit's kernel over the examples it serves; null: not measurable. */
    mu: finite.nullable(),
    /** Smoothness (Lipschitz) estimate: λ_max of the same kernel; null: not measurable. */
    lf: finite.nullable(),
    /** Condition number, smoothly damped: λ_max/(λ_min + δ·λ_max) (docs/method.md, "Damping"); null: not measurable. */
    kappa: finite.nullable(),
    /**
     * Fraction (0…1) of the model's routing mass through the unit on the step's batch; the shares of all
     * units sum to 1 (docs/method.md, "Share"). Absent in records written before shares were streamed.
     */
    share: z.number().min(0).max(1).optional(),
    /** Probe examples (tokens for Switch routing) the unit's κ is measured over. Absent: as for `share`. */
    served: z.number().int().min(0).optional(),
    /**
     * False when the unit's share EMA is below inactiveShareThreshold(unitCount): flagged inactive,
     * whatever its κ. Absent: as for `share` (not known, shown as active).
     */
    active: z.boolean().optional(),
    frozen: z.boolean(),
    pruned: z.boolean(),
  })
  .strict();
export type UnitStats = z.infer<typeof UnitStatsSchema>;

/**
 * Whether a reported κ sits at the damping floor (δ = `monitor.damping`): κ = λ_max/(λ_min + δ·λ_max) ≤ 1/δ
 * (smooth damping, docs/method.md "Damping"), and "at the floor" means the damping dominates,
 * λ_min ≤ δ·λ_max, i.e. κ ≥ 1/(2δ). A null κ (not measurable) is not at the floor. One definition for
 * the trainer's warning, the panel and the sidebar.
 */
export function kappaAtDampingFloor(kappa: number | null | undefined, damping: number): boolean {
  return typeof kappa === 'number' && kappa >= (1 - 1e-9) / (2 * damping);
}

/** δ of a run, from the resolved config its `hello` carries (the default before there is one). */
export function runDamping(config: Record<string, unknown> | undefined): number {
  const damping = (config?.monitor as { damping?: unknown } | undefined)?.damping;
  return typeof damping === 'number' && damping > 0 ? damping : DEFAULT_DAMPING;
}

export const HelloEventSchema = z
  .object({
    type: z.literal('hello'),
    seq: step,
    protocol: z.literal(PROTOCOL_VERSION),
    runId: z.string(),
    pid: z.number().int(),
    backend: BackendInfoSchema,
    startedAt: z.number(),
    totalSteps: step,
    /** How many prunable units the model has; `metrics.units` lists them by id 0…unitCount−1. */
    unitCount: z.number().int().min(1),
    /** What a unit is, singular and lower case as a person reads it: `expert`, `head`, `channel group` (UNIT_NAMES). */
    unitName: z.string().min(1).max(40),
    alpha: finite,
    taskMetric: z.enum(['accuracy', 'perplexity']),
    /** The resolved config the run uses (after defaults). */
    config: z.record(z.unknown()),
    /** Set when the trainer resumed from a checkpoint: steps after it are redone, so clients drop their metrics. */
    resumedFromStep: step.optional(),
  })
  .strict();

export const MetricsEventSchema = z
  .object({
    type: z.literal('metrics'),
    seq: step,
    /** Completed optimizer steps; the values describe step `step`. */
    step: step,
    time: z.number(),
    loss: finite,
    /** The task loss L_S alone (loss = taskLoss + alpha·regularizer). */
    taskLoss: finite,
    /**
     * κ̄: the condition number of the model's tangent kernel on the probe (the sum of the trainable units'
     * kernels as the model uses them, plus the documented rest), damped like a unit's; the term α multiplies.
     */
    regularizer: finite,
    alpha: finite,
    /** Accuracy (0…1) for classifiers, perplexity for language models: see hello.taskMetric. */
    taskMetric: finite,
    stepsPerSec: finite,
    /**
     * PL* check: ½‖∇f‖² / (f − f*) for the objective f of this step (f* = the run's lowest f so far).
     * PL* says it stays ≥ μ; compare with the units' μ (docs/method.md).
     */
    plRatio: finite.optional(),
    /**
     * Participation ratio of the routing, 1/Σ share² over the units (1…unitCount: how many units the
     * model effectively uses). Absent in records written before shares were streamed.
     */
    participation: finite.min(1 - 1e-9).optional(),
    /** Every unit, on monitor steps only; measured, like the loss, on the weights this step started from. */
    units: z.array(UnitStatsSchema).optional(),
    /** Keep-probability per unit from the pruning gate (present on monitor steps while pruning is enabled). */
    gate: z.array(z.number().min(0).max(1)).optional(),
    /**
     * Family-specific scalars on monitor steps, by name: `energy/<layer>` is the hyperspherical energy
     * of a layer's neurons (OPT keeps it constant), `load/<unit>` the fraction of tokens routed to an expert.
     */
    extra: z.record(finite).optional(),
  })
  .strict();
export type MetricsEvent = z.infer<typeof MetricsEventSchema>;

export const AckEventSchema = z
  .object({
    type: z.literal('ack'),
    seq: step,
    commandId: CommandIdSchema,
    command: RecordedCommandSchema,
    /** `applied`: took effect after step `step` completed (step+1 is the first step under it). */
    status: z.enum(['applied', 'rejected']),
    step: step,
    reason: z.string().optional(),
    time: z.number(),
  })
  .strict();
export type AckEvent = z.infer<typeof AckEventSchema>;

export const StateEventSchema = z
  .object({
    type: z.literal('state'),
    seq: step,
    state: RunStateSchema,
    step: step,
    time: z.number(),
    /** Why the run ended (failed/stopped), or what it is waiting for. */
    reason: z.string().optional(),
  })
  .strict();
export type StateEvent = z.infer<typeof StateEventSchema>;

export const LogEventSchema = z
  .object({
    type: z.literal('log'),
    seq: step,
    level: z.enum(['info', 'warn', 'error']),
    message: z.string(),
    time: z.number(),
    /**
     * What the message is about (e.g. `damping-floor/2`). A later message on the same topic supersedes
     * it: an `info` one says the condition a warning reported has ended.
     */
    topic: z.string().max(200).optional(),
  })
  .strict();

export const TrainerEventSchema = z.discriminatedUnion('type', [
  HelloEventSchema,
  MetricsEventSchema,
  AckEventSchema,
  StateEventSchema,
  LogEventSchema,
]);
export type TrainerEvent = z.infer<typeof TrainerEventSchema>;
export type HelloEvent = z.infer<typeof HelloEventSchema>;

/** Not part of the run history (no seq): the trainer's answer to a frame it could not accept. */
export const ProtocolErrorSchema = z
  .object({ type: z.literal('error'), message: z.string(), inReplyTo: z.string().optional() })
  .strict();
export type ProtocolError = z.infer<typeof ProtocolErrorSchema>;

export const TrainerFrameSchema = z.union([TrainerEventSchema, ProtocolErrorSchema]);
export type TrainerFrame = z.infer<typeof TrainerFrameSchema>;

// ---------------------------------------------------------------------------------------------
// Extension → trainer

export const ClientFrameSchema = z.discriminatedUnion('type', [
  /** Replay every event with seq > sinceSeq, then stream live (use -1 for everything). */
  z.object({ type: z.literal('subscribe'), sinceSeq: z.number().int().min(-1) }).strict(),
  z.object({ type: z.literal('command'), id: CommandIdSchema, command: SteeringCommandSchema }).strict(),
]);
export type ClientFrame = z.infer<typeof ClientFrameSchema>;

// ---------------------------------------------------------------------------------------------
// Extension host ⇄ webview (postMessage)

/**
 * Lifecycle of a command as the UI shows it; never optimistic: `applied` only after the trainer's ack.
 * `pending` (sent to the trainer), `failed` (could not be delivered: not connected, run ended) and a
 * `rejected` that never left the host (outside the protocol's bounds) are facts only the host knows;
 * `applied` and the trainer's `rejected` come from `ack` events.
 */
export const CommandStatusSchema = z
  .object({
    id: CommandIdSchema,
    command: RecordedCommandSchema,
    status: z.enum(['pending', 'applied', 'rejected', 'failed']),
    step: step.optional(),
    reason: z.string().optional(),
  })
  .strict();
export type CommandStatus = z.infer<typeof CommandStatusSchema>;

/**
 * What the host knows about a run that no trainer event says: the link's state, a command it sent
 * or could not send, and a run state it concluded itself (the trainer vanished without a word, a
 * resume is starting, run.json of a recorded run). The host applies each fact to its own RunView and
 * relays it, so the panel folds exactly the same inputs (runView.ts).
 */
export const RunFactSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('connection'), connected: z.boolean() }).strict(),
  z.object({ type: z.literal('command'), status: CommandStatusSchema }).strict(),
  z
    .object({ type: z.literal('state'), state: RunStateSchema, reason: z.string().optional(), step: step.optional(), totalSteps: step.optional() })
    .strict(),
]);
export type RunFact = z.infer<typeof RunFactSchema>;

/** Who the current run is, and the host's reading of its state when a snapshot is taken. */
export const RunSummarySchema = z
  .object({
    runId: z.string(),
    runDir: z.string(),
    state: RunStateSchema,
    reason: z.string().optional(),
    step: step,
    totalSteps: step,
    /** False while the host is (re)connecting to the trainer. */
    connected: z.boolean(),
  })
  .strict();
export type RunSummary = z.infer<typeof RunSummarySchema>;

export const HostToWebviewSchema = z.discriminatedUnion('type', [
  /**
   * Everything about the current run (sent on `ready`, after a resume rewrote the history, when the
   * current run changes): the host's history, its command table and its summary. Replaces all state.
   */
  z.object({ type: z.literal('snapshot'), run: RunSummarySchema.nullable(), events: z.array(TrainerEventSchema), commands: z.array(CommandStatusSchema) }).strict(),
  /** New trainer events of the current run, in seq order; each reaches the panel once. */
  z.object({ type: z.literal('events'), runId: z.string(), events: z.array(TrainerEventSchema) }).strict(),
  /** One host fact about the current run (see RunFactSchema). */
  z.object({ type: z.literal('fact'), runId: z.string(), fact: RunFactSchema }).strict(),
  /**
   * A second, recorded run to overlay on the charts (dashed lines), or null to clear it. Its events
   * come from its run directory (metrics.jsonl); it is never steered.
   */
  z.object({ type: z.literal('compare'), run: z.object({ runId: z.string(), events: z.array(TrainerEventSchema) }).strict().nullable() }).strict(),
]);
export type HostToWebview = z.infer<typeof HostToWebviewSchema>;

export const WebviewToHostSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready') }).strict(),
  z.object({ type: z.literal('command'), id: CommandIdSchema, command: SteeringCommandSchema }).strict(),
  /**
   * Export: the webview builds the file, the host asks where to save it (webviews cannot write files,
   * and `<a download>` is not reliably honoured inside VS Code's webview sandbox).
   */
  z.object({ type: z.literal('saveFile'), fileName: z.string().min(1).max(200).regex(/^[A-Za-z0-9._-]+$/), content: z.string().max(512 * 1024 * 1024) }).strict(),
  /** The user closed the compare overlay (✕): the host forgets it, so a reload does not bring it back. */
  z.object({ type: z.literal('clearCompare') }).strict(),
]);
export type WebviewToHost = z.infer<typeof WebviewToHostSchema>;

// ---------------------------------------------------------------------------------------------
// Run directory layout (the trainer writes it; the extension re-attaches from it)

export const RUN_FILES = {
  config: 'config.json',
  /** Announcement: pid, port, state; rewritten atomically on state changes. */
  runInfo: 'run.json',
  /** Per-run secret for the WebSocket, mode 0600. */
  token: 'token',
  metrics: 'metrics.jsonl',
  commands: 'commands.jsonl',
  /** hello, state and log events (the rest of the history; metrics and acks have their own files). */
  events: 'events.jsonl',
  /** Trainer stdout+stderr when spawned by the extension. */
  log: 'trainer.log',
  /** The trainer's Unix socket (Linux, macOS), when its path is short enough (see RunInfo.socket). */
  socket: 'trainer.sock',
} as const;

/**
 * run.json. Where the trainer listens, once it does: `socket`, the absolute path of a Unix socket
 * (Linux, macOS: no TCP port at all), or `host` + `port`, loopback TCP (Windows). Neither while it
 * starts. A protocol-1 run.json has `port` (0 until listening).
 */
export const RunInfoSchema = z
  .object({
    protocol: z.literal(PROTOCOL_VERSION),
    runId: z.string(),
    pid: z.number().int(),
    socket: z.string().min(1).optional(),
    host: z.literal('127.0.0.1').optional(),
    port: z.number().int().min(0).max(65535).optional(),
    state: RunStateSchema,
    startedAt: z.number(),
    updatedAt: z.number(),
    backend: BackendInfoSchema.optional(),
    step: step,
    totalSteps: step,
    reason: z.string().optional(),
  })
  .strict();
export type RunInfo = z.infer<typeof RunInfoSchema>;

/** How to reach a trainer: its Unix socket, or a loopback TCP port. */
export type TrainerEndpoint = { socket: string } | { port: number };

/** Where a run's trainer listens, from its run.json; undefined while it starts (or never listened). */
export function runEndpoint(info: Pick<RunInfo, 'socket' | 'port'> | undefined): TrainerEndpoint | undefined {
  if (info?.socket) return { socket: info.socket };
  if (info?.port) return { port: info.port };
  return undefined;
}

/** An endpoint in words, for logs ("socket /…/trainer.sock", "port 41234"). */
export function describeEndpoint(e: TrainerEndpoint): string {
  return 'socket' in e ? `socket ${e.socket}` : `port ${e.port}`;
}

/**
 * The transport the trainer serves, when set in its environment: `tcp` forces loopback TCP where it
 * would use a Unix socket (tests of the TCP path, and a platform where Unix sockets misbehave).
 */
export const TRANSPORT_ENV = 'PLTRAIN_TRANSPORT';

/** The line the trainer prints on stdout once its WebSocket listens (machine-readable; one line). */
export const LISTENING_PREFIX = 'PLTRAIN_LISTENING ';

/** Environment variable through which the extension hands the trainer its per-run token. */
export const TOKEN_ENV = 'PLTRAIN_TOKEN';
/** HTTP header that carries the token on the WebSocket upgrade request. */
export const TOKEN_HEADER = 'x-pltrain-token';

/** Parse and validate one inbound frame; never throws. */
export function parseFrame<T>(schema: z.ZodType<T>, raw: string | Buffer | ArrayBuffer | Buffer[], maxBytes = MAX_FRAME_BYTES):
  | { ok: true; value: T }
  | { ok: false; error: string } {
  let text: string;
  if (typeof raw === 'string') text = raw;
  else if (Array.isArray(raw)) text = Buffer.concat(raw).toString('utf8');
  else if (raw instanceof ArrayBuffer) text = Buffer.from(raw).toString('utf8');
  else text = raw.toString('utf8');
  if (text.length > maxBytes) return { ok: false, error: `frame of ${text.length} bytes exceeds ${maxBytes}` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, error: 'frame is not valid JSON' };
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    return { ok: false, error: `invalid frame: ${i.path.join('.') || '(root)'}: ${i.message}` };
  }
  return { ok: true, value: r.data };
}
