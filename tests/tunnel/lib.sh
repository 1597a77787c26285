# lib.sh: helpers for the end-to-end tunnel tests (sourced, not run): a real
# ferry-gateway, real ferry-runner processes, the ferry CLI and curl, all on
# 127.0.0.1 with ports the OS picks. Every process is recorded and killed on
# exit; every wait is bounded, so a hang fails the test instead.
FAIL_LOGS=(gw.log 'rn.*.log')
FAIL_LOG_LINES=25
source "$(dirname "${BASH_SOURCE[0]}")/../lib/proc.sh"

# jget FILE PYEXPR: a value out of a JSON file (j is the parsed document).
jget() {
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

GW=$TMP/gw
CA=$GW/ca.crt
gw_init() {
    "$BIN/ferry-gateway" init --data-dir "$GW" >/dev/null || fail "gateway init failed"
    # As openssl prints it ("AB:CD:...") and as ferry does ("sha256:abcd...").
    FP_OPENSSL=$(openssl x509 -in "$CA" -noout -fingerprint -sha256 | cut -d= -f2)
    FP=sha256:$(tr -d : <<<"$FP_OPENSSL" | tr A-F a-f)
    rm -f "$TMP/api.key"
}

# gw_start [ARGS...]: runs the gateway (on the previous ports when
# GW_SAME_PORTS=1, else on ports 0); sets GW_PID, PUB, TUN, ADM.
gw_start() {
    local pub=127.0.0.1:0 tun=127.0.0.1:0 adm=127.0.0.1:0
    if [[ ${GW_SAME_PORTS:-0} == 1 ]]; then pub=$PUB tun=$TUN adm=$ADM; fi
    rm -f "$GW/state.json"
    "$BIN/ferry-gateway" run --data-dir "$GW" --public-listen "$pub" --tunnel-listen "$tun" \
        --admin-listen "$adm" "$@" >>"$TMP/gw.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_for 10 grep -q "\"pid\": $GW_PID" "$GW/state.json" || fail "gateway did not start"
    PUB=$(jget "$GW/state.json" "j['public']")
    TUN=$(jget "$GW/state.json" "j['tunnel']")
    ADM=$(jget "$GW/state.json" "j['admin']")
    AUTH="Authorization: Bearer $(api_key)" # for curl -H
}

# gw_stop: SIGTERM; the gateway must exit 0.
gw_stop() {
    kill -TERM "$GW_PID"
    local rc=0
    wait "$GW_PID" || rc=$?
    [[ $rc == 0 ]] || fail "gateway exited with status $rc"
}

ferry() { "$BIN/ferry" --data-dir "$GW" "$@"; }

# api_key: an API key without limits for the public calls (`ferry keys
# create`'s last line), made once per data dir, on first use.
api_key() {
    if [[ ! -s $TMP/api.key ]]; then
        local out
        out=$(ferry keys create --name tests) || fail "keys create"
        tail -n1 <<<"$out" >"$TMP/api.key"
    fi
    cat "$TMP/api.key"
}

# token NAME [TTL]: a new enrollment token (the CLI's last line).
token() {
    local out
    out=$(ferry tokens create --name "$1" ${2:+--ttl "$2"}) || fail "tokens create $1"
    tail -n1 <<<"$out"
}

# enroll NAME DIR: a token for NAME, then ferry-runner enroll into DIR.
enroll() {
    local t
    t=$(token "$1")
    "$BIN/ferry-runner" enroll --gateway "$TUN" --token "$t" --ca-fingerprint "$FP" \
        --data-dir "$2" >"$TMP/enroll.out" 2>&1 || fail "enroll $1: $(cat "$TMP/enroll.out")"
}

# up_start [ARGS...]: an http_test_server upstream; sets UP (port), UP_PID.
NUP=0
up_start() {
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
# release G: opens gate G of the upstream (tests/http/http_test_server.c):
# its /gate?name=G requests answer "released", so a request is held exactly
# as long as the test needs, never for a fixed time.
release() {
    curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$UP/release?name=$1" || fail "release $1"
}

# rn_start DIR [ARGS...]: ferry-runner run on DIR with upstream $UP; sets
# RN_PID and RN_LOG. Reconnects fast (FERRY_TEST_BACKOFF_MS, default 100).
NRN=0
rn_start() {
    local dir=$1
    shift
    NRN=$((NRN + 1))
    RN_LOG=$TMP/rn.$NRN.log
    FERRY_TEST_BACKOFF_MS=${BACKOFF_MS:-100} "$BIN/ferry-runner" run --data-dir "$dir" \
        --upstream "http://127.0.0.1:$UP" "$@" >"$RN_LOG" 2>&1 &
    RN_PID=$!
    PIDS+=("$RN_PID")
}

# rn_stop [PID]: SIGTERM; the runner must drain and exit 0 (under the
# sanitizers: no leak, no error report).
rn_stop() {
    local pid=${1:-$RN_PID} rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    [[ $rc == 0 ]] || fail "runner $pid exited with status $rc"
}

# connections NAME: live tunnel connections the gateway lists for NAME.
connections() {
    ferry --json runners list >"$TMP/runners.json" || return 1
    jget "$TMP/runners.json" "sum(len(r['connections']) for r in j['runners'] if r['name']=='$1')"
}
# wait_conns NAME N [SECONDS]: until NAME has exactly N connections.
has_conns() { [[ $(connections "$1") == "$2" ]]; }
wait_conns() {
    wait_for "${3:-10}" has_conns "$1" "$2" ||
        fail "runner $1 has $(connections "$1") connections, want $2"
}

# pub [CURL ARGS...] PATH: curl against the public listener, with the API key.
pub() {
    local path=${!#}
    curl -sS --max-time 30 --cacert "$CA" -H "Authorization: Bearer $(api_key)" "${@:1:$#-1}" \
        "https://$PUB$path"
}

# Predicates for wait_for (re-evaluated on every try).
in_flight() {
    ferry --json runners list >"$TMP/runners.json" || return 1
    jget "$TMP/runners.json" "sum(r['in_flight'] for r in j['runners'] if r['name']=='$1')"
}
in_flight_is() { [[ $(in_flight "$1") == "$2" ]]; }
up_stat_gt() { (($(up_stat "$1") > $2)); }
up_stat_is() { [[ $(up_stat "$1") == "$2" ]]; }
count_ge() { (($(grep -c -- "$2" "$1" || true) >= $3)); } # count_ge FILE PATTERN N
