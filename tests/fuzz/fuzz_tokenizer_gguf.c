/* fuzz_tokenizer_gguf.c: the tokenizer from GGUF metadata on arbitrary bytes
 * (at most 256 KiB) parsed as a GGUF. A file whose tokenizer loads must then
 * encode and decode without fault (tok_exercise.h); a refusal must say why
 * and leave nothing behind. */
#include "runner/engine/gguf.h"
#include "tok_exercise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) {
        return 0;
    }
    char err[256] = "";
    fy_gguf *g = NULL;
    if (fy_gguf_parse(data, size, "fuzz.gguf", &g, err, sizeof err) != 0) {
        return 0;
    }
    fy_tokenizer *t = NULL;
    err[0] = 0;
    int rc = fy_tokenizer_from_gguf(g, &t, err, sizeof err);
    fy_gguf_free(g); /* the tokenizer must not need the file any more */
    if (rc == 0) {
        exercise(t, data, size);
        fy_tokenizer_free(t);
    } else if (t != NULL || err[0] == 0) {
        abort();
    }
    return 0;
}
