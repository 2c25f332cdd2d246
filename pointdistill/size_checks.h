/* Overflow-safe size arithmetic and argument checks for the Python bindings of the C
 * extensions (engine/_kernels.c, binary/_point_kernels.c, models/_neighbourhood.c): sizes given from Python are never
 * multiplied in a way that can wrap, so a hostile call fails with ValueError, never overruns. */
#ifndef POINTDISTILL_SIZE_CHECKS_H
#define POINTDISTILL_SIZE_CHECKS_H

#include <Python.h>

/* a * b * c, or -1 when a factor is negative or the product does not fit a Py_ssize_t */
static Py_ssize_t mul3(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) {
    if (a < 0 || b < 0 || c < 0) return -1;
    if (a == 0 || b == 0 || c == 0) return 0;
    if (b > PY_SSIZE_T_MAX / a || c > PY_SSIZE_T_MAX / (a * b)) return -1;
    return a * b * c;
}

/* the buffer holds at least count items of itemsize bytes (count < 0: an overflowed size) */
static int check_size(Py_buffer *buffer, Py_ssize_t count, Py_ssize_t itemsize, const char *name) {
    Py_ssize_t bytes = mul3(count, itemsize, 1);
    if (count < 0 || bytes < 0 || buffer->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes is too small for the sizes given", name,
                     buffer->len);
        return 0;
    }
    return 1;
}

/* the thread count an entry point was given is in 1..4096 */
static inline int check_threads(int threads) {
    if (threads >= 1 && threads <= 4096) return 1;
    PyErr_Format(PyExc_ValueError, "threads must be in 1..4096, got %d", threads);
    return 0;
}

#endif
