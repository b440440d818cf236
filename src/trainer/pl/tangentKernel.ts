// Float64 reference estimators of an expert's conditioning from its tangent kernel (PL*: μ ≥ λ_min(K)).
import { symmetricEigen } from './eigen';

/** A two-layer expert o(x) = W2ᵀ·relu(W1ᵀx + b1) + b2; W1 is d×h, W2 is h×c, all row-major. */
export interface TwoLayerExpert {
  d: number;
  h: number;
  c: number;
  w1: ArrayLike<number>;
  b1: ArrayLike<number>;
  w2: ArrayLike<number>;
  b2: ArrayLike<number>;
}

/**
 * Tangent kernel of s_i = u_iᵀ o(x_i) w.r.t. all of the expert's parameters, in closed form from
 * forward quantities (no per-sample backward passes):
 * K(i,j) = ⟨h_i,h_j⟩⟨u_i,u_j⟩ + ⟨u_i,u_j⟩ + (⟨x_i,x_j⟩ + 1)·⟨D_i W2 u_i, D_j W2 u_j⟩.
 */
export function twoLayerTangentKernel(e: TwoLayerExpert, x: ArrayLike<number>, u: ArrayLike<number>, n: number): Float64Array {
  const { d, h, c } = e;
  const hid = new Float64Array(n * h); // h_i = relu(pre)
  const back = new Float64Array(n * h); // g_i = D_i W2 u_i
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < h; k++) {
      let pre = e.b1[k];
      for (let a = 0; a < d; a++) pre += x[i * d + a] * e.w1[a * h + k];
      const active = pre > 0;
      hid[i * h + k] = active ? pre : 0;
      if (active) {
        let wu = 0;
        for (let o = 0; o < c; o++) wu += e.w2[k * c + o] * u[i * c + o];
        back[i * h + k] = wu;
      }
    }
  }
  const dot = (a: ArrayLike<number>, ia: number, b: ArrayLike<number>, ib: number, len: number) => {
    let s = 0;
    for (let k = 0; k < len; k++) s += a[ia + k] * b[ib + k];
    return s;
  };
  const K = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const uu = dot(u, i * c, u, j * c, c);
      const v = dot(hid, i * h, hid, j * h, h) * uu + uu + (dot(x, i * d, x, j * d, d) + 1) * dot(back, i * h, back, j * h, h);
      K[i * n + j] = v;
      K[j * n + i] = v;
    }
  }
  return K;
}

/** K = J·Jᵀ for an explicit Jacobian J (n×p, row-major). For a linear model F = Xw, J = X and K = X·Xᵀ. */
export function gramOfJacobian(j: ArrayLike<number>, n: number, p: number): Float64Array {
  const K = new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = a; b < n; b++) {
      let s = 0;
      for (let k = 0; k < p; k++) s += j[a * p + k] * j[b * p + k];
      K[a * n + b] = s;
      K[b * n + a] = s;
    }
  }
  return K;
}

/**
 * Output directions that scalarize a classifier's kernel: u_i = g_i/‖g_i‖, g_i = softmax(z_i) − y_i,
 * the per-sample cross-entropy gradient w.r.t. the logits. Normalized so the kernel measures the
 * geometry along the directions the loss pulls, not how far along them it still is.
 */
export function outputDirections(probs: ArrayLike<number>, oneHot: ArrayLike<number>, n: number, c: number): Float64Array {
  const u = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let o = 0; o < c; o++) {
      const g = probs[i * c + o] - oneHot[i * c + o];
      u[i * c + o] = g;
      norm += g * g;
    }
    norm = Math.sqrt(norm);
    for (let o = 0; o < c; o++) u[i * c + o] = norm > 1e-12 ? u[i * c + o] / norm : 0;
  }
  return u;
}

export interface Conditioning {
  /** λ_min(K): the PL* constant estimate. */
  mu: number;
  /** λ_max(K): the smoothness (Lipschitz) estimate. */
  lf: number;
  kappa: number;
  vMin: Float64Array;
  vMax: Float64Array;
}

/** κ = λ_max / max(λ_min, δ·λ_max). A zero kernel (a dead expert) gives μ = L = 0 and κ = 1/δ. */
export function conditioning(k: Float64Array, n: number, damping: number): Conditioning {
  const { values, vectors } = symmetricEigen(k, n);
  const column = (c: number) => {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = vectors[i * n + c];
    return out;
  };
  // Round-off can make a PSD kernel's smallest eigenvalue slightly negative.
  const mu = Math.max(values[0], 0);
  const lf = Math.max(values[n - 1], 0);
  const kappa = lf > 0 ? lf / Math.max(mu, damping * lf) : 1 / damping;
  return { mu, lf, kappa, vMin: column(0), vMax: column(n - 1) };
}
