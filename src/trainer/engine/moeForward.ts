// The mixture-of-experts forward pass of the `moe-mlp` family, kept apart from the model so the
// engine work (batched experts, fused kernels) can change how it is computed without touching
// what the model means. Must stay differentiable w.r.t. every variable passed in (tf.variableGrads).
//
// Written for few kernels and no wasted products per step:
//  - layers that read x (the gate, each expert's first layer) are matMul + add, not tf.fused.matMul:
//    the fused op's gradient computes the input's gradient eagerly, and dL/dx (B×h×d per expert, a
//    third of the step's arithmetic) is never needed; matMul's gradient is lazy per input;
//  - each expert's second layer, whose input gradient is needed, is one fused matMul+bias;
//  - the gate weighting is one broadcast multiply and one sum over the stacked expert outputs instead
//    of a slice, multiply and add per expert.
import type * as TF from '@tensorflow/tfjs';

export interface MoeExpertWeights {
  w1: TF.Tensor; // d×h
  b1: TF.Tensor; // h
  w2: TF.Tensor; // h×c
  b2: TF.Tensor; // c
}

export interface MoeWeights {
  gateW: TF.Tensor; // d×E
  gateB: TF.Tensor; // E
  experts: MoeExpertWeights[];
}

/** Mixture logits Σ_e softmax(gate(x))_e · o_e(x); pruned experts get no gate mass and are not computed. */
export function moeLogits(tf: typeof TF, x: TF.Tensor2D, m: MoeWeights, classes: number, pruned: ReadonlySet<number>, softMask?: TF.Tensor1D): TF.Tensor2D {
  return tf.tidy(() => moeForward(tf, x, m, classes, pruned, softMask).logits); // the pre-activations are disposed
}

export interface MoeForward {
  logits: TF.Tensor2D;
  /** Each expert's first-layer pre-activation x·W1 + b1 (B×h), null for a pruned expert (not computed). */
  preActivations: (TF.Tensor2D | null)[];
  /** The gate's probabilities p_e(x) (B×E; a pruned expert's column is 0). */
  gate: TF.Tensor2D;
  /** Every expert's own output o_e(x) (B×E×c; zeros for a pruned expert). */
  outputs: TF.Tensor3D;
}

/**
 * moeLogits, also handing back every expert's pre-activations, so a caller that appends rows to x
 * (the κ regularizer appends the probe batch) can reuse them instead of a second first-layer product.
 */
export function moeForward(tf: typeof TF, x: TF.Tensor2D, m: MoeWeights, classes: number, pruned: ReadonlySet<number>, softMask?: TF.Tensor1D): MoeForward {
  // tidy keeps every tensor of the returned object (its walk skips the nulls; its type does not allow them).
  return tf.tidy((): TF.TensorContainer => {
    if (m.experts.every((_, i) => pruned.has(i))) {
      const [b, experts] = [x.shape[0], m.experts.length];
      return { logits: tf.zeros([b, classes]), preActivations: m.experts.map(() => null) as unknown as TF.Tensor[], gate: tf.zeros([b, experts]), outputs: tf.zeros([b, experts, classes]) };
    }
    let gateLogits: TF.Tensor = tf.add(tf.matMul(x, m.gateW as TF.Tensor2D), m.gateB);
    if (pruned.size) {
      const mask = tf.tensor1d(m.experts.map((_, i) => (pruned.has(i) ? -1e9 : 0)));
      gateLogits = tf.add(gateLogits, mask);
    }
    let gate = tf.softmax(gateLogits); // B×E
    // The pruning gate's soft mask scales each expert's routing weight, renormalized: p_e ∝ m_e·e^{z_e},
    // so m_e = 0 is exactly a pruned expert and the mass it loses goes to the others.
    if (softMask) {
      const weighted = tf.mul(gate, softMask);
      gate = tf.div(weighted, tf.add(tf.sum(weighted, 1, true), 1e-12));
    }
    // A pruned expert is not computed: its slot holds zeros, which its zero gate mass multiplies (no
    // gather: its gradient needs UnsortedSegmentSum, which the wasm backend lacks).
    const preActivations = m.experts.map((e, i) => (pruned.has(i) ? null : (tf.add(tf.matMul(x, e.w1 as TF.Tensor2D), e.b1) as TF.Tensor2D)));
    const outputs = m.experts.map((e, i) => {
      const pre = preActivations[i];
      if (!pre) return tf.zeros([x.shape[0], classes]);
      return tf.fused.matMul({ a: tf.relu(pre), b: e.w2 as TF.Tensor2D, bias: e.b2 }); // B×c
    });
    const stacked = tf.stack(outputs, 1); // B×E×c
    return { logits: tf.sum(tf.mul(stacked, tf.expandDims(gate, 2)), 1), preActivations: preActivations as TF.Tensor[], gate, outputs: stacked };
  }) as unknown as MoeForward;
}
