/* backend_cpu.c: the CPU backend, always built; the numeric reference. */
#include "kernels/backend.h"
#include "kernels/cpu/mm.h"

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
    /* The matmul path a backend created now would take (mm.h), and what the
     * CPU offers; FERRY_CPU_ISA narrows the first. */
    fy_cpu_isa use = fy__cpu_isa_from_env(NULL, 0);
    char has[64] = "";
    for (int i = FY_ISA_AVX2; i < FY_ISA_COUNT; i++) {
        if (fy__cpu_isa_usable((fy_cpu_isa)i)) {
            size_t n = strlen(has);
            snprintf(has + n, sizeof has - n, "%s%s", n ? "," : "",
                     fy__cpu_isa_name((fy_cpu_isa)i));
        }
    }
    snprintf(info->detail, sizeof info->detail,
             "%ld cores, kernels %s (cpu has %s; FERRY_CPU_ISA=portable|avx2|avxvnni|avx512 "
             "narrows)",
             ncpu, fy__cpu_isa_name(use), has[0] ? has : "no SIMD paths");
}

void fy_cpu_axpy(size_t n, float a, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}
