# lib.sh: helpers for the dashboard's curl-level tests (sourced, not run):
# the gateway and webhook tests' helpers (tests/hooks/lib.sh) plus requests that keep
# the response's headers, and a signed-in session.
source "$(dirname "${BASH_SOURCE[0]}")/../hooks/lib.sh"

# hreq URL [CURL ARGS...]: a request whose status goes to $TMP/code, headers
# to $TMP/h (CRs dropped) and body to $TMP/b.
hreq() {
    local url=$1
    shift
    curl -sS --max-time 10 --cacert "$CA" -D "$TMP/h.raw" -o "$TMP/b" -w '%{http_code}' "$@" \
        "$url" >"$TMP/code" || fail "curl $url"
    tr -d '\r' <"$TMP/h.raw" >"$TMP/h"
}
# hdr NAME: the value of response header NAME in $TMP/h (the last response).
hdr() { awk -v n="$(tr 'A-Z' 'a-z' <<<"$1")" 'BEGIN{FS=": "} tolower($1)==n {sub(/^[^:]*: /,""); print; exit}' "$TMP/h"; }
# expect_code WANT WHAT: the last response's status is WANT.
expect_code() { [[ $(code) == "$1" ]] || fail "$2: status $(code), want $1: $(head -c 300 "$TMP/b")"; }

CSP="default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
# expect_security WHAT: the last response carries the dashboard's security headers.
expect_security() {
    [[ $(hdr Content-Security-Policy) == "$CSP" ]] || fail "$1: CSP is '$(hdr Content-Security-Policy)'"
    [[ $(hdr X-Content-Type-Options) == nosniff ]] || fail "$1: no X-Content-Type-Options"
    [[ $(hdr Referrer-Policy) == no-referrer ]] || fail "$1: no Referrer-Policy"
    [[ $(hdr X-Frame-Options) == DENY ]] || fail "$1: no X-Frame-Options"
}

# sign_in: a new session from the admin token: its cookie value in COOKIE,
# its CSRF token in CSRF.
sign_in() {
    hreq "https://$ADM/admin/v1/session" -X POST -H 'Content-Type: application/json' \
        --data "{\"token\":\"$ADMIN_TOKEN\"}"
    expect_code 200 "sign-in"
    COOKIE=$(hdr Set-Cookie | sed -n 's/^ferry_session=\([^;]*\);.*/\1/p')
    CSRF=$(json_get "$TMP/b" csrf)
    [[ ${#COOKIE} == 43 && ${#CSRF} == 43 ]] || fail "sign-in: cookie '$COOKIE' csrf '$CSRF'"
}
# sadmin METHOD PATH [CURL ARGS...]: an admin call with the session cookie only.
sadmin() {
    local m=$1 p=$2
    shift 2
    hreq "https://$ADM$p" -X "$m" -H "Cookie: ferry_session=$COOKIE" "$@"
}

# jcheck FILE EXPR: evaluates the Python expression EXPR with j = the JSON in
# FILE; fails the test (with EXPR and the JSON) when it is false.
jcheck() {
    python3 - "$1" "$2" <<'PY' || fail "check failed: $2 on $(head -c 600 "$1")"
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

STORIES=${FERRY_TESTDATA:-/nonexistent}/models/stories260K
# stories_runner NAME: enrolls runner NAME and runs it on stories260K with
# its own engine; waits for its tunnel connection.
stories_runner() {
    [[ -f $STORIES/model.safetensors ]] || { echo "SKIP: stories260K not found under FERRY_TESTDATA"; exit 77; }
    enroll "$1" "$TMP/rn.$1"
    FAIL_LOGS+=("runner.$1.log")
    FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn.$1" --model "$STORIES" \
        --connections 1 --threads 1 >"$TMP/runner.$1.log" 2>&1 &
    PIDS+=("$!")
    wait_for 60 conns_are "$1" 1 || fail "runner $1 did not connect"
}

# hook_gateway: a gateway with runner r1 whose upstream records what reached
# it (tests/hooks/recorder.py).
hook_gateway() {
    gw_init
    gw_start
    rec_start
    enroll r1 "$TMP/r1"
    runner_start r1 "$TMP/r1"
}
