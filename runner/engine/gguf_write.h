/* gguf_write.h: writing GGUF v3 files (gguf.h describes the layout).
 *
 * The writer collects metadata and tensor infos in memory, then streams the
 * file: fy_gguf_w_begin() writes the header (every tensor's offset is known
 * from its type and shape), fy_gguf_w_tensor_data() appends each tensor's
 * bytes in the order the tensors were added, and fy_gguf_w_commit() pads,
 * fsyncs and renames the file into place (common/fsutil.h's atomic file), so
 * a reader never sees half a model. Tensor data can be produced one tensor
 * at a time: nothing but the metadata is held.
 *
 * The file is what llama.cpp's gguf writer produces: little-endian, keys in
 * the order added, general.alignment written when it is not 32, each
 * tensor's data at a multiple of the alignment, zero padding. */
#ifndef FY_ENGINE_GGUF_WRITE_H
#define FY_ENGINE_GGUF_WRITE_H

#include "kernels/backend.h"
#include "runner/engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fy_gguf_writer fy_gguf_writer;

/* A new writer whose data section is aligned to ALIGNMENT (a power of two,
 * 0 = 32). Returns 0, FY_EINVAL or FY_ENOMEM. */
int fy_gguf_w_new(uint32_t alignment, fy_gguf_writer **out);
void fy_gguf_w_free(fy_gguf_writer *w); /* aborts an uncommitted file */

/* Metadata. A key may be added once (FY_EEXIST otherwise); keys and strings
 * are copied. Each returns 0, FY_EINVAL (empty key), FY_EEXIST or FY_ENOMEM. */
int fy_gguf_w_u32(fy_gguf_writer *w, const char *key, uint32_t v);
int fy_gguf_w_i32(fy_gguf_writer *w, const char *key, int32_t v);
int fy_gguf_w_f32(fy_gguf_writer *w, const char *key, float v);
int fy_gguf_w_bool(fy_gguf_writer *w, const char *key, int v);
int fy_gguf_w_str(fy_gguf_writer *w, const char *key, const char *s, size_t len);
/* Arrays of N strings (S[i], LEN[i] bytes), f32s or i32s. */
int fy_gguf_w_arr_str(fy_gguf_writer *w, const char *key, const char *const *s, const size_t *len,
                      size_t n);
int fy_gguf_w_arr_f32(fy_gguf_writer *w, const char *key, const float *v, size_t n);
int fy_gguf_w_arr_i32(fy_gguf_writer *w, const char *key, const int32_t *v, size_t n);

/* Any value read from a GGUF file (gguf.h's view), arrays of arrays
 * included: how metadata is carried from one file to another. */
int fy_gguf_w_copy(fy_gguf_writer *w, const char *key, const fy_gguf_val *v);

/* Declares a tensor: NAME (1..64 bytes, unique), TYPE, N_DIMS (1..4) dims
 * with dims[0] the row length (a multiple of TYPE's block). Returns 0,
 * FY_EINVAL, FY_EEXIST, FY_ETOOBIG or FY_ENOMEM. */
int fy_gguf_w_tensor(fy_gguf_writer *w, const char *name, fy_dtype type, int n_dims,
                     const uint64_t *dims);
/* Bytes of tensor I's data. */
uint64_t fy_gguf_w_tensor_bytes(const fy_gguf_writer *w, size_t i);

/* Opens PATH (through a temporary file) and writes the header and metadata.
 * After it no key or tensor may be added. Returns 0 or an FY_E* code with
 * ERR saying why. */
int fy_gguf_w_begin(fy_gguf_writer *w, const char *path, char *err, size_t errlen);
/* Appends the data of the next tensor: exactly fy_gguf_w_tensor_bytes()
 * bytes, possibly over several calls (the tensor is done when they add up). */
int fy_gguf_w_tensor_data(fy_gguf_writer *w, const void *data, size_t len, char *err,
                          size_t errlen);
/* Checks every tensor got its bytes, then makes the file durable and puts it
 * at PATH. On failure nothing is left at PATH's temporary name. */
int fy_gguf_w_commit(fy_gguf_writer *w, char *err, size_t errlen);

#endif
