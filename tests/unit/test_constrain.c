/* test_constrain.c: what a request's constraints compile to (constrain.h):
 * for each kind, texts its grammar accepts and refuses; the lazy grammar of
 * tool_choice auto per family, with its marker; the cache; and the errors
 * (parameter and JSON pointer) a bad schema gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runner/api/constrain.h"
#include "support/grammar_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOLS                                                                                   \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"strict\":true," \
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","        \
    "\"maxLength\":8}},\"required\":[\"city\"],\"additionalProperties\":false}}},{\"type\":"    \
    "\"function\",\"function\":{\"name\":\"ping\"}}]"
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"

struct ccase {
    fy_oai_kind kind;
    const char *body;
    fy_toolcall_family family;
    const char *trigger; /* NULL: none */
    const char *yes[4];
    const char *no[4];
};

static const struct ccase cases[] = {
    {FY_OAI_CHAT,
     "{" MSGS ",\"response_format\":{\"type\":\"json_object\"}}",
     FY_TOOLCALL_NONE,
     NULL,
     {" {}", "{\"a\": [1, null]}"},
     {"[]", "1", "{"}},
    {FY_OAI_COMPLETION,
     "{\"prompt\":\"x\",\"structured_outputs\":{\"choice\":[\"yes\",\"no\"]}}",
     FY_TOOLCALL_NONE,
     NULL,
     {"yes", "no"},
     {" yes", "maybe", "ye"}},
    {FY_OAI_COMPLETION,
     "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"[0-9]{2}-[a-z]+\"}}",
     FY_TOOLCALL_NONE,
     NULL,
     {"12-ab", "00-z"},
     {"1-ab", "12-", " 12-ab"}},
    {FY_OAI_COMPLETION,
     "{\"prompt\":\"x\",\"guided_json\":{\"type\":\"integer\",\"minimum\":3,\"maximum\":5}}",
     FY_TOOLCALL_NONE,
     NULL,
     {"3", " 5"},
     {"2", "6"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS ",\"tool_choice\":\"required\"}",
     FY_TOOLCALL_HERMES,
     NULL,
     {"[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}]",
      "[{\"name\":\"ping\",\"parameters\":{\"any\":1}}, {\"name\":\"ping\",\"parameters\":{}}]"},
     {"[]", "[{\"name\": \"nope\", \"parameters\": {}}]",
      "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris, France\"}}]"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false}",
     FY_TOOLCALL_HERMES,
     NULL,
     {"[{\"name\":\"ping\",\"parameters\":{}}]"},
     {"[{\"name\":\"ping\",\"parameters\":{}},{\"name\":\"ping\",\"parameters\":{}}]"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS
     ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
     FY_TOOLCALL_HERMES,
     NULL,
     {"{\"city\": \"Oslo\"}"},
     {"{}", "{\"city\": \"Oslo\", \"x\": 1}"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS "}",
     FY_TOOLCALL_HERMES,
     "<tool_call>",
     {"\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>",
      "{\"name\": \"ping\", \"arguments\": {\"k\": [1]}}</tool_call>"},
     {"{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Rome\"}}</tool_call>",
      "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS "}",
     FY_TOOLCALL_MISTRAL,
     "[TOOL_CALLS]",
     {"[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}, {\"name\": \"ping\", "
      "\"arguments\": {}}]"},
     {"[{\"name\": \"get_weather\", \"arguments\": {}}]"}},
    {FY_OAI_CHAT,
     "{" MSGS "," TOOLS "}",
     FY_TOOLCALL_LLAMA3,
     "<|python_tag|>",
     {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
      "{\"name\": \"ping\", \"parameters\": {}}; {\"name\": \"ping\", \"parameters\": {}}"},
     {"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}"}},
};

static void test_kinds(void **state)
{
    (void)state;
    fy_constrain *c = NULL;
    assert_int_equal(fy_constrain_new(&c), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct ccase *k = &cases[i];
        fy_oai_request r;
        fy_oai_error e;
        if (fy_oai_parse(k->kind, k->body, strlen(k->body), &r, &e) != 0) {
            fail_msg("case %zu: parse: %s", i, e.message);
        }
        fy_grammar *g = NULL;
        if (fy_constrain_request(c, &r, k->family, &g, &e) != 0 || !g) {
            fail_msg("case %zu: %s", i, e.message);
        }
        const char *t = fy_constrain_trigger(&r, k->family);
        if (k->trigger ? !t || strcmp(t, k->trigger) != 0 : t != NULL) {
            fail_msg("case %zu: trigger %s", i, t ? t : "(none)");
        }
        for (int j = 0; j < 4 && k->yes[j]; j++) {
            if (!accepts(g, k->yes[j])) {
                fail_msg("case %zu refuses %s", i, k->yes[j]);
            }
        }
        for (int j = 0; j < 4 && k->no[j]; j++) {
            if (accepts(g, k->no[j])) {
                fail_msg("case %zu accepts %s", i, k->no[j]);
            }
        }
        /* The same constraint again is the same grammar, from the cache. */
        fy_grammar *g2 = NULL;
        fy_constrain_stats s1, s2;
        fy_constrain_get_stats(c, &s1);
        assert_int_equal(fy_constrain_request(c, &r, k->family, &g2, &e), 0);
        fy_constrain_get_stats(c, &s2);
        assert_ptr_equal(g, g2);
        assert_int_equal(s2.hits, s1.hits + 1);
        fy_grammar_unref(g);
        fy_grammar_unref(g2);
        fy_oai_request_free(&r);
    }
    fy_constrain_free(c);
}

/* No constraint: no grammar. Tools under auto without a strict one: none
 * either (the text is parsed, not constrained). */
static void test_none(void **state)
{
    (void)state;
    fy_constrain *c = NULL;
    assert_int_equal(fy_constrain_new(&c), 0);
    static const char *const bodies[] = {
        "{" MSGS "}",
        "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        "{" MSGS "," TOOLS ",\"tool_choice\":\"none\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        fy_oai_request r;
        fy_oai_error e;
        assert_int_equal(fy_oai_parse(FY_OAI_CHAT, bodies[i], strlen(bodies[i]), &r, &e), 0);
        fy_grammar *g = (fy_grammar *)1;
        assert_int_equal(fy_constrain_request(c, &r, FY_TOOLCALL_HERMES, &g, &e), 0);
        assert_null(g);
        assert_null(fy_constrain_trigger(&r, FY_TOOLCALL_HERMES));
        fy_oai_request_free(&r);
    }
    fy_constrain_free(c);
}

/* A schema outside the subset: 400 naming the parameter and the pointer. */
static void test_errors(void **state)
{
    (void)state;
    fy_constrain *c = NULL;
    assert_int_equal(fy_constrain_new(&c), 0);
    static const struct {
        const char *body, *param, *needle;
    } bad[] = {
        {"{" MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}}}}",
         "response_format.json_schema.schema", "'/properties/a/not'"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
         "{\"type\":\"object\",\"minProperties\":1}}}],\"tool_choice\":\"required\"}",
         "tools[0].function.parameters", "'/minProperties'"},
        {"{" MSGS ",\"structured_outputs\":{\"regex\":\"(a)\\\\1\"}}", "structured_outputs.regex",
         "backreference"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fy_oai_request r;
        fy_oai_error e;
        assert_int_equal(fy_oai_parse(FY_OAI_CHAT, bad[i].body, strlen(bad[i].body), &r, &e), 0);
        fy_grammar *g = NULL;
        assert_int_equal(fy_constrain_request(c, &r, FY_TOOLCALL_HERMES, &g, &e), -1);
        if (e.status != 400 || strcmp(e.param, bad[i].param) != 0 ||
            !strstr(e.message, bad[i].needle)) {
            fail_msg("case %zu: %d %s %s", i, e.status, e.param, e.message);
        }
        assert_null(g);
        fy_oai_request_free(&r);
    }
    fy_constrain_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
