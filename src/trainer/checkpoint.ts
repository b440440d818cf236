// Checkpoints: the model, the optimizers, and the run's own state (step, seq, α, frozen experts), so a
// run killed at any moment resumes from the last one with the same step numbering.
// Written to a fresh folder and swapped in by rename: a crash mid-write leaves the previous one intact.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AckEvent, CHECKPOINT_DIR, CHECKPOINT_DIRS, CHECKPOINT_MANIFEST } from '../protocol';
import { PRIVATE_DIR_MODE, fsyncDir, openPrivate } from '../protocol/privateFile';
import type { ModelState, SavedTensor } from './models/types';
import type { PrunerState } from './pl/pruner';

export interface RunProgress {
  step: number;
  /** Seq of the last event covered by the checkpoint: later events are redone on resume. */
  seq: number;
  alpha: number;
  frozen: number[];
  pruned: number[];
  time: number;
  /** The gating network's weights and optimizer state, when pruning is enabled. */
  pruner?: PrunerState;
  /**
   * The acks of the commands whose effect this checkpoint holds, written before they are appended
   * and sent ("applied" means saved): a kill between the two leaves them here, and a resume records
   * them (EventLog.resume). Their seqs are ≤ `seq`.
   */
  acks?: AckEvent[];
  /** Ids of the latest commands decided, so a command resent after a resume is refused as a duplicate. */
  commandIds?: string[];
}

interface Manifest extends RunProgress {
  format: 'pl-trainer-checkpoint';
  version: 1;
  tensors: { key: string; shape: number[]; offset: number; length: number }[];
}

export function saveCheckpoint(runDir: string, progress: RunProgress, state: ModelState): void {
  const final = path.join(runDir, CHECKPOINT_DIR);
  const fresh = `${final}.new`;
  const old = `${final}.old`;
  fs.rmSync(fresh, { recursive: true, force: true });
  fs.mkdirSync(fresh, { mode: PRIVATE_DIR_MODE });
  const tensors: Manifest['tensors'] = [];
  const parts: Buffer[] = [];
  let offset = 0;
  const add = (key: string, t: SavedTensor) => {
    tensors.push({ key, shape: t.shape, offset, length: t.data.length });
    parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    offset += t.data.length;
  };
  for (const [k, t] of Object.entries(state.variables)) add(`var:${k}`, t);
  for (const [group, slots] of Object.entries(state.optimizers)) slots.forEach((t, i) => add(`opt:${group}:${i}`, t));
  const write = (file: string, pieces: Buffer[]) => {
    const fd = openPrivate(path.join(fresh, file), 'create');
    try {
      for (const p of pieces) fs.writeSync(fd, p);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  };
  write('tensors.bin', parts);
  const manifest: Manifest = { format: 'pl-trainer-checkpoint', version: 1, ...progress, tensors };
  write(CHECKPOINT_MANIFEST, [Buffer.from(JSON.stringify(manifest))]);
  fsyncDir(fresh);
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(final)) fs.renameSync(final, old);
  fs.renameSync(fresh, final);
  // Durable before anything that relies on it (an ack) is written.
  fsyncDir(runDir);
  fs.rmSync(old, { recursive: true, force: true });
}

/** The newest complete checkpoint (also one left as `.old` by a crash between the two renames). */
export function loadCheckpoint(runDir: string): { progress: RunProgress; state: ModelState } | undefined {
  for (const dir of CHECKPOINT_DIRS.map((d) => path.join(runDir, d))) {
    let manifest: Manifest;
    let bin: Buffer;
    try {
      manifest = JSON.parse(fs.readFileSync(path.join(dir, CHECKPOINT_MANIFEST), 'utf8'));
      bin = fs.readFileSync(path.join(dir, 'tensors.bin'));
    } catch {
      continue;
    }
    if (manifest.format !== 'pl-trainer-checkpoint' || manifest.version !== 1) continue;
    const floats = new Float32Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength));
    const state: ModelState = { variables: {}, optimizers: {} };
    for (const t of manifest.tensors) {
      const saved = { shape: t.shape, data: floats.slice(t.offset, t.offset + t.length) };
      const [kind, a, b] = t.key.split(':');
      if (kind === 'var') state.variables[a] = saved;
      else (state.optimizers[a] ??= [])[Number(b)] = saved;
    }
    const { step, seq, alpha, frozen, pruned, time, pruner, acks, commandIds } = manifest;
    return { progress: { step, seq, alpha, frozen, pruned, time, ...(pruner ? { pruner } : {}), ...(acks ? { acks } : {}), ...(commandIds ? { commandIds } : {}) }, state };
  }
  return undefined;
}
