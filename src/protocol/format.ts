// How numbers, units, backends and commands read, wherever a person reads them: the panel, the
// sidebar, the status bar, the code lenses, notifications and the output channel. No DOM, no Node.
import type { BackendInfo, CommandStatus, SteeringCommand } from './messages';

/**
 * Compact number for tables and headers: 4 significant digits in the readable range
 * (`12.34`, `0.0005`, `1235`), exponent notation with 3 significant digits outside it (`1.23e+5`),
 * because κ and μ routinely span many orders of magnitude. Absent (not measured yet) and null (not
 * measurable: a unit serving fewer than MIN_SERVED probe examples) are `—`, never a number.
 */
export function formatNumber(x: number | null | undefined): string {
  if (x === undefined || x === null) return '—';
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 1e4 || abs < 1e-4) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

/**
 * A unit's κ in a sentence (sidebar, code lenses, the Freeze prompt): `κ 12.3`, `κ not measurable`
 * (null: too few served examples), `κ —` (not measured yet).
 */
export function describeKappa(kappa: number | null | undefined): string {
  return kappa === null ? 'κ not measurable' : `κ ${formatNumber(kappa)}`;
}

/** Why a unit has no κ (tooltip): it serves fewer than `minServed` probe examples. */
export function describeNotMeasurable(unitName: string, served: number | undefined, minServed: number): string {
  return `not measurable: this ${unitName} serves ${served ?? 'too few'} probe example(s), fewer than ${minServed}, so its κ is not given a number`;
}

/** Why a unit is flagged inactive (tooltip, sidebar, code lenses). */
export function describeInactive(unitName: string, share: number | undefined): string {
  const pct = share === undefined ? '' : ` (share ${(share * 100).toFixed(1)}%)`;
  return `inactive: the model routes almost nothing through this ${unitName}${pct}; its κ does not describe the model and it is not "well conditioned"`;
}

/** `head` → `Head` (table headers, the start of a sentence). */
export function capitalize(text: string): string {
  return text ? `${text[0].toUpperCase()}${text.slice(1)}` : text;
}

/** `head` → `heads`, `channel group` → `channel groups`: every unit name in UNIT_NAMES takes an "s". */
export function pluralUnit(unitName: string): string {
  return `${unitName}s`;
}

/** `head 2`, `channel group 3`, `expert 1`. */
export function unitLabel(unitName: string, id: number): string {
  return `${unitName} ${id}`;
}

/** Why a κ at the damping floor matters and what to do (tooltip in the panel and the sidebar). */
export function describeDampingFloor(unitName: string, damping: number): string {
  return `κ near the damping floor 1/δ = ${formatNumber(1 / damping)}: this ${unitName}'s kernel is (nearly) singular on the examples it serves (λ_min ≤ δ·λ_max), so its κ says little beyond "singular". Check its share: a unit the model no longer uses is flagged inactive; freeze or prune it if it stays there.`;
}

/**
 * What runs the model, in one label for every UI: the device for PyTorch (`PyTorch · cuda:0 NVIDIA
 * H200`), the backend for TF.js (`wasm · CPU`, `tensorflow-gpu · GPU`).
 */
export function backendLabel(b: BackendInfo): string {
  const where = b.gpu ? 'GPU' : 'CPU';
  if (b.engine === 'pytorch' || b.name === 'pytorch') return `PyTorch · ${b.device ?? where}`;
  return `${b.name} · ${where}`;
}

/** What a command does, as the command log, notifications and the output channel say it. */
export function describeCommand(c: SteeringCommand, unitName: string): string {
  switch (c.kind) {
    case 'pause':
      return 'Pause';
    case 'resume':
      return 'Resume';
    case 'stop':
      return 'Stop';
    case 'setAlpha':
      return `Set α = ${formatNumber(c.alpha)}`;
    case 'freeze':
      return `Freeze ${unitLabel(unitName, c.unit)}`;
    case 'unfreeze':
      return `Unfreeze ${unitLabel(unitName, c.unit)}`;
  }
}

/** A command's lifecycle as the log shows it; `sent` is the panel's own state before the host answers. */
export type CommandPhase = CommandStatus['status'] | 'sent';

export function describeStatus(s: { status: CommandPhase; step?: number; reason?: string }): string {
  switch (s.status) {
    case 'sent':
      return s.reason ? `sent, no answer yet: ${s.reason}` : 'sent';
    case 'pending':
      return 'pending';
    case 'applied':
      return s.step === undefined ? 'applied' : `applied at step ${s.step}`;
    case 'rejected':
      return `rejected: ${s.reason ?? 'no reason given'}`;
    case 'failed':
      return `failed: ${s.reason ?? 'no reason given'}`;
  }
}

/** Steps per second with a sensible number of digits. */
export function formatRate(stepsPerSec: number): string {
  return `${stepsPerSec >= 100 ? Math.round(stepsPerSec) : formatNumber(stepsPerSec)} steps/s`;
}

/** Accuracy is a fraction; perplexity is shown as is. */
export function formatTaskMetric(value: number, metric: 'accuracy' | 'perplexity'): string {
  return metric === 'accuracy' ? `${(value * 100).toFixed(1)}%` : formatNumber(value);
}

/** `accuracy 84.3%`, `perplexity 5.12`: the task metric with its name, for one-line summaries. */
export function describeTaskMetric(value: number, metric: 'accuracy' | 'perplexity'): string {
  return `${metric} ${formatTaskMetric(value, metric)}`;
}

/** A fresh command id that satisfies the protocol (`[A-Za-z0-9_-]`, at most 64), in Node and in the browser. */
export function newCommandId(prefix = 'c'): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** A routing share (0…1) as a percentage a person can compare: "31%", "4.2%", "0.05%". */
export function formatShare(share: number): string {
  const pct = share * 100;
  return `${pct >= 10 ? pct.toFixed(0) : pct === 0 ? '0' : Number(pct.toPrecision(2))}%`;
}
