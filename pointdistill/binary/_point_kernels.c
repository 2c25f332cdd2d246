/* Training kernels of the fused binary point layer (pointdistill.binary.point_pool).
 *
 * A binary point layer multiplies +-1 activations a[b, n, :] (K channels) by +-1 weight rows
 * w[c, :]: the integer dot is D = K - 2 * p with the popcount p = popcount(a XOR w) <= K <= 255.
 * Training needs, per cloud b and output channel c, the extreme of D over the N points (the max
 * pooling after a monotone BatchNorm), how many points reach it (torch splits a tied max's
 * gradient evenly), in the backward pass a sum over those tied points, and the K x K Gram matrix
 * of the signs for the BatchNorm statistics. The float [B, N, C] product is never formed: the
 * popcounts are kept as bytes, one pass computes them with their extremes, and the tie passes
 * read the bytes back.
 *
 * Layouts (little-endian, C order; P = 32 G channels, padded):
 *   sign bits    uint64 [R, W]: channel k at bit k % 64 of word k / 64, 1 = +1 (x >= 0), padding 0
 *   popcounts    uint8  [B, N, P] (the point layers); the pooled layer keeps one cloud's [N, P]
 *                in a scratch buffer while it finds the extremes and lists the ties
 *   extremes, kinds: uint8 [B, P]; counts int32 [B, P]; ties int32 [B, cap] as n * P + c
 * The fused point layer (binary linear -> BatchNorm -> Hardtanh) reads the same popcount bytes:
 * its output and backward are affine in p per (cloud, channel).
 * The fused float point layer (pointdistill.binary.float_layer: float linear -> BatchNorm ->
 * ReLU / Hardtanh) has its statistics, activation and backward passes here too, and both fused
 * layers share the tile-by-tile input and weight gradient products.
 * Paths, chosen by the caller (`path`): 2 = AVX-512 (F, BW, VPOPCNTDQ) popcounts and extremes with
 * the AVX2 bodies for everything else, 1 = AVX2 + POPCNT, 0 = generic C (no vector or popcount
 * instruction at all). Popcounts, extremes, counts, Grams and tie positions are identical on
 * every path, and so are the float results (the same operations in the same order), with one
 * exception: the fused layer's input and weight gradients, which the vector paths take tile by
 * tile with fused multiply-adds (the same floats on AVX2 and AVX-512) and the generic path leaves
 * to torch's matmuls (equal within float32 rounding). The vector paths need FMA (cpu_features.h).
 * Threads: every entry point splits its clouds (rows) [b0, b1) into `threads` contiguous slices
 * (slice_start) and runs them in one OpenMP parallel region. The module links the libgomp that
 * torch already loaded (the same soname), so the slices run on torch's own thread pool: no second
 * set of threads competes for the cores with torch's workers while they spin between operations.
 * The slices depend only on the sizes and the thread count, so the results are deterministic.
 * Built without OpenMP, the slices run one after the other.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../cpu_features.h"
#include "../size_checks.h"

typedef Py_ssize_t ssize;

#if HAVE_X86
#define AVX2_TARGET __attribute__((target("avx2,popcnt")))
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))
#else
#define AVX2_TARGET
#endif
enum { PATH_GENERIC = 0, PATH_AVX2 = 1, PATH_AVX512 = 2 };
#define INLINE inline __attribute__((always_inline))

/* ------------------------------------------------------------------ bodies compiled per path */
/* Plain C bodies, compiled twice: for AVX2 + POPCNT (the compiler vectorises the byte and float
 * loops and uses the POPCNT instruction) and for a generic x86-64 / any other CPU. */

/* In place: bit c of word r <-> bit r of word c (a 64 x 64 bit matrix transposed by swapping
 * off-diagonal blocks of 32, 16, ..., 1). */
static INLINE void transpose64(uint64_t *m) {
    static const uint64_t keep[6] = {0x00000000FFFFFFFFull, 0x0000FFFF0000FFFFull, 0x00FF00FF00FF00FFull,
                                     0x0F0F0F0F0F0F0F0Full, 0x3333333333333333ull, 0x5555555555555555ull};
    for (int level = 0, j = 32; j; level++, j >>= 1)
        for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
            uint64_t t = ((m[k] >> j) ^ m[k | j]) & keep[level];
            m[k] ^= t << j;
            m[k | j] ^= t;
        }
}

/* SIGN_TABLE[v][j] = +1 where bit j of the byte v is set, else -1 (filled at module init) */
static float SIGN_TABLE[256][8];

static void fill_sign_table(void) {
    for (int v = 0; v < 256; v++)
        for (int j = 0; j < 8; j++) SIGN_TABLE[v][j] = (v >> j) & 1 ? 1.0f : -1.0f;
}

/* sign bits [R, W] rows r0..r1 -> out float32 [R, K] = +-scale[r / n_pts] (the binary activation
 * values, exactly: +-1 times a float32 magnitude per cloud). One plain-C function on every path:
 * eight signs at a time from a byte table, which the compiler vectorises. */
static void unpack_signs(const uint64_t *bits, ssize r0, ssize r1, ssize k_in, ssize words, const float *scale,
                         ssize n_pts, float *out) {
    for (ssize r = r0; r < r1; r++) {
        const uint64_t *row = bits + r * words;
        float s = scale[r / n_pts], *o = out + r * k_in;
        ssize k = 0;
        for (; k + 8 <= k_in; k += 8) {
            const float *signs = SIGN_TABLE[(row[k >> 6] >> (k & 63)) & 0xFF];
            for (int j = 0; j < 8; j++) o[k + j] = signs[j] * s;
        }
        for (; k < k_in; k++) o[k] = (row[k >> 6] >> (k & 63)) & 1 ? s : -s;
    }
}

/* x float32 [R, K] rows r0..r1 -> sign bits [R, W] */
static void pack_generic(const float *x, ssize r0, ssize r1, ssize k_in, ssize words, uint64_t *out) {
    for (ssize r = r0; r < r1; r++)
        for (ssize j = 0; j < words; j++) {
            uint64_t word = 0;
            ssize end = k_in < 64 * (j + 1) ? k_in : 64 * (j + 1);
            for (ssize k = 64 * j; k < end; k++) word |= (uint64_t)(x[r * k_in + k] >= 0.0f) << (k & 63);
            out[r * words + j] = word;
        }
}

#if HAVE_X86
static AVX2_TARGET void pack_avx2(const float *x, ssize r0, ssize r1, ssize k_in, ssize words, uint64_t *out) {
    const __m256 zero = _mm256_setzero_ps();
    for (ssize r = r0; r < r1; r++) {
        const float *row = x + r * k_in;
        for (ssize j = 0; j < words; j++) {
            uint64_t word = 0;
            ssize k = 64 * j, end = k_in < 64 * (j + 1) ? k_in : 64 * (j + 1);
            for (; k + 8 <= end; k += 8)
                word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + k), zero, _CMP_GE_OQ))
                        << (k & 63);
            for (; k < end; k++) word |= (uint64_t)(row[k] >= 0.0f) << (k & 63);
            out[r * words + j] = word;
        }
    }
}
#endif

#define PLAIN_KERNELS(SUFFIX, ATTR)                                                                      \
    /* one tied (b, c, n): grad_a[b, n, :] += coef * wq[c, :], sparse_w[c, :] += coef * a[b, n, :] */     \
    static ATTR INLINE void scatter_one_##SUFFIX(float coef, const float *a_row, const float *w_row,     \
                                                  float *grad_row, float *sparse_row, ssize k_in) {      \
        for (ssize k = 0; k < k_in; k++) grad_row[k] += coef * w_row[k];                                 \
        for (ssize k = 0; k < k_in; k++) sparse_row[k] += coef * a_row[k];                               \
    }                                                                                                    \
    /* K x K Gram matrices of the signs per cloud, and the per-cloud sums of the signs: the sign   \
     * bits are transposed 64 x 64 at a time so that each channel's bits run along the points */       \
    static ATTR void grams_##SUFFIX(const uint64_t *a, ssize b0, ssize b1, ssize n_pts, ssize words, ssize k_in, \
                                    uint64_t *cols, int32_t *gram, int32_t *sums) {                      \
        const ssize col_words = (n_pts + 63) / 64;                                                       \
        uint64_t block[64];                                                                              \
        for (ssize b = b0; b < b1; b++) {                                                                \
            for (ssize v = 0; v < col_words; v++)                                                        \
                for (ssize j = 0; j < words; j++) {                                                      \
                    for (ssize r = 0; r < 64; r++) {                                                     \
                        ssize n = 64 * v + r;                                                            \
                        block[r] = n < n_pts ? a[(b * n_pts + n) * words + j] : 0;                       \
                    }                                                                                    \
                    transpose64(block);                                                                  \
                    for (ssize i = 0; i < 64 && 64 * j + i < k_in; i++) cols[(64 * j + i) * col_words + v] = block[i]; \
                }                                                                                        \
            int32_t *g = gram + b * k_in * k_in;                                                         \
            for (ssize i = 0; i < k_in; i++) {                                                           \
                const uint64_t *ci = cols + i * col_words;                                               \
                int32_t ones = 0;                                                                        \
                for (ssize v = 0; v < col_words; v++) ones += __builtin_popcountll(ci[v]);               \
                sums[b * k_in + i] = 2 * ones - (int32_t)n_pts;                                          \
                for (ssize j = i; j < k_in; j++) {                                                       \
                    const uint64_t *cj = cols + j * col_words;                                           \
                    int32_t differ = 0;                                                                  \
                    for (ssize v = 0; v < col_words; v++) differ += __builtin_popcountll(ci[v] ^ cj[v]); \
                    g[i * k_in + j] = g[j * k_in + i] = (int32_t)n_pts - 2 * differ;                     \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

/* The fused point layer h = hardtanh(z), z[b, n, c] = A[b, c] * (p - D[b, c]) + B[b, c]: BatchNorm
 * of the scaled product is affine in the popcount per cloud and channel (A, D, B float32 [B, C],
 * D the popcount at the batch mean, so a point at the mean gets exactly beta, as in torch). The
 * same float expression, z = A * ((float)p - D) + B, gives the output and the backward's mask. */
#define LAYER_KERNELS(SUFFIX, ATTR)                                                                      \
    static ATTR void hardtanh_##SUFFIX(const uint8_t *p, const float *A, const float *D, const float *B, ssize b0, ssize b1, \
                                       ssize n_pts, ssize padded, ssize chans, float *h) {               \
        for (ssize b = b0; b < b1; b++)                                                                  \
            for (ssize n = 0; n < n_pts; n++) {                                                          \
                const uint8_t *row = p + (b * n_pts + n) * padded;                                       \
                float *out = h + (b * n_pts + n) * chans;                                                \
                for (ssize c = 0; c < chans; c++) {                                                      \
                    float z = A[b * chans + c] * ((float)row[c] - D[b * chans + c]) + B[b * chans + c];  \
                    z = z < -1.0f ? -1.0f : z;                                                           \
                    out[c] = z > 1.0f ? 1.0f : z;                                                        \
                }                                                                                        \
            }                                                                                            \
    }                                                                                                    \
    /* per (b, c): sums[b, 0, c] = sum_n g [-1 < z < 1], sums[b, 1, c] = sum_n g [-1 < z < 1] p;   \
     * float partial sums over blocks of 64 points, added up in double */                              \
    static ATTR void masked_sums_##SUFFIX(const float *restrict g, const uint8_t *restrict p,            \
                                          const float *restrict A, const float *restrict D,             \
                                          const float *restrict B, ssize b0, ssize b1, ssize n_pts,      \
                                          ssize padded, ssize chans, float *restrict part, double *restrict sums) { \
        float *part0 = part, *part1 = part + chans;                                                      \
        for (ssize b = b0; b < b1; b++) {                                                                \
            double *s0 = sums + 2 * b * chans, *s1 = s0 + chans;                                         \
            const float *a_row = A + b * chans, *d_row = D + b * chans, *b_row = B + b * chans;          \
            memset(s0, 0, 2 * chans * sizeof(double));                                                   \
            for (ssize n0 = 0; n0 < n_pts; n0 += 64) {                                                   \
                memset(part, 0, 2 * chans * sizeof(float));                                              \
                ssize n1 = n0 + 64 < n_pts ? n0 + 64 : n_pts;                                            \
                for (ssize n = n0; n < n1; n++) {                                                        \
                    const uint8_t *row = p + (b * n_pts + n) * padded;                                   \
                    const float *gr = g + (b * n_pts + n) * chans;                                       \
                    for (ssize c = 0; c < chans; c++) {                                                  \
                        float pc = (float)row[c];                                                        \
                        float z = a_row[c] * (pc - d_row[c]) + b_row[c];                                 \
                        float gc = gr[c];                                                                \
                        float d = ((z > -1.0f) & (z < 1.0f)) ? gc : 0.0f;                                \
                        part0[c] += d;                                                                   \
                        part1[c] += d * pc;                                                              \
                    }                                                                                    \
                }                                                                                        \
                for (ssize c = 0; c < chans; c++) {                                                      \
                    s0[c] += part0[c];                                                                   \
                    s1[c] += part1[c];                                                                   \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

/* out[b, n, c] = E1[c] g [-1 < z < 1] + E2[b, c] + E3[b, c] p  (BatchNorm's backward); the
 * AVX2 body does the same float operations in the same order, eight channels at a time */
static INLINE float masked_affine_one(float g, uint8_t p, float a, float d, float b, float e1, float e2, float e3) {
    float pc = (float)p;
    float z = a * (pc - d) + b;
    float scaled = e1 * g;
    float passed = ((z > -1.0f) & (z < 1.0f)) ? scaled : 0.0f;
    return passed + (e2 + e3 * pc);
}

/* one cloud's rows: out[n, c] for n < rows (g and out rows of `chans` floats, p rows of `padded`
 * bytes; A, D, B, E2, E3 point at the cloud's row of [B, C]) */
static void masked_affine_rows_generic(const float *g, const uint8_t *p, const float *A, const float *D,
                                       const float *B, const float *E1, const float *E2, const float *E3, ssize rows,
                                       ssize padded, ssize chans, float *out) {
    for (ssize n = 0; n < rows; n++)
        for (ssize c = 0; c < chans; c++)
            out[n * chans + c] = masked_affine_one(g[n * chans + c], p[n * padded + c], A[c], D[c], B[c], E1[c], E2[c],
                                                   E3[c]);
}

#if HAVE_X86
static AVX2_TARGET void masked_affine_rows_avx2(const float *g, const uint8_t *p, const float *A, const float *D,
                                                const float *B, const float *E1, const float *E2, const float *E3,
                                                ssize rows, ssize padded, ssize chans, float *out) {
    const __m256 low = _mm256_set1_ps(-1.0f), high = _mm256_set1_ps(1.0f);
    for (ssize n = 0; n < rows; n++) {
        const uint8_t *row = p + n * padded;
        ssize m = n * chans, c = 0;
        for (; c + 8 <= chans; c += 8) {
            __m256 pc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + c))));
            __m256 z = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(A + c), _mm256_sub_ps(pc, _mm256_loadu_ps(D + c))),
                                     _mm256_loadu_ps(B + c));
            __m256 pass = _mm256_and_ps(_mm256_cmp_ps(z, low, _CMP_GT_OQ), _mm256_cmp_ps(z, high, _CMP_LT_OQ));
            __m256 passed = _mm256_and_ps(pass, _mm256_mul_ps(_mm256_loadu_ps(E1 + c), _mm256_loadu_ps(g + m + c)));
            __m256 affine = _mm256_add_ps(_mm256_loadu_ps(E2 + c), _mm256_mul_ps(_mm256_loadu_ps(E3 + c), pc));
            _mm256_storeu_ps(out + m + c, _mm256_add_ps(passed, affine));
        }
        for (; c < chans; c++)
            out[m + c] = masked_affine_one(g[m + c], row[c], A[c], D[c], B[c], E1[c], E2[c], E3[c]);
    }
}
#endif

/* clouds b0..b1: out float32 [B, N, C] (path >= AVX2: the AVX2 body) */
static void masked_affine(int path, const float *g, const uint8_t *p, const float *A, const float *D, const float *B,
                          const float *E1, const float *E2, const float *E3, ssize b0, ssize b1, ssize n_pts,
                          ssize padded, ssize chans, float *out) {
    for (ssize b = b0; b < b1; b++) {
        ssize m = b * n_pts, bc = b * chans;
#if HAVE_X86
        if (path >= PATH_AVX2)
            masked_affine_rows_avx2(g + m * chans, p + m * padded, A + bc, D + bc, B + bc, E1, E2 + bc, E3 + bc, n_pts,
                                    padded, chans, out + m * chans);
        else
#endif
            masked_affine_rows_generic(g + m * chans, p + m * padded, A + bc, D + bc, B + bc, E1, E2 + bc, E3 + bc,
                                       n_pts, padded, chans, out + m * chans);
    }
}

/* ------------------------------------------------------------------ the fused layer's backward products
 * The input and weight gradients of the fused point layer, d a = d r W and d W = d r^T a, are taken
 * tile by tile (TILE points of one cloud) while the tile's d r rows are still in the L1 cache, so
 * the [B, N, C] d r and the float [B, N, K] activations are never written out:
 *   grad_a[t, k] = s_b * sum_c R[t, c] W[c, k]   (R: the tile's d r [T, C]; W: float32 [C, K])
 *   G[c, k]     += sum_t R[t, c] S[t, k]          (S: the tile's activations +-s_b [T, K])
 * Registers hold 4 rows (points, resp. channels) x 4 vectors of K, masked at the end of K; every
 * sum runs over c (resp. t) in order with fused multiply-adds, the AVX-512 and AVX2 bodies in the
 * same order, so they give the same floats (not the generic path's, which multiplies with torch). */
#define TILE 32

#if HAVE_X86
#define FMA_TARGET __attribute__((target("avx2,fma,popcnt")))

static INLINE __mmask16 lanes16(ssize left) {
    return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
}

/* The one micro-kernel of both products, NR rows of 4 vectors of columns:
 *   acc[i][j] = sum over q < steps, in order, of x[i * xi + q * xq] * y[q * k_in + j-th vector]
 * grad_a: x = R rows (xi = C, xq = 1), y = W, q = c; G: x = R columns (xi = 1, xq = C), y = S, q = t. */
#define OUTER_BLOCK_512(NR)                                                                              \
    static AVX512_TARGET INLINE void outer_block##NR##_avx512(const float *x, ssize xi, ssize xq, const float *y, \
                                                             ssize steps, ssize k_in, const __mmask16 *m, \
                                                             __m512 acc[NR][4]) {                        \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();                                 \
        for (ssize q = 0; q < steps; q++) {                                                              \
            __m512 yv[4];                                                                                \
            for (int j = 0; j < 4; j++) yv[j] = _mm512_maskz_loadu_ps(m[j], y + q * k_in + 16 * j);      \
            for (int i = 0; i < NR; i++) {                                                               \
                __m512 r = _mm512_set1_ps(x[i * xi + q * xq]);                                           \
                for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(r, yv[j], acc[i][j]);            \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    /* rows t .. t + NR of grad_a = s R W, and channels c .. c + NR of G += R^T S (64 columns) */        \
    static AVX512_TARGET INLINE void grad_a_block##NR##_avx512(const float *R, ssize chans, const float *W, ssize k_in, \
                                                              const __mmask16 *m, float s, float *out) {  \
        __m512 acc[NR][4];                                                                               \
        outer_block##NR##_avx512(R, chans, 1, W, chans, k_in, m, acc);                                   \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++)                                                                  \
                _mm512_mask_storeu_ps(out + i * k_in + 16 * j, m[j], _mm512_mul_ps(acc[i][j], _mm512_set1_ps(s))); \
    }                                                                                                    \
    static AVX512_TARGET INLINE void grad_w_block##NR##_avx512(const float *R, ssize rows, ssize chans, const float *S, \
                                                              ssize k_in, const __mmask16 *m, float *G) { \
        __m512 acc[NR][4];                                                                               \
        outer_block##NR##_avx512(R, 1, chans, S, rows, k_in, m, acc);                                    \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++) {                                                                \
                float *g = G + i * k_in + 16 * j;                                                        \
                _mm512_mask_storeu_ps(g, m[j], _mm512_add_ps(_mm512_maskz_loadu_ps(m[j], g), acc[i][j])); \
            }                                                                                            \
    }
OUTER_BLOCK_512(4)
OUTER_BLOCK_512(1)

static AVX512_TARGET void tile_products_avx512(const float *R, const float *S, ssize rows, ssize chans, const float *W,
                                               ssize k_in, float s, float *grad_a, float *G) {
    for (ssize k0 = 0; k0 < k_in; k0 += 64) {
        __mmask16 m[4];
        for (int j = 0; j < 4; j++) m[j] = lanes16(k_in - k0 - 16 * j);
        float *out = grad_a ? grad_a + k0 : NULL;
        ssize t = out ? 0 : rows, c = 0;  /* grad_a NULL: the weight gradient only */
        for (; t + 4 <= rows; t += 4) grad_a_block4_avx512(R + t * chans, chans, W + k0, k_in, m, s, out + t * k_in);
        for (; t < rows; t++) grad_a_block1_avx512(R + t * chans, chans, W + k0, k_in, m, s, out + t * k_in);
        for (; c + 4 <= chans; c += 4) grad_w_block4_avx512(R + c, rows, chans, S + k0, k_in, m, G + c * k_in + k0);
        for (; c < chans; c++) grad_w_block1_avx512(R + c, rows, chans, S + k0, k_in, m, G + c * k_in + k0);
    }
}

/* AVX2: the same with eight-float vectors, lane masks only at the end of K (whole: all 32 columns
 * inside K), 3 rows (12 accumulators, 3 broadcasts and one vector of y in 16 registers) */
static FMA_TARGET INLINE __m256i lanes8(ssize left) {
    const int32_t n = (int32_t)(left < 0 ? 0 : left > 8 ? 8 : left);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define OUTER_BLOCK_256(NR)                                                                              \
    static FMA_TARGET INLINE void outer_block##NR##_avx2(const float *x, ssize xi, ssize xq, const float *y, \
                                                        ssize steps, ssize k_in, const __m256i *m, int whole, \
                                                        __m256 acc[NR][4]) {                             \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();                                 \
        for (ssize q = 0; q < steps; q++) {                                                              \
            __m256 r[NR];                                                                                \
            for (int i = 0; i < NR; i++) r[i] = _mm256_broadcast_ss(x + i * xi + q * xq);                \
            for (int j = 0; j < 4; j++) {                                                                \
                __m256 yv = whole ? _mm256_loadu_ps(y + q * k_in + 8 * j)                                \
                                  : _mm256_maskload_ps(y + q * k_in + 8 * j, m[j]);                      \
                for (int i = 0; i < NR; i++) acc[i][j] = _mm256_fmadd_ps(r[i], yv, acc[i][j]);           \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    static FMA_TARGET INLINE void grad_a_block##NR##_avx2(const float *R, ssize chans, const float *W, ssize k_in, \
                                                         const __m256i *m, int whole, float s, float *out) { \
        __m256 acc[NR][4];                                                                               \
        outer_block##NR##_avx2(R, chans, 1, W, chans, k_in, m, whole, acc);                              \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++) {                                                                \
                __m256 v = _mm256_mul_ps(acc[i][j], _mm256_set1_ps(s));                                  \
                if (whole) _mm256_storeu_ps(out + i * k_in + 8 * j, v);                                  \
                else _mm256_maskstore_ps(out + i * k_in + 8 * j, m[j], v);                               \
            }                                                                                            \
    }                                                                                                    \
    static FMA_TARGET INLINE void grad_w_block##NR##_avx2(const float *R, ssize rows, ssize chans, const float *S, \
                                                         ssize k_in, const __m256i *m, int whole, float *G) { \
        __m256 acc[NR][4];                                                                               \
        outer_block##NR##_avx2(R, 1, chans, S, rows, k_in, m, whole, acc);                               \
        for (int i = 0; i < NR; i++)                                                                     \
            for (int j = 0; j < 4; j++) {                                                                \
                float *g = G + i * k_in + 8 * j;                                                         \
                if (whole) _mm256_storeu_ps(g, _mm256_add_ps(_mm256_loadu_ps(g), acc[i][j]));            \
                else _mm256_maskstore_ps(g, m[j], _mm256_add_ps(_mm256_maskload_ps(g, m[j]), acc[i][j])); \
            }                                                                                            \
    }
OUTER_BLOCK_256(3)
OUTER_BLOCK_256(1)

/* columns k0 .. k0 + 32 of both products */
static FMA_TARGET INLINE void tile_block_avx2(const float *R, const float *S, ssize rows, ssize chans, const float *W,
                                              ssize k_in, const __m256i *m, int whole, float s, float *grad_a, float *G) {
    ssize t = grad_a ? 0 : rows, c = 0;  /* grad_a NULL: the weight gradient only */
    for (; t + 3 <= rows; t += 3) grad_a_block3_avx2(R + t * chans, chans, W, k_in, m, whole, s, grad_a + t * k_in);
    for (; t < rows; t++) grad_a_block1_avx2(R + t * chans, chans, W, k_in, m, whole, s, grad_a + t * k_in);
    for (; c + 3 <= chans; c += 3) grad_w_block3_avx2(R + c, rows, chans, S, k_in, m, whole, G + c * k_in);
    for (; c < chans; c++) grad_w_block1_avx2(R + c, rows, chans, S, k_in, m, whole, G + c * k_in);
}

static FMA_TARGET void tile_products_avx2(const float *R, const float *S, ssize rows, ssize chans, const float *W,
                                          ssize k_in, float s, float *grad_a, float *G) {
    for (ssize k0 = 0; k0 < k_in; k0 += 32) {
        __m256i m[4];
        for (int j = 0; j < 4; j++) m[j] = lanes8(k_in - k0 - 8 * j);
        float *out = grad_a ? grad_a + k0 : NULL;
        if (k0 + 32 <= k_in) tile_block_avx2(R, S + k0, rows, chans, W + k0, k_in, m, 1, s, out, G + k0);
        else tile_block_avx2(R, S + k0, rows, chans, W + k0, k_in, m, 0, s, out, G + k0);
    }
}

/* Clouds b0..b1 of the fused backward (path AVX2 or AVX-512): grad_a float32 [B, N, K] rows of
 * those clouds, G float32 [C, K] (zeroed by the caller) the slice's part of the weight gradient.
 * Work space: R [TILE, C] and S [TILE, K] floats. */
static void fused_backward(int path, const float *g, const uint8_t *p, const float *A, const float *D, const float *B,
                           const float *E1, const float *E2, const float *E3, const float *W, const uint64_t *bits,
                           const float *a_scale, ssize b0, ssize b1, ssize n_pts, ssize padded, ssize chans,
                           ssize k_in, ssize words, float *R, float *S, float *G, float *grad_a) {
    for (ssize b = b0; b < b1; b++) {
        const ssize bc = b * chans;
        const float s = a_scale[b];
        for (ssize n0 = 0; n0 < n_pts; n0 += TILE) {
            const ssize rows = n_pts - n0 < TILE ? n_pts - n0 : TILE, r0 = b * n_pts + n0;
            masked_affine_rows_avx2(g + r0 * chans, p + r0 * padded, A + bc, D + bc, B + bc, E1, E2 + bc, E3 + bc, rows,
                                    padded, chans, R);
            for (ssize t = 0; t < rows; t++) {  /* the activations +-s, as unpack_signs gives them */
                const uint64_t *row = bits + (r0 + t) * words;
                float *o = S + t * k_in;
                ssize k = 0;
                for (; k + 8 <= k_in; k += 8) {
                    const float *signs = SIGN_TABLE[(row[k >> 6] >> (k & 63)) & 0xFF];
                    for (int j = 0; j < 8; j++) o[k + j] = signs[j] * s;
                }
                for (; k < k_in; k++) o[k] = (row[k >> 6] >> (k & 63)) & 1 ? s : -s;
            }
            if (path == PATH_AVX512)
                tile_products_avx512(R, S, rows, chans, W, k_in, s, grad_a + r0 * k_in, G);
            else
                tile_products_avx2(R, S, rows, chans, W, k_in, s, grad_a + r0 * k_in, G);
        }
    }
}
#endif

/* ------------------------------------------------------------------ the fused float point layer
 * (pointdistill.binary.float_layer): y float32 [M, C] is a float layer's product x @ W^T over the
 * M = B N points, z = A[c] (y - D[c]) + B[c] its training-mode BatchNorm (D the batch mean, A =
 * gamma / sqrt(var + eps), B = beta) and h = min(max(z, lo), hi) its activation (ReLU: lo = 0,
 * hi = inf; Hardtanh: -1, 1), whose gradient passes where lo < z < hi, as torch's does. Plain C,
 * compiled for AVX2 and generic; the same float operations in the same order on both. */
#define FLOAT_LAYER_KERNELS(SUFFIX, ATTR)                                                                \
    /* rows r0..r1: part[c] += y - y0[c], part[C + c] += (y - y0[c])^2 (y0: a shift that keeps the     \
     * variance from cancelling): float partial sums over blocks of 64 rows, added up in double */     \
    static ATTR void float_moments_##SUFFIX(const float *restrict y, ssize r0, ssize r1, ssize chans,   \
                                            const float *restrict y0, float *restrict block,           \
                                            double *restrict part) {                                   \
        float *block0 = block, *block1 = block + chans;                                                  \
        for (ssize n0 = r0; n0 < r1; n0 += 64) {                                                         \
            memset(block, 0, 2 * chans * sizeof(float));                                                 \
            ssize n1 = n0 + 64 < r1 ? n0 + 64 : r1;                                                      \
            for (ssize r = n0; r < n1; r++)                                                              \
                for (ssize c = 0; c < chans; c++) {                                                      \
                    float d = y[r * chans + c] - y0[c];                                                  \
                    block0[c] += d;                                                                      \
                    block1[c] += d * d;                                                                  \
                }                                                                                        \
            for (ssize c = 0; c < chans; c++) {                                                          \
                part[c] += block0[c];                                                                    \
                part[chans + c] += block1[c];                                                            \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    static ATTR void float_activation_##SUFFIX(const float *restrict y, ssize r0, ssize r1, ssize chans, \
                                               const float *restrict A, const float *restrict D,       \
                                               const float *restrict B, float lo, float hi, float *restrict h) { \
        for (ssize r = r0; r < r1; r++)                                                                  \
            for (ssize c = 0; c < chans; c++) {                                                          \
                float z = A[c] * (y[r * chans + c] - D[c]) + B[c];                                       \
                z = z < lo ? lo : z;                                                                     \
                h[r * chans + c] = z > hi ? hi : z;                                                      \
            }                                                                                            \
    }                                                                                                    \
    /* rows r0..r1: part[c] += g [lo < z < hi], part[C + c] += g [lo < z < hi] (y - D[c]): float      \
     * partial sums over blocks of 64 rows (block: 2 C floats of work space), added up in double */  \
    static ATTR void float_masked_sums_##SUFFIX(const float *restrict g, const float *restrict y, ssize r0, \
                                                ssize r1, ssize chans, const float *restrict A,         \
                                                const float *restrict D, const float *restrict B, float lo, \
                                                float hi, float *restrict block, double *restrict part) { \
        float *block0 = block, *block1 = block + chans;                                                  \
        for (ssize n0 = r0; n0 < r1; n0 += 64) {                                                         \
            memset(block, 0, 2 * chans * sizeof(float));                                                 \
            ssize n1 = n0 + 64 < r1 ? n0 + 64 : r1;                                                      \
            for (ssize r = n0; r < n1; r++)                                                              \
                for (ssize c = 0; c < chans; c++) {                                                      \
                    float centred = y[r * chans + c] - D[c];                                             \
                    float z = A[c] * centred + B[c];                                                     \
                    float gc = g[r * chans + c];                                                         \
                    float d = ((z > lo) & (z < hi)) ? gc : 0.0f;                                         \
                    block0[c] += d;                                                                      \
                    block1[c] += d * centred;                                                            \
                }                                                                                        \
            for (ssize c = 0; c < chans; c++) {                                                          \
                part[c] += block0[c];                                                                    \
                part[chans + c] += block1[c];                                                            \
            }                                                                                            \
        }                                                                                                \
    }

/* `rows` rows: out[r, c] = E1[c] g [lo < z < hi] + E2[c] + E3[c] (y - D[c]) (BatchNorm's backward);
 * the AVX2 body does the same float operations in the same order, eight channels at a time */
static INLINE float float_masked_affine_one(float g, float y, float a, float d, float b, float e1, float e2, float e3,
                                            float lo, float hi) {
    float centred = y - d;
    float z = a * centred + b;
    float scaled = e1 * g;
    float passed = ((z > lo) & (z < hi)) ? scaled : 0.0f;
    return passed + (e2 + e3 * centred);
}

static void float_masked_affine_generic(const float *g, const float *y, ssize rows, ssize chans, const float *A,
                                        const float *D, const float *B, const float *E1, const float *E2,
                                        const float *E3, float lo, float hi, float *out) {
    for (ssize r = 0; r < rows; r++)
        for (ssize c = 0; c < chans; c++)
            out[r * chans + c] = float_masked_affine_one(g[r * chans + c], y[r * chans + c], A[c], D[c], B[c], E1[c],
                                                         E2[c], E3[c], lo, hi);
}

#if HAVE_X86
static AVX2_TARGET void float_masked_affine_avx2(const float *g, const float *y, ssize rows, ssize chans,
                                                 const float *A, const float *D, const float *B, const float *E1,
                                                 const float *E2, const float *E3, float lo, float hi, float *out) {
    const __m256 low = _mm256_set1_ps(lo), high = _mm256_set1_ps(hi);
    for (ssize r = 0; r < rows; r++) {
        ssize m = r * chans, c = 0;
        for (; c + 8 <= chans; c += 8) {
            __m256 centred = _mm256_sub_ps(_mm256_loadu_ps(y + m + c), _mm256_loadu_ps(D + c));
            __m256 z = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(A + c), centred), _mm256_loadu_ps(B + c));
            __m256 pass = _mm256_and_ps(_mm256_cmp_ps(z, low, _CMP_GT_OQ), _mm256_cmp_ps(z, high, _CMP_LT_OQ));
            __m256 passed = _mm256_and_ps(pass, _mm256_mul_ps(_mm256_loadu_ps(E1 + c), _mm256_loadu_ps(g + m + c)));
            __m256 affine = _mm256_add_ps(_mm256_loadu_ps(E2 + c), _mm256_mul_ps(_mm256_loadu_ps(E3 + c), centred));
            _mm256_storeu_ps(out + m + c, _mm256_add_ps(passed, affine));
        }
        for (; c < chans; c++)
            out[m + c] = float_masked_affine_one(g[m + c], y[m + c], A[c], D[c], B[c], E1[c], E2[c], E3[c], lo, hi);
    }
}
#endif

FLOAT_LAYER_KERNELS(generic, )
#if HAVE_X86
FLOAT_LAYER_KERNELS(avx2, AVX2_TARGET)

/* Rows r0..r1 of the fused float layer's backward (path AVX2 or AVX-512), TILE rows at a time:
 * grad_x float32 [M, K] (NULL: not wanted), G float32 [C, K] (zeroed by the caller) the slice's
 * part of the weight gradient; x float32 [M, K] the layer's input. Work space R [TILE, C]. */
static void float_fused_backward(int path, const float *g, const float *y, const float *A, const float *D,
                                 const float *B, const float *E1, const float *E2, const float *E3, float lo, float hi,
                                 const float *x, const float *W, ssize r0, ssize r1, ssize chans, ssize k_in, float *R,
                                 float *G, float *grad_x) {
    for (ssize t0 = r0; t0 < r1; t0 += TILE) {
        const ssize rows = r1 - t0 < TILE ? r1 - t0 : TILE;
        float_masked_affine_avx2(g + t0 * chans, y + t0 * chans, rows, chans, A, D, B, E1, E2, E3, lo, hi, R);
        float *out = grad_x ? grad_x + t0 * k_in : NULL;
        if (path == PATH_AVX512) tile_products_avx512(R, x + t0 * k_in, rows, chans, W, k_in, 1.0f, out, G);
        else tile_products_avx2(R, x + t0 * k_in, rows, chans, W, k_in, 1.0f, out, G);
    }
}
#endif

PLAIN_KERNELS(generic, )
LAYER_KERNELS(generic, )
#if HAVE_X86
PLAIN_KERNELS(avx2, AVX2_TARGET)
LAYER_KERNELS(avx2, AVX2_TARGET)
#endif

#if HAVE_X86
/* As grams_*, eight Gram entries per VPOPCNTQ pass: the columns are stored point-word major,
 * cols[v * K8 + k] (K8 = K rounded up to 8, padding columns zero), so that one register holds
 * word v of eight consecutive channels. cols: col_words * K8 words. */
static AVX512_TARGET void grams_avx512(const uint64_t *a, ssize b0, ssize b1, ssize n_pts, ssize words, ssize k_in,
                                       uint64_t *cols, int32_t *gram, int32_t *sums) {
    const ssize col_words = (n_pts + 63) / 64, k8 = (k_in + 7) / 8 * 8;
    uint64_t block[64];
    for (ssize b = b0; b < b1; b++) {
        memset(cols, 0, (size_t)(col_words * k8) * sizeof(uint64_t));
        for (ssize v = 0; v < col_words; v++)
            for (ssize j = 0; j < words; j++) {
                for (ssize r = 0; r < 64; r++) {
                    ssize n = 64 * v + r;
                    block[r] = n < n_pts ? a[(b * n_pts + n) * words + j] : 0;
                }
                transpose64(block);
                for (ssize i = 0; i < 64 && 64 * j + i < k_in; i++) cols[v * k8 + 64 * j + i] = block[i];
            }
        int32_t *g = gram + b * k_in * k_in;
        for (ssize i = 0; i < k_in; i++) {
            int32_t ones = 0;
            for (ssize v = 0; v < col_words; v++) ones += (int32_t)__builtin_popcountll(cols[v * k8 + i]);
            sums[b * k_in + i] = 2 * ones - (int32_t)n_pts;
            for (ssize j0 = i / 8 * 8; j0 < k_in; j0 += 8) {
                __m512i differ = _mm512_setzero_si512();
                for (ssize v = 0; v < col_words; v++)
                    differ = _mm512_add_epi64(differ, _mm512_popcnt_epi64(_mm512_xor_si512(
                        _mm512_set1_epi64((long long)cols[v * k8 + i]), _mm512_loadu_si512(cols + v * k8 + j0))));
                int64_t d[8];
                _mm512_storeu_si512(d, differ);
                for (ssize t = 0; t < 8; t++) {
                    ssize j = j0 + t;
                    if (j >= i && j < k_in) g[i * k_in + j] = g[j * k_in + i] = (int32_t)n_pts - 2 * (int32_t)d[t];
                }
            }
        }
    }
}
#endif

/* ------------------------------------------------------------------ popcounts and extremes */

/* One cloud: p[n, c] = popcount(a[n] XOR w[c]) for its N points into p [N, P], and the min and
 * max over the points per channel into lo, hi [P]. */
static void cloud_popcounts_generic(const uint64_t *a, const uint64_t *w, ssize n_pts, ssize words, ssize chans,
                                    uint8_t *p, uint8_t *lo, uint8_t *hi) {
    memset(lo, 255, chans);
    memset(hi, 0, chans);
    for (ssize n = 0; n < n_pts; n++) {
        const uint64_t *an = a + n * words;
        uint8_t *row = p + n * chans;
        for (ssize c = 0; c < chans; c++) {
            int count = 0;
            for (ssize j = 0; j < words; j++) count += __builtin_popcountll(an[j] ^ w[c * words + j]);
            row[c] = (uint8_t)count;
            lo[c] = row[c] < lo[c] ? row[c] : lo[c];
            hi[c] = row[c] > hi[c] ? row[c] : hi[c];
        }
    }
}

#if HAVE_X86
/* A nibble lookup: for the activation nibble v of a point, popcount(v XOR u) for every weight
 * nibble u is byte u of the 16-byte table LUT[v]; one vpshufb looks up 32 channels at once, and
 * the bytes accumulate the popcount over the point's 16 W nibbles (at most K <= 255). */
static const uint8_t NIBBLE_LUT[16][16] __attribute__((aligned(16))) = {
#define ROW(v) {__builtin_popcount(v ^ 0), __builtin_popcount(v ^ 1), __builtin_popcount(v ^ 2),        \
    __builtin_popcount(v ^ 3), __builtin_popcount(v ^ 4), __builtin_popcount(v ^ 5),                     \
    __builtin_popcount(v ^ 6), __builtin_popcount(v ^ 7), __builtin_popcount(v ^ 8),                     \
    __builtin_popcount(v ^ 9), __builtin_popcount(v ^ 10), __builtin_popcount(v ^ 11),                   \
    __builtin_popcount(v ^ 12), __builtin_popcount(v ^ 13), __builtin_popcount(v ^ 14),                  \
    __builtin_popcount(v ^ 15)}
    ROW(0), ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7),
    ROW(8), ROW(9), ROW(10), ROW(11), ROW(12), ROW(13), ROW(14), ROW(15),
#undef ROW
};

/* U groups of 32 channels for one point: acc[u] = popcounts of channels 32 (g + u) .. + 31 */
static AVX2_TARGET INLINE void popcount_block(const uint8_t *nibbles, ssize n_nib, const uint8_t *wn, int u_n,
                                              uint8_t *row, uint8_t *lo, uint8_t *hi) {
    __m256i acc[8];
    for (int u = 0; u < u_n; u++) acc[u] = _mm256_setzero_si256();
    for (ssize q = 0; q < n_nib; q++) {
        __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)NIBBLE_LUT[nibbles[q]]));
        for (int u = 0; u < u_n; u++)
            acc[u] = _mm256_add_epi8(acc[u], _mm256_shuffle_epi8(lut, _mm256_load_si256(
                                                 (const __m256i *)(wn + (u * n_nib + q) * 32))));
    }
    for (int u = 0; u < u_n; u++) {
        _mm256_storeu_si256((__m256i *)(row + 32 * u), acc[u]);
        __m256i *l = (__m256i *)(lo + 32 * u), *h = (__m256i *)(hi + 32 * u);
        _mm256_storeu_si256(l, _mm256_min_epu8(_mm256_loadu_si256(l), acc[u]));
        _mm256_storeu_si256(h, _mm256_max_epu8(_mm256_loadu_si256(h), acc[u]));
    }
}

/* the weights as nibbles, wn[(g * 16 W + q) * 32 + i] = nibble q of channel 32 g + i */
static void weight_nibbles(const uint64_t *w, ssize words, ssize chans, uint8_t *wn) {
    const ssize n_nib = 16 * words;
    for (ssize g = 0; g < chans / 32; g++)
        for (ssize q = 0; q < n_nib; q++)
            for (int i = 0; i < 32; i++)
                wn[(g * n_nib + q) * 32 + i] = (uint8_t)((w[(32 * g + i) * words + q / 16] >> (4 * (q % 16))) & 15);
}

static AVX2_TARGET void cloud_popcounts_avx2(const uint64_t *a, const uint8_t *wn, ssize n_pts, ssize words,
                                             ssize chans, uint8_t *p, uint8_t *lo, uint8_t *hi) {
    const ssize n_nib = 16 * words, groups = chans / 32;
    uint8_t nibbles[64];
    memset(lo, 255, chans);
    memset(hi, 0, chans);
    for (ssize n = 0; n < n_pts; n++) {
        const uint64_t *an = a + n * words;
        for (ssize q = 0; q < n_nib; q++) nibbles[q] = (uint8_t)((an[q / 16] >> (4 * (q % 16))) & 15);
        uint8_t *row = p + n * chans;
        ssize g = 0;
        for (; g + 8 <= groups; g += 8)
            popcount_block(nibbles, n_nib, wn + g * n_nib * 32, 8, row + 32 * g, lo + 32 * g, hi + 32 * g);
        for (int u = 4; u >= 1; u /= 2) /* what is left: at most one block each of 4, 2, 1 groups */
            if (g + u <= groups) {
                if (u == 4) popcount_block(nibbles, n_nib, wn + g * n_nib * 32, 4, row + 32 * g, lo + 32 * g, hi + 32 * g);
                else if (u == 2) popcount_block(nibbles, n_nib, wn + g * n_nib * 32, 2, row + 32 * g, lo + 32 * g, hi + 32 * g);
                else popcount_block(nibbles, n_nib, wn + g * n_nib * 32, 1, row + 32 * g, lo + 32 * g, hi + 32 * g);
                g += u;
            }
    }
}

/* The weights for the AVX-512 path, in blocks of 64 channels (the last one padded with zero words):
 * wt[((blk * W + j) * 8 + u) * 8 + i] = word j of channel 64 blk + 8 i + u, so that register u of a
 * block holds channels u, 8 + u, ..., 56 + u in its eight lanes. */
static void weight_words(const uint64_t *w, ssize words, ssize chans, uint64_t *wt) {
    for (ssize blk = 0; blk < (chans + 63) / 64; blk++)
        for (ssize j = 0; j < words; j++)
            for (int u = 0; u < 8; u++)
                for (int i = 0; i < 8; i++) {
                    ssize c = 64 * blk + 8 * i + u;
                    wt[((blk * words + j) * 8 + u) * 8 + i] = c < chans ? w[c * words + j] : 0;
                }
}

/* 64 channels per step: eight registers u of XOR + VPOPCNTQ summed over the words, lane i of
 * register u is channel 8 i + u; OR-ing register u shifted by 8 u bits puts channel 8 i + u in byte
 * u of lane i, i.e. the 64 popcounts (each <= K <= 255) in channel order in one register. */
static AVX512_TARGET void cloud_popcounts_avx512(const uint64_t *a, const uint64_t *wt, ssize n_pts, ssize words,
                                                 ssize chans, uint8_t *p, uint8_t *lo, uint8_t *hi) {
    memset(lo, 255, chans);
    memset(hi, 0, chans);
    for (ssize n = 0; n < n_pts; n++) {
        const uint64_t *an = a + n * words;
        uint8_t *row = p + n * chans;
        for (ssize c0 = 0; c0 < chans; c0 += 64) {
            const uint64_t *wb = wt + c0 * words;  /* block c0 / 64: 64 W words */
            __m512i acc[8];
            for (int u = 0; u < 8; u++) acc[u] = _mm512_setzero_si512();
            for (ssize j = 0; j < words; j++) {
                const __m512i aj = _mm512_set1_epi64((long long)an[j]);
                for (int u = 0; u < 8; u++)
                    acc[u] = _mm512_add_epi64(acc[u], _mm512_popcnt_epi64(_mm512_xor_si512(
                                                          aj, _mm512_loadu_si512(wb + (j * 8 + u) * 8))));
            }
            __m512i bytes = acc[0];
            for (int u = 1; u < 8; u++) bytes = _mm512_or_si512(bytes, _mm512_slli_epi64(acc[u], 8 * u));
            const __mmask64 block = chans - c0 >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (chans - c0)) - 1;
            _mm512_mask_storeu_epi8(row + c0, block, bytes);
            _mm512_mask_storeu_epi8(lo + c0, block, _mm512_min_epu8(_mm512_maskz_loadu_epi8(block, lo + c0), bytes));
            _mm512_mask_storeu_epi8(hi + c0, block, _mm512_max_epu8(_mm512_maskz_loadu_epi8(block, hi + c0), bytes));
        }
    }
}
#endif

/* ------------------------------------------------------------------ ties of the pooled layer */
/* kind[c] per channel: 0 = the points at the min popcount (the max product) tie, 1 = at the max
 * popcount, 2 = every point (a zero BatchNorm slope; not listed). For one cloud's popcounts
 * p [N, P]: counts[c] and the tied (n, c) in increasing order, encoded n * P + c, in ties[:cap];
 * returns how many there are (more than cap: the caller retries with a larger cap). */

static ssize list_ties_generic(const uint8_t *p, ssize n_pts, ssize chans, const uint8_t *lo, const uint8_t *hi,
                               const uint8_t *kind, int32_t *counts, int32_t *ties, ssize cap) {
    ssize total = 0;
    for (ssize c = 0; c < chans; c++) counts[c] = kind[c] == 2 ? (int32_t)n_pts : 0;
    for (ssize n = 0; n < n_pts; n++)
        for (ssize c = 0; c < chans; c++)
            if (kind[c] != 2 && p[n * chans + c] == (kind[c] ? hi[c] : lo[c])) {
                counts[c]++;
                if (total < cap) ties[total] = (int32_t)(n * chans + c);
                total++;
            }
    return total;
}

/* The tied channels c0 + i for the set bits i of `bits` at the point whose row starts at `row`
 * (= n * P): counted, listed while there is room; returns the new total. */
static INLINE ssize list_hits(uint64_t bits, ssize c0, ssize row, int32_t *counts, int32_t *ties, ssize cap,
                              ssize total) {
    while (bits) {
        ssize c = c0 + __builtin_ctzll(bits);
        bits &= bits - 1;
        counts[c]++;
        if (total < cap) ties[total] = (int32_t)(row + c);
        total++;
    }
    return total;
}

#if HAVE_X86
static AVX2_TARGET ssize list_ties_avx2(const uint8_t *p, ssize n_pts, ssize chans, const uint8_t *lo,
                                        const uint8_t *hi, const uint8_t *kind, int32_t *counts, int32_t *ties,
                                        ssize cap) {
    ssize total = 0;
    for (ssize c = 0; c < chans; c++) counts[c] = kind[c] == 2 ? (int32_t)n_pts : 0;
    for (ssize n = 0; n < n_pts; n++)
        for (ssize c0 = 0; c0 < chans; c0 += 32) {
            __m256i k = _mm256_loadu_si256((const __m256i *)(kind + c0));
            __m256i target = _mm256_blendv_epi8(_mm256_loadu_si256((const __m256i *)(lo + c0)),
                                                _mm256_loadu_si256((const __m256i *)(hi + c0)),
                                                _mm256_cmpeq_epi8(k, _mm256_set1_epi8(1)));
            __m256i hit = _mm256_andnot_si256(_mm256_cmpeq_epi8(k, _mm256_set1_epi8(2)),
                                              _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + n * chans + c0)),
                                                                target));
            total = list_hits((uint32_t)_mm256_movemask_epi8(hit), c0, n * chans, counts, ties, cap, total);
        }
    return total;
}
#endif

#if HAVE_X86
/* As list_ties_avx2 (the same order: point by point), 64 channels per compare, a masked load
 * for a last block of 32 */
static AVX512_TARGET ssize list_ties_avx512(const uint8_t *p, ssize n_pts, ssize chans, const uint8_t *lo,
                                            const uint8_t *hi, const uint8_t *kind, int32_t *counts, int32_t *ties,
                                            ssize cap) {
    ssize total = 0;
    for (ssize c = 0; c < chans; c++) counts[c] = kind[c] == 2 ? (int32_t)n_pts : 0;
    for (ssize n = 0; n < n_pts; n++)
        for (ssize c0 = 0; c0 < chans; c0 += 64) {
            const __mmask64 block = chans - c0 >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (chans - c0)) - 1;
            const __m512i k = _mm512_maskz_loadu_epi8(block, kind + c0);
            const __m512i target = _mm512_mask_blend_epi8(_mm512_cmpeq_epi8_mask(k, _mm512_set1_epi8(1)),
                                                          _mm512_maskz_loadu_epi8(block, lo + c0),
                                                          _mm512_maskz_loadu_epi8(block, hi + c0));
            const __mmask64 listed = block & ~_mm512_cmpeq_epi8_mask(k, _mm512_set1_epi8(2));
            total = list_hits(_mm512_mask_cmpeq_epi8_mask(listed, _mm512_maskz_loadu_epi8(block, p + n * chans + c0), target),
                              c0, n * chans, counts, ties, cap, total);
        }
    return total;
}
#endif

/* A float layer's pooled extreme: for one cloud's products r float32 [N, P], top[c] = the max
 * (kind 0) or min (kind 1) over the points, counts[c] and the tied (n, c) listed as above. */
#define FLOAT_TIES_KERNEL(SUFFIX, ATTR)                                                                  \
    static ATTR ssize float_ties_##SUFFIX(const float *r, ssize n_pts, ssize chans, const uint8_t *kind, \
                                          float *top, float *low, int32_t *counts, int32_t *ties, ssize cap) { \
        for (ssize c = 0; c < chans; c++) top[c] = low[c] = r[c];                                        \
        for (ssize n = 1; n < n_pts; n++)                                                                \
            for (ssize c = 0; c < chans; c++) {                                                          \
                float v = r[n * chans + c];                                                              \
                top[c] = v > top[c] ? v : top[c];                                                        \
                low[c] = v < low[c] ? v : low[c];                                                        \
            }                                                                                            \
        for (ssize c = 0; c < chans; c++) {                                                              \
            top[c] = kind[c] == 1 ? low[c] : top[c];                                                     \
            counts[c] = kind[c] == 2 ? (int32_t)n_pts : 0;                                               \
        }                                                                                                \
        ssize total = 0;                                                                                 \
        for (ssize n = 0; n < n_pts; n++)                                                                \
            for (ssize c = 0; c < chans; c++)                                                            \
                if (r[n * chans + c] == top[c] && kind[c] != 2) {                                        \
                    counts[c]++;                                                                         \
                    if (total < cap) ties[total] = (int32_t)(n * chans + c);                             \
                    total++;                                                                             \
                }                                                                                        \
        return total;                                                                                    \
    }

FLOAT_TIES_KERNEL(generic, )
#if HAVE_X86
FLOAT_TIES_KERNEL(avx2, AVX2_TARGET)
#endif

/* For every cloud b and tied (n, c), listed or (kind 2) every point of c:
 *     grad_a[b, n, :] += coef[b, c] * wq[c, :]      sparse_w[c, :] += coef[b, c] * a[b, n, :]
 * listed ties first, in their order, then the every-point channels in increasing c and n. */
#define SCATTER_KERNEL(SUFFIX, ATTR)                                                                     \
    static ATTR void scatter_##SUFFIX(const int32_t *ties, ssize cap, const int64_t *total, const uint8_t *kind, \
                                      const float *coef, const float *a, const float *wq, ssize b0, ssize b1, \
                                      ssize n_pts, ssize chans, ssize k_in, float *sparse_w, float *grad_a) { \
        for (ssize b = b0; b < b1; b++) {                                                                \
            for (ssize t = 0; t < total[b]; t++) {                                                       \
                ssize n = ties[b * cap + t] / chans, c = ties[b * cap + t] % chans, bc = b * chans + c;  \
                if (coef[bc] != 0.0f)                                                                    \
                    scatter_one_##SUFFIX(coef[bc], a + (b * n_pts + n) * k_in, wq + c * k_in,            \
                                         grad_a + (b * n_pts + n) * k_in, sparse_w + c * k_in, k_in);     \
            }                                                                                            \
            for (ssize c = 0; c < chans; c++) {                                                          \
                ssize bc = b * chans + c;                                                                \
                if (kind[bc] != 2 || coef[bc] == 0.0f) continue;                                         \
                for (ssize n = 0; n < n_pts; n++)                                                        \
                    scatter_one_##SUFFIX(coef[bc], a + (b * n_pts + n) * k_in, wq + c * k_in,            \
                                         grad_a + (b * n_pts + n) * k_in, sparse_w + c * k_in, k_in);     \
            }                                                                                            \
        }                                                                                                \
    }

SCATTER_KERNEL(generic, )
#if HAVE_X86
SCATTER_KERNEL(avx2, AVX2_TARGET)
#endif

/* ------------------------------------------------------------------ Python bindings */

static int check_path(int path) {
    if ((path == PATH_AVX512 && cpu_has_avx512() && cpu_has_avx2()) || (path == PATH_AVX2 && cpu_has_avx2())
        || path == PATH_GENERIC)
        return 1;
    PyErr_Format(PyExc_RuntimeError, "training kernel path %d cannot run on this CPU", path);
    return 0;
}

/* Start of slice s of `parts` contiguous slices of [b0, b1) (slice parts ends at b1). */
static ssize slice_start(ssize b0, ssize b1, int s, int parts) { return b0 + (b1 - b0) * s / parts; }

static int check_sizes(ssize b0, ssize b1, ssize batch, ssize n_pts, ssize words, ssize chans) {
    if (0 <= b0 && b0 <= b1 && b1 <= batch && n_pts >= 1 && words >= 1 && words <= 4 && chans >= 32
        && chans % 32 == 0)
        return 1;
    PyErr_SetString(PyExc_ValueError, "inconsistent sizes (1 <= W <= 4, channels a multiple of 32)");
    return 0;
}

#define RETURN_NONE_IF(ok) \
    do {                    \
        if (ok) {           \
            result = Py_None; \
            Py_INCREF(result); \
        }                   \
    } while (0)

static PyObject *py_pack_signs(PyObject *self, PyObject *args) {
    /* x float32 [R, K], rows r0..r1 -> bits uint64 [R, W] */
    Py_buffer x, out;
    ssize r0, r1, rows, k_in, words;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*nnnnnw*ii", &x, &r0, &r1, &rows, &k_in, &words, &out, &path, &threads)) return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && (0 <= r0 && r0 <= r1 && r1 <= rows && k_in >= 1 && words * 64 >= k_in
                                  ? 1 : (PyErr_SetString(PyExc_ValueError, "inconsistent sizes"), 0))
             && check_size(&x, mul3(rows, k_in, 1), 4, "x") && check_size(&out, mul3(rows, words, 1), 8, "out");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize lo = slice_start(r0, r1, s, threads), hi = slice_start(r0, r1, s + 1, threads);
#if HAVE_X86
            if (path >= PATH_AVX2) pack_avx2(x.buf, lo, hi, k_in, words, out.buf);
            else
#endif
                pack_generic(x.buf, lo, hi, k_in, words, out.buf);
        }
        Py_END_ALLOW_THREADS
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_unpack_signs(PyObject *self, PyObject *args) {
    /* bits uint64 [R, W], rows r0..r1, scale float32 [R / n_pts] -> out float32 [R, K] */
    Py_buffer bits, scale, out;
    ssize r0, r1, rows, k_in, words, n_pts;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnnw*i", &bits, &scale, &r0, &r1, &rows, &k_in, &words, &n_pts, &out,
                          &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_threads(threads)
             && (0 <= r0 && r0 <= r1 && r1 <= rows && k_in >= 1 && words * 64 >= k_in && n_pts >= 1
                 && rows % n_pts == 0
                 ? 1 : (PyErr_SetString(PyExc_ValueError, "inconsistent sizes"), 0))
             && check_size(&bits, mul3(rows, words, 1), 8, "bits") && check_size(&scale, rows / n_pts, 4, "scale")
             && check_size(&out, mul3(rows, k_in, 1), 4, "out");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            unpack_signs(bits.buf, slice_start(r0, r1, s, threads), slice_start(r0, r1, s + 1, threads), k_in, words,
                         scale.buf, n_pts, out.buf);
        Py_END_ALLOW_THREADS
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&bits);
    PyBuffer_Release(&scale);
    PyBuffer_Release(&out);
    return result;
}

/* Flush denormal floats to zero on this thread: x86 MXCSR FTZ (bit 15) and DAZ (bit 6), AArch64
 * FPCR FZ (bit 24). Returns 1 where it took effect. */
static int set_flush_to_zero(void) {
#if HAVE_X86
    _mm_setcsr(_mm_getcsr() | 0x8040);
    return 1;
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | (1ull << 24)));
    return 1;
#else
    return 0;
#endif
}

static PyObject *py_flush_denormals(PyObject *self, PyObject *args) {
    /* on every thread of an OpenMP team of `threads` (torch's pool): how many took it */
    int threads;
    if (!PyArg_ParseTuple(args, "i", &threads) || !check_threads(threads)) return NULL;
    int done = 0;
#pragma omp parallel num_threads(threads) reduction(+ : done)
    done += set_flush_to_zero();
    return PyLong_FromLong(done);
}

/* One cloud's popcounts on the chosen path; table: the weights as that path reads them
 * (new_weight_table; unused by the generic path) */
static void cloud_popcounts(int path, const uint64_t *a, const uint64_t *w, const void *table, ssize n_pts,
                            ssize words, ssize chans, uint8_t *p, uint8_t *lo, uint8_t *hi) {
#if HAVE_X86
    if (path == PATH_AVX512) {
        cloud_popcounts_avx512(a, table, n_pts, words, chans, p, lo, hi);
        return;
    }
    if (path == PATH_AVX2) {
        cloud_popcounts_avx2(a, table, n_pts, words, chans, p, lo, hi);
        return;
    }
#endif
    (void)table;
    cloud_popcounts_generic(a, w, n_pts, words, chans, p, lo, hi);
}

/* The weights laid out for the path's popcount kernel: nibbles (AVX2, 16 W bytes a channel),
 * words in blocks of 64 channels (AVX-512, 8 W bytes a channel, padded to 64 channels); 64-byte
 * aligned. Free with free(). */
static void *new_weight_table(int path, const uint64_t *w, ssize words, ssize chans) {
    void *table = aligned_alloc(64, (size_t)((chans + 32) * 16 * words));
#if HAVE_X86
    if (table && path == PATH_AVX2) weight_nibbles(w, words, chans, table);
    if (table && path == PATH_AVX512) weight_words(w, words, chans, table);
#endif
    return table;
}

static PyObject *py_popcounts(PyObject *self, PyObject *args) {
    /* a bits [B, N, W], w bits [P, W] -> p uint8 [B, N, P], min and max uint8 [B, P] */
    Py_buffer a, w, p, lo, hi;
    ssize b0, b1, batch, n_pts, words, chans;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnnw*w*w*ii", &a, &w, &b0, &b1, &batch, &n_pts, &words, &chans, &p, &lo, &hi,
                          &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, words, chans)
             && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
             && check_size(&w, mul3(chans, words, 1), 8, "weight bits")
             && check_size(&p, mul3(batch, n_pts, chans), 1, "popcounts")
             && check_size(&lo, mul3(batch, chans, 1), 1, "min") && check_size(&hi, mul3(batch, chans, 1), 1, "max");
    void *wn = ok ? new_weight_table(path, w.buf, words, chans) : NULL;
    if (ok && !wn) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const uint64_t *bits = a.buf;
        uint8_t *pb = p.buf, *lob = lo.buf, *hib = hi.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            for (ssize b = slice_start(b0, b1, s, threads); b < slice_start(b0, b1, s + 1, threads); b++)
                cloud_popcounts(path, bits + b * n_pts * words, w.buf, wn, n_pts, words, chans, pb + b * n_pts * chans,
                                lob + b * chans, hib + b * chans);
        Py_END_ALLOW_THREADS
    }
    free(wn);
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&a);
    PyBuffer_Release(&w);
    PyBuffer_Release(&p);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    return result;
}

static PyObject *py_pool_ties(PyObject *self, PyObject *args) {
    /* a bits [B, N, W], w bits [P, W], kind uint8 [B, P] -> min, max uint8 [B, P], counts int32
     * [B, P], the tied (n, c) int32 [B, cap] and their number int64 [B] (may exceed cap) */
    Py_buffer a, w, kind, lo, hi, counts, ties, total;
    ssize b0, b1, batch, n_pts, words, chans, cap;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*nnnnnnnw*w*w*w*w*ii", &a, &w, &kind, &b0, &b1, &batch, &n_pts, &words, &chans,
                          &cap, &lo, &hi, &counts, &ties, &total, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, words, chans)
             && (cap >= 1 && mul3(n_pts, chans, 1) >= 0 && mul3(n_pts, chans, 1) <= INT32_MAX
                 ? 1 : (PyErr_SetString(PyExc_ValueError, "bad tie capacity or N x P over 2^31"), 0))
             && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
             && check_size(&w, mul3(chans, words, 1), 8, "weight bits")
             && check_size(&kind, mul3(batch, chans, 1), 1, "kind")
             && check_size(&lo, mul3(batch, chans, 1), 1, "min") && check_size(&hi, mul3(batch, chans, 1), 1, "max")
             && check_size(&counts, mul3(batch, chans, 1), 4, "counts")
             && check_size(&ties, mul3(batch, cap, 1), 4, "ties") && check_size(&total, batch, 8, "total");
    void *wn = ok ? new_weight_table(path, w.buf, words, chans) : NULL;
    uint8_t *scratch = ok ? malloc((size_t)(threads * n_pts * chans)) : NULL;  /* a cloud's popcounts per slice */
    if (ok && (!wn || !scratch)) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const uint64_t *bits = a.buf;
        const uint8_t *kinds = kind.buf;
        uint8_t *lob = lo.buf, *hib = hi.buf;
        int32_t *cnt = counts.buf, *tie = ties.buf;
        int64_t *tot = total.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            uint8_t *own = scratch + s * n_pts * chans;
            for (ssize b = slice_start(b0, b1, s, threads); b < slice_start(b0, b1, s + 1, threads); b++) {
                cloud_popcounts(path, bits + b * n_pts * words, w.buf, wn, n_pts, words, chans, own, lob + b * chans,
                                hib + b * chans);
#if HAVE_X86
                if (path == PATH_AVX512)
                    tot[b] = list_ties_avx512(own, n_pts, chans, lob + b * chans, hib + b * chans, kinds + b * chans,
                                              cnt + b * chans, tie + b * cap, cap);
                else if (path == PATH_AVX2)
                    tot[b] = list_ties_avx2(own, n_pts, chans, lob + b * chans, hib + b * chans, kinds + b * chans,
                                            cnt + b * chans, tie + b * cap, cap);
                else
#endif
                    tot[b] = list_ties_generic(own, n_pts, chans, lob + b * chans, hib + b * chans, kinds + b * chans,
                                               cnt + b * chans, tie + b * cap, cap);
            }
        }
        Py_END_ALLOW_THREADS
    }
    free(wn);
    free(scratch);
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&a);
    PyBuffer_Release(&w);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&ties);
    PyBuffer_Release(&total);
    return result;
}

static PyObject *py_scatter_ties(PyObject *self, PyObject *args) {
    /* the listed ties (as pool_ties left them, every total[b] <= cap) and the every-point channels;
     * sparse_w float32 [threads, P, K]: each slice's own sum, added up by the caller in slice order */
    Py_buffer ties, total, kind, coef, a, wq, sw, ga;
    ssize b0, b1, batch, n_pts, chans, k_in, cap;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*nnnnnnnw*w*ii", &ties, &total, &kind, &coef, &a, &wq, &b0, &b1, &batch,
                          &n_pts, &chans, &k_in, &cap, &sw, &ga, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, 1, chans)
             && (k_in >= 1 && cap >= 1 ? 1 : (PyErr_SetString(PyExc_ValueError, "bad K or capacity"), 0))
             && check_size(&ties, mul3(batch, cap, 1), 4, "ties") && check_size(&total, batch, 8, "total")
             && check_size(&kind, mul3(batch, chans, 1), 1, "kind")
             && check_size(&coef, mul3(batch, chans, 1), 4, "coef") && check_size(&a, mul3(batch, n_pts, k_in), 4, "a")
             && check_size(&wq, mul3(chans, k_in, 1), 4, "wq")
             && check_size(&sw, mul3(threads, chans, k_in), 4, "sparse_w")
             && check_size(&ga, mul3(batch, n_pts, k_in), 4, "grad_a");
    if (ok) {
        const int64_t *tot = total.buf;
        const int32_t *tie = ties.buf;
        for (ssize b = b0; b < b1 && ok; b++)
            for (ssize t = 0; t < tot[b] && ok; t++)
                if (tot[b] > cap || tie[b * cap + t] < 0 || tie[b * cap + t] >= n_pts * chans) {
                    PyErr_SetString(PyExc_ValueError, "tie list out of range");
                    ok = 0;
                }
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize lo = slice_start(b0, b1, s, threads), hi = slice_start(b0, b1, s + 1, threads);
            float *own = (float *)sw.buf + s * chans * k_in;
#if HAVE_X86
            if (path >= PATH_AVX2)
                scatter_avx2(ties.buf, cap, total.buf, kind.buf, coef.buf, a.buf, wq.buf, lo, hi, n_pts, chans, k_in, own,
                             ga.buf);
            else
#endif
                scatter_generic(ties.buf, cap, total.buf, kind.buf, coef.buf, a.buf, wq.buf, lo, hi, n_pts, chans, k_in,
                                own, ga.buf);
        }
        Py_END_ALLOW_THREADS
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&ties);
    PyBuffer_Release(&total);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&coef);
    PyBuffer_Release(&a);
    PyBuffer_Release(&wq);
    PyBuffer_Release(&sw);
    PyBuffer_Release(&ga);
    return result;
}

static PyObject *py_sign_grams(PyObject *self, PyObject *args) {
    /* a bits [B, N, W] -> gram int32 [B, K, K] (sum_n s_i s_j) and sums int32 [B, K] (sum_n s_k) */
    Py_buffer a, gram, sums;
    ssize b0, b1, batch, n_pts, words, k_in;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*nnnnnnw*w*ii", &a, &b0, &b1, &batch, &n_pts, &words, &k_in, &gram, &sums, &path,
                          &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && (0 <= b0 && b0 <= b1 && b1 <= batch && n_pts >= 1 && n_pts < (1 << 30) && k_in >= 1
                                  && words * 64 >= k_in
                                  ? 1 : (PyErr_SetString(PyExc_ValueError, "inconsistent sizes"), 0))
             && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
             && check_size(&gram, mul3(batch, k_in, k_in), 4, "gram") && check_size(&sums, mul3(batch, k_in, 1), 4, "sums");
    if (ok) {
        ssize col_words = (k_in + 7) / 8 * 8 * ((n_pts + 63) / 64);  /* a cloud's signs by column, per slice */
        uint64_t *cols = malloc((size_t)(threads * col_words) * sizeof(uint64_t));
        if (!cols) {
            PyErr_NoMemory();
            ok = 0;
        } else {
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
            for (int s = 0; s < threads; s++) {
                ssize lo = slice_start(b0, b1, s, threads), hi = slice_start(b0, b1, s + 1, threads);
#if HAVE_X86
                if (path == PATH_AVX512)
                    grams_avx512(a.buf, lo, hi, n_pts, words, k_in, cols + s * col_words, gram.buf, sums.buf);
                else if (path == PATH_AVX2)
                    grams_avx2(a.buf, lo, hi, n_pts, words, k_in, cols + s * col_words, gram.buf, sums.buf);
                else
#endif
                    grams_generic(a.buf, lo, hi, n_pts, words, k_in, cols + s * col_words, gram.buf, sums.buf);
            }
            Py_END_ALLOW_THREADS
            free(cols);
        }
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&a);
    PyBuffer_Release(&gram);
    PyBuffer_Release(&sums);
    return result;
}

static PyObject *py_layer_forward(PyObject *self, PyObject *args) {
    /* p uint8 [B, N, P], A, D, B float32 [B, C] -> h float32 [B, N, C] */
    Py_buffer p, A, D, B, h;
    ssize b0, b1, batch, n_pts, padded, chans;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nnnnnnw*ii", &p, &A, &D, &B, &b0, &b1, &batch, &n_pts, &padded, &chans, &h,
                          &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, 1, padded)
             && (chans >= 1 && chans <= padded ? 1 : (PyErr_SetString(PyExc_ValueError, "bad channels"), 0))
             && check_size(&p, mul3(batch, n_pts, padded), 1, "popcounts")
             && check_size(&A, mul3(batch, chans, 1), 4, "A") && check_size(&D, mul3(batch, chans, 1), 4, "D")
             && check_size(&B, mul3(batch, chans, 1), 4, "B") && check_size(&h, mul3(batch, n_pts, chans), 4, "h");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize lo = slice_start(b0, b1, s, threads), hi = slice_start(b0, b1, s + 1, threads);
#if HAVE_X86
            if (path >= PATH_AVX2) hardtanh_avx2(p.buf, A.buf, D.buf, B.buf, lo, hi, n_pts, padded, chans, h.buf);
            else
#endif
                hardtanh_generic(p.buf, A.buf, D.buf, B.buf, lo, hi, n_pts, padded, chans, h.buf);
        }
        Py_END_ALLOW_THREADS
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&p);
    PyBuffer_Release(&A);
    PyBuffer_Release(&D);
    PyBuffer_Release(&B);
    PyBuffer_Release(&h);
    return result;
}

static PyObject *py_layer_backward(PyObject *self, PyObject *args) {
    /* g float32 [B, N, C], p, A, D, B: with E1 [C], E2, E3 [B, C] given, out float32 [B, N, C] =
     * the BatchNorm backward; with E1 empty, sums float64 [B, 2, C] instead */
    Py_buffer g, p, A, D, B, E1, E2, E3, out;
    ssize b0, b1, batch, n_pts, padded, chans;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*nnnnnnw*ii", &g, &p, &A, &D, &B, &E1, &E2, &E3, &b0, &b1, &batch,
                          &n_pts, &padded, &chans, &out, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int sums = E1.len == 0;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, 1, padded)
             && (chans >= 1 && chans <= padded ? 1 : (PyErr_SetString(PyExc_ValueError, "bad channels"), 0))
             && check_size(&g, mul3(batch, n_pts, chans), 4, "g")
             && check_size(&p, mul3(batch, n_pts, padded), 1, "popcounts")
             && check_size(&A, mul3(batch, chans, 1), 4, "A") && check_size(&D, mul3(batch, chans, 1), 4, "D")
             && check_size(&B, mul3(batch, chans, 1), 4, "B")
             && (sums ? check_size(&out, mul3(batch, 2, chans), 8, "sums")
                      : check_size(&E1, chans, 4, "E1") && check_size(&E2, mul3(batch, chans, 1), 4, "E2")
                        && check_size(&E3, mul3(batch, chans, 1), 4, "E3")
                        && check_size(&out, mul3(batch, n_pts, chans), 4, "out"));
    if (ok) {
        float *parts = sums ? malloc((size_t)(threads * 2 * chans) * sizeof(float)) : NULL;  /* per slice */
        if (sums && !parts) {
            PyErr_NoMemory();
            ok = 0;
        } else {
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
            for (int s = 0; s < threads; s++) {
                ssize lo = slice_start(b0, b1, s, threads), hi = slice_start(b0, b1, s + 1, threads);
                float *part = sums ? parts + s * 2 * chans : NULL;
#if HAVE_X86
                if (path >= PATH_AVX2 && sums)
                    masked_sums_avx2(g.buf, p.buf, A.buf, D.buf, B.buf, lo, hi, n_pts, padded, chans, part, out.buf);
                else
#endif
                if (sums) masked_sums_generic(g.buf, p.buf, A.buf, D.buf, B.buf, lo, hi, n_pts, padded, chans, part,
                                              out.buf);
                else masked_affine(path, g.buf, p.buf, A.buf, D.buf, B.buf, E1.buf, E2.buf, E3.buf, lo, hi, n_pts,
                                   padded, chans, out.buf);
            }
            Py_END_ALLOW_THREADS
            free(parts);
        }
    }
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&g);
    PyBuffer_Release(&p);
    PyBuffer_Release(&A);
    PyBuffer_Release(&D);
    PyBuffer_Release(&B);
    PyBuffer_Release(&E1);
    PyBuffer_Release(&E2);
    PyBuffer_Release(&E3);
    PyBuffer_Release(&out);
    return result;
}

#if HAVE_X86
/* the slices' weight-gradient parts, count floats at `first` in each slice's `part` floats of
 * work space, added in slice order into out */
static void add_weight_parts(const float *work, int threads, ssize part, ssize first, ssize count, float *out) {
    for (ssize i = 0; i < count; i++) {
        float total = 0.0f;
        for (int s = 0; s < threads; s++) total += work[s * part + first + i];
        out[i] = total;
    }
}
#endif

static PyObject *py_layer_backward_fused(PyObject *self, PyObject *args) {
    /* g float32 [B, N, C], p, A, D, B, E1 [C], E2, E3 [B, C] (as layer_backward), W float32 [C, K],
     * activation bits uint64 [B, N, W], a_scale float32 [B] -> grad_a float32 [B, N, K] (rows of
     * clouds b0..b1), grad_w float32 [C, K] (their part of the weight gradient). AVX2 / AVX-512 only. */
    Py_buffer g, p, A, D, B, E1, E2, E3, W, bits, a_scale, grad_a, grad_w;
    ssize b0, b1, batch, n_pts, padded, chans, k_in, words;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*y*nnnnnnnnw*w*ii", &g, &p, &A, &D, &B, &E1, &E2, &E3, &W, &bits,
                          &a_scale, &b0, &b1, &batch, &n_pts, &padded, &chans, &k_in, &words, &grad_a, &grad_w, &path,
                          &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, words, padded)
             && (path >= PATH_AVX2 ? 1 : (PyErr_SetString(PyExc_ValueError, "the fused backward runs on the avx2 "
                                                          "and avx512 paths"), 0))
             && (chans >= 1 && chans <= padded && k_in >= 1 && words == (k_in + 63) / 64
                     ? 1 : (PyErr_SetString(PyExc_ValueError, "bad channels"), 0))
             && check_size(&g, mul3(batch, n_pts, chans), 4, "g")
             && check_size(&p, mul3(batch, n_pts, padded), 1, "popcounts")
             && check_size(&A, mul3(batch, chans, 1), 4, "A") && check_size(&D, mul3(batch, chans, 1), 4, "D")
             && check_size(&B, mul3(batch, chans, 1), 4, "B") && check_size(&E1, chans, 4, "E1")
             && check_size(&E2, mul3(batch, chans, 1), 4, "E2") && check_size(&E3, mul3(batch, chans, 1), 4, "E3")
             && check_size(&W, mul3(chans, k_in, 1), 4, "weight")
             && check_size(&bits, mul3(batch, n_pts, words), 8, "activation bits")
             && check_size(&a_scale, batch, 4, "a_scale")
             && check_size(&grad_a, mul3(batch, n_pts, k_in), 4, "grad_a")
             && check_size(&grad_w, mul3(chans, k_in, 1), 4, "grad_w");
#if HAVE_X86
    if (ok) {
        const ssize part = TILE * chans + TILE * k_in + chans * k_in;  /* R, S and G of one slice */
        float *work = calloc((size_t)threads * (size_t)part, sizeof(float));
        if (!work) {
            PyErr_NoMemory();
            ok = 0;
        } else {
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
            for (int s = 0; s < threads; s++) {
                ssize lo = slice_start(b0, b1, s, threads), hi = slice_start(b0, b1, s + 1, threads);
                float *R = work + s * part, *S = R + TILE * chans, *G = S + TILE * k_in;
                fused_backward(path, g.buf, p.buf, A.buf, D.buf, B.buf, E1.buf, E2.buf, E3.buf, W.buf, bits.buf,
                               a_scale.buf, lo, hi, n_pts, padded, chans, k_in, words, R, S, G, grad_a.buf);
            }
            add_weight_parts(work, threads, part, TILE * chans + TILE * k_in, chans * k_in, grad_w.buf);
            Py_END_ALLOW_THREADS
            free(work);
        }
    }
#endif
    RETURN_NONE_IF(ok);
    Py_buffer *all[] = {&g, &p, &A, &D, &B, &E1, &E2, &E3, &W, &bits, &a_scale, &grad_a, &grad_w};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyBuffer_Release(all[i]);
    return result;
}

/* ---- the fused float point layer (rows r of [M, C], split into `threads` slices) */
static int check_float_layer(ssize rows, ssize chans, Py_buffer *y) {
    if (rows >= 1 && chans >= 1) return check_size(y, mul3(rows, chans, 1), 4, "y");
    PyErr_SetString(PyExc_ValueError, "a float layer needs rows >= 1 and channels >= 1");
    return 0;
}

/* per-slice double partials [threads, 2, C] -> sums [2, C], added in slice order */
static void add_slices(const double *parts, int threads, ssize chans, double *sums) {
    for (ssize i = 0; i < 2 * chans; i++) {
        double total = 0.0;
        for (int s = 0; s < threads; s++) total += parts[s * 2 * chans + i];
        sums[i] = total;
    }
}

static PyObject *py_float_moments(PyObject *self, PyObject *args) {
    /* y float32 [M, C], y0 float32 [C] -> sums float64 [2, C]: sum (y - y0) and sum (y - y0)^2 */
    Py_buffer y, y0, sums;
    ssize rows, chans;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*nnw*ii", &y, &y0, &rows, &chans, &sums, &path, &threads)) return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_float_layer(rows, chans, &y)
             && check_size(&y0, chans, 4, "y0") && check_size(&sums, mul3(2, chans, 1), 8, "sums");
    double *parts = ok ? calloc((size_t)threads * 2 * (size_t)chans, sizeof(double)) : NULL;
    float *blocks = ok ? malloc((size_t)threads * 2 * (size_t)chans * sizeof(float)) : NULL;
    if (ok && (!parts || !blocks)) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize lo = slice_start(0, rows, s, threads), hi = slice_start(0, rows, s + 1, threads);
            float *block = blocks + s * 2 * chans;
#if HAVE_X86
            if (path >= PATH_AVX2) float_moments_avx2(y.buf, lo, hi, chans, y0.buf, block, parts + s * 2 * chans);
            else
#endif
                float_moments_generic(y.buf, lo, hi, chans, y0.buf, block, parts + s * 2 * chans);
        }
        add_slices(parts, threads, chans, sums.buf);
        Py_END_ALLOW_THREADS
    }
    free(parts);
    free(blocks);
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&y);
    PyBuffer_Release(&y0);
    PyBuffer_Release(&sums);
    return result;
}

static PyObject *py_float_forward(PyObject *self, PyObject *args) {
    /* y float32 [M, C], A, D, B float32 [C] -> h float32 [M, C] = min(max(A (y - D) + B, lo), hi) */
    Py_buffer y, A, D, B, h;
    ssize rows, chans;
    float lo, hi;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*ffnnw*ii", &y, &A, &D, &B, &lo, &hi, &rows, &chans, &h, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_float_layer(rows, chans, &y)
             && check_size(&A, chans, 4, "A") && check_size(&D, chans, 4, "D") && check_size(&B, chans, 4, "B")
             && check_size(&h, mul3(rows, chans, 1), 4, "h");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize r0 = slice_start(0, rows, s, threads), r1 = slice_start(0, rows, s + 1, threads);
#if HAVE_X86
            if (path >= PATH_AVX2) float_activation_avx2(y.buf, r0, r1, chans, A.buf, D.buf, B.buf, lo, hi, h.buf);
            else
#endif
                float_activation_generic(y.buf, r0, r1, chans, A.buf, D.buf, B.buf, lo, hi, h.buf);
        }
        Py_END_ALLOW_THREADS
    }
    RETURN_NONE_IF(ok);
    Py_buffer *all[] = {&y, &A, &D, &B, &h};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyBuffer_Release(all[i]);
    return result;
}

static PyObject *py_float_backward(PyObject *self, PyObject *args) {
    /* g, y float32 [M, C], A, D, B float32 [C]: with E1, E2, E3 [C] given, out float32 [M, C] = d r
     * (BatchNorm's backward); with E1 empty, out float64 [2, C] = the masked sums */
    Py_buffer g, y, A, D, B, E1, E2, E3, out;
    ssize rows, chans;
    float lo, hi;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*ffnnw*ii", &g, &y, &A, &D, &B, &E1, &E2, &E3, &lo, &hi, &rows, &chans,
                          &out, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    const int sums = E1.len == 0;
    int ok = check_path(path) && check_threads(threads) && check_float_layer(rows, chans, &y)
             && check_size(&g, mul3(rows, chans, 1), 4, "g") && check_size(&A, chans, 4, "A")
             && check_size(&D, chans, 4, "D") && check_size(&B, chans, 4, "B")
             && (sums ? check_size(&out, mul3(2, chans, 1), 8, "sums")
                      : check_size(&E1, chans, 4, "E1") && check_size(&E2, chans, 4, "E2")
                        && check_size(&E3, chans, 4, "E3") && check_size(&out, mul3(rows, chans, 1), 4, "out"));
    double *parts = ok && sums ? calloc((size_t)threads * 2 * (size_t)chans, sizeof(double)) : NULL;
    float *blocks = ok && sums ? malloc((size_t)threads * 2 * (size_t)chans * sizeof(float)) : NULL;
    if (ok && sums && (!parts || !blocks)) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const float *gs = g.buf, *ys = y.buf;
        float *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            ssize r0 = slice_start(0, rows, s, threads), r1 = slice_start(0, rows, s + 1, threads);
#if HAVE_X86
            if (path >= PATH_AVX2 && sums)
                float_masked_sums_avx2(gs, ys, r0, r1, chans, A.buf, D.buf, B.buf, lo, hi, blocks + s * 2 * chans,
                                       parts + s * 2 * chans);
            else if (path >= PATH_AVX2)
                float_masked_affine_avx2(gs + r0 * chans, ys + r0 * chans, r1 - r0, chans, A.buf, D.buf, B.buf, E1.buf,
                                         E2.buf, E3.buf, lo, hi, o + r0 * chans);
            else
#endif
            if (sums) float_masked_sums_generic(gs, ys, r0, r1, chans, A.buf, D.buf, B.buf, lo, hi, blocks + s * 2 * chans,
                                                parts + s * 2 * chans);
            else float_masked_affine_generic(gs + r0 * chans, ys + r0 * chans, r1 - r0, chans, A.buf, D.buf, B.buf,
                                             E1.buf, E2.buf, E3.buf, lo, hi, o + r0 * chans);
        }
        if (sums) add_slices(parts, threads, chans, out.buf);
        Py_END_ALLOW_THREADS
    }
    free(parts);
    free(blocks);
    RETURN_NONE_IF(ok);
    Py_buffer *all[] = {&g, &y, &A, &D, &B, &E1, &E2, &E3, &out};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyBuffer_Release(all[i]);
    return result;
}

static PyObject *py_float_backward_fused(PyObject *self, PyObject *args) {
    /* g, y float32 [M, C], A, D, B, E1, E2, E3 float32 [C], x float32 [M, K], W float32 [C, K] ->
     * grad_x float32 [M, K] (empty: not wanted) and grad_w float32 [C, K]. AVX2 / AVX-512 only. */
    Py_buffer g, y, A, D, B, E1, E2, E3, x, W, grad_x, grad_w;
    ssize rows, chans, k_in;
    float lo, hi;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*ffy*y*nnnw*w*ii", &g, &y, &A, &D, &B, &E1, &E2, &E3, &lo, &hi, &x, &W,
                          &rows, &chans, &k_in, &grad_x, &grad_w, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    const int input_grad = grad_x.len != 0;
    int ok = check_path(path) && check_threads(threads) && check_float_layer(rows, chans, &y)
             && (path >= PATH_AVX2 && k_in >= 1 ? 1 : (PyErr_SetString(PyExc_ValueError, "the fused backward runs on "
                                                                       "the avx2 and avx512 paths, K >= 1"), 0))
             && check_size(&g, mul3(rows, chans, 1), 4, "g") && check_size(&A, chans, 4, "A")
             && check_size(&D, chans, 4, "D") && check_size(&B, chans, 4, "B") && check_size(&E1, chans, 4, "E1")
             && check_size(&E2, chans, 4, "E2") && check_size(&E3, chans, 4, "E3")
             && check_size(&x, mul3(rows, k_in, 1), 4, "x") && check_size(&W, mul3(chans, k_in, 1), 4, "weight")
             && (!input_grad || check_size(&grad_x, mul3(rows, k_in, 1), 4, "grad_x"))
             && check_size(&grad_w, mul3(chans, k_in, 1), 4, "grad_w");
#if HAVE_X86
    if (ok) {
        const ssize part = TILE * chans + chans * k_in;  /* R and G of one slice */
        float *work = calloc((size_t)threads * (size_t)part, sizeof(float));
        if (!work) {
            PyErr_NoMemory();
            ok = 0;
        } else {
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
            for (int s = 0; s < threads; s++) {
                ssize r0 = slice_start(0, rows, s, threads), r1 = slice_start(0, rows, s + 1, threads);
                float *R = work + s * part;
                float_fused_backward(path, g.buf, y.buf, A.buf, D.buf, B.buf, E1.buf, E2.buf, E3.buf, lo, hi, x.buf,
                                     W.buf, r0, r1, chans, k_in, R, R + TILE * chans,
                                     input_grad ? (float *)grad_x.buf : NULL);
            }
            add_weight_parts(work, threads, part, TILE * chans, chans * k_in, grad_w.buf);
            Py_END_ALLOW_THREADS
            free(work);
        }
    }
#endif
    RETURN_NONE_IF(ok);
    Py_buffer *all[] = {&g, &y, &A, &D, &B, &E1, &E2, &E3, &x, &W, &grad_x, &grad_w};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyBuffer_Release(all[i]);
    return result;
}

static PyObject *py_float_ties(PyObject *self, PyObject *args) {
    /* r float32 [Bc, N, P] for clouds b0 .. b0 + Bc of the batch, kind uint8 [B, P] -> top float32
     * [B, P], counts int32 [B, P], ties int32 [B, cap], total int64 [B] (rows b0 .. b0 + Bc); the
     * clouds split into `threads` slices */
    Py_buffer r, kind, top, counts, ties, total;
    ssize b0, b1, batch, n_pts, chans, cap;
    int path, threads;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnnw*w*w*w*ii", &r, &kind, &b0, &b1, &batch, &n_pts, &chans, &cap, &top,
                          &counts, &ties, &total, &path, &threads))
        return NULL;
    PyObject *result = NULL;
    int ok = check_path(path) && check_threads(threads) && check_sizes(b0, b1, batch, n_pts, 1, chans)
             && (cap >= 1 && mul3(n_pts, chans, 1) <= INT32_MAX
                 ? 1 : (PyErr_SetString(PyExc_ValueError, "bad tie capacity or N x P over 2^31"), 0))
             && check_size(&r, mul3(b1 - b0, n_pts, chans), 4, "products")
             && check_size(&kind, mul3(batch, chans, 1), 1, "kind") && check_size(&top, mul3(batch, chans, 1), 4, "top")
             && check_size(&counts, mul3(batch, chans, 1), 4, "counts")
             && check_size(&ties, mul3(batch, cap, 1), 4, "ties") && check_size(&total, batch, 8, "total");
    float *lows = ok ? malloc((size_t)threads * (size_t)chans * sizeof(float)) : NULL;  /* per slice */
    if (ok && !lows) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const float *rs = r.buf;
        const uint8_t *kinds = kind.buf;
        float *tops = top.buf;
        int32_t *cnt = counts.buf, *tie = ties.buf;
        int64_t *tot = total.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++) {
            float *low = lows + s * chans;
            for (ssize b = slice_start(b0, b1, s, threads); b < slice_start(b0, b1, s + 1, threads); b++) {
                const float *rb = rs + (b - b0) * n_pts * chans;
#if HAVE_X86
                if (path >= PATH_AVX2)
                    tot[b] = float_ties_avx2(rb, n_pts, chans, kinds + b * chans, tops + b * chans, low,
                                             cnt + b * chans, tie + b * cap, cap);
                else
#endif
                    tot[b] = float_ties_generic(rb, n_pts, chans, kinds + b * chans, tops + b * chans, low,
                                                cnt + b * chans, tie + b * cap, cap);
            }
        }
        Py_END_ALLOW_THREADS
    }
    free(lows);
    RETURN_NONE_IF(ok);
    PyBuffer_Release(&r);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&top);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&ties);
    PyBuffer_Release(&total);
    return result;
}

static PyObject *py_paths(PyObject *self, PyObject *args) {
    /* the paths this CPU runs, fastest first */
    if (cpu_has_avx512() && cpu_has_avx2()) return Py_BuildValue("(sss)", "avx512", "avx2", "generic");
    if (cpu_has_avx2()) return Py_BuildValue("(ss)", "avx2", "generic");
    return Py_BuildValue("(s)", "generic");
}

static PyMethodDef methods[] = {
    {"pack_signs", py_pack_signs, METH_VARARGS, "float32 [R, K] -> sign bits uint64 [R, W]"},
    {"unpack_signs", py_unpack_signs, METH_VARARGS, "sign bits uint64 [R, W] -> +-scale float32 [R, K]"},
    {"popcounts", py_popcounts, METH_VARARGS, "popcount(a XOR w) as bytes [B, N, P], with min and max over points"},
    {"pool_ties", py_pool_ties, METH_VARARGS, "extremes over points per (cloud, channel) and the points that tie"},
    {"float_ties", py_float_ties, METH_VARARGS, "a float layer's pooled extreme per (cloud, channel) and its ties"},
    {"scatter_ties", py_scatter_ties, METH_VARARGS, "accumulate the max's gradient over the tied points"},
    {"sign_grams", py_sign_grams, METH_VARARGS, "per-cloud K x K Gram matrices and sums of the signs"},
    {"layer_forward", py_layer_forward, METH_VARARGS, "hardtanh of a per-(cloud, channel) affine map of the popcounts"},
    {"layer_backward", py_layer_backward, METH_VARARGS, "the fused layer's masked sums or BatchNorm backward"},
    {"layer_backward_fused", py_layer_backward_fused, METH_VARARGS,
     "the fused layer's BatchNorm backward with its input and weight gradients, tile by tile"},
    {"float_moments", py_float_moments, METH_VARARGS, "a float layer's per-channel shifted sums and squares"},
    {"float_forward", py_float_forward, METH_VARARGS, "a float layer's BatchNorm and activation"},
    {"float_backward", py_float_backward, METH_VARARGS, "the float layer's masked sums or BatchNorm backward"},
    {"float_backward_fused", py_float_backward_fused, METH_VARARGS,
     "the float layer's BatchNorm backward with its input and weight gradients, tile by tile"},
    {"paths", py_paths, METH_NOARGS, "kernel paths this CPU runs, fastest first"},
    {"flush_denormals", py_flush_denormals, METH_VARARGS, "flush denormal floats to zero on torch's OpenMP threads"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_point_kernels", .m_doc = "binary point-layer training kernels",
    .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__point_kernels(void) {
    fill_sign_table();
    return PyModule_Create(&module);
}
