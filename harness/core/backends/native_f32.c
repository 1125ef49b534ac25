/* float32 decoder layers for CPUs with AVX2 and FMA, batch-invariant by construction (see native_f32.py).

   Built with -mavx2 -mfma only (it runs on CPUs without AVX-512) and -ffp-contract=off (every product and sum is
   rounded where the source rounds it). A linear's output accumulates in its own fp32 lane over k in order by FMA,
   whatever the number of rows, the rows it is computed with or the thread that computes it. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define V 2  /* vectors of 8 outputs per block: 16 outputs */
#define G 4  /* input rows per pass over a block */
#define BLOCK (8 * V)

/* y[m, n] = epilogue(sum_k x[m, k] w[n, k] + bias[n]); epilogue 0: none; 1: SiLU; 2: times other[m, n].
   w packed by `pack_weight`: block b (outputs 16b..16b+15), then k, then the block's 16 outputs. */
void linear_f32(const float* x, const float* w, const float* bias, const float* other, float* y, int64_t M, int64_t K,
                int64_t N, int epilogue) {
  int64_t blocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* wb = w + b * K * BLOCK;
    for (int64_t m0 = 0; m0 < M; m0 += G) {
      int64_t rows = M - m0 < G ? M - m0 : G;
      __m256 acc[G][V];
      for (int g = 0; g < G; ++g)
        for (int v = 0; v < V; ++v) acc[g][v] = _mm256_setzero_ps();
      if (rows == G) {
        for (int64_t k = 0; k < K; ++k) {
          const float* wk = wb + k * BLOCK;
          _mm_prefetch((const char*)(wk + 16 * BLOCK), _MM_HINT_T0);
          __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
          for (int g = 0; g < G; ++g) {
            __m256 xv = _mm256_broadcast_ss(x + (m0 + g) * K + k);
            acc[g][0] = _mm256_fmadd_ps(xv, w0, acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(xv, w1, acc[g][1]);
          }
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const float* wk = wb + k * BLOCK;
          _mm_prefetch((const char*)(wk + 16 * BLOCK), _MM_HINT_T0);
          __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
          for (int g = 0; g < rows; ++g) {
            __m256 xv = _mm256_broadcast_ss(x + (m0 + g) * K + k);
            acc[g][0] = _mm256_fmadd_ps(xv, w0, acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(xv, w1, acc[g][1]);
          }
        }
      }
      for (int64_t g = 0; g < rows; ++g) {
        float sums[BLOCK];
        _mm256_storeu_ps(sums, acc[g][0]);
        _mm256_storeu_ps(sums + 8, acc[g][1]);
        int64_t m = m0 + g;
        for (int64_t j = 0; j < BLOCK && b * BLOCK + j < N; ++j) {
          int64_t n = b * BLOCK + j;
          float s = sums[j] + (bias ? bias[n] : 0.0f);
          if (epilogue == 1) s = s / (1.0f + expf(-s));
          else if (epilogue == 2) s = s * other[m * N + n];
          y[m * N + n] = s;
        }
      }
    }
  }
}

/* The dot product of two fp32 vectors of `dim` (a multiple of 8) in 8 lanes, the lanes then summed in a fixed
   order. */
static inline float dot(const float* a, const float* b, int64_t dim) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < dim; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

/* out[r, h] = softmax_j(scaling · q[r, h]·K[h / group, j] + mask[r, j]) · V[h / group, j] over every slot whose mask
   is finite, in slot order (masked slots skipped, not weighted by zero). q: [rows, heads, dim] with row stride
   q_stride; keys, values: [kv_heads, slots, dim]; mask: [rows, slots]; dim a multiple of 8, at most 256. */
void attend_f32(const float* q, int64_t q_stride, const float* keys, const float* values, const float* mask,
                float* out, int64_t rows, int64_t heads, int64_t kv_heads, int64_t dim, int64_t slots, float scaling) {
  int64_t group = heads / kv_heads;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + r * q_stride + h * dim;
      const float* kh = keys + (h / group) * slots * dim;
      const float* vh = values + (h / group) * slots * dim;
      const float* mr = mask + r * slots;
      float scores[slots];
      float top = -INFINITY;
      for (int64_t j = 0; j < slots; ++j) {
        if (mr[j] == -INFINITY) continue;
        scores[j] = dot(qh, kh + j * dim, dim) * scaling + mr[j];
        if (scores[j] > top) top = scores[j];
      }
      __m256 o[32];
      for (int64_t v = 0; v < dim / 8; ++v) o[v] = _mm256_setzero_ps();
      float total = 0.0f;
      for (int64_t j = 0; j < slots; ++j) {
        if (mr[j] == -INFINITY) continue;
        float p = expf(scores[j] - top);
        total += p;
        __m256 pv = _mm256_set1_ps(p);
        for (int64_t v = 0; v < dim / 8; ++v) o[v] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vh + j * dim + 8 * v), o[v]);
      }
      float* oh = out + (r * heads + h) * dim;
      __m256 scale = _mm256_set1_ps(total);
      for (int64_t v = 0; v < dim / 8; ++v) _mm256_storeu_ps(oh + 8 * v, _mm256_div_ps(o[v], scale));
    }
}

/* y[m] = x[m] / sqrt(mean(x[m]²) + eps) · weight, the squares summed in order. */
void rms_norm_f32(const float* x, const float* weight, float* y, int64_t M, int64_t K, float eps) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * K;
    float total = 0.0f;
    for (int64_t k = 0; k < K; ++k) total += xm[k] * xm[k];
    float scale = 1.0f / sqrtf(total / (float)K + eps);
    for (int64_t k = 0; k < K; ++k) y[m * K + k] = xm[k] * scale * weight[k];
  }
}

typedef struct {
  const float* w;
  const float* bias;
  int64_t in_features, out_features;
} linear_t;

static void run_linear(const linear_t* l, const float* x, const float* other, float* y, int64_t M, int epilogue) {
  linear_f32(x, l->w, l->bias, other, y, M, l->in_features, l->out_features, epilogue);
}

/* Rotate-half rotary embedding of one head in place: x · cos + rotate_half(x) · sin. */
static void rotate(float* head, const float* cos, const float* sin, int64_t dim) {
  float out[256];
  int64_t half = dim / 2;
  for (int64_t i = 0; i < dim; ++i) out[i] = head[i] * cos[i] + (i < half ? -head[i + half] : head[i - half]) * sin[i];
  memcpy(head, out, dim * 4);
}

static void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

#define ELEMENT float
#define LAYER layer_f32
#define NORM rms_norm_f32
#define ATTEND attend_f32
#include "decoder_layer.h"
