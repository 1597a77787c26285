#!/usr/bin/env bash
# ferry's CPU forward pass against an independent PyTorch reference
# (torch_ref.py) on tiny random models of several shapes. Skips (exit 77)
# when torch cannot be imported by /usr/bin/python3 (Debian's python3-torch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
check=${1:?usage: test_engine_ref.sh REF_CHECK_BINARY}
if ! /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    echo "SKIP: /usr/bin/python3 cannot import torch (install the Debian package python3-torch)"
    exit 77
fi
tmp=$(mktemp -d /tmp/fy_engine_ref.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$here/torch_ref.py" "$tmp" >/dev/null
dirs=("$tmp"/*/)
[[ ${#dirs[@]} -ge 5 ]] || { echo "FAIL: torch_ref.py wrote ${#dirs[@]} models"; exit 1; }
"$check" "${dirs[@]}"
echo "PASS: ${#dirs[@]} models match the PyTorch reference"
