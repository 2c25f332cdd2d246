/* The engine's XNOR/popcount kernels: layouts, one table of functions per instruction-set path,
 * and the whole-network forward built on a table. Plain C (no Python), so the same sources build
 * the extension and the stand-alone test harness (tests/engine/kernel_harness.c).
 *
 * Layouts (all little-endian, C order):
 *   packed bits   uint64 [rows, words]: channel k at bit k % 64 of word k // 64, 1 = +1
 *   weights       uint64 [groups, words, 8]: output channel 8 g + lane, word j at [g][j][lane]
 *                 (word j of 8 output channels side by side); padding channels are 0
 *   thresholds    int64 [groups * 8]: output bit = popcount(x XOR w) <= threshold (-1: never)
 *   stem weights  float32 [3, M16] (x, y, z coefficient rows), scale/offset float32 [M16], M16 = M
 *                 rounded up to 16; output bit m = scale*((wx*px + wy*py) + wz*pz) + offset >= 0,
 *                 evaluated in exactly that order without fused multiply-add
 * Every path gives the same bits; paths differ only in the instructions they use.
 */
#ifndef POINTDISTILL_ENGINE_KERNELS_H
#define POINTDISTILL_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t index_t;

/* One instruction-set path. Sizes are in the units of the layouts above. */
struct kernel_table {
    const char *name;
    /* points float32 [rows, 3] -> out [rows, out_words] */
    void (*stem)(const float *points, const float *w, const float *scale, const float *offset, index_t rows,
                 index_t m16, index_t out_words, uint64_t *out);
    /* x [rows, words] -> out [rows, out_words] (groups * 8 <= out_words * 64) */
    void (*binary)(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t rows, index_t groups,
                   index_t words, index_t out_words, uint64_t *out);
    /* one cloud's x [points, words] -> out [out_words]: bit m = OR over points of the layer's bit m
     * (the minimum popcount over the points against the threshold), the [points, M] output never made */
    void (*pool)(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points, index_t groups,
                 index_t words, index_t out_words, uint64_t *out);
    /* x [rows, words] -> int32 [rows, outputs]: popcount(x XOR w) per row and output channel */
    void (*counts)(const uint64_t *x, const uint64_t *w, index_t rows, index_t groups, index_t words,
                   index_t outputs, int32_t *out);
    /* x [points, words] -> int32 [outputs]: the least popcount(x XOR w) over the points per output channel
     * (the real-valued pooled layer's max-pooling) */
    void (*least)(const uint64_t *x, const uint64_t *w, index_t points, index_t groups, index_t words,
                  index_t outputs, int32_t *out);
    /* the real-valued layers (kernels/real_body.h): the real stem, points float32 [rows, 3] -> x [rows,
     * outputs]; a shortcut layer's float part (struct binary_layer), its popcounts int32 [rows, M] and
     * its input x float32 [rows, K] -> y float32 [rows, M]; the bits the next layer reads of real values,
     * x [rows, width] -> bits [rows, out_words], bit c = (x[c] >= at[c]) (at float32 [width], the reader's
     * learned input thresholds; NULL: 0, the signs) */
    void (*stem_real)(const float *points, const float *w, const float *scale, const float *offset, index_t rows,
                      index_t m16, index_t outputs, float *x);
    void (*shortcut)(const int32_t *counts, const float *x, const float *scale, const float *offset, index_t rows,
                     index_t in, index_t out, float *y);
    void (*signs)(const float *x, const float *at, index_t rows, index_t width, index_t out_words, uint64_t *out);
};

/* clip(v, -1, 1): NumPy's np.clip for every finite v (-0.0 stays -0.0); a plain select the compiler vectorises */
static inline float hardtanh(float v) { return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v); }

/* Path codes: the index of each path in kernel_tables(). */
enum { KERNEL_GENERIC, KERNEL_SCALAR, KERNEL_AVX2, KERNEL_AVX512, KERNEL_NEON, KERNEL_PATHS };

/* kernel_table for a path code, or NULL where this build has no such path. */
const struct kernel_table *kernel_table_for(int code);
/* whether this CPU can run the path (compiled in and its instructions present) */
int kernel_runnable(int code);
/* a path's name whether or not it is compiled in ("generic", "scalar", "avx2", "avx512", "neon") */
const char *kernel_name(int code);

extern const struct kernel_table generic_kernels;   /* portable C, no popcount instruction */
#ifdef POINTDISTILL_X86_KERNELS
extern const struct kernel_table scalar_kernels;    /* x86-64 POPCNT, 64 bits at a time */
extern const struct kernel_table avx2_kernels;      /* AVX2: nibble-lookup (vpshufb) popcount, 256 bits */
extern const struct kernel_table avx512_kernels;    /* AVX-512 F/BW + VPOPCNTDQ, 512 bits */
/* iterations x 8 independent VPOPCNTQ on registers: the popcount peak (benchmark; AVX-512 CPUs only) */
uint64_t avx512_popcount_peak(index_t iterations);
#endif
#ifdef POINTDISTILL_NEON_KERNELS
extern const struct kernel_table neon_kernels;      /* ARM64 Advanced SIMD: vcntq_u8 + pairwise adds */
#endif

/* A binary layer in the kernels' layout. */
struct binary_layer {
    const uint64_t *w;
    const int64_t *thr;  /* NULL for the pooled layer, whose thresholds depend on the point count,
                          * and for a shortcut layer */
    index_t groups, words, out_words;
    /* a shortcut layer (real values in and out, M a multiple or a divisor of K): y[c] = s[c] +
     * clip(scale[c] * (K - 2 popcount(sign(x) XOR w_c)) + offset[c], -1, 1), float32, in that order, no
     * FMA, where s[c] = x[c % K] (M >= K) or (x[c] + x[c + M] + ... + x[c + K - M]) / (K / M) summed left to
     * right (M < K); the real-valued pooled layer: scale, inputs and outputs (its offsets depend on
     * the point count: plan_forward takes them per call); NULL and 0 for the other layers */
    const float *scale, *offset;
    index_t inputs, outputs;
    /* a layer with real outputs: the thresholds float32 [outputs] the next layer reads them at (its
     * input_threshold), or NULL: 0 (the signs) */
    const float *read_at;
};

/* the most point layers plan_forward takes */
#define PLAN_MAX_POINT_LAYERS 64

/* A whole exported network up to the float hidden layer (the classifier runs outside). */
struct plan {
    const float *stem_w, *stem_scale, *stem_offset;
    index_t m16, stem_out_words;
    /* 0: the stem gives bits and the point layers are threshold layers; > 0: real-valued shortcuts:
     * the stem gives stem_outputs real values per point, clip(scale*((wx*px + wy*py) + wz*pz) + offset,
     * -1, 1), and every point layer is a shortcut layer */
    index_t stem_outputs;
    const float *stem_read_at;  /* the real stem's outputs: as binary_layer.read_at */
    index_t point_count, head_count;
    const struct binary_layer *point_layers, *head_layers;
    struct binary_layer pool;
    /* 0: the pooled layer gives bits (thresholds for n points), the head layers are threshold layers
     * and h is the binary_float layer's output; 1: head shortcuts: the pooled layer gives real values,
     * y[m] = scale[m] * (K - 2 P[m]) + offset_n[m], P[m] the least popcount over the points, every head
     * layer is a shortcut layer and h is the last one's output (last_outputs its width, the other
     * last_ fields unused) */
    int pool_real;
    /* binary_float layer: h = clip(scale * (inputs - 2 popcount) + offset, -1, 1) */
    const uint64_t *last_w;
    index_t last_groups, last_words, last_outputs, last_inputs;
    const float *last_scale, *last_offset;
};

/* Runs every cloud through the network, one cloud at a time so that its activations stay in cache.
 * A layer is a function of one point's bits, and pooling is an OR over points, so after the stem
 * each cloud's distinct rows alone go through the point layers and the pooled layer (real clouds
 * repeat about half of their first-layer codes); the output bits are the same. With shortcuts a
 * point carries real values, so every point goes through, SHORTCUT_ROWS at a time; the trace then
 * holds the bits the next layer reads of the stem's and point layers' real outputs (their signs, or
 * x >= read_at) (and with head shortcuts, of the pooled and head layers' real outputs).
 * points float32 [clouds, n, 3]; pool_thr int64 [pool.groups * 8] (for n points; NULL with
 * pool_real), pool_offset float32 [pool.outputs] (offset_n, with pool_real; else NULL);
 * trace NULL, or one array per layer output, whole batch: the stem's and point layers' bits
 * [clouds, n, words], then the pooled and head layers' [clouds, words];
 * work: plan_work_bytes(p, n) bytes (8-byte aligned); h float32 [clouds, last_outputs]. */
void plan_forward(const struct plan *p, const struct kernel_table *k, const float *points, index_t clouds,
                  index_t n, const int64_t *pool_thr, const float *pool_offset, uint64_t *const *trace, void *work,
                  float *h);

/* Bytes of work space plan_forward needs for clouds of n points, or -1 if that overflows. */
index_t plan_work_bytes(const struct plan *p, index_t n);

#endif
