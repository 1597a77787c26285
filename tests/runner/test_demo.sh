#!/usr/bin/env bash
# deploy/demo.sh, the part of the README's first command after installing and
# building: a streamed chat completion from the runner's engine (the
# built-in demo model) answered through the gateway's /v1 route and the
# tunnel, twice (idempotent), and nothing left running; --keep leaves it
# running until --stop.
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
grep -q '^==> a streamed chat completion through the gateway' "$TMP/out1" || fail "no completion: $(cat "$TMP/out1")"
grep -Eq '^    assistant .*: ".+"$' "$TMP/out1" || fail "no assistant text printed: $(cat "$TMP/out1")"
grep -Eq '^URL:    https://127\.0\.0\.1:[0-9]+/v1 ' "$TMP/out1" || fail "no URL printed"
grep -Eq '^key:    fy_' "$TMP/out1" || fail "no key printed"
grep -q 'data: \[DONE\]' "$QS/answer.sse" || fail "the stream did not end with [DONE]"
! running || fail "the demo left processes running"
pass "demo: streamed chat completion through gateway and tunnel, URL, key and curl printed, nothing left running"

"$SRC/deploy/demo.sh" --build "$FERRY_BUILD" --dir "$QS" --keep >"$TMP/out2" 2>&1 || fail "second run: $(cat "$TMP/out2")"
grep -q 'already initialised' "$TMP/out2" || fail "the second run did not reuse the gateway"
running || fail "--keep stopped the processes"
cmd=$(grep -A1 '^try:' "$TMP/out2" | tail -n1 | sed 's/^ *//')
[[ $cmd == curl* ]] || fail "no curl command printed: $(cat "$TMP/out2")"
eval "$cmd -sS --max-time 60" >"$TMP/sse" || fail "the printed curl command fails"
grep -q '^data: {.*"chat.completion.chunk"' "$TMP/sse" && grep -q '^data: \[DONE\]' "$TMP/sse" ||
    fail "the printed curl command's answer: $(head -c 600 "$TMP/sse")"
"$SRC/deploy/demo.sh" --dir "$QS" --stop >/dev/null || fail "--stop"
wait_for 5 stopped || fail "--stop left processes"
pass "demo again (reusing the gateway), --keep keeps it up for the printed curl, --stop ends it"
