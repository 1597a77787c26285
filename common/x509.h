/* x509.h: the small certificate authority ferry needs, on mbedTLS 2.28.
 *
 * The gateway keeps a CA; it issues its own server certificates and signs the
 * CSRs runners send at enrollment into client certificates that name them.
 * A runner makes its key pair and CSR locally, so its private key never leaves
 * its box. Every key this module generates is ECDSA P-256, every signature
 * ECDSA (or the CA key's type) with SHA-256.
 *
 * Conventions for every function here:
 *   - Returns 0 or a negative FY_E* code. FY_EINVAL: a missing or invalid
 *     argument (bad DN syntax, bad DNS name, bad validity); FY_ETOOBIG: a PEM
 *     input longer than FY_TLS_PEM_MAX_BYTES (common/limits.h) or an output
 *     field too small; FY_EPARSE: a certificate, key or CSR that is not
 *     well-formed PEM/DER; FY_ECERT: well-formed but refused (signature does
 *     not verify, wrong key type, not a CA, chain does not verify);
 *     FY_ECRYPTO: the RNG or a signing operation failed; FY_ENOMEM.
 *   - ERR (ERRLEN bytes; both may be NULL/0) receives a one-line reason on
 *     failure, e.g. "CSR signature does not verify". Never contains secrets.
 *   - PEM inputs are NUL-terminated strings. PEM outputs are NUL-terminated,
 *     allocated with malloc and owned by the caller: free certificates and
 *     CSRs with free(), private keys with fy_x509_key_pem_free() (wipes
 *     first). On failure every output pointer is set to NULL.
 *   - RNG selects the random generator (common/crypto.h); NULL uses the
 *     process-wide generator, which is safe from any thread. A non-NULL RNG
 *     must not be used by two threads at once. All functions are otherwise
 *     reentrant.
 *   - Subjects are DN strings in mbedTLS syntax: "CN=runner-1,O=ferry"
 *     (attributes CN, O, OU, C, ST, L, serialNumber, emailAddress, ...; a ','
 *     inside a value is written "\,"). At most FY_X509_MAX_DN_INPUT chars.
 *   - Private key material in temporary buffers is wiped before return. */
#ifndef FY_X509_H
#define FY_X509_H

#include "crypto.h"

#include <stddef.h>
#include <stdint.h>

struct mbedtls_x509_crt;

/* Certificates this module creates "from now" start this long before now, so
 * a peer whose clock is a few minutes behind still accepts them. */
#define FY_X509_BACKDATE_SECONDS 300
/* Caps on operator-supplied inputs (not stranger input: those caps are in
 * common/limits.h). */
#define FY_X509_MAX_DN_INPUT 1024 /* chars in a subject DN string */
#define FY_X509_MAX_SANS     64   /* DNS names + IP addresses in one certificate */

/* Wipes and frees a private key PEM returned by this module. NULL is ok. */
void fy_x509_key_pem_free(char *key_pem);

/* Creates a self-signed CA: a new P-256 key, basicConstraints CA:TRUE with
 * pathlen 0 (it signs leaf certificates only), keyUsage keyCertSign|cRLSign,
 * subject = issuer = SUBJECT, a random 127-bit positive serial, valid from
 * now - FY_X509_BACKDATE_SECONDS to now + VALID_SECONDS (> 0). */
int fy_x509_ca_create(const char *subject, int64_t valid_seconds, fy_rng *rng, char **cert_pem,
                      char **key_pem, char *err, size_t errlen);

typedef struct {
    const char *ca_cert_pem; /* the issuing CA (its first certificate is used) */
    const char *ca_key_pem;  /* its private key (unencrypted PEM) */
    const char *subject;     /* "CN=gw.example.com" */
    /* subjectAltName entries, each list NULL-terminated (either may be NULL,
     * but not both empty): DNS names ("gw.example.com", "*.example.com") and
     * IP addresses in text form ("127.0.0.1", "::1"). */
    const char *const *dns_names;
    const char *const *ip_addrs;
    int64_t valid_seconds; /* > 0; the certificate is backdated as for a CA */
    fy_rng *rng;           /* NULL: process-wide generator */
} fy_x509_server_options;

/* Issues a server certificate for a new P-256 key: the SANs above,
 * basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage
 * serverAuth, subject and authority key identifiers, random serial. The CA
 * key must match the CA certificate and the certificate must be a CA
 * (FY_ECERT otherwise). Returns the certificate and its private key.
 *
 * Note for TLS clients on mbedTLS 2.28: its hostname check matches dNSName
 * entries (and the CN) only, never iPAddress entries; a client that connects
 * by IP address and verifies the name with mbedTLS needs that address listed
 * among the DNS names too. OpenSSL, curl and browsers use the IP entries. */
int fy_x509_server_issue(const fy_x509_server_options *opts, char **cert_pem, char **key_pem,
                         char *err, size_t errlen);

/* Generates a P-256 key pair and a PKCS#10 CSR for SUBJECT signed with it
 * (SHA-256). This is the runner's side of enrollment: only the CSR leaves the
 * machine. */
int fy_x509_csr_create(const char *subject, fy_rng *rng, char **key_pem, char **csr_pem, char *err,
                       size_t errlen);

typedef struct {
    const char *ca_cert_pem; /* the issuing CA */
    const char *ca_key_pem;  /* its private key */
    const char *csr_pem;     /* from the runner: untrusted, at most FY_TLS_PEM_MAX_BYTES */
    /* The certificate's subject. It always replaces whatever the CSR asked for,
     * and nothing else from the CSR but its public key is used (requested
     * extensions are ignored): the signer alone decides what the certificate
     * says, which is how the gateway binds it to the enrolled runner name. */
    const char *subject;
    int64_t not_before; /* unix time; not_before < not_after, both in 1970..9999 */
    int64_t not_after;
    /* Serial number as hex digits ("1a2b"), positive, at most 159 bits;
     * NULL, "" or "0" for a random 127-bit serial. */
    const char *serial_hex;
    fy_rng *rng; /* NULL: process-wide generator */
} fy_x509_sign_options;

/* Signs a CSR into a client certificate: basicConstraints CA:FALSE, keyUsage
 * digitalSignature, extendedKeyUsage clientAuth, key identifiers. Before
 * signing, the CSR's self-signature is verified (FY_ECERT "CSR signature does
 * not verify"; the signature must use SHA-256, -384 or -512) and its key must
 * be ECDSA P-256 (FY_ECERT "key is not ECDSA P-256"). */
int fy_x509_csr_sign(const fy_x509_sign_options *opts, char **cert_pem, char *err, size_t errlen);

/* What ferry reads out of a certificate. Same field sizes as fy_tls_peer. */
typedef struct {
    char subject[256];                  /* DN as mbedTLS prints it: "CN=runner-1, O=ferry" */
    char cn[128];                       /* first commonName, "" when absent; bytes outside
                               printable ASCII are shown as '?' */
    char serial[64];                    /* lowercase hex, no leading zero bytes: "0a1b..." */
    int64_t not_before;                 /* unix time */
    int64_t not_after;                  /* unix time */
    uint8_t fingerprint[FY_SHA256_LEN]; /* SHA-256 of the DER encoding */
    char fingerprint_str[72];           /* "sha256:" + 64 lowercase hex */
    int is_ca;                          /* 1 when basicConstraints says CA:TRUE */
} fy_x509_info;

/* Reads the first certificate of (DATA, LEN), PEM (detected by its
 * "-----BEGIN" line; a chain is fine) or DER. LEN excludes any NUL and is at
 * most FY_TLS_PEM_MAX_BYTES. FY_ETOOBIG also when the subject, CN or serial
 * does not fit its field. */
int fy_x509_info_get(const void *data, size_t len, fy_x509_info *info, char *err, size_t errlen);

/* Same, from a certificate mbedTLS already parsed (e.g. a TLS peer's). */
int fy_x509_info_from_crt(const struct mbedtls_x509_crt *crt, fy_x509_info *info);

/* Verifies CERT_PEM (a leaf, optionally followed by intermediates) against
 * the trusted CA certificates in CA_PEM at the current time: signatures,
 * validity periods, CA flags, mbedTLS's default profile (SHA-256+, P-256+ or
 * RSA-2048+). No host name is checked. Returns 0, FY_ECERT when verification
 * fails (ERR lists the reasons, e.g. "The certificate validity has expired";
 * *FLAGS, when FLAGS is non-NULL, gets the MBEDTLS_X509_BADCERT_* bits, 0 on
 * success), or FY_EPARSE / FY_ETOOBIG / FY_EINVAL for bad input. */
int fy_x509_verify(const char *cert_pem, const char *ca_pem, uint32_t *flags, char *err,
                   size_t errlen);

#endif
