// A unit whose kernel is singular on the probe reads κ = 1/δ exactly (docs/method.md, "Damping"): the
// regularizer passes it no gradient and it adds a constant α/(δ·k) to the loss, k trainable units. On
// long runs this is what becomes of a unit the gate abandoned (no active unit on most probe examples),
// and the loss chart jumps by thousands with no other sign. This watch turns it into one warning per
// episode, and one note when the unit comes back.
import { kappaAtDampingFloor, type UnitStats } from '../../protocol';

export interface FloorChanges {
  /** Trainable units that reached the floor on this measurement. */
  entered: UnitStats[];
  /** Units that were at the floor and are no longer (recovered, frozen or pruned). */
  left: UnitStats[];
}

export class DampingFloorWatch {
  private readonly atFloor = new Set<number>();

  constructor(private readonly damping: number) {}

  observe(stats: readonly UnitStats[]): FloorChanges {
    const entered: UnitStats[] = [];
    const left: UnitStats[] = [];
    for (const s of stats) {
      const counts = !s.frozen && !s.pruned && kappaAtDampingFloor(s.kappa, this.damping);
      if (counts && !this.atFloor.has(s.id)) {
        this.atFloor.add(s.id);
        entered.push(s);
      } else if (!counts && this.atFloor.delete(s.id)) left.push(s);
    }
    return { entered, left };
  }
}
