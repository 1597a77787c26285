// gemm.cu: cuBLAS GEMMs for the matmul op (block-type weights: qmatmul.cu).
//
// Row-major out[T][R] = x[T][C] . W[R][C]^T is, in cuBLAS's column-major
// terms, out^T (R x T, ld R) = op(W) . x^T with W seen as a C x R matrix
// (ld C) transposed: gemm(OP_T, OP_N, m=R, n=T, k=C, A=W, lda=C, B=x, ldb=C).
#include "kernels/cuda/gemm.cuh"

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/qmatmul.cuh"
#include "kernels/cuda/quant.cuh"

__global__ void fy_to_half_kernel(__half *dst, const float *src, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = __float2half_rn(src[i]);
    }
}

__global__ void fy_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = __float2bfloat16_rn(src[i]);
    }
}

// out[t][r] += bias[r]
__global__ void fy_bias_kernel(float *out, const void *bias, int dt, int rows, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] += fy_load_elem(bias, dt, i % (size_t)rows);
    }
}

static unsigned fy_gemm_blocks(size_t n)
{
    size_t b = (n + 255) / 256;
    return (unsigned)(b > 65535 ? 65535 : (b ? b : 1));
}

void fy_cuda_gemm(fy_cuda_be *c, float *out, const float *x, const fy_tensor *w,
                  const fy_tensor *bias, int T)
{
    const int R = (int)w->rows, C = (int)w->cols;
    const float alpha = 1.0f, beta = 0.0f;
    if (fy_cu_is_block(w->dtype)) {
        if (CUDA_CHECK(&c->err, fy_qmatmul_launch(c->stream, out, x, w->data, w->dtype, R, C, T))) {
            return;
        }
    } else if (w->dtype == FY_DT_F32) {
        if (CUBLAS_CHECK(&c->err, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, R, T, C, &alpha,
                                              (const float *)w->data, C, x, C, &beta, out, R))) {
            return;
        }
    } else {
        const size_t n = (size_t)T * C;
        void *xh = fy_cuda__scratch(c, FY_CUDA_SCRATCH_GEMM, n * 2);
        if (!xh) {
            return;
        }
        cudaDataType_t type;
        if (w->dtype == FY_DT_F16) {
            fy_to_half_kernel<<<fy_gemm_blocks(n), 256, 0, c->stream>>>((__half *)xh, x, n);
            type = CUDA_R_16F;
        } else {
            fy_to_bf16_kernel<<<fy_gemm_blocks(n), 256, 0, c->stream>>>((__nv_bfloat16 *)xh, x, n);
            type = CUDA_R_16BF;
        }
        if (CUDA_CHECK(&c->err, cudaGetLastError())) {
            return;
        }
        if (CUBLAS_CHECK(&c->err,
                         cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, R, T, C, &alpha, w->data,
                                      type, C, xh, type, C, &beta, out, CUDA_R_32F, R,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT))) {
            return;
        }
    }
    if (bias && bias->data) {
        const size_t n = (size_t)T * R;
        fy_bias_kernel<<<fy_gemm_blocks(n), 256, 0, c->stream>>>(out, bias->data, bias->dtype, R,
                                                                 n);
        (void)CUDA_CHECK(&c->err, cudaGetLastError());
    }
}
