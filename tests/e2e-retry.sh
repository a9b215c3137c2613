#!/usr/bin/env bash
# Retry e2e suite: the `tasks` store on a real Redis under a running
# `spin up` (trigger-nats + trigger-cron plugins).
#
# Outages come two ways, because Spin 4.0.2's Redis store reacts to them
# differently (docs/decisions.md):
# - Redis refuses every command (the default user's ACL permissions are
#   revoked live, an error on every call): deferral, per-task queueing, RETRY
#   lines with the right correlation ids, the final state once Redis accepts
#   commands again, dead letters after five attempts and their signed replay.
# - Redis is stopped: Spin's Redis client does not fail a call, it waits for
#   the server. trigger-nats cancels the call after handler_timeout_ms and
#   the writer parks the event; the check is that nothing is lost.
# Cannot run without redis-server: see cannot_run in lib.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools curl jq python3 sqlite3 redis-server redis-cli

suite_dirs e2e-retry; mkdir -p "$OUT/logs"
use_core_mode   # its checks read the writer's replies to requests (core NATS)
REDIS_PORT=$(free_port)
REDIS_PID=""
export SPIN_VARIABLE_HMAC_KEY="e2e-retry-key-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

ADMIN=(redis-cli -p "$REDIS_PORT" --user admin --pass e2e-admin --no-auth-warning)
start_redis() {
  # Append-only file in WORK, so data survives the stop/start like a real server's.
  # An admin user stays able to run commands while the default user (Spin's) is cut off.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --appendonly yes \
    --save "" --daemonize no --user admin on '>e2e-admin' '~*' '&*' '+@all' --user default on nopass '~*' '&*' '+@all' \
    >>"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_until --every 0.05 5 redis_up "${ADMIN[@]}" && return 0
  echo "redis-server did not start on $REDIS_PORT" >&2; return 1
}
stop_redis() {
  if [[ -n "$REDIS_PID" ]]; then
    "${ADMIN[@]}" shutdown >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  REDIS_PID=""
}
# refuse / accept: every command of the default user fails (NOPERM) / works again.
refuse() { "${ADMIN[@]}" acl setuser default -@all >/dev/null; }
accept() { "${ADMIN[@]}" acl setuser default +@all >/dev/null; }
cleanup() { stop_redis; stop_all; }
on_exit cleanup

# replay ID [TIME]: signed POST; prints the HTTP status.
replay() {
  local path="/api/dead-letters/$1/replay"
  curl -sS -o "$OUT/replay-$1.json" -w '%{http_code}' -X POST \
    -H @<(TASKS_SIGN_TIME=${2:-} "$ROOT/target/release/tasks-sign" POST "$path") \
    "http://127.0.0.1:$PORT$path"
}

build_tools
cargo build --quiet --release -p tasks-sign --manifest-path "$ROOT/Cargo.toml"
start_redis
write_runtime_config "$WORK" "$REDIS_PORT"
start_nats "$(free_port)" "$WORK/nats-server.log"
PORT=$(free_port)
start_spin "$WORK" "$PORT" "$OUT/logs"
wait_http "http://127.0.0.1:$PORT/health" 60
wait_log "$OUT/logs/spin-up.txt" "writer ← tasks" 30
echo "==> spin up on 127.0.0.1:$PORT, tasks on Redis :$REDIS_PORT, NATS $NATS_URL"

echo "==> Redis up: events apply directly"
nats_tool request tasks.created '{"id":"base","title":"Before the outage","correlationId":"cid-base-1"}' >/dev/null
check "applied on Redis" is "$(field base '[.title,.version]|join(",")')" "Before the outage,1"
check "stored in Redis itself" is "$("${ADMIN[@]}" exists task:base)" "1"

echo "==> Redis refuses commands: creates and updates go to the outbox, in order"
refuse
check "create acknowledged while Redis refuses" is \
  "$(nats_tool request tasks.created '{"id":"r-1","title":"Written during outage","correlationId":"cid-r1-create"}')" '{"ok":true}'
t0=$(date +%s%N)
nats_tool request tasks.updated '{"id":"r-1","status":"in-progress","correlationId":"cid-r1-status"}' >/dev/null
nats_tool request tasks.updated '{"id":"r-1","title":"Renamed during outage","correlationId":"cid-r1-title"}' >/dev/null
nats_tool request tasks.created '{"id":"r-2","title":"Second","correlationId":"cid-r2-create"}' >/dev/null
nats_tool request tasks.updated '{"id":"base","status":"completed","correlationId":"cid-base-2"}' >/dev/null
took=$(( ($(date +%s%N) - t0) / 1000000 ))
check "the next four deferred at once (store marked down): ${took} ms" test "$took" -lt 3000
check "five outbox records" is "$(outbox)" "5"
check "store marked down once" logged writer "[cid-r1-create] STORE tasks is DOWN"
check "create deferred with its correlation id" logged writer "[cid-r1-create] DEFER tasks.created task=r-1"
check "update queued behind the create" logged writer "[cid-r1-status] QUEUE tasks.updated task=r-1 behind 1 deferred event(s)"
check "second update queued behind both" logged writer "[cid-r1-title] QUEUE tasks.updated task=r-1 behind 2 deferred event(s)"
check "update of an existing task deferred without waiting" logged writer "[cid-base-2] DEFER tasks.updated task=base — not tried: the tasks store is down"
check "retrier logs RETRY attempt=1/5 with the correlation id" \
  wait_until 10 replay_logged "[cid-r1-create] RETRY attempt=1/5 task=r-1 — KV GET task:r-1 failed"
check "other tasks' attempts are counted against the same probe" \
  wait_until 5 replay_logged "[cid-r2-create] RETRY attempt=1/5 task=r-2 — not tried: the tasks store failed moments ago"
check "retrier logs RETRY attempt=2/5" \
  wait_until 10 replay_logged "[cid-r1-create] RETRY attempt=2/5 task=r-1"
check "queued updates are not tried on their own" \
  bash -c "! grep -q 'cid-r1-status\] RETRY' '$OUT/logs/retrier_stdout.txt' '$OUT/logs/writer_stdout.txt'"
check "reads say the store is unavailable (503)" is \
  "$(status_of /api/tasks/base)" "503"
check "kv-read logs the failed read, with the request's correlation id" \
  grep -qE '^\[[^]]+\] RPC getTask\(base\) → error store_unavailable: .* \([0-9]+ ms\)$' "$OUT/logs/web_stdout.txt"

echo "==> Redis accepts commands again: the outbox drains into the right final state"
accept
back=$(date +%s.%N)
check "outbox empties" wait_until 40 outbox_empty
drained=$(python3 -c "import time; print(f'{time.time() - $back:.1f}')")
echo "       outbox drained ${drained}s after Redis came back"
check "r-1 is create + both updates, in order" is \
  "$(field r-1 '[.title,.status,.version]|join(",")')" "Renamed during outage,in_progress,3"
check "r-2 created" is "$(field r-2 '[.title,.version]|join(",")')" "Second,1"
check "base update applied" is "$(field base '[.status,.version]|join(",")')" "completed,2"
check "pending counters cleaned up" wait_until 5 bash -c "[[ \$(sqlite3 -cmd '.timeout 5000' '$WORK/local.db' \"SELECT count(*) FROM spin_key_value WHERE key LIKE 'pending:%'\") == 0 ]]"
check "no dead letters" is "$(api /api/dead-letters | jq '.deadLetters|length')" "0"
check "RETRY OK logged for the queued update" replay_logged "[cid-r1-title] RETRY attempt=1/5 task=r-1 — OK"
check "store logged UP again" replay_logged "STORE tasks is UP again"
api / >"$OUT/home-after-drain.html"
check "listing shows the replayed tasks" grep -q "Renamed during outage" "$OUT/home-after-drain.html"

echo "==> Redis refusing past five attempts: dead letters, then a signed replay"
refuse
nats_tool request tasks.created '{"id":"d-1","title":"Doomed create","correlationId":"cid-d1-create"}' >/dev/null
nats_tool request tasks.updated '{"id":"d-1","status":"completed","correlationId":"cid-d1-update"}' >/dev/null
echo "       waiting for 1s + 3s + 10s + 20s + 30s of retries…"
check "DEAD after 5 attempts, with the correlation id" \
  wait_until 90 replay_logged "[cid-d1-create] DEAD task=d-1 after 5 attempts"
check "the queued update follows it into the dead letters" replay_logged "[cid-d1-update] DEAD task=d-1 — held behind dlq:"
check "outbox empty" is "$(outbox)" "0"
dl=$(api /api/dead-letters)
echo "$dl" | jq . >"$OUT/dead-letters.json"
check "two dead letters listed" is "$(echo "$dl" | jq '.deadLetters|length')" "2"
check "oldest first: the create, with reason and attempts" is \
  "$(echo "$dl" | jq -r '.deadLetters[0]|[.correlationId,.subject,.attempts,(.reason|startswith("gave up after 5 attempts"))]|join(",")')" \
  "cid-d1-create,tasks.created,5,true"
check "every error kept (writer's + 5 retries)" is "$(echo "$dl" | jq '.deadLetters[0].errors|length')" "6"
check "the held update says why" is \
  "$(echo "$dl" | jq -r '.deadLetters[1]|[.correlationId,(.reason|startswith("held back"))]|join(",")')" "cid-d1-update,true"

accept
create_id=$(echo "$dl" | jq -r '.deadLetters[0].id')
update_id=$(echo "$dl" | jq -r '.deadLetters[1].id')
check "replay with an expired signature is 401 expired" is "$(replay "$create_id" "$(( $(date +%s) - 60 ))")" "401"
check "  … reason code" is "$(jq -r .error.code "$OUT/replay-$create_id.json")" "expired"
signed_at=$(date +%s)
check "replay the create (signed) is 202" is "$(replay "$create_id" "$signed_at")" "202"
check "replay the update (signed) is 202" is "$(replay "$update_id" "$signed_at")" "202"
# Signed anew, a second before the first (the same signature twice would be 409 replayed;
# "now - 1" was the first's second whenever the clock ticked in between).
check "replaying twice is 404" is "$(replay "$create_id" $((signed_at - 1)))" "404"
check "replayed events drain" wait_until 60 outbox_empty
check "d-1 ends as create + update" is "$(field d-1 '[.title,.status,.version]|join(",")')" "Doomed create,completed,2"
check "dead letters gone" is "$(api /api/dead-letters | jq '.deadLetters|length')" "0"
check "replay logged with the request's correlation id" grep -q "REPLAY dlq:$create_id → outbox:" "$OUT/logs/web_stdout.txt"

# The writer reaches Redis through trigger-nats's own client (plugins/trigger-nats/redis): a
# Redis that does not answer fails the call after 2 s, below the writer's 5 s handler
# deadline (the deadline itself is tested in plugins/trigger-nats/core), and a stopped Redis
# fails it after one round of reconnection attempts (about 3 s).
echo "==> Redis frozen (SIGSTOP): the writer's call gives up after 2 s, the event is parked"
check "the store counts as up again (a retry succeeded)" is "$(kv_count "$WORK" default 'health:%')" "0"
kill -STOP "$REDIS_PID"
t0=$(date +%s%N)
check "a create is acknowledged although Redis does not answer" is \
  "$(nats_tool request tasks.created '{"id":"f-1","title":"Published while Redis is frozen","correlationId":"cid-f1"}' --timeout-ms 20000)" '{"ok":true}'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "  … after the client's 2 s response timeout, before the 5 s handler deadline ($ms ms)" \
  test "$ms" -ge 1900 -a "$ms" -lt 4500
check "the writer parked it" logged writer "[cid-f1] DEFER tasks.created task=f-1"
kill -CONT "$REDIS_PID"
check "f-1 is applied once Redis answers" wait_until 60 outbox_empty

echo "==> Redis stopped: the writer's calls fail within seconds, the events are parked, nothing is lost"
check "the store counts as up again" wait_until 30 bash -c "[[ \$(sqlite3 -cmd '.timeout 5000' '$WORK/local.db' \"SELECT count(*) FROM spin_key_value WHERE key LIKE 'health:%'\") == 0 ]]"
stop_redis
t0=$(date +%s%N)
check "a create is acknowledged although Redis is stopped" is \
  "$(nats_tool request tasks.created '{"id":"s-1","title":"Published while Redis is stopped","correlationId":"cid-s1"}' --timeout-ms 20000)" '{"ok":true}'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# The first call finds the connection dead and waits for one round of reconnection attempts
# (about 3 s) before failing: still well before the handler deadline.
check "  … before the 5 s handler deadline ($ms ms)" test "$ms" -lt 4500
check "the writer parked it and marked the store down" logged writer "[cid-s1] STORE tasks is DOWN: KV GET task:s-1 failed: store unavailable"
nats_tool request tasks.updated '{"id":"s-1","status":"completed","correlationId":"cid-s2"}' >/dev/null
nats_tool request tasks.created '{"id":"s-2","title":"Also while stopped","correlationId":"cid-s3"}' >/dev/null
check "the next events defer at once" is "$(outbox)" "3"
# No event comes after Redis is back: the writer's tick (tick_ms, an empty call each second,
# on trigger-nats's Redis client) replays the backlog; the cron retrier's Spin Redis client
# may wait out its 60 s reconnection backoff (docs/decisions.md). The bound is the one
# delivery keeps after any fault: ack_wait_ms (15 s) + 5 s. Redis stays down 5 s more, long
# enough for a client that tried it during the outage (the cron retrier probes it each
# second) to have spent its two early reconnection attempts.
sleep 5
start_redis
t0=$(date +%s%N)
check "with no new event, the backlog is applied within 20 s of Redis's return" wait_until 20 outbox_empty
echo "       outbox empty $(( ($(date +%s%N) - t0) / 1000000 )) ms after Redis started again"
# Read through the web (http trigger): Spin 4.0.2's own Redis store, which may wait out its
# 60 s reconnection backoff after the outage (docs/decisions.md).
s1() { is "$(field s-1 '[.title,.status,.version]|join(",")')" "Published while Redis is stopped,completed,2"; }
check "s-1 is create + update, in order" wait_until 90 s1
check "s-2 created" is "$(field s-2 '.version')" "1"
check "f-1 created" is "$(field f-1 '.version')" "1"

summary e2e-retry
