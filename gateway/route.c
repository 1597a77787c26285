/* route.c: pure helpers of the public proxy (no I/O; unit-tested). */
#include "gateway/gateway.h"

#include "common/args.h"
#include "common/err.h"

#include <jansson.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

int fy_gw_route_split(const char *target, char name[FY_STORE_NAME_MAX], const char **rest,
                      int *rest_slash)
{
    name[0] = '\0';
    *rest = NULL;
    *rest_slash = 0;
    if (strncmp(target, "/r/", 3) != 0) {
        return 0;
    }
    const char *p = target + 3;
    size_t n = strcspn(p, "/?");
    if (n == 0 || n >= FY_STORE_NAME_MAX) {
        return -1;
    }
    memcpy(name, p, n);
    name[n] = '\0';
    if (!fy_store_valid_name(name)) {
        name[0] = '\0';
        return -1;
    }
    p += n;
    *rest = p;
    *rest_slash = *p != '/';
    return 1;
}

void fy_gw_peer_host(const char *peer, char *out, size_t outlen)
{
    if (!outlen) {
        return;
    }
    out[0] = '\0';
    if (!peer) {
        return;
    }
    const char *start = peer, *end;
    if (*peer == '[') {
        start = peer + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(peer, ':');
    }
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= outlen) {
        n = outlen - 1;
    }
    memcpy(out, start, n);
    out[n] = '\0';
}

long long fy_gw_parse_ttl(const char *text)
{
    uint64_t ms;
    if (!text || fy_parse_duration_ms(text, &ms) != 0) {
        return -1;
    }
    long long s = (long long)(ms / 1000);
    if (ms % 1000 != 0 || s < 1 || s > FY_GW_TOKEN_MAX_TTL_S) {
        return -1;
    }
    return s;
}

long long fy_gw_parse_key_ttl(const char *text)
{
    uint64_t ms;
    if (!text || fy_parse_duration_ms(text, &ms) != 0 || ms % 1000 != 0) {
        return -1;
    }
    uint64_t s = ms / 1000;
    return s >= 1 && s <= (uint64_t)FY_GW_KEY_MAX_TTL_S ? (long long)s : -1;
}

int fy_gw_v1_model(const char *body, size_t len, char out[FY_GW_V1_MODEL_MAX], char *err,
                   size_t errlen)
{
    out[0] = '\0';
    json_error_t je;
    /* Bounded by the caller's body cap; jansson's depth limit bounds nesting. */
    json_t *root = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    const char *why = NULL;
    json_t *m = NULL;
    if (!root) {
        if (len) {
            /* jansson quotes the input near the error: keep it printable. */
            snprintf(err, errlen, "the body is not valid JSON: %s", je.text);
            for (char *p = err; *p; p++) {
                if (*p < 0x20 || *p > 0x7e) {
                    *p = '?';
                }
            }
            return FY_EINVAL;
        }
        why = "the request needs a JSON body with a model";
    } else if (!json_is_object(root)) {
        why = "the body must be a JSON object";
    } else if (!(m = json_object_get(root, "model"))) {
        why = "you must provide a model parameter";
    } else if (!json_is_string(m)) {
        why = "model must be a string";
    } else {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (n == 0) {
            why = "model must not be empty";
        } else if (n >= FY_GW_V1_MODEL_MAX) {
            why = "model is too long (at most 255 bytes)";
        } else {
            for (size_t i = 0; i < n && !why; i++) {
                if (s[i] < 0x21 || s[i] > 0x7e) {
                    why = "model must be printable ASCII without spaces";
                }
            }
            if (!why) {
                memcpy(out, s, n);
                out[n] = '\0';
            }
        }
    }
    json_decref(root);
    if (why) {
        snprintf(err, errlen, "%s", why);
        return FY_EINVAL;
    }
    return 0;
}

int fy_gw_query_get(const char *q, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *p = q; p && *p;) {
        size_t n = strcspn(p, "&");
        if (n > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            snprintf(out, outlen, "%.*s", (int)(n - nl - 1), p + nl + 1);
            return 1;
        }
        p += n + (p[n] == '&');
    }
    return 0;
}
