/* ferry: the admin CLI; talks to a gateway's admin listener.
 *
 * Exit status: 0 done, 1 the API refused or could not be reached (its
 * message is printed), 2 usage error. A command that creates a secret prints
 * it alone on the last line of its output, so scripts take `tail -n1`. */
#include "common/args.h"
#include "common/cli.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/limits.h"
#include "common/x509.h"
#include "gateway/cli/ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

/* An integer field, or "-" when it is 0 or absent (a limit that is off). */
static const char *jlimit(json_t *o, const char *key, char *buf, size_t n)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    if (v <= 0) {
        return "-";
    }
    snprintf(buf, n, "%lld", (long long)v);
    return buf;
}

/* "a,b" from a JSON array of strings; "any" when empty. */
static const char *jlist(json_t *o, const char *key, char *buf, size_t n)
{
    json_t *a = json_object_get(o, key), *x;
    size_t i, len = 0;
    buf[0] = '\0';
    json_array_foreach(a, i, x)
    {
        int w = snprintf(buf + len, n - len, "%s%s", i ? "," : "", json_string_value(x));
        if (w < 0 || (size_t)w >= n - len) {
            break;
        }
        len += (size_t)w;
    }
    return buf[0] ? buf : "any";
}

/* --- commands ---------------------------------------------------------------------- */

static int cmd_status(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    if (fy_ctl_api(c, "GET", "/admin/v1/status", NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *l = json_object_get(r.json, "listeners");
        printf("gateway %s%s\n", jstr(r.json, "version"),
               json_is_true(json_object_get(r.json, "draining")) ? " (draining)" : "");
        printf("  public   %s://%s\n", jstr(r.json, "public_scheme"), jstr(l, "public"));
        printf("  tunnel   %s\n", jstr(l, "tunnel"));
        printf("  admin    %s\n", jstr(l, "admin"));
        printf("  runners connected  %lld\n",
               (long long)json_integer_value(json_object_get(r.json, "runners_connected")));
        printf("  requests in flight %lld\n",
               (long long)json_integer_value(json_object_get(r.json, "requests_in_flight")));
    }
    json_decref(r.json);
    return rc;
}

static int cmd_tokens_create(fy_ctl *c, int as_json, const char *name, const char *ttl)
{
    fy_ctl_result r;
    char err[512];
    json_t *body = json_pack("{s:s}", "runner", name);
    if (ttl) {
        json_object_set_new(body, "ttl", json_string(ttl));
    }
    int rc = fy_ctl_api(c, "POST", "/admin/v1/tokens", body, 201, &r);
    json_decref(body);
    if (rc) {
        return 1;
    }
    const char *token = json_string_value(json_object_get(r.json, "token"));
    if (!token) {
        fprintf(stderr, "ferry: the gateway's answer has no token\n");
        rc = 1;
    } else if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        char exp[32];
        fy_ctl_fmt_time(json_object_get(r.json, "expires_at"), exp, sizeof exp);
        printf("enrollment token %s for runner \"%s\": one use, expires %s\n", jstr(r.json, "id"),
               jstr(r.json, "runner"), exp);
        /* How to use it, when this machine knows the gateway's addresses. */
        json_t *state = fy_ctl_state(c);
        const char *tunnel = json_string_value(json_object_get(state, "tunnel"));
        fy_x509_info ca;
        char *pem = NULL;
        size_t len;
        int have_ca = 0;
        if (fy_file_read(fy_ctl_ca_file(c), FY_TLS_PEM_MAX_BYTES, &pem, &len) == 0) {
            have_ca = fy_x509_info_get(pem, len, &ca, err, sizeof err) == 0 && ca.is_ca;
            free(pem);
        }
        if (tunnel && have_ca) {
            printf("enroll the runner with (TOKEN is the last line below):\n"
                   "  ferry-runner enroll --gateway %s --token TOKEN --ca-fingerprint %s "
                   "--data-dir RUNNER_DIR\n",
                   tunnel, ca.fingerprint_str);
        }
        printf("%s\n", token);
    }
    json_decref(r.json);
    return rc;
}

static int cmd_tokens_list(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    if (fy_ctl_api(c, "GET", "/admin/v1/tokens", NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "tokens");
        printf("%-22s %-20s %-21s %-21s %s\n", "ID", "RUNNER", "CREATED", "EXPIRES", "STATE");
        size_t i;
        json_t *t;
        time_t now = time(NULL);
        json_array_foreach(a, i, t)
        {
            char created[32], expires[32], used[32], state[48];
            fy_ctl_fmt_time(json_object_get(t, "created_at"), created, sizeof created);
            fy_ctl_fmt_time(json_object_get(t, "expires_at"), expires, sizeof expires);
            json_t *u = json_object_get(t, "used_at");
            if (json_is_integer(u)) {
                fy_ctl_fmt_time(u, used, sizeof used);
                snprintf(state, sizeof state, "used %s", used);
            } else if (json_integer_value(json_object_get(t, "expires_at")) <= (json_int_t)now) {
                snprintf(state, sizeof state, "expired");
            } else {
                snprintf(state, sizeof state, "unused");
            }
            printf("%-22s %-20s %-21s %-21s %s\n", jstr(t, "id"), jstr(t, "runner"), created,
                   expires, state);
        }
    }
    json_decref(r.json);
    return rc;
}

static int cmd_runners_list(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    if (fy_ctl_api(c, "GET", "/admin/v1/runners", NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "runners");
        printf("%-20s %-10s %-6s %-10s %-21s %s\n", "NAME", "STATE", "CONNS", "IN-FLIGHT",
               "ENROLLED", "FINGERPRINT");
        size_t i, j;
        json_t *x, *conn;
        json_array_foreach(a, i, x)
        {
            char enrolled[32];
            fy_ctl_fmt_time(json_object_get(x, "enrolled_at"), enrolled, sizeof enrolled);
            json_t *conns = json_object_get(x, "connections");
            const char *state = json_is_integer(json_object_get(x, "revoked_at")) ? "revoked"
                                : json_is_true(json_object_get(x, "connected"))   ? "connected"
                                                                                  : "offline";
            printf("%-20s %-10s %-6zu %-10lld %-21s %s\n", jstr(x, "name"), state,
                   json_array_size(conns),
                   (long long)json_integer_value(json_object_get(x, "in_flight")), enrolled,
                   jstr(x, "fingerprint"));
            json_array_foreach(conns, j, conn)
            {
                char since[32];
                fy_ctl_fmt_time(json_object_get(conn, "since"), since, sizeof since);
                printf("  conn %lld  peer %s  since %s  streams %lld  rtt %.2f ms\n",
                       (long long)json_integer_value(json_object_get(conn, "id")),
                       jstr(conn, "peer"), since,
                       (long long)json_integer_value(json_object_get(conn, "streams")),
                       json_number_value(json_object_get(conn, "rtt_ms")));
            }
            json_t *rep;
            json_array_foreach(json_object_get(x, "replicas"), j, rep)
            {
                printf("  replica %s%s  tunnel %s  connections %lld\n", jstr(rep, "replica"),
                       json_is_true(json_object_get(rep, "this")) ? " (this one)" : "",
                       jstr(rep, "tunnel"),
                       (long long)json_integer_value(json_object_get(rep, "connections")));
            }
        }
        if (json_is_false(json_object_get(r.json, "shared"))) {
            printf("(the shared state is unreachable: connections to other replicas are not "
                   "shown)\n");
        }
    }
    json_decref(r.json);
    return rc;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) {
            return 0;
        }
    }
    return s[0] != '-';
}

static int cmd_runners_revoke(fy_ctl *c, int as_json, const char *name)
{
    fy_ctl_result r;
    char path[160];
    snprintf(path, sizeof path, "/admin/v1/runners/%s/revoke", name);
    if (fy_ctl_api(c, "POST", path, NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        char when[32];
        fy_ctl_fmt_time(json_object_get(r.json, "revoked_at"), when, sizeof when);
        printf("runner \"%s\" revoked at %s; %lld connection(s) dropped; it cannot reconnect\n",
               name, when,
               (long long)json_integer_value(json_object_get(r.json, "connections_dropped")));
    }
    json_decref(r.json);
    return rc;
}

/* --- API keys ---------------------------------------------------------------------------- */

typedef struct {
    const char *name, *owner, *models, *runners, *hooks, *expires;
    long long rpm, tpm, concurrency, burst; /* -1: not given */
} key_opts;

static json_t *key_body(const key_opts *o)
{
    json_t *b = json_object();
    const char *strs[][2] = {{"name", o->name},       {"owner", o->owner}, {"models", o->models},
                             {"runners", o->runners}, {"hooks", o->hooks}, {"expires", o->expires}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (strs[i][1]) {
            json_object_set_new(b, strs[i][0], json_string(strs[i][1]));
        }
    }
    const struct {
        const char *k;
        long long v;
    } ints[] = {
        {"rpm", o->rpm}, {"tpm", o->tpm}, {"concurrency", o->concurrency}, {"burst", o->burst}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (ints[i].v >= 0) {
            json_object_set_new(b, ints[i].k, json_integer(ints[i].v));
        }
    }
    return b;
}

static void print_key(json_t *k)
{
    char a[32], b[32], c[32], t1[32], t2[32], l[1100];
    printf("API key %s \"%s\"%s%s\n", jstr(k, "id"), jstr(k, "name"),
           json_is_string(json_object_get(k, "owner")) && jstr(k, "owner")[0] ? ", owner " : "",
           json_is_string(json_object_get(k, "owner")) && jstr(k, "owner")[0] ? jstr(k, "owner")
                                                                              : "");
    printf("  prefix       %s...\n", jstr(k, "prefix"));
    printf("  limits       rpm %s, tpm %s, concurrency %s\n", jlimit(k, "rpm", a, sizeof a),
           jlimit(k, "tpm", b, sizeof b), jlimit(k, "concurrency", c, sizeof c));
    if (json_is_integer(json_object_get(k, "burst"))) {
        printf("  burst        %s requests at once, then at the rpm's pace%s\n",
               jlimit(k, "burst", a, sizeof a),
               json_is_true(json_object_get(k, "burst_default")) ? " (default: ceil(rpm/6))" : "");
    }
    printf("  models       %s\n", jlist(k, "models", l, sizeof l));
    printf("  runners      %s\n", jlist(k, "runners", l, sizeof l));
    printf("  hooks        %s\n", jlist(k, "hooks", l, sizeof l));
    fy_ctl_fmt_time(json_object_get(k, "created_at"), t1, sizeof t1);
    fy_ctl_fmt_time(json_object_get(k, "expires_at"), t2, sizeof t2);
    printf("  created      %s\n", t1);
    printf("  expires      %s\n", json_is_integer(json_object_get(k, "expires_at")) ? t2 : "never");
    if (json_is_integer(json_object_get(k, "revoked_at"))) {
        fy_ctl_fmt_time(json_object_get(k, "revoked_at"), t1, sizeof t1);
        printf("  revoked      %s\n", t1);
    }
}

static int cmd_keys_create(fy_ctl *c, int as_json, const key_opts *ko)
{
    fy_ctl_result r;
    json_t *body = key_body(ko);
    int rc = fy_ctl_api(c, "POST", "/admin/v1/keys", body, 201, &r);
    json_decref(body);
    if (rc) {
        return 1;
    }
    const char *key = json_string_value(json_object_get(r.json, "key"));
    if (!key) {
        fprintf(stderr, "ferry: the gateway's answer has no key\n");
        rc = 1;
    } else if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        print_key(r.json);
        json_t *state = fy_ctl_state(c);
        const char *pub = json_string_value(json_object_get(state, "public"));
        const char *scheme = json_string_value(json_object_get(state, "public_scheme"));
        printf("send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'");
        if (pub) {
            printf(" to %s://%s/r/<runner>/", scheme ? scheme : "https", pub);
        }
        printf("\nThe key is shown only this once (KEY is the last line below); the gateway "
               "keeps only its hash.\n%s\n",
               key);
    }
    json_decref(r.json);
    return rc;
}

static int cmd_keys_update(fy_ctl *c, int as_json, const char *id, const key_opts *ko)
{
    fy_ctl_result r;
    char path[160];
    snprintf(path, sizeof path, "/admin/v1/keys/%s", id);
    json_t *body = key_body(ko);
    int rc = fy_ctl_api(c, "PATCH", path, body, 200, &r);
    json_decref(body);
    if (rc) {
        return 1;
    }
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        printf("updated; the next request with this key sees the change\n");
        print_key(r.json);
    }
    json_decref(r.json);
    return rc;
}

static int cmd_keys_revoke(fy_ctl *c, int as_json, const char *id)
{
    fy_ctl_result r;
    char path[160];
    snprintf(path, sizeof path, "/admin/v1/keys/%s/revoke", id);
    if (fy_ctl_api(c, "POST", path, NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        char when[32];
        fy_ctl_fmt_time(json_object_get(r.json, "revoked_at"), when, sizeof when);
        printf("API key %s (\"%s\") revoked at %s; its next request is refused\n", id,
               jstr(r.json, "name"), when);
    }
    json_decref(r.json);
    return rc;
}

static int cmd_keys_list(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    if (fy_ctl_api(c, "GET", "/admin/v1/keys", NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "keys"), *k;
        size_t i;
        time_t now = time(NULL);
        printf("%-20s %-16s %-9s %-8s %-6s %-9s %-5s %-24s %-20s %-20s %9s %10s %s\n", "ID", "NAME",
               "PREFIX", "RPM", "BURST", "TPM", "CONC", "SCOPES", "CREATED", "LAST USED",
               "REQUESTS", "TOKENS", "STATE");
        json_array_foreach(a, i, k)
        {
            char l1[32], l2[32], l3[32], l4[32], created[32], used[32], scopes[1200], m[1100],
                rn[1100], h[1100];
            fy_ctl_fmt_time(json_object_get(k, "created_at"), created, sizeof created);
            fy_ctl_fmt_time(json_object_get(k, "last_used_at"), used, sizeof used);
            jlist(k, "models", m, sizeof m);
            jlist(k, "runners", rn, sizeof rn);
            jlist(k, "hooks", h, sizeof h);
            size_t n = 0;
            scopes[0] = '\0';
            const char *sc[][2] = {{"models", m}, {"runners", rn}, {"hooks", h}};
            for (size_t j = 0; j < 3; j++) {
                if (sc[j][1][0] && n < sizeof scopes) {
                    n += (size_t)snprintf(scopes + n, sizeof scopes - n, "%s%s=%s", n ? " " : "",
                                          sc[j][0], sc[j][1]);
                }
            }
            json_t *u = json_object_get(k, "usage");
            json_t *exp = json_object_get(k, "expires_at");
            const char *state = json_is_integer(json_object_get(k, "revoked_at")) ? "revoked"
                                : json_is_integer(exp) && json_integer_value(exp) <= (json_int_t)now
                                    ? "expired"
                                    : "active";
            printf("%-20s %-16s %-9s %-8s %-6s %-9s %-5s %-24s %-20s %-20s %9lld %10lld %s\n",
                   jstr(k, "id"), jstr(k, "name"), jstr(k, "prefix"), jlimit(k, "rpm", l1, 32),
                   jlimit(k, "burst", l4, 32), jlimit(k, "tpm", l2, 32),
                   jlimit(k, "concurrency", l3, 32), scopes[0] ? scopes : "any", created, used,
                   (long long)json_integer_value(json_object_get(u, "requests")),
                   (long long)(json_integer_value(json_object_get(u, "prompt_tokens")) +
                               json_integer_value(json_object_get(u, "completion_tokens"))),
                   state);
        }
    }
    json_decref(r.json);
    return rc;
}

static int cmd_usage(fy_ctl *c, int as_json, const char *key, const char *by)
{
    fy_ctl_result r;
    char path[200];
    snprintf(path, sizeof path, "/admin/v1/usage?by=%s%s%s", by ? by : "total", key ? "&key=" : "",
             key ? key : "");
    if (fy_ctl_api(c, "GET", path, NULL, 200, &r)) {
        return 1;
    }
    int rc = 0;
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        int hourly = by && strcmp(by, "hour") == 0;
        json_t *a = json_object_get(r.json, "usage"), *x;
        size_t i;
        printf("%-20s %-16s %s%10s %12s %12s %12s %12s\n", "KEY", "NAME",
               hourly ? "HOUR                 " : "", "REQUESTS", "PROMPT", "COMPLETION",
               "BYTES IN", "BYTES OUT");
        json_array_foreach(a, i, x)
        {
            char hour[32] = "";
            if (hourly) {
                fy_ctl_fmt_time(json_object_get(x, "hour"), hour, sizeof hour);
                strcat(hour, " ");
            }
            printf("%-20s %-16s %s%10lld %12lld %12lld %12lld %12lld\n", jstr(x, "key_id"),
                   jstr(x, "name"), hour,
                   (long long)json_integer_value(json_object_get(x, "requests")),
                   (long long)json_integer_value(json_object_get(x, "prompt_tokens")),
                   (long long)json_integer_value(json_object_get(x, "completion_tokens")),
                   (long long)json_integer_value(json_object_get(x, "bytes_in")),
                   (long long)json_integer_value(json_object_get(x, "bytes_out")));
        }
    }
    json_decref(r.json);
    return rc;
}

static int valid_key_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 5 || n > 40 || strncmp(s, "key_", 4) != 0) {
        return 0;
    }
    for (size_t i = 4; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_')) {
            return 0;
        }
    }
    return 1;
}

/* --- the command table -------------------------------------------------------------------- */

/* Everything the command line sets; each command reads its part. */
typedef struct {
    int help, version, as_json;
    const char *data_dir, *admin, *token_file, *ca;
    const char *name, *ttl, *key, *by;
    key_opts ko;
    fy_ctl_hook_opts ho;
    fy_cli_log_opts log;
    const char *arg; /* the command's argument (a NAME or an ID), or NULL */
    int argc;        /* the arguments after the program name (for fy_args_find) */
    char **argv;
} ferry_args;

/* The whole option table: the shared options first, then every command's
 * (each command names which of these it takes). */
#define FERRY_OPTIONS(a)                                                                          \
    {                                                                                             \
        {"data-dir", FY_OPT_STR, &(a)->data_dir, "DIR",                                           \
         "a gateway's data directory on this machine"},                                           \
            {"admin", FY_OPT_STR, &(a)->admin, "URL",                                             \
             "a gateway's admin listener, https://HOST:PORT"},                                    \
            {"admin-token-file", FY_OPT_STR, &(a)->token_file, "FILE",                            \
             "file with the admin token (default with --data-dir: DIR/admin.token)"},             \
            {"ca", FY_OPT_STR, &(a)->ca, "FILE",                                                  \
             "CA of the admin listener's certificate (default DIR/ca.crt, else the system CAs)"}, \
            {"json", FY_OPT_FLAG, &(a)->as_json, NULL, "print the API's JSON instead of tables"}, \
            {"name", FY_OPT_STR, &(a)->name, "NAME",                                              \
             "tokens create: the runner to bind; keys create/update: the key's name"},            \
            {"ttl", FY_OPT_STR, &(a)->ttl, "DURATION",                                            \
             "tokens create: lifetime (default 1h, at most 30d)"},                                \
            {"owner", FY_OPT_STR, &(a)->ko.owner, "TEXT",                                         \
             "keys create/update: who the key is for"},                                           \
            {"rpm", FY_OPT_INT, &(a)->ko.rpm, "N",                                                \
             "keys create/update: requests per minute (0: no limit)"},                            \
            {"burst", FY_OPT_INT, &(a)->ko.burst, "N",                                            \
             "keys create/update: requests --rpm admits at once, 1..rpm (default ceil(rpm/6), "   \
             "ten "                                                                               \
             "seconds' worth; 0: back to the default); needs an rpm limit"},                      \
            {"tpm", FY_OPT_INT, &(a)->ko.tpm, "N",                                                \
             "keys create/update: tokens per minute (0: no limit)"},                              \
            {"concurrency", FY_OPT_INT, &(a)->ko.concurrency, "N",                                \
             "keys create/update: requests in flight at once (0: no limit)"},                     \
            {"models", FY_OPT_STR, &(a)->ko.models, "a,b",                                        \
             "keys create/update: models allowed (default any)"},                                 \
            {"runners", FY_OPT_STR, &(a)->ko.runners, "r1,r2",                                    \
             "keys create/update: runners allowed (default any)"},                                \
            {"hooks", FY_OPT_STR, &(a)->ko.hooks, "h1,h2",                                        \
             "keys create/update: hooks allowed (default any)"},                                  \
            {"expires", FY_OPT_STR, &(a)->ko.expires, "DURATION",                                 \
             "keys create/update: lifetime from now (30d, 12h; update: or never)"},               \
            {"runner", FY_OPT_STR, &(a)->ho.runner, "RUNNER",                                     \
             "hooks create: the runner to forward to"},                                           \
            {"path", FY_OPT_STR, &(a)->ho.path, "/PATH", "hooks create: the path on the runner"}, \
            {"verify", FY_OPT_STR, &(a)->ho.verify, "KIND",                                       \
             "hooks create: github, stripe, slack, hmac-sha256 or none"},                         \
            {"secret-file", FY_OPT_STR, &(a)->ho.secret_file, "FILE",                             \
             "hooks create/rotate-secret: file holding the signing secret"},                      \
            {"tolerance", FY_OPT_STR, &(a)->ho.tolerance, "DURATION",                             \
             "hooks create: how far a signed timestamp may be from now (default 300s)"},          \
            {"async", FY_OPT_FLAG, &(a)->ho.async, NULL,                                          \
             "hooks create: answer 202 at once and deliver from the durable queue"},              \
            {"header", FY_OPT_STR, &(a)->ho.header, "NAME",                                       \
             "hooks create (hmac-sha256): signature header"},                                     \
            {"encoding", FY_OPT_STR, &(a)->ho.encoding, "hex|base64",                             \
             "hooks create (hmac-sha256): signature encoding (default hex)"},                     \
            {"timestamp-header", FY_OPT_STR, &(a)->ho.ts_header, "NAME",                          \
             "hooks create (hmac-sha256): signed timestamp header (signs \"<ts>.<body>\")"},      \
            {"max-body", FY_OPT_SIZE, &(a)->ho.max_body, "SIZE",                                  \
             "hooks create: largest body (default 1MiB, at most 16MiB)"},                         \
            {"grace", FY_OPT_STR, &(a)->ho.grace, "DURATION",                                     \
             "hooks rotate-secret: how long the old secret stays valid (default 24h)"},           \
            {"key", FY_OPT_STR, &(a)->key, "ID", "usage: only this key"},                         \
            {"by", FY_OPT_STR, &(a)->by, "total|hour", "usage: totals (default) or per hour"},    \
            {"help", FY_OPT_FLAG, &(a)->help, NULL, "show this help and exit"},                   \
            {"version", FY_OPT_FLAG, &(a)->version, NULL,                                         \
             "show version and library versions and exit"},                                       \
            FY_CLI_LOG_OPTS(&(a)->log), {0},                                                      \
    }

/* The options every command takes. */
static const char *const opts_shared[] = {"data-dir",   "admin", "admin-token-file", "ca",
                                          "json",       "help",  "version",          "log-level",
                                          "log-format", NULL};

typedef struct {
    const char *group, *sub;     /* "keys" "create"; sub is NULL for a one-word command */
    const char *arg;             /* the argument it needs ("key ID"), or NULL for none */
    const char *const *opts;     /* its own options beyond the shared ones, NULL-ended */
    int (*check)(ferry_args *a); /* refuses bad values: prints why, returns 2; 0 ok. May be NULL */
    int (*run)(fy_ctl *c, const ferry_args *a); /* the exit status */
    /* For --help: what follows the command's words ("--name RUNNER [--ttl 1h]",
     * lines after the first indented to line up), and what it does. */
    const char *synopsis, *help;
} ferry_cmd;

/* Prints "ferry: MESSAGE" and returns 2, the usage-error exit status. */
static int refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ferry: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

static int has_name(const char *const *names, const char *name)
{
    for (; *names; names++) {
        if (strcmp(*names, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* --- checks: each command's values, before anything is sent ---------------------------- */

static int check_tokens_create(ferry_args *a)
{
    uint64_t ttl_ms;
    if (!a->name) {
        return refuse("tokens create needs --name RUNNER");
    }
    if (!valid_name(a->name)) {
        return refuse("--name must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'");
    }
    if (a->ttl && (fy_parse_duration_ms(a->ttl, &ttl_ms) || ttl_ms < 1000)) {
        return refuse("--ttl must be a duration like 90s, 1h or 7d");
    }
    return 0;
}

static int check_runner_name(ferry_args *a)
{
    return valid_name(a->arg) ? 0 : refuse("'%s' is not a runner name", a->arg);
}

static int check_key_id_of(const char *id)
{
    return valid_key_id(id) ? 0
                            : refuse("'%s' is not a key id (key_...; see 'ferry keys list')", id);
}

static int check_key_id(ferry_args *a)
{
    return check_key_id_of(a->arg);
}

/* A number option read as -1 was given as -1 (fy_args_find tells). */
static int given_negative(const ferry_args *a, long long v, const char *name)
{
    return v < -1 || (v == -1 && fy_args_find(a->argc, a->argv, name));
}

/* The limits and lifetime of keys create/update. */
static int check_key_limits(ferry_args *a, int update)
{
    const key_opts *ko = &a->ko;
    uint64_t exp_ms;
    if (given_negative(a, ko->rpm, "rpm") || given_negative(a, ko->tpm, "tpm") ||
        given_negative(a, ko->concurrency, "concurrency")) {
        return refuse("--rpm, --tpm and --concurrency take a number >= 0 (0: no limit)");
    }
    if (given_negative(a, ko->burst, "burst")) {
        return refuse("--burst takes a number from 1 to the key's rpm (0: the default, "
                      "ceil(rpm/6))");
    }
    if (ko->expires && !(update && strcmp(ko->expires, "never") == 0) &&
        (fy_parse_duration_ms(ko->expires, &exp_ms) || exp_ms < 1000 || exp_ms % 1000)) {
        return refuse("--expires must be a duration like 2s, 12h or 30d%s",
                      update ? " (or never)" : "");
    }
    return 0;
}

static int check_key_name(const ferry_args *a)
{
    if (a->name && (!a->name[0] || strlen(a->name) > 127)) {
        return refuse("--name must be 1 to 127 characters");
    }
    return 0;
}

static int check_keys_create(ferry_args *a)
{
    if (!a->name) {
        return refuse("keys create needs --name NAME");
    }
    int rc = check_key_name(a);
    return rc ? rc : check_key_limits(a, 0);
}

static int check_keys_update(ferry_args *a)
{
    const key_opts *ko = &a->ko;
    int fields = ko->owner || ko->models || ko->runners || ko->hooks || ko->expires ||
                 ko->rpm != -1 || ko->tpm != -1 || ko->concurrency != -1 || ko->burst != -1;
    if (!a->name && !fields) {
        return refuse("keys update needs something to change (see --help)");
    }
    int rc = check_key_name(a);
    if (!rc) {
        rc = check_key_limits(a, 1);
    }
    return rc ? rc : check_key_id(a);
}

static int check_usage(ferry_args *a)
{
    if (a->key && check_key_id_of(a->key)) {
        return 2;
    }
    if (a->by && strcmp(a->by, "total") != 0 && strcmp(a->by, "hour") != 0) {
        return refuse("--by must be total or hour");
    }
    return 0;
}

/* Why hooks create's options do not fit together, or NULL. */
static const char *hook_problem(const ferry_args *a)
{
    const fy_ctl_hook_opts *ho = &a->ho;
    const char *name = a->name;
    int hmac = ho->verify && strcmp(ho->verify, "hmac-sha256") == 0;
    return !name || !name[0] || strlen(name) > 127 ? "hooks create needs --name (1..127 chars)"
           : !ho->runner || !valid_name(ho->runner)
               ? "hooks create needs --runner RUNNER (a runner name)"
           : !ho->path || ho->path[0] != '/' ? "hooks create needs --path /PATH"
           : !ho->verify ? "hooks create needs --verify github|stripe|slack|hmac-sha256|none"
           : !ho->secret_file && strcmp(ho->verify, "none") != 0
               ? "hooks create needs --secret-file FILE (the tool's signing secret)"
           : (ho->header || ho->encoding || ho->ts_header) && !hmac
               ? "--header, --encoding and --timestamp-header go with --verify hmac-sha256"
           : hmac && !ho->header ? "--verify hmac-sha256 needs --header NAME (the signature header)"
           : ho->encoding && strcmp(ho->encoding, "hex") != 0 && strcmp(ho->encoding, "base64") != 0
               ? "--encoding must be hex or base64"
               : NULL;
}

static int check_hooks_create(ferry_args *a)
{
    const char *bad = hook_problem(a);
    if (bad) {
        return refuse("%s", bad);
    }
    /* --rpm lands in the key options' field; here it is the hook's. */
    a->ho.rpm = a->ko.rpm;
    a->ko.rpm = -1;
    if (given_negative(a, a->ho.rpm, "rpm")) {
        return refuse("--rpm takes a number >= 0 (0: no limit)");
    }
    return 0;
}

static int check_hook_id(ferry_args *a)
{
    if (strncmp(a->arg, "hk_", 3) != 0 || strlen(a->arg) > 40) {
        return refuse("'%s' is not a hook id (hk_...; see 'ferry hooks list')", a->arg);
    }
    return 0;
}

static int check_hooks_rotate(ferry_args *a)
{
    if (!a->ho.secret_file) {
        return refuse("hooks rotate-secret needs --secret-file FILE (the new secret)");
    }
    return check_hook_id(a);
}

/* --- handlers: the command, once its values are right ------------------------------------ */

static int run_status(fy_ctl *c, const ferry_args *a)
{
    return cmd_status(c, a->as_json);
}

static int run_tokens_create(fy_ctl *c, const ferry_args *a)
{
    return cmd_tokens_create(c, a->as_json, a->name, a->ttl);
}

static int run_tokens_list(fy_ctl *c, const ferry_args *a)
{
    return cmd_tokens_list(c, a->as_json);
}

static int run_runners_list(fy_ctl *c, const ferry_args *a)
{
    return cmd_runners_list(c, a->as_json);
}

static int run_runners_revoke(fy_ctl *c, const ferry_args *a)
{
    return cmd_runners_revoke(c, a->as_json, a->arg);
}

static int run_keys_create(fy_ctl *c, const ferry_args *a)
{
    key_opts ko = a->ko;
    ko.name = a->name;
    return cmd_keys_create(c, a->as_json, &ko);
}

static int run_keys_list(fy_ctl *c, const ferry_args *a)
{
    return cmd_keys_list(c, a->as_json);
}

static int run_keys_update(fy_ctl *c, const ferry_args *a)
{
    key_opts ko = a->ko;
    ko.name = a->name;
    return cmd_keys_update(c, a->as_json, a->arg, &ko);
}

static int run_keys_revoke(fy_ctl *c, const ferry_args *a)
{
    return cmd_keys_revoke(c, a->as_json, a->arg);
}

static int run_usage(fy_ctl *c, const ferry_args *a)
{
    return cmd_usage(c, a->as_json, a->key, a->by);
}

static int run_hooks_create(fy_ctl *c, const ferry_args *a)
{
    fy_ctl_hook_opts ho = a->ho;
    ho.name = a->name;
    return fy_ctl_hooks_create(c, a->as_json, &ho);
}

static int run_hooks_list(fy_ctl *c, const ferry_args *a)
{
    return fy_ctl_hooks_list(c, a->as_json);
}

static int run_hooks_delete(fy_ctl *c, const ferry_args *a)
{
    return fy_ctl_hooks_delete(c, a->as_json, a->arg);
}

static int run_hooks_rotate(fy_ctl *c, const ferry_args *a)
{
    return fy_ctl_hooks_rotate(c, a->as_json, a->arg, &a->ho);
}

static const char *const opts_none[] = {NULL};
static const char *const opts_tokens_create[] = {"name", "ttl", NULL};
static const char *const opts_keys[] = {"name",  "owner",       "rpm",    "burst",
                                        "tpm",   "concurrency", "models", "runners",
                                        "hooks", "expires",     NULL};
static const char *const opts_hooks_create[] = {
    "name",      "runner", "path",   "verify",   "secret-file",
    "tolerance", "async",  "header", "encoding", "timestamp-header",
    "max-body",  "rpm",    NULL};
static const char *const opts_hooks_rotate[] = {"secret-file", "grace", NULL};
static const char *const opts_usage[] = {"key", "by", NULL};

/* Every command, in the order --help lists them. */
static const ferry_cmd commands[] = {
    {"status", NULL, NULL, opts_none, NULL, run_status, "", "the gateway's listeners and counters"},
    {"tokens", "create", NULL, opts_tokens_create, check_tokens_create, run_tokens_create,
     "--name RUNNER [--ttl 1h]",
     "a one-time enrollment token bound to RUNNER\n(printed alone on the last line)"},
    {"tokens", "list", NULL, opts_none, NULL, run_tokens_list, "",
     "enrollment tokens (never their secrets)"},
    {"runners", "list", NULL, opts_none, NULL, run_runners_list, "",
     "enrolled runners, their connections and\nrequests in flight"},
    {"runners", "revoke", "runner NAME", opts_none, check_runner_name, run_runners_revoke, "NAME",
     "revoke a runner: its connections drop at once\nand it cannot reconnect"},
    {"keys", "create", NULL, opts_keys, check_keys_create, run_keys_create,
     "--name NAME [--owner TEXT] [--rpm N [--burst N]] [--tpm N]\n"
     "[--concurrency N] [--models a,b] [--runners r1,r2] [--hooks h1]\n"
     "[--expires 30d]",
     "a new API key (printed once, alone on the last\nline); limits of 0 or omitted mean none, "
     "empty\n"
     "scopes mean any. --rpm N admits a burst of\nceil(N/6) requests at once (ten seconds' "
     "worth),\n"
     "then one every 60/N s; --burst sets it (1..N)"},
    {"keys", "list", NULL, opts_none, NULL, run_keys_list, "",
     "API keys: id, name, prefix, limits, scopes,\ncreated, last used, usage (never the key)"},
    {"keys", "update", "key ID", opts_keys, check_keys_update, run_keys_update,
     "ID [--name NAME] [--owner TEXT] [--rpm N] [--burst N] [--tpm N]\n"
     "[--concurrency N] [--models a,b] [--runners r1,r2] [--hooks h1]\n"
     "[--expires 30d|never]",
     "change a key; the next request sees the change\n('' clears a scope list: any)"},
    {"keys", "revoke", "key ID", opts_none, check_key_id, run_keys_revoke, "ID",
     "revoke a key: its next request is refused"},
    {"hooks", "create", NULL, opts_hooks_create, check_hooks_create, run_hooks_create,
     "--name NAME --runner RUNNER --path /PATH\n"
     "--verify github|stripe|slack|hmac-sha256|none --secret-file FILE\n"
     "[--tolerance 300s] [--async] [--rpm N] [--max-body 1MiB]\n"
     "[--header NAME [--encoding hex|base64] [--timestamp-header NAME]]",
     "a webhook endpoint; prints its public URL\n/hooks/<id> alone on the last line. Requests are\n"
     "verified before anything reaches the runner\n(--header etc. configure hmac-sha256)"},
    {"hooks", "list", NULL, opts_none, NULL, run_hooks_list, "",
     "hooks, their delivery counts (never secrets)"},
    {"hooks", "delete", "hook ID", opts_none, check_hook_id, run_hooks_delete, "ID",
     "delete a hook and its queued events"},
    {"hooks", "rotate-secret", "hook ID", opts_hooks_rotate, check_hooks_rotate, run_hooks_rotate,
     "ID --secret-file FILE [--grace 24h]",
     "new secret; the old one is still accepted for\nthe grace period"},
    {"usage", NULL, NULL, opts_usage, check_usage, run_usage, "[--key ID] [--by total|hour]",
     "requests, tokens and bytes per key"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* --- parse, validate, start -------------------------------------------------------------- */

/* "keys update" */
static void cmd_words(const ferry_cmd *cmd, char *out, size_t n)
{
    snprintf(out, n, "%s%s%s", cmd->group, cmd->sub ? " " : "", cmd->sub ? cmd->sub : "");
}

/* --help: the command list comes from the table, so a command's words,
 * synopsis and help cannot drift from what the parser accepts. */
#define HELP_COL 34

/* Prints TEXT's lines, the first after COL - USED spaces, the rest indented
 * by COL. */
static void help_lines(FILE *f, const char *text, int used, int col)
{
    for (int first = 1; *text; first = 0) {
        const char *nl = strchr(text, '\n');
        int n = nl ? (int)(nl - text) : (int)strlen(text);
        fprintf(f, "%*s%.*s\n", first ? col - used : col, "", n, text);
        text += n + (nl != NULL);
    }
}

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f, "Usage: ferry [OPTIONS] COMMAND\n\n"
               "ferry manages a gateway through its admin API. Reach a gateway on this machine\n"
               "with --data-dir DIR (its state.json, admin.token and ca.crt are used), or a\n"
               "remote one with --admin https://HOST:PORT --admin-token-file FILE --ca FILE.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const ferry_cmd *c = &commands[i];
        char words[64];
        cmd_words(c, words, sizeof words);
        int used = fprintf(f, "  %s", words);
        const char *syn = c->synopsis;
        int indent = used + 1; /* continuation lines line up after the words */
        while (*syn) {
            const char *nl = strchr(syn, '\n');
            int n = nl ? (int)(nl - syn) : (int)strlen(syn);
            used += fprintf(f, "%*s%.*s", syn == c->synopsis ? 1 : indent, "", n, syn);
            syn += n;
            if (*syn == '\n') {
                fputc('\n', f);
                syn++;
                used = 0;
            }
        }
        if (used >= HELP_COL - 1 || strchr(c->synopsis, '\n')) {
            fputc('\n', f);
            used = 0;
        }
        help_lines(f, c->help, used, HELP_COL);
    }
    fprintf(f, "\nExit status: 0 ok, 1 API or network error, 2 usage error.\n\nOptions:\n");
    fy_args_usage(f, opts);
}

typedef struct {
    int (*match)(const ferry_cmd *cmd, const char *key);
    void (*item)(const ferry_cmd *cmd, char *out, size_t n);
    const char *conj; /* " or ", " and " */
} cmd_list_kind;

/* Lists the commands KIND matches with KEY into OUT, each as KIND writes it,
 * as "a", "a or b", "a, b or c". */
static void cmd_list(const cmd_list_kind *kind, const char *key, char *out, size_t len)
{
    char item[80];
    size_t n = 0, i = 0;
    for (size_t k = 0; k < NCOMMANDS; k++) {
        n += kind->match(&commands[k], key) != 0;
    }
    out[0] = '\0';
    for (size_t k = 0; k < NCOMMANDS; k++) {
        if (kind->match(&commands[k], key)) {
            kind->item(&commands[k], item, sizeof item);
            const char *sep = i == 0 ? "" : i + 1 == n ? kind->conj : ", ";
            size_t used = strlen(out);
            snprintf(out + used, len - used, "%s%s", sep, item);
            i++;
        }
    }
}

static int in_group(const ferry_cmd *cmd, const char *group)
{
    return strcmp(cmd->group, group) == 0;
}

/* "update ID" */
static void sub_with_arg(const ferry_cmd *cmd, char *out, size_t n)
{
    const char *arg = cmd->arg ? strrchr(cmd->arg, ' ') : NULL;
    snprintf(out, n, "%s%s", cmd->sub, arg ? arg : "");
}

static int takes_own(const ferry_cmd *cmd, const char *opt)
{
    return has_name(cmd->opts, opt);
}

/* "'keys update'" */
static void quoted_words(const ferry_cmd *cmd, char *out, size_t n)
{
    char words[64];
    cmd_words(cmd, words, sizeof words);
    snprintf(out, n, "'%s'", words);
}

/* Prints that GROUP needs one of its subcommands ("create, list, update ID or
 * revoke ID"), and returns 2. */
static int refuse_group(const char *group)
{
    static const cmd_list_kind subs = {in_group, sub_with_arg, " or "};
    char list[256];
    cmd_list(&subs, group, list, sizeof list);
    return refuse("'%s' needs a subcommand: %s (see --help)", group, list);
}

/* The command POS[0..NPOS) names, with A->arg set; or NULL with the exit
 * status in *RC after saying what is wrong. */
static const ferry_cmd *cmd_find(ferry_args *a, char **pos, int npos, int *rc)
{
    const ferry_cmd *cmd = NULL;
    int group = 0;
    for (size_t k = 0; k < NCOMMANDS && !cmd; k++) {
        const ferry_cmd *c = &commands[k];
        if (strcmp(c->group, pos[0]) == 0) {
            group = 1;
            cmd = !c->sub || (npos >= 2 && strcmp(c->sub, pos[1]) == 0) ? c : NULL;
        }
    }
    if (!cmd) {
        *rc = group ? refuse_group(pos[0]) : refuse("unknown command '%s' (see --help)", pos[0]);
        return NULL;
    }
    int words = cmd->sub ? 2 : 1, want = words + (cmd->arg != NULL);
    char name[64];
    cmd_words(cmd, name, sizeof name);
    if (npos != want) {
        *rc = npos < want ? refuse("%s needs the %s", name, cmd->arg)
                          : refuse("unexpected argument (see --help)");
        return NULL;
    }
    a->arg = cmd->arg ? pos[words] : NULL;
    return cmd;
}

/* Reads the command line into A and finds the command. Returns -1 to go on
 * (with *CMD), or the exit status (after --help, --version or a usage
 * error). */
static int ferry_parse(ferry_args *a, const fy_opt *opts, char **pos, const ferry_cmd **cmd)
{
    char err[512];
    int npos = 0, rc = -1;
    if (fy_args_parse(opts, a->argc, a->argv, pos, &npos, err, sizeof err) ||
        fy_cli_log_apply(&a->log, err, sizeof err)) {
        return refuse("%s", err);
    }
    if (a->help) {
        usage(stdout, opts);
        return 0;
    }
    if (a->version) {
        fy_cli_print_version(stdout, "ferry");
        return 0;
    }
    if (npos == 0) {
        usage(stderr, opts);
        return 2;
    }
    *cmd = cmd_find(a, pos, npos, &rc);
    return rc;
}

static int cmd_takes(const char *name, void *arg)
{
    const ferry_cmd *cmd = arg;
    return has_name(opts_shared, name) || has_name(cmd->opts, name);
}

/* Refuses an option the command does not take, naming the commands that do:
 * one message for every command. Returns 2, or 0 when all are its own. */
static int refuse_foreign(const fy_opt *opts, const ferry_args *a, const ferry_cmd *cmd)
{
    const fy_opt *o = fy_args_refused(opts, a->argc, a->argv, cmd_takes, (void *)cmd);
    if (!o) {
        return 0;
    }
    static const cmd_list_kind takers = {takes_own, quoted_words, " and "};
    char list[256], name[64];
    cmd_list(&takers, o->name, list, sizeof list);
    cmd_words(cmd, name, sizeof name);
    return refuse("--%s does not go with '%s' (it can only go with %s)", o->name, name, list);
}

/* Refuses what the command cannot take or take so. Returns -1 to go on, or 2. */
static int ferry_validate(ferry_args *a, const fy_opt *opts, const ferry_cmd *cmd)
{
    if (refuse_foreign(opts, a, cmd) || (cmd->check && cmd->check(a))) {
        return 2;
    }
    return -1;
}

/* Reaches the gateway and runs the command. Returns the exit status. */
static int ferry_start(const ferry_args *a, const ferry_cmd *cmd)
{
    char err[512];
    fy_ctl *c = NULL;
    fy_ctl_options co = {.data_dir = a->data_dir,
                         .admin_url = a->admin,
                         .token_file = a->token_file,
                         .ca_file = a->ca};
    int rc = fy_ctl_open(&co, &c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ferry: %s\n", err);
        return rc == FY_EINVAL ? 2 : 1;
    }
    int status = cmd->run(c, a);
    fy_ctl_close(c);
    return status;
}

int main(int argc, char **argv)
{
    ferry_args a = {
        .ko = {.rpm = -1, .tpm = -1, .concurrency = -1, .burst = -1},
        .ho = {.rpm = -1},
        .argc = argc - 1,
        .argv = argv + 1,
    };
    const fy_opt opts[] = FERRY_OPTIONS(&a);
    char *pos[argc > 0 ? argc : 1];
    const ferry_cmd *cmd = NULL;
    int rc = ferry_parse(&a, opts, pos, &cmd);
    if (rc < 0) {
        rc = ferry_validate(&a, opts, cmd);
    }
    return rc < 0 ? ferry_start(&a, cmd) : rc;
}
