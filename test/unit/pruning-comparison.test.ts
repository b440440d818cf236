import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeRuns, table, type Row } from '../../scripts/pruning-comparison';

const METHODS = ['gate', 'random', 'magnitude', 'lowest-share'] as const;

/** One family's rows for one seed, every method, with recognisable figures. */
function rows(family: string, seed: number, commit: string, alpha: number, before: number): Row[] {
  return METHODS.map((method, i) => ({
    family,
    method,
    seed,
    alpha,
    commit,
    backend: 'wasm',
    pruned: [0, 1],
    prunedShare: [0.1, 0.2],
    before,
    afterPrune: before - 0.01 * (i + 1),
    afterFinetune: before + 0.01,
    taskMetric: 'accuracy',
    seconds: 1,
  }));
}

test('a run of some families keeps the recorded rows of the others and replaces its own', () => {
  const recorded = [1, 2].flatMap((seed) => [...rows('moe-mlp', seed, 'old', 0.01, 0.8), ...rows('switch-transformer', seed, 'old', 0.001, 0.5), ...rows('bert-encoder', seed, 'old', 0, 0.7), ...rows('vgg', seed, 'old', 0, 0.6)]);
  const run = [...rows('vgg', 1, 'new', 0.001, 0.65), ...rows('bert-encoder', 1, 'new', 0.001, 0.75)];
  const merged = mergeRuns({ scale: 1, rows: recorded }, { scale: 1, rows: run });
  assert.equal(merged.scale, 1);
  // moe-mlp and switch-transformer: every recorded row, unchanged.
  for (const family of ['moe-mlp', 'switch-transformer']) assert.deepEqual(merged.rows.filter((r) => r.family === family), recorded.filter((r) => r.family === family));
  // bert-encoder and vgg: only this run's rows (its one seed, not the two recorded ones).
  for (const family of ['bert-encoder', 'vgg']) assert.deepEqual(merged.rows.filter((r) => r.family === family), run.filter((r) => r.family === family));
  assert.equal(merged.rows.length, 2 * 2 * METHODS.length + run.length);
  // In the families' order, whatever order the run took them in.
  assert.deepEqual([...new Set(merged.rows.map((r) => r.family))], ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg']);
});

test('a run cut short keeps the recorded rows of the families it has not reached', () => {
  const recorded = [...rows('bert-encoder', 1, 'old', 0, 0.7), ...rows('vgg', 1, 'old', 0, 0.6)];
  const merged = mergeRuns({ scale: 1, rows: recorded }, { scale: 1, rows: rows('bert-encoder', 1, 'new', 0.001, 0.75) });
  assert.deepEqual(merged.rows.filter((r) => r.family === 'vgg'), recorded.filter((r) => r.family === 'vgg'));
  assert.ok(merged.rows.filter((r) => r.family === 'bert-encoder').every((r) => r.commit === 'new'));
  // Nothing run yet: the file is the recorded one.
  assert.deepEqual(mergeRuns({ scale: 1, rows: recorded }, { scale: 1, rows: [] }).rows, recorded);
});

test('rows at another scale are refused, not replaced; no file or an empty one is a fresh start', () => {
  const recorded = rows('moe-mlp', 1, 'old', 0.01, 0.8);
  assert.throws(() => mergeRuns({ scale: 1, rows: recorded }, { scale: 0.1, rows: rows('vgg', 1, 'new', 0.001, 0.6) }), /--scale 1.*--scale 0\.1/);
  const run = rows('vgg', 1, 'new', 0.001, 0.6);
  assert.deepEqual(mergeRuns(undefined, { scale: 0.1, rows: run }), { scale: 0.1, rows: run });
  assert.deepEqual(mergeRuns({ scale: 1, rows: [] }, { scale: 0.1, rows: run }), { scale: 0.1, rows: run });
});

test('the table shows each family its own α and says which commit produced which families', () => {
  const merged = mergeRuns({ scale: 1, rows: [...rows('moe-mlp', 1, 'old', 0.01, 0.8), ...rows('vgg', 1, 'old', 0, 0.6)] }, { scale: 1, rows: rows('vgg', 1, 'new', 0.001, 0.65) });
  const md = table(merged.rows, 1);
  assert.match(md, /\*\*moe-mlp\*\* \(4 units, 2 pruned; 600 steps of training, 200 steps of selection, 150 of fine-tuning; α 0\.01; 1 seeds\)\. test accuracy \(%\), mean ± sd over seeds; before pruning: 80\.0 ± 0\.0\./);
  assert.match(md, /\*\*vgg\*\* \(.*; α 0\.001; 1 seeds\)\. .* before pruning: 65\.0 ± 0\.0\./);
  assert.doesNotMatch(md, /switch-transformer|bert-encoder/);
  // gate: 0.65 − 0.01 right after pruning, 0.65 + 0.01 after fine-tuning.
  assert.match(md, /\| gate \| 64\.0 ± 0\.0 \| 66\.0 ± 0\.0 \| 0\.300 \| \[0,1\] \|/);
  assert.match(md, /\nBackend wasm; code at commit old \(moe-mlp\) and new \(vgg\); `npm run experiments:pruning`\.$/);
  // Two backends: one clause each.
  assert.match(table([...rows('moe-mlp', 1, 'old', 0.01, 0.8), ...rows('vgg', 1, 'new', 0.001, 0.65).map((r) => ({ ...r, backend: 'cpu' }))], 1), /\nBackend wasm; code at commit old \(moe-mlp\); Backend cpu; code at commit new \(vgg\); `npm run experiments:pruning`\.$/);
  // One producer: no family list.
  assert.match(table(rows('vgg', 1, 'new', 0.001, 0.65), 0.1), /\nBackend wasm; code at commit new; `npm run experiments:pruning` with --scale 0\.1\.$/);
});
