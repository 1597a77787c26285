#!/usr/bin/env bash
# ferry's main job on one machine. Today (foundation milestone): installs the
# Debian packages, builds, and shows the binaries and compute backends. The
# tunnel milestone extends this script to start a gateway and a runner, issue a
# key and answer a real request through the tunnel.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
for b in ferry-gateway ferry-runner ferry; do
    build/bin/$b --version
done
echo "Built into build/bin/. The gateway/runner commands arrive with the tunnel milestone (issue 3)."
