#!/usr/bin/env bash
# The official OpenAI Node SDK (npm 'openai', installed once into the build
# dir) against the runner's local listener serving the demo model: models,
# chat, streamed chat with usage, completions with n, a 400 with its param.
source "$(dirname "$0")/lib.sh"
NODE_DIR=$FERRY_BUILD/tests/api-node
npm_install_once "$SRC/tests/api/node/package.json" "$NODE_DIR" ||
    skip "npm install openai failed (offline, or no node/npm): $(tail -n 3 "$TMP/npm.log" 2>/dev/null)"
cp "$SRC/tests/api/node/sdk_test.mjs" "$NODE_DIR/"
demo_model
api_start "$TMP/demo"
FERRY_BASE_URL="http://$API/v1" FERRY_MODEL=demo node "$NODE_DIR/sdk_test.mjs" || fail "the SDK test failed"
api_stop
