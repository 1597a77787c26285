/* keyholder.h: what the key holders' page shows a key's holder
 * (GET /dashboard/api/me on the public listener; dash.c authenticates).
 *
 *   {"key":{"id","name","prefix","scopes":{"models","runners","hooks"},
 *           "expires_at","limits":{"rpm","tpm","concurrency","burst"}},
 *    "remaining":{"requests_this_minute","tokens_this_minute","concurrency"},
 *    "usage":{"hourly":[{"hour","requests","prompt_tokens","completion_tokens"}
 *                       x FY_KEYHOLDER_HOURS, oldest first],
 *             "daily":[{"day",...} x FY_KEYHOLDER_DAYS, oldest first]}}
 *
 * Hours and days are UTC, unix seconds at their start; every one is there
 * (zeros when unused). A limit that is off is 0 and its "remaining" null.
 * Only the key K: nothing here takes another key's id. */
#ifndef FY_GATEWAY_DASH_KEYHOLDER_H
#define FY_GATEWAY_DASH_KEYHOLDER_H

#include "gateway/keys.h"
#include "gateway/store.h"

#include <jansson.h>
#include <stdint.h>

#define FY_KEYHOLDER_HOURS 48
#define FY_KEYHOLDER_DAYS  30

/* The answer for key K at NOW (unix seconds), or NULL (the store failed, or
 * out of memory). */
json_t *fy_keyholder_json(fy_store *st, fy_key *k, int64_t now);

#endif
