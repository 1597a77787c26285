/* Fuzz target: the GGUF reader over arbitrary file bytes, and the
 * dequantization of every tensor it accepts. */
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the elements of A (and of the arrays inside it), which must stay
 * inside the buffer: the reader validated them all. Arrays nested in arrays
 * have no index (element i costs O(i)), so only their first 64 are read. */
static void walk(const fy_gguf_arr *a, const uint8_t *data, size_t size, int depth)
{
    if (depth > FY_GGUF_MAX_DEPTH || a->data < data || a->data > data + size) {
        __builtin_trap();
    }
    uint64_t n = depth > 0 && a->n > 64 ? 64 : a->n;
    for (uint64_t i = 0; i < n; i++) {
        fy_gguf_val v;
        if (fy_gguf_arr_get(a, i, &v) != 0 || v.type != a->type) {
            __builtin_trap();
        }
        if (v.type == FY_GGUF_STR && ((const uint8_t *)v.s.p < data || v.s.len > size ||
                                      (const uint8_t *)v.s.p + v.s.len > data + size)) {
            __builtin_trap();
        }
        if (v.type == FY_GGUF_ARR) {
            walk(&v.a, data, size, depth + 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fy_gguf *g = NULL;
    char err[512] = "";
    if (fy_gguf_parse(data, size, "fuzz.gguf", &g, err, sizeof err) != 0) {
        if (g || strncmp(err, "fuzz.gguf: ", 11) != 0) {
            __builtin_trap(); /* a refusal names the file and says why */
        }
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (fy_gguf_find(g, g->kv[i].key) != &g->kv[i]) {
            __builtin_trap();
        }
        if (g->kv[i].v.type == FY_GGUF_ARR) {
            walk(&g->kv[i].v.a, data, size, 0);
        }
    }
    float *row = NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fy_gguf_tensor *t = &g->t[i];
        uint64_t rb = 0;
        if (fy_gguf_tensor_find(g, t->name) != t || t->offset % g->alignment ||
            t->offset < g->data_start || t->offset > size || t->n_bytes > size - t->offset ||
            t->data != data + t->offset || fy_dtype_bytes(t->type, t->dims[0], &rb) != 0 ||
            rb != t->row_bytes || t->n_rows * t->row_bytes != t->n_bytes) {
            __builtin_trap();
        }
        /* A row's dims[0] weights take row_bytes <= size bytes, and no type
         * packs more than two weights a byte: the buffer stays under 8x the
         * input, and the work over all rows is linear in it. */
        float *r = realloc(row, (size_t)t->dims[0] * sizeof *row);
        if (!r) {
            break;
        }
        row = r;
        for (uint64_t k = 0; k < t->n_rows; k++) {
            const uint8_t *src = (const uint8_t *)t->data + k * t->row_bytes;
            if (fy_q_dequant(t->type, src, row, (size_t)t->dims[0]) != 0) {
                __builtin_trap();
            }
        }
    }
    free(row);
    fy_gguf_free(g);
    return 0;
}
