#!/usr/bin/env bash
# Quick start: installs what Strata needs, builds examples/hello.ts and runs it.
# Only Debian's archive and npm need to be reachable: the Python wheel comes from fixtures/ on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
[ -d node_modules ] || npm install --no-fund --no-audit
npm run --silent build
PORT="${STRATA_DEMO_WHEELS_PORT:-38765}"
node scripts/serve-wheels.mjs --port "$PORT" > /tmp/strata-demo-wheels.$$ &
WHEELS_PID=$!
trap 'kill $WHEELS_PID 2>/dev/null || true; rm -f /tmp/strata-demo-wheels.$$' EXIT
for _ in $(seq 50); do grep -q WHEELS_URL /tmp/strata-demo-wheels.$$ && break; sleep 0.1; done
export WHEELS_URL="http://127.0.0.1:$PORT/simple"
IMAGE=$(node bin/strata.js build examples/hello.ts)
echo "built $IMAGE"
node bin/strata.js run "$IMAGE"
