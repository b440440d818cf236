// Checkpoints: the model, the optimizers, and the run's own state (step, seq, α, frozen experts), so a
// run killed at any moment resumes from the last one with the same step numbering.
// Written to a fresh folder and swapped in by rename: a crash mid-write leaves the previous one intact.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHECKPOINT_DIR, CHECKPOINT_DIRS, CHECKPOINT_MANIFEST } from '../protocol';
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
  fs.mkdirSync(fresh);
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
  const fd = fs.openSync(path.join(fresh, 'tensors.bin'), 'w');
  for (const p of parts) fs.writeSync(fd, p);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const manifest: Manifest = { format: 'pl-trainer-checkpoint', version: 1, ...progress, tensors };
  fs.writeFileSync(path.join(fresh, CHECKPOINT_MANIFEST), JSON.stringify(manifest));
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(final)) fs.renameSync(final, old);
  fs.renameSync(fresh, final);
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
    const { step, seq, alpha, frozen, pruned, time, pruner } = manifest;
    return { progress: { step, seq, alpha, frozen, pruned, time, ...(pruner ? { pruner } : {}) }, state };
  }
  return undefined;
}
