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
BENCH_NAME=bench_http
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"
need_tools wrk nginx openssl curl python3
need_bins http_test_server

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

start_test_server ferry_plain --listen 127.0.0.1:0
start_test_server ferry_tls --listen 127.0.0.1:0 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"

nginx_plain=$(free_port)
nginx_tls=$(free_port)
cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common)
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
start_nginx "$tmp/nginx.conf"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_plain/fixed" && break; sleep 0.1; done

# Same bytes from both, and which cipher suite each negotiates.
for u in "http://127.0.0.1:$ferry_plain/fixed" "http://127.0.0.1:$nginx_plain/fixed" \
    "https://127.0.0.1:$ferry_tls/fixed" "https://127.0.0.1:$nginx_tls/fixed"; do
    body=$(curl -sS --cacert "$tmp/cert.pem" "$u")
    [[ $body == "Hello from ferry" ]] || { echo "bench_http: $u answered '$body'" >&2; exit 1; }
done
ferry_suite=$(suite "$ferry_tls")
nginx_suite=$(suite "$nginx_tls")

read -r fp_rps fp_50 fp_99 < <(run ferry-plain "http://127.0.0.1:$ferry_plain/fixed")
read -r np_rps np_50 np_99 < <(run nginx-plain "http://127.0.0.1:$nginx_plain/fixed")
read -r ft_rps ft_50 ft_99 < <(run ferry-tls "https://127.0.0.1:$ferry_tls/fixed")
read -r nt_rps nt_50 nt_99 < <(run nginx-tls "https://127.0.0.1:$nginx_tls/fixed")

echo "wrk -t$threads -c$conns -d$duration --latency, GET /fixed (17-byte body), $(nproc) cores"
echo "TLS 1.2 suites: ferry $ferry_suite, nginx $nginx_suite"
printf '%-6s %-6s %10s %8s %8s %12s\n' mode server "req/s" "p50 ms" "p99 ms" "ferry/nginx"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' plain ferry "$fp_rps" "$fp_50" "$fp_99" "$(ratio "$fp_rps" "$np_rps")"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' plain nginx "$np_rps" "$np_50" "$np_99" ""
printf '%-6s %-6s %10.0f %8s %8s %12s\n' tls ferry "$ft_rps" "$ft_50" "$ft_99" "$(ratio "$ft_rps" "$nt_rps")"
printf '%-6s %-6s %10.0f %8s %8s %12s\n' tls nginx "$nt_rps" "$nt_50" "$nt_99" ""
