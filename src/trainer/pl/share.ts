// Routing shares and the inactive flag (docs/method.md, "Definitions (contract)" 9–10). κ is
// scale-invariant: an expert the gate has abandoned can keep a small, well-conditioned kernel, so a unit
// the model no longer uses must be told apart by how much of the model's routing mass it carries.
import { inactiveShareThreshold, type UnitStats } from '../../protocol';

/** Weight of a new share in the EMA (time constant 20 records). */
export const SHARE_EMA_WEIGHT = 0.05;

/** 1/Σ share²: how many units the model effectively uses (1 … number of units). */
export function participationRatio(shares: readonly number[]): number {
  const total = shares.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return 1;
  let s = 0;
  for (const x of shares) s += (x / total) ** 2;
  return 1 / s;
}

export interface ActivityChange {
  id: number;
  active: boolean;
  ema: number;
}

export class ShareWatch {
  /** Share EMA per unit (undefined before the first shares). */
  ema: number[] | undefined;
  private latest: number[] | undefined;
  private pending: number | undefined;
  private readonly flagged = new Set<number>();
  readonly threshold: number;

  constructor(readonly units: number) {
    this.threshold = inactiveShareThreshold(units);
  }

  /** One record's shares (normalized to sum 1; a sum of 0 is ignored). */
  observe(shares: readonly number[]): void {
    const total = shares.reduce((a, b) => a + b, 0);
    if (!(total > 0) || shares.length !== this.units) return;
    const s = shares.map((x) => Math.min(1, Math.max(0, x / total)));
    this.latest = s;
    this.pending = participationRatio(s);
    this.ema = this.ema ? this.ema.map((e, i) => (1 - SHARE_EMA_WEIGHT) * e + SHARE_EMA_WEIGHT * s[i]) : s.slice();
  }

  /** The participation ratio of the shares observed since the last call (undefined if none). */
  get participation(): number | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  /** The unit records with `share` (latest) and `active` (EMA ≥ threshold; pruned units are not flagged). */
  annotate(stats: readonly UnitStats[], pruned: ReadonlySet<number>): UnitStats[] {
    return stats.map((u) => {
      const share = this.latest?.[u.id] ?? u.share;
      const ema = this.ema?.[u.id];
      const active = pruned.has(u.id) || ema === undefined ? true : ema >= this.threshold;
      return { ...u, ...(share !== undefined ? { share } : {}), active };
    });
  }

  /** Units whose flag changed since the last call: one `inactive` per episode, one `active` when it ends. */
  changes(stats: readonly UnitStats[]): ActivityChange[] {
    const out: ActivityChange[] = [];
    for (const u of stats) {
      const ema = this.ema?.[u.id] ?? 0;
      if (u.active === false && !this.flagged.has(u.id)) {
        this.flagged.add(u.id);
        out.push({ id: u.id, active: false, ema });
      } else if (u.active !== false && this.flagged.delete(u.id)) out.push({ id: u.id, active: true, ema });
    }
    return out;
  }
}
