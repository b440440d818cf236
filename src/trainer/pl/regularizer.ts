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
