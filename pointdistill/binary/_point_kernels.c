/* Training kernels of the fused binary point layer (pointdistill.binary.point_pool).
 *
 * A binary point layer multiplies +-1 activations a[b, n, :] (K channels) by +-1 weight rows
 * w[c, :]: the integer dot is D = K - 2 * popcount(a XOR w). Training needs, per cloud b and
 * output channel c, the extreme of D over the N points (the max pooling after a monotone
 * BatchNorm), how many points reach it (torch splits a tied max's gradient evenly), and in the
 * backward pass the sum over those tied points. The dense [B, N, C] product is never formed.
 *
 * Layouts (little-endian, C order):
 *   activation bits uint64 [B, N, W]: channel k at bit k % 64 of word k / 64, 1 = +1 (a >= 0)
 *   weight bits     uint64 [G, W, 8]: output channel 8 g + lane, word j at [g][j][lane]
 *                   (one 512-bit register holds word j of 8 channels); padding bits and channels 0
 *   targets         int32 [B, 8 G]: the popcount p = (K - D) / 2 at the wanted extreme,
 *                   or -1 for "every point" (a channel whose BatchNorm slope is 0)
 * Paths, chosen by the caller (`path`): 2 = AVX-512 F/BW/VPOPCNTDQ, 1 = scalar with the POPCNT
 * instruction, 0 = generic C (no popcount instruction at all). Extremes, counts and tie positions
 * are identical on every path; the scatter's float sums may differ in the order of additions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../cpu_features.h"
#include "../size_checks.h"

typedef Py_ssize_t ssize;

/* ------------------------------------------------------------------ scalar bodies */
/* One body, compiled twice: with the POPCNT instruction (path 1) and without (path 0). */

#define SCALAR_KERNELS(SUFFIX, ATTR)                                                                   \
    static ATTR inline int32_t pc_##SUFFIX(const uint64_t *x, const uint64_t *wg, ssize words, int lane) { \
        int32_t p = 0;                                                                                \
        for (ssize j = 0; j < words; j++) p += __builtin_popcountll(x[j] ^ wg[j * 8 + lane]);        \
        return p;                                                                                     \
    }                                                                                                 \
    static ATTR void extremes_##SUFFIX(const uint64_t *a, const uint64_t *w, ssize b0, ssize b1, ssize n_pts, \
                                       ssize words, ssize groups, int32_t *pmin, int32_t *pmax) {     \
        for (ssize b = b0; b < b1; b++)                                                               \
            for (ssize g = 0; g < groups; g++)                                                        \
                for (int lane = 0; lane < 8; lane++) {                                                \
                    int32_t lo = INT32_MAX, hi = -1;                                                  \
                    for (ssize n = 0; n < n_pts; n++) {                                               \
                        int32_t p = pc_##SUFFIX(a + (b * n_pts + n) * words, w + g * words * 8, words, lane); \
                        lo = p < lo ? p : lo;                                                         \
                        hi = p > hi ? p : hi;                                                         \
                    }                                                                                 \
                    pmin[b * groups * 8 + g * 8 + lane] = lo;                                         \
                    pmax[b * groups * 8 + g * 8 + lane] = hi;                                         \
                }                                                                                     \
    }                                                                                                 \
    static ATTR void counts_##SUFFIX(const uint64_t *a, const uint64_t *w, const int32_t *target, ssize b0, \
                                     ssize b1, ssize n_pts, ssize words, ssize groups, int32_t *counts,   \
                                     int32_t *first) {                                                \
        for (ssize b = b0; b < b1; b++)                                                               \
            for (ssize g = 0; g < groups; g++)                                                        \
                for (int lane = 0; lane < 8; lane++) {                                                \
                    ssize bc = b * groups * 8 + g * 8 + lane;                                         \
                    int32_t t = target[bc], count = 0, at = -1;                                       \
                    for (ssize n = 0; n < n_pts; n++)                                                 \
                        if (t < 0 || pc_##SUFFIX(a + (b * n_pts + n) * words, w + g * words * 8, words, lane) == t) { \
                            at = count ? at : (int32_t)n;                                             \
                            count++;                                                                  \
                        }                                                                             \
                    counts[bc] = count;                                                               \
                    first[bc] = at;                                                                   \
                }                                                                                     \
    }

SCALAR_KERNELS(generic, )
#if HAVE_X86
SCALAR_KERNELS(popcnt, __attribute__((target("popcnt"))))
#endif

/* ------------------------------------------------------------------ AVX-512 */
#if HAVE_X86
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

#define INLINE inline __attribute__((always_inline))

static AVX512_TARGET INLINE __m512i pc8(const uint64_t *x, const uint64_t *wg, ssize words) {
    __m512i acc = _mm512_setzero_si512();
    for (ssize j = 0; j < words; j++)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                  _mm512_set1_epi64((long long)x[j]), _mm512_loadu_si512((const void *)(wg + j * 8)))));
    return acc;
}

static AVX512_TARGET void store8(int32_t *dst, __m512i v) {
    _mm256_storeu_si256((__m256i *)dst, _mm512_cvtepi64_epi32(v));
}

static AVX512_TARGET INLINE void extremes_avx512_body(const uint64_t *a, const uint64_t *w, ssize b0, ssize b1,
                                                      ssize n_pts, ssize words, ssize groups, int32_t *pmin,
                                                      int32_t *pmax) {
    for (ssize b = b0; b < b1; b++) {
        const uint64_t *ab = a + b * n_pts * words;
        ssize g = 0;
        for (; g + 4 <= groups; g += 4) { /* four groups share each broadcast point */
            __m512i lo[4], hi[4];
            for (int u = 0; u < 4; u++) { lo[u] = _mm512_set1_epi64(INT32_MAX); hi[u] = _mm512_set1_epi64(-1); }
            for (ssize n = 0; n < n_pts; n++)
                for (int u = 0; u < 4; u++) {
                    __m512i p = pc8(ab + n * words, w + (g + u) * words * 8, words);
                    lo[u] = _mm512_min_epi64(lo[u], p);
                    hi[u] = _mm512_max_epi64(hi[u], p);
                }
            for (int u = 0; u < 4; u++) {
                store8(pmin + b * groups * 8 + (g + u) * 8, lo[u]);
                store8(pmax + b * groups * 8 + (g + u) * 8, hi[u]);
            }
        }
        for (; g < groups; g++) {
            __m512i lo = _mm512_set1_epi64(INT32_MAX), hi = _mm512_set1_epi64(-1);
            for (ssize n = 0; n < n_pts; n++) {
                __m512i p = pc8(ab + n * words, w + g * words * 8, words);
                lo = _mm512_min_epi64(lo, p);
                hi = _mm512_max_epi64(hi, p);
            }
            store8(pmin + b * groups * 8 + g * 8, lo);
            store8(pmax + b * groups * 8 + g * 8, hi);
        }
    }
}

static AVX512_TARGET INLINE void counts_avx512_body(const uint64_t *a, const uint64_t *w, const int32_t *target,
                                                    ssize b0, ssize b1, ssize n_pts, ssize words, ssize groups,
                                                    int32_t *counts, int32_t *first) {
    const __m512i one = _mm512_set1_epi64(1);
    for (ssize b = b0; b < b1; b++)
        for (ssize g = 0; g < groups; g++) {
            const ssize base = b * groups * 8 + g * 8;
            __m512i tv = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(target + base)));
            __mmask8 every = _mm512_cmplt_epi64_mask(tv, _mm512_setzero_si512());
            __m512i count = _mm512_setzero_si512(), at = _mm512_set1_epi64(-1);
            for (ssize n = 0; n < n_pts; n++) {
                __mmask8 hit = _mm512_cmpeq_epi64_mask(pc8(a + (b * n_pts + n) * words, w + g * words * 8, words), tv)
                               | every;
                __mmask8 fresh = hit & _mm512_cmpeq_epi64_mask(count, _mm512_setzero_si512());
                at = _mm512_mask_mov_epi64(at, fresh, _mm512_set1_epi64(n));
                count = _mm512_mask_add_epi64(count, hit, count, one);
            }
            store8(counts + base, count);
            store8(first + base, at);
        }
}

/* The bodies above, compiled with the word count as a constant for the common widths
 * (K <= 64, K <= 128) so that the weights stay in registers while the points stream past. */
static AVX512_TARGET void extremes_avx512(const uint64_t *a, const uint64_t *w, ssize b0, ssize b1, ssize n_pts,
                                          ssize words, ssize groups, int32_t *pmin, int32_t *pmax) {
    if (words == 1) extremes_avx512_body(a, w, b0, b1, n_pts, 1, groups, pmin, pmax);
    else if (words == 2) extremes_avx512_body(a, w, b0, b1, n_pts, 2, groups, pmin, pmax);
    else extremes_avx512_body(a, w, b0, b1, n_pts, words, groups, pmin, pmax);
}

static AVX512_TARGET void counts_avx512(const uint64_t *a, const uint64_t *w, const int32_t *target, ssize b0,
                                        ssize b1, ssize n_pts, ssize words, ssize groups, int32_t *counts,
                                        int32_t *first) {
    if (words == 1) counts_avx512_body(a, w, target, b0, b1, n_pts, 1, groups, counts, first);
    else if (words == 2) counts_avx512_body(a, w, target, b0, b1, n_pts, 2, groups, counts, first);
    else counts_avx512_body(a, w, target, b0, b1, n_pts, words, groups, counts, first);
}
#endif

/* ------------------------------------------------------------------ backward scatter */
/* For every cloud b, channel c and tied point n (popcount == target, or every point when the
 * target is -1):  sparse_w[c, :] += coef_w[b, c] * a_sign[b, n, :]
 *                 sparse_a[b, n, :] += coef_a[b, c] * w_sign[c, :]
 * The tie test runs 8 channels at a time on AVX-512; the accumulation is plain C either way. */

static inline void add_signs_plain(float *dst, const uint64_t *bits, ssize k_in, float coef) {
    for (ssize k = 0; k < k_in; k++) dst[k] += ((bits[k >> 6] >> (k & 63)) & 1) ? coef : -coef;
}

#if HAVE_X86
static AVX512_TARGET void add_signs_avx512(float *dst, const uint64_t *bits, ssize k_in, float coef) {
    const __m512 pos = _mm512_set1_ps(coef), neg = _mm512_set1_ps(-coef);
    ssize k = 0;
    for (; k + 16 <= k_in; k += 16) {
        __mmask16 m = (__mmask16)(bits[k >> 6] >> (k & 63));
        _mm512_storeu_ps(dst + k, _mm512_add_ps(_mm512_loadu_ps(dst + k), _mm512_mask_blend_ps(m, neg, pos)));
    }
    for (; k < k_in; k++) dst[k] += ((bits[k >> 6] >> (k & 63)) & 1) ? coef : -coef;
}
#endif

typedef void (*add_signs_fn)(float *, const uint64_t *, ssize, float);

static inline void scatter_one(const uint64_t *a, const uint64_t *w, ssize b, ssize n, ssize g, int lane, ssize n_pts,
                               ssize words, ssize groups, ssize k_in, const float *coef_w, const float *coef_a,
                               float *sparse_w, float *sparse_a, uint64_t *wrow, add_signs_fn add_signs) {
    ssize c = g * 8 + lane, bc = b * groups * 8 + c;
    for (ssize j = 0; j < words; j++) wrow[j] = w[(g * words + j) * 8 + lane];
    if (coef_w[bc] != 0.0f) add_signs(sparse_w + c * k_in, a + (b * n_pts + n) * words, k_in, coef_w[bc]);
    if (coef_a[bc] != 0.0f) add_signs(sparse_a + (b * n_pts + n) * k_in, wrow, k_in, coef_a[bc]);
}

/* A (cloud, channel) with one tied point is done from its index; only several ties need a scan. */
static inline int scatter_single(const uint64_t *a, const uint64_t *w, const int32_t *counts, const int32_t *first,
                                 ssize b, ssize g, int lane, ssize n_pts, ssize words, ssize groups, ssize k_in,
                                 const float *coef_w, const float *coef_a, float *sparse_w, float *sparse_a,
                                 uint64_t *wrow, add_signs_fn add_signs) {
    ssize bc = b * groups * 8 + g * 8 + lane;
    if (coef_w[bc] == 0.0f && coef_a[bc] == 0.0f) return 1;
    if (counts[bc] != 1) return 0;
    scatter_one(a, w, b, first[bc], g, lane, n_pts, words, groups, k_in, coef_w, coef_a, sparse_w, sparse_a, wrow,
                add_signs);
    return 1;
}

#define SCATTER_SCALAR(SUFFIX, ATTR)                                                                   \
    static ATTR void scatter_##SUFFIX(const uint64_t *a, const uint64_t *w, const int32_t *target,    \
                                      const int32_t *counts, const int32_t *first, const float *coef_w, \
                                      const float *coef_a, ssize b0, ssize b1, ssize n_pts, ssize words, \
                                      ssize groups, ssize k_in, float *sparse_w, float *sparse_a, uint64_t *wrow) { \
        for (ssize b = b0; b < b1; b++)                                                               \
            for (ssize g = 0; g < groups; g++)                                                        \
                for (int lane = 0; lane < 8; lane++) {                                                \
                    ssize bc = b * groups * 8 + g * 8 + lane;                                         \
                    if (scatter_single(a, w, counts, first, b, g, lane, n_pts, words, groups, k_in, coef_w, \
                                       coef_a, sparse_w, sparse_a, wrow, add_signs_plain))            \
                        continue;                                                                     \
                    for (ssize n = 0; n < n_pts; n++)                                                 \
                        if (target[bc] < 0 ||                                                         \
                            pc_##SUFFIX(a + (b * n_pts + n) * words, w + g * words * 8, words, lane) == target[bc]) \
                            scatter_one(a, w, b, n, g, lane, n_pts, words, groups, k_in, coef_w, coef_a, \
                                        sparse_w, sparse_a, wrow, add_signs_plain);                   \
                }                                                                                     \
    }

SCATTER_SCALAR(generic, )
#if HAVE_X86
SCATTER_SCALAR(popcnt, __attribute__((target("popcnt"))))

static AVX512_TARGET INLINE void scatter_avx512_body(const uint64_t *a, const uint64_t *w, const int32_t *target,
                                                     const int32_t *counts, const int32_t *first, const float *coef_w,
                                                     const float *coef_a, ssize b0, ssize b1, ssize n_pts, ssize words,
                                                     ssize groups, ssize k_in, float *sparse_w, float *sparse_a,
                                                     uint64_t *wrow) {
    for (ssize b = b0; b < b1; b++)
        for (ssize g = 0; g < groups; g++) {
            const ssize base = b * groups * 8 + g * 8;
            __mmask8 live = 0;
            for (int lane = 0; lane < 8; lane++)
                if (!scatter_single(a, w, counts, first, b, g, lane, n_pts, words, groups, k_in, coef_w, coef_a,
                                    sparse_w, sparse_a, wrow, add_signs_avx512))
                    live |= (__mmask8)(1u << lane);
            if (!live) continue;
            __m512i tv = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(target + base)));
            __mmask8 every = _mm512_cmplt_epi64_mask(tv, _mm512_setzero_si512()) & live;
            for (ssize n = 0; n < n_pts; n++) {
                __mmask8 hit = (_mm512_cmpeq_epi64_mask(pc8(a + (b * n_pts + n) * words, w + g * words * 8, words), tv)
                                & live) | every;
                while (hit) {
                    int lane = __builtin_ctz(hit);
                    hit &= (__mmask8)(hit - 1);
                    scatter_one(a, w, b, n, g, lane, n_pts, words, groups, k_in, coef_w, coef_a, sparse_w, sparse_a,
                                wrow, add_signs_avx512);
                }
            }
        }
}

static AVX512_TARGET void scatter_avx512(const uint64_t *a, const uint64_t *w, const int32_t *target,
                                         const int32_t *counts, const int32_t *first, const float *coef_w,
                                         const float *coef_a, ssize b0, ssize b1, ssize n_pts, ssize words,
                                         ssize groups, ssize k_in, float *sparse_w, float *sparse_a, uint64_t *wrow) {
    if (words == 2)
        scatter_avx512_body(a, w, target, counts, first, coef_w, coef_a, b0, b1, n_pts, 2, groups, k_in, sparse_w,
                            sparse_a, wrow);
    else
        scatter_avx512_body(a, w, target, counts, first, coef_w, coef_a, b0, b1, n_pts, words, groups, k_in, sparse_w,
                            sparse_a, wrow);
}
#endif

/* ------------------------------------------------------------------ Python bindings */

static int check_path(int path) {
    if ((path == 2 && cpu_has_avx512()) || (path == 1 && cpu_has_popcnt()) || path == 0) return 1;
    PyErr_Format(PyExc_RuntimeError, "training kernel path %d cannot run on this CPU", path);
    return 0;
}

static int check_layout(ssize b0, ssize b1, ssize batch, ssize n_pts, ssize words, ssize groups) {
    if (0 <= b0 && b0 <= b1 && b1 <= batch && n_pts >= 1 && words >= 1 && groups >= 1) return 1;
    PyErr_SetString(PyExc_ValueError, "inconsistent sizes");
    return 0;
}

static PyObject *py_pack_signs(PyObject *self, PyObject *args) {
    /* a float32 [B, K, N] -> bits uint64 [B, N, W], bit k set where a[b, k, n] >= 0 */
    Py_buffer a, out;
    ssize batch, k_in, n_pts, words;
    if (!PyArg_ParseTuple(args, "y*nnnnw*", &a, &batch, &k_in, &n_pts, &words, &out)) return NULL;
    PyObject *result = NULL;
    if (k_in >= 1 && words * 64 >= k_in && check_size(&a, mul3(batch, k_in, n_pts), 4, "a")
        && check_size(&out, mul3(batch, n_pts, words), 8, "out")) {
        const float *x = a.buf;
        uint64_t *o = out.buf;
        uint64_t *word = PyMem_RawMalloc(n_pts * sizeof(uint64_t));
        if (!word) { PyErr_NoMemory(); goto done; }
        Py_BEGIN_ALLOW_THREADS
        for (ssize b = 0; b < batch; b++)
            for (ssize j = 0; j < words; j++) {
                memset(word, 0, n_pts * sizeof(uint64_t));
                for (ssize k = 64 * j; k < k_in && k < 64 * (j + 1); k++) {
                    const float *row = x + (b * k_in + k) * n_pts;
                    for (ssize n = 0; n < n_pts; n++) word[n] |= (uint64_t)(row[n] >= 0.0f) << (k & 63);
                }
                for (ssize n = 0; n < n_pts; n++) o[(b * n_pts + n) * words + j] = word[n];
            }
        Py_END_ALLOW_THREADS
        PyMem_RawFree(word);
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyBuffer_Release(&a);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_extremes(PyObject *self, PyObject *args) {
    Py_buffer a, w, lo, hi;
    ssize b0, b1, batch, n_pts, words, groups;
    int path;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnnw*w*i", &a, &w, &b0, &b1, &batch, &n_pts, &words, &groups, &lo, &hi, &path))
        return NULL;
    PyObject *result = NULL;
    if (check_path(path) && check_layout(b0, b1, batch, n_pts, words, groups)
        && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
        && check_size(&w, mul3(groups, words, 8), 8, "weight bits")
        && check_size(&lo, mul3(batch, groups, 8), 4, "min") && check_size(&hi, mul3(batch, groups, 8), 4, "max")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (path == 2) extremes_avx512(a.buf, w.buf, b0, b1, n_pts, words, groups, lo.buf, hi.buf);
        else if (path == 1) extremes_popcnt(a.buf, w.buf, b0, b1, n_pts, words, groups, lo.buf, hi.buf);
        else
#endif
            extremes_generic(a.buf, w.buf, b0, b1, n_pts, words, groups, lo.buf, hi.buf);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&w);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    return result;
}

static PyObject *py_tie_counts(PyObject *self, PyObject *args) {
    Py_buffer a, w, t, counts, first;
    ssize b0, b1, batch, n_pts, words, groups;
    int path;
    if (!PyArg_ParseTuple(args, "y*y*y*nnnnnnw*w*i", &a, &w, &t, &b0, &b1, &batch, &n_pts, &words, &groups, &counts,
                          &first, &path))
        return NULL;
    PyObject *result = NULL;
    if (check_path(path) && check_layout(b0, b1, batch, n_pts, words, groups)
        && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
        && check_size(&w, mul3(groups, words, 8), 8, "weight bits")
        && check_size(&t, mul3(batch, groups, 8), 4, "targets")
        && check_size(&counts, mul3(batch, groups, 8), 4, "counts")
        && check_size(&first, mul3(batch, groups, 8), 4, "first")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (path == 2) counts_avx512(a.buf, w.buf, t.buf, b0, b1, n_pts, words, groups, counts.buf, first.buf);
        else if (path == 1) counts_popcnt(a.buf, w.buf, t.buf, b0, b1, n_pts, words, groups, counts.buf, first.buf);
        else
#endif
            counts_generic(a.buf, w.buf, t.buf, b0, b1, n_pts, words, groups, counts.buf, first.buf);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&w);
    PyBuffer_Release(&t);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&first);
    return result;
}

static PyObject *py_scatter_ties(PyObject *self, PyObject *args) {
    Py_buffer a, w, t, cnt, fst, cw, ca, sw, sa;
    ssize b0, b1, batch, n_pts, words, groups, k_in;
    int path;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*nnnnnnnw*w*i", &a, &w, &t, &cnt, &fst, &cw, &ca, &b0, &b1, &batch,
                          &n_pts, &words, &groups, &k_in, &sw, &sa, &path))
        return NULL;
    PyObject *result = NULL;
    uint64_t wrow[64];
    if (check_path(path) && check_layout(b0, b1, batch, n_pts, words, groups)
        && (k_in >= 1 && words * 64 >= k_in && words <= 64 ? 1 : (PyErr_SetString(PyExc_ValueError, "bad K"), 0))
        && check_size(&a, mul3(batch, n_pts, words), 8, "activation bits")
        && check_size(&w, mul3(groups, words, 8), 8, "weight bits")
        && check_size(&t, mul3(batch, groups, 8), 4, "targets")
        && check_size(&cnt, mul3(batch, groups, 8), 4, "counts") && check_size(&fst, mul3(batch, groups, 8), 4, "first")
        && check_size(&cw, mul3(batch, groups, 8), 4, "coef_w") && check_size(&ca, mul3(batch, groups, 8), 4, "coef_a")
        && check_size(&sw, mul3(groups, 8, k_in), 4, "sparse_w")
        && check_size(&sa, mul3(batch, n_pts, k_in), 4, "sparse_a")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (path == 2)
            scatter_avx512(a.buf, w.buf, t.buf, cnt.buf, fst.buf, cw.buf, ca.buf, b0, b1, n_pts, words, groups, k_in, sw.buf, sa.buf, wrow);
        else if (path == 1)
            scatter_popcnt(a.buf, w.buf, t.buf, cnt.buf, fst.buf, cw.buf, ca.buf, b0, b1, n_pts, words, groups, k_in, sw.buf, sa.buf, wrow);
        else
#endif
            scatter_generic(a.buf, w.buf, t.buf, cnt.buf, fst.buf, cw.buf, ca.buf, b0, b1, n_pts, words, groups, k_in, sw.buf, sa.buf,
                            wrow);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&w);
    PyBuffer_Release(&t);
    PyBuffer_Release(&cnt);
    PyBuffer_Release(&fst);
    PyBuffer_Release(&cw);
    PyBuffer_Release(&ca);
    PyBuffer_Release(&sw);
    PyBuffer_Release(&sa);
    return result;
}

static PyObject *py_paths(PyObject *self, PyObject *args) {
    /* the paths this CPU runs, fastest first */
    if (cpu_has_avx512()) return Py_BuildValue("(sss)", "avx512", "popcnt", "generic");
    if (cpu_has_popcnt()) return Py_BuildValue("(ss)", "popcnt", "generic");
    return Py_BuildValue("(s)", "generic");
}

static PyMethodDef methods[] = {
    {"pack_signs", py_pack_signs, METH_VARARGS, "float32 [B, K, N] -> sign bits uint64 [B, N, W]"},
    {"extremes", py_extremes, METH_VARARGS, "min and max popcount over points per (cloud, channel)"},
    {"tie_counts", py_tie_counts, METH_VARARGS, "points whose popcount equals the target, per (cloud, channel)"},
    {"scatter_ties", py_scatter_ties, METH_VARARGS, "accumulate the max's gradient over tied points"},
    {"paths", py_paths, METH_NOARGS, "kernel paths this CPU runs, fastest first"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_point_kernels", .m_doc = "binary point-layer training kernels",
    .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__point_kernels(void) { return PyModule_Create(&module); }
