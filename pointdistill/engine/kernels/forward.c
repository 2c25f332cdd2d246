/* Path lookup (compiled in, runnable on this CPU) and the whole-network forward over a table. */
#include <string.h>

#include "kernels.h"
#include "../../cpu_features.h"

static const char *const NAMES[KERNEL_PATHS] = {"generic", "scalar", "avx2", "avx512", "neon"};

const char *kernel_name(int code) { return code >= 0 && code < KERNEL_PATHS ? NAMES[code] : "unknown"; }

const struct kernel_table *kernel_table_for(int code) {
    switch (code) {
    case KERNEL_GENERIC: return &generic_kernels;
#ifdef POINTDISTILL_X86_KERNELS
    case KERNEL_SCALAR: return &scalar_kernels;
    case KERNEL_AVX2: return &avx2_kernels;
    case KERNEL_AVX512: return &avx512_kernels;
#endif
#ifdef POINTDISTILL_NEON_KERNELS
    case KERNEL_NEON: return &neon_kernels;
#endif
    default: return NULL;
    }
}

int kernel_runnable(int code) {
    if (kernel_table_for(code) == NULL) return 0;
    switch (code) {
    case KERNEL_SCALAR: return cpu_has_popcnt();
    case KERNEL_AVX2: return cpu_has_avx2();
    case KERNEL_AVX512: return cpu_has_avx512();
    default: return 1;  /* generic: plain C; neon: baseline on AArch64 */
    }
}

/* ---------------------------------------------------------------- distinct rows */

/* the smallest power of two >= 2 n: the hash table's size (load factor <= 1/2) */
static index_t table_size(index_t n) {
    index_t size = 1;
    while (size < 2 * n) size *= 2;
    return size;
}

static uint64_t row_hash(const uint64_t *row, index_t words) {
    uint64_t h = 0x9e3779b97f4a7c15u;
    for (index_t j = 0; j < words; j++) {
        h = (h ^ row[j]) * 0xbf58476d1ce4e5b9u;
        h ^= h >> 31;
    }
    return h;
}

/* Rows are a word or two after the stem: compared and copied inline, not by calls into libc. */
static inline int rows_equal(const uint64_t *a, const uint64_t *b, index_t words) {
    for (index_t j = 0; j < words; j++)
        if (a[j] != b[j]) return 0;
    return 1;
}

/* Copies the distinct rows of x [n, words] to unique in order of first appearance; row_of[i] is the
 * index in unique of row i. table: int32 [table_size(n)] scratch. Returns the number of distinct rows. */
static index_t distinct_rows(const uint64_t *x, index_t n, index_t words, uint64_t *unique, int32_t *row_of,
                             int32_t *table) {
    const index_t size = table_size(n);
    memset(table, 0xff, size * sizeof(int32_t));
    index_t count = 0;
    for (index_t i = 0; i < n; i++) {
        const uint64_t *row = x + i * words;
        index_t slot = (index_t)(row_hash(row, words) & (uint64_t)(size - 1));
        while (table[slot] >= 0 && !rows_equal(unique + table[slot] * words, row, words))
            slot = (slot + 1) & (size - 1);
        if (table[slot] < 0) {
            table[slot] = (int32_t)count;
            for (index_t j = 0; j < words; j++) unique[count * words + j] = row[j];
            count++;
        }
        row_of[i] = table[slot];
    }
    return count;
}

/* out [n, words] row i = rows[row_of[i]] (a traced point layer, from its distinct rows) */
static void expand_rows(const uint64_t *rows, const int32_t *row_of, index_t n, index_t words, uint64_t *out) {
    for (index_t i = 0; i < n; i++) memcpy(out + i * words, rows + row_of[i] * words, words * sizeof(uint64_t));
}

/* ---------------------------------------------------------------- forward */

/* the widest point-layer row, in words (stem included) */
static index_t widest_point_row(const struct plan *p) {
    index_t words = p->stem_out_words;
    for (index_t i = 0; i < p->point_count; i++)
        if (p->point_layers[i].out_words > words) words = p->point_layers[i].out_words;
    return words;
}

static index_t widest_cloud_row(const struct plan *p) {
    index_t words = p->pool.out_words;
    for (index_t i = 0; i < p->head_count; i++)
        if (p->head_layers[i].out_words > words) words = p->head_layers[i].out_words;
    return words;
}

/* ---------------------------------------------------------------- real-valued shortcuts */

enum { SHORTCUT_ROWS = 64 };  /* points per block: a block's real values stay in L1/L2 */

/* the widest real-valued row (stem, shortcut layers, real-valued pooled and head layers), in channels */
static index_t widest_real_row(const struct plan *p) {
    index_t width = p->stem_outputs;
    for (index_t i = 0; p->stem_outputs && i < p->point_count; i++)
        if (p->point_layers[i].outputs > width) width = p->point_layers[i].outputs;
    if (p->pool_real && p->pool.outputs > width) width = p->pool.outputs;
    for (index_t i = 0; p->pool_real && i < p->head_count; i++)
        if (p->head_layers[i].outputs > width) width = p->head_layers[i].outputs;
    return width;
}

/* x float32 [rows, K] with its sign bits [rows, words] -> y float32 [rows, M] (struct binary_layer);
 * counts: int32 [rows, M] scratch */
static void shortcut_layer(const struct kernel_table *k, const struct binary_layer *layer, const float *x,
                           const uint64_t *bits, index_t rows, int32_t *counts, float *y) {
    k->counts(bits, layer->w, rows, layer->groups, layer->words, layer->outputs, counts);
    k->shortcut(counts, x, layer->scale, layer->offset, rows, layer->inputs, layer->outputs, y);
}

/* the real-valued layers' scratch: two real blocks and counts [SHORTCUT_ROWS, widest real], the least
 * popcounts of the real-valued pooled layer [widest real], two bit blocks [SHORTCUT_ROWS, widest words] */
struct real_scratch {
    float *real[2];
    int32_t *counts, *least;
    uint64_t *bits[2];
};

static index_t widest_row(const struct plan *p) {
    const index_t point = widest_point_row(p), cloud = widest_cloud_row(p);
    return point > cloud ? point : cloud;
}

static index_t real_scratch_bytes(const struct plan *p) {
    if (!p->stem_outputs && !p->pool_real) return 0;
    return 4 * (3 * SHORTCUT_ROWS + 1) * widest_real_row(p) + 8 * 2 * SHORTCUT_ROWS * widest_row(p);
}

/* the layout of real_scratch_bytes(p) bytes at base (8-byte aligned) */
static struct real_scratch real_scratch_at(const struct plan *p, void *base) {
    const index_t width = widest_real_row(p), words = widest_row(p);
    struct real_scratch s;
    s.bits[0] = base, s.bits[1] = s.bits[0] + SHORTCUT_ROWS * words;
    s.real[0] = (float *)(s.bits[1] + SHORTCUT_ROWS * words), s.real[1] = s.real[0] + SHORTCUT_ROWS * width;
    s.counts = (int32_t *)(s.real[1] + SHORTCUT_ROWS * width), s.least = s.counts + SHORTCUT_ROWS * width;
    return s;
}

/* One cloud's n points (points float32 [n, 3]) through the stem and the shortcut layers, a block of points
 * at a time; out: the last layer's sign bits [n, words], the pooled layer's input. trace: NULL, or the
 * stem's and point layers' arrays already offset to this cloud. */
static void shortcut_points(const struct plan *p, const struct kernel_table *k, const float *points, index_t n,
                            uint64_t *const *trace, const struct real_scratch *s, uint64_t *out) {
    float *const *real = s->real;
    int32_t *counts = s->counts;
    uint64_t *const *block_bits = s->bits;
    for (index_t start = 0; start < n; start += SHORTCUT_ROWS) {
        const index_t rows = n - start < SHORTCUT_ROWS ? n - start : SHORTCUT_ROWS;
        index_t width = p->stem_outputs, out_words = p->stem_out_words;
        k->stem_real(points + 3 * start, p->stem_w, p->stem_scale, p->stem_offset, rows, p->m16, p->stem_outputs,
                     real[0]);
        for (index_t i = 0; i <= p->point_count; i++) {  /* i: the output of the stem (0) or point layer i - 1 */
            if (i) {
                const struct binary_layer *layer = &p->point_layers[i - 1];
                shortcut_layer(k, layer, real[(i - 1) % 2], block_bits[(i - 1) % 2], rows, counts, real[i % 2]);
                width = layer->outputs, out_words = layer->out_words;
            }
            uint64_t *bits = i == p->point_count ? out + start * out_words : block_bits[i % 2];
            k->signs(real[i % 2], i ? p->point_layers[i - 1].read_at : p->stem_read_at, rows, width, out_words, bits);
            if (trace) memcpy(trace[i] + start * out_words, bits, rows * out_words * sizeof(uint64_t));
        }
    }
}

/* the real-valued pooled layer over one cloud's rows (x [rows, words], their least popcounts the same as
 * over all its points) -> y float32 [pool.outputs]: scale * (K - 2 P) + offset */
static void pool_real_values(const struct plan *p, const struct kernel_table *k, const uint64_t *x, index_t rows,
                             const float *offset, const struct real_scratch *s, float *y) {
    const struct binary_layer *pool = &p->pool;
    const int32_t k32 = (int32_t)pool->inputs;
    k->least(x, pool->w, rows, pool->groups, pool->words, pool->outputs, s->least);
    for (index_t c = 0; c < pool->outputs; c++) y[c] = pool->scale[c] * (float)(k32 - 2 * s->least[c]) + offset[c];
}

/* One cloud's pooled real values (pooled float32 [pool.outputs], in s->real[0]) through the head's shortcut
 * layers; h: the last one's output [last_outputs]. trace: NULL, or the pooled and head layers' arrays
 * already offset to this cloud. */
static void shortcut_head(const struct plan *p, const struct kernel_table *k, const float *pooled,
                          uint64_t *const *trace, const struct real_scratch *s, float *h) {
    const float *x = pooled;
    uint64_t *bits = trace ? trace[0] : s->bits[0];
    k->signs(x, p->pool.read_at, 1, p->pool.outputs, p->pool.out_words, bits);
    for (index_t i = 0; i < p->head_count; i++) {
        const struct binary_layer *layer = &p->head_layers[i];
        float *y = i == p->head_count - 1 ? h : s->real[(i + 1) % 2];
        shortcut_layer(k, layer, x, bits, 1, s->counts, y);
        bits = trace ? trace[1 + i] : s->bits[(i + 1) % 2];
        if (trace || i < p->head_count - 1) k->signs(y, layer->read_at, 1, layer->outputs, layer->out_words, bits);
        x = y;
    }
}

/* work layout, for one cloud: stem bits [n, stem_out_words], two ping-pong row buffers
 * [n, widest], two cloud rows [widest], counts int32 [last_outputs], row_of int32 [n],
 * the hash table int32 [table_size(n)], then (with shortcuts) the real-valued layers' scratch */
index_t plan_work_bytes(const struct plan *p, index_t n) {
    const index_t limit = (index_t)1 << 40;
    const index_t widest = widest_point_row(p);
    if (n < 1 || n > limit || widest > limit / n) return -1;
    return 8 * (n * p->stem_out_words + 2 * n * widest + 2 * widest_cloud_row(p))
         + 4 * (p->last_outputs + n + table_size(n)) + 8 + real_scratch_bytes(p);
}

void plan_forward(const struct plan *p, const struct kernel_table *k, const float *points, index_t clouds,
                  index_t n, const int64_t *pool_thr, const float *pool_offset, uint64_t *const *trace, void *work,
                  float *h) {
    const index_t widest = widest_point_row(p), cloud_widest = widest_cloud_row(p);
    uint64_t *stem_bits = work, *rows[2] = {stem_bits + n * p->stem_out_words, stem_bits + n * p->stem_out_words + n * widest};
    uint64_t *cloud_rows[2] = {rows[1] + n * widest, rows[1] + n * widest + cloud_widest};
    int32_t *counts = (int32_t *)(cloud_rows[1] + cloud_widest), *row_of = counts + p->last_outputs,
            *table = row_of + n;
    /* after the hash table, rounded up to a whole word (plan_work_bytes leaves 8 bytes for it) */
    const struct real_scratch scratch =
        real_scratch_at(p, (uint64_t *)work + (((char *)(table + table_size(n)) - (char *)work) + 7) / 8);
    uint64_t *cloud_trace[1 + PLAN_MAX_POINT_LAYERS];
    for (index_t b = 0; b < clouds; b++) {
        uint64_t *x;
        index_t u;
        if (p->stem_outputs) {
            for (index_t i = 0; trace && i <= p->point_count; i++)
                cloud_trace[i] = trace[i] + b * n * (i ? p->point_layers[i - 1].out_words : p->stem_out_words);
            shortcut_points(p, k, points + b * n * 3, n, trace ? cloud_trace : NULL, &scratch, rows[0]);
            x = rows[0], u = n;
        } else {
            uint64_t *stem_out = trace ? trace[0] + b * n * p->stem_out_words : stem_bits;
            k->stem(points + b * n * 3, p->stem_w, p->stem_scale, p->stem_offset, n, p->m16, p->stem_out_words,
                    stem_out);
            u = distinct_rows(stem_out, n, p->stem_out_words, rows[0], row_of, table);
            x = rows[0];
            for (index_t i = 0; i < p->point_count; i++) {
                const struct binary_layer *layer = &p->point_layers[i];
                uint64_t *y = rows[(i + 1) % 2];
                k->binary(x, layer->w, layer->thr, u, layer->groups, layer->words, layer->out_words, y);
                if (trace) expand_rows(y, row_of, n, layer->out_words, trace[1 + i] + b * n * layer->out_words);
                x = y;
            }
        }
        if (p->pool_real) {
            pool_real_values(p, k, x, u, pool_offset, &scratch, scratch.real[0]);
            for (index_t i = 0; trace && i <= p->head_count; i++)
                cloud_trace[i] = trace[1 + p->point_count + i]
                               + b * (i ? p->head_layers[i - 1].out_words : p->pool.out_words);
            shortcut_head(p, k, scratch.real[0], trace ? cloud_trace : NULL, &scratch, h + b * p->last_outputs);
            continue;
        }
        uint64_t *pooled = trace ? trace[1 + p->point_count] + b * p->pool.out_words : cloud_rows[0];
        k->pool(x, p->pool.w, pool_thr, u, p->pool.groups, p->pool.words, p->pool.out_words, pooled);
        x = pooled;
        for (index_t i = 0; i < p->head_count; i++) {
            const struct binary_layer *layer = &p->head_layers[i];
            uint64_t *y = trace ? trace[2 + p->point_count + i] + b * layer->out_words : cloud_rows[(i + 1) % 2];
            k->binary(x, layer->w, layer->thr, 1, layer->groups, layer->words, layer->out_words, y);
            x = y;
        }
        k->counts(x, p->last_w, 1, p->last_groups, p->last_words, p->last_outputs, counts);
        float *hb = h + b * p->last_outputs;
        for (index_t m = 0; m < p->last_outputs; m++) {
            /* NumPy's order: dot as float32, then scale * dot + offset (no FMA), then clip to [-1, 1] */
            const float dot = (float)(p->last_inputs - 2 * (index_t)counts[m]);
            const float v = p->last_scale[m] * dot + p->last_offset[m];
            hb[m] = hardtanh(v);
        }
    }
}
