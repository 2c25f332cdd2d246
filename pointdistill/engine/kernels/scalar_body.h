/* The scalar kernels' body, included by scalar.c once per instantiation with
 *   SCALAR(name)   the function name for this instantiation
 *   SCALAR_TARGET  its target attribute (empty: baseline instructions only)
 * 64 bits at a time; the pooled layer stops scanning a channel's points once one fires. */

static inline SCALAR_TARGET int64_t SCALAR(popcount_xor)(const uint64_t *x, const uint64_t *w_group, index_t words,
                                                        int lane) {
    int64_t count = 0;
    for (index_t j = 0; j < words; j++)
        count += __builtin_popcountll(x[j] ^ w_group[j * 8 + lane]);
    return count;
}

static SCALAR_TARGET void SCALAR(stem)(const float *points, const float *w, const float *scale, const float *offset,
                                       index_t rows, index_t m16, index_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    for (index_t r = 0; r < rows; r++) {
        const float px = points[3 * r], py = points[3 * r + 1], pz = points[3 * r + 2];
        uint64_t *o = out + r * out_words;
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t m = 0; m < out_words * 64 && m < m16; m++) {
            /* built with -ffp-contract=off: no FMA, the same rounding as NumPy's separate ops */
            const float z = (wx[m] * px + wy[m] * py) + wz[m] * pz;
            const float v = scale[m] * z + offset[m];
            if (v >= 0.0f) o[m >> 6] |= (uint64_t)1 << (m & 63);
        }
    }
}

static SCALAR_TARGET void SCALAR(binary)(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t rows,
                                         index_t groups, index_t words, index_t out_words, uint64_t *out) {
    for (index_t r = 0; r < rows; r++) {
        uint64_t *o = out + r * out_words;
        memset(o, 0, out_words * sizeof(uint64_t));
        for (index_t g = 0; g < groups; g++)
            for (int lane = 0; lane < 8; lane++) {
                index_t m = 8 * g + lane;
                if (SCALAR(popcount_xor)(x + r * words, w + g * words * 8, words, lane) <= thr[m])
                    o[m >> 6] |= (uint64_t)1 << (m & 63);
            }
    }
}

static SCALAR_TARGET void SCALAR(pool)(const uint64_t *x, const uint64_t *w, const int64_t *thr, index_t points,
                                       index_t groups, index_t words, index_t out_words, uint64_t *out) {
    memset(out, 0, out_words * sizeof(uint64_t));
    for (index_t g = 0; g < groups; g++)
        for (int lane = 0; lane < 8; lane++) {
            index_t m = 8 * g + lane;
            for (index_t n = 0; n < points; n++)
                if (SCALAR(popcount_xor)(x + n * words, w + g * words * 8, words, lane) <= thr[m]) {
                    out[m >> 6] |= (uint64_t)1 << (m & 63);
                    break;  /* OR over points: one point is enough */
                }
        }
}

static SCALAR_TARGET void SCALAR(counts)(const uint64_t *x, const uint64_t *w, index_t rows, index_t groups,
                                         index_t words, index_t outputs, int32_t *out) {
    (void)groups;
    for (index_t r = 0; r < rows; r++)
        for (index_t m = 0; m < outputs; m++)
            out[r * outputs + m] = (int32_t)SCALAR(popcount_xor)(x + r * words, w + (m / 8) * words * 8, words,
                                                                 (int)(m % 8));
}

static SCALAR_TARGET void SCALAR(least)(const uint64_t *x, const uint64_t *w, index_t points, index_t groups,
                                        index_t words, index_t outputs, int32_t *out) {
    (void)groups;
    for (index_t m = 0; m < outputs; m++) {
        int64_t least = INT64_MAX;
        for (index_t n = 0; n < points; n++) {
            const int64_t count = SCALAR(popcount_xor)(x + n * words, w + (m / 8) * words * 8, words, (int)(m % 8));
            least = count < least ? count : least;
        }
        out[m] = (int32_t)least;
    }
}
