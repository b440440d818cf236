// What "New training config" offers: one starter per model family, built from the shipped example of
// that family, with what to expect on a CPU before anything starts. Free of `vscode` (unit-tested).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UNIT_NAMES, safeRunName, type ModelFamily } from '../../protocol';

export interface FamilyStarter {
  family: ModelFamily;
  /** The shipped example this starter copies (under the extension's examples/). */
  example: string;
  /** One line for the picker: what the model is. */
  summary: string;
  /** Steps per second on a 2-core CPU (wasm backend + the native addon), as measured for the examples. */
  cpuStepsPerSec: [low: number, high: number];
  /** Data the family needs that may not be there (said before starting). */
  note?: string;
}

export const FAMILY_STARTERS: readonly FamilyStarter[] = [
  { family: 'moe-mlp', example: 'default.pltrain.json', summary: 'mixture of MLP experts, image classifier (Fashion-MNIST subset)', cpuStepsPerSec: [300, 400] },
  { family: 'switch-transformer', example: 'switch-transformer.pltrain.json', summary: 'top-1 mixture-of-experts transformer language model (built-in text)', cpuStepsPerSec: [25, 40] },
  { family: 'bert-encoder', example: 'bert-encoder.pltrain.json', summary: 'BERT-style encoder, attention heads as units (images row by row)', cpuStepsPerSec: [1.5, 3] },
  { family: 'vgg', example: 'vgg.pltrain.json', summary: 'VGG-style conv net, channel groups as units (images)', cpuStepsPerSec: [1.5, 3] },
];

export function starterFor(family: ModelFamily): FamilyStarter {
  const s = FAMILY_STARTERS.find((f) => f.family === family);
  if (!s) throw new Error(`no starter for model family ${family}`);
  return s;
}

/** "2–4 min" / "5–7 s": how long `steps` take at the starter's CPU speed. */
export function expectedDuration(steps: number, [low, high]: [number, number]): string {
  const fast = steps / high;
  const slow = steps / low;
  const unit = slow >= 120 ? { div: 60, name: 'min' } : { div: 1, name: 's' };
  const a = Math.max(1, Math.round(fast / unit.div));
  const b = Math.max(a, Math.round(slow / unit.div));
  return a === b ? `~${a} ${unit.name}` : `${a}–${b} ${unit.name}`;
}

/** The picker's detail line for a family: speed on a CPU, and how long its starter's steps take. */
export function describeStarter(s: FamilyStarter, steps: number): string {
  const [low, high] = s.cpuStepsPerSec;
  const rate = high < 10 ? `~${low}–${high} steps/s` : `${low}–${high} steps/s`;
  return `${rate} on a CPU: ${steps} steps take ${expectedDuration(steps, s.cpuStepsPerSec)}; ${UNIT_NAMES[s.family]}s are the units`;
}

/**
 * The starter config for a family, named `name`: the shipped example without `$schema` (the extension
 * contributes the schema), and on the built-in images when the example reads files that may be absent.
 */
export function starterConfig(examplesDir: string, family: ModelFamily, name: string): Record<string, unknown> {
  const s = starterFor(family);
  const config = JSON.parse(fs.readFileSync(path.join(examplesDir, s.example), 'utf8')) as Record<string, unknown>;
  delete config.$schema;
  const data = config.data as { source?: string } | undefined;
  if (data?.source === 'fashion-mnist') config.data = { source: 'builtin' };
  return { ...config, name };
}

/** The starter's steps (for the expectation shown before it is written). */
export function starterSteps(examplesDir: string, family: ModelFamily): number {
  const steps = starterConfig(examplesDir, family, 'x').steps;
  return typeof steps === 'number' ? steps : 300;
}

/** A file name in `folder` for a config named `name` that does not exist yet. */
export function freeConfigPath(folder: string, name: string, exists: (file: string) => boolean = fs.existsSync): string {
  const base = safeRunName(name);
  let file = path.join(folder, `${base}.pltrain.json`);
  for (let i = 2; exists(file); i++) file = path.join(folder, `${base}-${i}.pltrain.json`);
  return file;
}

/**
 * What to expect before a run starts, for families that are slow on a CPU (a few steps per second):
 * "bert-encoder trains at ~1.5–3 steps/s on a CPU: 400 steps take 2–4 min". Undefined for fast ones.
 */
export function slowFamilyNotice(family: ModelFamily, steps: number, gpu = false): string | undefined {
  const s = starterFor(family);
  if (gpu || s.cpuStepsPerSec[1] >= 10) return undefined;
  return `${family} trains at ~${s.cpuStepsPerSec[0]}–${s.cpuStepsPerSec[1]} steps/s on a CPU: ${steps} steps take ${expectedDuration(steps, s.cpuStepsPerSec)}`;
}
