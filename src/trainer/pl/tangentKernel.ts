// Float64 reference estimators of an expert's conditioning from its tangent kernel (PL*: μ ≥ λ_min(K)).
import { type EigenOptions, extremeEigen, symmetricEigen } from './eigen';

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
  expectLength('w1', e.w1, d * h);
  expectLength('b1', e.b1, h);
  expectLength('w2', e.w2, h * c);
  expectLength('b2', e.b2, c);
  expectLength('x', x, n * d);
  expectLength('u', u, n * c);
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
  expectLength('jacobian', j, n * p);
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
 *
 * Takes log-probabilities (a float32 logSoftmax stays accurate where softmax rounds to 0 and 1). With a
 * one-hot label t, g_j = p_j for j ≠ t and g_t = p_t − 1 = −Σ_{j≠t} p_j; scaled by 1/max_{j≠t} p_j in
 * float64 this never underflows, so a confidently fitted example keeps its direction. (From float32
 * probabilities, a margin above ~28 gave g = 0, a zero row in every kernel and κ = 1/δ for every unit:
 * docs/method.md, "Scalarizing a classifier".) Only an example whose other classes have probability
 * exactly 0 gets u_i = 0. A row that is not one-hot (soft labels) uses g = p − y as it stands.
 */
export function outputDirections(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, n: number, c: number): Float64Array {
  expectLength('logProbs', logProbs, n * c);
  expectLength('oneHot', oneHot, n * c);
  const u = new Float64Array(n * c);
  for (let i = 0; i < n; i++) unitPullRow(logProbs, oneHot, i, c, u.subarray(i * c, (i + 1) * c));
  return u;
}

/**
 * The per-example cross-entropy gradients w.r.t. the logits, g_i = softmax(z_i) − y_i, divided by
 * one positive factor per group of `groupSize` consecutive rows (the group's largest ‖g_i‖; a language
 * model's group is one sequence, whose positions only influence each other), computed like
 * `outputDirections` so that none underflows. Back-propagated, they give the loss gradient at any token
 * up to its sequence's factor: the per-token directions a language model's kernel needs when its
 * predictions are confident. A row pulling less than e^−20 of its group's strongest is raised to that:
 * next to a stronger pull it is below float32's rounding either way, and a token that only such rows
 * reach (where the plain gradient is under 1e-9 of the strongest, often exactly 0) still gets a
 * direction, with those rows weighted alike.
 */
export function scaledLogitGradients(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, n: number, c: number, groupSize = n): Float64Array {
  expectLength('logProbs', logProbs, n * c);
  expectLength('oneHot', oneHot, n * c);
  if (!(groupSize >= 1) || n % groupSize !== 0) throw new RangeError(`groupSize ${groupSize} does not divide ${n} rows`);
  const g = new Float64Array(n * c);
  // Unit directions first, with log ‖g_i‖; the group's scale comes next.
  const logSize = Float64Array.from({ length: n }, (_, i) => unitPullRow(logProbs, oneHot, i, c, g.subarray(i * c, (i + 1) * c)));
  for (let start = 0; start < n; start += groupSize) {
    let top = -Infinity;
    for (let i = start; i < start + groupSize; i++) top = Math.max(top, logSize[i]);
    for (let i = start; i < start + groupSize; i++) {
      const f = logSize[i] === -Infinity ? 0 : Math.exp(Math.max(logSize[i] - top, -20));
      for (let o = 0; o < c; o++) g[i * c + o] *= f;
    }
  }
  return g;
}

/**
 * log ‖g_i‖ of every row's pull (−Infinity: no pull), the sizes scaledLogitGradients weighs each group's
 * rows by: what a differentiable version (regularizer.ts scaledLogitGradientsTf) holds as its choices.
 */
export function pullLogSizes(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, n: number, c: number): Float64Array {
  expectLength('logProbs', logProbs, n * c);
  expectLength('oneHot', oneHot, n * c);
  const scratch = new Float64Array(c);
  return Float64Array.from({ length: n }, (_, i) => unitPullRow(logProbs, oneHot, i, c, scratch));
}

/** Example i's direction g_i/‖g_i‖ (written to `out`) and log ‖g_i‖, or −Infinity (and 0s) for no pull. */
function unitPullRow(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, i: number, c: number, out: Float64Array): number {
  const logScale = pullRow(logProbs, oneHot, i, c, out);
  if (logScale === -Infinity) return -Infinity;
  let norm = 0;
  for (let o = 0; o < c; o++) norm += out[o] * out[o];
  norm = Math.sqrt(norm);
  for (let o = 0; o < c; o++) out[o] /= norm;
  return logScale + Math.log(norm);
}

/** The class of a one-hot label row (labels[row … row + c − 1]), or −1 for a soft label. */
export function oneHotLabel(labels: ArrayLike<number>, row: number, c: number): number {
  let label = -1;
  let nonzero = 0;
  for (let o = 0; o < c; o++) {
    if (labels[row + o] === 1) label = o;
    if (labels[row + o] !== 0) nonzero++;
  }
  return nonzero === 1 ? label : -1;
}

/**
 * Example i's pull q (written to `out`) and log s with g_i = s·q, or −Infinity for no pull (g_i = 0).
 * One-hot label t: q_j = p_j/max_{j≠t} p_j (j ≠ t), q_t = −Σ_{j≠t} q_j, exact since Σ p = 1, and free
 * of underflow. Soft labels: q = p − y, s = 1.
 */
function pullRow(logProbs: ArrayLike<number>, oneHot: ArrayLike<number>, i: number, c: number, out: Float64Array): number {
  const row = i * c;
  const label = oneHotLabel(oneHot, row, c);
  if (label >= 0) {
    let top = -Infinity;
    for (let o = 0; o < c; o++) if (o !== label) top = Math.max(top, logProbs[row + o]);
    if (!Number.isFinite(top)) return -Infinity; // every other class at probability 0: no pull left
    let rest = 0;
    for (let o = 0; o < c; o++) {
      if (o === label) continue;
      out[o] = Math.exp(logProbs[row + o] - top);
      rest += out[o];
    }
    out[label] = -rest;
    return top;
  }
  let norm = 0;
  for (let o = 0; o < c; o++) {
    out[o] = Math.exp(logProbs[row + o]) - oneHot[row + o];
    norm += out[o] * out[o];
  }
  if (norm > 1e-24) return 0;
  out.fill(0); // a soft-label example already fitted: no pull
  return -Infinity;
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

export interface ConditioningOptions extends EigenOptions {
  /**
   * 'jacobi' (the default): symmetricEigen, every eigenpair, small eigenvalues relatively accurate; the
   * float64 reference. 'extremes': extremeEigen, only λ_min, λ_max and their vectors, accurate to a few
   * ε·λ_max, ~10× cheaper at n = 32 (docs/method.md, "Eigen-solver"); `tolerance` does not apply.
   */
  solver?: 'jacobi' | 'extremes';
}

/**
 * κ = λ_max / (λ_min + δ·λ_max) (smooth damping), so κ < 1/δ always, and a singular kernel gives κ = 1/δ
 * (a dead expert, every ReLU off on the probe, has K = U·Uᵀ of rank ≤ c < n). A zero kernel (every
 * u_i = 0: the probe is fitted perfectly) gives μ = L = 0 and κ = 1/δ, never NaN. Eigenvalues that round-off
 * pushed below zero (K is PSD) are reported as 0. vMin and vMax are the unit eigenvectors of λ_min and
 * λ_max, the ones the regularizer holds constant. K may be float32 with round-off asymmetry: the
 * eigen-solver reads (K + Kᵀ)/2 in float64.
 */
export function conditioning(k: ArrayLike<number>, n: number, damping: number, options: ConditioningOptions = {}): Conditioning {
  checkConditioningArgs(n, damping);
  if (options.solver === 'extremes') {
    const { min, max, vMin, vMax } = extremeEigen(k, n, { vectors: true });
    return { ...conditionedExtremes(min, max, damping), vMin: vMin!, vMax: vMax! };
  }
  const { values, vectors } = symmetricEigen(k, n, options);
  const column = (c: number) => {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = vectors[i * n + c];
    return out;
  };
  return { ...conditionedExtremes(values[0], values[n - 1], damping), vMin: column(0), vMax: column(n - 1) };
}

/**
 * conditioning's μ, L_f and κ without the eigenvectors, by extremeEigen (accurate to a few ε·λ_max):
 * what a unit's reported κ needs, at the cost of one Householder reduction and two bisections.
 */
export function conditioningValues(k: ArrayLike<number>, n: number, damping: number): { mu: number; lf: number; kappa: number } {
  checkConditioningArgs(n, damping);
  const { min, max } = extremeEigen(k, n);
  return conditionedExtremes(min, max, damping);
}

/** μ and L_f from the extreme eigenvalues (a float negative one clamped to 0), and their damped κ. */
function conditionedExtremes(min: number, max: number, damping: number): { mu: number; lf: number; kappa: number } {
  const [mu, lf] = [Math.max(min, 0), Math.max(max, 0)];
  return { mu, lf, kappa: dampedKappa(lf, mu, damping) };
}

function checkConditioningArgs(n: number, damping: number): void {
  if (n < 1) throw new RangeError(`kernel size must be at least 1, got ${n}`);
  if (!(damping > 0 && damping <= 1)) throw new RangeError(`damping must be in (0, 1], got ${damping}`);
}

/**
 * Smoothly damped κ = L_f / (μ + δ·L_f) (docs/method.md, "Definitions (contract)" 5): below 1/δ, equal to
 * it for a singular kernel (μ = 0, written out so it is exactly 1/δ), and differentiable in μ there, so
 * the regularizer still pulls a singular but live unit. A zero kernel (L_f = 0) reads 1/δ, never NaN.
 */
export function dampedKappa(lf: number, mu: number, damping: number): number {
  if (!(lf > 0)) return 1 / damping;
  const m = Math.max(mu, 0);
  return m === 0 ? 1 / damping : lf / (m + damping * lf);
}

function expectLength(name: string, a: ArrayLike<number>, length: number): void {
  if (a.length !== length) throw new RangeError(`${name} has ${a.length} entries, expected ${length}`);
}
