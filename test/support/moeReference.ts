// A float64 reference of the soft mixture (moe-mlp): z(x) = Σ_e p_e(x)·(W2_eᵀ relu(W1_eᵀx + b1_e) + b2_e),
// p = softmax(W_gᵀx + b_g) with pruned experts masked, and its tangent kernels built two independent ways:
// from an explicit central-difference Jacobian of the whole model's scalarized output, and in closed
// form. Tests hold the trainer's float32 kernels, per-unit κ and regularizer gradient to these.
import { conditioning, outputDirections, twoLayerTangentKernel } from '../../src/trainer/pl';

export interface MoeParams {
  d: number;
  h: number;
  c: number;
  experts: number;
  gateW: Float64Array; // d×E
  gateB: Float64Array; // E
  w1: Float64Array[]; // d×h
  b1: Float64Array[]; // h
  w2: Float64Array[]; // h×c
  b2: Float64Array[]; // c
}

export const PARAM_GROUPS = ['gateW', 'gateB', 'w1', 'b1', 'w2', 'b2'] as const;

export function cloneParams(p: MoeParams): MoeParams {
  return { ...p, gateW: p.gateW.slice(), gateB: p.gateB.slice(), w1: p.w1.map((a) => a.slice()), b1: p.b1.map((a) => a.slice()), w2: p.w2.map((a) => a.slice()), b2: p.b2.map((a) => a.slice()) };
}

export interface MoeOutputs {
  /** n×E */
  p: Float64Array;
  /** n×E×c: each expert's own output */
  o: Float64Array;
  /** n×c: logits */
  z: Float64Array;
  /** n×E×h: pre-activations */
  pre: Float64Array;
}

export function moeForward64(m: MoeParams, x: ArrayLike<number>, n: number, pruned: ReadonlySet<number> = new Set()): MoeOutputs {
  const { d, h, c, experts: E } = m;
  const p = new Float64Array(n * E);
  const o = new Float64Array(n * E * c);
  const z = new Float64Array(n * c);
  const pre = new Float64Array(n * E * h);
  for (let i = 0; i < n; i++) {
    const a = new Float64Array(E);
    for (let e = 0; e < E; e++) {
      let s = m.gateB[e];
      for (let k = 0; k < d; k++) s += x[i * d + k] * m.gateW[k * E + e];
      a[e] = pruned.has(e) ? -Infinity : s;
    }
    const top = Math.max(...a);
    let total = 0;
    for (let e = 0; e < E; e++) total += Math.exp(a[e] - top);
    for (let e = 0; e < E; e++) p[i * E + e] = Math.exp(a[e] - top) / total;
    for (let e = 0; e < E; e++) {
      const hid = new Float64Array(h);
      for (let j = 0; j < h; j++) {
        let s = m.b1[e][j];
        for (let k = 0; k < d; k++) s += x[i * d + k] * m.w1[e][k * h + j];
        pre[(i * E + e) * h + j] = s;
        hid[j] = Math.max(0, s);
      }
      for (let q = 0; q < c; q++) {
        let s = m.b2[e][q];
        for (let j = 0; j < h; j++) s += hid[j] * m.w2[e][j * c + q];
        o[(i * E + e) * c + q] = s;
        z[i * c + q] += p[i * E + e] * s;
      }
    }
  }
  return { p, o, z, pre };
}

/** Output directions u (n×c) of the model at m, float64 (outputDirections of float64 log-probabilities). */
export function directions64(m: MoeParams, x: ArrayLike<number>, y: ArrayLike<number>, n: number, pruned: ReadonlySet<number> = new Set()): Float64Array {
  const { z } = moeForward64(m, x, n, pruned);
  const c = m.c;
  const logProbs = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const row = Array.from(z.subarray(i * c, (i + 1) * c));
    const top = Math.max(...row);
    const lse = top + Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    row.forEach((v, q) => (logProbs[i * c + q] = v - lse));
  }
  return outputDirections(logProbs, y, n, c);
}

/** A parameter group of expert e (or of the gate) as a flat array of the params, for perturbation. */
export function groupArray(m: MoeParams, group: (typeof PARAM_GROUPS)[number], e: number): Float64Array {
  return group === 'gateW' ? m.gateW : group === 'gateB' ? m.gateB : m[group][e];
}

/**
 * Explicit Jacobian rows ∂s_i/∂θ of the whole model's scalarized output s_i = u_iᵀz(x_i), u held fixed,
 * w.r.t. the parameters of `groups` (central differences, step `step`), n×p row-major.
 */
export function explicitJacobian(m: MoeParams, x: ArrayLike<number>, u: ArrayLike<number>, n: number, groups: { group: (typeof PARAM_GROUPS)[number]; e: number }[], pruned: ReadonlySet<number> = new Set(), step = 1e-6): { j: Float64Array; p: number } {
  const scalar = (mm: MoeParams) => {
    const { z } = moeForward64(mm, x, n, pruned);
    return Float64Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let q = 0; q < m.c; q++) s += u[i * m.c + q] * z[i * m.c + q];
      return s;
    });
  };
  const columns: Float64Array[] = [];
  const work = cloneParams(m);
  for (const { group, e } of groups) {
    const arr = groupArray(work, group, e);
    for (let k = 0; k < arr.length; k++) {
      const keep = arr[k];
      arr[k] = keep + step;
      const plus = scalar(work);
      arr[k] = keep - step;
      const minus = scalar(work);
      arr[k] = keep;
      columns.push(Float64Array.from(plus, (v, i) => (v - minus[i]) / (2 * step)));
    }
  }
  const p = columns.length;
  const j = new Float64Array(n * p);
  columns.forEach((col, k) => col.forEach((v, i) => (j[i * p + k] = v)));
  return { j, p };
}

/** The closed-form kernels (docs/method.md, contract 3–4) in float64: per expert (gated) and the gate's. */
export function closedFormKernels(m: MoeParams, x: ArrayLike<number>, u: ArrayLike<number>, n: number, pruned: ReadonlySet<number> = new Set()): { units: Float64Array[]; gate: Float64Array; p: Float64Array } {
  const { d, h, c, experts: E } = m;
  const { p, o } = moeForward64(m, x, n, pruned);
  const units = Array.from({ length: E }, (_, e) => {
    const alone = twoLayerTangentKernel({ d, h, c, w1: m.w1[e], b1: m.b1[e], w2: m.w2[e], b2: m.b2[e] }, x, u, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) alone[i * n + j] *= p[i * E + e] * p[j * E + e];
    return alone;
  });
  const r = new Float64Array(n * E);
  for (let i = 0; i < n; i++) {
    const mi = Float64Array.from({ length: E }, (_, e) => {
      let s = 0;
      for (let q = 0; q < c; q++) s += u[i * c + q] * o[(i * E + e) * c + q];
      return s;
    });
    let s = 0;
    for (let e = 0; e < E; e++) s += p[i * E + e] * mi[e];
    for (let e = 0; e < E; e++) r[i * E + e] = p[i * E + e] * (mi[e] - s);
  }
  const gate = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let xx = 1;
      for (let k = 0; k < d; k++) xx += x[i * d + k] * x[j * d + k];
      let rr = 0;
      for (let e = 0; e < E; e++) rr += r[i * E + e] * r[j * E + e];
      gate[i * n + j] = xx * rr;
    }
  }
  return { units, gate, p };
}

/** κ of the model's kernel Σ_{e∈trainable} K_e + K_gate at m, u recomputed from m (the reported κ̄), float64. */
export function modelKappa64(m: MoeParams, x: ArrayLike<number>, y: ArrayLike<number>, n: number, trainable: readonly number[], damping: number, pruned: ReadonlySet<number> = new Set()) {
  const u = directions64(m, x, y, n, pruned);
  const { units, gate } = closedFormKernels(m, x, u, n, pruned);
  const K = Float64Array.from(gate);
  for (const e of trainable) for (let k = 0; k < n * n; k++) K[k] += units[e][k];
  return { ...conditioning(K, n, damping), K };
}
