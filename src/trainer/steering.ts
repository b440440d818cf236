// Steering rules, applied only between steps. Pure (no tf, no I/O) so every rule is unit-tested.
import { alphaProblem, type SteeringCommand } from '../protocol';

export interface Decision {
  commandId: string;
  command: SteeringCommand;
  status: 'applied' | 'rejected';
  reason?: string;
}

/** How many decided command ids a checkpoint keeps for duplicate detection across a resume. */
export const RECENT_IDS_KEPT = 1000;

/**
 * Commands whose applied effect a resume restores (α, frozen units): their ack is sent only once a
 * checkpoint holds the effect. Pause, resume and stop are not restored (a resumed run runs).
 */
export const DURABLE_KINDS: ReadonlySet<SteeringCommand['kind']> = new Set(['setAlpha', 'freeze', 'unfreeze']);

export class SteeringState {
  paused = false;
  stopRequested = false;
  readonly frozen: Set<number>;
  readonly pruned = new Set<number>();
  private readonly queue: { id: string; command: SteeringCommand }[] = [];
  private readonly seenIds = new Set<string>();
  private waiter: (() => void) | undefined;

  /** `unitName`: what the family calls a unit (hello.unitName), for the reasons a rejection gives. */
  constructor(readonly experts: number, public alpha: number, frozen: Iterable<number> = [], readonly unitName = 'unit') {
    this.frozen = new Set(frozen);
  }

  /** Command ids decided before a resume: a client resending one gets "duplicate", not a second application. */
  remember(ids: Iterable<string>): void {
    for (const id of ids) this.seenIds.add(id);
  }

  /** The latest `max` command ids decided (a checkpoint keeps them; see remember). */
  recentIds(max = RECENT_IDS_KEPT): string[] {
    const all = [...this.seenIds];
    return all.slice(Math.max(0, all.length - max));
  }

  /** Queues a command; it takes effect at the next step boundary (`drain`). */
  enqueue(id: string, command: SteeringCommand): void {
    this.queue.push({ id, command });
    this.waiter?.();
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when a command arrives (used while paused). */
  nextCommand(): Promise<void> {
    if (this.queue.length) return Promise.resolve();
    return new Promise((resolve) => (this.waiter = () => ((this.waiter = undefined), resolve())));
  }

  /** Applies every queued command in arrival order; one decision each. */
  drain(): Decision[] {
    const out: Decision[] = [];
    while (this.queue.length) {
      const { id, command } = this.queue.shift()!;
      out.push({ commandId: id, command, ...this.apply(id, command) });
    }
    return out;
  }

  trainableExperts(): number[] {
    return Array.from({ length: this.experts }, (_, i) => i).filter((i) => !this.frozen.has(i) && !this.pruned.has(i));
  }

  private apply(id: string, c: SteeringCommand): { status: 'applied' | 'rejected'; reason?: string } {
    const reject = (reason: string) => ({ status: 'rejected' as const, reason });
    if (this.seenIds.has(id)) return reject(`duplicate command id ${id}`);
    this.seenIds.add(id);
    if (this.stopRequested) return reject('the run is stopping');
    switch (c.kind) {
      case 'pause':
        if (this.paused) return reject('already paused');
        this.paused = true;
        break;
      case 'resume':
        if (!this.paused) return reject('not paused');
        this.paused = false;
        break;
      case 'stop':
        this.stopRequested = true;
        this.paused = false;
        break;
      case 'setAlpha': {
        // The protocol's bound (limits.ts); a client frame outside it never gets here, a direct call may.
        const bad = alphaProblem(c.alpha);
        if (bad) return reject(`${bad} (got ${c.alpha})`);
        this.alpha = c.alpha;
        break;
      }
      case 'freeze': {
        const bad = this.checkUnit(c.unit);
        if (bad) return reject(bad);
        if (this.pruned.has(c.unit)) return reject(`${this.unitName} ${c.unit} is pruned`);
        if (this.frozen.has(c.unit)) return reject(`${this.unitName} ${c.unit} is already frozen`);
        if (this.trainableExperts().length <= 1) return reject(`cannot freeze every ${this.unitName}: at least one must stay trainable`);
        this.frozen.add(c.unit);
        break;
      }
      case 'unfreeze': {
        const bad = this.checkUnit(c.unit);
        if (bad) return reject(bad);
        if (!this.frozen.has(c.unit)) return reject(`${this.unitName} ${c.unit} is not frozen`);
        this.frozen.delete(c.unit);
        break;
      }
    }
    return { status: 'applied' };
  }

  private checkUnit(e: number): string | undefined {
    if (!Number.isInteger(e) || e < 0 || e >= this.experts) return `${this.unitName} ${e} does not exist (the model has ${this.experts}: 0…${this.experts - 1})`;
    return undefined;
  }
}
