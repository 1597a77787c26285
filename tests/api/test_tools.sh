#!/usr/bin/env bash
# Tool calling and structured outputs end to end, through a real gateway and
# tunnel, with the official OpenAI Node SDK (tests/api/node/tools_test.mjs,
# with ajv and zod from the lock file): two runners, the random-weights demo
# model under Qwen2.5's own chat template and stories260K under a short
# Hermes-style one, each enrolled and serving by model name on /v1. Then a
# tool-call parser named on the command line, and curl's view of the SSE
# deltas of a streamed call.
source "$(dirname "$0")/../gateway/lib.sh"
SRC=${FERRY_SRC:?}
STORIES=${FERRY_TESTDATA:-/nonexistent}/models/stories260K
skip() {
    echo "SKIP: $*"
    exit 77
}
[[ -f $STORIES/model.safetensors ]] || skip "stories260K not found under FERRY_TESTDATA"
NODE_DIR=$FERRY_BUILD/tests/api-node
npm_install_once "$SRC/tests/api/node/package.json" "$NODE_DIR" ||
    skip "npm ci failed (offline, or no node/npm): $(tail -n 3 "$TMP/npm.log" 2>/dev/null)"
cp "$SRC/tests/api/node/tools_test.mjs" "$NODE_DIR/"
FAIL_LOGS+=(runner.demo.log runner.stories.log)

"$BIN/ferry-runner" demo-model --out "$TMP/demo" >/dev/null || fail "demo-model failed"
gw_init
gw_start
enroll demo "$TMP/rn-demo"
enroll stories "$TMP/rn-stories"
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn-demo" --model "$TMP/demo" \
    --chat-template "$SRC/tests/api/qwen2.5.jinja" --connections 1 --threads 1 \
    >"$TMP/runner.demo.log" 2>&1 &
PIDS+=($!)
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn-stories" --model "$STORIES" \
    --chat-template "$SRC/tests/api/tools_compact.jinja" --connections 1 --threads 1 \
    --listen 127.0.0.1:0 --listen-port-file "$TMP/port" >"$TMP/runner.stories.log" 2>&1 &
PIDS+=($!)
wait_for 60 conns_are demo 1 || fail "the demo runner did not connect"
wait_for 60 conns_are stories 1 || fail "the stories runner did not connect"
wait_for 60 test -s "$TMP/port" || fail "the stories runner's listener did not start"
LOCAL=127.0.0.1:$(cat "$TMP/port")
mkkey agent

# 200 generations per case; under the sanitizers (five times slower) 40 run
# the same code paths.
runs=${FERRY_TOOL_RUNS:-200}
[[ $SANITIZED == 1 ]] && runs=${FERRY_TOOL_RUNS:-40}
NODE_EXTRA_CA_CERTS=$CA FERRY_BASE_URL="https://$PUB/v1" FERRY_API_KEY=$KEY \
    FERRY_MODELS=demo,stories260K FERRY_TOOL_MODEL=demo FERRY_RUNS=$runs \
    node "$NODE_DIR/tools_test.mjs" || fail "the tools SDK test failed"
pass "tools round trip, $runs constrained generations per case on two models, zod, refusals"

# The SSE deltas as a client sees them: the call's id, type and name once,
# then its arguments in pieces that concatenate to valid JSON; the last
# chunk says tool_calls.
tools='[{"type":"function","function":{"name":"add","parameters":{"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":9},"b":{"type":"integer","minimum":0,"maximum":9}},"required":["a","b"],"additionalProperties":false}}}]'
body="{\"messages\":[{\"role\":\"user\",\"content\":\"2+3?\"}],\"tools\":$tools,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"add\"}},\"stream\":true,\"max_tokens\":100,\"seed\":2}"
curl -sS -N --max-time 60 -H 'content-type: application/json' --data "$body" \
    "http://$LOCAL/v1/chat/completions" >"$TMP/sse" || fail "streamed tool call"
python3 - "$TMP/sse" <<'PY' || fail "the streamed tool call's deltas: $(head -c 2000 "$TMP/sse")"
import json, sys
events = [l[6:] for l in open(sys.argv[1]) if l.startswith("data: ")]
assert events[-1].strip() == "[DONE]", events[-1]
chunks = [json.loads(e) for e in events[:-1]]
heads, args, finish = [], "", None
for c in chunks:
    for ch in c["choices"]:
        for tc in ch["delta"].get("tool_calls", []):
            assert tc["index"] == 0, tc
            if "id" in tc:
                heads.append((tc["id"], tc["type"], tc["function"]["name"]))
            args += tc["function"].get("arguments", "")
        assert "content" not in ch["delta"] or not ch["delta"]["content"], ch
        finish = ch["finish_reason"] or finish
assert len(heads) == 1 and heads[0][1] == "function" and heads[0][2] == "add", heads
a = json.loads(args)
assert set(a) == {"a", "b"} and all(0 <= a[k] <= 9 for k in a), a
assert finish == "tool_calls", finish
PY
pass "streamed tool call: one head, argument pieces that parse, finish_reason tool_calls"

# structured_outputs on the completions endpoint: choice and regex.
for so in '{"choice":["alpha","beta","gamma"]}' '{"regex":"[a-z]{2,5}-[0-9]{3}"}'; do
    curl -sS --max-time 60 -H 'content-type: application/json' -o "$TMP/so" \
        --data "{\"prompt\":\"Once\",\"structured_outputs\":$so,\"max_tokens\":40,\"seed\":3,\"n\":8}" \
        "http://$LOCAL/v1/completions" || fail "structured_outputs $so"
    python3 - "$TMP/so" "$so" <<'PY' || fail "structured_outputs $so: $(cat "$TMP/so")"
import json, re, sys
r, so = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
for c in r["choices"]:
    t = c["text"]
    assert c["finish_reason"] == "stop", c
    assert (t in so["choice"]) if "choice" in so else re.fullmatch(so["regex"], t), t
PY
done
pass "structured_outputs choice and regex: every sample of 8 matches"
