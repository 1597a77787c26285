# lib.sh: shared helpers for the HTTP integration tests (sourced, not run).
# Every process a test starts is recorded and stopped on exit; every wait is
# bounded, so a broken server fails a test instead of hanging it.
set -euo pipefail
BIN=${FERRY_BIN:?FERRY_BIN must point at the build bin directory}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
pass() { echo "ok: $*"; }

# start_server ARGS...: starts http_test_server, sets PORT and SPID.
NSERVERS=0
start_server() {
    NSERVERS=$((NSERVERS + 1))
    local out=$TMP/port.$NSERVERS
    "$BIN/http_test_server" "$@" >"$out" 2>"$TMP/server.$NSERVERS.err" &
    SPID=$!
    PIDS+=("$SPID")
    local i
    for i in $(seq 100); do
        if [[ -s $out ]]; then
            PORT=$(head -n1 "$out")
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/server.$NSERVERS.err" >&2
    fail "http_test_server did not start"
}

# stop_server: SIGTERM, and the server must exit cleanly (0), which under
# the sanitizers also means no leak and no error report.
stop_server() {
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    if [[ $rc != 0 ]]; then
        cat "$TMP/server.$NSERVERS.err" >&2
        fail "http_test_server exited with status $rc"
    fi
}

# stat NAME: one counter from /stats.
stat() {
    curl -sS --max-time 5 "http://127.0.0.1:$PORT/stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"
}

# wait_stat NAME VALUE: polls /stats until NAME reaches VALUE (5 s at most).
wait_stat() {
    local i v
    for i in $(seq 50); do
        v=$(stat "$1")
        [[ $v -ge $2 ]] && return 0
        sleep 0.1
    done
    fail "stat $1 is $v, want $2"
}

# raw_exchange REQUEST_FILE TIMEOUT: writes the file's bytes to the server
# over bash's /dev/tcp, then prints everything the server sends until it
# closes the connection (or TIMEOUT seconds pass: then "TIMEOUT" is appended).
raw_exchange() {
    local req=$1 t=$2
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
    cat "$req" >&$fd
    if timeout "$t" cat <&$fd; then :; else echo "TIMEOUT"; fi
    exec {fd}>&-
}
