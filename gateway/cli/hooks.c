/* hooks.c: `ferry hooks create|list|delete|rotate-secret`.
 *
 * The signing secret is read from a file (never from the command line, where
 * other users could see it in the process list), sent once over the admin
 * API's TLS and wiped here; the gateway never shows it again. */
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "gateway/cli/ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOOK_SECRET_FILE_MAX 4096

/* Adds "secret" from FILE to BODY (a trailing newline is not part of it). */
static int add_secret(json_t *body, const char *file)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fy_file_read(file, HOOK_SECRET_FILE_MAX, &text, &len);
    if (rc) {
        fprintf(stderr, "ferry: cannot read the secret file %s: %s\n", file, fy_strerror(rc));
        return 1;
    }
    size_t n = len;
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r')) {
        n--;
    }
    if (n == 0 || n > 1024 || memchr(text, 0, n)) {
        fprintf(stderr, "ferry: the secret in %s must be 1..1024 bytes of text\n", file);
        fy_secure_zero(text, len);
        free(text);
        return 1;
    }
    json_object_set_new(body, "secret", json_stringn(text, n));
    fy_secure_zero(text, len);
    free(text);
    return 0;
}

static void wipe_secret(json_t *body)
{
    json_t *v = json_object_get(body, "secret");
    if (json_is_string(v)) {
        fy_secure_zero((char *)json_string_value(v), json_string_length(v));
    }
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

int fy_ctl_hooks_create(fy_ctl *c, int as_json, const fy_ctl_hook_opts *o)
{
    fy_ctl_result r;
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:b}", "name", o->name, "runner", o->runner, "path",
                             o->path, "verify", o->verify, "async", o->async);
    if (o->secret_file && add_secret(body, o->secret_file)) {
        json_decref(body);
        return 1;
    }
    struct {
        const char *k, *v;
    } opt[] = {{"tolerance", o->tolerance},
               {"header", o->header},
               {"encoding", o->encoding},
               {"timestamp_header", o->ts_header}};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        if (opt[i].v) {
            json_object_set_new(body, opt[i].k, json_string(opt[i].v));
        }
    }
    if (o->rpm >= 0) {
        json_object_set_new(body, "rpm", json_integer(o->rpm));
    }
    if (o->max_body) {
        json_object_set_new(body, "max_body", json_integer((json_int_t)o->max_body));
    }
    int rc = fy_ctl_api(c, "POST", "/admin/v1/hooks", body, 201, &r);
    wipe_secret(body);
    json_decref(body);
    if (rc) {
        return 1;
    }
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *state = fy_ctl_state(c);
        const char *pub = json_string_value(json_object_get(state, "public"));
        const char *scheme = json_string_value(json_object_get(state, "public_scheme"));
        printf("hook %s (\"%s\"): verify %s, forwards to runner %s at %s, %s\n", jstr(r.json, "id"),
               jstr(r.json, "name"), jstr(r.json, "verify"), jstr(r.json, "runner"),
               jstr(r.json, "path"),
               json_is_true(json_object_get(r.json, "async"))
                   ? "async (202 at once, delivered from the queue)"
                   : "sync (the caller gets the runner's answer)");
        printf("point the tool at this URL (the last line below; the id is its only secret "
               "part):\n");
        if (pub) {
            printf("%s://%s%s\n", scheme ? scheme : "https", pub, jstr(r.json, "url"));
        } else {
            printf("%s\n", jstr(r.json, "url"));
        }
    }
    json_decref(r.json);
    return 0;
}

int fy_ctl_hooks_list(fy_ctl *c, int as_json)
{
    fy_ctl_result r;
    if (fy_ctl_api(c, "GET", "/admin/v1/hooks", NULL, 200, &r)) {
        return 1;
    }
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        json_t *a = json_object_get(r.json, "hooks"), *h;
        size_t i;
        printf("%-26s %-16s %-11s %-16s %-20s %-5s %6s %9s %6s %4s %s\n", "ID", "NAME", "VERIFY",
               "RUNNER", "PATH", "MODE", "RPM", "DELIVERED", "QUEUED", "DEAD", "CREATED");
        json_array_foreach(a, i, h)
        {
            char created[32], rpm[24] = "-";
            fy_ctl_fmt_time(json_object_get(h, "created_at"), created, sizeof created);
            json_int_t v = json_integer_value(json_object_get(h, "rpm"));
            if (v > 0) {
                snprintf(rpm, sizeof rpm, "%lld", (long long)v);
            }
            printf("%-26s %-16s %-11s %-16s %-20s %-5s %6s %9lld %6lld %4lld %s%s\n", jstr(h, "id"),
                   jstr(h, "name"), jstr(h, "verify"), jstr(h, "runner"), jstr(h, "path"),
                   json_is_true(json_object_get(h, "async")) ? "async" : "sync", rpm,
                   (long long)json_integer_value(json_object_get(h, "delivered")),
                   (long long)json_integer_value(json_object_get(h, "queued")),
                   (long long)json_integer_value(json_object_get(h, "dead")), created,
                   json_is_true(json_object_get(h, "previous_secret_active"))
                       ? " (old secret still accepted)"
                       : "");
        }
    }
    json_decref(r.json);
    return 0;
}

int fy_ctl_hooks_delete(fy_ctl *c, int as_json, const char *id)
{
    fy_ctl_result r;
    char path[160];
    snprintf(path, sizeof path, "/admin/v1/hooks/%s", id);
    if (fy_ctl_api(c, "DELETE", path, NULL, 200, &r)) {
        return 1;
    }
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        printf("hook %s deleted, with its queued events; its URL now answers 404\n", id);
    }
    json_decref(r.json);
    return 0;
}

int fy_ctl_hooks_rotate(fy_ctl *c, int as_json, const char *id, const fy_ctl_hook_opts *o)
{
    fy_ctl_result r;
    char path[160];
    snprintf(path, sizeof path, "/admin/v1/hooks/%s/rotate-secret", id);
    json_t *body = json_object();
    if (add_secret(body, o->secret_file)) {
        json_decref(body);
        return 1;
    }
    if (o->grace) {
        json_object_set_new(body, "grace", json_string(o->grace));
    }
    int rc = fy_ctl_api(c, "POST", path, body, 200, &r);
    wipe_secret(body);
    json_decref(body);
    if (rc) {
        return 1;
    }
    if (as_json) {
        fy_ctl_print_json(r.json);
    } else {
        char until[32];
        fy_ctl_fmt_time(json_object_get(r.json, "previous_secret_until"), until, sizeof until);
        printf("hook %s: new secret in use; the old one is still accepted until %s\n", id, until);
    }
    json_decref(r.json);
    return 0;
}
