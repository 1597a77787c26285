# redis.sh: a real redis-server for integration tests (sourced after
# proc.sh). The server listens on a unix socket in $TMP (no TCP port at
# all, unless REDIS_TCP=1: then 127.0.0.1 on a port the OS picked for a
# socket just closed, since redis-server reads port 0 as "no TCP"), is
# recorded in PIDS so the test's exit stops it, and keeps its append-only
# file in its own directory so a test can kill -9 it and start it again on
# the same data.
#
# redis_start [NAME]: starts (or restarts) server NAME (default "r"); sets
#   REDIS_URL (unix:///... or redis://127.0.0.1:PORT), REDIS_SOCK, REDIS_PID,
#   REDIS_DIR. A password comes from $REDIS_DIR/password when that file
#   exists (requirepass in the server's config file, never argv).
# redis_cli ARGS...: redis-cli on the last started server.
# redis_kill9: kill -9 of the last started server (its AOF stays).

redis_need() {
    command -v redis-server >/dev/null ||
        fail "redis-server is not installed (deploy/install-deps.sh installs Debian's redis-server)"
}

redis_start() {
    local name=${1:-r}
    redis_need
    REDIS_DIR=$TMP/redis.$name
    mkdir -p "$REDIS_DIR"
    chmod 700 "$REDIS_DIR"
    REDIS_SOCK=$REDIS_DIR/s.sock
    local conf=$REDIS_DIR/redis.conf
    {
        echo "unixsocket $REDIS_SOCK"
        echo "unixsocketperm 700"
        echo "dir $REDIS_DIR"
        echo "appendonly yes"
        echo "appendfsync always"
        echo 'save ""'
        echo "daemonize no"
        echo "logfile $REDIS_DIR/log"
        if [[ ${REDIS_TCP:-0} == 1 ]]; then
            [[ -n ${REDIS_PORT:-} ]] || REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            echo "bind 127.0.0.1"
            echo "port $REDIS_PORT"
        else
            echo "port 0"
        fi
        if [[ -s $REDIS_DIR/password ]]; then echo "requirepass $(head -n1 "$REDIS_DIR/password")"; fi
    } >"$conf"
    rm -f "$REDIS_SOCK"
    redis-server "$conf" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for 20 redis_cli ping || fail "redis-server did not start: $(tail -n 5 "$REDIS_DIR/log" 2>/dev/null)"
    if [[ ${REDIS_TCP:-0} == 1 ]]; then
        REDIS_URL=redis://127.0.0.1:$REDIS_PORT
    else
        REDIS_URL=unix://$REDIS_SOCK
    fi
}

redis_cli() {
    local auth=()
    if [[ -s $REDIS_DIR/password ]]; then auth=(--no-auth-warning -a "$(head -n1 "$REDIS_DIR/password")"); fi
    redis-cli -s "$REDIS_SOCK" "${auth[@]}" "$@"
}

redis_kill9() {
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
}
