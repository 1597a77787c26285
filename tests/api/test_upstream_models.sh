#!/usr/bin/env bash
# A runner started with --upstream announces the upstream's models: it reads
# the upstream's /v1/models (an OpenAI list served by models_upstream.py)
# before its first HELLO, so the gateway lists them for the runner's every
# connection (admin API), in its GET /v1/models, and routes POST
# /v1/chat/completions for them to the upstream. Ids that break HELLO's
# rules (a space, a repeat) are skipped. When the list changes, the runner
# reconnects to announce the new one; when the upstream stops listing models
# (404, like a plain HTTP server) it announces none and says so once, however
# many reads follow.
source "$(dirname "$0")/../gateway/lib.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
FAIL_LOGS+=(runner.log upstream.log)

mkdir -p "$TMP/up"
echo '["llama-a", "qwen-b", "bad id", "llama-a", ""]' >"$TMP/up/models"
python3 "$SRC/tests/api/models_upstream.py" "$TMP/up" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_for 10 test -s "$TMP/up/port" || fail "the upstream did not start"
UPURL=http://127.0.0.1:$(cat "$TMP/up/port")
reads() { curl -sS --max-time 5 "$UPURL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["models_reads"])'; }

gw_init
gw_start
enroll vllmbox "$TMP/rn"
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn" --upstream "$UPURL" \
    --connections 2 --upstream-models-refresh 1s >"$TMP/runner.log" 2>&1 &
RN_PID=$!
PIDS+=("$RN_PID")

# models NAME: "conns|models" of runner NAME's live connections, each
# connection's list joined by ',', the lists joined by ' '.
models() {
    curl -sS --max-time 5 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://$ADM/admin/v1/runners" | python3 -c "
import json, sys
cs = [c for r in json.load(sys.stdin)['runners'] if r['name'] == '$1' for c in r['connections']]
print('%d|%s' % (len(cs), ' '.join(sorted(','.join(c['models']) for c in cs))))"
}
models_are() { [[ $(models vllmbox) == "$1" ]]; }
wait_for 20 models_are '2|llama-a,qwen-b llama-a,qwen-b' ||
    fail "the gateway's view of the runner: $(models vllmbox)"
grep -q '"skipped": 3\|skipped=3' "$TMP/runner.log" || fail "the skipped ids were not reported"
pass "both connections announce the upstream's two valid ids in HELLO (3 invalid or repeated skipped)"

# Through the gateway's /v1 routing by model.
mkkey user
# gw_models: the ids the gateway's GET /v1/models lists for the key, sorted.
gw_models() {
    local c
    c=$(pubk "$KEY" -o "$TMP/models.json" -w '%{http_code}' /v1/models)
    [[ $c == 200 ]] || fail "GET /v1/models at the gateway: $c $(cat "$TMP/models.json")"
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["object"] == "list"; print(" ".join(sorted(m["id"] for m in j["data"])))' "$TMP/models.json"
}
# chat MODEL: POST /v1/chat/completions for MODEL; prints the status, body in $TMP/out.
chat() {
    pubk "$KEY" -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
        --data "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
        /v1/chat/completions
}
answered_for() { grep -q "\"upstream answered for $1\"" "$TMP/out"; }
[[ $(gw_models) == "llama-a qwen-b" ]] || fail "gateway /v1/models: $(cat "$TMP/models.json")"
c=$(chat qwen-b)
[[ $c == 200 ]] && answered_for qwen-b || fail "/v1/chat/completions for qwen-b: $c $(cat "$TMP/out")"
c=$(chat nobody-serves-this)
[[ $c == 404 ]] || fail "a model nobody serves: $c $(cat "$TMP/out")"
pass "the gateway lists llama-a and qwen-b at /v1/models and routes a chat completion for qwen-b to the upstream"

# A new model: the runner reconnects to announce it, the old connections go.
echo '["llama-a", "qwen-b", "mistral-c"]' >"$TMP/up/models"
wait_for 30 models_are '2|llama-a,qwen-b,mistral-c llama-a,qwen-b,mistral-c' ||
    fail "the new list was not announced: $(models vllmbox)"
grep -q 'reconnecting to announce the new models' "$TMP/runner.log" || fail "no reconnect logged"
[[ $(gw_models) == "llama-a mistral-c qwen-b" ]] || fail "gateway /v1/models: $(cat "$TMP/models.json")"
c=$(chat mistral-c)
[[ $c == 200 ]] && answered_for mistral-c || fail "/v1/chat/completions for mistral-c: $c $(cat "$TMP/out")"
pass "a third model at the upstream: both connections replaced, announcing three, routed by the gateway"

# Requests keep working through the runner's own route meanwhile.
c=$(pub -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
    --data '{"model":"mistral-c","messages":[]}' /r/vllmbox/v1/chat/completions)
[[ $c == 200 ]] && grep -q 'upstream answered for mistral-c' "$TMP/out" ||
    fail "/r/vllmbox/v1/chat/completions: $c $(cat "$TMP/out")"

# The upstream stops listing models (404): none announced, said once.
rm "$TMP/up/models"
wait_for 30 models_are '2| ' || fail "models still announced: $(models vllmbox)"
r0=$(reads)
wait_for 30 eval '(( $(reads) >= r0 + 3 ))' || fail "the runner stopped reading /v1/models"
n=$(grep -c 'lists no models' "$TMP/runner.log" || true)
[[ $n == 1 ]] || fail "the 404 was logged $n times"
[[ $(gw_models) == "" ]] || fail "gateway /v1/models still lists: $(cat "$TMP/models.json")"
c=$(chat qwen-b)
[[ $c == 404 ]] || fail "qwen-b after the upstream stopped listing it: $c $(cat "$TMP/out")"
pass "a 404 from /v1/models: no models announced, logged once over several reads"

kill -TERM "$RN_PID"
wait "$RN_PID" || fail "the runner did not exit 0"

# A runner whose upstream has no /v1/models at all connects and announces none.
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/rn" --upstream "$UPURL" \
    --connections 1 --upstream-models-refresh 0s >"$TMP/runner.log" 2>&1 &
RN_PID=$!
PIDS+=("$RN_PID")
wait_for 20 models_are '1|' || fail "plain upstream: $(models vllmbox)"
grep -q 'lists no models' "$TMP/runner.log" || fail "the missing /v1/models was not logged"
kill -TERM "$RN_PID"
wait "$RN_PID" || fail "the runner did not exit 0"
gw_stop
pass "an upstream without /v1/models: the runner connects and announces nothing"
