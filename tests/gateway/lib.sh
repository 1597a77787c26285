# lib.sh: shared helpers for the gateway integration tests (sourced, not run).
# Every process a test starts is recorded and stopped on exit; every wait is
# bounded, so a broken gateway fails a test instead of hanging it.
FAIL_LOGS=(gw.log)
FAIL_LOG_LINES=40
source "$(dirname "${BASH_SOURCE[0]}")/../lib/proc.sh"
# Sanitizer builds: freed memory waits in ASan's quarantine (256 MiB by
# default), which would swamp the memory bounds; keep it small.
if [[ $SANITIZED == 1 ]]; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=16"
fi

GW=$TMP/gw
# gw_init: a fresh gateway data dir in $GW.
gw_init() {
    "$BIN/ferry-gateway" init --data-dir "$GW" >/dev/null || fail "init failed"
    ADMIN_TOKEN=$(cat "$GW/admin.token")
    CA=$GW/ca.crt
    rm -f "$TMP/api.key"
    API_KEY=
}

# new_key NAME [ferry keys create ARGS...]: a new API key (the CLI's last line).
new_key() {
    local name=$1 out
    shift
    out=$("$BIN/ferry" --data-dir "$GW" keys create --name "$name" "$@") || fail "keys create $name"
    tail -n1 <<<"$out"
}
# mkkey NAME [ferry keys create ARGS...]: a new API key in KEY, its id in KID.
mkkey() {
    "$BIN/ferry" --data-dir "$GW" keys create --name "$@" >"$TMP/mkkey.out" || fail "keys create $1"
    KEY=$(tail -n1 "$TMP/mkkey.out")
    KID=$(sed -n 's/^API key \(key_[^ ]*\) .*/\1/p' "$TMP/mkkey.out")
    [[ $KEY == fy_* && $KID == key_* ]] || fail "keys create output: $(cat "$TMP/mkkey.out")"
}
# pubk KEY [CURL ARGS...] PATH: pub with that key instead of the tests' one.
pubk() {
    local k=$1
    shift
    pub_nokey -H "Authorization: Bearer $k" "$@"
}
# ferry ARGS...: the CLI on this gateway.
ferry() { "$BIN/ferry" --data-dir "$GW" "$@"; }
# metric TEXT-FILE SERIES: the value of one series in a /metrics page (0 when absent).
metric() {
    awk -v s="$2" '$1 == s {print $2; f=1} END {if (!f) print 0}' "$1"
}

# api_key: the tests' key without limits (made once per data dir, by gw_start).
api_key() {
    if [[ ! -s $TMP/api.key ]]; then
        new_key tests >"$TMP/api.key.new" && mv "$TMP/api.key.new" "$TMP/api.key"
    fi
    cat "$TMP/api.key"
}

json_get() { # json_get FILE KEY
    sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" "$1" | head -n1
}

# gw_start ARGS...: runs the gateway on loopback ports 0 (the previous ports
# when GW_SAME_PORTS=1); sets GW_PID, PUB, TUN, ADM from state.json.
gw_start() {
    local pub=127.0.0.1:0 tun=127.0.0.1:0 adm=127.0.0.1:0
    if [[ ${GW_SAME_PORTS:-0} == 1 ]]; then pub=$PUB tun=$TUN adm=$ADM; fi
    rm -f "$GW/state.json"
    "$BIN/ferry-gateway" run --data-dir "$GW" --public-listen "$pub" --tunnel-listen "$tun" \
        --admin-listen "$adm" "$@" >>"$TMP/gw.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_for 10 grep -q "\"pid\": $GW_PID" "$GW/state.json" || fail "gateway did not write state.json"
    PUB=$(json_get "$GW/state.json" public)
    TUN=$(json_get "$GW/state.json" tunnel)
    ADM=$(json_get "$GW/state.json" admin)
    SCHEME=$(json_get "$GW/state.json" public_scheme)
    API_KEY=$(api_key)
    AUTH="Authorization: Bearer $API_KEY" # for curl -H
}

# gw_stop: SIGTERM; the gateway must exit 0 (under the sanitizers: no leak,
# no error) and remove state.json.
gw_stop() {
    kill -TERM "$GW_PID"
    local rc=0
    wait "$GW_PID" || rc=$?
    [[ $rc == 0 ]] || fail "gateway exited with status $rc"
    [[ ! -e $GW/state.json ]] || fail "state.json left behind"
}

# admin METHOD PATH [JSON]: calls the admin API; body to stdout, status in $TMP/code.
admin() {
    local args=(-sS --max-time 10 --cacert "$CA" -o "$TMP/admin.out" -w '%{http_code}'
        -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    curl "${args[@]}" "https://$ADM$2" >"$TMP/code"
    cat "$TMP/admin.out"
}
code() { cat "$TMP/code"; }

# token NAME [TTL]: a new enrollment token for runner NAME.
token() {
    local ttl=${2:-1h}
    admin POST /admin/v1/tokens "{\"runner\":\"$1\",\"ttl\":\"$ttl\"}" >"$TMP/tok.json"
    [[ $(code) == 201 ]] || fail "token create: $(code) $(cat "$TMP/tok.json")"
    json_get "$TMP/tok.json" token
}

# upstream_start ARGS...: an http_test_server; sets UP (port) and UP_PID.
NUP=0
upstream_start() {
    NUP=$((NUP + 1))
    local out=$TMP/up.$NUP
    "$BIN/http_test_server" "$@" >"$out" 2>"$TMP/up.$NUP.err" &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_for 10 test -s "$out" || fail "http_test_server did not start"
    UP=$(head -n1 "$out")
}
up_stat() {
    curl -sS --max-time 5 "http://127.0.0.1:$UP/stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"
}
up_stat_is() { [[ $(up_stat "$1") == "$2" ]]; }
up_stat_gt() { (($(up_stat "$1") > $2)); }
# release G: opens gate G of the upstream: its /gate?name=G requests answer
# "released" (later ones at once). A gated request stays in flight exactly
# as long as the test needs, never for a fixed time a loaded machine may
# outlast; "gated" in up_stat counts the ones waiting.
release() {
    curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$UP/release?name=$1" || fail "release $1"
}
# count_ge FILE PATTERN N: at least N lines of FILE match PATTERN.
count_ge() { (($(grep -c -- "$2" "$1" || true) >= $3)); }

# conns NAME: live tunnel connections the admin API lists for runner NAME.
conns() {
    curl -sS --max-time 5 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://$ADM/admin/v1/runners" |
        python3 -c "import json,sys; j=json.load(sys.stdin); print(sum(len(r['connections']) for r in j['runners'] if r['name']=='$1'))"
}
conns_are() { [[ $(conns "$1") == "$2" ]]; }
# in_flight NAME: requests the gateway is proxying to runner NAME.
in_flight() {
    curl -sS --max-time 5 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://$ADM/admin/v1/runners" |
        python3 -c "import json,sys; j=json.load(sys.stdin); print(sum(r['in_flight'] for r in j['runners'] if r['name']=='$1'))"
}
in_flight_ge() { (($(in_flight "$1") >= $2)); }

# The real runner (ferry-runner) for end-to-end traffic.
# enroll NAME DIR: token + ferry-runner enroll into DIR.
enroll() {
    local t
    t=$(token "$1")
    "$BIN/ferry-runner" enroll --gateway "$TUN" --token "$t" --ca "$CA" --data-dir "$2" \
        >"$TMP/enroll.out" 2>&1 || fail "enroll $1: $(cat "$TMP/enroll.out")"
}
# runner_start NAME DIR ARGS...: ferry-runner run on DIR with upstream $UP;
# sets RN_PID, RN_OUT; waits until NAME has $CONNS (default 1) connections
# more than before, unless NOWAIT=1.
NRN=0
runner_start() {
    local name=$1 dir=$2 before
    shift 2
    before=$(conns "$name")
    NRN=$((NRN + 1))
    RN_OUT=$TMP/runner.$NRN.out
    FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$dir" \
        --upstream "http://127.0.0.1:$UP" --connections "${CONNS:-1}" "$@" >"$RN_OUT" 2>&1 &
    RN_PID=$!
    PIDS+=("$RN_PID")
    if [[ ${NOWAIT:-0} != 1 ]]; then
        wait_for 10 conns_are "$name" $((before + ${CONNS:-1})) ||
            fail "runner $name did not connect: $(tail -n 5 "$RN_OUT")"
    fi
}

# The test runner (gw_test_runner): for what the real runner never does.
# tenroll NAME DIR: token + test-runner enrollment into DIR.
tenroll() {
    local t
    t=$(token "$1")
    "$TBIN/gw_test_runner" enroll --gateway "$TUN" --token "$t" --ca "$CA" --dir "$2" \
        >"$TMP/enroll.out" 2>&1 || fail "enroll $1: $(cat "$TMP/enroll.out")"
}
# trunner_start DIR ARGS...: a test runner; sets RN_PID, RN_OUT. Waits for
# its first tunnel connection unless NOWAIT=1.
trunner_start() {
    local dir=$1
    shift
    NRN=$((NRN + 1))
    RN_OUT=$TMP/runner.$NRN.out
    "$TBIN/gw_test_runner" run --gateway "$TUN" --dir "$dir" --upstream "http://127.0.0.1:$UP" \
        "$@" >"$RN_OUT" 2>&1 &
    RN_PID=$!
    PIDS+=("$RN_PID")
    if [[ ${NOWAIT:-0} != 1 ]]; then
        wait_for 10 grep -q '^connected' "$RN_OUT" || fail "runner did not connect: $(cat "$RN_OUT")"
    fi
}

# pub ARGS...: curl against the public listener with the tests' API key (URL
# path last, e.g. /r/x/y); pub_nokey sends no key.
pub_url() { echo "$SCHEME://$PUB$1"; }
pub() {
    local path=${!#}
    curl -sS --max-time 30 --cacert "$CA" -H "$AUTH" "${@:1:$#-1}" "$(pub_url "$path")"
}
pub_nokey() {
    local path=${!#}
    curl -sS --max-time 30 --cacert "$CA" "${@:1:$#-1}" "$(pub_url "$path")"
}

# kill9 PID: SIGKILL without the shell's "Killed" notice.
kill9() {
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# vmhwm PID: peak resident set in KiB.
vmhwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
