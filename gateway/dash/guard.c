/* guard.c: failed attempts per client address (guard.h). */
#include "gateway/dash/guard.h"

#include "gateway/gateway.h"

#include <stdio.h>
#include <string.h>

static fy_dash_guard_slot *slot_find(fy_dash_guard *g, const char *host)
{
    for (size_t i = 0; i < FY_DASH_GUARD_SLOTS; i++) {
        if (g->s[i].used && strcmp(g->s[i].host, host) == 0) {
            return &g->s[i];
        }
    }
    return NULL;
}

int fy_dash_guard_blocked(fy_dash_guard *g, const char *peer, int64_t now, int64_t *retry_s)
{
    char host[64];
    fy_gw_peer_host(peer, host, sizeof host);
    fy_dash_guard_slot *s = slot_find(g, host);
    if (!s) {
        return 0;
    }
    fy_rl_result r;
    fy_rl_peek(&s->rl, now, &r);
    if (r.allowed) {
        return 0;
    }
    *retry_s = fy_rl_retry_after_s(r.retry_after_ns);
    return 1;
}

void fy_dash_guard_fail(fy_dash_guard *g, const char *peer, int64_t now)
{
    char host[64];
    fy_gw_peer_host(peer, host, sizeof host);
    fy_dash_guard_slot *s = slot_find(g, host);
    if (!s) {
        s = &g->s[0];
        for (size_t i = 1; i < FY_DASH_GUARD_SLOTS && s->used; i++) {
            if (!g->s[i].used || g->s[i].used < s->used) {
                s = &g->s[i];
            }
        }
        fy_rl_limits lim = {.rpm = FY_DASH_FAIL_RPM, .burst = FY_DASH_FAIL_RPM};
        fy_rl_init(&s->rl, &lim);
        snprintf(s->host, sizeof s->host, "%s", host);
    }
    s->used = now;
    if (fy_rl_acquire(&s->rl, now, NULL)) {
        fy_rl_release(&s->rl);
    }
}
