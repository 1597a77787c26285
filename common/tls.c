/* tls.c: TLS 1.2 over any fy_stream, on mbedTLS 2.28, driven from libuv.
 *
 * mbedTLS never touches a socket here. Its BIO callbacks work on memory:
 * - recv takes ciphertext from the lower stream's read being processed (`cur`,
 *   borrowed for the duration of the lower on_read call) after anything left
 *   over from earlier reads (`in`); when both are empty it says WANT_READ.
 *   Only bytes mbedTLS did not consume are ever copied, so bulk data is
 *   decrypted straight from the lower stream's read buffer.
 * - send appends ciphertext to the chunk being assembled (`out`); after each
 *   operation (a handshake step, a batch of reads, one user write, a
 *   close_notify) the chunk is handed to the lower stream in one write and
 *   stays owned by us until that write's callback. A user write's callback
 *   runs from the callback of the lower write that carried its records, so
 *   it is never synchronous and keeps the order of writes.
 *
 * Chunks come from a small pool in the config, so a steady request/response
 * load does no per-record allocation.
 *
 * Lifetime: user callbacks may close the stream. Nothing is freed inside
 * close: the stream waits for its timer and idle handles and for the lower
 * stream to report closed (each of which libuv delivers later from the
 * loop), so every code path that ran a user callback only has to check
 * `base.closing` before touching mbedTLS again. */
#include "tls.h"

#include "err.h"
#include "limits.h"
#include "log.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TLS_LOG "tls"

/* Plaintext handed to on_read per call: consecutive records are gathered up
 * to this size, so small pipelined records reach the parser in one batch. */
#define TLS_PLAIN_BUF (16 * 1024)
/* Ciphertext held while reads are paused: at most one partial record plus
 * the lower read that was in flight when we stopped it. A lower stream that
 * ignores read_stop and keeps delivering fails with FY_ETOOBIG. */
#define TLS_IN_MAX (256 * 1024)
/* Pooled chunk size: one full record plus overhead, and all handshake flights
 * we send, fit; bigger writes get a one-off allocation. */
#define TLS_CHUNK_STD  (32 * 1024)
#define TLS_CHUNK_POOL 64
/* Larger chunks (a tunnel link's writes are up to 256 KiB of plaintext) are
 * kept too, a few, in sizes rounded up to TLS_CHUNK_BIG_STEP: a fresh
 * allocation of that size is an mmap whose every page faults on first
 * touch and is unmapped again on free, which perf showed as a third of the
 * runner's time in a large download. */
#define TLS_CHUNK_BIG_STEP (64 * 1024)
#define TLS_CHUNK_BIG_POOL 4

/* --- policy ------------------------------------------------------------- */

/* ECDHE with AEAD only, in server preference order (AES-GCM first: it has
 * hardware support on the machines we run on). */
static const int tls_ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* The same suites with ChaCha20-Poly1305 first (fy_tls_options.prefer_chacha). */
static const int tls_ciphersuites_chacha[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

static const mbedtls_ecp_group_id tls_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

/* --- types -------------------------------------------------------------- */

typedef struct tls_stream tls_stream;

/* Ciphertext on its way to the lower stream. */
typedef struct tls_chunk tls_chunk;
struct tls_chunk {
    tls_chunk *next; /* pool free list */
    tls_stream *ts;
    fy_stream_write_cb cb; /* the user write this chunk completes, if any */
    void *arg;
    size_t len, cap;
    unsigned char data[];
};

/* A user write queued before the handshake finished (the slices point into
 * the caller's memory, which stream.h keeps valid until the callback). */
typedef struct tls_wreq tls_wreq;
struct tls_wreq {
    tls_wreq *next;
    fy_stream_write_cb cb;
    void *arg;
    size_t total, nbufs;
    fy_slice bufs[];
};

struct fy_tls_config {
    int is_server;
    int require_client_cert;
    int optional_client_cert;
    int pinned; /* client: pin[] replaces a CA chain */
    uint8_t pin[32];
    unsigned handshake_timeout_ms;
    size_t max_write_queue;
    char *server_name;
    char **alpn; /* NULL-terminated, owned; mbedTLS keeps the pointer */
    int nstreams;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt own_chain, ca_chain;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    tls_chunk *pool;
    size_t npool;
    tls_chunk *big_pool; /* chunks above TLS_CHUNK_STD, any size */
    size_t nbig;
    /* Gathers small slices of one write into full records (writes are
     * synchronous and the config is used by one thread, so one suffices). */
    unsigned char scratch[MBEDTLS_SSL_OUT_CONTENT_LEN];
};

typedef enum { TLS_HANDSHAKE, TLS_OPEN, TLS_FAILED } tls_state;

struct tls_stream {
    fy_stream base;
    fy_tls_config *cfg;
    fy_stream *lower;
    mbedtls_ssl_context ssl;
    uv_timer_t timer; /* handshake timeout */
    uv_idle_t idle;   /* deferred work: see tls_kick */
    tls_state state;
    int err; /* sticky: once set, writes fail with it */
    fy_tls_handshake_cb hs_cb;
    void *hs_arg;
    int hs_fail_pending; /* a failure found inside fy_tls_stream_new */

    /* Reads. */
    int reading;       /* the user wants on_read calls */
    int lower_reading; /* LOWER's reads are started */
    int read_done;     /* a terminal status reached on_read */
    int term;          /* terminal read status found, not yet delivered */
    int lower_status;  /* LOWER's terminal status (FY_EEOF or an error) */
    int need_process;  /* the idle handle should run tls_process */
    fy_buf in;         /* ciphertext mbedTLS has not consumed yet */
    size_t in_off;
    const unsigned char *cur; /* the lower read being processed */
    size_t cur_len, cur_off;

    /* Writes. */
    tls_chunk *out; /* ciphertext being assembled by the send callback */
    tls_wreq *pend_head, *pend_tail;
    size_t pend_bytes;
    int shutdown_requested;

    int close_pending; /* timer, idle and LOWER still to report closed */
    fy_stream_close_cb close_cb;

    char sni[256];        /* server: the name the client asked for */
    unsigned char ip[16]; /* client: IP literal to match, when ip_len */
    size_t ip_len;
};

/* Plaintext is gathered in one buffer per thread, not per connection: a
 * gateway holding 10,000 idle HTTPS streams would otherwise hold 10,000 of
 * them (16 KiB each, as much as mbedTLS's own record buffers). on_read may
 * only use the bytes during the call (stream.h), so a buffer that is free
 * again once the read loop returns is enough; a read loop that runs inside
 * another's callback (a nested delivery) takes a buffer of its own. The
 * bytes are wiped when the loop is done with them. */
static _Thread_local unsigned char tls_plain[TLS_PLAIN_BUF];
static _Thread_local int tls_plain_busy;

static const fy_stream_vtable tls_vtable;

/* --- errors ------------------------------------------------------------- */

static int tls_alert_is_cert(int alert)
{
    switch (alert) {
    case MBEDTLS_SSL_ALERT_MSG_NO_CERT:
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED:
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
        return 1;
    default:
        return 0;
    }
}

/* Maps an mbedTLS error to ferry's vocabulary and logs the detail. */
static int tls_map_err(tls_stream *ts, int rc, const char *what)
{
    int fy = FY_ETLS;
    int alert = -1;
    switch (rc) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
    case MBEDTLS_ERR_SSL_CERTIFICATE_REQUIRED:
    case MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE:
    case MBEDTLS_ERR_SSL_PEER_VERIFY_FAILED:
        fy = FY_ECERT;
        break;
    case MBEDTLS_ERR_SSL_ALLOC_FAILED:
        fy = FY_ENOMEM;
        break;
    case MBEDTLS_ERR_SSL_BAD_INPUT_DATA:
        fy = FY_EINVAL;
        break;
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
        alert = ts->ssl.in_msg ? ts->ssl.in_msg[1] : -1;
        if (tls_alert_is_cert(alert)) {
            fy = FY_ECERT;
        }
        break;
    default:
        /* X.509 errors (-0x2080 .. -0x2980) mean a certificate we could not
         * parse or accept. */
        if (rc <= -0x2080 && rc >= -0x2980) {
            fy = FY_ECERT;
        }
        break;
    }
    if (fy_log_enabled(FY_LOG_DEBUG)) {
        char msg[160], peer[64], extra[300] = "";
        mbedtls_strerror(rc, msg, sizeof msg);
        fy_stream_peer_name(ts->lower, peer, sizeof peer);
        uint32_t flags = mbedtls_ssl_get_verify_result(&ts->ssl);
        if (alert >= 0) {
            snprintf(extra, sizeof extra, ", alert %d", alert);
        } else if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 &&
                   flags != (uint32_t)-1) {
            int n = snprintf(extra, sizeof extra, ", verify:");
            mbedtls_x509_crt_verify_info(extra + n, sizeof extra - (size_t)n, " ", flags);
            for (char *p = extra; *p; p++) {
                if (*p == '\n') {
                    *p = ';';
                }
            }
        }
        FY_DEBUG(TLS_LOG, "%s %s with %s failed: %s (-0x%04x)%s -> %s",
                 ts->cfg->is_server ? "server" : "client", what, peer[0] ? peer : "peer", msg,
                 (unsigned)-rc, extra, fy_err_name(fy));
    }
    return fy;
}

/* --- chunks ------------------------------------------------------------- */

/* A kept chunk of at least NEED bytes, unlinked from the big pool. */
static tls_chunk *chunk_big_take(fy_tls_config *cfg, size_t need)
{
    for (tls_chunk **pp = &cfg->big_pool; *pp; pp = &(*pp)->next) {
        if ((*pp)->cap >= need) {
            tls_chunk *c = *pp;
            *pp = c->next;
            cfg->nbig--;
            return c;
        }
    }
    return NULL;
}

static tls_chunk *chunk_get(fy_tls_config *cfg, size_t need)
{
    tls_chunk *c = NULL;
    if (need <= TLS_CHUNK_STD && cfg->pool) {
        c = cfg->pool;
        cfg->pool = c->next;
        cfg->npool--;
    } else if (need > TLS_CHUNK_STD) {
        c = chunk_big_take(cfg, need);
    }
    if (!c) {
        size_t cap = TLS_CHUNK_STD;
        if (need > TLS_CHUNK_STD) {
            cap = (need + TLS_CHUNK_BIG_STEP - 1) / TLS_CHUNK_BIG_STEP * TLS_CHUNK_BIG_STEP;
        }
        c = malloc(sizeof *c + cap);
        if (!c) {
            return NULL;
        }
        c->cap = cap;
    }
    c->next = NULL;
    c->ts = NULL;
    c->cb = NULL;
    c->arg = NULL;
    c->len = 0;
    return c;
}

static void chunk_put(fy_tls_config *cfg, tls_chunk *c)
{
    if (!c) {
        return;
    }
    if (c->cap == TLS_CHUNK_STD && cfg->npool < TLS_CHUNK_POOL) {
        c->next = cfg->pool;
        cfg->pool = c;
        cfg->npool++;
        return;
    }
    if (c->cap > TLS_CHUNK_STD && cfg->nbig < TLS_CHUNK_BIG_POOL) {
        c->next = cfg->big_pool;
        cfg->big_pool = c;
        cfg->nbig++;
        return;
    }
    free(c);
}

/* Makes room for N more bytes in the chunk being assembled. */
static int out_reserve(tls_stream *ts, size_t n)
{
    tls_chunk *c = ts->out;
    if (!c) {
        c = chunk_get(ts->cfg, n);
        if (!c) {
            return FY_ENOMEM;
        }
        ts->out = c;
    }
    if (c->cap - c->len >= n) {
        return 0;
    }
    size_t cap = c->cap * 2;
    if (cap < c->len + n) {
        cap = c->len + n;
    }
    tls_chunk *g = realloc(c, sizeof *c + cap);
    if (!g) {
        return FY_ENOMEM;
    }
    g->cap = cap;
    ts->out = g;
    return 0;
}

/* --- BIO callbacks ------------------------------------------------------ */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    tls_stream *ts = ctx;
    if (out_reserve(ts, len) != 0) {
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    }
    memcpy(ts->out->data + ts->out->len, buf, len);
    ts->out->len += len;
    return (int)len;
}

static size_t in_avail(const tls_stream *ts)
{
    return (ts->in.len - ts->in_off) + (ts->cur ? ts->cur_len - ts->cur_off : 0);
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    tls_stream *ts = ctx;
    size_t n = 0;
    size_t have = ts->in.len - ts->in_off;
    if (have > 0) {
        n = have < len ? have : len;
        memcpy(buf, ts->in.data + ts->in_off, n);
        ts->in_off += n;
        if (ts->in_off == ts->in.len) {
            ts->in.len = 0;
            ts->in_off = 0;
        }
    }
    if (n < len && ts->cur) {
        size_t more = ts->cur_len - ts->cur_off;
        if (more > len - n) {
            more = len - n;
        }
        memcpy(buf + n, ts->cur + ts->cur_off, more);
        ts->cur_off += more;
        n += more;
    }
    if (n == 0) {
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    return (int)n;
}

/* Client side: mbedTLS 2.28 matches DNS names only; an IP literal is
 * checked here against the certificate's iPAddress entries. */
static int tls_verify_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    tls_stream *ts = p;
    if (ts->cfg->pinned && (*flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)) {
        /* No CA chain is configured, so the top of the peer's chain is
         * "not trusted" -- unless it is the pinned CA. Only that certificate's
         * own flag is cleared: a bad signature below it is flagged on the
         * child, and validity and host name flags stay. */
        uint8_t fp[32];
        if (crt->raw.p && mbedtls_sha256_ret(crt->raw.p, crt->raw.len, fp, 0) == 0 &&
            crt->ca_istrue && memcmp(fp, ts->cfg->pin, 32) == 0) {
            *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_NOT_TRUSTED;
        }
    }
    if (depth != 0 || ts->ip_len == 0) {
        return 0;
    }
    const unsigned char ip_tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS;
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        if (s->buf.tag == ip_tag && s->buf.len == ts->ip_len &&
            memcmp(s->buf.p, ts->ip, ts->ip_len) == 0) {
            return 0;
        }
    }
    *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

/* Server side: records the name the client asked for. Any name is accepted
 * (one certificate per config); names that are not printable ASCII are not
 * recorded. */
static int tls_sni_cb(void *p, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
    (void)p;
    tls_stream *ts = (tls_stream *)((char *)ssl - offsetof(tls_stream, ssl));
    if (len == 0 || len >= sizeof ts->sni) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (name[i] <= 0x20 || name[i] >= 0x7f) {
            return 0;
        }
    }
    memcpy(ts->sni, name, len);
    ts->sni[len] = '\0';
    return 0;
}

/* --- plumbing ----------------------------------------------------------- */

static void tls_idle_cb(uv_idle_t *h);

/* Schedules deferred work (user callbacks that must not run inside the
 * call that caused them, and input processing after read_start). */
static void tls_kick(tls_stream *ts)
{
    if (!ts->base.closing) {
        uv_idle_start(&ts->idle, tls_idle_cb);
    }
}

/* Starts or stops LOWER's reads: on during the handshake, and afterwards
 * only while the user reads, so a paused reader pushes back on TCP. */
static void tls_update_lower_reading(tls_stream *ts)
{
    int want = !ts->base.closing && ts->lower_status == 0 && !ts->read_done && ts->term == 0 &&
               (ts->state == TLS_HANDSHAKE || (ts->state == TLS_OPEN && ts->reading));
    if (want == ts->lower_reading) {
        return;
    }
    ts->lower_reading = want;
    int rc = want ? fy_stream_read_start(ts->lower) : fy_stream_read_stop(ts->lower);
    if (rc && want) {
        ts->lower_reading = 0;
        ts->lower_status = rc;
        ts->need_process = 1;
        tls_kick(ts);
    }
}

static void chunk_written(fy_stream *lower, int status, void *arg)
{
    tls_chunk *c = arg;
    tls_stream *ts = c->ts;
    fy_stream_write_cb cb = c->cb;
    void *cbarg = c->arg;
    (void)lower;
    chunk_put(ts->cfg, c);
    if (status && !ts->err) {
        ts->err = status;
    }
    if (cb) {
        cb(&ts->base, status, cbarg);
    }
}

/* Hands the assembled ciphertext to LOWER in one write. With a user callback
 * a write is issued even when there is no ciphertext (a zero-length user
 * write), so callbacks keep their order. */
static int tls_flush(tls_stream *ts, fy_stream_write_cb cb, void *arg)
{
    tls_chunk *c = ts->out;
    if ((!c || c->len == 0) && !cb) {
        return 0;
    }
    if (!c) {
        c = chunk_get(ts->cfg, 0);
        if (!c) {
            return FY_ENOMEM;
        }
    }
    ts->out = NULL;
    c->ts = ts;
    c->cb = cb;
    c->arg = arg;
    fy_slice sl = {(char *)c->data, c->len};
    int rc = fy_stream_write(ts->lower, &sl, 1, chunk_written, c);
    if (rc) {
        chunk_put(ts->cfg, c);
        if (!ts->err) {
            ts->err = rc;
        }
    }
    return rc;
}

/* Encrypts one user write into ts->out: slices of a full record or more are
 * encrypted in place; runs of smaller slices are gathered into one record. */
static int tls_encrypt(tls_stream *ts, const fy_slice *bufs, size_t nbufs, size_t total)
{
    int maxrec = mbedtls_ssl_get_max_out_record_payload(&ts->ssl);
    int exp = mbedtls_ssl_get_record_expansion(&ts->ssl);
    size_t rec = maxrec > 0 ? (size_t)maxrec : MBEDTLS_SSL_OUT_CONTENT_LEN;
    if (rec > sizeof ts->cfg->scratch) {
        rec = sizeof ts->cfg->scratch;
    }
    size_t nrec = total / rec + nbufs + 1;
    int rc = out_reserve(ts, total + nrec * (exp > 0 ? (size_t)exp : 64));
    if (rc) {
        return rc;
    }
    size_t i = 0, off = 0;
    while (i < nbufs) {
        size_t rem = bufs[i].len - off;
        if (rem == 0) {
            i++;
            off = 0;
            continue;
        }
        const unsigned char *p;
        size_t n;
        if (rem >= rec || i == nbufs - 1) {
            p = (const unsigned char *)bufs[i].base + off;
            n = rem < rec ? rem : rec;
            off += n;
        } else {
            n = 0;
            while (i < nbufs && n < rec) {
                size_t take = bufs[i].len - off;
                if (take > rec - n) {
                    take = rec - n;
                }
                memcpy(ts->cfg->scratch + n, bufs[i].base + off, take);
                n += take;
                off += take;
                if (off == bufs[i].len) {
                    i++;
                    off = 0;
                }
            }
            p = ts->cfg->scratch;
        }
        while (n > 0) {
            int w = mbedtls_ssl_write(&ts->ssl, p, n);
            if (w <= 0) {
                /* Our send callback never blocks, so this is fatal. */
                return w == MBEDTLS_ERR_SSL_ALLOC_FAILED ? FY_ENOMEM : tls_map_err(ts, w, "write");
            }
            p += w;
            n -= (size_t)w;
        }
    }
    return 0;
}

/* Encrypts and sends one user write; on failure the stream is broken (the
 * record sequence has moved on) and the error is sticky. */
static int tls_send_user(tls_stream *ts, const fy_slice *bufs, size_t nbufs, size_t total,
                         fy_stream_write_cb cb, void *arg)
{
    int rc = tls_encrypt(ts, bufs, nbufs, total);
    if (rc) {
        if (ts->out) {
            ts->out->len = 0;
        }
        if (!ts->err) {
            ts->err = rc;
        }
        return rc;
    }
    return tls_flush(ts, cb, arg);
}

static int tls_do_shutdown(tls_stream *ts)
{
    int rc = mbedtls_ssl_close_notify(&ts->ssl);
    if (rc) {
        return tls_map_err(ts, rc, "close_notify");
    }
    rc = tls_flush(ts, NULL, NULL);
    if (rc) {
        return rc;
    }
    return fy_stream_shutdown(ts->lower);
}

/* Runs the callbacks of writes queued before the handshake with STATUS. */
static void tls_fail_pending(tls_stream *ts, int status)
{
    while (ts->pend_head && !ts->base.closing) {
        tls_wreq *w = ts->pend_head;
        ts->pend_head = w->next;
        if (!ts->pend_head) {
            ts->pend_tail = NULL;
        }
        ts->pend_bytes -= w->total;
        fy_stream_write_cb cb = w->cb;
        void *arg = w->arg;
        free(w);
        if (cb) {
            cb(&ts->base, status, arg);
        }
    }
}

/* The handshake failed or timed out. */
static void tls_fail(tls_stream *ts, int status)
{
    if (ts->state != TLS_HANDSHAKE) {
        return;
    }
    ts->state = TLS_FAILED;
    ts->err = status;
    uv_timer_stop(&ts->timer);
    tls_update_lower_reading(ts);
    if (ts->hs_cb) {
        ts->hs_cb(&ts->base, status, ts->hs_arg);
    }
    tls_fail_pending(ts, status);
    if (!ts->base.closing && ts->reading && !ts->read_done) {
        ts->read_done = 1;
        if (ts->base.on_read) {
            ts->base.on_read(&ts->base, status, NULL);
        }
    }
}

static void tls_handshake_done(tls_stream *ts)
{
    uv_timer_stop(&ts->timer);
    ts->state = TLS_OPEN;
    ts->base.write_copies = 1; /* tls_send_user encrypts into chunks of its own */
    if (fy_log_enabled(FY_LOG_DEBUG)) {
        char peer[64];
        const char *alpn = mbedtls_ssl_get_alpn_protocol(&ts->ssl);
        fy_stream_peer_name(ts->lower, peer, sizeof peer);
        FY_DEBUG(TLS_LOG, "%s handshake with %s done: %s %s alpn=%s sni=%s",
                 ts->cfg->is_server ? "server" : "client", peer, mbedtls_ssl_get_version(&ts->ssl),
                 mbedtls_ssl_get_ciphersuite(&ts->ssl), alpn ? alpn : "-",
                 ts->sni[0] ? ts->sni : "-");
    }
    if (ts->hs_cb) {
        ts->hs_cb(&ts->base, 0, ts->hs_arg);
        if (ts->base.closing) {
            return;
        }
    }
    /* Writes queued during the handshake go out in order, one lower write
     * each; a failure is reported to that write and the rest. */
    while (ts->pend_head && !ts->base.closing) {
        tls_wreq *w = ts->pend_head;
        ts->pend_head = w->next;
        if (!ts->pend_head) {
            ts->pend_tail = NULL;
        }
        ts->pend_bytes -= w->total;
        int rc = ts->err ? ts->err : tls_send_user(ts, w->bufs, w->nbufs, w->total, w->cb, w->arg);
        fy_stream_write_cb cb = w->cb;
        void *arg = w->arg;
        free(w);
        if (rc && cb) {
            cb(&ts->base, rc, arg);
        }
    }
    if (ts->base.closing) {
        return;
    }
    if (ts->shutdown_requested && !ts->err) {
        int rc = tls_do_shutdown(ts);
        if (rc && !ts->err) {
            ts->err = rc;
        }
    }
    tls_update_lower_reading(ts);
}

/* Decrypts buffered records and hands plaintext to on_read in batches of up
 * to TLS_PLAIN_BUF, then any terminal status. Stops as soon as the user
 * pauses or closes. */
static void tls_read_loop_in(tls_stream *ts, unsigned char *plain, size_t *used)
{
    size_t plen = 0;
    while (!ts->base.closing && ts->reading && !ts->read_done) {
        if (ts->term == 0) {
            size_t before = in_avail(ts);
            int rc = mbedtls_ssl_read(&ts->ssl, plain + plen, TLS_PLAIN_BUF - plen);
            if (rc > 0) {
                plen += (size_t)rc;
                if (plen < TLS_PLAIN_BUF) {
                    continue;
                }
            } else if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
                size_t after = in_avail(ts);
                if (after > 0 && after < before) {
                    /* A non-data record (a refused renegotiation, a warning
                     * alert) was handled; more input is waiting. */
                    continue;
                }
                if (after == 0 && ts->lower_status != 0) {
                    /* LOWER ended without close_notify: a truncated stream. */
                    ts->term = ts->lower_status == FY_EEOF ? FY_ECONNRESET : ts->lower_status;
                    continue;
                }
                if (plen == 0) {
                    break;
                }
            } else if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
                ts->term = FY_EEOF;
                continue;
            } else if (rc == 0) {
                ts->term = FY_ECONNRESET;
                continue;
            } else {
                ts->term = tls_map_err(ts, rc, "read");
                if (!ts->err) {
                    ts->err = ts->term;
                }
                continue;
            }
            /* Deliver a full batch, or what we have before waiting. */
            fy_slice sl = {(char *)plain, plen};
            *used = plen > *used ? plen : *used;
            plen = 0;
            if (ts->base.on_read) {
                ts->base.on_read(&ts->base, (ssize_t)sl.len, &sl);
            }
            continue;
        }
        if (plen > 0) {
            fy_slice sl = {(char *)plain, plen};
            *used = plen > *used ? plen : *used;
            plen = 0;
            if (ts->base.on_read) {
                ts->base.on_read(&ts->base, (ssize_t)sl.len, &sl);
            }
            continue;
        }
        ts->read_done = 1;
        if (ts->base.on_read) {
            ts->base.on_read(&ts->base, ts->term, NULL);
        }
    }
}

static void tls_read_loop(tls_stream *ts)
{
    int shared = !tls_plain_busy;
    unsigned char *plain = shared ? tls_plain : malloc(TLS_PLAIN_BUF);
    if (!plain) {
        if (!ts->err) {
            ts->err = FY_ENOMEM;
        }
        if (!ts->read_done && !ts->base.closing && ts->reading) {
            ts->read_done = 1; /* reads end with the error, as any other */
            if (ts->base.on_read) {
                ts->base.on_read(&ts->base, FY_ENOMEM, NULL);
            }
        }
        return;
    }
    tls_plain_busy = 1;
    size_t used = 0;
    tls_read_loop_in(ts, plain, &used);
    mbedtls_platform_zeroize(plain, used);
    if (shared) {
        tls_plain_busy = 0;
    } else {
        free(plain);
    }
}

/* Advances the handshake and/or the reads with whatever input is buffered,
 * then sends what mbedTLS produced (handshake flights, alerts). */
static void tls_process(tls_stream *ts)
{
    if (ts->state == TLS_HANDSHAKE) {
        int rc = mbedtls_ssl_handshake(&ts->ssl);
        int frc = tls_flush(ts, NULL, NULL);
        if (frc && (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)) {
            tls_fail(ts, frc); /* LOWER cannot take our flight */
            return;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (ts->lower_status) {
                tls_fail(ts, ts->lower_status == FY_EEOF ? FY_ECONNRESET : ts->lower_status);
            }
            return;
        }
        if (rc == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE) {
            /* mbedTLS fails silently here; RFC 5246 7.4.6 says to answer a
             * missing required certificate with handshake_failure. */
            mbedtls_ssl_send_alert_message(&ts->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                           MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
            tls_flush(ts, NULL, NULL);
        }
        if (rc != 0) {
            tls_fail(ts, tls_map_err(ts, rc, "handshake"));
            return;
        }
        if ((ts->cfg->optional_client_cert && mbedtls_ssl_get_peer_cert(&ts->ssl) &&
             mbedtls_ssl_get_verify_result(&ts->ssl) != 0) ||
            (ts->cfg->pinned && mbedtls_ssl_get_verify_result(&ts->ssl) != 0)) {
            /* VERIFY_OPTIONAL lets a bad certificate through; a client that
             * sends one is refused like under REQUIRED. */
            mbedtls_ssl_send_alert_message(&ts->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                           MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
            tls_flush(ts, NULL, NULL);
            tls_fail(ts, tls_map_err(ts, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, "handshake"));
            return;
        }
        tls_handshake_done(ts);
    }
    if (ts->base.closing) {
        return;
    }
    if (ts->state == TLS_OPEN) {
        tls_read_loop(ts);
        if (!ts->base.closing) {
            tls_flush(ts, NULL, NULL);
            tls_update_lower_reading(ts);
        }
    } else if (ts->state == TLS_FAILED && ts->reading && !ts->read_done) {
        ts->read_done = 1;
        if (ts->base.on_read) {
            ts->base.on_read(&ts->base, ts->err, NULL);
        }
    }
}

/* Keeps the unconsumed rest of the lower read that was just processed. */
static int tls_save_cur(tls_stream *ts)
{
    size_t rest = ts->cur ? ts->cur_len - ts->cur_off : 0;
    const unsigned char *p = ts->cur ? ts->cur + ts->cur_off : NULL;
    ts->cur = NULL;
    ts->cur_len = ts->cur_off = 0;
    if (ts->in_off > 0) {
        fy_buf_consume(&ts->in, ts->in_off);
        ts->in_off = 0;
    }
    return rest ? fy_buf_append(&ts->in, p, rest) : 0;
}

static void tls_lower_read(fy_stream *lower, ssize_t nread, const fy_slice *buf)
{
    tls_stream *ts = lower->data;
    if (ts->base.closing) {
        return;
    }
    if (nread < 0) {
        ts->lower_reading = 0;
        ts->lower_status = (int)nread;
        tls_process(ts);
        return;
    }
    ts->cur = (const unsigned char *)buf->base;
    ts->cur_len = (size_t)nread;
    ts->cur_off = 0;
    tls_process(ts);
    if (ts->base.closing) {
        ts->cur = NULL;
        return;
    }
    int rc = tls_save_cur(ts);
    if (rc) {
        /* Only a lower stream that ignores read_stop gets here. */
        ts->lower_status = rc;
        if (ts->state == TLS_HANDSHAKE) {
            tls_fail(ts, rc);
        } else if (ts->term == 0) {
            ts->term = rc;
        }
        tls_update_lower_reading(ts);
    }
}

static void tls_timeout_cb(uv_timer_t *t)
{
    tls_stream *ts = t->data;
    if (ts->state == TLS_HANDSHAKE && !ts->base.closing) {
        if (fy_log_enabled(FY_LOG_DEBUG)) {
            char peer[64];
            fy_stream_peer_name(ts->lower, peer, sizeof peer);
            FY_DEBUG(TLS_LOG, "handshake with %s timed out", peer[0] ? peer : "peer");
        }
        tls_fail(ts, FY_ETIMEDOUT);
    }
}

static void tls_idle_cb(uv_idle_t *h)
{
    tls_stream *ts = h->data;
    uv_idle_stop(h);
    if (ts->base.closing) {
        return;
    }
    if (ts->hs_fail_pending) {
        int status = ts->hs_fail_pending;
        ts->hs_fail_pending = 0;
        tls_fail(ts, status);
        return;
    }
    if (ts->need_process) {
        ts->need_process = 0;
        tls_process(ts);
    }
}

/* --- vtable ------------------------------------------------------------- */

static int tls_read_start(fy_stream *s)
{
    tls_stream *ts = (tls_stream *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    ts->reading = 1;
    if (!ts->read_done && ts->state != TLS_HANDSHAKE) {
        /* Buffered input, plaintext mbedTLS holds, or a terminal status may
         * be waiting; deliver them from the loop, never from in here. */
        if (ts->state == TLS_FAILED || ts->term || ts->lower_status || in_avail(ts) > 0 ||
            mbedtls_ssl_check_pending(&ts->ssl)) {
            ts->need_process = 1;
            tls_kick(ts);
        }
    }
    tls_update_lower_reading(ts);
    return 0;
}

static int tls_read_stop(fy_stream *s)
{
    tls_stream *ts = (tls_stream *)s;
    if (s->closing) {
        return 0;
    }
    ts->reading = 0;
    tls_update_lower_reading(ts);
    return 0;
}

static size_t tls_queue_size(const fy_stream *s)
{
    const tls_stream *ts = (const tls_stream *)s;
    size_t n = ts->pend_bytes + (ts->out ? ts->out->len : 0);
    if (!s->closing) {
        n += fy_stream_write_queue_size(ts->lower);
    }
    return n;
}

static int tls_write(fy_stream *s, const fy_slice *bufs, size_t nbufs, fy_stream_write_cb cb,
                     void *arg)
{
    tls_stream *ts = (tls_stream *)s;
    if (s->closing || ts->shutdown_requested) {
        return FY_ECLOSED;
    }
    if (ts->err) {
        return ts->err;
    }
    if (nbufs > 0 && !bufs) {
        return FY_EINVAL;
    }
    size_t total = 0;
    for (size_t i = 0; i < nbufs; i++) {
        total += bufs[i].len;
    }
    /* Refusing a write for its own size would break callers that send a
     * whole response at once (its memory is theirs already); what must not
     * grow without bound is a queue that a producer keeps adding to while
     * the peer does not read. */
    if (total > 0 && tls_queue_size(s) >= ts->cfg->max_write_queue) {
        return FY_EAGAIN;
    }
    if (ts->state == TLS_HANDSHAKE) {
        tls_wreq *w = malloc(sizeof *w + nbufs * sizeof w->bufs[0]);
        if (!w) {
            return FY_ENOMEM;
        }
        w->next = NULL;
        w->cb = cb;
        w->arg = arg;
        w->total = total;
        w->nbufs = nbufs;
        if (nbufs) {
            memcpy(w->bufs, bufs, nbufs * sizeof bufs[0]);
        }
        if (ts->pend_tail) {
            ts->pend_tail->next = w;
        } else {
            ts->pend_head = w;
        }
        ts->pend_tail = w;
        ts->pend_bytes += total;
        return 0;
    }
    return tls_send_user(ts, bufs, nbufs, total, cb, arg);
}

static int tls_shutdown(fy_stream *s)
{
    tls_stream *ts = (tls_stream *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    if (ts->shutdown_requested) {
        return 0;
    }
    if (ts->err) {
        return ts->err;
    }
    ts->shutdown_requested = 1;
    if (ts->state == TLS_OPEN) {
        int rc = tls_do_shutdown(ts);
        if (rc && !ts->err) {
            ts->err = rc;
        }
        return rc;
    }
    /* During the handshake: done once it completes and queued writes went. */
    return 0;
}

static void tls_release(tls_stream *ts)
{
    if (--ts->close_pending > 0) {
        return;
    }
    /* Writes still queued never reached LOWER. */
    while (ts->pend_head) {
        tls_wreq *w = ts->pend_head;
        ts->pend_head = w->next;
        if (w->cb) {
            w->cb(&ts->base, FY_ECANCELED, w->arg);
        }
        free(w);
    }
    chunk_put(ts->cfg, ts->out);
    ts->out = NULL;
    mbedtls_ssl_free(&ts->ssl);
    fy_buf_free(&ts->in);
    ts->cfg->nstreams--;
    if (ts->close_cb) {
        ts->close_cb(&ts->base);
    }
    free(ts);
}

static void tls_handle_closed(uv_handle_t *h)
{
    tls_release(h->data);
}

static void tls_lower_closed(fy_stream *lower)
{
    tls_release(lower->data);
}

static void tls_close(fy_stream *s, fy_stream_close_cb cb)
{
    tls_stream *ts = (tls_stream *)s;
    if (s->closing) {
        return;
    }
    s->closing = 1;
    ts->close_cb = cb;
    ts->close_pending = 3;
    uv_timer_stop(&ts->timer);
    uv_idle_stop(&ts->idle);
    uv_close((uv_handle_t *)&ts->timer, tls_handle_closed);
    uv_close((uv_handle_t *)&ts->idle, tls_handle_closed);
    /* LOWER fails its pending writes (and so ours, through chunk_written)
     * with FY_ECANCELED before it reports closed. */
    fy_stream_close(ts->lower, tls_lower_closed);
}

static void tls_peer_name(const fy_stream *s, char *out, size_t outlen)
{
    const tls_stream *ts = (const tls_stream *)s;
    fy_stream_peer_name(ts->lower, out, outlen);
}

static const fy_stream_vtable tls_vtable = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .write_queue_size = tls_queue_size,
    .peer_name = tls_peer_name,
};

fy_stream *fy_tls_stream_new(fy_tls_config *cfg, fy_stream *lower, const char *server_name,
                             fy_tls_handshake_cb cb, void *arg)
{
    tls_stream *ts = cfg && lower ? calloc(1, sizeof *ts) : NULL;
    if (!ts) {
        if (lower) {
            fy_stream_close(lower, NULL);
        }
        return NULL;
    }
    ts->base.vt = &tls_vtable;
    ts->base.loop = lower->loop;
    ts->cfg = cfg;
    ts->lower = lower;
    ts->hs_cb = cb;
    ts->hs_arg = arg;
    ts->state = TLS_HANDSHAKE;
    fy_buf_init(&ts->in, TLS_IN_MAX);
    mbedtls_ssl_init(&ts->ssl);
    uv_timer_init(lower->loop, &ts->timer);
    ts->timer.data = ts;
    uv_idle_init(lower->loop, &ts->idle);
    ts->idle.data = ts;
    cfg->nstreams++;
    lower->data = ts;
    lower->on_read = tls_lower_read;

    int fail = 0;
    int rc = mbedtls_ssl_setup(&ts->ssl, &cfg->conf);
    if (rc) {
        fail = rc == MBEDTLS_ERR_SSL_ALLOC_FAILED ? FY_ENOMEM : tls_map_err(ts, rc, "setup");
    }
    mbedtls_ssl_set_bio(&ts->ssl, ts, bio_send, bio_recv, NULL);
    if (!fail && !cfg->is_server) {
        const char *name = server_name ? server_name : cfg->server_name;
        struct in6_addr a6;
        struct in_addr a4;
        if (!name || !name[0]) {
            FY_DEBUG(TLS_LOG, "client stream without a server name: refusing to connect");
            fail = FY_EINVAL;
        } else if (inet_pton(AF_INET, name, &a4) == 1) {
            memcpy(ts->ip, &a4, 4);
            ts->ip_len = 4;
        } else if (inet_pton(AF_INET6, name, &a6) == 1) {
            memcpy(ts->ip, &a6, 16);
            ts->ip_len = 16;
        } else if (mbedtls_ssl_set_hostname(&ts->ssl, name) != 0) {
            fail = FY_EINVAL;
        }
        mbedtls_ssl_set_verify(&ts->ssl, tls_verify_cb, ts);
    }
    if (!fail) {
        /* A client's first step writes its ClientHello; a server's waits.
         * Nothing here may run a user callback: failures are deferred. */
        int hrc = mbedtls_ssl_handshake(&ts->ssl);
        int frc = tls_flush(ts, NULL, NULL);
        if (hrc != MBEDTLS_ERR_SSL_WANT_READ && hrc != MBEDTLS_ERR_SSL_WANT_WRITE) {
            fail = hrc ? tls_map_err(ts, hrc, "handshake") : FY_ETLS;
        } else if (frc) {
            fail = frc;
        }
    }
    if (!fail) {
        uv_timer_start(&ts->timer, tls_timeout_cb, cfg->handshake_timeout_ms, 0);
        tls_update_lower_reading(ts);
    }
    if (fail) {
        ts->hs_fail_pending = fail;
        tls_kick(ts);
    }
    return &ts->base;
}

/* --- peer information --------------------------------------------------- */

static tls_stream *tls_of(const fy_stream *s)
{
    return s && s->vt == &tls_vtable ? (tls_stream *)s : NULL;
}

int fy_tls_is_tls(const fy_stream *s)
{
    return tls_of(s) != NULL;
}

int fy_tls_peer_get(const fy_stream *s, fy_tls_peer *peer)
{
    tls_stream *ts = tls_of(s);
    if (!ts || !peer || ts->state != TLS_OPEN || s->closing) {
        return FY_EINVAL;
    }
    memset(peer, 0, sizeof *peer);
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&ts->ssl);
    if (!crt) {
        return 0;
    }
    peer->present = 1;
    if (mbedtls_x509_dn_gets(peer->subject, sizeof peer->subject, &crt->subject) < 0) {
        peer->subject[0] = '\0';
    }
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0) {
            /* The CN ends up in logs and lookups: bytes outside printable
             * ASCII become '?', as in common/x509 and mbedTLS's DN text. */
            size_t len = n->val.len < sizeof peer->cn - 1 ? n->val.len : sizeof peer->cn - 1;
            for (size_t i = 0; i < len; i++) {
                unsigned char ch = n->val.p[i];
                peer->cn[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
            }
            peer->cn[len] = '\0';
            break;
        }
    }
    /* Serial as common/x509 prints it: lower-case hex, no leading zero bytes. */
    const unsigned char *sp = crt->serial.p;
    size_t sn = crt->serial.len;
    while (sn > 1 && sp[0] == 0) {
        sp++;
        sn--;
    }
    size_t o = 0;
    for (size_t i = 0; i < sn && o + 3 <= sizeof peer->serial; i++) {
        o += (size_t)snprintf(peer->serial + o, sizeof peer->serial - o, "%02x", sp[i]);
    }
    mbedtls_sha256_ret(crt->raw.p, crt->raw.len, peer->fingerprint, 0);
    return 0;
}

const char *fy_tls_alpn(const fy_stream *s)
{
    tls_stream *ts = tls_of(s);
    return ts && ts->state == TLS_OPEN ? mbedtls_ssl_get_alpn_protocol(&ts->ssl) : NULL;
}

const char *fy_tls_sni(const fy_stream *s)
{
    tls_stream *ts = tls_of(s);
    return ts && ts->cfg->is_server && ts->sni[0] ? ts->sni : NULL;
}

const char *fy_tls_ciphersuite(const fy_stream *s)
{
    tls_stream *ts = tls_of(s);
    return ts && ts->state == TLS_OPEN ? mbedtls_ssl_get_ciphersuite(&ts->ssl) : NULL;
}

/* --- configuration ------------------------------------------------------ */

/* Reads a PEM file into a NUL-terminated buffer (mbedTLS wants the NUL
 * counted in the length), refusing anything over FY_TLS_PEM_MAX_BYTES. */
static int pem_read_file(const char *what, const char *path, unsigned char **out, size_t *outlen,
                         char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s '%s': %s", what, path, strerror(e));
        return e == ENOENT ? FY_ENOENT : e == EACCES ? FY_EPERM : FY_EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s '%s': is a directory", what, path);
        rc = FY_EINVAL;
        goto out;
    }
    buf = malloc(FY_TLS_PEM_MAX_BYTES + 2);
    if (!buf) {
        rc = FY_ENOMEM;
        snprintf(err, errlen, "%s '%s': out of memory", what, path);
        goto out;
    }
    len = fread(buf, 1, FY_TLS_PEM_MAX_BYTES + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s '%s': read error", what, path);
        rc = FY_EIO;
        goto out;
    }
    if (len > FY_TLS_PEM_MAX_BYTES) {
        snprintf(err, errlen, "%s '%s': larger than %d bytes", what, path, FY_TLS_PEM_MAX_BYTES);
        rc = FY_ETOOBIG;
        goto out;
    }
    if (len == 0) {
        snprintf(err, errlen, "%s '%s': file is empty", what, path);
        rc = FY_EPARSE;
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len + 1;
    buf = NULL;
out:
    if (buf) {
        mbedtls_platform_zeroize(buf, len);
        free(buf);
    }
    fclose(f);
    return rc;
}

/* Gets PEM text from memory (MEM) or a file (PATH) into an owned buffer;
 * *OUT stays NULL when neither is set. */
static int pem_load(const char *what_mem, const char *mem, const char *what_file, const char *path,
                    unsigned char **out, size_t *outlen, const char **label, char *err,
                    size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (mem) {
        *label = what_mem;
        size_t n = strnlen(mem, (size_t)FY_TLS_PEM_MAX_BYTES + 1);
        if (n > FY_TLS_PEM_MAX_BYTES) {
            snprintf(err, errlen, "%s: larger than %d bytes", what_mem, FY_TLS_PEM_MAX_BYTES);
            return FY_ETOOBIG;
        }
        *out = malloc(n + 1);
        if (!*out) {
            snprintf(err, errlen, "%s: out of memory", what_mem);
            return FY_ENOMEM;
        }
        memcpy(*out, mem, n + 1);
        *outlen = n + 1;
        return 0;
    }
    if (path) {
        *label = what_file;
        return pem_read_file(what_file, path, out, outlen, err, errlen);
    }
    return 0;
}

static void pem_free(unsigned char *p, size_t len)
{
    if (p) {
        mbedtls_platform_zeroize(p, len);
        free(p);
    }
}

/* Formats "<label> '<path>'" or "<label>" for messages about PEM input. */
static const char *pem_name(char *buf, size_t n, const char *label, const char *path)
{
    if (path && strstr(label, "_file")) {
        snprintf(buf, n, "%s '%s'", label, path);
    } else {
        snprintf(buf, n, "%s", label);
    }
    return buf;
}

static int crt_load(mbedtls_x509_crt *crt, int strict, const char *what_mem, const char *mem,
                    const char *what_file, const char *path, char *err, size_t errlen)
{
    unsigned char *pem;
    size_t len;
    const char *label = what_file;
    char name[320], msg[128];
    int rc = pem_load(what_mem, mem, what_file, path, &pem, &len, &label, err, errlen);
    if (rc || !pem) {
        return rc;
    }
    int mrc = mbedtls_x509_crt_parse(crt, pem, len);
    pem_name(name, sizeof name, label, path);
    if (mrc < 0) {
        mbedtls_strerror(mrc, msg, sizeof msg);
        snprintf(err, errlen, "%s: no usable certificate (%s)", name, msg);
        rc = mrc == MBEDTLS_ERR_X509_ALLOC_FAILED ? FY_ENOMEM : FY_EPARSE;
    } else if (mrc > 0 && strict) {
        snprintf(err, errlen, "%s: %d certificate(s) could not be parsed", name, mrc);
        rc = FY_EPARSE;
    } else if (mrc > 0) {
        FY_WARN(TLS_LOG, "%s: skipped %d certificate(s) that could not be parsed", name, mrc);
    }
    pem_free(pem, len);
    return rc;
}

static int key_load(fy_tls_config *cfg, const fy_tls_options *o, char *err, size_t errlen)
{
    unsigned char *pem;
    size_t len;
    const char *label = "key_file";
    char name[320], msg[128];
    int rc =
        pem_load("key_pem", o->key_pem, "key_file", o->key_file, &pem, &len, &label, err, errlen);
    if (rc || !pem) {
        return rc;
    }
    pem_name(name, sizeof name, label, o->key_file);
    int mrc = mbedtls_pk_parse_key(&cfg->key, pem, len, NULL, 0);
    pem_free(pem, len);
    if (mrc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || mrc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
        snprintf(err, errlen, "%s: the key is encrypted; ferry needs an unencrypted key", name);
        return FY_EPARSE;
    }
    if (mrc) {
        mbedtls_strerror(mrc, msg, sizeof msg);
        snprintf(err, errlen, "%s: not a usable private key (%s)", name, msg);
        return mrc == MBEDTLS_ERR_PK_ALLOC_FAILED ? FY_ENOMEM : FY_EPARSE;
    }
    mbedtls_pk_type_t t = mbedtls_pk_get_type(&cfg->key);
    if (t != MBEDTLS_PK_ECKEY && t != MBEDTLS_PK_RSA) {
        snprintf(err, errlen, "%s: only EC (P-256, P-384) and RSA keys are supported", name);
        return FY_EINVAL;
    }
    if (mbedtls_pk_check_pair(&cfg->own_chain.pk, &cfg->key) != 0) {
        char cname[320];
        pem_name(cname, sizeof cname, o->cert_pem ? "cert_pem" : "cert_file",
                 o->cert_pem ? NULL : o->cert_file);
        snprintf(err, errlen, "%s does not match the certificate in %s", name, cname);
        return FY_EINVAL;
    }
    return 0;
}

static int alpn_copy(fy_tls_config *cfg, const char **alpn, char *err, size_t errlen)
{
    size_t n = 0;
    while (alpn[n]) {
        size_t len = strlen(alpn[n]);
        if (len == 0 || len > 255) {
            snprintf(err, errlen, "alpn: protocol names must be 1 to 255 bytes");
            return FY_EINVAL;
        }
        n++;
    }
    if (n == 0) {
        return 0;
    }
    cfg->alpn = calloc(n + 1, sizeof *cfg->alpn);
    if (!cfg->alpn) {
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        cfg->alpn[i] = strdup(alpn[i]);
        if (!cfg->alpn[i]) {
            return FY_ENOMEM;
        }
    }
    return 0;
}

int fy_tls_config_new(const fy_tls_options *o, fy_tls_config **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!o || !out) {
        snprintf(err, errlen, "no options");
        return FY_EINVAL;
    }
    *out = NULL;
    int has_cert = o->cert_pem || o->cert_file;
    int has_key = o->key_pem || o->key_file;
    int has_ca = o->ca_pem || o->ca_file;
    if (o->is_server && (!has_cert || !has_key)) {
        snprintf(err, errlen, "a TLS server needs a certificate and a private key");
        return FY_EINVAL;
    }
    if (has_cert != has_key) {
        snprintf(err, errlen, "a certificate needs its private key and vice versa");
        return FY_EINVAL;
    }
    if (o->pin_ca_sha256 && (o->is_server || has_ca)) {
        snprintf(err, errlen, "pin_ca_sha256 is for a client without a CA file");
        return FY_EINVAL;
    }
    if (o->optional_client_cert && (!o->is_server || !has_ca || o->require_client_cert)) {
        snprintf(err, errlen,
                 "optional_client_cert needs a server config with a CA, "
                 "and excludes require_client_cert");
        return FY_EINVAL;
    }
    if (!o->is_server && !has_ca && !o->pin_ca_sha256) {
        snprintf(err, errlen, "a TLS client needs a CA to verify the server against");
        return FY_EINVAL;
    }
    if (o->require_client_cert && (!o->is_server || !has_ca)) {
        snprintf(err, errlen,
                 "require_client_cert needs a server config with a CA for client certificates");
        return FY_EINVAL;
    }

    int rc = 0;
    fy_tls_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    cfg->is_server = o->is_server;
    cfg->require_client_cert = o->require_client_cert;
    cfg->optional_client_cert = o->optional_client_cert;
    if (o->pin_ca_sha256) {
        cfg->pinned = 1;
        memcpy(cfg->pin, o->pin_ca_sha256, 32);
    }
    cfg->handshake_timeout_ms =
        o->handshake_timeout_ms ? o->handshake_timeout_ms : FY_TLS_HANDSHAKE_TIMEOUT_MS;
    cfg->max_write_queue = o->max_write_queue ? o->max_write_queue : FY_TLS_MAX_WRITE_QUEUE;
    mbedtls_ssl_config_init(&cfg->conf);
    mbedtls_x509_crt_init(&cfg->own_chain);
    mbedtls_x509_crt_init(&cfg->ca_chain);
    mbedtls_pk_init(&cfg->key);
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);

    static const unsigned char pers[] = "ferry-tls";
    if (mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy, pers,
                              sizeof pers - 1) != 0) {
        snprintf(err, errlen, "cannot seed the random generator");
        rc = FY_ECRYPTO;
        goto out;
    }
    rc = crt_load(&cfg->own_chain, 1, "cert_pem", o->cert_pem, "cert_file", o->cert_file, err,
                  errlen);
    if (rc) {
        goto out;
    }
    if (has_key) {
        rc = key_load(cfg, o, err, errlen);
        if (rc) {
            goto out;
        }
    }
    rc = crt_load(&cfg->ca_chain, 0, "ca_pem", o->ca_pem, "ca_file", o->ca_file, err, errlen);
    if (rc) {
        goto out;
    }
    if (o->server_name) {
        cfg->server_name = strdup(o->server_name);
        if (!cfg->server_name) {
            rc = FY_ENOMEM;
            goto out;
        }
    }
    if (o->alpn) {
        rc = alpn_copy(cfg, o->alpn, err, errlen);
        if (rc) {
            goto out;
        }
    }

    mbedtls_ssl_config *c = &cfg->conf;
    if (mbedtls_ssl_config_defaults(c, o->is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                    MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT)) {
        snprintf(err, errlen, "mbedTLS refused its default configuration");
        rc = FY_ETLS;
        goto out;
    }
    mbedtls_ssl_conf_min_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(c, o->prefer_chacha ? tls_ciphersuites_chacha : tls_ciphersuites);
    mbedtls_ssl_conf_curves(c, tls_curves);
    mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_legacy_renegotiation(c, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
    mbedtls_ssl_conf_rng(c, mbedtls_ctr_drbg_random, &cfg->drbg);
    if (o->is_server) {
        mbedtls_ssl_conf_authmode(c, o->require_client_cert    ? MBEDTLS_SSL_VERIFY_REQUIRED
                                     : o->optional_client_cert ? MBEDTLS_SSL_VERIFY_OPTIONAL
                                                               : MBEDTLS_SSL_VERIFY_NONE);
        mbedtls_ssl_conf_sni(c, tls_sni_cb, cfg);
    } else {
        /* mbedTLS refuses VERIFY_REQUIRED without a CA chain, so a pinned
         * client verifies with OPTIONAL and enforces the result itself after
         * the handshake (tls_process): the outcome is the same. */
        mbedtls_ssl_conf_authmode(c, cfg->pinned ? MBEDTLS_SSL_VERIFY_OPTIONAL
                                                 : MBEDTLS_SSL_VERIFY_REQUIRED);
    }
    if (has_ca) {
        mbedtls_ssl_conf_ca_chain(c, &cfg->ca_chain, NULL);
    }
    if (has_cert) {
        int mrc = mbedtls_ssl_conf_own_cert(c, &cfg->own_chain, &cfg->key);
        if (mrc) {
            snprintf(err, errlen, "cannot use the certificate and key (-0x%04x)", (unsigned)-mrc);
            rc = mrc == MBEDTLS_ERR_SSL_ALLOC_FAILED ? FY_ENOMEM : FY_EINVAL;
            goto out;
        }
    }
    if (cfg->alpn && mbedtls_ssl_conf_alpn_protocols(c, (const char **)cfg->alpn) != 0) {
        snprintf(err, errlen, "alpn: invalid protocol list");
        rc = FY_EINVAL;
        goto out;
    }
out:
    if (rc) {
        if (rc == FY_ENOMEM && !err[0]) {
            snprintf(err, errlen, "out of memory");
        }
        fy_tls_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

void fy_tls_config_free(fy_tls_config *cfg)
{
    if (!cfg) {
        return;
    }
    if (cfg->nstreams != 0) {
        /* Streams still point at it: leaking beats a use after free. */
        FY_ERROR(TLS_LOG, "fy_tls_config_free with %d open stream(s); not freed", cfg->nstreams);
        return;
    }
    while (cfg->big_pool) {
        tls_chunk *c = cfg->big_pool;
        cfg->big_pool = c->next;
        free(c);
    }
    while (cfg->pool) {
        tls_chunk *c = cfg->pool;
        cfg->pool = c->next;
        free(c);
    }
    if (cfg->alpn) {
        for (size_t i = 0; cfg->alpn[i]; i++) {
            free(cfg->alpn[i]);
        }
        free(cfg->alpn);
    }
    free(cfg->server_name);
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->own_chain);
    mbedtls_x509_crt_free(&cfg->ca_chain);
    mbedtls_pk_free(&cfg->key);
    mbedtls_ctr_drbg_free(&cfg->drbg);
    mbedtls_entropy_free(&cfg->entropy);
    mbedtls_platform_zeroize(cfg->scratch, sizeof cfg->scratch);
    free(cfg);
}
