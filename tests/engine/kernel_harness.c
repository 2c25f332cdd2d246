/* Stand-alone runner of the engine's kernels, for paths the test machine cannot load into Python
 * (NEON, cross-compiled and run under qemu-user) and for the native paths as its own check.
 *
 *     kernel_harness <path name> <case file> <output file>
 *
 * Case file (little-endian, written by test_kernel_paths.py): int64 clouds, n, m16, stem_out_words,
 * point_count, head_count, stem_outputs (0: no shortcuts), pool_real (1: head shortcuts); float32
 * points [clouds, n, 3], stem weight [3, m16], scale [m16], offset [m16]; per point layer int64
 * groups, words, out_words, uint64 weights [groups, words, 8], int64 thresholds [groups * 8] (with
 * shortcuts instead: int64 inputs, outputs after out_words, float32 scale [outputs], offset [outputs]
 * after the weights); the pooled layer as a point layer without shortcuts (its thresholds for n
 * points; with pool_real as a shortcut layer, its offset the offsets for n points); the head layers
 * as the point layers (shortcut layers with pool_real); without pool_real the last layer int64
 * groups, words, outputs, inputs, uint64 weights, float32 scale [outputs], offset [outputs]; then per
 * layer output (the stem, the point layers, the pooled layer, the head layers) int64 1 and the float32
 * thresholds [outputs] the next layer reads those real values at, or int64 0 (the signs).
 * Output file: every traced layer's bits (uint64, as plan_forward's trace), then h float32
 * [clouds, outputs]. Exit status 2: bad arguments or file, 3: the path cannot run here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../pointdistill/engine/kernels/kernels.h"

static FILE *in;

static void *read_array(size_t count, size_t size) {
    void *data = malloc(count * size + 1);
    if (data == NULL || fread(data, size, count, in) != count) {
        fprintf(stderr, "case file truncated\n");
        exit(2);
    }
    return data;
}

static int64_t read_int(void) {
    int64_t value;
    if (fread(&value, sizeof value, 1, in) != 1 || value < 0 || value > ((int64_t)1 << 32)) {
        fprintf(stderr, "case file truncated or damaged\n");
        exit(2);
    }
    return value;
}

static void read_layer(struct binary_layer *layer, int shortcut) {
    layer->groups = read_int(), layer->words = read_int(), layer->out_words = read_int();
    layer->inputs = shortcut ? read_int() : 0, layer->outputs = shortcut ? read_int() : 0;
    layer->w = read_array(layer->groups * layer->words * 8, sizeof(uint64_t));
    layer->thr = shortcut ? NULL : read_array(layer->groups * 8, sizeof(int64_t));
    layer->scale = shortcut ? read_array(layer->outputs, sizeof(float)) : NULL;
    layer->offset = shortcut ? read_array(layer->outputs, sizeof(float)) : NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <path name> <case file> <output file>\n", argv[0]);
        return 2;
    }
    int code = -1;
    for (int c = 0; c < KERNEL_PATHS; c++)
        if (strcmp(kernel_name(c), argv[1]) == 0) code = c;
    if (code < 0 || !kernel_runnable(code)) {
        fprintf(stderr, "kernel path %s cannot run here\n", argv[1]);
        return 3;
    }
    if ((in = fopen(argv[2], "rb")) == NULL) {
        perror(argv[2]);
        return 2;
    }
    struct plan p;
    const index_t clouds = read_int(), n = read_int();
    p.m16 = read_int(), p.stem_out_words = read_int(), p.point_count = read_int(), p.head_count = read_int();
    p.stem_outputs = read_int(), p.pool_real = (int)read_int();
    const float *points = read_array(clouds * n * 3, sizeof(float));
    p.stem_w = read_array(3 * p.m16, sizeof(float));
    p.stem_scale = read_array(p.m16, sizeof(float));
    p.stem_offset = read_array(p.m16, sizeof(float));
    struct binary_layer *point_layers = calloc(p.point_count + 1, sizeof *point_layers);
    struct binary_layer *head_layers = calloc(p.head_count + 1, sizeof *head_layers);
    if (p.point_count > PLAN_MAX_POINT_LAYERS) {
        fprintf(stderr, "more than %d point layers\n", PLAN_MAX_POINT_LAYERS);
        return 2;
    }
    for (index_t i = 0; i < p.point_count; i++) read_layer(&point_layers[i], p.stem_outputs > 0);
    read_layer(&p.pool, p.pool_real);
    const int64_t *pool_thr = p.pool.thr;
    const float *pool_offset = p.pool.offset;
    for (index_t i = 0; i < p.head_count; i++) read_layer(&head_layers[i], p.pool_real);
    p.point_layers = point_layers, p.head_layers = head_layers;
    if (p.pool_real) {
        p.last_outputs = p.head_count ? head_layers[p.head_count - 1].outputs : 0;
    } else {
        p.last_groups = read_int(), p.last_words = read_int(), p.last_outputs = read_int(), p.last_inputs = read_int();
        p.last_w = read_array(p.last_groups * p.last_words * 8, sizeof(uint64_t));
        p.last_scale = read_array(p.last_outputs, sizeof(float));
        p.last_offset = read_array(p.last_outputs, sizeof(float));
    }
    p.stem_read_at = NULL, p.pool.read_at = NULL;
    for (index_t i = 0; i < p.point_count + p.head_count + 2; i++) {
        struct binary_layer *layer = i == 0 ? NULL : i <= p.point_count ? &point_layers[i - 1]
                                   : i == p.point_count + 1 ? &p.pool : &head_layers[i - p.point_count - 2];
        const float *at = read_int() ? read_array(layer ? layer->outputs : p.stem_outputs, sizeof(float)) : NULL;
        if (layer) layer->read_at = at;
        else p.stem_read_at = at;
    }
    fclose(in);

    const index_t layers = p.point_count + p.head_count + 2;
    uint64_t **trace = calloc(layers, sizeof *trace);
    index_t *trace_words = calloc(layers, sizeof *trace_words);
    for (index_t i = 0; i < layers; i++) {
        index_t words = i == 0 ? n * p.stem_out_words
                      : i <= p.point_count ? n * point_layers[i - 1].out_words
                      : i == p.point_count + 1 ? p.pool.out_words : head_layers[i - p.point_count - 2].out_words;
        trace_words[i] = clouds * words;
        trace[i] = calloc(trace_words[i] + 1, sizeof(uint64_t));
    }
    float *h = calloc(clouds * p.last_outputs + 1, sizeof(float));
    void *work = malloc(plan_work_bytes(&p, n));
    plan_forward(&p, kernel_table_for(code), points, clouds, n, pool_thr, pool_offset, trace, work, h);

    FILE *out = fopen(argv[3], "wb");
    if (out == NULL) {
        perror(argv[3]);
        return 2;
    }
    for (index_t i = 0; i < layers; i++) fwrite(trace[i], sizeof(uint64_t), trace_words[i], out);
    fwrite(h, sizeof(float), clouds * p.last_outputs, out);
    return fclose(out) == 0 ? 0 : 2;
}
