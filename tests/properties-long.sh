#!/usr/bin/env bash
# The long run of the property tests of everything read from outside: event
# parsing and validation and cursors (crates/domain), the list query
# (crates/site), signature verification (crates/signing) and the Cloudflare
# response envelope (crates/cf-kv). Each crate's tests/properties.rs runs in
# release mode with PROPTEST_CASES cases per property (default 1,000,000).
#
# The counts printed are what the properties counted themselves: one per call
# of the code under test (a case may make several, e.g. both payload shapes),
# so they are at least cases x properties. proptest turns a panic into a
# failed property, so a run that ends in "0 panics" saw none; a failure stops
# the run and prints proptest's shrunk input (full output in the log).
#
#   tests/properties-long.sh                        # 1,000,000 cases per property
#   PROPTEST_CASES=10000 tests/properties-long.sh   # a quick look
#   PROPERTIES_TIMEOUT_SECS=1800 tests/properties-long.sh   # bound per crate (default 3600)
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES=${PROPTEST_CASES:-1000000}
limit=${PROPERTIES_TIMEOUT_SECS:-3600}
# Release optimisation (opt-level 3, no debug assertions) without the
# workspace's fat LTO and single codegen unit, which are for the shipped
# components and would make building these test binaries several times slower.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
logs=target/properties-long
mkdir -p "$logs"

crates=(tasks-domain tasks-site tasks-signing tasks-cf-kv)
# One crate at a time, as they run: features unify per selection, so a joint
# build would not be the binaries run below.
for c in "${crates[@]}"; do
  echo "==> building $c's property tests in release mode"
  nice -n 10 cargo test --release -q -p "$c" --test properties --no-run
done

started=$SECONDS
summary=()
for c in "${crates[@]}"; do
  log="$logs/$c.log"
  echo "==> $c: $PROPTEST_CASES cases per property (log: $log)"
  t0=$SECONDS
  # One line per property as it finishes; libtest may print its own
  # "test … ok" on the same line, so match the property's text anywhere.
  if ! timeout "$limit" nice -n 10 cargo test --release -q -p "$c" --test properties \
    -- --nocapture 2>&1 | tee "$log" | grep --line-buffered -o 'property .*'; then
    echo "FAILED: $c after $((SECONDS - t0))s (a failed property, a panic, or the ${limit}s bound); see $log" >&2
    grep -E 'panicked|minimal failing input|Test failed' "$log" | head -20 >&2 || true
    exit 1
  fi
  props=$(grep -o 'property .*inputs fed, 0 panics' "$log" | wc -l)
  tests=$(grep -oE 'test result: ok\. [0-9]+ passed' "$log" | grep -oE '[0-9]+' | head -1)
  if [[ "$props" != "$tests" ]]; then
    echo "FAILED: $c: $tests tests passed but $props properties reported counts; see $log" >&2
    exit 1
  fi
  fed=$(grep -oE '[0-9]+ inputs fed' "$log" | awk '{s += $1} END {print s}')
  summary+=("$(printf '%-13s %2d properties %12d inputs fed  0 panics %6ds' \
    "$c" "$props" "$fed" "$((SECONDS - t0))")")
done

echo "==> summary ($PROPTEST_CASES cases per property, $((SECONDS - started))s in all)"
printf '%s\n' "${summary[@]}"
