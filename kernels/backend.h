/* backend.h: the compute backends ferry can run on, behind one interface.
 *
 * This milestone proves the toolchains: the CPU backend (always built, the
 * reference) reports the SIMD features it will use; the CUDA backend (built
 * when nvcc is found) is compiled with nvcc, links cudart, and can run a
 * trivial kernel when a device is present. The engine's ops are added here
 * by the engine and CUDA issues. */
#ifndef FY_BACKEND_H
#define FY_BACKEND_H

#include <stddef.h>

typedef struct {
    const char *name; /* "cpu", "cuda" */
    int compiled;     /* 1 when built into this binary */
    int usable;       /* 1 when it can run here (CUDA: a device is present) */
    char detail[160]; /* human-readable: SIMD flags, device names, or why not usable */
} fy_backend_info;

/* Fills up to MAX entries (cpu first) and returns how many were written. */
int fy_backend_list(fy_backend_info *out, int max);

/* CPU: y[i] += a * x[i] for i < n. The reference implementation of the op
 * the CUDA probe runs. */
void fy_cpu_axpy(size_t n, float a, const float *x, float *y);

#ifdef FY_HAVE_CUDA
/* CUDA (kernels/cuda/probe.cu). Fills INFO; returns 0 when a device is usable. */
int fy_cuda_probe(fy_backend_info *info);
/* Runs y += a*x on device 0 (copies in and out). Returns 0, or a negative
 * FY_E* code (FY_ENOTSUP with no device); MSG gets CUDA's error text. */
int fy_cuda_axpy(size_t n, float a, const float *x, float *y, char *msg, size_t msglen);
#endif

#endif
