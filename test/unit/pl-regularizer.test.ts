// The differentiable regularizer (tfjs, float32) against the float64 reference: the kernel, the value
// of the Hellmann–Feynman surrogate, and its gradient against central differences of the exact κ.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { conditioning, kappaSurrogatesTf, kappaSurrogateTf, outputDirections, symmetricEigen, tangentKernelsTf, tangentKernelTf, twoLayerTangentKernel, type TwoLayerExpert } from '../../src/trainer/pl';
import { gaussian, randomArray, relativeFrobenius } from '../support/linalg';
import { mulberry32 } from '../support/prng';

interface Problem {
  e: TwoLayerExpert & { w1: Float64Array; b1: Float64Array; w2: Float64Array; b2: Float64Array };
  n: number;
  x: Float64Array;
  u: Float64Array;
}

/** A small random expert and probe; b1 > 0 keeps most units active, so the kernel is well-conditioned. */
function problem(seed: number, n: number, d: number, h: number, c: number): Problem {
  const rnd = mulberry32(seed);
  const e = {
    d, h, c,
    w1: randomArray(rnd, d * h, 0.5),
    b1: randomArray(rnd, h, 0.5).map((v) => Math.abs(v) + 0.2),
    w2: randomArray(rnd, h * c, 0.5),
    b2: randomArray(rnd, c),
  };
  return { e, n, x: randomArray(rnd, n * d), u: randomArray(rnd, n * c) };
}

/** The kernel in float32 tf ops, with w1, b1, w2 substituted when given (for tf.grads). */
function kernelTf(p: Problem, w1?: tf.Tensor, b1?: tf.Tensor, w2?: tf.Tensor): tf.Tensor2D {
  const { e, n } = p;
  return tf.tidy(() => tangentKernelTf(
    tf.tensor2d(Float32Array.from(p.x), [n, e.d]),
    tf.tensor2d(Float32Array.from(p.u), [n, e.c]),
    (w1 ?? tf.tensor2d(Float32Array.from(e.w1), [e.d, e.h])) as tf.Tensor2D,
    (b1 ?? tf.tensor1d(Float32Array.from(e.b1))) as tf.Tensor1D,
    (w2 ?? tf.tensor2d(Float32Array.from(e.w2), [e.h, e.c])) as tf.Tensor2D,
  ));
}

before(async () => {
  await tf.setBackend('cpu');
});

test('tangentKernelTf (float32) matches the float64 kernel to 1e-4 relative', () => {
  for (const [seed, n, d, h, c] of [[9, 8, 12, 10, 4], [10, 16, 30, 24, 10]]) {
    const p = problem(seed, n, d, h, c);
    const k = kernelTf(p);
    assert.deepEqual(k.shape, [n, n]);
    const error = relativeFrobenius(k.dataSync(), twoLayerTangentKernel(p.e, p.x, p.u, n));
    k.dispose();
    assert.ok(error <= 1e-4, `seed ${seed}: ${error}`);
  }
});

test('κ̃ at fresh eigenvectors equals κ (float32 to 1e-4), also where the damping dominates (smooth damping)', () => {
  const p = problem(21, 5, 8, 12, 3);
  const reference = conditioning(twoLayerTangentKernel(p.e, p.x, p.u, p.n), p.n, 1e-9);
  const surrogate = tf.tidy(() => kappaSurrogateTf(kernelTf(p), reference.vMin, reference.vMax, 1e-9).dataSync()[0]);
  assert.ok(Math.abs(surrogate - reference.kappa) / reference.kappa <= 1e-4, `${surrogate} vs ${reference.kappa}`);
  // With δ above 1/κ the damping dominates: κ̃ = λ_max/(λ_min + δ·λ_max), below 1/δ and still the plain formula.
  const damping = 2 / reference.kappa;
  const damped = conditioning(twoLayerTangentKernel(p.e, p.x, p.u, p.n), p.n, damping);
  const saturated = tf.tidy(() => kappaSurrogateTf(kernelTf(p), reference.vMin, reference.vMax, damping).dataSync()[0]);
  assert.ok(Math.abs(saturated - damped.kappa) / damped.kappa <= 1e-4, `${saturated} vs ${damped.kappa}`);
  assert.ok(saturated < 1 / damping);
});

test('κ̃ with stale eigenvectors (from other weights) underestimates κ: Rayleigh quotients lie inside [λ_min, λ_max]', () => {
  const p = problem(33, 6, 8, 12, 3);
  const exact = conditioning(twoLayerTangentKernel(p.e, p.x, p.u, p.n), p.n, 1e-9);
  const rnd = mulberry32(34);
  for (let trial = 0; trial < 5; trial++) {
    const moved = { ...p.e, w1: p.e.w1.map((v) => v + 0.3 * gaussian(rnd)), w2: p.e.w2.map((v) => v + 0.3 * gaussian(rnd)) };
    const stale = conditioning(twoLayerTangentKernel(moved, p.x, p.u, p.n), p.n, 1e-9);
    const surrogate = tf.tidy(() => kappaSurrogateTf(kernelTf(p), stale.vMin, stale.vMax, 1e-9).dataSync()[0]);
    assert.ok(surrogate <= exact.kappa * (1 + 1e-5), `trial ${trial}: ${surrogate} > ${exact.kappa}`);
    assert.ok(surrogate < exact.kappa * 0.999, `trial ${trial}: the vectors were not stale enough to test anything`);
  }
});

test('∇κ̃ w.r.t. W1, b1, W2 (tf.grads, fresh eigenvectors) matches central differences of the exact float64 κ', () => {
  const p = problem(21, 5, 8, 12, 3);
  const { e, n } = p;
  const damping = 1e-9;
  const exactKappa = (w1: ArrayLike<number>, b1: ArrayLike<number>, w2: ArrayLike<number>) =>
    conditioning(twoLayerTangentKernel({ ...e, w1, b1, w2 }, p.x, p.u, n), n, damping).kappa;
  const k64 = twoLayerTangentKernel(e, p.x, p.u, n);
  const fresh = conditioning(k64, n, damping);
  // Hellmann–Feynman needs simple extreme eigenvalues, and κ must sit below the damping floor so the
  // plain ratio is what gets differentiated: check both preconditions of this problem.
  const { values } = symmetricEigen(k64, n);
  assert.ok((values[1] - values[0]) / values[0] > 0.1 && (values[n - 1] - values[n - 2]) / values[n - 1] > 0.1, `eigenvalues ${values}`);
  assert.ok(fresh.kappa < 1e3);

  const w1 = tf.tensor2d(Float32Array.from(e.w1), [e.d, e.h]);
  const b1 = tf.tensor1d(Float32Array.from(e.b1));
  const w2 = tf.tensor2d(Float32Array.from(e.w2), [e.h, e.c]);
  const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => kappaSurrogateTf(kernelTf(p, a, b, c), fresh.vMin, fresh.vMax, damping))([w1, b1, w2]);
  const analytic = grads.map((g) => g.dataSync());
  tf.dispose([w1, b1, w2, ...grads]);

  const base = [e.w1, e.b1, e.w2].map((a) => Float64Array.from(a));
  const kappaWith = (which: number, index: number, delta: number) => {
    const params = base.map((a) => Float64Array.from(a));
    params[which][index] += delta;
    return exactKappa(params[0], params[1], params[2]);
  };
  // κ is smooth here (simple eigenvalues, no ReLU kink within ±step), so central differences in
  // float64 are accurate to O(step²) ≈ 1e-12 relative; the error budget is float32's.
  const step = 1e-6;
  const rnd = mulberry32(22);
  const names = ['W1', 'b1', 'W2'];
  for (let which = 0; which < 3; which++) {
    const g = Float64Array.from(analytic[which]);
    const scale = Math.sqrt(g.reduce((s, v) => s + v * v, 0) / g.length); // RMS entry of this gradient
    assert.ok(scale > 0, `${names[which]} gets no gradient`);
    const indices = new Set<number>();
    while (indices.size < 6) indices.add(Math.floor(rnd() * g.length));
    for (const index of indices) {
      const fd = (kappaWith(which, index, step) - kappaWith(which, index, -step)) / (2 * step);
      // Errors are measured against max(|fd|, RMS entry) so that near-zero entries are not judged by
      // their own tiny size. float32 (ε ≈ 6e-8) in the kernel and the Rayleigh quotients gave at most
      // 3e-7 here (κ ≈ 174); 1e-4 leaves a 300× margin for other float32 summation orders, while a
      // wrong sign, a missing kernel term or a stale eigenvector is off by far more than 1e-4.
      assert.ok(Math.abs(g[index] - fd) <= 1e-4 * Math.max(Math.abs(fd), scale), `${names[which]}[${index}]: tf ${g[index]} vs fd ${fd}`);
    }
  }
});

test('where the damping dominates (μ ≤ δ·L) κ̃ still passes a gradient (smooth damping), the one of the float64 κ', () => {
  const p = problem(21, 5, 8, 12, 3);
  const fresh = conditioning(twoLayerTangentKernel(p.e, p.x, p.u, p.n), p.n, 1e-9);
  const damping = 2 / fresh.kappa;
  const w1 = tf.tensor2d(Float32Array.from(p.e.w1), [p.e.d, p.e.h]);
  const [g1] = tf.grads((a: tf.Tensor) => kappaSurrogateTf(kernelTf(p, a), fresh.vMin, fresh.vMax, damping))([w1]);
  const g = Float64Array.from(g1.dataSync());
  tf.dispose([w1, g1]);
  const scale = Math.sqrt(g.reduce((s, v) => s + v * v, 0) / g.length);
  assert.ok(scale > 0, 'a gradient, not the hard floor\'s zero');
  const rnd = mulberry32(23);
  for (let t = 0; t < 6; t++) {
    const index = Math.floor(rnd() * g.length);
    const at = (delta: number) => {
      const w = Float64Array.from(p.e.w1);
      w[index] += delta;
      return conditioning(twoLayerTangentKernel({ ...p.e, w1: w }, p.x, p.u, p.n), p.n, damping).kappa;
    };
    const fd = (at(1e-6) - at(-1e-6)) / 2e-6;
    assert.ok(Math.abs(g[index] - fd) <= 1e-4 * Math.max(Math.abs(fd), scale), `W1[${index}]: tf ${g[index]} vs fd ${fd}`);
  }
});

test('PL* along the real gradient: ‖∇_w CE‖² = aᵀ·K·a with u = outputDirections, a_i = ‖p_i − y_i‖/n, hence ≥ μ·‖a‖²', () => {
  // The scalarized kernel is not a heuristic: the cross-entropy gradient w.r.t. the expert's outputs
  // is (p_i − y_i)/n = a_i·u_i, so ∇_w L = Σ_i a_i ∇_w s_i = Jᵀa exactly and ‖∇_w L‖² = aᵀ(J·Jᵀ)a.
  const p = problem(50, 7, 8, 12, 4);
  const { e, n } = p;
  const rnd = mulberry32(51);
  const oneHot = new Float64Array(n * e.c);
  for (let i = 0; i < n; i++) oneHot[i * e.c + Math.floor(rnd() * e.c)] = 1;
  // Float64 forward pass for the probabilities.
  const probs = new Float64Array(n * e.c);
  for (let i = 0; i < n; i++) {
    const logits = Array.from(e.b2);
    for (let k = 0; k < e.h; k++) {
      let pre = e.b1[k];
      for (let a = 0; a < e.d; a++) pre += p.x[i * e.d + a] * e.w1[a * e.h + k];
      if (pre > 0) for (let o = 0; o < e.c; o++) logits[o] += pre * e.w2[k * e.c + o];
    }
    const top = Math.max(...logits);
    const exp = logits.map((z) => Math.exp(z - top));
    const total = exp.reduce((s, v) => s + v, 0);
    exp.forEach((v, o) => (probs[i * e.c + o] = v / total));
  }
  const u = outputDirections(probs.map(Math.log), oneHot, n, e.c);
  const a = Float64Array.from({ length: n }, (_, i) => Math.hypot(...Array.from({ length: e.c }, (_, o) => probs[i * e.c + o] - oneHot[i * e.c + o])) / n);
  const k = twoLayerTangentKernel(e, p.x, u, n);
  let aKa = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) aKa += a[i] * k[i * n + j] * a[j];

  const params = [
    tf.tensor2d(Float32Array.from(e.w1), [e.d, e.h]),
    tf.tensor1d(Float32Array.from(e.b1)),
    tf.tensor2d(Float32Array.from(e.w2), [e.h, e.c]),
    tf.tensor1d(Float32Array.from(e.b2)),
  ];
  const xs = tf.tensor2d(Float32Array.from(p.x), [n, e.d]);
  const ys = tf.tensor2d(Float32Array.from(oneHot), [n, e.c]);
  const grads = tf.grads((w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor, b2: tf.Tensor) =>
    tf.losses.softmaxCrossEntropy(ys, tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(xs, w1 as tf.Tensor2D), b1)), w2 as tf.Tensor2D), b2)) as tf.Scalar)(params);
  const gradientSquared = grads.reduce((s, g) => s + Array.from(g.dataSync()).reduce((t, v) => t + v * v, 0), 0);
  tf.dispose([...params, xs, ys, ...grads]);

  assert.ok(Math.abs(gradientSquared - aKa) / aKa <= 1e-4, `‖∇L‖² = ${gradientSquared} vs aᵀKa = ${aKa}`);
  const { mu, lf } = conditioning(k, n, 1e-9);
  const aSquared = a.reduce((s, v) => s + v * v, 0);
  assert.ok(mu * aSquared <= gradientSquared && gradientSquared <= lf * aSquared);
});

test('the regularizer leaves no tensors behind and rejects eigenvectors of the wrong size', () => {
  const p = problem(40, 6, 8, 10, 3);
  const fresh = conditioning(twoLayerTangentKernel(p.e, p.x, p.u, p.n), p.n, 1e-6);
  const k = kernelTf(p);
  const before = tf.memory().numTensors;
  const kappa = kappaSurrogateTf(k, fresh.vMin, fresh.vMax, 1e-6);
  assert.equal(tf.memory().numTensors, before + 1, 'only the result survives');
  assert.throws(() => kappaSurrogateTf(k, fresh.vMin.subarray(1), fresh.vMax, 1e-6), /does not match eigenvectors/);
  tf.dispose([k, kappa]);
});

test('batched: tangentKernelsTf and kappaSurrogatesTf equal the per-expert functions in value and in gradient w.r.t. W1, b1, W2', () => {
  // Three experts on one probe (x and u shared, as in the model). The batched path takes the probe's
  // pre-activations, as the model cuts them from its forward pass; gradients must reach W1 and b1 through them.
  const [n, d, h, c] = [7, 11, 9, 4];
  const ps = [31, 32, 33].map((seed) => problem(seed, n, d, h, c));
  const x = tf.tensor2d(Float32Array.from(ps[0].x), [n, d]);
  const u = tf.tensor2d(Float32Array.from(ps[0].u), [n, c]);
  const gram = tf.tidy(() => tf.add(tf.matMul(x, x, false, true), 1) as tf.Tensor2D);
  const vars = ps.flatMap((p) => [tf.tensor2d(Float32Array.from(p.e.w1), [d, h]), tf.tensor1d(Float32Array.from(p.e.b1)), tf.tensor2d(Float32Array.from(p.e.w2), [h, c])]);
  const weights = [0.5, 0.2, 0.3];
  const damping = 1e-6;
  const vectors = ps.map((p) => conditioning(twoLayerTangentKernel(p.e, ps[0].x, ps[0].u, n), n, damping));
  const perExpert = (...v: tf.Tensor[]) =>
    tf.addN([0, 1, 2].map((e) => tf.mul(kappaSurrogateTf(tangentKernelTf(x, u, v[3 * e] as tf.Tensor2D, v[3 * e + 1] as tf.Tensor1D, v[3 * e + 2] as tf.Tensor2D), vectors[e].vMin, vectors[e].vMax, damping), weights[e]))) as tf.Scalar;
  const batched = (...v: tf.Tensor[]) => {
    const pre = tf.stack([0, 1, 2].map((e) => tf.add(tf.matMul(x, v[3 * e] as tf.Tensor2D), v[3 * e + 1]))) as tf.Tensor3D;
    const kernels = tangentKernelsTf(pre, u, tf.stack([0, 1, 2].map((e) => v[3 * e + 2])) as tf.Tensor3D, gram);
    // Each slice is expert e's kernel, against the float64 closed form.
    const data = kernels.dataSync();
    ps.forEach((p, e) => {
      const error = relativeFrobenius(data.subarray(e * n * n, (e + 1) * n * n), twoLayerTangentKernel(p.e, ps[0].x, ps[0].u, n));
      assert.ok(error <= 1e-4, `expert ${e}: kernel ${error}`);
    });
    return tf.sum(tf.mul(kappaSurrogatesTf(kernels, vectors.map((v) => v.vMin), vectors.map((v) => v.vMax), damping), tf.tensor1d(weights))) as tf.Scalar;
  };
  const a = tf.valueAndGrads(perExpert)(vars);
  const b = tf.valueAndGrads(batched)(vars);
  const [va, vb] = [a.value.dataSync()[0], b.value.dataSync()[0]];
  assert.ok(Math.abs(va - vb) <= 1e-5 * Math.abs(va), `value ${va} vs ${vb}`);
  // Each expert's weighted κ is its own: the value is the weighted sum of the float64 κs.
  const want = vectors.reduce((s, v, e) => s + weights[e] * v.kappa, 0);
  assert.ok(Math.abs(vb - want) <= 1e-4 * want, `value ${vb} vs float64 ${want}`);
  a.grads.forEach((g, i) => {
    const error = relativeFrobenius(b.grads[i].dataSync(), g.dataSync());
    assert.ok(error <= 1e-5, `gradient ${i} (expert ${Math.floor(i / 3)}, ${['W1', 'b1', 'W2'][i % 3]}): ${error}`);
    assert.ok(g.dataSync().some((v) => v !== 0), 'a gradient that is not identically zero');
  });
  tf.dispose([x, u, gram, ...vars, a.value, b.value, ...a.grads, ...b.grads]);
});

test('batched: no tensors left behind, mismatched shapes and eigenvector counts rejected, an all-zero kernel gives κ̃ = 0 (not NaN)', () => {
  const before = tf.memory().numTensors;
  const pre = tf.randomNormal([2, 5, 6], 0, 1, 'float32', 1) as tf.Tensor3D;
  const u = tf.randomNormal([5, 3], 0, 1, 'float32', 2) as tf.Tensor2D;
  const w2 = tf.randomNormal([2, 6, 3], 0, 1, 'float32', 3) as tf.Tensor3D;
  const gram = tf.ones([5, 5]) as tf.Tensor2D;
  const k = tangentKernelsTf(pre, u, w2, gram);
  assert.deepEqual(k.shape, [2, 5, 5]);
  assert.equal(tf.memory().numTensors, before + 5, 'only the result survives');
  const wrong = tf.zeros([3, 6, 3]) as tf.Tensor3D;
  assert.throws(() => tangentKernelsTf(pre, u, wrong, gram), /shapes do not match/);
  const v = [new Float64Array(5).fill(1 / Math.sqrt(5)), new Float64Array(5).fill(1 / Math.sqrt(5))];
  assert.throws(() => kappaSurrogatesTf(k, [v[0]], v, 1e-3), /eigenvector pairs/);
  const zero = tf.zeros([2, 5, 5]) as tf.Tensor3D;
  const kz = kappaSurrogatesTf(zero, v, v, 1e-3);
  assert.deepEqual(Array.from(kz.dataSync()), [0, 0]);
  tf.dispose([pre, u, w2, gram, k, zero, kz, wrong]);
  assert.equal(tf.memory().numTensors, before);
});
