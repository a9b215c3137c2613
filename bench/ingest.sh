#!/usr/bin/env bash
# Ingest benchmark: publish N tasks.created events as fast as possible and time
# until the last is readable through GET /api/tasks/:id (the writer applies
# events in publish order, so the last visible means all are); ROUNDS rounds,
# median reported. In the same run, the native baseline (bench/baseline:
# async-nats + SQLite, one commit per event) ingests the same documents.
# Then publish→visible latency for single events.
#   BENCH_EVENTS=10000 BENCH_ROUNDS=3 BENCH_LATENCY_EVENTS=300 bench/ingest.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

EVENTS=${BENCH_EVENTS:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
LAT_EVENTS=${BENCH_LATENCY_EVENTS:-300}
require_spin_and_plugin
bench_dirs
on_exit stop_all

build_tools
cargo build --quiet --release -p ingest-baseline --manifest-path "$ROOT/Cargo.toml"
start_app "$WORK" "$WORK/logs"

results="$WORK/results"; : >"$results"
for round in $(seq "$ROUNDS"); do
  # Spin: publish, then poll the API for the last id.
  last=$(printf 'r%d-%06d' "$round" $((EVENTS - 1)))
  t0=$(now)
  nats_tool burst --count "$EVENTS" --prefix "r$round-" >/dev/null
  wait_until --every 0.02 600 task_visible "$last"
  t1=$(now)
  spin_rate=$(python3 -c "print(round($EVENTS/($t1-$t0)))")

  # Native baseline on its own subject and database.
  "$ROOT/target/release/ingest-baseline" --server "$NATS_URL" --subject "baseline.created" \
    --db "$WORK/baseline-$round.db" --count "$EVENTS" >"$WORK/baseline.out" &
  bpid=$!
  wait_log "$WORK/baseline.out" '^ready$' 10
  t0=$(now)
  nats_tool burst --count "$EVENTS" --prefix "b$round-" --subject baseline.created >/dev/null
  wait "$bpid"
  t1=$(now)
  base_rate=$(python3 -c "print(round($EVENTS/($t1-$t0)))")
  echo "round $round: spin writer $spin_rate events/s, native baseline $base_rate events/s"
  echo "$spin_rate $base_rate" >>"$results"
done
stored=$(kv_count "$WORK" tasks 'task:r%')
[[ "$stored" == $((EVENTS * ROUNDS)) ]] || { echo "expected $((EVENTS * ROUNDS)) stored tasks, found $stored" >&2; exit 1; }

latency=$(nats_tool latency --http "127.0.0.1:$PORT" --count "$LAT_EVENTS")
python3 - "$results" "$EVENTS" "$latency" <<'PY' | tee "$OUT/ingest.txt"
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
spin = statistics.median(r[0] for r in rows)
base = statistics.median(r[1] for r in rows)
print(f"Ingest benchmark, {sys.argv[2]} tasks.created events per round, medians of {len(rows)} rounds")
print(f"spin writer (trigger-nats → writer → SQLite): {spin:8.0f} events/s")
print(f"native baseline (async-nats → SQLite):        {base:8.0f} events/s")
print(f"ratio: {spin/base:.2f}x  (target >= 0.5x: {'met' if spin/base >= 0.5 else 'NOT met'})")
print(sys.argv[3])
PY
