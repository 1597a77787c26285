/* gguf_write.c: GGUF v3 files, written the way gguf_write.h says. */
#include "runner/engine/gguf_write.h"

#include "common/buf.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_MAX_META (256u << 20) /* metadata bytes (a 256k-token vocabulary is ~10 MB) */

typedef struct {
    char name[FY_GGUF_MAX_NAME + 1];
    fy_dtype type;
    int n_dims;
    uint64_t dims[FY_GGUF_MAX_DIMS];
    uint64_t bytes, offset; /* offset from the data section's start */
} gw_tensor;

struct fy_gguf_writer {
    uint32_t alignment;
    fy_buf kv; /* serialized key/value pairs */
    uint64_t n_kv;
    char **keys;
    size_t keys_cap;
    gw_tensor *t;
    size_t n_t, t_cap;
    uint64_t data_bytes; /* the data section so far, padded */
    /* writing */
    int begun, failed;
    fy_atomic_file f;
    size_t cur;        /* the tensor being written */
    uint64_t cur_done; /* its bytes so far */
};

static int put_le(fy_buf *b, uint64_t v, int n)
{
    uint8_t p[8];
    for (int i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return fy_buf_append(b, p, (size_t)n);
}

static int put_str(fy_buf *b, const char *s, size_t len)
{
    int rc = put_le(b, len, 8);
    return rc ? rc : fy_buf_append(b, s, len);
}

int fy_gguf_w_new(uint32_t alignment, fy_gguf_writer **out)
{
    *out = NULL;
    if (alignment == 0) {
        alignment = FY_GGUF_DEFAULT_ALIGNMENT;
    }
    if (alignment & (alignment - 1) || alignment > (1u << 20)) {
        return FY_EINVAL;
    }
    fy_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        return FY_ENOMEM;
    }
    w->alignment = alignment;
    w->f.fd = -1;
    fy_buf_init(&w->kv, GW_MAX_META);
    *out = w;
    if (alignment != FY_GGUF_DEFAULT_ALIGNMENT) {
        int rc = fy_gguf_w_u32(w, "general.alignment", alignment);
        if (rc) {
            fy_gguf_w_free(w);
            *out = NULL;
            return rc;
        }
    }
    return 0;
}

void fy_gguf_w_free(fy_gguf_writer *w)
{
    if (!w) {
        return;
    }
    fy_atomic_abort(&w->f);
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->keys[i]);
    }
    free(w->keys);
    free(w->t);
    fy_buf_free(&w->kv);
    free(w);
}

/* Starts the pair KEY of value type TYPE: checks and records the key,
 * writes it and the type. */
static int kv_start(fy_gguf_writer *w, const char *key, fy_gguf_type type)
{
    size_t klen = key ? strlen(key) : 0;
    if (w->begun || klen == 0 || klen > FY_GGUF_MAX_KEY) {
        return FY_EINVAL;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            return FY_EEXIST;
        }
    }
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) {
            return FY_ENOMEM;
        }
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy) {
        return FY_ENOMEM;
    }
    int rc = put_str(&w->kv, key, klen);
    if (rc == 0) {
        rc = put_le(&w->kv, (uint64_t)type, 4);
    }
    if (rc) {
        free(copy);
        return rc;
    }
    w->keys[w->n_kv++] = copy;
    return 0;
}

int fy_gguf_w_u32(fy_gguf_writer *w, const char *key, uint32_t v)
{
    int rc = kv_start(w, key, FY_GGUF_U32);
    return rc ? rc : put_le(&w->kv, v, 4);
}

int fy_gguf_w_i32(fy_gguf_writer *w, const char *key, int32_t v)
{
    int rc = kv_start(w, key, FY_GGUF_I32);
    return rc ? rc : put_le(&w->kv, (uint32_t)v, 4);
}

static uint32_t f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

int fy_gguf_w_f32(fy_gguf_writer *w, const char *key, float v)
{
    int rc = kv_start(w, key, FY_GGUF_F32);
    return rc ? rc : put_le(&w->kv, f32_bits(v), 4);
}

int fy_gguf_w_bool(fy_gguf_writer *w, const char *key, int v)
{
    int rc = kv_start(w, key, FY_GGUF_BOOL);
    return rc ? rc : put_le(&w->kv, v ? 1 : 0, 1);
}

int fy_gguf_w_str(fy_gguf_writer *w, const char *key, const char *s, size_t len)
{
    int rc = kv_start(w, key, FY_GGUF_STR);
    return rc ? rc : put_str(&w->kv, s, len);
}

static int arr_start(fy_gguf_writer *w, const char *key, fy_gguf_type elem, size_t n)
{
    int rc = kv_start(w, key, FY_GGUF_ARR);
    if (rc == 0) {
        rc = put_le(&w->kv, (uint64_t)elem, 4);
    }
    return rc ? rc : put_le(&w->kv, n, 8);
}

int fy_gguf_w_arr_str(fy_gguf_writer *w, const char *key, const char *const *s, const size_t *len,
                      size_t n)
{
    int rc = arr_start(w, key, FY_GGUF_STR, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = put_str(&w->kv, s[i], len[i]);
    }
    return rc;
}

int fy_gguf_w_arr_f32(fy_gguf_writer *w, const char *key, const float *v, size_t n)
{
    int rc = arr_start(w, key, FY_GGUF_F32, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = put_le(&w->kv, f32_bits(v[i]), 4);
    }
    return rc;
}

int fy_gguf_w_arr_i32(fy_gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    int rc = arr_start(w, key, FY_GGUF_I32, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = put_le(&w->kv, (uint32_t)v[i], 4);
    }
    return rc;
}

/* The bytes of V (its type already written), recursively for arrays. */
static int put_val(fy_buf *b, const fy_gguf_val *v, int depth)
{
    switch (v->type) {
    case FY_GGUF_U8:
    case FY_GGUF_BOOL:
        return put_le(b, v->type == FY_GGUF_BOOL ? (uint64_t)v->b : v->u, 1);
    case FY_GGUF_I8:
        return put_le(b, (uint64_t)v->i, 1);
    case FY_GGUF_U16:
        return put_le(b, v->u, 2);
    case FY_GGUF_I16:
        return put_le(b, (uint64_t)v->i, 2);
    case FY_GGUF_U32:
        return put_le(b, v->u, 4);
    case FY_GGUF_I32:
        return put_le(b, (uint64_t)v->i, 4);
    case FY_GGUF_F32:
        return put_le(b, f32_bits((float)v->f), 4);
    case FY_GGUF_U64:
        return put_le(b, v->u, 8);
    case FY_GGUF_I64:
        return put_le(b, (uint64_t)v->i, 8);
    case FY_GGUF_F64: {
        uint64_t u;
        memcpy(&u, &v->f, sizeof u);
        return put_le(b, u, 8);
    }
    case FY_GGUF_STR:
        return put_str(b, v->s.p, (size_t)v->s.len);
    case FY_GGUF_ARR: {
        if (depth >= FY_GGUF_MAX_DEPTH) {
            return FY_EINVAL;
        }
        int rc = put_le(b, (uint64_t)v->a.type, 4);
        rc = rc ? rc : put_le(b, v->a.n, 8);
        for (uint64_t i = 0; rc == 0 && i < v->a.n; i++) {
            fy_gguf_val e;
            rc = fy_gguf_arr_get(&v->a, i, &e);
            rc = rc ? rc : put_val(b, &e, depth + 1);
        }
        return rc;
    }
    default:
        return FY_EINVAL;
    }
}

int fy_gguf_w_copy(fy_gguf_writer *w, const char *key, const fy_gguf_val *v)
{
    size_t len = w->kv.len;
    int rc = kv_start(w, key, v->type);
    if (rc == 0 && (rc = put_val(&w->kv, v, 0)) < 0) { /* take the pair back out */
        w->kv.len = len;
        free(w->keys[--w->n_kv]);
    }
    return rc;
}

static uint64_t align_up(uint64_t v, uint32_t a)
{
    return (v + a - 1) & ~(uint64_t)(a - 1);
}

int fy_gguf_w_tensor(fy_gguf_writer *w, const char *name, fy_dtype type, int n_dims,
                     const uint64_t *dims)
{
    size_t nlen = name ? strlen(name) : 0;
    if (w->begun || nlen == 0 || nlen > FY_GGUF_MAX_NAME || n_dims < 1 ||
        n_dims > FY_GGUF_MAX_DIMS || fy_gguf_ggml_type_id(type) == UINT32_MAX) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            return FY_EEXIST;
        }
    }
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (dims[d] == 0) {
            return FY_EINVAL;
        }
        if (d > 0) {
            if (rows > UINT64_MAX / dims[d]) {
                return FY_ETOOBIG;
            }
            rows *= dims[d];
        }
    }
    uint64_t row_bytes, bytes;
    int rc = fy_dtype_bytes(type, dims[0], &row_bytes);
    if (rc) {
        return rc;
    }
    if (row_bytes && rows > (UINT64_MAX / 2) / row_bytes) {
        return FY_ETOOBIG;
    }
    bytes = rows * row_bytes;
    if (w->data_bytes > UINT64_MAX / 2 - bytes - w->alignment) {
        return FY_ETOOBIG;
    }
    if (w->n_t == w->t_cap) {
        size_t cap = w->t_cap ? 2 * w->t_cap : 64;
        gw_tensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) {
            return FY_ENOMEM;
        }
        w->t = t;
        w->t_cap = cap;
    }
    gw_tensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, nlen + 1);
    t->type = type;
    t->n_dims = n_dims;
    memcpy(t->dims, dims, (size_t)n_dims * sizeof *dims);
    t->bytes = bytes;
    t->offset = w->data_bytes;
    w->data_bytes = align_up(w->data_bytes + bytes, w->alignment);
    return 0;
}

uint64_t fy_gguf_w_tensor_bytes(const fy_gguf_writer *w, size_t i)
{
    return i < w->n_t ? w->t[i].bytes : 0;
}

static int write_fail(fy_gguf_writer *w, int rc, char *err, size_t errlen, const char *what)
{
    w->failed = 1;
    fy_atomic_abort(&w->f);
    snprintf(err, errlen, "%s: %s: %s", w->f.path, what, fy_strerror(rc));
    return rc;
}

static int write_zeros(fy_gguf_writer *w, uint64_t n)
{
    static const uint8_t zero[64];
    while (n > 0) {
        size_t k = n < sizeof zero ? (size_t)n : sizeof zero;
        int rc = fy_atomic_write(&w->f, zero, k);
        if (rc) {
            return rc;
        }
        n -= k;
    }
    return 0;
}

int fy_gguf_w_begin(fy_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (w->begun) {
        snprintf(err, errlen, "%s: the writer has begun a file already", path);
        return FY_EINVAL;
    }
    fy_buf h;
    fy_buf_init(&h, GW_MAX_META + (64u << 20));
    int rc = fy_buf_append(&h, "GGUF", 4);
    rc = rc ? rc : put_le(&h, 3, 4);
    rc = rc ? rc : put_le(&h, w->n_t, 8);
    rc = rc ? rc : put_le(&h, w->n_kv, 8);
    rc = rc ? rc : fy_buf_append(&h, w->kv.data, w->kv.len);
    for (size_t i = 0; rc == 0 && i < w->n_t; i++) {
        const gw_tensor *t = &w->t[i];
        rc = put_str(&h, t->name, strlen(t->name));
        rc = rc ? rc : put_le(&h, (uint64_t)t->n_dims, 4);
        for (int d = 0; rc == 0 && d < t->n_dims; d++) {
            rc = put_le(&h, t->dims[d], 8);
        }
        rc = rc ? rc : put_le(&h, fy_gguf_ggml_type_id(t->type), 4);
        rc = rc ? rc : put_le(&h, t->offset, 8);
    }
    if (rc) {
        fy_buf_free(&h);
        snprintf(err, errlen, "%s: the header does not fit in memory: %s", path, fy_strerror(rc));
        return rc;
    }
    w->begun = 1;
    if ((rc = fy_atomic_open(path, 0644, &w->f)) < 0) {
        fy_buf_free(&h);
        w->failed = 1;
        snprintf(err, errlen, "%s: cannot create the file: %s", path, fy_strerror(rc));
        return rc;
    }
    rc = fy_atomic_write(&w->f, h.data, h.len);
    uint64_t pad = align_up(h.len, w->alignment) - h.len;
    fy_buf_free(&h);
    if (rc == 0) {
        rc = write_zeros(w, pad);
    }
    return rc ? write_fail(w, rc, err, errlen, "write") : 0;
}

int fy_gguf_w_tensor_data(fy_gguf_writer *w, const void *data, size_t len, char *err, size_t errlen)
{
    if (!w->begun || w->failed || w->cur >= w->n_t) {
        snprintf(err, errlen, "%s: no tensor is waiting for data", w->f.path);
        return FY_EINVAL;
    }
    gw_tensor *t = &w->t[w->cur];
    if (len > t->bytes - w->cur_done) {
        snprintf(err, errlen, "%s: tensor '%s' takes %llu bytes, given %llu", w->f.path, t->name,
                 (unsigned long long)t->bytes, (unsigned long long)(w->cur_done + len));
        return FY_EINVAL;
    }
    int rc = fy_atomic_write(&w->f, data, len);
    if (rc) {
        return write_fail(w, rc, err, errlen, "write");
    }
    w->cur_done += len;
    if (w->cur_done == t->bytes) {
        uint64_t next = w->cur + 1 < w->n_t ? w->t[w->cur + 1].offset : w->data_bytes;
        if ((rc = write_zeros(w, next - t->offset - t->bytes)) < 0) {
            return write_fail(w, rc, err, errlen, "write");
        }
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

int fy_gguf_w_commit(fy_gguf_writer *w, char *err, size_t errlen)
{
    if (!w->begun || w->failed) {
        snprintf(err, errlen, "%s: nothing to commit", w->begun ? w->f.path : "gguf writer");
        return FY_EINVAL;
    }
    if (w->cur < w->n_t) {
        snprintf(err, errlen, "%s: tensor '%s' has %llu of its %llu bytes", w->f.path,
                 w->t[w->cur].name, (unsigned long long)w->cur_done,
                 (unsigned long long)w->t[w->cur].bytes);
        return FY_EINVAL;
    }
    w->failed = 1; /* done either way */
    int rc = fy_atomic_commit(&w->f);
    if (rc) {
        snprintf(err, errlen, "%s: cannot make the file durable: %s", w->f.path, fy_strerror(rc));
    }
    return rc;
}
