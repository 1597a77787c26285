/* common/utf8.c: well-formed UTF-8 per the Unicode Standard's Table 3-7,
 * and the two ways ferry repairs text: maximal subparts (Table 3-8's
 * practice) and byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/utf8.h"

#include <string.h>

#define S(lit) lit, sizeof lit - 1

static void test_char(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n, len;
        uint32_t cp;
    } cases[] = {
        {S("A"), 1, 0x41},
        {S("\xc3\xa9"), 2, 0xe9},
        {S("\xe6\x97\xa5"), 3, 0x65e5},
        {S("\xf0\x9f\x98\x80"), 4, 0x1f600},
        {S("\xf4\x8f\xbf\xbf"), 4, 0x10ffff}, /* the last code point */
        {S("\xed\x9f\xbf"), 3, 0xd7ff},       /* just below the surrogates */
        {S("\xee\x80\x80"), 3, 0xe000},       /* just above them */
        {S("\xc0\xaf"), 0, 0},                /* overlong '/' */
        {S("\xc1\xbf"), 0, 0},                /* overlong */
        {S("\xe0\x80\xaf"), 0, 0},            /* overlong, 3 bytes */
        {S("\xf0\x8f\xbf\xbf"), 0, 0},        /* overlong, 4 bytes */
        {S("\xed\xa0\x80"), 0, 0},            /* U+D800 */
        {S("\xed\xbf\xbf"), 0, 0},            /* U+DFFF */
        {S("\xf4\x90\x80\x80"), 0, 0},        /* U+110000 */
        {S("\xf5\x80\x80\x80"), 0, 0},        /* no such lead byte */
        {S("\x80"), 0, 0},                    /* a lone continuation */
        {S("\xe6\x97"), 0, 0},                /* truncated */
        {S("\xc3\x28"), 0, 0},                /* bad continuation */
        {"", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t cp = 0xdeadbeef;
        assert_int_equal(fy_utf8_char(cases[i].s, cases[i].n, &cp), cases[i].len);
        if (cases[i].len) {
            assert_int_equal(cp, cases[i].cp);
        }
        assert_int_equal(fy_utf8_valid(cases[i].s, cases[i].n), cases[i].len == cases[i].n);
    }
    assert_int_equal(fy_utf8_char(S("\xc3\xa9x"), NULL), 2);
    assert_true(fy_utf8_valid(S("a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80z")));
    assert_false(fy_utf8_valid(S("abc\xff")));
}

/* Table 3-8 of the Unicode Standard (chapter 3): the maximal subparts of
 * "61 F1 80 80 E1 80 C2 62 80 63 80 BF 64" are replaced one U+FFFD each. */
static void test_sanitize_maximal_subparts(void **state)
{
    (void)state;
    fy_buf out;
    fy_buf_init(&out, 1024);
    const char in[] = "\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64";
    assert_int_equal(fy_utf8_sanitize(in, sizeof in - 1, 1, &out), (long)(sizeof in - 1));
    const char want[] = "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                        "b\xef\xbf\xbd"
                        "c\xef\xbf\xbd\xef\xbf\xbd"
                        "d";
    assert_int_equal(out.len, sizeof want - 1);
    assert_memory_equal(out.data, want, sizeof want - 1);
    /* Overlongs and surrogates: each byte its own U+FFFD (no valid prefix). */
    fy_buf_reset(&out);
    assert_int_equal(fy_utf8_sanitize(S("\xc0\xaf\xed\xa0\x80"), 1, &out), 5);
    assert_int_equal(out.len, 15);
    fy_buf_free(&out);
}

static void test_sanitize_incremental(void **state)
{
    (void)state;
    fy_buf out;
    fy_buf_init(&out, 1024);
    /* A character cut short at the end waits for its other bytes... */
    assert_int_equal(fy_utf8_sanitize(S("ab\xe6\x97"), 0, &out), 2);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "ab", 2);
    /* ...and is one U+FFFD when nothing more comes. */
    fy_buf_reset(&out);
    assert_int_equal(fy_utf8_sanitize(S("ab\xe6\x97"), 1, &out), 4);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "ab\xef\xbf\xbd", 5);
    /* A byte that cannot start a character does not wait. */
    fy_buf_reset(&out);
    assert_int_equal(fy_utf8_sanitize(S("ab\xff"), 0, &out), 3);
    assert_memory_equal(out.data, "ab\xef\xbf\xbd", 5);
    /* The buffer's cap is reported, not overrun. */
    fy_buf small;
    fy_buf_init(&small, 2);
    assert_true(fy_utf8_sanitize(S("abc"), 1, &small) < 0);
    fy_buf_free(&small);
    fy_buf_free(&out);
}

static void test_scrub(void **state)
{
    (void)state;
    char out[64];
    /* Byte by byte: the truncated E6 97 is two replacements, NUL is one,
     * and valid characters stay. */
    size_t n = fy_utf8_scrub(S("\xc3\xa9\xe6\x97x\0y\xff"), "?", 1, out);
    assert_string_equal(out, "\xc3\xa9??x?y?");
    assert_int_equal(n, strlen(out));
    n = fy_utf8_scrub(S("a\xed\xa0\x80"), "\xef\xbf\xbd", 3, out);
    assert_int_equal(n, 10);
    assert_memory_equal(out, "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 10);
    assert_int_equal(fy_utf8_scrub("", 0, "?", 1, out), 0);
    assert_string_equal(out, "");
}

static void test_json(void **state)
{
    (void)state;
    /* Valid text is kept byte for byte, NUL included. */
    json_t *j = fy_utf8_json(S("a\0\xc3\xa9"), "?", 1);
    assert_non_null(j);
    assert_int_equal(json_string_length(j), 4);
    assert_memory_equal(json_string_value(j), "a\0\xc3\xa9", 4);
    json_decref(j);
    /* Otherwise each bad byte (and then each NUL) is the replacement. */
    j = fy_utf8_json(S("a\0\xe6\x97"), "\xef\xbf\xbd", 3);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(j);
    j = fy_utf8_json(S("\xff/x"), "?", 1);
    assert_string_equal(json_string_value(j), "?/x");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char),
        cmocka_unit_test(test_sanitize_maximal_subparts),
        cmocka_unit_test(test_sanitize_incremental),
        cmocka_unit_test(test_scrub),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
