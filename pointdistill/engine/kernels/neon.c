/* The ARM64 path: Advanced SIMD (NEON, baseline on every AArch64 CPU), 128-bit registers.
 * Popcount by vcntq_u8 on bytes, byte counts of up to 31 words summed before the pairwise widening
 * adds (vpaddlq) to 64-bit lanes. Weights of one group (8 output channels) are four registers per
 * input word: lanes {0,1}, {2,3}, {4,5}, {6,7}. Speed unmeasured (no ARM hardware here); the bits
 * are tested under qemu-user against the NumPy reference. */
#include <arm_neon.h>
#include <string.h>

#include "kernels.h"

#define INLINE static inline __attribute__((always_inline))

/* popcount(x XOR w) of the 8 channels of group wg as 64-bit lanes, c[q] channels 2q and 2q + 1 */
INLINE void group_counts(const uint64_t *x, const uint64_t *wg, index_t words, uint64x2_t c[4]) {
    for (int q = 0; q < 4; q++) c[q] = vdupq_n_u64(0);
    for (index_t j0 = 0; j0 < words; j0 += 31) {  /* a byte holds at most 31 words' counts of 8 */
        const index_t end = words - j0 < 31 ? words : j0 + 31;
        uint8x16_t bytes[4] = {vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0)};
        for (index_t j = j0; j < end; j++) {
            const uint64x2_t xj = vdupq_n_u64(x[j]);
            for (int q = 0; q < 4; q++)
                bytes[q] = vaddq_u8(bytes[q], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xj, vld1q_u64(wg + j * 8 + 2 * q)))));
        }
        for (int q = 0; q < 4; q++) c[q] = vaddq_u64(c[q], vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(bytes[q]))));
    }
}

/* the 8 output bits of a group: bit lane = count <= threshold */
INLINE unsigned fired_bits(const uint64x2_t c[4], const int64_t *thr) {
    unsigned bits = 0;
    for (int q = 0; q < 4; q++) {
        const uint64x2_t fired = vcleq_s64(vreinterpretq_s64_u64(c[q]), vld1q_s64(thr + 2 * q));
        bits |= (unsigned)(vgetq_lane_u64(fired, 0) & 1) << (2 * q) | (unsigned)(vgetq_lane_u64(fired, 1) & 1) << (2 * q + 1);
    }
    return bits;
}

static void neon_stem(const float *points, const float *w, const float *scale, const float *offset, index_t rows,
                      index_t m16, index_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    const float32x4_t zero = vdupq_n_f32(0.0f);
    const uint32_t weights[4] = {1, 2, 4, 8};
    const uint32x4_t bit = vld1q_u32(weights);
    for (index_t r = 0; r < rows; r++) {
        const float32x4_t px = vdupq_n_f32(points[3 * r]), py = vdupq_n_f32(points[3 * r + 1]),
                          pz = vdupq_n_f32(points[3 * r + 2]);
        uint16_t *o = (uint16_t *)(out + r * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t m = 0; m < m16; m += 16) {
            unsigned bits = 0;
            for (int k = 0; k < 16; k += 4) {
                /* vmulq/vaddq are separate roundings: the build passes -ffp-contract=off */
                float32x4_t z = vmulq_f32(vld1q_f32(wx + m + k), px);
                z = vaddq_f32(z, vmulq_f32(vld1q_f32(wy + m + k), py));
                z = vaddq_f32(z, vmulq_f32(vld1q_f32(wz + m + k), pz));
                const float32x4_t v = vaddq_f32(vmulq_f32(vld1q_f32(scale + m + k), z), vld1q_f32(offset + m + k));
                bits |= vaddvq_u32(vandq_u32(vcgeq_f32(v, zero), bit)) << k;
            }
            o[m / 16] = (uint16_t)bits;
        }
    }
}

INLINE void binary_group(const uint64_t *x, const uint64_t *wg, const int64_t *thr, index_t rows, index_t words,
                         uint8_t *o, index_t out_stride) {
    uint64x2_t c[4];
    for (index_t r = 0; r < rows; r++) {
        group_counts(x + r * words, wg, words, c);
        o[r * out_stride] = (uint8_t)fired_bits(c, thr);
    }
}

static void neon_binary(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t rows, index_t groups,
                        index_t words, index_t out_words, uint64_t *out) {
    memset(out, 0, rows * out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g++) {
        uint8_t *o = (uint8_t *)out + g;
        const uint64_t *wg = w + g * words * 8;
        if (words == 1) binary_group(x, wg, thr + 8 * g, rows, 1, o, out_words * 8);
        else if (words == 2) binary_group(x, wg, thr + 8 * g, rows, 2, o, out_words * 8);
        else binary_group(x, wg, thr + 8 * g, rows, words, o, out_words * 8);
    }
}

/* Fused pooled layer, one group at a time: the minimum count over the points against the
 * threshold; every 32 points it stops once each channel that can fire (threshold >= 0) has. */
#define POOL_CHECK_POINTS 32
INLINE void pool_group(const uint64_t *x, index_t points, const uint64_t *wg, const int64_t *thr, index_t words,
                       uint8_t *o) {
    uint64x2_t mins[4], c[4];
    const uint64x2_t none[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
    const unsigned can_fire = fired_bits(none, thr);
    for (int q = 0; q < 4; q++) mins[q] = vdupq_n_u64(0x7fffffff);  /* counts are < 2^31: vminq_u32 on lanes */
    for (index_t n0 = 0; n0 < points; n0 += POOL_CHECK_POINTS) {
        const index_t end = points - n0 < POOL_CHECK_POINTS ? points : n0 + POOL_CHECK_POINTS;
        for (index_t n = n0; n < end; n++) {
            group_counts(x + n * words, wg, words, c);
            for (int q = 0; q < 4; q++)
                mins[q] = vreinterpretq_u64_u32(vminq_u32(vreinterpretq_u32_u64(mins[q]), vreinterpretq_u32_u64(c[q])));
        }
        if (fired_bits(mins, thr) == can_fire) break;
    }
    *o = (uint8_t)fired_bits(mins, thr);
}

static void neon_pool(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points, index_t groups,
                      index_t words, index_t out_words, uint64_t *out) {
    uint8_t *o = (uint8_t *)out;
    memset(out, 0, out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g++) {
        if (words == 1) pool_group(x, points, w + g * 8, thr + 8 * g, 1, o + g);
        else if (words == 2) pool_group(x, points, w + g * 16, thr + 8 * g, 2, o + g);
        else pool_group(x, points, w + g * words * 8, thr + 8 * g, words, o + g);
    }
}

static void neon_counts(const uint64_t *x, const uint64_t *w, index_t rows, index_t groups, index_t words,
                        index_t outputs, int32_t *out) {
    for (index_t r = 0; r < rows; r++)
        for (index_t g = 0; g < groups && 8 * g < outputs; g++) {
            uint64x2_t c[4];
            group_counts(x + r * words, w + g * words * 8, words, c);
            for (index_t m = 8 * g; m < outputs && m < 8 * g + 8; m++) {
                const int q = (int)((m - 8 * g) / 2);
                out[r * outputs + m] = (int32_t)((m - 8 * g) % 2 ? vgetq_lane_u64(c[q], 1) : vgetq_lane_u64(c[q], 0));
            }
        }
}

/* the least counts over the points, one group at a time (64-bit lanes, counts < 2^31: vminq_u32) */
static void neon_least(const uint64_t *x, const uint64_t *w, index_t points, index_t groups, index_t words,
                       index_t outputs, int32_t *out) {
    for (index_t g = 0; g < groups && 8 * g < outputs; g++) {
        uint64x2_t mins[4], c[4];
        for (int q = 0; q < 4; q++) mins[q] = vdupq_n_u64(0x7fffffff);
        for (index_t n = 0; n < points; n++) {
            group_counts(x + n * words, w + g * words * 8, words, c);
            for (int q = 0; q < 4; q++)
                mins[q] = vreinterpretq_u64_u32(vminq_u32(vreinterpretq_u32_u64(mins[q]), vreinterpretq_u32_u64(c[q])));
        }
        for (index_t m = 8 * g; m < outputs && m < 8 * g + 8; m++) {
            const int q = (int)((m - 8 * g) / 2);
            out[m] = (int32_t)((m - 8 * g) % 2 ? vgetq_lane_u64(mins[q], 1) : vgetq_lane_u64(mins[q], 0));
        }
    }
}

#define REAL(name) neon_##name
#define REAL_TARGET 
#include "real_body.h"
#undef REAL
#undef REAL_TARGET

const struct kernel_table neon_kernels = {"neon", neon_stem, neon_binary, neon_pool, neon_counts, neon_least,
                                          neon_stem_real, neon_shortcut, neon_signs};
