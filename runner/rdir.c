/* rdir.c: the runner data directory and small parsers shared by the commands. */
#include "runner/runner.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/limits.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        return FY_ETOOBIG;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

int fy_rn_enrollment_load(const char *dir, fy_rn_enrollment *e, char *err, size_t errlen)
{
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    int rc = fy_path_join(path, sizeof path, dir, FY_RN_CONFIG);
    memset(e, 0, sizeof *e);
    if (rc == 0) {
        rc = fy_file_read(path, FY_CONFIG_MAX_BYTES, &text, &len);
    }
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, fy_strerror(rc));
        return rc;
    }
    json_error_t je;
    root = json_loadb(text, len, 0, &je);
    free(text);
    const char *name = root ? json_string_value(json_object_get(root, "name")) : NULL;
    json_t *gws = root ? json_object_get(root, "gateways") : NULL;
    const char *fp = root ? json_string_value(json_object_get(root, "ca_fingerprint")) : NULL;
    if (!root || !name || !json_is_array(gws)) {
        snprintf(err, errlen, "%s: not a runner enrollment (want {\"name\", \"gateways\": [...]})",
                 path);
        rc = FY_EPARSE;
        goto out;
    }
    if (copy_str(e->name, sizeof e->name, name) ||
        (fp && copy_str(e->ca_fingerprint, sizeof e->ca_fingerprint, fp))) {
        snprintf(err, errlen, "%s: a value is too long", path);
        rc = FY_EPARSE;
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(gws, i, v)
    {
        const char *g = json_string_value(v);
        if (!g || e->ngateways >= FY_RN_MAX_GATEWAYS ||
            copy_str(e->gateways[e->ngateways], sizeof e->gateways[0], g)) {
            snprintf(err, errlen, "%s: bad \"gateways\" entry", path);
            rc = FY_EPARSE;
            goto out;
        }
        e->ngateways++;
    }
out:
    json_decref(root);
    return rc;
}

int fy_rn_enrollment_save(const char *dir, const fy_rn_enrollment *e)
{
    char path[4096];
    int rc = fy_path_join(path, sizeof path, dir, FY_RN_CONFIG);
    if (rc) {
        return rc;
    }
    json_t *gws = json_array();
    for (size_t i = 0; gws && i < e->ngateways; i++) {
        json_array_append_new(gws, json_string(e->gateways[i]));
    }
    json_t *root = json_pack("{s:s, s:o, s:s}", "name", e->name, "gateways", gws, "ca_fingerprint",
                             e->ca_fingerprint);
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text) {
        return FY_ENOMEM;
    }
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        return FY_ENOMEM;
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    rc = fy_file_write_atomic(path, withnl, n + 1, 0644);
    free(withnl);
    return rc;
}

int fy_rn_hostport_parse(const char *text, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = text;
    size_t hl;
    if (!text || !*text) {
        return FY_EINVAL;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            return FY_EINVAL;
        }
        h = text + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon) {
            return FY_EINVAL; /* no port, or an unbracketed IPv6 literal */
        }
        hl = (size_t)(colon - text);
    }
    if (hl == 0 || hl >= hostlen) {
        return FY_EINVAL;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '@') {
            return FY_EINVAL;
        }
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

int fy_rn_fingerprint_parse(const char *text, uint8_t out[32])
{
    char hex[65];
    size_t n = 0;
    if (!text) {
        return FY_EINVAL;
    }
    if (strncasecmp(text, "sha256:", 7) == 0) {
        text += 7;
    }
    for (const char *p = text; *p; p++) {
        if (*p == ':') {
            continue;
        }
        if (!isxdigit((unsigned char)*p) || n >= 64) {
            return FY_EINVAL;
        }
        hex[n++] = *p;
    }
    if (n != 64) {
        return FY_EINVAL;
    }
    hex[n] = '\0';
    return fy_hex_decode(hex, 64, out, 32, NULL) ? FY_EINVAL : 0;
}
