/* gguf.h: GGUF files (llama.cpp's and Ollama's model format), mapped and
 * validated, with zero-copy views of their metadata and packed tensors.
 *
 * Layout (little-endian; ggml's docs/gguf.md): magic "GGUF", u32 version
 * (2 or 3 here; 1 used u32 counts and is refused), u64 tensor count, u64
 * metadata count; the metadata, each a string key, a u32 value type and the
 * value; the tensor infos, each a string name, u32 n_dims (1-4), n_dims u64
 * dims (dims[0] is the row length, the contiguous one), u32 ggml type and a
 * u64 offset into the data section; the data section at the next multiple
 * of general.alignment (a u32, default 32). A string is a u64 length and
 * that many bytes (no NUL); an array a u32 element type, a u64 count and the
 * elements, which may be arrays themselves.
 *
 * fy_gguf_parse() is a pure function of the file's bytes (the fuzzer hands
 * it anything); fy_gguf_open() maps a file read-only and parses it. Either
 * checks everything a reader relies on before returning: every length
 * against what is left of the file (so counts cannot make it allocate more
 * than a small multiple of the file's size), the version, each value type,
 * keys and tensor names (non-empty, no NUL byte, no duplicates; names of at
 * most FY_GGUF_MAX_NAME bytes), nesting depth, general.alignment (u32, a
 * nonzero power of two), each tensor's n_dims, dims (nonzero, products
 * without overflow), type (one ferry computes with), row length (a multiple
 * of the type's block), offset (aligned) and extent (inside the file, no
 * overlap with another tensor). Refusals return FY_EPARSE (FY_ENOMEM,
 * FY_EIO, FY_ENOENT where said) with a message in ERR that names the file,
 * the key or tensor, and what is wrong.
 *
 * Views point into the caller's buffer (parse) or the mapping (open) and
 * stay valid until fy_gguf_free(); nothing is copied but keys and tensor
 * names (NUL-terminated copies). Integers in views are decoded; strings and
 * array elements stay in the file's bytes (unaligned, little-endian), read
 * through fy_gguf_arr_get(). */
#ifndef FY_ENGINE_GGUF_H
#define FY_ENGINE_GGUF_H

#include "kernels/cpu/quant.h"

#include <stddef.h>
#include <stdint.h>

#define FY_GGUF_MAX_DIMS          4
#define FY_GGUF_MAX_NAME          64    /* tensor name bytes (the spec's limit) */
#define FY_GGUF_MAX_KEY           65535 /* key bytes (the spec's limit) */
#define FY_GGUF_MAX_DEPTH         8     /* arrays inside arrays inside ... */
#define FY_GGUF_MAX_TENSORS       (1u << 20)
#define FY_GGUF_MAX_KV            (1u << 20)
#define FY_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, numbered as in the file. */
typedef enum {
    FY_GGUF_U8 = 0,
    FY_GGUF_I8 = 1,
    FY_GGUF_U16 = 2,
    FY_GGUF_I16 = 3,
    FY_GGUF_U32 = 4,
    FY_GGUF_I32 = 5,
    FY_GGUF_F32 = 6,
    FY_GGUF_BOOL = 7,
    FY_GGUF_STR = 8,
    FY_GGUF_ARR = 9,
    FY_GGUF_U64 = 10,
    FY_GGUF_I64 = 11,
    FY_GGUF_F64 = 12,
    FY_GGUF_NTYPES
} fy_gguf_type;

/* A string in the file: LEN bytes at P, not NUL-terminated, not checked to
 * be UTF-8. */
typedef struct {
    const char *p;
    uint64_t len;
} fy_gguf_str;

/* An array: N elements of TYPE starting at DATA in the file. OFF indexes
 * the elements of top-level arrays of strings or arrays (element i starts at
 * DATA + OFF[i]), so fy_gguf_arr_get() is O(1) on them; it is NULL for fixed-
 * size elements and for arrays nested in arrays, where fy_gguf_arr_get()
 * walks from the first element (O(i); nesting is rare in practice). */
typedef struct {
    fy_gguf_type type;
    uint64_t n;
    const uint8_t *data;
    const uint64_t *off;
} fy_gguf_arr;

/* A decoded value: U for U8/U16/U32/U64, I for I8/I16/I32/I64, F for F32
 * (exactly) and F64, B for BOOL (0 or 1; the file's byte must be 0 or 1),
 * S for STR, A for ARR. */
typedef struct {
    fy_gguf_type type;
    union {
        uint64_t u;
        int64_t i;
        double f;
        int b;
        fy_gguf_str s;
        fy_gguf_arr a;
    };
} fy_gguf_val;

typedef struct {
    const char *key; /* NUL-terminated copy */
    fy_gguf_val v;
} fy_gguf_kv;

/* A tensor: a view of its packed bytes in the file. */
typedef struct {
    const char *name;   /* NUL-terminated copy */
    uint32_t ggml_type; /* the type id in the file */
    fy_dtype type;      /* the same type in ferry's terms */
    int n_dims;
    uint64_t dims[FY_GGUF_MAX_DIMS]; /* dims[0]: weights per row; dims past n_dims are 1 */
    uint64_t n_elems;                /* product of dims, <= INT64_MAX */
    uint64_t n_rows;                 /* n_elems / dims[0] */
    uint64_t row_bytes;              /* bytes of one row of blocks */
    uint64_t n_bytes;                /* n_rows * row_bytes */
    uint64_t offset;                 /* from the start of the file, a multiple of the alignment */
    const void *data;                /* file + offset */
} fy_gguf_tensor;

/* Every field is read-only for callers. */
typedef struct {
    char *label; /* the file's name in messages */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start; /* offset of the data section in the file */
    const uint8_t *file;
    size_t len;
    fy_gguf_kv *kv; /* in file order */
    uint64_t n_kv;
    fy_gguf_tensor *t; /* in file order */
    uint64_t n_tensors;
    /* private */
    const fy_gguf_kv **kv_by_key;
    const fy_gguf_tensor **t_by_name;
    void *map; /* fy_gguf_open's mapping (len bytes), or NULL */
} fy_gguf;

/* Parses FILE[0..LEN), which must stay alive and unchanged until
 * fy_gguf_free(); LABEL names the file in messages. Returns 0 and sets *OUT,
 * or FY_EPARSE / FY_ENOMEM with *OUT NULL and ERR saying why. */
int fy_gguf_parse(const uint8_t *file, size_t len, const char *label, fy_gguf **out, char *err,
                  size_t errlen);
/* Maps PATH read-only (common/fsutil.h's fy_file_map) and parses it, PATH
 * being the label. Returns 0, or fy_file_map()'s errors (FY_ENOENT: no such
 * file; FY_EIO: not a regular file, mmap failed; ...) or fy_gguf_parse()'s.
 * The mapping lives until fy_gguf_free(). */
int fy_gguf_open(const char *path, fy_gguf **out, char *err, size_t errlen);
/* Frees G and unmaps what fy_gguf_open() mapped; NULL is fine. */
void fy_gguf_free(fy_gguf *g);

/* The tensor called NAME, or NULL. */
const fy_gguf_tensor *fy_gguf_tensor_find(const fy_gguf *g, const char *name);
/* The metadata entry KEY, or NULL. */
const fy_gguf_kv *fy_gguf_find(const fy_gguf *g, const char *key);

/* Typed getters. Each returns 0 and fills *OUT; FY_ENOENT when KEY is
 * absent ("FILE: key 'K' is missing"); FY_EPARSE when it holds another type
 * ("FILE: key 'K' is an array of i32, not u32"). fy_gguf_get_arr checks the
 * element type too (ELEM; FY_GGUF_NTYPES accepts any). On failure *OUT is
 * zeroed (an empty string or array). */
int fy_gguf_get_u32(const fy_gguf *g, const char *key, uint32_t *out, char *err, size_t errlen);
int fy_gguf_get_f32(const fy_gguf *g, const char *key, float *out, char *err, size_t errlen);
int fy_gguf_get_str(const fy_gguf *g, const char *key, fy_gguf_str *out, char *err, size_t errlen);
int fy_gguf_get_arr(const fy_gguf *g, const char *key, fy_gguf_type elem, fy_gguf_arr *out,
                    char *err, size_t errlen);

/* Element I of A, decoded. Returns 0, or FY_EINVAL when I >= A->n. */
int fy_gguf_arr_get(const fy_gguf_arr *a, uint64_t i, fy_gguf_val *out);

/* "u8", ..., "string", "array", ...; "?" outside the enum. */
const char *fy_gguf_type_name(fy_gguf_type t);
/* ggml's name for a tensor type id ("Q4_K", "IQ4_XS"), or NULL when ggml
 * has none. */
const char *fy_gguf_ggml_type_name(uint32_t ggml_type);
/* ggml's type id for TYPE (the number a file stores), UINT32_MAX outside the enum. */
uint32_t fy_gguf_ggml_type_id(fy_dtype type);

#endif
