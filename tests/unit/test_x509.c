/* Unit tests for common/x509: CA creation, server certificates with SANs,
 * CSR enrollment, verification, fingerprints and malformed input. Results are
 * cross-checked with the openssl CLI (a second, independent X.509
 * implementation) as well as with mbedTLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/crypto.h"
#include "common/err.h"
#include "common/limits.h"
#include "common/x509.h"

#include <ctype.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CA_SUBJECT "CN=ferry runner CA,O=ferry"
#define DAY        86400

/* ---- helpers -------------------------------------------------------------- */

typedef struct {
    char *cert;
    char *key;
} ca_pair;

static ca_pair make_ca(const char *subject)
{
    ca_pair ca = {0};
    char err[256] = "";
    int rc = fy_x509_ca_create(subject, 30 * DAY, NULL, &ca.cert, &ca.key, err, sizeof err);
    if (rc != 0) {
        fail_msg("fy_x509_ca_create: %s: %s", fy_err_name(rc), err);
    }
    assert_non_null(ca.cert);
    assert_non_null(ca.key);
    return ca;
}

static void free_ca(ca_pair *ca)
{
    free(ca->cert);
    fy_x509_key_pem_free(ca->key);
}

/* Writes TEXT to a fresh temporary file; returns its malloc'd path. */
static char *write_temp(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/ferry-x509-XXXXXX", dir && dir[0] ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Runs a shell command (printf-style) with popen; returns its stdout (caller
 * frees) and sets *STATUS to its exit code. */
static char *run(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *run(int *status, const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t k;
    while ((k = fread(out + len, 1, cap - 1 - len, f)) > 0) {
        len += k;
        if (len == cap - 1) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[len] = '\0';
    int st = pclose(f);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* `openssl x509 -noout ARGS` on a PEM certificate. */
static char *openssl_x509(const char *pem, const char *args)
{
    char *path = write_temp(pem);
    int status = -1;
    char *out = run(&status, "openssl x509 -in '%s' -noout %s 2>&1", path, args);
    unlink(path);
    free(path);
    if (status != 0) {
        fail_msg("openssl x509 %s failed:\n%s", args, out);
    }
    return out;
}

/* Runs `openssl verify -CAfile CA [-purpose P] CERT` and asserts that it
 * succeeds (WANT_OK) or fails. */
static void assert_openssl_verify(const char *ca_pem, const char *cert_pem, const char *purpose,
                                  int want_ok)
{
    char *ca = write_temp(ca_pem), *crt = write_temp(cert_pem);
    int status = -1;
    char *out = run(&status, "openssl verify -CAfile '%s' %s%s '%s' 2>&1", ca,
                    purpose ? "-purpose " : "", purpose ? purpose : "", crt);
    unlink(ca);
    unlink(crt);
    free(ca);
    free(crt);
    if ((status == 0) != (want_ok != 0)) {
        fail_msg("openssl verify %s: exit %d, wanted %s:\n%s", purpose ? purpose : "", status,
                 want_ok ? "success" : "failure", out);
    }
    free(out);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle)) {
        fail_msg("expected to find \"%s\" in:\n%s", needle, haystack);
    }
}

static fy_x509_info info_of(const char *pem)
{
    fy_x509_info info;
    char err[256] = "";
    int rc = fy_x509_info_get(pem, strlen(pem), &info, err, sizeof err);
    if (rc != 0) {
        fail_msg("fy_x509_info_get: %s: %s", fy_err_name(rc), err);
    }
    return info;
}

/* Signs CSR with CA for SUBJECT over [NB, NA]; asserts success. */
static char *sign_csr(const ca_pair *ca, const char *csr, const char *subject, int64_t nb,
                      int64_t na, const char *serial)
{
    fy_x509_sign_options o = {
        .ca_cert_pem = ca->cert,
        .ca_key_pem = ca->key,
        .csr_pem = csr,
        .subject = subject,
        .not_before = nb,
        .not_after = na,
        .serial_hex = serial,
    };
    char *cert = NULL;
    char err[256] = "";
    int rc = fy_x509_csr_sign(&o, &cert, err, sizeof err);
    if (rc != 0) {
        fail_msg("fy_x509_csr_sign: %s: %s", fy_err_name(rc), err);
    }
    assert_non_null(cert);
    return cert;
}

/* Converts between PEM and DER with mbedTLS's PEM reader/writer (for
 * tampering with a signed object). */
static unsigned char *pem_to_der(const char *pem, const char *label, size_t *len)
{
    char begin[64], end[64];
    snprintf(begin, sizeof begin, "-----BEGIN %s-----", label);
    snprintf(end, sizeof end, "-----END %s-----", label);
    mbedtls_pem_context ctx;
    mbedtls_pem_init(&ctx);
    size_t used = 0;
    assert_int_equal(
        mbedtls_pem_read_buffer(&ctx, begin, end, (const unsigned char *)pem, NULL, 0, &used), 0);
    unsigned char *der = malloc(ctx.buflen);
    assert_non_null(der);
    memcpy(der, ctx.buf, ctx.buflen);
    *len = ctx.buflen;
    mbedtls_pem_free(&ctx);
    return der;
}

static char *der_to_pem(const unsigned char *der, size_t len, const char *label)
{
    char begin[64], end[64];
    snprintf(begin, sizeof begin, "-----BEGIN %s-----\n", label);
    snprintf(end, sizeof end, "-----END %s-----\n", label);
    size_t cap = len * 2 + 200, olen = 0;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(mbedtls_pem_write_buffer(begin, end, der, len, out, cap, &olen), 0);
    return (char *)out;
}

/* ---- CA ------------------------------------------------------------------- */

static void test_ca_create(void **state)
{
    (void)state;
    int64_t before = (int64_t)time(NULL);
    ca_pair ca = make_ca(CA_SUBJECT);
    int64_t after = (int64_t)time(NULL);
    fy_x509_info info = info_of(ca.cert);
    assert_string_equal(info.subject, "CN=ferry runner CA, O=ferry");
    assert_string_equal(info.cn, "ferry runner CA");
    assert_int_equal(info.is_ca, 1);
    assert_true(info.not_before >= before - FY_X509_BACKDATE_SECONDS);
    assert_true(info.not_before <= after - FY_X509_BACKDATE_SECONDS);
    assert_int_equal(info.not_after - info.not_before, 30 * DAY + FY_X509_BACKDATE_SECONDS);
    /* A 127-bit random serial: 31 or 32 hex digits (a leading zero nibble is
     * possible), never zero. */
    size_t slen = strlen(info.serial);
    assert_true(slen >= 29 && slen <= 32);
    assert_true(strspn(info.serial, "0") < slen);
    assert_true(info.serial[0] >= '0' && info.serial[0] <= '7');

    char *text = openssl_x509(ca.cert, "-text");
    assert_contains(text, "Issuer: CN = ferry runner CA, O = ferry");
    assert_contains(text, "Subject: CN = ferry runner CA, O = ferry");
    assert_contains(text, "CA:TRUE, pathlen:0");
    assert_contains(text, "Certificate Sign, CRL Sign");
    assert_contains(text, "ASN1 OID: prime256v1");
    assert_contains(text, "ecdsa-with-SHA256");
    assert_contains(text, "X509v3 Subject Key Identifier");
    free(text);
    /* The key is a P-256 EC key that matches the certificate. */
    char *keypath = write_temp(ca.key);
    int status = -1;
    char *out = run(&status, "openssl ec -in '%s' -noout -text 2>&1", keypath);
    unlink(keypath);
    free(keypath);
    assert_int_equal(status, 0);
    assert_contains(out, "ASN1 OID: prime256v1");
    free(out);
    /* Self-signed: it verifies against itself, with both tools. */
    assert_int_equal(fy_x509_verify(ca.cert, ca.cert, NULL, NULL, 0), 0);
    assert_openssl_verify(ca.cert, ca.cert, NULL, 1);

    /* Two CAs never share a serial or a key. */
    ca_pair ca2 = make_ca(CA_SUBJECT);
    fy_x509_info info2 = info_of(ca2.cert);
    assert_string_not_equal(info.serial, info2.serial);
    assert_memory_not_equal(info.fingerprint, info2.fingerprint, FY_SHA256_LEN);
    assert_string_not_equal(ca.key, ca2.key);
    free_ca(&ca2);
    free_ca(&ca);
}

static void test_ca_create_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *subject;
        int64_t valid;
        int rc;
        const char *msg;
    } cases[] = {
        {NULL, DAY, FY_EINVAL, "subject"},
        {"", DAY, FY_EINVAL, "subject"},
        {"XX=nope", DAY, FY_EINVAL, "invalid subject DN"},
        {"CN", DAY, FY_EINVAL, "invalid subject DN"},
        {"bogus", DAY, FY_EINVAL, "invalid subject DN"},
        {"CN=x,junk", DAY, FY_EINVAL, "invalid subject DN"},
        {"CN=a,CN=b", DAY, FY_EINVAL, "invalid subject DN"},
        {CA_SUBJECT, 0, FY_EINVAL, "valid_seconds"},
        {CA_SUBJECT, -5, FY_EINVAL, "valid_seconds"},
        {CA_SUBJECT, INT64_MAX, FY_EINVAL, "valid_seconds"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cert = (char *)1, *key = (char *)1;
        char err[256] = "";
        assert_int_equal(
            fy_x509_ca_create(cases[i].subject, cases[i].valid, NULL, &cert, &key, err, sizeof err),
            cases[i].rc);
        assert_null(cert);
        assert_null(key);
        assert_contains(err, cases[i].msg);
    }
}

/* A CA whose name has an escaped comma and a country (PrintableString):
 * issued certificates must carry the CA's subject byte for byte as their
 * issuer, or chains stop verifying. */
static void test_ca_name_copied_exactly(void **state)
{
    (void)state;
    ca_pair ca = make_ca("CN=ferry\\, the CA,O=ferry,C=NL");
    fy_x509_info info = info_of(ca.cert);
    assert_string_equal(info.cn, "ferry, the CA");
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=r", NULL, &key, &csr, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);
    char *cert = sign_csr(&ca, csr, "CN=r", now - 10, now + DAY, NULL);
    assert_int_equal(fy_x509_verify(cert, ca.cert, NULL, NULL, 0), 0);
    assert_openssl_verify(ca.cert, cert, NULL, 1);
    char *ca_subject = openssl_x509(ca.cert, "-subject -nameopt RFC2253");
    char *issuer = openssl_x509(cert, "-issuer -nameopt RFC2253");
    assert_string_equal(ca_subject + strlen("subject="), issuer + strlen("issuer="));
    assert_contains(issuer, "ferry\\, the CA");
    free(ca_subject);
    free(issuer);
    free(cert);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

/* ---- server certificates -------------------------------------------------- */

static void test_server_cert_sans(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    static const char *const dns[] = {"gw.example.com", "*.tunnel.example.com", NULL};
    static const char *const ips[] = {"127.0.0.1", "192.0.2.7", "::1", "2001:db8::42", NULL};
    fy_x509_server_options o = {
        .ca_cert_pem = ca.cert,
        .ca_key_pem = ca.key,
        .subject = "CN=gw.example.com,O=ferry",
        .dns_names = dns,
        .ip_addrs = ips,
        .valid_seconds = 7 * DAY,
    };
    fy_rng *rng = fy_rng_new("server-test");
    assert_non_null(rng);
    o.rng = rng;
    char *cert = NULL, *key = NULL;
    char err[256] = "";
    int rc = fy_x509_server_issue(&o, &cert, &key, err, sizeof err);
    if (rc != 0) {
        fail_msg("fy_x509_server_issue: %s", err);
    }

    /* openssl's view: every SAN, in order, and the server profile. */
    char *text = openssl_x509(cert, "-text");
    assert_contains(text, "X509v3 Subject Alternative Name:");
    assert_contains(text, "DNS:gw.example.com, DNS:*.tunnel.example.com, IP Address:127.0.0.1, "
                          "IP Address:192.0.2.7, IP Address:0:0:0:0:0:0:0:1, "
                          "IP Address:2001:DB8:0:0:0:0:0:42");
    assert_contains(text, "TLS Web Server Authentication");
    assert_contains(text, "Digital Signature");
    assert_contains(text, "CA:FALSE");
    assert_contains(text, "Issuer: CN = ferry runner CA, O = ferry");
    assert_contains(text, "Subject: CN = gw.example.com, O = ferry");
    assert_contains(text, "X509v3 Authority Key Identifier");
    free(text);
    assert_openssl_verify(ca.cert, cert, "sslserver", 1);
    /* Not a client certificate. */
    assert_openssl_verify(ca.cert, cert, "sslclient", 0);

    /* mbedTLS's view: the chain verifies, and host names match the DNS SANs
     * (including the wildcard) but nothing else. */
    assert_int_equal(fy_x509_verify(cert, ca.cert, NULL, err, sizeof err), 0);
    mbedtls_x509_crt crt, trust;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&trust);
    assert_int_equal(mbedtls_x509_crt_parse(&crt, (const unsigned char *)cert, strlen(cert) + 1),
                     0);
    assert_int_equal(
        mbedtls_x509_crt_parse(&trust, (const unsigned char *)ca.cert, strlen(ca.cert) + 1), 0);
    static const struct {
        const char *host;
        int ok;
    } hosts[] = {
        {"gw.example.com", 1},     {"a.tunnel.example.com", 1}, {"other.example.com", 0},
        {"tunnel.example.com", 0}, {"example.com", 0},
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        uint32_t flags = 0;
        int vr = mbedtls_x509_crt_verify(&crt, &trust, NULL, hosts[i].host, &flags, NULL, NULL);
        if (hosts[i].ok) {
            assert_int_equal(vr, 0);
            assert_int_equal(flags, 0);
        } else {
            assert_int_equal(vr, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
            assert_int_equal(flags, MBEDTLS_X509_BADCERT_CN_MISMATCH);
        }
    }
    /* The returned key belongs to the certificate. */
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    assert_int_equal(
        mbedtls_pk_parse_key(&pk, (const unsigned char *)key, strlen(key) + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_pk_check_pair(&crt.pk, &pk), 0);
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&crt);
    mbedtls_x509_crt_free(&trust);

    fy_x509_info info = info_of(cert);
    assert_int_equal(info.is_ca, 0);
    assert_string_equal(info.cn, "gw.example.com");
    assert_int_equal(info.not_after - info.not_before, 7 * DAY + FY_X509_BACKDATE_SECONDS);

    free(cert);
    fy_x509_key_pem_free(key);
    fy_rng_free(rng);
    free_ca(&ca);
}

static void test_server_cert_rejects(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    ca_pair other = make_ca("CN=other CA");
    /* A leaf certificate posing as a CA. */
    static const char *const one_dns[] = {"leaf.example.com", NULL};
    fy_x509_server_options base = {
        .ca_cert_pem = ca.cert,
        .ca_key_pem = ca.key,
        .subject = "CN=leaf",
        .dns_names = one_dns,
        .valid_seconds = DAY,
    };
    char *leaf = NULL, *leaf_key = NULL;
    assert_int_equal(fy_x509_server_issue(&base, &leaf, &leaf_key, NULL, 0), 0);

    static const char *const bad_dns[][2] = {
        {"", NULL},
        {"a..b", NULL},
        {"a b.com", NULL},
        {"*", NULL},
        {"foo.*.com", NULL},
        {"x.", NULL},
        {".x", NULL},
        {"a_b.com", NULL},
        {"**.x.com", NULL},
        {"caf\xc3\xa9.com", NULL},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", NULL},
    };
    for (size_t i = 0; i < sizeof bad_dns / sizeof bad_dns[0]; i++) {
        fy_x509_server_options o = base;
        o.dns_names = bad_dns[i];
        char *cert = NULL, *key = NULL;
        char err[256] = "";
        assert_int_equal(fy_x509_server_issue(&o, &cert, &key, err, sizeof err), FY_EINVAL);
        assert_contains(err, "invalid DNS name");
        assert_null(cert);
        assert_null(key);
    }
    static const char *const bad_ips[][2] = {
        {"1.2.3", NULL},     {"256.1.1.1", NULL}, {"::g", NULL},
        {"localhost", NULL}, {"", NULL},          {"1.2.3.4/24", NULL},
    };
    for (size_t i = 0; i < sizeof bad_ips / sizeof bad_ips[0]; i++) {
        fy_x509_server_options o = base;
        o.ip_addrs = bad_ips[i];
        char *cert = NULL, *key = NULL;
        char err[256] = "";
        assert_int_equal(fy_x509_server_issue(&o, &cert, &key, err, sizeof err), FY_EINVAL);
        assert_contains(err, "invalid IP address");
        assert_null(cert);
    }

    static const char *const none[] = {NULL};
    const char *many[FY_X509_MAX_SANS + 2];
    for (int i = 0; i <= FY_X509_MAX_SANS; i++) {
        many[i] = "x.example.com";
    }
    many[FY_X509_MAX_SANS + 1] = NULL;
    static const char *const garbage = "-----BEGIN CERTIFICATE-----\nnot base64!\n"
                                       "-----END CERTIFICATE-----\n";
    struct {
        fy_x509_server_options o;
        int rc;
        const char *msg;
    } cases[] = {
        {base, 0, ""},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = ca.key,
          .subject = "CN=x",
          .dns_names = none,
          .valid_seconds = DAY},
         FY_EINVAL,
         "at least one"},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = ca.key,
          .subject = "CN=x",
          .dns_names = many,
          .valid_seconds = DAY},
         FY_EINVAL,
         "too many"},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = ca.key,
          .subject = "ZZ=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_EINVAL,
         "invalid subject DN"},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = ca.key,
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = 0},
         FY_EINVAL,
         "valid_seconds"},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = other.key,
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_ECERT,
         "does not match"},
        {{.ca_cert_pem = leaf,
          .ca_key_pem = leaf_key,
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_ECERT,
         "not a CA"},
        {{.ca_cert_pem = garbage,
          .ca_key_pem = ca.key,
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_EPARSE,
         "CA certificate"},
        {{.ca_cert_pem = ca.cert,
          .ca_key_pem = "junk",
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_EPARSE,
         "CA key"},
        {{.ca_cert_pem = NULL,
          .ca_key_pem = ca.key,
          .subject = "CN=x",
          .dns_names = one_dns,
          .valid_seconds = DAY},
         FY_EINVAL,
         "missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cert = NULL, *key = NULL;
        char err[256] = "";
        int rc = fy_x509_server_issue(&cases[i].o, &cert, &key, err, sizeof err);
        if (rc != cases[i].rc) {
            fail_msg("case %zu: got %s (%s), want %s", i, fy_err_name(rc), err,
                     fy_err_name(cases[i].rc));
        }
        assert_contains(err, cases[i].msg);
        assert_true((cert != NULL) == (rc == 0));
        free(cert);
        fy_x509_key_pem_free(key);
    }
    free(leaf);
    fy_x509_key_pem_free(leaf_key);
    free_ca(&other);
    free_ca(&ca);
}

/* ---- enrollment: CSR -> client certificate ------------------------------- */

static void test_csr_sign_subject_override(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    /* The runner asks for one name... */
    char *key = NULL, *csr = NULL;
    char err[256] = "";
    assert_int_equal(fy_x509_csr_create("CN=evil,O=attacker", NULL, &key, &csr, err, sizeof err),
                     0);
    char *csrpath = write_temp(csr);
    int status = -1;
    char *out = run(&status, "openssl req -in '%s' -noout -verify -subject 2>&1", csrpath);
    unlink(csrpath);
    free(csrpath);
    assert_int_equal(status, 0);
    assert_contains(out, "CN = evil, O = attacker");
    free(out);

    /* ...and the gateway certifies the name it enrolled. */
    int64_t now = (int64_t)time(NULL);
    char *cert = sign_csr(&ca, csr, "CN=runner-1,O=ferry", now - 60, now + 3600, "1a2b3c");
    fy_x509_info info = info_of(cert);
    assert_string_equal(info.subject, "CN=runner-1, O=ferry");
    assert_string_equal(info.cn, "runner-1");
    assert_string_equal(info.serial, "1a2b3c");
    assert_int_equal(info.not_before, now - 60);
    assert_int_equal(info.not_after, now + 3600);
    assert_int_equal(info.is_ca, 0);
    char *text = openssl_x509(cert, "-text");
    assert_contains(text, "Subject: CN = runner-1, O = ferry");
    assert_contains(text, "Issuer: CN = ferry runner CA, O = ferry");
    assert_contains(text, "TLS Web Client Authentication");
    assert_contains(text, "Digital Signature");
    assert_contains(text, "CA:FALSE");
    assert_contains(text, "Serial Number: 1715004 (0x1a2b3c)");
    assert_null(strstr(text, "evil"));
    assert_null(strstr(text, "attacker"));
    assert_null(strstr(text, "Server Authentication"));
    free(text);
    assert_int_equal(fy_x509_verify(cert, ca.cert, NULL, err, sizeof err), 0);
    assert_openssl_verify(ca.cert, cert, "sslclient", 1);

    /* The certificate carries the runner's public key. */
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    assert_int_equal(mbedtls_x509_crt_parse(&crt, (const unsigned char *)cert, strlen(cert) + 1),
                     0);
    assert_int_equal(
        mbedtls_pk_parse_key(&pk, (const unsigned char *)key, strlen(key) + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_pk_check_pair(&crt.pk, &pk), 0);
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&crt);

    /* Random serials when none is given (NULL, "" or "0"), all distinct. */
    const char *serials[] = {NULL, "", "0"};
    char seen[3][64];
    for (int i = 0; i < 3; i++) {
        char *c = sign_csr(&ca, csr, "CN=runner-1", now, now + 60, serials[i]);
        fy_x509_info ci = info_of(c);
        assert_true(strlen(ci.serial) >= 29);
        memcpy(seen[i], ci.serial, sizeof seen[i]);
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(seen[i], seen[j]);
        }
        free(c);
    }
    /* A far-future expiry (GeneralizedTime after 2049) round-trips. */
    char *c = sign_csr(&ca, csr, "CN=runner-1", now, INT64_C(2871763200), "ff"); /* 2061 */
    fy_x509_info fi = info_of(c);
    assert_int_equal(fi.not_after, INT64_C(2871763200));
    assert_string_equal(fi.serial, "ff");
    free(c);

    free(cert);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

static void test_csr_sign_rejects_args(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=r", NULL, &key, &csr, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);
    const struct {
        const char *subject;
        int64_t nb, na;
        const char *serial;
        int rc;
        const char *msg;
    } cases[] = {
        {"CN=ok", now, now + 1, NULL, 0, ""},
        {"CN=epoch", 0, now, NULL, 0, ""},
        {NULL, now, now + DAY, NULL, FY_EINVAL, "subject"},
        {"bogus", now, now + DAY, NULL, FY_EINVAL, "invalid subject"},
        {"CN=x", now, now, NULL, FY_EINVAL, "validity"},
        {"CN=x", now + DAY, now, NULL, FY_EINVAL, "validity"},
        {"CN=x", -1, now + DAY, NULL, FY_EINVAL, "validity"},
        {"CN=x", now, INT64_C(253402300800), NULL, FY_EINVAL, "validity"}, /* year 10000 */
        {"CN=x", now, now + DAY, "xyz", FY_EINVAL, "serial"},
        {"CN=x", now, now + DAY, "-5", FY_EINVAL, "serial"},
        {"CN=x", now, now + DAY, "0x10", FY_EINVAL, "serial"},
        {"CN=x", now, now + DAY, "8000000000000000000000000000000000000000", FY_EINVAL, "serial"},
        {"CN=x", now, now + DAY, "7fffffffffffffffffffffffffffffffffffffff", 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_x509_sign_options o = {
            .ca_cert_pem = ca.cert,
            .ca_key_pem = ca.key,
            .csr_pem = csr,
            .subject = cases[i].subject,
            .not_before = cases[i].nb,
            .not_after = cases[i].na,
            .serial_hex = cases[i].serial,
        };
        char *cert = NULL;
        char err[256] = "";
        int rc = fy_x509_csr_sign(&o, &cert, err, sizeof err);
        if (rc != cases[i].rc) {
            fail_msg("case %zu: got %s (%s), want %s", i, fy_err_name(rc), err,
                     fy_err_name(cases[i].rc));
        }
        assert_contains(err, cases[i].msg);
        assert_true((cert != NULL) == (rc == 0));
        free(cert);
    }
    fy_x509_sign_options o = {0};
    char *cert = (char *)1;
    assert_int_equal(fy_x509_csr_sign(NULL, &cert, NULL, 0), FY_EINVAL);
    assert_int_equal(fy_x509_csr_sign(&o, &cert, NULL, 0), FY_EINVAL);
    assert_null(cert);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

static void test_expired_and_future(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=runner-2", NULL, &key, &csr, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);
    static const struct {
        int64_t nb, na;
        uint32_t flag;
        const char *msg;
    } cases[] = {
        {-2 * DAY, -DAY, MBEDTLS_X509_BADCERT_EXPIRED, "expired"},
        {DAY, 2 * DAY, MBEDTLS_X509_BADCERT_FUTURE, "future"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cert = sign_csr(&ca, csr, "CN=runner-2", now + cases[i].nb, now + cases[i].na, NULL);
        uint32_t flags = 0;
        char err[256] = "";
        assert_int_equal(fy_x509_verify(cert, ca.cert, &flags, err, sizeof err), FY_ECERT);
        assert_int_equal(flags, cases[i].flag);
        assert_contains(err, cases[i].msg);
        free(cert);
    }
    /* The same CSR in its validity window verifies, with flags cleared. */
    char *cert = sign_csr(&ca, csr, "CN=runner-2", now - 10, now + DAY, NULL);
    uint32_t flags = 123;
    assert_int_equal(fy_x509_verify(cert, ca.cert, &flags, NULL, 0), 0);
    assert_int_equal(flags, 0);
    free(cert);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

static void test_other_ca_rejected(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    /* Same subject, different key: only the signature tells them apart. */
    ca_pair impostor = make_ca(CA_SUBJECT);
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=runner-3", NULL, &key, &csr, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);
    char *cert = sign_csr(&impostor, csr, "CN=runner-3", now - 10, now + DAY, NULL);
    uint32_t flags = 0;
    char err[256] = "";
    assert_int_equal(fy_x509_verify(cert, impostor.cert, &flags, NULL, 0), 0);
    assert_int_equal(fy_x509_verify(cert, ca.cert, &flags, err, sizeof err), FY_ECERT);
    assert_true(flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED);
    assert_contains(err, "does not verify");
    assert_openssl_verify(ca.cert, cert, NULL, 0);
    /* A CA with a different name too. */
    ca_pair third = make_ca("CN=third CA,O=elsewhere");
    assert_int_equal(fy_x509_verify(cert, third.cert, &flags, NULL, 0), FY_ECERT);
    assert_true(flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED);
    free(cert);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&third);
    free_ca(&impostor);
    free_ca(&ca);
}

static void test_tampered_csr_refused(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=runner-4,O=ferry", NULL, &key, &csr, NULL, 0), 0);
    size_t len = 0;
    unsigned char *der = pem_to_der(csr, "CERTIFICATE REQUEST", &len);
    /* Locate the subject's "runner-4" inside the signed part. */
    unsigned char *name = memmem(der, len, "runner-4", 8);
    assert_non_null(name);
    static const struct {
        const char *what;
        int where; /* 0: last signature byte, 1: a byte of the subject */
    } cases[] = {{"signature", 0}, {"subject", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *bad = malloc(len);
        assert_non_null(bad);
        memcpy(bad, der, len);
        if (cases[i].where == 0) {
            bad[len - 1] ^= 0x01;
        } else {
            bad[(name - der) + 7] = '5'; /* runner-4 -> runner-5 */
        }
        char *pem = der_to_pem(bad, len, "CERTIFICATE REQUEST");
        /* Still a well-formed CSR, as mbedTLS's parser (which does not check
         * the signature) agrees. */
        mbedtls_x509_csr parsed;
        mbedtls_x509_csr_init(&parsed);
        assert_int_equal(
            mbedtls_x509_csr_parse(&parsed, (const unsigned char *)pem, strlen(pem) + 1), 0);
        mbedtls_x509_csr_free(&parsed);

        fy_x509_sign_options o = {
            .ca_cert_pem = ca.cert,
            .ca_key_pem = ca.key,
            .csr_pem = pem,
            .subject = "CN=runner-4",
            .not_before = 0,
            .not_after = DAY,
        };
        char *cert = (char *)1;
        char err[256] = "";
        assert_int_equal(fy_x509_csr_sign(&o, &cert, err, sizeof err), FY_ECERT);
        assert_string_equal(err, "CSR signature does not verify");
        assert_null(cert);
        free(pem);
        free(bad);
    }
    /* The untouched CSR is accepted, so the refusals above are about the
     * tampering. */
    free(sign_csr(&ca, csr, "CN=runner-4", 0, DAY, NULL));
    free(der);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

/* Builds a CSR for a key made by mbedTLS directly (any type or curve). */
static char *csr_for_key(mbedtls_pk_context *pk, mbedtls_md_type_t md)
{
    mbedtls_x509write_csr w;
    mbedtls_x509write_csr_init(&w);
    mbedtls_x509write_csr_set_key(&w, pk);
    mbedtls_x509write_csr_set_md_alg(&w, md);
    assert_int_equal(mbedtls_x509write_csr_set_subject_name(&w, "CN=odd key"), 0);
    unsigned char *buf = malloc(8192);
    assert_non_null(buf);
    assert_int_equal(mbedtls_x509write_csr_pem(&w, buf, 8192, fy_rng_mbedtls, NULL), 0);
    mbedtls_x509write_csr_free(&w);
    return (char *)buf;
}

static void test_csr_key_types(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    mbedtls_pk_context p384, rsa, p256;
    mbedtls_pk_init(&p384);
    mbedtls_pk_init(&rsa);
    mbedtls_pk_init(&p256);
    assert_int_equal(mbedtls_pk_setup(&p384, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP384R1, mbedtls_pk_ec(p384), fy_rng_mbedtls, NULL),
        0);
    assert_int_equal(mbedtls_pk_setup(&rsa, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), 0);
    assert_int_equal(mbedtls_rsa_gen_key(mbedtls_pk_rsa(rsa), fy_rng_mbedtls, NULL, 1024, 65537),
                     0);
    assert_int_equal(mbedtls_pk_setup(&p256, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(p256), fy_rng_mbedtls, NULL),
        0);

    struct {
        char *csr;
        int rc;
        const char *msg;
    } cases[] = {
        {csr_for_key(&p384, MBEDTLS_MD_SHA256), FY_ECERT, "key is not ECDSA P-256"},
        {csr_for_key(&rsa, MBEDTLS_MD_SHA256), FY_ECERT, "key is not ECDSA P-256"},
        {csr_for_key(&p256, MBEDTLS_MD_SHA1), FY_ECERT, "SHA-256"},
        {csr_for_key(&p256, MBEDTLS_MD_SHA384), 0, ""},
        {csr_for_key(&p256, MBEDTLS_MD_SHA256), 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_x509_sign_options o = {
            .ca_cert_pem = ca.cert,
            .ca_key_pem = ca.key,
            .csr_pem = cases[i].csr,
            .subject = "CN=runner-5",
            .not_before = 0,
            .not_after = DAY,
        };
        char *cert = NULL;
        char err[256] = "";
        int rc = fy_x509_csr_sign(&o, &cert, err, sizeof err);
        if (rc != cases[i].rc) {
            fail_msg("case %zu: got %s (%s), want %s", i, fy_err_name(rc), err,
                     fy_err_name(cases[i].rc));
        }
        assert_contains(err, cases[i].msg);
        free(cert);
        free(cases[i].csr);
    }

    /* A P-256 CSR made by OpenSSL is accepted (interoperability); an RSA one
     * is refused. */
    static const struct {
        const char *newkey;
        int rc;
    } ossl[] = {
        {"-newkey ec -pkeyopt ec_paramgen_curve:prime256v1", 0},
        {"-newkey rsa:2048", FY_ECERT},
    };
    for (size_t i = 0; i < sizeof ossl / sizeof ossl[0]; i++) {
        int status = -1;
        char *pem = run(&status,
                        "openssl req -new %s -nodes -keyout /dev/null -subj '/CN=from openssl' "
                        "2>/dev/null",
                        ossl[i].newkey);
        assert_int_equal(status, 0);
        fy_x509_sign_options o = {
            .ca_cert_pem = ca.cert,
            .ca_key_pem = ca.key,
            .csr_pem = pem,
            .subject = "CN=runner-6",
            .not_before = 0,
            .not_after = (int64_t)time(NULL) + DAY,
        };
        char *cert = NULL;
        char err[256] = "";
        assert_int_equal(fy_x509_csr_sign(&o, &cert, err, sizeof err), ossl[i].rc);
        if (ossl[i].rc == 0) {
            assert_int_equal(fy_x509_verify(cert, ca.cert, NULL, NULL, 0), 0);
            assert_string_equal(info_of(cert).cn, "runner-6");
        } else {
            assert_string_equal(err, "key is not ECDSA P-256");
        }
        free(cert);
        free(pem);
    }
    mbedtls_pk_free(&p384);
    mbedtls_pk_free(&rsa);
    mbedtls_pk_free(&p256);
    free_ca(&ca);
}

/* ---- reading ---------------------------------------------------------------- */

/* "sha256 Fingerprint=AB:CD:..." -> "sha256:abcd..." */
static void normalize_fingerprint(const char *openssl_line, char *out, size_t cap)
{
    const char *eq = strchr(openssl_line, '=');
    assert_non_null(eq);
    size_t n = 0;
    n += (size_t)snprintf(out, cap, "sha256:");
    for (const char *p = eq + 1; *p && *p != '\n'; p++) {
        if (*p != ':') {
            assert_true(n + 1 < cap);
            out[n++] = (char)tolower((unsigned char)*p);
        }
    }
    out[n] = '\0';
}

static void test_fingerprint_and_der(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    char *key = NULL, *csr = NULL;
    assert_int_equal(fy_x509_csr_create("CN=runner-7", NULL, &key, &csr, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);
    char *leaf = sign_csr(&ca, csr, "CN=runner-7", now, now + DAY, NULL);
    const char *certs[] = {ca.cert, leaf};
    for (size_t i = 0; i < 2; i++) {
        fy_x509_info info = info_of(certs[i]);
        char *fp = openssl_x509(certs[i], "-fingerprint -sha256");
        char want[80];
        normalize_fingerprint(fp, want, sizeof want);
        free(fp);
        assert_int_equal(strlen(info.fingerprint_str), 7 + 64);
        assert_string_equal(info.fingerprint_str, want);
        char hex[65];
        assert_int_equal(fy_hex_encode(info.fingerprint, 32, hex, sizeof hex), 0);
        assert_string_equal(info.fingerprint_str + 7, hex);
        /* Serial as openssl prints it ("serial=0A1B..."), case-insensitively. */
        char *serial = openssl_x509(certs[i], "-serial");
        serial[strcspn(serial, "\n")] = '\0';
        assert_int_equal(strncmp(serial, "serial=", 7), 0);
        const char *os = serial + 7;
        while (os[0] == '0' && os[1] == '0') {
            os += 2; /* openssl keeps whole leading zero bytes */
        }
        assert_int_equal(strcasecmp(os, info.serial), 0);
        free(serial);
        /* Dates agree with openssl's -dates through timegm. */
        char *dates = openssl_x509(certs[i], "-enddate -dateopt iso_8601");
        struct tm tm = {0};
        assert_non_null(strptime(dates, "notAfter=%Y-%m-%d %H:%M:%SZ", &tm));
        assert_int_equal((int64_t)timegm(&tm), info.not_after);
        free(dates);

        /* DER input gives the same answers, and a DER fingerprint is the hash
         * of exactly these bytes. */
        size_t dlen = 0;
        unsigned char *der = pem_to_der(certs[i], "CERTIFICATE", &dlen);
        fy_x509_info dinfo;
        assert_int_equal(fy_x509_info_get(der, dlen, &dinfo, NULL, 0), 0);
        assert_memory_equal(&dinfo, &info, sizeof info);
        uint8_t h[32];
        assert_int_equal(fy_sha256(der, dlen, h), 0);
        assert_memory_equal(h, info.fingerprint, 32);
        free(der);
    }
    /* A chain (leaf then CA) reads as its first certificate. */
    char *chain = NULL;
    assert_true(asprintf(&chain, "%s%s", leaf, ca.cert) > 0);
    fy_x509_info ci = info_of(chain);
    assert_string_equal(ci.cn, "runner-7");
    assert_int_equal(fy_x509_verify(chain, ca.cert, NULL, NULL, 0), 0);
    free(chain);
    assert_int_equal(fy_x509_info_from_crt(NULL, &ci), FY_EINVAL);
    free(leaf);
    free(csr);
    fy_x509_key_pem_free(key);
    free_ca(&ca);
}

static void test_malformed_input(void **state)
{
    (void)state;
    ca_pair ca = make_ca(CA_SUBJECT);
    size_t n = strlen(ca.cert);
    char *truncated = strndup(ca.cert, n / 2);
    char *corrupt = strdup(ca.cert);
    /* Damage the DER header inside the base64 (the first body characters). */
    char *body = strchr(corrupt, '\n') + 1;
    body[0] = body[0] == 'A' ? 'B' : 'A';
    body[1] = body[1] == 'A' ? 'B' : 'A';
    char *huge = malloc(FY_TLS_PEM_MAX_BYTES + 2);
    memset(huge, 'A', FY_TLS_PEM_MAX_BYTES + 1);
    huge[FY_TLS_PEM_MAX_BYTES + 1] = '\0';
    char *no_end = strndup(ca.cert, n - strlen("-----END CERTIFICATE-----\n"));
    static const unsigned char random_der[] = {0x30, 0x82, 0xff, 0xff, 0x01, 0x02};

    static const struct {
        int which;
        int rc;
    } kinds[] = {{0, FY_EPARSE}, {1, FY_EPARSE}, {2, FY_EPARSE},  {3, FY_EPARSE},
                 {4, FY_EPARSE}, {5, FY_EPARSE}, {6, FY_ETOOBIG}, {7, FY_EPARSE}};
    const char *inputs[] = {
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        truncated,
        corrupt,
        huge,
        no_end,
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *in = inputs[kinds[i].which];
        fy_x509_info info;
        char err[256] = "";
        int rc = fy_x509_info_get(in, strlen(in), &info, err, sizeof err);
        if (rc != kinds[i].rc) {
            fail_msg("input %zu: info_get gave %s (%s)", i, fy_err_name(rc), err);
        }
        /* fy_x509_verify on either side. */
        uint32_t flags = 0;
        assert_int_equal(fy_x509_verify(in, ca.cert, &flags, NULL, 0), kinds[i].rc);
        assert_int_equal(flags, UINT32_MAX);
        assert_int_equal(fy_x509_verify(ca.cert, in, &flags, NULL, 0), kinds[i].rc);
        /* As a CSR, a CA certificate or a CA key. */
        fy_x509_sign_options o = {
            .ca_cert_pem = ca.cert,
            .ca_key_pem = ca.key,
            .csr_pem = in,
            .subject = "CN=x",
            .not_before = 0,
            .not_after = DAY,
        };
        char *cert = NULL;
        assert_int_equal(fy_x509_csr_sign(&o, &cert, NULL, 0), kinds[i].rc);
        o.csr_pem = ca.cert; /* a certificate is not a CSR */
        assert_int_equal(fy_x509_csr_sign(&o, &cert, NULL, 0), FY_EPARSE);
        o.ca_cert_pem = in;
        assert_int_equal(fy_x509_csr_sign(&o, &cert, NULL, 0), kinds[i].rc);
        o.ca_cert_pem = ca.cert;
        o.ca_key_pem = in;
        assert_int_equal(fy_x509_csr_sign(&o, &cert, NULL, 0), kinds[i].rc);
        assert_null(cert);
    }
    fy_x509_info info;
    assert_int_equal(fy_x509_info_get(random_der, sizeof random_der, &info, NULL, 0), FY_EPARSE);
    assert_int_equal(fy_x509_info_get(NULL, 5, &info, NULL, 0), FY_EINVAL);
    assert_int_equal(fy_x509_info_get(ca.cert, FY_TLS_PEM_MAX_BYTES + 1, &info, NULL, 0),
                     FY_ETOOBIG);
    assert_int_equal(fy_x509_verify(NULL, ca.cert, NULL, NULL, 0), FY_EINVAL);
    free(truncated);
    free(corrupt);
    free(huge);
    free(no_end);
    free_ca(&ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_create),
        cmocka_unit_test(test_ca_create_rejects),
        cmocka_unit_test(test_ca_name_copied_exactly),
        cmocka_unit_test(test_server_cert_sans),
        cmocka_unit_test(test_server_cert_rejects),
        cmocka_unit_test(test_csr_sign_subject_override),
        cmocka_unit_test(test_csr_sign_rejects_args),
        cmocka_unit_test(test_expired_and_future),
        cmocka_unit_test(test_other_ca_rejected),
        cmocka_unit_test(test_tampered_csr_refused),
        cmocka_unit_test(test_csr_key_types),
        cmocka_unit_test(test_fingerprint_and_der),
        cmocka_unit_test(test_malformed_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
