#!/usr/bin/env bash
# The official OpenAI Node SDK (npm 'openai', installed once into the build
# dir) against the runner's local listener serving the demo model: models,
# chat, streamed chat with usage, completions with n, a 400 with its param.
source "$(dirname "$0")/lib.sh"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm not installed"
NODE_DIR=$FERRY_BUILD/tests/api-node
mkdir -p "$NODE_DIR"
if ! cmp -s "$SRC/tests/api/node/package.json" "$NODE_DIR/package.json" ||
    [[ ! -f $NODE_DIR/node_modules/openai/package.json ]]; then
    cp "$SRC/tests/api/node/package.json" "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && timeout 180 npm install --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1 ||
        skip "npm install openai failed (offline?): $(tail -n 3 "$TMP/npm.log")"
fi
cp "$SRC/tests/api/node/sdk_test.mjs" "$NODE_DIR/"
demo_model
api_start "$TMP/demo"
FERRY_BASE_URL="http://$API/v1" FERRY_MODEL=demo node "$NODE_DIR/sdk_test.mjs" || fail "the SDK test failed"
api_stop
