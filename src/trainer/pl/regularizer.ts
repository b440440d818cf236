// The differentiable side of the estimators (TensorFlow.js, float32): the same tangent kernel as the
// float64 reference, built from tf ops, and κ through Hellmann–Feynman, so α·κ̄ in the loss moves
// the expert's weights.
import * as tf from '@tensorflow/tfjs';
import { pullLogSizes, scaledLogitGradients } from './tangentKernel';

/**
 * twoLayerTangentKernel in tf ops: K = (H·Hᵀ)⊙(U·Uᵀ) + U·Uᵀ + (X·Xᵀ + 1)⊙(G·Gᵀ), G = relu′(pre) ⊙ (U·W2ᵀ).
 * Gradients flow to w1, b1, w2. b2 is not an argument: its block of the Jacobian is u_i, which gives
 * the constant term U·Uᵀ. The ReLU mask is a constant too (relu′ has zero derivative almost everywhere).
 */
export function tangentKernelTf(x: tf.Tensor2D, u: tf.Tensor2D, w1: tf.Tensor2D, b1: tf.Tensor1D, w2: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const pre = tf.add(tf.matMul(x, w1), b1) as tf.Tensor2D; // n×h
    const hidden = tf.relu(pre);
    const active = tf.step(pre); // relu′ as a 0/1 mask (step(0) = 0, as in the float64 reference)
    const back = tf.mul(active, tf.matMul(u, w2, false, true)) as tf.Tensor2D; // n×h, row i = D_i W2 u_i
    const uu = tf.matMul(u, u, false, true);
    const hh = tf.matMul(hidden, hidden, false, true);
    const xx1 = tf.add(tf.matMul(x, x, false, true), 1);
    const bb = tf.matMul(back, back, false, true);
    return tf.add(tf.add(tf.mul(hh, uu), uu), tf.mul(xx1, bb)) as tf.Tensor2D;
  });
}

/**
 * κ̃ = (v_maxᵀ K v_max) / (v_minᵀ K v_min + δ·v_maxᵀ K v_max) (smooth damping) with the eigenvectors held constant.
 * At exact eigenvectors of K this equals κ, and since dλ = vᵀ dK v for a simple eigenvalue
 * (Hellmann–Feynman), its gradient equals ∇κ as well. With stale vectors both Rayleigh quotients move
 * inwards (v_maxᵀKv_max ≤ λ_max, v_minᵀKv_min ≥ λ_min), so κ̃ underestimates κ.
 */
export function kappaSurrogateTf(k: tf.Tensor2D, vMin: Float64Array, vMax: Float64Array, damping: number): tf.Scalar {
  const n = k.shape[0];
  if (k.shape[1] !== n || vMin.length !== n || vMax.length !== n) {
    throw new RangeError(`kernel ${k.shape.join('×')} does not match eigenvectors of length ${vMin.length} and ${vMax.length}`);
  }
  return tf.tidy(() => {
    const rayleigh = (v: Float64Array) => {
      const column = tf.tensor2d(Float32Array.from(v), [n, 1]);
      return tf.sum(tf.mul(column, tf.matMul(k, column)));
    };
    const lMax = rayleigh(vMax);
    const lMin = rayleigh(vMin);
    return smoothKappaTf(lMax, lMin, damping) as tf.Scalar;
  });
}

/**
 * tangentKernelTf for E experts at once, as a few batched ops instead of a dozen per expert (the op
 * count, not the arithmetic, is what a step pays for with n = 16). Takes the probe rows' pre-activations
 * P_e = X·W1_e + b1_e (E×n×h, so the caller can cut them from the forward pass it already ran), the
 * output directions U (n×c, constant), the stacked second layers W2 (E×h×c) and X·Xᵀ + 1 (n×n,
 * constant for a fixed probe). Returns E×n×n, entry e equal to tangentKernelTf of expert e.
 */
export function tangentKernelsTf(pre: tf.Tensor3D, u: tf.Tensor2D, w2: tf.Tensor3D, gramPlusOne: tf.Tensor2D): tf.Tensor3D {
  const [experts, n] = pre.shape;
  if (u.shape[0] !== n || gramPlusOne.shape[0] !== n || w2.shape[0] !== experts || w2.shape[2] !== u.shape[1]) {
    throw new RangeError(`shapes do not match: pre ${pre.shape.join('×')}, u ${u.shape.join('×')}, w2 ${w2.shape.join('×')}, X·Xᵀ ${gramPlusOne.shape.join('×')}`);
  }
  return tf.tidy(() => {
    const hidden = tf.relu(pre);
    const active = tf.step(pre);
    const uBatched = tf.tile(tf.expandDims(u, 0), [experts, 1, 1]) as tf.Tensor3D; // E×n×c
    const back = tf.mul(active, tf.matMul(uBatched, w2, false, true)) as tf.Tensor3D; // E×n×h
    const uu = tf.matMul(u, u, false, true); // n×n, shared by every expert
    const hh = tf.matMul(hidden, hidden, false, true);
    const bb = tf.matMul(back, back, false, true);
    return tf.add(tf.add(tf.mul(hh, uu), uu), tf.mul(gramPlusOne, bb)) as tf.Tensor3D;
  });
}

/**
 * kappaSurrogateTf for E kernels at once: κ̃_e with the eigenvectors of each K_e held constant
 * (vMin, vMax: E×n each, row e for kernel e). Returns the E surrogates. A kernel that is exactly zero
 * (every probe example fitted) gives 0 instead of 0/0.
 */
export function kappaSurrogatesTf(k: tf.Tensor3D, vMin: Float64Array[], vMax: Float64Array[], damping: number): tf.Tensor1D {
  const [experts, n] = k.shape;
  if (vMin.length !== experts || vMax.length !== experts || vMin.some((v) => v.length !== n) || vMax.some((v) => v.length !== n)) {
    throw new RangeError(`${experts} kernels of size ${n} need ${experts} eigenvector pairs of length ${n}`);
  }
  return tf.tidy(() => {
    const columns = (vs: Float64Array[]) => {
      const flat = new Float32Array(experts * n);
      vs.forEach((v, e) => flat.set(v, e * n));
      return tf.tensor3d(flat, [experts, n, 1]);
    };
    const rayleigh = (v: tf.Tensor3D) => tf.reshape(tf.sum(tf.mul(v, tf.matMul(k, v)), [1, 2]), [experts]);
    const lMax = rayleigh(columns(vMax));
    const lMin = rayleigh(columns(vMin));
    return smoothKappaTf(lMax, lMin, damping) as tf.Tensor1D;
  });
}

/**
 * λ_max/(λ_min + δ·λ_max) of Rayleigh quotients (docs/method.md, "Damping"): differentiable in λ_min at
 * 0, so a singular but live kernel still gets a gradient. λ_min's float32 round-off below 0 is clipped;
 * a zero kernel gives 0 instead of 0/0.
 */
export function smoothKappaTf(lMax: tf.Tensor, lMin: tf.Tensor, damping: number): tf.Tensor {
  return tf.div(lMax, tf.maximum(tf.add(tf.relu(lMin), tf.mul(lMax, damping)), 1e-30));
}

/**
 * outputDirections (tangentKernel.ts) as a differentiable function of the logits: u_i = g_i/‖g_i‖,
 * g_i = softmax(z_i) − y_i, built from the log-probabilities scaled by a per-row constant e^(−top_i)
 * (top_i = max_{j≠label} log p_j, read back by the caller): u is invariant to that scale, so holding it
 * constant changes neither u nor its gradient, and no pull underflows. One-hot labels only. A row with
 * no pull left (top_i = −∞: every other class at probability 0) gets u_i = 0, as in outputDirections.
 * The regularizer's gradient then follows u's dependence on every weight (docs/method.md, contract 7).
 */
export function outputDirectionsTf(logProbs: tf.Tensor2D, oneHot: tf.Tensor2D, top: ArrayLike<number>): tf.Tensor2D {
  const n = logProbs.shape[0];
  if (top.length !== n) throw new RangeError(`${top.length} row scales for ${n} rows`);
  return tf.tidy(() => {
    const alive = Float32Array.from({ length: n }, (_, i) => (Number.isFinite(top[i]) ? 1 : 0));
    const shift = tf.tensor2d(Float32Array.from({ length: n }, (_, i) => (Number.isFinite(top[i]) ? top[i] : 0)), [n, 1]);
    const notLabel = tf.sub(1, oneHot);
    // p_j/e^top for j ≠ label (≤ 1), 0 at the label (clipped first: e^(log p_t − top) overflows at large margins)
    const q = tf.mul(tf.exp(tf.minimum(tf.sub(logProbs, shift), 0)), notLabel);
    const g = tf.sub(q, tf.mul(oneHot, tf.sum(q, 1, true))); // the label's entry: −Σ_{j≠t} q_j
    const norm = tf.sqrt(tf.maximum(tf.sum(tf.square(g), 1, true), 1e-30));
    return tf.mul(tf.div(g, norm), tf.tensor2d(alive, [n, 1])) as tf.Tensor2D;
  });
}

/**
 * The soft mixture's kernels as the model uses them (docs/method.md, contract 3–4), differentiable in
 * every input: for expert e, K_e = (p_e p_eᵀ) ⊙ K_e^alone, K_e^alone = tangentKernelsTf of u_iᵀo_e; the
 * gate's kernel K_gate = (X·Xᵀ + 1) ⊙ (R·Rᵀ), R_ie = p_e(x_i)·(u_iᵀo_e(x_i) − s_i), s_i = Σ_e p_e(x_i)u_iᵀo_e(x_i)
 * (∂s_i/∂ gate logit e). Inputs: pre-activations (E×n×h), u (n×c), W2 stacked (E×h×c), X·Xᵀ + 1 (n×n),
 * gate probabilities p (n×E), expert outputs o (n×E×c).
 */
export function moeKernelsTf(pre: tf.Tensor3D, u: tf.Tensor2D, w2: tf.Tensor3D, gramPlusOne: tf.Tensor2D, gate: tf.Tensor2D, outputs: tf.Tensor3D): { units: tf.Tensor3D; gate: tf.Tensor2D } {
  return tf.tidy(() => {
    const alone = tangentKernelsTf(pre, u, w2, gramPlusOne); // E×n×n
    const pt = tf.transpose(gate); // E×n
    const outer = tf.mul(tf.expandDims(pt, 2), tf.expandDims(pt, 1)); // E×n×n
    const units = tf.mul(alone, outer) as tf.Tensor3D;
    const m = tf.sum(tf.mul(outputs, tf.expandDims(u, 1)), 2); // n×E: u_iᵀ o_e(x_i)
    const s = tf.sum(tf.mul(gate, m), 1, true); // n×1
    const r = tf.mul(gate, tf.sub(m, s)) as tf.Tensor2D; // n×E
    const gateKernel = tf.mul(gramPlusOne, tf.matMul(r, r, false, true)) as tf.Tensor2D;
    return { units, gate: gateKernel };
  });
}

/**
 * `scaledLogitGradients` (tangentKernel.ts) as a differentiable function of the log-probabilities, for a
 * language model's probe pass: its value is the float64 function's, computed from `read` (the same
 * log-probabilities read back) and rounded once; its derivative follows every row's pull and its
 * group's scale. The piecewise choices are held at `read`: each row's strongest other class, its group's
 * strongest row, which rows sit at the e^−20 floor and which have no pull at all. Unclamped rows are
 * q_i·e^(top_i − T_g) (q_i the row's pull scaled by its strongest other class e^top_i, T_g the group's
 * largest log ‖g‖); a row at the floor is q_i/‖q_i‖·e^−20. Labels: one class index per row.
 */
export function scaledLogitGradientsTf(logProbs: tf.Tensor2D, labels: ArrayLike<number>, groupSize: number, read: ArrayLike<number>): tf.Tensor2D {
  const [n, c] = logProbs.shape;
  if (labels.length !== n || read.length !== n * c) throw new RangeError(`${labels.length} labels and ${read.length} log-probabilities for ${n}×${c}`);
  if (!(groupSize >= 1) || n % groupSize !== 0) throw new RangeError(`groupSize ${groupSize} does not divide ${n} rows`);
  const oneHot = new Float32Array(n * c);
  for (let i = 0; i < n; i++) oneHot[i * c + labels[i]] = 1;
  // The held choices, made from the read-back values with scaledLogitGradients' own row sizes.
  const logSize = pullLogSizes(read, oneHot, n, c);
  const strongest = new Float32Array(n * c); // one-hot of each row's strongest other class (none: no pull)
  for (let i = 0; i < n; i++) {
    if (logSize[i] === -Infinity) continue;
    let best = -1;
    for (let j = 0; j < c; j++) if (j !== labels[i] && (best < 0 || read[i * c + j] > read[i * c + best])) best = j;
    strongest[i * c + best] = 1;
  }
  const groups = n / groupSize;
  const groupTopRow = new Float32Array(n); // one-hot of each group's strongest row
  const unclamped = new Float32Array(n);
  const clamped = new Float32Array(n);
  for (let g = 0; g < groups; g++) {
    let best = -1;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) if (logSize[i] > -Infinity && (best < 0 || logSize[i] > logSize[best])) best = i;
    if (best < 0) continue;
    groupTopRow[best] = 1;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) {
      if (logSize[i] === -Infinity) continue;
      if (logSize[i] - logSize[best] >= -20) unclamped[i] = 1;
      else clamped[i] = 1;
    }
  }
  const exact = Float32Array.from(scaledLogitGradients(read, oneHot, n, c, groupSize));
  return tf.tidy(() => {
    const labelMask = tf.tensor2d(oneHot, [n, c]);
    const top = tf.sum(tf.mul(logProbs, tf.tensor2d(strongest, [n, c])), 1, true); // n×1
    // p_j/e^top for j ≠ label (≤ 1), clipped first as in outputDirectionsTf; the label's entry −Σ_{j≠t} q_j.
    const other = tf.mul(tf.exp(tf.minimum(tf.sub(logProbs, top), 0)), tf.sub(1, labelMask));
    const q = tf.sub(other, tf.mul(labelMask, tf.sum(other, 1, true)));
    const norm = tf.sqrt(tf.maximum(tf.sum(tf.square(q), 1, true), 1e-30));
    const rowLogSize = tf.add(top, tf.log(norm)); // n×1
    const groupTop = tf.reshape(tf.add(tf.zeros([groups, groupSize]), tf.sum(tf.mul(tf.reshape(rowLogSize, [groups, groupSize]), tf.tensor2d(groupTopRow, [groups, groupSize])), 1, true)), [n, 1]);
    const scale = tf.add(tf.mul(tf.tensor2d(unclamped, [n, 1]), tf.exp(tf.sub(top, groupTop))), tf.mul(tf.tensor2d(clamped, [n, 1]), tf.div(Math.exp(-20), norm)));
    return heldValue(exact, tf.mul(q, scale) as tf.Tensor2D);
  });
}

/**
 * A tensor with the value `value` and the derivative of `followed` (same shape): exact values, followed
 * gradients (switch-transformer's u and pulls, the routerless families' u). Nothing else is left behind.
 */
export function heldValue(value: Float32Array, followed: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    void args;
    return { value: tf.tensor2d(value, followed.shape), gradFunc: (dy: tf.Tensor) => dy };
  }) as (x: tf.Tensor2D) => tf.Tensor2D;
  return op(followed);
}

/**
 * Σ ⟨u, z⟩ with ∂/∂z = u: a custom op of z alone, so a backward pass seeded with it holds u (the
 * Jacobian's u, switch's pulls), while u is an input of that pass's ops (∂/∂z = dy·u), so a gradient of
 * the gradient, the regularizer's, reaches it.
 */
export function heldSeed(u: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({ value: tf.sum(tf.mul(args[0] as tf.Tensor2D, u)), gradFunc: (dy: tf.Tensor) => tf.mul(dy, u) })) as (z: tf.Tensor2D) => tf.Scalar;
  return op(z);
}
