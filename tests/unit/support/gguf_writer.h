/* gguf_writer.h: a metadata-only GGUF v3 writer for tests (no tensors),
 * growable, for files far larger than test_gguf.c's fixed-size corruption
 * cases: a whole tokenizer's tokenizer.ggml.* keys. Header-only; include
 * after <cmocka.h> (a failed append fails the test).
 *
 *   gw_writer w;
 *   gw_init(&w);
 *   gw_kv_str(&w, "tokenizer.ggml.model", "llama");
 *   gw_arr(&w, "tokenizer.ggml.tokens", FY_GGUF_STR, n);  then n gw_str()
 *   gw_finish(&w, &file, &len);   file is malloc'd; parse it with fy_gguf_parse
 *
 * Keys are written in call order; elements go straight after gw_arr(), so
 * an array's elements must follow its gw_arr() with no other key between. */
#ifndef FY_TEST_GGUF_WRITER_H
#define FY_TEST_GGUF_WRITER_H

#include "common/buf.h"
#include "runner/engine/gguf.h"

#include <stdint.h>
#include <string.h>

typedef struct {
    fy_buf kv; /* the metadata section */
    uint64_t n_kv;
} gw_writer;

static inline void gw_init(gw_writer *w)
{
    fy_buf_init(&w->kv, (size_t)1 << 30);
    w->n_kv = 0;
}

static inline void gw_free(gw_writer *w)
{
    fy_buf_free(&w->kv);
}

static inline void gw_le(gw_writer *w, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    assert_int_equal(fy_buf_append(&w->kv, b, (size_t)n), 0);
}

/* A string value or array element: u64 length, bytes. */
static inline void gw_strn(gw_writer *w, const char *s, size_t n)
{
    gw_le(w, n, 8);
    assert_int_equal(fy_buf_append(&w->kv, s, n), 0);
}

static inline void gw_str(gw_writer *w, const char *s)
{
    gw_strn(w, s, strlen(s));
}

static inline void gw_key(gw_writer *w, const char *key, fy_gguf_type type)
{
    gw_str(w, key);
    gw_le(w, type, 4);
    w->n_kv++;
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

static inline void gw_kv_u32(gw_writer *w, const char *key, uint32_t v)
{
    gw_key(w, key, FY_GGUF_U32);
    gw_le(w, v, 4);
}

static inline void gw_kv_bool(gw_writer *w, const char *key, int v)
{
    gw_key(w, key, FY_GGUF_BOOL);
    gw_le(w, v ? 1 : 0, 1);
}

/* Starts an array of N elements of ELEM; the caller writes them next. */
static inline void gw_arr(gw_writer *w, const char *key, fy_gguf_type elem, uint64_t n)
{
    gw_key(w, key, FY_GGUF_ARR);
    gw_le(w, elem, 4);
    gw_le(w, n, 8);
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

/* The whole file (header, metadata, no tensors) in *FILE (malloc'd, the
 * caller frees it), *LEN bytes. W stays valid and may take more keys. */
static inline void gw_finish(const gw_writer *w, uint8_t **file, size_t *len)
{
    size_t n = 24 + w->kv.len;
    uint8_t *p = malloc(n);
    assert_non_null(p);
    memcpy(p, "GGUF", 4);
    const uint64_t head[3] = {3, 0, w->n_kv}; /* version (u32), tensors, keys (u64) */
    for (int i = 0; i < 4; i++) {
        p[4 + i] = (uint8_t)(head[0] >> (8 * i));
    }
    for (int k = 1; k < 3; k++) {
        for (int i = 0; i < 8; i++) {
            p[8 + 8 * (k - 1) + i] = (uint8_t)(head[k] >> (8 * i));
        }
    }
    memcpy(p + 24, w->kv.data, w->kv.len);
    *file = p;
    *len = n;
}

#endif
