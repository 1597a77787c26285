/* api.c: reaching a gateway's admin API (see ctl.h). */
#include "gateway/cli/ctl.h"

#include "common/buf.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/http_fetch.h"
#include "common/limits.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTL_TIMEOUT_MS     30000
#define CTL_MAX_RESPONSE   (16 * 1024 * 1024)
#define CTL_SYSTEM_CA      "/etc/ssl/certs/ca-certificates.crt"
#define CTL_TOKEN_FILE_MAX 4096

struct fy_ctl {
    char base[300]; /* https://HOST:PORT */
    char auth[160]; /* "Bearer <admin token>" */
    char ca[4096];
    json_t *state;
    fy_tls_config *tls;
};

static int read_token(const char *path, char *auth, size_t authlen, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fy_file_read(path, CTL_TOKEN_FILE_MAX, &text, &len);
    if (rc) {
        snprintf(err, errlen, "cannot read the admin token %s: %s", path, fy_strerror(rc));
        return rc;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        len--;
    }
    size_t start = 0;
    while (start < len && isspace((unsigned char)text[start])) {
        start++;
    }
    rc = 0;
    if (len == start ||
        snprintf(auth, authlen, "Bearer %.*s", (int)(len - start), text + start) >= (int)authlen) {
        snprintf(err, errlen, "%s does not hold an admin token", path);
        rc = FY_EPARSE; /* a bad file, not a usage error */
    }
    fy_secure_zero(text, len);
    free(text);
    return rc;
}

/* "0.0.0.0:9443" -> "127.0.0.1:9443", "[::]:9443" -> "[::1]:9443": a
 * wildcard listener is reached on loopback. */
static void loopback_for_wildcard(const char *addr, char *out, size_t outlen)
{
    if (strncmp(addr, "0.0.0.0:", 8) == 0) {
        snprintf(out, outlen, "127.0.0.1:%s", addr + 8);
    } else if (strncmp(addr, "[::]:", 5) == 0) {
        snprintf(out, outlen, "[::1]:%s", addr + 5);
    } else {
        snprintf(out, outlen, "%s", addr);
    }
}

int fy_ctl_open(const fy_ctl_options *o, fy_ctl **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (!o->data_dir == !o->admin_url) {
        snprintf(err, errlen,
                 "give either --data-dir DIR (a gateway on this machine) or --admin "
                 "URL --admin-token-file FILE");
        return FY_EINVAL;
    }
    if (o->admin_url && !o->token_file) {
        snprintf(err, errlen, "--admin needs --admin-token-file FILE");
        return FY_EINVAL;
    }
    fy_ctl *c = calloc(1, sizeof *c);
    if (!c) {
        return FY_ENOMEM;
    }
    char path[4096];
    if (o->data_dir) {
        fy_path_join(path, sizeof path, o->data_dir, "state.json");
        json_error_t je;
        c->state = json_load_file(path, 0, &je);
        const char *admin = json_string_value(json_object_get(c->state, "admin"));
        if (!c->state || !admin) {
            snprintf(err, errlen,
                     "no gateway is running on %s (%s is missing or unreadable); start it with "
                     "'ferry-gateway run --data-dir %s'",
                     o->data_dir, path, o->data_dir);
            rc = FY_ENOENT;
            goto fail;
        }
        char addr[256];
        loopback_for_wildcard(admin, addr, sizeof addr);
        snprintf(c->base, sizeof c->base, "https://%s", addr);
        fy_path_join(path, sizeof path, o->data_dir, "admin.token");
        if ((rc = read_token(o->token_file ? o->token_file : path, c->auth, sizeof c->auth, err,
                             errlen))) {
            goto fail;
        }
        if (o->ca_file) {
            snprintf(c->ca, sizeof c->ca, "%s", o->ca_file);
        } else {
            fy_path_join(c->ca, sizeof c->ca, o->data_dir, "ca.crt");
            if (!fy_file_exists(c->ca)) {
                snprintf(c->ca, sizeof c->ca, "%s", CTL_SYSTEM_CA); /* --tls-cert gateways */
            }
        }
    } else {
        fy_http_url u;
        if (fy_http_url_parse(o->admin_url, &u) || !u.tls || strcmp(u.target, "/") != 0) {
            snprintf(err, errlen, "--admin must be https://HOST:PORT");
            rc = FY_EINVAL;
            goto fail;
        }
        size_t n = strlen(o->admin_url);
        snprintf(c->base, sizeof c->base, "%.*s", (int)(o->admin_url[n - 1] == '/' ? n - 1 : n),
                 o->admin_url);
        if ((rc = read_token(o->token_file, c->auth, sizeof c->auth, err, errlen))) {
            goto fail;
        }
        snprintf(c->ca, sizeof c->ca, "%s", o->ca_file ? o->ca_file : CTL_SYSTEM_CA);
    }
    fy_tls_options to = {.ca_file = c->ca};
    if ((rc = fy_tls_config_new(&to, &c->tls, err, errlen))) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    fy_ctl_close(c);
    return rc;
}

void fy_ctl_close(fy_ctl *c)
{
    if (!c) {
        return;
    }
    fy_secure_zero(c->auth, sizeof c->auth);
    json_decref(c->state);
    fy_tls_config_free(c->tls);
    free(c);
}

json_t *fy_ctl_state(fy_ctl *c)
{
    return c->state;
}

const char *fy_ctl_ca_file(fy_ctl *c)
{
    return c->ca;
}

/* Why the admin API could not be reached, for the user. */
static const char *transport_hint(int rc)
{
    switch (rc) {
    case FY_ECERT:
        return "the admin listener's certificate does not chain to the CA file, or is not valid "
               "for that host";
    case FY_ECONNREFUSED:
        return "connection refused (is the gateway running?)";
    default:
        return fy_strerror(rc);
    }
}

int fy_ctl_call(fy_ctl *c, const char *method, const char *path, json_t *body, fy_ctl_result *res,
                char *err, size_t errlen)
{
    fy_http_fetch_result fr = {0};
    char *text = NULL;
    int rc;
    res->status = 0;
    res->json = NULL;
    if (body && !(text = json_dumps(body, JSON_COMPACT))) {
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s%s", c->base, path);
    fy_http_header hdrs[] = {
        {"Authorization", c->auth, 0, 0},
        {"Accept", "application/json", 0, 0},
        {"Content-Type", "application/json", 0, 0},
    };
    fy_http_fetch_options o = {
        .method = method,
        .url = url,
        .headers = hdrs,
        .nheaders = body ? 3 : 2,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .tls = c->tls,
        .timeout_ms = CTL_TIMEOUT_MS,
        .max_body = CTL_MAX_RESPONSE,
    };
    rc = fy_http_fetch(&o, &fr, err, errlen);
    if (rc && fr.stage != FY_HTTP_FETCH_SETUP) {
        snprintf(err, errlen, "cannot reach the admin API at %s: %s", c->base, transport_hint(rc));
    } else if (rc == 0) {
        res->status = fr.status;
        json_error_t je;
        res->json = fr.body.len ? json_loadb(fr.body.data, fr.body.len, 0, &je) : NULL;
    }
    if (text) {
        fy_secure_zero(text, strlen(text));
    }
    free(text);
    fy_buf_wipe(&fr.body); /* may hold a new secret */
    return rc;
}

/* --- helpers the commands share ----------------------------------------------------- */

void fy_ctl_fmt_time(json_t *v, char *out, size_t n)
{
    if (!json_is_integer(v)) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Prints the API's error and returns 1. */
static int api_error(const fy_ctl_result *r)
{
    json_t *e = json_object_get(r->json, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    fprintf(stderr, "ferry: %s (HTTP %d%s%s)\n", msg ? msg : "the gateway refused the request",
            r->status, code ? ", " : "", code ? code : "");
    return 1;
}

/* Calls the admin API. Returns 0 when the gateway answered OK (a create
 * passes 201 and also accepts 200), with R->json for the caller to release;
 * otherwise prints why (the transport's error or the API's message) and
 * returns 1 with nothing left to release. */
int fy_ctl_api(fy_ctl *c, const char *method, const char *path, json_t *body, int ok,
               fy_ctl_result *r)
{
    char err[512];
    if (fy_ctl_call(c, method, path, body, r, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    if (r->status != ok && !(ok == 201 && r->status == 200)) {
        api_error(r);
        json_decref(r->json);
        return 1;
    }
    return 0;
}

void fy_ctl_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    if (s) {
        printf("%s\n", s);
        free(s);
    }
}
