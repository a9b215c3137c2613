#!/usr/bin/env bash
# Ingest benchmark, one run, three ways into SQLite:
#   JetStream mode (the app as shipped): N tasks.created published to the stream, each
#     awaiting the stream's acknowledgement; the writer takes them in batches;
#   core mode (app_manifest core): the same N published on core NATS, one guest call each;
#   native baseline (bench/baseline: async-nats + SQLite, one commit per event), in WAL
#     mode like the app's files (the target's yardstick), and in the rollback journal Spin
#     gives files it creates itself (for scale).
# Each: time from the first publish until the last id is readable through
# GET /api/tasks/:id (the writer applies events in publish order, so the last visible
# means all are; the baseline: until it has committed all N). ROUNDS rounds, medians.
# Then publish→visible latency for single events at a low rate, in both modes; and, with a
# second JetStream instance sharing the consumer and the stores, the JetStream rounds again
# (what per-task order across instances costs: one pull at a time).
#   BENCH_EVENTS=10000 BENCH_ROUNDS=3 BENCH_LATENCY_EVENTS=300 bench/ingest.sh
# BENCH_AGAINST=COMMIT also runs the app as of COMMIT (the writer, its runtime config and
# trigger-nats, built from `git archive COMMIT`; the plugin installed in a private Spin data
# directory beside a copy of trigger-cron), in JetStream mode, in the same rounds as this
# tree's, so "no slower than before" is measured on the same machine at the same time.
# Its builds are kept in ~/.cache/spin-tasks/against: the first compiles Spin's crates (slow).
# With BENCH_AGAINST the rounds default to 6: single rounds' ratios spread over 0.86–1.02 on
# one machine and code, so the median of 3 moved by up to 0.09 between runs (docs/performance.md).
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

EVENTS=${BENCH_EVENTS:-10000}
AGAINST=${BENCH_AGAINST:-}
ROUNDS=${BENCH_ROUNDS:-$([[ -n $AGAINST ]] && echo 6 || echo 3)}
LAT_EVENTS=${BENCH_LATENCY_EVENTS:-300}
require_spin_and_plugin
bench_dirs
on_exit stop_named_apps

build_tools
cargo build --quiet --release -p ingest-baseline --manifest-path "$ROOT/Cargo.toml"
app_manifest jetstream "$WORK/spin-jetstream.toml"
app_manifest core "$WORK/spin-core.toml"
named_app jetstream
named_app core
echo "==> JetStream app on :$jetstream_PORT, core app on :$core_PORT; $ROUNDS rounds of $EVENTS events"

# against_app COMMIT: the app as of COMMIT, running as named app `before` (JetStream mode).
against_app() {
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/against
  local src="$cache/src" data="$WORK/against-data"
  local plugins=${SPIN_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/spin}/plugins
  # The same path every time: cargo then rebuilds nothing for a commit built before.
  rm -rf "$src"; mkdir -p "$src" "$data/plugins/manifests"
  git -C "$ROOT" archive "$1" | tar -x -C "$src"
  echo "==> building the app as of $(git -C "$ROOT" rev-parse --short=12 "$1") (logs: $OUT/against-build.txt)"
  cp -a "$plugins/trigger-cron" "$data/plugins/"
  cp "$plugins/manifests/trigger-cron.json" "$data/plugins/manifests/"
  (cd "$src" &&
    CARGO_TARGET_DIR="$cache/target" make --no-print-directory build &&
    SPIN_DATA_DIR="$data" TRIGGER_NATS_TARGET_DIR="$cache/plugin-target" scripts/install-plugin.sh) \
    >"$OUT/against-build.txt" 2>&1 ||
    { echo "building $1 failed: $OUT/against-build.txt" >&2; return 1; }
  # Its components from its own target directory.
  ROOT="$src" app_manifest jetstream "$WORK/spin-before.toml"
  sed -i "s|source = \"$src/target/|source = \"$cache/target/|" "$WORK/spin-before.toml"
  SPIN_DATA_DIR="$data" named_app before
  echo "==> the app as of $1 on :$before_PORT"
}
[[ -n $AGAINST ]] && against_app "$AGAINST"

# base_rate ROUND JOURNAL: the native baseline's events/s, on the core app's server (own subject).
base_rate() {
  local bpid t0 t1
  "$ROOT/target/release/ingest-baseline" --server "$core_NATS" --subject "baseline.created" \
    --db "$WORK/baseline-$1-$2.db" --count "$EVENTS" --journal "$2" >"$WORK/baseline.out" &
  bpid=$!
  wait_log "$WORK/baseline.out" '^ready$' 10 || return 1
  t0=$(now)
  NATS_URL=$core_NATS nats_tool burst --count "$EVENTS" --prefix "b$1-$2-" --subject baseline.created >/dev/null
  wait "$bpid"
  t1=$(now)
  python3 -c "print(round($EVENTS/($t1-$t0)))"
}

results="$WORK/results"; : >"$results"
before="$WORK/before-rates"; : >"$before"
for round in $(seq "$ROUNDS"); do
  # Against COMMIT, the two take turns going first.
  against() {
    local rate
    rate=$(named_rate before "$round" "$EVENTS" --jetstream)
    echo "round $round: JetStream as of $AGAINST $rate events/s"
    echo "$rate" >>"$before"
  }
  [[ -n $AGAINST && $((round % 2)) == 0 ]] && against
  js=$(named_rate jetstream "$round" "$EVENTS" --jetstream)
  [[ -n $AGAINST && $((round % 2)) == 1 ]] && against
  core=$(named_rate core "$round" "$EVENTS")
  base=$(base_rate "$round" wal)
  base_rollback=$(base_rate "$round" delete)
  echo "round $round: JetStream $js events/s, core $core events/s, native baseline $base events/s (rollback journal: $base_rollback)"
  echo "$js $core $base $base_rollback" >>"$results"
done
lat_js=$(NATS_URL=$jetstream_NATS nats_tool latency --http "127.0.0.1:$jetstream_PORT" --count "$LAT_EVENTS" --jetstream)
lat_core=$(NATS_URL=$core_NATS nats_tool latency --http "127.0.0.1:$core_PORT" --count "$LAT_EVENTS")

# A second JetStream instance: same stores, same server, same durable consumer. (The server
# named explicitly: start_nats exported the URL of the last app started, not this one's.)
PORT=$(free_port)
SPIN_VARIABLE_NATS_URL=$jetstream_NATS SPIN_MANIFEST="$WORK/spin-jetstream.toml" \
  start_spin "$WORK/jetstream" "$PORT" "$WORK/jetstream/logs-2" state-2
PIDS+=("$SPIN_PID"); SPIN_PID=""
wait_http "http://127.0.0.1:$PORT/health" 60
wait_log "$WORK/jetstream/logs-2/spin-up.txt" "writer ← tasks" 30
two="$WORK/two"; : >"$two"
for round in $(seq "$ROUNDS"); do
  rate=$(named_rate jetstream "$((ROUNDS + round))" "$EVENTS" --jetstream)
  echo "round $round: JetStream with 2 instances $rate events/s"
  echo "$rate" >>"$two"
done
second=$(cat "$WORK/jetstream/logs-2/writer_stdout.txt" 2>/dev/null | grep -c "\\] CREATE task=j" || true)

for mode in jetstream core; do
  stored=$(kv_count "$WORK/$mode" tasks "task:${mode:0:1}%")
  want=$((EVENTS * ROUNDS)); [[ $mode == jetstream ]] && want=$((want * 2))
  [[ "$stored" == "$want" ]] ||
    { echo "$mode: expected $want stored tasks, found $stored" >&2; exit 1; }
done
if [[ -n $AGAINST ]]; then
  stored=$(kv_count "$WORK/before" tasks "task:b%")
  [[ "$stored" == $((EVENTS * ROUNDS)) ]] ||
    { echo "as of $AGAINST: expected $((EVENTS * ROUNDS)) stored tasks, found $stored" >&2; exit 1; }
fi

python3 - "$results" "$EVENTS" "$lat_js" "$lat_core" "$two" "$second" "$before" "$AGAINST" <<'PY' | tee "$OUT/ingest.txt"
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
js, core, base, base_rollback = (statistics.median(r[i] for r in rows) for i in range(4))
print(f"Ingest benchmark, {sys.argv[2]} tasks.created events per round, medians of {len(rows)} rounds, SQLite")
print(f"JetStream mode (stream → spin.toml's batches → writer): {js:8.0f} events/s  {js/base:5.2f}x baseline (target >= 3x: {'met' if js/base >= 3 else 'NOT met'})")
print(f"core mode (one guest call per event):              {core:8.0f} events/s  {core/base:5.2f}x baseline")
before = [float(l) for l in open(sys.argv[7])]
if before:
    b = statistics.median(before)
    # Each round's two measurements were taken back to back: their ratio, per round, is
    # what the machine's drift from round to round does not move.
    paired = statistics.median(r[0] / o for r, o in zip(rows, before))
    print(f"JetStream mode as of {sys.argv[8]}, same rounds:       {b:8.0f} events/s  {b/base:5.2f}x baseline; this tree {js/b:.2f}x it")
    print(f"  this tree / as of {sys.argv[8]}, round by round: median {paired:.2f} (target: no slower, ±10 %: {'met' if paired >= 0.90 else 'NOT met'})")
print(f"native baseline (async-nats → SQLite, 1 commit/event, WAL like the app): {base:5.0f} events/s")
print(f"  the same in the rollback journal (Spin's own files): {base_rollback:5.0f} events/s (JetStream {js/base_rollback:.2f}x, core {core/base_rollback:.2f}x)")
two = statistics.median(float(l) for l in open(sys.argv[5]))
print(f"JetStream mode, 2 instances on one consumer:        {two:8.0f} events/s  {two/js:5.2f}x one instance (the second applied {sys.argv[6]} of them: a standby takes over only when a pull is free)")
print(f"publish→visible, JetStream (publish acknowledged by the stream first): {sys.argv[3].split(': ', 1)[1]}")
print(f"publish→visible, core:                                                 {sys.argv[4].split(': ', 1)[1]}")
PY
