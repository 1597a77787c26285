/* The gateway's /v1 pieces without sockets: the model of a request body
 * (gateway/route.c), OpenAI's error shape with a param, and the model index
 * and least-outstanding pick (gateway/models.c) over real tunnel sessions
 * that completed their handshake back to back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "gateway/gateway.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void test_v1_model(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        int rc;
        const char *model; /* on success */
        const char *err;   /* a part of the message on failure */
    } cases[] = {
        {"{\"model\":\"m1\",\"messages\":[]}", 0, "m1", NULL},
        {"{\"messages\":[],\"model\":\"org/Llama-3.2-1B\"}", 0, "org/Llama-3.2-1B", NULL},
        {" {\"model\" : \"x\"} ", 0, "x", NULL},
        {"{\"model\":\"\\u0041\"}", 0, "A", NULL},
        {"", FY_EINVAL, NULL, "JSON body"},
        {"not json", FY_EINVAL, NULL, "not valid JSON"},
        {"{\"model\":\"m1\"", FY_EINVAL, NULL, "not valid JSON"},
        {"{\"model\":\"a\",\"model\":\"b\"}", FY_EINVAL, NULL, "not valid JSON"},
        {"[\"model\"]", FY_EINVAL, NULL, "JSON object"},
        {"\"m1\"", FY_EINVAL, NULL, "not valid JSON"}, /* jansson wants an array/object */
        {"{}", FY_EINVAL, NULL, "provide a model"},
        {"{\"Model\":\"m1\"}", FY_EINVAL, NULL, "provide a model"},
        {"{\"model\":null}", FY_EINVAL, NULL, "must be a string"},
        {"{\"model\":7}", FY_EINVAL, NULL, "must be a string"},
        {"{\"model\":[\"m1\"]}", FY_EINVAL, NULL, "must be a string"},
        {"{\"model\":\"\"}", FY_EINVAL, NULL, "must not be empty"},
        {"{\"model\":\"a b\"}", FY_EINVAL, NULL, "printable ASCII"},
        {"{\"model\":\"caf\\u00e9\"}", FY_EINVAL, NULL, "printable ASCII"},
        {"{\"model\":\"a\\u0000b\"}", FY_EINVAL, NULL, NULL}, /* jansson refuses NUL */
        {"{\"model\":\"a\\nb\"}", FY_EINVAL, NULL, "printable ASCII"},
        {"{\"model\":\xff\x01}", FY_EINVAL, NULL, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char model[FY_GW_V1_MODEL_MAX], err[128] = "";
        int rc = fy_gw_v1_model(cases[i].body, strlen(cases[i].body), model, err, sizeof err);
        if (rc != cases[i].rc) {
            fail_msg("case %zu (%s): rc %d, want %d (%s)", i, cases[i].body, rc, cases[i].rc, err);
        }
        if (rc == 0) {
            assert_string_equal(model, cases[i].model);
        } else {
            assert_string_equal(model, "");
            assert_true(err[0] != '\0');
            for (const char *p = err; *p; p++) {
                assert_true(*p >= 0x20 && *p <= 0x7e); /* goes into a JSON string */
            }
            if (cases[i].err && !strstr(err, cases[i].err)) {
                fail_msg("case %zu (%s): message '%s' lacks '%s'", i, cases[i].body, err,
                         cases[i].err);
            }
        }
    }
    /* Length limits: 255 bytes is a model, 256 is not. */
    char body[600], model[FY_GW_V1_MODEL_MAX], err[128];
    for (int len = 255; len <= 256; len++) {
        int n = snprintf(body, sizeof body, "{\"model\":\"%0*d\"}", len, 0);
        int rc = fy_gw_v1_model(body, (size_t)n, model, err, sizeof err);
        assert_int_equal(rc, len == 255 ? 0 : FY_EINVAL);
        if (rc == 0) {
            assert_int_equal(strlen(model), 255);
        }
    }
    /* The length is what counts, not a NUL. */
    const char with_nul[] = "{\"model\":\"m1\"}\0garbage";
    assert_int_equal(fy_gw_v1_model(with_nul, 14, model, err, sizeof err), 0);
    assert_int_equal(fy_gw_v1_model(with_nul, sizeof with_nul - 1, model, err, sizeof err),
                     FY_EINVAL);
}

static void test_v1_error_json(void **state)
{
    (void)state;
    char out[512];
    size_t n = fy_http_error_json(out, sizeof out, 404, "model_not_found", "model",
                                  "The model `a\"b` does not exist");
    assert_true(n > 0 && n == strlen(out) && out[n - 1] == '\n');
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "The model `a\"b` does not exist");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "model");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "model_not_found");
    json_decref(j);

    n = fy_http_error_json(out, sizeof out, 503, "runners_busy", NULL, "busy");
    j = json_loads(out, 0, &je);
    assert_non_null(j);
    e = json_object_get(j, "error");
    assert_true(json_is_null(json_object_get(e, "param")));
    assert_string_equal(json_string_value(json_object_get(e, "type")), "server_error");
    json_decref(j);

    /* Too small a buffer for the message: it is cut, and the body is still JSON. */
    n = fy_http_error_json(out, 100, 400, "x", "model", "a long message here, longer than fits");
    assert_true(n < 100);
    j = json_loads(out, 0, &je);
    assert_non_null(j);
    e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "model");
    json_decref(j);
}

/* --- the model index over real sessions ------------------------------------------------ */

static void ignore_event(fyp_session *s, const fyp_event *ev, void *data)
{
    (void)s;
    (void)ev;
    (void)data;
}

/* Moves A's output into B until both are quiet. */
static void pump(fyp_session *a, fyp_session *b)
{
    for (int round = 0; round < 8; round++) {
        fy_slice out;
        size_t n = fyp_session_output(a, &out);
        if (n) {
            assert_int_equal(fyp_session_recv(b, out.base, n), 0);
            fyp_session_output_consume(a, n);
        }
        size_t m = fyp_session_output(b, &out);
        if (m) {
            assert_int_equal(fyp_session_recv(a, out.base, m), 0);
            fyp_session_output_consume(b, m);
        }
        if (!n && !m) {
            return;
        }
    }
}

typedef struct {
    gw_conn c;
    fyp_session *rn; /* the runner's side */
} tconn;

/* A registered connection of runner R whose runner announced MAX_STREAMS. */
static void tconn_init(tconn *t, fy_gw *gw, gw_runner *r, uint32_t max_streams)
{
    memset(t, 0, sizeof *t);
    t->c.gw = gw;
    fyp_session_config gc = {.role = FYP_ROLE_GATEWAY, .name = "gw", .on_event = ignore_event};
    fyp_session_config rc = {.role = FYP_ROLE_RUNNER, .name = "r", .on_event = ignore_event};
    fyp_settings_default(&gc.settings);
    fyp_settings_default(&rc.settings);
    rc.settings.max_concurrent_streams = max_streams;
    assert_int_equal(fyp_session_new(&gc, &t->c.sess), 0);
    assert_int_equal(fyp_session_new(&rc, &t->rn), 0);
    pump(t->rn, t->c.sess);
    assert_true(fyp_session_ready(t->c.sess));
    t->c.runner = r;
    t->c.rnext = r->conns;
    r->conns = &t->c;
    r->n_conns++;
}

static void tconn_free(tconn *t)
{
    fy_gw_models_remove(&t->c);
    fyp_session_free(t->c.sess);
    fyp_session_free(t->rn);
}

static void add_models(tconn *t, const char *const *names, size_t n)
{
    fy_slice s[8];
    for (size_t i = 0; i < n; i++) {
        s[i] = FY_SLICE(names[i], strlen(names[i]));
    }
    assert_int_equal(fy_gw_models_add(&t->c, s, n), 0);
}

static void test_models_index(void **state)
{
    (void)state;
    fy_gw *gw = calloc(1, sizeof *gw);
    gw_runner ra = {.name = "ra"}, rb = {.name = "rb"};
    tconn a1, b1, b2;
    tconn_init(&a1, gw, &ra, 2);
    tconn_init(&b1, gw, &rb, 4096);
    tconn_init(&b2, gw, &rb, 4096);
    add_models(&a1, (const char *[]){"m1"}, 1);
    add_models(&b1, (const char *[]){"m1", "m2", "m2"}, 3);
    add_models(&b2, (const char *[]){"m2"}, 1);
    assert_int_equal(b1.c.n_models, 2); /* the duplicate is dropped */

    gw_model *m1 = fy_gw_model_find(gw, "m1"), *m2 = fy_gw_model_find(gw, "m2");
    assert_non_null(m1);
    assert_non_null(m2);
    assert_null(fy_gw_model_find(gw, "m3"));
    assert_int_equal(m1->n_conns, 2);
    assert_int_equal(m2->n_conns, 2);

    /* Least outstanding counts the runner's connections together: rb has
     * one request on b2, so m1 goes to ra even though b1 itself is idle. */
    gw_conn *out[4];
    size_t usable;
    b2.c.n_px = 1;
    assert_int_equal(fy_gw_model_pick(m1, NULL, out, 4, &usable), 2);
    assert_int_equal(usable, 2);
    assert_ptr_equal(out[0], &a1.c);
    assert_ptr_equal(out[1], &b1.c);
    a1.c.n_px = 2;
    assert_int_equal(fy_gw_model_pick(m1, NULL, out, 4, NULL), 2);
    assert_ptr_equal(out[0], &b1.c);
    /* Within a runner, the connection with fewer. */
    assert_int_equal(fy_gw_model_pick(m2, NULL, out, 4, NULL), 2);
    assert_ptr_equal(out[0], &b1.c);
    assert_ptr_equal(out[1], &b2.c);
    /* EXCLUDE and MAX. */
    assert_int_equal(fy_gw_model_pick(m2, &b1.c, out, 4, NULL), 1);
    assert_ptr_equal(out[0], &b2.c);
    assert_int_equal(fy_gw_model_pick(m2, NULL, out, 1, NULL), 1);
    assert_ptr_equal(out[0], &b1.c);

    /* A connection at its runner's MAX_CONCURRENT_STREAMS has no room, but
     * is still usable (requests wait for it rather than 404). */
    a1.c.n_px = 0;
    b1.c.n_px = b2.c.n_px = 5;
    fyp_request rq = {.method = FY_SLICE_STR("GET"), .target = FY_SLICE_STR("/")};
    uint32_t id;
    assert_true(fy_gw_conn_has_room(&a1.c));
    assert_int_equal(fyp_session_request(a1.c.sess, &rq, 1, NULL, &id), 0);
    assert_true(fy_gw_conn_has_room(&a1.c));
    assert_int_equal(fyp_session_request(a1.c.sess, &rq, 1, NULL, &id), 0);
    assert_false(fy_gw_conn_has_room(&a1.c));
    assert_int_equal(fyp_session_request(a1.c.sess, &rq, 1, NULL, &id), FY_ELIMIT);
    assert_int_equal(fy_gw_model_pick(m1, NULL, out, 4, &usable), 1);
    assert_int_equal(usable, 2);
    assert_ptr_equal(out[0], &b1.c);
    /* Draining connections are neither picked nor usable. */
    b1.c.draining = 1;
    assert_int_equal(fy_gw_model_pick(m1, NULL, out, 4, &usable), 0);
    assert_int_equal(usable, 1);
    b1.c.draining = 0;

    /* Leaving: a model goes with its last connection, unless requests wait
     * for it; then it goes with the last waiter. */
    fy_gw_models_remove(&b2.c);
    assert_int_equal(m2->n_conns, 1);
    fy_gw_model_waiters(gw, m2, 1);
    fy_gw_models_remove(&b1.c);
    assert_ptr_equal(fy_gw_model_find(gw, "m2"), m2);
    assert_int_equal(m2->n_conns, 0);
    assert_int_equal(m1->n_conns, 1);
    fy_gw_model_waiters(gw, m2, -1);
    assert_null(fy_gw_model_find(gw, "m2"));
    /* Joining again makes a fresh entry. */
    add_models(&b2, (const char *[]){"m2"}, 1);
    assert_non_null(fy_gw_model_find(gw, "m2"));

    tconn_free(&a1);
    assert_null(fy_gw_model_find(gw, "m1"));
    tconn_free(&b1);
    tconn_free(&b2);
    assert_null(gw->tun.models);
    free(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_model),
        cmocka_unit_test(test_v1_error_json),
        cmocka_unit_test(test_models_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
