/* tls.h: TLS 1.2 over any fy_stream, on mbedTLS, non-blocking.
 *
 * A TLS stream sits on top of a lower fy_stream (usually TCP): mbedTLS is
 * driven through custom BIO callbacks fed by the lower stream's reads and
 * writes, and the TLS stream is itself an fy_stream, so HTTP and the tunnel
 * run over it unchanged.
 *
 * Policy is fixed, not configurable: TLS 1.2 only; ECDHE key exchange with
 * AES-GCM or ChaCha20-Poly1305 only; certificates always verified when a CA is
 * configured; a client always verifies the server (there is no "insecure"
 * switch). */
#ifndef FY_TLS_H
#define FY_TLS_H

#include "stream.h"

#include <stdint.h>

typedef struct fy_tls_config fy_tls_config;

typedef struct {
    int is_server;
    /* Own certificate chain and private key, PEM, as files or in memory (the
     * *_pem fields win when set). Required for servers; optional for clients
     * (needed for mTLS). */
    const char *cert_file, *key_file;
    const char *cert_pem, *key_pem;
    /* Trusted CA certificates, PEM, file or memory. Client: required, the
     * server's chain must verify against it. Server: the CA that client
     * certificates must chain to (needed when require_client_cert is set). */
    const char *ca_file;
    const char *ca_pem;
    int require_client_cert; /* server: demand a verified client certificate (mTLS) */
    /* Server: ask for a client certificate and verify it when one is sent
     * (an invalid one fails the handshake with FY_ECERT), but accept clients
     * that send none; fy_tls_peer_get tells which. For a listener that serves
     * both enrolled runners (mTLS) and runners still enrolling. Needs a CA. */
    int optional_client_cert;
    /* Client: trust the server when its certificate chain contains a CA
     * certificate whose SHA-256 fingerprint (of the DER) is these 32 bytes,
     * and the chain verifies up to it (signatures, validity, host name).
     * For first contact ("enroll with --ca-fingerprint") when the CA file is
     * not yet on the machine. Used instead of ca_file/ca_pem. */
    const uint8_t *pin_ca_sha256;
    /* Client: name sent as SNI and checked against the server certificate
     * (may be overridden per connection in fy_tls_stream_new). */
    const char *server_name;
    /* ALPN protocols in preference order, NULL-terminated, or NULL for none. */
    const char **alpn;
    unsigned handshake_timeout_ms; /* 0: FY_TLS_HANDSHAKE_TIMEOUT_MS */
    size_t max_write_queue;        /* 0: FY_TLS_MAX_WRITE_QUEUE */
    /* Prefer ChaCha20-Poly1305 to AES-GCM. mbedTLS 2.28 encrypts with
     * ChaCha20-Poly1305 at about 1.7x its AES-GCM on x86 (its GHASH goes
     * one 16-byte block per call): for links where ferry is both ends (the
     * tunnel), whose every byte the gateway pays for twice. */
    int prefer_chacha;
} fy_tls_options;

/* Builds a shared, immutable configuration (certificates parsed, RNG seeded).
 * Returns 0, or an FY_E* code with a message naming the file and problem in
 * ERR: FY_EINVAL (missing or contradictory options, key does not match the
 * certificate), FY_ENOENT / FY_EPERM / FY_EIO (a file cannot be read),
 * FY_ETOOBIG (a PEM file or string over FY_TLS_PEM_MAX_BYTES), FY_EPARSE (not
 * a valid certificate or key; encrypted keys are not supported), FY_ECRYPTO
 * (the RNG could not be seeded), FY_ENOMEM. Nothing in OPTS is referenced after
 * the call. One config serves any number of streams on one loop thread (its
 * record buffer pool is not locked: use one config per loop thread). */
int fy_tls_config_new(const fy_tls_options *opts, fy_tls_config **out, char *err, size_t errlen);

/* Frees a config; every stream made from it must be closed first. NULL is ok. */
void fy_tls_config_free(fy_tls_config *cfg);

/* Called once when the handshake finishes (status 0) or fails (FY_ETLS,
 * FY_ECERT for a rejected peer certificate -- ours failed verification, a
 * required client certificate is missing, or the peer answered ours with a
 * certificate alert --, FY_ETIMEDOUT, FY_EINVAL for a client without a server
 * name, FY_ECONNRESET when the peer hung up mid-handshake, or the lower
 * stream's error). Never called from inside fy_tls_stream_new. After a
 * failure the caller closes the stream; if it does not do so inside CB, the
 * failure is also delivered to on_read (when reading) and to queued writes.
 * CB may be NULL: then on_read and the write callbacks are the only signal. */
typedef void (*fy_tls_handshake_cb)(fy_stream *tls, int status, void *arg);

/* Wraps LOWER (ownership passes to the TLS stream: closing the TLS stream
 * closes LOWER; the TLS stream owns LOWER's on_read and data fields) and
 * starts the handshake at once. SERVER_NAME overrides the config's for a
 * client (NULL: use the config's); a DNS name is sent as SNI and matched
 * against the certificate's DNS names, an IPv4/IPv6 literal is matched against
 * its IP address entries (and no SNI is sent). Returns NULL on ENOMEM (LOWER
 * is then closed). Reads and writes may be issued before the handshake
 * completes: writes are queued, reads start being delivered after it.
 *
 * Stream behaviour beyond stream.h:
 * - Each fy_stream_write becomes TLS records (slices are gathered, at most
 *   16 KiB of plaintext per record) written to LOWER in one lower write; the
 *   callback runs when that lower write completes.
 * - The write queue is bounded by max_write_queue, counted as
 *   fy_stream_write_queue_size (ciphertext queued in LOWER plus plaintext
 *   queued before the handshake). A non-empty write made while the queue
 *   already holds max_write_queue bytes or more fails with FY_EAGAIN (nothing
 *   is queued, CB never runs): wait for earlier write callbacks and retry.
 *   A write is never refused for its own size, so a whole response can go
 *   in one write; the queue stays under max_write_queue plus one write. The
 *   limit is a safety net for producers that ignore the watermarks of
 *   stream.h, which well-behaved producers never reach. Writes after
 *   fy_stream_shutdown fail with FY_ECLOSED; after a fatal TLS error, with
 *   that error.
 * - read_stop also stops LOWER's reads, so backpressure reaches TCP.
 * - on_read gets FY_EEOF after the peer's close_notify, FY_ECONNRESET when
 *   LOWER ends without one (a truncated stream), FY_ETLS for a corrupt record.
 *   The TLS layer never answers close_notify by itself: call
 *   fy_stream_shutdown (close_notify, then LOWER's shutdown) or close.
 * - Renegotiation is refused (TLS 1.2 no_renegotiation warning). */
fy_stream *fy_tls_stream_new(fy_tls_config *cfg, fy_stream *lower, const char *server_name,
                             fy_tls_handshake_cb cb, void *arg);

/* The verified peer certificate, after a successful handshake. */
typedef struct {
    int present;             /* 0 when the peer sent no certificate */
    char subject[256];       /* full subject DN, "CN=runner-1, O=ferry" */
    char cn[128];            /* subject common name, "" when absent */
    char serial[64];         /* hex serial number */
    uint8_t fingerprint[32]; /* SHA-256 of the DER certificate */
} fy_tls_peer;

/* Fills PEER for a TLS stream. Returns 0, or FY_EINVAL when S is not a TLS
 * stream or the handshake has not completed. SERIAL is lower-case hex without
 * separators or leading zero bytes, and CN has bytes outside printable ASCII
 * replaced by '?', both as in common/x509's fy_x509_info. */
int fy_tls_peer_get(const fy_stream *s, fy_tls_peer *peer);

/* Negotiated ALPN protocol, the SNI name a client asked for (server side),
 * and the cipher suite name; NULL when none or not a TLS stream. */
const char *fy_tls_alpn(const fy_stream *s);
const char *fy_tls_sni(const fy_stream *s);
const char *fy_tls_ciphersuite(const fy_stream *s);

/* 1 when S is a TLS stream. */
int fy_tls_is_tls(const fy_stream *s);

#endif
