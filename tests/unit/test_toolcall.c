/* Unit tests for the streaming tool-call parsers (runner/api/toolcall.c).
 *
 * A table of model outputs per family, each with the content and the calls
 * (name, arguments) it must give. Every case runs three ways: the whole
 * text in one push, one byte per push, and cut in two at every possible
 * point; all must give the same result, and every report must keep the
 * callbacks' contract (indexes in order, arguments only for the call begun
 * last, no empty pieces, no character split). Then the family names and
 * template detection, callback errors, the size cap and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/utf8.h"
#include "runner/api/toolcall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLS 4

/* ------------------------------------------------------------ the recorder */

typedef struct {
    fy_buf content;
    int n;
    fy_buf names[MAX_CALLS];
    fy_buf args[MAX_CALLS];
    int broken; /* a report broke the callbacks' contract */
} result;

static void result_init(result *r)
{
    memset(r, 0, sizeof *r);
    fy_buf_init(&r->content, 8 << 20);
    for (int i = 0; i < MAX_CALLS; i++) {
        fy_buf_init(&r->names[i], 1 << 20);
        fy_buf_init(&r->args[i], 1 << 20);
    }
}

static void result_free(result *r)
{
    fy_buf_free(&r->content);
    for (int i = 0; i < MAX_CALLS; i++) {
        fy_buf_free(&r->names[i]);
        fy_buf_free(&r->args[i]);
    }
}

static int on_content(void *arg, const char *text, size_t len)
{
    result *r = arg;
    if (len == 0 || !fy_utf8_valid(text, len)) {
        r->broken = 1;
    }
    return fy_buf_append(&r->content, text, len) < 0;
}

static int on_begin(void *arg, int index, const char *name, size_t len)
{
    result *r = arg;
    if (index != r->n || index >= MAX_CALLS || len == 0 || !fy_utf8_valid(name, len)) {
        r->broken = 1;
        return 0;
    }
    r->n++;
    return fy_buf_append(&r->names[index], name, len) < 0;
}

static int on_args(void *arg, int index, const char *piece, size_t len)
{
    result *r = arg;
    if (index != r->n - 1 || index < 0 || len == 0 || !fy_utf8_valid(piece, len)) {
        r->broken = 1;
        return 0;
    }
    return fy_buf_append(&r->args[index], piece, len) < 0;
}

static const fy_toolcall_ops rec_ops = {on_content, on_begin, on_args};

/* ---------------------------------------------------------------- the table */

typedef struct {
    const char *name, *args;
} call_exp;

typedef struct {
    fy_toolcall_family f;
    const char *text;
    const char *content;
    int n;
    call_exp calls[MAX_CALLS];
} tc_case;

#define H FY_TOOLCALL_HERMES
#define L FY_TOOLCALL_LLAMA3
#define M FY_TOOLCALL_MISTRAL

static const tc_case cases[] = {
    /* --- hermes */
    {H, "Hello, world. 1 < 2 and <b>bold</b>.", "Hello, world. 1 < 2 and <b>bold</b>.", 0, {{0}}},
    {H, "", "", 0, {{0}}},
    {H,
     "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
     "\"Paris\"}}\n</tool_call>",
     "Let me check.\n",
     1,
     {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {H,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
     "\"Paris\"}}\n</tool_call>\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>\n",
     "",
     2,
     {{"get_weather", "{\"city\": \"Paris\"}"}, {"get_time", "{\"tz\": \"CET\"}"}}},
    {H,
     "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"g\","
     "\"arguments\":{\"a\":1}}</tool_call>  \n",
     "",
     2,
     {{"f", "{}"}, {"g", "{\"a\":1}"}}},
    /* Whitespace around the JSON is optional, and may be plentiful. */
    {H,
     "<tool_call> \t\n {\"name\" : \"f\" , \"arguments\" :\n {\"x\": [1, 2]} \n}\n\n</tool_call>",
     "",
     1,
     {{"f", "{\"x\": [1, 2]}"}}},
    {H, "<tool_call>garbage</tool_call>", "<tool_call>garbage</tool_call>", 0, {{0}}},
    {H, "<tool_call>{\"foo\": 1}</tool_call>", "<tool_call>{\"foo\": 1}</tool_call>", 0, {{0}}},
    {H, "<tool_call>\n{\"na", "<tool_call>\n{\"na", 0, {{0}}},
    {H, "Maybe <tool_call", "Maybe <tool_call", 0, {{0}}},
    {H, "<tool_call>", "<tool_call>", 0, {{0}}},
    {H,
     "<tool_call>{\"name\": 42, \"arguments\": {}}</tool_call>",
     "<tool_call>{\"name\": 42, \"arguments\": {}}</tool_call>",
     0,
     {{0}}},
    {H,
     "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",
     "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",
     0,
     {{0}}},
    /* Truncated once announced: the arguments end as they are. */
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2",
     "",
     1,
     {{"f", "{\"a\": [1, 2"}}},
    {H, "<tool_call>{\"name\": \"f\"", "", 1, {{"f", "{}"}}},
    {H, "<tool_call>{\"name\": \"now\"}</tool_call>", "", 1, {{"now", "{}"}}},
    /* Announced, then the structure breaks: the rest is content. */
    {H, "<tool_call>{\"name\": \"f\" oops</tool_call>", "oops</tool_call>", 1, {{"f", "{}"}}},
    /* Announced, arguments not valid JSON: kept as written. */
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1,,}}</tool_call>",
     "",
     1,
     {{"f", "{\"a\": 1,,}"}}},
    /* "arguments" before "name": held until the object ends, then checked. */
    {H,
     "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"}</tool_call>",
     "",
     1,
     {{"f", "{\"x\": 1}"}}},
    {H,
     "<tool_call>{\"arguments\": {\"x\": tru}, \"name\": \"f\"}</tool_call>",
     "<tool_call>{\"arguments\": {\"x\": tru}, \"name\": \"f\"}</tool_call>",
     0,
     {{0}}},
    {H,
     "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"",
     "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"",
     0,
     {{0}}},
    {H,
     "<tool_call>{\"name\": \"translate\", \"arguments\": {\"text\": \"h\xc3\xa9llo "
     "\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\"}}</tool_call>",
     "",
     1,
     {{"translate", "{\"text\": \"h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\"}"}}},
    {H,
     "Caf\xc3\xa9 \xf0\x9f\x98\x80 <tool_call>\xe2\x82\xac</tool_call>",
     "Caf\xc3\xa9 \xf0\x9f\x98\x80 <tool_call>\xe2\x82\xac</tool_call>",
     0,
     {{0}}},
    /* Braces, brackets and quotes inside strings; nesting. */
    {H,
     "<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"a } b \\\" {\", \"o\": {\"k\": "
     "[1, {\"x\": null}, \"]\"]}}}</tool_call>",
     "",
     1,
     {{"search", "{\"q\": \"a } b \\\" {\", \"o\": {\"k\": [1, {\"x\": null}, \"]\"]}}"}}},
    /* Arguments given as a string holding an object, and as other values. */
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": \"hello\"}</tool_call>",
     "",
     1,
     {{"f", "\"hello\""}}},
    {H, "<tool_call>{\"name\": \"f\", \"arguments\": 17}</tool_call>", "", 1, {{"f", "17"}}},
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": [1, \"}\"]}</tool_call>",
     "",
     1,
     {{"f", "[1, \"}\"]"}}},
    /* A name with escapes is decoded; other members are skipped; the first
     * name and arguments count. */
    {H,
     "<tool_call>{\"type\": \"function\", \"name\": \"get\\u005fweather\", \"id\": {\"a\": "
     "\"}\"}, \"arguments\": {}, \"name\": \"x\", \"arguments\": {\"b\": 2}}</tool_call>",
     "",
     1,
     {{"get_weather", "{}"}}},
    {H,
     "<tool_call><tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
     "<tool_call>",
     1,
     {{"f", "{}"}}},
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\nDone.",
     "\nDone.",
     1,
     {{"f", "{}"}}},
    {H,
     "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\n\n"
     "<tool_call>{\"x\"}</tool_call>",
     "<tool_call>{\"x\"}</tool_call>", /* the whitespace between calls is dropped */
     1,
     {{"f", "{}"}}},
    {H, "<tool_call>{\"name\": \"f\", \"arguments\": {}}\n</tool_", "", 1, {{"f", "{}"}}},
    /* --- llama3 */
    {L, "The capital of France is Paris.", "The capital of France is Paris.", 0, {{0}}},
    {L, "", "", 0, {{0}}},
    {L,
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
     "",
     1,
     {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {L, "<|python_tag|>{\"name\": \"f\", \"arguments\": {\"a\": 1}}", "", 1, {{"f", "{\"a\": 1}"}}},
    {L, "\n\n {\"name\": \"f\", \"parameters\": {}}\n", "", 1, {{"f", "{}"}}},
    {L,
     "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": [1]}}",
     "",
     2,
     {{"a", "{}"}, {"b", "{\"x\": [1]}"}}},
    {L,
     "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"a } b \\\" {\"}};{\"name\": "
     "\"b\", \"parameters\": {}}",
     "",
     2,
     {{"a", "{\"q\": \"a } b \\\" {\"}"}, {"b", "{}"}}},
    {L, "{\"foo\": 1}", "{\"foo\": 1}", 0, {{0}}},
    {L, "{\"name\": 5, \"parameters\": {}}", "{\"name\": 5, \"parameters\": {}}", 0, {{0}}},
    {L, "<|python_tag|>brave_search.call(query=\"x\")", "brave_search.call(query=\"x\")", 0, {{0}}},
    {L, "<|python_tag|>{\"foo\": 1}", "{\"foo\": 1}", 0, {{0}}},
    {L, " <|python_tag|> hello", "  hello", 0, {{0}}},
    {L, "<|python", "<|python", 0, {{0}}},
    {L, "Sure: {\"name\": \"f\"}", "Sure: {\"name\": \"f\"}", 0, {{0}}},
    {L, "{\"na", "{\"na", 0, {{0}}},
    {L, "{\"name\": \"f\", \"parameters\": {\"a\": \"b", "", 1, {{"f", "{\"a\": \"b"}}},
    {L, "{\"parameters\": {\"a\": 1}, \"name\": \"f\"}", "", 1, {{"f", "{\"a\": 1}"}}},
    {L, "{\"name\": \"f\", \"parameters\": {}}; garbage", "; garbage", 1, {{"f", "{}"}}},
    {L, "{\"name\": \"f\", \"parameters\": {}}\nThat is all.", "\nThat is all.", 1, {{"f", "{}"}}},
    {L,
     "{\"name\": \"say\", \"parameters\": {\"t\": \"\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89\"}}",
     "",
     1,
     {{"say", "{\"t\": \"\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89\"}"}}},
    {L, "\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9", 0, {{0}}},
    /* --- mistral */
    {M, "Just an answer [with brackets].", "Just an answer [with brackets].", 0, {{0}}},
    {M,
     "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
     "",
     1,
     {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {M,
     "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", "
     "\"arguments\": {}}]",
     "",
     2,
     {{"a", "{\"x\": 1}"}, {"b", "{}"}}},
    {M,
     "Checking. [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"q\": \"[TOOL_CALLS] ] }\"}}]\n",
     "Checking. ",
     1,
     {{"f", "{\"q\": \"[TOOL_CALLS] ] }\"}"}}},
    {M, "[TOOL_CALLS]not json", "[TOOL_CALLS]not json", 0, {{0}}},
    {M, "[TOOL_CALLS][{\"foo\": 1}]", "[TOOL_CALLS][{\"foo\": 1}]", 0, {{0}}},
    {M, "x [TOOL_CALL", "x [TOOL_CALL", 0, {{0}}},
    {M, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"na", ", {\"na", 1, {{"a", "{}"}}},
    {M,
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}] and then",
     " and then",
     1,
     {{"a", "{}"}}},
    {M,
     "[TOOL_CALLS][{\"arguments\": {\"u\": \"\xc3\xbc\"}, \"name\": \"f\"}]",
     "",
     1,
     {{"f", "{\"u\": \"\xc3\xbc\"}"}}},
    /* The newer form: [TOOL_CALLS]name[ARGS]{...}. */
    {M,
     "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
     "",
     1,
     {{"get_weather", "{\"city\": \"Paris\"}"}}},
    {M,
     "Ok.[TOOL_CALLS]a[ARGS]{\"x\": {\"y\": \"}\"}}[TOOL_CALLS]b[ARGS] {}",
     "Ok.",
     2,
     {{"a", "{\"x\": {\"y\": \"}\"}}"}, {"b", "{}"}}},
    {M, "[TOOL_CALLS]f[ARG", "[TOOL_CALLS]f[ARG", 0, {{0}}},
    {M, "[TOOL_CALLS]f[ARGS]{\"a\": 1", "", 1, {{"f", "{\"a\": 1"}}},
    {M, "[TOOL_CALLS]f[ARGS]oops", "oops", 1, {{"f", "{}"}}},
};

/* --------------------------------------------------------------- the runner */

/* Runs C's text pushed in pieces ending at CUTS[0..NCUTS) (then the rest),
 * into R. Fails the test on any error. */
static void run_cuts(const tc_case *c, const size_t *cuts, size_t ncuts, result *r)
{
    fy_toolcall_parser *p = NULL;
    result_init(r);
    assert_int_equal(fy_toolcall_parser_new(c->f, &rec_ops, r, &p), 0);
    size_t len = strlen(c->text), at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        assert_int_equal(fy_toolcall_push(p, c->text + at, end - at), 0);
        at = end;
    }
    assert_int_equal(fy_toolcall_finish(p), 0);
    assert_int_equal(fy_toolcall_count(p), r->n);
    fy_toolcall_parser_free(p);
}

/* Checks R against C; WAY names the split for the message. */
static void check(const tc_case *c, size_t idx, const char *way, result *r)
{
    const char *content = fy_buf_cstr(&r->content);
    int ok = !r->broken && strcmp(content, c->content) == 0 && r->n == c->n;
    for (int i = 0; ok && i < c->n; i++) {
        ok = strcmp(fy_buf_cstr(&r->names[i]), c->calls[i].name) == 0 &&
             strcmp(fy_buf_cstr(&r->args[i]), c->calls[i].args) == 0;
    }
    if (!ok) {
        print_error("case %zu (%s, %s): %s\n  text:    \"%s\"\n  content: \"%s\" (want \"%s\")\n"
                    "  calls:   %d (want %d)%s\n",
                    idx, fy_toolcall_family_name(c->f), way, r->broken ? "contract broken" : "",
                    c->text, content, c->content, r->n, c->n, "");
        for (int i = 0; i < r->n; i++) {
            print_error("    %s(%s)\n", fy_buf_cstr(&r->names[i]), fy_buf_cstr(&r->args[i]));
        }
        fail();
    }
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tc_case *c = &cases[i];
        size_t len = strlen(c->text);
        result r;

        run_cuts(c, NULL, 0, &r);
        check(c, i, "whole", &r);
        result_free(&r);

        size_t *bytes = malloc((len + 1) * sizeof *bytes);
        assert_non_null(bytes);
        for (size_t k = 0; k < len; k++) {
            bytes[k] = k + 1;
        }
        run_cuts(c, bytes, len, &r);
        check(c, i, "byte by byte", &r);
        result_free(&r);
        free(bytes);

        for (size_t cut = 0; cut <= len; cut++) {
            char way[64];
            snprintf(way, sizeof way, "cut at %zu", cut);
            run_cuts(c, &cut, 1, &r);
            check(c, i, way, &r);
            result_free(&r);
        }
    }
}

/* Mutations of the table's texts (markers, brackets, quotes spliced in, bytes
 * cut out), each parsed by every family whole, byte by byte and in random
 * pieces: the three must agree and keep the contract, whatever the text. */
static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static int results_equal(result *a, result *b)
{
    if (a->broken || b->broken || a->n != b->n ||
        strcmp(fy_buf_cstr(&a->content), fy_buf_cstr(&b->content)) != 0) {
        return 0;
    }
    for (int i = 0; i < a->n; i++) {
        if (strcmp(fy_buf_cstr(&a->names[i]), fy_buf_cstr(&b->names[i])) != 0 ||
            strcmp(fy_buf_cstr(&a->args[i]), fy_buf_cstr(&b->args[i])) != 0) {
            return 0;
        }
    }
    return 1;
}

static void test_mutations(void **state)
{
    (void)state;
    static const char *const bits[] = {
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "<|python_tag|>",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        ",",
        ";",
        ":",
        " ",
        "\n",
        "\"name\": \"f\"",
        "\"arguments\": ",
        "\"parameters\": {}",
        "\xc3\xa9",
        "\xf0\x9f\x98\x80",
        "<",
        "[TOOL",
    };
    uint32_t seed = 0x9e3779b9u;
    char text[1024];
    size_t cuts[3];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int m = 0; m < 64; m++) {
            size_t len = strlen(cases[i].text);
            memcpy(text, cases[i].text, len);
            for (int k = 0, edits = 1 + (int)(rng_next(&seed) % 3); k < edits; k++) {
                size_t at = len ? rng_next(&seed) % (len + 1) : 0;
                if (rng_next(&seed) % 2 && at < len) {
                    size_t cut = 1 + rng_next(&seed) % (len - at);
                    memmove(text + at, text + at + cut, len - at - cut);
                    len -= cut;
                } else {
                    const char *b = bits[rng_next(&seed) % (sizeof bits / sizeof bits[0])];
                    size_t bl = strlen(b);
                    if (len + bl >= sizeof text) {
                        continue;
                    }
                    memmove(text + at + bl, text + at, len - at);
                    memcpy(text + at, b, bl);
                    len += bl;
                }
            }
            text[len] = 0;
            if (!fy_utf8_valid(text, len)) {
                continue;
            }
            for (fy_toolcall_family f = H; f <= M; f++) {
                tc_case c = {f, text, "", 0, {{0}}};
                result whole, bytes, pieces;
                run_cuts(&c, NULL, 0, &whole);
                size_t *all = malloc((len + 1) * sizeof *all);
                assert_non_null(all);
                for (size_t k = 0; k < len; k++) {
                    all[k] = k + 1;
                }
                run_cuts(&c, all, len, &bytes);
                free(all);
                for (int k = 0; k < 3; k++) {
                    cuts[k] = len ? rng_next(&seed) % (len + 1) : 0;
                }
                /* Sorted: pieces run forward. */
                for (int a = 0; a < 3; a++) {
                    for (int b = a + 1; b < 3; b++) {
                        if (cuts[b] < cuts[a]) {
                            size_t t = cuts[a];
                            cuts[a] = cuts[b];
                            cuts[b] = t;
                        }
                    }
                }
                run_cuts(&c, cuts, 3, &pieces);
                if (!results_equal(&whole, &bytes) || !results_equal(&whole, &pieces)) {
                    print_error("%s: \"%s\"\n  whole: \"%s\" %d\n  bytes: \"%s\" %d\n",
                                fy_toolcall_family_name(f), text, fy_buf_cstr(&whole.content),
                                whole.n, fy_buf_cstr(&bytes.content), bytes.n);
                    fail();
                }
                result_free(&whole);
                result_free(&bytes);
                result_free(&pieces);
            }
        }
    }
}

/* ------------------------------------------------------------ the families */

static void test_family_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int rc;
        fy_toolcall_family f;
    } names[] = {
        {"hermes", 0, H},          {"qwen", 0, H},
        {"qwen2_5", 0, H},         {"llama3", 0, L},
        {"llama3_json", 0, L},     {"llama", 0, L},
        {"mistral", 0, M},         {"", FY_EINVAL, 0},
        {"Hermes", FY_EINVAL, 0},  {"none", FY_EINVAL, 0},
        {"llama3 ", FY_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        fy_toolcall_family f = (fy_toolcall_family)99;
        assert_int_equal(fy_toolcall_family_parse(names[i].name, &f), names[i].rc);
        assert_int_equal(f, names[i].rc == 0 ? names[i].f : (fy_toolcall_family)99);
    }
    fy_toolcall_family f = H;
    assert_int_equal(fy_toolcall_family_parse(NULL, &f), FY_EINVAL);
    assert_string_equal(fy_toolcall_family_name(H), "hermes");
    assert_string_equal(fy_toolcall_family_name(L), "llama3");
    assert_string_equal(fy_toolcall_family_name(M), "mistral");
    assert_string_equal(fy_toolcall_family_name(FY_TOOLCALL_NONE), "none");
    /* A family's name parses back to it. */
    for (fy_toolcall_family g = H; g <= M; g++) {
        assert_int_equal(fy_toolcall_family_parse(fy_toolcall_family_name(g), &f), 0);
        assert_int_equal(f, g);
    }
}

static void test_family_detect(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl;
        fy_toolcall_family f;
    } tmpls[] = {
        {"{%- if tools %}<tools>{{ tool | tojson }}</tools> ... <tool_call>\\n{\"name\": "
         "<function-name>, \"arguments\": <args-json-object>}\\n</tool_call>",
         H},
        {"{{- '<|python_tag|>' + tool_call.name + '.call(' }}", L},
        {"{{- \"Environment: ipython\\n\" }}", L},
        {"<|start_header_id|>user<|end_header_id|> {\"name\": function name, \"parameters\": "
         "dictionary of argument name and its value}",
         L},
        {"\"parameters\" without the header", FY_TOOLCALL_NONE},
        {"{{- '[AVAILABLE_TOOLS] [' }}", M},
        {"{{- '[TOOL_CALLS] [' }}", M},
        {"{% for message in messages %}<|im_start|>{{ message.role }}{% endfor %}",
         FY_TOOLCALL_NONE},
        {"", FY_TOOLCALL_NONE},
        /* Checked in order: a template naming two families gets the first. */
        {"<tool_call> [TOOL_CALLS]", H},
    };
    for (size_t i = 0; i < sizeof tmpls / sizeof tmpls[0]; i++) {
        assert_int_equal(fy_toolcall_family_detect(tmpls[i].tmpl, strlen(tmpls[i].tmpl)),
                         tmpls[i].f);
    }
    assert_int_equal(fy_toolcall_family_detect(NULL, 0), FY_TOOLCALL_NONE);
    /* LEN bounds the search. */
    const char *t = "xx<tool_call>";
    assert_int_equal(fy_toolcall_family_detect(t, 5), FY_TOOLCALL_NONE);
}

/* ---------------------------------------------------------------- the rest */

static void test_new_and_none(void **state)
{
    (void)state;
    fy_toolcall_parser *p = (fy_toolcall_parser *)&p;
    assert_int_equal(fy_toolcall_parser_new(H, NULL, NULL, &p), FY_EINVAL);
    assert_null(p);
    assert_int_equal(fy_toolcall_parser_new((fy_toolcall_family)7, &rec_ops, NULL, &p), FY_EINVAL);
    fy_toolcall_parser_free(NULL);

    /* NONE passes everything through, markers included. */
    result r;
    result_init(&r);
    assert_int_equal(fy_toolcall_parser_new(FY_TOOLCALL_NONE, &rec_ops, &r, &p), 0);
    const char *t = "<tool_call>{\"name\": \"f\"}</tool_call>";
    assert_int_equal(fy_toolcall_push(p, t, strlen(t)), 0);
    assert_int_equal(fy_toolcall_finish(p), 0);
    assert_string_equal(fy_buf_cstr(&r.content), t);
    assert_int_equal(fy_toolcall_count(p), 0);
    /* After finish: push refused, finish again a no-op. */
    assert_int_equal(fy_toolcall_push(p, "x", 1), FY_EINVAL);
    assert_int_equal(fy_toolcall_finish(p), 0);
    fy_toolcall_parser_free(p);
    result_free(&r);

    /* All callbacks NULL: reports dropped, calls still counted. */
    static const fy_toolcall_ops none = {0};
    assert_int_equal(fy_toolcall_parser_new(M, &none, NULL, &p), 0);
    t = "a[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\"}]";
    assert_int_equal(fy_toolcall_push(p, t, strlen(t)), 0);
    assert_int_equal(fy_toolcall_finish(p), 0);
    assert_int_equal(fy_toolcall_count(p), 2);
    fy_toolcall_parser_free(p);
}

/* Fails with RC on the TRIGGER-th report of kind KIND (0 content, 1 begin, 2 args). */
typedef struct {
    int kind, trigger, seen, rc;
} failer;

static int fail_report(failer *f, int kind)
{
    return kind == f->kind && ++f->seen == f->trigger ? f->rc : 0;
}

static int fail_content(void *arg, const char *t, size_t n)
{
    (void)t, (void)n;
    return fail_report(arg, 0);
}

static int fail_begin(void *arg, int i, const char *t, size_t n)
{
    (void)i, (void)t, (void)n;
    return fail_report(arg, 1);
}

static int fail_args(void *arg, int i, const char *t, size_t n)
{
    (void)i, (void)t, (void)n;
    return fail_report(arg, 2);
}

static void test_callback_errors(void **state)
{
    (void)state;
    static const fy_toolcall_ops ops = {fail_content, fail_begin, fail_args};
    static const struct {
        fy_toolcall_family f;
        int kind, rc;
        const char *text;
    } runs[] = {
        {H, 0, 7, "Hello <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"},
        {H, 1, -42, "Hello <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"},
        {H, 2, FY_EIO, "Hello <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"},
        {L, 1, 1, "{\"name\": \"f\", \"parameters\": {\"a\": 1}}"},
        {L, 2, 3, "{\"parameters\": {\"a\": 1}, \"name\": \"f\"}"},
        {L, 0, 5, "not a call"},
        {M, 1, 9, "[TOOL_CALLS]f[ARGS]{}"},
        {M, 2, 9, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": \"{}\"}]"},
        /* Content given back from a failed call. */
        {M, 0, 11, "[TOOL_CALLS]nope!"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        failer f = {runs[i].kind, 1, 0, runs[i].rc};
        fy_toolcall_parser *p = NULL;
        assert_int_equal(fy_toolcall_parser_new(runs[i].f, &ops, &f, &p), 0);
        int rc = fy_toolcall_push(p, runs[i].text, strlen(runs[i].text));
        if (rc == 0) {
            rc = fy_toolcall_finish(p); /* some reports come only at the end */
        }
        assert_int_equal(rc, runs[i].rc);
        /* Sticky. */
        assert_int_equal(fy_toolcall_push(p, "x", 1), runs[i].rc);
        assert_int_equal(fy_toolcall_finish(p), runs[i].rc);
        fy_toolcall_parser_free(p);
    }
}

/* A call past FY_TOOLCALL_MAX_BYTES is refused; as much plain content is not. */
static void test_limits(void **state)
{
    (void)state;
    size_t big = (size_t)FY_TOOLCALL_MAX_BYTES + 4096;
    char *x = malloc(big);
    assert_non_null(x);
    memset(x, 'x', big);

    for (fy_toolcall_family f = H; f <= M; f++) {
        result r;
        fy_toolcall_parser *p = NULL;
        result_init(&r);
        assert_int_equal(fy_toolcall_parser_new(f, &rec_ops, &r, &p), 0);
        assert_int_equal(fy_toolcall_push(p, x, big), 0);
        assert_int_equal(fy_toolcall_push(p, x, big), 0);
        assert_int_equal(fy_toolcall_finish(p), 0);
        assert_int_equal(r.content.len, 2 * big);
        fy_toolcall_parser_free(p);
        result_free(&r);
    }

    static const char *const heads[] = {
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"",
        "{\"name\": \"f\", \"parameters\": {\"a\": \"",
        "[TOOL_CALLS][{\"arguments\": {\"a\": \"",
    };
    for (fy_toolcall_family f = H; f <= M; f++) {
        result r;
        fy_toolcall_parser *p = NULL;
        result_init(&r);
        assert_int_equal(fy_toolcall_parser_new(f, &rec_ops, &r, &p), 0);
        const char *h = heads[f - H];
        assert_int_equal(fy_toolcall_push(p, h, strlen(h)), 0);
        int rc = 0;
        for (size_t at = 0; rc == 0 && at < big; at += 1000) {
            rc = fy_toolcall_push(p, x, 1000);
        }
        assert_int_equal(rc, FY_ETOOBIG);
        assert_int_equal(fy_toolcall_finish(p), FY_ETOOBIG);
        fy_toolcall_parser_free(p);
        result_free(&r);
    }
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_family_parse), cmocka_unit_test(test_family_detect),
        cmocka_unit_test(test_new_and_none), cmocka_unit_test(test_callback_errors),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
