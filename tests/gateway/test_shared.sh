#!/usr/bin/env bash
# Several gateways sharing one Redis (--shared): 3 replicas, 1 real
# redis-server (unix socket, appendonly), 2 runners connected to every
# replica, clients spread over the replicas. Limits stay exact across
# replicas (the anchors' failures: LiteLLM #2730, rpm x replicas; #27736,
# tpm x replicas): one key at 20 rpm never admits more than one limiter's
# bound, tokens per minute are charged once for all, and concurrency 4 with
# 20 parallel streams lets exactly 4 reach the upstream. A key created on
# one replica works at once on the others; a revocation on one is a 401 on
# the others on their very next request; a dead replica's concurrency slots
# come back within the lease TTL; a runner with --gateway repeated has a
# connection to each replica; enrollment tokens are good once across all.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../lib/redis.sh"
FAIL_LOGS=(gw.*.log runner.*.out redis.r/log)

redis_start
upstream_start

source "$(dirname "$0")/shared_lib.sh"
shared_init

for r in a b c; do replica_start "$r"; done
for r in a b c; do wait_for 20 replicas_are "$r" 3 || fail "replica $r does not count 3 replicas"; done
pass "3 replicas on one Redis: one deployment, each up and counting 3"

# --- runners: enrolled on one replica, connected to all ----------------------------------
# An enrollment token made on A, used on B: good once, across replicas.
for name in alpha beta; do
    t=$(tok "$name" a)
    [[ -n $t ]] || fail "token for $name"
    "$TBIN/gw_test_runner" enroll --gateway "${TUNS[b]}" --token "$t" --ca "$CA" --dir "$TMP/r-$name" \
        >"$TMP/enroll.out" 2>&1 || fail "enroll $name on B with A's token: $(cat "$TMP/enroll.out")"
    rc=0
    "$TBIN/gw_test_runner" enroll --gateway "${TUNS[c]}" --token "$t" --ca "$CA" --dir "$TMP/r-$name-again" \
        >"$TMP/enroll2.out" 2>&1 || rc=$?
    [[ $rc != 0 ]] && grep -q 'token_used\|already used' "$TMP/enroll2.out" ||
        fail "a token used on B was accepted again on C: $(cat "$TMP/enroll2.out")"
done
# Each runner keeps a connection to every replica (one test-runner process
# per replica; ferry-runner's --gateway repeated is checked below).
for name in alpha beta; do
    for r in a b c; do
        NRN=$((NRN + 1))
        "$TBIN/gw_test_runner" run --gateway "${TUNS[$r]}" --dir "$TMP/r-$name" \
            --upstream "http://127.0.0.1:$UP" >"$TMP/runner.$NRN.out" 2>&1 &
        PIDS+=($!)
    done
done
for r in a b c; do
    for name in alpha beta; do
        wait_for 30 conns_on_are "$r" "$name" 1 || fail "runner $name is not connected to replica $r"
    done
done
c=$(code_at b "$(on a keys create --name probe | tail -n1)" /r/beta/fixed)
[[ $c == 200 ]] || fail "a key made on A, used at once on B: $c"
curl -sS --max-time 10 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://${ADMS[c]}/admin/v1/tokens" >"$TMP/tokens.json"
python3 - "$TMP/tokens.json" <<'PY' || fail "tokens listed on C: $(cat "$TMP/tokens.json")"
import json, sys
t = {x["runner"]: x for x in json.load(open(sys.argv[1]))["tokens"]}
assert t["alpha"]["used_at"] and t["beta"]["used_at"], t
PY
pass "tokens made on A, used once on B (C refuses the second use); both runners on every replica; a key made on A works on B at once"

# --- 50 clients spread over the replicas ----------------------------------------------------
# spread N KEY PATH: N clients at once, client i on replica i mod 3; prints
# "OK LIMITED D_MS" (D_MS spans the whole run: it contains the limiter's window).
spread() {
    read -r OK LIMITED D_MS < <(python3 - "$1" "$2" "$3" "$CA" "${PUBS[a]}" "${PUBS[b]}" "${PUBS[c]}" <<'PY'
import http.client, ssl, sys, threading, time
n, key, path, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
pubs = sys.argv[5:]
ctx = ssl.create_default_context(cafile=ca)
conns = []
for i in range(n):
    host, port = pubs[i % len(pubs)].rsplit(":", 1)
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
    c.connect()
    conns.append(c)
go = threading.Barrier(n + 1)
codes = [None] * n
def one(i):
    go.wait()
    conns[i].request("GET", f"{path}?c={i}", headers={"Authorization": "Bearer " + key})
    r = conns[i].getresponse()
    r.read()
    codes[i] = r.status
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
t0 = time.monotonic()
go.wait()
for t in threads:
    t.join()
d_ms = int((time.monotonic() - t0) * 1000) + 1
ok, limited = codes.count(200), codes.count(429)
if ok + limited != n:
    sys.exit(f"other answers than 200/429: {sorted(codes)}")
print(ok, limited, d_ms)
PY
    )
    [[ -n ${OK:-} ]] || fail "parallel clients failed"
}

# rpm 20: T = 3 s, burst ceil(20/6) = 4. Three replicas each limiting alone
# would admit 12 at once.
mkkey_on a rpm20 --rpm 20
spread 50 "$KEY" /r/alpha/fixed
bound=$((4 + (D_MS + 2999) / 3000 - 1))
echo "  rpm 20, 50 clients over 3 replicas: $OK admitted, $LIMITED refused in $D_MS ms (bound $bound)"
((OK >= 4)) || fail "a fresh key's burst of 4 was not admitted: $OK"
((OK <= bound)) || fail "$OK admitted across replicas, more than one limiter's bound $bound"
pass "one key at 20 rpm, 50 clients over 3 replicas: never more than burst + ceil(W/T) - 1"

# --- tokens per minute, charged once for all replicas --------------------------------------
# tfull (the bucket's "full again" time in Redis) moves when a charge lands.
tfull() { redis_cli hget "ferry:{k:$1}:live" rl_tfull; }
charged_since() { [[ $(tfull "$1") != "$2" ]]; }
mkkey_on b tpm --tpm 1000
TPM_ID=$KID TPM=$KEY
i=0
for r in a b c a; do
    before=$(tfull "$TPM_ID")
    c=$(code_at "$r" "$TPM" -H 'x-test-usage: 400,200' -D "$TMP/h.$i" /r/alpha/fixed)
    codes[$i]=$c
    [[ $c == 200 ]] && { wait_for 20 charged_since "$TPM_ID" "$before" || fail "usage of request $i never charged"; }
    i=$((i + 1))
done
# 1000 tokens: 600 on A (400 left), 600 on B (-200: admitted while not
# negative), then C is refused until the refill pays the debt (12 s).
[[ ${codes[0]} == 200 && ${codes[1]} == 200 && ${codes[2]} == 429 && ${codes[3]} == 429 ]] ||
    fail "tpm across replicas: ${codes[*]} (want 200 200 429 429)"
grep -qi '^x-ratelimit-remaining-tokens: 0' "$TMP/h.2" || fail "C's 429 does not say the bucket is empty: $(cat "$TMP/h.2")"
pass "tokens per minute: one bucket for all replicas (200 on A, 200 on B, 429 on C and A)"

# --- concurrency 4, 20 parallel streams, counted at the upstream ---------------------------
mkkey_on c cc4 --concurrency 4
CC=$KEY
for i in $(seq 0 19); do
    r=$(echo a b c | cut -d' ' -f$((i % 3 + 1)))
    (code_at "$r" "$CC" "/r/alpha/gate?name=g1" >"$TMP/cc.$i") &
done
# answered CODE: how many of the 20 got CODE (one status per file, no newline).
answered() { grep -l "^$1\$" "$TMP"/cc.* 2>/dev/null | wc -l; }
done_all() { (($(grep -l . "$TMP"/cc.* 2>/dev/null | wc -l) == 20)); }
refused_16() { (($(answered 429) == 16)); }
wait_for 60 refused_16 || fail "not 16 refusals: $(answered 429) refused, $(up_stat gated) at the upstream"
wait_for 30 up_stat_is gated 4 || fail "upstream holds $(up_stat gated), want 4"
release g1
wait_for 60 done_all || fail "gated requests did not finish"
[[ $(answered 200) == 4 && $(answered 429) == 16 ]] ||
    fail "concurrency 4 across replicas: $(answered 200) answered 200, $(answered 429) 429"
pass "concurrency 4 with 20 parallel streams over 3 replicas: exactly 4 reached the upstream"

# --- revocation on A: 401 on B and C on their next request ----------------------------------
mkkey_on a rev
REV=$KEY REV_ID=$KID
for r in a b c; do [[ $(code_at "$r" "$REV" /r/alpha/fixed) == 200 ]] || fail "key rev before revoke on $r"; done
on a keys revoke "$REV_ID" >/dev/null || fail "revoke on A"
for r in b c a; do
    c=$(code_at "$r" "$REV" /r/alpha/fixed)
    [[ $c == 401 ]] || fail "revoked on A, next request on $r: $c"
done
pass "revoked on A: 401 on B and C on their very next request"

# Usage: each replica writes its own once a second; any replica reports the sum.
usage_is() {
    on "$1" --json usage --key "$REV_ID" >"$TMP/u.json" 2>/dev/null &&
        python3 -c "import json,sys; u=json.load(open(sys.argv[1]))['usage']; sys.exit(not (len(u) == 1 and u[0]['requests'] == $2))" "$TMP/u.json"
}
wait_for 30 usage_is c 3 || fail "usage on C of the key used once on each replica: $(cat "$TMP/u.json")"
on b --json keys list >"$TMP/keys.json"
python3 - "$TMP/keys.json" "$REV_ID" <<'PY' || fail "keys list usage on B: $(cat "$TMP/keys.json")"
import json, sys
k = {k["id"]: k for k in json.load(open(sys.argv[1]))["keys"]}[sys.argv[2]]
assert k["usage"]["requests"] == 3 and k["revoked_at"], k
PY
pass "usage: one request on each replica, reported as 3 by any replica (ferry usage, keys list)"

# --- a dead replica's slots come back within the lease TTL (3 s here) -------------------------
mkkey_on a cc1 --concurrency 1
CC1=$KEY
(code_at a "$CC1" "/r/alpha/gate?name=g2" >"$TMP/held") &
wait_for 30 up_stat_is gated 1 || fail "the held request did not reach the upstream"
[[ $(code_at b "$CC1" /r/alpha/fixed) == 429 ]] || fail "the slot held through A is not counted on B"
kill -9 "${PIDOF[a]}"
wait "${PIDOF[a]}" 2>/dev/null || true
slot_back() { [[ $(code_at b "$CC1" /r/alpha/fixed) == 200 ]]; }
wait_for 30 slot_back || fail "the dead replica's slot never came back"
for r in b c; do wait_for 30 replicas_are "$r" 2 || fail "replica $r still counts A as alive"; done
release g2
pass "a replica killed holding a slot: the slot is back within the lease TTL; the others count 2 replicas"

# --- ferry-runner with --gateway repeated: one connection per replica ------------------------
replica_start a
t=$(tok gamma c)
"$BIN/ferry-runner" enroll --gateway "${TUNS[c]}" --token "$t" --ca "$CA" --data-dir "$TMP/r-gamma" \
    >"$TMP/enroll.out" 2>&1 || fail "ferry-runner enroll on C: $(cat "$TMP/enroll.out")"
NRN=$((NRN + 1))
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/r-gamma" --upstream "http://127.0.0.1:$UP" \
    --gateway "${TUNS[a]}" --gateway "${TUNS[b]}" --gateway "${TUNS[c]}" --connections 3 \
    >"$TMP/runner.$NRN.out" 2>&1 &
PIDS+=($!)
for r in a b c; do
    wait_for 30 conns_on_are "$r" gamma 1 || fail "ferry-runner gamma has $(conns_on "$r" gamma) connections on $r, want 1"
done
for r in a b c; do
    [[ $(code_at "$r" "$(on b keys create --name g$r | tail -n1)" /r/gamma/fixed) == 200 ]] ||
        fail "runner gamma through replica $r"
done
pass "ferry-runner --gateway x3 --connections 3: one connection on each replica, requests through each"

# Any replica lists the runners connected to any replica, with where (from
# the replicas' heartbeats: wait for the restarted A's to name gamma).
runners_listed() {
    curl -sS --max-time 10 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://${ADMS[b]}/admin/v1/runners" >"$TMP/runners.json"
    python3 - "$TMP/runners.json" "${TUNS[a]}" "${TUNS[b]}" "${TUNS[c]}" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["shared"] is True, j
runners = {r["name"]: r for r in j["runners"]}
g = runners["gamma"]
assert g["connected"], g
tunnels = sorted(r["tunnel"] for r in g["replicas"])
assert tunnels == sorted(sys.argv[2:5]), tunnels
assert sum(r["this"] for r in g["replicas"]) == 1, g
# alpha's connections to the killed replica went with it: B and C only.
assert sorted(r["tunnel"] for r in runners["alpha"]["replicas"]) == sorted(sys.argv[3:5]), runners["alpha"]
PY
}
wait_for 30 runners_listed || fail "runners on B: $(cat "$TMP/runners.json")"
on c runners list >"$TMP/runners.txt"
[[ $(grep -c '^  replica rep_' "$TMP/runners.txt") -ge 3 ]] || fail "ferry runners on C: $(cat "$TMP/runners.txt")"
pass "ferry runners on any replica lists each runner's connections on every replica"

# --- Redis unreachable, then back ----------------------------------------------------------------
mkkey_on a cached --rpm 60 # burst 10: while down, each of 3 replicas admits at most 10 / 3 = 3 at once
CACHED=$KEY CACHED_ID=$KID
mkkey_on b durable
DURABLE=$KEY DURABLE_ID=$KID
for r in a b c; do [[ $(code_at "$r" "$CACHED" /r/gamma/fixed) == 200 ]] || fail "cached key on $r"; done
# kill -9 right after an acknowledged create: appendonly + appendfsync always keeps it.
redis_kill9
for r in a b c; do wait_for 30 eval '! shared_up '"$r" || fail "replica $r still reports Redis up"; done
grep -q 'shared state unreachable' "$TMP/gw.b.log" || fail "no log line says the shared state is down"
# Cached keys authenticate; limits are local at limit / 3.
spread 30 "$CACHED" /r/gamma/fixed
echo "  Redis down, rpm 60 (burst 10) over 3 replicas: $OK admitted, $LIMITED refused in $D_MS ms"
bound=$((3 * (3 + (D_MS + 2999) / 3000 - 1))) # per replica: rpm 20 (T = 3 s), burst 3
((OK >= 3)) || fail "cached key refused while Redis is down: $OK admitted"
((OK <= bound)) || fail "$OK admitted while down: more than 3 x (burst 3 + ceil(W/T) - 1) = $bound"
# Writes: 503 saying why; a key no replica has cached: 503 (--shared-failure closed).
rc=0
on a keys create --name nope >"$TMP/w.out" 2>&1 || rc=$?
[[ $rc != 0 ]] && grep -qi 'shared state' "$TMP/w.out" || fail "key create while Redis is down: $(cat "$TMP/w.out")"
c=$(code_at c "fy_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | head -c 43)" /r/gamma/fixed)
[[ $c == 503 ]] || fail "an uncached key while Redis is down: $c (want 503 under --shared-failure closed)"
metrics_of a | grep -q '^ferry_shared_local_admissions_total [1-9]' || fail "no local admissions counted"
pass "Redis down: cached keys work, limits at limit / 3 per replica, writes 503, metric and log say so"

redis_start
for r in a b c; do wait_for 30 shared_up "$r" || fail "replica $r did not reconnect"; done
for r in a b c; do
    [[ $(code_at "$r" "$DURABLE" /r/gamma/fixed) == 200 ]] || fail "the key acknowledged before kill -9 of Redis, on $r"
done
on c keys revoke "$DURABLE_ID" >/dev/null || fail "revoke after recovery"
for r in a b; do [[ $(code_at "$r" "$DURABLE" /r/gamma/fixed) == 401 ]] || fail "revoked after recovery, on $r"; done
pass "Redis back: every replica reconnects without a restart; the key acknowledged before kill -9 survived (appendonly); writes work again"

# A Redis that stops answering (SIGSTOP: its socket still accepts) is as
# good as down: after the command timeout (2 s) requests are decided locally
# instead of waiting; SIGCONT brings it back.
mkkey_on a hang
HANG=$KEY
[[ $(code_at b "$HANG" /r/gamma/fixed) == 200 ]] || fail "key hang before the stop"
kill -STOP "$REDIS_PID"
c=$(code_at b "$HANG" /r/gamma/fixed)
[[ $c == 200 ]] || fail "a cached key while Redis hangs: $c"
wait_for 30 eval '! shared_up b' || fail "replica b still reports a hung Redis up"
grep -q 'did not answer a command within' "$TMP/gw.b.log" || fail "no log line says Redis stopped answering"
kill -CONT "$REDIS_PID"
wait_for 30 shared_up b || fail "replica b did not come back after SIGCONT"
pass "Redis hung (SIGSTOP): requests decided locally after the command timeout, not stuck; back after SIGCONT"

for r in a b c; do
    kill -TERM "${PIDOF[$r]}"
    rc=0
    wait "${PIDOF[$r]}" || rc=$?
    [[ $rc == 0 ]] || fail "replica $r exited with $rc"
done
pass "replicas stop cleanly"
