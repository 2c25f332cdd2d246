/* XNOR/popcount kernels of pointdistill.engine.
 *
 * Two implementations of every kernel, chosen at run time per call (`kernel` argument):
 *   1: AVX-512 F/BW + VPOPCNTDQ (compiled with target attributes, run only where the CPU has them)
 *   0: scalar, 64-bit popcount per word (hardware POPCNT instruction)
 * so one build serves every x86-64 CPU that has POPCNT. Both give identical bits.
 *
 * Layouts (all little-endian, C order):
 *   packed bits   uint64 [rows, words]: channel k at bit k % 64 of word k // 64, 1 = +1
 *   weights       uint64 [groups, words, 8]: output channel 8 g + lane, word j at [g][j][lane];
 *                 one 512-bit register holds word j of 8 output channels. Padding channels are 0.
 *   thresholds    int64 [groups * 8]: output bit = popcount(x XOR w) <= threshold (-1: never)
 *   stem weights  float32 [3, M16] (x, y, z coefficient rows), scale/offset float32 [M16], M16 = M
 *                 rounded up to 16; output bit m = scale*((wx*px + wy*py) + wz*pz) + offset >= 0,
 *                 evaluated in exactly that order without fused multiply-add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../cpu_features.h"
#include "../size_checks.h"

/* ---------------------------------------------------------------- scalar kernels */

#if HAVE_X86
/* Hardware POPCNT, present on every x86-64 CPU since 2008-2009 (Nehalem, K10); not checked at run time. */
#define POPCNT_TARGET __attribute__((target("popcnt")))
#else
#define POPCNT_TARGET
#endif

static inline int64_t popcount_xor(const uint64_t *x, const uint64_t *w_group, Py_ssize_t words, int lane) {
    int64_t count = 0;
    for (Py_ssize_t j = 0; j < words; j++)
        count += __builtin_popcountll(x[j] ^ w_group[j * 8 + lane]);
    return count;
}

static POPCNT_TARGET void stem_scalar(const float *points, const float *w, const float *scale, const float *offset,
                                    Py_ssize_t rows, Py_ssize_t m16, Py_ssize_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float px = points[3 * r], py = points[3 * r + 1], pz = points[3 * r + 2];
        uint64_t *o = out + r * out_words;
        memset(o, 0, out_words * sizeof(uint64_t));
        for (Py_ssize_t m = 0; m < out_words * 64 && m < m16; m++) {
            /* built with -ffp-contract=off: no FMA, the same rounding as NumPy's separate ops */
            const float z = (wx[m] * px + wy[m] * py) + wz[m] * pz;
            const float v = scale[m] * z + offset[m];
            if (v >= 0.0f) o[m >> 6] |= (uint64_t)1 << (m & 63);
        }
    }
}

static POPCNT_TARGET void binary_scalar(const uint64_t *x, const uint64_t *w, const int64_t *thr, Py_ssize_t rows,
                                      Py_ssize_t groups, Py_ssize_t words, Py_ssize_t out_words, uint64_t *out) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint64_t *o = out + r * out_words;
        memset(o, 0, out_words * sizeof(uint64_t));
        for (Py_ssize_t g = 0; g < groups; g++)
            for (int lane = 0; lane < 8; lane++) {
                Py_ssize_t m = 8 * g + lane;
                if (popcount_xor(x + r * words, w + g * words * 8, words, lane) <= thr[m])
                    o[m >> 6] |= (uint64_t)1 << (m & 63);
            }
    }
}

static POPCNT_TARGET void pool_scalar(const uint64_t *x, const uint64_t *w, const int64_t *thr, Py_ssize_t clouds,
                                    Py_ssize_t points, Py_ssize_t groups, Py_ssize_t words, Py_ssize_t out_words,
                                    uint64_t *out) {
    for (Py_ssize_t b = 0; b < clouds; b++) {
        uint64_t *o = out + b * out_words;
        memset(o, 0, out_words * sizeof(uint64_t));
        for (Py_ssize_t g = 0; g < groups; g++)
            for (int lane = 0; lane < 8; lane++) {
                Py_ssize_t m = 8 * g + lane;
                for (Py_ssize_t n = 0; n < points; n++)
                    if (popcount_xor(x + (b * points + n) * words, w + g * words * 8, words, lane) <= thr[m]) {
                        o[m >> 6] |= (uint64_t)1 << (m & 63);
                        break;  /* OR over points: one point is enough */
                    }
            }
    }
}

static POPCNT_TARGET void counts_scalar(const uint64_t *x, const uint64_t *w, Py_ssize_t rows, Py_ssize_t groups,
                                      Py_ssize_t words, Py_ssize_t outputs, int32_t *out) {
    for (Py_ssize_t r = 0; r < rows; r++)
        for (Py_ssize_t m = 0; m < outputs; m++)
            out[r * outputs + m] = (int32_t)popcount_xor(x + r * words, w + (m / 8) * words * 8, words, (int)(m % 8));
}

/* ---------------------------------------------------------------- AVX-512 kernels */

#if HAVE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,popcnt")))

static AVX512 void stem_avx512(const float *points, const float *w, const float *scale, const float *offset,
                               Py_ssize_t rows, Py_ssize_t m16, Py_ssize_t out_words, uint64_t *out) {
    const float *wx = w, *wy = w + m16, *wz = w + 2 * m16;
    const __m512 zero = _mm512_setzero_ps();
    for (Py_ssize_t r = 0; r < rows; r++) {
        const __m512 px = _mm512_set1_ps(points[3 * r]), py = _mm512_set1_ps(points[3 * r + 1]),
                     pz = _mm512_set1_ps(points[3 * r + 2]);
        uint16_t *o = (uint16_t *)(out + r * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        for (Py_ssize_t m = 0; m < m16; m += 16) {
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
static AVX512 inline __attribute__((always_inline)) void binary_group_avx512(
        const uint64_t *x, const uint64_t *wg, __m512i thr, Py_ssize_t rows, Py_ssize_t words, uint8_t *o,
        Py_ssize_t out_stride) {
    if (words == 1) {
        const __m512i w0 = _mm512_loadu_si512(wg);
        for (Py_ssize_t r = 0; r < rows; r++)
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[r]), w0)), thr);
    } else if (words == 2) {
        const __m512i w0 = _mm512_loadu_si512(wg), w1 = _mm512_loadu_si512(wg + 8);
        for (Py_ssize_t r = 0; r < rows; r++)
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(_mm512_add_epi64(
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[2 * r]), w0)),
                _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)x[2 * r + 1]), w1))), thr);
    } else {
        for (Py_ssize_t r = 0; r < rows; r++) {
            const uint64_t *xr = x + r * words;
            __m512i acc = _mm512_setzero_si512();
            for (Py_ssize_t j = 0; j < words; j++)
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                    _mm512_set1_epi64((long long)xr[j]), _mm512_loadu_si512(wg + j * 8))));
            o[r * out_stride] = (uint8_t)_mm512_cmple_epi64_mask(acc, thr);
        }
    }
}

static AVX512 void binary_avx512(const uint64_t *x, const uint64_t *w, const int64_t *thr, Py_ssize_t rows,
                                 Py_ssize_t groups, Py_ssize_t words, Py_ssize_t out_words, uint64_t *out) {
    memset(out, 0, rows * out_words * sizeof(uint64_t));
    for (Py_ssize_t g = 0; g < groups; g++)
        binary_group_avx512(x, w + g * words * 8, _mm512_loadu_si512(thr + 8 * g), rows, words,
                            (uint8_t *)out + g, out_words * 8);
}

/* Fused last point layer + max-pool + sign: per 8 channels, the minimum popcount over the points
 * is compared once with the threshold, so the [N, M] layer output is never materialised.
 * BLOCK groups at a time keep BLOCK * WORDS weight registers live across the point loop. */
#define POOL_BLOCK 8
static AVX512 inline __attribute__((always_inline)) void pool_block_avx512(
        const uint64_t *x, Py_ssize_t points, const uint64_t *wg, Py_ssize_t words, __m512i *mins, int block) {
    for (int q = 0; q < block; q++) mins[q] = _mm512_set1_epi64(-1);
    if (words == 1) {
        __m512i w0[POOL_BLOCK];
        for (int q = 0; q < block; q++) w0[q] = _mm512_loadu_si512(wg + q * 8);
        for (Py_ssize_t n = 0; n < points; n++) {
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
        for (Py_ssize_t n = 0; n < points; n++) {
            const __m512i x0 = _mm512_set1_epi64((long long)x[2 * n]), x1 = _mm512_set1_epi64((long long)x[2 * n + 1]);
            for (int q = 0; q < block; q++)
                mins[q] = _mm512_min_epu64(mins[q], _mm512_add_epi64(
                    _mm512_popcnt_epi64(_mm512_xor_si512(x0, w0[q])),
                    _mm512_popcnt_epi64(_mm512_xor_si512(x1, w1[q]))));
        }
    } else {
        for (Py_ssize_t n = 0; n < points; n++) {
            const uint64_t *xn = x + n * words;
            for (int q = 0; q < block; q++) {
                const uint64_t *w = wg + q * words * 8;
                __m512i acc = _mm512_setzero_si512();
                for (Py_ssize_t j = 0; j < words; j++)
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                        _mm512_set1_epi64((long long)xn[j]), _mm512_loadu_si512(w + j * 8))));
                mins[q] = _mm512_min_epu64(mins[q], acc);
            }
        }
    }
}

static AVX512 void pool_avx512(const uint64_t *x, const uint64_t *w, const int64_t *thr, Py_ssize_t clouds,
                               Py_ssize_t points, Py_ssize_t groups, Py_ssize_t words, Py_ssize_t out_words,
                               uint64_t *out) {
    for (Py_ssize_t b = 0; b < clouds; b++) {
        uint8_t *o = (uint8_t *)(out + b * out_words);
        memset(o, 0, out_words * sizeof(uint64_t));
        const uint64_t *xb = x + b * points * words;
        for (Py_ssize_t g = 0; g < groups; g += POOL_BLOCK) {
            int block = groups - g < POOL_BLOCK ? (int)(groups - g) : POOL_BLOCK;
            __m512i mins[POOL_BLOCK];
            pool_block_avx512(xb, points, w + g * words * 8, words, mins, block);
            for (int q = 0; q < block; q++)
                o[g + q] = (uint8_t)_mm512_cmple_epi64_mask(mins[q], _mm512_loadu_si512(thr + 8 * (g + q)));
        }
    }
}

/* Peak: independent VPOPCNTQ on registers, the ceiling any popcount kernel can reach here. */
static AVX512 uint64_t popcount_peak_avx512(Py_ssize_t iterations) {
    __m512i a0 = _mm512_set1_epi64(0x0123456789abcdefLL), a1 = _mm512_set1_epi64(0x1111), a2 = _mm512_set1_epi64(7),
            a3 = _mm512_set1_epi64(-1), a4 = _mm512_set1_epi64(3), a5 = _mm512_set1_epi64(5),
            a6 = _mm512_set1_epi64(9), a7 = _mm512_set1_epi64(11);
    for (Py_ssize_t i = 0; i < iterations; i++) {
        a0 = _mm512_popcnt_epi64(a0); a1 = _mm512_popcnt_epi64(a1); a2 = _mm512_popcnt_epi64(a2);
        a3 = _mm512_popcnt_epi64(a3); a4 = _mm512_popcnt_epi64(a4); a5 = _mm512_popcnt_epi64(a5);
        a6 = _mm512_popcnt_epi64(a6); a7 = _mm512_popcnt_epi64(a7);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                 _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}
#endif

/* ---------------------------------------------------------------- Python bindings */

static int check_kernel(int kernel) {
    if (kernel == 1 && !cpu_has_avx512()) {
        PyErr_SetString(PyExc_RuntimeError, "the AVX-512 VPOPCNTDQ kernel was asked for but this CPU lacks it");
        return 0;
    }
    return 1;
}

static PyObject *py_stem(PyObject *self, PyObject *args) {
    Py_buffer p, w, s, c, out;
    Py_ssize_t rows, m16, out_words;
    int kernel;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nnnw*i", &p, &w, &s, &c, &rows, &m16, &out_words, &out, &kernel)) return NULL;
    PyObject *result = NULL;
    if (m16 >= 0 && m16 % 16 == 0 && out_words >= (m16 + 63) / 64 && check_kernel(kernel)
        && check_size(&p, mul3(rows, 3, 1), 4, "points") && check_size(&w, mul3(3, m16, 1), 4, "weight")
        && check_size(&s, m16, 4, "scale") && check_size(&c, m16, 4, "offset")
        && check_size(&out, mul3(rows, out_words, 1), 8, "out")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (kernel == 1) stem_avx512(p.buf, w.buf, s.buf, c.buf, rows, m16, out_words, out.buf); else
#endif
        stem_scalar(p.buf, w.buf, s.buf, c.buf, rows, m16, out_words, out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "stem: inconsistent sizes");
    }
    PyBuffer_Release(&p); PyBuffer_Release(&w); PyBuffer_Release(&s); PyBuffer_Release(&c); PyBuffer_Release(&out);
    return result;
}

static PyObject *py_binary(PyObject *self, PyObject *args) {
    Py_buffer x, w, t, out;
    Py_ssize_t rows, groups, words, out_words;
    int kernel;
    if (!PyArg_ParseTuple(args, "y*y*y*nnnnw*i", &x, &w, &t, &rows, &groups, &words, &out_words, &out, &kernel))
        return NULL;
    PyObject *result = NULL;
    if (words >= 1 && groups >= 0 && out_words >= (groups + 7) / 8 && check_kernel(kernel)
        && check_size(&x, mul3(rows, words, 1), 8, "x") && check_size(&w, mul3(groups, words, 8), 8, "weights")
        && check_size(&t, mul3(groups, 8, 1), 8, "thresholds") && check_size(&out, mul3(rows, out_words, 1), 8, "out")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (kernel == 1) binary_avx512(x.buf, w.buf, t.buf, rows, groups, words, out_words, out.buf); else
#endif
        binary_scalar(x.buf, w.buf, t.buf, rows, groups, words, out_words, out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "binary: inconsistent sizes");
    }
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&t); PyBuffer_Release(&out);
    return result;
}

static PyObject *py_pool(PyObject *self, PyObject *args) {
    Py_buffer x, w, t, out;
    Py_ssize_t clouds, points, groups, words, out_words;
    int kernel;
    if (!PyArg_ParseTuple(args, "y*y*y*nnnnnw*i", &x, &w, &t, &clouds, &points, &groups, &words, &out_words, &out,
                          &kernel))
        return NULL;
    PyObject *result = NULL;
    if (words >= 1 && points >= 1 && groups >= 0 && out_words >= (groups + 7) / 8 && check_kernel(kernel)
        && check_size(&x, mul3(clouds, points, words), 8, "x") && check_size(&w, mul3(groups, words, 8), 8, "weights")
        && check_size(&t, mul3(groups, 8, 1), 8, "thresholds") && check_size(&out, mul3(clouds, out_words, 1), 8, "out")) {
        Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
        if (kernel == 1) pool_avx512(x.buf, w.buf, t.buf, clouds, points, groups, words, out_words, out.buf); else
#endif
        pool_scalar(x.buf, w.buf, t.buf, clouds, points, groups, words, out_words, out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "pool: inconsistent sizes");
    }
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&t); PyBuffer_Release(&out);
    return result;
}

static PyObject *py_counts(PyObject *self, PyObject *args) {
    Py_buffer x, w, out;
    Py_ssize_t rows, groups, words, outputs;
    if (!PyArg_ParseTuple(args, "y*y*nnnnw*", &x, &w, &rows, &groups, &words, &outputs, &out)) return NULL;
    PyObject *result = NULL;
    if (words >= 1 && groups >= 0 && outputs >= 0 && (outputs + 7) / 8 <= groups && check_size(&x, mul3(rows, words, 1), 8, "x")
        && check_size(&w, mul3(groups, words, 8), 8, "weights") && check_size(&out, mul3(rows, outputs, 1), 4, "out")) {
        Py_BEGIN_ALLOW_THREADS
        counts_scalar(x.buf, w.buf, rows, groups, words, outputs, out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "counts: inconsistent sizes");
    }
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&out);
    return result;
}

static PyObject *py_has_avx512(PyObject *self, PyObject *args) { return PyBool_FromLong(cpu_has_avx512()); }

static PyObject *py_popcount_peak(PyObject *self, PyObject *args) {
    Py_ssize_t iterations;
    if (!PyArg_ParseTuple(args, "n", &iterations)) return NULL;
    if (!check_kernel(1)) return NULL;
    uint64_t sink = 0;
#if HAVE_X86
    Py_BEGIN_ALLOW_THREADS
    sink = popcount_peak_avx512(iterations);
    Py_END_ALLOW_THREADS
#endif
    return PyLong_FromUnsignedLongLong(sink);
}

static PyMethodDef methods[] = {
    {"stem", py_stem, METH_VARARGS, "float points -> packed sign bits of the folded first layer"},
    {"binary", py_binary, METH_VARARGS, "packed bits -> packed bits: popcount(x XOR w) <= threshold"},
    {"pool", py_pool, METH_VARARGS, "packed bits per point -> per cloud: OR over points, fused"},
    {"counts", py_counts, METH_VARARGS, "packed bits -> int32 popcount(x XOR w) per row and channel"},
    {"has_avx512_vpopcntdq", py_has_avx512, METH_NOARGS, "whether this CPU runs the AVX-512 kernel"},
    {"popcount_peak", py_popcount_peak, METH_VARARGS, "run iterations x 8 independent VPOPCNTQ (benchmark)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_kernels", .m_doc = "XNOR/popcount kernels", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
