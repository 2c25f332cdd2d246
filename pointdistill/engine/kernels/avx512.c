/* The AVX-512 path: F/BW + VPOPCNTDQ, one 512-bit register holds word j of a group's 8 output
 * channels. Compiled with target attributes, run only where the CPU reports all three. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,popcnt")))
#define INLINE static inline __attribute__((always_inline))

static AVX512 void avx512_stem(const float *points, const float *w, const float *scale, const float *offset,
                               index_t rows, index_t m16, index_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    const __m512 zero = _mm512_setzero_ps();
    for (index_t r = 0; r < rows; r++) {
        const __m512 px = _mm512_set1_ps(points[3 * r]), py = _mm512_set1_ps(points[3 * r + 1]),
                     pz = _mm512_set1_ps(points[3 * r + 2]);
        uint16_t *o = (uint16_t *)(out + r * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t m = 0; m < m16; m += 16) {
            __m512 z = _mm512_mul_ps(_mm512_loadu_ps(wx + m), px);
            z = _mm512_add_ps(z, _mm512_mul_ps(_mm512_loadu_ps(wy + m), py));
            z = _mm512_add_ps(z, _mm512_mul_ps(_mm512_loadu_ps(wz + m), pz));
            __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(scale + m), z), _mm512_loadu_ps(offset + m));
            o[m / 16] = (uint16_t)_mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ);
        }
    }
}

/* Group-major: the weights of 8 output channels stay in registers while every row streams past;
 * each row gives one byte (8 output bits) of its output row. */
AVX512 INLINE void binary_group(const uint64_t *x, const uint64_t *wg, __m512i thr, index_t rows, index_t words,
                                uint8_t *o, index_t out_stride) {
    if (words == 1) {
        const __m512i w0 = _mm512_loadu_si512(wg);
        for (index_t r = 0; r < rows; r++)
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[r]), w0)), thr);
    } else if (words == 2) {
        const __m512i w0 = _mm512_loadu_si512(wg), w1 = _mm512_loadu_si512(wg + 8);
        for (index_t r = 0; r < rows; r++)
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(_mm512_add_epi64(
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[2 * r]), w0)),
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[2 * r + 1]), w1))), thr);
    } else {
        for (index_t r = 0; r < rows; r++) {
            const uint64_t *xr = x + r * words;
            __m512i acc = _mm512_setzero_si512();
            for (index_t j = 0; j < words; j++)
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                    _mm512_set1_epi64((long long)xr[j]), _mm512_loadu_si512(wg + j * 8))));
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(acc, thr);
        }
    }
}

static AVX512 void avx512_binary(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t rows,
                                 index_t groups, index_t words, index_t out_words, uint64_t *out) {
    memset(out, 0, rows * out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g++)
        binary_group(x, w + g * words * 8, _mm512_loadu_si512(thr + 8 * g), rows, words, (uint8_t *)out + g,
                     out_words * 8);
}

/* Fused pooled layer: per 8 channels, the minimum popcount over the points is compared once with
 * the threshold. BLOCK groups at a time keep BLOCK * WORDS weight registers live across the points. */
#define POOL_BLOCK 8
AVX512 INLINE void pool_block(const uint64_t *x, index_t points, const uint64_t *wg, index_t words, __m512i *mins,
                              int block) {
    for (int q = 0; q < block; q++) mins[q] = _mm512_set1_epi64(-1);
    if (words == 1) {
        __m512i w0[POOL_BLOCK];
        for (int q = 0; q < block; q++) w0[q] = _mm512_loadu_si512(wg + q * 8);
        for (index_t n = 0; n < points; n++) {
            const __m512i x0 = _mm512_set1_epi64((long long)x[n]);
            for (int q = 0; q < block; q++)
                mins[q] = _mm512_min_epu64(mins[q], _mm512_popcnt_epi64(_mm512_xor_si512(x0, w0[q])));
        }
    } else if (words == 2) {
        __m512i w0[POOL_BLOCK], w1[POOL_BLOCK];
        for (int q = 0; q < block; q++) {
            w0[q] = _mm512_loadu_si512(wg + q * 16);
            w1[q] = _mm512_loadu_si512(wg + q * 16 + 8);
        }
        for (index_t n = 0; n < points; n++) {
            const __m512i x0 = _mm512_set1_epi64((long long)x[2 * n]), x1 = _mm512_set1_epi64((long long)x[2 * n + 1]);
            for (int q = 0; q < block; q++)
                mins[q] = _mm512_min_epu64(mins[q], _mm512_add_epi64(
                    _mm512_popcnt_epi64(_mm512_xor_si512(x0, w0[q])),
                    _mm512_popcnt_epi64(_mm512_xor_si512(x1, w1[q]))));
        }
    } else {
        for (index_t n = 0; n < points; n++) {
            const uint64_t *xn = x + n * words;
            for (int q = 0; q < block; q++) {
                const uint64_t *w = wg + q * words * 8;
                __m512i acc = _mm512_setzero_si512();
                for (index_t j = 0; j < words; j++)
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                        _mm512_set1_epi64((long long)xn[j]), _mm512_loadu_si512(w + j * 8))));
                mins[q] = _mm512_min_epu64(mins[q], acc);
            }
        }
    }
}

static AVX512 void avx512_pool(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points,
                               index_t groups, index_t words, index_t out_words, uint64_t *out) {
    uint8_t *o = (uint8_t *)out;
    memset(o, 0, out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g += POOL_BLOCK) {
        int block = groups - g < POOL_BLOCK ? (int)(groups - g) : POOL_BLOCK;
        __m512i mins[POOL_BLOCK];
        pool_block(x, points, w + g * words * 8, words, mins, block);
        for (int q = 0; q < block; q++)
            o[g + q] = (uint8_t)_mm512_cmple_epi64_mask(mins[q], _mm512_loadu_si512(thr + 8 * (g + q)));
    }
}

/* the least popcount over the points, BLOCK groups at a time as the pooled layer scans them, stored as int32 */
static AVX512 void avx512_least(const uint64_t *x, const uint64_t *w, index_t points, index_t groups, index_t words,
                                index_t outputs, int32_t *out) {
    for (index_t g = 0; g < groups && 8 * g < outputs; g += POOL_BLOCK) {
        int block = groups - g < POOL_BLOCK ? (int)(groups - g) : POOL_BLOCK;
        __m512i mins[POOL_BLOCK];
        pool_block(x, points, w + g * words * 8, words, mins, block);
        for (int q = 0; q < block && 8 * (g + q) < outputs; q++) {
            const index_t left = outputs - 8 * (g + q);
            _mm512_mask_cvtepi64_storeu_epi32(out + 8 * (g + q), left >= 8 ? (__mmask8)0xff : (__mmask8)((1u << left) - 1),
                                              mins[q]);
        }
    }
}

/* Peak: independent VPOPCNTQ on registers, the ceiling any popcount kernel can reach here. */
AVX512 uint64_t avx512_popcount_peak(index_t iterations) {
    __m512i a0 = _mm512_set1_epi64(0x0123456789abcdefLL), a1 = _mm512_set1_epi64(0x1111), a2 = _mm512_set1_epi64(7),
            a3 = _mm512_set1_epi64(-1), a4 = _mm512_set1_epi64(3), a5 = _mm512_set1_epi64(5),
            a6 = _mm512_set1_epi64(9), a7 = _mm512_set1_epi64(11);
    for (index_t i = 0; i < iterations; i++) {
        a0 = _mm512_popcnt_epi64(a0); a1 = _mm512_popcnt_epi64(a1); a2 = _mm512_popcnt_epi64(a2);
        a3 = _mm512_popcnt_epi64(a3); a4 = _mm512_popcnt_epi64(a4); a5 = _mm512_popcnt_epi64(a5);
        a6 = _mm512_popcnt_epi64(a6); a7 = _mm512_popcnt_epi64(a7);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                 _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}

/* popcounts of every row against 8 output channels per register, stored as int32 (the last group
 * masked to the channels there are) */
static AVX512 void avx512_counts(const uint64_t *x, const uint64_t *w, index_t rows, index_t groups, index_t words,
                                 index_t outputs, int32_t *out) {
    for (index_t r = 0; r < rows; r++) {
        const uint64_t *xr = x + r * words;
        for (index_t g = 0; g < groups && 8 * g < outputs; g++) {
            const uint64_t *wg = w + g * words * 8;
            __m512i acc = _mm512_setzero_si512();
            for (index_t j = 0; j < words; j++)
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                    _mm512_set1_epi64((long long)xr[j]), _mm512_loadu_si512(wg + j * 8))));
            const index_t left = outputs - 8 * g;
            _mm512_mask_cvtepi64_storeu_epi32(out + r * outputs + 8 * g,
                                              left >= 8 ? (__mmask8)0xff : (__mmask8)((1u << left) - 1), acc);
        }
    }
}

/* x >= at (at NULL: the signs; -0.0 >= 0 too), 16 at a time by one compare into a mask register, the last
 * chunk of a row masked to the channels there are */
static AVX512 void avx512_signs(const float *x, const float *at, index_t rows, index_t width, index_t out_words,
                                uint64_t *out) {
    const __m512 zero = _mm512_setzero_ps();
    for (index_t r = 0; r < rows; r++) {
        const float *xr = x + r * width;
        uint16_t *o = (uint16_t *)(out + r * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t c = 0; c < width; c += 16) {
            const __mmask16 live = width - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (width - c)) - 1);
            const __m512 t = at ? _mm512_maskz_loadu_ps(live, at + c) : zero;
            o[c / 16] = (uint16_t)_mm512_mask_cmp_ps_mask(live, _mm512_maskz_loadu_ps(live, xr + c), t, _CMP_GE_OQ);
        }
    }
}

#define REAL(name) avx512_##name
#define REAL_TARGET AVX512
#define REAL_OWN_SIGNS
#include "real_body.h"
#undef REAL_OWN_SIGNS
#undef REAL
#undef REAL_TARGET

const struct kernel_table avx512_kernels = {"avx512", avx512_stem, avx512_binary, avx512_pool, avx512_counts, avx512_least,
                                          avx512_stem_real, avx512_shortcut, avx512_signs};
