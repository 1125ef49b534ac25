/* What both native kernels run beyond their linears, written once over the including file's element type (bf16
   bits in native_linear.c, float in native_f32.c): RMSNorm, fixed-buffer attention and decoder layers over several
   sequences. The includer defines ELEMENT and SUFFIX (the functions are named rms_norm_SUFFIX, attend_SUFFIX,
   layers_SUFFIX), and gives to_float / from_float (an element's value, and a float rounded to an element), score
   (the dot product of a query and a key head), head_acc_t with acc_zero / acc_add / acc_store (a head's weighted
   sum of value rows, held in vectors), linear_t with run_linear (a linear, its loop shared out among a team's
   threads: `omp for`), add_into (x += y, rounded as the element rounds) and rotate (rotate-half rotary embedding
   of one head in place). */

#include <stdlib.h>

#define PASTE_(a, b) a##_##b
#define PASTE(a, b) PASTE_(a, b)
#define NORM PASTE(rms_norm, SUFFIX)
#define ATTEND PASTE(attend, SUFFIX)
#define LAYERS PASTE(layers, SUFFIX)

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

/* out = softmax_j(scaling · q·K[j] + mask[j]) · V[j] for one query head q over the slots of one kv head (K, V:
   [slots, dim]) whose mask is finite, in slot order, the scores and weights in fp32. Masked slots are skipped, not
   weighted by zero, so the bits depend only on the query, the mask row and the slots it sees. */
static void attend_head(const ELEMENT* qh, const ELEMENT* kh, const ELEMENT* vh, const float* mr, ELEMENT* out,
                        int64_t dim, int64_t slots, float scaling) {
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
  acc_store(&o, total, out, dim);
}

/* out[r, h] = `attend_head` of q[r, h] over kv head h / group. q: [rows, heads, dim] with row stride q_stride; keys,
   values: [kv_heads, slots, dim]; mask: [rows, slots]. */
void ATTEND(const ELEMENT* q, int64_t q_stride, const ELEMENT* keys, const ELEMENT* values, const float* mask,
            ELEMENT* out, int64_t rows, int64_t heads, int64_t kv_heads, int64_t dim, int64_t slots, float scaling) {
  int64_t group = heads / kv_heads;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h)
      attend_head(q + r * q_stride + h * dim, keys + (h / group) * slots * dim, values + (h / group) * slots * dim,
                  mask + r * slots, out + (r * heads + h) * dim, dim, slots, scaling);
}

typedef struct {
  linear_t qkv, o, gate, up, down;
  const float *input_norm, *post_norm;
  float input_eps, post_eps;
  int64_t heads, kv_heads, head_dim;
} layer_t;

/* One sequence of a `LAYERS` call; every field 8 bytes (an int64 row of seven, as the caller builds it). */
typedef struct {
  int64_t rows;               /* its rows of x, right after the previous sequence's */
  ELEMENT *keys, *values;     /* layer 0's buffers [kv_heads, slots, dim]; layer i's lie i · layer_stride further */
  int64_t slots, layer_stride;
  const int64_t* positions;   /* [rows]: the rows' rotary positions; 0: past, past + 1, ... */
  const uint8_t* chunk_mask;  /* [rows, rows]: which rows of the chunk a row sees; 0: causal */
} sequence_t;

/* What one sequence runs at one layer: plan[(layer - first) · sequences + s]. */
typedef struct {
  int64_t attention, mlp;  /* whether it runs the sub-layer (0 or 1) */
  int64_t past;            /* where its chunk's keys and values land (when attention) */
} step_t;

/* Rows gathered from the sequences that run a sub-layer: which sequence and row of x each compact row comes from. */
typedef struct {
  int64_t rows;
  int64_t *sequence, *row, *offset;  /* per compact row: its sequence, its row of x, its index in its sequence */
} gathered_t;

/* The rows of the sequences that run a sub-layer (`attention` or `mlp` of the plan), normalized into h. */
static void gather(const layer_t* L, const ELEMENT* x, const float* norm, float eps, const sequence_t* seqs,
                   int64_t sequences, const step_t* plan, int mlp, ELEMENT* h, gathered_t* g) {
  int64_t d = L->o.out_features, n = 0, row = 0;
  for (int64_t s = 0; s < sequences; ++s) {
    if (mlp ? plan[s].mlp : plan[s].attention) {
      NORM(x + row * d, norm, h + n * d, seqs[s].rows, d, eps);
      for (int64_t r = 0; r < seqs[s].rows; ++r) {
        g->sequence[n + r] = s;
        g->row[n + r] = row + r;
        g->offset[n + r] = r;
      }
      n += seqs[s].rows;
    }
    row += seqs[s].rows;
  }
  g->rows = n;
}

/* Compact row r's q/k heads rotated, its keys and values written after its sequence's past slots of layer `layer`,
   and its mask row over its sequence's buffer (0 where it may look, -inf elsewhere). */
static void place_row(const layer_t* L, const sequence_t* seq, const step_t* step, int64_t layer, int64_t j,
                      ELEMENT* row, const ELEMENT* cos_table, const ELEMENT* sin_table, float* mask) {
  int64_t dim = L->head_dim, heads = L->heads, kv_heads = L->kv_heads, past = step->past, slots = seq->slots;
  int64_t position = seq->positions ? seq->positions[j] : past + j;
  for (int64_t head = 0; head < heads + kv_heads; ++head)
    rotate(row + head * dim, cos_table + position * dim, sin_table + position * dim, dim);
  ELEMENT *keys = seq->keys + layer * seq->layer_stride, *values = seq->values + layer * seq->layer_stride;
  for (int64_t g = 0; g < kv_heads; ++g) {
    memcpy(keys + (g * slots + past + j) * dim, row + (heads + g) * dim, dim * sizeof(ELEMENT));
    memcpy(values + (g * slots + past + j) * dim, row + (heads + kv_heads + g) * dim, dim * sizeof(ELEMENT));
  }
  for (int64_t t = 0; t < slots; ++t) {
    int64_t c = t - past;
    int visible = c < 0 || (c < seq->rows && (seq->chunk_mask ? seq->chunk_mask[j * seq->rows + c] != 0 : c <= j));
    mask[t] = visible ? 0.0f : -INFINITY;
  }
}

/* Several sequences' chunks (x: their rows one after another) through layers [first, first + count) in place, as
   `plan` says each runs each layer: x += o(attention(rotary(qkv(norm(x))))), each chunk attending over its own
   cache and its own rows, its keys and values written at slots past.. of its own buffers; then
   x += down(up(norm(x)) · silu(gate(norm(x)))). Each linear runs once over the rows of every sequence that runs
   it; a row's arithmetic never depends on the others, so each sequence gets the bits it gets alone. cos_table,
   sin_table: [positions, dim]. */
void LAYERS(const layer_t* layers, int64_t first, int64_t count, ELEMENT* x, int64_t sequences,
            const sequence_t* seqs, const step_t* plan, const ELEMENT* cos_table, const ELEMENT* sin_table,
            float scaling) {
  const layer_t* L0 = layers + first;
  int64_t d = L0->o.out_features, dim = L0->head_dim, heads = L0->heads, kv_heads = L0->kv_heads;
  int64_t qkv_width = L0->qkv.out_features, inter = L0->gate.out_features, group = heads / kv_heads;
  int64_t rows = 0, max_slots = 0;
  for (int64_t s = 0; s < sequences; ++s) {
    rows += seqs[s].rows;
    if (seqs[s].slots > max_slots) max_slots = seqs[s].slots;
  }
  ELEMENT* work = malloc(rows * (2 * d + qkv_width + heads * dim + 2 * inter) * sizeof(ELEMENT));
  ELEMENT *h = work, *sum = h + rows * d, *qkv = sum + rows * d, *attended = qkv + rows * qkv_width;
  ELEMENT *gate = attended + rows * heads * dim, *up = gate + rows * inter;
  float* mask = malloc(rows * max_slots * sizeof(float));
  int64_t* maps = malloc(6 * rows * sizeof(int64_t));
  /* one for attention, one for the MLP: a thread may still read the first's count while another fills the second */
  gathered_t g = {0, maps, maps + rows, maps + 2 * rows}, gm = {0, maps + 3 * rows, maps + 4 * rows, maps + 5 * rows};
  for (int64_t i = first; i < first + count; ++i) {
    const layer_t* L = layers + i;
    const step_t* at = plan + (i - first) * sequences;
#pragma omp parallel
    {  /* one team for the whole layer: the kernels' loops are shared out (`omp for`), the row-wise steps run once */
#pragma omp single
      gather(L, x, L->input_norm, L->input_eps, seqs, sequences, at, 0, h, &g);
      if (g.rows) {
        run_linear(&L->qkv, h, 0, qkv, g.rows, 0);
#pragma omp single
        for (int64_t r = 0; r < g.rows; ++r)
          place_row(L, seqs + g.sequence[r], at + g.sequence[r], i, g.offset[r], qkv + r * qkv_width, cos_table,
                    sin_table, mask + r * max_slots);
#pragma omp for collapse(2) schedule(static)
        for (int64_t r = 0; r < g.rows; ++r)
          for (int64_t head = 0; head < heads; ++head) {
            const sequence_t* seq = seqs + g.sequence[r];
            int64_t layer_offset = i * seq->layer_stride + (head / group) * seq->slots * dim;
            attend_head(qkv + r * qkv_width + head * dim, seq->keys + layer_offset, seq->values + layer_offset,
                        mask + r * max_slots, attended + (r * heads + head) * dim, dim, seq->slots, scaling);
          }
        run_linear(&L->o, attended, 0, sum, g.rows, 0);
#pragma omp single
        for (int64_t r = 0; r < g.rows; ++r) add_into(x + g.row[r] * d, sum + r * d, d);
      }
#pragma omp single
      gather(L, x, L->post_norm, L->post_eps, seqs, sequences, at, 1, h, &gm);
      if (gm.rows) {
        run_linear(&L->gate, h, 0, gate, gm.rows, 1);
        run_linear(&L->up, h, gate, up, gm.rows, 2);
        run_linear(&L->down, up, 0, sum, gm.rows, 0);
#pragma omp single
        for (int64_t r = 0; r < gm.rows; ++r) add_into(x + gm.row[r] * d, sum + r * d, d);
      }
    }
  }
  free(maps);
  free(mask);
  free(work);
}
