/* The decoder layer both native kernels run, written once over the including file's element type (bf16 bits in
   native_linear.c, float in native_f32.c). The includer defines ELEMENT, LAYER (the function's name), NORM (its
   RMSNorm), ATTEND (its attention, a loop shared out among a team's threads), linear_t with run_linear (a linear,
   likewise shared out), add_into (x += y, rounded as the element rounds) and rotate (rotate-half rotary embedding
   of one head in place). */

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
      ATTEND(qkv, qkv_width, keys, values, mask, attended, rows, heads, kv_heads, dim, slots, scaling);
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
