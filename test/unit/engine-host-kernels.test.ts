// The native addon's element-wise host kernels (layer norm's backward pass and its adjoint, GELU′/GELU″
// and their adjoint, [CLS]'s attention backward and its gradient) against the JavaScript loops they
// compile, which stay the fallback where the addon is absent: the same values (the same float64
// operations in the same order; GELU through exp, whose last bit may differ between glibc and V8), on
// random rows and on degenerate ones (a constant row, a zero gain, a zero upstream, one column, no
// rows), float32 and float64 inputs mixed as the hand-written backward mixes them; and through the ops
// that call them, bit for bit with the addon on and off. Too-short arrays are refused before any write.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { attentionBackward, clsAttentionBackwardFromOutput, ffnBlockBackward } from '../../src/trainer/models/bertEncoder';
import { loadNativeBlas, resetNativeBlasForTests, type NativeBlas } from '../../src/trainer/engine/native';
import { compiledHostSteps, HostScratch, hostElementwise, hostGeluDerivativeAdjoint, hostGeluDerivatives, hostLayerNormBackward, hostLayerNormBackwardAdjoint, runsOnHost } from '../../src/trainer/models/twiceDifferentiable';
import { mulberry32 } from '../support/prng';

/** Runs f with the addon switched off (the JavaScript loops) or as loaded, and restores the addon. */
function withAddon<R>(on: boolean, f: () => R): R {
  const saved = process.env.PLTRAIN_NATIVE;
  if (!on) process.env.PLTRAIN_NATIVE = 'off';
  resetNativeBlasForTests();
  try {
    return f();
  } finally {
    if (saved === undefined) delete process.env.PLTRAIN_NATIVE;
    else process.env.PLTRAIN_NATIVE = saved;
    resetNativeBlasForTests();
  }
}

/**
 * The loaded addon, or undefined where it is not built here (engine-native.test.ts requires it where
 * OpenBLAS and a compiler are installed). An addon that loads must be this tree's: one without these
 * kernels is a stale build, a failure here, not a skip.
 */
function compiled(): NativeBlas | undefined {
  const blas = loadNativeBlas().blas;
  if (!blas) return undefined;
  assert.ok(compiledHostSteps(), `the loaded addon (${loadNativeBlas().note}) lacks the compiled host steps: a stale build, run npm run build:native`);
  return blas;
}

const rows = (rand: () => number, n: number, spread = 2) => Float32Array.from({ length: n }, () => (rand() - 0.5) * spread);
const rows64 = (rand: () => number, n: number, spread = 2) => Float64Array.from({ length: n }, () => (rand() - 0.5) * spread);
const rowsOf = (type: typeof Float32Array | typeof Float64Array, rand: () => number, n: number, spread = 2) => (type === Float64Array ? rows64(rand, n, spread) : rows(rand, n, spread));

/** Largest |a − b| relative to max(1, |b|) over all entries (lengths must match). */
function relGap(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let g = 0;
  for (let i = 0; i < a.length; i++) g = Math.max(g, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return g;
}

/** Every layer norm case: rows of D, from an offset, with the degenerate rows in. */
function layerNormCases(rand: () => number) {
  const cases: { name: string; N: number; D: number; from: number; xs: Float32Array; gs: Float32Array; dys: Float32Array | Float64Array; ws: Float32Array | Float64Array }[] = [];
  for (const [N, D, from, dyType] of [[240, 32, 0, Float32Array], [16, 32, 64, Float64Array], [7, 1, 3, Float32Array], [0, 8, 0, Float64Array], [5, 3, 0, Float64Array]] as const) {
    const xs = rows(rand, from + N * D, 6);
    // A constant row (variance 0: r = 1/√ε), a row of huge values, a zero upstream row.
    if (N > 2 && D > 1) {
      xs.fill(1.25, from, from + D);
      for (let j = 0; j < D; j++) xs[from + D + j] *= 1e4;
    }
    const gs = rows(rand, D, 3);
    if (D > 2) gs[1] = 0;
    const dys = rowsOf(dyType, rand, N * D);
    if (N > 2) dys.fill(0, 2 * D, 3 * D);
    const ws = rowsOf(dyType === Float32Array ? Float64Array : Float32Array, rand, N * D);
    cases.push({ name: `N ${N}, D ${D}, from ${from}, dy ${dyType.name}`, N, D, from, xs, gs, dys, ws });
  }
  return cases;
}

test('layer norm\'s backward pass and its adjoint: the compiled kernels give the JavaScript loops\' values bit for bit, degenerate rows included', (t) => {
  if (!compiled()) return t.diagnostic(`addon not loaded here (${loadNativeBlas().note}): the JavaScript loops alone run`);
  for (const c of layerNormCases(mulberry32(7))) {
    const run = () => {
      const fw = hostLayerNormBackward(c.xs, c.from, c.gs, c.dys, c.N, c.D, new HostScratch());
      const dx = new Float32Array(c.from + c.N * c.D).fill(-7);
      const dg = new Float64Array(c.D).fill(0.5);
      const ddy = new Float64Array(c.N * c.D);
      hostLayerNormBackwardAdjoint(fw, c.gs, c.dys, c.ws, dx, c.from, dg, ddy);
      return { xhat: [...fw.xhat], F: [...fw.F], r: [...fw.r], mxaR: [...fw.mxaR], dx: [...dx], dg: [...dg], ddy: [...ddy] };
    };
    const js = withAddon(false, run);
    const native = run();
    assert.deepEqual(native, js, c.name);
    // Sanity of the case itself: finite everywhere, and dx untouched before `from`.
    assert.ok(Object.values(js).every((a) => a.every(Number.isFinite)), `${c.name}: finite`);
    assert.ok(js.dx.slice(0, c.from).every((v) => v === -7), `${c.name}: nothing written before dxFrom`);
  }
});

test('GELU′, GELU″ and their adjoint: the compiled kernels equal the JavaScript loops (to exp\'s last bit), with and without an upstream', (t) => {
  if (!compiled()) return t.diagnostic(`addon not loaded here (${loadNativeBlas().note}): the JavaScript loops alone run`);
  const rand = mulberry32(11);
  for (const [n, from] of [[15360, 0], [16, 40], [1, 0], [0, 0]] as const) {
    const xs = rows(rand, from + n, 12);
    if (n > 3) [xs[from], xs[from + 1], xs[from + 2]] = [0, -40, 40];
    const ws = rows(rand, n, 2);
    const dys = rows64(rand, n);
    for (const withUpstream of [true, false]) {
      const run = () => {
        const { prime, second } = hostGeluDerivatives(xs, from, n, new HostScratch());
        const dx = new Float32Array(from + n);
        const ddy = new Float32Array(n);
        hostGeluDerivativeAdjoint(ws, withUpstream ? dys : undefined, prime, second, dx, from, withUpstream ? ddy : undefined);
        return { prime: [...prime], second: [...second], dx: [...dx], ddy: [...ddy] };
      };
      const js = withAddon(false, run);
      const native = run();
      for (const k of ['prime', 'second', 'dx', 'ddy'] as const) assert.ok(relGap(native[k], js[k]) <= 4e-16 * 8, `n ${n}, ${k}: ${relGap(native[k], js[k])}`);
      assert.ok(js.prime.every(Number.isFinite) && js.second.every(Number.isFinite));
    }
  }
});

test('the compiled kernels refuse arrays shorter than their shapes, and arrays of the wrong type, before writing', (t) => {
  const blas = compiled();
  if (!blas) return t.diagnostic('addon not loaded here');
  const f64 = (n: number) => new Float64Array(n);
  const f32 = (n: number) => new Float32Array(n);
  assert.throws(() => blas.layerNormBackward!(f32(9), 2, f32(4), f32(8), 2, 4, f64(8), f64(8), f64(2), f64(2)), /shorter/);
  assert.throws(() => blas.layerNormBackward!(f32(8), 0, f32(4), f32(8), 2, 4, f64(8), f64(7), f64(2), f64(2)), /shorter/);
  assert.throws(() => blas.layerNormBackward!([1, 2] as unknown as Float32Array, 0, f32(4), f32(8), 2, 4, f64(8), f64(8), f64(2), f64(2)), /Float32Array or a Float64Array/);
  assert.throws(() => blas.layerNormBackwardAdjoint!(f64(8), f64(8), f64(2), f64(2), 2, 4, f32(4), f32(8), f32(8), f32(8), 1, f64(4), f32(8)), /shorter/);
  assert.throws(() => blas.geluDerivatives!(f32(4), 1, 4, f64(4), f64(4)), /shorter/);
  assert.throws(() => blas.geluDerivativeAdjoint!(f32(3), null, f64(4), f64(4), f32(4), 0, null), /shorter/);
  const dims: [number, number, number, number] = [2, 3, 2, 2];
  assert.throws(() => blas.clsAttentionValue!(dims, 1, f32(8), f32(12), f32(8), f32(24), f32(24), f64(12), f64(12), f64(4), f32(35)), /shorter/);
  assert.throws(() => blas.clsAttentionGradient!(dims, 1, 1, f32(36), f32(8), f32(12), f32(8), f32(24), f32(24), f64(12), f64(12), f64(4), f32(12), f32(8), f32(24), f32(24), f64(8)), /shorter/);
  assert.throws(() => blas.clsAttentionValue!([2, 0, 2, 2], 1, f32(8), f32(12), f32(8), f32(24), f32(24), f64(12), f64(12), f64(4), f32(36)), /dims/);
  // Counts whose products would overflow the bounds checks are refused as such, not wrapped.
  const huge = 2 ** 52;
  assert.throws(() => blas.layerNormBackward!(f32(8), 0, f32(4), f32(8), huge, huge, f64(8), f64(8), f64(2), f64(2)), /out of range/);
  assert.throws(() => blas.layerNormBackwardAdjoint!(f64(8), f64(8), f64(2), f64(2), 2, 4, f32(4), f32(8), f32(8), f32(8), huge, f64(4), f32(8)), /out of range/);
  assert.throws(() => blas.geluDerivatives!(f32(4), huge, 4, f64(4), f64(4)), /out of range/);
  assert.throws(() => blas.geluDerivativeAdjoint!(f32(4), null, f64(4), f64(4), f32(4), huge, null), /out of range/);
  assert.throws(() => blas.clsAttentionValue!([2 ** 20, 2 ** 20, 2 ** 20, 2 ** 20], 1, f32(8), f32(12), f32(8), f32(24), f32(24), f64(12), f64(12), f64(4), f32(36)), /too large/);
  assert.throws(() => blas.clsAttentionGradient!(dims, 1, huge, f32(36), f32(8), f32(12), f32(8), f32(24), f32(24), f64(12), f64(12), f64(4), f32(12), f32(8), f32(24), f32(24), f64(8)), /out of range/);
});

test('the ops that call them give bit for bit the same values and gradients with the addon on and off: [CLS]\'s attention backward (with and without W_o, from a joint pass\'s examples) and a block\'s FFN backward', async (t) => {
  if (!compiled()) return t.diagnostic(`addon not loaded here (${loadNativeBlas().note})`);
  await tf.setBackend('cpu');
  const rand = mulberry32(23);
  const [b, T, H, dh, D, F, before] = [5, 6, 2, 4, 8, 12, 3];
  const n = before + b;
  const scale = 1 / Math.sqrt(dh);
  const t4 = (shape: [number, number, number, number]) => tf.tensor(rows(rand, shape.reduce((p, q) => p * q, 1)), shape) as tf.Tensor4D;
  const logits = t4([n, H, 1, T]);
  const A = tf.softmax(logits) as tf.Tensor4D;
  const [q, k, v] = [t4([n, H, 1, dh]), t4([n, H, T, dh]), t4([n, H, T, dh])];
  const dOut = tf.tensor2d(rows(rand, b * D), [b, D]);
  const dMerged = tf.tensor2d(rows(rand, b * H * dh), [b, H * dh]);
  const wo = tf.tensor2d(rows(rand, H * dh * D), [H * dh, D]);
  const upstream = tf.tensor2d(rows(rand, b * T * 3 * H * dh), [b * T, 3 * H * dh]);
  const withGrads = (f: (...x: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], w: tf.Tensor) => {
    const { value, grads } = tf.valueAndGrads((...x: tf.Tensor[]) => tf.sum(tf.mul(f(...x), w)))(inputs);
    const out = [value, ...grads].map((g) => [...g.dataSync()]);
    tf.dispose([value, ...grads]);
    const plain = f(...inputs);
    out.push([...plain.dataSync()]);
    plain.dispose();
    return out;
  };
  const cases: [string, () => number[][]][] = [
    ['clsAttentionBackwardFromOutput', () => withGrads((d, w, a, qq, kk, vv) => clsAttentionBackwardFromOutput(tf, { b, T, H, dh, scale }, d as tf.Tensor2D, w as tf.Tensor2D, a as tf.Tensor4D, qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, before), [dOut, wo, A, q, k, v], upstream)],
    ['attentionBackward, [CLS]\'s query on the host', () => withGrads((d, a, qq, kk, vv) => attentionBackward(tf, { b, T, H, dh, scale }, d as tf.Tensor2D, a as tf.Tensor4D, qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, undefined, before), [dMerged, A, q, k, v], upstream)],
  ];
  // A block's FFN half: rows `before` … of joint [n·T, ·] tensors, δ given at the block output.
  const N = b * T;
  const joint = (w: number) => tf.tensor2d(rows(rand, n * T * w, 3), [n * T, w]);
  const [r2, pre, r1] = [joint(D), joint(F), joint(D)];
  const vec = (m: number) => tf.tensor1d(rows(rand, m, 2).map((x) => 1 + x / 4));
  const [ln2g, ln1g] = [vec(D), vec(D)];
  const [ff2w, ff1w] = [tf.tensor2d(rows(rand, F * D), [F, D]), tf.tensor2d(rows(rand, D * F), [D, F])];
  const dh2 = tf.tensor2d(rows(rand, N * D), [N, D]);
  const wFfn = tf.tensor2d(rows(rand, N * D), [N, D]);
  cases.push([
    'ffnBlockBackward',
    () =>
      withGrads(
        (d, a, g2, w2, p, w1, c, g1) => ffnBlockBackward(tf, { upstream: { dh: d as tf.Tensor2D }, r2: a as tf.Tensor2D, ln2g: g2 as tf.Tensor1D, ff2w: w2 as tf.Tensor2D, pre: p as tf.Tensor2D, ff1w: w1 as tf.Tensor2D, r1: c as tf.Tensor2D, ln1g: g1 as tf.Tensor1D }, before * T),
        [dh2, r2, ln2g, ff2w, pre, ff1w, r1, ln1g],
        wFfn,
      ),
  ]);
  for (const [name, run] of cases) {
    const js = withAddon(false, run);
    const native = run();
    // With the addon the products (the FFN's, dOut·W_oᵀ) are its sgemm, off they are hostProduct's
    // loops: those ops are compared to float32 rounding, the attention alone (no product) bit for bit.
    if (name !== 'attentionBackward, [CLS]\'s query on the host') native.forEach((g, i) => assert.ok(relGap(g, js[i]) <= 2e-5, `${name} output ${i}: ${relGap(g, js[i])}`));
    else assert.deepEqual(native, js, name);
  }
});

test('the host path\'s size limit: the JavaScript loops\' (maxElements) without the compiled steps, compiledMaxElements with them; maxElements 0 turns it off; never on a backend whose tensors are elsewhere', async (t) => {
  await tf.setBackend('cpu');
  const saved = { ...hostElementwise };
  try {
    const above = hostElementwise.maxElements + 1;
    withAddon(false, () => {
      assert.equal(compiledHostSteps(), false);
      assert.equal(runsOnHost(tf, hostElementwise.maxElements), true);
      assert.equal(runsOnHost(tf, above), false, 'JavaScript loops: up to maxElements');
    });
    if (!compiled()) return t.diagnostic(`addon not loaded here (${loadNativeBlas().note})`);
    assert.equal(compiledHostSteps(), true);
    assert.equal(runsOnHost(tf, above), true, 'compiled: above the loops\' limit');
    assert.equal(runsOnHost(tf, hostElementwise.compiledMaxElements), true);
    assert.equal(runsOnHost(tf, hostElementwise.compiledMaxElements + 1), false, 'compiled: up to compiledMaxElements');
    hostElementwise.maxElements = 0;
    assert.equal(runsOnHost(tf, 1), false, 'maxElements 0: off');
    hostElementwise.maxElements = saved.maxElements;
    hostElementwise.backends.delete('cpu');
    assert.equal(runsOnHost(tf, 1), false, 'a backend not listed');
  } finally {
    Object.assign(hostElementwise, { maxElements: saved.maxElements, compiledMaxElements: saved.compiledMaxElements });
    hostElementwise.backends.add('cpu');
  }
});
