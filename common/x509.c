#include "x509.h"

#include "err.h"
#include "limits.h"

#include <arpa/inet.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PEM_BEGIN_CRT "-----BEGIN CERTIFICATE-----\n"
#define PEM_END_CRT   "-----END CERTIFICATE-----\n"
#define PEM_BEGIN_CSR "-----BEGIN CERTIFICATE REQUEST-----\n"
#define PEM_END_CSR   "-----END CERTIFICATE REQUEST-----\n"
#define PEM_BEGIN_EC  "-----BEGIN EC PRIVATE KEY-----\n"
#define PEM_END_EC    "-----END EC PRIVATE KEY-----\n"

/* Latest time an X.509 GeneralizedTime can say: 9999-12-31T23:59:59Z. */
#define X509_MAX_TIME INT64_C(253402300799)
/* Bytes of randomness in a generated serial (the top bit is then cleared). */
#define SERIAL_RANDOM_BYTES 16
/* A P-256 private key is ~121 bytes of DER; the buffer leaves ample room. */
#define KEY_DER_MAX 512

/* ---- errors ------------------------------------------------------------ */

static void x509__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void x509__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* mbedTLS error codes add a high-level and a low-level part; either may be
 * an allocation failure. */
static int mbed__is_nomem(int rc)
{
    int hi = -((-rc) & 0xFF80), lo = -((-rc) & 0x7F);
    return hi == MBEDTLS_ERR_X509_ALLOC_FAILED || hi == MBEDTLS_ERR_PK_ALLOC_FAILED ||
           hi == MBEDTLS_ERR_PEM_ALLOC_FAILED || hi == MBEDTLS_ERR_ECP_ALLOC_FAILED ||
           lo == MBEDTLS_ERR_ASN1_ALLOC_FAILED || lo == MBEDTLS_ERR_MPI_ALLOC_FAILED;
}

/* Maps an mbedTLS failure to FY_ENOMEM or FALLBACK and describes it. */
static int mbed__fail(int rc, int fallback, char *err, size_t errlen, const char *what)
{
    char text[160];
    mbedtls_strerror(rc, text, sizeof text);
    x509__err(err, errlen, "%s: %s (-0x%04x)", what, text, (unsigned)-rc);
    return mbed__is_nomem(rc) ? FY_ENOMEM : fallback;
}

/* ---- input checks ------------------------------------------------------ */

/* Checks that a PEM input is present and within FY_TLS_PEM_MAX_BYTES and
 * returns its length in *LEN. */
static int pem__len(const char *pem, const char *what, size_t *len, char *err, size_t errlen)
{
    if (!pem) {
        x509__err(err, errlen, "%s is missing", what);
        return FY_EINVAL;
    }
    size_t n = strnlen(pem, FY_TLS_PEM_MAX_BYTES + 1);
    if (n > FY_TLS_PEM_MAX_BYTES) {
        x509__err(err, errlen, "%s is longer than %d bytes", what, FY_TLS_PEM_MAX_BYTES);
        return FY_ETOOBIG;
    }
    if (n == 0) {
        x509__err(err, errlen, "%s is empty", what);
        return FY_EPARSE;
    }
    *len = n;
    return 0;
}

static int subject__check(const char *subject, char *err, size_t errlen)
{
    if (!subject || !subject[0]) {
        x509__err(err, errlen, "subject is missing");
        return FY_EINVAL;
    }
    if (strnlen(subject, FY_X509_MAX_DN_INPUT + 1) > FY_X509_MAX_DN_INPUT) {
        x509__err(err, errlen, "subject is longer than %d characters", FY_X509_MAX_DN_INPUT);
        return FY_EINVAL;
    }
    return 0;
}

/* mbedTLS 2.28's DN parser silently drops a trailing component without '='
 * ("bogus", "CN=x,junk") and merges repeated attributes, so the result is
 * checked: one attribute per unescaped ',' plus one, and at least one. */
static int dn__check_parsed(const char *dn, const mbedtls_asn1_named_data *head, char *err,
                            size_t errlen)
{
    size_t want = 1, got = 0;
    for (const char *c = dn; *c; c++) {
        if (*c == '\\' && c[1]) {
            c++;
        } else if (*c == ',') {
            want++;
        }
    }
    for (const mbedtls_asn1_named_data *n = head; n; n = n->next) {
        got++;
    }
    if (got != want) {
        x509__err(err, errlen,
                  "invalid subject DN \"%.64s\": expected ATTR=value pairs separated by ',' "
                  "with no attribute repeated",
                  dn);
        return FY_EINVAL;
    }
    return 0;
}

/* ---- parsing ----------------------------------------------------------- */

static int crt__parse_pem(mbedtls_x509_crt *crt, const char *pem, const char *what, char *err,
                          size_t errlen)
{
    size_t n = 0;
    int rc = pem__len(pem, what, &n, err, errlen);
    if (rc != 0) {
        return rc;
    }
    /* mbedTLS wants the terminating NUL counted for PEM. It returns a
     * positive count when some certificates of a bundle failed to parse:
     * that is malformed input too. */
    rc = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem, n + 1);
    if (rc > 0) {
        x509__err(err, errlen, "%s: %d certificate(s) could not be parsed", what, rc);
        return FY_EPARSE;
    }
    if (rc < 0) {
        char what_bad[96];
        snprintf(what_bad, sizeof what_bad, "%s is not a valid certificate", what);
        return mbed__fail(rc, FY_EPARSE, err, errlen, what_bad);
    }
    return 0;
}

static int key__parse_pem(mbedtls_pk_context *pk, const char *pem, const char *what, char *err,
                          size_t errlen)
{
    size_t n = 0;
    int rc = pem__len(pem, what, &n, err, errlen);
    if (rc != 0) {
        return rc;
    }
    rc = mbedtls_pk_parse_key(pk, (const unsigned char *)pem, n + 1, NULL, 0);
    if (rc != 0) {
        char what_bad[96];
        snprintf(what_bad, sizeof what_bad, "%s is not a valid unencrypted private key", what);
        return mbed__fail(rc, FY_EPARSE, err, errlen, what_bad);
    }
    return 0;
}

/* Loads the CA certificate and key and checks that they belong together and
 * that the certificate may sign certificates. */
static int ca__load(mbedtls_x509_crt *ca, mbedtls_pk_context *key, const char *cert_pem,
                    const char *key_pem, char *err, size_t errlen)
{
    int rc = crt__parse_pem(ca, cert_pem, "CA certificate", err, errlen);
    if (rc == 0) {
        rc = key__parse_pem(key, key_pem, "CA key", err, errlen);
    }
    if (rc != 0) {
        return rc;
    }
    if (!ca->ca_istrue) {
        x509__err(err, errlen, "CA certificate is not a CA (basicConstraints CA:FALSE)");
        return FY_ECERT;
    }
    if ((ca->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) &&
        !(ca->key_usage & MBEDTLS_X509_KU_KEY_CERT_SIGN)) {
        x509__err(err, errlen, "CA certificate's keyUsage does not allow keyCertSign");
        return FY_ECERT;
    }
    rc = mbedtls_pk_check_pair(&ca->pk, key);
    if (rc != 0) {
        x509__err(err, errlen, "CA key does not match the CA certificate");
        return mbed__is_nomem(rc) ? FY_ENOMEM : FY_ECERT;
    }
    return 0;
}

/* ---- writing helpers --------------------------------------------------- */

static int key__gen_p256(mbedtls_pk_context *pk, fy_rng *rng, char *err, size_t errlen)
{
    int rc = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (rc == 0) {
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk), fy_rng_mbedtls, rng);
    }
    if (rc != 0) {
        return mbed__fail(rc, FY_ECRYPTO, err, errlen, "generating a P-256 key");
    }
    return 0;
}

/* Wraps DER in PEM armour (64-character lines); *OUT is malloc'd. Written
 * here rather than with mbedtls_pem_write_buffer because that one leaves its
 * base64 scratch copy in freed memory unwiped, and private keys pass through
 * here: every intermediate buffer is wiped. */
static int pem__wrap(const unsigned char *der, size_t len, const char *begin, const char *end,
                     char **out)
{
    unsigned char *b64 = NULL;
    char *buf = NULL;
    size_t b64cap = 0, b64len = 0;
    int rc = FY_ECRYPTO;
    if (mbedtls_base64_encode(NULL, 0, &b64cap, der, len) != MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL ||
        b64cap == 0 || b64cap > 2 * FY_TLS_PEM_MAX_BYTES) {
        goto out;
    }
    b64 = malloc(b64cap);
    if (!b64) {
        rc = FY_ENOMEM;
        goto out;
    }
    if (mbedtls_base64_encode(b64, b64cap, &b64len, der, len) != 0) {
        goto out;
    }
    size_t blen = strlen(begin), elen = strlen(end);
    size_t need = blen + b64len + (b64len + 63) / 64 + elen + 1;
    buf = malloc(need);
    if (!buf) {
        rc = FY_ENOMEM;
        goto out;
    }
    char *p = buf;
    memcpy(p, begin, blen);
    p += blen;
    for (size_t off = 0; off < b64len; off += 64) {
        size_t k = b64len - off < 64 ? b64len - off : 64;
        memcpy(p, b64 + off, k);
        p += k;
        *p++ = '\n';
    }
    memcpy(p, end, elen);
    p[elen] = '\0';
    *out = buf;
    buf = NULL;
    rc = 0;
out:
    if (b64) {
        mbedtls_platform_zeroize(b64, b64cap);
        free(b64);
    }
    free(buf); /* only on failure, before anything was written to it */
    return rc;
}

static int key__to_pem(mbedtls_pk_context *pk, char **out, char *err, size_t errlen)
{
    unsigned char der[KEY_DER_MAX];
    int rc = mbedtls_pk_write_key_der(pk, der, sizeof der);
    if (rc < 0) {
        rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "encoding the private key");
        goto out;
    }
    /* The DER sits at the end of the buffer. */
    rc = pem__wrap(der + sizeof der - (size_t)rc, (size_t)rc, PEM_BEGIN_EC, PEM_END_EC, out);
    if (rc != 0) {
        x509__err(err, errlen, "encoding the private key as PEM failed");
    }
out:
    mbedtls_platform_zeroize(der, sizeof der);
    return rc;
}

/* Runs a DER writer (certificate or CSR) into a buffer that grows until the
 * result fits, then wraps the result in PEM. */
typedef int (*der_writer)(void *ctx, unsigned char *buf, size_t size,
                          int (*f_rng)(void *, unsigned char *, size_t), void *p_rng);

static int der__write_crt(void *ctx, unsigned char *buf, size_t size,
                          int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    return mbedtls_x509write_crt_der(ctx, buf, size, f_rng, p_rng);
}

static int der__write_csr(void *ctx, unsigned char *buf, size_t size,
                          int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    return mbedtls_x509write_csr_der(ctx, buf, size, f_rng, p_rng);
}

static int der__to_pem(der_writer write, void *ctx, fy_rng *rng, const char *begin, const char *end,
                       char **out, char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t size = 2048;
    int rc;
    for (;;) {
        unsigned char *nbuf = realloc(buf, size);
        if (!nbuf) {
            rc = FY_ENOMEM;
            goto out;
        }
        buf = nbuf;
        rc = write(ctx, buf, size, fy_rng_mbedtls, rng);
        if (rc != MBEDTLS_ERR_ASN1_BUF_TOO_SMALL || size >= FY_TLS_PEM_MAX_BYTES) {
            break;
        }
        size *= 2;
    }
    if (rc < 0) {
        rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "writing the signed DER");
        goto out;
    }
    rc = pem__wrap(buf + size - (size_t)rc, (size_t)rc, begin, end, out);
    if (rc != 0) {
        x509__err(err, errlen, "encoding PEM failed");
    }
out:
    free(buf);
    return rc;
}

/* Serial: from hex when given, else SERIAL_RANDOM_BYTES random bytes with the
 * top bit cleared, so it is positive and its DER content fits in 16 octets. */
static int serial__set(mbedtls_x509write_cert *w, const char *hex, fy_rng *rng, char *err,
                       size_t errlen)
{
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    int rc = 0;
    if (hex && hex[0] && strcmp(hex, "0") != 0) {
        size_t n = strnlen(hex, 64);
        size_t i = 0;
        for (; i < n && strchr("0123456789abcdefABCDEF", hex[i]); i++) {
        }
        if (n >= 64 || i != n) {
            x509__err(err, errlen, "serial must be hex digits");
            rc = FY_EINVAL;
            goto out;
        }
        if (mbedtls_mpi_read_string(&serial, 16, hex) != 0) {
            x509__err(err, errlen, "serial must be hex digits");
            rc = FY_EINVAL;
            goto out;
        }
        /* RFC 5280: positive, at most 20 octets of DER content (one of them
         * may be the 0x00 that keeps the integer positive). */
        if (mbedtls_mpi_cmp_int(&serial, 0) <= 0 || mbedtls_mpi_bitlen(&serial) > 159) {
            x509__err(err, errlen, "serial must be positive and at most 159 bits");
            rc = FY_EINVAL;
            goto out;
        }
    } else {
        unsigned char rnd[SERIAL_RANDOM_BYTES];
        do {
            rc = rng ? fy_rng_bytes(rng, rnd, sizeof rnd) : fy_random_bytes(rnd, sizeof rnd);
            if (rc != 0) {
                x509__err(err, errlen, "random generator failed");
                goto out;
            }
            rnd[0] &= 0x7F;
        } while (rnd[0] == 0 && rnd[1] == 0); /* keep it long and non-zero */
        rc = mbedtls_mpi_read_binary(&serial, rnd, sizeof rnd);
        if (rc != 0) {
            rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "setting the serial");
            goto out;
        }
    }
    rc = mbedtls_x509write_crt_set_serial(w, &serial);
    if (rc != 0) {
        rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "setting the serial");
    }
out:
    mbedtls_mpi_free(&serial);
    return rc;
}

static int validity__set(mbedtls_x509write_cert *w, int64_t not_before, int64_t not_after,
                         char *err, size_t errlen)
{
    if (not_before < 0 || not_after > X509_MAX_TIME || not_before >= not_after) {
        x509__err(err, errlen,
                  "validity must satisfy 1970 <= not_before < not_after <= 9999-12-31");
        return FY_EINVAL;
    }
    char nb[16], na[16];
    const int64_t t[2] = {not_before, not_after};
    char *s[2] = {nb, na};
    for (int i = 0; i < 2; i++) {
        time_t tt = (time_t)t[i];
        struct tm tm;
        if (!gmtime_r(&tt, &tm) || strftime(s[i], sizeof nb, "%Y%m%d%H%M%S", &tm) != 14) {
            x509__err(err, errlen, "validity time out of range");
            return FY_EINVAL;
        }
    }
    int rc = mbedtls_x509write_crt_set_validity(w, nb, na);
    if (rc != 0) {
        return mbed__fail(rc, FY_EINVAL, err, errlen, "setting the validity");
    }
    return 0;
}

/* Copies a parsed name (the CA certificate's subject) into a writer's name
 * list, keeping each attribute's string type, so that the issuer field of a
 * new certificate is byte-for-byte the CA's subject whatever tool made the
 * CA. Round-tripping through a DN string would lose the string types and
 * mangle values with commas or non-ASCII bytes. mbedTLS writes the list
 * last-to-first, so it is built in reverse. */
static int name__copy(mbedtls_asn1_named_data **dst, const mbedtls_x509_name *src, char *err,
                      size_t errlen)
{
    for (const mbedtls_x509_name *n = src; n; n = n->next) {
        if (!n->oid.p) {
            continue; /* an empty name has one zeroed entry */
        }
        if (n->next_merged) {
            x509__err(err, errlen, "CA subjects with multi-valued RDNs are not supported");
            return FY_ENOTSUP;
        }
        mbedtls_asn1_named_data *d = mbedtls_calloc(1, sizeof *d);
        if (!d) {
            return FY_ENOMEM;
        }
        d->next = *dst;
        *dst = d; /* owned by the list from here, freed with it */
        d->oid.p = mbedtls_calloc(1, n->oid.len ? n->oid.len : 1);
        d->val.p = mbedtls_calloc(1, n->val.len ? n->val.len : 1);
        if (!d->oid.p || !d->val.p) {
            return FY_ENOMEM;
        }
        d->oid.tag = n->oid.tag;
        d->oid.len = n->oid.len;
        memcpy(d->oid.p, n->oid.p, n->oid.len);
        d->val.tag = n->val.tag;
        d->val.len = n->val.len;
        memcpy(d->val.p, n->val.p, n->val.len);
    }
    return 0;
}

/* extendedKeyUsage ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId, with one
 * purpose (mbedTLS 2.28 has no writer for it). */
static int ext__eku(mbedtls_x509write_cert *w, const char *oid, size_t oidlen)
{
    unsigned char buf[32];
    unsigned char *p = buf + sizeof buf;
    int ret; /* MBEDTLS_ASN1_CHK_ADD returns it on error */
    size_t len = 0;
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_oid(&p, buf, oid, oidlen));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&p, buf, len));
    MBEDTLS_ASN1_CHK_ADD(
        len, mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    return mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0,
                                               p, len);
}

/* A DNS name for a SAN: 1..253 chars, labels of 1..63 letters, digits and
 * '-', optionally a leading "*." wildcard label. */
static int dns__valid(const char *name)
{
    size_t n = strnlen(name, 254);
    if (n == 0 || n > 253) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '.') {
            if (label == 0) {
                return 0;
            }
            label = 0;
            continue;
        }
        if (c == '*') {
            if (i != 0 || name[1] != '.') {
                return 0;
            }
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-')) {
            return 0;
        }
        if (++label > 63) {
            return 0;
        }
    }
    return label > 0;
}

/* Parses a textual IPv4 or IPv6 address into 4 or 16 bytes. */
static size_t ip__parse(const char *text, unsigned char out[16])
{
    if (inet_pton(AF_INET, text, out) == 1) {
        return 4;
    }
    if (inet_pton(AF_INET6, text, out) == 1) {
        return 16;
    }
    return 0;
}

/* subjectAltName ::= GeneralNames ::= SEQUENCE OF GeneralName, written by
 * hand because mbedTLS 2.28 has no writer for it:
 *   dNSName   [2] IMPLICIT IA5String
 *   iPAddress [7] IMPLICIT OCTET STRING (4 or 16 bytes, network order)
 * DER is written back to front, so the lists are walked in reverse to keep
 * the caller's order (DNS names first). */
static int ext__san(mbedtls_x509write_cert *w, const char *const *dns, const char *const *ips,
                    char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t ndns = 0, nip = 0, cap = 16;
    int rc = 0;
    for (; dns && dns[ndns]; ndns++) {
        if (ndns >= FY_X509_MAX_SANS || !dns__valid(dns[ndns])) {
            break;
        }
        cap += strlen(dns[ndns]) + 8;
    }
    if (dns && dns[ndns]) {
        x509__err(err, errlen,
                  ndns >= FY_X509_MAX_SANS ? "too many DNS names" : "invalid DNS name \"%.64s\"",
                  dns[ndns]);
        return FY_EINVAL;
    }
    for (; ips && ips[nip]; nip++) {
        unsigned char a[16];
        if (nip >= FY_X509_MAX_SANS || ip__parse(ips[nip], a) == 0) {
            break;
        }
        cap += 24;
    }
    if (ips && ips[nip]) {
        x509__err(err, errlen,
                  nip >= FY_X509_MAX_SANS ? "too many IP addresses"
                                          : "invalid IP address \"%.64s\"",
                  ips[nip]);
        return FY_EINVAL;
    }
    if (ndns + nip == 0) {
        x509__err(err, errlen, "a server certificate needs at least one DNS name or IP address");
        return FY_EINVAL;
    }
    if (ndns + nip > FY_X509_MAX_SANS) {
        x509__err(err, errlen, "more than %d subjectAltName entries", FY_X509_MAX_SANS);
        return FY_EINVAL;
    }
    buf = malloc(cap);
    if (!buf) {
        return FY_ENOMEM;
    }
    unsigned char *p = buf + cap;
    size_t len = 0;
#define SAN_ADD(expr)                                                                \
    do {                                                                             \
        int r_ = (expr);                                                             \
        if (r_ < 0) {                                                                \
            rc = mbed__fail(r_, FY_ECRYPTO, err, errlen, "encoding subjectAltName"); \
            goto out;                                                                \
        }                                                                            \
        len += (size_t)r_;                                                           \
    } while (0)
    for (size_t i = nip; i-- > 0;) {
        unsigned char a[16];
        size_t alen = ip__parse(ips[i], a);
        SAN_ADD(mbedtls_asn1_write_raw_buffer(&p, buf, a, alen));
        SAN_ADD(mbedtls_asn1_write_len(&p, buf, alen));
        SAN_ADD(mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7));
    }
    for (size_t i = ndns; i-- > 0;) {
        size_t dlen = strlen(dns[i]);
        SAN_ADD(mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)dns[i], dlen));
        SAN_ADD(mbedtls_asn1_write_len(&p, buf, dlen));
        SAN_ADD(mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2));
    }
    SAN_ADD(mbedtls_asn1_write_len(&p, buf, len));
    SAN_ADD(mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
#undef SAN_ADD
    /* Non-critical: the certificate has a non-empty subject (RFC 5280 4.2.1.6). */
    rc = mbedtls_x509write_crt_set_extension(
        w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p, len);
    if (rc != 0) {
        rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "adding subjectAltName");
    }
out:
    free(buf);
    return rc;
}

/* Everything that differs between a CA, a server and a client certificate. */
typedef struct {
    const char *subject;
    int64_t not_before, not_after;
    const char *serial_hex; /* NULL: random */
    fy_rng *rng;
    mbedtls_pk_context *subject_key;
    mbedtls_pk_context *issuer_key;
    const mbedtls_x509_crt *issuer; /* NULL: self-signed, issuer name = subject */
    int is_ca;
    unsigned key_usage;
    const char *eku_oid; /* NULL: no extendedKeyUsage */
    size_t eku_len;
    int san; /* add subjectAltName from dns/ips */
    const char *const *dns;
    const char *const *ips;
} crt_spec;

static int crt__issue(const crt_spec *s, char **cert_pem, char *err, size_t errlen)
{
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    int rc;
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, s->subject_key);
    mbedtls_x509write_crt_set_issuer_key(&w, s->issuer_key);
    rc = mbedtls_x509write_crt_set_subject_name(&w, s->subject);
    if (rc != 0) {
        rc = mbed__fail(rc, FY_EINVAL, err, errlen, "invalid subject DN");
        goto out;
    }
    if ((rc = dn__check_parsed(s->subject, w.subject, err, errlen)) != 0) {
        goto out;
    }
    if (s->issuer) {
        rc = name__copy(&w.issuer, &s->issuer->subject, err, errlen);
    } else {
        rc = mbedtls_x509write_crt_set_issuer_name(&w, s->subject);
        if (rc != 0) {
            rc = mbed__fail(rc, FY_EINVAL, err, errlen, "invalid issuer DN");
        }
    }
    if (rc != 0) {
        goto out;
    }
    if ((rc = serial__set(&w, s->serial_hex, s->rng, err, errlen)) != 0 ||
        (rc = validity__set(&w, s->not_before, s->not_after, err, errlen)) != 0) {
        goto out;
    }
    /* A CA gets pathlen 0: it signs leaf certificates, never other CAs. */
    rc = mbedtls_x509write_crt_set_basic_constraints(&w, s->is_ca, s->is_ca ? 0 : -1);
    if (rc == 0) {
        rc = mbedtls_x509write_crt_set_subject_key_identifier(&w);
    }
    if (rc == 0) {
        rc = mbedtls_x509write_crt_set_authority_key_identifier(&w);
    }
    if (rc == 0) {
        rc = mbedtls_x509write_crt_set_key_usage(&w, s->key_usage);
    }
    if (rc == 0 && s->eku_oid) {
        rc = ext__eku(&w, s->eku_oid, s->eku_len);
    }
    if (rc != 0) {
        rc = mbed__fail(rc, FY_ECRYPTO, err, errlen, "adding extensions");
        goto out;
    }
    if (s->san && (rc = ext__san(&w, s->dns, s->ips, err, errlen)) != 0) {
        goto out;
    }
    rc = der__to_pem(der__write_crt, &w, s->rng, PEM_BEGIN_CRT, PEM_END_CRT, cert_pem, err, errlen);
out:
    mbedtls_x509write_crt_free(&w);
    return rc;
}

/* ---- public API -------------------------------------------------------- */

void fy_x509_key_pem_free(char *key_pem)
{
    if (key_pem) {
        mbedtls_platform_zeroize(key_pem, strlen(key_pem));
        free(key_pem);
    }
}

int fy_x509_ca_create(const char *subject, int64_t valid_seconds, fy_rng *rng, char **cert_pem,
                      char **key_pem, char *err, size_t errlen)
{
    char *cert = NULL, *key = NULL;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    int rc;
    if (!cert_pem || !key_pem) {
        rc = FY_EINVAL;
        x509__err(err, errlen, "missing output pointer");
        goto out;
    }
    *cert_pem = *key_pem = NULL;
    if ((rc = subject__check(subject, err, errlen)) != 0) {
        goto out;
    }
    int64_t now = (int64_t)time(NULL);
    if (valid_seconds <= 0 || valid_seconds > X509_MAX_TIME - now) {
        x509__err(err, errlen, "valid_seconds must be positive and end before year 10000");
        rc = FY_EINVAL;
        goto out;
    }
    if ((rc = key__gen_p256(&pk, rng, err, errlen)) != 0) {
        goto out;
    }
    crt_spec s = {
        .subject = subject,
        .not_before = now - FY_X509_BACKDATE_SECONDS,
        .not_after = now + valid_seconds,
        .rng = rng,
        .subject_key = &pk,
        .issuer_key = &pk,
        .is_ca = 1,
        .key_usage = MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN,
    };
    if ((rc = crt__issue(&s, &cert, err, errlen)) != 0 ||
        (rc = key__to_pem(&pk, &key, err, errlen)) != 0) {
        goto out;
    }
    *cert_pem = cert;
    *key_pem = key;
    cert = key = NULL;
out:
    free(cert);
    fy_x509_key_pem_free(key);
    mbedtls_pk_free(&pk); /* mbedtls_mpi_free zeroizes the private scalar */
    return rc;
}

int fy_x509_server_issue(const fy_x509_server_options *o, char **cert_pem, char **key_pem,
                         char *err, size_t errlen)
{
    char *cert = NULL, *key = NULL;
    mbedtls_x509_crt ca;
    mbedtls_pk_context ca_key, pk;
    mbedtls_x509_crt_init(&ca);
    mbedtls_pk_init(&ca_key);
    mbedtls_pk_init(&pk);
    int rc;
    if (!o || !cert_pem || !key_pem) {
        rc = FY_EINVAL;
        x509__err(err, errlen, "missing argument");
        goto out;
    }
    *cert_pem = *key_pem = NULL;
    if ((rc = subject__check(o->subject, err, errlen)) != 0) {
        goto out;
    }
    int64_t now = (int64_t)time(NULL);
    if (o->valid_seconds <= 0 || o->valid_seconds > X509_MAX_TIME - now) {
        x509__err(err, errlen, "valid_seconds must be positive and end before year 10000");
        rc = FY_EINVAL;
        goto out;
    }
    if ((rc = ca__load(&ca, &ca_key, o->ca_cert_pem, o->ca_key_pem, err, errlen)) != 0 ||
        (rc = key__gen_p256(&pk, o->rng, err, errlen)) != 0) {
        goto out;
    }
    crt_spec s = {
        .subject = o->subject,
        .not_before = now - FY_X509_BACKDATE_SECONDS,
        .not_after = now + o->valid_seconds,
        .rng = o->rng,
        .subject_key = &pk,
        .issuer_key = &ca_key,
        .issuer = &ca,
        .is_ca = 0,
        .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE,
        .eku_oid = MBEDTLS_OID_SERVER_AUTH,
        .eku_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH),
        .san = 1,
        .dns = o->dns_names,
        .ips = o->ip_addrs,
    };
    if ((rc = crt__issue(&s, &cert, err, errlen)) != 0 ||
        (rc = key__to_pem(&pk, &key, err, errlen)) != 0) {
        goto out;
    }
    *cert_pem = cert;
    *key_pem = key;
    cert = key = NULL;
out:
    free(cert);
    fy_x509_key_pem_free(key);
    mbedtls_pk_free(&pk);
    mbedtls_pk_free(&ca_key);
    mbedtls_x509_crt_free(&ca);
    return rc;
}

int fy_x509_csr_create(const char *subject, fy_rng *rng, char **key_pem, char **csr_pem, char *err,
                       size_t errlen)
{
    char *csr = NULL, *key = NULL;
    mbedtls_pk_context pk;
    mbedtls_x509write_csr w;
    mbedtls_pk_init(&pk);
    mbedtls_x509write_csr_init(&w);
    int rc;
    if (!key_pem || !csr_pem) {
        rc = FY_EINVAL;
        x509__err(err, errlen, "missing output pointer");
        goto out;
    }
    *key_pem = *csr_pem = NULL;
    if ((rc = subject__check(subject, err, errlen)) != 0 ||
        (rc = key__gen_p256(&pk, rng, err, errlen)) != 0) {
        goto out;
    }
    mbedtls_x509write_csr_set_key(&w, &pk);
    mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
    rc = mbedtls_x509write_csr_set_subject_name(&w, subject);
    if (rc != 0) {
        rc = mbed__fail(rc, FY_EINVAL, err, errlen, "invalid subject DN");
        goto out;
    }
    if ((rc = dn__check_parsed(subject, w.subject, err, errlen)) != 0) {
        goto out;
    }
    if ((rc = der__to_pem(der__write_csr, &w, rng, PEM_BEGIN_CSR, PEM_END_CSR, &csr, err,
                          errlen)) != 0 ||
        (rc = key__to_pem(&pk, &key, err, errlen)) != 0) {
        goto out;
    }
    *key_pem = key;
    *csr_pem = csr;
    key = csr = NULL;
out:
    free(csr);
    fy_x509_key_pem_free(key);
    mbedtls_x509write_csr_free(&w);
    mbedtls_pk_free(&pk);
    return rc;
}

/* Checks an untrusted CSR: its self-signature (proof that the sender holds
 * the private key) and its key type. mbedTLS's parser does not verify the
 * signature. */
static int csr__check(mbedtls_x509_csr *csr, char *err, size_t errlen)
{
    if (csr->sig_md != MBEDTLS_MD_SHA256 && csr->sig_md != MBEDTLS_MD_SHA384 &&
        csr->sig_md != MBEDTLS_MD_SHA512) {
        x509__err(err, errlen, "CSR signature must use SHA-256, SHA-384 or SHA-512");
        return FY_ECERT;
    }
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(csr->sig_md);
    unsigned char hash[MBEDTLS_MD_MAX_SIZE];
    int rc = md ? mbedtls_md(md, csr->cri.p, csr->cri.len, hash) : -1;
    if (rc == 0) {
        rc = mbedtls_pk_verify_ext(csr->sig_pk, csr->sig_opts, &csr->pk, csr->sig_md, hash,
                                   mbedtls_md_get_size(md), csr->sig.p, csr->sig.len);
    }
    if (rc != 0) {
        x509__err(err, errlen, "CSR signature does not verify");
        return FY_ECERT;
    }
    if (mbedtls_pk_get_type(&csr->pk) != MBEDTLS_PK_ECKEY ||
        mbedtls_pk_ec(csr->pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
        x509__err(err, errlen, "key is not ECDSA P-256");
        return FY_ECERT;
    }
    return 0;
}

int fy_x509_csr_sign(const fy_x509_sign_options *o, char **cert_pem, char *err, size_t errlen)
{
    char *cert = NULL;
    mbedtls_x509_crt ca;
    mbedtls_pk_context ca_key;
    mbedtls_x509_csr csr;
    mbedtls_x509_crt_init(&ca);
    mbedtls_pk_init(&ca_key);
    mbedtls_x509_csr_init(&csr);
    int rc;
    size_t n = 0;
    if (!o || !cert_pem) {
        rc = FY_EINVAL;
        x509__err(err, errlen, "missing argument");
        goto out;
    }
    *cert_pem = NULL;
    if ((rc = subject__check(o->subject, err, errlen)) != 0 ||
        (rc = pem__len(o->csr_pem, "CSR", &n, err, errlen)) != 0 ||
        (rc = ca__load(&ca, &ca_key, o->ca_cert_pem, o->ca_key_pem, err, errlen)) != 0) {
        goto out;
    }
    rc = mbedtls_x509_csr_parse(&csr, (const unsigned char *)o->csr_pem, n + 1);
    if (rc != 0) {
        rc = mbed__fail(rc, FY_EPARSE, err, errlen, "CSR is not a valid PKCS#10 request");
        goto out;
    }
    if ((rc = csr__check(&csr, err, errlen)) != 0) {
        goto out;
    }
    crt_spec s = {
        .subject = o->subject,
        .not_before = o->not_before,
        .not_after = o->not_after,
        .serial_hex = o->serial_hex,
        .rng = o->rng,
        .subject_key = &csr.pk,
        .issuer_key = &ca_key,
        .issuer = &ca,
        .is_ca = 0,
        .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE,
        .eku_oid = MBEDTLS_OID_CLIENT_AUTH,
        .eku_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH),
    };
    if ((rc = crt__issue(&s, &cert, err, errlen)) != 0) {
        goto out;
    }
    *cert_pem = cert;
    cert = NULL;
out:
    free(cert);
    mbedtls_x509_csr_free(&csr);
    mbedtls_pk_free(&ca_key);
    mbedtls_x509_crt_free(&ca);
    return rc;
}

/* ---- reading ----------------------------------------------------------- */

static int64_t x509__unix_time(const mbedtls_x509_time *t)
{
    struct tm tm = {0};
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return (int64_t)timegm(&tm);
}

int fy_x509_info_from_crt(const struct mbedtls_x509_crt *crt, fy_x509_info *info)
{
    if (!crt || !info || !crt->raw.p) {
        return FY_EINVAL;
    }
    memset(info, 0, sizeof *info);
    if (mbedtls_x509_dn_gets(info->subject, sizeof info->subject, &crt->subject) < 0) {
        return FY_ETOOBIG;
    }
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0) {
            if (n->val.len >= sizeof info->cn) {
                return FY_ETOOBIG;
            }
            for (size_t i = 0; i < n->val.len; i++) {
                unsigned char c = n->val.p[i];
                info->cn[i] = (c < 32 || c >= 127) ? '?' : (char)c;
            }
            info->cn[n->val.len] = '\0';
            break;
        }
    }
    /* DER integers carry a leading 0x00 when the top bit is set; skip it
     * (and any other redundant zeros) but keep at least one byte. */
    const unsigned char *sp = crt->serial.p;
    size_t slen = crt->serial.len;
    while (slen > 1 && sp[0] == 0) {
        sp++;
        slen--;
    }
    if (fy_hex_encode(sp, slen, info->serial, sizeof info->serial) != 0) {
        return FY_ETOOBIG;
    }
    info->not_before = x509__unix_time(&crt->valid_from);
    info->not_after = x509__unix_time(&crt->valid_to);
    if (fy_sha256(crt->raw.p, crt->raw.len, info->fingerprint) != 0) {
        return FY_ECRYPTO;
    }
    memcpy(info->fingerprint_str, "sha256:", 7);
    fy_hex_encode(info->fingerprint, sizeof info->fingerprint, info->fingerprint_str + 7,
                  sizeof info->fingerprint_str - 7);
    info->is_ca = crt->ca_istrue ? 1 : 0;
    return 0;
}

int fy_x509_info_get(const void *data, size_t len, fy_x509_info *info, char *err, size_t errlen)
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    char *copy = NULL;
    int rc;
    if (!data || !info) {
        x509__err(err, errlen, "missing argument");
        rc = FY_EINVAL;
        goto out;
    }
    if (len == 0) {
        x509__err(err, errlen, "certificate is empty");
        rc = FY_EPARSE;
        goto out;
    }
    if (len > FY_TLS_PEM_MAX_BYTES) {
        x509__err(err, errlen, "certificate is longer than %d bytes", FY_TLS_PEM_MAX_BYTES);
        rc = FY_ETOOBIG;
        goto out;
    }
    if (memmem(data, len, "-----BEGIN", 10)) {
        /* mbedTLS parses PEM only from a NUL-terminated buffer. */
        copy = malloc(len + 1);
        if (!copy) {
            rc = FY_ENOMEM;
            goto out;
        }
        memcpy(copy, data, len);
        copy[len] = '\0';
        rc = mbedtls_x509_crt_parse(&crt, (const unsigned char *)copy, len + 1);
    } else {
        rc = mbedtls_x509_crt_parse_der(&crt, data, len);
    }
    if (rc > 0) {
        x509__err(err, errlen, "%d certificate(s) could not be parsed", rc);
        rc = FY_EPARSE;
        goto out;
    }
    if (rc < 0) {
        rc = mbed__fail(rc, FY_EPARSE, err, errlen, "not a valid PEM or DER certificate");
        goto out;
    }
    rc = fy_x509_info_from_crt(&crt, info);
    if (rc == FY_ETOOBIG) {
        x509__err(err, errlen, "subject, CN or serial too long for fy_x509_info");
    }
out:
    free(copy);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int fy_x509_verify(const char *cert_pem, const char *ca_pem, uint32_t *flags, char *err,
                   size_t errlen)
{
    mbedtls_x509_crt crt, ca;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&ca);
    uint32_t fl = 0;
    int rc;
    /* Anything but a completed verification reports every bit, so a caller
     * that only looks at FLAGS can never mistake an error for success. */
    if (flags) {
        *flags = UINT32_MAX;
    }
    if ((rc = crt__parse_pem(&crt, cert_pem, "certificate", err, errlen)) != 0 ||
        (rc = crt__parse_pem(&ca, ca_pem, "CA certificate", err, errlen)) != 0) {
        goto out;
    }
    rc = mbedtls_x509_crt_verify(&crt, &ca, NULL, NULL, &fl, NULL, NULL);
    if (flags) {
        *flags = fl;
    }
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char text[512];
        int n = mbedtls_x509_crt_verify_info(text, sizeof text, "", fl);
        /* One line: the reasons come newline-separated. */
        for (int i = 0; n > 0 && i < n; i++) {
            if (text[i] == '\n') {
                text[i] = (i == n - 1) ? '\0' : ';';
            }
        }
        x509__err(err, errlen, "certificate does not verify: %s", n > 0 ? text : "unknown reason");
        rc = FY_ECERT;
    } else if (rc != 0) {
        if (flags) {
            *flags = UINT32_MAX;
        }
        rc = mbed__fail(rc, FY_ECERT, err, errlen, "certificate verification failed");
    }
out:
    mbedtls_x509_crt_free(&crt);
    mbedtls_x509_crt_free(&ca);
    return rc;
}
