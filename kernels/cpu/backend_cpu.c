/* backend_cpu.c: the CPU backend, always built; the numeric reference. */
#include "kernels/backend.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void fy__cpu_probe(fy_backend_info *info);

void fy__cpu_probe(fy_backend_info *info)
{
    memset(info, 0, sizeof *info);
    info->name = "cpu";
    info->compiled = 1;
    info->usable = 1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *simd = "scalar";
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        simd = "avx512f";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        simd = "avx2+fma";
    } else if (__builtin_cpu_supports("sse4.2")) {
        simd = "sse4.2";
    }
#elif defined(__aarch64__)
    simd = "neon";
#endif
    snprintf(info->detail, sizeof info->detail, "%ld cores, %s", ncpu, simd);
}

void fy_cpu_axpy(size_t n, float a, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}
