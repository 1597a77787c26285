/* gguf.c: the GGUF reader (see gguf.h).
 *
 * One pass over the file with a bounds-checked cursor: the header, every
 * metadata value (validated, and indexed where it holds strings or arrays),
 * every tensor info; then the checks that need all of them (alignment, the
 * data section, extents, duplicates, overlaps). Every length read from the
 * file is compared with what is left of it before it is used, and every
 * allocation is bounded by what the bytes already read can describe. */
#include "runner/engine/gguf.h"

#include "common/err.h"
#include "common/fsutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GG_HEADER_BYTES 24
/* The smallest encodings, which bound counts by the file's size: a kv with
 * a 1-byte key and a u8 value; a tensor info with a 1-byte name and 1 dim;
 * an array element that is an empty string or an empty array. */
#define GG_MIN_KV     (8 + 1 + 4 + 1)
#define GG_MIN_TENSOR (8 + 1 + 4 + 8 + 4 + 8)
#define GG_MIN_STR    8
#define GG_MIN_ARR    12

/* ggml's tensor types: its name for each id, and the fy_dtype ferry computes
 * with (-1: a type ferry refuses by name). Ids without a name are unknown. */
static const struct {
    const char *name;
    int q;
} gg_ggml_types[] = {
    [0] = {"F32", FY_DT_F32},    [1] = {"F16", FY_DT_F16},    [2] = {"Q4_0", FY_DT_Q4_0},
    [3] = {"Q4_1", FY_DT_Q4_1},  [4] = {"Q4_2", -1},          [5] = {"Q4_3", -1},
    [6] = {"Q5_0", FY_DT_Q5_0},  [7] = {"Q5_1", FY_DT_Q5_1},  [8] = {"Q8_0", FY_DT_Q8_0},
    [9] = {"Q8_1", -1},          [10] = {"Q2_K", -1},         [11] = {"Q3_K", -1},
    [12] = {"Q4_K", FY_DT_Q4_K}, [13] = {"Q5_K", FY_DT_Q5_K}, [14] = {"Q6_K", FY_DT_Q6_K},
    [15] = {"Q8_K", -1},         [16] = {"IQ2_XXS", -1},      [17] = {"IQ2_XS", -1},
    [18] = {"IQ3_XXS", -1},      [19] = {"IQ1_S", -1},        [20] = {"IQ4_NL", -1},
    [21] = {"IQ3_S", -1},        [22] = {"IQ2_S", -1},        [23] = {"IQ4_XS", -1},
    [24] = {"I8", -1},           [25] = {"I16", -1},          [26] = {"I32", -1},
    [27] = {"I64", -1},          [28] = {"F64", -1},          [29] = {"IQ1_M", -1},
    [30] = {"BF16", FY_DT_BF16}, [31] = {"Q4_0_4_4", -1},     [32] = {"Q4_0_4_8", -1},
    [33] = {"Q4_0_8_8", -1},     [34] = {"TQ1_0", -1},        [35] = {"TQ2_0", -1},
    [36] = {"IQ4_NL_4_4", -1},   [37] = {"IQ4_NL_4_8", -1},   [38] = {"IQ4_NL_8_8", -1},
    [39] = {"MXFP4", -1},
};
#define GG_NGGML (sizeof gg_ggml_types / sizeof gg_ggml_types[0])

static const struct {
    const char *name;
    uint32_t size; /* bytes of one value; 0: variable (string, array) */
} gg_types[FY_GGUF_NTYPES] = {
    [FY_GGUF_U8] = {"u8", 1},     [FY_GGUF_I8] = {"i8", 1},     [FY_GGUF_U16] = {"u16", 2},
    [FY_GGUF_I16] = {"i16", 2},   [FY_GGUF_U32] = {"u32", 4},   [FY_GGUF_I32] = {"i32", 4},
    [FY_GGUF_F32] = {"f32", 4},   [FY_GGUF_BOOL] = {"bool", 1}, [FY_GGUF_STR] = {"string", 0},
    [FY_GGUF_ARR] = {"array", 0}, [FY_GGUF_U64] = {"u64", 8},   [FY_GGUF_I64] = {"i64", 8},
    [FY_GGUF_F64] = {"f64", 8},
};

const char *fy_gguf_type_name(fy_gguf_type t)
{
    return (unsigned)t < FY_GGUF_NTYPES ? gg_types[t].name : "?";
}

const char *fy_gguf_ggml_type_name(uint32_t ggml_type)
{
    return ggml_type < GG_NGGML ? gg_ggml_types[ggml_type].name : NULL;
}

uint32_t fy_gguf_ggml_type_id(fy_dtype type)
{
    for (uint32_t i = 0; i < GG_NGGML; i++) {
        if (gg_ggml_types[i].name && gg_ggml_types[i].q == (int)type) {
            return i;
        }
    }
    return UINT32_MAX;
}

/* --- Little-endian decoding ------------------------------------------------------ */

static uint64_t gg_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

/* Decodes a fixed-size value of type T at P (T's size bytes). */
static void gg_scalar(fy_gguf_type t, const uint8_t *p, fy_gguf_val *v)
{
    uint64_t x = gg_le(p, (int)gg_types[t].size);
    v->type = t;
    switch (t) {
    case FY_GGUF_I8:
        v->i = (int8_t)x;
        break;
    case FY_GGUF_I16:
        v->i = (int16_t)x;
        break;
    case FY_GGUF_I32:
        v->i = (int32_t)x;
        break;
    case FY_GGUF_I64:
        v->i = (int64_t)x;
        break;
    case FY_GGUF_F32: {
        uint32_t u = (uint32_t)x;
        float f;
        memcpy(&f, &u, sizeof f);
        v->f = f;
        break;
    }
    case FY_GGUF_F64:
        memcpy(&v->f, &x, sizeof v->f);
        break;
    case FY_GGUF_BOOL:
        v->b = x != 0;
        break;
    default:
        v->u = x;
        break;
    }
}

/* --- The parse context ------------------------------------------------------------ */

typedef struct {
    fy_gguf *g;
    uint64_t pos; /* cursor into g->file */
    char *err;
    size_t errlen;
} gg_ctx;

/* FY_EPARSE (or RC) with "LABEL: message". */
static int gg_fail_rc(gg_ctx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int gg_fail_rc(gg_ctx *c, int rc, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fy_fail(c->err, c->errlen, rc, "%s: %s", c->g->label, msg);
}
#define gg_fail(c, ...) gg_fail_rc(c, FY_EPARSE, __VA_ARGS__)

static uint64_t gg_left(const gg_ctx *c)
{
    return (uint64_t)c->g->len - c->pos;
}

/* Reads an N-byte little-endian integer; -1 when fewer than N bytes are left. */
static int gg_read(gg_ctx *c, int n, uint64_t *v)
{
    if (gg_left(c) < (uint64_t)n) {
        return -1;
    }
    *v = gg_le(c->g->file + c->pos, n);
    c->pos += (uint64_t)n;
    return 0;
}

/* Reads a string's length and skips its bytes, setting *S. WHAT names it in
 * messages. */
static int gg_string(gg_ctx *c, fy_gguf_str *s, const char *what)
{
    uint64_t n;
    if (gg_read(c, 8, &n) < 0) {
        return gg_fail(c, "%s: truncated (file ends inside its length)", what);
    }
    if (n > gg_left(c)) {
        return gg_fail(c,
                       "%s: string length %llu runs past the end of the file (%llu bytes left; "
                       "truncated?)",
                       what, (unsigned long long)n, (unsigned long long)gg_left(c));
    }
    s->p = (const char *)c->g->file + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

/* Reads a key or tensor name and sets *OUT to a NUL-terminated copy;
 * refused when empty, longer than MAX or holding a NUL byte. */
static int gg_read_name(gg_ctx *c, uint64_t max, const char *what, const char **out)
{
    fy_gguf_str s;
    int rc = gg_string(c, &s, what);
    if (rc < 0) {
        return rc;
    }
    if (s.len == 0) {
        return gg_fail(c, "%s: empty", what);
    }
    if (s.len > max) {
        return gg_fail(c, "%s: %llu bytes long (at most %llu)", what, (unsigned long long)s.len,
                       (unsigned long long)max);
    }
    if (memchr(s.p, 0, s.len)) {
        return gg_fail(c, "%s '%.*s': contains a NUL byte", what, (int)strnlen(s.p, 64), s.p);
    }
    if (!(*out = strndup(s.p, s.len))) {
        return gg_fail_rc(c, FY_ENOMEM, "%s: out of memory", what);
    }
    return 0;
}

/* Reads a value of type T (already read) into V. DEPTH counts the arrays
 * around it; only top-level arrays (DEPTH 0) index their elements. KEY
 * names it in messages. */
static int gg_value(gg_ctx *c, uint64_t t, int depth, fy_gguf_val *v, const char *key)
{
    if (t >= FY_GGUF_NTYPES) {
        return gg_fail(c, "key '%s': unknown value type %llu", key, (unsigned long long)t);
    }
    v->type = (fy_gguf_type)t;
    uint32_t size = gg_types[t].size;
    if (size) {
        if (gg_left(c) < size) {
            return gg_fail(c, "key '%s': truncated (file ends inside its %s value)", key,
                           gg_types[t].name);
        }
        const uint8_t *p = c->g->file + c->pos;
        if (t == FY_GGUF_BOOL && *p > 1) {
            return gg_fail(c, "key '%s': bool value %u is neither 0 nor 1", key, *p);
        }
        gg_scalar(v->type, p, v);
        c->pos += size;
        return 0;
    }
    if (t == FY_GGUF_STR) {
        char what[320];
        snprintf(what, sizeof what, "key '%s'", key);
        return gg_string(c, &v->s, what);
    }
    uint64_t et, n;
    if (gg_read(c, 4, &et) < 0 || gg_read(c, 8, &n) < 0) {
        return gg_fail(c, "key '%s': truncated (file ends inside an array header)", key);
    }
    if (et >= FY_GGUF_NTYPES) {
        return gg_fail(c, "key '%s': array of unknown value type %llu", key,
                       (unsigned long long)et);
    }
    if (et == FY_GGUF_ARR && depth + 1 >= FY_GGUF_MAX_DEPTH) {
        return gg_fail(c, "key '%s': arrays nested more than %d deep", key, FY_GGUF_MAX_DEPTH);
    }
    uint32_t esize = gg_types[et].size;
    uint64_t min = esize ? esize : et == FY_GGUF_STR ? GG_MIN_STR : GG_MIN_ARR;
    if (n > gg_left(c) / min) {
        return gg_fail(c,
                       "key '%s': array of %llu %s runs past the end of the file (%llu bytes "
                       "left; truncated?)",
                       key, (unsigned long long)n, gg_types[et].name,
                       (unsigned long long)gg_left(c));
    }
    fy_gguf_arr *a = &v->a;
    a->type = (fy_gguf_type)et;
    a->n = n;
    a->data = c->g->file + c->pos;
    a->off = NULL;
    if (esize) {
        if (et == FY_GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++) {
                if (a->data[i] > 1) {
                    return gg_fail(c, "key '%s': element %llu: bool value %u is neither 0 nor 1",
                                   key, (unsigned long long)i, a->data[i]);
                }
            }
        }
        c->pos += n * esize;
        return 0;
    }
    /* Strings or arrays: each element is read (and so validated); a
     * top-level array remembers where each one starts. n * 8 bytes is at
     * most the bytes the elements take. */
    uint64_t *off = NULL;
    if (depth == 0 && n > 0) {
        if (!(off = malloc((size_t)n * sizeof *off))) {
            return gg_fail_rc(c, FY_ENOMEM, "key '%s': out of memory for %llu elements", key,
                              (unsigned long long)n);
        }
        a->off = off;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (off) {
            off[i] = (uint64_t)(c->g->file + c->pos - a->data);
        }
        fy_gguf_val e;
        int rc = gg_value(c, et, depth + 1, &e, key);
        if (rc < 0) {
            return rc; /* OFF is freed with the kv it belongs to */
        }
    }
    return 0;
}

/* --- Metadata ----------------------------------------------------------------------- */

static int gg_cmp_kv(const void *a, const void *b)
{
    return strcmp((*(const fy_gguf_kv *const *)a)->key, (*(const fy_gguf_kv *const *)b)->key);
}

static int gg_cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const fy_gguf_tensor *const *)a)->name,
                  (*(const fy_gguf_tensor *const *)b)->name);
}

static int gg_cmp_tensor_offset(const void *a, const void *b)
{
    const fy_gguf_tensor *x = *(const fy_gguf_tensor *const *)a;
    const fy_gguf_tensor *y = *(const fy_gguf_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static int gg_read_kvs(gg_ctx *c)
{
    fy_gguf *g = c->g;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        char what[64];
        snprintf(what, sizeof what, "key %llu", (unsigned long long)i);
        int rc = gg_read_name(c, FY_GGUF_MAX_KEY, what, &g->kv[i].key);
        if (rc < 0) {
            return rc;
        }
        uint64_t t;
        if (gg_read(c, 4, &t) < 0) {
            return gg_fail(c, "key '%s': truncated (file ends before its value type)",
                           g->kv[i].key);
        }
        if ((rc = gg_value(c, t, 0, &g->kv[i].v, g->kv[i].key)) < 0) {
            return rc;
        }
    }
    if (!(g->kv_by_key = malloc((size_t)(g->n_kv ? g->n_kv : 1) * sizeof *g->kv_by_key))) {
        return gg_fail_rc(c, FY_ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        g->kv_by_key[i] = &g->kv[i];
    }
    qsort(g->kv_by_key, (size_t)g->n_kv, sizeof *g->kv_by_key, gg_cmp_kv);
    for (uint64_t i = 1; i < g->n_kv; i++) {
        if (strcmp(g->kv_by_key[i]->key, g->kv_by_key[i - 1]->key) == 0) {
            return gg_fail(c, "key '%s': duplicate key", g->kv_by_key[i]->key);
        }
    }
    return 0;
}

static int gg_alignment(gg_ctx *c)
{
    fy_gguf *g = c->g;
    const fy_gguf_kv *kv = fy_gguf_find(g, "general.alignment");
    g->alignment = FY_GGUF_DEFAULT_ALIGNMENT;
    if (!kv) {
        return 0;
    }
    if (kv->v.type != FY_GGUF_U32) {
        return gg_fail(c, "key 'general.alignment': is %s, must be u32", gg_types[kv->v.type].name);
    }
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1))) {
        return gg_fail(c, "key 'general.alignment': %llu is not a nonzero power of two",
                       (unsigned long long)kv->v.u);
    }
    g->alignment = (uint32_t)kv->v.u;
    return 0;
}

/* --- Tensor infos -------------------------------------------------------------------- */

/* Reads tensor info I: name, dims, type, offset, and checks what needs
 * nothing else (n_dims, dims, type, row length, sizes). */
static int gg_tensor_info(gg_ctx *c, uint64_t i, fy_gguf_tensor *t)
{
    char what[64];
    snprintf(what, sizeof what, "tensor %llu: name", (unsigned long long)i);
    int rc = gg_read_name(c, FY_GGUF_MAX_NAME, what, &t->name);
    if (rc < 0) {
        return rc;
    }
    const char *nm = t->name;
    uint64_t nd, ty, off;
    if (gg_read(c, 4, &nd) < 0) {
        return gg_fail(c, "tensor '%s': truncated tensor info (file ends before n_dims)", nm);
    }
    if (nd == 0 || nd > FY_GGUF_MAX_DIMS) {
        return gg_fail(c, "tensor '%s': n_dims %llu (must be 1 to %d)", nm, (unsigned long long)nd,
                       FY_GGUF_MAX_DIMS);
    }
    t->n_dims = (int)nd;
    uint64_t n = 1;
    for (int d = 0; d < FY_GGUF_MAX_DIMS; d++) {
        t->dims[d] = 1;
    }
    for (int d = 0; d < t->n_dims; d++) {
        if (gg_read(c, 8, &t->dims[d]) < 0) {
            return gg_fail(c, "tensor '%s': truncated tensor info (file ends inside dims)", nm);
        }
        if (t->dims[d] == 0) {
            return gg_fail(c, "tensor '%s': dims[%d] is 0", nm, d);
        }
        if (t->dims[d] > (uint64_t)INT64_MAX / n) {
            return gg_fail(c, "tensor '%s': element count overflows (dims[%d] = %llu)", nm, d,
                           (unsigned long long)t->dims[d]);
        }
        n *= t->dims[d];
    }
    t->n_elems = n;
    t->n_rows = n / t->dims[0];
    if (gg_read(c, 4, &ty) < 0 || gg_read(c, 8, &off) < 0) {
        return gg_fail(c, "tensor '%s': truncated tensor info (file ends before type/offset)", nm);
    }
    t->ggml_type = (uint32_t)ty;
    t->offset = off; /* relative until the data section is known */
    const char *tn = fy_gguf_ggml_type_name(t->ggml_type);
    if (!tn) {
        return gg_fail(c, "tensor '%s': unknown type %u", nm, t->ggml_type);
    }
    if (gg_ggml_types[ty].q < 0) {
        return gg_fail(c,
                       "tensor '%s': type %s is not supported (ferry reads F32, F16, BF16, "
                       "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K)",
                       nm, tn);
    }
    t->type = (fy_dtype)gg_ggml_types[ty].q;
    if (t->dims[0] % fy_dtype_block_weights(t->type)) {
        return gg_fail(c,
                       "tensor '%s': row length %llu (dims[0]) is not a multiple of %s's "
                       "%u-weight block",
                       nm, (unsigned long long)t->dims[0], tn, fy_dtype_block_weights(t->type));
    }
    if (fy_dtype_bytes(t->type, t->dims[0], &t->row_bytes) < 0 ||
        t->row_bytes > UINT64_MAX / t->n_rows) {
        return gg_fail(c, "tensor '%s': byte size overflows", nm);
    }
    t->n_bytes = t->row_bytes * t->n_rows;
    if (off % c->g->alignment) {
        return gg_fail(c, "tensor '%s': offset %llu is not a multiple of the alignment %u", nm,
                       (unsigned long long)off, c->g->alignment);
    }
    return 0;
}

/* With every info read: the data section, each extent, duplicate names and
 * overlaps. */
static int gg_tensor_layout(gg_ctx *c)
{
    fy_gguf *g = c->g;
    uint64_t a = g->alignment, end = c->pos;
    uint64_t start = end % a ? end + (a - end % a) : end; /* end < len, a < 2^32: no overflow */
    g->data_start = start;
    if (g->n_tensors > 0 && start > g->len) {
        return gg_fail(c,
                       "truncated: the data section starts at byte %llu, past the end of the "
                       "file (%zu bytes)",
                       (unsigned long long)start, g->len);
    }
    uint64_t data_len = start <= g->len ? g->len - start : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        fy_gguf_tensor *t = &g->t[i];
        if (t->offset > data_len || t->n_bytes > data_len - t->offset) {
            return gg_fail(c,
                           "tensor '%s': data at offset %llu + %llu bytes runs past the end of "
                           "the data section (%llu bytes; truncated?)",
                           t->name, (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                           (unsigned long long)data_len);
        }
        t->offset += start;
        t->data = g->file + t->offset;
    }
    size_t n = (size_t)(g->n_tensors ? g->n_tensors : 1);
    const fy_gguf_tensor **by = malloc(n * sizeof *by);
    if (!by || !(g->t_by_name = malloc(n * sizeof *g->t_by_name))) {
        free(by);
        return gg_fail_rc(c, FY_ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        g->t_by_name[i] = by[i] = &g->t[i];
    }
    int rc = 0;
    qsort(g->t_by_name, (size_t)g->n_tensors, sizeof *by, gg_cmp_tensor_name);
    for (uint64_t i = 1; i < g->n_tensors && rc == 0; i++) {
        if (strcmp(g->t_by_name[i]->name, g->t_by_name[i - 1]->name) == 0) {
            rc = gg_fail(c, "tensor '%s': duplicate tensor name", g->t_by_name[i]->name);
        }
    }
    /* Every tensor has at least one byte, so sorted by offset each must
     * start at or after the end of the one before. */
    qsort(by, (size_t)g->n_tensors, sizeof *by, gg_cmp_tensor_offset);
    for (uint64_t i = 1; i < g->n_tensors && rc == 0; i++) {
        if (by[i]->offset < by[i - 1]->offset + by[i - 1]->n_bytes) {
            rc = gg_fail(c, "tensor '%s': its bytes overlap tensor '%s'", by[i]->name,
                         by[i - 1]->name);
        }
    }
    free(by);
    return rc;
}

/* --- Header and entry points ---------------------------------------------------------- */

static int gg_header(gg_ctx *c)
{
    fy_gguf *g = c->g;
    /* The magic and the version are judged as soon as they are there, so a
     * short v1 or foreign file is named for what it is. */
    if (g->len >= 4 && memcmp(g->file, "GGUF", 4) != 0) {
        return gg_fail(c, "not a GGUF file (it starts with %02x %02x %02x %02x, not 'GGUF')",
                       g->file[0], g->file[1], g->file[2], g->file[3]);
    }
    uint64_t v = 0, nt, nkv;
    c->pos = 4;
    if (g->len >= 8) {
        gg_read(c, 4, &v);
    }
    if (v == 1) {
        return gg_fail(c, "GGUF version 1 is not supported (ferry reads versions 2 and 3; "
                          "convert the file with a current llama.cpp)");
    }
    if (v > 0xffff && (v & 0xffff) == 0) {
        return gg_fail(c, "big-endian GGUF (version field 0x%08llx) is not supported",
                       (unsigned long long)v);
    }
    if (g->len < GG_HEADER_BYTES) {
        return gg_fail(c, "truncated header: the file is %zu bytes, a GGUF header is %d", g->len,
                       GG_HEADER_BYTES);
    }
    if (v != 2 && v != 3) {
        return gg_fail(c, "GGUF version %llu is not supported (ferry reads versions 2 and 3)",
                       (unsigned long long)v);
    }
    g->version = (uint32_t)v;
    gg_read(c, 8, &nt);
    gg_read(c, 8, &nkv);
    uint64_t left = gg_left(c);
    if (nt > FY_GGUF_MAX_TENSORS || nt > left / GG_MIN_TENSOR) {
        return gg_fail(c,
                       "header: tensor count %llu is more than a %zu-byte file can hold "
                       "(truncated or corrupt?)",
                       (unsigned long long)nt, g->len);
    }
    if (nkv > FY_GGUF_MAX_KV || nkv > (left - nt * GG_MIN_TENSOR) / GG_MIN_KV) {
        return gg_fail(c,
                       "header: metadata count %llu is more than a %zu-byte file can hold "
                       "(truncated or corrupt?)",
                       (unsigned long long)nkv, g->len);
    }
    g->n_tensors = nt;
    g->n_kv = nkv;
    g->kv = calloc((size_t)(nkv ? nkv : 1), sizeof *g->kv);
    g->t = calloc((size_t)(nt ? nt : 1), sizeof *g->t);
    if (!g->kv || !g->t) {
        return gg_fail_rc(c, FY_ENOMEM, "out of memory for %llu keys and %llu tensors",
                          (unsigned long long)nkv, (unsigned long long)nt);
    }
    return 0;
}

int fy_gguf_parse(const uint8_t *file, size_t len, const char *label, fy_gguf **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    fy_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->label = strdup(label ? label : "GGUF"))) {
        free(g);
        return fy_fail(err, errlen, FY_ENOMEM, "%s: out of memory", label ? label : "GGUF");
    }
    g->file = file;
    g->len = len;
    gg_ctx c = {.g = g, .err = err, .errlen = errlen};
    int rc;
    if ((rc = gg_header(&c)) < 0 || (rc = gg_read_kvs(&c)) < 0 || (rc = gg_alignment(&c)) < 0) {
        goto out;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if ((rc = gg_tensor_info(&c, i, &g->t[i])) < 0) {
            goto out;
        }
    }
    rc = gg_tensor_layout(&c);
out:
    if (rc < 0) {
        fy_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int fy_gguf_open(const char *path, fy_gguf **out, char *err, size_t errlen)
{
    *out = NULL;
    void *map;
    size_t len;
    int rc = fy_file_map(path, &map, &len, err, errlen);
    if (rc < 0) {
        return rc;
    }
    /* An empty file has no mapping; it is parsed (and refused) as such. */
    static const uint8_t empty[1];
    if ((rc = fy_gguf_parse(map ? map : empty, len, path, out, err, errlen)) < 0) {
        fy_file_unmap(map, len);
        return rc;
    }
    (*out)->map = map;
    return 0;
}

void fy_gguf_free(fy_gguf *g)
{
    if (!g) {
        return;
    }
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) {
        free((char *)g->kv[i].key);
        if (g->kv[i].v.type == FY_GGUF_ARR) {
            free((uint64_t *)g->kv[i].v.a.off);
        }
    }
    for (uint64_t i = 0; g->t && i < g->n_tensors; i++) {
        free((char *)g->t[i].name);
    }
    fy_file_unmap(g->map, g->len);
    free(g->kv);
    free(g->t);
    free(g->kv_by_key);
    free(g->t_by_name);
    free(g->label);
    free(g);
}

/* --- Lookups and getters ------------------------------------------------------------- */

const fy_gguf_tensor *fy_gguf_tensor_find(const fy_gguf *g, const char *name)
{
    fy_gguf_tensor key = {.name = name};
    const fy_gguf_tensor *kp = &key;
    if (!g->t_by_name || g->n_tensors == 0) {
        return NULL;
    }
    const fy_gguf_tensor **hit =
        bsearch(&kp, g->t_by_name, (size_t)g->n_tensors, sizeof kp, gg_cmp_tensor_name);
    return hit ? *hit : NULL;
}

const fy_gguf_kv *fy_gguf_find(const fy_gguf *g, const char *key)
{
    fy_gguf_kv k = {.key = key};
    const fy_gguf_kv *kp = &k;
    if (!g->kv_by_key || g->n_kv == 0) {
        return NULL;
    }
    const fy_gguf_kv **hit = bsearch(&kp, g->kv_by_key, (size_t)g->n_kv, sizeof kp, gg_cmp_kv);
    return hit ? *hit : NULL;
}

/* Copies the value of KEY to *V when it has type T (and, for arrays,
 * elements of type ELEM unless ELEM is FY_GGUF_NTYPES): 0, FY_ENOENT or
 * FY_EPARSE as the getters in gguf.h say. */
static int gg_get(const fy_gguf *g, const char *key, fy_gguf_type t, fy_gguf_type elem,
                  fy_gguf_val *v, char *err, size_t errlen)
{
    const fy_gguf_kv *kv = fy_gguf_find(g, key);
    if (!kv) {
        return fy_fail(err, errlen, FY_ENOENT, "%s: key '%s' is missing", g->label, key);
    }
    int arr_ok = t != FY_GGUF_ARR || elem == FY_GGUF_NTYPES || kv->v.a.type == elem;
    if (kv->v.type == t && arr_ok) {
        *v = kv->v;
        return 0;
    }
    char want[32], have[32];
    if (t == FY_GGUF_ARR && elem != FY_GGUF_NTYPES) {
        snprintf(want, sizeof want, "an array of %s", gg_types[elem].name);
    } else {
        snprintf(want, sizeof want, "%s", gg_types[t].name);
    }
    if (kv->v.type == FY_GGUF_ARR) {
        snprintf(have, sizeof have, "an array of %s", gg_types[kv->v.a.type].name);
    } else {
        snprintf(have, sizeof have, "%s", gg_types[kv->v.type].name);
    }
    return fy_fail(err, errlen, FY_EPARSE, "%s: key '%s' is %s, not %s", g->label, key, have, want);
}

int fy_gguf_get_u32(const fy_gguf *g, const char *key, uint32_t *out, char *err, size_t errlen)
{
    fy_gguf_val v;
    int rc = gg_get(g, key, FY_GGUF_U32, FY_GGUF_NTYPES, &v, err, errlen);
    *out = rc == 0 ? (uint32_t)v.u : 0;
    return rc;
}

int fy_gguf_get_f32(const fy_gguf *g, const char *key, float *out, char *err, size_t errlen)
{
    fy_gguf_val v;
    int rc = gg_get(g, key, FY_GGUF_F32, FY_GGUF_NTYPES, &v, err, errlen);
    *out = rc == 0 ? (float)v.f : 0.0f;
    return rc;
}

int fy_gguf_get_str(const fy_gguf *g, const char *key, fy_gguf_str *out, char *err, size_t errlen)
{
    fy_gguf_val v = {.s = {"", 0}};
    int rc = gg_get(g, key, FY_GGUF_STR, FY_GGUF_NTYPES, &v, err, errlen);
    *out = v.s;
    return rc;
}

int fy_gguf_get_arr(const fy_gguf *g, const char *key, fy_gguf_type elem, fy_gguf_arr *out,
                    char *err, size_t errlen)
{
    fy_gguf_val v = {.a = {.n = 0}};
    int rc = gg_get(g, key, FY_GGUF_ARR, elem, &v, err, errlen);
    *out = v.a;
    return rc;
}

/* Bytes the (already validated) encoded value of type T at P takes. */
static uint64_t gg_encoded_size(fy_gguf_type t, const uint8_t *p)
{
    if (gg_types[t].size) {
        return gg_types[t].size;
    }
    if (t == FY_GGUF_STR) {
        return 8 + gg_le(p, 8);
    }
    fy_gguf_type et = (fy_gguf_type)gg_le(p, 4);
    uint64_t n = gg_le(p + 4, 8), at = 12;
    if (gg_types[et].size) {
        return at + n * gg_types[et].size;
    }
    for (uint64_t i = 0; i < n; i++) {
        at += gg_encoded_size(et, p + at);
    }
    return at;
}

int fy_gguf_arr_get(const fy_gguf_arr *a, uint64_t i, fy_gguf_val *out)
{
    if (i >= a->n) {
        return FY_EINVAL;
    }
    uint32_t es = gg_types[a->type].size;
    if (es) {
        gg_scalar(a->type, a->data + i * es, out);
        return 0;
    }
    const uint8_t *p = a->data;
    if (a->off) {
        p += a->off[i];
    } else {
        for (uint64_t k = 0; k < i; k++) {
            p += gg_encoded_size(a->type, p);
        }
    }
    out->type = a->type;
    if (a->type == FY_GGUF_STR) {
        out->s.len = gg_le(p, 8);
        out->s.p = (const char *)p + 8;
    } else {
        out->a.type = (fy_gguf_type)gg_le(p, 4);
        out->a.n = gg_le(p + 4, 8);
        out->a.data = p + 12;
        out->a.off = NULL;
    }
    return 0;
}
