/* module.h: the boundary between ferry and its CUDA backend module.
 *
 * The CUDA code (the .cu files of kernels/cuda/) is built as a module of its own,
 * libferry_cuda.so, linked with libcudart, libcublas(Lt) and libnccl (over
 * 500 MB of libraries that cost a process ~200 MB of resident memory when
 * mapped). The binaries do not link it: kernels/cuda_loader.c dlopen()s it
 * the first time a CUDA function is called (--device cuda, a test), so a
 * runner on the CPU, or asked for --version, never maps those libraries.
 *
 * The module exports one symbol, FY_CUDA_MODULE_SYMBOL, a function returning
 * the table below; everything else in it is hidden. The loader refuses a
 * module whose version or shared struct sizes differ from its own (a module
 * left over from another build), so a call never crosses a mismatched ABI.
 * The functions are those of kernels/backend.h and kernels/cuda/cuda_api.h
 * under the same names: see there for their contracts. */
#ifndef FY_CUDA_MODULE_H
#define FY_CUDA_MODULE_H

#include "kernels/backend.h"
#include "kernels/cuda/cuda_api.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The module's file name, looked for in <dir of the executable>/../lib
 * unless FY_CUDA_MODULE_ENV names another path. */
#define FY_CUDA_MODULE_FILE    "libferry_cuda.so"
#define FY_CUDA_MODULE_ENV     "FERRY_CUDA_LIB"
#define FY_CUDA_MODULE_SYMBOL  "fy_cuda_module_v1"
#define FY_CUDA_MODULE_VERSION 1

typedef struct fy_cuda_module {
    int version; /* FY_CUDA_MODULE_VERSION */
    /* sizeof the structs that cross the boundary, as the module saw them */
    size_t info_size, ops_size, backend_size, comm_size, params_size;

    int (*probe)(fy_backend_info *info);
    int (*axpy)(size_t n, float a, const float *x, float *y, char *msg, size_t msglen);
    int (*backend_create)(int device, fy_backend **out, char *err, size_t errlen);
    int (*comm_create)(fy_backend *rank0, int n, fy_comm **out, char *err, size_t errlen);
    void (*sample_filter)(fy_backend *be, float *logits, const int32_t *counts,
                          const fy_sample_params *params, int n, int vocab);
    size_t (*kv_budget)(fy_backend *be, double fraction);
    int (*attention_variant)(fy_backend *be, int max_ctx, int n_tokens, int n_heads);
    int (*tp_create)(int n, const int *devices, fy_cuda_tp **out, char *err, size_t errlen);
    void (*tp_destroy)(fy_cuda_tp *tp);
    int (*tp_size)(const fy_cuda_tp *tp);
    fy_backend *(*tp_backend)(fy_cuda_tp *tp, int r);
    void (*tp_all_reduce)(fy_backend *be, float *buf, size_t n);
    int (*tp_shard)(fy_backend *be, const fy_tensor *w, int column, int rank, int n, fy_tensor *out,
                    char *err, size_t errlen);
} fy_cuda_module;

/* The type of FY_CUDA_MODULE_SYMBOL: returns the module's table (static,
 * never NULL). */
typedef const fy_cuda_module *(*fy_cuda_module_fn)(void);

#ifdef __cplusplus
}
#endif

#endif
