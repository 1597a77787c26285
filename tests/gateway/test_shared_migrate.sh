#!/usr/bin/env bash
# `ferry-gateway migrate --to URL`, against a real redis-server: a gateway's
# store (keys with limits and scopes, one revoked; an enrolled runner; used
# and unused enrollment tokens; hooks with their secrets, one rotated; usage
# from real requests) is copied into the shared layout, and every record,
# hash index, live hash and usage field is checked against the SQLite store
# itself. A second run reports everything unchanged and leaves Redis
# byte-identical; a changed key is "updated" and bumps its live ver.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../lib/redis.sh"
FAIL_LOGS+=(redis.*/log)

G=$BIN/ferry-gateway

# --- a gateway with something in every table ---------------------------------------------
gw_init
gw_start
upstream_start
tenroll alpha "$TMP/ra"
trunner_start "$TMP/ra"
mkkey lim --owner "team é" --rpm 600 --burst 7 --tpm 5000 --concurrency 3 --models m1,org/m2:q4 \
    --runners alpha --hooks hk_x --expires 30d
LIM_KEY=$KEY LIM_ID=$KID
mkkey gone
ferry keys revoke "$KID" >/dev/null || fail "keys revoke"
ferry tokens create --name beta --ttl 2h >/dev/null || fail "tokens create"
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$TMP/gh.secret"
ferry hooks create --name gh --runner alpha --path /gh/events --verify github \
    --secret-file "$TMP/gh.secret" >"$TMP/hook.out" || fail "hooks create"
HOOK_ID=$(tail -n1 "$TMP/hook.out" | sed 's|.*/hooks/||')
printf 'k3y' >"$TMP/gen.secret"
ferry hooks create --name gen --runner alpha --path /gen --verify hmac-sha256 --header X-Sig \
    --encoding base64 --timestamp-header X-Ts --async --rpm 30 --secret-file "$TMP/gen.secret" \
    >"$TMP/hook2.out" || fail "hooks create hmac"
head -c 32 /dev/urandom | base64 | tr -d "\n" >"$TMP/new.secret"
ferry hooks rotate-secret "$HOOK_ID" --secret-file "$TMP/new.secret" --grace 1h >/dev/null || fail "rotate"
for i in 1 2 3; do
    [[ $(pubk "$LIM_KEY" /r/alpha/fixed) == "Hello from ferry" ]] || fail "request $i"
done
[[ $(pub -o /dev/null -w '%{http_code}' -d 'some body' /r/alpha/echo) == 200 ]] || fail "echo request"
gw_stop # flushes usage

redis_start >/dev/null
"$G" migrate --data-dir "$GW" --to "$REDIS_URL" >"$TMP/m1.out" 2>&1 || fail "migrate: $(cat "$TMP/m1.out")"
grep -q 'deployment seed uploaded' "$TMP/m1.out" || fail "seed: $(cat "$TMP/m1.out")"
line() { grep -E "^  $1 " "$TMP/$2" | sed 's/^ *[a-z ]*  *//'; }
[[ $(line keys m1.out) == "3 new, 0 updated, 0 unchanged" ]] || fail "keys: $(cat "$TMP/m1.out")"
[[ $(line runners m1.out) == "1 new, 0 updated, 0 unchanged" ]] || fail "runners: $(cat "$TMP/m1.out")"
[[ $(line tokens m1.out) == "2 new, 0 updated, 0 unchanged" ]] || fail "tokens: $(cat "$TMP/m1.out")"
[[ $(line hooks m1.out) == "2 new, 0 updated, 0 unchanged" ]] || fail "hooks: $(cat "$TMP/m1.out")"
grep -qE '^  usage hours +[1-9][0-9]* new, 0 updated, 0 unchanged' "$TMP/m1.out" || fail "usage: $(cat "$TMP/m1.out")"
pass "migrate copies every kind and counts them new"

# check_redis: every row of the SQLite store is in Redis with the same values.
check_redis() {
    python3 - "$GW/gateway.db" "$REDIS_SOCK" <<'EOF'
import base64, json, sqlite3, subprocess, sys
db = sqlite3.connect(sys.argv[1])
sock = sys.argv[2]
def r(*args):
    out = subprocess.run(["redis-cli", "-s", sock, "--raw", *args], check=True,
                         capture_output=True).stdout.decode()
    return out[:-1] if out.endswith("\n") else out
def hgetall(key):
    v = r("hgetall", key).split("\n")
    return dict(zip(v[0::2], v[1::2])) if v != [""] else {}
def die(msg):
    sys.exit("FAIL: " + msg)
def b64(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")
n = 0
for (kid, name, owner, prefix, h, rpm, tpm, cc, burst, models, runners, hooks, created, exp, rev,
     last) in db.execute("select id, name, owner, prefix, hash, rpm, tpm, concurrency, burst, models,"
                         " runners, hooks, created_at, expires_at, revoked_at, last_used_at"
                         " from api_keys"):
    rec = json.loads(r("hget", "ferry:{cat}:keys", kid))
    want = dict(id=kid, name=name, owner=owner, prefix=prefix, hash=h.hex(), rpm=rpm, tpm=tpm,
                concurrency=cc, burst=burst, models=",".join(json.loads(models)),
                runners=",".join(json.loads(runners)), hooks=",".join(json.loads(hooks)),
                created_at=created, expires_at=exp, revoked_at=rev)
    if rec != want:
        die(f"key {kid}: {rec} != {want}")
    if r("hget", "ferry:{cat}:keyhash", h.hex()) != kid:
        die(f"key {kid}: hash index")
    live = hgetall("ferry:{k:%s}:live" % kid)
    want = dict(rpm=str(rpm), tpm=str(tpm), cc=str(cc), burst=str(burst), exp=str(exp),
                rev=str(rev), ver=live.get("ver"))
    if live != want or not live.get("ver", "").isdigit():
        die(f"key {kid} live: {live} != {want}")
    usage = hgetall("ferry:{k:%s}:usage" % kid)
    if last and usage.get("last") != str(last):
        die(f"key {kid}: last use {usage.get('last')} != {last}")
    n += 1
for (kid, hour, *u) in db.execute("select key_id, hour, requests, prompt_tokens,"
                                  " completion_tokens, bytes_in, bytes_out from usage"):
    usage = hgetall("ferry:{k:%s}:usage" % kid)
    for s, v in zip("rpcio", u):
        if usage.get(f"{hour}:{s}") != str(v):
            die(f"usage {kid} {hour}:{s}: {usage.get(f'{hour}:{s}')} != {v}")
    n += 1
for (name, fp, serial, enrolled, rev) in db.execute("select name, fingerprint, serial,"
                                                    " enrolled_at, revoked_at from runners"):
    rec = json.loads(r("hget", "ferry:{cat}:runners", name))
    want = dict(name=name, fingerprint=fp, serial=serial, enrolled_at=enrolled, revoked_at=rev)
    if rec != want:
        die(f"runner {name}: {rec} != {want}")
    n += 1
for (tid, h, runner, created, exp, used) in db.execute("select id, hash, runner_name, created_at,"
                                                       " expires_at, used_at from enroll_tokens"):
    rec = json.loads(r("hget", "ferry:{cat}:tokens", h.hex()))
    want = dict(id=tid, runner_name=runner, created_at=created, expires_at=exp, used_at=used)
    if rec != want:
        die(f"token {tid}: {rec} != {want}")
    n += 1
for row in db.execute("select id, name, runner, path, verify, header, encoding, ts_header,"
                      " tolerance, async, rpm, max_body, secret, prev_secret, prev_until,"
                      " created_at from hooks"):
    (hid, name, runner, path, verify, header, enc, ts, tol, asy, rpm, mb, sec, prev, pu, cr) = row
    rec = json.loads(r("hget", "ferry:{cat}:hooks", hid))
    want = dict(id=hid, name=name, runner=runner, path=path, verify=verify, header=header,
                encoding=enc, ts_header=ts, tolerance_s=tol, async_=bool(asy), rpm=rpm,
                max_body=mb, secret=b64(sec), prev_secret=b64(prev), prev_until=pu, created_at=cr)
    want["async"] = want.pop("async_")
    if rec != want:
        die(f"hook {hid}: {rec} != {want}")
    n += 1
counts = {k: int(r("hlen", k)) for k in ("ferry:{cat}:keys", "ferry:{cat}:runners",
                                         "ferry:{cat}:tokens", "ferry:{cat}:hooks")}
rows = sum(db.execute(f"select count(*) from {t}").fetchone()[0]
           for t in ("api_keys", "runners", "enroll_tokens", "hooks"))
if sum(counts.values()) != rows:
    die(f"redis holds {counts}, the store {rows} records")
print(n)
EOF
}
# dump: every ferry:* key of Redis with its type and contents, sorted.
dump() {
    redis_cli --scan --pattern 'ferry:*' | sort | while read -r k; do
        echo "== $k $(redis_cli type "$k")"
        case $(redis_cli type "$k") in
        hash) redis_cli --no-raw hgetall "$k" | sed "s/^ *[0-9]*) //" | paste - - | sort ;;
        *) redis_cli --raw dump "$k" | od -c ;;
        esac
    done
}

n=$(check_redis) || fail "redis contents"
((n >= 9)) || fail "checked only $n rows"
pass "every key, hash index, live hash, last use, usage cell, runner, token and hook matches the store ($n rows)"
used=$(redis_cli --raw hget 'ferry:{cat}:keys' "$LIM_ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rpm"])')
[[ $used == 600 ]] || fail "lim key rpm $used"
[[ $(redis_cli hget "ferry:{k:$LIM_ID}:live" ver) == 1 ]] || fail "a new key's ver is not 1"
reqs=$(redis_cli --raw hgetall "ferry:{k:$LIM_ID}:usage" | paste - - | awk '$1 ~ /:r$/ {s += $2} END {print s}')
[[ $reqs == 3 ]] || fail "lim key: $reqs requests, want 3: $(redis_cli hgetall "ferry:{k:$LIM_ID}:usage")"
pass "the limited key's record, ver and 3 requests are there"

# --- again: nothing changes ----------------------------------------------------------------
dump >"$TMP/dump1"
(($(grep -c "^== " "$TMP/dump1") >= 11)) || fail "the dump holds too little: $(cat "$TMP/dump1")"
"$G" migrate --data-dir "$GW" --to "$REDIS_URL" >"$TMP/m2.out" 2>&1 || fail "second migrate: $(cat "$TMP/m2.out")"
grep -q 'deployment seed already there' "$TMP/m2.out" || fail "second seed: $(cat "$TMP/m2.out")"
[[ $(grep -c ' 0 new, 0 updated, [0-9]* unchanged' "$TMP/m2.out") == 5 ]] ||
    fail "second migrate is not all unchanged: $(cat "$TMP/m2.out")"
[[ $(line keys m2.out) == "0 new, 0 updated, 3 unchanged" ]] || fail "keys: $(cat "$TMP/m2.out")"
dump >"$TMP/dump2"
cmp -s "$TMP/dump1" "$TMP/dump2" || fail "the second migrate changed redis: $(diff "$TMP/dump1" "$TMP/dump2" | head)"
pass "a second migrate reports everything unchanged and leaves redis identical"

# --- a changed key is updated --------------------------------------------------------------
gw_start
ferry keys update "$LIM_ID" --rpm 1200 >/dev/null || fail "keys update"
gw_stop
"$G" migrate --data-dir "$GW" --to "$REDIS_URL" >"$TMP/m3.out" 2>&1 || fail "third migrate: $(cat "$TMP/m3.out")"
[[ $(line keys m3.out) == "0 new, 1 updated, 2 unchanged" ]] || fail "keys after an update: $(cat "$TMP/m3.out")"
[[ $(redis_cli hget "ferry:{k:$LIM_ID}:live" rpm) == 1200 ]] || fail "live rpm after the update"
[[ $(redis_cli hget "ferry:{k:$LIM_ID}:live" ver) == 2 ]] || fail "ver not bumped by the update"
check_redis >/dev/null || fail "redis contents after the update"
pass "a key changed in the store is counted updated, rewritten, and its ver bumped"

c=0
"$G" migrate --data-dir "$TMP/nodir" --to "$REDIS_URL" >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 1 ]] || fail "migrate of a missing dir: exit $c"
c=0
"$G" migrate --data-dir "$GW" >/dev/null 2>&1 || c=$?
[[ $c == 2 ]] || fail "migrate without --to: exit $c"
pass "migrate refuses a missing data dir (1) and a missing --to (2)"
