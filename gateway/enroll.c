/* enroll.c: POST /v1/enroll on the tunnel listener (TLS without a client
 * certificate).
 *
 * The runner sends a one-time token and a CSR made on its own machine; the
 * gateway consumes the token, signs the CSR's public key into a client
 * certificate naming the runner the token was made for (never the name the
 * CSR asks for), records that certificate's fingerprint in the store, and
 * answers with the certificate and the CA the runner must trust. The CSR is
 * checked before the token is consumed, so a malformed CSR does not burn the
 * token. */
#include "gateway/gateway.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/x509.h"
#include "gateway/datadir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ENR_LOG "enroll"

static void respond_json(fy_http_req *req, int status, json_t *o)
{
    fy_gw_respond_json(req, status, o);
}

static int sign_csr(fy_gw *gw, const char *csr, const char *subject, int64_t now, char **cert,
                    char *err, size_t errlen)
{
    fy_x509_sign_options so = {
        .ca_cert_pem = gw->trust.runner_ca_pem,
        .ca_key_pem = gw->trust.runner_ca_key_pem,
        .csr_pem = csr,
        .subject = subject,
        .not_before = now - FY_X509_BACKDATE_SECONDS,
        .not_after = now + (int64_t)FY_GW_RUNNER_CERT_DAYS * 86400,
    };
    return fy_x509_csr_sign(&so, cert, err, errlen);
}

static void enrolled(fy_gw *gw, fy_http_req *req, const char *csr, const char *name, int64_t now);
static void refuse_token(fy_http_req *req, int rc);
static void enroll_shared(fy_gw *gw, fy_http_req *req, const uint8_t hash[32], const char *csr,
                          int64_t now);

static void enroll(fy_gw *gw, fy_http_req *req)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = json_loadb(body.base, body.len, 0, &jerr);
    fy_secure_zero(body.base, body.len); /* it held the token */
    const char *token = NULL, *csr = NULL;
    char *probe = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    if (root && json_is_object(root)) {
        token = json_string_value(json_object_get(root, "token"));
        csr = json_string_value(json_object_get(root, "csr"));
    }
    if (!token || !csr) {
        fy_http_respond_error(req, 400, "invalid_request",
                              "body must be JSON with string fields \"token\" and \"csr\"");
        goto out;
    }
    int64_t now = (int64_t)time(NULL);
    size_t tlen = strlen(token);
    if (!fy_secret_well_formed(FY_GW_ENROLL_TOKEN_PREFIX, token, tlen)) {
        fy_http_respond_error(req, 401, "token_unknown", "unknown enrollment token");
        goto out;
    }
    /* Check the CSR (signature, key type) before the token is spent. */
    if (sign_csr(gw, csr, "CN=csr-check,O=ferry runner", now, &probe, err, sizeof err)) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid CSR: %s", err);
        fy_http_respond_error(req, 400, "invalid_csr", msg);
        goto out;
    }
    uint8_t hash[32];
    fy_secret_hash(token, tlen, hash);
    if (gw->shared) {
        enroll_shared(gw, req, hash, csr, now);
        goto out;
    }
    int rc = fy_store_token_consume(gw->store, hash, now, name);
    if (!rc) {
        enrolled(gw, req, csr, name, now);
        goto out;
    }
    refuse_token(req, rc);
out:
    if (token) {
        fy_secure_zero((char *)token, strlen(token));
    }
    json_decref(root);
    free(probe);
}

static void enrolled_shared(fy_gw *gw, fy_http_req *req, const char *name, const fy_x509_info *info,
                            char *cert, int64_t now);
static void answer(fy_gw *gw, fy_http_req *req, const char *name, const char *fingerprint,
                   char *cert);

/* The token was good for runner NAME: its certificate, recorded. */
static void enrolled(fy_gw *gw, fy_http_req *req, const char *csr, const char *name, int64_t now)
{
    char err[256];
    char *cert = NULL;
    char subject[FY_STORE_NAME_MAX + 32];
    snprintf(subject, sizeof subject, "CN=%s,O=ferry runner", name);
    fy_x509_info info;
    if (sign_csr(gw, csr, subject, now, &cert, err, sizeof err) ||
        fy_x509_info_get(cert, strlen(cert), &info, err, sizeof err)) {
        fy_http_respond_error(req, 500, "internal_error", err);
        free(cert);
        return;
    }
    if (gw->shared) {
        enrolled_shared(gw, req, name, &info, cert, now);
        return;
    }
    int rc = fy_store_runner_enroll(gw->store, name, info.fingerprint_str, info.serial, now);
    if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        free(cert);
        return;
    }
    answer(gw, req, name, info.fingerprint_str, cert);
}

/* Answers a token the store (or the shared state) refused with RC. */
static void refuse_token(fy_http_req *req, int rc)
{
    {
        static const struct {
            int rc;
            const char *code, *msg;
        } why[] = {
            {FY_ENOENT, "token_unknown", "unknown enrollment token"},
            {FY_EEXIST, "token_used", "enrollment token was already used"},
            {FY_ETIMEDOUT, "token_expired", "enrollment token has expired"},
        };
        for (size_t i = 0; i < sizeof why / sizeof why[0]; i++) {
            if (why[i].rc == rc) {
                fy_log_event(
                    FY_LOG_WARN, ENR_LOG, "enrollment refused",
                    json_pack("{s:s,s:s}", "reason", why[i].code, "peer", fy_http_req_peer(req)));
                fy_http_respond_error(req, 401, why[i].code, why[i].msg);
                return;
            }
        }
        if (rc == FY_EUNREACH || rc == FY_ECONNRESET || rc == FY_ECANCELED) {
            fy_http_respond_error(req, 503, "shared_state_unavailable",
                                  "the gateway cannot reach its shared state (Redis) to check "
                                  "the token; retry shortly (the token was not used)");
            return;
        }
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
    }
}

/* Recorded: connections with an older certificate go; the answer. */
static void answer(fy_gw *gw, fy_http_req *req, const char *name, const char *fingerprint,
                   char *cert)
{
    /* A runner enrolled again: connections with its old certificate go. */
    fy_gw_tunnel_drop_stale(gw, name, fingerprint);
    fy_log_event(FY_LOG_INFO, ENR_LOG, "runner enrolled",
                 json_pack("{s:s,s:s,s:s}", "runner", name, "fingerprint", fingerprint, "peer",
                           fy_http_req_peer(req)));
    respond_json(req, 200,
                 json_pack("{s:s,s:s,s:s}", "runner", name, "certificate", cert, "ca",
                           gw->trust.trust_ca_pem));
    free(cert);
}

/* --- with --shared: the token is consumed, and the runner recorded, in Redis ---- */

typedef struct {
    fy_gw *gw;
    fy_http_req *req;
    char *csr, *cert;
    char name[FY_STORE_NAME_MAX];
    fy_store_runner r;
    int64_t now;
} enroll_call;

static void call_free(enroll_call *c)
{
    free(c->csr);
    free(c->cert);
    free(c);
}

static void on_recorded(void *data, int err)
{
    enroll_call *c = data;
    if (err) {
        refuse_token(c->req, err == FY_EUNREACH || err == FY_ECONNRESET ? err : FY_EIO);
    } else {
        answer(c->gw, c->req, c->name, c->r.fingerprint, c->cert);
        c->cert = NULL;
    }
    call_free(c);
}

static void enrolled_shared(fy_gw *gw, fy_http_req *req, const char *name, const fy_x509_info *info,
                            char *cert, int64_t now)
{
    enroll_call *c = calloc(1, sizeof *c);
    if (!c) {
        free(cert);
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return;
    }
    *c = (enroll_call){.gw = gw, .req = req, .cert = cert, .now = now};
    snprintf(c->name, sizeof c->name, "%s", name);
    c->r = (fy_store_runner){.enrolled_at = now};
    snprintf(c->r.name, sizeof c->r.name, "%s", name);
    snprintf(c->r.fingerprint, sizeof c->r.fingerprint, "%s", info->fingerprint_str);
    snprintf(c->r.serial, sizeof c->r.serial, "%s", info->serial);
    int rc = fy_shared_runner_put(gw->shared, &c->r, on_recorded, c);
    if (rc) {
        on_recorded(c, rc);
    }
}

static void on_consumed(void *data, int err)
{
    enroll_call *c = data;
    if (err) {
        refuse_token(c->req, err);
    } else {
        enrolled(c->gw, c->req, c->csr, c->name, c->now);
    }
    call_free(c);
}

static void enroll_shared(fy_gw *gw, fy_http_req *req, const uint8_t hash[32], const char *csr,
                          int64_t now)
{
    enroll_call *c = calloc(1, sizeof *c);
    if (c && !(c->csr = strdup(csr))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return;
    }
    c->gw = gw;
    c->req = req;
    c->now = now;
    int rc = fy_shared_token_consume(gw->shared, hash, now, c->name, on_consumed, c);
    if (rc) {
        refuse_token(req, rc);
        call_free(c);
    }
}

void fy_gw_enroll_request(fy_http_req *req, void *data)
{
    fy_gw *gw = data;
    if (strcmp(fy_http_req_path(req), "/v1/enroll") != 0) {
        fy_http_respond_error(req, 404, "not_found", "this listener serves only POST /v1/enroll");
        return;
    }
    if (strcmp(fy_http_req_method(req), "POST") != 0) {
        fy_http_respond_error(req, 405, "method_not_allowed", "use POST");
        return;
    }
    enroll(gw, req);
}
