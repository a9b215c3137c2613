#!/usr/bin/env bash
# Event-side e2e suite: real nats-server, real `spin up` with the trigger-nats
# plugin built from this tree (checked: see require_spin_and_plugin in lib.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools curl jq python3 sqlite3

suite_dirs e2e-nats
use_core_mode   # its checks read the writer's replies to requests (core NATS)
SECOND_PID=""
cleanup() {
  [[ -n "$SECOND_PID" ]] && { stop_spin; SPIN_PID=$SECOND_PID; }
  stop_all
}
on_exit cleanup

build_tools
start_app "$WORK" "$OUT/logs"
echo "==> spin up on 127.0.0.1:$PORT (NATS $NATS_URL)"
WLOG="$OUT/logs/writer_stdout.txt"
check "spin runs this tree's trigger-nats build" \
  grep -qF "trigger-nats: version $("$ROOT/scripts/install-plugin.sh" --version) " "$OUT/logs/spin-up.txt"

echo "==> create, update, delete in both payload shapes"
check "create (flat) is acknowledged" is "$(nats_tool request tasks.created '{"id":"n-1","title":"Flat shape","correlationId":"cid-flat"}')" '{"ok":true}'
check "create (envelope) is acknowledged" is "$(nats_tool request tasks.created '{"correlationId":"cid-env","data":{"id":"n-2","title":"Envelope shape","status":"in-progress"}}')" '{"ok":true}'
check "flat create readable" is "$(field n-1 '[.title,.status,.version]|join(",")')" "Flat shape,pending,1"
check "envelope create readable" is "$(field n-2 '[.title,.status]|join(",")')" "Envelope shape,in_progress"
nats_tool request tasks.updated '{"id":"n-1","status":"completed","description":"done"}' >/dev/null
nats_tool request tasks.updated '{"data":{"id":"n-2","title":"Renamed"}}' >/dev/null
check "flat update merged" is "$(field n-1 '[.title,.status,.description,.version]|join(",")')" "Flat shape,completed,done,2"
check "envelope update merged" is "$(field n-2 '[.title,.status,.version]|join(",")')" "Renamed,in_progress,2"
check "updates show on /" grep -q "Renamed" <(api /)
nats_tool request tasks.deleted '{"id":"n-1"}' >/dev/null
nats_tool request tasks.deleted '{"data":{"id":"n-2"}}' >/dev/null
check "flat delete removed the task" is "$(status_of /api/tasks/n-1)" 404
check "envelope delete removed the task" is "$(status_of /api/tasks/n-2)" 404
# The first page may be served from the instance's memory for 250 ms (tasks_site::memo).
check "deletes are gone from / (within the 250 ms it may be remembered)" \
  wait_until 2 bash -c '! grep -q "Renamed" <(curl -s "$1")' _ "http://127.0.0.1:$PORT/"
check "a delete of a missing task is acknowledged" is "$(nats_tool request tasks.deleted '{"id":"n-1"}')" '{"ok":true}'
nats_tool pub tasks.created '{"id":"n-3","title":"Header id"}' -H "X-Correlation-Id: cid-header"
sleep 0.5
check "correlation id from the payload is logged" logged writer "[cid-flat] CREATE task=n-1"
check "correlation id from the header is logged" logged writer "[cid-header] CREATE task=n-3"
check "KV writes are logged with timings" grep -qE '^\[cid-env\] KV PUT task:n-2 — OK \([0-9]+ ms\)$' "$WLOG"

echo "==> 20 malformed events are dead-lettered"
before=$(kv_count "$WORK" default 'dlq:%')
printf '\x00\xff\xfe\x01garbage' >"$WORK/garbage.bin"
head -c 3000 /dev/urandom >"$WORK/random.bin"
long=$(printf 'x%.0s' $(seq 10000))
bad_events=(
  "tasks.created|{not json"
  "tasks.created|@$WORK/garbage.bin"
  "tasks.created|@$WORK/random.bin"
  "tasks.created|"
  "tasks.created|{}"
  "tasks.created|[1,2,3]"
  "tasks.created|\"just a string\""
  "tasks.created|{\"title\":\"no id\"}"
  "tasks.created|{\"id\":42,\"title\":\"numeric id\"}"
  "tasks.created|{\"id\":\"bad id\",\"title\":\"space in id\"}"
  "tasks.created|{\"id\":\"m-1\"}"
  "tasks.created|{\"id\":\"m-1\",\"title\":\"   \"}"
  "tasks.created|{\"id\":\"m-1\",\"title\":\"$long\"}"
  "tasks.created|{\"id\":\"m-1\",\"title\":7}"
  "tasks.created|{\"id\":\"m-1\",\"title\":\"x\",\"status\":\"done\"}"
  "tasks.created|{\"id\":\"m-1\",\"title\":\"x\",\"status\":false}"
  "tasks.created|{\"id\":\"m-1\",\"titel\":\"typo\"}"
  "tasks.created|{\"data\":[]}"
  "tasks.updated|{\"id\":\"never-created\",\"title\":\"x\"}"
  "tasks.renamed|{\"id\":\"m-1\",\"title\":\"x\"}"
)
acks_ok=0
for ev in "${bad_events[@]}"; do
  subject=${ev%%|*}; payload=${ev#*|}
  [[ -z "$payload" ]] && payload="@/dev/null"
  [[ "$(nats_tool request "$subject" "$payload")" == '{"ok":true}' ]] && acks_ok=$((acks_ok + 1))
done
after=$(kv_count "$WORK" default 'dlq:%')
check "all 20 malformed events were acknowledged (recorded, not redelivered)" is "$acks_ok" 20
check "each has a dead-letter record" is "$((after - before))" 20
sqlite3 -cmd ".timeout 5000" "$WORK/local.db" "SELECT CAST(value AS TEXT) FROM spin_key_value WHERE store='default' AND key LIKE 'dlq:%' ORDER BY key" >"$OUT/dead-letters.jsonl"
check "every dead letter has a reason, subject and correlation id" is "$(jq -s '[.[]|select((.reason|length)>0 and (.subject|length)>0 and (.correlationId|length)>0)]|length' "$OUT/dead-letters.jsonl")" 20
check "binary payloads are kept (base64)" is "$(jq -s '[.[]|select(.payloadBase64)]|length' "$OUT/dead-letters.jsonl")" 2
check "the 10 kB title reason names the limit" grep -q "title must be at most 200 characters (got 10000)" "$OUT/dead-letters.jsonl"
check "REJECT lines are logged" is "$(grep -c '] REJECT ' "$WLOG")" 20
check "no task was written by a malformed event" is "$(status_of /api/tasks/m-1)" 404
check "the app still serves" is "$(status_of /health)" 200
check "a valid event afterwards is applied" is "$(nats_tool request tasks.created '{"id":"after-bad","title":"Still working"}')" '{"ok":true}'
check "and readable" is "$(field after-bad .title)" "Still working"

echo "==> SIGTERM during a burst loses no acknowledged message"
nats_tool burst --count 3000 --prefix sig- --acked "$WORK/acked.txt" --in-flight 16 >"$OUT/burst.txt" 2>&1 &
burst_pid=$!
sleep 1
kill -TERM "$SPIN_PID"
wait "$SPIN_PID" 2>/dev/null || true
SPIN_PID=""
wait "$burst_pid" || true
acked=$(grep -c . "$WORK/acked.txt" || true)
sqlite3 -cmd ".timeout 5000" "$WORK/tasks.db" "SELECT substr(key, 6) FROM spin_key_value WHERE store='tasks' AND key LIKE 'task:sig-%'" | sort >"$WORK/stored.txt"
missing=$(comm -23 <(sort "$WORK/acked.txt" | grep .) "$WORK/stored.txt" | wc -l)
echo "       $acked of 3000 acknowledged before shutdown; $(wc -l <"$WORK/stored.txt") stored"
check "some events were acknowledged before SIGTERM" test "$acked" -gt 0
check "some were still unacknowledged at SIGTERM (the test stopped a live burst)" test "$acked" -lt 3000
check "every acknowledged event is in the store" is "$missing" 0

echo "==> two instances in one queue group apply each of 1,000 events exactly once"
PORT=$(free_port); PORT2=$(free_port)
start_spin "$WORK" "$PORT2" "$OUT/logs-b" state-b
SECOND_PID=$SPIN_PID
start_spin "$WORK" "$PORT" "$OUT/logs-a" state-a
wait_http "http://127.0.0.1:$PORT/health" 60
wait_http "http://127.0.0.1:$PORT2/health" 60
wait_log "$OUT/logs-a/spin-up.txt" "writer ← tasks" 30
wait_log "$OUT/logs-b/spin-up.txt" "writer ← tasks" 30
check "1,000 events acknowledged" nats_tool burst --count 1000 --prefix q- --request --in-flight 16
a=$(grep -c '] CREATE task=q-' "$OUT/logs-a/writer_stdout.txt" || true)
b=$(grep -c '] CREATE task=q-' "$OUT/logs-b/writer_stdout.txt" || true)
echo "       instance A applied $a, instance B applied $b"
check "both instances took a share" test "$a" -gt 0 -a "$b" -gt 0
check "each event was applied once in total" is "$((a + b))" 1000
check "1,000 tasks stored" is "$(kv_count "$WORK" tasks 'task:q-%')" 1000
check "none was applied twice (all at version 1)" is "$(sqlite3 -cmd ".timeout 5000" "$WORK/tasks.db" "SELECT count(*) FROM spin_key_value WHERE store='tasks' AND key LIKE 'task:q-%' AND json_extract(CAST(value AS TEXT), '\$.version') = 1")" 1000
check "both instances list all of them" is "$(curl -s "http://127.0.0.1:$PORT2/api/tasks?limit=200&cursor=$(curl -s "http://127.0.0.1:$PORT/api/tasks?limit=1" | jq -r .nextCursor)" | jq '.tasks|length')" 200

echo "==> an orphaned trigger-nats stops: kill -9 of spin up alone; SIGTERM with NATS gone"
stop_spin; SPIN_PID=$SECOND_PID; stop_spin; SECOND_PID=""
start_app_on() { # LOG_DIR: spin up on a free port with the stores in WORK (sets PORT, SPIN_PID)
  PORT=$(free_port)
  start_spin "$WORK" "$PORT" "$1" "state-$(basename "$1")"
  wait_http "http://127.0.0.1:$PORT/health" 60
  wait_log "$1/spin-up.txt" "writer ← tasks" 30
}
check_trigger_stops start_app_on
start_nats "$(free_port)" "$WORK/nats-server-2.log"

echo "==> a misspelt [[trigger.nats]] field is refused by name"
mkdir -p "$WORK/bad-manifest"
sed -e "s|source = \"target/|source = \"$ROOT/target/|" -e 's|^queue_group = |queue = |' \
  "$SPIN_MANIFEST" >"$WORK/bad-manifest/spin.toml"
set +e
timeout 60 spin up --from "$WORK/bad-manifest/spin.toml" --runtime-config-file "$WORK/runtime-config.toml" \
  --state-dir "$WORK/bad-state" --listen "127.0.0.1:$(free_port)" >"$OUT/bad-manifest.txt" 2>&1
code=$?
set -e
check "spin up fails on the unknown field" test "$code" -ne 0 -a "$code" -ne 124
check "the error names the field" grep -q 'unknown field `queue`' "$OUT/bad-manifest.txt"

summary e2e-nats
