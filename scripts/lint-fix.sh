#!/usr/bin/env bash
# Applies the formatter and Biome's safe lint fixes (biome.jsonc) to the whole tree, or to the paths given:
#   bash scripts/lint-fix.sh [path…]        (npm run lint:fix)
# Safe fixes only: what is left is printed and needs a hand fix (or a `// biome-ignore <rule>: <reason>` comment);
# the exit code is non-zero while anything is left. The layer check is not a formatter matter: see `npm run lint`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Two passes: Biome 2.6's formatter is not idempotent on every file (a long member chain in
# test/dockerfile/parse.test.ts is laid out differently on the second pass), and `npm run lint` checks the fixed point.
node_modules/.bin/biome check --write "$@" >/dev/null 2>&1 || true
exec node_modules/.bin/biome check --write --error-on-warnings "$@"
