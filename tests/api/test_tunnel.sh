#!/usr/bin/env bash
# The API through a real gateway and tunnel: a runner enrolled with a gateway
# serves stories260K with --model; clients with ferry API keys call
# /r/<runner>/v1/completions and get the same greedy text as the runner's
# local listener, streamed too; the usage trailer charges each key's tokens
# (ferry --json usage). Then 32 concurrent streamed requests from four keys:
# sixteen hang up mid-stream, the other sixteen finish with the exact text,
# and the runner's KV blocks all come back.
source "$(dirname "$0")/../gateway/lib.sh"
STORIES=${FERRY_TESTDATA:-/nonexistent}/models/stories260K
if [[ ! -f $STORIES/model.safetensors ]]; then
    echo "SKIP: stories260K not found under FERRY_TESTDATA"
    exit 77
fi
FAIL_LOGS+=(runner.log)
gw_init
gw_start
enroll storyteller "$TMP/rn"
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn" --model "$STORIES" \
    --connections 2 --listen 127.0.0.1:0 --listen-port-file "$TMP/port" --threads 1 \
    >"$TMP/runner.log" 2>&1 &
RN_PID=$!
PIDS+=("$RN_PID")
wait_for 60 conns_are storyteller 2 || fail "the runner did not connect"
LOCAL=127.0.0.1:$(cat "$TMP/port")
grep -q '"models": 1\|models=1' "$TMP/gw.log" || fail "HELLO did not announce one model: $(grep -i hello "$TMP/gw.log" | tail -n 2)"

want=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["completion_text"])' "$STORIES/expected_greedy.json")
body='{"prompt":"Once upon a time","max_tokens":196,"temperature":0}'
mkkey alice
ALICE=$KEY ALICE_ID=$KID
c=$(pubk "$ALICE" -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
    -H 'x-ferry-key-id: forged' --data "$body" /r/storyteller/v1/completions)
[[ $c == 200 ]] || fail "completion through the gateway: $c $(cat "$TMP/out")"
got=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$TMP/out")
[[ $got == "$want" ]] || fail "text through the gateway differs: $got"
pass "greedy completion through gateway and tunnel = expected_greedy.json"

# An error is the same whoever answers it: an unknown model is a 404
# model_not_found from the gateway's /v1 routing and from the runner's own API,
# and the two bodies agree in everything but the message.
nobody='{"model":"no-such-model","prompt":"x","max_tokens":1}'
mkkey nobody
c=$(pubk "$KEY" -o "$TMP/gw404" -w '%{http_code}' -H 'content-type: application/json' --data "$nobody" /v1/completions)
[[ $c == 404 ]] || fail "gateway, unknown model: $c $(cat "$TMP/gw404")"
c=$(curl -sS -o "$TMP/rn404" -w '%{http_code}' -H 'content-type: application/json' --data "$nobody" "http://$LOCAL/v1/completions")
[[ $c == 404 ]] || fail "runner, unknown model: $c $(cat "$TMP/rn404")"
python3 - "$TMP/gw404" "$TMP/rn404" <<'PY' || fail "the gateway's and the runner's 404 differ: $(cat "$TMP/gw404" "$TMP/rn404")"
import json, sys
a, b = (json.load(open(f))["error"] for f in sys.argv[1:])
assert list(a) == list(b) == ["message", "type", "param", "code"], (a, b)
for k in ("type", "param", "code"):
    assert a[k] == b[k], (k, a[k], b[k])
assert (a["type"], a["code"], a["param"]) == ("invalid_request_error", "model_not_found", "model"), a
PY
pass "an unknown model gets the same 404 body shape, type, param and code from the gateway and the runner"

sbody='{"prompt":"Once upon a time","max_tokens":196,"temperature":0,"stream":true}'
pubk "$ALICE" -N -H 'content-type: application/json' --data "$sbody" /r/storyteller/v1/completions >"$TMP/sse"
got=$(python3 - "$TMP/sse" <<'PY'
import json, sys
ev = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert ev[-1] == "[DONE]", ev[-2:]
sys.stdout.write("".join(c["text"] for e in ev[:-1] for c in json.loads(e)["choices"]))
PY
) || fail "stream through the gateway: $(tail -c 300 "$TMP/sse")"
[[ $got == "$want" ]] || fail "streamed text through the gateway differs: $got"
pass "streamed deltas through the gateway = expected text"

# Both requests charged to alice: 2 x (5 prompt + 196 completion).
charged() {
    ferry --json usage --key "$ALICE_ID" >"$TMP/u.json"
    python3 - "$TMP/u.json" <<'PY'
import json, sys
(row,) = json.load(open(sys.argv[1]))["usage"]
assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (2, 10, 392), row
PY
}
wait_for 10 charged || fail "usage not charged: $(cat "$TMP/u.json")"
pass "the usage trailer charged alice 10 prompt + 392 completion tokens"

# What evaluation harnesses and the SDK types send, through the gateway
# (both /r/<runner>/ and /v1 routed by model): the same answers as the
# runner's local listener, 400s that name their param, and the usage of a
# batch (summed over its prompts) charged to the key.
mkkey evaluator
EVAL=$KEY EVAL_ID=$KID
API_BASE=$(pub_url /r/storyteller) API_KEY=$EVAL API_CA=$CA \
    PYTHONPATH="$(dirname "$0")" python3 - "http://$LOCAL" "$(pub_url "")" >"$TMP/eval.out" <<'PY' ||
import sys
from apilib import call, status, sse, text_of
local, root = sys.argv[1], sys.argv[2]
prompt, used = 0, 0
def both(path, body):
    global prompt, used
    g, l = call(path, body), call(path, body, local)
    prompt += g["usage"]["prompt_tokens"]
    used += g["usage"]["completion_tokens"]
    return g, l
score = {"prompt": "Once upon a time, there was a little girl", "echo": True, "max_tokens": 0,
         "logprobs": 1, "temperature": 0}
g, l = both("/v1/completions", score)
lp = g["choices"][0]["logprobs"]
assert g["choices"][0]["text"] == score["prompt"] and lp["token_logprobs"][0] is None
assert lp["tokens"] == l["choices"][0]["logprobs"]["tokens"]
assert all(a is None or abs(a - b) < 1e-5 for a, b in zip(lp["token_logprobs"], l["choices"][0]["logprobs"]["token_logprobs"]))
batch = {"prompt": ["Once upon a time", "Lily"], "n": 2, "max_tokens": 8, "temperature": 0,
         "logit_bias": {"432": -100}}
g, l = both("/v1/completions", batch)
assert [c["index"] for c in g["choices"]] == [0, 1, 2, 3]
assert [c["text"] for c in g["choices"]] == [c["text"] for c in l["choices"]]
assert not g["choices"][0]["text"].startswith(","), g["choices"][0]  # 432 is ","
assert text_of(sse("/v1/completions", batch)) == {i: c["text"] for i, c in enumerate(g["choices"])}
prompt += g["usage"]["prompt_tokens"]  # the stream's trailer charges the same
used += g["usage"]["completion_tokens"]
# The gateway's own /v1 route, by model.
r = call("/v1/completions", dict(score, model="stories260K"), root)
assert r["choices"][0]["logprobs"]["tokens"] == lp["tokens"], r
prompt += r["usage"]["prompt_tokens"]
for body, param in [({"prompt": "x", "max_tokens": 0}, "max_tokens"),
                    ({"prompt": "x", "logit_bias": {"512": 1}}, "logit_bias"),
                    ({"prompt": "x", "logit_bias": {"1": 200}}, "logit_bias"),
                    ({"prompt": ["x", [1]]}, "prompt"),
                    ({"prompt": ["x"] * 129}, "prompt")]:
    code, err = status("/v1/completions", body)
    assert code == 400 and err["error"]["param"] == param and err["error"]["type"] == "invalid_request_error", (body, code, err)
print(prompt, used)
PY
    fail "harness requests through the gateway: $(tail -n 5 "$TMP/eval.out")"
read -r want_p want_c <"$TMP/eval.out"
charged_eval() {
    ferry --json usage --key "$EVAL_ID" >"$TMP/u.json"
    python3 - "$TMP/u.json" "$want_p" "$want_c" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["usage"]
p = sum(r["prompt_tokens"] for r in rows)
c = sum(r["completion_tokens"] for r in rows)
assert (p, c) == (int(sys.argv[2]), int(sys.argv[3])), (p, c, sys.argv[2:])
PY
}
wait_for 20 charged_eval || fail "the batch's usage was not charged: $(cat "$TMP/u.json")"
pass "through the gateway: echo/max_tokens 0 scoring, a batch with n=2 and logit_bias (streamed too), /v1 by model, 400s naming their param, batch usage charged"

# 32 concurrent streams from four keys; the odd ones hang up after their
# first chunk.
KEYS=()
for k in k1 k2 k3 k4; do
    mkkey "$k"
    KEYS+=("$KEY")
done
long='{"prompt":"Once upon a time","max_tokens":500,"temperature":0,"ignore_eos":true,"stream":true}'
canceled_before=$(curl -sS "http://$LOCAL/metrics" | awk '$1 == "ferry_api_requests_canceled_total" {print $2}')
CP=()
for i in $(seq 0 31); do
    b=$sbody
    ((i % 2)) && b=$long
    # curl itself in the background (not a shell function) so $! is curl.
    curl -sS -N --max-time 120 --cacert "$CA" -H "Authorization: Bearer ${KEYS[i % 4]}" \
        -H 'content-type: application/json' --data "$b" \
        "$(pub_url /r/storyteller/v1/completions)" >"$TMP/s.$i" 2>/dev/null &
    CP+=($!)
    PIDS+=($!)
done
# Each odd stream is hung up on as soon as its first chunk is in, by a
# watcher of its own (not one after the other, which gave the last ones time
# to finish). A stream that still finished first is not counted as
# cancelled: the count below is of the streams that had not.
for i in $(seq 1 2 31); do
    (
        wait_for 60 grep -q '^data: {' "$TMP/s.$i" || exit 1
        kill "${CP[i]}" 2>/dev/null
        exit 0
    ) &
    PIDS+=($!)
    WP[i]=$!
done
n_cut=0
for i in $(seq 1 2 31); do
    wait "${WP[i]}" || fail "stream $i never started"
    grep -q '\[DONE\]' "$TMP/s.$i" || n_cut=$((n_cut + 1))
done
((n_cut > 0)) || fail "every long stream finished before its hang-up"
for i in $(seq 0 2 31); do
    wait "${CP[i]}" || fail "stream $i failed"
    got=$(python3 - "$TMP/s.$i" <<'PY'
import json, sys
ev = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert ev[-1] == "[DONE]"
sys.stdout.write("".join(c["text"] for e in ev[:-1] for c in json.loads(e)["choices"]))
PY
    ) || fail "stream $i: $(tail -c 200 "$TMP/s.$i")"
    [[ $got == "$want" ]] || fail "stream $i text differs"
done
blocks_free() {
    curl -sS "http://$LOCAL/metrics" >"$TMP/m"
    [[ $(awk '$1 == "ferry_engine_kv_blocks_used" {print $2}' "$TMP/m") == 0 &&
        $(awk '$1 == "ferry_engine_num_requests_running" {print $2}' "$TMP/m") == 0 ]]
}
# The whole state at once: blocks back, nothing running, N_CUT more canceled.
settled() {
    blocks_free &&
        (($(awk '$1 == "ferry_api_requests_canceled_total" {print $2}' "$TMP/m") - canceled_before == n_cut))
}
wait_for 60 settled || fail "after the hang-ups: $(grep -E 'blocks_used|running|canceled' "$TMP/m"), canceled before $canceled_before"
pass "32 concurrent streams from 4 keys: 16 exact, $n_cut of 16 hung up and cancelled, every KV block back"

kill -TERM "$RN_PID"
wait "$RN_PID" || fail "the runner did not exit 0"
gw_stop
