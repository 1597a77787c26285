/* safetensors.c: the safetensors header parser (see safetensors.h). */
#include "runner/engine/safetensors.h"

#include "common/err.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} st_dtypes[FY_ST_NDTYPES] = {
    [FY_ST_BOOL] = {"BOOL", 1},       [FY_ST_U8] = {"U8", 1},           [FY_ST_I8] = {"I8", 1},
    [FY_ST_F8_E4M3] = {"F8_E4M3", 1}, [FY_ST_F8_E5M2] = {"F8_E5M2", 1}, [FY_ST_I16] = {"I16", 2},
    [FY_ST_U16] = {"U16", 2},         [FY_ST_F16] = {"F16", 2},         [FY_ST_BF16] = {"BF16", 2},
    [FY_ST_I32] = {"I32", 4},         [FY_ST_U32] = {"U32", 4},         [FY_ST_F32] = {"F32", 4},
    [FY_ST_I64] = {"I64", 8},         [FY_ST_U64] = {"U64", 8},         [FY_ST_F64] = {"F64", 8},
};

const char *fy_st_dtype_name(fy_st_dtype dt)
{
    return (unsigned)dt < FY_ST_NDTYPES ? st_dtypes[dt].name : "?";
}

size_t fy_st_dtype_size(fy_st_dtype dt)
{
    return (unsigned)dt < FY_ST_NDTYPES ? st_dtypes[dt].size : 0;
}

/* A malformed header: FY_EPARSE with the message. */
#define st_fail(err, errlen, ...) fy_fail(err, errlen, FY_EPARSE, __VA_ARGS__)

static int st_dtype_parse(const char *s, fy_st_dtype *out)
{
    for (int i = 0; i < FY_ST_NDTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (fy_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* A JSON integer in [0, max], or -1. */
static int64_t st_uint(const json_t *v, int64_t max)
{
    if (!json_is_integer(v)) {
        return -1;
    }
    json_int_t x = json_integer_value(v);
    return x < 0 || x > max ? -1 : (int64_t)x;
}

/* Fills T from the tensor object V (NAME for messages); DATA_LEN is the data
 * section's size. */
static int st_tensor_parse(const char *name, json_t *v, uint64_t data_start, uint64_t data_len,
                           fy_st_tensor *t, char *err, size_t errlen)
{
    if (!json_is_object(v)) {
        return st_fail(err, errlen, "tensor '%s': not a JSON object", name);
    }
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            return st_fail(err, errlen, "tensor '%s': unknown field '%.64s'", name, key);
        }
    }
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt)) {
        return st_fail(err, errlen, "tensor '%s': dtype missing or not a string", name);
    }
    if (st_dtype_parse(json_string_value(dt), &t->dtype) < 0) {
        return st_fail(err, errlen, "tensor '%s': unknown dtype '%.32s'", name,
                       json_string_value(dt));
    }
    json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape)) {
        return st_fail(err, errlen, "tensor '%s': shape missing or not an array", name);
    }
    if (json_array_size(shape) > FY_ST_MAX_DIMS) {
        return st_fail(err, errlen, "tensor '%s': shape has %zu dimensions (at most %d)", name,
                       json_array_size(shape), FY_ST_MAX_DIMS);
    }
    t->ndim = (int)json_array_size(shape);
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d = st_uint(json_array_get(shape, (size_t)i), INT64_MAX);
        if (d < 0) {
            return st_fail(err, errlen, "tensor '%s': shape[%d] is not a non-negative integer",
                           name, i);
        }
        t->shape[i] = d;
        if (d != 0 && n > UINT64_MAX / (uint64_t)d) {
            return st_fail(err, errlen, "tensor '%s': element count overflows", name);
        }
        n *= (uint64_t)d;
    }
    t->n_elems = n;
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2) {
        return st_fail(err, errlen, "tensor '%s': data_offsets missing or not [begin, end]", name);
    }
    int64_t b = st_uint(json_array_get(off, 0), INT64_MAX);
    int64_t e = st_uint(json_array_get(off, 1), INT64_MAX);
    if (b < 0 || e < 0) {
        return st_fail(err, errlen, "tensor '%s': data_offsets are not non-negative integers",
                       name);
    }
    if (b > e) {
        return st_fail(err, errlen, "tensor '%s': data_offsets begin %lld > end %lld", name,
                       (long long)b, (long long)e);
    }
    if ((uint64_t)e > data_len) {
        return st_fail(err, errlen,
                       "tensor '%s': data_offsets end %lld is past the data section (%llu "
                       "bytes; file truncated?)",
                       name, (long long)e, (unsigned long long)data_len);
    }
    size_t es = st_dtypes[t->dtype].size;
    if (n > UINT64_MAX / es || (uint64_t)(e - b) != n * es) {
        return st_fail(err, errlen,
                       "tensor '%s': data_offsets cover %lld bytes but %llu elements of %s "
                       "need %llu",
                       name, (long long)(e - b), (unsigned long long)n, st_dtypes[t->dtype].name,
                       n > UINT64_MAX / es ? 0ull : (unsigned long long)(n * es));
    }
    t->begin = data_start + (uint64_t)b;
    t->end = data_start + (uint64_t)e;
    return 0;
}

static int st_cmp_name(const void *a, const void *b)
{
    return strcmp(((const fy_st_tensor *)a)->name, ((const fy_st_tensor *)b)->name);
}

static int st_cmp_begin(const void *a, const void *b)
{
    const fy_st_tensor *x = *(const fy_st_tensor *const *)a, *y = *(const fy_st_tensor *const *)b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

/* No two non-empty tensors may share bytes. */
static int st_check_overlaps(fy_st_header *h, char *err, size_t errlen)
{
    if (h->n < 2) {
        return 0;
    }
    fy_st_tensor **by = malloc((size_t)h->n * sizeof *by);
    if (!by) {
        st_fail(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    for (int i = 0; i < h->n; i++) {
        by[i] = &h->t[i];
    }
    qsort(by, (size_t)h->n, sizeof *by, st_cmp_begin);
    int rc = 0;
    const fy_st_tensor *prev = NULL;
    for (int i = 0; i < h->n && rc == 0; i++) {
        if (by[i]->end == by[i]->begin) {
            continue;
        }
        if (prev && by[i]->begin < prev->end) {
            rc = st_fail(err, errlen, "tensor '%s': its bytes overlap tensor '%s'", by[i]->name,
                         prev->name);
        }
        prev = by[i];
    }
    free(by);
    return rc;
}

static int st_metadata_check(json_t *v, char *err, size_t errlen)
{
    if (!json_is_object(v)) {
        return st_fail(err, errlen, "__metadata__ is not an object");
    }
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!json_is_string(val)) {
            return st_fail(err, errlen, "__metadata__ '%.64s' is not a string", key);
        }
    }
    return 0;
}

int fy_st_parse(const uint8_t *file, size_t len, fy_st_header *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len < 8) {
        return st_fail(err, errlen, "file is %zu bytes, shorter than the 8-byte header length",
                       len);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) {
        hlen = hlen << 8 | file[i];
    }
    if (hlen > FY_ST_MAX_HEADER) {
        return st_fail(err, errlen, "header length %llu exceeds the %u-byte limit",
                       (unsigned long long)hlen, FY_ST_MAX_HEADER);
    }
    if (hlen > len - 8) {
        return st_fail(err, errlen,
                       "header length %llu runs past the end of the file (%zu bytes; "
                       "truncated?)",
                       (unsigned long long)hlen, len);
    }
    if (hlen < 2 || file[8] != '{') {
        return st_fail(err, errlen, "header is not a JSON object");
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)file + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        return st_fail(err, errlen, "header JSON: %s at byte %d", jerr.text, jerr.position);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = st_fail(err, errlen, "header is not a JSON object");
        goto out;
    }
    size_t cnt = json_object_size(root);
    if (cnt > FY_ST_MAX_TENSORS) {
        rc = st_fail(err, errlen, "header lists %zu tensors (at most %d)", cnt, FY_ST_MAX_TENSORS);
        goto out;
    }
    out->data_start = 8 + hlen;
    uint64_t data_len = (uint64_t)len - out->data_start;
    out->t = calloc(cnt ? cnt : 1, sizeof *out->t);
    if (!out->t) {
        rc = FY_ENOMEM;
        st_fail(err, errlen, "out of memory for %zu tensors", cnt);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = st_metadata_check(val, err, errlen)) < 0) {
                goto out;
            }
            continue;
        }
        size_t kl = strlen(key);
        if (kl == 0 || kl > FY_ST_MAX_NAME) {
            rc = st_fail(err, errlen, "a tensor name is empty or longer than %d bytes",
                         FY_ST_MAX_NAME);
            goto out;
        }
        fy_st_tensor *t = &out->t[out->n];
        if ((rc = st_tensor_parse(key, val, out->data_start, data_len, t, err, errlen)) < 0) {
            goto out;
        }
        if (!(t->name = strdup(key))) {
            rc = FY_ENOMEM;
            st_fail(err, errlen, "out of memory");
            goto out;
        }
        out->n++;
    }
    qsort(out->t, (size_t)out->n, sizeof *out->t, st_cmp_name);
    rc = st_check_overlaps(out, err, errlen);
out:
    json_decref(root);
    if (rc < 0) {
        fy_st_header_free(out);
    }
    return rc;
}

void fy_st_header_free(fy_st_header *h)
{
    if (!h) {
        return;
    }
    for (int i = 0; i < h->n; i++) {
        free(h->t[i].name);
    }
    free(h->t);
    memset(h, 0, sizeof *h);
}

const fy_st_tensor *fy_st_find(const fy_st_header *h, const char *name)
{
    fy_st_tensor key = {.name = (char *)name};
    if (!h->t || h->n == 0) {
        return NULL;
    }
    return bsearch(&key, h->t, (size_t)h->n, sizeof key, st_cmp_name);
}
