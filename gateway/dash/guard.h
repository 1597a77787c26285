/* guard.h: failed attempts per client address (sign-ins with a wrong admin
 * token, key holders' page calls with a bad key), limited to
 * FY_DASH_FAIL_RPM a minute with a burst of as many (GCRA, ratelimit.h).
 *
 * Only failures count: a client that gets it right is never slowed. The
 * table remembers FY_DASH_GUARD_SLOTS addresses; a new one past that takes
 * the slot used longest ago (an address that floods from many others can
 * only make its own limit forget sooner, never block someone else). */
#ifndef FY_GATEWAY_DASH_GUARD_H
#define FY_GATEWAY_DASH_GUARD_H

#include "gateway/dash/dash.h"
#include "gateway/ratelimit.h"

#include <stdint.h>

typedef struct {
    fy_rl rl;
    int64_t used;  /* monotonic ns of the last failure; 0: free */
    char host[64]; /* the client's address without its port */
} fy_dash_guard_slot;

typedef struct {
    fy_dash_guard_slot s[FY_DASH_GUARD_SLOTS];
} fy_dash_guard;

/* 0 when PEER ("1.2.3.4:5") may try now; otherwise 1 with the seconds to
 * wait (>= 1) in *RETRY_S. NOW: fy_rl_now(). */
int fy_dash_guard_blocked(fy_dash_guard *g, const char *peer, int64_t now, int64_t *retry_s);

/* Counts a failed attempt from PEER at NOW. */
void fy_dash_guard_fail(fy_dash_guard *g, const char *peer, int64_t now);

#endif
