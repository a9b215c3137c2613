#!/usr/bin/env bash
# Change-stream benchmark, one `spin up` (JetStream mode, as shipped; 10,000 tasks seeded).
# Events are tasks.updated of seeded tasks at RATE/s (each task once), so every run meets
# the same task set (bench/sse_load.py publishes them and runs the stream clients).
#   1. CLIENTS clients on GET /api/events while the events flow: p50/p99 time from publish
#      to the change reaching every client (target p99 <= 1 s), missed deliveries (must be
#      0), and RSS of every spin process (spin up and its trigger processes; target
#      <= 300 MiB) with the clients connected, before any other load;
#   2. GET / under wrk -t2 -c32 for 10 s while events flow: without clients, with CLIENTS
#      clients, without clients again; the ratio to the mean of the two runs without
#      (target >= 0.8x).
# The clients run on the same 2 cores as the app and wrk.
#   BENCH_CLIENTS=200 BENCH_RATE=100 BENCH_SECONDS=20 bench/sse.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

CLIENTS=${BENCH_CLIENTS:-200}
RATE=${BENCH_RATE:-100}
DURATION=${BENCH_SECONDS:-20}
TASKS=${BENCH_TASKS:-10000}
require_spin_and_plugin
require_tools wrk curl python3
python3 -c 'import nats' 2>/dev/null || cannot_run "nats-py is not installed" "pip install nats-py"
bench_dirs
on_exit stop_all

build_tools
write_runtime_config "$WORK"
tasks_seed "$WORK" --count "$TASKS"
start_app "$WORK" "$WORK/logs"
BASE="http://127.0.0.1:$PORT"
curl -s -o /dev/null "$BASE/"

# rss_mib: resident memory of spin up and every process below it, MiB.
rss_mib() {
  local pids kb
  pids=$(echo "$SPIN_PID"; descendants "$SPIN_PID")
  kb=$(ps -o rss= -p "$(echo $pids | tr ' ' ',')" | awk '{s += $1} END {print s}')
  echo $((kb / 1024))
}
# wrk_root: req/s of GET / over 10 s at 32 connections.
wrk_root() {
  wrk -t2 -c32 -d10s "$BASE/" | awk '/^Requests\/sec/ {printf "%d", $2}'
}
# load CLIENTS FROM SECONDS: the publisher (and clients) in the background, updating
# seeded tasks from t-FROM on; returns once the clients are connected.
load() {
  rm -f "$WORK/ready"
  python3 "$ROOT/bench/sse_load.py" --base "$BASE" --nats "$NATS_URL" --clients "$1" \
    --rate "$RATE" --seconds "$3" --update-from "$2" --ready "$WORK/ready" >"$WORK/load-$2.json" &
  LOAD_PID=$!
  wait_until 90 test -f "$WORK/ready"
}
per_run=$((RATE * 15))

idle_rss=$(rss_mib)
echo "==> 1. $CLIENTS stream clients, $RATE events/s for $DURATION s"
load "$CLIENTS" 0 "$DURATION"
sleep 3
live_rss=$(rss_mib)
wait "$LOAD_PID"
main_run=$WORK/load-0.json

echo "==> 2. GET / under wrk while $RATE events/s flow: without, with, without $CLIENTS clients"
from=$((RATE * DURATION))
rps=()
for clients in 0 "$CLIENTS" 0; do
  load "$clients" "$from" 15
  sleep 2
  rps+=("$(wrk_root)")
  wait "$LOAD_PID"
  echo "GET / with $clients stream clients: ${rps[-1]} req/s"
  from=$((from + per_run))
done
python3 - "$main_run" "$idle_rss" "$live_rss" "${rps[@]}" <<'PY' | tee "$OUT/sse.txt"
import json, sys
r = json.load(open(sys.argv[1]))
idle, live = int(sys.argv[2]), int(sys.argv[3])
before, during, after = map(int, sys.argv[4:7])
print(f"change stream, {r['clients']} clients, {r['events']} events at {r['rate']}/s (all connected in {r['connect_all_s']} s)")
e = r["to_every_client_ms"]
print(f"  publish -> every client: p50 {e['p50']} ms, p99 {e['p99']} ms, max {e['max']} ms (target p99 <= 1000 ms)")
d = r["per_delivery_ms"]
print(f"  publish -> one client:   p50 {d['p50']} ms, p99 {d['p99']} ms; missed deliveries {r['missing_deliveries']}")
print(f"  RSS of every spin process: {live} MiB with the clients connected and events flowing, {idle} MiB idle (target <= 300 MiB)")
base = (before + after) / 2
print(f"  GET / while events flow: {during} req/s with the clients vs {before} and {after} req/s without: {during / base:.2f}x (target >= 0.8x)")
PY
