#!/usr/bin/env bash
# bench_http.sh: requests/s of ferry's HTTP server against nginx, plain and TLS.
#
#   FERRY_BIN=build/bin tests/bench/bench_http.sh
#
# Builds nothing: it runs http_test_server (route /fixed, a 17-byte body) and
# nginx (one worker, `return 200` of the same bytes) side by side on loopback,
# each with a plain and a TLS 1.2 listener using the same ECDSA P-256
# certificate, and drives each with `wrk -t2 -c64 -d10s --latency`. The
# server and wrk share the machine's cores, the same way for both peers, so
# the ratio is the number to read. Prints req/s, p50, p99 and ferry/nginx.
# Environment: FERRY_BIN (default build/bin), DURATION (default 10s),
# CONNECTIONS (64), THREADS (2).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FERRY_BIN:-$root/build/bin}
duration=${DURATION:-10s}
conns=${CONNECTIONS:-64}
threads=${THREADS:-2}
for tool in wrk nginx openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "bench_http: '$tool' not found" >&2; exit 2; }
done
[[ -x $bin/http_test_server ]] || { echo "bench_http: no $bin/http_test_server (build first)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

# start_ferry NAME ARGS...: starts http_test_server, sets the variable NAME to its port.
start_ferry() {
    local name=$1 out=$tmp/$1.port
    shift
    "$bin/http_test_server" "$@" >"$out" 2>>"$tmp/ferry.err" &
    pids+=($!)
    for _ in $(seq 50); do [[ -s $out ]] && break; sleep 0.1; done
    printf -v "$name" '%s' "$(head -n1 "$out")"
}
start_ferry ferry_plain --listen 127.0.0.1:0
start_ferry ferry_tls --listen 127.0.0.1:0 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"

nginx_plain=$(free_port)
nginx_tls=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 100000000;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_plain;
        listen 127.0.0.1:$nginx_tls ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
        location /fixed { return 200 "Hello from ferry\n"; }
    }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" 2>>"$tmp/nginx/error.log" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_plain/fixed" && break; sleep 0.1; done

# Same bytes from both, and which cipher suite each negotiates.
for u in "http://127.0.0.1:$ferry_plain/fixed" "http://127.0.0.1:$nginx_plain/fixed" \
    "https://127.0.0.1:$ferry_tls/fixed" "https://127.0.0.1:$nginx_tls/fixed"; do
    body=$(curl -sS --cacert "$tmp/cert.pem" "$u")
    [[ $body == "Hello from ferry" ]] || { echo "bench_http: $u answered '$body'" >&2; exit 1; }
done
suite() { openssl s_client -connect "127.0.0.1:$1" -tls1_2 </dev/null 2>/dev/null | sed -n 's/^ *Cipher *: //p' | head -n1; }
ferry_suite=$(suite "$ferry_tls")
nginx_suite=$(suite "$nginx_tls")

to_ms() { # wrk prints 512.00us, 1.23ms or 1.02s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print v }'
}
# run NAME URL -> "reqs p50 p99" (latencies in ms)
run() {
    local out rps p50 p99
    wrk -t"$threads" -c"$conns" -d2s "$2" >/dev/null 2>&1 || true # warm-up
    out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency "$2")
    echo "$out" >"$tmp/wrk.$1"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        echo "bench_http: errors in $1:" >&2
        grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" >&2
    fi
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

read -r fp_rps fp_50 fp_99 < <(run ferry-plain "http://127.0.0.1:$ferry_plain/fixed")
read -r np_rps np_50 np_99 < <(run nginx-plain "http://127.0.0.1:$nginx_plain/fixed")
read -r ft_rps ft_50 ft_99 < <(run ferry-tls "https://127.0.0.1:$ferry_tls/fixed")
read -r nt_rps nt_50 nt_99 < <(run nginx-tls "https://127.0.0.1:$nginx_tls/fixed")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
echo "wrk -t$threads -c$conns -d$duration --latency, GET /fixed (17-byte body), $(nproc) cores"
echo "TLS 1.2 suites: ferry $ferry_suite, nginx $nginx_suite"
printf '%-6s %-6s %10s %8s %8s %12s\n' mode server "req/s" "p50 ms" "p99 ms" "ferry/nginx"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' plain ferry "$fp_rps" "$fp_50" "$fp_99" "$(ratio "$fp_rps" "$np_rps")"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' plain nginx "$np_rps" "$np_50" "$np_99" ""
printf '%-6s %-6s %10.0f %8s %8s %12s\n' tls ferry "$ft_rps" "$ft_50" "$ft_99" "$(ratio "$ft_rps" "$nt_rps")"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' tls nginx "$nt_rps" "$nt_50" "$nt_99" ""
