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
    fprintf(f, "Usage: ferry [OPTIONS] COMMAND\n\n"
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
               "                                  and it cannot reconnect\n\n"
               "Exit status: 0 ok, 1 API or network error, 2 usage error.\n\n"
               "Options:\n");
    fy_args_usage(f, opts);
}

static void fmt_time(json_t *v, char *out, size_t n)
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

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
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

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    if (s) {
        printf("%s\n", s);
        free(s);
    }
}

/* --- commands ---------------------------------------------------------------------- */

static int cmd_status(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    char err[512];
    if (fy_ctl_call(c, "GET", "/admin/v1/status", NULL, &r, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (r.status != 200) {
        rc = api_error(&r);
    } else if (as_json) {
        print_json(r.json);
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
    int rc = fy_ctl_call(c, "POST", "/admin/v1/tokens", body, &r, err, sizeof err);
    json_decref(body);
    if (rc) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    rc = 0;
    const char *token = json_string_value(json_object_get(r.json, "token"));
    if (r.status != 201 && r.status != 200) {
        rc = api_error(&r);
    } else if (!token) {
        fprintf(stderr, "ferry: the gateway's answer has no token\n");
        rc = 1;
    } else if (as_json) {
        print_json(r.json);
    } else {
        char exp[32];
        fmt_time(json_object_get(r.json, "expires_at"), exp, sizeof exp);
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
    char err[512];
    if (fy_ctl_call(c, "GET", "/admin/v1/tokens", NULL, &r, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (r.status != 200) {
        rc = api_error(&r);
    } else if (as_json) {
        print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "tokens");
        printf("%-22s %-20s %-21s %-21s %s\n", "ID", "RUNNER", "CREATED", "EXPIRES", "STATE");
        size_t i;
        json_t *t;
        time_t now = time(NULL);
        json_array_foreach(a, i, t)
        {
            char created[32], expires[32], used[32], state[48];
            fmt_time(json_object_get(t, "created_at"), created, sizeof created);
            fmt_time(json_object_get(t, "expires_at"), expires, sizeof expires);
            json_t *u = json_object_get(t, "used_at");
            if (json_is_integer(u)) {
                fmt_time(u, used, sizeof used);
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
    char err[512];
    if (fy_ctl_call(c, "GET", "/admin/v1/runners", NULL, &r, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (r.status != 200) {
        rc = api_error(&r);
    } else if (as_json) {
        print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "runners");
        printf("%-20s %-10s %-6s %-10s %-21s %s\n", "NAME", "STATE", "CONNS", "IN-FLIGHT",
               "ENROLLED", "FINGERPRINT");
        size_t i, j;
        json_t *x, *conn;
        json_array_foreach(a, i, x)
        {
            char enrolled[32];
            fmt_time(json_object_get(x, "enrolled_at"), enrolled, sizeof enrolled);
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
                fmt_time(json_object_get(conn, "since"), since, sizeof since);
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
    char err[512], path[160];
    snprintf(path, sizeof path, "/admin/v1/runners/%s/revoke", name);
    if (fy_ctl_call(c, "POST", path, NULL, &r, err, sizeof err)) {
        fprintf(stderr, "ferry: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (r.status != 200) {
        rc = api_error(&r);
    } else if (as_json) {
        print_json(r.json);
    } else {
        char when[32];
        fmt_time(json_object_get(r.json, "revoked_at"), when, sizeof when);
        printf("runner \"%s\" revoked at %s; %lld connection(s) dropped; it cannot reconnect\n",
               name, when,
               (long long)json_integer_value(json_object_get(r.json, "connections_dropped")));
    }
    json_decref(r.json);
    return rc;
}

/* --- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    int help = 0, version = 0, as_json = 0;
    const char *data_dir = NULL, *admin = NULL, *token_file = NULL, *ca = NULL;
    const char *name = NULL, *ttl = NULL;
    fy_cli_log_opts log = {0};
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &data_dir, "DIR", "a gateway's data directory on this machine"},
        {"admin", FY_OPT_STR, &admin, "URL", "a gateway's admin listener, https://HOST:PORT"},
        {"admin-token-file", FY_OPT_STR, &token_file, "FILE",
         "file with the admin token (default with --data-dir: DIR/admin.token)"},
        {"ca", FY_OPT_STR, &ca, "FILE",
         "CA of the admin listener's certificate (default DIR/ca.crt, else the system CAs)"},
        {"json", FY_OPT_FLAG, &as_json, NULL, "print the API's JSON instead of tables"},
        {"name", FY_OPT_STR, &name, "RUNNER", "tokens create: the runner name to bind"},
        {"ttl", FY_OPT_STR, &ttl, "DURATION", "tokens create: lifetime (default 1h, at most 30d)"},
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
    enum { C_NONE, C_STATUS, C_TCREATE, C_TLIST, C_RLIST, C_RREVOKE } cmd = C_NONE;
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
    }
    if (cmd == C_NONE) {
        if (strcmp(cmdname, "tokens") == 0 || strcmp(cmdname, "runners") == 0) {
            fprintf(stderr, "ferry: '%s' needs a subcommand: %s (see --help)\n", cmdname,
                    cmdname[0] == 't' ? "create or list" : "list or revoke NAME");
        } else {
            fprintf(stderr, "ferry: unknown command '%s' (see --help)\n", cmdname);
        }
        return 2;
    }
    if (npos != want) {
        fprintf(stderr, "ferry: %s\n",
                cmd == C_RREVOKE && npos < want ? "runners revoke needs the runner NAME"
                                                : "unexpected argument (see --help)");
        return 2;
    }
    if ((name || ttl) && cmd != C_TCREATE) {
        fprintf(stderr, "ferry: --name and --ttl go with 'tokens create'\n");
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
    default:
        status = 2;
    }
    fy_ctl_close(c);
    return status;
}
