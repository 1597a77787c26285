/* The GGUF reader: files it writes itself (accepted, and a table of
 * corruptions each refused with a message naming the file, the key or
 * tensor, and the problem), the getters, and every GGUF file of the shared
 * test data (metadata, tensor types and counts as their README says, and
 * each quantized tensor close to the same tensor of the F32 file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- A GGUF writer for the tests ------------------------------------------------------ */

typedef struct {
    uint8_t p[8192];
    size_t n;
} tb_buf;

static void tb_bytes(tb_buf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->p);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void tb_le(tb_buf *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        tb_bytes(b, &c, 1);
    }
}

static void tb_str(tb_buf *b, const char *s)
{
    tb_le(b, strlen(s), 8);
    tb_bytes(b, s, strlen(s));
}

typedef struct {
    char key[80];
    size_t key_len; /* 0: strlen(key) */
    uint32_t type;
    uint8_t val[512]; /* the encoded value */
    size_t val_len;
} tb_kv;

typedef struct {
    char name[80];
    uint32_t n_dims;
    uint64_t dims[5];
    uint32_t type; /* ggml id */
    uint64_t offset;
} tb_tensor;

/* What the writer puts in a file; cases change one thing each. */
typedef struct {
    char magic[5];
    uint32_t version;
    int64_t n_tensors, n_kv; /* -1: the real counts */
    tb_kv kv[12];
    int nkv;
    tb_tensor t[6];
    int nt;
    uint32_t align;  /* padding before the data section */
    size_t data_len; /* bytes of the data section */
    size_t cut;      /* 0, or the file's length (a truncation) */
    /* Where the sections start in the written file. */
    size_t at_kv, at_info, at_pad, at_data;
} tb_spec;

static void kv_raw(tb_spec *s, const char *key, uint32_t type, const void *val, size_t len)
{
    tb_kv *kv = &s->kv[s->nkv++];
    snprintf(kv->key, sizeof kv->key, "%s", key);
    kv->type = type;
    assert_true(len <= sizeof kv->val);
    memcpy(kv->val, val, len);
    kv->val_len = len;
}

static void kv_u32(tb_spec *s, const char *key, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    kv_raw(s, key, FY_GGUF_U32, b, 4);
}

static void kv_enc(tb_spec *s, const char *key, uint32_t type, void (*enc)(tb_buf *))
{
    tb_buf b = {.n = 0};
    enc(&b);
    kv_raw(s, key, type, b.p, b.n);
}

static void enc_llama(tb_buf *b)
{
    tb_str(b, "llama");
}

/* ["<s>", "", "x"] */
static void enc_tokens(tb_buf *b)
{
    tb_le(b, FY_GGUF_STR, 4);
    tb_le(b, 3, 8);
    tb_str(b, "<s>");
    tb_str(b, "");
    tb_str(b, "x");
}

static void enc_scores(tb_buf *b)
{
    tb_le(b, FY_GGUF_F32, 4);
    tb_le(b, 2, 8);
    tb_le(b, 0x3f800000u, 4); /* 1.0 */
    tb_le(b, 0xc0000000u, 4); /* -2.0 */
}

/* [[1, 2], ["ab"], [[true]]]: arrays in arrays, three levels deep. */
static void enc_nested(tb_buf *b)
{
    tb_le(b, FY_GGUF_ARR, 4);
    tb_le(b, 3, 8);
    tb_le(b, FY_GGUF_I16, 4);
    tb_le(b, 2, 8);
    tb_le(b, 1, 2);
    tb_le(b, 0xffff, 2);
    tb_le(b, FY_GGUF_STR, 4);
    tb_le(b, 1, 8);
    tb_str(b, "ab");
    tb_le(b, FY_GGUF_ARR, 4);
    tb_le(b, 1, 8);
    tb_le(b, FY_GGUF_BOOL, 4);
    tb_le(b, 1, 8);
    tb_le(b, 1, 1);
}

static void tensor(tb_spec *s, const char *name, uint32_t type, uint64_t d0, uint64_t d1,
                   uint64_t offset)
{
    tb_tensor *t = &s->t[s->nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = d1 ? 2 : 1;
    t->dims[0] = d0;
    t->dims[1] = d1;
    t->offset = offset;
}

/* The valid base file: four keys and three tensors, F32 [8 x 2] at 0 (64
 * bytes), Q8_0 [32] at 64 (34 bytes), Q4_K [256] at 128 (144 bytes). */
static tb_spec base(void)
{
    tb_spec s = {.magic = "GGUF", .version = 3, .n_tensors = -1, .n_kv = -1, .align = 32};
    kv_enc(&s, "general.architecture", FY_GGUF_STR, enc_llama);
    kv_u32(&s, "llama.block_count", 2);
    kv_enc(&s, "tokenizer.ggml.tokens", FY_GGUF_ARR, enc_tokens);
    kv_enc(&s, "tokenizer.ggml.scores", FY_GGUF_ARR, enc_scores);
    tensor(&s, "a", 0, 8, 2, 0);
    tensor(&s, "b", 8, 32, 0, 64);
    tensor(&s, "c", 12, 256, 0, 128);
    s.data_len = 128 + 144;
    return s;
}

/* Writes S into B; the data section holds bytes 0, 1, 2, ... */
static void tb_write(tb_spec *s, tb_buf *b)
{
    b->n = 0;
    tb_bytes(b, s->magic, 4);
    tb_le(b, s->version, 4);
    tb_le(b, s->n_tensors >= 0 ? (uint64_t)s->n_tensors : (uint64_t)s->nt, 8);
    tb_le(b, s->n_kv >= 0 ? (uint64_t)s->n_kv : (uint64_t)s->nkv, 8);
    s->at_kv = b->n;
    for (int i = 0; i < s->nkv; i++) {
        size_t kl = s->kv[i].key_len ? s->kv[i].key_len : strlen(s->kv[i].key);
        tb_le(b, kl, 8);
        tb_bytes(b, s->kv[i].key, kl);
        tb_le(b, s->kv[i].type, 4);
        tb_bytes(b, s->kv[i].val, s->kv[i].val_len);
    }
    s->at_info = b->n;
    for (int i = 0; i < s->nt; i++) {
        const tb_tensor *t = &s->t[i];
        tb_str(b, t->name);
        tb_le(b, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims && d < 5; d++) {
            tb_le(b, t->dims[d], 8);
        }
        tb_le(b, t->type, 4);
        tb_le(b, t->offset, 8);
    }
    s->at_pad = b->n;
    while (b->n % s->align) {
        tb_le(b, 0, 1);
    }
    s->at_data = b->n;
    for (size_t i = 0; i < s->data_len; i++) {
        tb_le(b, i & 0xff, 1);
    }
    if (s->cut) {
        b->n = s->cut;
    }
}

static fy_gguf *parse_ok(tb_spec *s, tb_buf *b)
{
    tb_write(s, b);
    fy_gguf *g = NULL;
    char err[512] = "";
    if (fy_gguf_parse(b->p, b->n, "test.gguf", &g, err, sizeof err) != 0) {
        fail_msg("refused: %s", err);
    }
    return g;
}

/* --- Valid files and the getters ------------------------------------------------------ */

static void test_valid(void **state)
{
    (void)state;
    tb_spec s = base();
    tb_buf b;
    fy_gguf *g = parse_ok(&s, &b);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, FY_GGUF_DEFAULT_ALIGNMENT);
    assert_int_equal(g->data_start, s.at_data);
    assert_int_equal(g->n_kv, 4);
    assert_int_equal(g->n_tensors, 3);

    const fy_gguf_tensor *t = fy_gguf_tensor_find(g, "c");
    assert_non_null(t);
    assert_int_equal(t->type, FY_DT_Q4_K);
    assert_int_equal(t->ggml_type, 12);
    assert_int_equal(t->n_bytes, 144);
    assert_int_equal(t->row_bytes, 144);
    assert_int_equal(t->n_rows, 1);
    assert_int_equal(t->offset, s.at_data + 128);
    assert_ptr_equal(t->data, b.p + s.at_data + 128);
    assert_int_equal(((const uint8_t *)t->data)[0], 128); /* data byte i is i & 0xff */
    t = fy_gguf_tensor_find(g, "a");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->dims[1], 2);
    assert_int_equal(t->dims[2], 1);
    assert_int_equal(t->n_elems, 16);
    assert_int_equal(t->n_rows, 2);
    assert_int_equal(t->row_bytes, 32);
    assert_null(fy_gguf_tensor_find(g, "d"));

    char err[256] = "";
    uint32_t u = 0;
    assert_int_equal(fy_gguf_get_u32(g, "llama.block_count", &u, err, sizeof err), 0);
    assert_int_equal(u, 2);
    fy_gguf_str str;
    assert_int_equal(fy_gguf_get_str(g, "general.architecture", &str, err, sizeof err), 0);
    assert_int_equal(str.len, 5);
    assert_memory_equal(str.p, "llama", 5);
    fy_gguf_arr a;
    assert_int_equal(fy_gguf_get_arr(g, "tokenizer.ggml.tokens", FY_GGUF_STR, &a, err, sizeof err),
                     0);
    assert_int_equal(a.n, 3);
    fy_gguf_val v;
    assert_int_equal(fy_gguf_arr_get(&a, 2, &v), 0);
    assert_int_equal(v.type, FY_GGUF_STR);
    assert_int_equal(v.s.len, 1);
    assert_int_equal(v.s.p[0], 'x');
    assert_int_equal(fy_gguf_arr_get(&a, 1, &v), 0);
    assert_int_equal(v.s.len, 0);
    assert_int_equal(fy_gguf_arr_get(&a, 3, &v), FY_EINVAL);
    assert_int_equal(fy_gguf_get_arr(g, "tokenizer.ggml.scores", FY_GGUF_F32, &a, err, sizeof err),
                     0);
    assert_int_equal(fy_gguf_arr_get(&a, 1, &v), 0);
    assert_true(v.type == FY_GGUF_F32 && v.f == -2.0);

    /* Wrong types and missing keys, each said clearly. */
    assert_int_equal(fy_gguf_get_u32(g, "general.architecture", &u, err, sizeof err), FY_EPARSE);
    assert_string_equal(err, "test.gguf: key 'general.architecture' is string, not u32");
    float f;
    assert_int_equal(fy_gguf_get_f32(g, "tokenizer.ggml.scores", &f, err, sizeof err), FY_EPARSE);
    assert_string_equal(err, "test.gguf: key 'tokenizer.ggml.scores' is an array of f32, not f32");
    assert_int_equal(fy_gguf_get_arr(g, "tokenizer.ggml.tokens", FY_GGUF_F32, &a, err, sizeof err),
                     FY_EPARSE);
    assert_string_equal(
        err, "test.gguf: key 'tokenizer.ggml.tokens' is an array of string, not an array of f32");
    assert_int_equal(a.n, 0);
    assert_int_equal(fy_gguf_get_str(g, "llama.block_count", &str, err, sizeof err), FY_EPARSE);
    assert_non_null(strstr(err, "is u32, not string"));
    assert_int_equal(fy_gguf_get_u32(g, "llama.context_length", &u, err, sizeof err), FY_ENOENT);
    assert_string_equal(err, "test.gguf: key 'llama.context_length' is missing");
    fy_gguf_free(g);
}

/* Version 2, a custom alignment, every scalar type, nested arrays, no
 * tensors at all. */
static void test_valid_variants(void **state)
{
    (void)state;
    tb_spec s = base();
    s.version = 2;
    s.align = 64;
    kv_u32(&s, "general.alignment", 64);
    s.t[1].offset = 128; /* multiples of 64 */
    s.t[2].offset = 192;
    s.data_len = 192 + 144;
    kv_enc(&s, "x.nested", FY_GGUF_ARR, enc_nested);
    static const struct {
        uint32_t type;
        uint8_t b[8];
        size_t n;
    } sc[] = {
        {FY_GGUF_I8, {0x80}, 1},
        {FY_GGUF_U16, {0xff, 0xff}, 2},
        {FY_GGUF_I64, {0, 0, 0, 0, 0, 0, 0, 0x80}, 8},
        {FY_GGUF_F64, {0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, 8},
        {FY_GGUF_BOOL, {1}, 1},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        char k[32];
        snprintf(k, sizeof k, "x.scalar%zu", i);
        kv_raw(&s, k, sc[i].type, sc[i].b, sc[i].n);
    }
    tb_buf b;
    fy_gguf *g = parse_ok(&s, &b);
    assert_int_equal(g->version, 2);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_start % 64, 0);
    assert_int_equal(fy_gguf_tensor_find(g, "c")->offset, g->data_start + 192);
    assert_int_equal(fy_gguf_find(g, "x.scalar0")->v.i, -128);
    assert_int_equal(fy_gguf_find(g, "x.scalar1")->v.u, 65535);
    assert_true(fy_gguf_find(g, "x.scalar2")->v.i == INT64_MIN);
    assert_true(fy_gguf_find(g, "x.scalar3")->v.f == 1.0);
    assert_int_equal(fy_gguf_find(g, "x.scalar4")->v.b, 1);

    /* [[1, -1], ["ab"], [[true]]]: the walk through nested elements. */
    const fy_gguf_arr *a = &fy_gguf_find(g, "x.nested")->v.a;
    fy_gguf_val e, x;
    assert_int_equal(a->n, 3);
    assert_int_equal(fy_gguf_arr_get(a, 0, &e), 0);
    assert_int_equal(e.a.type, FY_GGUF_I16);
    assert_int_equal(fy_gguf_arr_get(&e.a, 1, &x), 0);
    assert_int_equal(x.i, -1);
    assert_int_equal(fy_gguf_arr_get(a, 1, &e), 0);
    assert_int_equal(fy_gguf_arr_get(&e.a, 0, &x), 0);
    assert_true(x.type == FY_GGUF_STR && x.s.len == 2 && memcmp(x.s.p, "ab", 2) == 0);
    assert_int_equal(fy_gguf_arr_get(a, 2, &e), 0);
    assert_int_equal(fy_gguf_arr_get(&e.a, 0, &x), 0);
    assert_int_equal(x.a.type, FY_GGUF_BOOL);
    assert_int_equal(fy_gguf_arr_get(&x.a, 0, &e), 0);
    assert_int_equal(e.b, 1);
    fy_gguf_free(g);

    /* No tensors: the file may end right after the metadata. */
    s = base();
    s.nt = 0;
    s.data_len = 0;
    s.align = 1;
    g = parse_ok(&s, &b);
    assert_int_equal(g->n_tensors, 0);
    assert_null(fy_gguf_tensor_find(g, "a"));
    fy_gguf_free(g);
}

/* --- Refusals ---------------------------------------------------------------------------- */

static void enc_bad_str_len(tb_buf *b)
{
    tb_le(b, 1000000, 8);
    tb_bytes(b, "abc", 3);
}

static void enc_huge_array(tb_buf *b)
{
    tb_le(b, FY_GGUF_U32, 4);
    tb_le(b, 1000000000000ull, 8);
}

static void enc_bad_elem_type(tb_buf *b)
{
    tb_le(b, 13, 4);
    tb_le(b, 1, 8);
}

/* Nine arrays, each holding the next. */
static void enc_deep(tb_buf *b)
{
    for (int i = 0; i < 9; i++) {
        tb_le(b, FY_GGUF_ARR, 4);
        tb_le(b, 1, 8);
    }
    tb_le(b, FY_GGUF_U8, 4);
    tb_le(b, 0, 8);
}

static void enc_bool_array(tb_buf *b)
{
    tb_le(b, FY_GGUF_BOOL, 4);
    tb_le(b, 2, 8);
    tb_le(b, 0x0301, 2);
}

static void m_magic(tb_spec *s)
{
    memcpy(s->magic, "GGML", 4);
}
static void m_v1_short(tb_spec *s)
{
    s->version = 1;
    s->cut = 16; /* v1 had u32 counts */
}
static void m_cut_kv(tb_spec *s)
{
    s->nt = 0; /* else the counts are more than the cut file can hold */
    s->n_kv = 1;
    s->data_len = 0;
    tb_buf b;
    tb_write(s, &b);
    s->cut = s->at_kv + 8 + strlen("general.architecture") + 4 + 8 + 3; /* inside "llama" */
}
static void m_str_len(tb_spec *s)
{
    kv_enc(s, "general.name", FY_GGUF_STR, enc_bad_str_len);
}
static void m_arr_len(tb_spec *s)
{
    kv_enc(s, "x.big", FY_GGUF_ARR, enc_huge_array);
}
static void m_value_type(tb_spec *s)
{
    kv_raw(s, "x.odd", 13, "\0\0\0\0", 4);
}
static void m_elem_type(tb_spec *s)
{
    kv_enc(s, "x.arr", FY_GGUF_ARR, enc_bad_elem_type);
}
static void m_deep(tb_spec *s)
{
    kv_enc(s, "x.deep", FY_GGUF_ARR, enc_deep);
}
static void m_bool(tb_spec *s)
{
    kv_raw(s, "x.flag", FY_GGUF_BOOL, "\x02", 1);
}
static void m_bool_arr(tb_spec *s)
{
    kv_enc(s, "x.flags", FY_GGUF_ARR, enc_bool_array);
}
static void m_dup_key(tb_spec *s)
{
    kv_u32(s, "llama.block_count", 3);
}
static void m_empty_key(tb_spec *s)
{
    kv_u32(s, "", 3);
}
static void m_nul_key(tb_spec *s)
{
    memcpy(s->kv[1].key, "ab\0cd", 6);
    s->kv[1].key_len = 5;
}
static void m_align_type(tb_spec *s)
{
    kv_raw(s, "general.alignment", FY_GGUF_U64, "\x20\0\0\0\0\0\0\0", 8);
}
static void m_cut_info(tb_spec *s)
{
    tb_buf b;
    tb_write(s, &b);
    s->cut = s->at_info + 8 + 1 + 4 + 8 + 3; /* inside tensor 'a''s dims */
}
static void m_ndims5(tb_spec *s)
{
    s->t[1].n_dims = 5;
    s->t[1].dims[1] = s->t[1].dims[2] = s->t[1].dims[3] = s->t[1].dims[4] = 1;
}
static void m_dim_overflow(tb_spec *s)
{
    s->t[0].dims[0] = 1ull << 32;
    s->t[0].dims[1] = 1ull << 32;
}
static void m_bytes_overflow(tb_spec *s)
{
    s->t[0].n_dims = 1;
    s->t[0].dims[0] = 1ull << 62;
}
static void m_row(tb_spec *s)
{
    s->t[2].dims[0] = 128;
    s->t[2].dims[1] = 2;
    s->t[2].n_dims = 2;
}
static void m_cut_padding(tb_spec *s)
{
    tb_buf b;
    tb_write(s, &b);
    assert_true(s->at_pad % 32 != 0); /* the infos end where padding is needed */
    s->cut = s->at_pad;
}
static void m_dup_name(tb_spec *s)
{
    snprintf(s->t[2].name, sizeof s->t[2].name, "a");
}
static void m_long_name(tb_spec *s)
{
    memset(s->t[1].name, 'n', 65);
    s->t[1].name[65] = 0;
}

/* One field of the base file set to a value (tensor fields of tensor IDX). */
enum { P_VERSION = 1, P_CUT, P_NT, P_NKV, P_NDIMS, P_DIM1, P_TYPE, P_OFFSET, P_DATA_LEN, P_ALIGN };

static void patch(tb_spec *s, int field, int idx, uint64_t v)
{
    tb_tensor *t = &s->t[idx];
    switch (field) {
    case P_VERSION:
        s->version = (uint32_t)v;
        break;
    case P_CUT:
        s->cut = (size_t)v;
        break;
    case P_NT:
        s->n_tensors = (int64_t)v;
        break;
    case P_NKV:
        s->n_kv = (int64_t)v;
        break;
    case P_NDIMS:
        t->n_dims = (uint32_t)v;
        break;
    case P_DIM1:
        t->dims[1] = v;
        break;
    case P_TYPE:
        t->type = (uint32_t)v;
        break;
    case P_OFFSET:
        t->offset = v;
        break;
    case P_DATA_LEN:
        s->data_len = (size_t)v; /* 'c' needs 128 + 144 */
        break;
    case P_ALIGN:
        kv_u32(s, "general.alignment", (uint32_t)v);
        break;
    }
}

/* Each case: a mutation (a function, or a patch of one field) of the base
 * file and what the refusal must say. */
static const struct {
    const char *what;
    void (*mutate)(tb_spec *);
    int field, idx;
    uint64_t value;
    const char *msg;
} refusals[] = {
    {"bad magic", m_magic, 0, 0, 0, "not a GGUF file (it starts with 47 47 4d 4c"},
    {"short header", NULL, P_CUT, 0, 10, "truncated header: the file is 10 bytes"},
    {"version 1", NULL, P_VERSION, 0, 1, "GGUF version 1 is not supported"},
    {"short version 1", m_v1_short, 0, 0, 0, "GGUF version 1 is not supported"},
    {"version 4", NULL, P_VERSION, 0, 4, "GGUF version 4 is not supported"},
    {"big-endian", NULL, P_VERSION, 0, 0x03000000, "big-endian GGUF"},
    {"tensor count", NULL, P_NT, 0, 1ull << 40, "tensor count 1099511627776 is more than"},
    {"kv count", NULL, P_NKV, 0, 1000000, "metadata count 1000000 is more than"},
    {"truncated kv", m_cut_kv, 0, 0, 0,
     "key 'general.architecture': string length 5 runs past the end"},
    {"string length", m_str_len, 0, 0, 0,
     "key 'general.name': string length 1000000 runs past the end"},
    {"array length", m_arr_len, 0, 0, 0,
     "key 'x.big': array of 1000000000000 u32 runs past the end"},
    {"value type", m_value_type, 0, 0, 0, "key 'x.odd': unknown value type 13"},
    {"element type", m_elem_type, 0, 0, 0, "key 'x.arr': array of unknown value type 13"},
    {"nesting", m_deep, 0, 0, 0, "key 'x.deep': arrays nested more than 8 deep"},
    {"bool", m_bool, 0, 0, 0, "key 'x.flag': bool value 2 is neither 0 nor 1"},
    {"bool array", m_bool_arr, 0, 0, 0, "key 'x.flags': element 1: bool value 3"},
    {"duplicate key", m_dup_key, 0, 0, 0, "key 'llama.block_count': duplicate key"},
    {"empty key", m_empty_key, 0, 0, 0, "key 4: empty"},
    {"NUL in key", m_nul_key, 0, 0, 0, "key 1 'ab': contains a NUL byte"},
    {"alignment type", m_align_type, 0, 0, 0, "key 'general.alignment': is u64, must be u32"},
    {"alignment 48", NULL, P_ALIGN, 0, 48,
     "key 'general.alignment': 48 is not a nonzero power of two"},
    {"alignment 0", NULL, P_ALIGN, 0, 0,
     "key 'general.alignment': 0 is not a nonzero power of two"},
    {"truncated info", m_cut_info, 0, 0, 0, "tensor 'a': truncated tensor info"},
    {"n_dims 0", NULL, P_NDIMS, 1, 0, "tensor 'b': n_dims 0 (must be 1 to 4)"},
    {"n_dims 5", m_ndims5, 0, 0, 0, "tensor 'b': n_dims 5 (must be 1 to 4)"},
    {"zero dim", NULL, P_DIM1, 0, 0, "tensor 'a': dims[1] is 0"},
    {"dims overflow", m_dim_overflow, 0, 0, 0, "tensor 'a': element count overflows"},
    {"bytes overflow", m_bytes_overflow, 0, 0, 0, "tensor 'a': byte size overflows"},
    {"unknown type", NULL, P_TYPE, 1, 99, "tensor 'b': unknown type 99"},
    {"Q2_K", NULL, P_TYPE, 2, 10, "tensor 'c': type Q2_K is not supported"},
    {"IQ4_XS", NULL, P_TYPE, 2, 23, "tensor 'c': type IQ4_XS is not supported"},
    {"row length", m_row, 0, 0, 0,
     "tensor 'c': row length 128 (dims[0]) is not a multiple of Q4_K's 256-weight block"},
    {"misaligned", NULL, P_OFFSET, 2, 130,
     "tensor 'c': offset 130 is not a multiple of the alignment 32"},
    {"past the end", NULL, P_OFFSET, 2, 4096,
     "tensor 'c': data at offset 4096 + 144 bytes runs past the end"},
    {"truncated data", NULL, P_DATA_LEN, 0, 200,
     "tensor 'c': data at offset 128 + 144 bytes runs past the end"},
    {"no data section", m_cut_padding, 0, 0, 0, "truncated: the data section starts at byte"},
    {"overlap", NULL, P_OFFSET, 1, 32, "tensor 'b': its bytes overlap tensor 'a'"},
    {"duplicate name", m_dup_name, 0, 0, 0, "tensor 'a': duplicate tensor name"},
    {"long name", m_long_name, 0, 0, 0, "tensor 1: name: 65 bytes long (at most 64)"},
};

static void test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        tb_spec s = base();
        if (refusals[i].mutate) {
            refusals[i].mutate(&s);
        } else {
            patch(&s, refusals[i].field, refusals[i].idx, refusals[i].value);
        }
        tb_buf b;
        tb_write(&s, &b);
        fy_gguf *g = (fy_gguf *)1;
        char err[512] = "";
        int rc = fy_gguf_parse(b.p, b.n, "test.gguf", &g, err, sizeof err);
        if (rc != FY_EPARSE || g != NULL || strncmp(err, "test.gguf: ", 11) != 0 ||
            !strstr(err, refusals[i].msg)) {
            fail_msg("%s: rc %d, message '%s' (wanted '%s')", refusals[i].what, rc, err,
                     refusals[i].msg);
        }
    }
    /* Every prefix of a valid file is refused, and says why. */
    tb_spec s = base();
    tb_buf b;
    tb_write(&s, &b);
    for (size_t n = 0; n < b.n; n++) {
        fy_gguf *g = NULL;
        char err[512] = "";
        assert_int_equal(fy_gguf_parse(b.p, n, "test.gguf", &g, err, sizeof err), FY_EPARSE);
        assert_non_null(strstr(err, "trunc"));
    }
}

static void test_open(void **state)
{
    (void)state;
    fy_gguf *g = (fy_gguf *)1;
    char err[512] = "";
    assert_int_equal(fy_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), FY_ENOENT);
    assert_null(g);
    assert_non_null(strstr(err, "/nonexistent/x.gguf"));
    assert_int_equal(fy_gguf_open("/tmp", &g, err, sizeof err), FY_EIO);
    assert_non_null(strstr(err, "/tmp: not a regular file"));

    char path[] = "/tmp/fy_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(fy_gguf_open(path, &g, err, sizeof err), FY_EPARSE); /* empty */
    assert_non_null(strstr(err, "truncated header: the file is 0 bytes"));
    assert_non_null(strstr(err, path));
    tb_spec s = base();
    tb_buf b;
    tb_write(&s, &b);
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    assert_int_equal(fy_gguf_open(path, &g, err, sizeof err), 0);
    assert_int_equal(g->n_tensors, 3);
    assert_memory_equal(fy_gguf_tensor_find(g, "b")->data, b.p + s.at_data + 64, 34);
    fy_gguf_free(g);
    unlink(path);
}

/* --- The shared test data ----------------------------------------------------------------- */

static const char *testdata(void)
{
    const char *td = getenv("FERRY_TESTDATA");
    static char dir[1024];
    if (!td) {
        printf("skipped: FERRY_TESTDATA is not set\n");
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s/gguf", td);
    if (access(dir, R_OK) != 0) {
        printf("skipped: %s is absent\n", dir);
        return NULL;
    }
    return td;
}

static fy_gguf *open_td(const char *td, const char *rel)
{
    char path[1200], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", td, rel);
    fy_gguf *g = NULL;
    if (fy_gguf_open(path, &g, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    return g;
}

static uint32_t u32_of(const fy_gguf *g, const char *key)
{
    uint32_t v = 0;
    char err[256];
    if (fy_gguf_get_u32(g, key, &v, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    return v;
}

/* The llama keys and the tokenizer every file here has. */
static void check_llama(const fy_gguf *g, uint32_t hidden, uint32_t ffn, uint32_t layers,
                        uint32_t ctx, uint32_t rope_dims)
{
    char err[256];
    assert_int_equal(u32_of(g, "llama.embedding_length"), hidden);
    assert_int_equal(u32_of(g, "llama.feed_forward_length"), ffn);
    assert_int_equal(u32_of(g, "llama.block_count"), layers);
    assert_int_equal(u32_of(g, "llama.context_length"), ctx);
    assert_int_equal(u32_of(g, "llama.rope.dimension_count"), rope_dims);
    assert_int_equal(u32_of(g, "llama.attention.head_count"), 8);
    assert_int_equal(u32_of(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(u32_of(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(u32_of(g, "tokenizer.ggml.eos_token_id"), 2);
    float eps = 0;
    assert_int_equal(
        fy_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps, err, sizeof err), 0);
    assert_float_equal(eps, 1e-5, 1e-12);
    fy_gguf_str s;
    assert_int_equal(fy_gguf_get_str(g, "tokenizer.ggml.model", &s, err, sizeof err), 0);
    assert_true(s.len == 5 && memcmp(s.p, "llama", 5) == 0);
    assert_int_equal(fy_gguf_get_str(g, "general.architecture", &s, err, sizeof err), 0);
    assert_true(s.len == 5 && memcmp(s.p, "llama", 5) == 0);
    static const struct {
        const char *key;
        fy_gguf_type elem;
    } arrs[] = {{"tokenizer.ggml.tokens", FY_GGUF_STR},
                {"tokenizer.ggml.scores", FY_GGUF_F32},
                {"tokenizer.ggml.token_type", FY_GGUF_I32}};
    for (int i = 0; i < 3; i++) {
        fy_gguf_arr a;
        if (fy_gguf_get_arr(g, arrs[i].key, arrs[i].elem, &a, err, sizeof err) != 0) {
            fail_msg("%s", err);
        }
        assert_int_equal(a.n, 512);
    }
    fy_gguf_arr tok;
    fy_gguf_get_arr(g, "tokenizer.ggml.tokens", FY_GGUF_STR, &tok, err, sizeof err);
    fy_gguf_val v;
    assert_int_equal(fy_gguf_arr_get(&tok, 1, &v), 0);
    assert_true(v.s.len == 3 && memcmp(v.s.p, "<s>", 3) == 0);
    assert_int_equal(fy_gguf_arr_get(&tok, 13, &v), 0); /* byte tokens <0x00>.. start at 3 */
    assert_true(v.s.len == 6 && memcmp(v.s.p, "<0x0A>", 6) == 0);
}

/* Every tensor name a Llama GGUF of LAYERS layers has, and their shapes. */
static void check_tensors(const fy_gguf *g, int layers, uint64_t hidden, uint64_t ffn,
                          uint64_t kv_dim)
{
    assert_int_equal(g->n_tensors, 3 + 9 * layers);
    static const char *const per_layer[] = {"attn_norm", "attn_q",      "attn_k",
                                            "attn_v",    "attn_output", "ffn_norm",
                                            "ffn_gate",  "ffn_up",      "ffn_down"};
    const uint64_t shapes[9][2] = {{hidden, 1},      {hidden, hidden}, {hidden, kv_dim},
                                   {hidden, kv_dim}, {hidden, hidden}, {hidden, 1},
                                   {hidden, ffn},    {hidden, ffn},    {ffn, hidden}};
    for (int l = 0; l < layers; l++) {
        for (int k = 0; k < 9; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, per_layer[k]);
            const fy_gguf_tensor *t = fy_gguf_tensor_find(g, name);
            if (!t) {
                fail_msg("%s: no tensor %s", g->label, name);
            }
            assert_int_equal(t->dims[0], shapes[k][0]);
            assert_int_equal(t->dims[1], shapes[k][1]);
        }
    }
    assert_int_equal(fy_gguf_tensor_find(g, "token_embd.weight")->dims[1], 512);
    assert_int_equal(fy_gguf_tensor_find(g, "output.weight")->dims[1], 512);
    assert_int_equal(fy_gguf_tensor_find(g, "output_norm.weight")->n_dims, 1);
}

/* RMS of (dequantized - f32) over RMS of f32, for one tensor. */
static double rel_rms(const fy_gguf_tensor *q, const fy_gguf_tensor *f)
{
    assert_int_equal(q->n_elems, f->n_elems);
    float *a = malloc((size_t)q->n_elems * sizeof *a), *b = malloc((size_t)f->n_elems * sizeof *b);
    assert_int_equal(fy_q_dequant(q->type, q->data, a, (size_t)q->n_elems), 0);
    assert_int_equal(fy_q_dequant(f->type, f->data, b, (size_t)f->n_elems), 0);
    double se = 0, sv = 0;
    for (uint64_t i = 0; i < q->n_elems; i++) {
        se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        sv += (double)b[i] * b[i];
    }
    free(a);
    free(b);
    return sqrt(se / sv);
}

static void test_testdata(void **state)
{
    (void)state;
    const char *td = testdata();
    if (!td) {
        skip();
    }
    /* The README's table: file, then the count of each type in it. */
    static const struct {
        const char *file;
        int f32, q8_0, q4_0, q4_k, q5_k, q6_k;
        double tol; /* relative RMS error of the quantized weights vs F32 */
    } files[] = {
        {"gguf/tiny256-F32.gguf", 39, 0, 0, 0, 0, 0, 0},
        {"gguf/tiny256-Q8_0.gguf", 9, 30, 0, 0, 0, 0, 0.01},
        {"gguf/tiny256-Q4_0.gguf", 9, 0, 29, 0, 0, 1, 0.15},
        {"gguf/tiny256-Q4_K_M.gguf", 9, 0, 0, 25, 0, 5, 0.12},
        {"gguf/tiny256-Q5_K_M.gguf", 9, 0, 0, 0, 25, 5, 0.06},
        {"gguf/tiny256-Q6_K.gguf", 9, 0, 0, 0, 0, 30, 0.03},
    };
    fy_gguf *ref = open_td(td, files[0].file);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        fy_gguf *g = open_td(td, files[i].file);
        check_llama(g, 256, 768, 4, 128, 32);
        check_tensors(g, 4, 256, 768, 128);
        int count[FY_DT_COUNT] = {0};
        double worst = 0;
        for (uint64_t k = 0; k < g->n_tensors; k++) {
            const fy_gguf_tensor *t = &g->t[k];
            count[t->type]++;
            if (t->type != FY_DT_F32) {
                double e = rel_rms(t, fy_gguf_tensor_find(ref, t->name));
                worst = e > worst ? e : worst;
            }
        }
        if (count[FY_DT_F32] != files[i].f32 || count[FY_DT_Q8_0] != files[i].q8_0 ||
            count[FY_DT_Q4_0] != files[i].q4_0 || count[FY_DT_Q4_K] != files[i].q4_k ||
            count[FY_DT_Q5_K] != files[i].q5_k || count[FY_DT_Q6_K] != files[i].q6_k) {
            fail_msg("%s: tensor types differ from the README's table", files[i].file);
        }
        if (worst > files[i].tol) {
            fail_msg("%s: a tensor is %.4f (relative RMS) from the F32 file's, over %.3f",
                     files[i].file, worst, files[i].tol);
        }
        printf("%s: worst relative RMS error vs F32 %.4f\n", files[i].file, worst);
        fy_gguf_free(g);
    }
    fy_gguf_free(ref);

    fy_gguf *g = open_td(td, "models/stories260K/stories260K.gguf");
    check_llama(g, 64, 172, 5, 2048, 8);
    check_tensors(g, 5, 64, 172, 32);
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        assert_int_equal(g->t[k].type, FY_DT_F32);
    }
    fy_gguf_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),    cmocka_unit_test(test_valid_variants),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_open),
        cmocka_unit_test(test_testdata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
