/* Few-row bf16 linears for CPUs with AVX512-BF16, batch-invariant by construction (see native_linear.py).

   y[m, n] = epilogue(sum_k x[m, k] w[n, k] + bias[n]), rounded once to bf16 (round to nearest even). Each output
   accumulates in its own fp32 lane over k in order, whatever the number of rows M, the group of rows it is
   computed with or the thread that computes it: a row's bits never depend on its company. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* The epilogue of output n of row m: bias, then 0: nothing; 1: SiLU; 2: times other[m, n]; rounded to bf16. */
static inline uint16_t finish(float s, int64_t n, int64_t m, int64_t N, const float* bias, const uint16_t* other,
                              int epilogue) {
  s += bias ? bias[n] : 0.0f;
  if (epilogue == 1) s = s / (1.0f + expf(-s));
  else if (epilogue == 2) s = s * from_bf16(other[m * N + n]);
  return to_bf16(s);
}

#define V 4  /* vectors of 16 outputs per block: 64 outputs */
#define G 4  /* input rows per pass over a block */
#define BLOCK (16 * V)

/* The pair (x[m, k], x[m, k + 1]) as one 32-bit lane, the last one zero-padded when K is odd. */
static inline __m512bh pair(const uint16_t* row, int64_t k, int64_t K) {
  uint32_t bits = row[k] | (k + 1 < K ? (uint32_t)row[k + 1] << 16 : 0u);
  return (__m512bh)_mm512_set1_epi32((int)bits);
}

/* w packed by `pack_weight`: block b (outputs 64b..64b+63), k-pair p: 64 lanes of (w[n, 2p], w[n, 2p + 1]), so a
   block streams from memory in order and every output accumulates in its own lane over k in order. */
/* epilogue 0: none; 1: SiLU; 2: times other[m, n] (bf16). */
static void linear_bf16_team(const uint16_t* x, const uint16_t* w, const float* bias, const uint16_t* other,
                             uint16_t* y, int64_t M, int64_t K, int64_t N, int epilogue) {
  int64_t pairs = (K + 1) / 2, blocks = (N + BLOCK - 1) / BLOCK;
#pragma omp for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const uint16_t* wb = w + b * pairs * 2 * BLOCK;
    for (int64_t m0 = 0; m0 < M; m0 += G) {
      int64_t rows = M - m0 < G ? M - m0 : G;
      __m512 acc[G][V];
      for (int g = 0; g < G; ++g)
        for (int v = 0; v < V; ++v) acc[g][v] = _mm512_setzero_ps();
      for (int64_t p = 0; p < pairs; ++p) {
        const uint16_t* wp = wb + p * 2 * BLOCK;
        _mm_prefetch((const char*)(wp + 2 * BLOCK * 8), _MM_HINT_T0);
        _mm_prefetch((const char*)(wp + 2 * BLOCK * 8) + 64, _MM_HINT_T0);
        _mm_prefetch((const char*)(wp + 2 * BLOCK * 8) + 128, _MM_HINT_T0);
        _mm_prefetch((const char*)(wp + 2 * BLOCK * 8) + 192, _MM_HINT_T0);
        __m512bh wv[V];
        for (int v = 0; v < V; ++v) wv[v] = (__m512bh)_mm512_loadu_si512(wp + 32 * v);
        for (int g = 0; g < G; ++g) {
          if (g >= rows) break;
          __m512bh xv = pair(x + (m0 + g) * K, 2 * p, K);
          for (int v = 0; v < V; ++v) acc[g][v] = _mm512_dpbf16_ps(acc[g][v], xv, wv[v]);
        }
      }
      for (int64_t g = 0; g < rows; ++g) {
        float sums[BLOCK];
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(sums + 16 * v, acc[g][v]);
        int64_t m = m0 + g;
        for (int64_t j = 0; j < BLOCK && b * BLOCK + j < N; ++j)
          y[m * N + b * BLOCK + j] = finish(sums[j], b * BLOCK + j, m, N, bias, other, epilogue);
      }
    }
  }
}

void linear_bf16(const uint16_t* x, const uint16_t* w, const float* bias, const uint16_t* other, uint16_t* y,
                 int64_t M, int64_t K, int64_t N, int epilogue) {
#pragma omp parallel
  linear_bf16_team(x, w, bias, other, y, M, K, N, epilogue);
}

#if defined(__AMX_BF16__)
typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

/* Asks Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); 1 on success. */
int amx_init(void) { return syscall(SYS_arch_prctl, 0x1023, 18) == 0; }

/* `linear_bf16` on AMX tiles, for M <= 16 and K % 32 == 0, on the same packed weights: a block's four 16-output
   vectors are four B tiles (16 k-pairs each, rows 256 bytes apart), the rows of x one A tile, C tiles in fp32.
   Rows never mix in a tile product, so a row's bits are the same at any M. The weights stream two k-tiles ahead
   by software prefetch (the strided tile loads alone ran at a third of the read bandwidth). */
static void linear_bf16_amx_team(const uint16_t* x, const uint16_t* w, const float* bias, const uint16_t* other,
                                 uint16_t* y, int64_t M, int64_t K, int64_t N, int epilogue) {
  int64_t pairs = K / 2, blocks = (N + BLOCK - 1) / BLOCK, tiles = K / 32;
  {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 5; ++t) { cfg.rows[t] = (uint8_t)M; cfg.colsb[t] = 64; }  /* C: tiles 0-3, A: tile 4 */
    for (int t = 5; t < 7; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }  /* B: tiles 5, 6 */
    _tile_loadconfig(&cfg);
    float out[16 * BLOCK];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint16_t* wb = w + b * pairs * 2 * BLOCK;
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      for (int64_t t = 0; t < tiles; ++t) {
        const uint16_t* wt = wb + t * 16 * 2 * BLOCK;
        const char* ahead = (const char*)(wt + 2 * 16 * 2 * BLOCK);
        for (int l = 0; l < 64; ++l) _mm_prefetch(ahead + 64 * l, _MM_HINT_T0);
        _tile_loadd(4, x + 32 * t, K * 2);
        _tile_loadd(5, wt, 4 * BLOCK); _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(6, wt + 32, 4 * BLOCK); _tile_dpbf16ps(1, 4, 6);
        _tile_loadd(5, wt + 64, 4 * BLOCK); _tile_dpbf16ps(2, 4, 5);
        _tile_loadd(6, wt + 96, 4 * BLOCK); _tile_dpbf16ps(3, 4, 6);
      }
      _tile_stored(0, out, BLOCK * 4);
      _tile_stored(1, out + 16, BLOCK * 4);
      _tile_stored(2, out + 32, BLOCK * 4);
      _tile_stored(3, out + 48, BLOCK * 4);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < BLOCK && b * BLOCK + j < N; ++j)
          y[m * N + b * BLOCK + j] = finish(out[m * BLOCK + j], b * BLOCK + j, m, N, bias, other, epilogue);
    }
    _tile_release();
  }
}

void linear_bf16_amx(const uint16_t* x, const uint16_t* w, const float* bias, const uint16_t* other, uint16_t* y,
                     int64_t M, int64_t K, int64_t N, int epilogue) {
#pragma omp parallel
  linear_bf16_amx_team(x, w, bias, other, y, M, K, N, epilogue);
}
#endif

static inline float to_float(uint16_t h) { return from_bf16(h); }
static inline uint16_t from_float(float f) { return to_bf16(f); }

/* The dot product of a query and a key head, pairwise through dpbf16 in 16 fp32 lanes, then reduced. */
static inline float score(const uint16_t* qh, const uint16_t* kh, int64_t dim) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < dim; k += 32) {
    __mmask32 m = dim - k >= 32 ? 0xffffffffu : (((__mmask32)1 << (dim - k)) - 1);
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, qh + k),
                           (__m512bh)_mm512_maskz_loadu_epi16(m, kh + k));
  }
  return _mm512_reduce_add_ps(acc);
}

typedef struct { __m512 v[16]; } head_acc_t;  /* dim up to 256 */

static inline void acc_zero(head_acc_t* o, int64_t dim) {
  for (int64_t v = 0; v < (dim + 15) / 16; ++v) o->v[v] = _mm512_setzero_ps();
}

static inline void acc_add(head_acc_t* o, float p, const uint16_t* row, int64_t dim) {
  __m512 pv = _mm512_set1_ps(p);
  for (int64_t v = 0; v < (dim + 15) / 16; ++v) {
    __mmask16 m = dim - 16 * v >= 16 ? 0xffffu : (((__mmask16)1 << (dim - 16 * v)) - 1);
    __m256i bits = _mm256_maskz_loadu_epi16(m, row + 16 * v);
    o->v[v] = _mm512_fmadd_ps(pv, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)), o->v[v]);
  }
}

/* The weighted sum over the weights' total, each element rounded once to bf16. */
static inline void acc_store(const head_acc_t* o, float total, uint16_t* out, int64_t dim) {
  float row[256];
  for (int64_t v = 0; v < (dim + 15) / 16; ++v)
    _mm512_storeu_ps(row + 16 * v, _mm512_div_ps(o->v[v], _mm512_set1_ps(total)));
  for (int64_t k = 0; k < dim; ++k) out[k] = to_bf16(row[k]);
}

/* One packed linear as `layers_bf16` sees it (weights laid out by `pack_weight`). */
typedef struct {
  const uint16_t* w;
  const float* bias;
  int64_t in_features, out_features;
  int amx; /* K % 32 == 0 and the CPU has AMX-BF16: `linear_bf16_amx`, 16 rows a call */
} linear_t;

static void run_linear(const linear_t* l, const uint16_t* x, const uint16_t* other, uint16_t* y, int64_t M,
                       int epilogue) {
  int64_t K = l->in_features, N = l->out_features;
#if defined(__AMX_BF16__)
  if (l->amx) {
    for (int64_t m = 0; m < M; m += 16)  /* rows never mix, so splitting them changes no bits */
      linear_bf16_amx_team(x + m * K, l->w, l->bias, other ? other + m * N : 0, y + m * N,
                           M - m < 16 ? M - m : 16, K, N, epilogue);
    return;
  }
#endif
  linear_bf16_team(x, l->w, l->bias, other, y, M, K, N, epilogue);
}

/* bf16(a + b), as torch adds two bf16 tensors (in fp32, rounded once). */
static void add_into(uint16_t* x, const uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = to_bf16(from_bf16(x[i]) + from_bf16(y[i]));
}

/* Rotate-half rotary embedding of one head in place, rounded as torch's bf16 ops round it:
   bf16(bf16(x · cos) + bf16(rotate_half(x) · sin)). */
static void rotate(uint16_t* head, const uint16_t* cos, const uint16_t* sin, int64_t dim) {
  uint16_t out[512];
  int64_t half = dim / 2;
  for (int64_t i = 0; i < dim; ++i) {
    float turned = i < half ? -from_bf16(head[i + half]) : from_bf16(head[i - half]);
    out[i] = to_bf16(from_bf16(to_bf16(from_bf16(head[i]) * from_bf16(cos[i]))) +
                     from_bf16(to_bf16(turned * from_bf16(sin[i]))));
  }
  memcpy(head, out, dim * 2);
}

/* The layer as one call, op for op the arithmetic of the packed path's separate calls (so its bits are theirs). */
#define ELEMENT uint16_t
#define SUFFIX bf16
#include "decoder_layer.h"
