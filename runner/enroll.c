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

int fy_rn_enroll_main(int argc, char **argv)
{
    const char *gateway = NULL, *token = NULL, *fp_text = NULL, *ca_file = NULL;
    const char *data_dir = NULL, *name_check = NULL;
    int help = 0, force = 0;
    const fy_opt opts[] = {
        {"gateway", FY_OPT_STR, &gateway, "HOST:PORT", "the gateway's tunnel listener (required)"},
        {"token", FY_OPT_STR, &token, "TOKEN", "one-time enrollment token (required)"},
        {"ca-fingerprint", FY_OPT_STR, &fp_text, "sha256:HEX",
         "trust the gateway whose certificate chain holds a CA with this SHA-256 fingerprint"},
        {"ca", FY_OPT_STR, &ca_file, "FILE", "trust the gateway's certificate chain to this CA"},
        {"data-dir", FY_OPT_STR, &data_dir, "DIR", "runner directory to write (required)"},
        {"name-check", FY_OPT_STR, &name_check, "NAME",
         "refuse unless the gateway enrolls this runner under NAME"},
        {"force", FY_OPT_FLAG, &force, NULL, "replace an enrollment already in DIR"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0, status = 1, rc;
    uint8_t pin[32];
    char host[256];
    int port = 0;
    char *key_pem = NULL, *csr_pem = NULL, *ca_text = NULL, *req_body = NULL;
    fy_tls_config *tls = NULL, *check = NULL;
    json_t *resp = NULL;
    fy_http_fetch_result fr = {0};

    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        return 2;
    }
    if (help) {
        usage(stdout, opts);
        return 0;
    }
    const char *problem = NULL;
    if (npos) {
        problem = "unexpected argument (see --help)";
    } else if (!gateway || !token || !data_dir) {
        problem = "--gateway, --token and --data-dir are required (see --help)";
    } else if (!fp_text == !ca_file) {
        problem = "give exactly one of --ca-fingerprint sha256:HEX and --ca FILE";
    } else if (fy_rn_hostport_parse(gateway, host, sizeof host, &port)) {
        problem = "--gateway must be HOST:PORT (an IPv6 address in brackets: [::1]:7443)";
    } else if (fp_text && fy_rn_fingerprint_parse(fp_text, pin)) {
        problem = "--ca-fingerprint must be sha256: followed by 64 hex digits";
    } else if (!fy_secret_well_formed(ENROLL_TOKEN_PREFIX, token, strlen(token))) {
        problem = "--token does not look like an enrollment token (fyt_ and 43 characters; "
                  "from 'ferry tokens create')";
    }
    if (problem) {
        fprintf(stderr, "ferry-runner enroll: %s\n", problem);
        return 2;
    }
    char path[4096];
    if (fy_path_join(path, sizeof path, data_dir, FY_RN_CONFIG) == 0 && fy_file_exists(path) &&
        !force) {
        fy_rn_enrollment old;
        const char *who = fy_rn_enrollment_load(data_dir, &old, err, sizeof err) ? "?" : old.name;
        fprintf(stderr,
                "ferry-runner enroll: %s already holds the enrollment of runner \"%s\"; use "
                "another --data-dir, or --force to replace it\n",
                data_dir, who);
        return 1;
    }

    /* The key pair is made here; only the CSR leaves the machine. */
    if (fy_x509_csr_create(ENROLL_CSR_SUBJECT, NULL, &key_pem, &csr_pem, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: cannot make a key pair: %s\n", err);
        goto out;
    }
    static const char *const alpn[] = {"http/1.1", NULL};
    fy_tls_options to = {
        .ca_file = ca_file,
        .pin_ca_sha256 = fp_text ? pin : NULL,
        .alpn = (const char **)alpn,
    };
    if ((rc = fy_tls_config_new(&to, &tls, err, sizeof err))) {
        fprintf(stderr, "ferry-runner enroll: %s\n", err);
        status = 2;
        goto out;
    }
    json_t *body = json_pack("{s:s, s:s}", "token", token, "csr", csr_pem);
    req_body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!req_body) {
        fprintf(stderr, "ferry-runner enroll: out of memory\n");
        goto out;
    }
    char url[400];
    int v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof url, "https://%s%s%s:%d/v1/enroll", v6 ? "[" : "", host, v6 ? "]" : "",
             port);
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
        .tls = tls,
        .timeout_ms = ENROLL_TIMEOUT_MS,
        .max_body = ENROLL_MAX_RESPONSE,
    };
    if ((rc = fy_http_fetch(&call, &fr, err, sizeof err))) {
        if (fr.stage == FY_HTTP_FETCH_SETUP) {
            fprintf(stderr, "ferry-runner enroll: %s\n", rc == FY_EUV ? err : "out of memory");
        } else {
            fprintf(stderr, "ferry-runner enroll: cannot %s %s: %s\n",
                    fr.stage == FY_HTTP_FETCH_START ? "reach" : "enroll with", gateway,
                    transport_hint(rc));
        }
        goto out;
    }
    json_error_t je;
    resp = json_loadb(fr.body.data ? fr.body.data : "", fr.body.len, 0, &je);
    if (fr.status != 200) {
        json_t *e = json_object_get(resp, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        fprintf(stderr,
                "ferry-runner enroll: the gateway refused the enrollment: %s (HTTP %d%s%s)\n",
                msg ? msg : "no reason given", fr.status, code ? ", " : "", code ? code : "");
        goto out;
    }
    const char *name = json_string_value(json_object_get(resp, "runner"));
    const char *cert = json_string_value(json_object_get(resp, "certificate"));
    const char *ca = json_string_value(json_object_get(resp, "ca"));
    if (!name || !cert || !ca) {
        fprintf(stderr, "ferry-runner enroll: the gateway's answer lacks \"runner\", "
                        "\"certificate\" or \"ca\"; nothing was saved\n");
        goto out;
    }

    /* Check everything before writing anything. */
    fy_x509_info ci, cai;
    if (fy_x509_info_get(cert, strlen(cert), &ci, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the certificate the gateway sent is unusable: %s\n",
                err);
        goto out;
    }
    if (strcmp(ci.cn, name) != 0 || strlen(name) >= FY_RN_NAME_MAX) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate names \"%s\", not runner \"%s\"; nothing "
                "was saved\n",
                ci.cn, name);
        goto out;
    }
    if (name_check && strcmp(name, name_check) != 0) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway enrolled this runner as \"%s\", not \"%s\" "
                "(--name-check); nothing was saved. The token is now used: ask for a new one "
                "bound to the right name.\n",
                name, name_check);
        goto out;
    }
    if (ca_file) {
        /* Keep trusting exactly what authenticated this connection. */
        size_t n;
        if ((rc = fy_file_read(ca_file, FY_TLS_PEM_MAX_BYTES, &ca_text, &n))) {
            fprintf(stderr, "ferry-runner enroll: cannot read %s: %s\n", ca_file, fy_strerror(rc));
            goto out;
        }
    } else {
        ca_text = strdup(ca);
        if (!ca_text) {
            goto out;
        }
    }
    if (fy_x509_info_get(ca_text, strlen(ca_text), &cai, err, sizeof err)) {
        fprintf(stderr, "ferry-runner enroll: the gateway CA is unusable: %s\n", err);
        goto out;
    }
    if (fp_text && !fy_ct_equal(cai.fingerprint, pin, 32)) {
        fprintf(stderr,
                "ferry-runner enroll: the gateway sent CA %s, which is not the pinned %s; "
                "nothing was saved\n",
                cai.fingerprint_str, fp_text);
        goto out;
    }
    /* The certificate must be for our key (the TLS layer checks the pair). */
    fy_tls_options chk = {.cert_pem = cert, .key_pem = key_pem, .ca_pem = ca_text};
    if (fy_tls_config_new(&chk, &check, err, sizeof err)) {
        fprintf(stderr,
                "ferry-runner enroll: the certificate the gateway sent does not fit this "
                "runner's key: %s; nothing was saved\n",
                err);
        goto out;
    }

    if ((rc = fy_mkdir_p(data_dir, 0700)) || chmod(data_dir, 0700)) {
        fprintf(stderr, "ferry-runner enroll: cannot create %s: %s\n", data_dir,
                fy_strerror(rc ? rc : FY_EPERM));
        goto out;
    }
    fy_rn_enrollment e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.gateways[0], sizeof e.gateways[0], "%s", gateway);
    e.ngateways = 1;
    snprintf(e.ca_fingerprint, sizeof e.ca_fingerprint, "%s", cai.fingerprint_str);
    /* runner.json last: its presence marks a complete enrollment. */
    if (write_one(data_dir, FY_RN_KEY, key_pem, 0600) ||
        write_one(data_dir, FY_RN_CERT, cert, 0644) ||
        write_one(data_dir, FY_RN_CA, ca_text, 0644)) {
        goto out;
    }
    if ((rc = fy_rn_enrollment_save(data_dir, &e))) {
        fprintf(stderr, "ferry-runner enroll: cannot write %s/%s: %s\n", data_dir, FY_RN_CONFIG,
                fy_strerror(rc));
        goto out;
    }
    char until[32];
    fmt_time(ci.not_after, until, sizeof until);
    printf("enrolled runner \"%s\" with gateway %s\n", name, gateway);
    printf("  certificate  %s/%s  %s, valid until %s\n", data_dir, FY_RN_CERT, ci.fingerprint_str,
           until);
    printf("  private key  %s/%s  made on this machine (mode 0600); it was never sent\n", data_dir,
           FY_RN_KEY);
    printf("  gateway CA   %s/%s  %s\n", data_dir, FY_RN_CA, cai.fingerprint_str);
    printf("next: ferry-runner run --data-dir %s --upstream http://127.0.0.1:PORT\n", data_dir);
    fy_log_event(FY_LOG_DEBUG, "enroll", "enrolled",
                 json_pack("{s:s, s:s, s:s}", "runner", name, "gateway", gateway, "fingerprint",
                           ci.fingerprint_str));
    status = 0;
out:
    fy_tls_config_free(tls);
    fy_tls_config_free(check);
    fy_x509_key_pem_free(key_pem);
    free(csr_pem);
    free(ca_text);
    if (req_body) {
        /* The request body held the one-time token. */
        fy_secure_zero(req_body, strlen(req_body));
        free(req_body);
    }
    json_decref(resp);
    fy_buf_free(&fr.body);
    fy_secure_zero(pin, sizeof pin);
    return status;
}
