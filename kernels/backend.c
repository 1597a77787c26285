#include "backend.h"

#include <stdio.h>
#include <string.h>

void fy__cpu_probe(fy_backend_info *info);

int fy_backend_list(fy_backend_info *out, int max)
{
    int n = 0;
    if (n < max) {
        fy__cpu_probe(&out[n++]);
    }
#ifdef FY_HAVE_CUDA
    if (n < max) {
        fy_cuda_probe(&out[n++]);
    }
#else
    if (n < max) {
        fy_backend_info *c = &out[n++];
        memset(c, 0, sizeof *c);
        c->name = "cuda";
        snprintf(c->detail, sizeof c->detail, "not compiled (configure with nvcc on PATH)");
    }
#endif
    return n;
}
