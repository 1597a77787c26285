/* grammar_support.h: the grammar tests' shared check (include after cmocka.h). */
#ifndef FY_TEST_GRAMMAR_SUPPORT_H
#define FY_TEST_GRAMMAR_SUPPORT_H

#include "runner/engine/grammar.h"

#include <string.h>

/* 1 when TEXT[0..LEN) is a whole sentence of G. */
static inline int grammar_accepts(fy_grammar *g, const char *text, size_t len)
{
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    int ok = fy_gstate_feed(st, text, len) == 0 && fy_gstate_accepting(st);
    fy_gstate_free(st);
    return ok;
}

/* The same for a NUL-terminated S. */
static inline int accepts(fy_grammar *g, const char *s)
{
    return grammar_accepts(g, s, strlen(s));
}

#endif
