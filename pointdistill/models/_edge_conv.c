/* CPU kernels of DGCNN's fused EdgeConv (pointdistill.models.edge_conv): the reductions over each
 * point's k neighbours that its forward and backward need, without forming the [B, N, k, C] edges.
 *
 *   v      float32 [B, N, C]  the neighbour term W_o x_j of every point j
 *   index  int64   [B, N, k]  the k neighbours of every point i (values in [0, N))
 *   lower  uint8   [C]        1 where a channel pools the min (a negative BatchNorm scale)
 *
 *   edge_reduce -> top float32 [B, N, C]: the max (min where lower) of v over i's neighbours,
 *                  ties int32 [B, N, C]: how many neighbours reach it, sums float32 [B, N, C]:
 *                  the sum of v over them, counts int32 [B, N]: how many lists point j is in
 *   edge_scatter(share float32 [B, N, C], u float32 [B, N, C]) -> grad_v float32 [B, N, C]: the sum
 *                  of share[i, c] over the edges (i, j) where v[j, c] reaches top[i, c], and
 *                  reverse float32 [B, N, C]: the sum of u[i] over the edges (i, j) into j
 *
 * Each cloud is one pass over its edges in order (i, then the list), so the results depend on
 * neither the thread count nor the slices: clouds are split into `threads` contiguous slices run
 * in one OpenMP region on the libgomp torch already loaded (as _point_kernels does). Built without
 * OpenMP, the slices run one after the other. Plain C: the compiler vectorises the channel loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../size_checks.h"

typedef Py_ssize_t ssize;

static ssize slice_start(ssize total, int s, int parts) { return total * s / parts; }

/* One cloud's reductions (see above); counts must be zero on entry. */
static void reduce_cloud(const float *v, const int64_t *index, const uint8_t *lower, ssize n, ssize k, ssize c_n,
                         float *top, int32_t *ties, float *sums, int32_t *counts) {
    for (ssize i = 0; i < n; i++) {
        const int64_t *list = index + i * k;
        float *t = top + i * c_n;
        int32_t *tied = ties + i * c_n;
        float *s = sums + i * c_n;
        const float *first = v + list[0] * c_n;
        for (ssize c = 0; c < c_n; c++) {
            t[c] = first[c];
            tied[c] = 1;
            s[c] = first[c];
        }
        counts[list[0]]++;
        for (ssize q = 1; q < k; q++) {
            const float *row = v + list[q] * c_n;
            counts[list[q]]++;
            for (ssize c = 0; c < c_n; c++) {
                float value = row[c], best = t[c];
                int better = lower[c] ? value < best : value > best;
                t[c] = better ? value : best;
                tied[c] = better ? 1 : tied[c] + (value == best);
                s[c] += value;
            }
        }
    }
}

/* One cloud's backward scatter (see above); grad_v and reverse must be zero on entry. */
static void scatter_cloud(const float *v, const int64_t *index, const float *top, const float *share, const float *u,
                          ssize n, ssize k, ssize c_n, float *grad_v, float *reverse) {
    for (ssize i = 0; i < n; i++) {
        const float *t = top + i * c_n, *g = share + i * c_n, *ui = u + i * c_n;
        for (ssize q = 0; q < k; q++) {
            ssize j = index[i * k + q];
            const float *row = v + j * c_n;
            float *gj = grad_v + j * c_n;
            float *rj = reverse + j * c_n;
            for (ssize c = 0; c < c_n; c++) {
                gj[c] += row[c] == t[c] ? g[c] : 0.0f;
                rj[c] += ui[c];
            }
        }
    }
}

/* every index in [0, n) */
static int check_index(const int64_t *index, ssize count, ssize n) {
    for (ssize e = 0; e < count; e++)
        if (index[e] < 0 || index[e] >= n) {
            PyErr_Format(PyExc_ValueError, "neighbour index %lld out of range for %zd points", (long long)index[e], n);
            return 0;
        }
    return 1;
}

static int check_shape(ssize batch, ssize n, ssize k, ssize c_n) {
    if (batch >= 0 && n >= 1 && 1 <= k && c_n >= 1) return 1;
    PyErr_SetString(PyExc_ValueError, "need B >= 0, N >= 1, k >= 1, C >= 1");
    return 0;
}

static PyObject *py_edge_reduce(PyObject *self, PyObject *args) {
    Py_buffer v, index, lower, top, ties, sums, counts;
    ssize batch, n, k, c_n;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*y*nnnnw*w*w*w*i", &v, &index, &lower, &batch, &n, &k, &c_n, &top, &ties, &sums,
                          &counts, &threads))
        return NULL;
    ssize points = mul3(batch, n, c_n);
    int ok = check_threads(threads) && check_shape(batch, n, k, c_n) && check_size(&v, points, 4, "v")
             && check_size(&index, mul3(batch, n, k), 8, "index") && check_size(&lower, c_n, 1, "lower")
             && check_size(&top, points, 4, "top") && check_size(&ties, points, 4, "ties")
             && check_size(&sums, points, 4, "sums") && check_size(&counts, mul3(batch, n, 1), 4, "counts")
             && check_index(index.buf, batch * n * k, n);
    if (ok) {
        const float *vb = v.buf;
        const int64_t *ib = index.buf;
        float *tb = top.buf;
        int32_t *eb = ties.buf, *cb = counts.buf;
        float *sb = sums.buf;
        memset(cb, 0, sizeof(int32_t) * (size_t)(batch * n));
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            for (ssize b = slice_start(batch, s, threads); b < slice_start(batch, s + 1, threads); b++)
                reduce_cloud(vb + b * n * c_n, ib + b * n * k, lower.buf, n, k, c_n, tb + b * n * c_n,
                             eb + b * n * c_n, sb + b * n * c_n, cb + b * n);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&index);
    PyBuffer_Release(&lower);
    PyBuffer_Release(&top);
    PyBuffer_Release(&ties);
    PyBuffer_Release(&sums);
    PyBuffer_Release(&counts);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_edge_scatter(PyObject *self, PyObject *args) {
    Py_buffer v, index, top, share, u, grad_v, reverse;
    ssize batch, n, k, c_n;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*nnnnw*w*i", &v, &index, &top, &share, &u, &batch, &n, &k, &c_n, &grad_v,
                          &reverse, &threads))
        return NULL;
    ssize points = mul3(batch, n, c_n);
    int ok = check_threads(threads) && check_shape(batch, n, k, c_n) && check_size(&v, points, 4, "v")
             && check_size(&index, mul3(batch, n, k), 8, "index") && check_size(&top, points, 4, "top")
             && check_size(&share, points, 4, "share") && check_size(&u, points, 4, "u")
             && check_size(&grad_v, points, 4, "grad_v") && check_size(&reverse, points, 4, "reverse")
             && check_index(index.buf, batch * n * k, n);
    if (ok) {
        const float *vb = v.buf, *tb = top.buf, *gb = share.buf, *ub = u.buf;
        const int64_t *ib = index.buf;
        float *ob = grad_v.buf;
        float *rb = reverse.buf;
        memset(ob, 0, sizeof(float) * (size_t)points);
        memset(rb, 0, sizeof(float) * (size_t)points);
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            for (ssize b = slice_start(batch, s, threads); b < slice_start(batch, s + 1, threads); b++)
                scatter_cloud(vb + b * n * c_n, ib + b * n * k, tb + b * n * c_n, gb + b * n * c_n, ub + b * n * c_n, n,
                              k, c_n, ob + b * n * c_n, rb + b * n * c_n);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&index);
    PyBuffer_Release(&top);
    PyBuffer_Release(&share);
    PyBuffer_Release(&u);
    PyBuffer_Release(&grad_v);
    PyBuffer_Release(&reverse);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"edge_reduce", py_edge_reduce, METH_VARARGS,
     "per point, the extreme of v over its neighbours, how many tie, their sum; per point, its in-degree"},
    {"edge_scatter", py_edge_scatter, METH_VARARGS,
     "the backward's scatter to the neighbours reaching the extreme, and the sum of u over each point's in-edges"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_edge_conv", "Fused EdgeConv reductions over k neighbours (CPU, float32)", -1, methods,
};

PyMODINIT_FUNC PyInit__edge_conv(void) { return PyModule_Create(&module); }
