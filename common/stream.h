/* stream.h: the byte-stream layer every transport implements.
 *
 * Layers stack: TCP -> TLS -> HTTP or tunnel framing. Each layer is an
 * fy_stream with a small vtable, so a test can put a fault-injecting or
 * in-memory layer in between (see fy_stream_pair_new).
 *
 * Contract (libuv-like):
 * - Reads: after fy_stream_read_start, on_read(s, n, buf) is called with n > 0
 *   and the bytes in buf (valid only during the call), or once with n < 0: an
 *   FY_E* code (FY_EEOF for a clean end of stream). After an error no more
 *   reads are delivered. read_stop pauses delivery (backpressure).
 * - Writes: fy_stream_write queues the bytes of BUFS in order; the bytes must
 *   stay valid until CB runs (CB may be NULL). CB runs with 0 once the bytes
 *   were handed to the kernel (or the lower layer), or with an FY_E* code.
 *   Callbacks never run from inside fy_stream_write itself.
 * - fy_stream_write_queue_size tells how many bytes are queued but not yet
 *   written; producers pause above FY_STREAM_HIGH_WATERMARK.
 * - fy_stream_shutdown flushes queued writes, then ends the write side
 *   (TCP FIN; TLS close_notify then FIN). Reads may continue.
 * - fy_stream_close stops everything, fails pending writes with
 *   FY_ECANCELED, and runs CB once the stream's memory may be freed (the
 *   stream frees itself after CB; do not touch S after CB). Closing twice is
 *   a no-op. It is safe to call close from inside any of the stream's callbacks.
 */
#ifndef FY_STREAM_H
#define FY_STREAM_H

#include "buf.h"

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct fy_stream fy_stream;

typedef void (*fy_stream_read_cb)(fy_stream *s, ssize_t nread, const fy_slice *buf);
typedef void (*fy_stream_write_cb)(fy_stream *s, int status, void *arg);
typedef void (*fy_stream_close_cb)(fy_stream *s);

typedef struct {
    const char *name; /* "tcp", "tls", "pair" */
    int (*read_start)(fy_stream *s);
    int (*read_stop)(fy_stream *s);
    int (*write)(fy_stream *s, const fy_slice *bufs, size_t nbufs, fy_stream_write_cb cb,
                 void *arg);
    int (*shutdown)(fy_stream *s);
    void (*close)(fy_stream *s, fy_stream_close_cb cb);
    size_t (*write_queue_size)(const fy_stream *s);
    /* Peer address as text ("127.0.0.1:5555"); writes "" when unknown. */
    void (*peer_name)(const fy_stream *s, char *out, size_t outlen);
} fy_stream_vtable;

struct fy_stream {
    const fy_stream_vtable *vt;
    uv_loop_t *loop;
    void *data;                /* owner's pointer, untouched by the stream */
    fy_stream_read_cb on_read; /* set before read_start */
    int closing;               /* set once close was called */
    /* 1 when fy_stream_write has made its own copy of the bytes by the time
     * it returns (TLS once its handshake is done: the bytes are encrypted
     * at once), so the caller may reuse them then; the callback still
     * runs. 0: the bytes must stay valid until the callback. */
    int write_copies;
};

static inline int fy_stream_read_start(fy_stream *s)
{
    return s->vt->read_start(s);
}
static inline int fy_stream_read_stop(fy_stream *s)
{
    return s->vt->read_stop(s);
}
static inline int fy_stream_write(fy_stream *s, const fy_slice *bufs, size_t nbufs,
                                  fy_stream_write_cb cb, void *arg)
{
    return s->vt->write(s, bufs, nbufs, cb, arg);
}
static inline int fy_stream_shutdown(fy_stream *s)
{
    return s->vt->shutdown(s);
}
static inline void fy_stream_close(fy_stream *s, fy_stream_close_cb cb)
{
    s->vt->close(s, cb);
}
static inline size_t fy_stream_write_queue_size(const fy_stream *s)
{
    return s->vt->write_queue_size(s);
}
static inline void fy_stream_peer_name(const fy_stream *s, char *out, size_t outlen)
{
    s->vt->peer_name(s, out, outlen);
}

/* --- TCP ---------------------------------------------------------------- */

/* Wraps an initialised, connected uv_tcp_t (typically just accepted). The
 * stream takes ownership of TCP (it must be heap-allocated with malloc; the
 * stream closes and frees it). Sets TCP_NODELAY. Returns NULL on ENOMEM (TCP
 * is then closed and freed). */
fy_stream *fy_tcp_stream_wrap(uv_tcp_t *tcp);

typedef void (*fy_tcp_connect_cb)(fy_stream *s, int status, void *arg);

/* Resolves HOST (name or literal) and connects to HOST:PORT, giving up after
 * TIMEOUT_MS. CB gets the new stream (status 0) or NULL and an FY_E* code.
 * CB always runs later from the loop, never from inside this call. Returns 0
 * or an FY_E* code (then CB never runs). */
int fy_tcp_connect(uv_loop_t *loop, const char *host, int port, unsigned timeout_ms,
                   fy_tcp_connect_cb cb, void *arg);

/* Parses "ADDR:PORT", "[v6]:PORT" or ":PORT" (0.0.0.0). Returns 0 or FY_EINVAL. */
int fy_addr_parse(const char *text, struct sockaddr_storage *out);

/* Formats a socket address as "ADDR:PORT" (v6 in brackets). */
void fy_addr_format(const struct sockaddr *sa, char *out, size_t outlen);

/* --- In-memory pair (tests and fuzzing) --------------------------------- */

/* Creates two connected in-memory streams on LOOP: bytes written to one are
 * delivered to the other's on_read from the loop (never synchronously).
 * Shutdown on one delivers FY_EEOF to the other; close delivers
 * FY_ECONNRESET. Returns 0 or FY_ENOMEM. */
int fy_stream_pair_new(uv_loop_t *loop, fy_stream **a, fy_stream **b);

#endif
