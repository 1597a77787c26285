/* fuzz_tokenizer_json.c: the tokenizer.json loader on arbitrary bytes (at most
 * 64 KiB). A file that loads must then encode and decode without fault
 * (tok_exercise.h). Hostile Split/Replace patterns are bounded by the PCRE2
 * match limit. */
#include "tok_exercise.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) {
        return 0;
    }
    fy_tokenizer *t = NULL;
    char err[256];
    if (fy__tok_load_mem((const char *)data, size, NULL, &t, err, sizeof err) == 0) {
        exercise(t, data, size);
        fy_tokenizer_free(t);
    } else if (t != NULL || err[0] == 0) {
        abort(); /* a refusal always says why and leaves nothing behind */
    }
    return 0;
}
