// Every config field, given a wrong type and an out-of-range value, yields a diagnostic on that
// field's own line and no config (so nothing can start).
import assert from 'node:assert/strict';
import * as os from 'node:os';
import { test } from 'node:test';
import { analyzeConfigText, lineOf } from '../../src/extension/config/configAnalysis';

const valid = {
  name: 'x',
  model: { family: 'moe-mlp', experts: 3, hiddenUnits: 8 },
  data: { source: 'builtin', maxTrainExamples: 0 },
  steps: 10,
  batchSize: 8,
  learningRate: 0.01,
  seed: 1,
  alpha: 0.1,
  monitor: { every: 5, probeSize: 4, damping: 1e-6 },
  frozenExperts: [],
  backend: 'auto',
  engine: 'tfjs',
  device: 'auto',
  checkpointEvery: 10,
  logEvery: 1,
};

/** [path, wrong type, out of range (or otherwise invalid)] for every field. */
const cases: [string[], unknown, unknown][] = [
  [['name'], 5, ''],
  [['model', 'family'], 1, 'transformer-xl'],
  [['model', 'experts'], '4', 1],
  [['model', 'hiddenUnits'], true, 0],
  [['data', 'source'], 3, 'imagenet'],
  [['data', 'maxTrainExamples'], 'all', -1],
  [['steps'], '10', 0],
  [['batchSize'], [8], 0],
  [['learningRate'], '0.1', -0.1],
  [['seed'], 1.5, -1],
  [['alpha'], 'big', -0.5],
  [['monitor', 'every'], null, 0],
  [['monitor', 'probeSize'], '16', 1],
  [['monitor', 'damping'], 'tiny', 0],
  [['frozenExperts'], 0, [-1]],
  [['backend'], 1, 'tpu'],
  [['engine'], true, 'jax'],
  // The tfjs engine has no device setting: any other value than auto is refused on its line.
  [['device'], 0, 'cuda'],
  // A script needs the PyTorch engine (the reference config is tfjs), and a name.
  [['script'], 5, ''],
  [['checkpointEvery'], '100', -5],
  [['logEvery'], {}, 0],
];

function withValue(p: string[], v: unknown): string {
  const obj = structuredClone(valid) as Record<string, unknown>;
  let at = obj;
  for (const k of p.slice(0, -1)) at = at[k] as Record<string, unknown>;
  at[p[p.length - 1]] = v;
  return JSON.stringify(obj, null, 2);
}

function lineOfKey(text: string, p: string[]): number {
  // The pretty-printed line of the last key of the path (keys are unique enough in this config).
  const needle = `"${p[p.length - 1]}":`;
  let offset = -1;
  let from = 0;
  for (const k of p) {
    offset = text.indexOf(`"${k}":`, from);
    from = offset + 1;
  }
  assert.ok(offset >= 0, needle);
  return lineOf(text, offset);
}

test('the reference config is valid', () => {
  const a = analyzeConfigText(JSON.stringify(valid, null, 2), os.tmpdir());
  assert.deepEqual(a.problems, []);
});

for (const [p, wrongType, outOfRange] of cases) {
  for (const [what, value] of [['wrong type', wrongType], ['invalid value', outOfRange]] as const) {
    test(`${p.join('.')}: ${what} (${JSON.stringify(value)}) → a diagnostic on its line, no config`, () => {
      const text = withValue(p, value);
      const a = analyzeConfigText(text, os.tmpdir());
      assert.equal(a.config, undefined, 'nothing to start');
      assert.ok(a.problems.length >= 1);
      const expected = lineOfKey(text, p);
      assert.ok(
        // An array element's problem sits on the element's own line, just below its key.
        a.problems.some((pr) => {
          const line = lineOf(text, pr.range.start);
          return pr.message.startsWith(p.join('.')) && (line === expected || (pr.message.startsWith(`${p.join('.')}[`) && line === expected + 1));
        }),
        `expected a problem on line ${expected}; got ${a.problems.map((pr) => `${lineOf(text, pr.range.start)}: ${pr.message}`).join(' | ')}`,
      );
    });
  }
}
