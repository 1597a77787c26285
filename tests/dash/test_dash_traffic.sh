#!/usr/bin/env bash
# The dashboard's live traffic, end to end: a real runner serving
# stories260K, curl as the client. A request through the gateway appears on
# the SSE stream (held open by curl -N) and in /admin/v1/traffic with its
# key, runner, model, status and tokens; its detail shows the headers with
# every secret redacted and never a body or a key; filters and query
# checks; the ring keeps the last 1000; at most 16 streams, and a stream
# whose client left frees its place; /admin/v1/overview counts it all.
source "$(dirname "$0")/lib.sh"

gw_init
gw_start
stories_runner storyteller
sign_in
mkkey alice
ALICE=$KEY ALICE_ID=$KID

# --- the stream ---------------------------------------------------------------------------
sse_start() { # sse_start FILE: a live traffic stream into FILE; its curl's pid in SSE_PID
    curl -sS -N --max-time 120 --cacert "$CA" -H "Cookie: ferry_session=$COOKIE" \
        "https://$ADM/admin/v1/traffic/stream" >"$1" 2>&1 &
    SSE_PID=$!
    PIDS+=("$SSE_PID")
}
sse_start "$TMP/sse"
MAIN_SSE=$SSE_PID
wait_for 10 grep -q '^: live' "$TMP/sse" || fail "the stream did not start: $(cat "$TMP/sse")"
hreq "https://$ADM/admin/v1/traffic/stream"
expect_code 401 "stream without credentials"

model=$(admin GET /admin/v1/overview | python3 -c 'import json,sys; print(json.load(sys.stdin)["models"][0])')
[[ -n $model ]] || fail "overview lists no model"
body="{\"model\":\"$model\",\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"temperature\":0}"
c=$(pubk "$ALICE" -o "$TMP/out" -w '%{http_code}' -H 'Content-Type: application/json' \
    -H 'X-Hub-Signature-256: sha256=abc' -H 'Cookie: theirs=secret-cookie' -H 'X-Client-Secret: hunter2' \
    -H 'X-Trace: visible-value' --data "$body" /v1/completions)
[[ $c == 200 ]] || fail "completion: $c $(cat "$TMP/out")"
sse_record() { grep -q '"path":"/v1/completions"' "$TMP/sse"; }
wait_for 10 sse_record || fail "the request did not appear on the stream: $(cat "$TMP/sse")"
grep -A1 '^event: request' "$TMP/sse" | sed -n 's/^data: //p' | grep '/v1/completions' | head -n1 >"$TMP/rec.json"
jcheck "$TMP/rec.json" "j['key_id'] == '$ALICE_ID' and j['key_name'] == 'alice' and j['runner'] == 'storyteller' and j['model'] == '$model' and j['status'] == 200 and j['kind'] == 'v1' and j['method'] == 'POST' and j['prompt_tokens'] > 0 and j['completion_tokens'] == 8 and j['latency_ms'] > 0 and len(j['id']) == 16"
ID=$(json_get "$TMP/rec.json" id)
pass "a /v1 request appears on the SSE stream with key, runner, model, status and tokens"

# --- the list, filters, the detail ----------------------------------------------------------------
c=$(pubk "$ALICE" -o "$TMP/out" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data '{"prompt":"Once","max_tokens":2,"temperature":0}' /r/storyteller/v1/completions)
[[ $c == 200 ]] || fail "raw completion: $c"
c=$(pubk fy_wrongwrongwrongwrongwrongwrongwrongwrongwro -o /dev/null -w '%{http_code}' /v1/models)
[[ $c == 401 ]] || fail "wrong key: $c"
traffic_has() { sadmin GET "/admin/v1/traffic$1" && [[ $(code) == 200 ]] && jcheck "$TMP/b" "$2" 2>/dev/null; }
wait_for 10 traffic_has "" "len(j['requests']) >= 3" || fail "traffic list: $(cat "$TMP/b")"
jcheck "$TMP/b" "j['requests'][0]['status'] == 401 and j['requests'][0]['key_id'] is None and j['requests'][1]['kind'] == 'raw' and j['requests'][2]['id'] == '$ID'"
sadmin GET "/admin/v1/traffic?key=alice"
jcheck "$TMP/b" "len(j['requests']) == 2 and all(r['key_id'] == '$ALICE_ID' for r in j['requests'])"
sadmin GET "/admin/v1/traffic?key=$ALICE_ID&status=200&runner=storyteller&model=$model"
jcheck "$TMP/b" "[r['id'] for r in j['requests']] == ['$ID']"
sadmin GET "/admin/v1/traffic?status=4xx"
jcheck "$TMP/b" "len(j['requests']) >= 1 and all(400 <= r['status'] < 500 for r in j['requests'])"
sadmin GET "/admin/v1/traffic?status=5xx&limit=5"
jcheck "$TMP/b" "j['requests'] == []"
sadmin GET "/admin/v1/traffic?limit=1"
jcheck "$TMP/b" "len(j['requests']) == 1"
for bad in "limit=0" "limit=1001" "limit=x" "status=abc" "status=6xx" "model=$(printf 'm%.0s' {1..300})"; do
    sadmin GET "/admin/v1/traffic?$bad"
    expect_code 400 "traffic?$bad"
done
pass "list: newest first, raw and /v1 and refused requests, filters by key, status, model and runner; bad queries 400"

sadmin GET "/admin/v1/traffic/$ID"
expect_code 200 "detail"
cp "$TMP/b" "$TMP/detail.json"
jcheck "$TMP/detail.json" "{n.lower(): v for n, v in j['request_headers']}['authorization'] == '[redacted]' and {n.lower(): v for n, v in j['request_headers']}['cookie'] == '[redacted]' and {n.lower(): v for n, v in j['request_headers']}['x-client-secret'] == '[redacted]' and {n.lower(): v for n, v in j['request_headers']}['x-hub-signature-256'] == '[redacted]' and {n.lower(): v for n, v in j['request_headers']}['x-trace'] == 'visible-value'"
jcheck "$TMP/detail.json" "any(n.lower() == 'content-type' for n, v in j['response_headers'])"
for secret in "$ALICE" hunter2 secret-cookie sha256=abc 'Once upon a time'; do
    grep -qF -- "$secret" "$TMP/detail.json" && fail "the detail shows '$secret'"
done
grep -qF -- "$ALICE" "$TMP/sse" && fail "the stream shows the key"
sadmin GET /admin/v1/traffic/0123456789abcdef
expect_code 404 "unknown id"
sadmin GET /admin/v1/traffic/xyz
expect_code 404 "malformed id"
hreq "https://$ADM/admin/v1/traffic" -X POST -H "Authorization: Bearer $ADMIN_TOKEN"
expect_code 405 "POST traffic"
hreq "https://$ADM/admin/v1/traffic"
expect_code 401 "traffic without credentials"
pass "detail: headers with authorization, cookie, secrets and signatures redacted; no body, no key"

# --- overview ------------------------------------------------------------------------------------
sadmin GET /admin/v1/overview
expect_code 200 overview
jcheck "$TMP/b" "j['runners_connected'] == 1 and j['models'] == ['$model'] and j['requests_total'] >= 3 and j['tokens_total']['completion'] >= 10 and j['tokens_total']['prompt'] > 0 and j['errors_by_status']['401'] >= 1 and j['requests_waiting'] == 0 and j['requests_in_flight'] == 0 and j['uptime_s'] >= 0"
pass "overview: runners, models, totals, errors by status"

# --- bounds: 16 streams, a gone client frees its place; the ring keeps 1000 ------------------------
EXTRA=()
for ((i = 1; i < 16; i++)); do
    sse_start "$TMP/sse.$i"
    EXTRA+=("$SSE_PID")
done
for ((i = 1; i < 16; i++)); do
    wait_for 10 grep -q '^: live' "$TMP/sse.$i" || fail "stream $i did not start"
done
hreq "https://$ADM/admin/v1/traffic/stream" -H "Cookie: ferry_session=$COOKIE"
expect_code 503 "the 17th stream"
for p in "${EXTRA[@]}"; do kill9 "$p"; done
stream_opens() {
    curl -sS --max-time 2 --cacert "$CA" -H "Cookie: ferry_session=$COOKIE" -o /dev/null -w '%{http_code}' \
        "https://$ADM/admin/v1/traffic/stream" >"$TMP/c17" 2>/dev/null
    [[ $(cat "$TMP/c17") == 200 ]]
}
wait_for 20 stream_opens || fail "streams whose clients left were not freed: $(cat "$TMP/c17")"
pass "streams: 16 at most (503 beyond); a stream whose client left frees its place"

first=$(sadmin GET "/admin/v1/traffic?limit=1000" >/dev/null; python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"][-1]["id"])' "$TMP/b")
urls=()
for ((i = 0; i < 1000; i++)); do urls+=("$(pub_url "/nothing/$i")"); done
curl -sS --max-time 120 --cacert "$CA" -o /dev/null "${urls[@]}" || fail "1000 requests"
wait_for 20 traffic_has "?limit=1000" "len(j['requests']) == 1000 and j['requests'][0]['path'] == '/nothing/999'" ||
    fail "the ring after 1000 more: $(head -c 300 "$TMP/b")"
sadmin GET "/admin/v1/traffic/$first"
expect_code 404 "the oldest record after 1000 more"
grep -c '^event: request' "$TMP/sse" >"$TMP/nev"
(($(cat "$TMP/nev") >= 1000)) || fail "the stream carried $(cat "$TMP/nev") records"
pass "the ring keeps the last 1000; the stream carried every one"

gw_stop
wait "$MAIN_SSE" 2>/dev/null || true
pass "live traffic"
