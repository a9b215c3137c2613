#!/usr/bin/env bash
# What counting for /metrics costs the writer: the app as shipped (JetStream mode, SQLite)
# next to the same app whose writer is bench/writer-no-counting (the change feed written the
# same, without the counts), each with its own stores and nats-server. ROUNDS interleaved
# rounds of N tasks.created per app, each published to the stream awaiting acks; rate = N /
# time from the first publish until the last id is readable through GET /api/tasks/:id.
# Medians and their ratio (target: counting costs at most 5 %).
#   BENCH_EVENTS=20000 BENCH_ROUNDS=5 bench/counting.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

EVENTS=${BENCH_EVENTS:-20000}
ROUNDS=${BENCH_ROUNDS:-5}
require_spin_and_plugin
bench_dirs
PIDS=() NATS_PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do SPIN_PID=$p; stop_spin; done
  for p in "${NATS_PIDS[@]}"; do NATS_PID=$p; stop_nats; done
  stop_all
}
on_exit cleanup

build_tools
echo "==> building the writer without counting (bench/writer-no-counting)"
cargo build --quiet --target wasm32-wasip2 --release -p bench-writer-no-counting
variant=$ROOT/target/wasm32-wasip2/release/bench_writer_no_counting.wasm
app_manifest jetstream "$WORK/spin-shipped.toml"
sed "s|$ROOT/target/wasm32-wasip2/release/tasks_writer.wasm|$variant|" \
  "$WORK/spin-shipped.toml" >"$WORK/spin-uncounted.toml"
grep -q bench_writer_no_counting "$WORK/spin-uncounted.toml"

# app NAME: the app from spin-NAME.toml with its own stores and nats-server.
app() {
  mkdir -p "$WORK/$1"
  SPIN_MANIFEST="$WORK/spin-$1.toml" start_app "$WORK/$1" "$WORK/$1/logs"
  PIDS+=("$SPIN_PID"); NATS_PIDS+=("$NATS_PID"); SPIN_PID="" NATS_PID=""
  printf -v "${1}_PORT" '%s' "$PORT"
  printf -v "${1}_NATS" '%s' "$NATS_URL"
}
app shipped
app uncounted
echo "==> shipped writer on :$shipped_PORT, without counting on :$uncounted_PORT; $ROUNDS rounds of $EVENTS events"

# rate NAME ROUND: events/s from the first publish to the last id visible.
rate() {
  local port="${1}_PORT" nats="${1}_NATS" last t0 t1
  last=$(printf '%s%d-%06d' "${1:0:1}" "$2" $((EVENTS - 1)))
  t0=$(now)
  NATS_URL=${!nats} nats_tool burst --count "$EVENTS" --prefix "${1:0:1}$2-" --jetstream >/dev/null
  wait_until --every 0.02 600 task_visible "$last" "${!port}" || return 1
  t1=$(now)
  python3 -c "print(round($EVENTS/($t1-$t0)))"
}
results="$WORK/results"; : >"$results"
for round in $(seq "$ROUNDS"); do
  # Alternate which goes first, so neither always meets a warmer machine.
  if ((round % 2)); then a=$(rate shipped "$round"); b=$(rate uncounted "$round")
  else b=$(rate uncounted "$round"); a=$(rate shipped "$round"); fi
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
