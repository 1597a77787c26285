/* Unit tests for runner/api/openai.c: every parameter's validation (the 400
 * names the parameter), the defaults, and the exact shapes of the responses,
 * SSE chunks, errors and logprobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runner/api/openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

/* Each body must be refused with 400 naming PARAM ("" for the body). */
static void test_invalid(void **state)
{
    (void)state;
    static const struct {
        fy_oai_kind kind;
        const char *body;
        const char *param;
    } cases[] = {
        {FY_OAI_COMPLETION, "", ""},
        {FY_OAI_COMPLETION, "{", ""},
        {FY_OAI_COMPLETION, "[1]", ""},
        {FY_OAI_COMPLETION, "{}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":null}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":5}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[1,-2]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[1,\"x\"]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[\"a\",[1]]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[[1],\"a\"]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[[1],[]]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[[1],[\"x\"]]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[1,[2]]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":[\"a\",null]}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":{}}", "prompt"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":1}", "echo"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":true,\"max_tokens\":-1}", "max_tokens"},
        {FY_OAI_CHAT, "{" MSGS ",\"max_tokens\":0}", "max_tokens"},
        {FY_OAI_CHAT, "{" MSGS ",\"echo\":true,\"max_tokens\":0}", "max_tokens"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"model\":3}", "model"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream\":\"yes\"}", "stream"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}",
         "stream_options"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":1}",
         "stream_options"},
        {FY_OAI_COMPLETION,
         "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}",
         "stream_options.include_usage"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":0}", "n"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":17}", "n"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":1.5}", "n"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":\"9\"}", "max_tokens"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":3000000000}", "max_tokens"},
        {FY_OAI_CHAT, "{" MSGS ",\"max_completion_tokens\":-1}", "max_completion_tokens"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":2.5}", "temperature"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":-0.1}", "temperature"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_p\":0}", "top_p"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_p\":1.01}", "top_p"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-2}", "top_k"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_k\":0.5}", "top_k"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"min_p\":1.5}", "min_p"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"presence_penalty\":3}", "presence_penalty"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"frequency_penalty\":-2.1}", "frequency_penalty"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"repetition_penalty\":0}", "repetition_penalty"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"seed\":\"1\"}", "seed"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":3}", "stop"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",1]}", "stop"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":\"\"}", "stop"},
        {FY_OAI_COMPLETION,
         "{\"prompt\":\"x\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
         "\"7\",\"8\",\"9\"]}",
         "stop"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop_token_ids\":[-1]}", "stop_token_ids"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"ignore_eos\":1}", "ignore_eos"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":\"2\"}", "logprobs"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"user\":7}", "user"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", "suffix"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", "best_of"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":[1]}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"a\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"-1\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"+1\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\" 1\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"1.5\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"99999999999\":1}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":-100.5}}", "logit_bias"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":\"1\"}}", "logit_bias"},
        {FY_OAI_CHAT, "{" MSGS ",\"logit_bias\":{\"5\":null}}", "logit_bias"},
        {FY_OAI_CHAT, "{" MSGS ",\"response_format\":{\"type\":\"xml\"}}", "response_format.type"},
        {FY_OAI_CHAT, "{" MSGS ",\"response_format\":\"json\"}", "response_format.type"},
        {FY_OAI_CHAT, "{" MSGS ",\"response_format\":{\"type\":\"json_schema\"}}",
         "response_format.json_schema"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
         "\"a b\",\"schema\":{}}}}",
         "response_format.json_schema.name"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
         "\"ab\",\"schema\":3}}}",
         "response_format.json_schema.schema"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
         "\"ab\",\"schema\":{},\"strict\":\"yes\"}}}",
         "response_format.json_schema.strict"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"grammar\":\"a\"}}",
         "structured_outputs.grammar"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"choice\":[]}}",
         "structured_outputs.choice"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"choice\":[\"a\",1]}}",
         "structured_outputs.choice"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"\"}}",
         "structured_outputs.regex"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"json\":\"[1\"}}",
         "structured_outputs.json"},
        {FY_OAI_COMPLETION,
         "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"a\",\"choice\":[\"b\"]}}",
         "structured_outputs.choice"},
        {FY_OAI_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":[]}", "structured_outputs"},
        {FY_OAI_CHAT, "{" MSGS ",\"tools\":[{\"type\":\"code\"}]}", "tools[0]"},
        {FY_OAI_CHAT, "{" MSGS ",\"tools\":[{\"type\":\"function\"}]}", "tools[0].function"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a.b\"}}]}",
         "tools[0].function.name"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":"
         "\"function\",\"function\":{\"name\":\"f\"}}]}",
         "tools[1].function.name"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
         "\"parameters\":[]}}]}",
         "tools[0].function.parameters"},
        {FY_OAI_CHAT, "{" MSGS ",\"tool_choice\":\"required\"}", "tool_choice"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
         "\"tool_choice\":\"always\"}",
         "tool_choice"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
         "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}",
         "tool_choice.function.name"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
         "\"parallel_tool_calls\":1}",
         "parallel_tool_calls"},
        {FY_OAI_CHAT,
         "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
         "\"response_format\":{\"type\":\"json_object\"}}",
         "response_format"},
        {FY_OAI_CHAT, "{}", "messages"},
        {FY_OAI_CHAT, "{\"messages\":[]}", "messages"},
        {FY_OAI_CHAT, "{\"messages\":{}}", "messages"},
        {FY_OAI_CHAT, "{\"messages\":[3]}", "messages[0]"},
        {FY_OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role"},
        {FY_OAI_CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"wizard\","
         "\"content\":\"x\"}]}",
         "messages[1].role"},
        {FY_OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content"},
        {FY_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content"},
        {FY_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         "messages[0].content[0].type"},
        {FY_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
         "messages[0].content[0].text"},
        {FY_OAI_CHAT, "{" MSGS ",\"tools\":{}}", "tools"},
        {FY_OAI_CHAT, "{" MSGS ",\"logprobs\":1}", "logprobs"},
        {FY_OAI_CHAT, "{" MSGS ",\"top_logprobs\":2}", "top_logprobs"},
        {FY_OAI_CHAT, "{" MSGS ",\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs"},
        {FY_OAI_CHAT, "{" MSGS ",\"continue_final_message\":true}", "continue_final_message"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_oai_request r;
        fy_oai_error e;
        int rc = fy_oai_parse(cases[i].kind, cases[i].body, strlen(cases[i].body), &r, &e);
        if (rc != -1 || e.status != 400 || strcmp(e.param, cases[i].param) != 0 || !e.message[0]) {
            fail_msg("case %zu %s: rc %d status %d param '%s' (want '%s') msg '%s'", i,
                     cases[i].body, rc, e.status, e.param, cases[i].param, e.message);
        }
        fy_oai_request_free(&r);
    }
}

static void test_defaults(void **state)
{
    (void)state;
    fy_oai_request r;
    fy_oai_error e;
    const char *b = "{\"prompt\":\"Once upon a time\"}";
    assert_int_equal(fy_oai_parse(FY_OAI_COMPLETION, b, strlen(b), &r, &e), 0);
    assert_int_equal(r.n_prompts, 1);
    assert_string_equal(r.prompts[0].text, "Once upon a time");
    assert_int_equal(r.prompts[0].len, 16);
    assert_int_equal(r.echo, 0);
    assert_int_equal(r.sampling.prompt_logprobs, -1);
    assert_null(r.model);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.stream, 0);
    assert_int_equal(r.has_max_tokens, 0);
    assert_int_equal(r.sampling.max_tokens, 16);
    assert_true(r.sampling.temperature == 1.0f);
    assert_true(r.sampling.top_p == 1.0f);
    assert_true(r.sampling.repetition_penalty == 1.0f);
    assert_int_equal(r.sampling.logprobs, -1);
    assert_int_equal(r.sampling.n_stop, 0);
    fy_oai_request_free(&r);
}

static void test_all_params(void **state)
{
    (void)state;
    fy_oai_request r;
    fy_oai_error e;
    const char *b =
        "{\"model\":\"m\",\"prompt\":[[1,403,407]],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"n\":3,\"max_tokens\":196,"
        "\"temperature\":0,\"top_p\":0.5,\"top_k\":-1,\"min_p\":0.1,"
        "\"presence_penalty\":1,\"frequency_penalty\":-1,\"repetition_penalty\":1.2,"
        "\"seed\":-5,\"stop\":[\"a\",\"bc\"],\"stop_token_ids\":[7],\"ignore_eos\":true,"
        "\"logprobs\":2,\"user\":\"u1\",\"best_of\":3,\"logit_bias\":{},\"future\":1}";
    int rc = fy_oai_parse(FY_OAI_COMPLETION, b, strlen(b), &r, &e);
    if (rc) {
        fail_msg("%s (%s)", e.message, e.param);
    }
    assert_string_equal(r.model, "m");
    assert_int_equal(r.n_prompts, 1);
    assert_int_equal(r.prompts[0].n_ids, 3);
    assert_int_equal(r.prompts[0].ids[1], 403);
    assert_null(r.prompts[0].text);
    assert_true(r.stream && r.include_usage);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.max_tokens, 196);
    assert_int_equal(r.sampling.max_tokens, 196);
    assert_true(r.sampling.temperature == 0.0f);
    assert_true(r.sampling.top_p == 0.5f);
    assert_int_equal(r.sampling.top_k, 0);
    assert_true(r.sampling.min_p > 0.09f && r.sampling.min_p < 0.11f);
    assert_true(r.sampling.presence_penalty == 1.0f);
    assert_true(r.sampling.frequency_penalty == -1.0f);
    assert_true(r.sampling.repetition_penalty > 1.19f);
    assert_true(r.sampling.has_seed);
    assert_int_equal((int64_t)r.sampling.seed, -5);
    assert_int_equal(r.sampling.n_stop, 2);
    assert_string_equal(r.sampling.stop[1], "bc");
    assert_int_equal(r.sampling.n_stop_ids, 1);
    assert_int_equal(r.sampling.stop_ids[0], 7);
    assert_int_equal(r.sampling.ignore_eos, 1);
    assert_int_equal(r.sampling.logprobs, 2);
    assert_string_equal(r.user, "u1");
    assert_int_equal(r.sampling.n_logit_bias, 0);
    fy_oai_request_free(&r);

    /* logit_bias: ids as decimal strings, biases -100..100 (integers or not). */
    b = "{\"prompt\":\"x\",\"logit_bias\":{\"0\":-100,\"2147483647\":100,\"17\":0.5}}";
    assert_int_equal(fy_oai_parse(FY_OAI_COMPLETION, b, strlen(b), &r, &e), 0);
    assert_int_equal(r.sampling.n_logit_bias, 3);
    assert_ptr_equal(r.sampling.logit_bias, r.logit_bias);
    float sum = 0;
    int64_t ids = 0;
    for (int i = 0; i < 3; i++) {
        sum += r.logit_bias[i].bias;
        ids += r.logit_bias[i].id;
    }
    assert_true(sum == 0.5f);
    assert_int_equal(ids, 2147483647LL + 17);
    fy_oai_request_free(&r);
    /* Batches: strings, token-id lists; echo with max_tokens 0 scores. */
    b = "{\"prompt\":[\"a\",\"\",\"ccc\"],\"n\":2}";
    assert_int_equal(fy_oai_parse(FY_OAI_COMPLETION, b, strlen(b), &r, &e), 0);
    assert_int_equal(r.n_prompts, 3);
    assert_int_equal(r.prompts[1].len, 0);
    assert_string_equal(r.prompts[2].text, "ccc");
    fy_oai_request_free(&r);
    b = "{\"prompt\":[[5],[1,2,3]],\"echo\":true,\"max_tokens\":0,\"logprobs\":1}";
    assert_int_equal(fy_oai_parse(FY_OAI_COMPLETION, b, strlen(b), &r, &e), 0);
    assert_int_equal(r.n_prompts, 2);
    assert_int_equal(r.prompts[0].n_ids, 1);
    assert_int_equal(r.prompts[1].ids[2], 3);
    assert_true(r.echo && r.has_max_tokens && r.max_tokens == 0);
    assert_int_equal(r.sampling.max_tokens, 0);
    assert_int_equal(r.sampling.prompt_logprobs, 1);
    fy_oai_request_free(&r);
    /* At most FY_OAI_MAX_PROMPTS prompts and FY_OAI_MAX_CHOICES choices. */
    for (int k = 0; k < 3; k++) {
        int np = k == 2 ? FY_OAI_MAX_CHOICES / 2 + 1 : FY_OAI_MAX_PROMPTS + k;
        char *big = malloc((size_t)np * 8 + 64);
        size_t bl = (size_t)sprintf(big, "{\"n\":%d,\"prompt\":[", k == 2 ? 2 : 1);
        for (int i = 0; i < np; i++) {
            bl += (size_t)sprintf(big + bl, "%s[%d]", i ? "," : "", i);
        }
        strcpy(big + bl, "]}");
        rc = fy_oai_parse(FY_OAI_COMPLETION, big, strlen(big), &r, &e);
        assert_int_equal(rc, k == 0 ? 0 : -1);
        if (rc) {
            assert_string_equal(e.param, "prompt");
        } else {
            assert_int_equal(r.n_prompts, np);
        }
        fy_oai_request_free(&r);
        free(big);
    }
    /* At most FY_OAI_MAX_LOGIT_BIAS entries. */
    for (int k = FY_OAI_MAX_LOGIT_BIAS; k <= FY_OAI_MAX_LOGIT_BIAS + 1; k++) {
        char *big = malloc((size_t)k * 16 + 64);
        size_t bl = (size_t)sprintf(big, "{" MSGS ",\"logit_bias\":{");
        for (int i = 0; i < k; i++) {
            bl += (size_t)sprintf(big + bl, "%s\"%d\":1", i ? "," : "", i);
        }
        strcpy(big + bl, "}}");
        rc = fy_oai_parse(FY_OAI_CHAT, big, strlen(big), &r, &e);
        assert_int_equal(rc, k <= FY_OAI_MAX_LOGIT_BIAS ? 0 : -1);
        if (rc) {
            assert_string_equal(e.param, "logit_bias");
        } else {
            assert_int_equal(r.sampling.n_logit_bias, k);
        }
        fy_oai_request_free(&r);
        free(big);
    }

    /* Chat: max_completion_tokens wins over max_tokens; logprobs shape. */
    b = "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"a\"}]},{\"role\":\"assistant\",\"content\":null}],"
        "\"max_tokens\":5,\"max_completion_tokens\":7,\"logprobs\":true,\"top_logprobs\":4,"
        "\"stop\":\"x\",\"add_generation_prompt\":false,\"tools\":[]}";
    rc = fy_oai_parse(FY_OAI_CHAT, b, strlen(b), &r, &e);
    if (rc) {
        fail_msg("%s (%s)", e.message, e.param);
    }
    assert_int_equal(r.max_tokens, 7);
    assert_int_equal(r.sampling.logprobs, 4);
    assert_int_equal(r.sampling.n_stop, 1);
    assert_string_equal(r.stop[0], "x");
    assert_int_equal(json_array_size(r.messages), 3);
    assert_int_equal(r.add_generation_prompt, 0);
    assert_non_null(r.tools);
    fy_oai_request_free(&r);

    /* Chat logprobs without top_logprobs: the token's own only. */
    b = "{" MSGS ",\"logprobs\":true}";
    assert_int_equal(fy_oai_parse(FY_OAI_CHAT, b, strlen(b), &r, &e), 0);
    assert_int_equal(r.sampling.logprobs, 0);
    fy_oai_request_free(&r);
    /* Null means absent. */
    b = "{" MSGS ",\"temperature\":null,\"stop\":null,\"n\":null,\"logprobs\":null}";
    assert_int_equal(fy_oai_parse(FY_OAI_CHAT, b, strlen(b), &r, &e), 0);
    assert_true(r.sampling.temperature == 1.0f);
    assert_int_equal(r.n, 1);
    fy_oai_request_free(&r);
}

static void test_error_json(void **state)
{
    (void)state;
    fy_oai_error e;
    assert_int_equal(fy_oai_fail(&e, 400, "n", "invalid_value", "'n' must be %d", 3), -1);
    size_t len;
    char *s = fy_oai_error_json(&e, &len);
    assert_string_equal(s,
                        "{\"error\":{\"message\":\"'n' must be 3\",\"type\":"
                        "\"invalid_request_error\",\"param\":\"n\",\"code\":\"invalid_value\"}}\n");
    assert_int_equal(len, strlen(s));
    free(s);
    fy_oai_fail(&e, 503, NULL, NULL, "busy \"now\"");
    s = fy_oai_error_sse(&e, &len);
    assert_string_equal(s, "data: {\"error\":{\"message\":\"busy \\\"now\\\"\",\"type\":"
                           "\"server_error\",\"param\":null,\"code\":null}}\n\n");
    assert_int_equal(len, strlen(s));
    free(s);
}

static void test_responses(void **state)
{
    (void)state;
    fy_oai_choice ch[2] = {{"Hello", 5, "stop", NULL, NULL}, {"W\xff", 2, "length", NULL, NULL}};
    fy_oai_usage u = {5, 7, 2};
    size_t len;
    char *s = fy_oai_response_json(FY_OAI_COMPLETION, "cmpl-1", 100, "m", ch, 2, &u, &len);
    assert_string_equal(
        s, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":100,\"model\":\"m\","
           "\"choices\":[{\"index\":0,\"text\":\"Hello\",\"logprobs\":null,\"finish_reason\":"
           "\"stop\"},{\"index\":1,\"text\":\"W\xef\xbf\xbd\",\"logprobs\":null,"
           "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
           "\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":2}}}");
    free(s);
    s = fy_oai_response_json(FY_OAI_CHAT, "chatcmpl-1", 100, "m", ch, 1, &u, &len);
    assert_string_equal(
        s, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":100,\"model\":\"m\","
           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello\"},"
           "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
           "\"completion_tokens\":7,\"total_tokens\":12,\"prompt_tokens_details\":"
           "{\"cached_tokens\":2}}}");
    free(s);

    s = fy_oai_chunk_sse(FY_OAI_CHAT, "c", 1, "m", 0, 1, "", 0, NULL, NULL, &len);
    assert_string_equal(s, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                           "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                           "\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":"
                           "null}]}\n\n");
    assert_int_equal(len, strlen(s));
    free(s);
    s = fy_oai_chunk_sse(FY_OAI_CHAT, "c", 1, "m", 2, 0, "", 0, NULL, "stop", &len);
    assert_string_equal(s, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                           "\"model\":\"m\",\"choices\":[{\"index\":2,\"delta\":{},\"logprobs\":"
                           "null,\"finish_reason\":\"stop\"}]}\n\n");
    free(s);
    s = fy_oai_chunk_sse(FY_OAI_COMPLETION, "c", 1, "m", 0, 0, "a\nb", 3, NULL, NULL, &len);
    assert_string_equal(s, "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,"
                           "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"a\\nb\","
                           "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    free(s);
    s = fy_oai_usage_chunk_sse(FY_OAI_CHAT, "c", 1, "m", &u, &len);
    assert_string_equal(s, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                           "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
                           "\"completion_tokens\":7,\"total_tokens\":12,\"prompt_tokens_details\":"
                           "{\"cached_tokens\":2}}}\n\n");
    free(s);
    s = fy_oai_models_json("m", 5, 512, &len);
    assert_string_equal(s, "{\"object\":\"list\",\"data\":[{\"id\":\"m\",\"object\":\"model\","
                           "\"created\":5,\"owned_by\":\"ferry\",\"root\":\"m\",\"max_model_len\":"
                           "512}]}");
    free(s);

    char id[64];
    fy_oai_make_id(FY_OAI_CHAT, id, sizeof id);
    assert_int_equal(strlen(id), 9 + 24);
    assert_memory_equal(id, "chatcmpl-", 9);
    fy_oai_make_id(FY_OAI_COMPLETION, id, sizeof id);
    assert_int_equal(strlen(id), 5 + 24);
    assert_string_equal(fy_oai_finish_reason(FY_FINISH_STOP), "stop");
    assert_string_equal(fy_oai_finish_reason(FY_FINISH_LENGTH), "length");
    assert_null(fy_oai_finish_reason(FY_FINISH_NONE));
}

/* Token texts for the logprobs tests: id 1 "a", 2 "bb", 3 a lone byte. */
static int tok_text(void *arg, int32_t id, char *buf, size_t cap)
{
    (void)arg;
    const char *t = id == 1 ? "a" : id == 2 ? "bb" : id == 3 ? "\xe2" : NULL;
    if (!t) {
        return -3;
    }
    snprintf(buf, cap, "%s", t);
    return (int)strlen(t);
}

static void test_logprobs(void **state)
{
    (void)state;
    fy_gen_token t = {.id = 1, .logprob = -0.5f, .n_top = 2};
    t.top[0] = (fy_token_logprob){1, -0.5f};
    t.top[1] = (fy_token_logprob){3, -1.0f};
    json_t *lp = fy_oai_logprobs_new(FY_OAI_CHAT);
    assert_int_equal(fy_oai_logprobs_add(lp, FY_OAI_CHAT, &t, 2, 0, tok_text, NULL), 0);
    char *s = json_dumps(lp, JSON_COMPACT);
    assert_string_equal(s, "{\"content\":[{\"token\":\"a\",\"logprob\":-0.5,\"bytes\":[97],"
                           "\"top_logprobs\":[{\"token\":\"a\",\"logprob\":-0.5,\"bytes\":[97]},"
                           "{\"token\":\"\xef\xbf\xbd\",\"logprob\":-1.0,\"bytes\":[226]}]}]}");
    free(s);
    json_decref(lp);

    lp = fy_oai_logprobs_new(FY_OAI_COMPLETION);
    t.id = 2;
    t.top[0] = (fy_token_logprob){2, -0.25f};
    assert_int_equal(fy_oai_logprobs_add(lp, FY_OAI_COMPLETION, &t, 1, 3, tok_text, NULL), 0);
    t.id = 1;
    assert_int_equal(fy_oai_logprobs_add(lp, FY_OAI_COMPLETION, &t, 0, 5, tok_text, NULL), 0);
    s = json_dumps(lp, JSON_COMPACT);
    assert_string_equal(s, "{\"tokens\":[\"bb\",\"a\"],\"token_logprobs\":[-0.5,-0.5],"
                           "\"top_logprobs\":[{\"bb\":-0.25},null],\"text_offset\":[3,5]}");
    free(s);
    /* A callback error is passed on. */
    t.id = 9;
    assert_int_equal(fy_oai_logprobs_add(lp, FY_OAI_COMPLETION, &t, 0, 5, tok_text, NULL), -3);
    json_decref(lp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid),    cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_params), cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_responses),  cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
