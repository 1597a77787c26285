# lib.sh: helpers for the webhook tests (sourced). Builds on the gateway
# tests' helpers (gateway, ferry CLI, enrollment, the real runner).
source "$(dirname "${BASH_SOURCE[0]}")/../gateway/lib.sh"
FAIL_LOGS+=(runner.*.out rec.err)
HOOKS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SIGN=("${PYTHON:-python3}" "$HOOKS_DIR/sign.py")

# rec_start: the recording upstream (recorder.py) in $REC; sets UP, REC_PID.
rec_start() {
    REC=$TMP/rec
    mkdir -p "$REC"
    "${PYTHON:-python3}" "$HOOKS_DIR/recorder.py" "$REC" >"$TMP/rec.port" 2>"$TMP/rec.err" &
    REC_PID=$!
    PIDS+=("$REC_PID")
    wait_for 10 test -s "$TMP/rec.port" || fail "recorder did not start"
    UP=$(head -n1 "$TMP/rec.port")
}
# rec_count: requests the upstream has recorded.
rec_count() { find "$REC" -name 'req.*.json' | wc -l; }
rec_count_is() { [[ $(rec_count) == "$1" ]]; }
# rec_header N NAME: the value of header NAME (case-insensitive) in request N.
rec_header() {
    "${PYTHON:-python3}" -c '
import json, sys
m = json.load(open(sys.argv[1]))
v = [b for a, b in m["headers"] if a.lower() == sys.argv[2].lower()]
print(v[0] if v else "")' "$REC/req.$1.json" "$2"
}
rec_target() {
    "${PYTHON:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1]))["target"])' \
        "$REC/req.$1.json"
}

# mkhook NAME ARGS...: ferry hooks create; sets HOOK_URL and HOOK_ID.
mkhook() {
    local name=$1
    shift
    ferry hooks create --name "$name" "$@" >"$TMP/mkhook.out" || fail "hooks create $name"
    HOOK_URL=$(tail -n1 "$TMP/mkhook.out")
    HOOK_ID=${HOOK_URL##*/hooks/}
    [[ $HOOK_URL == https://*/hooks/hk_* && $HOOK_ID == hk_* ]] ||
        fail "hooks create output: $(cat "$TMP/mkhook.out")"
}

# post URL BODY_FILE [CURL ARGS...]: POSTs the file's bytes (as JSON unless
# the arguments set a Content-Type); the answer's
# body goes to $TMP/resp, its status to stdout.
post() {
    local url=$1 file=$2 ct=(-H 'Content-Type: application/json')
    shift 2
    [[ "$*" == *Content-Type:* ]] && ct=()
    curl -sS --max-time 30 --cacert "$CA" -o "$TMP/resp" -w '%{http_code}' \
        "${ct[@]}" --data-binary "@$file" "$@" "$url"
}
# expect_status WANT GOT WHAT: fails with the answer when they differ.
expect_status() {
    [[ $2 == "$1" ]] || fail "$3: want HTTP $1, got $2: $(cat "$TMP/resp" 2>/dev/null)"
}
# expect_refused CODE GOT WHAT: a 401 whose error code is CODE.
expect_refused() {
    expect_status 401 "$2" "$3"
    grep -q "\"code\":\"$1\"" "$TMP/resp" || fail "$3: want error code $1: $(cat "$TMP/resp")"
}
# metrics_page FILE: the admin /metrics page.
metrics_page() {
    curl -sS --max-time 10 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://$ADM/metrics" >"$1"
}
