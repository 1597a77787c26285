/* test_grammar.c: the grammar builder's checks, the parse state (bytes taken
 * and refused, acceptance, repetition counts, recursion, caps) and the
 * masker (the tokens a state allows, end tokens, the cache), against small
 * grammars whose languages are known by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/engine/grammar.h"
#include "support/grammar_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when S is a prefix of some sentence of G. */
static int prefix_ok(fy_grammar *g, const char *s)
{
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    int ok = fy_gstate_feed(st, s, strlen(s)) == 0;
    fy_gstate_free(st);
    return ok;
}

static fy_grammar *finish(fy_gbuild *b, int root)
{
    fy_grammar *g = NULL;
    char err[256] = "";
    int rc = fy_gbuild_finish(b, root, &g, err, sizeof err);
    if (rc) {
        fail_msg("finish: %s (%s)", fy_strerror(rc), err);
    }
    fy_gbuild_free(b);
    return g;
}

/* list ::= "[" ( item ( "," item ){0,2} )? "]" ; item ::= [0-9]+ | list */
static fy_grammar *small_lists(void)
{
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    int list = fy_gb_rule(b), item = fy_gb_rule(b), digit = fy_gb_rule(b), more = fy_gb_rule(b),
        body = fy_gb_rule(b);
    fy_gb_byte_range(b, digit, '0', '9');
    fy_gb_repeat(b, item, digit, 1, -1);
    fy_gb_alt(b, item);
    fy_gb_ref(b, item, list);
    fy_gb_lit(b, more, ",", 1);
    fy_gb_ref(b, more, item);
    fy_gb_ref(b, body, item);
    fy_gb_repeat(b, body, more, 0, 2);
    fy_gb_lit(b, list, "[", 1);
    fy_gb_repeat(b, list, body, 0, 1);
    fy_gb_lit(b, list, "]", 1);
    assert_int_equal(fy_gbuild_error(b), 0);
    return finish(b, list);
}

static void test_language(void **state)
{
    (void)state;
    fy_grammar *g = small_lists();
    assert_true(accepts(g, "[]"));
    assert_true(accepts(g, "[1]"));
    assert_true(accepts(g, "[12,3,456]"));
    assert_true(accepts(g, "[[1],[],[[2]]]"));
    assert_false(accepts(g, "[1,2,3,4]")); /* at most three items */
    assert_false(accepts(g, "[1,]"));
    assert_false(accepts(g, "[1"));
    assert_false(accepts(g, ""));
    assert_true(prefix_ok(g, "[[1,2"));
    assert_false(prefix_ok(g, "[a"));
    assert_false(prefix_ok(g, "[]]"));

    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    assert_false(fy_gstate_accepting(st));
    assert_true(fy_gstate_can_continue(st));
    assert_int_equal(fy_gstate_feed(st, "[1,2", 4), 0);
    /* A refused byte leaves the state as it was. */
    assert_int_equal(fy_gstate_feed(st, "x", 1), FY_EINVAL);
    assert_int_equal(fy_gstate_feed(st, ",3]", 3), 0);
    assert_true(fy_gstate_accepting(st));
    assert_false(fy_gstate_can_continue(st)); /* finished */
    fy_byteset next;
    fy_gstate_reset(st);
    fy_gstate_next_bytes(st, &next);
    assert_true(fy_byteset_has(&next, '['));
    assert_false(fy_byteset_has(&next, ']'));
    fy_gstate_free(st);
    fy_grammar_unref(g);
}

static void test_refused_grammars(void **state)
{
    (void)state;
    char err[256];
    fy_grammar *g = NULL;
    fy_gbuild *b = NULL;
    /* a ::= a "x" | "y" */
    assert_int_equal(fy_gbuild_new(&b), 0);
    int a = fy_gb_rule(b);
    fy_gb_ref(b, a, a);
    fy_gb_lit(b, a, "x", 1);
    fy_gb_alt(b, a);
    fy_gb_lit(b, a, "y", 1);
    assert_int_equal(fy_gbuild_finish(b, a, &g, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "left-recursive"));
    fy_gbuild_free(b);
    /* a ::= "" | "y"; r ::= a* */
    assert_int_equal(fy_gbuild_new(&b), 0);
    a = fy_gb_rule(b);
    fy_gb_alt(b, a);
    fy_gb_lit(b, a, "y", 1);
    int r = fy_gb_rule(b);
    fy_gb_repeat(b, r, a, 0, -1);
    assert_int_equal(fy_gbuild_finish(b, r, &g, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "without bound"));
    fy_gbuild_free(b);
    /* a ::= "(" a ")": no finite sentence */
    assert_int_equal(fy_gbuild_new(&b), 0);
    a = fy_gb_rule(b);
    fy_gb_lit(b, a, "(", 1);
    fy_gb_ref(b, a, a);
    fy_gb_lit(b, a, ")", 1);
    assert_int_equal(fy_gbuild_finish(b, a, &g, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "no finite"));
    fy_gbuild_free(b);
    /* Bad arguments are sticky. */
    assert_int_equal(fy_gbuild_new(&b), 0);
    a = fy_gb_rule(b);
    assert_int_equal(fy_gb_ref(b, a, 7), FY_EINVAL);
    assert_int_equal(fy_gb_lit(b, a, "z", 1), FY_EINVAL);
    assert_int_equal(fy_gbuild_finish(b, a, &g, err, sizeof err), FY_EINVAL);
    fy_gbuild_free(b);
    assert_null(g);
}

/* Nesting deeper than the stack cap is cut off, not a crash: the state
 * simply stops allowing another "[". */
static void test_depth_cap(void **state)
{
    (void)state;
    fy_grammar *g = small_lists();
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    int taken = 0;
    for (int i = 0; i < 4 * FY_GRAMMAR_MAX_DEPTH; i++) {
        if (fy_gstate_feed(st, "[", 1) != 0) {
            break;
        }
        taken++;
    }
    assert_true(taken > 8 && taken < FY_GRAMMAR_MAX_DEPTH);
    fy_gstate_free(st);
    fy_grammar_unref(g);
}

static int bit(const uint32_t *m, int t)
{
    return (int)((m[t >> 5] >> (t & 31)) & 1);
}

static void test_masker(void **state)
{
    (void)state;
    fy_grammar *g = small_lists();
    static const char *const vocab[] = {"[", "]",  "1", "12", ",",  "[1", "1]",     "],[",
                                        "a", NULL, "",  "[[", "]]", ",a", "1,2,3,4"};
    enum { V = sizeof vocab / sizeof vocab[0], EOS = 9 };
    size_t lens[V];
    for (int i = 0; i < V; i++) {
        lens[i] = vocab[i] ? strlen(vocab[i]) : 0;
    }
    int32_t ends[] = {EOS};
    fy_gmasker *m = NULL;
    assert_int_equal(fy_gmasker_new(V, vocab, lens, ends, 1, 0, &m), 0);
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    int n = 0;
    const uint32_t *mask = fy_gmasker_mask(m, st, &n);
    assert_non_null(mask);
    /* At the start: "[", "[1", "[[". */
    assert_int_equal(n, 3);
    assert_true(bit(mask, 0) && bit(mask, 5) && bit(mask, 11));
    assert_int_equal(fy_gstate_feed(st, "[1", 2), 0);
    mask = fy_gmasker_mask(m, st, &n);
    /* After "[1": "]", "1", "12", ",", "1]", "],[" is refused at depth 1 (no
     * outer list), "]]" too; "1,2,3,4" has one item too many. */
    assert_true(bit(mask, 1) && bit(mask, 2) && bit(mask, 3) && bit(mask, 4) && bit(mask, 6));
    assert_false(bit(mask, 7) || bit(mask, 12) || bit(mask, 14) || bit(mask, EOS));
    assert_int_equal(n, 5);
    assert_int_equal(fy_gstate_feed(st, "]", 1), 0);
    mask = fy_gmasker_mask(m, st, &n);
    assert_int_equal(n, 1); /* only EOS: the sentence is whole */
    assert_true(bit(mask, EOS));
    /* The same state again comes from the cache. */
    fy_gmasker_stats s1, s2;
    fy_gmasker_get_stats(m, &s1);
    fy_gstate_reset(st);
    fy_gstate_feed(st, "[1]", 3);
    mask = fy_gmasker_mask(m, st, &n);
    fy_gmasker_get_stats(m, &s2);
    assert_int_equal(s2.hits, s1.hits + 1);
    assert_int_equal(s2.walks, s1.walks);
    assert_int_equal(n, 1);
    fy_gstate_free(st);
    fy_gmasker_free(m);
    fy_grammar_unref(g);
}

/* Every token sequence a masker allows, picked at random, ends as a
 * sentence: the property constrained decoding rests on. */
static void test_random_walks(void **state)
{
    (void)state;
    fy_grammar *g = small_lists();
    static const char *const vocab[] = {"[",   "]", "1",  "12", ",",  "[1", "1]",
                                        "],[", "a", NULL, "[[", "]]", ",1", "]]]"};
    enum { V = sizeof vocab / sizeof vocab[0], EOS = 9 };
    size_t lens[V];
    for (int i = 0; i < V; i++) {
        lens[i] = vocab[i] ? strlen(vocab[i]) : 0;
    }
    int32_t ends[] = {EOS};
    fy_gmasker *m = NULL;
    assert_int_equal(fy_gmasker_new(V, vocab, lens, ends, 1, 0, &m), 0);
    uint64_t rng = 42;
    for (int run = 0; run < 300; run++) {
        fy_gstate *st = NULL;
        assert_int_equal(fy_gstate_new(g, &st), 0);
        char text[4096] = "";
        size_t tl = 0;
        for (int step = 0; step < 200; step++) {
            int n = 0;
            const uint32_t *mask = fy_gmasker_mask(m, st, &n);
            assert_non_null(mask);
            assert_true(n > 0);
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int k = (int)((rng >> 33) % (uint64_t)n), t = 0;
            for (t = 0; t < V; t++) {
                if (bit(mask, t) && k-- == 0) {
                    break;
                }
            }
            if (t == EOS) {
                break;
            }
            assert_int_equal(fy_gstate_feed(st, vocab[t], lens[t]), 0);
            assert_true(tl + lens[t] < sizeof text);
            memcpy(text + tl, vocab[t], lens[t]);
            tl += lens[t];
            text[tl] = 0;
            if (fy_gstate_accepting(st) && !fy_gstate_can_continue(st)) {
                break;
            }
        }
        if (fy_gstate_accepting(st)) {
            assert_true(accepts(g, text));
        }
        fy_gstate_free(st);
    }
    fy_gmasker_free(m);
    fy_grammar_unref(g);
}

/* One character of a Unicode class, as UTF-8: every code point of the
 * class and no other, and no ill-formed sequence (overlong, surrogate, past
 * U+10FFFF). */
static void test_charclass(void **state)
{
    (void)state;
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    const fy_cprange r[] = {{0x20, 0x21}, {0x23, 0x10FFFF}, {0x100, 0x200}}; /* not '"' */
    int c = fy_gb_charclass(b, r, 3);
    assert_true(c >= 0);
    fy_grammar *g = finish(b, c);
    static const uint32_t yes[] = {0x20,    0x21,    0x23,    0x7F,     0x80,     0x7FF,  0x800,
                                   0xFFF,   0x1000,  0xD7FF,  0xE000,   0xFFFD,   0xFFFF, 0x10000,
                                   0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF, 0xE9,   0x4E2D};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        char u[5] = {0};
        uint32_t cp = yes[i];
        if (cp < 0x80) {
            u[0] = (char)cp;
        } else if (cp < 0x800) {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            u[0] = (char)(0xE0 | (cp >> 12));
            u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[2] = (char)(0x80 | (cp & 0x3F));
        } else {
            u[0] = (char)(0xF0 | (cp >> 18));
            u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
            u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[3] = (char)(0x80 | (cp & 0x3F));
        }
        if (!accepts(g, u)) {
            fail_msg("U+%04X refused", cp);
        }
    }
    static const char *const no[] = {"\"",
                                     "\x1f",
                                     "\xc0\x80",
                                     "\xc1\xbf",
                                     "\xe0\x80\x80",
                                     "\xed\xa0\x80",
                                     "\xf0\x80\x80\x80",
                                     "\xf4\x90\x80\x80",
                                     "\xf5\x80\x80\x80",
                                     "\x80",
                                     "ab"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        assert_false(accepts(g, no[i]));
    }
    fy_grammar_unref(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_language),     cmocka_unit_test(test_refused_grammars),
        cmocka_unit_test(test_depth_cap),    cmocka_unit_test(test_masker),
        cmocka_unit_test(test_random_walks), cmocka_unit_test(test_charclass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
