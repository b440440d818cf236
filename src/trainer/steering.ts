// Steering rules, applied only between steps. Pure (no tf, no I/O) so every rule is unit-tested.
import type { SteeringCommand } from '../protocol';

export interface Decision {
  commandId: string;
  command: SteeringCommand;
  status: 'applied' | 'rejected';
  reason?: string;
}

export const MAX_ALPHA = 1e6;

export class SteeringState {
  paused = false;
  stopRequested = false;
  readonly frozen: Set<number>;
  readonly pruned = new Set<number>();
  private readonly queue: { id: string; command: SteeringCommand }[] = [];
  private readonly seenIds = new Set<string>();
  private waiter: (() => void) | undefined;

  constructor(readonly experts: number, public alpha: number, frozen: Iterable<number> = []) {
    this.frozen = new Set(frozen);
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
      case 'setAlpha':
        if (!Number.isFinite(c.alpha) || c.alpha < 0) return reject(`α must be a finite number ≥ 0 (got ${c.alpha})`);
        if (c.alpha > MAX_ALPHA) return reject(`α must be ≤ ${MAX_ALPHA}`);
        this.alpha = c.alpha;
        break;
      case 'freeze': {
        const bad = this.checkExpert(c.expert);
        if (bad) return reject(bad);
        if (this.pruned.has(c.expert)) return reject(`expert ${c.expert} is pruned`);
        if (this.frozen.has(c.expert)) return reject(`expert ${c.expert} is already frozen`);
        if (this.trainableExperts().length <= 1) return reject('cannot freeze every expert: at least one must stay trainable');
        this.frozen.add(c.expert);
        break;
      }
      case 'unfreeze': {
        const bad = this.checkExpert(c.expert);
        if (bad) return reject(bad);
        if (!this.frozen.has(c.expert)) return reject(`expert ${c.expert} is not frozen`);
        this.frozen.delete(c.expert);
        break;
      }
    }
    return { status: 'applied' };
  }

  private checkExpert(e: number): string | undefined {
    if (!Number.isInteger(e) || e < 0 || e >= this.experts) return `expert ${e} does not exist (the model has ${this.experts}: 0…${this.experts - 1})`;
    return undefined;
  }
}
