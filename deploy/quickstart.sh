#!/usr/bin/env bash
# ferry's main job on one machine: installs the Debian packages, builds, then
# runs deploy/demo.sh: a gateway on loopback ports, a runner enrolled with a
# one-time token, a small local HTTP server published through the tunnel, and
# a real request answered through it (with the URL and curl command to try).
#
#   deploy/quickstart.sh [--keep]    (--keep leaves the demo running)
#
# Idempotent: packages and the build are reused, the demo's directory
# (./.quickstart) is reused, and nothing is left running without --keep.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
exec ./deploy/demo.sh --build build --dir .quickstart "$@"
