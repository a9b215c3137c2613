#!/usr/bin/env bash
# What counting for /metrics costs the writer: the app as shipped (JetStream mode, SQLite)
# next to the same app whose writer is built with its `uncounted` feature (the change feed
# written the same, without the counts), each with its own stores and nats-server. ROUNDS
# interleaved rounds of N tasks.created per app, each published to the stream awaiting acks;
# rate = N / time from the first publish until the last id is readable through
# GET /api/tasks/:id. Medians and their ratio (target: counting costs at most 5 %).
#   BENCH_EVENTS=20000 BENCH_ROUNDS=5 bench/counting.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

EVENTS=${BENCH_EVENTS:-20000}
ROUNDS=${BENCH_ROUNDS:-5}
require_spin_and_plugin
bench_dirs
on_exit stop_named_apps

build_tools
echo "==> building the writer without counting (feature uncounted, target/bench-uncounted)"
cargo build --quiet --target wasm32-wasip2 --release -p tasks-writer --features uncounted \
  --target-dir "$ROOT/target/bench-uncounted" --manifest-path "$ROOT/Cargo.toml"
variant=$ROOT/target/bench-uncounted/wasm32-wasip2/release/tasks_writer.wasm
app_manifest jetstream "$WORK/spin-shipped.toml"
sed "s|$ROOT/target/wasm32-wasip2/release/tasks_writer.wasm|$variant|" \
  "$WORK/spin-shipped.toml" >"$WORK/spin-uncounted.toml"
grep -q bench-uncounted "$WORK/spin-uncounted.toml"

named_app shipped
named_app uncounted
echo "==> shipped writer on :$shipped_PORT, without counting on :$uncounted_PORT; $ROUNDS rounds of $EVENTS events"
results="$WORK/results"; : >"$results"
for round in $(seq "$ROUNDS"); do
  # Alternate which goes first, so neither always meets a warmer machine.
  if ((round % 2)); then
    a=$(named_rate shipped "$round" "$EVENTS" --jetstream); b=$(named_rate uncounted "$round" "$EVENTS" --jetstream)
  else
    b=$(named_rate uncounted "$round" "$EVENTS" --jetstream); a=$(named_rate shipped "$round" "$EVENTS" --jetstream)
  fi
  echo "round $round: shipped $a events/s, without counting $b events/s"
  echo "$a $b" >>"$results"
done
python3 - "$results" <<'PY' | tee "$OUT/counting.txt"
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
a = statistics.median(r[0] for r in rows)
b = statistics.median(r[1] for r in rows)
print(f"median: shipped {a:.0f} events/s, without counting {b:.0f} events/s")
print(f"counting costs {100 * (1 - a / b):.1f} % of the writer's ingest rate (target: at most 5 %)")
PY
