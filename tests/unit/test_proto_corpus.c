/* The seed corpus of tests/fuzz/fuzz_proto_decode.c: valid frame sequences of
 * every type, for each of the driver's modes.
 *
 * This test generates the seeds, runs each through the fuzz driver (which it
 * includes) expecting no protocol error, and checks that the committed files
 * in tests/fuzz/corpus/proto_decode/ are exactly these seeds. After a wire
 * format change, rewrite them with:
 *   FERRY_WRITE_CORPUS=1 FERRY_SRC=/path/to/ferry build/tests/test_proto_corpus */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../fuzz/fuzz_proto_decode.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(fy_buf *b, const fyp_frame *f)
{
    assert_int_equal(fyp_frame_encode(b, f), 0);
}

static void b_hello(fy_buf *b)
{
    static const fy_slice models[] = {{(char *)"llama-3-8b", 10}, {(char *)"qwen2-7b", 8}};
    static const fy_slice caps[] = {{(char *)"engine", 6}, {(char *)"sse", 3}};
    fyp_frame f = {.type = FYP_FRAME_HELLO};
    f.u.hello.min_version = 1;
    f.u.hello.max_version = 1;
    fyp_settings_default(&f.u.hello.settings);
    f.u.hello.name = FY_SLICE_STR("r1");
    f.u.hello.models = models;
    f.u.hello.n_models = 2;
    f.u.hello.caps = caps;
    f.u.hello.n_caps = 2;
    put(b, &f);
}

static void b_ack(fy_buf *b)
{
    static const fy_slice caps[] = {{(char *)"sse", 3}};
    fyp_frame f = {.type = FYP_FRAME_HELLO_ACK};
    f.u.hello.version = 1;
    fyp_settings_default(&f.u.hello.settings);
    f.u.hello.name = FY_SLICE_STR("gw");
    f.u.hello.caps = caps;
    f.u.hello.n_caps = 1;
    put(b, &f);
}

static void b_req(fy_buf *b, uint32_t id, uint8_t flags)
{
    static const fyp_field meta[] = {FYP_FIELD("request-id", "req-1"), FYP_FIELD("key-id", "k1"),
                                     FYP_FIELD("fairness-key", "k1"), FYP_FIELD("priority", "5")};
    static const fyp_field hdrs[] = {FYP_FIELD("content-type", "application/json"),
                                     FYP_FIELD("accept", "text/event-stream")};
    fyp_frame f = {.type = FYP_FRAME_REQUEST, .stream_id = id, .flags = flags};
    f.u.request.method = flags ? FY_SLICE_STR("GET") : FY_SLICE_STR("POST");
    f.u.request.target = FY_SLICE_STR("/v1/chat/completions");
    f.u.request.meta = (fyp_fields){meta, 4};
    f.u.request.headers = (fyp_fields){hdrs, 2};
    put(b, &f);
}

static void b_resp(fy_buf *b, uint32_t id, uint8_t flags)
{
    static const fyp_field hdrs[] = {FYP_FIELD("content-type", "text/event-stream"),
                                     FYP_FIELD("cache-control", "no-cache")};
    fyp_frame f = {.type = FYP_FRAME_RESPONSE, .stream_id = id, .flags = flags};
    f.u.response.status = 200;
    f.u.response.headers = (fyp_fields){hdrs, 2};
    put(b, &f);
}

static void b_data(fy_buf *b, uint32_t id, uint8_t flags, const char *s)
{
    fyp_frame f = {.type = FYP_FRAME_DATA, .stream_id = id, .flags = flags};
    f.u.data = FY_SLICE(s, strlen(s));
    put(b, &f);
}

static void b_trl(fy_buf *b, uint32_t id, int usage)
{
    static const fyp_field t[] = {FYP_FIELD("x-finish-reason", "stop")};
    fyp_frame f = {.type = FYP_FRAME_TRAILERS, .stream_id = id, .flags = FYP_FLAG_END_STREAM};
    f.u.trailers.has_usage = usage;
    f.u.trailers.prompt_tokens = 17;
    f.u.trailers.completion_tokens = 42;
    f.u.trailers.fields = (fyp_fields){t, 1};
    put(b, &f);
}

static void b_rst(fy_buf *b, uint32_t id, uint8_t flags, uint32_t code)
{
    fyp_frame f = {.type = FYP_FRAME_RST_STREAM, .stream_id = id, .flags = flags};
    f.u.error_code = code;
    put(b, &f);
}

static void b_wu(fy_buf *b, uint32_t id, uint32_t inc)
{
    fyp_frame f = {.type = FYP_FRAME_WINDOW_UPDATE, .stream_id = id};
    f.u.increment = inc;
    put(b, &f);
}

static void b_ping(fy_buf *b, int pong)
{
    fyp_frame f = {.type = pong ? FYP_FRAME_PONG : FYP_FRAME_PING};
    memcpy(f.u.opaque, "\0\0\0\0\0\0\0\x07", 8);
    put(b, &f);
}

static void b_goaway(fy_buf *b, uint32_t last, uint32_t code, const char *debug)
{
    fyp_frame f = {.type = FYP_FRAME_GOAWAY};
    f.u.goaway.last_stream_id = last;
    f.u.goaway.error_code = code;
    f.u.goaway.debug = FY_SLICE(debug, strlen(debug));
    put(b, &f);
}

static void b_unknown(fy_buf *b)
{
    static const uint8_t unk[] = {0, 0, 4, 0x42, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    assert_int_equal(fy_buf_append(b, unk, sizeof unk), 0);
}

/* One of each type, for the decoder. */
static void b_one(fy_buf *b, int type)
{
    switch (type) {
    case FYP_FRAME_DATA:
        b_data(b, 1, FYP_FLAG_END_STREAM, "{\"model\":\"m\"}");
        break;
    case FYP_FRAME_REQUEST:
        b_req(b, 1, 0);
        break;
    case FYP_FRAME_RESPONSE:
        b_resp(b, 1, 0);
        break;
    case FYP_FRAME_TRAILERS:
        b_trl(b, 1, 1);
        break;
    case FYP_FRAME_RST_STREAM:
        b_rst(b, 1, 0, FYP_ERR_CANCEL);
        break;
    case FYP_FRAME_WINDOW_UPDATE:
        b_wu(b, 0, 65536);
        break;
    case FYP_FRAME_PING:
        b_ping(b, 0);
        break;
    case FYP_FRAME_PONG:
        b_ping(b, 1);
        break;
    case FYP_FRAME_GOAWAY:
        b_goaway(b, 7, FYP_ERR_PROTOCOL, "bad frame");
        break;
    case FYP_FRAME_HELLO:
        b_hello(b);
        break;
    case FYP_FRAME_HELLO_ACK:
        b_ack(b);
        break;
    }
}

static const char *const type_file[FYP_FRAME_TYPE_COUNT] = {
    "dec_data",       "dec_request",       "dec_response",  "dec_trailers",
    "dec_rst_stream", "dec_window_update", "dec_ping",      "dec_pong",
    "dec_goaway",     "dec_hello",         "dec_hello_ack",
};

typedef struct {
    char name[32];
    fy_buf b;
    int expect_error;
} seed_t;

#define MAX_SEEDS 40

static seed_t *seed_new(seed_t *v, size_t *n, const char *name, uint8_t mode)
{
    assert_true(*n < MAX_SEEDS);
    seed_t *s = &v[(*n)++];
    snprintf(s->name, sizeof s->name, "%s", name);
    fy_buf_init(&s->b, 1 << 20);
    s->expect_error = 0;
    assert_int_equal(fy_buf_append(&s->b, &mode, 1), 0);
    return s;
}

/* Gateway mode: u16 length of the handshake part, HELLO, then the rest. */
static seed_t *gw_seed(seed_t *v, size_t *n, const char *name, uint8_t split)
{
    seed_t *s = seed_new(v, n, name, (uint8_t)(2 | split << 2));
    fy_buf hello;
    fy_buf_init(&hello, 1 << 16);
    b_hello(&hello);
    uint8_t len[2] = {(uint8_t)(hello.len >> 8), (uint8_t)hello.len};
    assert_int_equal(fy_buf_append(&s->b, len, 2), 0);
    assert_int_equal(fy_buf_append(&s->b, hello.data, hello.len), 0);
    fy_buf_free(&hello);
    return s;
}

static size_t make_seeds(seed_t *v)
{
    size_t n = 0;
    seed_t *s;

    /* Decoder: every type alone, then all in one stream, whole and split. */
    for (int t = 0; t < FYP_FRAME_TYPE_COUNT; t++) {
        s = seed_new(v, &n, type_file[t], 0);
        b_one(&s->b, t);
    }
    for (int split = 0; split < 2; split++) {
        s = seed_new(v, &n, split ? "dec_all_split" : "dec_all", (uint8_t)(split ? 0x14 : 0));
        for (int t = 0; t < FYP_FRAME_TYPE_COUNT; t++) {
            b_one(&s->b, t);
            if (t == 4) {
                b_unknown(&s->b);
            }
        }
        b_rst(&s->b, 3, FYP_FLAG_ACK, FYP_ERR_REFUSED_STREAM);
        b_trl(&s->b, 5, 0);
        b_data(&s->b, 7, FYP_FLAG_END_STREAM, "");
    }

    /* Runner: what a gateway sends. */
    s = seed_new(v, &n, "runner_handshake", 1);
    b_ack(&s->b);

    s = seed_new(v, &n, "runner_get", 1);
    b_ack(&s->b);
    b_req(&s->b, 1, FYP_FLAG_END_STREAM);
    b_ping(&s->b, 0);
    b_wu(&s->b, 0, 1000);
    b_goaway(&s->b, 0, FYP_ERR_NONE, "draining");

    for (int split = 0; split < 2; split++) {
        s = seed_new(v, &n, split ? "runner_post_split" : "runner_post",
                     (uint8_t)(1 | (split ? 0x2c : 0)));
        b_ack(&s->b);
        b_req(&s->b, 1, 0);
        b_data(&s->b, 1, 0, "{\"prompt\":");
        b_data(&s->b, 1, FYP_FLAG_END_STREAM, "\"hi\"}");
        b_req(&s->b, 3, 0);
        b_trl(&s->b, 3, 1);
        b_req(&s->b, 5, 0);
        b_rst(&s->b, 5, 0, FYP_ERR_CANCEL);
        b_wu(&s->b, 1, 100);
        b_wu(&s->b, 0, 100);
        b_ping(&s->b, 1);
        b_unknown(&s->b);
        b_req(&s->b, 7, 0);
        b_data(&s->b, 7, 0, "Reset me");
    }

    s = seed_new(v, &n, "runner_refused", 1);
    b_ack(&s->b);
    for (uint32_t id = 1; id < 20; id += 2) {
        b_req(&s->b, id, 0);
    }

    s = seed_new(v, &n, "runner_eof", 3);
    b_ack(&s->b);
    b_req(&s->b, 1, 0);
    b_data(&s->b, 1, 0, "partial");
    static const uint8_t cut[] = {0, 0, 0x10, 0};
    assert_int_equal(fy_buf_append(&s->b, cut, sizeof cut), 0);
    s->expect_error = FY_EPROTO;

    /* Gateway: what a runner sends (the driver opens streams 1, 3, 5, 7). */
    s = gw_seed(v, &n, "gateway_handshake", 0);

    for (int split = 0; split < 2; split++) {
        s = gw_seed(v, &n, split ? "gateway_full_split" : "gateway_full", (uint8_t)(split * 9));
        b_resp(&s->b, 1, 0);
        b_data(&s->b, 1, 0, "data: {\"choices\":[]}\n\n");
        b_trl(&s->b, 1, 1);
        b_resp(&s->b, 3, 0);
        b_data(&s->b, 3, FYP_FLAG_END_STREAM, "data: [DONE]\n\n");
        b_rst(&s->b, 5, 0, FYP_ERR_TIMEOUT);
        b_resp(&s->b, 7, 0);
        b_wu(&s->b, 0, 500);
        b_wu(&s->b, 7, 100);
        b_ping(&s->b, 0);
        b_ping(&s->b, 1);
        b_goaway(&s->b, 7, FYP_ERR_NONE, "");
        b_trl(&s->b, 7, 0);
    }

    s = gw_seed(v, &n, "gateway_goaway_refuse", 0);
    b_goaway(&s->b, 1, FYP_ERR_NONE, "restart");
    b_resp(&s->b, 1, FYP_FLAG_END_STREAM);

    s = gw_seed(v, &n, "gateway_goaway_error", 0);
    b_resp(&s->b, 3, 0);
    b_goaway(&s->b, 3, FYP_ERR_INTERNAL, "engine crashed");
    return n;
}

static void test_seeds_run_clean(void **state)
{
    (void)state;
    seed_t v[MAX_SEEDS];
    size_t n = make_seeds(v);
    for (size_t i = 0; i < n; i++) {
        fuzz_first_error = 0;
        LLVMFuzzerTestOneInput((const uint8_t *)v[i].b.data, v[i].b.len);
        if (fuzz_first_error != v[i].expect_error) {
            fprintf(stderr, "seed %s: error %s, expected %s\n", v[i].name,
                    fy_err_name(fuzz_first_error), fy_err_name(v[i].expect_error));
            fail();
        }
        fy_buf_free(&v[i].b);
    }
}

static void test_committed_corpus_matches(void **state)
{
    (void)state;
    const char *src = getenv("FERRY_SRC");
    if (!src) {
        skip();
    }
    int write = getenv("FERRY_WRITE_CORPUS") != NULL;
    seed_t v[MAX_SEEDS];
    size_t n = make_seeds(v);
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/proto_decode/%s", src, v[i].name);
        if (write) {
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(v[i].b.data, 1, v[i].b.len, f), v[i].b.len);
            fclose(f);
        } else {
            FILE *f = fopen(path, "rb");
            if (!f) {
                fail_msg("%s is missing: regenerate with FERRY_WRITE_CORPUS=1", path);
            }
            static char buf[1 << 16];
            size_t len = fread(buf, 1, sizeof buf, f);
            fclose(f);
            if (len != v[i].b.len || memcmp(buf, v[i].b.data, len) != 0) {
                fail_msg("%s differs from the generated seed: regenerate with "
                         "FERRY_WRITE_CORPUS=1",
                         path);
            }
        }
        fy_buf_free(&v[i].b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeds_run_clean),
        cmocka_unit_test(test_committed_corpus_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
