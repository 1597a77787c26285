#!/usr/bin/env bash
# The OpenAI API through the gateway (/v1/*, routed by the body's model):
# runners announce models in HELLO (gw_test_runner --model); requests go to a
# runner serving the model, least outstanding first (checked causally with
# held requests); 400/401/403/404/405/413/429 answers in OpenAI's shape;
# x-ferry-key-id is the gateway's (a client's is dropped); the usage trailer
# is charged; SSE relayed; GET /v1/models lists what the key may use and a
# runner serves; a runner's disconnect removes its models; when every runner
# serving a model is at its stream limit the request waits (served when a
# stream ends), then 503 after --queue-timeout.
source "$(dirname "$0")/lib.sh"
FAIL_LOGS+=(up.A.log up.B.log runner.*.out)

# An upstream that answers every request with what it got, as JSON, tagged
# with its label, so the test knows which runner served it. "x-test-hold: T"
# holds the answer until the file $TMP/release/T exists (or 60 s, or the
# client leaves); "x-test-sse: N" answers with N events and [DONE].
mkdir -p "$TMP/release"
cat >"$TMP/echo.py" <<'PY'
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

label, portfile, release = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
stats = {"requests": 0, "held": 0}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path == "/stats":
            with lock:
                return self.answer(200, dict(stats))
        with lock:
            stats["requests"] += 1
        hold = self.headers.get("x-test-hold")
        if hold:
            with lock:
                stats["held"] += 1
            try:
                for _ in range(3000):
                    if os.path.exists(os.path.join(release, hold)):
                        break
                    time.sleep(0.02)
            finally:
                with lock:
                    stats["held"] -= 1
        rep = {"upstream": label, "method": self.command, "path": self.path,
               "headers": [[k.lower(), v] for k, v in self.headers.items()],
               "body": body.decode("utf-8", "replace")}
        sse = self.headers.get("x-test-sse")
        if not sse:
            return self.answer(200, rep)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        def chunk(s):
            b = s.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()
        for i in range(int(sse)):
            chunk("data: %s\n\n" % json.dumps({"i": i, "upstream": label}))
        chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = handle_any

s = ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
os.rename(portfile + ".tmp", portfile)
s.serve_forever()
PY
echo_start() { # echo_start LABEL: sets UP_<LABEL>
    python3 "$TMP/echo.py" "$1" "$TMP/up.$1.port" "$TMP/release" >"$TMP/up.$1.log" 2>&1 &
    PIDS+=($!)
    wait_for 10 test -s "$TMP/up.$1.port" || fail "echo upstream $1 did not start"
    printf -v "UP_$1" '%s' "$(cat "$TMP/up.$1.port")"
}
up_held() { # up_held LABEL: requests the upstream holds now
    curl -sS --max-time 5 "http://127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"])'
}
held_is() { [[ $(up_held "$1") == "$2" ]]; }
held_total_is() { (($(up_held "$UP_A") + $(up_held "$UP_B") == $1)); }
# requests the gateway has admitted and not finished (waiting ones included)
gw_in_flight_is() {
    admin GET /admin/v1/status >"$TMP/status.json"
    [[ $(jf "$TMP/status.json" 'j["requests_in_flight"]') == "$1" ]]
}
# jq-free field access: jf FILE PYEXPR (j is the parsed JSON).
jf() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(($2))" "$1"; }
hdr() { tr -d '\r' <"$TMP/h" | sed -n "s/^$1: //Ip" | head -n1; }
# v1 KEY PATH JSON [CURL ARGS...]: POST JSON; body in $TMP/o, head in $TMP/h, status printed.
v1() {
    local k=$1 path=$2 body=$3
    shift 3
    pubk "$k" -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "$body" "$@" "$path"
}

gw_init
gw_start --access-log "$TMP/access.log" --queue-timeout 60s
echo_start A
echo_start B
tenroll ra "$TMP/ra"
tenroll rb "$TMP/rb"
# A serves m1; B serves m1 and m2; each takes 2 streams at once.
UP=$UP_A trunner_start "$TMP/ra" --model m1 --max-streams 2
RA_PID=$RN_PID
UP=$UP_B trunner_start "$TMP/rb" --model m1 --model m2 --model m2 --max-streams 2
RB_PID=$RN_PID
mkkey all
KALL=$KEY KALL_ID=$KID
mkkey only-m2 --models m2
KM2=$KEY

# --- GET /v1/models -------------------------------------------------------------------------
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' /v1/models)
[[ $c == 200 ]] || fail "GET /v1/models: $c $(cat "$TMP/o")"
jf "$TMP/o" 'j["object"] == "list" and [m["id"] for m in j["data"]] == ["m1", "m2"] and
    all(m["object"] == "model" and m["owned_by"] == "ferry" and isinstance(m["created"], int) for m in j["data"])' |
    grep -qx True || fail "model list: $(cat "$TMP/o")"
pubk "$KM2" -o "$TMP/o" /v1/models
[[ $(jf "$TMP/o" '[m["id"] for m in j["data"]]') == "['m2']" ]] || fail "scoped model list: $(cat "$TMP/o")"
c=$(pubk "$KM2" -o "$TMP/o" -w '%{http_code}' /v1/models/m2)
[[ $c == 200 && $(jf "$TMP/o" 'j["id"], j["object"]') == "('m2', 'model')" ]] || fail "GET /v1/models/m2: $c $(cat "$TMP/o")"
c=$(pubk "$KM2" -o "$TMP/o" -w '%{http_code}' /v1/models/m1)
[[ $c == 404 && $(jf "$TMP/o" 'j["error"]["code"]') == model_not_found ]] || fail "m1 for an m2 key: $c $(cat "$TMP/o")"
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' /v1/models/nope)
[[ $c == 404 ]] || fail "GET /v1/models/nope: $c"
c=$(pub_nokey -o "$TMP/o" -w '%{http_code}' /v1/models)
[[ $c == 401 ]] || fail "GET /v1/models without a key: $c"
pass "GET /v1/models: served models the key may use, OpenAI's list shape; /v1/models/ID; 401 without a key"

# --- routing by model, headers the runner trusts ---------------------------------------------
body='{"model":"m2","messages":[{"role":"user","content":"hi"}]}'
c=$(v1 "$KALL" /v1/chat/completions "$body" -H 'x-ferry-key-id: forged' -H 'X-Ferry-Other: 1' -H 'x-custom: kept')
[[ $c == 200 ]] || fail "m2 chat: $c $(cat "$TMP/o")"
[[ $(jf "$TMP/o" 'j["upstream"], j["method"], j["path"]') == "('B', 'POST', '/v1/chat/completions')" ]] ||
    fail "m2 went to the wrong place: $(cat "$TMP/o")"
[[ $(jf "$TMP/o" 'j["body"]') == "$body" ]] || fail "body changed: $(cat "$TMP/o")"
[[ $(jf "$TMP/o" '[v for k, v in j["headers"] if k == "x-ferry-key-id"]') == "['$KALL_ID']" ]] ||
    fail "x-ferry-key-id: $(cat "$TMP/o")"
[[ $(jf "$TMP/o" '[k for k, v in j["headers"] if k.startswith("x-ferry-") and k != "x-ferry-key-id"]') == "[]" ]] ||
    fail "a client's x-ferry-* header passed: $(cat "$TMP/o")"
[[ $(jf "$TMP/o" '[v for k, v in j["headers"] if k == "x-custom"]') == "['kept']" ]] || fail "x-custom lost"
grep -qi 'authorization\|fy_' "$TMP/o" && fail "the API key reached the upstream: $(cat "$TMP/o")"
for i in 1 2 3; do
    c=$(v1 "$KALL" /v1/completions '{"prompt":"x","model":"m2"}')
    [[ $c == 200 && $(jf "$TMP/o" 'j["upstream"], j["path"]') == "('B', '/v1/completions')" ]] || fail "m2 completion $i: $c $(cat "$TMP/o")"
done
c=$(v1 "$KALL" "/v1/embeddings?x=1" '{"model":"m1","input":"a"}')
[[ $c == 200 && $(jf "$TMP/o" 'j["path"]') == "/v1/embeddings?x=1" ]] || fail "another /v1 POST: $c $(cat "$TMP/o")"
pass "routed by model (m2 only on B), body and path kept, x-ferry-key-id is the key's id, client x-ferry-* dropped"

# --- least outstanding -------------------------------------------------------------------------
# Hold one m1 request; the next m1 request must go to the other runner.
pubk "$KALL" -o "$TMP/o1" -w '%{http_code}' -H 'Content-Type: application/json' --data '{"model":"m1"}' \
    -H 'x-test-hold: h1' /v1/chat/completions >"$TMP/h1.code" &
H1=$!
wait_for 10 held_total_is 1 || fail "held request never reached an upstream"
if [[ $(up_held "$UP_A") == 1 ]]; then X=A Y=B; else X=B Y=A; fi
c=$(pubk "$KALL" -o "$TMP/o2" -w '%{http_code}' -H 'Content-Type: application/json' --data '{"model":"m1"}' /v1/chat/completions)
[[ $c == 200 && $(jf "$TMP/o2" 'j["upstream"]') == "$Y" ]] || fail "with one held on $X, m1 went to $(jf "$TMP/o2" 'j["upstream"]') ($c)"
# A second held request goes to Y too (X has one outstanding, Y none).
pubk "$KALL" -o "$TMP/o3" -w '%{http_code}' -H 'Content-Type: application/json' --data '{"model":"m1"}' \
    -H 'x-test-hold: h2' /v1/chat/completions >"$TMP/h2.code" &
H2=$!
UPY=UP_$Y
wait_for 10 held_is "${!UPY}" 1 || fail "second held request did not reach $Y"
touch "$TMP/release/h1" "$TMP/release/h2"
wait $H1 $H2 || true
[[ $(cat "$TMP/h1.code") == 200 && $(cat "$TMP/h2.code") == 200 ]] || fail "held requests: $(cat "$TMP/h1.code") $(cat "$TMP/h2.code")"
[[ $(jf "$TMP/o1" 'j["upstream"]') == "$X" && $(jf "$TMP/o3" 'j["upstream"]') == "$Y" ]] || fail "held requests served by the wrong runners"
pass "least outstanding: with a request held on $X, the next two m1 requests went to $Y"

# --- errors ---------------------------------------------------------------------------------------
c=$(v1 "$KALL" /v1/chat/completions '{"model":"nope"}')
[[ $c == 404 ]] || fail "unknown model: $c $(cat "$TMP/o")"
[[ $(jf "$TMP/o" 'j["error"]["code"], j["error"]["param"], j["error"]["type"]') == "('model_not_found', 'model', 'invalid_request_error')" ]] ||
    fail "404 body: $(cat "$TMP/o")"
grep -q 'The model `nope` does not exist' "$TMP/o" || fail "404 message: $(cat "$TMP/o")"
for b in '{"messages":[]}' '{"model":7}' '{"model":""}' '[1]' '{"model":"m1"' 'not json' '{"model":"a b"}'; do
    c=$(v1 "$KALL" /v1/chat/completions "$b")
    [[ $c == 400 && $(jf "$TMP/o" 'j["error"]["param"], j["error"]["type"]') == "('model', 'invalid_request_error')" ]] ||
        fail "body '$b': $c $(cat "$TMP/o")"
done
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' -X POST -H 'Content-Length: 0' /v1/chat/completions)
[[ $c == 400 && $(jf "$TMP/o" 'j["error"]["param"]') == model ]] || fail "empty body: $c $(cat "$TMP/o")"
c=$(v1 "$KM2" /v1/chat/completions '{"model":"m1"}')
[[ $c == 403 && $(jf "$TMP/o" 'j["error"]["code"]') == permission_denied ]] || fail "m1 with an m2 key: $c $(cat "$TMP/o")"
c=$(v1 "$KM2" /v1/chat/completions '{"model":"nope"}')
[[ $c == 403 ]] || fail "unknown model outside the key's scope: $c"
c=$(v1 "$KM2" /v1/chat/completions '{"model":"m2"}')
[[ $c == 200 ]] || fail "m2 with an m2 key: $c"
c=$(pub_nokey -o "$TMP/o" -w '%{http_code}' --data '{"model":"m1"}' /v1/chat/completions)
[[ $c == 401 ]] || fail "no key: $c"
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' /v1/chat/completions)
[[ $c == 405 ]] || fail "GET /v1/chat/completions: $c"
pass "404 model_not_found, 400 param model (missing, not a string, empty, not JSON), 403 outside --models, 401, 405"

# --- limits and usage -----------------------------------------------------------------------------
mkkey tpm --tpm 10
KT=$KEY KT_ID=$KID
c=$(v1 "$KT" /v1/completions '{"model":"m2"}' -H 'x-test-usage: 5,7')
[[ $c == 200 && $(hdr x-ratelimit-limit-tokens) == 10 ]] || fail "tpm key: $c $(cat "$TMP/h")"
charged() {
    ferry --json usage --key "$KT_ID" >"$TMP/u.json"
    [[ $(jf "$TMP/u.json" '[(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in j["usage"]]') == "[(1, 5, 7)]" ]]
}
wait_for 10 charged || fail "usage of the /v1 request: $(cat "$TMP/u.json")"
c=$(v1 "$KT" /v1/completions '{"model":"m2"}')
[[ $c == 429 ]] && grep -q 'tokens per minute' "$TMP/o" || fail "in token debt: $c $(cat "$TMP/o")"
[[ $(hdr retry-after) =~ ^[0-9]+$ && $(hdr x-ratelimit-remaining-tokens) == 0 ]] || fail "429 head: $(cat "$TMP/h")"
grep "\"key_id\":\"$KT_ID\"" "$TMP/access.log" | grep '"status":200' | grep '"runner":"rb","model":"m2"' |
    grep -q '"prompt_tokens":5,"completion_tokens":7' || fail "access log: $(grep "$KT_ID" "$TMP/access.log")"
pass "the usage trailer of a /v1 request is charged (12 tokens of 10: then 429 with Retry-After); usage and access log"

# --- SSE ---------------------------------------------------------------------------------------
pubk "$KALL" -N -D "$TMP/h" -o "$TMP/sse" -H 'Content-Type: application/json' -H 'x-test-sse: 5' \
    --data '{"model":"m2","stream":true}' /v1/chat/completions
[[ $(hdr content-type) == text/event-stream* ]] || fail "SSE head: $(cat "$TMP/h")"
[[ $(grep -c '^data: {"i"' "$TMP/sse") == 5 && $(tail -n2 "$TMP/sse" | head -n1) == 'data: [DONE]' ]] || fail "SSE: $(cat "$TMP/sse")"
pass "streamed (SSE) response relayed"

# --- the bounded wait ---------------------------------------------------------------------------
# m2 is only on B, which takes 2 streams: hold two, a third waits and is
# served once one of them ends.
for t in q1 q2; do
    pubk "$KALL" -o "$TMP/$t.o" -w '%{http_code}' -H 'Content-Type: application/json' --data '{"model":"m2"}' \
        -H "x-test-hold: $t" /v1/chat/completions >"$TMP/$t.code" &
    eval "P_$t=\$!"
done
wait_for 10 held_is "$UP_B" 2 || fail "two held m2 requests on B: $(up_held "$UP_B")"
v1 "$KALL" /v1/chat/completions '{"model":"m2","n":3}' >"$TMP/q3.code" &
P_q3=$!
# Admitted (counted in flight), yet B has no room: it waits in the queue.
wait_for 10 gw_in_flight_is 3 || fail "third m2 request not admitted: $(cat "$TMP/status.json")"
[[ $(up_held "$UP_B") == 2 ]] || fail "a third stream was opened on B beyond its limit"
admin GET /metrics >"$TMP/metrics.txt"
[[ $(metric "$TMP/metrics.txt" ferry_waiting_requests) == 1 ]] || fail "ferry_waiting_requests while one waits"
kill -0 $P_q3 2>/dev/null || fail "the third request did not wait: $(cat "$TMP/q3.code") $(cat "$TMP/o")"
touch "$TMP/release/q1"
wait $P_q3 || true
[[ $(cat "$TMP/q3.code") == 200 && $(jf "$TMP/o" 'j["upstream"], j["body"]') == "('B', '{\"model\":\"m2\",\"n\":3}')" ]] ||
    fail "the waiting request after a stream ended: $(cat "$TMP/q3.code") $(cat "$TMP/o")"
touch "$TMP/release/q2"
wait $P_q1 $P_q2 || true
[[ $(cat "$TMP/q1.code") == 200 && $(cat "$TMP/q2.code") == 200 ]] || fail "held m2 requests: $(cat "$TMP/q1.code") $(cat "$TMP/q2.code")"
pass "all runners of m2 at their stream limit: the request waited and was served when a stream ended"

# --- runner disconnect ------------------------------------------------------------------------
kill9 "$RB_PID"
gone() { pubk "$KALL" -o "$TMP/o" /v1/models && [[ $(jf "$TMP/o" '[m["id"] for m in j["data"]]') == "['m1']" ]]; }
wait_for 10 gone || fail "B's models after it died: $(cat "$TMP/o")"
c=$(v1 "$KALL" /v1/chat/completions '{"model":"m2"}')
[[ $c == 404 ]] || fail "m2 after B died: $c $(cat "$TMP/o")"
c=$(v1 "$KALL" /v1/chat/completions '{"model":"m1"}')
[[ $c == 200 && $(jf "$TMP/o" 'j["upstream"]') == A ]] || fail "m1 after B died: $c $(cat "$TMP/o")"
pass "a runner's disconnect removes its models (m2 404, m1 on A)"

admin GET /metrics >"$TMP/metrics.txt"
[[ $(metric "$TMP/metrics.txt" ferry_waiting_requests) == 0 ]] || fail "ferry_waiting_requests after"
(($(metric "$TMP/metrics.txt" 'ferry_requests_total{route="/v1",status="200"}') >= 10)) ||
    fail "route /v1 metrics: $(grep '^ferry_requests_total' "$TMP/metrics.txt")"
[[ $(metric "$TMP/metrics.txt" 'ferry_requests_total{route="/v1",status="404"}') -ge 2 ]] || fail "404 metrics"

# --- drain: waiting requests end with 503 at once; held ones finish ----------------------------
for t in d1 d2; do
    pubk "$KALL" -o "$TMP/$t.o" -w '%{http_code}' -H 'Content-Type: application/json' --data '{"model":"m1"}' \
        -H "x-test-hold: $t" /v1/chat/completions >"$TMP/$t.code" &
    eval "P_$t=\$!"
done
wait_for 10 held_is "$UP_A" 2 || fail "two held m1 requests on A"
gw_waiting_is() {
    admin GET /admin/v1/status >"$TMP/status.json"
    [[ $(jf "$TMP/status.json" 'j["requests_waiting"]') == "$1" ]]
}
# A client that gives up while waiting leaves the queue (499 in the metrics).
curl -sS --max-time 30 --cacert "$CA" -H "Authorization: Bearer $KALL" -o /dev/null \
    -H 'Content-Type: application/json' --data '{"model":"m1"}' "$(pub_url /v1/chat/completions)" &
P_gone=$!
wait_for 10 gw_waiting_is 1 || fail "m1 request not waiting: $(cat "$TMP/status.json")"
kill9 $P_gone
wait_for 10 gw_waiting_is 0 || fail "the request of a client that left still waits"
admin GET /metrics >"$TMP/metrics.txt"
[[ $(metric "$TMP/metrics.txt" 'ferry_requests_total{route="/v1",status="499"}') == 1 ]] || fail "499 not counted"
v1 "$KALL" /v1/chat/completions '{"model":"m1"}' >"$TMP/d3.code" &
P_d3=$!
wait_for 10 gw_waiting_is 1 || fail "third m1 request not waiting: $(cat "$TMP/status.json")"
kill -TERM "$GW_PID"
wait $P_d3 || true
[[ $(cat "$TMP/d3.code") == 503 && $(jf "$TMP/o" 'j["error"]["code"]') == gateway_draining ]] ||
    fail "waiting request on drain: $(cat "$TMP/d3.code") $(cat "$TMP/o")"
touch "$TMP/release/d1" "$TMP/release/d2"
wait $P_d1 $P_d2 || true
[[ $(cat "$TMP/d1.code") == 200 && $(cat "$TMP/d2.code") == 200 ]] || fail "held requests on drain: $(cat "$TMP/d1.code") $(cat "$TMP/d2.code")"
rc=0
wait "$GW_PID" || rc=$?
[[ $rc == 0 && ! -e $GW/state.json ]] || fail "gateway exit after the drain: $rc"
pass "a waiting client that hangs up leaves the queue; drain: the waiting request got 503 gateway_draining at once, held ones finished, exit 0"

# --- the wait's timeout: 503 with Retry-After; the body cap --------------------------------------
kill9 "$RA_PID"
GW_SAME_PORTS=1 gw_start --queue-timeout 1s --max-body 64KiB
UP=$UP_A trunner_start "$TMP/ra" --model m1 --max-streams 1
v1 "$KALL" /v1/chat/completions '{"model":"m1"}' -H 'x-test-hold: t1' >"$TMP/t1.code" &
P_t1=$!
wait_for 10 held_is "$UP_A" 1 || fail "held request on A"
c=$(v1 "$KALL" /v1/chat/completions '{"model":"m1"}')
[[ $c == 503 && $(jf "$TMP/o" 'j["error"]["code"]') == runners_busy && $(hdr retry-after) == 1 ]] ||
    fail "queue timeout: $c $(cat "$TMP/o") $(cat "$TMP/h")"
grep -q 'waited 1.0 s' "$TMP/o" || fail "503 message: $(cat "$TMP/o")"
touch "$TMP/release/t1"
wait $P_t1 || true
[[ $(cat "$TMP/t1.code") == 200 ]] || fail "held request: $(cat "$TMP/t1.code")"
pass "every runner of m1 at its stream limit for --queue-timeout: 503 runners_busy with Retry-After"
python3 -c 'import json; print(json.dumps({"model": "m1", "prompt": "a" * 70000}))' >"$TMP/big.json"
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$TMP/big.json" /v1/completions)
[[ $c == 413 ]] || fail "70 kB body over --max-body 64KiB: $c $(cat "$TMP/o")"
c=$(pubk "$KALL" -o "$TMP/o" -w '%{http_code}' -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
    --data-binary @"$TMP/big.json" /v1/completions)
[[ $c == 413 ]] || fail "chunked 70 kB body: $c $(cat "$TMP/o")"
pass "413 over the body cap (Content-Length and chunked)"
gw_stop
