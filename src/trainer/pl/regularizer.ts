// The differentiable side of the estimators (TensorFlow.js, float32): the same tangent kernel as the
// float64 reference, built from tf ops, and κ through Hellmann–Feynman, so α·κ̄ in the loss moves
// the expert's weights.
import * as tf from '@tensorflow/tfjs';

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
 * κ̃ = (v_maxᵀ K v_max) / max(v_minᵀ K v_min, δ·v_maxᵀ K v_max) with the eigenvectors held constant.
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
    return tf.div(lMax, tf.maximum(lMin, tf.mul(lMax, damping))) as tf.Scalar;
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
    return tf.div(lMax, tf.maximum(tf.maximum(lMin, tf.mul(lMax, damping)), 1e-30)) as tf.Tensor1D;
  });
}
