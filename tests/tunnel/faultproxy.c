/* faultproxy: a TCP proxy for fault-injection tests, on libuv.
 *
 *   faultproxy TARGET_HOST TARGET_PORT
 *
 * Listens on 127.0.0.1 (port chosen by the OS, printed as "port N" on stdout),
 * forwards every connection to TARGET, and obeys commands read line by line
 * from stdin:
 *   stall   stop forwarding in both directions (connections stay open, bytes
 *           are held, and a side that closes meanwhile is not told to the
 *           other until resume), so heartbeats stop arriving: a "dead but
 *           open" peer
 *   resume  forward again (held bytes are delivered)
 *   cut     reset every open connection (SO_LINGER 0 then close)
 *   refuse  close new connections at once; "accept" undoes it
 * Each command is acknowledged with "ok <command>" on stdout. EOF on stdin
 * exits. */
#include "common/buf.h"
#include "common/err.h"
#include "common/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn conn;
struct conn {
    conn *next, *prev;
    fy_stream *a, *b; /* a: accepted client side, b: target side */
    fy_buf held_ab, held_ba;
    int connecting; /* the target connect is in flight: c must outlive it */
    int closing;
    int ended; /* one side ended while stalled: closed on resume */
};

static uv_loop_t *loop;
static const char *target_host;
static int target_port;
static int stalled, refusing;
static conn *conns;

static void conn_close(conn *c);

static void unlink_conn(conn *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else if (conns == c) {
        conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->next = c->prev = NULL;
}

static void free_copy(fy_stream *s, int status, void *arg)
{
    (void)s;
    (void)status;
    free(arg);
}

static void forward(fy_stream *to, const char *p, size_t n)
{
    char *copy = malloc(n);
    if (!copy) {
        return;
    }
    memcpy(copy, p, n);
    fy_slice sl = {copy, n};
    if (fy_stream_write(to, &sl, 1, free_copy, copy)) {
        free(copy);
    }
}

static void on_side_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    conn *c = s->data;
    if (!c || c->closing) {
        return;
    }
    int from_a = s == c->a;
    fy_stream *to = from_a ? c->b : c->a;
    if (n < 0) {
        /* A stalled link delivers nothing, not even the end: the other side
         * must keep seeing an open, silent connection. */
        if (stalled && !c->ended) {
            c->ended = 1;
            return;
        }
        conn_close(c);
        return;
    }
    if (!to || stalled) {
        fy_buf *held = from_a ? &c->held_ab : &c->held_ba;
        if (fy_buf_append(held, buf->base, buf->len)) {
            conn_close(c);
        }
        return;
    }
    forward(to, buf->base, buf->len);
}

static void flush_held(conn *c)
{
    if (c->b && c->held_ab.len) {
        forward(c->b, c->held_ab.data, c->held_ab.len);
        fy_buf_reset(&c->held_ab);
    }
    if (c->a && c->held_ba.len) {
        forward(c->a, c->held_ba.data, c->held_ba.len);
        fy_buf_reset(&c->held_ba);
    }
}

static void conn_maybe_free(conn *c)
{
    if (!c->a && !c->b && !c->connecting) {
        fy_buf_free(&c->held_ab);
        fy_buf_free(&c->held_ba);
        free(c);
    }
}

static void side_closed(fy_stream *s)
{
    conn *c = s->data;
    if (s == c->a) {
        c->a = NULL;
    } else {
        c->b = NULL;
    }
    conn_maybe_free(c);
}

static void conn_close(conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    unlink_conn(c);
    if (c->a) {
        fy_stream_close(c->a, side_closed);
    }
    if (c->b) {
        fy_stream_close(c->b, side_closed);
    }
}

static void on_target(fy_stream *s, int status, void *arg)
{
    conn *c = arg;
    c->connecting = 0;
    if (status || c->closing) {
        if (s) {
            fy_stream_close(s, NULL);
        }
        if (c->closing) {
            conn_maybe_free(c);
        } else {
            conn_close(c);
        }
        return;
    }
    c->b = s;
    s->data = c;
    s->on_read = on_side_read;
    fy_stream_read_start(s);
    if (!stalled) {
        flush_held(c);
    }
}

static void set_linger0(uv_tcp_t *t)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)t, &fd) == 0) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status) {
        return;
    }
    uv_tcp_t *t = malloc(sizeof *t);
    uv_tcp_init(loop, t);
    if (uv_accept(server, (uv_stream_t *)t)) {
        uv_close((uv_handle_t *)t, (uv_close_cb)free);
        return;
    }
    if (refusing) {
        set_linger0(t);
        uv_close((uv_handle_t *)t, (uv_close_cb)free);
        return;
    }
    set_linger0(t); /* every close of a client side is a reset, like a cut cable */
    conn *c = calloc(1, sizeof *c);
    fy_buf_init(&c->held_ab, 64u << 20);
    fy_buf_init(&c->held_ba, 64u << 20);
    c->a = fy_tcp_stream_wrap(t);
    c->a->data = c;
    c->a->on_read = on_side_read;
    fy_stream_read_start(c->a);
    c->next = conns;
    if (conns) {
        conns->prev = c;
    }
    conns = c;
    c->connecting = 1;
    if (fy_tcp_connect(loop, target_host, target_port, 5000, on_target, c)) {
        c->connecting = 0;
        conn_close(c);
    }
}

static char line[256];
static size_t line_len;

static void command(const char *cmd)
{
    if (strcmp(cmd, "stall") == 0) {
        stalled = 1;
    } else if (strcmp(cmd, "resume") == 0) {
        stalled = 0;
        conn *next;
        for (conn *c = conns; c; c = next) {
            next = c->next;
            flush_held(c);
            if (c->ended) {
                conn_close(c);
            }
        }
    } else if (strcmp(cmd, "cut") == 0) {
        while (conns) {
            conn_close(conns);
        }
    } else if (strcmp(cmd, "refuse") == 0) {
        refusing = 1;
    } else if (strcmp(cmd, "accept") == 0) {
        refusing = 0;
    } else {
        printf("error unknown command '%s'\n", cmd);
        fflush(stdout);
        return;
    }
    printf("ok %s\n", cmd);
    fflush(stdout);
}

static void stdin_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[256];
    (void)h;
    (void)s;
    b->base = buf;
    b->len = sizeof buf;
}

static uv_tcp_t listener;
static uv_pipe_t in;

static void stdin_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    if (n < 0) {
        while (conns) {
            conn_close(conns);
        }
        uv_close((uv_handle_t *)&listener, NULL);
        uv_close((uv_handle_t *)st, NULL);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = b->base[i];
        if (ch == '\n') {
            line[line_len] = '\0';
            command(line);
            line_len = 0;
        } else if (line_len < sizeof line - 1) {
            line[line_len++] = ch;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: faultproxy TARGET_HOST TARGET_PORT\n");
        return 2;
    }
    target_host = argv[1];
    target_port = atoi(argv[2]);
    loop = uv_default_loop();
    struct sockaddr_storage ss;
    fy_addr_parse("127.0.0.1:0", &ss);
    uv_tcp_init(loop, &listener);
    if (uv_tcp_bind(&listener, (struct sockaddr *)&ss, 0) ||
        uv_listen((uv_stream_t *)&listener, 128, on_connection)) {
        fprintf(stderr, "faultproxy: cannot listen\n");
        return 1;
    }
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&listener, (struct sockaddr *)&got, &len);
    char name[64];
    fy_addr_format((struct sockaddr *)&got, name, sizeof name);
    printf("port %s\n", strrchr(name, ':') + 1);
    fflush(stdout);
    uv_pipe_init(loop, &in, 0);
    uv_pipe_open(&in, 0);
    uv_read_start((uv_stream_t *)&in, stdin_alloc, stdin_read);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
