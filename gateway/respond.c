/* respond.c: the JSON answer every gateway API shares (gateway.h). */
#include "gateway/gateway.h"

#include "common/crypto.h"

#include <stdlib.h>
#include <string.h>

void fy_gw_respond_json(fy_http_req *req, int status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    if (!text) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return;
    }
    size_t n = strlen(text);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"Cache-Control", "no-store", 0, 0}};
    fy_http_respond(req, status, h, 2, text, n);
    fy_secure_zero(text, n); /* may hold a new token or key */
    free(text);
}

json_t *fy_gw_scope_json(const char *list)
{
    json_t *a = json_array();
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        json_array_append_new(a, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return a;
}
