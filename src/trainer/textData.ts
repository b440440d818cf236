// Character-level text for the `switch-transformer` language model: any UTF-8 file, or the built-in
// corpus (data/builtin/devils-dictionary.txt, public domain). Tokens are Unicode code points.
//
// - Vocabulary: the sorted distinct characters of the whole file. Above MAX_VOCABULARY distinct
//   characters, only the most frequent MAX_VOCABULARY − 1 keep their own id and every other character
//   shares one unknown id (the last).
// - Split by position: the first 90% of the characters train, the last 10% test (the test part grows
//   to one window if 10% is shorter).
// - Example = one window of contextLength + 1 characters: x = its first T, y = its last T (each x's
//   next character). Windows are strided by T, so consecutive windows share one boundary character
//   and every character transition of a split is a target exactly once.
// - Example index i of a split is window (i·s) mod W, s ≈ W/φ coprime to W: a fixed permutation, so
//   the probe batch (the first n indices) samples the whole split instead of its first n·T characters
//   (for the built-in corpus, a title page of blank lines).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_DATA_FILE_BYTES, type TrainingConfig } from '../protocol';
import { readDataFile } from '../protocol/dataFile';
import { packageRoot } from './data';
import type { TaskData } from './models/types';

/** Most token ids a vocabulary gets (the output layer is dModel × vocabulary). */
export const MAX_VOCABULARY = 256;
/** Stands for every character outside a capped vocabulary. */
export const UNKNOWN_SYMBOL = '\uFFFD';

export const BUILTIN_CORPUS_FILE = () => path.join(packageRoot(), 'data', 'builtin', 'devils-dictionary.txt');

export interface TextTaskData extends TaskData {
  kind: 'text';
  taskMetric: 'perplexity';
  /** Token id → character (the unknown id, if any, is UNKNOWN_SYMBOL). */
  vocabulary: string[];
  /** Id shared by characters outside a capped vocabulary; undefined when every character has its own. */
  unknownId: number | undefined;
  contextLength: number;
  /** Token ids of each split, in corpus order. */
  tokens: { train: Int32Array; test: Int32Array };
  /** Offset in the split's tokens of example i's window. */
  windowStart(split: 'train' | 'test', i: number): number;
}

/** Loads `config.data.path` (resolved against configDir) or the built-in corpus. */
export function loadTextData(config: TrainingConfig, configDir: string): TextTaskData {
  const file = config.data.path ? path.resolve(configDir, config.data.path) : BUILTIN_CORPUS_FILE();
  const text = readUtf8(file);
  const name = config.data.path ? `text ${file}` : 'builtin text (The Devil\'s Dictionary, Ambrose Bierce)';
  return textTaskData(text, name, config.model.contextLength, config.data.maxTrainExamples, file);
}

/**
 * Reads a whole file as UTF-8, with errors that say what is wrong with it. Only a regular file under
 * MAX_DATA_FILE_BYTES is read (readDataFile): a device, a FIFO or a huge file is refused up front.
 */
export function readUtf8(file: string, maxBytes = MAX_DATA_FILE_BYTES): string {
  let bytes: Buffer;
  try {
    bytes = readDataFile(file, maxBytes);
  } catch (e) {
    if (!fs.existsSync(file)) throw new Error(`text corpus not found: ${file}`);
    if (fs.statSync(file).isDirectory()) throw new Error(`text corpus ${file} is a folder, not a file`);
    throw new Error(`text corpus: ${(e as Error).message}`);
  }
  if (bytes.length === 0) throw new Error(`text corpus ${file} is empty`);
  let decodeError: unknown;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    decodeError = e;
  }
  const at = firstInvalidUtf8(bytes);
  throw new Error(at >= 0 ? `text corpus ${file} is not valid UTF-8 (first invalid byte at offset ${at})` : `text corpus ${file} could not be decoded: ${(decodeError as Error).message}`);
}

/** Builds the task from a text already in memory (`where` names it in errors). */
export function textTaskData(text: string, name: string, contextLength: number, maxTrainExamples = 0, where = name): TextTaskData {
  const T = contextLength;
  if (!(Number.isInteger(T) && T >= 1)) throw new RangeError(`contextLength must be a positive integer, got ${contextLength}`);
  const chars = Array.from(text); // code points, not UTF-16 units
  if (chars.length === 0) throw new Error(`text corpus ${where} is empty`);
  const window = T + 1;
  if (chars.length < 2 * window) {
    throw new Error(`text corpus ${where} has ${chars.length} characters; contextLength ${T} needs at least ${2 * window} (a window of ${window} to train on and one to test on)`);
  }
  const { vocabulary, unknownId, idOf } = buildVocabulary(chars);
  const ids = Int32Array.from(chars, (ch) => idOf.get(ch) ?? (unknownId as number));
  // 90/10 by position; the test part is at least one window.
  const testStart = Math.min(Math.floor(0.9 * ids.length), ids.length - window);
  const tokens = { train: ids.subarray(0, testStart), test: ids.subarray(testStart) };
  const windows = (n: number) => Math.floor((n - 1) / T);
  const allTrain = windows(tokens.train.length);
  const counts = { train: maxTrainExamples > 0 ? Math.min(maxTrainExamples, allTrain) : allTrain, test: windows(tokens.test.length) };
  // With maxTrainExamples, the kept windows are indices 0…max−1 of the full permutation.
  const strides = { train: spreadingStride(allTrain), test: spreadingStride(counts.test) };
  const windowsOf = { train: allTrain, test: counts.test };
  const windowStart = (split: 'train' | 'test', i: number): number => {
    if (!(Number.isInteger(i) && i >= 0 && i < counts[split])) throw new RangeError(`example ${i} is outside the ${split} split (0…${counts[split] - 1})`);
    return ((i * strides[split]) % windowsOf[split]) * T;
  };
  return {
    name,
    kind: 'text',
    taskMetric: 'perplexity',
    trainSize: counts.train,
    testSize: counts.test,
    features: T,
    rows: 1,
    cols: T,
    classes: vocabulary.length,
    vocabulary,
    unknownId,
    contextLength: T,
    tokens,
    windowStart,
    batch(tf, split, indices) {
      const b = indices.length;
      const source = tokens[split];
      const x = new Int32Array(b * T);
      const y = new Int32Array(b * T);
      for (let r = 0; r < b; r++) {
        const start = windowStart(split, indices[r]);
        x.set(source.subarray(start, start + T), r * T);
        y.set(source.subarray(start + 1, start + T + 1), r * T);
      }
      return { x: tf.tensor2d(x, [b, T], 'int32'), y: tf.tensor2d(y, [b, T], 'int32'), size: b };
    },
  };
}

function buildVocabulary(chars: string[]): { vocabulary: string[]; unknownId: number | undefined; idOf: Map<string, number> } {
  const frequency = new Map<string, number>();
  for (const ch of chars) frequency.set(ch, (frequency.get(ch) ?? 0) + 1);
  const byCodePoint = (a: string, b: string) => a.codePointAt(0)! - b.codePointAt(0)!;
  let kept = [...frequency.keys()];
  let unknownId: number | undefined;
  if (kept.length > MAX_VOCABULARY) {
    // Most frequent first, ties by code point, so the cap is deterministic.
    kept = kept.sort((a, b) => frequency.get(b)! - frequency.get(a)! || byCodePoint(a, b)).slice(0, MAX_VOCABULARY - 1);
    unknownId = MAX_VOCABULARY - 1;
  }
  kept.sort(byCodePoint);
  const vocabulary = unknownId === undefined ? kept : [...kept, UNKNOWN_SYMBOL];
  return { vocabulary, unknownId, idOf: new Map(kept.map((ch, i) => [ch, i])) };
}

/** The integer nearest W/φ that is coprime to W: i ↦ i·s mod W is then a permutation that spreads consecutive indices over the split. */
export function spreadingStride(w: number): number {
  if (w <= 2) return 1;
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const target = Math.round(w / ((1 + Math.sqrt(5)) / 2));
  for (let d = 0; d < w; d++) {
    for (const s of [target - d, target + d]) if (s >= 1 && s < w && gcd(s, w) === 1) return s;
  }
  return 1;
}

/** Offset where the first ill-formed UTF-8 sequence (RFC 3629) starts, or −1. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let need: number;
    let min: number;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i; // truncated or interrupted sequence
      cp = (cp << 6) | (c & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return i;
    i += need + 1;
  }
  return -1;
}
