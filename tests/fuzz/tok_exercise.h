/* tok_exercise.h: what the tokenizer loaders' fuzz drivers do with a
 * tokenizer that loaded: encode and decode a fixed sample text (with
 * special-token text) and stream the input's bytes as ids; every decoded
 * byte must be valid UTF-8. Include from one driver. */
#ifndef FY_FUZZ_TOK_EXERCISE_H
#define FY_FUZZ_TOK_EXERCISE_H

#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void exercise(const fy_tokenizer *t, const uint8_t *data, size_t size)
{
    static const char sample[] = "Hello, world! <s> \xc3\xa9\xf0\x9f\xa6\x99 42  \n\tx</s>";
    fy_encode_options o = {1, 1};
    int32_t *ids = NULL;
    size_t n = 0;
    if (fy_tokenizer_encode(t, sample, sizeof sample - 1, &o, &ids, &n) == 0) {
        char *out = NULL;
        size_t len;
        if (fy_tokenizer_decode(t, ids, n, 0, &out, &len) == 0 && !fy_utf8_valid(out, len)) {
            abort();
        }
        free(out);
        free(ids);
    }
    fy_detok *d = fy_detok_new(t, 0);
    for (size_t i = 0; d && i + 1 < size && i < 512; i += 2) {
        const char *c;
        size_t cl;
        int32_t id =
            (int32_t)((uint32_t)data[i] << 8 | data[i + 1]) % (fy_tokenizer_vocab_size(t) + 2);
        if (fy_detok_push(d, id, &c, &cl) == 0 && !fy_utf8_valid(c, cl)) {
            abort();
        }
    }
    fy_detok_free(d);
    (void)fy_tokenizer_bos(t);
    (void)fy_tokenizer_eos(t);
}

#endif
