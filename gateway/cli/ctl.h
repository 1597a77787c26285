/* ctl.h: the `ferry` admin CLI's client for a gateway's admin API.
 *
 *   ferry.c  the command table (each command's options, argument, check and
 *            handler), output (tables or --json)
 *   api.c    finding the admin listener (a local data dir's state.json, or
 *            --admin URL), the admin token and the CA; one synchronous HTTPS
 *            call at a time (fy_http_fetch, common/http_fetch.h) */
#ifndef FY_CTL_H
#define FY_CTL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fy_ctl fy_ctl;

typedef struct {
    const char *data_dir;   /* a local gateway's data dir, or NULL */
    const char *admin_url;  /* https://HOST:PORT of the admin listener, or NULL */
    const char *token_file; /* file holding the admin token (with --admin) */
    const char *ca_file;    /* CA the admin listener's certificate chains to */
} fy_ctl_options;

/* Resolves where and how to reach the admin API. Returns 0, or an FY_E* code
 * with a message for the user in ERR (FY_EINVAL for a usage problem). */
int fy_ctl_open(const fy_ctl_options *o, fy_ctl **out, char *err, size_t errlen);

/* Wipes the token and frees everything. NULL is ok. */
void fy_ctl_close(fy_ctl *c);

/* The data dir's state.json ("tunnel", "public"...) when --data-dir was
 * used, else NULL. Borrowed. */
json_t *fy_ctl_state(fy_ctl *c);

/* The CA file in use (for printing its fingerprint), or NULL. */
const char *fy_ctl_ca_file(fy_ctl *c);

typedef struct {
    int status;   /* HTTP status */
    json_t *json; /* parsed body (NULL when not JSON); caller decrefs */
} fy_ctl_result;

/* One call: METHOD PATH with BODY (may be NULL) as JSON. Returns 0 once a
 * response arrived (whatever its status), or an FY_E* code with a message in
 * ERR when the gateway could not be reached. */
int fy_ctl_call(fy_ctl *c, const char *method, const char *path, json_t *body, fy_ctl_result *res,
                char *err, size_t errlen);

/* Calls the admin API. Returns 0 when the gateway answered OK (a create
 * passes 201 and also accepts 200), with R->json for the caller to release;
 * otherwise prints why (the transport's error or the API's message) and
 * returns 1 with nothing left to release. */
int fy_ctl_api(fy_ctl *c, const char *method, const char *path, json_t *body, int ok,
               fy_ctl_result *r);

/* Prints J indented on stdout. */
void fy_ctl_print_json(json_t *j);

/* A unix time (JSON integer) as "2024-01-02T03:04:05Z", "-" when not one. */
void fy_ctl_fmt_time(json_t *v, char *out, size_t n);

/* hooks.c: `ferry hooks ...` (see ferry --help). */
typedef struct {
    const char *name, *runner, *path, *verify, *secret_file, *tolerance, *header, *encoding,
        *ts_header, *grace;
    int async;
    long long rpm;     /* -1: not given */
    uint64_t max_body; /* 0: not given */
} fy_ctl_hook_opts;

int fy_ctl_hooks_create(fy_ctl *c, int as_json, const fy_ctl_hook_opts *o);
int fy_ctl_hooks_list(fy_ctl *c, int as_json);
int fy_ctl_hooks_delete(fy_ctl *c, int as_json, const char *id);
int fy_ctl_hooks_rotate(fy_ctl *c, int as_json, const char *id, const fy_ctl_hook_opts *o);

#endif
