#!/usr/bin/env bash
# TLS scenarios for common/tls, run against the openssl CLI on loopback.
#
#   tls_test.sh CASE TLS_TOOL
#
# Every case makes a fresh PKI with the openssl CLI in a temporary directory,
# starts what it needs on 127.0.0.1 with ports the OS picks, and stops every
# process it started on exit. Cases: mtls policy interop_s_client
# interop_s_server hostname handshake_timeout close_notify bulk backpressure.
set -euo pipefail

case_name=${1:?usage: tls_test.sh CASE TLS_TOOL}
TOOL=${2:?usage: tls_test.sh CASE TLS_TOOL}
command -v openssl >/dev/null || { echo "openssl CLI not found (Debian package 'openssl')"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/ferry-tls-XXXXXX")
PIDS=()      # every background process, stopped on exit
TOOL_PIDS=() # ferry servers: they must exit cleanly on SIGTERM (no leak, no crash)
cleanup() {
    local rc=$? p st
    for p in "${TOOL_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        st=0
        wait "$p" 2>/dev/null || st=$?
        if [ "$st" -ne 0 ]; then
            echo "FAIL: tls_tool server (pid $p) exited with status $st on SIGTERM"
            [ "$rc" -ne 0 ] || rc=1
        fi
    done
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        echo "--- $case_name failed; logs from $W:"
        for f in "$W"/*.out "$W"/*.err "$W"/*.log; do
            [ -s "$f" ] && { echo "== $f"; tail -n 40 "$f"; }
        done
    fi
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}
pass() { echo "ok: $*"; }

# --- PKI -------------------------------------------------------------------

cat >"$W/pki.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[srv]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[other]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
[cli]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
# `openssl ca` (used for the expired certificate: it takes explicit dates).
[ca]
default_ca = ca1
[ca1]
dir = CADIR
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
organizationName = optional
EOF
sed -i "s#CADIR#$W/cadb#" "$W/pki.cnf"
mkdir -p "$W/cadb"
: >"$W/cadb/index.txt"
echo 1000 >"$W/cadb/serial"

ossl() { openssl "$@" >>"$W/pki.log" 2>&1 || fail "openssl $*"; }

mkca() { # name cn
    ossl req -x509 -config "$W/pki.cnf" -extensions v3_ca -newkey ec \
        -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/$1.key" -out "$W/$1.crt" \
        -subj "/CN=$2" -days 3
}
mkleaf() { # name ca subject extensions [rsa]
    local alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [ "${5:-}" = rsa ] && alg=(-newkey rsa:2048)
    ossl req -new -config "$W/pki.cnf" "${alg[@]}" -nodes -keyout "$W/$1.key" \
        -out "$W/$1.csr" -subj "$3"
    ossl x509 -req -in "$W/$1.csr" -CA "$W/$2.crt" -CAkey "$W/$2.key" -CAcreateserial \
        -out "$W/$1.crt" -days 2 -extfile "$W/pki.cnf" -extensions "$4"
}
mkca ca1 "ferry test CA1"
mkca ca2 "ferry test CA2"
mkleaf srv ca1 "/CN=localhost" srv
mkleaf srv_rsa ca1 "/CN=localhost" srv rsa
mkleaf srv_ca2 ca2 "/CN=localhost" srv
mkleaf other ca1 "/CN=other.example" other
mkleaf cli1 ca1 "/CN=runner-1/O=ferry" cli
mkleaf cli2 ca2 "/CN=runner-2/O=ferry" cli
# Expired: valid for January 2020 only.
ossl req -new -config "$W/pki.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$W/cli_exp.key" -out "$W/cli_exp.csr" -subj "/CN=runner-old/O=ferry"
ossl ca -batch -config "$W/pki.cnf" -cert "$W/ca1.crt" -keyfile "$W/ca1.key" \
    -in "$W/cli_exp.csr" -out "$W/cli_exp.crt" -startdate 20200101000000Z \
    -enddate 20200201000000Z -extensions cli -extfile "$W/pki.cnf" -notext

# As the tool prints them: fingerprint "ABCD..." (openssl: "AB:CD:..."),
# serial in lower case (fy_tls_peer's format).
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g'; }
serial() { openssl x509 -in "$1" -noout -serial | sed 's/.*=//' | tr 'A-F' 'a-f'; }

# --- processes ---------------------------------------------------------------

# wait_for FILE REGEX [SECONDS]: waits until a line of FILE matches.
wait_for() {
    local i
    for ((i = 0; i < ${3:-10} * 20; i++)); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "timed out waiting for '$2' in $(basename "$1")"
}

# start_server NAME ARGS...: runs `tls_tool server` in the background and
# sets PORT.
start_server() {
    local name=$1
    shift
    "$TOOL" server --debug "$@" >"$W/$name.out" 2>"$W/$name.err" &
    TOOL_PIDS+=($!)
    wait_for "$W/$name.out" '^LISTEN [0-9]+$'
    PORT=$(awk '/^LISTEN/ {print $2; exit}' "$W/$name.out")
}

# start_s_server NAME ARGS...: runs `openssl s_server` (output in
# $W/ss_NAME.out) and sets PORT.
start_s_server() {
    local name=$1
    shift
    openssl s_server -accept 127.0.0.1:0 "$@" <&- >"$W/ss_$name.out" 2>&1 &
    PIDS+=($!)
    wait_for "$W/ss_$name.out" '^ACCEPT 127\.0\.0\.1:[0-9]+'
    PORT=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$W/ss_$name.out" | head -n 1)
}

# client NAME ARGS...: runs `tls_tool client` to completion (with a time
# limit); its output is in $W/NAME.out and its status in RC.
client() {
    local name=$1
    shift
    RC=0
    timeout 20 "$TOOL" client --debug --port "$PORT" "$@" >"$W/$name.out" 2>"$W/$name.err" || RC=$?
}

# s_client NAME INPUT ARGS...: sends INPUT, keeps stdin open a moment for
# the answer, then ends; output in $W/NAME.out, status in RC.
s_client() {
    local name=$1 input=$2
    shift 2
    RC=0
    { printf '%s' "$input"; sleep 1; } |
        timeout 20 openssl s_client -connect "127.0.0.1:$PORT" "$@" >"$W/$name.out" 2>&1 || RC=$?
}

expect_line() { # NAME REGEX WHAT
    grep -Eq -- "$2" "$W/$1.out" || fail "$3: no line matching '$2' in $1 output"
}

count() { grep -Ec -- "$2" "$W/$1.out" || true; }

# --- cases -------------------------------------------------------------------

case_mtls() {
    start_server srv --cert "$W/srv.crt" --key "$W/srv.key" --ca "$W/ca1.crt" \
        --require-client-cert
    local fp ser
    fp=$(fingerprint "$W/cli1.crt")
    ser=$(serial "$W/cli1.crt")

    client good --ca "$W/ca1.crt" --server-name localhost --cert "$W/cli1.crt" \
        --key "$W/cli1.key" --message "mtls works"
    [ "$RC" -eq 0 ] || fail "client with a CA1 certificate: exit $RC"
    expect_line good '^REPLY mtls works$' "echo over mTLS"
    wait_for "$W/srv.out" "^ACCEPT ok cn=runner-1 fp=$fp serial=$ser "
    expect_line srv "subject=CN=runner-1, O=ferry$" "peer subject"
    pass "CA1 client certificate accepted; server reports CN, serial and SHA-256 $fp"

    client nocert --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "client without a certificate: exit $RC (want 2)"
    expect_line nocert '^HANDSHAKE_FAIL ' "no certificate"
    wait_for "$W/srv.out" '^ACCEPT fail CERT$'
    pass "no client certificate: rejected ($(head -n 1 "$W/nocert.out"))"

    local before
    before=$(count srv '^ACCEPT fail CERT$')
    client ca2 --ca "$W/ca1.crt" --server-name localhost --cert "$W/cli2.crt" --key "$W/cli2.key"
    [ "$RC" -eq 2 ] || fail "client with a CA2 certificate: exit $RC (want 2)"
    expect_line ca2 '^HANDSHAKE_FAIL CERT$' "other CA"
    wait_for "$W/srv.out" '^ACCEPT fail CERT$'
    [ "$(count srv '^ACCEPT fail CERT$')" -gt "$before" ] || fail "server did not reject CA2"
    grep -q 'not correctly signed by the trusted CA' "$W/srv.err" ||
        fail "server log lacks the verification reason for CA2"
    pass "certificate from another CA: rejected"

    before=$(count srv '^ACCEPT fail CERT$')
    client expired --ca "$W/ca1.crt" --server-name localhost --cert "$W/cli_exp.crt" \
        --key "$W/cli_exp.key"
    [ "$RC" -eq 2 ] || fail "client with an expired certificate: exit $RC (want 2)"
    expect_line expired '^HANDSHAKE_FAIL CERT$' "expired"
    for _ in $(seq 100); do
        [ "$(count srv '^ACCEPT fail CERT$')" -gt "$before" ] && break
        sleep 0.05
    done
    [ "$(count srv '^ACCEPT fail CERT$')" -gt "$before" ] || fail "server did not reject expired"
    grep -q 'validity has expired' "$W/srv.err" || fail "server log lacks 'expired'"
    pass "expired client certificate: rejected"

    # The same through openssl s_client with a client certificate.
    s_client sc "via-openssl
" -CAfile "$W/ca1.crt" -servername localhost -cert "$W/cli1.crt" -key "$W/cli1.key"
    grep -q '^via-openssl$' "$W/sc.out" || fail "s_client with a client certificate: no echo"
    pass "openssl s_client with a CA1 certificate accepted"
}

case_policy() {
    start_server fs_ec --cert "$W/srv.crt" --key "$W/srv.key"
    local ec_port=$PORT
    start_server fs_rsa --cert "$W/srv_rsa.crt" --key "$W/srv_rsa.key"
    local rsa_port=$PORT
    # Positive controls: what the policy allows must work, or the refusals
    # below would prove nothing.
    local c
    PORT=$ec_port
    for c in ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-ECDSA-AES256-GCM-SHA384 \
        ECDHE-ECDSA-CHACHA20-POLY1305; do
        s_client "ok_$c" "x" -tls1_2 -cipher "$c" -CAfile "$W/ca1.crt"
        grep -Eq "Cipher is $c" "$W/ok_$c.out" || fail "allowed suite $c was not negotiated"
    done
    PORT=$rsa_port
    for c in ECDHE-RSA-AES128-GCM-SHA256 ECDHE-RSA-AES256-GCM-SHA384 ECDHE-RSA-CHACHA20-POLY1305; do
        s_client "ok_$c" "x" -tls1_2 -cipher "$c" -CAfile "$W/ca1.crt"
        grep -Eq "Cipher is $c" "$W/ok_$c.out" || fail "allowed suite $c was not negotiated"
    done
    # Key exchange curves (with the RSA certificate, so the certificate's own
    # curve does not restrict the client's list).
    local -A curve_name=([X25519]=X25519 [P-256]=prime256v1 [P-384]=secp384r1)
    for c in X25519 P-256 P-384; do
        s_client "curve_$c" "x" -tls1_2 -curves "$c" -CAfile "$W/ca1.crt"
        grep -Eq "Server Temp Key: .*${curve_name[$c]}" "$W/curve_$c.out" ||
            fail "curve $c was not used"
    done
    pass "ECDHE-ECDSA/RSA with AES-128/256-GCM and ChaCha20-Poly1305; X25519, P-256, P-384 work"

    # refuse SERVER PORT NAME REASON WHAT S_CLIENT-ARGS...: the handshake
    # fails, ferry's server reports it, and its log names REASON (an mbedTLS
    # error code), so the refusal is ferry's policy and not openssl's.
    refuse() {
        local server=$1 name=$3 reason=$4 what=$5 before
        PORT=$2
        shift 5
        before=$(count "$server" '^ACCEPT fail ')
        s_client "$name" "x" -CAfile "$W/ca1.crt" "$@"
        if grep -Eq 'New, TLSv1\.[0-3], Cipher is [A-Z]' "$W/$name.out"; then
            fail "$what: handshake succeeded"
        fi
        for _ in $(seq 100); do
            [ "$(count "$server" '^ACCEPT fail ')" -gt "$before" ] && break
            sleep 0.05
        done
        [ "$(count "$server" '^ACCEPT fail ')" -gt "$before" ] ||
            fail "$what: ferry's server did not reject it (the refusal was openssl's)"
        grep ' failed: ' "$W/$server.err" | tail -n 1 | grep -q -- "$reason" ||
            fail "$what: ferry's log does not give the reason $reason"
        pass "$what: rejected by ferry: $(grep ' failed: ' "$W/$server.err" | tail -n 1 | sed 's/.*failed: //')"
    }
    local version=-0x6e80 nocipher=-0x7380
    refuse fs_ec "$ec_port" tls11 $version "TLS 1.1 client" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
    refuse fs_ec "$ec_port" tls10 $version "TLS 1.0 client" -tls1 -cipher 'DEFAULT:@SECLEVEL=0'
    refuse fs_ec "$ec_port" tls13 $nocipher "TLS 1.3-only client" -tls1_3
    refuse fs_ec "$ec_port" cbc $nocipher "CBC-only client" -tls1_2 \
        -cipher 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384'
    refuse fs_rsa "$rsa_port" rsakx $nocipher "non-ECDHE (RSA key exchange) client" -tls1_2 \
        -cipher 'AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256'
    refuse fs_rsa "$rsa_port" dhe $nocipher "non-ECDHE (DHE) client" -tls1_2 \
        -cipher 'DHE-RSA-AES128-GCM-SHA256:DHE-RSA-CHACHA20-POLY1305'
    refuse fs_rsa "$rsa_port" p521 $nocipher "P-521-only client" -tls1_2 -curves P-521
}

case_interop_s_client() {
    start_server srv --cert "$W/srv.crt" --key "$W/srv.key" --alpn h2 --alpn http/1.1
    s_client sc "hello interop
" -CAfile "$W/ca1.crt" -servername localhost -verify_hostname localhost \
        -verify_return_error -alpn http/1.1
    grep -q '^hello interop$' "$W/sc.out" || fail "no echo through s_client"
    grep -Eq '^ +Protocol +: TLSv1\.2$' "$W/sc.out" || fail "protocol is not TLSv1.2"
    grep -Eq '^ +Cipher +: ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$' \
        "$W/sc.out" || fail "cipher is not ECDHE with AES-GCM or ChaCha20"
    grep -q 'Verify return code: 0 (ok)' "$W/sc.out" || fail "s_client did not verify ferry"
    grep -q 'ALPN protocol: http/1.1' "$W/sc.out" || fail "ALPN not negotiated"
    wait_for "$W/srv.out" '^ACCEPT ok cn=- .* sni=localhost alpn=http/1.1 '
    # s_client ends with close_notify when its input ends: ferry reports EOF.
    wait_for "$W/srv.out" '^EOF EOF$'
    pass "s_client: echo, $(grep -E '^ +Cipher +:' "$W/sc.out" | tr -s ' '), SNI and ALPN seen by ferry"

    # RSA server certificate: ECDHE-RSA.
    start_server rsa --cert "$W/srv_rsa.crt" --key "$W/srv_rsa.key"
    s_client rsa "rsa
" -CAfile "$W/ca1.crt" -servername localhost -verify_return_error
    grep -q '^rsa$' "$W/rsa.out" || fail "no echo with an RSA certificate"
    grep -Eq '^ +Cipher +: ECDHE-RSA-' "$W/rsa.out" || fail "RSA certificate: not ECDHE-RSA"
    pass "s_client with an RSA server certificate: $(grep -E '^ +Cipher +:' "$W/rsa.out" | tr -s ' ')"

    # Renegotiation is refused: s_client's "R" asks for one.
    start_server reneg --cert "$W/srv.crt" --key "$W/srv.key"
    { printf 'before\n'; sleep 0.5; printf 'R\n'; sleep 0.5; printf 'after\n'; sleep 0.5; } |
        timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$W/ca1.crt" \
            -tls1_2 -msg >"$W/reneg_c.out" 2>&1 || true
    grep -q '^before$' "$W/reneg_c.out" || fail "no echo before renegotiation"
    grep -q 'RENEGOTIATING' "$W/reneg_c.out" || fail "s_client did not try to renegotiate"
    grep -q 'no_renegotiation' "$W/reneg_c.out" || fail "ferry did not refuse renegotiation"
    pass "renegotiation refused with no_renegotiation"
}

case_interop_s_server() {
    start_s_server ss -cert "$W/srv.crt" -key "$W/srv.key" -rev
    client rev --ca "$W/ca1.crt" --server-name localhost --message "hello"
    [ "$RC" -eq 0 ] || fail "ferry client against s_server: exit $RC"
    expect_line rev '^REPLY olleh$' "s_server -rev reply"
    expect_line rev '^PEER cn=localhost .*cipher=TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256 ' \
        "server identity and suite"
    pass "ferry client against s_server -rev"

    start_s_server ssv -cert "$W/srv.crt" -key "$W/srv.key" -rev -Verify 2 \
        -CAfile "$W/ca1.crt" -verify_return_error
    client mt --ca "$W/ca1.crt" --server-name localhost --cert "$W/cli1.crt" --key "$W/cli1.key" \
        --message "mtls"
    [ "$RC" -eq 0 ] || fail "ferry client with a certificate against s_server -Verify: exit $RC"
    expect_line mt '^REPLY sltm$' "mTLS reply"
    grep -q 'CN = runner-1' "$W/ss_ssv.out" || fail "s_server did not see the client certificate"
    pass "ferry client certificate verified by s_server -Verify"
    client mtno --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "ferry client without a certificate against s_server -Verify: exit $RC"
    pass "s_server -Verify rejects a ferry client without certificate: $(head -n 1 "$W/mtno.out")"

    start_s_server rsa -cert "$W/srv_rsa.crt" -key "$W/srv_rsa.key" -rev
    client rsa --ca "$W/ca1.crt" --server-name localhost --message "rsa"
    [ "$RC" -eq 0 ] || fail "ferry client against an RSA s_server: exit $RC"
    expect_line rsa '^PEER .*cipher=TLS-ECDHE-RSA-WITH-' "ECDHE-RSA"
    pass "ferry client against an RSA s_server: ECDHE-RSA"

    start_s_server ca2 -cert "$W/srv_ca2.crt" -key "$W/srv_ca2.key" -rev
    client ca2 --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "server certificate from another CA accepted (exit $RC)"
    expect_line ca2 '^HANDSHAKE_FAIL CERT$' "server from another CA"
    pass "server certificate from another CA: rejected"

    start_s_server cbc -cert "$W/srv.crt" -key "$W/srv.key" -rev -cipher ECDHE-ECDSA-AES128-SHA256
    client cbc --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "ferry client accepted a CBC-only server"
    pass "CBC-only server: no handshake ($(head -n 1 "$W/cbc.out"))"

    start_s_server t11 -cert "$W/srv.crt" -key "$W/srv.key" -rev -tls1_1 \
        -cipher 'DEFAULT:@SECLEVEL=0'
    client t11 --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "ferry client accepted a TLS 1.1 server"
    pass "TLS 1.1-only server: no handshake ($(head -n 1 "$W/t11.out"))"
}

case_hostname() {
    start_s_server other -cert "$W/other.crt" -key "$W/other.key" -rev
    client mismatch --ca "$W/ca1.crt" --server-name localhost
    [ "$RC" -eq 2 ] || fail "hostname mismatch accepted (exit $RC)"
    expect_line mismatch '^HANDSHAKE_FAIL CERT$' "hostname mismatch"
    grep -q 'does not match with the expected CN' "$W/mismatch.err" ||
        fail "client log lacks the name mismatch"
    client match --ca "$W/ca1.crt" --server-name other.example --message ok
    [ "$RC" -eq 0 ] || fail "matching name rejected (exit $RC)"
    expect_line match '^REPLY ko$' "matching name"
    client ipmiss --ca "$W/ca1.crt" --server-name 127.0.0.1
    [ "$RC" -eq 2 ] || fail "IP 127.0.0.1 accepted for a certificate without it"
    pass "server certificate without the requested name (DNS or IP): rejected"

    start_server srv --cert "$W/srv.crt" --key "$W/srv.key"
    client ip --ca "$W/ca1.crt" --server-name 127.0.0.1 --message ip
    [ "$RC" -eq 0 ] || fail "IP SAN 127.0.0.1 rejected (exit $RC)"
    client wrong --ca "$W/ca1.crt" --server-name wrong.example
    [ "$RC" -eq 2 ] || fail "wrong.example accepted"
    client noname --ca "$W/ca1.crt"
    [ "$RC" -eq 2 ] || fail "client without a server name connected (exit $RC)"
    expect_line noname '^HANDSHAKE_FAIL INVAL$' "client without a name"
    pass "IP SAN matched; wrong DNS name and missing name rejected"
}

case_handshake_timeout() {
    "$TOOL" silent >"$W/silent.out" 2>"$W/silent.err" &
    PIDS+=($!)
    wait_for "$W/silent.out" '^LISTEN [0-9]+$'
    PORT=$(awk '/^LISTEN/ {print $2; exit}' "$W/silent.out")
    local t0 t1 ms
    t0=$(date +%s%N)
    client to --ca "$W/ca1.crt" --server-name localhost --handshake-timeout-ms 700
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    [ "$RC" -eq 2 ] || fail "client against a silent server: exit $RC"
    expect_line to '^HANDSHAKE_FAIL TIMEDOUT$' "client timeout"
    [ "$ms" -ge 650 ] && [ "$ms" -lt 5000 ] || fail "timed out after ${ms} ms, configured 700"
    pass "client handshake timed out after ${ms} ms (limit 700)"

    # Server side: a TCP client that connects and says nothing.
    start_server srv --cert "$W/srv.crt" --key "$W/srv.key" --handshake-timeout-ms 500
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    wait_for "$W/srv.out" '^ACCEPT fail TIMEDOUT$' 5
    exec 3>&-
    pass "server handshake timed out for a silent client"
}

case_close_notify() {
    start_server srv --cert "$W/srv.crt" --key "$W/srv.key"
    client cn --ca "$W/ca1.crt" --server-name localhost --message bye --wait-eof
    [ "$RC" -eq 0 ] || fail "client exit $RC"
    expect_line cn '^REPLY bye$' "echo"
    # The server saw our close_notify as EOF, and we saw its reply the same way.
    wait_for "$W/srv.out" '^EOF EOF$'
    expect_line cn '^EOF EOF$' "client sees the server's close_notify as EOF, not a reset"
    pass "ferry <-> ferry: both sides see close_notify as FY_EEOF"

    # A peer that closes TCP without close_notify is a truncation.
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    exec 3>&-
    wait_for "$W/srv.out" '^ACCEPT fail CONNRESET$'
    pass "bare TCP close mid-handshake: CONNRESET"

    start_s_server ss -cert "$W/srv.crt" -key "$W/srv.key" -rev -msg
    client ss --ca "$W/ca1.crt" --server-name localhost --message abc
    [ "$RC" -eq 0 ] || fail "client against s_server: exit $RC"
    wait_for "$W/ss_ss.out" '<<< TLS 1\.2, Alert \[length 0002\], warning close_notify'
    pass "s_server received ferry's close_notify"
}

case_bulk() {
    "$TOOL" bulk --cert "$W/srv.crt" --key "$W/srv.key" --client-cert "$W/cli1.crt" \
        --client-key "$W/cli1.key" --ca "$W/ca1.crt" --bytes $((8 << 20)) >"$W/bulk.out" 2>&1 ||
        fail "bulk transfer failed"
    expect_line bulk "^BULK ok bytes=$((8 << 20)) echoed=$((8 << 20)) " "8 MiB echoed"
    pass "$(cat "$W/bulk.out")"
}

case_backpressure() {
    "$TOOL" backpressure --cert "$W/srv.crt" --key "$W/srv.key" --client-cert "$W/cli1.crt" \
        --client-key "$W/cli1.key" --ca "$W/ca1.crt" >"$W/bp.out" 2>&1 ||
        fail "backpressure test failed"
    expect_line bp '^STALLED ' "sender stalled"
    expect_line bp '^BACKPRESSURE ok ' "transfer completed after resume"
    pass "$(tr '\n' ' ' <"$W/bp.out")"
}

"case_$case_name"
