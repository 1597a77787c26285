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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f,
            "Usage: ferry [OPTIONS] COMMAND\n\n"
            "ferry manages a gateway through its admin API. Reach a gateway on this machine\n"
            "with --data-dir DIR (its state.json, admin.token and ca.crt are used), or a\n"
            "remote one with --admin https://HOST:PORT --admin-token-file FILE --ca FILE.\n\n"
            "Commands:\n"
            "  status                          the gateway's listeners and counters\n"
            "  tokens create --name RUNNER [--ttl 1h]\n"
            "                                  a one-time enrollment token bound to RUNNER\n"
            "                                  (printed alone on the last line)\n"
            "  tokens list                     enrollment tokens (never their secrets)\n"
            "  runners list                    enrolled runners, their connections and\n"
            "                                  requests in flight\n"
            "  runners revoke NAME             revoke a runner: its connections drop at once\n"
            "                                  and it cannot reconnect\n"
            "  keys create --name NAME [--owner TEXT] [--rpm N [--burst N]] [--tpm N]\n"
            "              [--concurrency N] [--models a,b] [--runners r1,r2] [--hooks h1]\n"
            "              [--expires 30d]\n"
            "                                  a new API key (printed once, alone on the last\n"
            "                                  line); limits of 0 or omitted mean none, empty\n"
            "                                  scopes mean any. --rpm N admits a burst of\n"
            "                                  ceil(N/6) requests at once (ten seconds' worth),\n"
            "                                  then one every 60/N s; --burst sets it (1..N)\n"
            "  keys list                       API keys: id, name, prefix, limits, scopes,\n"
            "                                  created, last used, usage (never the key)\n"
            "  keys update ID [--name NAME] [--owner TEXT] [--rpm N] [--burst N] [--tpm N]\n"
            "              [--concurrency N] [--models a,b] [--runners r1,r2] [--hooks h1]\n"
            "              [--expires 30d|never]\n"
            "                                  change a key; the next request sees the change\n"
            "                                  ('' clears a scope list: any)\n"
            "  keys revoke ID                  revoke a key: its next request is refused\n"
            "  hooks create --name NAME --runner RUNNER --path /PATH\n"
            "               --verify github|stripe|slack|hmac-sha256|none --secret-file FILE\n"
            "               [--tolerance 300s] [--async] [--rpm N] [--max-body 1MiB]\n"
            "               [--header NAME [--encoding hex|base64] [--timestamp-header NAME]]\n"
            "                                  a webhook endpoint; prints its public URL\n"
            "                                  /hooks/<id> alone on the last line. Requests are\n"
            "                                  verified before anything reaches the runner\n"
            "                                  (--header etc. configure hmac-sha256)\n"
            "  hooks list                      hooks, their delivery counts (never secrets)\n"
            "  hooks delete ID                 delete a hook and its queued events\n"
            "  hooks rotate-secret ID --secret-file FILE [--grace 24h]\n"
            "                                  new secret; the old one is still accepted for\n"
            "                                  the grace period\n"
            "  usage [--key ID] [--by total|hour]\n"
            "                                  requests, tokens and bytes per key\n\n"
            "Exit status: 0 ok, 1 API or network error, 2 usage error.\n\n"
            "Options:\n");
    fy_args_usage(f, opts);
}

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

/* --- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    int help = 0, version = 0, as_json = 0;
    const char *data_dir = NULL, *admin = NULL, *token_file = NULL, *ca = NULL;
    const char *name = NULL, *ttl = NULL, *key = NULL, *by = NULL;
    key_opts ko = {.rpm = -1, .tpm = -1, .concurrency = -1, .burst = -1};
    fy_ctl_hook_opts ho = {.rpm = -1};
    fy_cli_log_opts log = {0};
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &data_dir, "DIR", "a gateway's data directory on this machine"},
        {"admin", FY_OPT_STR, &admin, "URL", "a gateway's admin listener, https://HOST:PORT"},
        {"admin-token-file", FY_OPT_STR, &token_file, "FILE",
         "file with the admin token (default with --data-dir: DIR/admin.token)"},
        {"ca", FY_OPT_STR, &ca, "FILE",
         "CA of the admin listener's certificate (default DIR/ca.crt, else the system CAs)"},
        {"json", FY_OPT_FLAG, &as_json, NULL, "print the API's JSON instead of tables"},
        {"name", FY_OPT_STR, &name, "NAME",
         "tokens create: the runner to bind; keys create/update: the key's name"},
        {"ttl", FY_OPT_STR, &ttl, "DURATION", "tokens create: lifetime (default 1h, at most 30d)"},
        {"owner", FY_OPT_STR, &ko.owner, "TEXT", "keys create/update: who the key is for"},
        {"rpm", FY_OPT_INT, &ko.rpm, "N", "keys create/update: requests per minute (0: no limit)"},
        {"burst", FY_OPT_INT, &ko.burst, "N",
         "keys create/update: requests --rpm admits at once, 1..rpm (default ceil(rpm/6), ten "
         "seconds' worth; 0: back to the default); needs an rpm limit"},
        {"tpm", FY_OPT_INT, &ko.tpm, "N", "keys create/update: tokens per minute (0: no limit)"},
        {"concurrency", FY_OPT_INT, &ko.concurrency, "N",
         "keys create/update: requests in flight at once (0: no limit)"},
        {"models", FY_OPT_STR, &ko.models, "a,b",
         "keys create/update: models allowed (default any)"},
        {"runners", FY_OPT_STR, &ko.runners, "r1,r2",
         "keys create/update: runners allowed (default any)"},
        {"hooks", FY_OPT_STR, &ko.hooks, "h1,h2",
         "keys create/update: hooks allowed (default any)"},
        {"expires", FY_OPT_STR, &ko.expires, "DURATION",
         "keys create/update: lifetime from now (30d, 12h; update: or never)"},
        {"runner", FY_OPT_STR, &ho.runner, "RUNNER", "hooks create: the runner to forward to"},
        {"path", FY_OPT_STR, &ho.path, "/PATH", "hooks create: the path on the runner"},
        {"verify", FY_OPT_STR, &ho.verify, "KIND",
         "hooks create: github, stripe, slack, hmac-sha256 or none"},
        {"secret-file", FY_OPT_STR, &ho.secret_file, "FILE",
         "hooks create/rotate-secret: file holding the signing secret"},
        {"tolerance", FY_OPT_STR, &ho.tolerance, "DURATION",
         "hooks create: how far a signed timestamp may be from now (default 300s)"},
        {"async", FY_OPT_FLAG, &ho.async, NULL,
         "hooks create: answer 202 at once and deliver from the durable queue"},
        {"header", FY_OPT_STR, &ho.header, "NAME", "hooks create (hmac-sha256): signature header"},
        {"encoding", FY_OPT_STR, &ho.encoding, "hex|base64",
         "hooks create (hmac-sha256): signature encoding (default hex)"},
        {"timestamp-header", FY_OPT_STR, &ho.ts_header, "NAME",
         "hooks create (hmac-sha256): signed timestamp header (signs \"<ts>.<body>\")"},
        {"max-body", FY_OPT_SIZE, &ho.max_body, "SIZE",
         "hooks create: largest body (default 1MiB, at most 16MiB)"},
        {"grace", FY_OPT_STR, &ho.grace, "DURATION",
         "hooks rotate-secret: how long the old secret stays valid (default 24h)"},
        {"key", FY_OPT_STR, &key, "ID", "usage: only this key"},
        {"by", FY_OPT_STR, &by, "total|hour", "usage: totals (default) or per hour"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help and exit"},
        {"version", FY_OPT_FLAG, &version, NULL, "show version and library versions and exit"},
        FY_CLI_LOG_OPTS(&log),
        {0},
    };
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err) ||
        fy_cli_log_apply(&log, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 2;
    }
    if (help) {
        usage(stdout, opts);
        return 0;
    }
    if (version) {
        fy_cli_print_version(stdout, "ferry");
        return 0;
    }
    if (npos == 0) {
        usage(stderr, opts);
        return 2;
    }
    /* Which command, and are its arguments right? */
    enum {
        C_NONE,
        C_STATUS,
        C_TCREATE,
        C_TLIST,
        C_RLIST,
        C_RREVOKE,
        C_KCREATE,
        C_KLIST,
        C_KUPDATE,
        C_KREVOKE,
        C_USAGE,
        C_HCREATE,
        C_HLIST,
        C_HDELETE,
        C_HROTATE
    } cmd = C_NONE;
    const char *cmdname = pos[0];
    int want = 1;
    if (strcmp(pos[0], "status") == 0) {
        cmd = C_STATUS;
    } else if (strcmp(pos[0], "tokens") == 0 && npos >= 2) {
        cmd = strcmp(pos[1], "create") == 0 ? C_TCREATE
              : strcmp(pos[1], "list") == 0 ? C_TLIST
                                            : C_NONE;
        want = 2;
    } else if (strcmp(pos[0], "runners") == 0 && npos >= 2) {
        cmd = strcmp(pos[1], "list") == 0     ? C_RLIST
              : strcmp(pos[1], "revoke") == 0 ? C_RREVOKE
                                              : C_NONE;
        want = cmd == C_RREVOKE ? 3 : 2;
    } else if (strcmp(pos[0], "keys") == 0 && npos >= 2) {
        cmd = strcmp(pos[1], "create") == 0   ? C_KCREATE
              : strcmp(pos[1], "list") == 0   ? C_KLIST
              : strcmp(pos[1], "update") == 0 ? C_KUPDATE
              : strcmp(pos[1], "revoke") == 0 ? C_KREVOKE
                                              : C_NONE;
        want = cmd == C_KUPDATE || cmd == C_KREVOKE ? 3 : 2;
    } else if (strcmp(pos[0], "usage") == 0) {
        cmd = C_USAGE;
    } else if (strcmp(pos[0], "hooks") == 0 && npos >= 2) {
        cmd = strcmp(pos[1], "create") == 0          ? C_HCREATE
              : strcmp(pos[1], "list") == 0          ? C_HLIST
              : strcmp(pos[1], "delete") == 0        ? C_HDELETE
              : strcmp(pos[1], "rotate-secret") == 0 ? C_HROTATE
                                                     : C_NONE;
        want = cmd == C_HDELETE || cmd == C_HROTATE ? 3 : 2;
    }
    if (cmd == C_NONE) {
        if (strcmp(cmdname, "hooks") == 0) {
            fprintf(stderr, "ferry: 'hooks' needs a subcommand: create, list, delete ID or "
                            "rotate-secret ID (see --help)\n");
        } else if (strcmp(cmdname, "tokens") == 0 || strcmp(cmdname, "runners") == 0 ||
                   strcmp(cmdname, "keys") == 0) {
            fprintf(stderr, "ferry: '%s' needs a subcommand: %s (see --help)\n", cmdname,
                    cmdname[0] == 't'   ? "create or list"
                    : cmdname[0] == 'k' ? "create, list, update ID or revoke ID"
                                        : "list or revoke NAME");
        } else {
            fprintf(stderr, "ferry: unknown command '%s' (see --help)\n", cmdname);
        }
        return 2;
    }
    if (npos != want) {
        fprintf(stderr, "ferry: %s\n",
                cmd == C_RREVOKE && npos < want   ? "runners revoke needs the runner NAME"
                : cmd == C_KREVOKE && npos < want ? "keys revoke needs the key ID"
                : cmd == C_KUPDATE && npos < want ? "keys update needs the key ID"
                : cmd == C_HDELETE && npos < want ? "hooks delete needs the hook ID"
                : cmd == C_HROTATE && npos < want ? "hooks rotate-secret needs the hook ID"
                                                  : "unexpected argument (see --help)");
        return 2;
    }
    int hook_fields = ho.runner || ho.path || ho.verify || ho.tolerance || ho.async || ho.header ||
                      ho.encoding || ho.ts_header || ho.max_body;
    if (hook_fields && cmd != C_HCREATE) {
        fprintf(stderr, "ferry: --runner, --path, --verify, --tolerance, --async, --header, "
                        "--encoding, --timestamp-header and --max-body go with 'hooks create'\n");
        return 2;
    }
    if (ho.secret_file && cmd != C_HCREATE && cmd != C_HROTATE) {
        fprintf(stderr, "ferry: --secret-file goes with 'hooks create' and 'hooks "
                        "rotate-secret'\n");
        return 2;
    }
    if (ho.grace && cmd != C_HROTATE) {
        fprintf(stderr, "ferry: --grace goes with 'hooks rotate-secret'\n");
        return 2;
    }
    if (cmd == C_HCREATE) {
        const char *bad =
            !name || !name[0] || strlen(name) > 127 ? "hooks create needs --name (1..127 chars)"
            : !ho.runner || !valid_name(ho.runner)  ? "hooks create needs --runner RUNNER (a "
                                                      "runner name)"
            : !ho.path || ho.path[0] != '/'         ? "hooks create needs --path /PATH"
            : !ho.verify ? "hooks create needs --verify github|stripe|slack|hmac-sha256|none"
            : !ho.secret_file && strcmp(ho.verify, "none") != 0
                ? "hooks create needs --secret-file FILE (the tool's signing secret)"
            : (ho.header || ho.encoding || ho.ts_header) && strcmp(ho.verify, "hmac-sha256") != 0
                ? "--header, --encoding and --timestamp-header go with --verify hmac-sha256"
            : strcmp(ho.verify, "hmac-sha256") == 0 && !ho.header
                ? "--verify hmac-sha256 needs --header NAME (the signature header)"
            : ho.encoding && strcmp(ho.encoding, "hex") != 0 && strcmp(ho.encoding, "base64") != 0
                ? "--encoding must be hex or base64"
                : NULL;
        if (bad) {
            fprintf(stderr, "ferry: %s\n", bad);
            return 2;
        }
        ho.name = name;
        ho.rpm = ko.rpm;
        ko.rpm = -1; /* not a key field here */
        if (ho.rpm == -1 && fy_args_find(argc - 1, argv + 1, "rpm")) {
            ho.rpm = -2;
        }
    }
    if (cmd == C_HROTATE && !ho.secret_file) {
        fprintf(stderr, "ferry: hooks rotate-secret needs --secret-file FILE (the new secret)\n");
        return 2;
    }
    if ((cmd == C_HDELETE || cmd == C_HROTATE) &&
        (strncmp(pos[2], "hk_", 3) != 0 || strlen(pos[2]) > 40)) {
        fprintf(stderr, "ferry: '%s' is not a hook id (hk_...; see 'ferry hooks list')\n", pos[2]);
        return 2;
    }
    int key_cmd = cmd == C_KCREATE || cmd == C_KUPDATE;
    int key_fields = ko.owner || ko.models || ko.runners || ko.hooks || ko.expires ||
                     ko.rpm != -1 || ko.tpm != -1 || ko.concurrency != -1 || ko.burst != -1;
    if (name && cmd != C_TCREATE && !key_cmd && cmd != C_HCREATE) {
        fprintf(stderr, "ferry: --name goes with 'tokens create', 'keys create', 'keys "
                        "update' and 'hooks create'\n");
        return 2;
    }
    if (ttl && cmd != C_TCREATE) {
        fprintf(stderr, "ferry: --ttl goes with 'tokens create'\n");
        return 2;
    }
    if (key_fields && !key_cmd) {
        fprintf(stderr, "ferry: --owner, --rpm, --burst, --tpm, --concurrency, --models, "
                        "--runners, --hooks and --expires go with 'keys create' and 'keys "
                        "update'\n");
        return 2;
    }
    if ((key || by) && cmd != C_USAGE) {
        fprintf(stderr, "ferry: --key and --by go with 'usage'\n");
        return 2;
    }
    if (cmd == C_KCREATE && !name) {
        fprintf(stderr, "ferry: keys create needs --name NAME\n");
        return 2;
    }
    if (cmd == C_KUPDATE && !name && !key_fields) {
        fprintf(stderr, "ferry: keys update needs something to change (see --help)\n");
        return 2;
    }
    if (key_cmd && name && (!name[0] || strlen(name) > 127)) {
        fprintf(stderr, "ferry: --name must be 1 to 127 characters\n");
        return 2;
    }
    if (ho.rpm < -1) {
        fprintf(stderr, "ferry: --rpm takes a number >= 0 (0: no limit)\n");
        return 2;
    }
    if ((ko.rpm < -1 || ko.tpm < -1 || ko.concurrency < -1) ||
        (ko.rpm == -1 && cmd != C_HCREATE && fy_args_find(argc - 1, argv + 1, "rpm")) ||
        (ko.tpm == -1 && fy_args_find(argc - 1, argv + 1, "tpm")) ||
        (ko.concurrency == -1 && fy_args_find(argc - 1, argv + 1, "concurrency"))) {
        fprintf(stderr, "ferry: --rpm, --tpm and --concurrency take a number >= 0 (0: no "
                        "limit)\n");
        return 2;
    }
    if (ko.burst < -1 || (ko.burst == -1 && fy_args_find(argc - 1, argv + 1, "burst"))) {
        fprintf(stderr, "ferry: --burst takes a number from 1 to the key's rpm (0: the default, "
                        "ceil(rpm/6))\n");
        return 2;
    }

    uint64_t exp_ms;
    if (ko.expires && !(cmd == C_KUPDATE && strcmp(ko.expires, "never") == 0) &&
        (fy_parse_duration_ms(ko.expires, &exp_ms) || exp_ms < 1000 || exp_ms % 1000)) {
        fprintf(stderr, "ferry: --expires must be a duration like 2s, 12h or 30d%s\n",
                cmd == C_KUPDATE ? " (or never)" : "");
        return 2;
    }
    if ((cmd == C_KUPDATE || cmd == C_KREVOKE) && !valid_key_id(pos[2])) {
        fprintf(stderr, "ferry: '%s' is not a key id (key_...; see 'ferry keys list')\n", pos[2]);
        return 2;
    }
    if (key && !valid_key_id(key)) {
        fprintf(stderr, "ferry: '%s' is not a key id (key_...; see 'ferry keys list')\n", key);
        return 2;
    }
    if (by && strcmp(by, "total") != 0 && strcmp(by, "hour") != 0) {
        fprintf(stderr, "ferry: --by must be total or hour\n");
        return 2;
    }
    if (cmd == C_TCREATE && !name) {
        fprintf(stderr, "ferry: tokens create needs --name RUNNER\n");
        return 2;
    }
    if (cmd == C_TCREATE && !valid_name(name)) {
        fprintf(stderr, "ferry: --name must be 1 to 63 of a-z, 0-9 and '-', not starting with "
                        "'-'\n");
        return 2;
    }
    uint64_t ttl_ms;
    if (ttl && (fy_parse_duration_ms(ttl, &ttl_ms) || ttl_ms < 1000)) {
        fprintf(stderr, "ferry: --ttl must be a duration like 90s, 1h or 7d\n");
        return 2;
    }
    if (cmd == C_RREVOKE && !valid_name(pos[2])) {
        fprintf(stderr, "ferry: '%s' is not a runner name\n", pos[2]);
        return 2;
    }
    fy_ctl *c = NULL;
    fy_ctl_options co = {
        .data_dir = data_dir, .admin_url = admin, .token_file = token_file, .ca_file = ca};
    int rc = fy_ctl_open(&co, &c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ferry: %s\n", err);
        return rc == FY_EINVAL ? 2 : 1;
    }
    int status;
    switch (cmd) {
    case C_STATUS:
        status = cmd_status(c, as_json);
        break;
    case C_TCREATE:
        status = cmd_tokens_create(c, as_json, name, ttl);
        break;
    case C_TLIST:
        status = cmd_tokens_list(c, as_json);
        break;
    case C_RLIST:
        status = cmd_runners_list(c, as_json);
        break;
    case C_RREVOKE:
        status = cmd_runners_revoke(c, as_json, pos[2]);
        break;
    case C_KCREATE:
        ko.name = name;
        status = cmd_keys_create(c, as_json, &ko);
        break;
    case C_KLIST:
        status = cmd_keys_list(c, as_json);
        break;
    case C_KUPDATE:
        ko.name = name;
        status = cmd_keys_update(c, as_json, pos[2], &ko);
        break;
    case C_KREVOKE:
        status = cmd_keys_revoke(c, as_json, pos[2]);
        break;
    case C_USAGE:
        status = cmd_usage(c, as_json, key, by);
        break;
    case C_HCREATE:
        status = fy_ctl_hooks_create(c, as_json, &ho);
        break;
    case C_HLIST:
        status = fy_ctl_hooks_list(c, as_json);
        break;
    case C_HDELETE:
        status = fy_ctl_hooks_delete(c, as_json, pos[2]);
        break;
    case C_HROTATE:
        status = fy_ctl_hooks_rotate(c, as_json, pos[2], &ho);
        break;
    default:
        status = 2;
    }
    fy_ctl_close(c);
    return status;
}
