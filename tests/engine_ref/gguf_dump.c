/* gguf_dump: what ferry's GGUF reader and dequantizer make of a file, for
 * gguf_dequant.py to compare with its own reading.
 *
 *   gguf_dump FILE OUTDIR
 *
 * Writes OUTDIR/dump.json: {"version", "alignment", "kv": {key: {"type",
 * "value"}}, "tensors": [{"name", "type", "dims", "offset", "file"}]} and,
 * per tensor, OUTDIR/<file>: its weights dequantized to float32 (native
 * order), row by row. Values are written losslessly: integers and bools as
 * decimal strings, floats as the hex of their bits, strings as JSON text
 * (or {"hex"} when not UTF-8), arrays as {"type", "items"}. Exit 1 with the
 * reader's message when it refuses the file. */
#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROW (1u << 24) /* weights in one row, to bound the buffer */

static json_t *str_json(const fy_gguf_str *s)
{
    json_t *j = json_stringn(s->p, (size_t)s->len);
    if (j) {
        return j;
    }
    char *hex = malloc((size_t)s->len * 2 + 1);
    for (uint64_t i = 0; hex && i < s->len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s->p[i]);
    }
    if (hex) {
        hex[s->len * 2] = 0;
    }
    j = json_pack("{s:s}", "hex", hex ? hex : "");
    free(hex);
    return j;
}

static json_t *val_json(const fy_gguf_val *v)
{
    char b[64];
    switch (v->type) {
    case FY_GGUF_U8:
    case FY_GGUF_U16:
    case FY_GGUF_U32:
    case FY_GGUF_U64:
        snprintf(b, sizeof b, "%llu", (unsigned long long)v->u);
        return json_string(b);
    case FY_GGUF_I8:
    case FY_GGUF_I16:
    case FY_GGUF_I32:
    case FY_GGUF_I64:
        snprintf(b, sizeof b, "%lld", (long long)v->i);
        return json_string(b);
    case FY_GGUF_BOOL:
        return json_string(v->b ? "1" : "0");
    case FY_GGUF_F32: {
        float f = (float)v->f;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        snprintf(b, sizeof b, "0x%08x", u);
        return json_string(b);
    }
    case FY_GGUF_F64: {
        uint64_t u;
        memcpy(&u, &v->f, sizeof u);
        snprintf(b, sizeof b, "0x%016llx", (unsigned long long)u);
        return json_string(b);
    }
    case FY_GGUF_STR:
        return str_json(&v->s);
    case FY_GGUF_ARR: {
        json_t *items = json_array();
        for (uint64_t i = 0; i < v->a.n; i++) {
            fy_gguf_val e;
            if (fy_gguf_arr_get(&v->a, i, &e) == 0) {
                json_array_append_new(items, val_json(&e));
            }
        }
        return json_pack("{s:s,s:o}", "type", fy_gguf_type_name(v->a.type), "items", items);
    }
    default:
        return json_null();
    }
}

static int dump_tensor(const fy_gguf_tensor *t, const char *path)
{
    if (t->dims[0] > MAX_ROW) {
        fprintf(stderr, "%s: rows of %llu weights are too long for this tool\n", t->name,
                (unsigned long long)t->dims[0]);
        return -1;
    }
    FILE *f = fopen(path, "wb");
    float *row = malloc((size_t)t->dims[0] * sizeof *row);
    int rc = f && row ? 0 : -1;
    for (uint64_t r = 0; r < t->n_rows && rc == 0; r++) {
        const uint8_t *src = (const uint8_t *)t->data + r * t->row_bytes;
        if (fy_q_dequant(t->type, src, row, (size_t)t->dims[0]) < 0 ||
            fwrite(row, sizeof *row, (size_t)t->dims[0], f) != t->dims[0]) {
            rc = -1;
        }
    }
    if (f && fclose(f) != 0) {
        rc = -1;
    }
    free(row);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot write %s\n", t->name, path);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gguf_dump FILE OUTDIR\n");
        return 2;
    }
    fy_gguf *g = NULL;
    char err[512] = "";
    if (fy_gguf_open(argv[1], &g, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    json_t *kv = json_object(), *ts = json_array();
    int rc = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        json_object_set_new(kv, g->kv[i].key,
                            json_pack("{s:s,s:o}", "type", fy_gguf_type_name(g->kv[i].v.type),
                                      "value", val_json(&g->kv[i].v)));
    }
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        const fy_gguf_tensor *t = &g->t[i];
        char file[32], path[4096];
        snprintf(file, sizeof file, "t%06llu.f32", (unsigned long long)i);
        snprintf(path, sizeof path, "%s/%s", argv[2], file);
        json_t *dims = json_array();
        for (int d = 0; d < t->n_dims; d++) {
            json_array_append_new(dims, json_integer((json_int_t)t->dims[d]));
        }
        json_array_append_new(ts, json_pack("{s:s,s:s,s:o,s:I,s:s}", "name", t->name, "type",
                                            fy_dtype_name(t->type), "dims", dims, "offset",
                                            (json_int_t)t->offset, "file", file));
        rc = dump_tensor(t, path);
    }
    json_t *root = json_pack("{s:i,s:i,s:o,s:o}", "version", (int)g->version, "alignment",
                             (int)g->alignment, "kv", kv, "tensors", ts);
    char path[4096];
    snprintf(path, sizeof path, "%s/dump.json", argv[2]);
    if (rc == 0 && json_dump_file(root, path, JSON_COMPACT) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        rc = -1;
    }
    json_decref(root);
    fy_gguf_free(g);
    return rc == 0 ? 0 : 1;
}
