// The differentiable side of the estimators (TensorFlow.js, float32): the same tangent kernel built
// from tf ops, and κ through Hellmann–Feynman, so α·κ̄ in the loss moves the expert's weights.
import * as tf from '@tensorflow/tfjs';

/** twoLayerTangentKernel in tf ops; gradients flow to w1, b1, w2 (b2 enters K as a constant). */
export function tangentKernelTf(x: tf.Tensor2D, u: tf.Tensor2D, w1: tf.Tensor2D, b1: tf.Tensor1D, w2: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const pre = tf.add(tf.matMul(x, w1), b1) as tf.Tensor2D; // n×h
    const hid = tf.relu(pre);
    const active = tf.step(pre); // relu' as a 0/1 mask; its gradient is zero almost everywhere
    const back = tf.mul(active, tf.matMul(u, w2, false, true)) as tf.Tensor2D; // n×h: D_i W2 u_i
    const uu = tf.matMul(u, u, false, true);
    const hh = tf.matMul(hid, hid, false, true);
    const xx = tf.add(tf.matMul(x, x, false, true), 1);
    const bb = tf.matMul(back, back, false, true);
    return tf.add(tf.add(tf.mul(hh, uu), uu), tf.mul(xx, bb)) as tf.Tensor2D;
  });
}

/**
 * κ̃ = (v_maxᵀ K v_max) / max(v_minᵀ K v_min, δ·v_maxᵀ K v_max) with the eigenvectors held constant.
 * At exact eigenvectors of K this equals κ, and since dλ = vᵀ dK v for a simple eigenvalue
 * (Hellmann–Feynman), its gradient equals ∇κ as well.
 */
export function kappaSurrogateTf(k: tf.Tensor2D, vMin: Float64Array, vMax: Float64Array, damping: number): tf.Scalar {
  return tf.tidy(() => {
    const n = vMin.length;
    const rayleigh = (v: Float64Array) => {
      const t = tf.tensor2d(Float32Array.from(v), [n, 1]);
      return tf.sum(tf.mul(t, tf.matMul(k, t)));
    };
    const lmax = rayleigh(vMax);
    const lmin = rayleigh(vMin);
    return tf.div(lmax, tf.maximum(lmin, tf.mul(lmax, damping))) as tf.Scalar;
  });
}
