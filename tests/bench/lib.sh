# shellcheck shell=bash
# lib.sh: helpers shared by the benchmark scripts (sourced, not run).
#
#   BENCH_NAME=bench_x; source "$(dirname "$0")/lib.sh"
#
# Sets root (the source tree), bin (FERRY_BIN, default build/bin), duration
# (DURATION, 10s), conns (CONNECTIONS, 64), threads (THREADS, 2) and tmp (a
# temporary dir removed on exit). Every process started with `started PID` is
# stopped on exit, the last one started first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${FERRY_BIN:-$root/build/bin}
duration=${DURATION:-10s}
conns=${CONNECTIONS:-64}
threads=${THREADS:-2}

# need_tools TOOL...: exits 2 unless every tool is on PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$BENCH_NAME: '$tool' not found" >&2; exit 2; }
    done
}
# need_bins NAME...: exits 2 unless every program is in $bin.
need_bins() {
    local b
    for b in "$@"; do
        [[ -x $bin/$b ]] || { echo "$BENCH_NAME: no $bin/$b (build first)" >&2; exit 2; }
    done
}

tmp=$(mktemp -d)
pids=()
# alive PID: the process runs (a zombie does not count).
alive() { [[ -r /proc/$1/stat && $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }
# stop_pid PID: SIGTERM, SIGKILL after 5 s, and reap it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do alive "$1" || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# started PID: stop PID on exit.
started() { pids+=("$1"); }
# stop PID: stops a process recorded with `started` now, and forgets it.
stop() {
    stop_pid "$1"
    local p keep=()
    for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}
cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
    if [[ ${KEEP_TMP:-} == 1 ]]; then echo "$BENCH_NAME: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_test_server NAME ARGS...: starts http_test_server, sets the variable
# NAME to its port.
start_test_server() {
    local name=$1 out=$tmp/$1.port
    shift
    "$bin/http_test_server" "$@" >"$out" 2>>"$tmp/ferry.err" &
    started $!
    for _ in $(seq 50); do [[ -s $out ]] && break; sleep 0.1; done
    printf -v "$name" '%s' "$(head -n1 "$out")"
}

# start_nginx CONF: nginx in the foreground (the config says `daemon off`),
# prefix and error log in $tmp/nginx; sets nginx_pid.
start_nginx() {
    mkdir -p "$tmp/nginx"
    nginx -c "$1" -p "$tmp/nginx" -e "$tmp/nginx/error.log" 2>>"$tmp/nginx/error.log" &
    nginx_pid=$!
    started "$nginx_pid"
}
# nginx_common: the http{} lines every benchmark config shares (temp paths in
# $tmp/nginx, no access log, keep-alive for the whole run).
nginx_common() {
    cat <<CONF
    access_log off;
    default_type text/plain;
    keepalive_requests 100000000;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
CONF
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds.
wait_for() {
    local t=$1 i
    shift
    for ((i = 0; i < t * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# suite PORT: the TLS 1.2 cipher suite a server on 127.0.0.1:PORT picks.
suite() { openssl s_client -connect "127.0.0.1:$1" -tls1_2 </dev/null 2>/dev/null | sed -n 's/^ *Cipher *: //p' | head -n1; }

to_ms() { # wrk prints 512.00us, 1.23ms or 1.02s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print v }'
}
# run NAME URL [WRK ARGS...] -> "reqs p50 p99" (latencies in ms); wrk's output
# is kept in $tmp/wrk.NAME.
run() {
    local out rps p50 p99
    wrk -t"$threads" -c"$conns" -d2s "${@:3}" "$2" >/dev/null 2>&1 || true # warm-up
    out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency "${@:3}" "$2")
    echo "$out" >"$tmp/wrk.$1"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        echo "$BENCH_NAME: errors in $1:" >&2
        grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" >&2
    fi
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
