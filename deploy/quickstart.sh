#!/usr/bin/env bash
# ferry's main job on one machine: installs the Debian packages, builds, then
# runs deploy/demo.sh: a gateway on loopback ports, a runner enrolled with a
# one-time token serving a model with ferry's engine (stories260K, a real
# 260K-parameter story model shipped in deploy/models/, unless --model DIR),
# an API key, a completion and a streamed chat completion answered through
# the gateway and the tunnel (with the URL, the key and the commands to try).
#
#   deploy/quickstart.sh [--model DIR] [--keep]    (--keep leaves the demo running)
#
# Idempotent: packages and the build are reused, the demo's directory
# (./.quickstart) is reused, and nothing is left running without --keep.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
exec ./deploy/demo.sh --build build --dir .quickstart "$@"
