// module.cu: the one symbol libferry_cuda.so exports (kernels/cuda/module.h).
// The loader in ferry_kernels (kernels/cuda_loader.c) dlopen()s the module
// and calls it for the table of entry points; the linker's version script
// (kernels/cuda/module.map) hides every other symbol, so the module's own
// calls between its files never bind to the loader's wrappers of the same
// names.
#include "kernels/cuda/backend_c.cuh"
#include "kernels/cuda/module.h"

// In the order of fy_cuda_module's fields, one to a line.
// clang-format off
static const fy_cuda_module fy_cuda_module_table = {
    FY_CUDA_MODULE_VERSION,
    sizeof(fy_backend_info),
    sizeof(fy_backend_ops),
    sizeof(fy_backend),
    sizeof(fy_comm),
    sizeof(fy_sample_params),
    fy_cuda_probe,
    fy_cuda_axpy,
    fy_cuda_backend_create,
    fy_cuda_comm_create,
    fy_cuda_sample_filter,
    fy_cuda_kv_budget,
    fy_cuda_attention_variant,
    fy_cuda_tp_create,
    fy_cuda_tp_destroy,
    fy_cuda_tp_size,
    fy_cuda_tp_backend,
    fy_cuda_tp_all_reduce,
    fy_cuda_tp_shard,
};
// clang-format on

extern "C" __attribute__((visibility("default"))) const fy_cuda_module *fy_cuda_module_v1(void)
{
    return &fy_cuda_module_table;
}
