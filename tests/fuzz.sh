#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (libfuzzer-sys, built with the nightly toolchain and
# SanitizerCoverage) of what hostile input reaches first (fuzz/fuzz_targets/):
#   event      the event parser and validator (any subject, any payload);
#   signature  signature verification (any headers, method, path, body; signed requests
#              accepted, tampered ones refused);
#   site       every route behind one request (methods, paths and ids, queries and cursors,
#              Last-Event-ID, Authorization, purge and replay bodies, signed or not): an answer
#              below 500 with a body, and no control character in a header.
# Seeds are fuzz/corpus/<target>/; what a run finds stays in its own directory.
#   tests/fuzz.sh                     FUZZ_RUNS (20000) executions of each target (make test)
#   FUZZ_SECONDS=120 tests/fuzz.sh    each target that long instead
# A crash fails the run; the input is kept in tests/out/fuzz/<target>/ with its report.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

suite_dirs fuzz
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  cannot_run "the nightly toolchain is not installed" "rustup toolchain install nightly --profile minimal"
fi
target_dir=${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/fuzz-target
echo "==> building the fuzz targets (nightly, SanitizerCoverage) in $target_dir"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo +nightly build --quiet --release --manifest-path "$ROOT/fuzz/Cargo.toml" \
  --target x86_64-unknown-linux-gnu --target-dir "$target_dir"
bin=$target_dir/x86_64-unknown-linux-gnu/release

total=0
for t in event signature site; do
  mkdir -p "$WORK/$t" "$OUT/$t"
  if [[ -n ${FUZZ_SECONDS:-} ]]; then limit=(-max_total_time="$FUZZ_SECONDS"); else limit=(-runs="${FUZZ_RUNS:-20000}"); fi
  # New inputs go to the first directory (a scratch copy), the seeds are read from the second.
  if (cd "$OUT/$t" && "$bin/$t" "${limit[@]}" -max_len=8192 -print_final_stats=1 \
      "$WORK/$t" "$ROOT/fuzz/corpus/$t" >"$OUT/$t/log.txt" 2>&1); then
    ran=0
  else
    ran=1
  fi
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)$/\1/p' "$OUT/$t/log.txt" | tail -1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)$/\1/p' "$OUT/$t/log.txt" | tail -1)
  total=$((total + ${runs:-0}))
  speed=""; [[ ${rate:-0} -gt 0 ]] && speed=" (${rate}/s)"
  check "$t: ${runs:-0} executions$speed, no crash" is "$ran" 0
  [[ $ran -eq 0 ]] || tail -30 "$OUT/$t/log.txt"
done
echo "fuzz: $total executions in all"
summary fuzz
