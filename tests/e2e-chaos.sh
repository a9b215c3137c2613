#!/usr/bin/env bash
# The history checker, in the style of Jepsen: for each seed, a random history of task events
# (tests/chaos.py: creates, updates, deletes, re-creates, updates of deleted tasks, stray
# subjects, malformed payloads, forged delivery headers) is published to JetStream with
# acknowledgements and Nats-Msg-Id by an independent client (PyPI nats-py), while faults are
# injected into the app; then every task is read back through the API and compared with the
# model, the dead letters with the events that must be dead letters, the change feed (the
# slots GET /api/events frames, as stored) with each task's changes in the model, and the
# applied counters of /metrics with the number of events the model applies.
#
# On loopback: one nats-server with JetStream, one Redis holding every store
# (runtime-config.redis.toml's layout), CHAOS_INSTANCES (2) `spin up` instances of the app as
# shipped sharing the durable consumer and the stores, each reaching nats-server through its
# own TCP fault proxy (tests/tcp_fault_proxy.py), with ack_wait_ms 6000 and
# handler_timeout_ms 2000 so that a pause past ack_wait takes seconds, not a minute. Faults,
# in a seeded order, each on a seeded instance, while the history is published:
#   kill9     kill -9 of one instance (its process group), started again 1 s later;
#   stop      SIGSTOP of one instance for ack_wait + 2 s, then SIGCONT;
#   stall     one instance's NATS connection stalled (no byte either way, the connection
#             open) for ack_wait + 2 s;
#   cut       one instance's NATS connection reset (it reconnects);
#   nats      kill -9 of nats-server (with CHAOS_CLUSTER=1, of one node of a 3-node cluster
#             whose stream has 3 replicas), started again on its store 1 s later;
#   store     Redis shut down for 5 s, started again on its append-only file.
# After each fault (the instance, server or store back), one create outside the history is
# published and must be readable within ack_wait + 5 s: delivery resumes (chaos.py probe).
#   CHAOS_SEEDS="1 2 3" CHAOS_EVENTS=3000 CHAOS_INSTANCES=2 CHAOS_CLUSTER=0 tests/e2e-chaos.sh
#   CHAOS_FAULTS="cut:0 nats kill9:1 stall:0 store:1 stop:0": these faults in this order, each
#   on the instance named, instead of the seeded ones (to replay a seed's faults on new ids).
#   CHAOS_PARTITIONS=P: the writer's entry in P partitions by task id (partitions = P,
#   ordering_key = "payload:data.id|id"; docs/trigger-nats.md); CHAOS_CONCURRENCY=C and
#   CHAOS_BATCH=N: with concurrency = C (by task id) and batch = N.
#   (make test-chaos SEEDS=N INSTANCES=I CLUSTER=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SEEDS=${CHAOS_SEEDS:-1 2 3}
EVENTS=${CHAOS_EVENTS:-3000}
# Events per second the publisher keeps to: the faults land in the middle of the history.
RATE=${CHAOS_RATE:-100}
INSTANCES=${CHAOS_INSTANCES:-2}
CLUSTER=${CHAOS_CLUSTER:-0}
ACK_WAIT_MS=6000
require_spin_and_plugin
require_tools curl jq python3 nats-server redis-server redis-cli
python3 -c 'import nats' 2>/dev/null || cannot_run "the Python NATS client is not installed" "scripts/python-env.sh (then run through make test, which puts it on PATH)"

suite_dirs e2e-chaos
SPIN_PIDS=() PORTS=() PROXY_PIDS=() PROXY_PORTS=() REDIS_PID=""
cleanup() {
  local p
  for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for p in "${SPIN_PIDS[@]}"; do
    [[ -n $p ]] || continue
    kill -CONT -- "-$p" 2>/dev/null
    SPIN_PID=$p; stop_spin
  done
  if [[ -n $REDIS_PID ]]; then
    kill "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  # Not a bare `wait`: nats-server (stopped by stop_all) is a child too.
  stop_all
}
on_exit cleanup
export SPIN_VARIABLE_ADMIN_TOKEN="chaos-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
build_tools

if ((CLUSTER)); then
  echo "==> a 3-node NATS cluster"
  start_cluster
  NATS_URL=$SERVERS
else
  NATS_PORT=$(free_port)
  start_nats "$NATS_PORT" "$OUT/nats-server.log"
fi
REDIS_PORT=$(free_port)
redis_start
write_shared_runtime_config "$WORK" "$REDIS_PORT"

# The app as shipped, with a shorter ack_wait and handler timeout.
app_manifest jetstream "$WORK/spin.toml"
python3 - "$WORK/spin.toml" "$ACK_WAIT_MS" <<'PY'
import re, sys
p, ack = sys.argv[1], sys.argv[2]
s = open(p).read()
for key, value in [("ack_wait_ms", ack), ("handler_timeout_ms", "2000")]:
    s, n = re.subn(rf"^{key} = \d+$", f"{key} = {value}", s, count=1, flags=re.M)
    assert n == 1, f"the manifest's {key} line moved"
open(p, "w").write(s)
PY
if ((CLUSTER)); then
  sed -i 's/^stream_subjects = \["tasks.>"\]$/&\nstream_replicas = 3/' "$WORK/spin.toml"
  grep -q '^stream_replicas = 3$' "$WORK/spin.toml"
fi
# key_by_task: the writer's entry keyed by task id (for partitions or concurrency), once.
key_by_task() {
  grep -q '^ordering_key = ' "$WORK/spin.toml" ||
    sed -i 's/^stream_subjects = \["tasks.>"\]$/&\nordering_key = "payload:data.id|id"/' "$WORK/spin.toml"
}
if [[ -n ${CHAOS_PARTITIONS:-} ]]; then
  sed -i "s/^stream_subjects = \[\"tasks.>\"\]\$/&\npartitions = $((CHAOS_PARTITIONS))/" "$WORK/spin.toml"
  key_by_task
  grep -q "^partitions = $((CHAOS_PARTITIONS))\$" "$WORK/spin.toml"
  echo "==> the writer's entry in $CHAOS_PARTITIONS partitions by task id"
fi
if [[ -n ${CHAOS_BATCH:-} ]]; then
  sed -i "s/^batch = [0-9]*\$/batch = $((CHAOS_BATCH))/" "$WORK/spin.toml"
  grep -q "^batch = $((CHAOS_BATCH))\$" "$WORK/spin.toml"
  echo "==> the writer's entry with batch = $CHAOS_BATCH"
fi
if [[ -n ${CHAOS_CONCURRENCY:-} ]]; then
  sed -i "s/^stream_subjects = \[\"tasks.>\"\]\$/&\nconcurrency = $((CHAOS_CONCURRENCY))/" "$WORK/spin.toml"
  key_by_task
  echo "==> the writer's entry with concurrency = $CHAOS_CONCURRENCY"
fi
export SPIN_MANIFEST="$WORK/spin.toml"

# proxy I: instance I's TCP fault proxy to nats-server, or to node I % 3 of the cluster
# (kept across server restarts).
proxy() {
  local to=${NATS_PORT:-}
  ((CLUSTER)) && to=${CLIENT[$(($1 % 3))]}
  PROXY_PORTS[$1]=$(free_port)
  python3 "$ROOT/tests/tcp_fault_proxy.py" --listen "${PROXY_PORTS[$1]}" --to "127.0.0.1:$to" \
    >>"$OUT/proxy-$1.txt" 2>&1 &
  PROXY_PIDS[$1]=$!
  wait_log "$OUT/proxy-$1.txt" "listening on" 10
}
# instance I: (re)starts `spin up` instance I on its port, reaching NATS through proxy I
# (in a cluster, then the two other nodes directly).
instance() {
  local url="nats://127.0.0.1:${PROXY_PORTS[$1]}" k
  if ((CLUSTER)); then
    for k in 1 2; do url+=",nats://127.0.0.1:${CLIENT[$((($1 + k) % 3))]}"; done
  fi
  PORTS[$1]=${PORTS[$1]:-$(free_port)}
  SPIN_VARIABLE_NATS_URL=$url \
    start_spin "$WORK" "${PORTS[$1]}" "$OUT/logs-$1" "state-$1"
  SPIN_PIDS[$1]=$SPIN_PID; SPIN_PID=""
  wait_http "http://127.0.0.1:${PORTS[$1]}/health" 60
  wait_log "$OUT/logs-$1/spin-up.txt" "writer ← tasks" 30
}
for ((i = 0; i < INSTANCES; i++)); do proxy "$i"; instance "$i"; done

# The faults. Each takes the instance (or server) down and brings it back.
fault_kill9() {
  local i=$1
  kill -KILL -- "-${SPIN_PIDS[$i]}" 2>/dev/null || true
  sleep 1
  instance "$i"
}
fault_stop() {
  local i=$1
  kill -STOP -- "-${SPIN_PIDS[$i]}"
  sleep $((ACK_WAIT_MS / 1000 + 2))
  kill -CONT -- "-${SPIN_PIDS[$i]}"
}
fault_stall() {
  kill -USR1 "${PROXY_PIDS[$1]}"
  sleep $((ACK_WAIT_MS / 1000 + 2))
  kill -USR1 "${PROXY_PIDS[$1]}"
}
fault_cut() {
  kill -USR2 "${PROXY_PIDS[$1]}"
}
fault_nats() {
  if ((CLUSTER)); then
    local k=$((RANDOM % 3))
    echo "         (node $k)"
    kill -KILL "${NODE_PIDS[$k]}"
    wait "${NODE_PIDS[$k]}" 2>/dev/null || true
    sleep 1
    node "$k"
    return
  fi
  kill -KILL "$NATS_PID"
  wait "$NATS_PID" 2>/dev/null || true
  sleep 1
  start_nats "$NATS_PORT" "$OUT/nats-server.log"
}
fault_store() {
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -KILL "$REDIS_PID"
  wait "$REDIS_PID" 2>/dev/null || true
  sleep 5
  redis_start
}

total_anomalies=0
for seed in $SEEDS; do
  echo "==> seed $seed: $EVENTS events at $RATE/s, faults while they are published"
  history="$WORK/history-$seed.json"
  python3 "$ROOT/tests/chaos.py" mark --base "http://127.0.0.1:${PORTS[0]}" \
    --token "$SPIN_VARIABLE_ADMIN_TOKEN" --out "$WORK/mark-$seed.json"
  python3 "$ROOT/tests/chaos.py" publish --server "$NATS_URL" --seed "$seed" --events "$EVENTS" \
    --prefix "s$seed-" --history "$history" --rate "$RATE" >"$OUT/publish-$seed.txt" 2>&1 &
  publisher=$!
  # The order of the faults and which instance each hits, from the seed.
  RANDOM=$seed
  faults=(kill9 stop stall cut nats store)
  for ((n = ${#faults[@]} - 1; n > 0; n--)); do
    k=$((RANDOM % (n + 1))); t=${faults[n]}; faults[n]=${faults[k]}; faults[k]=$t
  done
  [[ -n ${CHAOS_FAULTS:-} ]] && read -ra faults <<<"$CHAOS_FAULTS"
  sleep 2
  probes=0 slow=0 bases=$(printf 'http://127.0.0.1:%s,' "${PORTS[@]}")
  : >"$OUT/resume-$seed.txt"
  for f in "${faults[@]}"; do
    i=$((RANDOM % INSTANCES))
    [[ $f == *:* ]] && { i=${f#*:}; f=${f%%:*}; }
    echo "       $(date +%T) fault: $f (instance $i)"
    "fault_$f" "$i"
    # How soon delivery resumes: a create published now, applied within ack_wait + 5 s.
    probes=$((probes + 1))
    python3 "$ROOT/tests/chaos.py" probe --server "$NATS_URL" --bases "${bases%,}" \
      --id "p${seed}x$probes-$f" --since "$(date +%s.%N)" --limit $((ACK_WAIT_MS / 1000 + 5)) \
      >>"$OUT/resume-$seed.txt" 2>&1 || slow=$((slow + 1))
    sleep 2
  done
  sed 's/^/         resumed: /' "$OUT/resume-$seed.txt"
  check "seed $seed: after each fault, a new event applied within ack_wait + 5 s" is "$slow" 0
  check "seed $seed: every event acknowledged by the stream" wait "$publisher"
  sed 's/^/       /' "$OUT/publish-$seed.txt"
  if python3 "$ROOT/tests/chaos.py" check --base "http://127.0.0.1:${PORTS[0]}" --history "$history" \
    --token "$SPIN_VARIABLE_ADMIN_TOKEN" --mark "$WORK/mark-$seed.json" --redis-port "$REDIS_PORT" --timeout 120 --probes "$probes" \
    >"$OUT/check-$seed.txt" 2>&1; then
    anomalies=0
  else
    anomalies=1
    # For the post-mortem: the counters as stored (the feed store, database 2 of
    # runtime-config.redis.toml): their totals and every delta not folded.
    {
      redis-cli -p "$REDIS_PORT" -n 2 get metrics:totals
      redis-cli -p "$REDIS_PORT" -n 2 get feed:head
      redis-cli -p "$REDIS_PORT" -n 2 --scan --pattern 'metrics:delta:*' | sort | while read -r k; do
        echo "$k $(redis-cli -p "$REDIS_PORT" -n 2 get "$k")"
      done
    } >"$OUT/counters-$seed.txt" 2>&1 || true
    # Every document and tombstone of the seed's tasks as stored (database 0): each keeps
    # the stream sequence of the last event applied to it, to set against the writers' lines.
    redis-cli -p "$REDIS_PORT" -n 0 --scan --pattern "*:s$seed-*" | sort | while read -r k; do
      echo "$k $(redis-cli -p "$REDIS_PORT" -n 0 get "$k")"
    done >"$OUT/tasks-$seed.txt" 2>&1 || true
  fi
  sed 's/^/       /' "$OUT/check-$seed.txt"
  check "seed $seed: every task as the model says, every dead letter once, each change once in the feed and the counters" \
    is "$anomalies" 0
  total_anomalies=$((total_anomalies + anomalies))
done

summary e2e-chaos
