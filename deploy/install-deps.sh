#!/usr/bin/env bash
# Installs every Debian 12 package that ferry's build, tests and benchmarks need.
# Idempotent: packages already present are reported and skipped; apt runs only
# when something is missing. Works as root or through sudo.
set -euo pipefail

build_pkgs=(
  build-essential cmake pkg-config git
  libuv1-dev libmbedtls-dev node-llhttp libjansson-dev libsqlite3-dev
  libpcre2-dev libutf8proc-dev libhiredis-dev
  libjs-chart.js
)
test_pkgs=(
  libcmocka-dev curl openssl ca-certificates clang libclang-rt-14-dev clang-format
  wrk nginx-light python3 procps stress-ng redis-server
  python3-torch python3-numpy python3-jinja2
)

# libjs-chart.js: Chart.js, compiled into ferry-gateway for the dashboard;
# stress-ng: tests/run.sh --stress keeps every core busy while the suite runs;
# python3-torch: tests/engine_ref checks the forward pass against PyTorch;
# redis-server: test_gateway_redis starts its own server on a unix socket in a
# temporary directory (the system service Debian enables is not used);
# python3-jinja2: test_chat_template cross-checks the chat templates with jinja2.
want=("${build_pkgs[@]}" "${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    continue
  fi
  missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#want[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package index once per day at most, so repeated runs stay fast.
stamp=/var/lib/apt/periodic/ferry-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
  $SUDO apt-get update -q
  $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
