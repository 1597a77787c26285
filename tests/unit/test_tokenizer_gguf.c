/* Unit tests for the tokenizer from GGUF metadata (fy_tokenizer_from_gguf).
 *
 * With FERRY_TESTDATA: the SentencePiece vocabularies llama.cpp's tools wrote
 * into stories260K.gguf and tiny256-F32.gguf give llama.cpp's prompt ids
 * (llama_cpp_reference.json) and the ids of stories260K's tokenizer.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/gguf.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"
#include "support/tok_support.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------- */

static fy_tokenizer *from_gguf_file(const char *path)
{
    char err[512] = "";
    fy_gguf *g = NULL;
    int rc = fy_gguf_open(path, &g, err, sizeof err);
    if (rc) {
        fail_msg("open %s: %s", path, err);
    }
    fy_tokenizer *t = NULL;
    rc = fy_tokenizer_from_gguf(g, &t, err, sizeof err);
    fy_gguf_free(g);
    if (rc) {
        fail_msg("tokenizer of %s: %s (%s)", path, err, fy_strerror(rc));
    }
    return t;
}

/* ---- the GGUF files of the test data ----------------------------------------- */

/* Each prompt of REF_KEY in llama_cpp_reference.json encodes (with BOS) to
 * llama.cpp's ids, and to the ids stories260K's tokenizer.json gives. */
static void reference_prompts(const char *gguf_rel, const char *ref_key)
{
    NEED_TESTDATA(path, gguf_rel);
    NEED_TESTDATA(ref, "gguf/llama_cpp_reference.json");
    NEED_TESTDATA(tj, "models/stories260K/tokenizer.json");
    fy_tokenizer *t = from_gguf_file(path);
    char err[512] = "";
    fy_tokenizer *h = NULL;
    if (fy_tokenizer_load(tj, &h, err, sizeof err)) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_tokenizer_vocab_size(t), 512);
    assert_int_equal(fy_tokenizer_bos(t), 1);
    assert_int_equal(fy_tokenizer_eos(t), 2);
    assert_string_equal(fy_tokenizer_piece(t, 1), "<s>");
    assert_string_equal(fy_tokenizer_piece(t, 2), "</s>");
    assert_true(fy_tokenizer_is_special(t, 1));
    assert_true(fy_tokenizer_is_special(t, 2));
    assert_false(fy_tokenizer_is_special(t, 300));

    json_error_t je;
    json_t *j = json_load_file(ref, 0, &je);
    assert_non_null(j);
    json_t *cases = json_object_get(j, ref_key);
    assert_true(json_is_array(cases) && json_array_size(cases) >= 2);
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *prompt = json_string_value(json_object_get(cs, "prompt"));
        json_t *want = json_object_get(cs, "prompt_ids_with_bos");
        assert_non_null(prompt);
        int32_t *ids = NULL, *hids = NULL;
        size_t n = encode(t, prompt, strlen(prompt), 1, 0, &ids);
        size_t hn = encode(h, prompt, strlen(prompt), 1, 0, &hids);
        assert_int_equal(n, json_array_size(want));
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(ids[i], json_integer_value(json_array_get(want, i)));
        }
        assert_int_equal(hn, n);
        assert_memory_equal(hids, ids, n * sizeof *ids);
        /* Back to the prompt, BOS dropped as special. */
        char *out;
        size_t len;
        assert_int_equal(fy_tokenizer_decode(t, ids, n, 1, &out, &len), 0);
        assert_string_equal(out, prompt);
        free(out);
        /* And the greedy continuation decodes to llama.cpp's text. */
        json_t *g = json_object_get(cs, "greedy_ids");
        const char *text = json_string_value(json_object_get(cs, "text"));
        if (json_is_array(g) && text) {
            size_t ng = json_array_size(g);
            int32_t *gi = calloc(ng, sizeof *gi);
            for (size_t i = 0; i < ng; i++) {
                gi[i] = (int32_t)json_integer_value(json_array_get(g, i));
            }
            expect_stream(t, ids, n, gi, ng, text);
            free(gi);
        }
        free(ids);
        free(hids);
    }
    json_decref(j);
    fy_tokenizer_free(h);
    fy_tokenizer_free(t);
}

static void test_stories260k_gguf(void **state)
{
    (void)state;
    reference_prompts("models/stories260K/stories260K.gguf", "stories260K-F32.gguf");
}

static void test_tiny256_gguf(void **state)
{
    (void)state;
    reference_prompts("gguf/tiny256-F32.gguf", "tiny256-F32.gguf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_gguf),
        cmocka_unit_test(test_tiny256_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
