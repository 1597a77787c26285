#!/usr/bin/env bash
# Webhooks, synchronous: each provider's signature accepted and forwarded to
# the runner's path with the original body bytes and headers (checked at the
# upstream); every tampering refused with 401 naming what failed, and the
# upstream never hit; GitHub replays refused; several Stripe v1 with one
# valid accepted; secret rotation with a grace period; the hook body cap
# (413); the per-hook rate limit (429); metrics per hook and reason; delete.
source "$(dirname "$0")/lib.sh"

gw_init
gw_start
rec_start
enroll r1 "$TMP/r1"
runner_start r1 "$TMP/r1"
NOW=$(date +%s)

# A body whose bytes a re-serializer would change (spacing, key order,
# escapes, UTF-8): the signature is over exactly these bytes.
printf '{"zeta": 1,  "alpha":[1,2 ,3],"text":"caf\xc3\xa9 \\u00e9\\n","action":"opened"}\n' >"$TMP/body"
printf 'gh-secret-1\n' >"$TMP/gh.secret"
printf 'whsec_stripe_test_secret\n' >"$TMP/st.secret"
printf 'slack-signing-secret-8f2b\n' >"$TMP/sl.secret"
printf 'generic-secret\n' >"$TMP/gen.secret"
printf 'wrong-secret\n' >"$TMP/wrong.secret"

# --- GitHub ---------------------------------------------------------------------
mkhook gh --runner r1 --path /gh/events --verify github --secret-file "$TMP/gh.secret"
GH_URL=$HOOK_URL GH_ID=$HOOK_ID
SIG=$("${SIGN[@]}" github "$TMP/gh.secret" "$TMP/body")
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-0001' \
    -H 'X-GitHub-Event: pull_request' -H 'User-Agent: GitHub-Hookshot/abc')
expect_status 200 "$code" "github valid"
grep -q '^recorded 1$' "$TMP/resp" || fail "github: the caller did not get the runner's answer: $(cat "$TMP/resp")"
rec_count_is 1 || fail "github: upstream saw $(rec_count) requests"
cmp -s "$TMP/body" "$REC/req.1.body" || fail "github: the body reached the upstream changed"
[[ $(rec_target 1) == /gh/events ]] || fail "github: target $(rec_target 1)"
[[ $(rec_header 1 X-Hub-Signature-256) == "$SIG" ]] || fail "github: signature header not forwarded"
[[ $(rec_header 1 X-GitHub-Delivery) == d-0001 ]] || fail "github: delivery header not forwarded"
[[ $(rec_header 1 X-GitHub-Event) == pull_request ]] || fail "github: event header not forwarded"
[[ $(rec_header 1 User-Agent) == GitHub-Hookshot/abc ]] || fail "github: user agent not forwarded"
pass "github: verified request forwarded with the same bytes and headers, runner's answer relayed"

# A query string goes along.
code=$(post "$GH_URL?x=1&y=two" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-0002')
expect_status 200 "$code" "github with query"
[[ $(rec_target 2) == "/gh/events?x=1&y=two" ]] || fail "query: target $(rec_target 2)"

# Tampering: every one refused, none reaches the upstream.
cp "$TMP/body" "$TMP/flipped"
printf 'Z' | dd of="$TMP/flipped" bs=1 seek=3 conv=notrunc status=none
code=$(post "$GH_URL" "$TMP/flipped" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-0003')
expect_refused webhook_bad_signature "$code" "github body byte flipped"
grep -q 'X-Hub-Signature-256 does not match' "$TMP/resp" || fail "message: $(cat "$TMP/resp")"
BAD=$("${SIGN[@]}" github "$TMP/wrong.secret" "$TMP/body")
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $BAD" -H 'X-GitHub-Delivery: d-0004')
expect_refused webhook_bad_signature "$code" "github wrong secret"
code=$(post "$GH_URL" "$TMP/body" -H 'X-GitHub-Delivery: d-0005')
expect_refused webhook_missing_header "$code" "github no signature"
grep -q 'missing X-Hub-Signature-256 header' "$TMP/resp" || fail "message: $(cat "$TMP/resp")"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG")
expect_refused webhook_missing_header "$code" "github no delivery id"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: sha1=abc" -H 'X-GitHub-Delivery: d-0006')
expect_refused webhook_malformed_header "$code" "github malformed"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-0001')
expect_refused webhook_replay "$code" "github replayed delivery"
rec_count_is 2 || fail "refused requests reached the upstream ($(rec_count) requests)"
pass "github: flipped byte, wrong secret, missing headers, malformed header, replay: 401, upstream untouched"

# --- Stripe ----------------------------------------------------------------------
mkhook stripe --runner r1 --path /stripe --verify stripe --secret-file "$TMP/st.secret"
ST_URL=$HOOK_URL
N=$(rec_count)
NOW=$(date +%s) # read again per section: on a busy machine the run outlasts a 60 s tolerance
HDR=$("${SIGN[@]}" stripe "$NOW" "$TMP/body" "$TMP/wrong.secret" "$TMP/st.secret")
code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: $HDR")
expect_status 200 "$code" "stripe: two v1, the second valid"
cmp -s "$TMP/body" "$REC/req.$((N + 1)).body" || fail "stripe: body changed"
[[ $(rec_header $((N + 1)) Stripe-Signature) == "$HDR" ]] || fail "stripe: header not forwarded"
HDR=$("${SIGN[@]}" stripe "$NOW" "$TMP/body" "$TMP/st.secret")
code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: ${HDR/t=/v0=00,t=}")
expect_status 200 "$code" "stripe: an extra v0 scheme is ignored"
for t in $((NOW - 400)) $((NOW + 400)); do
    HDR=$("${SIGN[@]}" stripe "$t" "$TMP/body" "$TMP/st.secret")
    code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: $HDR")
    expect_refused webhook_stale_timestamp "$code" "stripe t=$t (now $NOW)"
done
HDR=$("${SIGN[@]}" stripe "$NOW" "$TMP/body" "$TMP/wrong.secret")
code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: $HDR")
expect_refused webhook_bad_signature "$code" "stripe wrong secret"
HDR=$("${SIGN[@]}" stripe "$NOW" "$TMP/body" "$TMP/st.secret")
code=$(post "$ST_URL" "$TMP/flipped" -H "Stripe-Signature: $HDR")
expect_refused webhook_bad_signature "$code" "stripe body byte flipped"
HDR=$("${SIGN[@]}" stripe "$((NOW + 1))" "$TMP/body" "$TMP/st.secret")
code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: t=$NOW,${HDR#*,}")
expect_refused webhook_bad_signature "$code" "stripe signature of another timestamp"
code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: t=$NOW")
expect_refused webhook_malformed_header "$code" "stripe without v1"
code=$(post "$ST_URL" "$TMP/body")
expect_refused webhook_missing_header "$code" "stripe without the header"
rec_count_is $((N + 2)) || fail "stripe: refused requests reached the upstream"
pass "stripe: multiple v1 with one valid accepted; stale, future, wrong secret, flipped, malformed, missing: 401"

# --- Slack -----------------------------------------------------------------------
mkhook slack --runner r1 --path /slack/events --verify slack --secret-file "$TMP/sl.secret"
SL_URL=$HOOK_URL
N=$(rec_count)
printf 'token=x&team_id=T1&command=%%2Fask&text=hello+world' >"$TMP/form"
NOW=$(date +%s) # read again per section: on a busy machine the run outlasts a 60 s tolerance
SIG=$("${SIGN[@]}" slack "$NOW" "$TMP/sl.secret" "$TMP/form")
code=$(post "$SL_URL" "$TMP/form" -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-Slack-Signature: $SIG" -H "X-Slack-Request-Timestamp: $NOW")
expect_status 200 "$code" "slack valid"
cmp -s "$TMP/form" "$REC/req.$((N + 1)).body" || fail "slack: body changed"
[[ $(rec_header $((N + 1)) Content-Type) == application/x-www-form-urlencoded ]] || fail "slack: content type"
OLD=$((NOW - 301))
SIG=$("${SIGN[@]}" slack "$OLD" "$TMP/sl.secret" "$TMP/form")
code=$(post "$SL_URL" "$TMP/form" -H "X-Slack-Signature: $SIG" -H "X-Slack-Request-Timestamp: $OLD")
expect_refused webhook_stale_timestamp "$code" "slack stale"
SIG=$("${SIGN[@]}" slack "$NOW" "$TMP/sl.secret" "$TMP/form")
code=$(post "$SL_URL" "$TMP/form" -H "X-Slack-Signature: $SIG")
expect_refused webhook_missing_header "$code" "slack without timestamp"
code=$(post "$SL_URL" "$TMP/form" -H "X-Slack-Signature: $SIG" -H "X-Slack-Request-Timestamp: $((NOW + 1))")
expect_refused webhook_bad_signature "$code" "slack timestamp changed"
rec_count_is $((N + 1)) || fail "slack: refused requests reached the upstream"
pass "slack: valid accepted; stale, missing timestamp, changed timestamp: 401"

# --- generic HMAC-SHA256 -----------------------------------------------------------
mkhook gen-hex --runner r1 --path /gen --verify hmac-sha256 --secret-file "$TMP/gen.secret" \
    --header X-Signature --encoding hex --timestamp-header X-Timestamp --tolerance 60s
N=$(rec_count)
NOW=$(date +%s) # read again per section: on a busy machine the run outlasts a 60 s tolerance
SIG=$("${SIGN[@]}" hex "$TMP/gen.secret" "$TMP/body" "$NOW")
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Signature: sha256=$SIG" -H "X-Timestamp: $NOW")
expect_status 200 "$code" "generic hex with timestamp"
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Signature: $SIG" -H "X-Timestamp: $NOW")
expect_status 200 "$code" "generic hex without the sha256= prefix"
SIG=$("${SIGN[@]}" hex "$TMP/gen.secret" "$TMP/body" "$((NOW - 120))")
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Signature: $SIG" -H "X-Timestamp: $((NOW - 120))")
expect_refused webhook_stale_timestamp "$code" "generic beyond --tolerance 60s"
mkhook gen-b64 --runner r1 --path /gen64 --verify hmac-sha256 --secret-file "$TMP/gen.secret" \
    --header X-Shopify-Hmac-Sha256 --encoding base64
SIG=$("${SIGN[@]}" base64 "$TMP/gen.secret" "$TMP/body")
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Shopify-Hmac-Sha256: $SIG")
expect_status 200 "$code" "generic base64"
code=$(post "$HOOK_URL" "$TMP/flipped" -H "X-Shopify-Hmac-Sha256: $SIG")
expect_refused webhook_bad_signature "$code" "generic base64 flipped body"
rec_count_is $((N + 3)) || fail "generic: upstream saw $(($(rec_count) - N)) requests, want 3"
[[ $(rec_target $((N + 3))) == /gen64 ]] || fail "generic: target $(rec_target $((N + 3)))"
pass "generic hmac-sha256: hex with timestamp header and tolerance, base64"

# --- the providers' own libraries (npm), when installed ----------------------------
NM=${FERRY_HOOKS_NODE_MODULES:-$FERRY_BUILD/tests/hooks-node/node_modules}
[[ -n ${FERRY_HOOKS_NODE_MODULES:-} ]] || npm_install_once "$HOOKS_DIR/package.json" "$FERRY_BUILD/tests/hooks-node" ||
    echo "note: npm install of the providers' libraries failed: $(tail -n 3 "$TMP/npm.log" 2>/dev/null)"
if [[ -d $NM/stripe && -d $NM/@octokit/webhooks-methods ]] && command -v node >/dev/null; then
    mkdir -p "$TMP/node"
    cp "$HOOKS_DIR/sign_official.mjs" "$TMP/node/"
    ln -s "$NM" "$TMP/node/node_modules"
    SIG=$(node "$TMP/node/sign_official.mjs" github "$TMP/gh.secret" "$TMP/body")
    code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-npm-1')
    expect_status 200 "$code" "github signed by @octokit/webhooks-methods"
    NOW=$(date +%s) # read again per section: on a busy machine the run outlasts a 60 s tolerance
    HDR=$(node "$TMP/node/sign_official.mjs" stripe "$NOW" "$TMP/st.secret" "$TMP/body")
    code=$(post "$ST_URL" "$TMP/body" -H "Stripe-Signature: $HDR")
    expect_status 200 "$code" "stripe signed by stripe.webhooks.generateTestHeaderString"
    code=$(post "$ST_URL" "$TMP/flipped" -H "Stripe-Signature: $HDR")
    expect_refused webhook_bad_signature "$code" "stripe (npm) flipped body"
    pass "signatures from @octokit/webhooks-methods and stripe's generateTestHeaderString accepted"
else
    echo "skip: npm libraries not installed (no node/npm, or the registry unreachable)"
fi

# --- rotation --------------------------------------------------------------------
printf 'gh-secret-2\n' >"$TMP/gh2.secret"
ferry hooks rotate-secret "$GH_ID" --secret-file "$TMP/gh2.secret" >"$TMP/rot.out" || fail "rotate"
grep -q 'old one is still accepted until' "$TMP/rot.out" || fail "rotate output: $(cat "$TMP/rot.out")"
OLD_SIG=$("${SIGN[@]}" github "$TMP/gh.secret" "$TMP/body")
NEW_SIG=$("${SIGN[@]}" github "$TMP/gh2.secret" "$TMP/body")
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $OLD_SIG" -H 'X-GitHub-Delivery: rot-1')
expect_status 200 "$code" "old secret during the grace period"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $NEW_SIG" -H 'X-GitHub-Delivery: rot-2')
expect_status 200 "$code" "new secret"
printf 'gh-secret-3\n' >"$TMP/gh3.secret"
ferry hooks rotate-secret "$GH_ID" --secret-file "$TMP/gh3.secret" --grace 1s >/dev/null || fail "rotate 2"
NEWER=$("${SIGN[@]}" github "$TMP/gh3.secret" "$TMP/body")
# The grace period is in whole seconds: once 2 s have passed it is over.
sleep 2.2
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $NEW_SIG" -H 'X-GitHub-Delivery: rot-3')
expect_refused webhook_bad_signature "$code" "previous secret after its grace period"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $OLD_SIG" -H 'X-GitHub-Delivery: rot-4')
expect_refused webhook_bad_signature "$code" "secret from two rotations ago"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $NEWER" -H 'X-GitHub-Delivery: rot-5')
expect_status 200 "$code" "current secret after rotation"
pass "rotate-secret: old and new accepted during the grace period, old refused after it"

# --- body cap and rate limit --------------------------------------------------------
mkhook capped --runner r1 --path /cap --verify none --max-body 1KiB
N=$(rec_count)
head -c 1024 /dev/zero | tr '\0' a >"$TMP/1k"
head -c 1025 /dev/zero | tr '\0' a >"$TMP/1k1"
code=$(post "$HOOK_URL" "$TMP/1k")
expect_status 200 "$code" "body at the cap"
code=$(post "$HOOK_URL" "$TMP/1k1")
expect_status 413 "$code" "body one byte over the cap"
code=$(post "$HOOK_URL" "$TMP/1k1" -H 'Transfer-Encoding: chunked')
expect_status 413 "$code" "chunked body over the cap"
rec_count_is $((N + 1)) || fail "cap: oversized bodies reached the upstream"
mkhook limited --runner r1 --path /lim --verify github --secret-file "$TMP/gh.secret" --rpm 6
SIG=$("${SIGN[@]}" github "$TMP/gh.secret" "$TMP/body")
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: rl-1')
expect_status 200 "$code" "rate limit: first request"
# rpm 6 = one every 10 s with a burst of 1: the next one, right away, waits.
code=$(post "$HOOK_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: rl-2' \
    -D "$TMP/rl.h")
expect_status 429 "$code" "rate limit: second request"
grep -qi '^retry-after: [0-9]' "$TMP/rl.h" || fail "429 without Retry-After"
# Unverified requests do not spend the hook's budget, and are refused first.
code=$(post "$HOOK_URL" "$TMP/flipped" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: rl-3')
expect_refused webhook_bad_signature "$code" "rate limit: bad signature still 401"
rec_count_is $((N + 2)) || fail "rate limit: upstream saw $(($(rec_count) - N)) requests, want 2"
pass "hook body cap (413, with Content-Length and chunked) and per-hook rpm (429 with Retry-After)"

# --- metrics, list, delete, unknown ids -------------------------------------------
metrics_page "$TMP/m"
v=$(metric "$TMP/m" "ferry_hook_requests_total{hook=\"$GH_ID\",outcome=\"replay\"}")
[[ $v == 1 ]] || fail "metric replay for $GH_ID: $v"
v=$(metric "$TMP/m" "ferry_hook_requests_total{hook=\"$GH_ID\",outcome=\"bad_signature\"}")
[[ $v -ge 4 ]] || fail "metric bad_signature for $GH_ID: $v"
v=$(metric "$TMP/m" "ferry_hook_requests_total{hook=\"$GH_ID\",outcome=\"forwarded\"}")
[[ $v -ge 5 ]] || fail "metric forwarded for $GH_ID: $v"
grep -q 'ferry_requests_total{route="/hooks",status="401"}' "$TMP/m" || fail "no /hooks 401 in ferry_requests_total"
ferry hooks list >"$TMP/list" || fail "hooks list"
grep -q "$GH_ID" "$TMP/list" || fail "list lacks $GH_ID: $(cat "$TMP/list")"
ferry --json hooks list >"$TMP/list.json"
for s in gh-secret st.secret whsec_stripe slack-signing generic-secret; do
    ! grep -q "$s" "$TMP/list" "$TMP/list.json" "$TMP/gw.log" || fail "a secret ($s) was listed or logged"
done
[[ $(stat -c %a "$GW/gateway.db") == 600 ]] || fail "the store holding the secrets is mode $(stat -c %a "$GW/gateway.db")"
ferry hooks delete "$GH_ID" >/dev/null || fail "hooks delete"
SIG=$("${SIGN[@]}" github "$TMP/gh3.secret" "$TMP/body")
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: del-1')
expect_status 404 "$code" "deleted hook"
code=$(post "$(pub_url /hooks/hk_doesnotexist)" "$TMP/body")
expect_status 404 "$code" "unknown hook"
code=$(curl -sS --max-time 10 --cacert "$CA" -o "$TMP/resp" -w '%{http_code}' "$ST_URL")
expect_status 405 "$code" "GET on a hook"
ferry hooks create --name x --runner r1 --path /x --verify github >/dev/null 2>&1 && fail "create without a secret"
ferry hooks create --name x --runner r1 --path /x --verify hmac-sha256 --secret-file "$TMP/gen.secret" \
    >/dev/null 2>&1 && fail "hmac-sha256 without --header"
pass "metrics per hook and reason, list without secrets, delete (404 after), 404 unknown, 405 GET"

gw_stop
pass "webhooks verified and forwarded"
