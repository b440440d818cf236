// Reading the panel's α field. No DOM. The bounds are setAlpha's own (src/protocol/limits.ts), so the
// panel accepts exactly what the protocol, the config file and the trainer accept.
import { alphaProblem } from '../src/protocol';

/** Plain decimal or exponent notation; rejects what `Number()` would also accept (`0x1f`, `Infinity`, ` `). */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

export type AlphaParse = { ok: true; alpha: number } | { ok: false; error: string };

/** Validates the α input field. */
export function parseAlphaInput(text: string): AlphaParse {
  const t = text.trim();
  if (t === '') return { ok: false, error: 'Enter a value for α.' };
  if (!DECIMAL.test(t)) return { ok: false, error: `"${t.length > 20 ? t.slice(0, 20) + '…' : t}" is not a number.` };
  const alpha = Number(t);
  const problem = alphaProblem(alpha);
  if (problem) return { ok: false, error: `${problem}.` };
  return { ok: true, alpha };
}
