// Same weights, same estimates: the PyTorch engine's κ per expert (autograd kernels, float64 eigh)
// against the TypeScript float64 estimators (outputDirections, twoLayerTangentKernel, conditioning) on
// one moe-mlp fixture, to 1e-5 relative. The expert's kernel of the gated mixture z = Σ_e g_e·o_e is
// the expert kernel with each u_i scaled by g_e(x_i) (s_i = u_iᵀz_i is linear in u). Registered where an
// interpreter imports torch (test/support/engines.ts); run in both of the engine's precisions.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { conditioning, outputDirections, twoLayerTangentKernel } from '../../src/trainer/pl';
import { PYTHON, engineEnv, root } from '../support/engines';
import { mulberry32 } from '../support/prng';

const [E, d, c, h, n, damping] = [3, 12, 5, 6, 8, 1e-6];

function fixture() {
  const rnd = mulberry32(20261206);
  const normal = (len: number, std: number) => Array.from({ length: len }, () => std * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()));
  return {
    experts: E, d, c, h, damping,
    w1: Array.from({ length: E }, () => normal(d * h, Math.sqrt(2 / d))),
    b1: Array.from({ length: E }, () => normal(h, 0.1)),
    w2: Array.from({ length: E }, () => normal(h * c, Math.sqrt(1 / h))),
    b2: Array.from({ length: E }, () => normal(c, 0.1)),
    // A gate far from uniform, so its weights matter.
    gateW: normal(d * E, 1),
    gateB: normal(E, 0.5),
    x: Array.from({ length: n * d }, () => rnd()),
    labels: Array.from({ length: n }, (_, i) => i % c),
  };
}

/** The same measurement from the TypeScript estimators, in float64. */
function reference(f: ReturnType<typeof fixture>) {
  const gate = new Float64Array(n * E);
  const logits = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: E }, (_, e) => f.gateB[e] + Array.from({ length: d }, (_, a) => f.x[i * d + a] * f.gateW[a * E + e]).reduce((s, v) => s + v, 0));
    const top = Math.max(...z);
    const sum = z.reduce((s, v) => s + Math.exp(v - top), 0);
    for (let e = 0; e < E; e++) {
      gate[i * E + e] = Math.exp(z[e] - top) / sum;
      for (let o = 0; o < c; o++) {
        let out = f.b2[e][o];
        for (let k = 0; k < h; k++) {
          let pre = f.b1[e][k];
          for (let a = 0; a < d; a++) pre += f.x[i * d + a] * f.w1[e][a * h + k];
          out += Math.max(pre, 0) * f.w2[e][k * c + o];
        }
        logits[i * c + o] += gate[i * E + e] * out;
      }
    }
  }
  const logProbs = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const row = logits.subarray(i * c, (i + 1) * c);
    const top = Math.max(...row);
    const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    for (let o = 0; o < c; o++) logProbs[i * c + o] = row[o] - lse;
  }
  const oneHot = Float64Array.from({ length: n * c }, (_, k) => (f.labels[Math.floor(k / c)] === k % c ? 1 : 0));
  const u = outputDirections(logProbs, oneHot, n, c);
  return Array.from({ length: E }, (_, e) => {
    const scaled = u.map((v, k) => v * gate[Math.floor(k / c) * E + e]);
    const K = twoLayerTangentKernel({ d, h, c, w1: f.w1[e], b1: f.b1[e], w2: f.w2[e], b2: f.b2[e] }, f.x, scaled, n);
    const { mu, lf, kappa } = conditioning(K, n, damping);
    return { mu, lf, kappa };
  });
}

if (!PYTHON) console.log('# pytorch same-weights check not run: no interpreter here imports torch and websockets');
else {
  for (const dtype of ['float64', 'float32'] as const) {
    test(`the PyTorch engine's μ, L_f, κ per expert equal the TypeScript estimators' on the same weights (${dtype}, 1e-5 relative)`, () => {
      const f = fixture();
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-same-'));
      const file = path.join(tmp, 'fixture.json');
      fs.writeFileSync(file, JSON.stringify({ ...f, dtype }));
      const r = spawnSync(PYTHON!, ['-m', 'pltrain.samecheck', file], { encoding: 'utf8', env: engineEnv() });
      fs.rmSync(tmp, { recursive: true, force: true });
      assert.equal(r.status, 0, r.stderr);
      const python = JSON.parse(r.stdout) as { id: number; mu: number; lf: number; kappa: number }[];
      const ts = reference(f);
      assert.equal(python.length, E);
      for (let e = 0; e < E; e++) {
        assert.ok(ts[e].kappa > 1 && ts[e].kappa < 1e4, `expert ${e}: a well-posed κ to compare (${ts[e].kappa})`);
        for (const k of ['mu', 'lf', 'kappa'] as const) {
          const rel = Math.abs(python[e][k] - ts[e][k]) / Math.abs(ts[e][k]);
          assert.ok(rel <= 1e-5, `expert ${e} ${k}: pytorch ${python[e][k]} vs TypeScript ${ts[e][k]} (relative ${rel.toExponential(2)})`);
        }
      }
    });
  }
}
