// sampling.cuh: sampling helpers on device logits. The per-logit transforms
// (temperature, repetition, presence/frequency) are kernels/math.h's.
#ifndef FY_CUDA_SAMPLING_CUH
#define FY_CUDA_SAMPLING_CUH

#include "kernels/cuda/cuda_api.h"

#include <cuda_runtime.h>
#include <stdint.h>

// out[r] = argmax of logits row r (VOCAB floats), lowest index on ties.
cudaError_t fy_argmax_launch(cudaStream_t stream, int32_t *out, const float *logits, int n,
                             int vocab);

// In place on N rows: penalties for tokens with counts[r][v] > 0 (COUNTS may
// be NULL), then temperature, then top-k, then top-p (the semantics are in
// kernels/cuda/cuda_api.h). PARAMS: N rows in device memory.
cudaError_t fy_sample_filter_launch(cudaStream_t stream, float *logits, const int32_t *counts,
                                    const fy_sample_params *params, int n, int vocab);

#endif
