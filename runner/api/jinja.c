/* jinja.c: the Jinja-subset interpreter of jinja.h: compiling and freeing a
 * template. The parts live in jinja/ (see jinja/jinja_internal.h): lex.c,
 * parse.c, eval.c (which holds fy_jinja_render), builtins.c, value.c. The
 * AST lives in an arena owned by the compiled template. */
#include "runner/api/jinja.h"

#include "runner/api/jinja/jinja_internal.h"

#include "common/err.h"

#include <stdlib.h>

void fy_jinja_free(fy_jinja *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->nlits; i++) {
        json_decref(t->lits[i]);
    }
    free(t->lits);
    fy_jinja__arena_free(t->arena);
    free(t);
}

int fy_jinja_compile(const char *src, size_t len, unsigned flags, fy_jinja **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (err && errlen) {
        err[0] = 0;
    }
    compiler c = {.src = src, .len = len, .flags = flags, .err = err, .errlen = errlen};
    if (len > FY_JINJA_MAX_SOURCE) {
        return fy_jinja__cfail(&c, FY_ETOOBIG, 0, "template is %zu bytes, over the limit of %d",
                               len, FY_JINJA_MAX_SOURCE);
    }
    if (!(c.t = calloc(1, sizeof *c.t))) {
        return fy_jinja__cfail(&c, FY_ENOMEM, 0, "out of memory");
    }
    if (!src) {
        c.src = "";
        c.len = 0;
    }
    int rc = fy_jinja__lex(&c);
    if (!rc) {
        rc = fy_jinja__parse(&c);
    }
    free(c.toks);
    if (rc) {
        fy_jinja_free(c.t);
        return c.rc ? c.rc : rc;
    }
    *out = c.t;
    return 0;
}
