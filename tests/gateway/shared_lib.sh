# shared_lib.sh: the replicas of the --shared tests (sourced after lib.sh
# and ../lib/redis.sh, once redis_start ran): three data dirs on one
# deployment, and helpers that address a replica by name (a, b or c).
#
# shared_init: A seeds the deployment in Redis, B and C join it; sets DIR,
#   ADMIN_TOKEN, CA.
declare -A DIR PUBS TUNS ADMS PIDOF
shared_init() {
    # Replica data dirs: A seeds the deployment, B and C join it.
    for r in a b c; do DIR[$r]=$TMP/gw-$r; done
    "$BIN/ferry-gateway" init --data-dir "${DIR[a]}" --shared "$REDIS_URL" >"$TMP/init.a" 2>&1 ||
        fail "init --shared (seed): $(cat "$TMP/init.a")"
    for r in b c; do
        "$BIN/ferry-gateway" init --data-dir "${DIR[$r]}" --shared "$REDIS_URL" >"$TMP/init.$r" 2>&1 ||
            fail "init --shared (join $r): $(cat "$TMP/init.$r")"
        cmp -s "${DIR[a]}/admin.token" "${DIR[$r]}/admin.token" &&
            cmp -s "${DIR[a]}/runner-ca.crt" "${DIR[$r]}/runner-ca.crt" ||
            fail "replica $r did not join the same deployment"
    done
    ADMIN_TOKEN=$(cat "${DIR[a]}/admin.token")
    CA=${DIR[a]}/ca.crt
}
# replica_start R [ARGS...]: ferry-gateway run --shared on R's dir, its
# tunnel on $TUN_LISTEN (default 127.0.0.1:0).
replica_start() {
    local r=$1
    shift
    rm -f "${DIR[$r]}/state.json"
    "$BIN/ferry-gateway" run --data-dir "${DIR[$r]}" --public-listen 127.0.0.1:0 \
        --tunnel-listen "${TUN_LISTEN:-127.0.0.1:0}" --admin-listen 127.0.0.1:0 --shared "$REDIS_URL" \
        --shared-lease 3s "$@" >>"$TMP/gw.$r.log" 2>&1 &
    PIDOF[$r]=$!
    PIDS+=("${PIDOF[$r]}")
    wait_for 20 grep -q "\"pid\": ${PIDOF[$r]}" "${DIR[$r]}/state.json" ||
        fail "replica $r did not start: $(tail -n 5 "$TMP/gw.$r.log")"
    PUBS[$r]=$(json_get "${DIR[$r]}/state.json" public)
    TUNS[$r]=$(json_get "${DIR[$r]}/state.json" tunnel)
    ADMS[$r]=$(json_get "${DIR[$r]}/state.json" admin)
    wait_for 20 shared_up "$r" || fail "replica $r never reached Redis: $(tail -n 5 "$TMP/gw.$r.log")"
}
# on R CMD...: the ferry CLI against replica R.
on() {
    local r=$1
    shift
    "$BIN/ferry" --data-dir "${DIR[$r]}" "$@"
}
metrics_of() {
    curl -sS --max-time 5 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://${ADMS[$1]}/metrics"
}
shared_up() { metrics_of "$1" | grep -q '^ferry_shared_up 1$'; }
replicas_are() { metrics_of "$1" | grep -q "^ferry_shared_replicas $2\$"; }
# at R KEY [CURL ARGS...] PATH: a public request to replica R with KEY.
at() {
    local r=$1 k=$2
    shift 2
    local path=${!#}
    curl -sS --max-time 30 --cacert "$CA" -H "Authorization: Bearer $k" "${@:1:$#-1}" \
        "https://${PUBS[$r]}$path"
}
code_at() {
    local r=$1 k=$2
    shift 2
    at "$r" "$k" -o /dev/null -w '%{http_code}' "$@"
}
# mkkey_on R NAME ARGS...: a new key made through replica R: KEY, KID.
mkkey_on() {
    local r=$1
    shift
    on "$r" keys create --name "$@" >"$TMP/mkkey.out" || fail "keys create on $r: $(cat "$TMP/mkkey.out")"
    KEY=$(tail -n1 "$TMP/mkkey.out")
    KID=$(sed -n 's/^API key \(key_[^ ]*\) .*/\1/p' "$TMP/mkkey.out")
    [[ $KEY == fy_* && $KID == key_* ]] || fail "keys create output: $(cat "$TMP/mkkey.out")"
}
conns_on() {
    curl -sS --max-time 5 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://${ADMS[$1]}/admin/v1/runners" |
        python3 -c "import json,sys; j=json.load(sys.stdin); print(sum(len(r['connections']) for r in j['runners'] if r['name']=='$2'))"
}
conns_on_are() { [[ $(conns_on "$1" "$2") == "$3" ]]; }

# tok RUNNER R: an enrollment token for RUNNER made through replica R.
tok() {
    curl -sS --max-time 10 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' --data "{\"runner\":\"$1\",\"ttl\":\"1h\"}" \
        "https://${ADMS[$2]}/admin/v1/tokens" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}
# replica_stop R: SIGTERM; replica R must exit 0 (under the sanitizers: no
# leak, no error).
replica_stop() {
    kill -TERM "${PIDOF[$1]}"
    local rc=0
    wait "${PIDOF[$1]}" || rc=$?
    [[ $rc == 0 ]] || fail "replica $1 exited with $rc"
}
