// The float64 estimators: tangent kernels against explicit Jacobians, μ/L/κ against the closed form of
// a linear model, the damping, and the output directions that scalarize a classifier.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { conditioning, gramOfJacobian, outputDirections, scaledLogitGradients, twoLayerTangentKernel, type TwoLayerExpert } from '../../src/trainer/pl';
import { matmul, randomArray, randomOrthogonal, relative, relativeFrobenius, transpose } from '../support/linalg';
import { mulberry32 } from '../support/prng';

/** X = U·[diag(s) 0]·Vᵀ (n×p, n ≤ p): a matrix whose singular values are s by construction. */
function withSingularValues(rnd: () => number, s: number[], p: number): Float64Array {
  const n = s.length;
  const u = randomOrthogonal(rnd, n);
  const v = randomOrthogonal(rnd, p);
  const sigma = new Float64Array(n * p);
  s.forEach((value, i) => (sigma[i * p + i] = value));
  return matmul(matmul(u, sigma, n, n, p), transpose(v, p, p), n, p, p);
}

test('linear model F = Xw: K = X·Xᵀ, μ = σ_min², L = σ_max², κ = (σ_max/σ_min)² for X with known singular values', () => {
  const n = 8;
  const p = 20;
  const s = [0.5, 0.9, 1.3, 2, 2.5, 3.1, 4, 6];
  const x = withSingularValues(mulberry32(11), s, p);
  // The Jacobian of F = Xw w.r.t. w is X itself.
  const k = gramOfJacobian(x, n, p);
  assert.ok(relativeFrobenius(k, matmul(x, transpose(x, n, p), n, p, n)) <= 1e-14);
  const c = conditioning(k, n, 1e-12);
  // The brief's bound is 1e-4; float64 all the way gives far better, so hold it to 1e-10.
  assert.ok(relative(c.mu, 0.25) <= 1e-10, `μ = ${c.mu}`);
  assert.ok(relative(c.lf, 36) <= 1e-10, `L = ${c.lf}`);
  assert.ok(relative(c.kappa, 36 / (0.25 + 1e-12 * 36)) <= 1e-10, `κ = ${c.kappa}`); // smooth damping: λ_max/(λ_min + δ·λ_max)
});

test('linear model with n = 2: μ and L equal the 2×2 closed form of X·Xᵀ (an independent route)', () => {
  const p = 9;
  const x = randomArray(mulberry32(13), 2 * p);
  let [a, b, d] = [0, 0, 0];
  for (let t = 0; t < p; t++) {
    a += x[t] ** 2;
    b += x[t] * x[p + t];
    d += x[p + t] ** 2;
  }
  const radius = Math.hypot((a - d) / 2, b);
  const lMax = (a + d) / 2 + radius;
  const lMin = (a * d - b * b) / lMax; // det/λ_max avoids cancellation
  const c = conditioning(gramOfJacobian(x, 2, p), 2, 1e-12);
  assert.ok(relative(c.mu, lMin) <= 1e-12 && relative(c.lf, lMax) <= 1e-12 && relative(c.kappa, lMax / (lMin + 1e-12 * lMax)) <= 1e-12);
});

test('conditioning: vMin and vMax are unit eigenvectors of λ_min and λ_max (K·v = λ·v)', () => {
  const n = 6;
  const p = 15;
  const j = randomArray(mulberry32(19), n * p);
  const k = gramOfJacobian(j, n, p);
  const c = conditioning(k, n, 1e-9);
  for (const [v, lambda] of [[c.vMin, c.mu], [c.vMax, c.lf]] as const) {
    const kv = matmul(k, v, n, n, 1);
    assert.ok(Math.abs(Math.hypot(...v) - 1) <= 1e-14);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(kv[i] - lambda * v[i]) <= 1e-12 * c.lf);
  }
});

test('damping: a rank-deficient linear model (p < n) has μ = 0 up to round-off and κ at the floor 1/δ', () => {
  const n = 6;
  const p = 4;
  const x = randomArray(mulberry32(23), n * p);
  const damping = 1e-6;
  const c = conditioning(gramOfJacobian(x, n, p), n, damping);
  assert.ok(c.mu <= 1e-13 * c.lf, `μ = ${c.mu}`);
  // Round-off leaves μ at ~1e-16·L_f, so κ = L_f/(μ + δ·L_f) is 1/δ to ~1e-10.
  assert.ok(relative(c.kappa, 1 / damping) <= 1e-8, `κ = ${c.kappa}`);
  assert.equal(conditioning(Float64Array.from([1, 0, 0, 0]), 2, 1e-6).kappa, 1e6, 'exactly singular: exactly 1/δ');
  // Smooth: diag(1, 2δ) gives κ = 1/(2δ + δ) = 1/(3δ).
  assert.ok(relative(conditioning(Float64Array.from([1, 0, 0, 2e-6]), 2, 1e-6).kappa, 1 / 3e-6) <= 1e-12);
});

test('damping: a zero kernel gives μ = L = 0 and κ = 1/δ, never NaN; n = 1 gives κ = 1/(1 + δ)', () => {
  const zero = conditioning(new Float64Array(16), 4, 1e-6);
  assert.equal(zero.mu, 0);
  assert.equal(zero.lf, 0);
  assert.equal(zero.kappa, 1e6);
  assert.equal(conditioning(Float64Array.from([3]), 1, 1e-6).kappa, 3 / (3 + 1e-6 * 3));
  assert.throws(() => conditioning(new Float64Array(4), 2, 0), /damping must be in \(0, 1\]/);
});

/** s_i = u_iᵀ(W2ᵀ·relu(W1ᵀx_i + b1) + b2) from a flat parameter vector [W1, b1, W2, b2] (float64). */
function scalarOutput(e: TwoLayerExpert, params: Float64Array, x: Float64Array, u: Float64Array, i: number): number {
  const { d, h, c } = e;
  const [w1, b1, w2, b2] = [0, d * h, d * h + h, d * h + h + h * c];
  let s = 0;
  for (let o = 0; o < c; o++) s += u[i * c + o] * params[b2 + o];
  for (let k = 0; k < h; k++) {
    let pre = params[b1 + k];
    for (let a = 0; a < d; a++) pre += x[i * d + a] * params[w1 + a * h + k];
    if (pre <= 0) continue;
    for (let o = 0; o < c; o++) s += u[i * c + o] * pre * params[w2 + k * c + o];
  }
  return s;
}

test('two-layer kernel equals J·Jᵀ of the central-difference Jacobian of s_i w.r.t. W1, b1, W2, b2 (1e-6)', () => {
  const rnd = mulberry32(5);
  const [n, d, h, c] = [6, 5, 7, 3];
  const e: TwoLayerExpert = { d, h, c, w1: randomArray(rnd, d * h), b1: randomArray(rnd, h), w2: randomArray(rnd, h * c), b2: randomArray(rnd, c) };
  const x = randomArray(rnd, n * d);
  const u = randomArray(rnd, n * c);
  const params = Float64Array.from([e.w1, e.b1, e.w2, e.b2].flatMap((block) => Array.from(block)));
  const step = 1e-4;
  // s_i is linear in each single parameter between ReLU kinks, so central differences are exact up to
  // round-off, provided no pre-activation crosses zero within ±step·max|x|: check that precondition.
  let active = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < h; k++) {
      let pre = e.b1[k];
      for (let a = 0; a < d; a++) pre += x[i * d + a] * e.w1[a * h + k];
      assert.ok(Math.abs(pre) > 10 * step * Math.max(1, ...x.map(Math.abs)), 'a pre-activation sits on a kink');
      if (pre > 0) active++;
    }
  }
  assert.ok(active > 0.2 * n * h && active < 0.8 * n * h, 'both ReLU branches are exercised');
  const p = params.length;
  const jacobian = new Float64Array(n * p);
  for (let t = 0; t < p; t++) {
    const plus = Float64Array.from(params);
    const minus = Float64Array.from(params);
    plus[t] += step;
    minus[t] -= step;
    for (let i = 0; i < n; i++) jacobian[i * p + t] = (scalarOutput(e, plus, x, u, i) - scalarOutput(e, minus, x, u, i)) / (2 * step);
  }
  const k = twoLayerTangentKernel(e, x, u, n);
  assert.ok(relativeFrobenius(k, gramOfJacobian(jacobian, n, p)) <= 1e-6);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.equal(k[i * n + j], k[j * n + i]);
});

test('two-layer kernel of a dead expert (every ReLU off) is U·Uᵀ: singular for n > c, so κ = 1/δ', () => {
  const rnd = mulberry32(31);
  const [n, d, h, c] = [5, 4, 6, 2];
  const e: TwoLayerExpert = { d, h, c, w1: new Float64Array(d * h), b1: new Float64Array(h).fill(-1), w2: randomArray(rnd, h * c), b2: randomArray(rnd, c) };
  const x = randomArray(rnd, n * d);
  const u = randomArray(rnd, n * c);
  const k = twoLayerTangentKernel(e, x, u, n);
  assert.ok(relativeFrobenius(k, matmul(u, transpose(u, n, c), n, c, n)) <= 1e-15);
  assert.equal(conditioning(k, n, 1e-6).kappa, 1e6);
});

test('output directions: u_i = (p_i − y_i)/‖p_i − y_i‖, unit rows summing to 0; zero row only when the other classes have probability 0', () => {
  const probs = [0.7, 0.2, 0.1, 1, 0, 0, 0.25, 0.25, 0.5];
  const oneHot = [0, 1, 0, 1, 0, 0, 0, 0, 1];
  const u = outputDirections(probs.map(Math.log), oneHot, 3, 3);
  for (const row of [0, 2]) {
    const g = [0, 1, 2].map((o) => probs[row * 3 + o] - oneHot[row * 3 + o]);
    const norm = Math.hypot(...g);
    g.forEach((v, o) => assert.ok(Math.abs(u[row * 3 + o] - v / norm) <= 1e-15));
    assert.ok(Math.abs(Math.hypot(u[row * 3], u[row * 3 + 1], u[row * 3 + 2]) - 1) <= 1e-15);
    // Probabilities and labels both sum to 1, so the pull moves mass between classes.
    assert.ok(Math.abs(u[row * 3] + u[row * 3 + 1] + u[row * 3 + 2]) <= 1e-15);
  }
  assert.deepEqual(Array.from(u.slice(3, 6)), [0, 0, 0]);
  assert.ok(u[1] < 0 && u[0] > 0, 'points from the label towards the wrong classes');
  // Soft labels (not one-hot) use p − y as it stands.
  const soft = outputDirections([0.5, 0.5].map(Math.log), [0.9, 0.1], 1, 2);
  assert.ok(Math.abs(soft[0] + Math.SQRT1_2) <= 1e-15 && Math.abs(soft[1] - Math.SQRT1_2) <= 1e-15);
});

test('output directions of confidently fitted examples: float32 log-probabilities at margins up to 80 give the float64 direction', () => {
  // Where float32 softmax rounds p_t to 1 and p − y to ~0 (margins past ~28), the pull still has a
  // direction: g_j = p_j (j ≠ t), g_t = −Σ p_j. Reference: the same formula on float64 logits.
  const c = 4;
  const cases = [
    { z: [2, 0.5, -1, 0], t: 0 },
    { z: [0, 30, 1, -2], t: 1 },
    { z: [-3, 0, 60, 1.5], t: 2 },
    { z: [0.3, -0.7, 0.1, 80], t: 3 },
  ];
  const n = cases.length;
  const logProbs = new Float64Array(n * c);
  const oneHot = new Float64Array(n * c);
  const expected = new Float64Array(n * c);
  cases.forEach(({ z, t }, i) => {
    const top = Math.max(...z);
    const lse = top + Math.log(z.reduce((s, v) => s + Math.exp(v - top), 0));
    z.forEach((v, o) => (logProbs[i * c + o] = Math.fround(v - lse))); // what a float32 logSoftmax returns
    oneHot[i * c + t] = 1;
    const g = z.map((v, o) => (o === t ? 0 : Math.exp(v - lse)));
    g[t] = -g.reduce((s, v) => s + v, 0);
    const norm = Math.hypot(...g);
    g.forEach((v, o) => (expected[i * c + o] = v / norm));
  });
  const u = outputDirections(logProbs, oneHot, n, c);
  for (let i = 0; i < n * c; i++) assert.ok(Math.abs(u[i] - expected[i]) <= 2e-5, `entry ${i}: ${u[i]} vs ${expected[i]}`);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(Math.hypot(...u.slice(i * c, (i + 1) * c)) - 1) <= 1e-12, `row ${i} is a unit vector`);
  // The old input, float32 probabilities, has no direction left at margin 60 or 80: p − y rounds to ≤ 1e-26.
  for (const i of [2, 3]) {
    const g = cases[i].z.map((_, o) => Math.fround(Math.exp(logProbs[i * c + o])) - oneHot[i * c + o]);
    assert.ok(Math.hypot(...g) < 1e-12, `case ${i}: float32 p − y is ${Math.hypot(...g)}`);
  }
});

test('scaled logit gradients: (softmax − y)/max‖g_i‖ exactly, and the same rows when float32 softmax would have rounded them to 0', () => {
  const c = 3;
  const z = [
    [2, 0.5, -1],
    [0, 1, 3],
    [-1, 0.2, 0.1],
  ];
  const labels = [0, 1, 1];
  const logSoftmax = (row: number[]) => {
    const top = Math.max(...row);
    const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    return row.map((v) => v - lse);
  };
  const oneHot = labels.flatMap((t) => [0, 1, 2].map((o) => (o === t ? 1 : 0)));
  const g = z.flatMap((row, i) => logSoftmax(row).map((lp, o) => Math.exp(lp) - oneHot[i * c + o]));
  const largest = Math.max(...[0, 1, 2].map((i) => Math.hypot(...g.slice(i * c, (i + 1) * c))));
  const got = scaledLogitGradients(z.flatMap(logSoftmax), oneHot, 3, c);
  g.forEach((v, k) => assert.ok(Math.abs(got[k] - v / largest) <= 1e-15, `entry ${k}: ${got[k]} vs ${v / largest}`));
  // Margins past float32's reach (40 and 50): the less confident example pulls e^10 times harder than
  // the other, and both keep their direction.
  const far = [
    [40, 0, 0],
    [0, 0, 50],
  ];
  const farOneHot = [1, 0, 0, 0, 0, 1];
  const farLog = far.flatMap((row) => logSoftmax(row).map(Math.fround));
  const pulls = scaledLogitGradients(farLog, farOneHot, 2, c);
  const rowNorm = (a: Float64Array, r: number) => Math.hypot(a[r * c], a[r * c + 1], a[r * c + 2]);
  assert.ok(Math.abs(rowNorm(pulls, 0) - 1) <= 1e-6, 'the strongest pull has norm 1');
  assert.ok(Math.abs(rowNorm(pulls, 1) / Math.exp(-10) - 1) <= 1e-4, `ratio ${rowNorm(pulls, 1)} vs e^-10`);
  const u = outputDirections(farLog, farOneHot, 2, c);
  for (let k = 0; k < 6; k++) assert.ok(Math.abs(pulls[k] / rowNorm(pulls, k < 3 ? 0 : 1) - u[k]) <= 1e-12, 'rows are outputDirections up to their scale');
  // Weaker than e^-20 of the strongest (margin 70 vs 40: e^-30) is raised to e^-20.
  const floored = scaledLogitGradients([[40, 0, 0], [0, 0, 70]].flatMap((row) => logSoftmax(row).map(Math.fround)), farOneHot, 2, c);
  assert.ok(Math.abs(rowNorm(floored, 1) / Math.exp(-20) - 1) <= 1e-4, `floored ratio ${rowNorm(floored, 1)}`);
  // Groups scale separately: with one row per group, every row has norm 1.
  const perRow = scaledLogitGradients(farLog, farOneHot, 2, c, 1);
  assert.ok(Math.abs(rowNorm(perRow, 0) - 1) <= 1e-6 && Math.abs(rowNorm(perRow, 1) - 1) <= 1e-6);
  assert.throws(() => scaledLogitGradients(farLog, farOneHot, 2, c, 3), /groupSize 3 does not divide 2 rows/);
});

test('estimators reject inputs whose length does not match the stated sizes', () => {
  const e: TwoLayerExpert = { d: 2, h: 3, c: 2, w1: new Float64Array(6), b1: new Float64Array(3), w2: new Float64Array(5), b2: new Float64Array(2) };
  assert.throws(() => twoLayerTangentKernel(e, new Float64Array(4), new Float64Array(4), 2), /w2 has 5 entries, expected 6/);
  assert.throws(() => gramOfJacobian(new Float64Array(5), 2, 3), /jacobian has 5 entries, expected 6/);
  assert.throws(() => outputDirections([0, -1], [1, 0, 0], 1, 2), /oneHot has 3 entries, expected 2/);
});
