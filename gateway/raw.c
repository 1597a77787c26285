/* raw.c: public requests to /r/<runner>/<path>, proxied to that runner.
 *
 * Admission, in order: the route's runner name, the API key (401), the
 * runner scope (403), draining (503), the key's limits (429), then the
 * runner (404 when not enrolled or revoked, 503 when not connected). The
 * key is checked before anything about runners is said, so a stranger
 * learns nothing about which runners exist. The body is streamed as it
 * arrives (px.h); a stream the runner refused before any body byte went is
 * sent again on another of its connections. */
#include "gateway/px.h"

#include "common/err.h"

#include <stdio.h>

static const gw_px_ops raw_ops = {
    .route = "/r",
    .pick = gw_px_pick_runner,
    .on_refused = gw_px_replay,
};

/* Admitted: the runner, then the request goes down its tunnel. */
static void raw_admitted(gw_px *px)
{
    const char *rest;
    int slash;
    char name[FY_STORE_NAME_MAX];
    fy_gw_route_split(fy_http_req_target(px->req), name, &rest, &slash);
    if (!gw_px_runner_ready(px)) {
        return;
    }
    char target[FY_HTTP_MAX_URL_BYTES + 2];
    snprintf(target, sizeof target, "%s%s", slash ? "/" : "", rest);
    if (!gw_px_set_target(px, target)) {
        return;
    }
    px->has_body = fy_http_req_content_length(px->req) != 0;
    gw_px_proxy(px);
}

void fy_gw_raw_request(fy_gw *gw, fy_http_req *req)
{
    gw_px *px = gw_px_new(gw, req, uv_hrtime(), &raw_ops);
    if (!px) {
        return;
    }
    const char *rest;
    int slash;
    int route = fy_gw_route_split(fy_http_req_target(req), px->runner, &rest, &slash);
    gw_px_admit(px, route, raw_admitted);
}
