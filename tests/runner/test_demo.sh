#!/usr/bin/env bash
# deploy/demo.sh, the part of the README's first command after installing and
# building: the runner's engine serves the shipped stories260K model, which
# continues "Once upon a time" with the exact greedy story (the first 64 tokens
# of expected_greedy.json) and answers a streamed chat completion, both through
# the gateway's /v1 route and the tunnel, twice (idempotent), and nothing left
# running; --keep leaves it running until --stop.
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
grep -q '^==> a completion through the gateway' "$TMP/out1" || fail "no completion: $(cat "$TMP/out1")"
grep -q '^    Once upon a time, there was a little girl' "$TMP/out1" || fail "no story printed: $(cat "$TMP/out1")"
# The shipped model is the real one: its greedy continuation is the reference's.
python3 - "$QS/completion.json" "${FERRY_TESTDATA:-/nonexistent}/models/stories260K/expected_greedy.json" <<'PY' || fail "the story is not the reference's: $(cat "$QS/completion.json")"
import json, os, sys
r = json.load(open(sys.argv[1]))
text = r["choices"][0]["text"]
assert r["usage"]["completion_tokens"] == 64 and text, r
if os.path.exists(sys.argv[2]):
    want = json.load(open(sys.argv[2]))["completion_text"]
    assert want.startswith(text), (text, want[:len(text) + 20])
PY
grep -q '^==> a streamed chat completion through the gateway' "$TMP/out1" || fail "no chat completion: $(cat "$TMP/out1")"
grep -q 'is not chat-tuned' "$TMP/out1" || fail "the demo does not say the model is not chat-tuned"
grep -Eq '^    assistant: ".+"$' "$TMP/out1" || fail "no assistant text printed: $(cat "$TMP/out1")"
grep -Eq '^URL:    https://127\.0\.0\.1:[0-9]+/v1 ' "$TMP/out1" || fail "no URL printed"
grep -Eq '^key:    fy_' "$TMP/out1" || fail "no key printed"
grep -q 'data: \[DONE\]' "$QS/answer.sse" || fail "the stream did not end with [DONE]"
! running || fail "the demo left processes running"
pass "demo: stories260K's greedy story and a streamed chat completion through gateway and tunnel, URL, key and curl printed, nothing left running"

"$SRC/deploy/demo.sh" --build "$FERRY_BUILD" --dir "$QS" --keep >"$TMP/out2" 2>&1 || fail "second run: $(cat "$TMP/out2")"
grep -q 'already initialised' "$TMP/out2" || fail "the second run did not reuse the gateway"
running || fail "--keep stopped the processes"
cmd=$(grep -A1 '^try:' "$TMP/out2" | tail -n1 | sed 's/^ *//')
[[ $cmd == curl* ]] || fail "no curl command printed: $(cat "$TMP/out2")"
eval "$cmd -sS --max-time 60" >"$TMP/sse" || fail "the printed curl command fails"
python3 -c 'import json,sys; r = json.load(open(sys.argv[1])); assert r["object"] == "text_completion" and r["choices"][0]["text"]' "$TMP/sse" ||
    fail "the printed curl command's answer: $(head -c 600 "$TMP/sse")"
"$SRC/deploy/demo.sh" --dir "$QS" --stop >/dev/null || fail "--stop"
wait_for 5 stopped || fail "--stop left processes"
pass "demo again (reusing the gateway), --keep keeps it up for the printed curl, --stop ends it"
