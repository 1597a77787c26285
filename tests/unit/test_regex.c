/* test_regex.c: the regex subset compiled to grammar rules. Each table
 * pattern is checked on strings known by hand, then against PCRE2 (anchored
 * at both ends, UTF) on random walks through its grammar (every prefix) and
 * on random strings over the pattern's own characters; JSON_STRING mode is
 * checked for its one spelling per character; every refused construct and
 * cap has its error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/api/regex.h"
#include "runner/engine/grammar.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fy_grammar *compile(const char *pat, fy_regex_mode mode)
{
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    char err[256] = "";
    int rule = -1;
    int rc = fy_regex_compile(b, pat, strlen(pat), mode, &rule, err, sizeof err);
    if (rc < 0) {
        fail_msg("compile /%s/: %s (%s)", pat, fy_strerror(rc), err);
    }
    assert_int_equal(rc, rule);
    fy_grammar *g = NULL;
    rc = fy_gbuild_finish(b, rule, &g, err, sizeof err);
    if (rc < 0) {
        fail_msg("finish /%s/: %s (%s)", pat, fy_strerror(rc), err);
    }
    fy_gbuild_free(b);
    return g;
}

/* 1 when S[0..N) is a whole sentence of G. */
static int accepts_n(fy_gstate *st, const char *s, size_t n)
{
    fy_gstate_reset(st);
    return fy_gstate_feed(st, s, n) == 0 && fy_gstate_accepting(st);
}

static int accepts(fy_grammar *g, const char *s)
{
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    int ok = accepts_n(st, s, strlen(s));
    fy_gstate_free(st);
    return ok;
}

/* PCRE2's compiled pattern with what matching it needs. */
typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mc;
} pre;

static void pre_init(pre *p, const char *pat)
{
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    assert_non_null(cc);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int code = 0;
    PCRE2_SIZE off = 0;
    p->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_ALT_BSUX |
                              PCRE2_DOLLAR_ENDONLY,
                          &code, &off, cc);
    pcre2_compile_context_free(cc);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        fail_msg("pcre2 /%s/: %s at %zu", pat, (const char *)msg, (size_t)off);
    }
    p->md = pcre2_match_data_create_from_pattern(p->re, NULL);
    p->mc = pcre2_match_context_create(NULL);
    assert_non_null(p->md);
    assert_non_null(p->mc);
    pcre2_set_match_limit(p->mc, 5000);
}

static void pre_close(pre *p)
{
    pcre2_match_context_free(p->mc);
    pcre2_match_data_free(p->md);
    pcre2_code_free(p->re);
}

/* 1 when PCRE2 matches all of S[0..N); invalid UTF-8 is no match. Nested
 * quantifiers can make the backtracking matcher give up: then the DFA
 * matcher, which does not backtrack, answers. */
static int pcre_match(pre *p, const char *s, size_t n)
{
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, 0, 0, p->md, p->mc);
    if (rc == PCRE2_ERROR_MATCHLIMIT) {
        int ws[4096];
        rc = pcre2_dfa_match(p->re, (PCRE2_SPTR)s, n, 0, 0, p->md, NULL, ws, 4096);
        rc = rc == 0 ? 1 : rc; /* 0: more matches than the vector holds, still a match */
    }
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH &&
        !(rc >= PCRE2_ERROR_UTF8_ERR21 && rc <= PCRE2_ERROR_UTF8_ERR1)) {
        fail_msg("pcre2_match: %d", rc);
    }
    return rc >= 0;
}

static uint64_t rng_next(uint64_t *r)
{
    *r = *r * 6364136223846793005ull + 1442695040888963407ull;
    return *r >> 33;
}

typedef struct {
    const char *pat;
    const char *pcre; /* PCRE2's spelling when it differs (\v, surrogate pairs), else NULL */
    const char *yes[8];
    const char *no[8];
} rcase;

static const rcase cases[] = {
    {"abc", NULL, {"abc"}, {"", "ab", "abcd", "abd"}},
    {"^a.c$",
     NULL,
     {"abc", "a c",
      "a\xc3\xa9"
      "c",
      "a\xe4\xb8\xad"
      "c",
      "a\tc"},
     {"a\nc", "ac"}},
    {"a|b|", NULL, {"a", "b", ""}, {"ab", "c"}},
    {"(ab)*", NULL, {"", "ab", "abab"}, {"a", "aba"}},
    {"(a?)*", NULL, {"", "a", "aaa"}, {"b"}},
    {"(a*)*b", NULL, {"b", "ab", "aaab"}, {"a", "ba"}},
    {"(a|)+", NULL, {"", "a", "aa"}, {"b"}},
    {"(a?b?)*c", NULL, {"c", "abc", "bac", "aabbc"}, {"ca", "ab"}},
    {"x(|a){3,5}y", NULL, {"xy", "xay", "xaaaaay"}, {"xaaaaaay", "x"}},
    {"((a?)(b?)){2,3}", NULL, {"", "ab", "abab", "bbb", "ababab"}, {"abababa", "bbbb"}},
    {"(()|()){3}z", NULL, {"z"}, {"", "zz"}},
    {"a{3}", NULL, {"aaa"}, {"aa", "aaaa"}},
    {"a{2,}", NULL, {"aa", "aaaaa"}, {"a", ""}},
    {"a{2,4}?", NULL, {"aa", "aaa", "aaaa"}, {"a", "aaaaa"}},
    {"a{0}b", NULL, {"b"}, {"ab"}},
    {"\\d{3}-\\d{4}", NULL, {"555-1234"}, {"5551234", "55-1234", "555-12345"}},
    {"\\w+@\\w+\\.com", NULL, {"a_b@x1.com"}, {"a b@x.com", "a@b.org"}},
    {"\\s*\\S+", NULL, {"  x", "\tab", "\xc3\xa9"}, {"  ", ""}},
    {"[a-f0-9]{2}", NULL, {"0f", "ab"}, {"0g", "A0", "abc"}},
    {"[^a-z]+", NULL, {"ABC", "\xc3\xa9", "1\n"}, {"a", ""}},
    {"[\\d\\s_-]+", NULL, {"1 _-", "\n"}, {"a"}},
    {"[-a][a-]", NULL, {"--", "aa", "-a"}, {"b-"}},
    {"[\xc3\xa9-\xc3\xbc]", NULL, {"\xc3\xa9", "\xc3\xbc", "\xc3\xb6"}, {"e", "\xc3\xbf"}},
    {"[^\\x00-\\x7F]", NULL, {"\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80"}, {"a", "\x7f"}},
    {"[\\u4e00-\\u9fff]+", NULL, {"\xe4\xb8\xad\xe6\x96\x87"}, {"a", ""}},
    {"\\uD83D\\uDE00!", "\xf0\x9f\x98\x80!", {"\xf0\x9f\x98\x80!"}, {"!"}},
    {"[\\uD83D\\uDE00-\\uD83D\\uDE02]",
     "[\xf0\x9f\x98\x80-\xf0\x9f\x98\x82]",
     {"\xf0\x9f\x98\x81"},
     {"\xf0\x9f\x98\x83"}},
    {"\\x41\\u0042", NULL, {"AB"}, {"ab"}},
    {"\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\/\\-\\\\", NULL, {".*+?()[]{}|^$/-\\"}, {""}},
    {"\\n\\t\\r\\f\\v", "\\n\\t\\r\\f\\x0b", {"\n\t\r\f\v"}, {"\n\t\r\f"}},
    {"[\\n\\v]", "[\\n\\x0b]", {"\n", "\v"}, {"v", "\r"}},
    {"(?:a|b)(?<x>c)(?P<y>d)", NULL, {"acd", "bcd"}, {"cd"}},
    {"a*?b+?c??", NULL, {"b", "abbc", "ab"}, {"a", "cc"}},
    {"{a}", NULL, {"{a}"}, {"a"}},
    {"a{,}", NULL, {"a{,}"}, {"a"}},
    {"x{2}{", NULL, {"xx{"}, {"xx"}},
    {"[\\b]", NULL, {"\b"}, {"b"}},
    {"\\D\\W\\S", NULL, {"a \xc3\xa9", "\xe4\xb8\xad!!"}, {"1 a", "a_a"}},
    {"(a|b)*abb", NULL, {"abb", "aababb"}, {"ab", "abba"}},
    {"((a|b)c)+", NULL, {"ac", "acbc"}, {"a", ""}},
    {"", NULL, {""}, {"a"}},
    {"[^\\s\\S]|a", NULL, {"a"}, {"", "b"}},
    {"\\#\\&\\~\\ \\\"\\'", NULL, {"#&~ \"'"}, {""}},
    {"[\xf0\x9f\x98\x80-\xf0\x9f\x98\x82]+", NULL, {"\xf0\x9f\x98\x81\xf0\x9f\x98\x80"}, {""}},
    {"(ab|a)(bc|c)?", NULL, {"ab", "abc", "abbc", "a", "ac"}, {"b", "abcc"}},
    {"[^\"\\\\]*", NULL, {"abc", ""}, {"\"", "\\"}},
    {"-?(0|[1-9]\\d*)(\\.\\d+)?([eE][+-]?\\d+)?",
     NULL,
     {"0", "-12.5e+3", "7E9"},
     {"01", "1.", "-"}},
    {"[a-zA-Z_][a-zA-Z0-9_]{0,7}", NULL, {"_x1", "abcdefgh"}, {"1a", "abcdefghi"}},
    {"(\\d{1,3}\\.){3}\\d{1,3}", NULL, {"192.168.0.1"}, {"1.2.3", "1234.1.1.1"}},
    {"((a|b|c)?(d|e)?)+f", NULL, {"f", "adbef", "ccf"}, {"fa"}},
    {".*", NULL, {"", "anything \xe4\xb8\xad"}, {"a\nb"}},
    {"[\\[\\]\\\\^-]+", NULL, {"[]\\^-"}, {"a"}},
    {"[a^]", NULL, {"a", "^"}, {"b"}},
    {"}", NULL, {"}"}, {""}},
    {"a{0,3}a{2}a*?b\\d{1,2}\\d[0-9]+", NULL, {"aab000", "aaaaaaaab1234"}, {"ab000", "aab00"}},
    {"[ab]{2}[ab]?[ba]{1,2}", NULL, {"abb", "aaaaa"}, {"ab", "aaaaaa"}},
};

/* The characters (as UTF-8 strings) random candidates are made of: the
 * pattern's own bytes when ASCII, its multi-byte characters, and a few
 * more. */
static int alphabet(const char *pat, char sym[][5], int max)
{
    static const char *const extra[] = {
        "a",  "0",  " ",  "\n", "_", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x81",
        "\t", "\v", "\"", "\\", "-", "."};
    int n = 0;
    for (size_t i = 0; i < sizeof extra / sizeof extra[0] && n < max; i++) {
        strcpy(sym[n++], extra[i]);
    }
    const uint8_t *p = (const uint8_t *)pat;
    for (size_t i = 0; p[i] && n < max;) {
        size_t l = p[i] < 0x80 ? 1 : p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
        memcpy(sym[n], p + i, l);
        sym[n][l] = 0;
        int dup = 0;
        for (int j = 0; j < n && !dup; j++) {
            dup = strcmp(sym[j], sym[n]) == 0;
        }
        n += !dup;
        i += l;
    }
    return n;
}

/* Our grammar and PCRE2 agree on every prefix of random walks through the
 * grammar, and on random strings over the pattern's characters and
 * mutations of the walks. */
static void cross_check(const rcase *c, fy_grammar *g)
{
    pre re;
    pre_init(&re, c->pcre ? c->pcre : c->pat);
    fy_gstate *st = NULL, *chk = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    assert_int_equal(fy_gstate_new(g, &chk), 0);
    uint64_t rng = 7;
    char sym[64][5];
    int n_sym = alphabet(c->pat, sym, 64);
    for (int walk = 0; walk < 300; walk++) {
        char s[64];
        size_t n = 0;
        fy_gstate_reset(st);
        for (;;) {
            int acc = fy_gstate_accepting(st);
            if (acc != pcre_match(&re, s, n)) {
                fail_msg("/%s/ on walk \"%.*s\": grammar %d, pcre2 %d", c->pat, (int)n, s, acc,
                         !acc);
            }
            fy_byteset next;
            fy_gstate_next_bytes(st, &next);
            int k = 0;
            for (int w = 0; w < 4; w++) {
                k += __builtin_popcountll(next.w[w]);
            }
            if (k == 0 || n + 1 >= sizeof s || (acc && rng_next(&rng) % 4 == 0)) {
                break;
            }
            int pick = (int)(rng_next(&rng) % (uint64_t)k), byte = 0;
            for (byte = 0; byte < 256; byte++) {
                if (fy_byteset_has(&next, (unsigned)byte) && pick-- == 0) {
                    break;
                }
            }
            s[n++] = (char)byte;
            assert_int_equal(fy_gstate_feed(st, s + n - 1, 1), 0);
        }
        /* Mutations of the walk: a byte dropped, a character inserted. */
        for (int m = 0; m < 4 && n > 0; m++) {
            char t[80];
            size_t at = rng_next(&rng) % n, tn = 0;
            memcpy(t, s, at);
            tn = at;
            if (m & 1) {
                const char *y = sym[rng_next(&rng) % (uint64_t)n_sym];
                memcpy(t + tn, y, strlen(y));
                tn += strlen(y);
                memcpy(t + tn, s + at, n - at);
                tn += n - at;
            } else {
                memcpy(t + tn, s + at + 1, n - at - 1);
                tn += n - at - 1;
            }
            int ours = accepts_n(chk, t, tn), theirs = pcre_match(&re, t, tn);
            if (ours != theirs) {
                fail_msg("/%s/ on \"%.*s\": grammar %d, pcre2 %d", c->pat, (int)tn, t, ours,
                         theirs);
            }
        }
    }
    for (int r = 0; r < 3000; r++) {
        char t[64];
        size_t tn = 0;
        int len = (int)(rng_next(&rng) % 9);
        for (int i = 0; i < len; i++) {
            const char *y = sym[rng_next(&rng) % (uint64_t)n_sym];
            memcpy(t + tn, y, strlen(y));
            tn += strlen(y);
        }
        int ours = accepts_n(chk, t, tn), theirs = pcre_match(&re, t, tn);
        if (ours != theirs) {
            fail_msg("/%s/ on \"%.*s\": grammar %d, pcre2 %d", c->pat, (int)tn, t, ours, theirs);
        }
    }
    for (int i = 0; i < 8; i++) {
        if (c->yes[i]) {
            assert_true(pcre_match(&re, c->yes[i], strlen(c->yes[i])));
        }
        if (c->no[i]) {
            assert_false(pcre_match(&re, c->no[i], strlen(c->no[i])));
        }
    }
    fy_gstate_free(st);
    fy_gstate_free(chk);
    pre_close(&re);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rcase *c = &cases[i];
        fy_grammar *g = compile(c->pat, FY_REGEX_RAW);
        for (int j = 0; j < 8; j++) {
            if (c->yes[j] && !accepts(g, c->yes[j])) {
                fail_msg("/%s/ refuses \"%s\"", c->pat, c->yes[j]);
            }
            if (c->no[j] && accepts(g, c->no[j])) {
                fail_msg("/%s/ accepts \"%s\"", c->pat, c->no[j]);
            }
        }
        cross_check(c, g);
        fy_grammar_unref(g);
    }
}

/* \0 and NUL bytes, which the table's C strings cannot hold. */
static void test_nul(void **state)
{
    (void)state;
    fy_grammar *g = compile("a\\0b", FY_REGEX_RAW);
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    assert_true(accepts_n(st, "a\0b", 3));
    assert_false(accepts_n(st, "a0b", 3));
    fy_gstate_free(st);
    fy_grammar_unref(g);
    g = compile("[\\0-\\x01]", FY_REGEX_JSON_STRING);
    assert_true(accepts(g, "\\u0000"));
    assert_true(accepts(g, "\\u0001"));
    fy_grammar_unref(g);
    /* A NUL byte in the pattern is a literal. */
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    int rule = -1;
    assert_true(fy_regex_compile(b, "x\0", 2, FY_REGEX_RAW, &rule, NULL, 0) >= 0);
    assert_int_equal(fy_gbuild_finish(b, rule, &g, NULL, 0), 0);
    assert_int_equal(fy_gstate_new(g, &st), 0);
    assert_true(accepts_n(st, "x\0", 2));
    assert_false(accepts_n(st, "x", 1));
    fy_gstate_free(st);
    fy_gbuild_free(b);
    fy_grammar_unref(g);
}

/* The canonical JSON spelling of S[0..N) into OUT; its length. */
static size_t json_encode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        const char *e = c == '"'    ? "\\\""
                        : c == '\\' ? "\\\\"
                        : c == '\b' ? "\\b"
                        : c == '\t' ? "\\t"
                        : c == '\n' ? "\\n"
                        : c == '\f' ? "\\f"
                        : c == '\r' ? "\\r"
                                    : NULL;
        if (e) {
            memcpy(out + o, e, 2);
            o += 2;
        } else if (c < 0x20) {
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

/* S[0..N) as a JSON string's inside decoded into OUT (only what the
 * canonical spelling uses); its length, or -1 when not decodable. */
static long json_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        if (++i >= n) {
            return -1;
        }
        const char *m = strchr("\"\\btnfr", s[i]);
        if (s[i] == 'u') {
            unsigned v = 0;
            if (i + 4 >= n || sscanf(s + i + 1, "%4x", &v) != 1 || v >= 0x20) {
                return -1;
            }
            out[o++] = (char)v;
            i += 4;
        } else if (m && s[i]) {
            out[o++] = "\"\\\b\t\n\f\r"[m - "\"\\btnfr"];
        } else {
            return -1;
        }
    }
    return (long)o;
}

static void test_json_mode(void **state)
{
    (void)state;
    fy_grammar *g = compile("a\"b", FY_REGEX_JSON_STRING);
    assert_true(accepts(g, "a\\\"b"));
    assert_false(accepts(g, "a\"b"));
    assert_false(accepts(g, "a\\u0022b"));
    fy_grammar_unref(g);

    g = compile("[^a]", FY_REGEX_JSON_STRING);
    static const char *const yes[] = {
        "\\\"", "\\\\", "\\n",  "\\t",      "\\u0001",         "\\u001f",
        "\\b",  "/",    "\x7f", "\xc3\xa9", "\xf0\x9f\x98\x80"};
    static const char *const no[] = {"\"",      "\\",   "\n",      "a",       "\\u000a", "\\/",
                                     "\\u0022", "\x01", "\\u001F", "\\u0061", "\\u0008", "\\u005c"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!accepts(g, yes[i])) {
            fail_msg("[^a] refuses %s", yes[i]);
        }
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        if (accepts(g, no[i])) {
            fail_msg("[^a] accepts %s", no[i]);
        }
    }
    fy_grammar_unref(g);

    /* '.' never yields a raw control character, '"' or '\', nor \n. */
    g = compile(".", FY_REGEX_JSON_STRING);
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(g, &st), 0);
    fy_byteset next;
    fy_gstate_next_bytes(st, &next);
    for (unsigned c = 0; c < 0x20; c++) {
        assert_false(fy_byteset_has(&next, c));
    }
    assert_false(fy_byteset_has(&next, '"'));
    assert_true(fy_byteset_has(&next, '\\'));
    assert_int_equal(fy_gstate_feed(st, "\\", 1), 0);
    fy_gstate_next_bytes(st, &next);
    assert_false(fy_byteset_has(&next, 'n'));
    assert_true(fy_byteset_has(&next, 't') && fy_byteset_has(&next, 'u'));
    assert_true(fy_byteset_has(&next, '"') && fy_byteset_has(&next, '\\'));
    assert_false(fy_byteset_has(&next, '/'));
    fy_gstate_free(st);
    assert_true(accepts(g, "\\u000b"));
    assert_true(accepts(g, "\\u0000"));
    assert_false(accepts(g, "\\n"));
    assert_false(accepts(g, "\\u000a"));
    fy_grammar_unref(g);

    g = compile("\\n[\\x00-\\x1f]\\d+\"", FY_REGEX_JSON_STRING);
    assert_true(accepts(g, "\\n\\b12\\\""));
    assert_true(accepts(g, "\\n\\u001f1\\\""));
    assert_false(accepts(g, "\n\\b1\\\""));
    assert_false(accepts(g, "\\n\\u00081\\\""));
    fy_grammar_unref(g);
    g = compile("\xc3\xa9|\\\\", FY_REGEX_JSON_STRING);
    assert_true(accepts(g, "\xc3\xa9"));
    assert_true(accepts(g, "\\\\"));
    assert_false(accepts(g, "\\u00e9"));
    fy_grammar_unref(g);
}

/* JSON_STRING mode is RAW mode spelled in JSON: a walk through the JSON
 * grammar decodes to a string PCRE2 matches and is that string's one
 * spelling, and a RAW walk's spelling is taken by the JSON grammar. */
static void test_json_cross(void **state)
{
    (void)state;
    static const char *const pats[] = {".*",        "[^a]{0,4}",         "[\\x00-\\x1f\"\\\\]+x",
                                       "\\D\\W\\S", "(a\"|\\\\b|\\n)*",  "[^\\w\\s]*",
                                       "\\s+",      "[\\u0000-\\u00ff]*"};
    size_t n_pats = sizeof pats / sizeof pats[0], n_cases = sizeof cases / sizeof cases[0];
    uint64_t rng = 11;
    for (size_t p = 0; p < n_pats + n_cases; p++) {
        const char *pat = p < n_pats ? pats[p] : cases[p - n_pats].pat;
        const char *ppat = p < n_pats || !cases[p - n_pats].pcre ? pat : cases[p - n_pats].pcre;
        fy_grammar *gj = compile(pat, FY_REGEX_JSON_STRING);
        fy_grammar *gr = compile(pat, FY_REGEX_RAW);
        pre re;
        pre_init(&re, ppat);
        for (int mode = 0; mode < 2; mode++) {
            fy_gstate *st = NULL, *other = NULL;
            assert_int_equal(fy_gstate_new(mode ? gj : gr, &st), 0);
            assert_int_equal(fy_gstate_new(mode ? gr : gj, &other), 0);
            for (int walk = 0; walk < 200; walk++) {
                char s[64];
                size_t n = 0;
                fy_gstate_reset(st);
                for (;;) {
                    fy_byteset next;
                    fy_gstate_next_bytes(st, &next);
                    int k = 0;
                    for (int w = 0; w < 4; w++) {
                        k += __builtin_popcountll(next.w[w]);
                    }
                    if (fy_gstate_accepting(st) &&
                        (k == 0 || n + 8 >= sizeof s || rng_next(&rng) % 4 == 0)) {
                        break;
                    }
                    assert_true(k > 0 && n + 1 < sizeof s);
                    int pick = (int)(rng_next(&rng) % (uint64_t)k), byte = 0;
                    for (byte = 0; byte < 256; byte++) {
                        if (fy_byteset_has(&next, (unsigned)byte) && pick-- == 0) {
                            break;
                        }
                    }
                    s[n++] = (char)byte;
                    assert_int_equal(fy_gstate_feed(st, s + n - 1, 1), 0);
                    if (n + 8 >= sizeof s && !fy_gstate_accepting(st)) {
                        break; /* too long to finish here: a shorter walk will do */
                    }
                }
                if (!fy_gstate_accepting(st)) {
                    continue;
                }
                char raw[64], spelled[400];
                if (mode) {
                    long rn = json_decode(s, n, raw);
                    if (rn < 0) {
                        fail_msg("/%s/ JSON walk \"%.*s\" does not decode", pat, (int)n, s);
                    }
                    size_t sn = json_encode(raw, (size_t)rn, spelled);
                    if (sn != n || memcmp(spelled, s, n) != 0) {
                        fail_msg("/%s/ JSON walk \"%.*s\" is not the canonical spelling", pat,
                                 (int)n, s);
                    }
                    assert_true(pcre_match(&re, raw, (size_t)rn));
                    assert_true(accepts_n(other, raw, (size_t)rn));
                } else {
                    size_t sn = json_encode(s, n, spelled);
                    if (!accepts_n(other, spelled, sn)) {
                        fail_msg("/%s/ JSON refuses \"%.*s\"", pat, (int)sn, spelled);
                    }
                }
            }
            fy_gstate_free(st);
            fy_gstate_free(other);
        }
        pre_close(&re);
        fy_grammar_unref(gj);
        fy_grammar_unref(gr);
    }
}

typedef struct {
    const char *pat;
    int rc;
    const char *msg;
} ecase;

static const ecase errors[] = {
    {"a(?=b)", FY_EINVAL, "pattern: lookahead '(?=' at offset 1 is not supported"},
    {"(?!a)", FY_EINVAL, "negative lookahead '(?!' at offset 0"},
    {"x(?<=a)b", FY_EINVAL, "lookbehind '(?<=' at offset 1"},
    {"(?<!a)b", FY_EINVAL, "negative lookbehind '(?<!' at offset 0"},
    {"(a)\\1", FY_EINVAL, "backreference '\\1' at offset 3"},
    {"(?<n>a)\\k<n>", FY_EINVAL, "backreference '\\k' at offset 7"},
    {"(?P<n>a)(?P=n)", FY_EINVAL, "backreference '(?P=' at offset 8"},
    {"\\bword", FY_EINVAL, "word boundary '\\b' at offset 0"},
    {"a\\B", FY_EINVAL, "non-word boundary '\\B' at offset 1"},
    {"a*+", FY_EINVAL, "possessive quantifier '*+' at offset 1"},
    {"ab{2}+", FY_EINVAL, "possessive quantifier '{2}+' at offset 2"},
    {"a?+", FY_EINVAL, "possessive quantifier '?+'"},
    {"(?i)abc", FY_EINVAL, "inline flags '(?i' at offset 0"},
    {"a(?s:b)", FY_EINVAL, "inline flags '(?s' at offset 1"},
    {"\\p{L}", FY_EINVAL, "Unicode property escape '\\p' at offset 0"},
    {"[\\P{L}]", FY_EINVAL, "Unicode property escape '\\P' at offset 1"},
    {"a^b", FY_EINVAL, "anchor '^' at offset 1"},
    {"a$b", FY_EINVAL, "anchor '$' at offset 1"},
    {"(a$)", FY_EINVAL, "anchor '$' at offset 2"},
    {"\\Aa", FY_EINVAL, "anchor '\\A' at offset 0"},
    {"(ab", FY_EINVAL, "unbalanced '(' at offset 0"},
    {"a(b(c)", FY_EINVAL, "unbalanced '(' at offset 1"},
    {"ab)", FY_EINVAL, "unbalanced ')' at offset 2"},
    {"[ab", FY_EINVAL, "unbalanced '[' at offset 0"},
    {"ab]", FY_EINVAL, "unbalanced ']' at offset 2"},
    {"*a", FY_EINVAL, "quantifier '*' at offset 0 has nothing to repeat"},
    {"a|+b", FY_EINVAL, "quantifier '+' at offset 2 has nothing to repeat"},
    {"(?a)", FY_EINVAL, "inline flags"},
    {"(*)", FY_EINVAL, "quantifier '*' at offset 1 has nothing to repeat"},
    {"a**", FY_EINVAL, "quantifier '*' at offset 2 has nothing to repeat"},
    {"^*", FY_EINVAL, "quantifier '*' at offset 1 has nothing to repeat"},
    {"{2}", FY_EINVAL, "quantifier '{' at offset 0 has nothing to repeat"},
    {"a{3,2}", FY_EINVAL, "repetition '{3,2}' at offset 1 has min > max"},
    {"a{,3}", FY_EINVAL, "'{,m}' at offset 1"},
    {"[z-a]", FY_EINVAL, "range out of order at offset 1"},
    {"[\\d-z]", FY_EINVAL, "range from '\\d' at offset 1"},
    {"[a-\\w]", FY_EINVAL, "range to '\\w' at offset 3"},
    {"[[:alpha:]]", FY_EINVAL, "POSIX class '[:' at offset 1"},
    {"[]a]", FY_EINVAL, "class starting with ']' at offset 0"},
    {"\\q", FY_EINVAL, "escape '\\q' at offset 0 is not supported"},
    {"\\uD800x", FY_EINVAL, "lone surrogate '\\uD800' at offset 0"},
    {"\\u12", FY_EINVAL, "'\\u' at offset 0 needs four hex digits"},
    {"\\xg1", FY_EINVAL, "'\\x' at offset 0 needs two hex digits"},
    {"\\01", FY_EINVAL, "octal escape"},
    {"(?>a)", FY_EINVAL, "atomic group '(?>' at offset 0"},
    {"(?#c)", FY_EINVAL, "comment '(?#'"},
    {"(?(1)a)", FY_EINVAL, "conditional '(?('"},
    {"(?R)", FY_EINVAL, "recursion '(?R'"},
    {"(?|a)", FY_EINVAL, "branch reset '(?|'"},
    {"(?<1a>x)", FY_EINVAL, "malformed group name at offset 0"},
    {"a\xff", FY_EINVAL, "invalid UTF-8 at offset 1"},
    {"\xc0\x80", FY_EINVAL, "invalid UTF-8 at offset 0"},
    {"\xed\xa0\x80", FY_EINVAL, "invalid UTF-8 at offset 0"},
    {"[^\\s\\S]", FY_EINVAL, "no string matches it"},
    {"a\\", FY_EINVAL, "trailing '\\' at offset 1"},
    {"a{10001}", FY_ELIMIT, "repetition bound at offset 1 is over 10000"},
    {"a{1,99999999999999999999}", FY_ELIMIT, "repetition bound"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        const ecase *e = &errors[i];
        fy_gbuild *b = NULL;
        assert_int_equal(fy_gbuild_new(&b), 0);
        char err[256] = "";
        int rule = 1234;
        int rc = fy_regex_compile(b, e->pat, strlen(e->pat), FY_REGEX_RAW, &rule, err, sizeof err);
        if (rc != e->rc || !strstr(err, e->msg) || strncmp(err, "pattern: ", 9) != 0) {
            fail_msg("/%s/: %d \"%s\", want %d \"%s\"", e->pat, rc, err, e->rc, e->msg);
        }
        assert_int_equal(rule, 1234);
        fy_gbuild_free(b);
    }
}

static int compile_rc(const char *pat, size_t len, char *err, size_t errlen)
{
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    int rule = -1;
    int rc = fy_regex_compile(b, pat, len, FY_REGEX_RAW, &rule, err, errlen);
    if (rc >= 0) {
        fy_grammar *g = NULL;
        assert_int_equal(fy_gbuild_finish(b, rule, &g, err, errlen), 0);
        fy_grammar_unref(g);
    }
    fy_gbuild_free(b);
    return rc;
}

static void test_caps(void **state)
{
    (void)state;
    char err[256];
    char *p = malloc(FY_REGEX_MAX_LEN + 2);
    assert_non_null(p);
    memset(p, 'a', FY_REGEX_MAX_LEN + 1);
    assert_true(compile_rc(p, FY_REGEX_MAX_LEN, err, sizeof err) >= 0);
    assert_int_equal(compile_rc(p, FY_REGEX_MAX_LEN + 1, err, sizeof err), FY_ELIMIT);
    assert_non_null(strstr(err, "pattern: "));
    /* {n,m} bounds. */
    assert_true(compile_rc("a{10000}", 8, err, sizeof err) >= 0);
    assert_true(compile_rc("a{0,10000}", 10, err, sizeof err) >= 0);
    assert_int_equal(compile_rc("a{1,10001}", 10, err, sizeof err), FY_ELIMIT);
    assert_int_equal(compile_rc("a{10001,}", 9, err, sizeof err), FY_ELIMIT);
    /* Nesting depth. */
    size_t n = 0;
    for (int i = 0; i < FY_REGEX_MAX_DEPTH; i++) {
        p[n++] = '(';
    }
    p[n++] = 'a';
    for (int i = 0; i < FY_REGEX_MAX_DEPTH; i++) {
        p[n++] = ')';
        p[n++] = '*';
    }
    assert_true(compile_rc(p, n, err, sizeof err) >= 0);
    n = 0;
    for (int i = 0; i <= FY_REGEX_MAX_DEPTH; i++) {
        p[n++] = '(';
    }
    p[n++] = 'a';
    for (int i = 0; i <= FY_REGEX_MAX_DEPTH; i++) {
        p[n++] = ')';
    }
    assert_int_equal(compile_rc(p, n, err, sizeof err), FY_ELIMIT);
    assert_non_null(strstr(err, "nested deeper than 32"));
    /* A repeated sequence of many optional parts would be quadratic. */
    n = 0;
    p[n++] = '(';
    for (int i = 0; i < 400; i++) {
        p[n++] = "ab"[i & 1]; /* not a?a?: that would merge into a{0,400} */
        p[n++] = '?';
    }
    p[n++] = ')';
    p[n++] = '*';
    assert_int_equal(compile_rc(p, n, err, sizeof err), FY_ELIMIT);
    assert_non_null(strstr(err, "optional parts in one repeated sequence"));
    for (size_t i = 1; i < n - 2; i += 2) {
        p[i] = 'a';
    }
    assert_true(compile_rc(p, n, err, sizeof err) >= 0);
    /* The deepest nesting, of alternations and nullable repetitions, still
     * parses within the state's depth cap. */
    static const char *const deep[][4] = {{"(x|", "a", ")*", "xaxa"},
                                          {"(a?", "b", ")*c?", "abcabbc"},
                                          {"((y?z?)", "w", ")+", "yzwzwyw"}};
    for (size_t d = 0; d < sizeof deep / sizeof deep[0]; d++) {
        n = 0;
        int times = d == 2 ? FY_REGEX_MAX_DEPTH / 2 : FY_REGEX_MAX_DEPTH;
        for (int i = 0; i < times; i++) {
            memcpy(p + n, deep[d][0], strlen(deep[d][0]));
            n += strlen(deep[d][0]);
        }
        memcpy(p + n, deep[d][1], strlen(deep[d][1]));
        n += strlen(deep[d][1]);
        for (int i = 0; i < times; i++) {
            memcpy(p + n, deep[d][2], strlen(deep[d][2]));
            n += strlen(deep[d][2]);
        }
        p[n] = 0;
        fy_grammar *g = compile(p, FY_REGEX_JSON_STRING);
        if (!accepts(g, deep[d][1]) || !accepts(g, deep[d][3])) {
            fail_msg("/%s/ refuses \"%s\" or \"%s\"", p, deep[d][1], deep[d][3]);
        }
        fy_grammar_unref(g);
    }
    free(p);
    /* The builder's own error comes back. */
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    while (fy_gb_rule(b) >= 0) {
    }
    int rule = -1;
    assert_int_equal(fy_regex_compile(b, "a", 1, FY_REGEX_RAW, &rule, err, sizeof err), FY_ELIMIT);
    fy_gbuild_free(b);
}

/* Grammar size grows with the pattern, not with its expansion: nested
 * optional and repeated groups stay small, and an unbounded repetition of a
 * nullable part becomes a repetition of its non-empty part. */
static void test_growth(void **state)
{
    (void)state;
    static const char *const pats[] = {
        "((((((((a?)*b?)*c?)*d?)*e?)*f?)*g?)*h?)*",
        "((((((((a|b?)(c|d?))?){2}){2}){2}){2}){2})",
        "(((a?b?c?)*(d?e?)*)?f?)*",
        "((a{0,3}){0,3}){0,3}",
        "(.?.?.?)+",
    };
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        fy_grammar *g = compile(pats[i], FY_REGEX_JSON_STRING);
        if (fy_grammar_n_elements(g) > 400 || fy_grammar_n_rules(g) > 100) {
            fail_msg("/%s/: %d rules, %d elements", pats[i], fy_grammar_n_rules(g),
                     fy_grammar_n_elements(g));
        }
        fy_grammar_unref(g);
        g = compile(pats[i], FY_REGEX_RAW);
        rcase c = {pats[i], NULL, {NULL}, {NULL}};
        cross_check(&c, g);
        fy_grammar_unref(g);
    }
    /* Adjacent repetitions of one atom merge: long strings of the language
     * are not lost to the parse state's stack cap. */
    fy_grammar *m = compile("a{0,500}a{0,500}", FY_REGEX_RAW);
    char *many = malloc(1001);
    assert_non_null(many);
    memset(many, 'a', 1001);
    fy_gstate *st = NULL;
    assert_int_equal(fy_gstate_new(m, &st), 0);
    assert_true(accepts_n(st, many, 1000));
    assert_false(accepts_n(st, many, 1001));
    fy_gstate_free(st);
    fy_grammar_unref(m);
    free(many);
    /* A literal of the longest pattern is one rule of its bytes. */
    char *p = malloc(FY_REGEX_MAX_LEN);
    assert_non_null(p);
    memset(p, 'x', FY_REGEX_MAX_LEN);
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    int rule = -1;
    assert_true(fy_regex_compile(b, p, FY_REGEX_MAX_LEN, FY_REGEX_RAW, &rule, NULL, 0) >= 0);
    fy_grammar *g = NULL;
    assert_int_equal(fy_gbuild_finish(b, rule, &g, NULL, 0), 0);
    assert_int_equal(fy_grammar_n_rules(g), 1);
    fy_grammar_unref(g);
    fy_gbuild_free(b);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),     cmocka_unit_test(test_nul),
        cmocka_unit_test(test_json_mode), cmocka_unit_test(test_json_cross),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_caps),
        cmocka_unit_test(test_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
