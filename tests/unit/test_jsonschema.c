/* test_jsonschema.c: JSON Schema to grammar. Table-driven: each schema with
 * texts its grammar must accept and texts it must refuse; each keyword
 * outside the subset and each cap with its error and JSON pointer; and
 * random walks through each grammar (bytes drawn from what the state
 * allows) whose every finished text parses as JSON. ajv's verdict on model
 * output is tests/api's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/limits.h"
#include "runner/api/jsonschema.h"
#include "support/grammar_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fy_grammar *compile_text(const char *schema, int *rc, fy_jsonschema_error *e)
{
    json_error_t je;
    json_t *s = json_loads(schema, JSON_DECODE_ANY, &je);
    if (!s) {
        fail_msg("bad test schema %s: %s", schema, je.text);
    }
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    fy_grammar *g = NULL;
    int r = fy_jsonschema_compile(b, s, 1, e);
    if (r >= 0) {
        char err[256];
        r = fy_gbuild_finish(b, r, &g, err, sizeof err);
        if (r < 0) {
            snprintf(e->message, sizeof e->message, "%s", err);
        }
    }
    *rc = r < 0 ? r : 0;
    fy_gbuild_free(b);
    json_decref(s);
    return g;
}

struct accept_case {
    const char *schema;
    const char *yes[10];
    const char *no[10];
};

static const struct accept_case accept_cases[] = {
    {"{\"type\":\"string\"}",
     {"\"\"", "\"a b\"", "\"\\\"\\\\\\n\\u00e9\"", "\"\xc3\xa9\""},
     {"\"", "a", "\"\\x\"", "\"\\ud800\"", "\"\x01\"", "\"\xc3\""}},
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}",
     {"\"ab\"", "\"abc\"", "\"\\n\\t\"", "\"\xc3\xa9\xc3\xa9\""},
     {"\"a\"", "\"abcd\""}},
    {"{\"type\":\"integer\"}",
     {"0", "-7", "123456789012345"},
     {"01", "1.5", "1e3", "-", "1234567890123456"}},
    {"{\"type\":\"integer\",\"minimum\":-12,\"maximum\":345}",
     {"-12", "-1", "0", "9", "10", "99", "100", "299", "345"},
     {"-13", "346", "400", "-0x", "1000"}},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":10}",
     {"1", "9"},
     {"0", "10"}},
    {"{\"type\":\"integer\",\"minimum\":1000}",
     {"1000", "999999", "123456789012345"},
     {"999", "-1"}},
    {"{\"type\":\"number\"}", {"0", "-1.25", "3e10", "2.5E-3"}, {".5", "1.", "+1", "1e123"}},
    {"{\"type\":\"number\",\"minimum\":0}", {"0", "1.5"}, {"-1"}},
    {"{\"type\":\"boolean\"}", {"true", "false"}, {"True", "1"}},
    {"{\"type\":[\"string\",\"null\"]}", {"null", "\"x\""}, {"1"}},
    {"{\"type\":\"integer\",\"nullable\":true}", {"null", "4"}, {"\"4\""}},
    {"{\"enum\":[\"red\",2,null,{\"a\":[1]}]}",
     {"\"red\"", "2", "null", "{\"a\":[1]}"},
     {"\"blue\"", "3"}},
    {"{\"const\":\"only\"}", {"\"only\""}, {"\"other\""}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
     "\"string\"}},\"required\":[\"a\"]}",
     {"{\"a\":1}", "{\"a\": 1, \"b\": \"x\"}", "{ \"a\" : 1 , \"b\" : \"\" }",
      "{\n  \"a\": 1,\n  \"b\": \"y\"\n}"},
     {"{}", "{\"b\":\"x\"}", "{\"b\":\"x\",\"a\":1}", "{\"a\":1,\"c\":2}", "{\"a\":1,}"}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
     "\"integer\"}}}",
     {"{}", "{\"a\":1}", "{\"b\":2}", "{\"a\":1,\"b\":2}"},
     {"{,\"b\":2}", "{\"a\":1,}"}},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
     {"{}", "{\"x\":1,\"y\":2}"},
     {"{\"x\":\"1\"}"}},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}",
     {"[1]", "[1,2,3]", "[ 1 , 2 ]"},
     {"[]", "[1,2,3,4]", "[1,]"}},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],"
     "\"items\":false,\"minItems\":1}",
     {"[\"a\"]", "[\"a\",1]"},
     {"[]", "[1]", "[\"a\",1,2]"}},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"}],\"items\":{\"type\":"
     "\"boolean\"}}",
     {"[]", "[\"a\"]", "[\"a\",true,false]"},
     {"[true]"}},
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":1}]}",
     {"5", "\"a\""},
     {"\"ab\"", "true"}},
    {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
     "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":2}},"
     "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}",
     {"{\"v\":1}", "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}"},
     {"{\"v\":1,\"kids\":[{}]}"}},
    {"{\"type\":\"string\",\"format\":\"date\"}",
     {"\"2024-01-31\"", "\"1999-02-28\"", "\"2000-04-30\""},
     {"\"2024-02-30\"", "\"2024-04-31\"", "\"2024-13-01\"", "\"2024-00-10\"", "\"24-01-01\""}},
    {"{\"type\":\"string\",\"format\":\"date-time\"}",
     {"\"2024-01-31T23:59:59Z\"", "\"2024-01-31T00:00:00.123+05:30\""},
     {"\"2024-01-31T24:00:00Z\"", "\"2024-01-31 10:00:00Z\"", "\"2024-01-31T10:00:00\""}},
    {"{\"type\":\"string\",\"format\":\"uuid\"}",
     {"\"123e4567-e89b-12d3-a456-426614174000\""},
     {"\"123e4567e89b12d3a456426614174000\"", "\"123e4567-e89b-12d3-a456-42661417400g\""}},
    {"{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3}$\"}",
     {"\"AB-123\""},
     {"\"ab-123\"", "\"AB-12\"", "\"AB-1234\""}},
    {"{\"type\":\"string\",\"pattern\":\"a\\\"b|c\\\\\\\\d\"}",
     {"\"a\\\"b\"", "\"c\\\\d\""},
     {"\"a\"b\"", "\"cd\""}},
    {"{}", {"1", "\"s\"", "[1,{\"a\":null}]", "{\"x\":[true]}"}, {"", "[1,"}},
    {"{\"title\":\"T\",\"description\":\"d\",\"type\":\"integer\",\"default\":1}", {"1"}, {"x"}},
};

static void test_accepts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof accept_cases / sizeof accept_cases[0]; i++) {
        const struct accept_case *c = &accept_cases[i];
        int rc;
        fy_jsonschema_error e;
        fy_grammar *g = compile_text(c->schema, &rc, &e);
        if (rc) {
            fail_msg("%s: %s at '%s'", c->schema, e.message, e.pointer);
        }
        for (int k = 0; k < 10 && c->yes[k]; k++) {
            if (!accepts(g, c->yes[k])) {
                fail_msg("%s refuses %s", c->schema, c->yes[k]);
            }
        }
        for (int k = 0; k < 10 && c->no[k]; k++) {
            if (accepts(g, c->no[k])) {
                fail_msg("%s accepts %s", c->schema, c->no[k]);
            }
        }
        fy_grammar_unref(g);
    }
}

struct refuse_case {
    const char *schema;
    int rc;
    const char *pointer;
    const char *needle; /* in the message */
};

static const struct refuse_case refuse_cases[] = {
    {"{\"type\":\"string\",\"contentEncoding\":\"base64\"}", FY_EINVAL, "/contentEncoding",
     "'contentEncoding' is not supported"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"uniqueItems\":true}}}",
     FY_EINVAL, "/properties/a/uniqueItems", "uniqueItems"},
    {"{\"type\":\"object\",\"patternProperties\":{}}", FY_EINVAL, "/patternProperties",
     "patternProperties"},
    {"{\"type\":\"integer\",\"multipleOf\":3}", FY_EINVAL, "/multipleOf", "multipleOf"},
    {"{\"type\":\"string\",\"format\":\"email\"}", FY_EINVAL, "/format", "email"},
    {"{\"type\":\"number\",\"maximum\":5}", FY_EINVAL, "/maximum", "on a number"},
    {"{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":1}]}", FY_EINVAL, "/allOf", "more than one"},
    {"{\"anyOf\":[{\"type\":\"integer\"}],\"minimum\":3}", FY_EINVAL, "/minimum", "beside"},
    {"{\"$ref\":\"#/$defs/missing\"}", FY_EINVAL, "/$ref", "names nothing"},
    {"{\"$ref\":\"https://example.com/s.json\"}", FY_EINVAL, "/$ref", "JSON pointer"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", FY_EINVAL,
     "/required/0", "'b'"},
    {"{\"type\":\"strin\"}", FY_EINVAL, "/type", "unknown type"},
    {"{\"type\":\"string\",\"minLength\":5,\"maxLength\":2}", FY_EINVAL, "/maxLength", "below"},
    {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":2}", FY_EINVAL, "/maximum", "no value"},
    {"{\"type\":\"string\",\"maxLength\":1000000}", FY_ELIMIT, "/maxLength", "cap"},
    {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", FY_EINVAL, "",
     "no finite text"},
    {"{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}},"
     "\"$ref\":\"#/$defs/a\"}",
     FY_EINVAL, "", "left-recursive"},
    {"{\"$defs\":{\"a\":{\"type\":\"integer\",\"bogus\":1}},\"$ref\":\"#/$defs/a\"}", FY_EINVAL,
     "/$defs/a/bogus", "'bogus'"},
    {"false", FY_EINVAL, "", "accepts nothing"},
    {"{\"type\":\"string\",\"pattern\":\"(?=a)b\"}", FY_EINVAL, "/pattern", "lookahead"},
    {"{\"type\":\"string\",\"pattern\":\"a\",\"maxLength\":3}", FY_EINVAL, "/pattern",
     "minLength/maxLength"},
};

static void test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refuse_cases / sizeof refuse_cases[0]; i++) {
        const struct refuse_case *c = &refuse_cases[i];
        int rc;
        fy_jsonschema_error e;
        fy_grammar *g = compile_text(c->schema, &rc, &e);
        if (rc != c->rc || strcmp(e.pointer, c->pointer) != 0 || !strstr(e.message, c->needle)) {
            fail_msg("%s: rc %d (want %d), pointer '%s' (want '%s'), message '%s' (want '%s')",
                     c->schema, rc, c->rc, e.pointer, c->pointer, e.message, c->needle);
        }
        assert_null(g);
    }
}

/* Nesting past the cap, and a schema past the byte cap. */
static void test_caps(void **state)
{
    (void)state;
    char *deep = malloc(64 * 1024);
    assert_non_null(deep);
    size_t n = 0;
    for (int i = 0; i < FY_JSONSCHEMA_MAX_DEPTH + 2; i++) {
        n += (size_t)sprintf(deep + n, "{\"type\":\"array\",\"items\":");
    }
    n += (size_t)sprintf(deep + n, "{}");
    for (int i = 0; i < FY_JSONSCHEMA_MAX_DEPTH + 2; i++) {
        deep[n++] = '}';
    }
    deep[n] = 0;
    int rc;
    fy_jsonschema_error e;
    assert_null(compile_text(deep, &rc, &e));
    assert_int_equal(rc, FY_ELIMIT);
    assert_non_null(strstr(e.message, "deeper"));
    free(deep);
    size_t big = FY_JSONSCHEMA_MAX_BYTES + 100;
    char *wide = malloc(big + 64);
    assert_non_null(wide);
    n = (size_t)sprintf(wide, "{\"description\":\"");
    memset(wide + n, 'x', big);
    n += big;
    sprintf(wide + n, "\"}");
    assert_null(compile_text(wide, &rc, &e));
    assert_int_equal(rc, FY_ELIMIT);
    assert_non_null(strstr(e.message, "bytes"));
    free(wide);
    /* An enum of 10,000 seven-letter strings: under the byte cap, over the
     * grammar's element cap. */
    char *many = malloc(200 * 1024);
    assert_non_null(many);
    n = (size_t)sprintf(many, "{\"enum\":[");
    for (int i = 0; i < 10000; i++) {
        n += (size_t)sprintf(many + n, "%s\"s%06d\"", i ? "," : "", i);
    }
    sprintf(many + n, "]}");
    assert_true(strlen(many) < FY_JSONSCHEMA_MAX_BYTES);
    assert_null(compile_text(many, &rc, &e));
    assert_int_equal(rc, FY_ELIMIT);
    assert_non_null(strstr(e.message, "caps"));
    free(many);
}

/* Random texts of each accepting schema, a byte at a time from the bytes the
 * state allows (closing early where it can), all parse as JSON. */
static void test_random_texts(void **state)
{
    (void)state;
    uint64_t rng = 7;
    for (size_t i = 0; i < sizeof accept_cases / sizeof accept_cases[0]; i++) {
        int rc;
        fy_jsonschema_error e;
        fy_grammar *g = compile_text(accept_cases[i].schema, &rc, &e);
        assert_int_equal(rc, 0);
        for (int run = 0; run < 40; run++) {
            fy_gstate *st = NULL;
            assert_int_equal(fy_gstate_new(g, &st), 0);
            char text[8192];
            size_t len = 0;
            while (len < sizeof text - 1) {
                if (fy_gstate_accepting(st) && (!fy_gstate_can_continue(st) || len > 200)) {
                    break;
                }
                fy_byteset next;
                fy_gstate_next_bytes(st, &next);
                int allowed[256], na = 0;
                for (int b = 0; b < 256; b++) {
                    if (fy_byteset_has(&next, (unsigned)b)) {
                        allowed[na++] = b;
                    }
                }
                assert_true(na > 0);
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                char c = (char)allowed[(rng >> 33) % (uint64_t)na];
                /* Some bytes a stack allows die one byte later in others: retry. */
                if (fy_gstate_feed(st, &c, 1) == 0) {
                    text[len++] = c;
                }
            }
            text[len] = 0;
            if (fy_gstate_accepting(st)) {
                json_error_t je;
                json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
                if (!v) {
                    fail_msg("%s generated %s: %s", accept_cases[i].schema, text, je.text);
                }
                json_decref(v);
            }
            fy_gstate_free(st);
        }
        fy_grammar_unref(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_random_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
