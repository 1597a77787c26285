# lib.sh: helpers for the OpenAI API tests (sourced, not run).
FAIL_LOGS=(runner.*.log gw.log)
FAIL_LOG_LINES=30
source "$(dirname "${BASH_SOURCE[0]}")/../lib/proc.sh"
SRC=${FERRY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
STORIES=${FERRY_TESTDATA:-/nonexistent}/models/stories260K

# skip WHY: this test cannot run here (ctest shows it as skipped).
skip() {
    echo "SKIP: $*"
    exit 77
}
need_stories() {
    [[ -f $STORIES/model.safetensors && -f $STORIES/expected_greedy.json ]] ||
        skip "stories260K not found under FERRY_TESTDATA ($STORIES)"
}
# demo_model: the built-in demo model in $TMP/demo.
demo_model() {
    [[ -d $TMP/demo ]] || "$BIN/ferry-runner" demo-model --out "$TMP/demo" >/dev/null ||
        fail "demo-model failed"
}

# api_start MODEL_DIR [ARGS...]: ferry-runner run --model on a free loopback
# port; sets API (host:port), API_PID, API_LOG.
NAPI=0
api_start() {
    local dir=$1
    shift
    NAPI=$((NAPI + 1))
    API_LOG=$TMP/runner.$NAPI.log
    "$BIN/ferry-runner" run --model "$dir" --listen 127.0.0.1:0 \
        --listen-port-file "$TMP/port.$NAPI" --threads 1 "$@" >"$API_LOG" 2>&1 &
    API_PID=$!
    PIDS+=("$API_PID")
    wait_for 60 test -s "$TMP/port.$NAPI" || fail "the runner did not start: $(tail -n 5 "$API_LOG")"
    API=127.0.0.1:$(cat "$TMP/port.$NAPI")
}
# api_stop: SIGTERM; the runner must exit 0.
api_stop() {
    kill -TERM "$API_PID"
    local rc=0
    wait "$API_PID" || rc=$?
    [[ $rc == 0 ]] || fail "the runner exited with status $rc"
}

# post PATH JSON [CURL ARGS...]: POST to the local API; body in $TMP/out,
# prints the status.
post() {
    local path=$1 body=$2
    shift 2
    curl -sS --max-time 120 -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
        "$@" --data "$body" "http://$API$path"
}
get() {
    curl -sS --max-time 30 -o "$TMP/out" -w '%{http_code}' "http://$API$1"
}
# jcheck FILE PYTHON-EXPR: asserts the expression over j (the JSON in FILE).
jcheck() {
    /usr/bin/env python3 - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
if not eval(sys.argv[2]):
    sys.exit("check failed: %s\non: %s" % (sys.argv[2], json.dumps(j)[:600]))
PY
}
# sse_text FILE: the concatenated text of an SSE stream's chunks (all choices
# in order); fails unless it ends with data: [DONE].
sse_text() {
    /usr/bin/env python3 - "$1" <<'PY'
import json, sys
events = [l[6:] for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.startswith("data: ")]
assert events and events[-1] == "[DONE]", "no [DONE] at the end: %r" % events[-3:]
out = ""
for e in events[:-1]:
    j = json.loads(e)
    for c in j["choices"]:
        out += c.get("text") or (c.get("delta") or {}).get("content") or ""
sys.stdout.write(out)
PY
}
# pyapi [ARGS...]: runs the Python program on stdin with tests/api/apilib.py
# importable, talking to $API (sys.argv[1:] = ARGS).
pyapi() {
    API=$API PYTHONPATH="$SRC/tests/api" python3 - "$@"
}
# metric NAME: one series of the runner's /metrics.
metric() {
    curl -sS --max-time 10 "http://$API/metrics" | awk -v s="$1" '$1 == s {print $2; f=1} END {if (!f) print "absent"}'
}
metric_is() { [[ $(metric "$1") == "$2" ]]; }
# expected_text: expected_greedy.json's completion text.
expected_text() {
    /usr/bin/env python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["completion_text"])' \
        "$STORIES/expected_greedy.json"
}
