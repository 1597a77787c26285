/* Fuzz target: model text through the tool-call parser (runner/api/toolcall.h).
 * The first byte picks the family and a split length; the rest is fed in
 * pieces of that length. Every callback's text must be valid UTF-8 when the
 * input is, call indexes must come in order, and argument pieces must belong
 * to the latest call; a second run fed whole must report the same. */
#include "common/utf8.h"
#include "runner/api/toolcall.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    int calls;
    int valid_input;
    int last;   /* the kind of the last report: pieces of one kind hash as one */
    uint64_t h; /* a hash of everything reported, in order */
} seen;

static void mix(seen *s, int tag, const char *p, size_t n)
{
    if (tag != s->last) {
        s->h = (s->h ^ (uint64_t)tag) * 1099511628211ull;
        s->last = tag;
    }
    for (size_t i = 0; i < n; i++) {
        s->h = (s->h ^ (uint8_t)p[i]) * 1099511628211ull;
    }
}

static int on_content(void *arg, const char *t, size_t n)
{
    seen *s = arg;
    if (s->valid_input && !fy_utf8_valid(t, n)) {
        __builtin_trap();
    }
    mix(s, 1, t, n);
    return 0;
}

static int on_begin(void *arg, int index, const char *name, size_t n)
{
    seen *s = arg;
    if (index != s->calls++) {
        __builtin_trap();
    }
    mix(s, 2, name, n);
    s->last = 0; /* a new call's arguments start afresh */
    return 0;
}

static int on_args(void *arg, int index, const char *p, size_t n)
{
    seen *s = arg;
    if (index != s->calls - 1) {
        __builtin_trap();
    }
    mix(s, 3, p, n);
    return 0;
}

static const fy_toolcall_ops ops = {on_content, on_begin, on_args};

static uint64_t feed(fy_toolcall_family f, const char *t, size_t n, size_t piece, int valid)
{
    seen s = {0, valid, 0, 1469598103934665603ull};
    fy_toolcall_parser *p = NULL;
    if (fy_toolcall_parser_new(f, &ops, &s, &p) < 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i += piece) {
        size_t k = n - i < piece ? n - i : piece;
        if (fy_toolcall_push(p, t + i, k) < 0) {
            break;
        }
    }
    fy_toolcall_finish(p);
    fy_toolcall_parser_free(p);
    return s.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    static const fy_toolcall_family fams[4] = {FY_TOOLCALL_NONE, FY_TOOLCALL_HERMES,
                                               FY_TOOLCALL_LLAMA3, FY_TOOLCALL_MISTRAL};
    fy_toolcall_family f = fams[data[0] & 3];
    size_t piece = 1 + (data[0] >> 2);
    const char *t = (const char *)data + 1;
    size_t n = size - 1;
    int valid = fy_utf8_valid(t, n);
    uint64_t a = feed(f, t, n, piece, valid), b = feed(f, t, n, n ? n : 1, valid);
    if (valid && a != b) {
        __builtin_trap(); /* where the text is split must not matter */
    }
    return 0;
}
