// Tangent kernels from per-sample gradients on the probe batch: one backward pass per probe example for
// all units at once, then K_u = J_u·J_uᵀ in float64 (n backward passes per kernel, n = probe size). The
// routerless families compute the same kernels from one tapped pass (RouterlessClassifier.probeJacobians);
// this is the direct definition the tests hold them (and switch-transformer's experts) to.
import type * as TF from '@tensorflow/tfjs';
import { gramOfJacobian } from './tangentKernel';

/**
 * K_u for every group of variables: row i of J_u is ∇_{θ_u} s_i, with s_i = scalarOf(i) the
 * scalarized output of probe example i. Returns one n×n float64 kernel per group.
 */
export function perSampleKernels(tf: typeof TF, n: number, scalarOf: (i: number) => TF.Scalar, groups: TF.Variable[][]): Float64Array[] {
  const sizes = groups.map((vars) => vars.reduce((a, v) => a + v.size, 0));
  const jacobians = sizes.map((p) => new Float64Array(n * p));
  const all = groups.flat();
  for (let i = 0; i < n; i++) {
    // One read-back per example: every variable's gradient flattened into one vector (a variable
    // the output does not reach, such as a pruned unit's, contributes zeros).
    const row = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => scalarOf(i), all);
      value.dispose();
      return tf.concat(all.map((v) => (grads[v.name] ? tf.reshape(grads[v.name], [-1]) : tf.zeros([v.size]))));
    });
    const flat = row.dataSync();
    row.dispose();
    let at = 0;
    groups.forEach((vars, g) => {
      jacobians[g].set(flat.subarray(at, at + sizes[g]), i * sizes[g]);
      at += sizes[g];
    });
  }
  return jacobians.map((j, g) => gramOfJacobian(j, n, sizes[g]));
}

export interface ClassifierProbe {
  /** Probe examples, one per row (rank 2: features, or token ids). */
  probeX: TF.Tensor;
  /** Output directions u_i (n × classes, row-major), held constant. */
  probeU: Float64Array;
  classes: number;
  units: number;
  logits(x: TF.Tensor, pruned: ReadonlySet<number>): TF.Tensor;
  unitVars(unit: number): TF.Variable[];
}

/**
 * Every unit's tangent kernel of a classifier on its probe batch: s_i = u_iᵀ logits(x_i), row i of
 * J_u = ∇_{θ_u} s_i (perSampleKernels: one backward pass per probe example for all live units). A
 * pruned unit's own kernel is taken with that unit restored (the rest as they are): it is measured
 * as it would act, the way a gated-off expert is.
 */
export function classifierUnitKernels(tf: typeof TF, p: ClassifierProbe, pruned: ReadonlySet<number>): Float64Array[] {
  const n = p.probeX.shape[0];
  const c = p.classes;
  const rows = Array.from({ length: n }, (_, i) => tf.slice(p.probeX, [i, 0], [1, -1]));
  const dirs = Array.from({ length: n }, (_, i) => tf.tensor2d(Float32Array.from(p.probeU.subarray(i * c, (i + 1) * c)), [1, c]));
  const scalar = (mask: ReadonlySet<number>) => (i: number) => tf.tidy(() => tf.sum(tf.mul(p.logits(rows[i], mask), dirs[i])) as TF.Scalar);
  try {
    const live = Array.from({ length: p.units }, (_, u) => u).filter((u) => !pruned.has(u));
    const kernels: Float64Array[] = new Array(p.units);
    if (live.length) perSampleKernels(tf, n, scalar(pruned), live.map((u) => p.unitVars(u))).forEach((K, k) => (kernels[live[k]] = K));
    for (const u of pruned) {
      if (u >= p.units) continue;
      const restored = new Set(pruned);
      restored.delete(u);
      kernels[u] = perSampleKernels(tf, n, scalar(restored), [p.unitVars(u)])[0];
    }
    return kernels;
  } finally {
    tf.dispose([...rows, ...dirs]);
  }
}
