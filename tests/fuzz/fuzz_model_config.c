/* Fuzz target: config.json parsing and validation, and the RoPE frequencies
 * of whatever config is accepted. */
#include "runner/engine/model.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fy_model_config c;
    char err[256];
    if (fy_model_config_parse((const char *)data, size, &c, err, sizeof err) == 0) {
        if (c.head_dim < 2 || c.head_dim > 1024 || c.head_dim % 2 || c.n_heads % c.n_kv_heads ||
            c.vocab_size < 1 || c.hidden < 1 || c.n_layers < 1) {
            __builtin_trap();
        }
        float inv[512];
        fy_model_rope_inv_freq(&c, inv);
        for (int i = 0; i < c.head_dim / 2; i++) {
            if (!(inv[i] >= 0.0f) || isinf(inv[i])) {
                __builtin_trap();
            }
        }
    } else if (strlen(err) == 0) {
        __builtin_trap();
    }
    return 0;
}
