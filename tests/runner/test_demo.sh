#!/usr/bin/env bash
# deploy/demo.sh, the part of the README's first command after installing and
# building: a request answered through the tunnel, twice (idempotent), and
# nothing left running; --keep leaves it running until --stop.
source "$(dirname "$0")/../tunnel/lib.sh"
SRC=${FERRY_SRC:?}
QS=$TMP/qs
# On failure, show the demo's own logs too.
eval "lib_$(declare -f fail)"
fail() {
    local f
    for f in "$QS"/logs/*.log; do
        [[ -f $f ]] && { echo "--- $(basename "$f")" >&2; tail -n 15 "$f" >&2; }
    done
    lib_fail "$@"
}
running() { pgrep -f -- "$QS" >/dev/null; }
stopped() { ! running; }

"$SRC/deploy/demo.sh" --build "$FERRY_BUILD" --dir "$QS" >"$TMP/out1" 2>&1 || fail "demo: $(cat "$TMP/out1")"
grep -q 'Hello from a private HTTP server' "$TMP/out1" || fail "no answer through the tunnel: $(cat "$TMP/out1")"
grep -Eq '^URL:  https://127\.0\.0\.1:[0-9]+/r/demo/$' "$TMP/out1" || fail "no URL printed"
grep -Eq "^try:  curl --cacert $QS/gateway/ca.crt https://" "$TMP/out1" || fail "no curl command printed"
! running || fail "the demo left processes running"
pass "demo: request through the tunnel, URL and curl printed, nothing left running"

"$SRC/deploy/demo.sh" --build "$FERRY_BUILD" --dir "$QS" --keep >"$TMP/out2" 2>&1 || fail "second run: $(cat "$TMP/out2")"
grep -q 'already initialised' "$TMP/out2" || fail "the second run did not reuse the gateway"
running || fail "--keep stopped the processes"
cmd=$(sed -n 's/^try:  //p' "$TMP/out2")
$cmd -sS --max-time 5 | grep -q 'Hello from a private HTTP server' || fail "the printed curl command fails"
"$SRC/deploy/demo.sh" --dir "$QS" --stop >/dev/null || fail "--stop"
wait_for 5 stopped || fail "--stop left processes"
pass "demo again (reusing the gateway), --keep keeps it up for the printed curl, --stop ends it"
