#!/usr/bin/env bash
# --device and the GPU memory options at start-up, on a machine without a GPU
# (this build machine): --device cuda fails at once with a clear message, not
# after loading the weights (built without CUDA: it says so and how it was
# built; built with CUDA: no usable GPU, with CUDA's reason, or, when the CUDA
# module cannot be loaded, which file and why), exit 2;
# --gpu-memory-utilization is refused on the CPU, outside (0, 1], and with
# --kv-cache-memory; the CPU path is unaffected: --device cpu serves.
source "$(dirname "$0")/lib.sh"
demo_model

# refused ARGS... -- PATTERN: the runner exits 2 at start-up, saying PATTERN.
refused() {
    local args=() rc=0
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    "$BIN/ferry-runner" run --model "$TMP/demo" --listen 127.0.0.1:0 --threads 1 "${args[@]}" \
        >"$TMP/refused.out" 2>&1 || rc=$?
    [[ $rc == 2 ]] || fail "${args[*]}: exit $rc, want 2: $(cat "$TMP/refused.out")"
    grep -qF -- "$2" "$TMP/refused.out" || fail "${args[*]}: $(cat "$TMP/refused.out") (want: $2)"
    grep -q 'model loaded' "$TMP/refused.out" && fail "${args[*]}: the model was loaded first"
    return 0
}

# --version lists CUDA without probing it (that loads the CUDA module);
# --check-config probes it, as start-up does.
if "$BIN/ferry-runner" --version | grep -q 'backend cuda: not compiled'; then
    want='this ferry-runner was built without CUDA (-DFERRY_CUDA=OFF)'
    kind="built without CUDA"
elif "$BIN/ferry-runner" run --model "$TMP/demo" --device cuda --check-config >"$TMP/probe.out" 2>&1; then
    skip "a GPU is present: the no-GPU messages cannot be checked here"
elif grep -q 'no usable GPU on this machine: CUDA runtime .*no usable device' "$TMP/probe.out"; then
    want='no usable GPU on this machine'
    kind="CUDA build, no GPU"
else
    fail "--device cuda --check-config: $(cat "$TMP/probe.out")"
fi
refused --device cuda -- "$want"
refused --device cuda:1 -- "$want"
refused --device cuda --gpu-memory-utilization 0.9 --tensor-parallel 2 -- "$want"
pass "--device cuda[:N] ($kind): exit 2 at start-up: $(head -n1 "$TMP/refused.out")"

# A CUDA build whose module is missing or is not ferry's says which file and why.
if [[ $kind == "CUDA build, no GPU" ]]; then
    export FERRY_CUDA_LIB=$TMP/nowhere/libferry_cuda.so
    refused --device cuda -- "--device cuda: the CUDA backend cannot be loaded: CUDA backend module $FERRY_CUDA_LIB: cannot open: "
    grep -q 'No such file' "$TMP/refused.out" || fail "missing module: $(cat "$TMP/refused.out")"
    "$BIN/ferry-runner" --version | grep -qF "backend cuda: compiled, not probed (module $FERRY_CUDA_LIB: missing)" ||
        fail "--version with a missing module: $("$BIN/ferry-runner" --version | grep 'backend cuda')"
    FERRY_CUDA_LIB=$(ldd "$BIN/ferry-runner" | awk '/libjansson/ {print $3}')
    [[ -f $FERRY_CUDA_LIB ]] || fail "no libjansson path in: $(ldd "$BIN/ferry-runner")"
    refused --device cuda -- "CUDA backend module $FERRY_CUDA_LIB: no fy_cuda_module_v1: not a ferry CUDA module"
    unset FERRY_CUDA_LIB
    pass "--device cuda with a missing or foreign CUDA module: exit 2, naming the file"
fi

refused --device tpu -- "--device 'tpu': expected cpu, cuda or cuda:N"
refused --device cuda:one -- "expected cuda:N"
refused --gpu-memory-utilization 0.9 -- "needs --device cuda[:N] (on the CPU, use --kv-cache-memory)"
refused --device cpu --gpu-memory-utilization 0.5 -- "needs --device cuda[:N]"
refused --device cuda --gpu-memory-utilization 0 -- "must be a fraction in (0, 1]"
refused --device cuda --gpu-memory-utilization 1.01 -- "must be a fraction in (0, 1]"
refused --device cuda --gpu-memory-utilization nan -- "must be a fraction in (0, 1]"
refused --device cuda --gpu-memory-utilization 0.9 --kv-cache-memory 1GiB -- "not both"
refused --tensor-parallel 17 -- "--tensor-parallel must be 1 to 16"
refused --kv-cache-dtype q8_0 -- "--kv-cache-dtype 'q8_0' is unknown (auto, f32, f16 or bf16)"
refused --kv-cache-dtype '' -- "--kv-cache-dtype '' is unknown"
pass "--device, --gpu-memory-utilization and --kv-cache-dtype mistakes: exit 2, each named"

api_start "$TMP/demo" --device cpu --kv-cache-memory 64MiB
[[ $(post /v1/completions '{"prompt":"hi","max_tokens":4,"temperature":0}') == 200 ]] ||
    fail "--device cpu: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["usage"]["completion_tokens"] >= 1' || fail "--device cpu: $(cat "$TMP/out")"
api_stop
pass "--device cpu serves as before"

# The "model loaded" event names the KV type: auto is F32 on the CPU, and an
# F16 cache holds twice the blocks in the same --kv-cache-memory.
blocks() { # blocks LOG DTYPE: kv_cache_blocks of the model loaded event, checking its type
    local line
    line=$(grep 'model loaded' "$1") || fail "no model loaded event: $(cat "$1")"
    [[ $line == *" kv_cache_dtype=$2 "* ]] || fail "want kv_cache_dtype=$2: $line"
    [[ $line =~ kv_cache_blocks=([0-9]+) ]] || fail "no kv_cache_blocks: $line"
    echo "${BASH_REMATCH[1]}"
}
api_start "$TMP/demo" --kv-cache-memory 8MiB
n32=$(blocks "$API_LOG" F32)
api_stop
api_start "$TMP/demo" --kv-cache-memory 8MiB --kv-cache-dtype f16
n16=$(blocks "$API_LOG" F16)
[[ $(post /v1/completions '{"prompt":"hi","max_tokens":4,"temperature":0}') == 200 ]] ||
    fail "--kv-cache-dtype f16: $(cat "$TMP/out")"
api_stop
[[ $n16 == $((2 * n32)) ]] || fail "f16 KV holds $n16 blocks, f32 $n32: want twice"
pass "--kv-cache-dtype: auto is F32 on the CPU, f16 holds twice the blocks ($n32 -> $n16) and serves"
