#!/usr/bin/env bash
# --tensor-parallel N on the CPU: the runner splits stories260K's heads and
# MLP columns over N CPU ranks (runner/engine/forward.h), and a completion at
# temperature 0 through the API gives the same text with N = 1, 2 and 4 (the
# expected_greedy.json text), streamed too; usage is the same. A model whose
# heads do not divide by N is refused at start-up, the numbers named.
source "$(dirname "$0")/lib.sh"
need_stories
want=$(expected_text)
body='{"prompt":"Once upon a time","max_tokens":196,"temperature":0}'
sbody='{"prompt":"Once upon a time","max_tokens":196,"temperature":0,"stream":true}'
text() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$1"; }

for n in 1 2 4; do
    api_start "$STORIES" --tensor-parallel "$n" --kv-cache-memory 16MiB
    grep -q "tensor_parallel[\"=:]* *$n" "$API_LOG" || fail "N=$n not in the load log: $(grep 'model loaded' "$API_LOG")"
    [[ $(post /v1/completions "$body") == 200 ]] || fail "N=$n completion: $(cat "$TMP/out")"
    jcheck "$TMP/out" 'j["usage"]["prompt_tokens"] == 5 and j["usage"]["completion_tokens"] == 196' ||
        fail "N=$n usage"
    got=$(text "$TMP/out")
    [[ $got == "$want" ]] || fail "N=$n greedy text differs:
got:  $got
want: $want"
    curl -sSN --max-time 120 -H 'content-type: application/json' --data "$sbody" \
        "http://$API/v1/completions" >"$TMP/sse.$n" || fail "N=$n stream"
    got=$(sse_text "$TMP/sse.$n") || fail "N=$n stream: $(tail -c 300 "$TMP/sse.$n")"
    [[ $got == "$want" ]] || fail "N=$n streamed text differs: $got"
    metric_is ferry_engine_kv_blocks_used 0 || fail "N=$n: KV blocks still used"
    api_stop
    pass "--tensor-parallel $n: greedy text and stream = expected_greedy.json"
done

# 8 heads, 4 key/value heads: 3 ranks cannot split them.
rc=0
"$BIN/ferry-runner" run --model "$STORIES" --listen 127.0.0.1:0 --threads 1 \
    --tensor-parallel 3 >"$TMP/tp3.out" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q 'divide by 3' "$TMP/tp3.out" ||
    fail "--tensor-parallel 3: rc $rc $(cat "$TMP/tp3.out")"
pass "--tensor-parallel 3 on 8 heads / 4 KV heads: refused at start-up, naming why"
