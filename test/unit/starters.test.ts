import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { analyzeConfigText } from '../../src/extension/config/configAnalysis';
import { FAMILY_STARTERS, describeStarter, expectedDuration, freeConfigPath, starterConfig, starterSteps } from '../../src/extension/config/starters';
import { MODEL_FAMILIES } from '../../src/protocol';

const examples = path.join(__dirname, '..', '..', 'examples');

test('one starter per model family, each a valid config of that family with the chosen name and no $schema', () => {
  assert.deepEqual(FAMILY_STARTERS.map((s) => s.family), [...MODEL_FAMILIES]);
  for (const s of FAMILY_STARTERS) {
    const config = starterConfig(examples, s.family, 'my run');
    assert.equal(config.name, 'my run');
    assert.equal((config.model as { family: string }).family, s.family);
    assert.ok(!('$schema' in config), `${s.family}: no $schema`);
    const analysis = analyzeConfigText(JSON.stringify(config, null, 2), os.tmpdir());
    assert.deepEqual(analysis.problems.map((p) => p.message), [], s.family);
  }
  // The VGG example reads Debian's Fashion-MNIST files; the starter runs anywhere on the built-in images.
  assert.deepEqual(starterConfig(examples, 'vgg', 'v').data, { source: 'builtin' });
});

test('expected durations: closed forms at the range ends', () => {
  assert.equal(expectedDuration(2000, [300, 400]), '5–7 s');
  assert.equal(expectedDuration(400, [1.5, 3]), '2–4 min');
  assert.equal(expectedDuration(10, [100, 200]), '~1 s');
  assert.match(describeStarter(FAMILY_STARTERS[2], starterSteps(examples, 'bert-encoder')), /^~1\.5–3 steps\/s on a CPU: 400 steps take 2–4 min; heads are the units$/);
});

test('a new config never overwrites one that exists', () => {
  const taken = new Set(['/w/heads.pltrain.json', '/w/heads-2.pltrain.json']);
  assert.equal(freeConfigPath('/w', 'heads', (f) => taken.has(f)), '/w/heads-3.pltrain.json');
  assert.equal(freeConfigPath('/w', 'my run!', () => false), '/w/my-run-.pltrain.json');
});

test('runs are told apart by config name and a short start time', async () => {
  const { runLabel, shortTime, stampOf } = await import('../../src/extension/run/runLabel');
  const now = new Date(2026, 11, 6, 14, 0, 0);
  assert.equal(shortTime(new Date(2026, 11, 6, 9, 5), now), '09:05');
  assert.equal(shortTime(new Date(2026, 11, 4, 15, 2), now), 'Dec 4 15:02');
  assert.equal(shortTime(new Date(2025, 0, 31, 23, 59), now), '2025 Jan 31 23:59');
  assert.deepEqual(stampOf('default-20261204-150233-ab12'), new Date(2026, 11, 4, 15, 2, 33));
  assert.equal(stampOf('no-stamp'), undefined);
  assert.equal(runLabel('/r/default-20261204-150233-ab12', 'default', undefined, now), 'default · Dec 4 15:02');
  assert.equal(runLabel('/r/x-20261206-100000', 'my run', new Date(2026, 11, 6, 13, 30).getTime(), now), 'my run · 13:30');
  assert.equal(runLabel('/r/odd', undefined, undefined, now), 'odd');
});

test('slow families say what to expect before starting; fast ones say nothing', async () => {
  const { slowFamilyNotice } = await import('../../src/extension/config/starters');
  assert.equal(slowFamilyNotice('bert-encoder', 400), 'bert-encoder trains at ~1.5–3 steps/s on a CPU: 400 steps take 2–4 min');
  assert.equal(slowFamilyNotice('vgg', 60), 'vgg trains at ~1.5–3 steps/s on a CPU: 60 steps take 20–40 s');
  assert.equal(slowFamilyNotice('moe-mlp', 2000), undefined);
  assert.equal(slowFamilyNotice('switch-transformer', 600), undefined);
});
