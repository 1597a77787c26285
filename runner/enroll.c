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
#include "common/http_client.h"
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

/* What the command line asked for (parse), checked (validate). */
typedef struct {
    const char *gateway, *token, *fp_text, *ca_file, *data_dir, *name_check;
    int help, force;
    char host[256];
    int port;
    uint8_t pin[32]; /* the CA fingerprint, with --ca-fingerprint */
} enroll_opts;

/* What the gateway answered, checked. */
typedef struct {
    json_t *resp;
    const char *name, *cert; /* into RESP */
    char *ca_text;           /* the CA to trust from now on */
    fy_x509_info ci, cai;
} enroll_answer;

/* Returns -1 to go on, or the exit status (0 after --help, 2 on a bad option). */
static int enroll_parse(int argc, char **argv, enroll_opts *o)
{
    const fy_opt opts[] = {
        {"gateway", FY_OPT_STR, &o->gateway, "HOST:PORT",
         "the gateway's tunnel listener (required)"},
        {"token", FY_OPT_STR, &o->token, "TOKEN", "one-time enrollment token (required)"},
        {"ca-fingerprint", FY_OPT_STR, &o->fp_text, "sha256:HEX",
         "trust the gateway whose certificate chain holds a CA with this SHA-256 fingerprint"},
        {"ca", FY_OPT_STR, &o->ca_file, "FILE", "trust the gateway's certificate chain to this CA"},
        {"data-dir", FY_OPT_STR, &o->data_dir, "DIR", "runner directory to write (required)"},
        {"name-check", FY_OPT_STR, &o->name_check, "NAME",
         "refuse unless the gateway enrolls this runner under NAME"},
        {"force", FY_OPT_FLAG, &o->force, NULL, "replace an enrollment already in DIR"},
        {"help", FY_OPT_FLAG, &o->help, NULL, "show this help"},
        {0},
    };
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        return 2;
    }
    if (o->help) {
        usage(stdout, opts);
        return 0;
    }
    if (npos) {
        fprintf(stderr, "ferry-runner enroll: unexpected argument (see --help)\n");
        return 2;
    }
    return -1;
}

/* Returns 0, 2 on a usage problem, or 1 when DATA_DIR is enrolled already. */
static int enroll_validate(enroll_opts *o)
{
    const char *problem = NULL;
    if (!o->gateway || !o->token || !o->data_dir) {
        problem = "--gateway, --token and --data-dir are required (see --help)";
    } else if (!o->fp_text == !o->ca_file) {
        problem = "give exactly one of --ca-fingerprint sha256:HEX and --ca FILE";
    } else if (fy_rn_hostport_parse(o->gateway, o->host, sizeof o->host, &o->port)) {
        problem = "--gateway must be HOST:PORT (an IPv6 address in brackets: [::1]:7443)";
    } else if (o->fp_text && fy_rn_fingerprint_parse(o->fp_text, o->pin)) {
        problem = "--ca-fingerprint must be sha256: followed by 64 hex digits";
    } else if (!fy_secret_well_formed(ENROLL_TOKEN_PREFIX, o->token, strlen(o->token))) {
        problem = "--token does not look like an enrollment token (fyt_ and 43 characters; "
                  "from 'ferry tokens create')";
    }
    if (problem) {
        fprintf(stderr, "ferry-runner enroll: %s\n", problem);
        return 2;
    }
    char path[4096], err[512];
    if (fy_path_join(path, sizeof path, o->data_dir, FY_RN_CONFIG) == 0 && fy_file_exists(path) &&
        !o->force) {
        fy_rn_enrollment old;
        const char *who =
            fy_rn_enrollment_load(o->data_dir, &old, err, sizeof err) ? "?" : old.name;
        fprintf(stderr,
                "ferry-runner enroll: %s already holds the enrollment of runner \"%s\"; use "
                "another --data-dir, or --force to replace it\n",
                o->data_dir, who);
        return 1;
    }
    return 0;
}

/* POSTs the token and CSR to the gateway over TLS. Returns 0 with the JSON
 * answer of an HTTP 200 in *RESP, or the exit status (the reason printed). */
static int enroll_request(const enroll_opts *o, const char *csr_pem, json_t **resp)
{
    static const char *const alpn[] = {"http/1.1", NULL};
    fy_tls_options to = {
        .ca_file = o->ca_file,
        .pin_ca_sha256 = o->fp_text ? o->pin : NULL,
        .alpn = (const char **)alpn,
    };
    fy_tls_config *tls = NULL;
    char err[512];
    if (fy_tls_config_new(&to, &tls, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        return 2;
    }
    json_t *body = json_pack("{s:s, s:s}", "token", o->token, "csr", csr_pem);
    char *req_body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!req_body) {
        fprintf(stderr, "ferry-runner enroll: out of memory\n");
        fy_tls_config_free(tls);
        return 1;
    }
    char url[400];
    int v6 = strchr(o->host, ':') != NULL;
    snprintf(url, sizeof url, "https://%s%s%s:%d/v1/enroll", v6 ? "[" : "", o->host, v6 ? "]" : "",
             o->port);
    static const fy_http_header hdrs[] = {
        {"Content-Type", "application/json", 0, 0},
        {"Accept", "application/json", 0, 0},
    };
    fy_http_fetch_options fo = {
        .tls = tls,
        .timeout_ms = ENROLL_TIMEOUT_MS,
        .method = "POST",
        .url = url,
        .headers = hdrs,
        .nheaders = 2,
        .body = req_body,
        .body_len = strlen(req_body),
        .max_response = ENROLL_MAX_RESPONSE,
    };
    fy_http_fetch_result fr;
    int rc = fy_http_fetch(&fo, &fr), status = 1;
    fy_secure_zero(req_body, strlen(req_body)); /* it held the one-time token */
    free(req_body);
    fy_tls_config_free(tls);
    if (rc && fr.stage == FY_FETCH_SETUP) {
        fprintf(stderr, "ferry-runner enroll: %s\n",
                rc == FY_EUV ? "cannot create an event loop" : "out of memory");
    } else if (rc) {
        fprintf(stderr, "ferry-runner enroll: cannot %s %s: %s\n",
                fr.stage == FY_FETCH_START ? "reach" : "enroll with", o->gateway,
                transport_hint(rc));
    } else {
        json_error_t je;
        *resp = json_loadb(fr.body.data ? fr.body.data : "", fr.body.len, 0, &je);
        status = 0;
        if (fr.status != 200) {
            json_t *e = json_object_get(*resp, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            const char *code = json_string_value(json_object_get(e, "code"));
            fprintf(stderr,
                    "ferry-runner enroll: the gateway refused the enrollment: %s (HTTP %d%s%s)\n",
                    msg ? msg : "no reason given", fr.status, code ? ", " : "", code ? code : "");
            status = 1;
        }
    }
    fy_buf_free(&fr.body);
    return status;
}

/* Checks everything in the answer before anything is written: the
 * certificate names the runner, --name-check, the CA (pinned or the file's),
 * and that the certificate fits KEY_PEM. Returns 0 or 1 (the reason printed). */
static int enroll_check(const enroll_opts *o, const char *key_pem, enroll_answer *a)
{
    char err[512];
    int rc;
    a->name = json_string_value(json_object_get(a->resp, "runner"));
    a->cert = json_string_value(json_object_get(a->resp, "certificate"));
    const char *ca = json_string_value(json_object_get(a->resp, "ca"));
    if (!a->name || !a->cert || !ca) {
        fprintf(stderr, "ferry-runner enroll: the gateway's answer lacks \"runner\", "
                        "\"certificate\" or \"ca\"; nothing was saved\n");
        return 1;
    }
    if (fy_x509_info_get(a->cert, strlen(a->cert), &a->ci, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the certificate the gateway sent is unusable: %s\n",
                err);
        return 1;
    }
    if (strcmp(a->ci.cn, a->name) != 0 || strlen(a->name) >= FY_RN_NAME_MAX) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate names \"%s\", not runner \"%s\"; nothing "
                "was saved\n",
                a->ci.cn, a->name);
        return 1;
    }
    if (o->name_check && strcmp(a->name, o->name_check) != 0) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway enrolled this runner as \"%s\", not \"%s\" "
                "(--name-check); nothing was saved. The token is now used: ask for a new one "
                "bound to the right name.\n",
                a->name, o->name_check);
        return 1;
    }
    if (o->ca_file) {
        /* Keep trusting exactly what authenticated this connection. */
        size_t n;
        if ((rc = fy_file_read(o->ca_file, FY_TLS_PEM_MAX_BYTES, &a->ca_text, &n))) {
            fprintf(stderr, "ferry-runner enroll: cannot read %s: %s\n", o->ca_file,
                    fy_strerror(rc));
            return 1;
        }
    } else if (!(a->ca_text = strdup(ca))) {
        return 1;
    }
    if (fy_x509_info_get(a->ca_text, strlen(a->ca_text), &a->cai, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the gateway CA is unusable: %s\n", err);
        return 1;
    }
    if (o->fp_text && !fy_ct_equal(a->cai.fingerprint, o->pin, 32)) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway sent CA %s, which is not the pinned %s; "
                "nothing was saved\n",
                a->cai.fingerprint_str, o->fp_text);
        return 1;
    }
    /* The certificate must be for our key (the TLS layer checks the pair). */
    fy_tls_options chk = {.cert_pem = a->cert, .key_pem = key_pem, .ca_pem = a->ca_text};
    fy_tls_config *check = NULL;
    if (fy_tls_config_new(&chk, &check, err, sizeof err)) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate the gateway sent does not fit this "
                "runner's key: %s; nothing was saved\n",
                err);
        return 1;
    }
    fy_tls_config_free(check);
    return 0;
}

/* Writes the key, certificate, CA and (last: its presence marks a complete
 * enrollment) runner.json into DATA_DIR, and says what was done. */
static int enroll_save(const enroll_opts *o, const char *key_pem, const enroll_answer *a)
{
    int rc;
    if ((rc = fy_mkdir_p(o->data_dir, 0700)) || chmod(o->data_dir, 0700)) {
        fprintf(stderr, "ferry-runner enroll: cannot create %s: %s\n", o->data_dir,
                fy_strerror(rc ? rc : FY_EPERM));
        return 1;
    }
    fy_rn_enrollment e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", a->name);
    snprintf(e.gateways[0], sizeof e.gateways[0], "%s", o->gateway);
    e.ngateways = 1;
    snprintf(e.ca_fingerprint, sizeof e.ca_fingerprint, "%s", a->cai.fingerprint_str);
    if (write_one(o->data_dir, FY_RN_KEY, key_pem, 0600) ||
        write_one(o->data_dir, FY_RN_CERT, a->cert, 0644) ||
        write_one(o->data_dir, FY_RN_CA, a->ca_text, 0644)) {
        return 1;
    }
    if ((rc = fy_rn_enrollment_save(o->data_dir, &e))) {
        fprintf(stderr, "ferry-runner enroll: cannot write %s/%s: %s\n", o->data_dir, FY_RN_CONFIG,
                fy_strerror(rc));
        return 1;
    }
    char until[32];
    fmt_time(a->ci.not_after, until, sizeof until);
    printf("enrolled runner \"%s\" with gateway %s\n", a->name, o->gateway);
    printf("  certificate  %s/%s  %s, valid until %s\n", o->data_dir, FY_RN_CERT,
           a->ci.fingerprint_str, until);
    printf("  private key  %s/%s  made on this machine (mode 0600); it was never sent\n",
           o->data_dir, FY_RN_KEY);
    printf("  gateway CA   %s/%s  %s\n", o->data_dir, FY_RN_CA, a->cai.fingerprint_str);
    printf("next: ferry-runner run --data-dir %s --upstream http://127.0.0.1:PORT\n", o->data_dir);
    fy_log_event(FY_LOG_DEBUG, "enroll", "enrolled",
                 json_pack("{s:s, s:s, s:s}", "runner", a->name, "gateway", o->gateway,
                           "fingerprint", a->ci.fingerprint_str));
    return 0;
}

/* The key pair is made here; only the CSR leaves the machine. */
static int enroll_start(const enroll_opts *o)
{
    char *key_pem = NULL, *csr_pem = NULL, err[512];
    enroll_answer a = {0};
    int status = 1;
    if (fy_x509_csr_create(ENROLL_CSR_SUBJECT, NULL, &key_pem, &csr_pem, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: cannot make a key pair: %s\n", err);
    } else if ((status = enroll_request(o, csr_pem, &a.resp)) == 0 &&
               (status = enroll_check(o, key_pem, &a)) == 0) {
        status = enroll_save(o, key_pem, &a);
    }
    fy_x509_key_pem_free(key_pem);
    free(csr_pem);
    free(a.ca_text);
    json_decref(a.resp);
    return status;
}

int fy_rn_enroll_main(int argc, char **argv)
{
    enroll_opts o = {0};
    int status = enroll_parse(argc, argv, &o);
    if (status < 0 && (status = enroll_validate(&o)) == 0) {
        status = enroll_start(&o);
    }
    fy_secure_zero(o.pin, sizeof o.pin);
    return status;
}
