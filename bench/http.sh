#!/usr/bin/env bash
# HTTP benchmark: 10,000 tasks in a fresh local store, wrk at 32 connections
# against GET /health, GET / and GET /api/tasks/:id (random ids), ROUNDS rounds
# interleaved with the outside yardsticks started in the same run: the smallest
# Spin HTTP components on WASI 0.2 and WASI 0.3, and the WASI 0.3 one reading
# one random task from the same store file (bench/hello.toml); reports median
# req/s, p50/p99 and every route's ratio to the WASI 0.2 yardstick (the
# targets) and to /health.
#   BENCH_TASKS=10000 BENCH_SECONDS=10 BENCH_ROUNDS=3 bench/http.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

TASKS=${BENCH_TASKS:-10000}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
require_spin_and_plugin
require_tools wrk curl python3

bench_dirs
use_core_mode   # measures the read side; the seeding path does not matter
on_exit stop_all

build_tools
write_runtime_config "$WORK"
tasks_seed "$WORK" --count "$TASKS"
start_app "$WORK" "$WORK/logs"
BASE="http://127.0.0.1:$PORT"

echo "==> the yardsticks: hello-world components on WASI 0.2 and 0.3 (bench/hello.toml)"
cargo build --quiet --target wasm32-wasip2 --release -p bench-hello-p2 -p bench-hello-p3 -p bench-hello-p3-kv \
  --manifest-path "$ROOT/Cargo.toml"
APP_PID=$SPIN_PID
HELLO_PORT=$(free_port)
SPIN_MANIFEST="$ROOT/bench/hello.toml" start_spin "$WORK" "$HELLO_PORT" "$WORK/hello-logs" hello-state
HELLO_PID=$SPIN_PID SPIN_PID=$APP_PID
stop_hello() { SPIN_PID=$HELLO_PID; stop_spin; SPIN_PID=$APP_PID; }
on_exit 'stop_hello; stop_all'
wait_http "http://127.0.0.1:$HELLO_PORT/p2" 60
HELLO="http://127.0.0.1:$HELLO_PORT"
# The first listing builds the id index; time it separately.
first=$(curl -s -o /dev/null -w '%{time_total}' "$BASE/")
echo "first GET / (index build over $TASKS tasks): ${first}s"

# run NAME URL [wrk args...] -> appends "name rps p50 p99" to $WORK/results
run() {
  local name=$1 url=$2; shift 2
  wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency "$@" "$url" >"$WORK/wrk.txt"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/{print $2}' "$WORK/wrk.txt")
  p50=$(awk '$1=="50%"{print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1=="99%"{print $2}' "$WORK/wrk.txt")
  grep -q "Non-2xx" "$WORK/wrk.txt" && { echo "non-2xx responses for $name:" >&2; cat "$WORK/wrk.txt" >&2; exit 1; }
  echo "$name $rps $p50 $p99" >>"$WORK/results"
  printf '  %-20s %10s req/s  p50 %-9s p99 %s\n' "$name" "$rps" "$p50" "$p99"
}

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS (${SECONDS_PER_RUN}s each, 2 threads, 32 connections)"
  run hello-p2 "$HELLO/p2"
  run hello-p3 "$HELLO/p3"
  # The store key of a task (tasks_domain::keys::task).
  BENCH_PATH=/p3-kv/task: run hello-p3-kv "$HELLO/" -s "$ROOT/bench/random-task.lua"
  run health "$BASE/health"
  run static "$BASE/static/live.js"
  run home "$BASE/"
  run task "$BASE/" -s "$ROOT/bench/random-task.lua"
done

python3 - "$WORK/results" "$TASKS" <<'PY' | tee "$OUT/http.txt"
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit) and (unit != "s" or not v.endswith(("us", "ms"))):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99 = line.split()
    rows.setdefault(name, []).append((float(rps), ms(p50), ms(p99)))
med = {n: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for n, runs in rows.items()}
h = med["health"][0]
hello = med["hello-p2"][0]
print(f"HTTP benchmark, {sys.argv[2]} tasks, medians of {len(rows['health'])} rounds (wrk -t2 -c32)")
labels = {"hello-p2": "hello world, WASI 0.2", "hello-p3": "hello world, WASI 0.3",
          "hello-p3-kv": "hello 0.3 + 1 kv read", "health": "GET /health", "static": "GET /static/live.js",
          "home": "GET /", "task": "GET /api/tasks/:id"}
# The read side's targets: GET / against the WASI 0.2 hello world, GET /api/tasks/:id against
# the yardstick that does what it does at the least (hello 0.3 + 1 kv read).
targets = {"home": (1.0, "hello-p2", "hello 0.2"), "task": (0.9, "hello-p3-kv", "hello 0.3 + 1 kv read")}
for n in ("hello-p2", "hello-p3", "hello-p3-kv", "health", "static", "home", "task"):
    rps, p50, p99 = med[n]
    target = ""
    if n in targets:
        want, base, name = targets[n]
        ratio = rps / med[base][0]
        target = f"  {ratio:.2f}x {name}, target >= {want:.1f}x: {'met' if ratio >= want else 'NOT met'}"
    print(f"{labels[n]:<22} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {rps / hello:5.2f}x hello 0.2  {rps / h:5.2f}x /health{target}")
PY
