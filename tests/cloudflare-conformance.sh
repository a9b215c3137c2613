#!/usr/bin/env bash
# Cloudflare KV conformance: tasks-cf-kv's unit tests, then its integration
# tests against Cloudflare's emulator (miniflare, tests/miniflare) directly and
# behind cf-fault-proxy. Installs the emulator from the npm lockfile when it is
# missing or older than the lockfile; without Node.js and npm it cannot run
# (cannot_run in lib.sh). Extra arguments go to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

mf=tests/miniflare
if [[ ! -f $mf/node_modules/miniflare/package.json || $mf/package-lock.json -nt $mf/node_modules/.package-lock.json ]]; then
  require_tools node npm
  echo "==> npm ci in $mf (miniflare, pinned by package-lock.json)"
  # A registry without workerd's macOS/Windows builds leaves them out of the
  # lockfile, and `npm ci` then refuses it; `npm install` installs the same
  # locked versions and leaves the lockfile as it is.
  (cd "$mf" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
fi
require_tools node

echo "==> cargo test -p tasks-cf-kv --features native"
exec cargo test --no-fail-fast -p tasks-cf-kv --features native "$@"
