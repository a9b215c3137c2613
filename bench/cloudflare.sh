#!/usr/bin/env bash
# Cloudflare benchmark: `spin up` with runtime-config.cloudflare.toml against
# Cloudflare's emulator (miniflare) behind tools/cf-fault-proxy, which counts
# every REST call. Measures: calls to ingest N events (published as requests,
# flushed by the retrier), calls per uncached and per cached `GET /`, and the
# p50 latency of `GET /` on a cache hit and a miss, ROUNDS rounds. The
# working copy's TTL is set to TTL seconds so a miss is simply waiting it out
# (the steady state of a site read less often than the TTL); then the same
# after a signed purge of everything (which also forgets fetched absences).
#   BENCH_EVENTS=1000 BENCH_ROUNDS=20 BENCH_TTL=2 bench/cloudflare.sh
set -euo pipefail
source "$(dirname "$0")/../tests/lib.sh"

EVENTS=${BENCH_EVENTS:-1000}
ROUNDS=${BENCH_ROUNDS:-20}
TTL=${BENCH_TTL:-2}
export SPIN_VARIABLE_CF_CACHE_TTL_SECONDS=$TTL
require_spin_and_plugin
require_tools curl jq python3 sqlite3 node
bench_dirs; mkdir -p "$OUT/cloudflare"
use_core_mode   # its checks read the writer's replies to requests (core NATS)
on_exit stop_all

start_cloudflare_app "$WORK" "$OUT/cloudflare"
wait_until 60 flushed

cf_reset_stats
t0=$(date +%s.%N)
nats_tool burst --count "$EVENTS" --prefix cfe- --request >/dev/null
wait_until --every 0.05 600 flushed
t1=$(date +%s.%N)
ingest=$(cf_stats)
last=$(printf 'cfe-%06d' $((EVENTS - 1)))
[[ "$(remote_value "task:$last" | jq -r .id)" == "$last" ]] || { echo "the last event did not reach Cloudflare" >&2; exit 1; }

# Each purge has a nonce of its own: one signature is taken once, and the rounds below fall
# within one second.
purge_all() {
  local body="{\"all\":true,\"nonce\":\"$RANDOM$RANDOM\"}" status
  status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST \
    -H @<("$ROOT/target/release/tasks-sign" POST /api/cache/purge "$body") \
    --data-binary "$body" "http://127.0.0.1:$PORT/api/cache/purge")
  [[ $status == 200 ]] || { echo "the purge answered $status" >&2; exit 1; }
}
timed_home() { curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/"; }
: >"$WORK/rows"; : >"$WORK/purged"
timed_home >/dev/null
for _ in $(seq "$ROUNDS"); do
  sleep "$TTL.1"; cf_reset_stats
  miss=$(timed_home); miss_calls=$(cf_calls); cf_reset_stats
  hit=$(timed_home); hit_calls=$(cf_calls)
  echo "$miss $miss_calls $hit $hit_calls" >>"$WORK/rows"
done
for _ in $(seq "$ROUNDS"); do
  purge_all; cf_reset_stats
  miss=$(timed_home); miss_calls=$(cf_calls)
  echo "$miss $miss_calls" >>"$WORK/purged"
done

python3 - "$WORK/rows" "$EVENTS" "$ingest" "$t0" "$t1" "$WORK/purged" "$TTL" <<'PY' | tee "$OUT/cloudflare.txt"
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
ingest = json.loads(sys.argv[3])
miss = [float(r[0]) * 1000 for r in rows]; hit = [float(r[2]) * 1000 for r in rows]
miss_calls = [int(r[1]) for r in rows]; hit_calls = [int(r[3]) for r in rows]
purged = [l.split() for l in open(sys.argv[6])]
print(f"Cloudflare backend (miniflare behind cf-fault-proxy), working-copy TTL {sys.argv[7]} s, {len(rows)} rounds")
calls = {k: v for k, v in ingest.items() if k not in ("total", "faulted") and v}
print(f"ingest {sys.argv[2]} events (request/ack, then flushed): {ingest['total']} calls {calls}"
      f"  (target <= 20: {'met' if ingest['total'] <= 20 else 'NOT met'}); {float(sys.argv[5]) - float(sys.argv[4]):.1f} s to all flushed")
print(f"GET / uncached (TTL expired): calls max {max(miss_calls)}, median {statistics.median(miss_calls):.0f}  (target <= 2: {'met' if max(miss_calls) <= 2 else 'NOT met'})")
pc = [int(r[1]) for r in purged]
print(f"GET / after a purge of everything: calls max {max(pc)}, median {statistics.median(pc):.0f}; p50 {statistics.median(float(r[0]) * 1000 for r in purged):.2f} ms")
print(f"GET / cached:   calls max {max(hit_calls)}  (target 0: {'met' if max(hit_calls) == 0 else 'NOT met'})")
print(f"GET / p50 latency: miss {statistics.median(miss):.2f} ms, hit {statistics.median(hit):.2f} ms")
PY
