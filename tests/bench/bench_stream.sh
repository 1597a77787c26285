#!/usr/bin/env bash
# bench_stream.sh: streamed completions through the gateway and tunnel against
# the same requests to the runner's local listener, in one run.
#
#   FERRY_BIN=build/bin tests/bench/bench_stream.sh [MODEL_DIR]
#
# MODEL_DIR defaults to ../shared/testdata/models/stories260K (else the
# built-in demo model). One runner serves the model with --model on a local
# listener AND through a gateway (enrolled, 2 tunnel connections, an API key
# without limits). stream_client.py sends streamed /v1/completions
# (temperature 0, ignore_eos, MAX_TOKENS tokens) and times every SSE event:
#   1. one stream at a time, REQUESTS requests: time to first token and
#      inter-token latency p50/p99, local vs gateway, and the difference the
#      gateway adds (goal: under 1 ms each);
#   2. aggregate tokens/s at 1, 8 and 32 concurrent streams, local vs gateway,
#      and their ratio.
# The client, gateway, runner and engine share the machine's cores, so the
# ratios and differences are the numbers to read.
BENCH_NAME=bench_stream
source "$(dirname "$0")/lib.sh"
need_tools curl python3
need_bins ferry-gateway ferry-runner ferry
die() { echo "bench_stream: $*" >&2; exit 1; }
wait_for() {
    local t=$1 i
    shift
    for ((i = 0; i < t * 20; i++)); do "$@" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}
json() { sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" "$1" | head -n1; }
model=${1:-$root/../shared/testdata/models/stories260K}
if [[ ! -f $model/config.json ]]; then
    "$bin/ferry-runner" demo-model --out "$tmp/demo" >/dev/null || die "demo-model failed"
    model=$tmp/demo
fi
max_tokens=${MAX_TOKENS:-128}
requests=${REQUESTS:-20}
threads_engine=${ENGINE_THREADS:-1}

gw=$tmp/gw
"$bin/ferry-gateway" init --data-dir "$gw" --hostname 127.0.0.1 >"$tmp/init.out" || die "init failed"
"$bin/ferry-gateway" run --data-dir "$gw" --public-listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --log-level warn >>"$tmp/gw.log" 2>&1 &
gw_pid=$!
started "$gw_pid"
wait_for 10 grep -q "\"pid\": $gw_pid" "$gw/state.json" || die "the gateway did not start"
pub=$(json "$gw/state.json" public)
tun=$(json "$gw/state.json" tunnel)
scheme=$(json "$gw/state.json" public_scheme)
"$bin/ferry" --data-dir "$gw" tokens create --name bench --ttl 10m >"$tmp/token.out" || die "tokens create"
token=$(tail -n1 "$tmp/token.out")
"$bin/ferry-runner" enroll --gateway "$tun" --token "$token" --ca "$gw/ca.crt" --data-dir "$tmp/rn" \
    >"$tmp/enroll.out" 2>&1 || die "enroll: $(cat "$tmp/enroll.out")"
"$bin/ferry" --data-dir "$gw" keys create --name bench >"$tmp/key.out" || die "keys create"
key=$(tail -n1 "$tmp/key.out")
"$bin/ferry-runner" run --data-dir "$tmp/rn" --model "$model" --listen 127.0.0.1:0 \
    --listen-port-file "$tmp/port" --threads "$threads_engine" --log-level warn \
    --max-num-seqs 64 >>"$tmp/runner.log" 2>&1 &
started $!
wait_for 60 test -s "$tmp/port" || die "the runner did not start: $(tail -n 5 "$tmp/runner.log")"
connected() {
    "$bin/ferry" --data-dir "$gw" runners list --json |
        python3 -c "import json,sys; sys.exit(0 if sum(len(r['connections']) for r in json.load(sys.stdin)['runners'] if r['name']=='bench') >= 2 else 1)"
}
wait_for 30 connected || die "the runner did not connect"
local_url="http://127.0.0.1:$(cat "$tmp/port")/v1/completions"
gw_url="$scheme://$pub/r/bench/v1/completions"
body="{\"prompt\":\"Once upon a time\",\"max_tokens\":$max_tokens,\"temperature\":0,\"ignore_eos\":true,\"stream\":true}"
client() { python3 "$root/tests/bench/stream_client.py" "$@" --cacert "$gw/ca.crt" --key "$key"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# Warm-up (engine, connections, prefix cache) on both paths.
client "$local_url" 2 2 "$body" >/dev/null || die "local warm-up failed"
client "$gw_url" 2 2 "$body" >/dev/null || die "gateway warm-up failed"

echo "model: $(basename "$model"), $max_tokens tokens per stream, engine threads $threads_engine"
echo
echo "1. latency, one stream at a time, $requests requests each (ms)"
printf '   %-8s %9s %9s %9s %9s\n' path ttft_p50 ttft_p99 itl_p50 itl_p99
# Alternate local and gateway rounds so drift affects both alike.
l_all=() g_all=()
for round in 1 2; do
    l=$(client "$local_url" 1 $((requests / 2)) "$body") || die "local: $l"
    g=$(client "$gw_url" 1 $((requests / 2)) "$body") || die "gateway: $g"
    l_all+=("$l")
    g_all+=("$g")
done
for pair in "local:${l_all[1]}" "gateway:${g_all[1]}"; do
    name=${pair%%:*}
    r=${pair#*:}
    printf '   %-8s %9s %9s %9s %9s\n' "$name" "$(field "$r" ttft_p50)" "$(field "$r" ttft_p99)" \
        "$(field "$r" itl_p50)" "$(field "$r" itl_p99)"
done
python3 - "${l_all[1]}" "${g_all[1]}" <<'PY'
import json, sys
l, g = (json.loads(a) for a in sys.argv[1:])
for k in ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99"):
    print("   gateway adds %-9s %+8.3f ms (ratio %.2fx)" % (k, g[k] - l[k], g[k] / l[k] if l[k] else float("nan")))
PY
echo
echo "2. aggregate tokens/s by concurrent streams"
printf '   %-6s %10s %10s %7s\n' streams local gateway ratio
for c in 1 8 32; do
    per=$((c == 1 ? 4 : 2))
    l=$(client "$local_url" "$c" "$per" "$body") || die "local c=$c: $l"
    g=$(client "$gw_url" "$c" "$per" "$body") || die "gateway c=$c: $g"
    lt=$(field "$l" tokens_per_s)
    gt=$(field "$g" tokens_per_s)
    printf '   %-6s %10s %10s %7s\n' "$c" "$lt" "$gt" "$(python3 -c "print('%.2f' % ($gt / $lt))")"
done
