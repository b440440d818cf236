// Same weights, same estimates: the PyTorch engine's measurement of a moe-mlp (each expert's κ over the
// probe examples it serves, κ of the model's kernel Σ_e K_e + K_gate; docs/method.md, "Definitions
// (contract)") against the TypeScript float64 reference on one fixture (test/support/moeReference.ts:
// closed-form kernels of the soft mixture, conditioning), to 1e-5 relative, in both of the engine's
// precisions; and a switch-transformer (per-expert stats over the routed probe tokens, served, the
// model's κ) against the TF.js model's own measurement on the same weights and probe.
// Registered where an interpreter imports torch (test/support/engines.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { MIN_SERVED } from '../../src/protocol';
import { conditioning } from '../../src/trainer/pl';
import { PYTHON, engineEnv } from '../support/engines';
import { closedFormKernels, directions64, modelKappa64, type MoeParams } from '../support/moeReference';
import { mulberry32 } from '../support/prng';

const [E, d, c, h, n, damping] = [3, 12, 5, 6, 10, 1e-6];

function fixture() {
  const rnd = mulberry32(20261206);
  const normal = (len: number, std: number) => Array.from({ length: len }, () => std * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()));
  return {
    experts: E, d, c, h, damping,
    w1: Array.from({ length: E }, () => normal(d * h, Math.sqrt(2 / d))),
    b1: Array.from({ length: E }, () => normal(h, 0.1)),
    w2: Array.from({ length: E }, () => normal(h * c, Math.sqrt(1 / h))),
    b2: Array.from({ length: E }, () => normal(c, 0.1)),
    // A gate away from uniform, so its weights and the served sets matter.
    gateW: normal(d * E, 0.4),
    gateB: normal(E, 0.3),
    x: Array.from({ length: n * d }, () => rnd()),
    labels: Array.from({ length: n }, (_, i) => i % c),
  };
}

/** The same measurement from the TypeScript float64 reference. */
function reference(f: ReturnType<typeof fixture>) {
  const m: MoeParams = { d, h, c, experts: E, gateW: Float64Array.from(f.gateW), gateB: Float64Array.from(f.gateB), w1: f.w1.map((a) => Float64Array.from(a)), b1: f.b1.map((a) => Float64Array.from(a)), w2: f.w2.map((a) => Float64Array.from(a)), b2: f.b2.map((a) => Float64Array.from(a)) };
  const y = Float64Array.from({ length: n * c }, (_, k) => (f.labels[Math.floor(k / c)] === k % c ? 1 : 0));
  const u = directions64(m, f.x, y, n);
  const { units, p } = closedFormKernels(m, f.x, u, n);
  const perUnit = units.map((K, e) => {
    const rows = Array.from({ length: n }, (_, i) => i).filter((i) => p[i * E + e] >= 1 / (2 * E));
    if (rows.length < MIN_SERVED) return { served: rows.length, mu: null, lf: null, kappa: null };
    const sub = Float64Array.from({ length: rows.length ** 2 }, (_, k) => K[rows[Math.floor(k / rows.length)] * n + rows[k % rows.length]]);
    const { mu, lf, kappa } = conditioning(sub, rows.length, damping);
    return { served: rows.length, mu, lf, kappa };
  });
  return { perUnit, modelKappa: modelKappa64(m, f.x, y, n, [0, 1, 2], damping).kappa };
}

interface SameCheck {
  units: { served: number; mu: number | null; lf: number | null; kappa: number | null }[];
  modelKappa: number;
  tokens?: number[];
}

/** Runs `python -m pltrain.samecheck` on a fixture written in `dtype`; its parsed answer. */
function runSameCheck(f: object, dtype: 'float64' | 'float32'): SameCheck {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-same-'));
  const file = path.join(tmp, 'fixture.json');
  fs.writeFileSync(file, JSON.stringify({ ...f, dtype }));
  const r = spawnSync(PYTHON!, ['-m', 'pltrain.samecheck', file], { encoding: 'utf8', env: engineEnv() });
  fs.rmSync(tmp, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as SameCheck;
}

/** Every unit's served count, μ, L_f, κ (null where not measurable) and the model's κ agree to 1e-5 relative. */
function assertAgree(python: SameCheck, want: { units: { served?: number; mu: number | null; lf: number | null; kappa: number | null }[]; modelKappa: number }, reference: string): void {
  const close = (a: number, b: number, what: string) => {
    const rel = Math.abs(a - b) / Math.abs(b);
    assert.ok(rel <= 1e-5, `${what}: pytorch ${a} vs ${reference} ${b} (relative ${rel.toExponential(2)})`);
  };
  want.units.forEach((u, e) => {
    const py = python.units[e];
    assert.equal(py.served, u.served, `expert ${e}: served`);
    if (u.kappa === null) {
      assert.deepEqual([py.mu, py.lf, py.kappa], [null, null, null], `expert ${e}: not measurable`);
      return;
    }
    for (const k of ['mu', 'lf', 'kappa'] as const) close(py[k]!, u[k]!, `expert ${e} ${k}`);
  });
  close(python.modelKappa, want.modelKappa, "the model's κ");
}

if (!PYTHON) console.log('# pytorch same-weights check not run: no interpreter here imports torch and websockets');
else {
  for (const dtype of ['float64', 'float32'] as const) {
    test(`the PyTorch engine's per-expert μ, L_f, κ and the model's κ equal the TypeScript reference on the same weights (${dtype}, 1e-5 relative)`, () => {
      const f = fixture();
      const python = runSameCheck(f, dtype);
      const ts = reference(f);
      assert.ok(ts.perUnit.some((u) => u.kappa !== null), 'at least one expert is measurable (else the test tests little)');
      assert.equal(ts.perUnit.length, E);
      assertAgree(python, { units: ts.perUnit, modelKappa: ts.modelKappa }, 'TypeScript');
    });
  }
}

// switch-transformer: the TF.js model's own measurement (float32 tfjs, float64 eigen-solves) against
// the PyTorch engine's on the same weights, probe sequences and probe tokens.
const SWITCH = { family: 'switch-transformer', experts: 3, dModel: 8, layers: 3, contextLength: 6, hiddenUnits: 5 };
const SWITCH_PROBE = 12;

async function switchFixture() {
  const tf = await import('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  const { parseTrainingConfig } = await import('../../src/protocol');
  const { SwitchTransformerLm } = await import('../../src/trainer/models/switchTransformer');
  const { textTaskData } = await import('../../src/trainer/textData');
  const parsed = parseTrainingConfig({ model: SWITCH, data: { source: 'text' }, seed: 3, monitor: { probeSize: SWITCH_PROBE, damping } });
  assert.ok(parsed.ok, JSON.stringify(parsed));
  const config = (parsed as { ok: true; config: import('../../src/protocol').TrainingConfig }).config;
  const rnd = mulberry32(7);
  const text = Array.from({ length: 900 }, () => 'abcdefghij .,'[Math.floor(rnd() * 13)]).join('');
  const data = textTaskData(text, 'fixture', SWITCH.contextLength);
  const model = new SwitchTransformerLm(tf, config, data);
  // A router far from uniform, so routing differs between tokens and no argmax is a near tie.
  for (const l of model.switchBlocks) model.blocks[l].router!.w.assign(tf.mul(model.blocks[l].router!.w, 30));
  const probe = data.batch(tf, 'train', Int32Array.from({ length: SWITCH_PROBE }, (_, i) => i));
  const [x, y] = [Array.from(probe.x.dataSync()), Array.from(probe.y.dataSync())];
  model.setProbe(probe);
  const weights: Record<string, number[]> = {};
  const put = (name: string, v: { dataSync(): ArrayLike<number> }) => (weights[name] = Array.from(v.dataSync()));
  put('embed/tokens', model.embedding.tokens);
  put('embed/positions', model.embedding.positions);
  model.blocks.forEach((b, l) => {
    for (const k of ['ln1g', 'ln1b', 'wq', 'wk', 'wv', 'wo', 'bo', 'ln2g', 'ln2b'] as const) put(`layer${l}/${k}`, b[k]);
    const mlps = b.experts ? b.experts.map((v, e) => [`layer${l}/expert${e}`, v] as const) : [[`layer${l}/dense`, b.dense!] as const];
    for (const [prefix, v] of mlps) for (const k of ['w1', 'b1', 'w2', 'b2'] as const) put(`${prefix}/${k}`, v[k]);
    if (b.router) (put(`layer${l}/router/w`, b.router.w), put(`layer${l}/router/b`, b.router.b));
  });
  put('final/lnG', model.head.lnG);
  put('final/lnB', model.head.lnB);
  put('output/w', model.head.w);
  put('output/b', model.head.b);
  const stats = model.measure(new Set(), new Set());
  const ts = { units: stats, modelKappa: model.modelKappa()!, tokens: Array.from(model.probeTokens()) };
  model.dispose();
  return { fixture: { family: 'switch-transformer', model: SWITCH, vocabulary: data.classes, probeSize: SWITCH_PROBE, damping, x, y, weights }, ts };
}

if (PYTHON) {
  for (const dtype of ['float64', 'float32'] as const) {
    test(`the PyTorch engine's switch-transformer expert μ, L_f, κ, served and the model's κ equal the TF.js model's on the same weights (${dtype}, 1e-5 relative)`, async () => {
      const { fixture: f, ts } = await switchFixture();
      const python = runSameCheck(f, dtype);
      assert.deepEqual(python.tokens, ts.tokens, 'the same probe tokens');
      assert.ok(ts.units.some((u) => u.kappa !== null), 'at least one expert is measurable');
      assert.equal(ts.units.length, SWITCH.experts);
      assertAgree(python, { units: ts.units, modelKappa: ts.modelKappa }, 'TF.js');
    });
  }
}
