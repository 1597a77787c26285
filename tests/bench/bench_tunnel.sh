#!/usr/bin/env bash
# bench_tunnel.sh: the tunnel path against the same upstream directly and
# against nginx as a TLS reverse proxy, in one run.
#
#   FERRY_BIN=build/bin tests/bench/bench_tunnel.sh
#
# Builds nothing. On loopback (127.0.0.1, ports picked by the OS) it starts one
# upstream (http_test_server), a gateway (`ferry-gateway init` + `run`), a
# runner enrolled with a one-time token from `ferry tokens create` (default 2
# tunnel connections), an API key without limits (`ferry keys create`; every
# request to every target carries it), and nginx (one worker, `daemon off`,
# no access log) as a TLS 1.2 reverse proxy to the same upstream (keep-alive
# upstream connections, proxy_http_version 1.1, the gateway's own ECDSA P-256
# certificate and cipher suite). Then:
#   1. wrk -t2 -c64 --latency, GET /fixed (17-byte body) on: the upstream
#      directly (plain HTTP); https://gateway/r/bench/fixed (public TLS ->
#      gateway -> tunnel -> runner -> upstream); nginx. The same wrk settings
#      for all three; wrk shares the 2 cores with the servers, so the ratios
#      are the numbers to read. Also: the upstream connections each path
#      opened (a proxy that reuses its upstream connections opens ~64) and
#      the CPU microseconds per request of the proxies and the upstream (from
#      /proc, so not skewed by other load on the machine). 1b: the same three
#      at one connection (wrk -t1 -c1), the latency without queueing.
#   2. MB/s of one large streamed response (/big, BIG_BYTES) downloaded with
#      curl -o /dev/null directly, through the tunnel and through nginx, with
#      the CPU seconds the proxies spent; and, in the same run, one mbedTLS
#      AES-128-GCM pass (bench_aesgcm, 16 KiB records). The gateway decrypts
#      every byte from the tunnel and encrypts it again, so half that pass
#      is the bound the tunnel's download is reported against.
#   3. Gateway memory per idle SSE stream: a fresh gateway and runner, then
#      sse_hold.py opens SSE_STREAMS concurrent streams (/sse with one event,
#      then silence); (VmRSS with them open - VmRSS before) / streams, for the
#      public HTTPS listener and for --public-plain (plain HTTP behind a load
#      balancer). The runner's figure is printed too.
# The daemons run with --log-level warn (no per-request log line), as nginx
# runs with access_log off.
# Environment: FERRY_BIN (default build/bin), DURATION (10s), CONNECTIONS (64),
# THREADS (2), LAT_DURATION (5s, for 1b), BIG_BYTES (256 MiB = 268435456),
# SSE_STREAMS (10000), KEEP_TMP=1 (keep the temp dir with the logs).
BENCH_NAME=bench_tunnel
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"
need_tools wrk nginx openssl curl python3
need_bins ferry-gateway ferry-runner ferry http_test_server
big=${BIG_BYTES:-268435456}
aesgcm=${AESGCM_BIN:-$bin/../bench/bench_aesgcm}
[[ -x $aesgcm ]] || { echo "bench_tunnel: no $aesgcm (build first)" >&2; exit 2; }
streams=${SSE_STREAMS:-10000}
lat_duration=${LAT_DURATION:-5s}
die() { echo "bench_tunnel: $*" >&2; exit 1; }

# Every stream is a public connection at the gateway and an upstream
# connection at the runner and the upstream: one fd each, plus some.
fds=$((streams + 2048))
if ! ulimit -n "$fds" 2>/dev/null; then
    echo "bench_tunnel: cannot raise ulimit -n to $fds (hard limit $(ulimit -Hn)); lower SSE_STREAMS" >&2
    exit 2
fi
rn_streams=$((streams / 2 + 1024)) # per tunnel connection; the runner keeps 2
((rn_streams >= 4096)) || rn_streams=4096
load_start=$(uptime | sed 's/.*load average: //')

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # KiB
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# --- upstream ---------------------------------------------------------------
start_test_server up --listen 127.0.0.1:0 --max-conns "$fds"
up_pid=${pids[-1]}
[[ -n $up ]] || die "http_test_server did not start: $(cat "$tmp/ferry.err")"
up_accepted() { curl -sS "http://127.0.0.1:$up/stats" | sed -n 's/.*"accepted":\([0-9]*\).*/\1/p'; }

# --- gateway and runner ------------------------------------------------------
gw=$tmp/gw
"$bin/ferry-gateway" init --data-dir "$gw" --hostname 127.0.0.1 >"$tmp/init.out" || die "init: $(cat "$tmp/init.out")"
# gw_start ARGS...: a gateway on $gw; sets gw_pid, pub, tun, scheme.
gw_start() {
    rm -f "$gw/state.json"
    "$bin/ferry-gateway" run --data-dir "$gw" --public-listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --log-level warn --max-connections "$fds" --drain-timeout 1s \
        "$@" >>"$tmp/gw.log" 2>&1 &
    gw_pid=$!
    started "$gw_pid"
    wait_for 10 grep -q "\"pid\": $gw_pid" "$gw/state.json" || die "the gateway did not start: $(tail -n 5 "$tmp/gw.log")"
    pub=$(json "$gw/state.json" public)
    tun=$(json "$gw/state.json" tunnel)
    scheme=$(json "$gw/state.json" public_scheme)
}
# connections: the runner's live tunnel connections.
connections() {
    "$bin/ferry" --data-dir "$gw" runners list --json |
        python3 -c "import json,sys; print(sum(len(r['connections']) for r in json.load(sys.stdin)['runners'] if r['name']=='bench'))"
}
in_flight() {
    "$bin/ferry" --data-dir "$gw" runners list --json |
        python3 -c "import json,sys; print(sum(r['in_flight'] for r in json.load(sys.stdin)['runners'] if r['name']=='bench'))"
}
two_connections() { [[ $(connections) == 2 ]]; }
# rn_start: the runner (2 tunnel connections, the default) on the gateway now
# running; sets rn_pid.
rn_start() {
    "$bin/ferry-runner" run --data-dir "$tmp/rn" --gateway "$tun" --upstream "http://127.0.0.1:$up" \
        --log-level warn --max-streams "$rn_streams" --upstream-timeout 30m >>"$tmp/runner.log" 2>&1 &
    rn_pid=$!
    started "$rn_pid"
    wait_for 15 two_connections || die "the runner did not connect: $(tail -n 5 "$tmp/runner.log")"
}

gw_start
"$bin/ferry" --data-dir "$gw" tokens create --name bench --ttl 10m >"$tmp/token.out" || die "tokens create failed"
token=$(tail -n1 "$tmp/token.out")
fpr=$(sed -n 's/.*--ca-fingerprint \(sha256:[0-9a-f]*\).*/\1/p' "$tmp/token.out")
"$bin/ferry-runner" enroll --gateway "$tun" --token "$token" --ca-fingerprint "$fpr" --data-dir "$tmp/rn" \
    >"$tmp/enroll.out" 2>&1 || die "enroll: $(cat "$tmp/enroll.out")"
rn_start
# Every public request needs an API key; one without limits, sent to all three
# targets alike (nginx passes it to the upstream, the gateway does not).
"$bin/ferry" --data-dir "$gw" keys create --name bench >"$tmp/key.out" || die "keys create failed"
auth="Authorization: Bearer $(tail -n1 "$tmp/key.out")"

# --- nginx --------------------------------------------------------------------
ngx=$(free_port)
cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common)
    upstream bench_upstream {
        server 127.0.0.1:$up;
        keepalive $conns;
    }
    server {
        listen 127.0.0.1:$ngx ssl;
        ssl_certificate $gw/server.crt;
        ssl_certificate_key $gw/server.key;
        ssl_protocols TLSv1.2;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
CONF
start_nginx "$tmp/nginx.conf"

direct=http://127.0.0.1:$up
tunnel=https://$pub/r/bench
proxy=https://127.0.0.1:$ngx
fetch() { curl -sS --max-time 5 --cacert "$gw/ca.crt" -H "$auth" "$1"; }
wait_for 10 fetch "$proxy/fixed" || die "nginx did not start: $(cat "$tmp/nginx/error.log")"
for u in "$direct" "$tunnel" "$proxy"; do
    body=$(fetch "$u/fixed")
    [[ $body == "Hello from ferry" ]] || die "$u/fixed answered '$body'"
done
# nginx's CPU is its worker's (the master only supervises).
mapfile -t ngx_pids < <(ps --ppid "$nginx_pid" -o pid= | tr -d ' ')
ngx_pids+=("$nginx_pid")
gw_suite=$(suite "${pub#*:}")
ngx_suite=$(suite "$ngx")

# cpu PID...: CPU time (user + system) of the processes, in clock ticks.
cpu() {
    local p t=0
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
hz=$(getconf CLK_TCK)
up_requests() { curl -sS "http://127.0.0.1:$up/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }
# us_per COUNT TICKS: microseconds of CPU per unit.
us_per() { awk -v n="$1" -v t="$2" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}'; }

# --- 1. small requests ----------------------------------------------------------
# bench NAME URL [PROXY PIDS...] -> "req/s p50 p99 up_conns proxy_us up_us": run
# (lib.sh) plus, over the warm-up and the run, the upstream connections
# opened and the CPU per request (counted by the upstream) of the proxy
# processes and of the upstream.
bench() {
    local name=$1 url=$2 a0 q0 c0 u0 rps p50 p99 n pus=-
    shift 2
    a0=$(up_accepted)
    q0=$(up_requests)
    c0=$(cpu "$@")
    u0=$(cpu "$up_pid")
    read -r rps p50 p99 < <(run "$name" "$url" -H "$auth")
    n=$(($(up_requests) - q0 - 1)) # minus the /stats calls
    [[ $# == 0 ]] || pus=$(us_per "$n" $(($(cpu "$@") - c0)))
    echo "$rps $p50 $p99 $(($(up_accepted) - a0 - 3)) $pus $(us_per "$n" $(($(cpu "$up_pid") - u0)))"
}
read -r d_rps d_50 d_99 d_up _ d_uus < <(bench direct "$direct/fixed")
read -r t_rps t_50 t_99 t_up t_pus t_uus < <(bench tunnel "$tunnel/fixed" "$gw_pid" "$rn_pid")
read -r n_rps n_50 n_99 n_up n_pus n_uus < <(bench nginx "$proxy/fixed" "${ngx_pids[@]}")
# The same at one connection: latency without queueing behind 63 others.
lat() { threads=1 conns=1 duration=$lat_duration run "$1" "$2" -H "$auth"; }
read -r d1_rps d1_50 d1_99 < <(lat direct1 "$direct/fixed")
read -r t1_rps t1_50 t1_99 < <(lat tunnel1 "$tunnel/fixed")
read -r n1_rps n1_50 n1_99 < <(lat nginx1 "$proxy/fixed")

# --- 2. a large streamed response ---------------------------------------------------
# download URL [PROXY PIDS...] -> "MB/s seconds proxy_cpu_s" (MB = 10^6 bytes)
download() {
    local url=$1 out c0 size secs pcpu=-
    shift
    c0=$(cpu "$@")
    out=$(curl -sS --cacert "$gw/ca.crt" -H "$auth" -o /dev/null -w '%{size_download} %{time_total}' "$url?bytes=$big")
    read -r size secs <<<"$out"
    [[ $size == "$big" ]] || die "$url: $size of $big bytes"
    [[ $# == 0 ]] || pcpu=$(awk -v t=$(($(cpu "$@") - c0)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
    awk -v b="$size" -v s="$secs" -v c="$pcpu" 'BEGIN {printf "%.0f %.2f %s\n", b / s / 1e6, s, c}'
}
read -r d_mbs d_secs _ < <(download "$direct/big")
read -r t_mbs t_secs t_cpu < <(download "$tunnel/big" "$gw_pid" "$rn_pid")
read -r n_mbs n_secs n_cpu < <(download "$proxy/big" "${ngx_pids[@]}")
aes_bps=$("$aesgcm" | sed -n 's/^aes128gcm_bytes_per_s //p')
[[ -n $aes_bps ]] || die "bench_aesgcm printed nothing"
aes_mbs=$(awk -v b="$aes_bps" 'BEGIN {printf "%.0f", b / 1e6}')
bound_mbs=$(awk -v b="$aes_bps" 'BEGIN {printf "%.0f", b / 2e6}')
tun_suite=$(suite "${tun#*:}")
stop "$nginx_pid"
stop "$rn_pid"
stop "$gw_pid"

# --- 3. gateway memory per idle SSE stream -----------------------------------------------
# sse MODE [GATEWAY ARGS...]: sets sse_open, sse_setup (s), sse_base, sse_held
# (gateway VmRSS KiB), sse_per, sse_rper (KiB per stream: gateway, runner) and
# sse_closed.
sse() {
    local mode=$1 tls=() out base rbase held rheld line flight client
    shift
    gw_start "$@"
    rn_start
    [[ $scheme == https ]] && tls=(--tls)
    # Warm up: one SSE stream and one small request, then the baseline.
    fetch "$scheme://$pub/r/bench/sse?n=1&delay_ms=0" >/dev/null || die "$mode: SSE warm-up failed"
    fetch "$scheme://$pub/r/bench/fixed" >/dev/null
    sleep 1
    base=$(rss "$gw_pid")
    rbase=$(rss "$rn_pid")
    out=$tmp/sse.$mode
    python3 "$root/tests/bench/sse_hold.py" "${tls[@]}" --header "$auth" "$pub" "/r/bench/sse?n=2&delay_ms=3600000" \
        "$streams" >"$out" 2>"$out.err" &
    client=$!
    started "$client"
    wait_for 600 grep -q '^open=' "$out" || die "$mode: the SSE client did not finish: $(cat "$out.err")"
    line=$(grep '^open=' "$out")
    sleep 2 # let every stream settle
    held=$(rss "$gw_pid")
    rheld=$(rss "$rn_pid")
    flight=$(in_flight)
    stop "$client"
    sse_closed=$(sed -n 's/^closed_while_held=//p' "$out")
    if [[ -s $out.err ]]; then sed "s/^/bench_tunnel: $mode: /" "$out.err" >&2; fi
    sse_open=$(sed -n 's/.*open=\([0-9]*\).*/\1/p' <<<"$line")
    sse_setup=$(sed -n 's/.*setup_s=\([0-9.a-z]*\).*/\1/p' <<<"$line")
    [[ $sse_open == "$streams" ]] || echo "bench_tunnel: $mode: only $line" >&2
    [[ $flight == "$sse_open" ]] ||
        echo "bench_tunnel: $mode: the gateway listed $flight requests in flight, $sse_open streams open" >&2
    stop "$rn_pid"
    stop "$gw_pid"
    sse_base=$base
    sse_held=$held
    sse_per=$(awk -v o="$sse_open" -v b="$base" -v h="$held" 'BEGIN {printf "%.1f", (h - b) / o}')
    sse_rper=$(awk -v o="$sse_open" -v b="$rbase" -v h="$rheld" 'BEGIN {printf "%.1f", (h - b) / o}')
}
sse https
s_open=$sse_open s_setup=$sse_setup s_base=$sse_base s_held=$sse_held s_per=$sse_per s_rper=$sse_rper
s_closed=${sse_closed:-?}
sse plain --public-plain
p_open=$sse_open p_setup=$sse_setup p_base=$sse_base p_held=$sse_held p_per=$sse_per p_rper=$sse_rper
p_closed=${sse_closed:-?}
load_end=$(uptime | sed 's/.*load average: //')

# --- report -------------------------------------------------------------------------
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.3f", a - b}'; }
echo "bench_tunnel: $(nproc) cores; load average $load_start at the start, $load_end at the end"
echo "upstream http_test_server; runner: 2 tunnel connections; daemons at --log-level warn"
echo "TLS 1.2 suites: gateway $gw_suite, nginx $ngx_suite; the tunnel (gateway <-> runner) $tun_suite"
echo
row() { printf '%-32s %9s %8s %8s %8s %9s %9s %8s %8s %9s\n' "$@"; }
echo "1. wrk -t$threads -c$conns -d$duration --latency, GET /fixed (17-byte body)"
row path "req/s" "p50 ms" "p99 ms" "+p50 ms" "vs nginx" "up conns" "prx us" "up us" "prx/nginx"
row "direct (plain HTTP to upstream)" "$(printf %.0f "$d_rps")" "$d_50" "$d_99" "" "" "$d_up" "" "$d_uus"
row "ferry tunnel (HTTPS, gw+runner)" "$(printf %.0f "$t_rps")" "$t_50" "$t_99" "$(sub "$t_50" "$d_50")" \
    "$(ratio "$t_rps" "$n_rps")" "$t_up" "$t_pus" "$t_uus" "$(ratio "$t_pus" "$n_pus")"
row "nginx TLS reverse proxy" "$(printf %.0f "$n_rps")" "$n_50" "$n_99" "$(sub "$n_50" "$d_50")" "" "$n_up" \
    "$n_pus" "$n_uus"
echo "   +p50: added median latency vs direct (goal: at most nginx's + 0.5 ms); vs nginx: ferry/nginx"
echo "   req/s (goal >= 1.0x). Over warm-up + run: up conns = upstream connections opened (a proxy"
echo "   that reuses them opens ~$conns); prx us / up us = CPU microseconds per request of the proxy"
echo "   processes (gateway + runner; nginx's worker) and of the upstream: load-independent;"
echo "   prx/nginx: the proxies' CPU per request, ferry's over nginx's (goal <= 1.2x)."
echo
echo "1b. the same at one connection: wrk -t1 -c1 -d$lat_duration --latency"
row1() { printf '%-32s %9s %8s %8s %8s %9s\n' "$@"; }
row1 path "req/s" "p50 ms" "p99 ms" "+p50 ms" "vs nginx"
row1 "direct (plain HTTP to upstream)" "$(printf %.0f "$d1_rps")" "$d1_50" "$d1_99" "" ""
row1 "ferry tunnel (HTTPS, gw+runner)" "$(printf %.0f "$t1_rps")" "$t1_50" "$t1_99" "$(sub "$t1_50" "$d1_50")" \
    "$(ratio "$t1_rps" "$n1_rps")"
row1 "nginx TLS reverse proxy" "$(printf %.0f "$n1_rps")" "$n1_50" "$n1_99" "$(sub "$n1_50" "$d1_50")" ""
echo "   goal: the tunnel's +p50 at one connection <= 0.1 ms."
echo
echo "2. one $((big >> 20)) MiB streamed response (/big), curl -o /dev/null"
printf '%-32s %9s %8s %14s %10s\n' path "MB/s" "seconds" "proxy CPU s" "vs bound"
printf '%-32s %9s %8s %14s %10s\n' "direct (plain HTTP to upstream)" "$d_mbs" "$d_secs" "" ""
printf '%-32s %9s %8s %14s %10s\n' "ferry tunnel (HTTPS, gw+runner)" "$t_mbs" "$t_secs" "$t_cpu" \
    "$(ratio "$t_mbs" "$bound_mbs")"
printf '%-32s %9s %8s %14s %10s\n' "nginx TLS reverse proxy" "$n_mbs" "$n_secs" "$n_cpu" ""
echo "   proxy CPU s: CPU seconds the proxy processes spent on the download. One mbedTLS AES-128-GCM"
echo "   pass, this run: $aes_mbs MB/s; the bound (the gateway's two passes) $bound_mbs MB/s; vs bound:"
echo "   the tunnel's MB/s over it (goal >= 0.80x)."
echo
echo "3. $streams idle SSE streams (one event, then silence), fresh gateway and runner"
printf '%-22s %7s %8s %10s %10s %11s %11s %7s\n' "public listener" open "setup s" "gw base" "gw held" \
    "gw KiB/str" "rn KiB/str" closed
printf '%-22s %7s %8s %7s MiB %7s MiB %11s %11s %7s\n' "HTTPS (mbedTLS)" "$s_open" "$s_setup" \
    "$((s_base >> 10))" "$((s_held >> 10))" "$s_per" "$s_rper" "$s_closed"
printf '%-22s %7s %8s %7s MiB %7s MiB %11s %11s %7s\n' "plain (--public-plain)" "$p_open" "$p_setup" \
    "$((p_base >> 10))" "$((p_held >> 10))" "$p_per" "$p_rper" "$p_closed"
echo "   gw KiB/str: (gateway VmRSS held - base) / open streams (goal for HTTPS <= 40 KiB); rn: the same for the runner;"
echo "   closed: streams the server closed while held. mbedTLS 2.28 as Debian builds it keeps two fixed"
echo "   ~16 KiB record buffers (in and out) per TLS connection, which the HTTPS row includes."
