/* gguf_writer.h: writes GGUF files for tests (metadata of every scalar
 * type, string and number arrays, tensors with their bytes at any
 * alignment), so a test builds exactly the file, or the corruption, it
 * needs. Header-only; allocation failures abort (tests only).
 *
 *   gw_file w;
 *   gw_init(&w, 3, 32);
 *   gw_kv_str(&w, "general.architecture", "llama");
 *   gw_tensor(&w, "token_embd.weight", FY_GGUF_T_F32, 2, (uint64_t[]){64, 512}, data, bytes);
 *   gw_save(&w, path);
 *   gw_free(&w);
 *
 * Tensors' data offsets are assigned in the order they are added, each at
 * the next multiple of the alignment, as llama.cpp writes them. */
#ifndef FY_TEST_GGUF_WRITER_H
#define FY_TEST_GGUF_WRITER_H

#include "runner/engine/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml's tensor type ids. */
enum {
    GW_F32 = 0,
    GW_F16 = 1,
    GW_Q4_0 = 2,
    GW_Q4_1 = 3,
    GW_Q5_0 = 6,
    GW_Q5_1 = 7,
    GW_Q8_0 = 8,
    GW_Q4_K = 12,
    GW_Q5_K = 13,
    GW_Q6_K = 14,
    GW_BF16 = 30,
};

typedef struct {
    uint8_t *p;
    size_t n, cap;
} gw_buf;

typedef struct {
    uint32_t version, align;
    gw_buf kv, info, data;
    uint64_t n_kv, n_tensors;
} gw_file;

static inline void gw_put(gw_buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) {
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            abort();
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->n, p, n);
    }
    b->n += n;
}

static inline void gw_le(gw_buf *b, uint64_t v, int n)
{
    uint8_t c[8];
    for (int i = 0; i < n; i++) {
        c[i] = (uint8_t)(v >> (8 * i));
    }
    gw_put(b, c, (size_t)n);
}

static inline void gw_str(gw_buf *b, const char *s, size_t n)
{
    gw_le(b, n, 8);
    gw_put(b, s, n);
}

static inline void gw_init(gw_file *w, uint32_t version, uint32_t align)
{
    memset(w, 0, sizeof *w);
    w->version = version;
    w->align = align;
}

static inline void gw_free(gw_file *w)
{
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
    memset(w, 0, sizeof *w);
}

/* A key and its type; the caller appends the value to w->kv. */
static inline void gw_key(gw_file *w, const char *key, uint32_t type)
{
    gw_str(&w->kv, key, strlen(key));
    gw_le(&w->kv, type, 4);
    w->n_kv++;
}

static inline void gw_kv_u32(gw_file *w, const char *key, uint32_t v)
{
    gw_key(w, key, FY_GGUF_U32);
    gw_le(&w->kv, v, 4);
}

static inline void gw_kv_i32(gw_file *w, const char *key, int32_t v)
{
    gw_key(w, key, FY_GGUF_I32);
    gw_le(&w->kv, (uint32_t)v, 4);
}

static inline void gw_kv_u64(gw_file *w, const char *key, uint64_t v)
{
    gw_key(w, key, FY_GGUF_U64);
    gw_le(&w->kv, v, 8);
}

static inline void gw_kv_f32(gw_file *w, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    gw_key(w, key, FY_GGUF_F32);
    gw_le(&w->kv, u, 4);
}

static inline void gw_kv_bool(gw_file *w, const char *key, int v)
{
    gw_key(w, key, FY_GGUF_BOOL);
    gw_le(&w->kv, v ? 1 : 0, 1);
}

static inline void gw_kv_str(gw_file *w, const char *key, const char *v)
{
    gw_key(w, key, FY_GGUF_STR);
    gw_str(&w->kv, v, strlen(v));
}

static inline void gw_kv_strs(gw_file *w, const char *key, const char *const *v, size_t n)
{
    gw_key(w, key, FY_GGUF_ARR);
    gw_le(&w->kv, FY_GGUF_STR, 4);
    gw_le(&w->kv, n, 8);
    for (size_t i = 0; i < n; i++) {
        gw_str(&w->kv, v[i], strlen(v[i]));
    }
}

static inline void gw_kv_f32s(gw_file *w, const char *key, const float *v, size_t n)
{
    gw_key(w, key, FY_GGUF_ARR);
    gw_le(&w->kv, FY_GGUF_F32, 4);
    gw_le(&w->kv, n, 8);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        gw_le(&w->kv, u, 4);
    }
}

static inline void gw_kv_i32s(gw_file *w, const char *key, const int32_t *v, size_t n)
{
    gw_key(w, key, FY_GGUF_ARR);
    gw_le(&w->kv, FY_GGUF_I32, 4);
    gw_le(&w->kv, n, 8);
    for (size_t i = 0; i < n; i++) {
        gw_le(&w->kv, (uint32_t)v[i], 4);
    }
}

/* A tensor of ggml type TYPE with N_DIMS dims (dims[0] the row length) and
 * its BYTES bytes of DATA (NULL: zeros). */
static inline void gw_tensor(gw_file *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *dims, const void *data, size_t bytes)
{
    while (w->data.n % w->align) {
        gw_le(&w->data, 0, 1);
    }
    gw_str(&w->info, name, strlen(name));
    gw_le(&w->info, n_dims, 4);
    for (uint32_t i = 0; i < n_dims; i++) {
        gw_le(&w->info, dims[i], 8);
    }
    gw_le(&w->info, type, 4);
    gw_le(&w->info, w->data.n, 8);
    if (data) {
        gw_put(&w->data, data, bytes);
    } else {
        for (size_t i = 0; i < bytes; i++) {
            gw_le(&w->data, 0, 1);
        }
    }
    w->n_tensors++;
}

/* The whole file, into a new buffer (*LEN bytes; caller frees). */
static inline uint8_t *gw_bytes(const gw_file *w, size_t *len)
{
    gw_buf b = {0};
    gw_put(&b, "GGUF", 4);
    gw_le(&b, w->version, 4);
    gw_le(&b, w->n_tensors, 8);
    gw_le(&b, w->n_kv, 8);
    gw_put(&b, w->kv.p, w->kv.n);
    gw_put(&b, w->info.p, w->info.n);
    while (b.n % w->align) {
        gw_le(&b, 0, 1);
    }
    gw_put(&b, w->data.p, w->data.n);
    *len = b.n;
    return b.p;
}

/* Writes the file to PATH. Returns 0 or -1. */
static inline int gw_save(const gw_file *w, const char *path)
{
    size_t n;
    uint8_t *p = gw_bytes(w, &n);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(p, 1, n, f) == n ? 0 : -1;
    if (f && fclose(f) != 0) {
        rc = -1;
    }
    free(p);
    return rc;
}

#endif
