/* test_runner_stream.c: the runner's stream helper (tunnel.c) between a
 * runner connection and an in-memory gateway session: what the windows do
 * not take is queued and sent on FYP_EV_WRITABLE, the half ends once, and
 * every stream is released exactly once, whether the gateway resets it
 * with output queued or its connection dies (ASan proves "once"). The .c
 * is included to build a connection without a socket. */
#include "runner/tunnel.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define BODY (300 * 1024) /* more than the default stream window (256 KiB) */

typedef struct {
    fy_rn_stream_base base; /* first */
    int end_on_writable;    /* flush with END once the window opens */
} test_stream;

/* What the fixture saw: streams made and freed, the gateway's events. */
static int made, freed, freed_here; /* freed by on_reset, by the test */
static size_t gw_bytes;
static int gw_end, gw_resets;
static test_stream *last;

static char body[BODY];

static void ts_on_data(void *st, const char *data, size_t len, int end)
{
    (void)data;
    (void)end;
    if (len) {
        fy_rn_stream_consume(st, len);
    }
}

static void ts_on_writable(void *arg)
{
    test_stream *st = arg;
    int rc = fy_rn_stream_flush(&st->base, st->end_on_writable, NULL);
    assert_true(rc >= 0);
}

static void ts_on_reset(void *st, uint32_t code, int remote)
{
    (void)code;
    (void)remote;
    freed++;
    fy_rn_stream_free(st);
}

static const fy_rn_stream_ops ts_ops = {ts_on_data, ts_on_writable, ts_on_reset};

/* The runner session's events: REQUEST makes a test stream, the rest goes
 * to the tunnel's own handler (which calls the stream's ops). */
static void rn_event(fyp_session *s, const fyp_event *ev, void *data)
{
    fy_rn_conn *c = data;
    (void)s;
    if (ev->type != FYP_EV_REQUEST) {
        conn_event(c, ev);
        return;
    }
    last = (test_stream *)fy_rn_stream_new(c, ev->stream_id, sizeof *last, &ts_ops, BODY);
    assert_non_null(last);
    made++;
    fyp_field f = FYP_FIELD("content-type", "text/plain");
    fyp_response r = {.status = 200, .headers = {&f, 1}};
    assert_int_equal(fy_rn_stream_respond(&last->base, &r), 0);
}

static void gw_event(fyp_session *s, const fyp_event *ev, void *data)
{
    (void)data;
    if (ev->type == FYP_EV_DATA) {
        gw_bytes += ev->u.data.len;
        gw_end |= ev->end_stream;
    } else if (ev->type == FYP_EV_TRAILERS) {
        gw_end = 1;
    } else if (ev->type == FYP_EV_STREAM_RESET) {
        gw_resets++;
    }
    (void)s;
}

typedef struct {
    uv_loop_t loop;
    fy_rn_tunnel t;
    gw_addr gw;
    fy_rn_conn *c;
    fyp_session *r; /* the runner's session (a link would own it) */
    fyp_session *g;
} fixture;

static fyp_session *session(fyp_role role, fyp_event_cb cb, void *data)
{
    fyp_session_config sc;
    memset(&sc, 0, sizeof sc);
    sc.role = role;
    fyp_settings_default(&sc.settings);
    sc.name = role == FYP_ROLE_RUNNER ? "r1" : "gw";
    sc.on_event = cb;
    sc.data = data;
    fyp_session *s = NULL;
    assert_int_equal(fyp_session_new(&sc, &s), 0);
    return s;
}

/* Moves every byte of output both ways until both sessions are quiet. */
static void exchange(fixture *fx)
{
    for (int i = 0; i < 100; i++) {
        fy_slice out;
        size_t moved = 0, n;
        while (fx->c && fx->c->sess && (n = fyp_session_output(fx->c->sess, &out)) > 0) {
            assert_true(fyp_session_recv(fx->g, out.base, n) >= 0);
            fyp_session_output_consume(fx->c->sess, n);
            moved += n;
        }
        while ((n = fyp_session_output(fx->g, &out)) > 0) {
            fyp_session_recv(fx->c->sess, out.base, n);
            fyp_session_output_consume(fx->g, n);
            moved += n;
        }
        if (moved == 0) {
            return;
        }
    }
    fail_msg("the sessions did not settle");
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    made = freed = freed_here = gw_end = gw_resets = 0;
    gw_bytes = 0;
    last = NULL;
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->t.loop = &fx->loop;
    snprintf(fx->gw.text, sizeof fx->gw.text, "gw.test:7000");
    fy_rn_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->t = &fx->t;
    c->gw = &fx->gw;
    c->seq = 1;
    snprintf(c->label, sizeof c->label, "%s#1", fx->gw.text);
    c->streams.next = c->streams.prev = &c->streams;
    c->refs = 1; /* no socket and no link in this test: nothing else holds it */
    fx->t.conns = c;
    fx->t.nconns = 1;
    c->sess = fx->r = session(FYP_ROLE_RUNNER, rn_event, c);
    fx->g = session(FYP_ROLE_GATEWAY, gw_event, NULL);
    fx->c = c;
    exchange(fx);
    assert_true(fyp_session_ready(c->sess));
    c->state = C_READY;
    c->ready_at = uv_now(&fx->loop);
    *state = fx;
    return 0;
}

/* The connection dies (as when the gateway vanished): every stream still on
 * it is released, then its handles close and its memory goes. */
static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->c) {
        conn_close(fx->c, FY_LOG_INFO, "test over");
        fx->c = NULL;
    }
    assert_int_equal(freed + freed_here, made);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->t.nconns, 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    fyp_session_free(fx->g);
    fyp_session_free(fx->r);
    free(fx);
    return 0;
}

/* The gateway opens a stream (its request body ends with it). */
static test_stream *open_stream(fixture *fx)
{
    static const char *const tgt = "/x";
    fyp_request req = {.method = FY_SLICE_STR("POST"), .target = FY_SLICE(tgt, strlen(tgt))};
    int before = made;
    uint32_t id = 0;
    assert_int_equal(fyp_session_request(fx->g, &req, 1, NULL, &id), 0);
    exchange(fx);
    assert_int_equal(made, before + 1);
    assert_int_equal(last->base.id, id);
    return last;
}

static void test_write_queues_then_flushes(void **state)
{
    fixture *fx = *state;
    test_stream *st = open_stream(fx);
    assert_int_equal(fy_rn_stream_write(&st->base, body, 1000), 0);
    assert_int_equal(st->base.out.len, 0);
    /* The window takes 256 KiB minus what went: the rest waits. */
    assert_int_equal(fy_rn_stream_write(&st->base, body, BODY - 1000), 1);
    assert_true(st->base.out.len > 0);
    size_t queued = st->base.out.len;
    /* Later bytes go after what is queued, never before it. */
    assert_int_equal(fy_rn_stream_write(&st->base, body, 10), 1);
    assert_int_equal(st->base.out.len, queued + 10);
    assert_int_equal(fy_rn_stream_flush(&st->base, 1, NULL), 0);
    assert_false(st->base.ended);
    st->end_on_writable = 1;
    /* The gateway reads (consumes): WRITABLE sends the rest, then the end. */
    exchange(fx);
    assert_int_equal(gw_bytes, FYP_DEFAULT_STREAM_WINDOW);
    assert_int_equal(fyp_session_consume(fx->g, st->base.id, gw_bytes), 0);
    exchange(fx);
    assert_int_equal(st->base.out.len, 0);
    assert_true(st->base.ended);
    assert_int_equal(gw_bytes, (size_t)BODY + 10);
    assert_int_equal(gw_end, 1);
    /* Ending again sends nothing more. */
    assert_int_equal(fy_rn_stream_flush(&st->base, 1, NULL), 1);
    exchange(fx);
    assert_int_equal(gw_bytes, (size_t)BODY + 10);
    /* Finished on the wire but still held: the dying connection frees it. */
    assert_int_equal(freed, 0);
}

static void test_trailers_end_after_queue(void **state)
{
    fixture *fx = *state;
    test_stream *st = open_stream(fx);
    assert_int_equal(fy_rn_stream_queue(&st->base, body, 100), 0);
    fyp_trailers tr = {.has_usage = 1, .prompt_tokens = 3, .completion_tokens = 4};
    assert_int_equal(fy_rn_stream_flush(&st->base, 1, &tr), 1);
    assert_true(st->base.ended);
    exchange(fx);
    assert_int_equal(gw_bytes, 100);
    assert_int_equal(gw_end, 1);
}

static void test_queue_raises_the_cap(void **state)
{
    fixture *fx = *state;
    test_stream *st = open_stream(fx);
    /* A whole body larger than the stream's cap is still queued whole. */
    static char big[BODY + 5];
    assert_int_equal(fy_rn_stream_queue(&st->base, big, sizeof big), 0);
    assert_int_equal(st->base.out.len, sizeof big);
    /* write, in contrast, keeps to the cap (one spare byte past the body). */
    assert_int_equal(fy_rn_stream_write(&st->base, big, 2), FY_ETOOBIG);
    assert_int_equal(st->base.out.len, sizeof big);
}

static void test_reset_with_output_queued(void **state)
{
    fixture *fx = *state;
    test_stream *st = open_stream(fx);
    uint32_t id = st->base.id;
    assert_int_equal(fy_rn_stream_write(&st->base, body, BODY), 1);
    assert_true(st->base.out.len > 0);
    /* The gateway gives up on it: the runner frees it once, queue and all. */
    assert_int_equal(fyp_session_reset(fx->g, id, FYP_ERR_CANCEL), 0);
    exchange(fx);
    assert_int_equal(freed, 1);
    assert_true(fx->c->streams.next == &fx->c->streams);
    assert_null(fyp_session_stream_data(fx->c->sess, id));
}

static void test_local_reset(void **state)
{
    fixture *fx = *state;
    test_stream *st = open_stream(fx);
    assert_int_equal(fy_rn_stream_write(&st->base, body, BODY), 1);
    fy_rn_stream_reset(&st->base, FYP_ERR_INTERNAL);
    fy_rn_stream_free(&st->base);
    freed_here++;
    exchange(fx);
    assert_int_equal(gw_resets, 1);
    assert_true(fx->c->streams.next == &fx->c->streams);
    /* A session that forgot the stream refuses more bytes for it. */
    test_stream *st2 = open_stream(fx);
    fy_rn_stream_reset(&st2->base, FYP_ERR_INTERNAL);
    assert_int_equal(fy_rn_stream_write(&st2->base, body, 1), FY_ECLOSED);
    assert_int_equal(fy_rn_stream_flush(&st2->base, 1, NULL), FY_ECLOSED);
    fy_rn_stream_free(&st2->base);
    freed_here++;
}

static void test_connection_death_releases_all(void **state)
{
    fixture *fx = *state;
    test_stream *a = open_stream(fx);
    test_stream *b = open_stream(fx);
    open_stream(fx);
    assert_int_equal(fy_rn_stream_write(&a->base, body, BODY), 1); /* output queued */
    assert_int_equal(fy_rn_stream_flush(&b->base, 1, NULL), 1);    /* done on the wire */
    exchange(fx);
    conn_close(fx->c, FY_LOG_INFO, "test: connection lost");
    fx->c = NULL;
    assert_int_equal(made, 3);
    assert_int_equal(freed, 3);
}

int main(void)
{
    fy_log_setup(FY_LOG_ERROR, FY_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_queues_then_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_end_after_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_raises_the_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_with_output_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_death_releases_all, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
