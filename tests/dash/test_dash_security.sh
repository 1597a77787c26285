#!/usr/bin/env bash
# The dashboard's security, end to end with curl against a real gateway:
# the pages and files are served with their CSP on every response and never
# on the public listener (but the key holders' page), sign-in gives a
# session cookie with its flags, a wrong token is 401 and repeated failures
# 429 with Retry-After, a change needs the session's CSRF token and comes
# from the page's own origin, sign-out ends the session on the server, the
# session table is bounded, and the CLI's Bearer token still works.
source "$(dirname "$0")/lib.sh"

gw_init
gw_start

# --- pages and static files --------------------------------------------------------------
hreq "https://$ADM/"
expect_code 200 "GET /"
expect_security "GET /"
[[ $(hdr Content-Type) == text/html* ]] || fail "GET /: Content-Type $(hdr Content-Type)"
[[ $(hdr Cache-Control) == no-store ]] || fail "GET /: Cache-Control $(hdr Cache-Control)"
grep -q '<script type="module" src="/static/app.js"></script>' "$TMP/b" || fail "GET /: no app.js module"
# The CSP forbids inline script and style: the pages have none.
for page in "https://$ADM/" "$(pub_url /dashboard)"; do
    hreq "$page"
    expect_code 200 "GET $page"
    expect_security "GET $page"
    if grep -Eiq '<script( [^>]*)?>[^<]|<script(>| (type="module")?>)|<style|style=| on[a-z]+=' "$TMP/b"; then
        fail "$page has inline script or style"
    fi
done
pass "pages: CSP, nosniff, no-referrer, DENY, no-store; no inline script or style"

hreq "https://$ADM/static/app.js"
expect_code 200 "GET /static/app.js"
expect_security "GET /static/app.js"
[[ $(hdr Content-Type) == text/javascript* ]] || fail "app.js: Content-Type $(hdr Content-Type)"
cmp -s "$TMP/b" "$FERRY_SRC/gateway/dash/www/app.js" || fail "app.js differs from the source"
etag=$(hdr ETag)
[[ $etag =~ ^\"[0-9a-f]{16}\"$ ]] || fail "app.js: ETag '$etag'"
hreq "https://$ADM/static/app.js" -H "If-None-Match: $etag"
expect_code 304 "app.js revalidated"
hreq "https://$ADM/static/vendor/chart.js"
expect_code 200 "GET /static/vendor/chart.js"
chart=$(sed -n 's/^FERRY_CHARTJS:FILEPATH=//p' "$FERRY_BUILD/CMakeCache.txt")
for f in chart.umd.js chart.min.js; do
    [[ -z $chart && -f /usr/share/javascript/chart.js/$f ]] && chart=/usr/share/javascript/chart.js/$f
done
cmp -s "$TMP/b" "$chart" || fail "vendor/chart.js is not $chart"
grep -q 'Chart.js v3\.9' "$TMP/b" || fail "vendor/chart.js is not Chart.js 3.9"
hreq "$(pub_url /dashboard/static/vendor/chart.js)"
expect_code 200 "GET /dashboard/static/vendor/chart.js"
expect_security "public chart.js"
for bad in /static/nope.js /static/../admin.token /static/ /static/vendor/; do
    hreq "https://$ADM$bad" --path-as-is
    expect_code 404 "GET $bad"
    expect_security "404 $bad"
done
hreq "https://$ADM/static/app.js" -X POST --data x
expect_code 405 "POST /static/app.js"
# The admin side is never on the public listener.
for p in / /static/app.js /admin/v1/session /admin/v1/keys; do
    hreq "$(pub_url "$p")"
    expect_code 404 "public $p"
done
pass "static files: embedded bytes, ETag and 304, Chart.js 3.9 from Debian, 404s, nothing admin on the public listener"

# --- sign-in ---------------------------------------------------------------------------------
hreq "https://$ADM/admin/v1/session" -X POST -H 'Content-Type: application/json' --data '{"token":"fy_adm_wrong"}'
expect_code 401 "wrong token"
hreq "https://$ADM/admin/v1/session" -X POST --data 'not json'
expect_code 401 "no token"
hreq "https://$ADM/admin/v1/session"
expect_code 401 "GET session without a cookie"
hreq "https://$ADM/admin/v1/session" -X POST -H 'Origin: https://evil.example' \
    -H 'Content-Type: text/plain' --data "{\"token\":\"$ADMIN_TOKEN\"}"
expect_code 403 "sign-in posted from another origin"
sign_in
expect_security "sign-in"
sc=$(hdr Set-Cookie)
for flag in HttpOnly Secure SameSite=Strict Path=/ Max-Age=43200; do
    grep -q "; $flag\(;\|$\)" <<<"$sc" || fail "session cookie lacks $flag: $sc"
done
exp=$(json_get "$TMP/b" expires_at)
now=$(date +%s)
((exp >= now + 43200 - 60 && exp <= now + 43200 + 60)) || fail "expires_at $exp, now $now"
sadmin GET /admin/v1/session
expect_code 200 "GET session"
[[ $(json_get "$TMP/b" csrf) == "$CSRF" ]] || fail "GET session: another csrf"
grep -q "$COOKIE" "$GW"/*.db "$GW"/*.json "$TMP/gw.log" 2>/dev/null && fail "the session id was written somewhere"
pass "sign-in: wrong token 401, other origin 403, cookie HttpOnly Secure SameSite=Strict Max-Age 12h"

# --- the admin API with the cookie -------------------------------------------------------------
sadmin GET /admin/v1/keys
expect_code 200 "GET keys with the session"
expect_security "admin JSON with the session"
nkeys=$(grep -o '"id":"key_' "$TMP/b" | wc -l)
sadmin GET /metrics
expect_code 200 "GET /metrics with the session"
# A cross-origin form post, as a browser sends it: no CSRF token.
sadmin POST /admin/v1/keys -H 'Origin: https://evil.example' -H 'Sec-Fetch-Site: cross-site' \
    -H 'Content-Type: text/plain' --data '{"name":"evil"}'
expect_code 403 "cross-origin POST"
grep -q '"code":"csrf"' "$TMP/b" || fail "cross-origin POST: $(cat "$TMP/b")"
sadmin POST /admin/v1/keys -H 'Content-Type: application/json' --data '{"name":"nocsrf"}'
expect_code 403 "POST without CSRF"
sadmin POST /admin/v1/keys -H "X-CSRF-Token: ${CSRF%?}x" -H 'Content-Type: application/json' --data '{"name":"badcsrf"}'
expect_code 403 "POST with a wrong CSRF token"
sadmin POST /admin/v1/keys -H "X-CSRF-Token: $CSRF" -H 'Origin: https://evil.example' \
    -H 'Content-Type: application/json' --data '{"name":"evilorigin"}'
expect_code 403 "POST with CSRF from another Origin"
sadmin POST /admin/v1/keys -H "X-CSRF-Token: $CSRF" -H 'Sec-Fetch-Site: cross-site' \
    -H 'Content-Type: application/json' --data '{"name":"crosssite"}'
expect_code 403 "POST with CSRF, Sec-Fetch-Site cross-site"
sadmin GET /admin/v1/keys
[[ $(grep -o '"id":"key_' "$TMP/b" | wc -l) == "$nkeys" ]] || fail "a refused POST made a key"
sadmin POST /admin/v1/keys -H "X-CSRF-Token: $CSRF" -H "Origin: https://$ADM" \
    -H 'Sec-Fetch-Site: same-origin' -H 'Content-Type: application/json' --data '{"name":"fromdash"}'
expect_code 201 "POST with cookie and CSRF"
grep -q '"key":"fy_' "$TMP/b" || fail "create: no key shown: $(cat "$TMP/b")"
admin GET /admin/v1/keys >"$TMP/keys.json"
[[ $(code) == 200 ]] || fail "Bearer GET keys: $(code)"
grep -q '"name":"fromdash"' "$TMP/keys.json" || fail "the key made with the session is not listed"
hreq "https://$ADM/admin/v1/keys"
expect_code 401 "no credentials"
hreq "https://$ADM/admin/v1/keys" -H 'Cookie: ferry_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
expect_code 401 "unknown session"
hreq "https://$ADM/admin/v1/keys" -H "Cookie: ferry_session=$COOKIE" -H 'Authorization: Bearer fy_adm_wrong'
expect_code 401 "a wrong Bearer token beside a valid cookie"
pass "with the cookie: reads work, changes need CSRF and the same origin (403 csrf), Bearer unchanged"

# --- sign-out ------------------------------------------------------------------------------------
sadmin DELETE /admin/v1/session
expect_code 403 "sign-out without CSRF"
sadmin DELETE /admin/v1/session -H "X-CSRF-Token: $CSRF"
expect_code 204 "sign-out"
grep -q "; Max-Age=0" <<<"$(hdr Set-Cookie)" || fail "sign-out does not clear the cookie: $(hdr Set-Cookie)"
sadmin GET /admin/v1/session
expect_code 401 "the old cookie after sign-out"
sadmin GET /admin/v1/keys
expect_code 401 "the admin API with the old cookie"
pass "sign-out: the session is gone on the server"

# --- the session table is bounded: the 65th sign-in ends the oldest --------------------------------
sign_in
first=$COOKIE
for ((i = 0; i < 64; i++)); do sign_in; done
sadmin GET /admin/v1/session
expect_code 200 "the newest session"
COOKIE=$first sadmin GET /admin/v1/session
expect_code 401 "the oldest of 65 sessions"
pass "sessions: at most 64, the oldest ends first"

# --- failed sign-ins are limited per address ------------------------------------------------------
# Two failures were counted above; the burst is five, refilled one per 12 s.
n401=0
for ((i = 0; i < 10; i++)); do
    hreq "https://$ADM/admin/v1/session" -X POST --data '{"token":"fy_adm_wrong"}'
    [[ $(code) == 401 ]] || break
    n401=$((n401 + 1))
done
expect_code 429 "failed sign-ins past the burst"
((n401 >= 3 && n401 <= 6)) || fail "$n401 failed sign-ins got 401 before the 429 (want 3..6)"
ra=$(hdr Retry-After)
[[ $ra =~ ^[0-9]+$ ]] && ((ra >= 1 && ra <= 60)) || fail "429 Retry-After '$ra'"
hreq "https://$ADM/admin/v1/session" -X POST --data "{\"token\":\"$ADMIN_TOKEN\"}"
expect_code 429 "the right token while the address is limited"
admin GET /admin/v1/status >/dev/null
[[ $(code) == 200 ]] || fail "Bearer while sign-in is limited: $(code)"
pass "failed sign-ins: 429 with Retry-After after five in a minute; Bearer unaffected"

gw_stop
pass "dashboard security"
