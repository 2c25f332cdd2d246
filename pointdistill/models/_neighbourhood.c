/* CPU kernels of the neighbourhood ops (pointdistill.models.neighbourhood): farthest point
 * sampling and ball query on float32 xyz clouds, and the k nearest from given distances; C order,
 * little-endian.
 *
 *   points  float32 [B, N, 3];  centres float32 [B, M, 3]
 *   farthest_point_sample -> int64 [B, m]: point 0, then each step the point whose distance to
 *       the nearest point taken so far is largest (the lowest index among equals)
 *   ball_query -> int64 [B, M, k]: per centre the first k points in index order whose squared
 *       distance is <= radius^2, padded with the first; returns how many centres found none
 *   nearest_k: distances float32 [B, M, N] -> int64 [B, M, k]: per row the k smallest, nearest
 *       first, equal distances in index order (one pass per row keeping a sorted list of k)
 *
 * Distances are (dx * dx + dy * dy) + dz * dz in float32, per pair. Clouds are independent: every
 * entry point splits [0, B) into `threads` contiguous slices and runs them in one OpenMP region on
 * the libgomp torch already loaded (as _point_kernels does). Results depend on neither the slices
 * nor the thread count. Built without OpenMP, the slices run one after the other.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../size_checks.h"

typedef Py_ssize_t ssize;

static inline float sq_distance(const float *p, const float *q) {
    float dx = p[0] - q[0], dy = p[1] - q[1], dz = p[2] - q[2];
    return (dx * dx + dy * dy) + dz * dz;
}

/* One cloud: m indices into its n points; nearest: scratch float32 [n]. */
static void farthest_points(const float *points, ssize n, ssize m, float *nearest, int64_t *out) {
    for (ssize i = 0; i < n; i++) nearest[i] = INFINITY;
    ssize last = 0;
    out[0] = 0;
    for (ssize step = 1; step < m; step++) {
        const float *taken = points + 3 * last;
        ssize best = 0;
        float best_distance = -1.0f;
        for (ssize i = 0; i < n; i++) {
            float d = sq_distance(points + 3 * i, taken);
            if (d < nearest[i]) nearest[i] = d;
            if (nearest[i] > best_distance) {  /* strictly: the first of equal maxima */
                best_distance = nearest[i];
                best = i;
            }
        }
        out[step] = last = best;
    }
}

/* One cloud: per centre the first k points within the ball, padded; returns the empty balls. */
static ssize ball(const float *centres, ssize m, const float *points, ssize n, float radius2, ssize k,
                  int64_t *out) {
    ssize empty = 0;
    for (ssize c = 0; c < m; c++) {
        int64_t *row = out + c * k;
        ssize found = 0;
        for (ssize i = 0; i < n && found < k; i++)
            if (sq_distance(points + 3 * i, centres + 3 * c) <= radius2) row[found++] = i;
        if (found == 0) {
            empty++;
            row[found++] = 0;
        }
        for (ssize j = found; j < k; j++) row[j] = row[0];
    }
    return empty;
}

/* One row of n distances: the k smallest, nearest first, equal ones in index order; best: scratch float32 [k]. */
static void nearest_row(const float *row, ssize n, ssize k, float *best, int64_t *out) {
    ssize count = 0;
    for (ssize i = 0; i < n; i++) {
        float d = row[i];
        if (count == k && !(d < best[k - 1])) continue;  /* not nearer than the k-th: an equal one keeps its place */
        ssize at = count < k ? count++ : k - 1;
        while (at > 0 && best[at - 1] > d) {  /* strictly: an equal distance stays ahead */
            best[at] = best[at - 1];
            out[at] = out[at - 1];
            at--;
        }
        best[at] = d;
        out[at] = i;
    }
}

static ssize slice_start(ssize total, int s, int parts) { return total * s / parts; }

static PyObject *py_farthest_point_sample(PyObject *self, PyObject *args) {
    /* points float32 [B, N, 3], m -> out int64 [B, m] */
    Py_buffer points, out;
    ssize batch, n, m;
    int threads;
    if (!PyArg_ParseTuple(args, "y*nnnw*i", &points, &batch, &n, &m, &out, &threads)) return NULL;
    int ok = check_threads(threads)
             && (batch >= 0 && 1 <= m && m <= n ? 1 : (PyErr_SetString(PyExc_ValueError, "need 1 <= m <= N"), 0))
             && check_size(&points, mul3(batch, n, 3), 4, "points") && check_size(&out, mul3(batch, m, 1), 8, "out");
    float *scratch = NULL;
    if (ok && !(scratch = malloc(sizeof(float) * (size_t)n * (size_t)threads))) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const float *p = points.buf;
        int64_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            for (ssize b = slice_start(batch, s, threads); b < slice_start(batch, s + 1, threads); b++)
                farthest_points(p + b * n * 3, n, m, scratch + s * n, o + b * m);
        Py_END_ALLOW_THREADS
    }
    free(scratch);
    PyBuffer_Release(&points);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_ball_query(PyObject *self, PyObject *args) {
    /* centres float32 [B, M, 3], points float32 [B, N, 3], radius^2, k -> out int64 [B, M, k];
     * returns the number of centres with no point in their ball */
    Py_buffer centres, points, out;
    ssize batch, m, n, k;
    float radius2;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*nnnfnw*i", &centres, &points, &batch, &m, &n, &radius2, &k, &out, &threads))
        return NULL;
    int ok = check_threads(threads)
             && (batch >= 0 && m >= 0 && 1 <= k && k <= n ? 1
                 : (PyErr_SetString(PyExc_ValueError, "need 1 <= k <= N"), 0))
             && check_size(&centres, mul3(batch, m, 3), 4, "centres") && check_size(&points, mul3(batch, n, 3), 4, "points")
             && check_size(&out, mul3(batch, m, k), 8, "out");
    ssize empty = 0;
    if (ok) {
        const float *c = centres.buf, *p = points.buf;
        int64_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1) reduction(+ : empty)
        for (int s = 0; s < threads; s++)
            for (ssize b = slice_start(batch, s, threads); b < slice_start(batch, s + 1, threads); b++)
                empty += ball(c + b * m * 3, m, p + b * n * 3, n, radius2, k, o + b * m * k);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&centres);
    PyBuffer_Release(&points);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    return PyLong_FromSsize_t(empty);
}

static PyObject *py_nearest_k(PyObject *self, PyObject *args) {
    /* distances float32 [B, M, N], k -> out int64 [B, M, k] */
    Py_buffer distances, out;
    ssize batch, m, n, k;
    int threads;
    if (!PyArg_ParseTuple(args, "y*nnnnw*i", &distances, &batch, &m, &n, &k, &out, &threads)) return NULL;
    int ok = check_threads(threads)
             && (batch >= 0 && m >= 0 && 1 <= k && k <= n ? 1 : (PyErr_SetString(PyExc_ValueError, "need 1 <= k <= N"), 0))
             && check_size(&distances, mul3(batch, m, n), 4, "distances") && check_size(&out, mul3(batch, m, k), 8, "out");
    float *scratch = NULL;
    if (ok && !(scratch = malloc(sizeof(float) * (size_t)k * (size_t)threads))) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        const float *d = distances.buf;
        int64_t *o = out.buf;
        ssize rows = batch * m;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int s = 0; s < threads; s++)
            for (ssize r = slice_start(rows, s, threads); r < slice_start(rows, s + 1, threads); r++)
                nearest_row(d + r * n, n, k, scratch + s * k, o + r * k);
        Py_END_ALLOW_THREADS
    }
    free(scratch);
    PyBuffer_Release(&distances);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"farthest_point_sample", py_farthest_point_sample, METH_VARARGS, "float32 [B, N, 3] -> int64 [B, m]"},
    {"ball_query", py_ball_query, METH_VARARGS, "the first k points within a radius of each centre, int64 [B, M, k]"},
    {"nearest_k", py_nearest_k, METH_VARARGS, "the k smallest of each row of distances, nearest first, int64 [B, M, k]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_neighbourhood", .m_doc = "farthest point sampling and ball query kernels",
    .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__neighbourhood(void) { return PyModule_Create(&module); }
