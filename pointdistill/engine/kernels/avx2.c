/* The AVX2 path: 256-bit registers, popcount by a 4-bit lookup table (vpshufb) on bytes, the byte
 * counts of up to 31 words summed before one vpsadbw per 4 channels. Compiled with target
 * attributes, run only where the CPU reports AVX2 and POPCNT. Weights of one group (8 output
 * channels) are two registers per input word: lanes 0-3 ("low half") and 4-7 ("high half"). */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define AVX2 __attribute__((target("avx2,popcnt")))
#define INLINE static inline __attribute__((always_inline))

/* popcount of every byte */
AVX2 INLINE __m256i byte_popcounts(__m256i v) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i low = _mm256_and_si256(v, nibble), high = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, low), _mm256_shuffle_epi8(table, high));
}

/* popcount(x XOR w) of the 8 channels of group wg, as 64-bit lanes: c[0] channels 0-3, c[1] 4-7 */
AVX2 INLINE void group_counts(const uint64_t *x, const uint64_t *wg, index_t words, __m256i c[2]) {
    const __m256i zero = _mm256_setzero_si256();
    c[0] = c[1] = zero;
    for (index_t j0 = 0; j0 < words; j0 += 31) {  /* a byte holds at most 31 words' counts of 8 */
        const index_t end = words - j0 < 31 ? words : j0 + 31;
        __m256i bytes0 = zero, bytes1 = zero;
        for (index_t j = j0; j < end; j++) {
            const __m256i xj = _mm256_set1_epi64x((long long)x[j]);
            bytes0 = _mm256_add_epi8(bytes0, byte_popcounts(_mm256_xor_si256(
                xj, _mm256_loadu_si256((const __m256i *)(wg + j * 8)))));
            bytes1 = _mm256_add_epi8(bytes1, byte_popcounts(_mm256_xor_si256(
                xj, _mm256_loadu_si256((const __m256i *)(wg + j * 8 + 4)))));
        }
        c[0] = _mm256_add_epi64(c[0], _mm256_sad_epu8(bytes0, zero));
        c[1] = _mm256_add_epi64(c[1], _mm256_sad_epu8(bytes1, zero));
    }
}

/* the 8 output bits of a group: bit lane = count <= threshold */
AVX2 INLINE unsigned fired_bits(const __m256i c[2], const __m256i t[2]) {
    const unsigned above = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(c[0], t[0])))
                         | (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(c[1], t[1]))) << 4;
    return ~above & 0xffu;
}

AVX2 INLINE void load_thresholds(const int64_t *thr, __m256i t[2]) {
    t[0] = _mm256_loadu_si256((const __m256i *)thr);
    t[1] = _mm256_loadu_si256((const __m256i *)(thr + 4));
}

static AVX2 void avx2_stem(const float *points, const float *w, const float *scale, const float *offset,
                           index_t rows, index_t m16, index_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    const __m256 zero = _mm256_setzero_ps();
    for (index_t r = 0; r < rows; r++) {
        const __m256 px = _mm256_set1_ps(points[3 * r]), py = _mm256_set1_ps(points[3 * r + 1]),
                     pz = _mm256_set1_ps(points[3 * r + 2]);
        uint8_t *o = (uint8_t *)(out + r * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t m = 0; m < m16; m += 8) {
            __m256 z = _mm256_mul_ps(_mm256_loadu_ps(wx + m), px);
            z = _mm256_add_ps(z, _mm256_mul_ps(_mm256_loadu_ps(wy + m), py));
            z = _mm256_add_ps(z, _mm256_mul_ps(_mm256_loadu_ps(wz + m), pz));
            const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(scale + m), z), _mm256_loadu_ps(offset + m));
            o[m / 8] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ));
        }
    }
}

/* Group-major: one group's weights stay in registers (or L1) while every row streams past; each
 * row gives one byte (8 output bits) of its output row. `words` is a constant where inlined. */
AVX2 INLINE void binary_group(const uint64_t *x, const uint64_t *wg, const int64_t *thr, index_t rows,
                              index_t words, uint8_t *o, index_t out_stride) {
    __m256i t[2], c[2];
    load_thresholds(thr, t);
    for (index_t r = 0; r < rows; r++) {
        group_counts(x + r * words, wg, words, c);
        o[r * out_stride] = (uint8_t)fired_bits(c, t);
    }
}

static AVX2 void avx2_binary(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t rows,
                             index_t groups, index_t words, index_t out_words, uint64_t *out) {
    memset(out, 0, rows * out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g++) {
        uint8_t *o = (uint8_t *)out + g;
        const uint64_t *wg = w + g * words * 8;
        if (words == 1) binary_group(x, wg, thr + 8 * g, rows, 1, o, out_words * 8);
        else if (words == 2) binary_group(x, wg, thr + 8 * g, rows, 2, o, out_words * 8);
        else binary_group(x, wg, thr + 8 * g, rows, words, o, out_words * 8);
    }
}

/* Fused pooled layer for BLOCK groups: the minimum count over the points, compared once with the
 * threshold. Every 32 points it stops early once each channel that can fire (threshold >= 0) has. */
#define POOL_BLOCK 4
#define POOL_CHECK_POINTS 32
AVX2 INLINE void pool_block(const uint64_t *x, index_t points, const uint64_t *wg, const int64_t *thr,
                            index_t words, int block, uint8_t *o) {
    __m256i mins[POOL_BLOCK][2], t[POOL_BLOCK][2], c[2];
    unsigned can_fire = 0;
    const __m256i none[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int q = 0; q < block; q++) {
        load_thresholds(thr + 8 * q, t[q]);
        mins[q][0] = mins[q][1] = _mm256_set1_epi64x(0x7fffffff);  /* counts are < 2^31: min_epu32 on lanes */
        can_fire |= fired_bits(none, t[q]) << (8 * q);
    }
    for (index_t n0 = 0; n0 < points; n0 += POOL_CHECK_POINTS) {
        const index_t end = points - n0 < POOL_CHECK_POINTS ? points : n0 + POOL_CHECK_POINTS;
        for (index_t n = n0; n < end; n++)
            for (int q = 0; q < block; q++) {
                group_counts(x + n * words, wg + q * words * 8, words, c);
                mins[q][0] = _mm256_min_epu32(mins[q][0], c[0]);
                mins[q][1] = _mm256_min_epu32(mins[q][1], c[1]);
            }
        unsigned fired = 0;
        for (int q = 0; q < block; q++) fired |= fired_bits(mins[q], t[q]) << (8 * q);
        if (fired == can_fire) break;
    }
    for (int q = 0; q < block; q++) o[q] = (uint8_t)fired_bits(mins[q], t[q]);
}

AVX2 INLINE void pool_blocks(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points,
                             index_t groups, index_t words, uint8_t *o) {
    index_t g = 0;
    for (; g + POOL_BLOCK <= groups; g += POOL_BLOCK)
        pool_block(x, points, w + g * words * 8, thr + 8 * g, words, POOL_BLOCK, o + g);
    for (; g < groups; g++)
        pool_block(x, points, w + g * words * 8, thr + 8 * g, words, 1, o + g);
}

static AVX2 void avx2_pool(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points,
                           index_t groups, index_t words, index_t out_words, uint64_t *out) {
    memset(out, 0, out_words * sizeof(uint64_t));
    if (words == 1) pool_blocks(x, w, thr, points, groups, 1, (uint8_t *)out);
    else if (words == 2) pool_blocks(x, w, thr, points, groups, 2, (uint8_t *)out);
    else pool_blocks(x, w, thr, points, groups, words, (uint8_t *)out);
}

static AVX2 void avx2_counts(const uint64_t *x, const uint64_t *w, index_t rows, index_t groups, index_t words,
                             index_t outputs, int32_t *out) {
    for (index_t r = 0; r < rows; r++)
        for (index_t g = 0; g < groups && 8 * g < outputs; g++) {
            __m256i c[2];
            int64_t lanes[8];
            group_counts(x + r * words, w + g * words * 8, words, c);
            _mm256_storeu_si256((__m256i *)lanes, c[0]);
            _mm256_storeu_si256((__m256i *)(lanes + 4), c[1]);
            for (index_t m = 8 * g; m < outputs && m < 8 * g + 8; m++) out[r * outputs + m] = (int32_t)lanes[m - 8 * g];
        }
}

/* one group's least counts over the points (64-bit lanes, counts < 2^31: min_epu32 on their low halves) */
AVX2 INLINE void least_group(const uint64_t *x, index_t points, const uint64_t *wg, index_t words, int64_t lanes[8]) {
    __m256i mins[2] = {_mm256_set1_epi64x(0x7fffffff), _mm256_set1_epi64x(0x7fffffff)}, c[2];
    for (index_t n = 0; n < points; n++) {
        group_counts(x + n * words, wg, words, c);
        mins[0] = _mm256_min_epu32(mins[0], c[0]);
        mins[1] = _mm256_min_epu32(mins[1], c[1]);
    }
    _mm256_storeu_si256((__m256i *)lanes, mins[0]);
    _mm256_storeu_si256((__m256i *)(lanes + 4), mins[1]);
}

static AVX2 void avx2_least(const uint64_t *x, const uint64_t *w, index_t points, index_t groups, index_t words,
                            index_t outputs, int32_t *out) {
    for (index_t g = 0; g < groups && 8 * g < outputs; g++) {
        int64_t lanes[8];
        const uint64_t *wg = w + g * words * 8;
        if (words == 1) least_group(x, points, wg, 1, lanes);
        else if (words == 2) least_group(x, points, wg, 2, lanes);
        else least_group(x, points, wg, words, lanes);
        for (index_t m = 8 * g; m < outputs && m < 8 * g + 8; m++) out[m] = (int32_t)lanes[m - 8 * g];
    }
}

#define REAL(name) avx2_##name
#define REAL_TARGET AVX2
#include "real_body.h"
#undef REAL
#undef REAL_TARGET

const struct kernel_table avx2_kernels = {"avx2", avx2_stem, avx2_binary, avx2_pool, avx2_counts, avx2_least,
                                          avx2_stem_real, avx2_shortcut, avx2_signs};
