// Native kernels for the trainer's TensorFlow.js backends: single-precision GEMM from OpenBLAS (with
// an optional fused bias and ReLU) and a fused Adam update; and the extreme eigenvalues of a symmetric
// float64 matrix (the κ monitoring's per-unit kernels), a port of the JavaScript solver; and bert's
// hand-written backward's element-wise host steps (layer norm's backward, GELU′, [CLS]'s attention),
// ports of their JavaScript loops. Buffers are typed arrays owned by the caller (views on the wasm heap
// or the cpu backend's arrays); only the eigenvalue solver and the attention gradient allocate, scratch
// they free before returning.
// Bounds are checked before any write: a wrong shape is a thrown TypeError, never memory corruption.
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <cblas.h>
#include <node_api.h>

#define CHECK(call)                                        \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error(env, NULL, "N-API call failed: " #call); \
      return NULL;                                         \
    }                                                      \
  } while (0)

typedef struct {
  float *data;
  size_t length;
} F32;

static int get_f32(napi_env env, napi_value v, F32 *out, const char *what) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_null || t == napi_undefined) {
    out->data = NULL;
    out->length = 0;
    return 1;
  }
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!is_ta || napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float32_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Float32Array", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  out->data = (float *)data;
  out->length = length;
  return 1;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a number");
    return 0;
  }
  return 1;
}

static int get_f64(napi_env env, napi_value v, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a number");
    return 0;
  }
  return 1;
}

static int fits(napi_env env, const F32 *a, int64_t batch, int64_t stride, int64_t size, const char *what) {
  if (batch < 0 || stride < 0 || size < 0) {
    napi_throw_range_error(env, NULL, "negative dimension");
    return 0;
  }
  if (batch == 0 || size == 0) return 1;
  // Last element read or written: (batch-1)·stride + size − 1; a product that would overflow is too long for any array.
  if ((stride > 0 && batch - 1 > (INT64_MAX - size) / stride) || (uint64_t)((batch - 1) * stride + size) > a->length) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s is too short: needs %.0f floats, has %zu", what, (double)(batch - 1) * (double)stride + (double)size, a->length);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

static int overlaps(const F32 *x, const F32 *y) {
  if (!x->length || !y->length) return 0;
  return x->data < y->data + y->length && y->data < x->data + x->length;
}

// Compiled twice (AVX2 and baseline x86-64) and picked at load time where the toolchain supports it:
// the loop is division- and square-root-bound, and 8 lanes beat 4. Same IEEE operations either way.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static void adam_update(size_t len, const float *restrict w, const float *restrict g, const float *restrict m, const float *restrict v, float *restrict ow,
                        float *restrict om, float *restrict ov, float b1, float b2, float c1, float c2, float bc1, float bc2, float e, float step) {
  for (size_t i = 0; i < len; i++) {
    const float gi = g[i];
    const float mi = m[i] * b1 + gi * c1;
    const float vi = v[i] * b2 + (gi * gi) * c2;
    om[i] = mi;
    ov[i] = vi;
    ow[i] = ((mi / bc1) / (sqrtf(vi / bc2) + e)) * step + w[i];
  }
}

VECTOR_CLONES
static void bias_relu(float *restrict c, const float *restrict bias, int64_t m, int64_t n, bool relu) {
  for (int64_t r = 0; r < m; r++) {
    float *restrict row = c + r * n;
    if (bias)
      for (int64_t j = 0; j < n; j++) row[j] += bias[j];
    if (relu)
      for (int64_t j = 0; j < n; j++) row[j] = row[j] > 0.0f ? row[j] : 0.0f;
  }
}

// gemm(a, b, c, batch, m, n, k, transA, transB, strideA, strideB, bias | null, relu)
// For each batch i: C_i (m×n, row-major, contiguous) = op(A_i)·op(B_i) [+ bias (length n)] [ReLU].
// A_i starts at i·strideA (0 broadcasts one matrix over the batch), B_i likewise.
static napi_value Gemm(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 13) {
    napi_throw_type_error(env, NULL, "gemm takes 13 arguments");
    return NULL;
  }
  F32 a, b, c, bias;
  int64_t batch, m, n, k, strideA, strideB;
  bool transA, transB, relu;
  if (!get_f32(env, argv[0], &a, "a") || !get_f32(env, argv[1], &b, "b") || !get_f32(env, argv[2], &c, "c")) return NULL;
  if (!get_i64(env, argv[3], &batch) || !get_i64(env, argv[4], &m) || !get_i64(env, argv[5], &n) || !get_i64(env, argv[6], &k)) return NULL;
  CHECK(napi_get_value_bool(env, argv[7], &transA));
  CHECK(napi_get_value_bool(env, argv[8], &transB));
  if (!get_i64(env, argv[9], &strideA) || !get_i64(env, argv[10], &strideB)) return NULL;
  if (!get_f32(env, argv[11], &bias, "bias")) return NULL;
  CHECK(napi_get_value_bool(env, argv[12], &relu));
  // Empty typed arrays may have no data pointer; `fits` below demands length wherever one is read.
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
    napi_throw_range_error(env, NULL, "dimension too large for BLAS");
    return NULL;
  }
  if (batch < 0 || m < 0 || n < 0 || k < 0) {
    napi_throw_range_error(env, NULL, "negative dimension");
    return NULL;
  }
  if (!fits(env, &a, batch, strideA, m * k, "a") || !fits(env, &b, batch, strideB, k * n, "b") || !fits(env, &c, batch, m * n, m * n, "c")) return NULL;
  if (bias.data && bias.length != (size_t)n) {
    napi_throw_range_error(env, NULL, "bias must have n elements");
    return NULL;
  }
  const int lda = transA ? (int)m : (int)k;
  const int ldb = transB ? (int)k : (int)n;
  for (int64_t i = 0; i < batch; i++) {
    float *ci = c.data + i * m * n;
    if (m == 0 || n == 0) continue;
    if (k == 0) {
      memset(ci, 0, (size_t)(m * n) * sizeof(float));
    } else {
      cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a.data + i * strideA,
                  lda > 0 ? lda : 1, b.data + i * strideB, ldb > 0 ? ldb : 1, 0.0f, ci, (int)n);
    }
    if (bias.data || relu) bias_relu(ci, bias.data, m, n, relu);
  }
  return NULL;
}

// adam(value, grad, m, v, outValue, outM, outV, lr, beta1, beta2, epsilon, accBeta1, accBeta2)
// The update of tfjs's AdamOptimizer, element by element and in the same float32 order:
//   m' = β1·m + (1−β1)·g;  v' = β2·v + (1−β2)·g²;  w' = w − lr·(m'/(1−β1ᵗ)) / (√(v'/(1−β2ᵗ)) + ε)
static napi_value Adam(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 13) {
    napi_throw_type_error(env, NULL, "adam takes 13 arguments");
    return NULL;
  }
  F32 w, g, m, v, ow, om, ov;
  if (!get_f32(env, argv[0], &w, "value") || !get_f32(env, argv[1], &g, "grad") || !get_f32(env, argv[2], &m, "m") || !get_f32(env, argv[3], &v, "v") ||
      !get_f32(env, argv[4], &ow, "outValue") || !get_f32(env, argv[5], &om, "outM") || !get_f32(env, argv[6], &ov, "outV"))
    return NULL;
  double lr, beta1, beta2, eps, acc1, acc2;
  if (!get_f64(env, argv[7], &lr) || !get_f64(env, argv[8], &beta1) || !get_f64(env, argv[9], &beta2) || !get_f64(env, argv[10], &eps) || !get_f64(env, argv[11], &acc1) ||
      !get_f64(env, argv[12], &acc2))
    return NULL;
  const size_t len = w.length;
  if (!w.data || !g.data || !m.data || !v.data || !ow.data || !om.data || !ov.data || g.length != len || m.length != len || v.length != len || ow.length != len ||
      om.length != len || ov.length != len) {
    napi_throw_range_error(env, NULL, "adam: all buffers must have the same length");
    return NULL;
  }
  // Constants rounded as tfjs rounds them: 1 − β in double, then to float32; every operation below in
  // float32 with no contraction (binding.gyp: -ffp-contract=off), so the result is tfjs's bit for bit.
  // Constants rounded as tfjs rounds them: 1 − β in double, then to float32; every operation below in
  // float32 with no contraction (binding.gyp: -ffp-contract=off), so the result is tfjs's bit for bit.
  const float b1 = (float)beta1, b2 = (float)beta2, c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2);
  // tfjs computes 1 − accβ on float32 tensors.
  const float bc1 = 1.0f - (float)acc1, bc2 = 1.0f - (float)acc2, e = (float)eps, step = -(float)lr;
  if (overlaps(&ow, &w) || overlaps(&ow, &g) || overlaps(&ow, &m) || overlaps(&ow, &v) || overlaps(&om, &w) || overlaps(&om, &g) || overlaps(&om, &m) ||
      overlaps(&om, &v) || overlaps(&ov, &w) || overlaps(&ov, &g) || overlaps(&ov, &m) || overlaps(&ov, &v) || overlaps(&ow, &om) || overlaps(&ow, &ov) || overlaps(&om, &ov)) {
    napi_throw_range_error(env, NULL, "adam: outputs must not overlap inputs or each other");
    return NULL;
  }
  adam_update(len, w.data, g.data, m.data, v.data, ow.data, om.data, ov.data, b1, b2, c1, c2, bc1, bc2, e, step);
  return NULL;
}

// sumSquares(arrays: Float32Array[]) → Σ over all elements of x², accumulated in double.
VECTOR_CLONES
static double sum_squares(const float *restrict x, size_t n) {
  // Sixteen float64 partial sums: vectorizes without reassociating one accumulator, and enough
  // independent chains to hide the add latency.
  double acc[16] = {0};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
  for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
  double total = 0;
  for (int l = 0; l < 16; l++) total += acc[l];
  return total;
}

static int get_f64_array(napi_env env, napi_value v, double **data, size_t *length, const char *what) {
  bool is_ta = false;
  napi_typedarray_type type;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, v, &type, length, (void **)data, NULL, NULL) != napi_ok || type != napi_float64_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Float64Array", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

// The extreme eigenvalues, step for step the JavaScript extremeEigen without vectors
// (src/trainer/pl/eigen.ts: tridiagonalize, gershgorinBound, countBelow3, bisectExtreme): the same
// operations in the same order (-ffp-contract=off), so the same bits; compiled, about 4× faster.
// m: the scaled symmetric part, lower triangle, row-major; overwritten. d, e, p, v: n doubles each.
static void tridiagonalize(double *restrict m, int n, double *restrict d, double *restrict e, double *restrict p, double *restrict v) {
  for (int k = 0; k < n - 2; k++) {
    const size_t top = (size_t)(k + 1) * n + k;
    double below = 0, largest = 0;
    for (int i = k + 2; i < n; i++) largest = fmax(largest, fabs(m[(size_t)i * n + k]));
    if (largest == 0) {
      e[k] = m[top];
      continue;
    }
    largest = fmax(largest, fabs(m[top]));
    for (int i = k + 2; i < n; i++) {
      const double r = m[(size_t)i * n + k] / largest;
      below += r * r;
    }
    const double x0 = m[top];
    const double r0 = x0 / largest;
    const double norm = largest * sqrt(r0 * r0 + below);
    const double beta = x0 >= 0 ? -norm : norm;
    const double t = (beta - x0) / beta;
    const double inv = 1 / (x0 - beta);
    for (int i = k + 2; i < n; i++) m[(size_t)i * n + k] *= inv;
    m[top] = beta;
    e[k] = beta;
    v[k + 1] = 1;
    for (int i = k + 2; i < n; i++) v[i] = m[(size_t)i * n + k];
    for (int i = k + 1; i < n; i++) p[i] = 0;
    for (int i = k + 1; i < n; i++) {
      const double vi = v[i];
      const double *row = m + (size_t)i * n;
      double s = 0;
      for (int j = k + 1; j < i; j++) {
        const double aij = row[j];
        s += aij * v[j];
        p[j] += aij * vi;
      }
      p[i] += s + row[i] * vi;
    }
    double pv = 0;
    for (int i = k + 1; i < n; i++) {
      p[i] *= t;
      pv += p[i] * v[i];
    }
    const double half = (t / 2) * pv;
    for (int i = k + 1; i < n; i++) p[i] -= half * v[i];
    for (int i = k + 1; i < n; i++) {
      const double vi = v[i], wi = p[i];
      double *row = m + (size_t)i * n;
      for (int j = k + 1; j <= i; j++) row[j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) e[n - 2] = m[(size_t)(n - 1) * n + n - 2];
  for (int i = 0; i < n; i++) d[i] = m[(size_t)i * n + i];
}

// Sturm counts below `points` values x[0..points−1] (each chain as countBelow3 in eigen.ts computes it):
// the chains are independent, so the divider works on several at once.
static void count_below(const double *d, const double *e, int n, double pivot_min, const double *x, int points, int *counts) {
  double q[6];
  for (int c = 0; c < points; c++) {
    q[c] = d[0] - x[c];
    if (fabs(q[c]) < pivot_min) q[c] = -pivot_min;
    counts[c] = q[c] < 0;
  }
  for (int i = 1; i < n; i++) {
    const double e2 = e[i - 1] * e[i - 1];
    for (int c = 0; c < points; c++) {
      double r = d[i] - x[c] - e2 / q[c];
      if (fabs(r) < pivot_min) r = -pivot_min;
      q[c] = r;
      counts[c] += r < 0;
    }
  }
}

// One eigenvalue's quadrisection interval (bisectExtreme in eigen.ts).
typedef struct {
  double lo, hi;
  int target;
} Bracket;

static int bracket_done(const Bracket *b, double width, double x[3]) {
  const double step = (b->hi - b->lo) / 4;
  x[0] = b->lo + step;
  x[1] = b->lo + 2 * step;
  x[2] = b->lo + 3 * step;
  return b->hi - b->lo <= fmax(width, 2 * DBL_EPSILON * fmax(fabs(b->lo), fabs(b->hi))) || !(b->lo < x[0] && x[0] < x[1] && x[1] < x[2] && x[2] < b->hi);
}

static void bracket_update(Bracket *b, const double x[3], const int counts[3]) {
  if (counts[0] >= b->target) b->hi = x[0];
  else if (counts[1] >= b->target) b->lo = x[0], b->hi = x[1];
  else if (counts[2] >= b->target) b->lo = x[1], b->hi = x[2];
  else b->lo = x[2];
}

// λ_min and λ_max of T: the two quadrisections of bisectExtreme, run side by side (six Sturm chains per
// pass while both are open); each interval moves exactly as in the JavaScript.
static void bisect_extremes(const double *d, const double *e, int n, double pivot_min, double lower, double upper, double margin, double width, double *lmin, double *lmax) {
  if (n == 1) {
    *lmin = *lmax = d[0];
    return;
  }
  double dmin = d[0], dmax = d[0];
  for (int i = 1; i < n; i++) dmin = fmin(dmin, d[i]), dmax = fmax(dmax, d[i]);
  Bracket b[2] = {{lower, fmin(upper, dmin + margin), 1}, {fmax(lower, dmax - margin), upper, n}};
  for (;;) {
    double x[6];
    int counts[6];
    const int done0 = bracket_done(&b[0], width, x), done1 = bracket_done(&b[1], width, x + 3);
    if (done0 && done1) break;
    if (!done0 && !done1) {
      count_below(d, e, n, pivot_min, x, 6, counts);
      bracket_update(&b[0], x, counts);
      bracket_update(&b[1], x + 3, counts + 3);
    } else {
      const int k = done0 ? 1 : 0;
      count_below(d, e, n, pivot_min, x + 3 * k, 3, counts);
      bracket_update(&b[k], x + 3 * k, counts);
    }
  }
  *lmin = b[0].lo + (b[0].hi - b[0].lo) / 2;
  *lmax = b[1].lo + (b[1].hi - b[1].lo) / 2;
}

// extremeEigenvalues(a: Float64Array (n×n, finite), n, out: Float64Array(2)): out = [λ_min, λ_max] of
// (A + Aᵀ)/2, accurate to a few ε·‖A‖ (Householder reduction, then quadrisection on Sturm counts).
static napi_value ExtremeEigenvalues(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double *a, *out;
  size_t a_len, out_len;
  int64_t n64;
  if (argc < 3 || !get_f64_array(env, argv[0], &a, &a_len, "a") || !get_i64(env, argv[1], &n64) || !get_f64_array(env, argv[2], &out, &out_len, "out")) return NULL;
  if (n64 < 1 || n64 > 65536 || (uint64_t)(n64 * n64) != a_len || out_len < 2) {
    napi_throw_range_error(env, NULL, "extremeEigenvalues: n must be in 1…65536, a must hold n² entries and out 2");
    return NULL;
  }
  const int n = (int)n64;
  double largest = 0;
  for (size_t k = 0; k < (size_t)n * n; k++) {
    if (!isfinite(a[k])) {
      napi_throw_range_error(env, NULL, "extremeEigenvalues: a non-finite entry");
      return NULL;
    }
    largest = fmax(largest, fabs(a[k]));
  }
  if (largest == 0) {
    out[0] = out[1] = 0;
    return NULL;
  }
  // 2^−(⌊log₂ largest⌋ + 1), as the JavaScript's 2 ** −(Math.floor(Math.log2(largest)) + 1).
  const double scale = ldexp(1.0, -(ilogb(largest) + 1));
  double *buf = malloc(sizeof(double) * ((size_t)n * n + 4 * (size_t)n));
  if (!buf) {
    napi_throw_error(env, NULL, "extremeEigenvalues: out of memory");
    return NULL;
  }
  double *m = buf, *d = m + (size_t)n * n, *e = d + n, *p = e + n, *v = p + n;
  for (int i = 0; i < n; i++)
    for (int j = 0; j <= i; j++) m[(size_t)i * n + j] = ((a[(size_t)i * n + j] + a[(size_t)j * n + i]) / 2) * scale;
  tridiagonalize(m, n, d, e, p, v);
  // Gershgorin's interval, widened; the tiny-pivot floor; the bisection's absolute width.
  double lower = INFINITY, upper = -INFINITY, max_off_sq = 0;
  for (int i = 0; i < n; i++) {
    const double r = (i > 0 ? fabs(e[i - 1]) : 0) + (i < n - 1 ? fabs(e[i]) : 0);
    lower = fmin(lower, d[i] - r);
    upper = fmax(upper, d[i] + r);
  }
  for (int i = 0; i < n - 1; i++) max_off_sq = fmax(max_off_sq, e[i] * e[i]);
  const double norm = fmax(fabs(lower), fabs(upper));
  const double margin = 2 * DBL_EPSILON * norm * n + 2 * DBL_MIN;
  const double pivot_min = DBL_MIN * fmax(1, max_off_sq);
  const double width = DBL_EPSILON * norm;
  double lo, hi;
  bisect_extremes(d, e, n, pivot_min, lower - margin, upper + margin, margin, width, &lo, &hi);
  free(buf);
  out[0] = lo / scale;
  out[1] = hi / scale;
  return NULL;
}

// The hand-written backward's element-wise host steps (src/trainer/models/twiceDifferentiable.ts:
// hostLayerNormBackward, hostLayerNormBackwardAdjoint, hostGeluDerivatives, hostGeluDerivativeAdjoint),
// compiled: the same float64 operations in the same order (-ffp-contract=off), so the same values up to
// exp's last bit (glibc's against V8's). Inputs are Float32Array or Float64Array; the JavaScript loops
// remain the fallback where the addon is absent, and the reference the tests hold these to.
typedef struct {
  void *data;
  size_t length;
  int f64;
} Real;

static int get_real(napi_env env, napi_value v, Real *out, const char *what, int optional) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (optional && (t == napi_null || t == napi_undefined)) {
    out->data = NULL;
    out->length = 0;
    out->f64 = 0;
    return 1;
  }
  bool is_ta = false;
  napi_typedarray_type type;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, v, &type, &out->length, &out->data, NULL, NULL) != napi_ok || (type != napi_float32_array && type != napi_float64_array)) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Float32Array or a Float64Array", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  out->f64 = type == napi_float64_array;
  return 1;
}

static inline double rd(const Real *a, size_t i) { return a->f64 ? ((const double *)a->data)[i] : (double)((const float *)a->data)[i]; }
static inline void wr(const Real *a, size_t i, double x) {
  if (a->f64)
    ((double *)a->data)[i] = x;
  else
    ((float *)a->data)[i] = (float)x;
}

static int need(napi_env env, int ok, const char *what) {
  if (!ok) napi_throw_range_error(env, NULL, what);
  return ok;
}

// Sizes and offsets the element-wise kernels accept: each count at most 2^40 (a typed array holds far
// fewer), so that the products and sums in their bounds checks cannot overflow.
#define MAX_COUNT ((int64_t)1 << 40)
static int counts_ok(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a <= MAX_COUNT && b <= MAX_COUNT && (a == 0 || b <= MAX_COUNT / a); }

#define LN_EPSILON 1e-5

// layerNormBackward(xs, from, gs, dys, N, D, xhat, F, r, mxaR): hostLayerNormBackward's loop; the four
// outputs Float64Array ([N·D], [N·D], [N], [N]).
static napi_value LayerNormBackward(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Real xs, gs, dys;
  double *xhat, *F, *r, *mxaR;
  size_t nx, nF, nr, nm;
  int64_t from, N, D;
  if (argc < 10 || !get_real(env, argv[0], &xs, "xs", 0) || !get_i64(env, argv[1], &from) || !get_real(env, argv[2], &gs, "gs", 0) || !get_real(env, argv[3], &dys, "dys", 0) ||
      !get_i64(env, argv[4], &N) || !get_i64(env, argv[5], &D) || !get_f64_array(env, argv[6], &xhat, &nx, "xhat") || !get_f64_array(env, argv[7], &F, &nF, "F") ||
      !get_f64_array(env, argv[8], &r, &nr, "r") || !get_f64_array(env, argv[9], &mxaR, &nm, "mxaR"))
    return NULL;
  if (!need(env, counts_ok(N, D) && counts_ok(from, 1) && D >= 1, "layerNormBackward: N, D or from out of range")) return NULL;
  if (!need(env, from >= 0 && N >= 0 && D >= 1 && (size_t)(from + N * D) <= xs.length && (size_t)D <= gs.length && (size_t)(N * D) <= dys.length && (size_t)(N * D) <= nx &&
                     (size_t)(N * D) <= nF && (size_t)N <= nr && (size_t)N <= nm,
            "layerNormBackward: an array is shorter than N, D and from ask"))
    return NULL;
  for (int64_t i = 0, o = 0; i < N; i++, o += D) {
    const size_t x0 = (size_t)(from + o);
    double mean = 0;
    for (int64_t j = 0; j < D; j++) mean += rd(&xs, x0 + j);
    mean /= (double)D;
    double variance = 0;
    for (int64_t j = 0; j < D; j++) {
      const double c = rd(&xs, x0 + j) - mean;
      variance += c * c;
    }
    const double ri = 1 / sqrt(variance / (double)D + LN_EPSILON);
    double ma = 0, mxa = 0;
    for (int64_t j = 0; j < D; j++) {
      const double xh = (rd(&xs, x0 + j) - mean) * ri;
      const double a = rd(&dys, o + j) * rd(&gs, j);
      xhat[o + j] = xh;
      ma += a;
      mxa += a * xh;
    }
    ma /= (double)D;
    mxa /= (double)D;
    for (int64_t j = 0; j < D; j++) F[o + j] = (rd(&dys, o + j) * rd(&gs, j) - ma - xhat[o + j] * mxa) * ri;
    r[i] = ri;
    mxaR[i] = mxa * ri;
  }
  return NULL;
}

// layerNormBackwardAdjoint(xhat, F, r, mxaR, N, D, gs, dys, ws, dx, dxFrom, dg, ddy): hostLayerNormBackwardAdjoint's loop
// (dx and ddy written, dg added into; dg Float64Array).
static napi_value LayerNormBackwardAdjoint(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double *xhat, *F, *r, *mxaR, *dg;
  size_t nx, nF, nr, nm, ng;
  Real gs, dys, ws, dx, ddy;
  int64_t N, D, dxFrom;
  if (argc < 13 || !get_f64_array(env, argv[0], &xhat, &nx, "xhat") || !get_f64_array(env, argv[1], &F, &nF, "F") || !get_f64_array(env, argv[2], &r, &nr, "r") ||
      !get_f64_array(env, argv[3], &mxaR, &nm, "mxaR") || !get_i64(env, argv[4], &N) || !get_i64(env, argv[5], &D) || !get_real(env, argv[6], &gs, "gs", 0) ||
      !get_real(env, argv[7], &dys, "dys", 0) || !get_real(env, argv[8], &ws, "ws", 0) || !get_real(env, argv[9], &dx, "dx", 0) || !get_i64(env, argv[10], &dxFrom) ||
      !get_f64_array(env, argv[11], &dg, &ng, "dg") || !get_real(env, argv[12], &ddy, "ddy", 0))
    return NULL;
  if (!need(env, counts_ok(N, D) && counts_ok(dxFrom, 1) && D >= 1, "layerNormBackwardAdjoint: N, D or dxFrom out of range")) return NULL;
  const size_t nd = (size_t)(N * D);
  if (!need(env, N >= 0 && D >= 1 && dxFrom >= 0 && nd <= nx && nd <= nF && (size_t)N <= nr && (size_t)N <= nm && (size_t)D <= gs.length && nd <= dys.length && nd <= ws.length &&
                     (size_t)dxFrom + nd <= dx.length && (size_t)D <= ng && nd <= ddy.length,
            "layerNormBackwardAdjoint: an array is shorter than N, D and dxFrom ask"))
    return NULL;
  for (int64_t i = 0, o = 0; i < N; i++, o += D) {
    double mw = 0, mxw = 0, mwF = 0;
    for (int64_t j = 0; j < D; j++) {
      const double w = rd(&ws, o + j);
      mw += w;
      mxw += w * xhat[o + j];
      mwF += w * F[o + j];
    }
    mw /= (double)D;
    mxw /= (double)D;
    mwF /= (double)D;
    const double ri = r[i];
    for (int64_t j = 0; j < D; j++) {
      const double pw = (rd(&ws, o + j) - mw - xhat[o + j] * mxw) * ri;
      wr(&dx, (size_t)dxFrom + o + j, -(xhat[o + j] * mwF * ri + pw * mxaR[i] + F[o + j] * mxw * ri));
      dg[j] += rd(&dys, o + j) * pw;
      wr(&ddy, o + j, pw * rd(&gs, j));
    }
  }
  return NULL;
}

#define GELU_C 0.79788456080286535588 /* √(2/π), as Math.sqrt(2 / Math.PI) */

// geluDerivatives(xs, from, n, prime, second): hostGeluDerivatives' loop (prime, second Float64Array).
static napi_value GeluDerivatives(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Real xs;
  int64_t from, n;
  double *prime, *second;
  size_t np, ns;
  if (argc < 5 || !get_real(env, argv[0], &xs, "xs", 0) || !get_i64(env, argv[1], &from) || !get_i64(env, argv[2], &n) || !get_f64_array(env, argv[3], &prime, &np, "prime") ||
      !get_f64_array(env, argv[4], &second, &ns, "second"))
    return NULL;
  if (!need(env, counts_ok(from, 1) && counts_ok(n, 1), "geluDerivatives: n or from out of range")) return NULL;
  if (!need(env, from >= 0 && n >= 0 && (size_t)(from + n) <= xs.length && (size_t)n <= np && (size_t)n <= ns, "geluDerivatives: an array is shorter than n and from ask")) return NULL;
  const double c = GELU_C;
  for (int64_t i = 0; i < n; i++) {
    const double z = rd(&xs, (size_t)(from + i));
    const double z2 = z * z;
    const double s = 1 / (1 + exp(-z * (2 * c + 2 * 0.044715 * c * z2)));
    const double sc = s * (1 - s);
    const double du2 = 2 * c + 6 * 0.044715 * c * z2;
    prime[i] = s + z * sc * du2;
    second[i] = sc * (2 * du2 + z * ((1 - 2 * s) * du2 * du2 + 12 * 0.044715 * c * z));
  }
  return NULL;
}

// geluDerivativeAdjoint(ws, dys | null, prime, second, dx, dxFrom, ddy | null): hostGeluDerivativeAdjoint's loops.
static napi_value GeluDerivativeAdjoint(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Real ws, dys, dx, ddy;
  double *prime, *second;
  size_t n, ns;
  int64_t dxFrom;
  if (argc < 7 || !get_real(env, argv[0], &ws, "ws", 0) || !get_real(env, argv[1], &dys, "dys", 1) || !get_f64_array(env, argv[2], &prime, &n, "prime") ||
      !get_f64_array(env, argv[3], &second, &ns, "second") || !get_real(env, argv[4], &dx, "dx", 0) || !get_i64(env, argv[5], &dxFrom) || !get_real(env, argv[6], &ddy, "ddy", 1))
    return NULL;
  if (!need(env, counts_ok(dxFrom, 1), "geluDerivativeAdjoint: dxFrom out of range")) return NULL;
  if (!need(env, dxFrom >= 0 && ns >= n && ws.length >= n && (!dys.data || dys.length >= n) && (size_t)dxFrom + n <= dx.length && (!ddy.data || ddy.length >= n),
            "geluDerivativeAdjoint: an array is shorter than prime"))
    return NULL;
  if (dys.data)
    for (size_t i = 0; i < n; i++) wr(&dx, (size_t)dxFrom + i, rd(&ws, i) * rd(&dys, i) * second[i]);
  else
    for (size_t i = 0; i < n; i++) wr(&dx, (size_t)dxFrom + i, rd(&ws, i) * second[i]);
  if (ddy.data)
    for (size_t i = 0; i < n; i++) wr(&ddy, i, rd(&ws, i) * prime[i]);
  return NULL;
}

// [CLS]'s attention backward on the host (src/trainer/models/bertEncoder.ts: clsAttentionValue and
// clsAttentionGradient), compiled: the same operations in the same order, float64 sums and float32
// stores where the JavaScript has them (-ffp-contract=off), so the same values. dims = [b, T, H, dh].
static int cls_dims(napi_env env, napi_value v, int64_t dims[4]) {
  for (uint32_t k = 0; k < 4; k++) {
    napi_value x;
    if (napi_get_element(env, v, k, &x) != napi_ok || !get_i64(env, x, &dims[k])) return 0;
    if (dims[k] < 1 || dims[k] > (1 << 20)) {
      napi_throw_range_error(env, NULL, "clsAttention: dims must be [b, T, H, dh], each in 1…2^20");
      return 0;
    }
  }
  // The largest count the kernels form is b·T·3·H·dh (value, ws): bounded so that it cannot overflow.
  if (!counts_ok(dims[0] * dims[1], 3 * dims[2] * dims[3])) {
    napi_throw_range_error(env, NULL, "clsAttention: b·T·3·H·dh is too large");
    return 0;
  }
  return 1;
}

// clsAttentionValue(dims, scale, dO, a, qs, ks, vs, dA, dS, cs, value): value [b·T, 3·H·dh] zero on entry.
static napi_value ClsAttentionValue(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t dims[4];
  double scale;
  F32 dO, a, qs, ks, vs, value;
  double *dA, *dS, *cs;
  size_t nA, nS, nc;
  if (argc < 11 || !cls_dims(env, argv[0], dims) || !get_f64(env, argv[1], &scale) || !get_f32(env, argv[2], &dO, "dO") || !get_f32(env, argv[3], &a, "a") ||
      !get_f32(env, argv[4], &qs, "qs") || !get_f32(env, argv[5], &ks, "ks") || !get_f32(env, argv[6], &vs, "vs") || !get_f64_array(env, argv[7], &dA, &nA, "dA") ||
      !get_f64_array(env, argv[8], &dS, &nS, "dS") || !get_f64_array(env, argv[9], &cs, &nc, "cs") || !get_f32(env, argv[10], &value, "value"))
    return NULL;
  const size_t b = (size_t)dims[0], T = (size_t)dims[1], H = (size_t)dims[2], dh = (size_t)dims[3], HD = H * dh, row = 3 * HD;
  if (!need(env, dO.length >= b * HD && a.length >= b * H * T && qs.length >= b * HD && ks.length >= b * H * T * dh && vs.length >= b * H * T * dh && nA >= b * H * T && nS >= b * H * T &&
                     nc >= b * H && value.length >= b * T * row,
            "clsAttentionValue: an array is shorter than dims ask"))
    return NULL;
  for (size_t i = 0; i < b; i++)
    for (size_t h = 0; h < H; h++) {
      const size_t r = i * H + h, o = r * dh;
      double sum = 0;
      for (size_t t = 0; t < T; t++) {
        const size_t vRow = (r * T + t) * dh;
        double s = 0;
        for (size_t d = 0; d < dh; d++) s += (double)dO.data[o + d] * (double)vs.data[vRow + d];
        dA[r * T + t] = s;
        sum += (double)a.data[r * T + t] * s;
      }
      const double c = (cs[r] = scale * sum);
      const size_t q0 = i * T * row + h * dh;
      for (size_t t = 0; t < T; t++) {
        const double at = a.data[r * T + t];
        const double ds = (dS[r * T + t] = scale * at * dA[r * T + t] - at * c);
        const size_t kRow = (r * T + t) * dh, kOut = (i * T + t) * row + HD + h * dh, vOut = kOut + HD;
        for (size_t d = 0; d < dh; d++) {
          value.data[q0 + d] = (float)((double)value.data[q0 + d] + ds * (double)ks.data[kRow + d]);
          value.data[kOut + d] = (float)(ds * (double)qs.data[o + d]);
          value.data[vOut + d] = (float)(at * (double)dO.data[o + d]);
        }
      }
    }
  return NULL;
}

// clsAttentionGradient(dims, scale, fromExample, ws, dO, a, qs, ks, vs, dA, dS, cs, ga, gq, gk, gv, gdm).
static napi_value ClsAttentionGradient(napi_env env, napi_callback_info info) {
  size_t argc = 17;
  napi_value argv[17];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t dims[4], from;
  double scale;
  F32 ws, dO, a, qs, ks, vs, ga, gq, gk, gv;
  double *dA, *dS, *cs, *gdm;
  size_t nA, nS, nc, ng;
  if (argc < 17 || !cls_dims(env, argv[0], dims) || !get_f64(env, argv[1], &scale) || !get_i64(env, argv[2], &from) || !get_f32(env, argv[3], &ws, "ws") ||
      !get_f32(env, argv[4], &dO, "dO") || !get_f32(env, argv[5], &a, "a") || !get_f32(env, argv[6], &qs, "qs") || !get_f32(env, argv[7], &ks, "ks") ||
      !get_f32(env, argv[8], &vs, "vs") || !get_f64_array(env, argv[9], &dA, &nA, "dA") || !get_f64_array(env, argv[10], &dS, &nS, "dS") ||
      !get_f64_array(env, argv[11], &cs, &nc, "cs") || !get_f32(env, argv[12], &ga, "ga") || !get_f32(env, argv[13], &gq, "gq") || !get_f32(env, argv[14], &gk, "gk") ||
      !get_f32(env, argv[15], &gv, "gv") || !get_f64_array(env, argv[16], &gdm, &ng, "gdm"))
    return NULL;
  if (!need(env, counts_ok(from + dims[0], dims[1] * dims[2] * dims[3]), "clsAttentionGradient: fromExample out of range")) return NULL;
  const size_t b = (size_t)dims[0], T = (size_t)dims[1], H = (size_t)dims[2], dh = (size_t)dims[3], HD = H * dh, row = 3 * HD;
  if (!need(env, from >= 0 && ws.length >= b * T * row && dO.length >= b * HD && a.length >= b * H * T && qs.length >= b * HD && ks.length >= b * H * T * dh &&
                     vs.length >= b * H * T * dh && nA >= b * H * T && nS >= b * H * T && nc >= b * H && ga.length >= ((size_t)from + b) * H * T &&
                     gq.length >= ((size_t)from + b) * HD && gk.length >= ((size_t)from + b) * H * T * dh && gv.length >= ((size_t)from + b) * H * T * dh && ng >= b * HD && dh <= 4096 && T <= 65536,
            "clsAttentionGradient: an array is shorter than dims and fromExample ask"))
    return NULL;
  const size_t aFrom = (size_t)from * H * T, qFrom = (size_t)from * HD, kvFrom = (size_t)from * H * T * dh;
  double *buf = malloc(sizeof(double) * (T + 2 * dh));
  if (!buf) {
    napi_throw_error(env, NULL, "clsAttentionGradient: out of memory");
    return NULL;
  }
  double *omega = buf, *dDO = omega + T, *gqRow = dDO + dh;
  for (size_t i = 0; i < b; i++)
    for (size_t h = 0; h < H; h++) {
      const size_t r = i * H + h, o = r * dh, wq = i * T * row + h * dh;
      double omegaA = 0;
      for (size_t t = 0; t < T; t++) {
        const size_t kRow = (r * T + t) * dh, wk = (i * T + t) * row + HD + h * dh;
        double s = 0;
        for (size_t d = 0; d < dh; d++) s += (double)ws.data[wq + d] * (double)ks.data[kRow + d] + (double)qs.data[o + d] * (double)ws.data[wk + d];
        omega[t] = s;
        omegaA += s * (double)a.data[r * T + t];
      }
      for (size_t d = 0; d < dh; d++) dDO[d] = gqRow[d] = 0;
      for (size_t t = 0; t < T; t++) {
        const size_t rt = r * T + t, kvRow = rt * dh, wk = (i * T + t) * row + HD + h * dh, wv = wk + HD;
        const double at = a.data[rt];
        const double omegaTilde = scale * (omega[t] - omegaA);
        const double dDA = at * omegaTilde;
        const double ds = dS[rt];
        double dOwv = 0;
        for (size_t d = 0; d < dh; d++) {
          dOwv += (double)dO.data[o + d] * (double)ws.data[wv + d];
          dDO[d] += at * (double)ws.data[wv + d] + dDA * (double)vs.data[kvRow + d];
          gqRow[d] += ds * (double)ws.data[wk + d];
          gk.data[kvFrom + kvRow + d] = (float)(ds * (double)ws.data[wq + d]);
          gv.data[kvFrom + kvRow + d] = (float)(dDA * (double)dO.data[o + d]);
        }
        ga.data[aFrom + rt] = (float)(omegaTilde * dA[rt] - omega[t] * cs[r] + dOwv);
      }
      for (size_t d = 0; d < dh; d++) {
        gdm[o + d] = dDO[d];
        gq.data[qFrom + o + d] = (float)gqRow[d];
      }
    }
  free(buf);
  return NULL;
}

static napi_value SumSquares(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_array = false;
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "sumSquares takes an array of Float32Arrays");
    return NULL;
  }
  uint32_t count;
  CHECK(napi_get_array_length(env, argv[0], &count));
  double total = 0;
  for (uint32_t k = 0; k < count; k++) {
    napi_value item;
    F32 x;
    CHECK(napi_get_element(env, argv[0], k, &item));
    if (!get_f32(env, item, &x, "each array")) return NULL;
    if (x.data) total += sum_squares(x.data, x.length);
  }
  napi_value out;
  CHECK(napi_create_double(env, total, &out));
  return out;
}

static napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t n;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !get_i64(env, argv[0], &n)) return NULL;
  if (n >= 1 && n <= 1024) openblas_set_num_threads((int)n);
  return NULL;
}

static napi_value Info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, corename, config, threads;
  CHECK(napi_create_object(env, &out));
  CHECK(napi_create_string_utf8(env, openblas_get_corename(), NAPI_AUTO_LENGTH, &corename));
  CHECK(napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &config));
  CHECK(napi_create_int32(env, openblas_get_num_threads(), &threads));
  CHECK(napi_set_named_property(env, out, "corename", corename));
  CHECK(napi_set_named_property(env, out, "config", config));
  CHECK(napi_set_named_property(env, out, "threads", threads));
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  // One exported function each, enumerable (threadsBySize in native.ts copies them by spreading).
#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}
  napi_property_descriptor props[] = {
      METHOD("gemm", Gemm),
      METHOD("adam", Adam),
      METHOD("sumSquares", SumSquares),
      METHOD("setThreads", SetThreads),
      METHOD("info", Info),
      METHOD("extremeEigenvalues", ExtremeEigenvalues),
      METHOD("layerNormBackward", LayerNormBackward),
      METHOD("layerNormBackwardAdjoint", LayerNormBackwardAdjoint),
      METHOD("geluDerivatives", GeluDerivatives),
      METHOD("geluDerivativeAdjoint", GeluDerivativeAdjoint),
      METHOD("clsAttentionValue", ClsAttentionValue),
      METHOD("clsAttentionGradient", ClsAttentionGradient),
  };
#undef METHOD
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;

  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
