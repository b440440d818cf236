// Building the steering commands the panel posts. No DOM.
import { CommandIdSchema, TrainingConfigSchema } from '../src/protocol';

/** α's bounds come from the config schema, so the panel accepts exactly what a config file may say. */
const AlphaSchema = TrainingConfigSchema.innerType().shape.alpha.removeDefault();
export const ALPHA_MIN = AlphaSchema.minValue ?? 0;
export const ALPHA_MAX = AlphaSchema.maxValue ?? Number.MAX_VALUE;

/** Plain decimal or exponent notation; rejects what `Number()` would also accept (`0x1f`, `Infinity`, ` `). */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

export type AlphaParse = { ok: true; alpha: number } | { ok: false; error: string };

/** Validates the α input field. */
export function parseAlphaInput(text: string): AlphaParse {
  const t = text.trim();
  if (t === '') return { ok: false, error: 'Enter a value for α.' };
  if (!DECIMAL.test(t)) return { ok: false, error: `"${t.length > 20 ? t.slice(0, 20) + '…' : t}" is not a number.` };
  const alpha = Number(t);
  if (!AlphaSchema.safeParse(alpha).success) return { ok: false, error: `α must be between ${ALPHA_MIN} and ${ALPHA_MAX.toExponential(0)}.` };
  return { ok: true, alpha };
}

/** A fresh command id that satisfies the protocol (`[A-Za-z0-9_-]`, at most 64). */
export function newCommandId(): string {
  const id = typeof crypto.randomUUID === 'function' ? crypto.randomUUID().replace(/-/g, '') : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  return CommandIdSchema.parse(`wv${id}`);
}
