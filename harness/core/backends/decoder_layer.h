/* What both native kernels run beyond their linears, written once over the including file's element type (bf16
   bits in native_linear.c, float in native_f32.c): RMSNorm, fixed-buffer attention and the decoder layer. The
   includer defines ELEMENT and SUFFIX (the functions are named rms_norm_SUFFIX, attend_SUFFIX, layer_SUFFIX), and
   gives to_float / from_float (an element's value, and a float rounded to an element), score (the dot product of a
   query and a key head), head_acc_t with acc_zero / acc_add / acc_store (a head's weighted sum of value rows, held
   in vectors), linear_t with run_linear (a linear, its loop shared out among a team's threads: `omp for`),
   add_into (x += y, rounded as the element rounds) and rotate (rotate-half rotary embedding of one head in place). */

#define PASTE_(a, b) a##_##b
#define PASTE(a, b) PASTE_(a, b)
#define NORM PASTE(rms_norm, SUFFIX)
#define ATTEND PASTE(attend, SUFFIX)
#define ATTEND_TEAM PASTE(ATTEND, team)
#define LAYER PASTE(layer, SUFFIX)

/* y[m] = element(x[m] / sqrt(mean(x[m]²) + eps) · weight), in fp32, the squares summed in order. */
void NORM(const ELEMENT* x, const float* weight, ELEMENT* y, int64_t M, int64_t K, float eps) {
  for (int64_t m = 0; m < M; ++m) {
    const ELEMENT* xm = x + m * K;
    float total = 0.0f;
    for (int64_t k = 0; k < K; ++k) total += to_float(xm[k]) * to_float(xm[k]);
    float scale = 1.0f / sqrtf(total / (float)K + eps);
    for (int64_t k = 0; k < K; ++k) y[m * K + k] = from_float(to_float(xm[k]) * scale * weight[k]);
  }
}

/* out[r, h] = softmax_j(scaling · q[r, h]·K[h / group, j] + mask[r, j]) · V[h / group, j] over every slot whose mask
   is finite, in slot order, the scores and weights in fp32. Masked slots are skipped, not weighted by zero, so a
   row's bits depend only on its query, its mask row and the slots it sees. q: [rows, heads, dim] with row stride
   q_stride; keys, values: [kv_heads, slots, dim]; mask: [rows, slots]. The loop is shared out (`omp for`). */
static void ATTEND_TEAM(const ELEMENT* q, int64_t q_stride, const ELEMENT* keys, const ELEMENT* values,
                        const float* mask, ELEMENT* out, int64_t rows, int64_t heads, int64_t kv_heads, int64_t dim,
                        int64_t slots, float scaling) {
  int64_t group = heads / kv_heads;
#pragma omp for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const ELEMENT* qh = q + r * q_stride + h * dim;
      const ELEMENT* kh = keys + (h / group) * slots * dim;
      const ELEMENT* vh = values + (h / group) * slots * dim;
      const float* mr = mask + r * slots;
      float scores[slots];
      float top = -INFINITY;
      for (int64_t j = 0; j < slots; ++j) {
        if (mr[j] == -INFINITY) continue;
        scores[j] = score(qh, kh + j * dim, dim) * scaling + mr[j];
        if (scores[j] > top) top = scores[j];
      }
      head_acc_t o;
      acc_zero(&o, dim);
      float total = 0.0f;
      for (int64_t j = 0; j < slots; ++j) {
        if (mr[j] == -INFINITY) continue;
        float p = expf(scores[j] - top);
        total += p;
        acc_add(&o, p, vh + j * dim, dim);
      }
      acc_store(&o, total, out + (r * heads + h) * dim, dim);
    }
}

void ATTEND(const ELEMENT* q, int64_t q_stride, const ELEMENT* keys, const ELEMENT* values, const float* mask,
            ELEMENT* out, int64_t rows, int64_t heads, int64_t kv_heads, int64_t dim, int64_t slots, float scaling) {
#pragma omp parallel
  ATTEND_TEAM(q, q_stride, keys, values, mask, out, rows, heads, kv_heads, dim, slots, scaling);
}

typedef struct {
  linear_t qkv, o, gate, up, down;
  const float *input_norm, *post_norm;
  float input_eps, post_eps;
  int64_t heads, kv_heads, head_dim;
} layer_t;

/* One decoder layer over `rows` rows of x [rows, d] in place: x += o(attention(rotary(qkv(norm(x))))), the chunk's
   keys and values written at slots past.. of the layer's buffers (keys, values [kv_heads, slots, dim]); then
   x += down(up(norm(x)) · silu(gate(norm(x)))). cos, sin: [rows, dim], each row's position; mask [rows, slots].
   work: rows · (2 d + qkv + heads · dim + 2 · intermediate) elements of scratch. */
void LAYER(const layer_t* L, ELEMENT* x, int64_t rows, int attention, int mlp, const ELEMENT* cos, const ELEMENT* sin,
           ELEMENT* keys, ELEMENT* values, int64_t slots, int64_t past, const float* mask, float scaling,
           ELEMENT* work) {
  int64_t d = L->o.out_features, dim = L->head_dim, heads = L->heads, kv_heads = L->kv_heads;
  int64_t qkv_width = L->qkv.out_features, inter = L->gate.out_features;
  ELEMENT *h = work, *sum = h + rows * d, *qkv = sum + rows * d, *attended = qkv + rows * qkv_width;
  ELEMENT *gate = attended + rows * heads * dim, *up = gate + rows * inter;
#pragma omp parallel
  {  /* one team for the whole layer: the kernels' loops are shared out (`omp for`), the row-wise steps run once */
    if (attention) {
#pragma omp single
      NORM(x, L->input_norm, h, rows, d, L->input_eps);
      run_linear(&L->qkv, h, 0, qkv, rows, 0);
#pragma omp single
      for (int64_t r = 0; r < rows; ++r) {
        ELEMENT* row = qkv + r * qkv_width;
        for (int64_t head = 0; head < heads + kv_heads; ++head)
          rotate(row + head * dim, cos + r * dim, sin + r * dim, dim);
        for (int64_t g = 0; g < kv_heads; ++g) {
          memcpy(keys + (g * slots + past + r) * dim, row + (heads + g) * dim, dim * sizeof(ELEMENT));
          memcpy(values + (g * slots + past + r) * dim, row + (heads + kv_heads + g) * dim, dim * sizeof(ELEMENT));
        }
      }
      ATTEND_TEAM(qkv, qkv_width, keys, values, mask, attended, rows, heads, kv_heads, dim, slots, scaling);
      run_linear(&L->o, attended, 0, sum, rows, 0);
#pragma omp single
      add_into(x, sum, rows * d);
    }
    if (mlp) {
#pragma omp single
      NORM(x, L->post_norm, h, rows, d, L->post_eps);
      run_linear(&L->gate, h, 0, gate, rows, 1);
      run_linear(&L->up, h, gate, up, rows, 2);
      run_linear(&L->down, up, 0, sum, rows, 0);
#pragma omp single
      add_into(x, sum, rows * d);
    }
  }
}
