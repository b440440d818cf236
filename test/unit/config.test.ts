import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { analyzeConfigText, lineOf } from '../../src/extension/config/configAnalysis';
import { MAX_DATA_FILE_BYTES, TrainingConfigSchema, parseTrainingConfig } from '../../src/protocol';
import { readUtf8 } from '../../src/trainer/textData';
import { SCHEMA_FILE, VALIDATION_KEYWORDS, generateConfigJsonSchema } from '../../scripts/gen-schema';
import { CONFIG_FIELDS, editDistance, suggestField } from '../../src/protocol/config';

const here = os.tmpdir();

function problemsAt(text: string) {
  const a = analyzeConfigText(text, here);
  return a.problems.map((p) => ({ line: lineOf(text, p.range.start), message: p.message }));
}

test('defaults fill an empty config', () => {
  const r = parseTrainingConfig({});
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.config.model.experts, 4);
  assert.equal(r.config.alpha, 0.01);
  assert.equal(r.config.backend, 'auto');
  assert.deepEqual(r.config.frozenExperts, []);
});

test('every example config is valid, and each model family has one', () => {
  const dir = path.join(__dirname, '..', '..', 'examples');
  const families = new Set<string>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.pltrain.json'))) {
    const a = analyzeConfigText(fs.readFileSync(path.join(dir, f), 'utf8'), dir);
    assert.deepEqual(a.problems, [], f);
    families.add(a.config!.model.family);
  }
  assert.deepEqual([...families].sort(), ['bert-encoder', 'moe-mlp', 'switch-transformer', 'vgg']);
});

test('cross-field rules land on the offending line: family vs data source, heads vs width, OPT family', () => {
  const text = '{\n  "model": {\n    "family": "bert-encoder",\n    "experts": 3,\n    "dModel": 32,\n    "opt": true\n  },\n  "data": { "source": "text" }\n}\n';
  const p = problemsAt(text);
  const at = (re: RegExp) => p.find((x) => re.test(x.message))?.line;
  assert.equal(at(/must be a multiple of the 3 attention heads/), 5);
  assert.equal(at(/OPT mode is implemented for moe-mlp only/), 6);
  assert.equal(at(/text data needs model.family "switch-transformer"/), 8);
  assert.match(problemsAt('{ "model": { "family": "switch-transformer" } }')[0].message, /set data.source to "text"/);
  assert.match(problemsAt('{ "model": { "family": "vgg" }, "frozenExperts": [7] }')[0].message, /channel group 7 does not exist/);
});

test('a range error lands on the line of its key', () => {
  const text = '{\n  "name": "x",\n  "model": {\n    "experts": 1\n  },\n  "alpha": 0.1\n}\n';
  const p = problemsAt(text);
  assert.equal(p.length, 1);
  assert.equal(p[0].line, 4);
  assert.match(p[0].message, /^model\.experts: /);
});

test('negative alpha, wrong types and unknown keys are each located', () => {
  const text = ['{', '  "alpha": -1,', '  "steps": "many",', '  "learningRat": 0.1,', '  "monitor": { "probeSize": 1 }', '}'].join('\n');
  const p = problemsAt(text).sort((a, b) => a.line - b.line);
  assert.deepEqual(p.map((x) => x.line), [2, 3, 4, 5]);
  assert.match(p[0].message, /^alpha: /);
  assert.match(p[1].message, /^steps: Expected number/);
  assert.match(p[2].message, /unknown field "learningRat"/);
  assert.match(p[3].message, /^monitor\.probeSize: /);
});

test('JSON syntax errors are reported at their offset', () => {
  const text = '{\n  "alpha": 0.1,\n  "steps": 10,\n}\n';
  const p = problemsAt(text);
  assert.ok(p.length >= 1);
  assert.match(p[0].message, /JSON syntax error/);
  assert.equal(p[0].line, 4);
});

test('frozen experts must exist and leave one trainable', () => {
  let p = problemsAt('{\n  "model": { "experts": 2 },\n  "frozenExperts": [0, 5]\n}');
  assert.equal(p.length, 1);
  assert.equal(p[0].line, 3);
  assert.match(p[0].message, /expert 5 does not exist/);
  p = problemsAt('{\n  "model": { "experts": 2 },\n  "frozenExperts": [0, 1]\n}');
  assert.match(p[0].message, /at least one expert must stay trainable/);
});

test('a data folder that does not exist is a diagnostic, before anything starts', () => {
  const text = '{\n  "data": {\n    "source": "fashion-mnist",\n    "path": "no/such/folder"\n  }\n}';
  const p = problemsAt(text);
  assert.equal(p.length, 1);
  assert.equal(p[0].line, 4);
  assert.match(p[0].message, /does not exist/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-'));
  const p2 = analyzeConfigText(`{"data": {"source": "fashion-mnist", "path": ${JSON.stringify(dir)}}}`, here).problems;
  assert.match(p2[0].message, /no Fashion-MNIST files/);
});

test('the committed JSON schema matches the zod schema (run scripts/gen-schema.ts to refresh)', () => {
  assert.equal(fs.readFileSync(SCHEMA_FILE, 'utf8'), generateConfigJsonSchema());
});

test('engine and device: defaults, the PyTorch engine\'s device values, and the rules that tie them', () => {
  const d = parseTrainingConfig({});
  assert.ok(d.ok && d.config.engine === 'tfjs' && d.config.device === 'auto');
  for (const device of ['auto', 'cpu', 'cuda', 'cuda:0', 'cuda:12']) {
    const r = parseTrainingConfig({ engine: 'pytorch', device });
    assert.ok(r.ok, device);
  }
  for (const device of ['gpu', 'cuda:', 'cuda:x', 'CUDA', 'cuda:123']) assert.equal(parseTrainingConfig({ engine: 'pytorch', device }).ok, false, device);
  // Each rule lands on its own line.
  const text = '{\n  "engine": "pytorch",\n  "backend": "wasm",\n  "model": {\n    "opt": true\n  },\n  "monitor": {\n    "lipschitz": "spectral-norm"\n  }\n}\n';
  const p = problemsAt(text);
  assert.ok(p.some((x) => x.line === 3 && /TensorFlow\.js backend/.test(x.message)), JSON.stringify(p));
  assert.ok(p.some((x) => x.line === 5 && /OPT mode .* tfjs engine only/.test(x.message)), JSON.stringify(p));
  assert.ok(p.some((x) => x.line === 8 && /spectral-norm L_f .* tfjs engine only/.test(x.message)), JSON.stringify(p));
  // Every family trains in the PyTorch engine; switch-transformer still needs its text data there.
  assert.deepEqual(problemsAt('{\n  "engine": "pytorch",\n  "model": { "family": "switch-transformer" },\n  "data": { "source": "text" }\n}\n'), []);
  const noText = problemsAt('{\n  "engine": "pytorch",\n  "model": { "family": "switch-transformer" }\n}\n');
  assert.ok(noText.some((x) => /trains on text/.test(x.message)), JSON.stringify(noText));
  for (const f of ['moe-mlp', 'vgg', 'bert-encoder']) assert.ok(parseTrainingConfig({ engine: 'pytorch', model: { family: f, experts: 2, dModel: 8 } }).ok, f);
  const tfjsDevice = problemsAt('{\n  "device": "cuda:0"\n}\n');
  assert.deepEqual(tfjsDevice.map((x) => x.line), [2]);
  assert.match(tfjsDevice[0].message, /device is a setting of the PyTorch engine/);
});

test('data.path must be a regular file under the size bound: a device, a FIFO, a folder or a huge file is a diagnostic on its line', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-data-'));
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const huge = path.join(dir, 'huge.txt');
  fs.writeFileSync(huge, '');
  fs.truncateSync(huge, MAX_DATA_FILE_BYTES + 1); // sparse: no disk used
  const ok = path.join(dir, 'ok.txt');
  fs.writeFileSync(ok, 'some text to learn\n'.repeat(50));
  const at = (file: string) => problemsAt(`{\n  "model": {"family": "switch-transformer"},\n  "data": {\n    "source": "text",\n    "path": ${JSON.stringify(file)}\n  }\n}`);
  const expect = (file: string, message: RegExp) => {
    const p = at(file);
    assert.equal(p.length, 1, `${file}: ${JSON.stringify(p)}`);
    assert.equal(p[0].line, 5, 'on the data.path line');
    assert.match(p[0].message, message);
  };
  expect('/dev/zero', /character device: data files must be regular files/);
  expect(fifo, /named pipe \(FIFO\)/);
  expect(dir, /is a folder/);
  expect(huge, /more than the 256 MiB a data file may have/);
  expect(path.join(dir, 'missing.txt'), /does not exist/);
  assert.deepEqual(at(ok), [], 'a small regular text file is fine');
  // The trainer refuses the same files with a bounded read (never hangs on the FIFO, never reads /dev/zero).
  assert.throws(() => readUtf8('/dev/zero'), /character device/);
  assert.throws(() => readUtf8(fifo), /named pipe/);
  assert.throws(() => readUtf8(huge), /more than the 256 MiB/);
  assert.throws(() => readUtf8(ok, 100), /more than the 100 bytes/);
  assert.match(readUtf8(ok), /^some text/);
});

test('a misspelled field gets one "did you mean", with the key range to replace; a made-up one gets none', () => {
  const text = ['{', '  "learningrate": 0.1,', '  "model": { "expert": 3, "colour": 1 },', '  "monitor": { "evry": 5 }', '}'].join('\n');
  const a = analyzeConfigText(text, here);
  const byKey = new Map(a.problems.map((p) => [text.slice(p.range.start, p.range.end), p]));
  assert.equal(byKey.get('"learningrate"')?.suggestion, 'learningRate');
  assert.match(byKey.get('"learningrate"')!.message, /^learningrate: unknown field "learningrate" \(did you mean "learningRate"\?\)$/);
  assert.equal(byKey.get('"expert"')?.suggestion, 'experts');
  assert.equal(byKey.get('"evry"')?.suggestion, 'every');
  assert.equal(byKey.get('"colour"')?.suggestion, undefined);
  assert.doesNotMatch(byKey.get('"colour"')!.message, /did you mean/);
});

test('edit distance: closed forms (empty, identical, swap, substitution)', () => {
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('alpha', 'alpha'), 0);
  assert.equal(editDistance('aplha', 'alpha'), 1);
  assert.equal(editDistance('steps', 'stops'), 1);
  assert.equal(editDistance('kitten', 'sitting'), 3);
  // A short name gets one edit at most: "ab" is not "name".
  assert.equal(suggestField('ab', CONFIG_FIELDS['']), undefined);
  assert.equal(suggestField('BATCHSIZE', CONFIG_FIELDS['']), 'batchSize');
});

test('CONFIG_FIELDS lists exactly what the schema accepts at each level', () => {
  for (const [where, keys] of Object.entries(CONFIG_FIELDS)) {
    for (const k of keys) {
      const value = where ? { [where]: { [k]: null } } : { [k]: null };
      const r = parseTrainingConfig(value);
      assert.ok(!r.ok, 'null is no valid value anywhere');
      if (!r.ok) assert.ok(!r.problems.some((p) => /unknown field/.test(p.message)), `${where}.${k} is a known field`);
    }
  }
  assert.deepEqual(CONFIG_FIELDS[''], Object.keys(TrainingConfigSchema.innerType().shape));
});

test('the contributed schema only describes and completes: no keyword the JSON service would report', () => {
  const schema = JSON.parse(generateConfigJsonSchema());
  const walk = (node: Record<string, unknown>, where: string) => {
    for (const k of VALIDATION_KEYWORDS) assert.ok(!(k in node), `${where} has "${k}"`);
    for (const [k, v] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(v, `${where}.${k}`);
  };
  const root = schema.definitions.PlTrainConfig;
  walk(root, 'config');
  assert.match(root.properties.learningRate.description, /Adam learning rate/);
  assert.deepEqual(root.properties.model.properties.family.examples, ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg']);
  assert.deepEqual(root.properties.pruning.properties.enabled.examples, [true, false]);
});

test('script: needs the PyTorch engine and an existing file, each a diagnostic on its line; with a script the built-in families do not apply', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-script-'));
  fs.writeFileSync(path.join(dir, 'train.py'), 'print(1)\n');
  const at = (text: string) => analyzeConfigText(text, dir).problems.map((p) => ({ line: lineOf(text, p.range.start), message: p.message }));
  const tfjs = at('{\n  "name": "s",\n  "script": "train.py"\n}\n');
  assert.deepEqual(tfjs.map((p) => p.line), [3]);
  assert.match(tfjs[0].message, /set "engine": "pytorch"/);
  const missing = at('{\n  "engine": "pytorch",\n  "script": "nope.py"\n}\n');
  assert.deepEqual(missing.map((p) => p.line), [3]);
  assert.match(missing[0].message, /nope\.py does not exist/);
  const folder = at('{\n  "engine": "pytorch",\n  "script": "."\n}\n');
  assert.match(folder[0].message, /is not a file/);
  const ok = analyzeConfigText('{"engine": "pytorch", "script": "train.py", "model": {"family": "switch-transformer"}, "data": {"source": "text"}}', dir);
  assert.deepEqual(ok.problems, []);
  assert.equal(ok.config?.script, 'train.py');
});
