/* The real-valued layers' float loops (the real stem, shortcut layers, and the signs the next layer
 * reads), one copy per path: included by each path's source with REAL(name) naming its functions and
 * REAL_TARGET its target attribute, so that the compiler vectorises the same loops for that path's
 * registers (a path that defines REAL_OWN_SIGNS brings its own signs). The same float32 operations in
 * the same order on every path (built with -ffp-contract=off: no fused multiply-add), so every path
 * gives the NumPy reference's values bit for bit. */
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* points float32 [rows, 3] -> x float32 [rows, outputs]: clip(scale*((wx*px + wy*py) + wz*pz) + offset,
 * -1, 1) with the stem layout of kernels.h (w [3, m16]) */
static REAL_TARGET void REAL(stem_real)(const float *points, const float *w, const float *scale, const float *offset,
                                        index_t rows, index_t m16, index_t outputs, float *x) {
    const float *restrict wx = w, *restrict wy = w + m16, *restrict wz = w + 2 * m16;
    for (index_t r = 0; r < rows; r++) {
        const float px = points[3 * r], py = points[3 * r + 1], pz = points[3 * r + 2];
        float *restrict xr = x + r * outputs;
        for (index_t c = 0; c < outputs; c++)
            xr[c] = hardtanh(scale[c] * ((wx[c] * px + wy[c] * py) + wz[c] * pz) + offset[c]);
    }
}

#ifndef REAL_OWN_SIGNS
/* x float32 [rows, width] -> bits [rows, out_words]: bit c = (x[c] >= at[c]), at NULL: the sign (sign(0) =
 * +1, -0.0 too); four at a time by SSE2's compare and movemask on x86-64 (its baseline) */
static REAL_TARGET void REAL(signs)(const float *x, const float *at, index_t rows, index_t width, index_t out_words,
                                    uint64_t *out) {
    for (index_t r = 0; r < rows; r++)
        for (index_t j = 0; j < out_words; j++) {
            const float *xj = x + r * width + 64 * j, *tj = at ? at + 64 * j : NULL;
            const index_t count = width - 64 * j < 64 ? width - 64 * j : 64;
            uint64_t word = 0;
            index_t b = 0;
#ifdef __SSE2__
            const __m128 zero = _mm_setzero_ps();
            for (; b + 4 <= count; b += 4)
                word |= (uint64_t)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(xj + b), tj ? _mm_loadu_ps(tj + b) : zero))
                        << b;
#endif
            for (; b < count; b++) word |= (uint64_t)(xj[b] >= (tj ? tj[b] : 0.0f)) << b;
            out[r * out_words + j] = word;
        }
}
#endif

/* y [rows, M] = s + clip(scale[c] * (K - 2 counts) + offset[c], -1, 1), s[c] = x[c % K] (M >= K) or the
 * mean of x[c], x[c + M], ... summed left to right (M < K); x [rows, K], counts int32 [rows, M] */
static REAL_TARGET void REAL(shortcut)(const int32_t *counts, const float *x, const float *scale, const float *offset,
                                       index_t rows, index_t in, index_t out, float *y) {
    const int32_t k32 = (int32_t)in;  /* K <= 2^31: the popcounts are int32 */
    if (out < in) {  /* narrowing: channel c averages input channels c, c + M, ... */
        const float groups = (float)(in / out);
        for (index_t r = 0; r < rows; r++) {
            const float *xr = x + r * in;
            for (index_t c = 0; c < out; c++) {
                float sum = xr[c];
                for (index_t j = c + out; j < in; j += out) sum += xr[j];
                y[r * out + c] = sum / groups + hardtanh(scale[c] * (float)(k32 - 2 * counts[r * out + c]) + offset[c]);
            }
        }
        return;
    }
    for (index_t r = 0; r < rows; r++)
        for (index_t start = 0; start < out; start += in) {  /* channel start + c repeats input channel c */
            const int32_t *restrict cr = counts + r * out + start;
            const float *restrict sc = scale + start, *restrict of = offset + start, *restrict xr = x + r * in;
            float *restrict yr = y + r * out + start;
            for (index_t c = 0; c < in; c++)  /* plain loop: the compiler vectorises it */
                yr[c] = xr[c] + hardtanh(sc[c] * (float)(k32 - 2 * cr[c]) + of[c]);
        }
}
