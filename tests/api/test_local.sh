#!/usr/bin/env bash
# The runner's OpenAI API on its local listener, with the built-in demo model
# (always available): every route, each 400 naming its parameter, 404/405,
# /tokenize and /detokenize round trips, a prompt longer than the context, a
# full engine queue answered 503 at once, SSE pings while a request waits, and
# a client that hangs up mid-stream freeing its KV blocks.
source "$(dirname "$0")/lib.sh"
demo_model

# A chat template the interpreter cannot compile is refused at start-up,
# the construct named.
printf '{%% macro x() %%}hi{%% endmacro %%}{{ x() }}\n' >"$TMP/bad.jinja"
rc=0
"$BIN/ferry-runner" run --model "$TMP/demo" --chat-template "$TMP/bad.jinja" \
    --listen 127.0.0.1:0 >"$TMP/bad.out" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "macro" "$TMP/bad.out" || fail "bad template: rc $rc $(cat "$TMP/bad.out")"
pass "a template with an unsupported construct is refused at start-up, naming it"
api_start "$TMP/demo" --max-num-seqs 1 --max-queue 1 --sse-ping-interval 100ms \
    --kv-cache-memory 64MiB

[[ $(get /health) == 200 ]] || fail "/health"
[[ $(get /v1/models) == 200 ]] || fail "/v1/models"
jcheck "$TMP/out" 'j["object"] == "list" and [m["id"] for m in j["data"]] == ["demo"] and j["data"][0]["max_model_len"] == 2048'
pass "/health, /v1/models"

# Each invalid request: 400, invalid_request_error, the parameter named.
while IFS='|' read -r path body param; do
    [[ -z $path ]] && continue
    c=$(post "$path" "$body")
    [[ $c == 400 ]] || fail "$body: status $c $(cat "$TMP/out")"
    jcheck "$TMP/out" "j['error']['type'] == 'invalid_request_error' and j['error']['param'] == ($param) and j['error']['message']" ||
        fail "$body: $(cat "$TMP/out")"
done <<'CASES'
/v1/completions|{"prompt":"x","temperature":3}|"temperature"
/v1/completions|{"prompt":"x","temperature":"warm"}|"temperature"
/v1/completions|{"prompt":"x","top_p":0}|"top_p"
/v1/completions|{"prompt":"x","top_k":-5}|"top_k"
/v1/completions|{"prompt":"x","min_p":2}|"min_p"
/v1/completions|{"prompt":"x","presence_penalty":9}|"presence_penalty"
/v1/completions|{"prompt":"x","frequency_penalty":-9}|"frequency_penalty"
/v1/completions|{"prompt":"x","repetition_penalty":-1}|"repetition_penalty"
/v1/completions|{"prompt":"x","n":100}|"n"
/v1/completions|{"prompt":"x","max_tokens":0}|"max_tokens"
/v1/completions|{"prompt":"x","max_tokens":5000}|"max_tokens"
/v1/completions|{"prompt":"x","stop":5}|"stop"
/v1/completions|{"prompt":"x","seed":"s"}|"seed"
/v1/completions|{"prompt":"x","logprobs":99}|"logprobs"
/v1/completions|{"prompt":"x","stream_options":{"include_usage":true}}|"stream_options"
/v1/completions|{"prompt":[1,99999]}|"prompt"
/v1/completions|{"nope":1}|"prompt"
/v1/completions|not json|None
/v1/chat/completions|{"messages":[]}|"messages"
/v1/chat/completions|{"messages":"hi"}|"messages"
/v1/chat/completions|{"messages":[{"role":"wizard","content":"x"}]}|"messages[0].role"
/v1/chat/completions|{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}|"top_logprobs"
/v1/chat/completions|{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":"9"}|"max_completion_tokens"
/v1/chat/completions|{"messages":[{"role":"user"}]}|"messages[0].content"
/v1/completions|{"prompt":"x","logit_bias":{"398":1}}|"logit_bias"
/v1/completions|{"prompt":"x","logit_bias":{"7":-101}}|"logit_bias"
/v1/completions|{"prompt":"x","logit_bias":{"x7":1}}|"logit_bias"
/v1/completions|{"prompt":"x","logit_bias":[7]}|"logit_bias"
/v1/chat/completions|{"messages":[{"role":"user","content":"x"}],"logit_bias":{"7":"big"}}|"logit_bias"
/tokenize|{"prompt":5}|"prompt"
/detokenize|{"tokens":[-1]}|"tokens"
CASES
pass "400 names the parameter for each invalid request"

c=$(post /v1/chat/completions '{"model":"other","messages":[{"role":"user","content":"x"}]}')
[[ $c == 404 ]] && jcheck "$TMP/out" 'j["error"]["param"] == "model" and j["error"]["code"] == "model_not_found"' ||
    fail "unknown model: $c $(cat "$TMP/out")"
[[ $(get /v1/completions) == 405 ]] || fail "GET /v1/completions"
[[ $(get /v1/nothing) == 404 ]] || fail "unknown path"
# A prompt longer than the context (2048 tokens): a clear 400.
long=$(printf 'x%.0s' $(seq 1 2100))
c=$(post /v1/completions "{\"prompt\":\"$long\",\"max_tokens\":1}")
[[ $c == 400 ]] && jcheck "$TMP/out" 'j["error"]["code"] == "context_length_exceeded" and "2048" in j["error"]["message"]' ||
    fail "long prompt: $c $(cat "$TMP/out")"
# A body over the cap: 413.
head -c $((9 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$TMP/big"
c=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"$TMP/big" "http://$API/v1/completions" || true)
[[ $c == 413 ]] || fail "a 9 MiB body: $c"
pass "404 unknown model, 405, 404 path, 400 context_length_exceeded, 413 body"

# /tokenize and /detokenize round trip (vLLM shapes).
text='Hello, wörld! 👋'
[[ $(post /tokenize "{\"prompt\":\"$text\"}") == 200 ]] || fail "/tokenize $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["count"] == len(j["tokens"]) and j["tokens"][0] == 1 and j["max_model_len"] == 2048' ||
    fail "tokenize: $(cat "$TMP/out")"
toks=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["tokens"][1:]))' "$TMP/out")
[[ $(post /detokenize "{\"tokens\":$toks}") == 200 ]] || fail "/detokenize $(cat "$TMP/out")"
jcheck "$TMP/out" "j['prompt'] == '$text'" || fail "detokenize: $(cat "$TMP/out")"
[[ $(post /tokenize '{"messages":[{"role":"user","content":"hi"}]}') == 200 ]] &&
    jcheck "$TMP/out" 'j["tokens"][0] == 3' || fail "tokenize messages: $(cat "$TMP/out")"
pass "/tokenize and /detokenize round trip; messages through the chat template"

# A chat completion and its streamed twin (greedy: the same text).
body='{"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0,"ignore_eos":true}'
[[ $(post /v1/chat/completions "$body") == 200 ]] || fail "chat: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["object"] == "chat.completion" and j["id"].startswith("chatcmpl-") and j["choices"][0]["finish_reason"] == "length" and j["usage"]["completion_tokens"] == 8' ||
    fail "chat: $(cat "$TMP/out")"
want=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$TMP/out")
stream=${body%\}},\"stream\":true}
[[ $(post /v1/chat/completions "$stream") == 200 ]] || fail "streamed chat"
got=$(sse_text "$TMP/out") || fail "streamed chat: $(cat "$TMP/out")"
[[ $got == "$want" ]] || fail "streamed chat text '$got' != '$want'"
pass "chat completion and its stream agree"

# logit_bias on chat: 100 forces a token (greedy repeats it), -100 bans it
# even where another forced token competes.
pyapi <<'PY' || fail "logit_bias on chat"
from apilib import call
q, r = (call("/tokenize", {"prompt": ch, "add_special_tokens": False})["tokens"][-1] for ch in "QR")
def content(bias):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "logit_bias": bias}
    return call("/v1/chat/completions", body)["choices"][0]["message"]["content"]
assert content({str(q): 100}) == "QQQQ", content({str(q): 100})
assert set(content({str(q): 100, str(r): 100})) <= {"Q", "R"}
assert content({str(q): -100, str(r): 100}) == "RRRR"
PY
pass "logit_bias on chat: 100 forces a token, -100 bans it"

# The engine takes one sequence and queues one request: a third is refused
# with 503 at once. The queued one gets SSE pings while it waits. The held
# requests must outlast everything below whatever the machine's speed: a
# second runner serves the demo model with a 131072-token context and they
# ask for 100000 tokens, work no machine finishes while this test runs (with
# the 2048-token context, the first one could end on its own before the
# clients hung up, and the second then ran instead of waiting).
cp -r "$TMP/demo" "$TMP/demo_long"
python3 - "$TMP/demo_long/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["max_position_embeddings"] = 131072
json.dump(c, open(sys.argv[1], "w"))
PY
API1=$API API1_PID=$API_PID
api_start "$TMP/demo_long" --max-num-seqs 1 --max-queue 1 --sse-ping-interval 100ms \
    --kv-cache-memory 64MiB
hold='{"prompt":"a","max_tokens":100000,"ignore_eos":true,"stream":true}'
curl -sSN --max-time 280 -H 'content-type: application/json' --data "$hold" "http://$API/v1/completions" >"$TMP/h1" 2>/dev/null &
H1=$!
PIDS+=("$H1")
wait_for 60 metric_is ferry_engine_num_requests_running 1 || fail "first request not running"
curl -sSN --max-time 280 -H 'content-type: application/json' --data "$hold" "http://$API/v1/completions" >"$TMP/h2" 2>/dev/null &
H2=$!
PIDS+=("$H2")
wait_for 60 metric_is ferry_engine_num_requests_waiting 1 || fail "second request not waiting"
c=$(post /v1/completions '{"prompt":"a","max_tokens":2}')
[[ $c == 503 ]] && jcheck "$TMP/out" 'j["error"]["type"] == "server_error"' || fail "full queue: $c $(cat "$TMP/out")"
wait_for 60 grep -q '^: ping$' "$TMP/h2" || fail "no SSE ping while waiting: $(head -c 300 "$TMP/h2")"
pass "a full engine queue answers 503 at once; a waiting stream gets ': ping' comments"

# Clients that hang up, one running and one queued: both requests leave the
# engine, their blocks are freed and each is counted once as canceled. The
# API counts a cancellation before it aborts the engine request, so the
# counter never lags the blocks; the test still waits for the whole state
# (the two hang-ups reach the runner one after the other).
kill "$H1" "$H2" 2>/dev/null || true
settled() {
    metric_is ferry_engine_kv_blocks_used 0 && metric_is ferry_engine_num_requests_running 0 &&
        metric_is ferry_engine_num_requests_waiting 0 && metric_is ferry_api_requests_active 0 &&
        metric_is ferry_api_requests_canceled_total 2
}
wait_for 60 settled || fail "after the hang-ups: $(curl -sS "http://$API/metrics" | grep -E '^ferry_(engine_kv_blocks_used|engine_num_requests|api_requests)')"
pass "hung-up streams (running and queued) are aborted, counted and their KV blocks freed"
api_stop
API=$API1 API_PID=$API1_PID

api_stop
pass "SIGTERM: the runner exits 0"
