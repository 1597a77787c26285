/* safetensors.h: the safetensors file format's header, parsed and validated.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of
 * JSON ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
 * ..., "__metadata__": {"k": "v"}}), then the data section; offsets are
 * relative to the data section. fy_st_parse() is a pure function over the
 * file's bytes (the model loader passes the mapping; the fuzzer passes
 * anything), and checks everything a reader relies on: the length against
 * the buffer, the JSON shape, each dtype, each shape (non-negative, element
 * count without overflow), each [begin, end] inside the data section with
 * end - begin == elements * dtype size, and no two tensors overlapping. */
#ifndef FY_ENGINE_SAFETENSORS_H
#define FY_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define FY_ST_MAX_DIMS    8
#define FY_ST_MAX_HEADER  (100u << 20) /* the reference implementation's cap */
#define FY_ST_MAX_NAME    1024
#define FY_ST_MAX_TENSORS 1000000

/* Every dtype the format defines; FY_ST_F32/F16/BF16 are what models use. */
typedef enum {
    FY_ST_BOOL = 0,
    FY_ST_U8,
    FY_ST_I8,
    FY_ST_F8_E4M3,
    FY_ST_F8_E5M2,
    FY_ST_I16,
    FY_ST_U16,
    FY_ST_F16,
    FY_ST_BF16,
    FY_ST_I32,
    FY_ST_U32,
    FY_ST_F32,
    FY_ST_I64,
    FY_ST_U64,
    FY_ST_F64,
    FY_ST_NDTYPES
} fy_st_dtype;

typedef struct {
    char *name;
    fy_st_dtype dtype;
    int ndim;
    int64_t shape[FY_ST_MAX_DIMS];
    uint64_t n_elems;
    uint64_t begin, end; /* absolute byte offsets in the file (data section start added) */
} fy_st_tensor;

typedef struct {
    fy_st_tensor *t; /* sorted by name */
    int n;
    uint64_t data_start; /* 8 + header length */
} fy_st_header;

/* Parses FILE[0..LEN). On success fills OUT (free with fy_st_header_free) and
 * returns 0; otherwise returns FY_EPARSE (or FY_ENOMEM) and writes what is
 * wrong, naming the tensor when one is at fault, to ERR. */
int fy_st_parse(const uint8_t *file, size_t len, fy_st_header *out, char *err, size_t errlen);
void fy_st_header_free(fy_st_header *h);
/* The tensor called NAME, or NULL. */
const fy_st_tensor *fy_st_find(const fy_st_header *h, const char *name);

/* "F32", ... */
const char *fy_st_dtype_name(fy_st_dtype dt);
/* Bytes per element (F8 types: 1). */
size_t fy_st_dtype_size(fy_st_dtype dt);

#endif
