/* Fuzz target: the safetensors header parser over arbitrary file bytes. */
#include "runner/engine/safetensors.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fy_st_header h;
    char err[256];
    if (fy_st_parse(data, size, &h, err, sizeof err) == 0) {
        /* Every accepted tensor lies inside the buffer with a consistent size. */
        for (int i = 0; i < h.n; i++) {
            const fy_st_tensor *t = &h.t[i];
            if (t->end > size || t->begin > t->end ||
                t->end - t->begin != t->n_elems * fy_st_dtype_size(t->dtype) ||
                fy_st_find(&h, t->name) != t) {
                __builtin_trap();
            }
        }
        fy_st_header_free(&h);
    } else if (strlen(err) == 0) {
        __builtin_trap(); /* a refusal always says why */
    }
    return 0;
}
