/* enroll.c: `ferry-runner enroll`.
 *
 * The runner makes its key pair here and sends only a CSR, with the one-time
 * token, to the gateway's tunnel listener (POST /v1/enroll over TLS without a
 * client certificate). The gateway is authenticated either by a CA file or,
 * on first contact, by the SHA-256 fingerprint of the CA in its certificate
 * chain. What comes back (the certificate naming this runner and the CA to
 * trust from now on) is checked before anything is written. */
#include "runner/runner.h"

#include "common/args.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/http_fetch.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/x509.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define ENROLL_TOKEN_PREFIX "fyt"
#define ENROLL_MAX_RESPONSE (256 * 1024)
#define ENROLL_TIMEOUT_MS   30000
#define ENROLL_CSR_SUBJECT  "CN=ferry-runner,O=ferry runner"

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(
        f, "Usage: ferry-runner enroll --gateway HOST:PORT --token TOKEN\n"
           "                           (--ca-fingerprint sha256:HEX | --ca FILE) --data-dir DIR\n\n"
           "Enrolls this machine as a runner: makes a key pair here (the private key never\n"
           "leaves this machine), sends a certificate request with the one-time TOKEN (from\n"
           "'ferry tokens create') to the gateway's tunnel listener, and stores the signed\n"
           "certificate that names the runner in DIR (runner.key 0600, runner.crt, ca.crt,\n"
           "runner.json). The gateway is authenticated by the fingerprint of its CA (printed\n"
           "by 'ferry-gateway init' and 'ferry tokens create') or by a CA file.\n\n"
           "Options:\n");
    fy_args_usage(f, opts);
}

static void fmt_time(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* What to tell the user when the call itself failed. */
static const char *transport_hint(int status)
{
    switch (status) {
    case FY_ECERT:
        return "the gateway's certificate was rejected: it does not chain to the pinned CA "
               "(--ca-fingerprint) or to --ca, or it is not valid for that host name";
    case FY_ECONNREFUSED:
        return "connection refused (is ferry-gateway running, and is this its tunnel "
               "listener?)";
    case FY_ETIMEDOUT:
        return "timed out";
    case FY_EUNREACH:
        return "host or network unreachable";
    case FY_ETLS:
        return "TLS handshake failed (is this the gateway's tunnel listener?)";
    default:
        return fy_strerror(status);
    }
}

static int write_one(const char *dir, const char *name, const char *data, mode_t mode)
{
    char path[4096];
    int rc = fy_path_join(path, sizeof path, dir, name);
    if (rc == 0) {
        rc = fy_file_write_atomic(path, data, strlen(data), mode);
    }
    if (rc) {
        fprintf(stderr, "ferry-runner enroll: cannot write %s: %s\n", path, fy_strerror(rc));
    }
    return rc;
}

/* What the command line asked for. */
typedef struct {
    const char *gateway, *token, *fp_text, *ca_file, *data_dir, *name_check;
    int help, force;
    uint8_t pin[32]; /* --ca-fingerprint, decoded */
    char host[256];  /* --gateway, split */
    int port;
} enroll_args;

/* What an enrollment makes and receives on the way; enroll_state_free
 * releases it all. */
typedef struct {
    char *key_pem, *csr_pem;      /* the key pair made here */
    fy_tls_config *tls;           /* authenticates the gateway */
    json_t *resp;                 /* the gateway's answer */
    const char *name, *cert, *ca; /* in resp */
    char *ca_text;                /* the CA to trust from now on */
    fy_x509_info ci, cai;         /* of cert and ca_text */
} enroll_state;

#define ENROLL_OPTIONS(a)                                                                        \
    {                                                                                            \
        {"gateway", FY_OPT_STR, &(a)->gateway, "HOST:PORT",                                      \
         "the gateway's tunnel listener (required)"},                                            \
            {"token", FY_OPT_STR, &(a)->token, "TOKEN", "one-time enrollment token (required)"}, \
            {"ca-fingerprint", FY_OPT_STR, &(a)->fp_text, "sha256:HEX",                          \
             "trust the gateway whose certificate chain holds a CA with this SHA-256 "           \
             "fingerprint"},                                                                     \
            {"ca", FY_OPT_STR, &(a)->ca_file, "FILE",                                            \
             "trust the gateway's certificate chain to this CA"},                                \
            {"data-dir", FY_OPT_STR, &(a)->data_dir, "DIR",                                      \
             "runner directory to write (required)"},                                            \
            {"name-check", FY_OPT_STR, &(a)->name_check, "NAME",                                 \
             "refuse unless the gateway enrolls this runner under NAME"},                        \
            {"force", FY_OPT_FLAG, &(a)->force, NULL, "replace an enrollment already in DIR"},   \
            {"help", FY_OPT_FLAG, &(a)->help, NULL, "show this help"}, {0},                      \
    }

/* Reads the command line into A. Returns -1 to go on, or the exit status
 * (after --help or a usage error). */
static int enroll_parse(enroll_args *a, const fy_opt *opts, int argc, char **argv)
{
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        return 2;
    }
    if (a->help) {
        usage(stdout, opts);
        return 0;
    }
    if (npos) {
        fprintf(stderr, "ferry-runner enroll: unexpected argument (see --help)\n");
        return 2;
    }
    return -1;
}

/* What is wrong with A's values, or NULL (then A->host, port and pin are set). */
static const char *enroll_problem(enroll_args *a)
{
    if (!a->gateway || !a->token || !a->data_dir) {
        return "--gateway, --token and --data-dir are required (see --help)";
    }
    if (!a->fp_text == !a->ca_file) {
        return "give exactly one of --ca-fingerprint sha256:HEX and --ca FILE";
    }
    if (fy_rn_hostport_parse(a->gateway, a->host, sizeof a->host, &a->port)) {
        return "--gateway must be HOST:PORT (an IPv6 address in brackets: [::1]:7443)";
    }
    if (a->fp_text && fy_rn_fingerprint_parse(a->fp_text, a->pin)) {
        return "--ca-fingerprint must be sha256: followed by 64 hex digits";
    }
    if (!fy_secret_well_formed(ENROLL_TOKEN_PREFIX, a->token, strlen(a->token))) {
        return "--token does not look like an enrollment token (fyt_ and 43 characters; "
               "from 'ferry tokens create')";
    }
    return NULL;
}

/* Refuses bad values (2) and a data dir that holds an enrollment already
 * (1, unless --force). Returns -1 to go on. */
static int enroll_validate(enroll_args *a)
{
    const char *problem = enroll_problem(a);
    if (problem) {
        fprintf(stderr, "ferry-runner enroll: %s\n", problem);
        return 2;
    }
    char path[4096], err[512];
    if (fy_path_join(path, sizeof path, a->data_dir, FY_RN_CONFIG) == 0 && fy_file_exists(path) &&
        !a->force) {
        fy_rn_enrollment old;
        const char *who =
            fy_rn_enrollment_load(a->data_dir, &old, err, sizeof err) ? "?" : old.name;
        fprintf(stderr,
                "ferry-runner enroll: %s already holds the enrollment of runner \"%s\"; use "
                "another --data-dir, or --force to replace it\n",
                a->data_dir, who);
        return 1;
    }
    return -1;
}

/* Makes the key pair and the TLS config that authenticates the gateway.
 * Returns 0, or the exit status after saying why. */
static int enroll_prepare(const enroll_args *a, enroll_state *st)
{
    char err[512];
    /* The key pair is made here; only the CSR leaves the machine. */
    if (fy_x509_csr_create(ENROLL_CSR_SUBJECT, NULL, &st->key_pem, &st->csr_pem, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: cannot make a key pair: %s\n", err);
        return 1;
    }
    static const char *const alpn[] = {"http/1.1", NULL};
    fy_tls_options to = {
        .ca_file = a->ca_file,
        .pin_ca_sha256 = a->fp_text ? a->pin : NULL,
        .alpn = (const char **)alpn,
    };
    if (fy_tls_config_new(&to, &st->tls, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        return 2;
    }
    return 0;
}

/* POSTs the token and the CSR to the gateway and keeps its answer in
 * ST->resp. Returns 0 on HTTP 200, or 1 after saying why not. */
static int enroll_post(const enroll_args *a, enroll_state *st, fy_http_fetch_result *fr)
{
    char err[512];
    json_t *body = json_pack("{s:s, s:s}", "token", a->token, "csr", st->csr_pem);
    char *req_body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!req_body) {
        fprintf(stderr, "ferry-runner enroll: out of memory\n");
        return 1;
    }
    char url[400];
    int v6 = strchr(a->host, ':') != NULL;
    snprintf(url, sizeof url, "https://%s%s%s:%d/v1/enroll", v6 ? "[" : "", a->host, v6 ? "]" : "",
             a->port);
    static const fy_http_header hdrs[] = {
        {"Content-Type", "application/json", 0, 0},
        {"Accept", "application/json", 0, 0},
    };
    fy_http_fetch_options call = {
        .method = "POST",
        .url = url,
        .headers = hdrs,
        .nheaders = 2,
        .body = req_body,
        .body_len = strlen(req_body),
        .tls = st->tls,
        .timeout_ms = ENROLL_TIMEOUT_MS,
        .max_body = ENROLL_MAX_RESPONSE,
    };
    int rc = fy_http_fetch(&call, fr, err, sizeof err);
    /* The request body held the one-time token. */
    fy_secure_zero(req_body, strlen(req_body));
    free(req_body);
    if (rc) {
        if (fr->stage == FY_HTTP_FETCH_SETUP) {
            fprintf(stderr, "ferry-runner enroll: %s\n", rc == FY_EUV ? err : "out of memory");
        } else {
            fprintf(stderr, "ferry-runner enroll: cannot %s %s: %s\n",
                    fr->stage == FY_HTTP_FETCH_START ? "reach" : "enroll with", a->gateway,
                    transport_hint(rc));
        }
        return 1;
    }
    json_error_t je;
    st->resp = json_loadb(fr->body.data ? fr->body.data : "", fr->body.len, 0, &je);
    if (fr->status != 200) {
        json_t *e = json_object_get(st->resp, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        fprintf(stderr,
                "ferry-runner enroll: the gateway refused the enrollment: %s (HTTP %d%s%s)\n",
                msg ? msg : "no reason given", fr->status, code ? ", " : "", code ? code : "");
        return 1;
    }
    return 0;
}

/* Sends the request: ST->resp holds the gateway's answer. Returns 0 or 1. */
static int enroll_request(const enroll_args *a, enroll_state *st)
{
    fy_http_fetch_result fr = {0};
    int status = enroll_post(a, st, &fr);
    fy_buf_free(&fr.body);
    return status;
}

/* Settles the CA to trust from now on (ST->ca_text) and checks it, and that
 * the certificate fits this runner's key. Returns 0, or 1 after saying why. */
static int enroll_check_ca(const enroll_args *a, enroll_state *st)
{
    char err[512];
    int rc;
    if (a->ca_file) {
        /* Keep trusting exactly what authenticated this connection. */
        size_t n;
        if ((rc = fy_file_read(a->ca_file, FY_TLS_PEM_MAX_BYTES, &st->ca_text, &n))) {
            fprintf(stderr, "ferry-runner enroll: cannot read %s: %s\n", a->ca_file,
                    fy_strerror(rc));
            return 1;
        }
    } else if (!(st->ca_text = strdup(st->ca))) {
        return 1;
    }
    if (fy_x509_info_get(st->ca_text, strlen(st->ca_text), &st->cai, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the gateway CA is unusable: %s\n", err);
        return 1;
    }
    if (a->fp_text && !fy_ct_equal(st->cai.fingerprint, a->pin, 32)) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway sent CA %s, which is not the pinned %s; "
                "nothing was saved\n",
                st->cai.fingerprint_str, a->fp_text);
        return 1;
    }
    /* The certificate must be for our key (the TLS layer checks the pair). */
    fy_tls_config *check = NULL;
    fy_tls_options chk = {.cert_pem = st->cert, .key_pem = st->key_pem, .ca_pem = st->ca_text};
    rc = fy_tls_config_new(&chk, &check, err, sizeof err);
    fy_tls_config_free(check);
    if (rc) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate the gateway sent does not fit this "
                "runner's key: %s; nothing was saved\n",
                err);
        return 1;
    }
    return 0;
}

/* Checks the answer's certificate and CA (into ST) before anything is
 * written. Returns 0, or 1 after saying why not. */
static int enroll_check(const enroll_args *a, enroll_state *st)
{
    char err[512];
    const char *name = st->name = json_string_value(json_object_get(st->resp, "runner"));
    const char *cert = st->cert = json_string_value(json_object_get(st->resp, "certificate"));
    const char *ca = st->ca = json_string_value(json_object_get(st->resp, "ca"));
    if (!name || !cert || !ca) {
        fprintf(stderr, "ferry-runner enroll: the gateway's answer lacks \"runner\", "
                        "\"certificate\" or \"ca\"; nothing was saved\n");
        return 1;
    }
    if (fy_x509_info_get(cert, strlen(cert), &st->ci, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the certificate the gateway sent is unusable: %s\n",
                err);
        return 1;
    }
    if (strcmp(st->ci.cn, name) != 0 || strlen(name) >= FY_RN_NAME_MAX) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate names \"%s\", not runner \"%s\"; nothing "
                "was saved\n",
                st->ci.cn, name);
        return 1;
    }
    if (a->name_check && strcmp(name, a->name_check) != 0) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway enrolled this runner as \"%s\", not \"%s\" "
                "(--name-check); nothing was saved. The token is now used: ask for a new one "
                "bound to the right name.\n",
                name, a->name_check);
        return 1;
    }
    return enroll_check_ca(a, st);
}
/* Writes the key, the certificate, the CA and runner.json into the data
 * dir, then says what was done. Returns 0, or 1 after saying why not. */
static int enroll_save(const enroll_args *a, const enroll_state *st)
{
    const char *dir = a->data_dir;
    int rc;
    if ((rc = fy_mkdir_p(dir, 0700)) || chmod(dir, 0700)) {
        fprintf(stderr, "ferry-runner enroll: cannot create %s: %s\n", dir,
                fy_strerror(rc ? rc : FY_EPERM));
        return 1;
    }
    fy_rn_enrollment e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", st->name);
    snprintf(e.gateways[0], sizeof e.gateways[0], "%s", a->gateway);
    e.ngateways = 1;
    snprintf(e.ca_fingerprint, sizeof e.ca_fingerprint, "%s", st->cai.fingerprint_str);
    /* runner.json last: its presence marks a complete enrollment. */
    if (write_one(dir, FY_RN_KEY, st->key_pem, 0600) ||
        write_one(dir, FY_RN_CERT, st->cert, 0644) || write_one(dir, FY_RN_CA, st->ca_text, 0644)) {
        return 1;
    }
    if ((rc = fy_rn_enrollment_save(dir, &e))) {
        fprintf(stderr, "ferry-runner enroll: cannot write %s/%s: %s\n", dir, FY_RN_CONFIG,
                fy_strerror(rc));
        return 1;
    }
    char until[32];
    fmt_time(st->ci.not_after, until, sizeof until);
    printf("enrolled runner \"%s\" with gateway %s\n", st->name, a->gateway);
    printf("  certificate  %s/%s  %s, valid until %s\n", dir, FY_RN_CERT, st->ci.fingerprint_str,
           until);
    printf("  private key  %s/%s  made on this machine (mode 0600); it was never sent\n", dir,
           FY_RN_KEY);
    printf("  gateway CA   %s/%s  %s\n", dir, FY_RN_CA, st->cai.fingerprint_str);
    printf("next: ferry-runner run --data-dir %s --upstream http://127.0.0.1:PORT\n", dir);
    fy_log_event(FY_LOG_DEBUG, "enroll", "enrolled",
                 json_pack("{s:s, s:s, s:s}", "runner", st->name, "gateway", a->gateway,
                           "fingerprint", st->ci.fingerprint_str));
    return 0;
}

static void enroll_state_free(enroll_state *st)
{
    fy_tls_config_free(st->tls);
    fy_x509_key_pem_free(st->key_pem);
    free(st->csr_pem);
    free(st->ca_text);
    json_decref(st->resp);
}

/* Enrolls: key pair, request, checks, files. Returns the exit status. */
static int enroll_start(const enroll_args *a)
{
    enroll_state st = {0};
    int status = enroll_prepare(a, &st);
    if (!status) {
        status = enroll_request(a, &st);
    }
    if (!status) {
        status = enroll_check(a, &st);
    }
    if (!status) {
        status = enroll_save(a, &st);
    }
    enroll_state_free(&st);
    return status;
}

int fy_rn_enroll_main(int argc, char **argv)
{
    enroll_args a = {0};
    const fy_opt opts[] = ENROLL_OPTIONS(&a);
    int status = enroll_parse(&a, opts, argc, argv);
    if (status < 0) {
        status = enroll_validate(&a);
    }
    if (status < 0) {
        status = enroll_start(&a);
    }
    fy_secure_zero(a.pin, sizeof a.pin);
    return status;
}
