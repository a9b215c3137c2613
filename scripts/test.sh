#!/usr/bin/env bash
# `make test`: every stage in order (lint, native tests, the Cloudflare client
# against its emulator, the wasm build, this tree's trigger-nats plugin, the
# e2e suites on `spin up`), then one line per stage with its counts and a
# closing `total: N passed, M failed`. A failing stage does not stop the ones
# after it, so one run shows everything; the exit code is 1 when any failed.
# Under CI=true a stage that cannot run fails; otherwise it counts as skipped
# and its SKIPPED line says how to fix it.
set -uo pipefail
cd "$(dirname "$0")/.."
# The suites' Python packages live in a virtual environment (scripts/python-env.sh).
venv=${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/venv
[[ -x $venv/bin/python3 ]] && export PATH="$venv/bin:$PATH"
# Plugins go into a Spin data directory of the suites' own (the Makefile's rule), so the
# user's own Spin keeps its plugins untouched.
SPIN_DATA_DIR=$(make -s --no-print-directory print-test-spin-data-dir)
export SPIN_DATA_DIR
# The user's own plugins (Spin's default data directory), to show them unchanged at the end.
user_plugins=${XDG_DATA_HOME:-$HOME/.local/share}/spin/plugins
fingerprint() {
  [[ -d $user_plugins ]] || { echo "no $user_plugins"; return; }
  (cd "$user_plugins" && find . -printf '%y %m %p\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}
user_plugins_before=$(fingerprint)
started=${RUN_STARTED:-$(date +%s)}
logs=tests/out/make-test
rm -rf "$logs"; mkdir -p "$logs"
summary=()
total_passed=0 total_failed=0 total_skipped=0

# stage NAME KIND COMMAND...: runs COMMAND, its output shown and kept in
# $logs/NAME.txt, and counts it by KIND:
#   cargo  the sum of cargo test's `test result:` lines (ignored tests count as skipped)
#   suite  the suite's own closing line `<suite>: N passed, M failed`
#   step   one check: passed when COMMAND exits 0
# A `SKIPPED:` line from a stage that exits 0 makes it skipped; a stage that
# exits non-zero without counting a failure, or counts no test at all, fails.
stage() {
  local name=$1 kind=$2 log=$logs/$1.txt rc passed=0 failed=0 skipped=0 note=""
  shift 2
  echo "==> [$name] $*"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  case $kind in
    cargo)
      read -r passed failed skipped < <(awk '/^test result:/ {p += $4; f += $6; s += $8}
        END {print p + 0, f + 0, s + 0}' "$log") ;;
    suite)
      read -r passed failed < <(sed -nE 's/^[a-z0-9-]+: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$log" |
        tail -1 | grep . || echo "0 0") ;;
    step)
      if [[ $rc -eq 0 ]]; then passed=1; else failed=1; fi ;;
  esac
  if [[ $rc -eq 0 ]] && grep -q '^SKIPPED: ' "$log"; then
    if [[ $kind == step || $passed -eq 0 ]]; then passed=0; skipped=$((skipped + 1)); fi
    note=" ($(grep -m1 '^SKIPPED: ' "$log"))"
  elif [[ $rc -ne 0 && $failed -eq 0 ]]; then
    failed=1; note=" (exit code $rc before counting a failure; see $log)"
  elif [[ $rc -eq 0 && $kind != step && $passed -eq 0 ]]; then
    failed=1; note=" (no test ran)"
  fi
  summary+=("$name: $passed passed, $failed failed, $skipped skipped$note")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
}

# Everything the stages need, named with how to install it (docs/testing.md). Under CI=true a
# missing piece fails this stage; otherwise the stages that need it skip or fail on their own.
if [[ ${CI:-} == true ]]; then
  stage prereqs step scripts/prereqs.sh --for test
else
  stage prereqs step bash -c 'scripts/prereqs.sh --for test ||
    echo "SKIPPED: make test lacks the pieces above; the stages that need them skip (fix: install them)"'
fi
stage fmt step make -s lint-fmt
stage clippy step make -s lint-clippy
stage imports step make -s lint-imports
stage first-run suite tests/first-run.sh
stage native cargo make -s test-native
stage fuzz suite tests/fuzz.sh
stage cloudflare-client cargo tests/cloudflare-conformance.sh
stage wasm-build step make -s build
if command -v spin >/dev/null || [[ ${CI:-} == true ]]; then
  stage plugin step make -s plugin
else
  stage plugin step echo "SKIPPED: spin not installed (fix: install the Spin CLI >= 4.0 from https://spinframework.dev/install)"
fi
for suite in e2e e2e-nats e2e-jetstream e2e-retry e2e-cloudflare e2e-live e2e-template e2e-cluster e2e-chaos; do
  stage "$suite" suite "tests/$suite.sh"
done

unchanged() {
  if [[ $(fingerprint) == "$user_plugins_before" ]]; then
    echo "$user_plugins: every file byte-for-byte as before make test"
  else
    echo "$user_plugins changed during make test:"
    diff <(echo "$user_plugins_before") <(fingerprint)
    return 1
  fi
}
stage user-plugins-untouched step unchanged

echo
echo "==> make test: one line per stage (logs in $logs/)"
printf '%s\n' "${summary[@]}"
echo "==> finished in $(( $(date +%s) - started )) s"
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
[[ $total_failed -eq 0 ]]
