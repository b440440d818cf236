// Commands the panel posted that the extension host has not answered yet. They are kept in the
// webview's persisted state, so a command clicked while the window's link to the extension host was
// down (a cut Remote-SSH tunnel) survives the window reload that brings a new extension host: the
// restored panel sends it again with its original id once that host is attached to the same run
// (the host and the trainer refuse a duplicate id, so it is applied at most once), or marks it
// `failed` with the reason when it can no longer apply. No DOM: test/unit/webview-outstanding.test.ts.
import { z } from 'zod';
import { CommandIdSchema, SteeringCommandSchema, type SteeringCommand } from '../src/protocol';

/** Unanswered commands kept across a reload; past this the oldest are dropped (and say so in the log). */
export const MAX_OUTSTANDING = 32;

export interface OutstandingCommand {
  id: string;
  /** The run the command was issued for: it is never sent to another run. */
  runId: string;
  command: SteeringCommand;
}

const OutstandingListSchema = z.array(z.object({ id: CommandIdSchema, runId: z.string().min(1).max(256), command: SteeringCommandSchema }).strict()).max(MAX_OUTSTANDING);

/** Reads the `outstanding` field of `vscode.getState()`; anything unusable yields none. */
export function outstandingFromPersisted(state: unknown): OutstandingCommand[] {
  const list = (state as { outstanding?: unknown } | null | undefined)?.outstanding;
  const r = OutstandingListSchema.safeParse(list ?? []);
  return r.success ? r.data : [];
}

/**
 * The copy kept in the webview's localStorage. VS Code keeps a webview's origin stable per extension
 * and view type, so this copy reaches a panel that is opened anew rather than restored (after a lost
 * remote link the workbench may not restore the panel, and then its getState is empty).
 */
export const OUTSTANDING_STORAGE_KEY = 'pl-trainer.outstanding';

/**
 * The list to store in localStorage: what is stored (another window's panel may share the origin)
 * less the ids this document has resolved or holds, plus this document's. Bounded like the rest.
 */
export function mergeStored(stored: unknown, mine: readonly OutstandingCommand[], resolved: ReadonlySet<string>): OutstandingCommand[] {
  const own = new Set(mine.map((c) => c.id));
  const others = outstandingFromPersisted({ outstanding: stored }).filter((c) => !own.has(c.id) && !resolved.has(c.id));
  return [...others, ...mine].slice(-MAX_OUTSTANDING);
}

/** Both copies, the webview state's first, each id once. */
export function restoredFrom(state: unknown, stored: unknown): OutstandingCommand[] {
  const out = new Map<string, OutstandingCommand>();
  for (const c of [...outstandingFromPersisted(state), ...outstandingFromPersisted({ outstanding: stored })]) if (!out.has(c.id)) out.set(c.id, c);
  return [...out.values()].slice(-MAX_OUTSTANDING);
}

/** What the panel now knows of the host's side (from the host's snapshot and facts). */
export interface HostSide {
  /** The run the host shows; undefined with none (yet). */
  runId: string | undefined;
  /** Not ended. */
  active: boolean;
  /** The run's state, for the reason a refusal gives. */
  state: string | undefined;
  /** The host is connected to the trainer (it has re-attached, and can send). */
  connected: boolean;
  /** The host's command table has this id (it took the command, before or after the reload). */
  known: boolean;
}

export type Resolution =
  /** The host has it: nothing more to do. */
  | { kind: 'taken' }
  /** Not yet decidable (no run shown yet, or the host is not connected to the trainer yet). */
  | { kind: 'wait' }
  /** Send it again, with its original id. */
  | { kind: 'reissue' }
  /** Never sent again: refused with this reason. */
  | { kind: 'refuse'; reason: string };

/** What becomes of a command an earlier document of this panel posted and no host answered. */
export function resolveRestored(c: OutstandingCommand, host: HostSide): Resolution {
  if (host.known && host.runId === c.runId) return { kind: 'taken' };
  if (host.runId === undefined) return { kind: 'wait' };
  if (host.runId !== c.runId) return { kind: 'refuse', reason: `not applied: the window reloaded before the extension host took it, and the panel now shows run ${host.runId}, not ${c.runId}` };
  if (!host.active) return { kind: 'refuse', reason: `not applied: the window reloaded before the extension host took it, and the run has ${host.state ?? 'ended'}` };
  if (!host.connected) return { kind: 'wait' };
  return { kind: 'reissue' };
}

/** The panel's unanswered commands: this document's, and those restored from an earlier one. */
export class OutstandingCommands {
  private readonly entries = new Map<string, OutstandingCommand>();
  /** Restored from an earlier document and not yet resolved (sent again, taken or refused). */
  private readonly restored = new Set<string>();
  /** Dropped past MAX_OUTSTANDING, for the log. */
  private readonly dropped: OutstandingCommand[] = [];

  constructor(restored: readonly OutstandingCommand[] = []) {
    for (const c of restored) {
      this.entries.set(c.id, c);
      this.restored.add(c.id);
    }
  }

  /** For `vscode.setState`. */
  toPersisted(): OutstandingCommand[] {
    return [...this.entries.values()].map((c) => ({ ...c }));
  }

  get size(): number {
    return this.entries.size;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** A command just posted. */
  add(c: OutstandingCommand): void {
    this.entries.set(c.id, c);
    while (this.entries.size > MAX_OUTSTANDING) {
      const oldest = this.entries.values().next().value as OutstandingCommand;
      this.entries.delete(oldest.id);
      this.restored.delete(oldest.id);
      this.resolved.add(oldest.id);
      this.dropped.push(oldest);
    }
  }

  /** Commands dropped past the bound since the last call. */
  takeDropped(): OutstandingCommand[] {
    return this.dropped.splice(0);
  }

  /** Ids this document has settled (answered, taken or refused): removed from the shared copy too. */
  readonly resolved = new Set<string>();

  /** The host answered (pending, applied, rejected or failed), or it was refused: no longer outstanding. Returns whether it was. */
  settle(id: string): boolean {
    this.restored.delete(id);
    this.resolved.add(id);
    return this.entries.delete(id);
  }

  /** Restored commands still to resolve. */
  restoredCommands(): OutstandingCommand[] {
    return [...this.restored].map((id) => this.entries.get(id)!);
  }

  /** Commands of this document (not restored) still unanswered. */
  ownCommands(): OutstandingCommand[] {
    return [...this.entries.values()].filter((c) => !this.restored.has(c.id));
  }

  /** A restored command was sent again: from now on it waits for the answer like one of this document's. */
  markReissued(id: string): void {
    this.restored.delete(id);
  }
}
