// Text formatting shared by the panel and its tests. No DOM.
import type { BackendInfo, CommandStatus, SteeringCommand } from '../src/protocol';

/**
 * Compact number for tables and headers: 4 significant digits in the readable range
 * (`12.34`, `0.0005`, `1235`), exponent notation with 3 significant digits outside it (`1.23e+5`),
 * because κ and μ routinely span many orders of magnitude.
 */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 1e4 || abs < 1e-4) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

/** Why a κ at the damping floor matters and what to do (tooltip in the panel and the sidebar). */
export function describeDampingFloor(unitName: string, damping: number): string {
  return `κ at the damping floor 1/δ = ${formatNumber(1 / damping)}: this ${unitName}'s kernel is singular on the probe, so the regularizer passes it no gradient and it adds a constant to the loss. Usually a unit the gate abandoned: freeze or prune it to take it out of the regularizer.`;
}

/** `wasm · CPU`, `tensorflow-gpu · GPU`. */
export function formatBackend(b: BackendInfo): string {
  return `${b.name} · ${b.gpu ? 'GPU' : 'CPU'}`;
}

/** What a command does, as the command log shows it. */
export function describeCommand(c: SteeringCommand): string {
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
      return `Freeze expert ${c.expert}`;
    case 'unfreeze':
      return `Unfreeze expert ${c.expert}`;
  }
}

/** A command's lifecycle as the log shows it; `sent` is the webview's own state before the host answers. */
export type CommandPhase = CommandStatus['status'] | 'sent';

export function describeStatus(s: { status: CommandPhase; step?: number; reason?: string }): string {
  switch (s.status) {
    case 'sent':
      return 'sent';
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
