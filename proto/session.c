/* proto/session.c: stream state machine, flow control, heartbeats and GOAWAY
 * for one tunnel connection (PROTOCOL.md sections 4-9). No I/O. */
#include "proto/session.h"

#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Stream flags. */
enum {
    ST_TX_HEADERS = 0x01, /* REQUEST / RESPONSE sent */
    ST_TX_END = 0x02,     /* our half ended */
    ST_RX_HEADERS = 0x04, /* REQUEST / RESPONSE received */
    ST_RX_END = 0x08,     /* the peer's half ended */
    ST_RESET_SENT = 0x10, /* we sent RST_STREAM; waiting for the peer's */
    ST_BLOCKED = 0x20,    /* on the blocked list (a send was cut short) */
    ST_CLOSED = 0x40,     /* both halves ended; kept only for unconsumed data */
    ST_APP = 0x80,        /* the application knows this stream */
};

/* Per-stream state: kept small, the gateway holds thousands of idle streams. */
typedef struct fyp_stream fyp_stream;
struct fyp_stream {
    uint32_t id;
    uint8_t flags;
    int32_t send_window;   /* DATA we may still send */
    int32_t recv_window;   /* DATA the peer may still send */
    uint32_t recv_unacked; /* consumed, credit not yet returned */
    uint32_t unconsumed;   /* delivered to the application, not yet consumed */
    void *user;
    fyp_stream *prev, *next; /* blocked list */
};

typedef struct {
    uint64_t opaque;
    uint64_t sent_us;
    int used;
} fyp_ping_slot;

struct fyp_session {
    fyp_role role;
    fyp_settings local, peer;
    uint16_t min_version, max_version, version;
    uint8_t hello_done, dead, goaway_sent, goaway_recv;
    uint32_t goaway_sent_last, goaway_recv_last;
    uint32_t err_code;
    char err_msg[160];

    fyp_decoder dec;
    fy_buf out; /* pending output is out.data[out_head .. out.len) */
    size_t out_head, out_max;

    /* Open-addressing hash table (linear probing, backward-shift deletion). */
    fyp_stream **tab;
    size_t tab_cap, tab_count;
    unsigned tab_bits;
    size_t n_active;    /* streams counted toward MAX_CONCURRENT_STREAMS */
    uint32_t max_seen;  /* gateway: highest id opened; runner: highest REQUEST id */
    uint32_t next_id;   /* gateway: next id to open */
    fyp_stream blocked; /* sentinel of the blocked list */

    int64_t conn_send;     /* connection window for DATA we send */
    int64_t conn_recv;     /* connection window the peer may still use */
    uint32_t conn_unacked; /* consumed, credit not yet returned */

    fyp_ping_slot pings[FYP_PINGS_OUTSTANDING];
    uint64_t ping_seq;
    uint64_t created_us, last_rx_us, last_ping_us;

    fyp_event_cb cb;
    void *cb_data;
    fyp_clock_cb clock;
    void *clock_data;
    int depth;        /* nesting of public calls that may run callbacks */
    int free_pending; /* fyp_session_free was called from a callback */

    /* Gateway: what HELLO_ACK carries (copied from the config). */
    char *ack_store;
    fy_slice ack_name;
    fy_slice *ack_caps;
    size_t n_ack_caps;
};

static uint64_t default_clock(void *data)
{
    (void)data;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_us(fyp_session *s)
{
    return s->clock(s->clock_data);
}

/* ---- Stream table ---- */

static size_t slot_of(const fyp_session *s, uint32_t id)
{
    return (size_t)((id * 2654435769u) >> (32 - s->tab_bits));
}

static fyp_stream *find(const fyp_session *s, uint32_t id)
{
    if (!s->tab || id == 0) {
        return NULL;
    }
    size_t mask = s->tab_cap - 1;
    for (size_t i = slot_of(s, id);; i = (i + 1) & mask) {
        fyp_stream *st = s->tab[i];
        if (!st || st->id == id) {
            return st;
        }
    }
}

static int tab_resize(fyp_session *s, unsigned bits)
{
    size_t cap = (size_t)1 << bits;
    fyp_stream **nt = calloc(cap, sizeof *nt);
    if (!nt) {
        return FY_ENOMEM;
    }
    fyp_stream **old = s->tab;
    size_t old_cap = s->tab_cap;
    s->tab = nt;
    s->tab_cap = cap;
    s->tab_bits = bits;
    for (size_t i = 0; i < old_cap; i++) {
        fyp_stream *st = old[i];
        if (st) {
            size_t j = slot_of(s, st->id);
            while (nt[j]) {
                j = (j + 1) & (cap - 1);
            }
            nt[j] = st;
        }
    }
    free(old);
    return 0;
}

static int tab_insert(fyp_session *s, fyp_stream *st)
{
    /* Load factor at most 1/2 keeps probe sequences short. */
    if ((s->tab_count + 1) * 2 > s->tab_cap) {
        int rc = tab_resize(s, s->tab ? s->tab_bits + 1 : 4);
        if (rc) {
            return rc;
        }
    }
    size_t mask = s->tab_cap - 1;
    size_t i = slot_of(s, st->id);
    while (s->tab[i]) {
        i = (i + 1) & mask;
    }
    s->tab[i] = st;
    s->tab_count++;
    return 0;
}

static void tab_remove(fyp_session *s, fyp_stream *st)
{
    size_t mask = s->tab_cap - 1;
    size_t i = slot_of(s, st->id);
    while (s->tab[i] != st) {
        i = (i + 1) & mask;
    }
    s->tab[i] = NULL;
    s->tab_count--;
    /* Backward-shift: move later entries of the probe run into the hole unless
     * their home slot lies cyclically in (hole, j]. */
    for (size_t j = (i + 1) & mask; s->tab[j]; j = (j + 1) & mask) {
        size_t k = slot_of(s, s->tab[j]->id);
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->tab[i] = s->tab[j];
            s->tab[j] = NULL;
            i = j;
        }
    }
    /* Shrink when mostly empty so 10,000 streams that came and went do not pin
     * a large table. A failed shrink is harmless. */
    if (s->tab_cap > 64 && s->tab_count * 8 < s->tab_cap && !s->dead) {
        tab_resize(s, s->tab_bits - 1);
    }
}

/* ---- Blocked list ---- */

static void list_init(fyp_stream *head)
{
    head->prev = head->next = head;
}

static void list_unlink(fyp_stream *st)
{
    st->prev->next = st->next;
    st->next->prev = st->prev;
    st->prev = st->next = NULL;
}

static void list_push(fyp_stream *head, fyp_stream *st)
{
    st->prev = head->prev;
    st->next = head;
    head->prev->next = st;
    head->prev = st;
}

static void block(fyp_session *s, fyp_stream *st)
{
    if (!(st->flags & ST_BLOCKED)) {
        st->flags |= ST_BLOCKED;
        list_push(&s->blocked, st);
    }
}

static void unblock(fyp_stream *st)
{
    if (st->flags & ST_BLOCKED) {
        st->flags &= (uint8_t)~ST_BLOCKED;
        list_unlink(st);
    }
}

/* Removes ST from the table and lists and frees it. */
static void stream_destroy(fyp_session *s, fyp_stream *st)
{
    unblock(st);
    tab_remove(s, st);
    free(st);
}

/* ---- Output ---- */

static int queue_frame(fyp_session *s, const fyp_frame *f)
{
    return fyp_frame_encode(&s->out, f);
}

static size_t out_pending(const fyp_session *s)
{
    return s->out.len - s->out_head;
}

/* ---- Events ---- */

static void emit(fyp_session *s, fyp_event *ev)
{
    if (!s->cb || s->free_pending) {
        return;
    }
    s->depth++;
    s->cb(s, ev, s->cb_data);
    s->depth--;
}

static void emit_reset(fyp_session *s, uint32_t id, void *user, uint32_t code, int remote)
{
    fyp_event ev = {.type = FYP_EV_STREAM_RESET, .stream_id = id, .stream_data = user};
    ev.error_code = code;
    ev.remote = remote;
    emit(s, &ev);
}

/* ---- Death ---- */

static uint32_t goaway_last_id(const fyp_session *s)
{
    /* Only the gateway opens streams, so the runner reports the highest REQUEST
     * it will process and the gateway reports 0. */
    if (s->role == FYP_ROLE_GATEWAY) {
        return 0;
    }
    uint32_t last = s->max_seen;
    if (s->goaway_sent && s->goaway_sent_last < last) {
        last = s->goaway_sent_last;
    }
    return last;
}

static void queue_goaway(fyp_session *s, uint32_t code, const char *msg)
{
    fyp_frame f = {.type = FYP_FRAME_GOAWAY};
    f.u.goaway.last_stream_id = goaway_last_id(s);
    f.u.goaway.error_code = code;
    size_t len = msg ? strlen(msg) : 0;
    f.u.goaway.debug = FY_SLICE(msg, len > FYP_MAX_GOAWAY_DEBUG ? FYP_MAX_GOAWAY_DEBUG : len);
    if (queue_frame(s, &f) == 0) {
        s->goaway_sent = 1;
        s->goaway_sent_last = f.u.goaway.last_stream_id;
    }
}

/* Ends the session: optionally queues GOAWAY, then reports every live stream
 * the application knows as reset and frees all streams. */
static void die(fyp_session *s, uint32_t code, const char *msg, int send_goaway, int remote)
{
    if (s->dead) {
        return;
    }
    s->dead = 1;
    s->err_code = code;
    snprintf(s->err_msg, sizeof s->err_msg, "%s", msg ? msg : "");
    if (send_goaway) {
        queue_goaway(s, code, msg);
    }
    /* Clearing slot by slot (no backward shift) is safe: nothing looks streams
     * up by probing once the session is dead. */
    for (size_t i = 0; i < s->tab_cap; i++) {
        fyp_stream *st = s->tab[i];
        if (!st) {
            continue;
        }
        s->tab[i] = NULL;
        s->tab_count--;
        unblock(st);
        uint32_t id = st->id;
        void *user = st->user;
        int report = (st->flags & ST_APP) && !(st->flags & (ST_RESET_SENT | ST_CLOSED));
        free(st);
        if (report) {
            emit_reset(s, id, user, code, remote);
        }
    }
    s->n_active = 0;
}

__attribute__((format(printf, 3, 4))) static int proto_fail(fyp_session *s, uint32_t code,
                                                            const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die(s, code, msg, 1, 0);
    return FY_EPROTO;
}

static int oom(fyp_session *s)
{
    die(s, FYP_ERR_INTERNAL, "out of memory", 1, 0);
    return FY_ENOMEM;
}

/* Queues a frame the peer provoked (PONG, RST ACK, REFUSED). A peer that keeps
 * provoking replies while not reading is flooding us. */
static int queue_reply(fyp_session *s, const fyp_frame *f)
{
    if (out_pending(s) > s->out_max) {
        return proto_fail(s, FYP_ERR_OVERLOAD, "peer does not read while provoking replies");
    }
    return queue_frame(s, f) ? oom(s) : 0;
}

/* ---- Flow-control credit ---- */

static int32_t half(uint32_t window)
{
    return window >= 2 ? (int32_t)(window / 2) : 1;
}

/* Returns connection credit for N consumed (or discarded) bytes. */
static int credit_conn(fyp_session *s, size_t n)
{
    s->conn_unacked += (uint32_t)n;
    if (s->conn_unacked == 0 || (int32_t)s->conn_unacked < half(s->local.connection_window)) {
        return 0;
    }
    fyp_frame f = {.type = FYP_FRAME_WINDOW_UPDATE};
    f.u.increment = s->conn_unacked;
    if (queue_frame(s, &f)) {
        return FY_ENOMEM;
    }
    s->conn_recv += s->conn_unacked;
    s->conn_unacked = 0;
    return 0;
}

static int credit_stream(fyp_session *s, fyp_stream *st, size_t n)
{
    if (st->flags & (ST_RX_END | ST_RESET_SENT)) {
        return 0; /* nothing more will come: no WINDOW_UPDATE for it */
    }
    st->recv_unacked += (uint32_t)n;
    if ((int32_t)st->recv_unacked < half(s->local.initial_stream_window)) {
        return 0;
    }
    fyp_frame f = {.type = FYP_FRAME_WINDOW_UPDATE, .stream_id = st->id};
    f.u.increment = st->recv_unacked;
    if (queue_frame(s, &f)) {
        return FY_ENOMEM;
    }
    st->recv_window += (int32_t)st->recv_unacked;
    st->recv_unacked = 0;
    return 0;
}

/* After a half ended: a stream with both halves ended stops counting and is
 * freed, or kept (ST_CLOSED) while the application still owes consume calls. */
static void maybe_close(fyp_session *s, fyp_stream *st)
{
    if ((st->flags & (ST_TX_END | ST_RX_END)) != (ST_TX_END | ST_RX_END) ||
        (st->flags & (ST_CLOSED | ST_RESET_SENT))) {
        return;
    }
    unblock(st);
    s->n_active--;
    if (st->unconsumed == 0) {
        stream_destroy(s, st);
    } else {
        st->flags |= ST_CLOSED;
    }
}

static fyp_stream *stream_new(fyp_session *s, uint32_t id, uint8_t flags)
{
    fyp_stream *st = calloc(1, sizeof *st);
    if (!st) {
        return NULL;
    }
    st->id = id;
    st->flags = flags;
    st->send_window = (int32_t)s->peer.initial_stream_window;
    st->recv_window = (int32_t)s->local.initial_stream_window;
    if (tab_insert(s, st)) {
        free(st);
        return NULL;
    }
    s->n_active++;
    return st;
}

/* ---- Receiving ---- */

enum { LK_FOUND, LK_IDLE, LK_CLOSED, LK_IGNORED, LK_RESET_SENT };

/* Classifies a stream frame from the peer (PROTOCOL.md 4.2-4.3, 9). */
static int lookup_peer(fyp_session *s, uint32_t id, fyp_stream **out)
{
    *out = NULL;
    if (id > s->max_seen) {
        return LK_IDLE;
    }
    if (s->role == FYP_ROLE_RUNNER && s->goaway_sent && id > s->goaway_sent_last) {
        return LK_IGNORED;
    }
    fyp_stream *st = find(s, id);
    *out = st;
    if (!st || (st->flags & ST_CLOSED)) {
        return LK_CLOSED;
    }
    return (st->flags & ST_RESET_SENT) ? LK_RESET_SENT : LK_FOUND;
}

static const char *const frame_names[FYP_FRAME_TYPE_COUNT] = {
    "DATA", "REQUEST", "RESPONSE", "TRAILERS", "RST_STREAM", "WINDOW_UPDATE",
    "PING", "PONG",    "GOAWAY",   "HELLO",    "HELLO_ACK",
};

static uint32_t effective_heartbeat(const fyp_session *s)
{
    uint32_t a = s->local.heartbeat_ms, b = s->hello_done ? s->peer.heartbeat_ms : 0;
    if (a && b) {
        return a < b ? a : b;
    }
    if (a || b) {
        return a ? a : b;
    }
    return FYP_DEFAULT_HEARTBEAT_MS;
}

static void handshake_done(fyp_session *s, const fyp_settings *peer, uint16_t version)
{
    s->peer = *peer;
    s->version = version;
    s->conn_send = peer->connection_window;
    s->hello_done = 1;
    s->last_rx_us = s->last_ping_us = now_us(s);
}

static int queue_hello_ack(fyp_session *s)
{
    fyp_frame f = {.type = FYP_FRAME_HELLO_ACK};
    f.u.hello.version = s->version;
    f.u.hello.settings = s->local;
    f.u.hello.name = s->ack_name;
    f.u.hello.caps = s->ack_caps;
    f.u.hello.n_caps = s->n_ack_caps;
    return queue_frame(s, &f);
}

static int on_hello(fyp_session *s, const fyp_frame *f)
{
    const fyp_hello *h = &f->u.hello;
    if (s->role != FYP_ROLE_GATEWAY) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "HELLO received by the runner");
    }
    if (s->hello_done) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "HELLO received twice");
    }
    uint16_t lo = h->min_version > s->min_version ? h->min_version : s->min_version;
    uint16_t hi = h->max_version < s->max_version ? h->max_version : s->max_version;
    if (lo > hi) {
        return proto_fail(s, FYP_ERR_VERSION_MISMATCH,
                          "runner speaks versions %u..%u, this gateway %u..%u", h->min_version,
                          h->max_version, s->min_version, s->max_version);
    }
    /* The application sees the runner before HELLO_ACK goes out, so it can
     * refuse it with GOAWAY REJECTED instead; streams wait until after. */
    s->peer = h->settings;
    s->version = hi;
    fyp_event ev = {.type = FYP_EV_HELLO, .version = hi};
    ev.u.hello = h;
    emit(s, &ev);
    if (s->dead || s->free_pending) {
        return 0;
    }
    if (queue_hello_ack(s)) {
        return oom(s);
    }
    handshake_done(s, &h->settings, hi);
    return 0;
}

static int on_hello_ack(fyp_session *s, const fyp_frame *f)
{
    const fyp_hello *h = &f->u.hello;
    if (s->role != FYP_ROLE_RUNNER) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "HELLO_ACK received by the gateway");
    }
    if (s->hello_done) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "HELLO_ACK received twice");
    }
    if (h->version < s->min_version || h->version > s->max_version) {
        return proto_fail(s, FYP_ERR_VERSION_MISMATCH, "gateway chose version %u, offered %u..%u",
                          h->version, s->min_version, s->max_version);
    }
    handshake_done(s, &h->settings, h->version);
    fyp_event ev = {.type = FYP_EV_HELLO, .version = h->version};
    ev.u.hello = h;
    emit(s, &ev);
    return 0;
}

static int on_request(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    if (s->role != FYP_ROLE_RUNNER) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "REQUEST on stream %u from the runner", id);
    }
    if (id <= s->max_seen) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "REQUEST on stream %u, not above %u", id,
                          s->max_seen);
    }
    if (s->goaway_recv) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "REQUEST on stream %u after GOAWAY", id);
    }
    s->max_seen = id;
    if (s->goaway_sent && id > s->goaway_sent_last) {
        return 0; /* draining: never processed; the gateway retries it elsewhere */
    }
    if (s->n_active >= s->local.max_concurrent_streams) {
        size_t cap = 2 * (size_t)s->local.max_concurrent_streams + FYP_STREAM_SLACK;
        if (s->n_active >= cap) {
            return proto_fail(s, FYP_ERR_OVERLOAD, "%zu streams open (limit %u)", s->n_active,
                              s->local.max_concurrent_streams);
        }
        /* Refused: held in reset-sent until the gateway acknowledges. */
        if (!stream_new(s, id, ST_RX_HEADERS | ST_RESET_SENT)) {
            return oom(s);
        }
        fyp_frame r = {.type = FYP_FRAME_RST_STREAM, .stream_id = id};
        r.u.error_code = FYP_ERR_REFUSED_STREAM;
        return queue_reply(s, &r);
    }
    uint8_t flags = ST_RX_HEADERS | ST_APP;
    int end = (f->flags & FYP_FLAG_END_STREAM) != 0;
    if (end) {
        flags |= ST_RX_END;
    }
    if (!stream_new(s, id, flags)) {
        return oom(s);
    }
    fyp_event ev = {.type = FYP_EV_REQUEST, .stream_id = id, .end_stream = end};
    ev.u.request = &f->u.request;
    emit(s, &ev);
    return 0;
}

static int on_response(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    fyp_stream *st;
    if (s->role != FYP_ROLE_GATEWAY) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "RESPONSE on stream %u from the gateway", id);
    }
    switch (lookup_peer(s, id, &st)) {
    case LK_IDLE:
        return proto_fail(s, FYP_ERR_PROTOCOL, "RESPONSE on idle stream %u", id);
    case LK_CLOSED:
        return proto_fail(s, FYP_ERR_STREAM_CLOSED, "RESPONSE on closed stream %u", id);
    case LK_IGNORED:
    case LK_RESET_SENT:
        return 0;
    }
    if (st->flags & ST_RX_HEADERS) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "second RESPONSE on stream %u", id);
    }
    int end = (f->flags & FYP_FLAG_END_STREAM) != 0;
    st->flags |= ST_RX_HEADERS | (end ? ST_RX_END : 0);
    fyp_event ev = {.type = FYP_EV_RESPONSE, .stream_id = id, .stream_data = st->user};
    ev.end_stream = end;
    ev.u.response = &f->u.response;
    if (end) {
        maybe_close(s, st);
    }
    emit(s, &ev);
    return 0;
}

static int on_data(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    uint32_t len = f->length;
    fyp_stream *st;
    if ((int64_t)len > s->conn_recv) {
        return proto_fail(s, FYP_ERR_FLOW_CONTROL,
                          "DATA of %u bytes on stream %u exceeds the connection window %lld", len,
                          id, (long long)s->conn_recv);
    }
    s->conn_recv -= len;
    switch (lookup_peer(s, id, &st)) {
    case LK_IDLE:
        return proto_fail(s, FYP_ERR_PROTOCOL, "DATA on idle stream %u", id);
    case LK_CLOSED:
        return proto_fail(s, FYP_ERR_STREAM_CLOSED, "DATA on closed stream %u", id);
    case LK_IGNORED:
    case LK_RESET_SENT:
        /* Discarded at once, so its connection credit goes back at once. */
        return credit_conn(s, len) ? oom(s) : 0;
    }
    if (!(st->flags & ST_RX_HEADERS)) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "DATA before RESPONSE on stream %u", id);
    }
    if (st->flags & ST_RX_END) {
        return proto_fail(s, FYP_ERR_STREAM_CLOSED, "DATA after END_STREAM on stream %u", id);
    }
    if ((int64_t)len > st->recv_window) {
        return proto_fail(s, FYP_ERR_FLOW_CONTROL,
                          "DATA of %u bytes exceeds the window %d of stream %u", len,
                          st->recv_window, id);
    }
    st->recv_window -= (int32_t)len;
    st->unconsumed += len;
    int end = (f->flags & FYP_FLAG_END_STREAM) != 0;
    if (end) {
        st->flags |= ST_RX_END;
    }
    fyp_event ev = {.type = FYP_EV_DATA, .stream_id = id, .stream_data = st->user};
    ev.end_stream = end;
    ev.u.data = f->u.data;
    if (end) {
        maybe_close(s, st); /* may free st */
    }
    emit(s, &ev);
    return 0;
}

static int on_trailers(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    fyp_stream *st;
    switch (lookup_peer(s, id, &st)) {
    case LK_IDLE:
        return proto_fail(s, FYP_ERR_PROTOCOL, "TRAILERS on idle stream %u", id);
    case LK_CLOSED:
        return proto_fail(s, FYP_ERR_STREAM_CLOSED, "TRAILERS on closed stream %u", id);
    case LK_IGNORED:
    case LK_RESET_SENT:
        return 0;
    }
    if (!(st->flags & ST_RX_HEADERS)) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "TRAILERS before RESPONSE on stream %u", id);
    }
    if (st->flags & ST_RX_END) {
        return proto_fail(s, FYP_ERR_STREAM_CLOSED, "TRAILERS after END_STREAM on stream %u", id);
    }
    st->flags |= ST_RX_END;
    fyp_event ev = {.type = FYP_EV_TRAILERS, .stream_id = id, .stream_data = st->user};
    ev.end_stream = 1;
    ev.u.trailers = &f->u.trailers;
    maybe_close(s, st);
    emit(s, &ev);
    return 0;
}

static int on_rst(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    int ack = (f->flags & FYP_FLAG_ACK) != 0;
    fyp_stream *st;
    fyp_frame r = {.type = FYP_FRAME_RST_STREAM, .stream_id = id, .flags = FYP_FLAG_ACK};
    r.u.error_code = f->u.error_code;
    switch (lookup_peer(s, id, &st)) {
    case LK_IDLE:
        return proto_fail(s, FYP_ERR_PROTOCOL, "RST_STREAM on idle stream %u", id);
    case LK_IGNORED:
        return 0;
    case LK_RESET_SENT:
        /* The acknowledgement of our reset, or a crossing reset: done. */
        s->n_active--;
        stream_destroy(s, st);
        return 0;
    case LK_CLOSED:
        /* The peer reset while our END_STREAM was in flight: acknowledge it. */
        return ack ? 0 : queue_reply(s, &r);
    }
    if (ack) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "RST_STREAM ACK on stream %u we did not reset", id);
    }
    int rc = queue_reply(s, &r);
    if (rc) {
        return rc;
    }
    if (credit_conn(s, st->unconsumed)) {
        return oom(s);
    }
    void *user = st->user;
    int report = (st->flags & ST_APP) != 0;
    s->n_active--;
    stream_destroy(s, st);
    if (report) {
        emit_reset(s, id, user, f->u.error_code, 1);
    }
    return 0;
}

/* Tells blocked streams that can send again. Streams are taken off the list
 * first, so callbacks that send (and block again) or reset others are safe. */
static void notify_writable(fyp_session *s)
{
    if (s->conn_send <= 0 || s->blocked.next == &s->blocked) {
        return;
    }
    fyp_stream tmp;
    list_init(&tmp);
    tmp.next = s->blocked.next;
    tmp.prev = s->blocked.prev;
    tmp.next->prev = &tmp;
    tmp.prev->next = &tmp;
    list_init(&s->blocked);
    while (tmp.next != &tmp && !s->dead && !s->free_pending) {
        fyp_stream *st = tmp.next;
        list_unlink(st);
        if (st->send_window > 0 && s->conn_send > 0) {
            st->flags &= (uint8_t)~ST_BLOCKED;
            fyp_event ev = {.type = FYP_EV_WRITABLE, .stream_id = st->id, .stream_data = st->user};
            emit(s, &ev);
        } else {
            list_push(&s->blocked, st);
        }
    }
    /* Leftovers (the session died in a callback) go back; die() already
     * unlinked every stream it freed. */
    while (tmp.next != &tmp) {
        fyp_stream *st = tmp.next;
        list_unlink(st);
        list_push(&s->blocked, st);
    }
}

static int on_window_update(fyp_session *s, const fyp_frame *f)
{
    uint32_t id = f->stream_id;
    uint32_t inc = f->u.increment;
    if (id == 0) {
        if (s->conn_send + inc > FYP_MAX_WINDOW) {
            return proto_fail(s, FYP_ERR_FLOW_CONTROL, "connection window above 2^31-1");
        }
        s->conn_send += inc;
        notify_writable(s);
        return 0;
    }
    fyp_stream *st;
    switch (lookup_peer(s, id, &st)) {
    case LK_IDLE:
        return proto_fail(s, FYP_ERR_PROTOCOL, "WINDOW_UPDATE on idle stream %u", id);
    case LK_FOUND:
        break;
    default:
        return 0; /* may have crossed our END_STREAM or reset */
    }
    if (st->flags & ST_TX_END) {
        return 0;
    }
    if ((int64_t)st->send_window + inc > FYP_MAX_WINDOW) {
        return proto_fail(s, FYP_ERR_FLOW_CONTROL, "window of stream %u above 2^31-1", id);
    }
    st->send_window += (int32_t)inc;
    if ((st->flags & ST_BLOCKED) && st->send_window > 0 && s->conn_send > 0) {
        unblock(st);
        fyp_event ev = {.type = FYP_EV_WRITABLE, .stream_id = id, .stream_data = st->user};
        emit(s, &ev);
    }
    return 0;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static int on_ping(fyp_session *s, const fyp_frame *f)
{
    if (f->type == FYP_FRAME_PING) {
        fyp_frame r = {.type = FYP_FRAME_PONG};
        memcpy(r.u.opaque, f->u.opaque, 8);
        return queue_reply(s, &r);
    }
    uint64_t opaque = get_u64(f->u.opaque);
    for (int i = 0; i < FYP_PINGS_OUTSTANDING; i++) {
        fyp_ping_slot *p = &s->pings[i];
        if (p->used && p->opaque == opaque) {
            p->used = 0;
            uint64_t now = now_us(s);
            fyp_event ev = {.type = FYP_EV_PING_RTT};
            ev.rtt_us = now > p->sent_us ? now - p->sent_us : 0;
            emit(s, &ev);
            break;
        }
    }
    return 0; /* an unmatched PONG is ignored */
}

static int on_goaway(fyp_session *s, const fyp_frame *f)
{
    const fyp_goaway *g = &f->u.goaway;
    if (s->goaway_recv && g->last_stream_id > s->goaway_recv_last) {
        return proto_fail(s, FYP_ERR_PROTOCOL, "GOAWAY raised last stream id from %u to %u",
                          s->goaway_recv_last, g->last_stream_id);
    }
    s->goaway_recv = 1;
    s->goaway_recv_last = g->last_stream_id;
    fyp_event ev = {.type = FYP_EV_GOAWAY};
    ev.error_code = g->error_code;
    ev.u.goaway = g;
    emit(s, &ev);
    if (s->dead || s->free_pending) {
        return 0;
    }
    if (g->error_code != FYP_ERR_NONE) {
        char msg[160];
        snprintf(msg, sizeof msg, "peer sent GOAWAY %s: %.*s", fyp_errcode_name(g->error_code),
                 (int)(g->debug.len > 100 ? 100 : g->debug.len), g->debug.base);
        die(s, g->error_code, msg, 0, 1);
        return 0;
    }
    if (s->role != FYP_ROLE_GATEWAY || g->last_stream_id >= s->max_seen) {
        return 0;
    }
    /* Streams above last were never processed: forget them and report them
     * refused (retryable). Collect ids first: callbacks may change the table. */
    size_t n = 0;
    uint32_t *ids = malloc((s->tab_count ? s->tab_count : 1) * sizeof *ids);
    if (!ids) {
        return oom(s);
    }
    for (size_t i = 0; i < s->tab_cap; i++) {
        fyp_stream *st = s->tab[i];
        if (st && st->id > g->last_stream_id && !(st->flags & ST_CLOSED)) {
            ids[n++] = st->id;
        }
    }
    for (size_t i = 0; i < n && !s->dead && !s->free_pending; i++) {
        fyp_stream *st = find(s, ids[i]);
        if (!st || (st->flags & ST_CLOSED)) {
            continue;
        }
        void *user = st->user;
        int report = (st->flags & ST_APP) && !(st->flags & ST_RESET_SENT);
        if (credit_conn(s, st->unconsumed)) {
            free(ids);
            return oom(s);
        }
        s->n_active--;
        stream_destroy(s, st);
        if (report) {
            emit_reset(s, ids[i], user, FYP_ERR_REFUSED_STREAM, 1);
        }
    }
    free(ids);
    return 0;
}

static int handle_frame(fyp_session *s, const fyp_frame *f)
{
    if (!s->hello_done) {
        uint8_t first = s->role == FYP_ROLE_GATEWAY ? FYP_FRAME_HELLO : FYP_FRAME_HELLO_ACK;
        if (f->type != first && f->type != FYP_FRAME_GOAWAY) {
            return proto_fail(s, FYP_ERR_PROTOCOL, "%s before %s",
                              f->type < FYP_FRAME_TYPE_COUNT ? frame_names[f->type]
                                                             : "unknown frame",
                              frame_names[first]);
        }
    }
    switch (f->type) {
    case FYP_FRAME_DATA:
        return on_data(s, f);
    case FYP_FRAME_REQUEST:
        return on_request(s, f);
    case FYP_FRAME_RESPONSE:
        return on_response(s, f);
    case FYP_FRAME_TRAILERS:
        return on_trailers(s, f);
    case FYP_FRAME_RST_STREAM:
        return on_rst(s, f);
    case FYP_FRAME_WINDOW_UPDATE:
        return on_window_update(s, f);
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        return on_ping(s, f);
    case FYP_FRAME_GOAWAY:
        return on_goaway(s, f);
    case FYP_FRAME_HELLO:
        return on_hello(s, f);
    case FYP_FRAME_HELLO_ACK:
        return on_hello_ack(s, f);
    }
    return 0; /* unknown frame type: ignored */
}

/* ---- Public API ---- */

static void session_destroy(fyp_session *s)
{
    for (size_t i = 0; i < s->tab_cap; i++) {
        free(s->tab[i]);
    }
    free(s->tab);
    fyp_decoder_close(&s->dec);
    fy_buf_free(&s->out);
    free(s->ack_store);
    free(s);
}

/* Copies the gateway's HELLO_ACK name and capabilities into one block. */
static int copy_ack_info(fyp_session *s, const fyp_session_config *cfg)
{
    size_t total = cfg->name ? strlen(cfg->name) : 0;
    for (size_t i = 0; i < cfg->n_caps; i++) {
        total += strlen(cfg->caps[i]);
    }
    size_t slices = cfg->n_caps * sizeof(fy_slice);
    s->ack_store = malloc(slices + total + 1);
    if (!s->ack_store) {
        return FY_ENOMEM;
    }
    s->ack_caps = (fy_slice *)(void *)s->ack_store;
    char *p = s->ack_store + slices;
    size_t len = cfg->name ? strlen(cfg->name) : 0;
    memcpy(p, cfg->name ? cfg->name : "", len);
    s->ack_name = FY_SLICE(p, len);
    p += len;
    for (size_t i = 0; i < cfg->n_caps; i++) {
        len = strlen(cfg->caps[i]);
        memcpy(p, cfg->caps[i], len);
        s->ack_caps[i] = FY_SLICE(p, len);
        p += len;
    }
    s->n_ack_caps = cfg->n_caps;
    return 0;
}

int fyp_session_new(const fyp_session_config *cfg, fyp_session **out)
{
    int rc = FY_EINVAL;
    fyp_session *s = NULL;
    *out = NULL;
    if ((cfg->role != FYP_ROLE_GATEWAY && cfg->role != FYP_ROLE_RUNNER) ||
        fyp_settings_validate(&cfg->settings)) {
        goto out;
    }
    if (cfg->n_models > FYP_MAX_MODELS || cfg->n_caps > FYP_MAX_CAPS) {
        goto out;
    }
    if (cfg->role == FYP_ROLE_RUNNER && !cfg->name) {
        goto out;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        rc = FY_ENOMEM;
        goto out;
    }
    s->role = cfg->role;
    s->local = cfg->settings;
    s->min_version = cfg->min_version ? cfg->min_version : FYP_VERSION_MIN;
    s->max_version = cfg->max_version ? cfg->max_version : FYP_VERSION_MAX;
    if (s->min_version > s->max_version || s->min_version < FYP_VERSION_MIN ||
        s->max_version > FYP_VERSION_MAX) {
        goto out;
    }
    s->out_max = cfg->output_max ? cfg->output_max : FYP_DEFAULT_OUTPUT_MAX;
    s->cb = cfg->on_event;
    s->cb_data = cfg->data;
    s->clock = cfg->clock ? cfg->clock : default_clock;
    s->clock_data = cfg->clock_data;
    s->next_id = 1;
    s->conn_recv = cfg->settings.connection_window;
    fyp_settings_default(&s->peer);
    fyp_decoder_init(&s->dec, cfg->settings.max_frame_size, cfg->settings.max_header_block);
    /* Frames the application queues are bounded by windows and stream limits,
     * not by this buffer's cap; see output_max for what the peer provokes. */
    fy_buf_init(&s->out, SIZE_MAX / 2);
    list_init(&s->blocked);
    s->created_us = s->last_rx_us = s->last_ping_us = now_us(s);

    if (cfg->role == FYP_ROLE_RUNNER) {
        fy_slice models[FYP_MAX_MODELS], caps[FYP_MAX_CAPS];
        for (size_t i = 0; i < cfg->n_models; i++) {
            models[i] = FY_SLICE(cfg->models[i], strlen(cfg->models[i]));
        }
        for (size_t i = 0; i < cfg->n_caps; i++) {
            caps[i] = FY_SLICE(cfg->caps[i], strlen(cfg->caps[i]));
        }
        fyp_frame f = {.type = FYP_FRAME_HELLO};
        f.u.hello.min_version = s->min_version;
        f.u.hello.max_version = s->max_version;
        f.u.hello.settings = s->local;
        f.u.hello.name = FY_SLICE(cfg->name, strlen(cfg->name));
        f.u.hello.models = models;
        f.u.hello.n_models = cfg->n_models;
        f.u.hello.caps = caps;
        f.u.hello.n_caps = cfg->n_caps;
        rc = queue_frame(s, &f);
    } else {
        rc = copy_ack_info(s, cfg);
        if (!rc) {
            /* Validate now what HELLO_ACK will carry, so it cannot fail later. */
            fyp_frame f = {.type = FYP_FRAME_HELLO_ACK, .u.hello.version = 1};
            f.u.hello.settings = s->local;
            f.u.hello.name = s->ack_name;
            f.u.hello.caps = s->ack_caps;
            f.u.hello.n_caps = s->n_ack_caps;
            fy_buf tmp;
            fy_buf_init(&tmp, FYP_FRAME_HEADER_SIZE + FYP_MAX_HELLO_SIZE);
            rc = fyp_frame_encode(&tmp, &f);
            fy_buf_free(&tmp);
        }
    }
    if (rc) {
        goto out;
    }
    *out = s;
    s = NULL;
out:
    if (s) {
        session_destroy(s);
    }
    return rc;
}

void fyp_session_free(fyp_session *s)
{
    if (!s) {
        return;
    }
    if (s->depth > 0) {
        s->free_pending = 1;
        return;
    }
    session_destroy(s);
}

/* Every public call that may run callbacks goes through enter/leave so a free
 * requested from a callback happens only once the stack has unwound. */
static void enter(fyp_session *s)
{
    s->depth++;
}

static int leave(fyp_session *s, int rc)
{
    s->depth--;
    if (s->depth == 0 && s->free_pending) {
        session_destroy(s);
        return FY_ECLOSED;
    }
    return rc;
}

int fyp_session_recv(fyp_session *s, const void *data, size_t len)
{
    if (s->dead || s->free_pending) {
        return FY_ECLOSED;
    }
    if (len) {
        s->last_rx_us = now_us(s);
    }
    enter(s);
    const uint8_t *p = data;
    size_t n = len;
    int rc = 0;
    while (!s->dead && !s->free_pending) {
        fyp_frame f;
        rc = fyp_decoder_next(&s->dec, &p, &n, &f);
        if (rc == 0) {
            break;
        }
        if (rc == FY_EPROTO) {
            die(s, s->dec.err_code, s->dec.err_msg, 1, 0);
            break;
        }
        if (rc < 0) {
            rc = oom(s);
            break;
        }
        rc = handle_frame(s, &f);
        if (rc < 0) {
            break;
        }
    }
    return leave(s, rc);
}

int fyp_session_recv_eof(fyp_session *s)
{
    if (s->dead || s->free_pending) {
        return FY_ECLOSED;
    }
    int rc = 0;
    enter(s);
    if (!fyp_decoder_idle(&s->dec)) {
        die(s, FYP_ERR_PROTOCOL, "connection ended inside a frame", 1, 0);
        rc = FY_EPROTO;
    } else {
        rc = s->n_active ? FY_EEOF : 0;
        die(s, rc ? FYP_ERR_INTERNAL : FYP_ERR_NONE, "connection closed by peer", 0, 1);
    }
    return leave(s, rc);
}

size_t fyp_session_output(fyp_session *s, fy_slice *out)
{
    size_t n = out_pending(s);
    *out = n ? FY_SLICE(s->out.data + s->out_head, n) : FY_SLICE(NULL, 0);
    return n;
}

void fyp_session_output_consume(fyp_session *s, size_t n)
{
    size_t pending = out_pending(s);
    s->out_head += n < pending ? n : pending;
    if (s->out_head == s->out.len) {
        s->out_head = 0;
        s->out.len = 0;
    } else if (s->out_head >= 65536 && s->out_head * 2 >= s->out.len) {
        /* Compact once the written prefix dominates, so the buffer does not
         * creep forward; amortised O(1) per byte. */
        fy_buf_consume(&s->out, s->out_head);
        s->out_head = 0;
    }
}

size_t fyp_session_output_size(const fyp_session *s)
{
    return out_pending(s);
}

int fyp_session_request(fyp_session *s, const fyp_request *req, int end_stream, void *stream_data,
                        uint32_t *id)
{
    if (s->role != FYP_ROLE_GATEWAY) {
        return FY_EINVAL;
    }
    if (s->dead || s->goaway_sent || s->goaway_recv || s->next_id > FYP_MAX_STREAM_ID) {
        return FY_ECLOSED;
    }
    if (!s->hello_done) {
        return FY_EAGAIN;
    }
    uint32_t limit = s->peer.max_concurrent_streams;
    if (limit > FYP_STREAMS_HARD_CAP) {
        limit = FYP_STREAMS_HARD_CAP;
    }
    if (s->n_active >= limit) {
        return FY_ELIMIT;
    }
    fyp_frame f = {.type = FYP_FRAME_REQUEST, .stream_id = s->next_id};
    f.flags = end_stream ? FYP_FLAG_END_STREAM : 0;
    f.u.request = *req;
    size_t before = s->out.len;
    int rc = queue_frame(s, &f);
    if (rc) {
        return rc;
    }
    if (fyp_frame_payload_size(&f) > s->peer.max_header_block) {
        s->out.len = before;
        return FY_ETOOBIG;
    }
    fyp_stream *st =
        stream_new(s, s->next_id, ST_TX_HEADERS | ST_APP | (end_stream ? ST_TX_END : 0));
    if (!st) {
        s->out.len = before;
        return FY_ENOMEM;
    }
    st->user = stream_data;
    s->max_seen = s->next_id;
    *id = s->next_id;
    s->next_id += 2;
    return 0;
}

/* The stream for a local send, or an error code. */
static int local_stream(fyp_session *s, uint32_t id, fyp_stream **out)
{
    *out = NULL;
    if (s->dead) {
        return FY_ECLOSED;
    }
    fyp_stream *st = find(s, id);
    if (!st) {
        return FY_ENOENT;
    }
    if (st->flags & (ST_RESET_SENT | ST_CLOSED | ST_TX_END)) {
        return FY_ECLOSED;
    }
    *out = st;
    return 0;
}

int fyp_session_respond(fyp_session *s, uint32_t id, const fyp_response *resp, int end_stream)
{
    fyp_stream *st;
    if (s->role != FYP_ROLE_RUNNER) {
        return FY_EINVAL;
    }
    int rc = local_stream(s, id, &st);
    if (rc) {
        return rc;
    }
    if (st->flags & ST_TX_HEADERS) {
        return FY_EINVAL;
    }
    fyp_frame f = {.type = FYP_FRAME_RESPONSE, .stream_id = id};
    f.flags = end_stream ? FYP_FLAG_END_STREAM : 0;
    f.u.response = *resp;
    size_t before = s->out.len;
    rc = queue_frame(s, &f);
    if (rc) {
        return rc;
    }
    if (fyp_frame_payload_size(&f) > s->peer.max_header_block) {
        s->out.len = before;
        return FY_ETOOBIG;
    }
    st->flags |= ST_TX_HEADERS | (end_stream ? ST_TX_END : 0);
    if (end_stream) {
        maybe_close(s, st);
    }
    return 0;
}

ssize_t fyp_session_send_data(fyp_session *s, uint32_t id, const void *data, size_t len,
                              int end_stream)
{
    fyp_stream *st;
    int rc = local_stream(s, id, &st);
    if (rc) {
        return rc;
    }
    if (!(st->flags & ST_TX_HEADERS)) {
        return FY_EINVAL;
    }
    int64_t avail = st->send_window < s->conn_send ? st->send_window : s->conn_send;
    if (avail < 0) {
        avail = 0;
    }
    size_t take = (uint64_t)avail < len ? (size_t)avail : len;
    int end = end_stream && take == len;
    if (take == 0 && !end) {
        if (len) {
            block(s, st);
        }
        return 0;
    }
    size_t chunk_max =
        s->peer.max_frame_size < FYP_DATA_CHUNK ? s->peer.max_frame_size : FYP_DATA_CHUNK;
    if (!data) {
        /* Only an empty END_STREAM may come without bytes; "" keeps the
         * pointer arithmetic below defined. */
        if (len) {
            return FY_EINVAL;
        }
        data = "";
    }
    size_t before = s->out.len;
    size_t off = 0;
    do {
        size_t chunk = take - off < chunk_max ? take - off : chunk_max;
        fyp_frame f = {.type = FYP_FRAME_DATA, .stream_id = id};
        f.u.data = FY_SLICE((const char *)data + off, chunk);
        if (end && off + chunk == take) {
            f.flags = FYP_FLAG_END_STREAM;
        }
        rc = queue_frame(s, &f);
        if (rc) {
            s->out.len = before;
            return rc;
        }
        off += chunk;
    } while (off < take);
    st->send_window -= (int32_t)take;
    s->conn_send -= (int64_t)take;
    if (take < len) {
        block(s, st);
    } else {
        unblock(st);
    }
    if (end) {
        st->flags |= ST_TX_END;
        maybe_close(s, st);
    }
    return (ssize_t)take;
}

int fyp_session_send_trailers(fyp_session *s, uint32_t id, const fyp_trailers *t)
{
    fyp_stream *st;
    int rc = local_stream(s, id, &st);
    if (rc) {
        return rc;
    }
    if (!(st->flags & ST_TX_HEADERS)) {
        return FY_EINVAL;
    }
    fyp_frame f = {.type = FYP_FRAME_TRAILERS, .stream_id = id, .flags = FYP_FLAG_END_STREAM};
    f.u.trailers = *t;
    size_t before = s->out.len;
    rc = queue_frame(s, &f);
    if (rc) {
        return rc;
    }
    if (fyp_frame_payload_size(&f) > s->peer.max_header_block) {
        s->out.len = before;
        return FY_ETOOBIG;
    }
    st->flags |= ST_TX_END;
    maybe_close(s, st);
    return 0;
}

int fyp_session_reset(fyp_session *s, uint32_t id, uint32_t code)
{
    if (s->dead) {
        return FY_ECLOSED;
    }
    fyp_stream *st = find(s, id);
    if (!st || (st->flags & ST_RESET_SENT)) {
        return FY_ENOENT;
    }
    if (st->flags & ST_CLOSED) {
        /* Finished on the wire; the application drops what it still held. */
        int rc = credit_conn(s, st->unconsumed);
        stream_destroy(s, st);
        return rc;
    }
    fyp_frame f = {.type = FYP_FRAME_RST_STREAM, .stream_id = id};
    f.u.error_code = code;
    int rc = queue_frame(s, &f);
    if (rc) {
        return rc;
    }
    st->flags |= ST_RESET_SENT;
    unblock(st);
    uint32_t drop = st->unconsumed;
    st->unconsumed = 0;
    return credit_conn(s, drop);
}

int fyp_session_consume(fyp_session *s, uint32_t id, size_t n)
{
    if (s->dead) {
        return FY_ECLOSED;
    }
    fyp_stream *st = find(s, id);
    if (!st || (st->flags & ST_RESET_SENT)) {
        return FY_ENOENT;
    }
    if (n > st->unconsumed) {
        return FY_EINVAL;
    }
    if (n == 0) {
        return 0;
    }
    st->unconsumed -= (uint32_t)n;
    int rc = credit_conn(s, n);
    if (!rc) {
        rc = credit_stream(s, st, n);
    }
    if ((st->flags & ST_CLOSED) && st->unconsumed == 0) {
        stream_destroy(s, st);
    }
    return rc;
}

int fyp_session_ping(fyp_session *s)
{
    if (s->dead) {
        return FY_ECLOSED;
    }
    if (!s->hello_done) {
        return FY_EAGAIN;
    }
    uint64_t now = now_us(s);
    /* Reuse a free slot, or forget the oldest PING (its PONG is then ignored). */
    fyp_ping_slot *slot = &s->pings[0];
    for (int i = 0; i < FYP_PINGS_OUTSTANDING; i++) {
        fyp_ping_slot *p = &s->pings[i];
        if (!p->used) {
            slot = p;
            break;
        }
        if (p->sent_us < slot->sent_us) {
            slot = p;
        }
    }
    fyp_frame f = {.type = FYP_FRAME_PING};
    uint64_t seq = ++s->ping_seq;
    for (int i = 0; i < 8; i++) {
        f.u.opaque[i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    int rc = queue_frame(s, &f);
    if (rc) {
        return rc;
    }
    slot->used = 1;
    slot->opaque = seq;
    slot->sent_us = now;
    s->last_ping_us = now;
    return 0;
}

int fyp_session_tick(fyp_session *s)
{
    if (s->dead || s->free_pending) {
        return FY_ECLOSED;
    }
    uint64_t now = now_us(s);
    int rc = 0;
    enter(s);
    if (!s->hello_done) {
        if (now - s->created_us >= (uint64_t)FYP_HELLO_TIMEOUT_MS * 1000) {
            die(s, FYP_ERR_TIMEOUT, "handshake timed out", 1, 0);
            rc = FY_ETIMEDOUT;
        }
        return leave(s, rc);
    }
    uint64_t hb = (uint64_t)effective_heartbeat(s) * 1000;
    if (now - s->last_rx_us >= FYP_HEARTBEAT_MISSES * hb) {
        char msg[64];
        snprintf(msg, sizeof msg, "nothing received for %llu ms",
                 (unsigned long long)((now - s->last_rx_us) / 1000));
        die(s, FYP_ERR_TIMEOUT, msg, 1, 0);
        rc = FY_ETIMEDOUT;
    } else if (now - s->last_ping_us >= hb) {
        rc = fyp_session_ping(s);
    }
    return leave(s, rc);
}

int fyp_session_goaway(fyp_session *s, uint32_t code, const char *debug)
{
    if (s->dead) {
        return FY_ECLOSED;
    }
    if (code != FYP_ERR_NONE) {
        fyp_session_terminate(s, code, debug);
        return 0;
    }
    size_t before = s->out.len;
    queue_goaway(s, code, debug);
    return s->out.len > before ? 0 : FY_ENOMEM;
}

void fyp_session_terminate(fyp_session *s, uint32_t code, const char *debug)
{
    if (s->dead || s->free_pending) {
        return;
    }
    enter(s);
    die(s, code, debug, 1, 0);
    leave(s, 0);
}

int fyp_session_want_close(const fyp_session *s)
{
    return s->dead || ((s->goaway_sent || s->goaway_recv) && s->n_active == 0);
}

int fyp_session_ready(const fyp_session *s)
{
    return s->hello_done && !s->dead;
}

int fyp_session_dead(const fyp_session *s)
{
    return s->dead;
}

uint16_t fyp_session_version(const fyp_session *s)
{
    return s->hello_done ? s->version : 0;
}

const fyp_settings *fyp_session_peer_settings(const fyp_session *s)
{
    return s->hello_done ? &s->peer : NULL;
}

uint32_t fyp_session_heartbeat_ms(const fyp_session *s)
{
    return effective_heartbeat(s);
}

size_t fyp_session_stream_count(const fyp_session *s)
{
    return s->n_active;
}

int64_t fyp_session_send_window(const fyp_session *s, uint32_t id)
{
    if (id == 0) {
        return s->conn_send;
    }
    const fyp_stream *st = find(s, id);
    return st ? st->send_window : -1;
}

size_t fyp_session_memory(const fyp_session *s)
{
    return sizeof *s + s->dec.buf_cap + s->out.cap + s->tab_cap * sizeof *s->tab +
           s->tab_count * sizeof(fyp_stream);
}

uint32_t fyp_session_error_code(const fyp_session *s)
{
    return s->err_code;
}

const char *fyp_session_error_msg(const fyp_session *s)
{
    return s->err_msg;
}

fyp_stream_state fyp_session_stream_state(const fyp_session *s, uint32_t id)
{
    if (id == 0 || id > s->max_seen) {
        return FYP_STREAM_IDLE;
    }
    const fyp_stream *st = find(s, id);
    if (!st || (st->flags & ST_CLOSED)) {
        return FYP_STREAM_CLOSED;
    }
    if (st->flags & ST_RESET_SENT) {
        return FYP_STREAM_RESET_SENT;
    }
    if (st->flags & ST_TX_END) {
        return FYP_STREAM_HALF_CLOSED_LOCAL;
    }
    if (st->flags & ST_RX_END) {
        return FYP_STREAM_HALF_CLOSED_REMOTE;
    }
    return FYP_STREAM_OPEN;
}

const char *fyp_stream_state_name(fyp_stream_state st)
{
    static const char *const names[] = {
        "idle", "open", "half-closed (local)", "half-closed (remote)", "reset-sent", "closed"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "unknown";
}

int fyp_session_set_stream_data(fyp_session *s, uint32_t id, void *data)
{
    fyp_stream *st = find(s, id);
    if (!st) {
        return FY_ENOENT;
    }
    st->user = data;
    return 0;
}

void *fyp_session_stream_data(const fyp_session *s, uint32_t id)
{
    const fyp_stream *st = find(s, id);
    return st ? st->user : NULL;
}
