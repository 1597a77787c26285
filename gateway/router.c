/* router.c: the public listener's requests, sent by path to the kind that
 * serves them:
 *
 *   /hooks/<id>     a webhook (hooks.c: verified, then forwarded or queued)
 *   /v1, /v1/...    the OpenAI API, routed by the body's model (v1.c)
 *   /r/<runner>/... proxied to that runner (raw.c)
 *   /dashboard...   the key holders' page and its files (dash/dash.h)
 *
 * Anything else is a 404 in OpenAI's error shape, logged and counted like
 * every other public request (px.h). */
#include "gateway/dash/dash.h"
#include "gateway/px.h"

#include <string.h>

static const gw_px_ops other_ops = {.route = "other"};

void fy_gw_public_request(fy_http_req *req, void *data)
{
    fy_gw *gw = data;
    const char *path = fy_http_req_path(req);
    if (strncmp(path, "/hooks/", 7) == 0) {
        fy_gw_hook_request(gw, req);
    } else if (strncmp(path, "/v1", 3) == 0 && (path[3] == '\0' || path[3] == '/')) {
        fy_gw_v1_request(gw, req);
    } else if (strncmp(path, "/r/", 3) == 0) {
        fy_gw_raw_request(gw, req);
    } else if (fy_dash_public_path(path)) {
        fy_dash_public_request(gw->dash, req);
    } else {
        gw_px *px = gw_px_new(gw, req, uv_hrtime(), &other_ops);
        if (px) {
            gw_px_finish(px, GW_FIN_ERROR, 404, "not_found",
                         "no such route (runners are under /r/<runner>/, the OpenAI API under "
                         "/v1/)");
        }
    }
}
