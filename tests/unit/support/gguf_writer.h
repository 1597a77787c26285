/* gguf_writer.h: writes GGUF files for tests, growable (for files far larger
 * than test_gguf.c's fixed-size corruption cases): metadata of every scalar
 * type, arrays (whole, or element by element), and tensors with their bytes
 * at any alignment, so a test builds exactly the file, or the corruption, it
 * needs. Header-only; allocation failures abort (tests only).
 *
 *   gw_writer w;
 *   gw_init(&w);                        GGUF v3, alignment 32 (gw_init_as: others)
 *   gw_kv_str(&w, "tokenizer.ggml.model", "llama");
 *   gw_arr(&w, "tokenizer.ggml.tokens", FY_GGUF_STR, n);  then n gw_str()
 *   gw_tensor(&w, "token_embd.weight", GW_F32, 2, (uint64_t[]){64, 512}, data, bytes);
 *   gw_finish(&w, &file, &len);         the whole file, malloc'd; or gw_save(&w, path)
 *   gw_free(&w);
 *
 * Keys are written in call order; an array's elements go straight after its
 * gw_arr(), with no other key between. Tensors' data offsets are assigned
 * in the order they are added, each at the next multiple of the alignment,
 * as llama.cpp writes them. A non-default alignment is not written as
 * general.alignment unless the caller adds that key. */
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
    gw_buf kv, info, data; /* the metadata, the tensor infos, the data section */
    uint64_t n_kv, n_tensors;
} gw_writer;

static inline void gw__put(gw_buf *b, const void *p, size_t n)
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

static inline void gw__le(gw_buf *b, uint64_t v, int n)
{
    uint8_t c[8];
    for (int i = 0; i < n; i++) {
        c[i] = (uint8_t)(v >> (8 * i));
    }
    gw__put(b, c, (size_t)n);
}

static inline void gw__str(gw_buf *b, const char *s, size_t n)
{
    gw__le(b, n, 8);
    gw__put(b, s, n);
}

static inline void gw_init_as(gw_writer *w, uint32_t version, uint32_t align)
{
    memset(w, 0, sizeof *w);
    w->version = version;
    w->align = align;
}

static inline void gw_init(gw_writer *w)
{
    gw_init_as(w, 3, FY_GGUF_DEFAULT_ALIGNMENT);
}

static inline void gw_free(gw_writer *w)
{
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
    memset(w, 0, sizeof *w);
}

/* Raw little-endian bytes, a string, an f32 or an i32 into the metadata
 * (a value or an array element). */
static inline void gw_le(gw_writer *w, uint64_t v, int n)
{
    gw__le(&w->kv, v, n);
}

static inline void gw_strn(gw_writer *w, const char *s, size_t n)
{
    gw__str(&w->kv, s, n);
}

static inline void gw_str(gw_writer *w, const char *s)
{
    gw_strn(w, s, strlen(s));
}

static inline void gw_f32(gw_writer *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    gw_le(w, u, 4);
}

static inline void gw_i32(gw_writer *w, int32_t v)
{
    gw_le(w, (uint32_t)v, 4);
}

/* A key and its type; the value follows. */
static inline void gw_key(gw_writer *w, const char *key, fy_gguf_type type)
{
    gw_str(w, key);
    gw_le(w, type, 4);
    w->n_kv++;
}

static inline void gw_kv_u32(gw_writer *w, const char *key, uint32_t v)
{
    gw_key(w, key, FY_GGUF_U32);
    gw_le(w, v, 4);
}

static inline void gw_kv_i32(gw_writer *w, const char *key, int32_t v)
{
    gw_key(w, key, FY_GGUF_I32);
    gw_i32(w, v);
}

static inline void gw_kv_u64(gw_writer *w, const char *key, uint64_t v)
{
    gw_key(w, key, FY_GGUF_U64);
    gw_le(w, v, 8);
}

static inline void gw_kv_f32(gw_writer *w, const char *key, float v)
{
    gw_key(w, key, FY_GGUF_F32);
    gw_f32(w, v);
}

static inline void gw_kv_bool(gw_writer *w, const char *key, int v)
{
    gw_key(w, key, FY_GGUF_BOOL);
    gw_le(w, v ? 1 : 0, 1);
}

static inline void gw_kv_strn(gw_writer *w, const char *key, const char *s, size_t n)
{
    gw_key(w, key, FY_GGUF_STR);
    gw_strn(w, s, n);
}

static inline void gw_kv_str(gw_writer *w, const char *key, const char *s)
{
    gw_kv_strn(w, key, s, strlen(s));
}

/* Starts an array of N elements of ELEM; the caller writes them next. */
static inline void gw_arr(gw_writer *w, const char *key, fy_gguf_type elem, uint64_t n)
{
    gw_key(w, key, FY_GGUF_ARR);
    gw_le(w, elem, 4);
    gw_le(w, n, 8);
}

static inline void gw_kv_strs(gw_writer *w, const char *key, const char *const *v, size_t n)
{
    gw_arr(w, key, FY_GGUF_STR, n);
    for (size_t i = 0; i < n; i++) {
        gw_str(w, v[i]);
    }
}

static inline void gw_kv_i32s(gw_writer *w, const char *key, const int32_t *v, size_t n)
{
    gw_arr(w, key, FY_GGUF_I32, n);
    for (size_t i = 0; i < n; i++) {
        gw_i32(w, v[i]);
    }
}

/* A tensor of ggml type TYPE with N_DIMS dims (dims[0] the row length) and
 * its BYTES bytes of DATA (NULL: zeros). */
static inline void gw_tensor(gw_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *dims, const void *data, size_t bytes)
{
    while (w->data.n % w->align) {
        gw__le(&w->data, 0, 1);
    }
    gw__str(&w->info, name, strlen(name));
    gw__le(&w->info, n_dims, 4);
    for (uint32_t i = 0; i < n_dims; i++) {
        gw__le(&w->info, dims[i], 8);
    }
    gw__le(&w->info, type, 4);
    gw__le(&w->info, w->data.n, 8);
    if (data) {
        gw__put(&w->data, data, bytes);
    } else {
        for (size_t i = 0; i < bytes; i++) {
            gw__le(&w->data, 0, 1);
        }
    }
    w->n_tensors++;
}

/* The whole file in *FILE (malloc'd, the caller frees it), *LEN bytes. W
 * stays valid and may take more. */
static inline void gw_finish(const gw_writer *w, uint8_t **file, size_t *len)
{
    gw_buf b = {0};
    gw__put(&b, "GGUF", 4);
    gw__le(&b, w->version, 4);
    gw__le(&b, w->n_tensors, 8);
    gw__le(&b, w->n_kv, 8);
    gw__put(&b, w->kv.p, w->kv.n);
    gw__put(&b, w->info.p, w->info.n);
    while (w->n_tensors && b.n % w->align) {
        gw__le(&b, 0, 1);
    }
    gw__put(&b, w->data.p, w->data.n);
    *file = b.p;
    *len = b.n;
}

/* Writes the file to PATH. Returns 0 or -1. */
static inline int gw_save(const gw_writer *w, const char *path)
{
    uint8_t *p;
    size_t n;
    gw_finish(w, &p, &n);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(p, 1, n, f) == n ? 0 : -1;
    if (f && fclose(f) != 0) {
        rc = -1;
    }
    free(p);
    return rc;
}

#endif
