/* Python bindings of the engine's kernels (kernels/): a Plan holds an exported network in the
 * kernels' layout (it keeps the arrays it was given alive and checks every size once), and
 * Plan.forward runs every layer up to the float hidden layer in one call, on the path asked for.
 * Path codes and names: kernel_paths(). Sizes from Python are checked, never trusted. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "kernels/kernels.h"
#include "../cpu_features.h"
#include "../size_checks.h"

/* ---------------------------------------------------------------- paths */

static const struct kernel_table *runnable_table(int code) {
    if (code < 0 || code >= KERNEL_PATHS) {
        PyErr_Format(PyExc_ValueError, "unknown kernel path code %d", code);
        return NULL;
    }
    if (!kernel_runnable(code)) {
        PyErr_Format(PyExc_RuntimeError, "the %s kernel path cannot run here (%s)", kernel_name(code),
                     kernel_table_for(code) ? "this CPU lacks its instructions" : "not built for this architecture");
        return NULL;
    }
    return kernel_table_for(code);
}

static PyObject *py_kernel_paths(PyObject *self, PyObject *args) {
    PyObject *paths = PyTuple_New(KERNEL_PATHS);
    if (paths == NULL) return NULL;
    for (int code = 0; code < KERNEL_PATHS; code++) {
        PyObject *item = Py_BuildValue("(sOO)", kernel_name(code), kernel_table_for(code) ? Py_True : Py_False,
                                       kernel_runnable(code) ? Py_True : Py_False);
        if (item == NULL) { Py_DECREF(paths); return NULL; }
        PyTuple_SET_ITEM(paths, code, item);
    }
    return paths;
}

static PyObject *py_cpu_features(PyObject *self, PyObject *args) {
#if HAVE_X86
    __builtin_cpu_init();
    return Py_BuildValue("{sNsNsNsNsN}", "popcnt", PyBool_FromLong(__builtin_cpu_supports("popcnt")),
                         "avx2", PyBool_FromLong(__builtin_cpu_supports("avx2")),
                         "avx512f", PyBool_FromLong(__builtin_cpu_supports("avx512f")),
                         "avx512bw", PyBool_FromLong(__builtin_cpu_supports("avx512bw")),
                         "avx512vpopcntdq", PyBool_FromLong(__builtin_cpu_supports("avx512vpopcntdq")));
#elif defined(__aarch64__)
    return Py_BuildValue("{sO}", "asimd", Py_True);
#else
    return PyDict_New();
#endif
}

/* ---------------------------------------------------------------- Plan */

#define MAX_LAYERS PLAN_MAX_POINT_LAYERS  /* binary layers, point and head together */

typedef struct {
    PyObject_HEAD
    struct plan plan;
    struct binary_layer layers[MAX_LAYERS];  /* point layers, then head layers */
    Py_buffer views[5 * MAX_LAYERS + 10];
    int view_count;
} PlanObject;

/* keep a view of obj (C-contiguous) of at least count items of itemsize bytes */
static const void *take(PlanObject *self, PyObject *obj, Py_ssize_t count, Py_ssize_t itemsize, const char *name) {
    Py_buffer *view = &self->views[self->view_count];
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    self->view_count++;
    return check_size(view, count, itemsize, name) ? view->buf : NULL;
}

/* What a layer spec holds (after weights, thresholds or None, groups, words, out_words). */
enum layer_form {
    THRESHOLD_LAYER,  /* nothing more; thresholds */
    POOLED_LAYER,     /* nothing more; thresholds per point count, None here */
    SHORTCUT_LAYER,   /* scale, offset, inputs, outputs: real values in and out */
    REAL_POOLED_LAYER /* scale, inputs, outputs: bits in, real values out (offsets per point count) */
};

/* spec -> layer; in_words: what the previous layer gives; in_real: its real width (a shortcut layer's input) */
static int take_layer(PlanObject *self, PyObject *spec, struct binary_layer *layer, index_t in_words,
                      enum layer_form form, index_t in_real, const char *name) {
    PyObject *w, *thr, *scale = NULL, *offset = NULL;
    Py_ssize_t groups, words, out_words, inputs = 0, outputs = 0;
    const int parsed = form == SHORTCUT_LAYER
        ? PyArg_ParseTuple(spec, "OOnnnOOnn", &w, &thr, &groups, &words, &out_words, &scale, &offset, &inputs, &outputs)
        : form == REAL_POOLED_LAYER
        ? PyArg_ParseTuple(spec, "OOnnnOnn", &w, &thr, &groups, &words, &out_words, &scale, &inputs, &outputs)
        : PyArg_ParseTuple(spec, "OOnnn", &w, &thr, &groups, &words, &out_words);
    if (!parsed) return 0;
    if (groups < 1 || words < 1 || words != in_words || out_words < 1 || groups > mul3(out_words, 8, 1)) {
        PyErr_Format(PyExc_ValueError, "%s: inconsistent sizes (groups %zd, words %zd after %zd, out_words %zd)", name,
                     groups, words, (Py_ssize_t)in_words, out_words);
        return 0;
    }
    const int real_out = form == SHORTCUT_LAYER || form == REAL_POOLED_LAYER;
    if (real_out && (inputs < 1 || outputs < 1 || (form == SHORTCUT_LAYER && (inputs != in_real
                     || (outputs % inputs && inputs % outputs))) || (inputs + 63) / 64 != words
                     || (outputs + 63) / 64 != out_words || groups != (outputs + 7) / 8)) {
        PyErr_Format(PyExc_ValueError, "%s: inconsistent real-valued sizes (inputs %zd after %zd, outputs %zd, words "
                     "%zd, out_words %zd, groups %zd)", name, inputs, (Py_ssize_t)in_real, outputs, words, out_words,
                     groups);
        return 0;
    }
    layer->groups = groups, layer->words = words, layer->out_words = out_words;
    layer->inputs = inputs, layer->outputs = outputs, layer->scale = layer->offset = NULL, layer->thr = NULL;
    layer->read_at = NULL;
    if (!(layer->w = take(self, w, mul3(groups, words, 8), 8, name))) return 0;
    if (real_out && !(layer->scale = take(self, scale, outputs, 4, name))) return 0;
    if (form == SHORTCUT_LAYER) return (layer->offset = take(self, offset, outputs, 4, name)) != NULL;
    if (form == THRESHOLD_LAYER) return (layer->thr = take(self, thr, mul3(groups, 8, 1), 8, name)) != NULL;
    return 1;
}

/* read_at: None, or one entry per layer output (the stem, the point layers, the pooled layer, the head
 * layers), each None or, for a layer with real outputs that a next layer reads, the float32 [outputs]
 * thresholds it reads them at */
static int take_read_at(PlanObject *self, PyObject *read_at) {
    struct plan *p = &self->plan;
    const Py_ssize_t count = p->point_count + p->head_count + 2;
    if (read_at == Py_None) return 1;
    if (!PyTuple_Check(read_at) || PyTuple_GET_SIZE(read_at) != count) {
        PyErr_Format(PyExc_ValueError, "read_at must be None or a tuple of %zd entries (None or float32 arrays)", count);
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(read_at, i);
        if (item == Py_None) continue;
        /* the layer whose outputs these are, and whether a next layer reads them as real values */
        struct binary_layer *layer = i == 0 ? NULL : i <= p->point_count ? &self->layers[i - 1]
                                   : i == p->point_count + 1 ? &p->pool : &self->layers[i - 2];
        const int real = i <= p->point_count ? p->stem_outputs > 0 : p->pool_real && i < count - 1;
        if (!real) {
            PyErr_Format(PyExc_ValueError, "read_at %zd: that layer's outputs are not real values a next layer reads", i);
            return 0;
        }
        char name[32];
        snprintf(name, sizeof name, "read_at %zd", i);
        const float *at = take(self, item, layer ? layer->outputs : p->stem_outputs, 4, name);
        if (!at) return 0;
        if (layer) layer->read_at = at;
        else p->stem_read_at = at;
    }
    return 1;
}

static void plan_dealloc(PlanObject *self) {
    for (int i = 0; i < self->view_count; i++) PyBuffer_Release(&self->views[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int plan_init(PlanObject *self, PyObject *args, PyObject *kwargs) {
    PyObject *stem_w, *stem_scale, *stem_offset, *points, *pool, *heads, *last_w, *last_scale, *last_offset;
    PyObject *read_at = Py_None;
    Py_ssize_t m16, stem_out_words, stem_outputs = 0, last_groups, last_words, last_outputs, last_inputs;
    static char *keywords[] = {"stem", "point_layers", "pool", "head_layers", "last", "read_at", NULL};
    PyObject *stem, *last;
    if (self->view_count) { PyErr_SetString(PyExc_RuntimeError, "Plan is already initialised"); return -1; }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OO!O!|O", keywords, &PyTuple_Type, &stem, &PyTuple_Type, &points,
                                     &pool, &PyTuple_Type, &heads, &PyTuple_Type, &last, &read_at))
        return -1;
    if (!PyArg_ParseTuple(stem, "OOOnn|n", &stem_w, &stem_scale, &stem_offset, &m16, &stem_out_words, &stem_outputs))
        return -1;
    const int pool_real = PyTuple_Check(pool) && PyTuple_GET_SIZE(pool) == 8;  /* REAL_POOLED_LAYER's spec */
    if (!pool_real && !PyArg_ParseTuple(last, "OnnnnOO", &last_w, &last_groups, &last_words, &last_outputs,
                                        &last_inputs, &last_scale, &last_offset))
        return -1;
    if (pool_real && PyTuple_GET_SIZE(last) != 0) {
        PyErr_SetString(PyExc_ValueError, "last layer: a network with a real-valued pooled layer has none, give ()");
        return -1;
    }
    const Py_ssize_t point_count = PyTuple_GET_SIZE(points), head_count = PyTuple_GET_SIZE(heads);
    if (pool_real && head_count < 1) {
        PyErr_SetString(PyExc_ValueError, "a real-valued pooled layer needs at least one head (shortcut) layer");
        return -1;
    }
    if (point_count + head_count > MAX_LAYERS) {
        PyErr_Format(PyExc_ValueError, "at most %d binary layers, got %zd", MAX_LAYERS, point_count + head_count);
        return -1;
    }
    if (m16 < 16 || m16 % 16 || stem_out_words < (m16 + 63) / 64 || stem_outputs < 0 || stem_outputs > m16
        || (stem_outputs && stem_out_words != (stem_outputs + 63) / 64)) {
        PyErr_Format(PyExc_ValueError, "stem: inconsistent sizes (m16 %zd, out_words %zd, real outputs %zd)", m16,
                     stem_out_words, stem_outputs);
        return -1;
    }
    struct plan *p = &self->plan;
    p->m16 = m16, p->stem_out_words = stem_out_words, p->stem_outputs = stem_outputs, p->stem_read_at = NULL;
    if (!(p->stem_w = take(self, stem_w, mul3(3, m16, 1), 4, "stem weight"))
        || !(p->stem_scale = take(self, stem_scale, m16, 4, "stem scale"))
        || !(p->stem_offset = take(self, stem_offset, m16, 4, "stem offset")))
        return -1;
    index_t words = stem_out_words, real = stem_outputs;
    char name[48];
    for (Py_ssize_t i = 0; i < point_count; i++) {
        snprintf(name, sizeof name, "point layer %zd", i);
        if (!take_layer(self, PyTuple_GET_ITEM(points, i), &self->layers[i], words,
                        real ? SHORTCUT_LAYER : THRESHOLD_LAYER, real, name))
            return -1;
        words = self->layers[i].out_words, real = self->layers[i].outputs;
    }
    if (!take_layer(self, pool, &p->pool, words, pool_real ? REAL_POOLED_LAYER : POOLED_LAYER, 0, "pooled layer"))
        return -1;
    words = p->pool.out_words, real = p->pool.outputs;
    for (Py_ssize_t i = 0; i < head_count; i++) {
        snprintf(name, sizeof name, "head layer %zd", i);
        if (!take_layer(self, PyTuple_GET_ITEM(heads, i), &self->layers[point_count + i], words,
                        pool_real ? SHORTCUT_LAYER : THRESHOLD_LAYER, real, name))
            return -1;
        words = self->layers[point_count + i].out_words, real = self->layers[point_count + i].outputs;
    }
    p->pool_real = pool_real;
    p->point_count = point_count, p->head_count = head_count;
    p->point_layers = self->layers, p->head_layers = self->layers + point_count;
    if (!take_read_at(self, read_at)) return -1;
    if (pool_real) {
        p->last_outputs = real, p->last_groups = p->last_words = p->last_inputs = 0;
        p->last_w = NULL, p->last_scale = p->last_offset = NULL;
        return 0;
    }
    if (last_words != words || last_outputs < 1 || last_groups < (last_outputs + 7) / 8 || last_inputs < 1
        || last_inputs > mul3(last_words, 64, 1)) {
        PyErr_Format(PyExc_ValueError, "last layer: inconsistent sizes (groups %zd, words %zd after %zd, outputs %zd, "
                     "inputs %zd)", last_groups, last_words, (Py_ssize_t)words, last_outputs, last_inputs);
        return -1;
    }
    p->last_groups = last_groups, p->last_words = last_words, p->last_outputs = last_outputs;
    p->last_inputs = last_inputs;
    if (!(p->last_w = take(self, last_w, mul3(last_groups, last_words, 8), 8, "last layer weight"))
        || !(p->last_scale = take(self, last_scale, last_outputs, 4, "last layer scale"))
        || !(p->last_offset = take(self, last_offset, last_outputs, 4, "last layer offset")))
        return -1;
    return 0;
}

/* words of layer i's output per cloud of n points (i: 0 stem, then point layers, pooled, head layers) */
static index_t output_words(const struct plan *p, Py_ssize_t i, index_t n) {
    if (i == 0) return mul3(n, p->stem_out_words, 1);
    if (i <= p->point_count) return mul3(n, p->point_layers[i - 1].out_words, 1);
    if (i == p->point_count + 1) return p->pool.out_words;
    return p->head_layers[i - p->point_count - 2].out_words;
}

/* forward(kernel, points, clouds, n, pool, h, trace=None): float32 [clouds, n, 3] -> h float32
 * [clouds, last_outputs]; pool: the pooled layer's thresholds int64 [groups * 8] for n points, or with a
 * real-valued pooled layer its offsets float32 [outputs]; trace (a tuple, one uint64 array per layer, whole
 * batch) receives every layer's bits */
static PyObject *plan_forward_py(PlanObject *self, PyObject *args) {
    int code;
    Py_ssize_t clouds, n;
    Py_buffer points, thr, h;
    PyObject *trace = Py_None;
    if (!self->view_count) { PyErr_SetString(PyExc_RuntimeError, "Plan is not initialised"); return NULL; }
    if (!PyArg_ParseTuple(args, "iy*nny*w*|O", &code, &points, &clouds, &n, &thr, &h, &trace)) return NULL;
    const struct plan *p = &self->plan;
    const Py_ssize_t layer_count = p->point_count + p->head_count + 2;
    Py_buffer trace_views[MAX_LAYERS + 2];
    uint64_t *trace_bases[MAX_LAYERS + 2];
    Py_ssize_t traced = 0;
    void *work = NULL;
    PyObject *result = NULL;
    const struct kernel_table *table = runnable_table(code);
    const index_t work_bytes = plan_work_bytes(p, n);
    if (table == NULL) goto done;
    if (clouds < 0 || n < 1 || work_bytes < 0) {
        PyErr_Format(PyExc_ValueError, "forward: bad sizes (clouds %zd, n %zd)", clouds, n);
        goto done;
    }
    if (!check_size(&points, mul3(clouds, n, 3), 4, "points")
        || !(p->pool_real ? check_size(&thr, p->pool.outputs, 4, "pool offsets")
                          : check_size(&thr, mul3(p->pool.groups, 8, 1), 8, "pool thresholds"))
        || !check_size(&h, mul3(clouds, p->last_outputs, 1), 4, "h"))
        goto done;
    if (trace != Py_None) {
        if (!PyTuple_Check(trace) || PyTuple_GET_SIZE(trace) != layer_count) {
            PyErr_Format(PyExc_ValueError, "trace must be None or a tuple of %zd arrays", layer_count);
            goto done;
        }
        for (Py_ssize_t i = 0; i < layer_count; i++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(trace, i), &trace_views[i], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
                goto done;
            traced++;
            char name[32];
            snprintf(name, sizeof name, "trace %zd", i);
            if (!check_size(&trace_views[i], mul3(clouds, output_words(p, i, n), 1), 8, name)) goto done;
            trace_bases[i] = trace_views[i].buf;
        }
    }
    if (!(work = malloc(work_bytes))) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    plan_forward(p, table, points.buf, clouds, n, p->pool_real ? NULL : thr.buf, p->pool_real ? thr.buf : NULL,
                 trace == Py_None ? NULL : trace_bases, work, h.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(work);
    for (Py_ssize_t i = 0; i < traced; i++) PyBuffer_Release(&trace_views[i]);
    PyBuffer_Release(&points); PyBuffer_Release(&thr); PyBuffer_Release(&h);
    return result;
}

static PyMethodDef plan_methods[] = {
    {"forward", (PyCFunction)plan_forward_py, METH_VARARGS,
     "forward(kernel, points, clouds, n, pool, h, trace=None): every layer up to the classifier's input"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pointdistill.engine._kernels.Plan",
    .tp_doc = "Plan(stem, point_layers, pool, head_layers, last, read_at=None): an exported network in the kernels' "
              "layout",
    .tp_basicsize = sizeof(PlanObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plan_init,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_methods = plan_methods,
};

/* ---------------------------------------------------------------- one pooled layer (benchmarks, tests) */

static PyObject *py_pool(PyObject *self, PyObject *args) {
    Py_buffer x, w, t, out;
    Py_ssize_t points, groups, words, out_words;
    int code;
    if (!PyArg_ParseTuple(args, "iy*y*y*nnnnw*", &code, &x, &w, &t, &points, &groups, &words, &out_words, &out))
        return NULL;
    PyObject *result = NULL;
    const struct kernel_table *table = runnable_table(code);
    if (table && words >= 1 && groups >= 0 && out_words >= (groups + 7) / 8
        && check_size(&x, mul3(points, words, 1), 8, "x") && check_size(&w, mul3(groups, words, 8), 8, "weights")
        && check_size(&t, mul3(groups, 8, 1), 8, "thresholds") && check_size(&out, out_words, 8, "out")) {
        Py_BEGIN_ALLOW_THREADS
        table->pool(x.buf, w.buf, t.buf, points, groups, words, out_words, out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "pool: inconsistent sizes");
    }
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&t); PyBuffer_Release(&out);
    return result;
}

static PyObject *py_popcount_peak(PyObject *self, PyObject *args) {
    Py_ssize_t iterations;
    if (!PyArg_ParseTuple(args, "n", &iterations)) return NULL;
    if (!runnable_table(KERNEL_AVX512)) return NULL;
    uint64_t sink = 0;
#ifdef POINTDISTILL_X86_KERNELS
    Py_BEGIN_ALLOW_THREADS
    sink = avx512_popcount_peak(iterations);
    Py_END_ALLOW_THREADS
#endif
    return PyLong_FromUnsignedLongLong(sink);
}

static PyMethodDef methods[] = {
    {"kernel_paths", py_kernel_paths, METH_NOARGS, "((name, compiled, runnable), ...) indexed by path code"},
    {"cpu_features", py_cpu_features, METH_NOARGS, "the CPU features the kernel paths depend on"},
    {"pool", py_pool, METH_VARARGS, "pool(kernel, x, w, thr, points, groups, words, out_words, out): one cloud"},
    {"popcount_peak", py_popcount_peak, METH_VARARGS, "run iterations x 8 independent VPOPCNTQ (benchmark)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_kernels", .m_doc = "XNOR/popcount kernels", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    if (PyType_Ready(&PlanType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
