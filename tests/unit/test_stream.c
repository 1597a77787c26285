/* Unit tests for common/tcp.c and common/stream_pair.c: the fy_stream
 * contract (deferred callbacks, EOF, close from inside callbacks) over real
 * loopback TCP and over the in-memory pair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/stream.h"

#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    fy_buf got;
    int eof_status;
    int writes_done;
    int write_status;
    int closed;
    int in_write_call;
    int cb_inside_write;
    int close_on_read;
} peer_state;

static void on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    peer_state *p = s->data;
    if (n < 0) {
        p->eof_status = (int)n;
        return;
    }
    assert_int_equal(fy_buf_append(&p->got, buf->base, buf->len), 0);
    if (p->close_on_read) {
        fy_stream_close(s, NULL);
    }
}

static void on_write(fy_stream *s, int status, void *arg)
{
    peer_state *p = s->data;
    (void)arg;
    if (p->in_write_call) {
        p->cb_inside_write = 1;
    }
    p->writes_done++;
    p->write_status = status;
}

static void on_close(fy_stream *s)
{
    peer_state *p = s->data;
    p->closed = 1;
}

static void run_until(uv_loop_t *loop, int *flag)
{
    for (int i = 0; i < 100000 && !*flag; i++) {
        uv_run(loop, UV_RUN_ONCE);
    }
    assert_true(*flag);
}

static void test_pair_roundtrip(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    fy_stream *a, *b;
    peer_state pa = {0}, pb = {0};
    fy_buf_init(&pa.got, 1 << 20);
    fy_buf_init(&pb.got, 1 << 20);
    assert_int_equal(fy_stream_pair_new(&loop, &a, &b), 0);
    a->data = &pa;
    b->data = &pb;
    a->on_read = on_read;
    b->on_read = on_read;
    fy_stream_read_start(b);

    /* 100 KiB in several buffers; the write callback must not run inside write. */
    static char big[100 * 1024];
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (char)(i * 7);
    }
    fy_slice bufs[2] = {{big, 60000}, {big + 60000, sizeof big - 60000}};
    pa.in_write_call = 1;
    assert_int_equal(fy_stream_write(a, bufs, 2, on_write, NULL), 0);
    pa.in_write_call = 0;
    assert_int_equal(pa.writes_done, 0);
    assert_int_equal(fy_stream_shutdown(a), 0);
    assert_int_equal(fy_stream_write(a, bufs, 1, on_write, NULL), FY_ECLOSED);
    run_until(&loop, &pb.eof_status);
    assert_int_equal(pb.eof_status, FY_EEOF);
    assert_int_equal(pa.writes_done, 1);
    assert_int_equal(pa.write_status, 0);
    assert_false(pa.cb_inside_write);
    assert_int_equal(pb.got.len, sizeof big);
    assert_memory_equal(pb.got.data, big, sizeof big);

    /* Closing b makes further writes from a fail; close callbacks run once. */
    fy_stream_close(b, on_close);
    fy_stream_close(b, on_close);
    run_until(&loop, &pb.closed);
    fy_stream_close(a, on_close);
    run_until(&loop, &pa.closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    fy_buf_free(&pa.got);
    fy_buf_free(&pb.got);
}

static void test_pair_reset_and_close_in_callback(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    fy_stream *a, *b;
    peer_state pa = {0}, pb = {0};
    fy_buf_init(&pa.got, 1024);
    fy_buf_init(&pb.got, 1024);
    assert_int_equal(fy_stream_pair_new(&loop, &a, &b), 0);
    a->data = &pa;
    b->data = &pb;
    a->on_read = on_read;
    b->on_read = on_read;
    pb.close_on_read = 1; /* b closes itself from inside its read callback */
    fy_stream_read_start(a);
    fy_stream_read_start(b);
    fy_slice s = FY_SLICE_STR("ping");
    assert_int_equal(fy_stream_write(a, &s, 1, on_write, NULL), 0);
    run_until(&loop, &pa.eof_status);
    /* a sees a reset, not a clean EOF, since b closed without shutting down. */
    assert_int_equal(pa.eof_status, FY_ECONNRESET);
    assert_int_equal(pb.got.len, 4);
    fy_stream_close(a, on_close);
    run_until(&loop, &pa.closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    fy_buf_free(&pa.got);
    fy_buf_free(&pb.got);
}

/* --- TCP ------------------------------------------------------------------ */

typedef struct {
    uv_tcp_t listener;
    fy_stream *server_side;
    fy_stream *client_side;
    int connect_status;
    int connected;
    peer_state ps, pc;
} tcp_fixture;

static void free_copy(fy_stream *s, int status, void *arg)
{
    (void)s;
    (void)status;
    free(arg);
}

static void echo_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    if (n < 0) {
        fy_stream_shutdown(s);
        return;
    }
    /* buf is valid only during this call; the write needs its own copy. */
    char *copy = malloc(buf->len);
    memcpy(copy, buf->base, buf->len);
    fy_slice out = {copy, buf->len};
    assert_int_equal(fy_stream_write(s, &out, 1, free_copy, copy), 0);
}

static void on_connection(uv_stream_t *server, int status)
{
    tcp_fixture *f = server->data;
    assert_int_equal(status, 0);
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(server->loop, c);
    assert_int_equal(uv_accept(server, (uv_stream_t *)c), 0);
    f->server_side = fy_tcp_stream_wrap(c);
    assert_non_null(f->server_side);
    char peer[64];
    fy_stream_peer_name(f->server_side, peer, sizeof peer);
    assert_int_equal(strncmp(peer, "127.0.0.1:", 10), 0);
    f->server_side->data = &f->ps;
    f->server_side->on_read = echo_read;
    fy_stream_read_start(f->server_side);
}

static void on_connected(fy_stream *s, int status, void *arg)
{
    tcp_fixture *f = arg;
    f->connect_status = status;
    f->client_side = s;
    f->connected = 1;
}

static int listen_loopback(uv_loop_t *loop, tcp_fixture *f)
{
    struct sockaddr_storage ss;
    assert_int_equal(fy_addr_parse("127.0.0.1:0", &ss), 0);
    uv_tcp_init(loop, &f->listener);
    f->listener.data = f;
    assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&ss, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, on_connection), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&got, &len);
    return ntohs(got.sin_port);
}

static void test_tcp_echo(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    tcp_fixture f = {0};
    fy_buf_init(&f.pc.got, 8 << 20);
    int port = listen_loopback(&loop, &f);
    assert_int_equal(fy_tcp_connect(&loop, "127.0.0.1", port, 5000, on_connected, &f), 0);
    assert_false(f.connected); /* never synchronous */
    run_until(&loop, &f.connected);
    assert_int_equal(f.connect_status, 0);
    fy_stream *c = f.client_side;
    c->data = &f.pc;
    c->on_read = on_read;
    fy_stream_read_start(c);

    size_t total = 4 << 20;
    char *data = malloc(total);
    for (size_t i = 0; i < total; i++) {
        data[i] = (char)(i * 31 + (i >> 13));
    }
    fy_slice s = {data, total};
    assert_int_equal(fy_stream_write(c, &s, 1, on_write, NULL), 0);
    fy_stream_shutdown(c);
    run_until(&loop, &f.pc.eof_status);
    assert_int_equal(f.pc.eof_status, FY_EEOF);
    assert_int_equal(f.pc.writes_done, 1);
    assert_int_equal(f.pc.got.len, total);
    assert_memory_equal(f.pc.got.data, data, total);
    free(data);

    fy_stream_close(c, on_close);
    fy_stream_close(f.server_side, NULL);
    uv_close((uv_handle_t *)&f.listener, NULL);
    run_until(&loop, &f.pc.closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    fy_buf_free(&f.pc.got);
}

static void test_tcp_connect_refused_and_bad_host(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Find a free port by binding and closing it. */
    tcp_fixture tmp = {0};
    int port = listen_loopback(&loop, &tmp);
    uv_close((uv_handle_t *)&tmp.listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);

    tcp_fixture f = {0};
    assert_int_equal(fy_tcp_connect(&loop, "127.0.0.1", port, 5000, on_connected, &f), 0);
    run_until(&loop, &f.connected);
    assert_int_equal(f.connect_status, FY_ECONNREFUSED);
    assert_null(f.client_side);

    assert_int_equal(fy_tcp_connect(&loop, "127.0.0.1", 0, 5000, on_connected, &f), FY_EINVAL);
    assert_int_equal(fy_tcp_connect(&loop, "127.0.0.1", 70000, 5000, on_connected, &f), FY_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A listener with backlog 0 that never accepts: once its queue is full the
 * kernel drops further SYNs, so a connect can only end by our timeout. */
static void test_tcp_connect_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, 0), 0);
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    int port = ntohs(sin.sin_port);
    fy_stream *held[8] = {0};
    int timed_out = 0;
    for (int i = 0; i < 8 && !timed_out; i++) {
        tcp_fixture f = {0};
        assert_int_equal(fy_tcp_connect(&loop, "127.0.0.1", port, 300, on_connected, &f), 0);
        run_until(&loop, &f.connected);
        if (f.connect_status == FY_ETIMEDOUT) {
            assert_null(f.client_side);
            timed_out = 1;
        } else {
            assert_int_equal(f.connect_status, 0);
            held[i] = f.client_side;
        }
    }
    assert_true(timed_out);
    for (int i = 0; i < 8; i++) {
        if (held[i]) {
            fy_stream_close(held[i], NULL);
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    close(fd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_addr_parse_format(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"127.0.0.1:8443", 0, "127.0.0.1:8443"},
        {":7443", 0, "0.0.0.0:7443"},
        {"[::1]:9443", 0, "[::1]:9443"},
        {"0.0.0.0:0", 0, "0.0.0.0:0"},
        {"127.0.0.1", FY_EINVAL, NULL},
        {"127.0.0.1:", FY_EINVAL, NULL},
        {"127.0.0.1:65536", FY_EINVAL, NULL},
        {"127.0.0.1:80x", FY_EINVAL, NULL},
        {"[::1:80", FY_EINVAL, NULL},
        {"example.com:80", FY_EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        assert_int_equal(fy_addr_parse(cases[i].in, &ss), cases[i].rc);
        if (cases[i].out) {
            char buf[64];
            fy_addr_format((struct sockaddr *)&ss, buf, sizeof buf);
            assert_string_equal(buf, cases[i].out);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair_roundtrip),
        cmocka_unit_test(test_pair_reset_and_close_in_callback),
        cmocka_unit_test(test_tcp_echo),
        cmocka_unit_test(test_tcp_connect_refused_and_bad_host),
        cmocka_unit_test(test_tcp_connect_timeout),
        cmocka_unit_test(test_addr_parse_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
