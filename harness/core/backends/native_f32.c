/* float32 decoder layers for CPUs with AVX2 and FMA, batch-invariant by construction (see native_f32.py).

   Built with -mavx2 -mfma only (it runs on CPUs without AVX-512) and -ffp-contract=off (every product and sum is
   rounded where the source rounds it). A linear's output accumulates in its own fp32 lane over k in order by FMA,
   whatever the number of rows, the rows it is computed with or the thread that computes it. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define V 2  /* vectors of 8 outputs per block: 16 outputs */
#define G 4  /* input rows per pass over a block */
#define BLOCK (8 * V)

#define KTILE 128  /* k per tile: a block's tile of weights (8 KB) stays in L1 while every group of rows uses it */

/* Rows m0..m0+rows-1 (rows <= G, a constant where inlined) of one block over k in [k0, k1), their accumulators
   carried in acc (fp32, stored exactly between tiles). */
static inline __attribute__((always_inline)) void block_rows(const float* x, const float* wb, float* acc, int64_t m0,
                                                             int rows, int64_t k0, int64_t k1, int64_t K) {
  __m256 a[G][V];
  for (int g = 0; g < rows; ++g)
    for (int v = 0; v < V; ++v) a[g][v] = _mm256_loadu_ps(acc + (m0 + g) * BLOCK + 8 * v);
  for (int64_t k = k0; k < k1; ++k) {
    const float* wk = wb + k * BLOCK;
    _mm_prefetch((const char*)(wk + 16 * BLOCK), _MM_HINT_T0);
    __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
    for (int g = 0; g < rows; ++g) {
      __m256 xv = _mm256_broadcast_ss(x + (m0 + g) * K + k);
      a[g][0] = _mm256_fmadd_ps(xv, w0, a[g][0]);
      a[g][1] = _mm256_fmadd_ps(xv, w1, a[g][1]);
    }
  }
  for (int g = 0; g < rows; ++g)
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc + (m0 + g) * BLOCK + 8 * v, a[g][v]);
}

/* y[m, n] = epilogue(sum_k x[m, k] w[n, k] + bias[n]); epilogue 0: none; 1: SiLU; 2: times other[m, n].
   w packed by `pack_weight`: block b (outputs 16b..16b+15), then k, then the block's 16 outputs. */
static void linear_f32_team(const float* x, const float* w, const float* bias, const float* other, float* y,
                            int64_t M, int64_t K, int64_t N, int epilogue) {
  int64_t blocks = (N + BLOCK - 1) / BLOCK;
  {
    float* acc = (float*)aligned_alloc(32, (size_t)((M + G) * BLOCK * sizeof(float)));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* wb = w + b * K * BLOCK;
      memset(acc, 0, (size_t)(M * BLOCK * sizeof(float)));
      for (int64_t k0 = 0; k0 < K; k0 += KTILE) {
        int64_t k1 = K - k0 < KTILE ? K : k0 + KTILE;
        for (int64_t m0 = 0; m0 < M; m0 += G) {
          switch (M - m0 < G ? M - m0 : G) {  /* each count inlined with its accumulators in registers */
            case 1: block_rows(x, wb, acc, m0, 1, k0, k1, K); break;
            case 2: block_rows(x, wb, acc, m0, 2, k0, k1, K); break;
            case 3: block_rows(x, wb, acc, m0, 3, k0, k1, K); break;
            default: block_rows(x, wb, acc, m0, 4, k0, k1, K);
          }
        }
      }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < BLOCK && b * BLOCK + j < N; ++j) {
          int64_t n = b * BLOCK + j;
          float s = acc[m * BLOCK + j] + (bias ? bias[n] : 0.0f);
          if (epilogue == 1) s = s / (1.0f + expf(-s));
          else if (epilogue == 2) s = s * other[m * N + n];
          y[m * N + n] = s;
        }
    }
    free(acc);
  }
}

void linear_f32(const float* x, const float* w, const float* bias, const float* other, float* y, int64_t M, int64_t K,
                int64_t N, int epilogue) {
#pragma omp parallel
  linear_f32_team(x, w, bias, other, y, M, K, N, epilogue);
}

static inline float to_float(float x) { return x; }
static inline float from_float(float x) { return x; }

/* The dot product of a query and a key head of `dim` (a multiple of 8, at most 256) in 8 lanes, the lanes then
   summed in a fixed order. */
static inline float score(const float* a, const float* b, int64_t dim) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < dim; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

typedef struct { __m256 v[32]; } head_acc_t;

static inline void acc_zero(head_acc_t* o, int64_t dim) {
  for (int64_t v = 0; v < dim / 8; ++v) o->v[v] = _mm256_setzero_ps();
}

static inline void acc_add(head_acc_t* o, float p, const float* row, int64_t dim) {
  __m256 pv = _mm256_set1_ps(p);
  for (int64_t v = 0; v < dim / 8; ++v) o->v[v] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row + 8 * v), o->v[v]);
}

static inline void acc_store(const head_acc_t* o, float total, float* out, int64_t dim) {
  __m256 scale = _mm256_set1_ps(total);
  for (int64_t v = 0; v < dim / 8; ++v) _mm256_storeu_ps(out + 8 * v, _mm256_div_ps(o->v[v], scale));
}

typedef struct {
  const float* w;
  const float* bias;
  int64_t in_features, out_features;
} linear_t;

static void run_linear(const linear_t* l, const float* x, const float* other, float* y, int64_t M, int epilogue) {
  linear_f32_team(x, l->w, l->bias, other, y, M, l->in_features, l->out_features, epilogue);
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
#define SUFFIX f32
#include "decoder_layer.h"
