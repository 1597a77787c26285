#!/usr/bin/env bash
# demo.sh: ferry's main job on one machine, with binaries already built.
#
#   deploy/demo.sh [--build DIR] [--dir DIR] [--model DIR] [--keep | --stop]
#
# In DIR (default ./.quickstart): initialises a gateway (once) and starts it on
# loopback ports, creates a one-time enrollment token with `ferry`, enrolls a
# runner with the gateway CA's fingerprint, starts the runner serving a model
# with ferry's own engine (by default deploy/models/stories260K, a real 260K-
# parameter story model shipped in the repo; --model DIR: any supported Hugging
# Face model directory), creates an API key with `ferry keys create`, asks the
# gateway's OpenAI-compatible /v1/completions to continue "Once upon a time"
# and /v1/chat/completions for a streamed answer, with curl; the gateway routes
# each by model down the tunnel. Then it stops everything it started, unless
# --keep is given (then it prints how to stop them: `deploy/demo.sh --stop`).
# Running it again reuses the gateway's data dir, enrolls the runner afresh and
# replaces the key. quickstart.sh runs it after building.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
BUILD=build
DIR=.quickstart
KEEP=0
STOP=0
MODEL=
while [[ $# -gt 0 ]]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --model) MODEL=$(readlink -f "$2"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    --stop) STOP=1; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
BIN=$(readlink -f "$BUILD")/bin
mkdir -p "$DIR"
DIR=$(readlink -f "$DIR")
PIDFILE=$DIR/pids
LOGS=$DIR/logs
if [[ -t 1 ]]; then
    say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
else
    say() { printf '==> %s\n' "$*"; }
fi

# 1 while PID runs (a zombie waiting to be reaped by init does not count).
alive() { [[ -r /proc/$1/stat && $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Stops the processes a previous --keep run left (only if they are still ours).
stop_previous() {
    [[ -f $PIDFILE ]] || return 0
    local pid
    while read -r pid; do
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DIR"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done < <(tac "$PIDFILE") # the runner first, the gateway last
    rm -f "$PIDFILE"
}
stop_previous
if [[ $STOP == 1 ]]; then
    echo "demo.sh: stopped the demo in $DIR"
    exit 0
fi
for b in ferry-gateway ferry-runner ferry; do
    [[ -x $BIN/$b ]] || { echo "demo.sh: $BIN/$b is missing: build first (deploy/quickstart.sh)" >&2; exit 1; }
done

STARTED=()
cleanup() {
    local rc=$?
    if [[ $KEEP == 1 && $rc == 0 ]]; then return; fi
    local i pid
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        pid=${STARTED[$i]}
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$PIDFILE"
    if [[ $rc != 0 ]]; then
        echo "demo.sh: failed; logs are in $LOGS" >&2
    fi
}
trap cleanup EXIT
started() {
    STARTED+=("$1")
    echo "$1" >>"$PIDFILE"
}
wait_for() { # wait_for SECONDS CMD...
    local t=$1 i
    shift
    for ((i = 0; i < t * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}
mkdir -p "$LOGS"

GW=$DIR/gateway
say "gateway: $GW"
"$BIN/ferry-gateway" init --data-dir "$GW" | sed 's/^/    /'
rm -f "$GW/state.json"
"$BIN/ferry-gateway" run --data-dir "$GW" --public-listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 >>"$LOGS/gateway.log" 2>&1 &
started $!
wait_for 10 test -s "$GW/state.json" || { echo "demo.sh: the gateway did not start" >&2; exit 1; }
state() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$GW/state.json" "$1"; }
PUB=$(state public)
TUN=$(state tunnel)
echo "    listening: public https://$PUB, tunnel $TUN, admin https://$(state admin)"

say "ferry tokens create --name demo"
"$BIN/ferry" --data-dir "$GW" tokens create --name demo --ttl 10m >"$DIR/token.out"
sed '$d' "$DIR/token.out" | sed 's/^/    /'
TOKEN=$(tail -n1 "$DIR/token.out")
FPR=$(sed -n 's/.*--ca-fingerprint \(sha256:[0-9a-f]*\).*/\1/p' "$DIR/token.out")
rm -f "$DIR/token.out"
echo "    (token: ${TOKEN:0:8}..., shown once)"

RN=$DIR/runner
say "ferry-runner enroll --gateway $TUN --ca-fingerprint ${FPR:0:20}... --data-dir $RN"
rm -rf "$RN"
"$BIN/ferry-runner" enroll --gateway "$TUN" --token "$TOKEN" --ca-fingerprint "$FPR" \
    --data-dir "$RN" | sed 's/^/    /'

DEFAULT_MODEL=0
if [[ -z $MODEL ]]; then
    MODEL=deploy/models/stories260K
    DEFAULT_MODEL=1
fi
MODEL=$(readlink -f "$MODEL")
NAME=$(basename "$MODEL")

say "ferry-runner run --data-dir $RN --model $MODEL"
rm -f "$DIR/runner.port"
"$BIN/ferry-runner" run --data-dir "$RN" --model "$MODEL" --listen 127.0.0.1:0 \
    --listen-port-file "$DIR/runner.port" --kv-cache-memory 256MiB >>"$LOGS/runner.log" 2>&1 &
started $!
wait_for 120 test -s "$DIR/runner.port" || { echo "demo.sh: the runner did not start; see $LOGS/runner.log" >&2; exit 1; }
echo "    serving model '$NAME' (local listener 127.0.0.1:$(cat "$DIR/runner.port"), no public port)"

say "ferry keys create --name demo --rpm 600"
# A fresh key per run; the previous run's key is revoked (it was shown once).
if [[ -s $DIR/key.id ]]; then
    "$BIN/ferry" --data-dir "$GW" keys revoke "$(cat "$DIR/key.id")" >/dev/null 2>&1 || true
fi
"$BIN/ferry" --data-dir "$GW" keys create --name demo --rpm 600 >"$DIR/key.out"
sed '$d' "$DIR/key.out" | sed 's/^/    /'
KEY=$(tail -n1 "$DIR/key.out")
sed -n 's/^API key \(key_[^ ]*\) .*/\1/p' "$DIR/key.out" >"$DIR/key.id"
rm -f "$DIR/key.out"
echo "    (key: ${KEY:0:8}..., shown once)"

URL=https://$PUB/v1
models_ok() { curl -sSf --max-time 2 --cacert "$GW/ca.crt" -H "Authorization: Bearer $KEY" "$URL/models" | grep -q "\"$NAME\""; }
wait_for 30 models_ok || {
    echo "demo.sh: the gateway does not list model '$NAME'; see $LOGS" >&2
    exit 1
}
# ask PATH BODY OUT: POST BODY to the gateway's /v1/PATH with the key, answer in OUT.
ask() {
    curl -sS -N --fail-with-body --max-time 120 --cacert "$GW/ca.crt" "$URL/$1" \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$2" >"$3"
}
show_curl() { # show_curl PATH BODY: the command a user can paste (the key as $KEY)
    echo "    curl -N --cacert $GW/ca.crt $URL/$1 -H 'Authorization: Bearer \$KEY' -H 'Content-Type: application/json' -d '$2'"
}

PROMPT="Once upon a time"
CBODY='{"model":"'$NAME'","prompt":"'$PROMPT'","max_tokens":64,"temperature":0}'
say "a completion through the gateway and the tunnel: the model continues \"$PROMPT\""
show_curl completions "$CBODY"
ask completions "$CBODY" "$DIR/completion.json"
python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
print("    %s%s" % (sys.argv[2], r["choices"][0]["text"].replace("\n", "\n    ")))
u = r["usage"]
print("    (%d prompt + %d completion tokens, finish_reason %s)" % (u["prompt_tokens"], u["completion_tokens"], r["choices"][0]["finish_reason"]))' \
    "$DIR/completion.json" "$PROMPT"

CHAT='{"model":"'$NAME'","stream":true,"max_tokens":48,"temperature":0.8,"seed":7,"messages":[{"role":"user","content":"Tell me a story about a brave little dog."}]}'
say "a streamed chat completion through the gateway and the tunnel"
if [[ $DEFAULT_MODEL == 1 ]]; then
    echo "    (stories260K writes children's stories and is not chat-tuned: it answers with a story)"
fi
show_curl chat/completions "$CHAT"
ask chat/completions "$CHAT" "$DIR/answer.sse"
# awk reads to the end (head would close the pipe early: SIGPIPE under pipefail).
awk 'NF && n++ < 2 { print "    " substr($0, 1, 160) }' "$DIR/answer.sse"
echo "    ... ($(grep -c '^data: {' "$DIR/answer.sse") chunks)"
grep -q '^data: \[DONE\]' "$DIR/answer.sse" || { echo "demo.sh: the stream did not end with [DONE]" >&2; exit 1; }
TEXT=$(python3 -c 'import json,sys
out = ""
for line in open(sys.argv[1]):
    if line.startswith("data: {"):
        for c in json.loads(line[6:])["choices"]:
            out += c.get("delta", {}).get("content") or ""
print(json.dumps(out, ensure_ascii=False))' "$DIR/answer.sse")
echo "    assistant: $TEXT"
echo
"$BIN/ferry" --data-dir "$GW" runners list | sed 's/^/    /'
echo
echo "URL:    $URL   (OpenAI-compatible; model '$NAME')"
echo "key:    $KEY"
echo "try:    curl --cacert $GW/ca.crt $URL/models -H 'Authorization: Bearer $KEY'"
echo "        curl --cacert $GW/ca.crt $URL/completions -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -d '$CBODY'"
echo "SDKs:   OPENAI_BASE_URL=$URL OPENAI_API_KEY=$KEY NODE_EXTRA_CA_CERTS=$GW/ca.crt (Node), SSL_CERT_FILE=$GW/ca.crt (Python)"
if [[ $KEEP == 1 ]]; then
    echo "The gateway and the runner keep running (logs in $LOGS)."
    echo "stop:   $0 --dir $DIR --stop"
else
    echo "Stopping the demo (run with --keep to leave it running)."
fi
