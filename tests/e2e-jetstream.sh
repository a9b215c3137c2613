#!/usr/bin/env bash
# JetStream e2e suite: the writer on a durable pull consumer (the app's
# manifest as shipped), a real
# `nats-server -js`, and an independent publisher (PyPI nats-py,
# tests/js_publish.py) that awaits each stream acknowledgement.
#   (a) events published while the app is stopped are all applied once it starts;
#   (b) `kill -9` of the app in the middle of a burst of creates + 2 updates per
#       task, then a restart: every task ends at version 3 with its last title;
#   (c) two instances share the durable consumer and the stores; `kill -9` of one
#       mid-burst: every event applied once, each task's events in publish order;
#   (d) an event on a deeper subject is a dead letter with the reason within 1 s; hostile
#       events are dead-lettered once each, never redelivered in a loop;
#   (e) no orphaned trigger-nats: after `kill -9` of spin up alone, and on SIGTERM
#       with the NATS server stopped;
#   a component exporting only handle-message is called once per message.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools curl jq python3 sqlite3
python3 -c 'import nats' 2>/dev/null ||
  cannot_run "the Python NATS client is not installed" "scripts/python-env.sh (then run through make test, which puts it on PATH)"

suite_dirs e2e-jetstream
on_exit stop_all

# The app's manifest as shipped: the writer on the JetStream stream TASKS,
# created on first start.
app_manifest jetstream "$WORK/spin.toml"
export SPIN_MANIFEST="$WORK/spin.toml"
write_runtime_config "$WORK"

# start_js_nats: the suite's nats-server (JetStream, its store kept across restarts).
NATS_PORT=$(free_port)
start_js_nats() { start_nats "$NATS_PORT" "$WORK/nats-server.log"; }
# up LOG_DIR [STATE]: spin up on a free port, ready when the writer pulls.
up() {
  PORT=$(free_port)
  start_spin "$WORK" "$PORT" "$1" "${2:-state}"
  wait_http "http://127.0.0.1:$PORT/health" 60
  wait_log "$1/spin-up.txt" "writer ← tasks" 30
}
publish() { python3 "$ROOT/tests/js_publish.py" --server "$NATS_URL" "$@"; }
# count_at_version PREFIX V: tasks PREFIX* in the store at version V with title "<id> vV".
count_at_version() {
  sqlite3 -cmd ".timeout 5000" "$WORK/tasks.db" "SELECT count(*) FROM spin_key_value
    WHERE store='tasks' AND key LIKE 'task:$1%'
      AND json_extract(CAST(value AS TEXT), '\$.version') = $2
      AND json_extract(CAST(value AS TEXT), '\$.title') = substr(key, 6) || ' v$2'" 2>/dev/null
}
# at_version PREFIX N V: N tasks PREFIX* in the store, every one at version V.
at_version() { [[ "$(count_at_version "$1" "$3")" == "$2" ]]; }
acked_at_least() { [[ -f $WORK/acked.txt ]] && (($(wc -l <"$WORK/acked.txt") >= $1)); }
tasks_like() { kv_count "$WORK" tasks "task:$1%"; }
is_count() { [[ "$(tasks_like "$1")" == "$2" ]]; }

build_tools
start_js_nats
echo "==> first start creates the stream and the durable consumer"
up "$OUT/logs-1"
check "the stream was created" grep -q 'created stream "TASKS"' "$OUT/logs-1/spin-up.txt"
check "the durable consumer was created" grep -q 'created durable consumer "spin-tasks-writer"' "$OUT/logs-1/spin-up.txt"
check "the plugin says it pulls every subject of the stream" grep -q "writer ← tasks.> (JetStream: stream TASKS" "$OUT/logs-1/spin-up.txt"
stop_spin

echo "==> (a) 5,000 events published while the app is stopped"
check "5,000 events acknowledged by the stream" publish --tasks 5000 --prefix off-
up "$OUT/logs-2"
check "all 5,000 applied after the start" wait_until 120 at_version off- 5000 1
echo "       $(grep -c '\] CREATE task=off-' "$OUT/logs-2/writer_stdout.txt" || true) CREATE lines, $(grep -c 'SKIP' "$OUT/logs-2/writer_stdout.txt" || true) SKIP lines"

echo "==> (b) kill -9 in the middle of a burst (3,334 tasks: create + 2 updates each = 10,002 events)"
publish --tasks 3334 --updates 2 --prefix k- --acked "$WORK/acked.txt" >"$WORK/burst.txt" 2>&1 &
burst=$!
# A fifth of the burst in the stream: the writer keeps up with the publisher, so it is
# part-way through, whatever its speed.
wait_until 60 acked_at_least 2000
kill -KILL -- "-$SPIN_PID"
SPIN_PID=""
applied_before=$(count_at_version k- 3)
wait "$burst"
check "the whole burst was acknowledged by the stream" grep -q "published 10002 of 10002" "$WORK/burst.txt"
echo "       $(tasks_like k-) tasks stored, $applied_before of them with all three events, when the app was killed"
check "the app was killed mid-burst" test "$applied_before" -lt 3334
up "$OUT/logs-3"
check "every task ends at version 3 with its last title" wait_until 180 at_version k- 3334 3
check "no task went past version 3 (none applied twice)" is "$(sqlite3 -cmd ".timeout 5000" "$WORK/tasks.db" \
  "SELECT count(*) FROM spin_key_value WHERE store='tasks' AND key LIKE 'task:k-%' AND json_extract(CAST(value AS TEXT), '\$.version') > 3")" 0
echo "       redeliveries skipped after the restart: $(grep -c '\] SKIP ' "$OUT/logs-3/writer_stdout.txt" || true)"

echo "==> (d) an event on a deeper subject is a dead letter with the reason within 1 s"
took=$(python3 - "$NATS_URL" "$WORK/local.db" <<'PY'
import asyncio, sqlite3, sys, time, nats
async def main():
    nc = await nats.connect(sys.argv[1]); js = nc.jetstream()
    start = time.monotonic()
    await js.publish("tasks.created.late", b'{"id":"h-0","title":"deeper"}')
    await nc.drain()
    db = sqlite3.connect(sys.argv[2], timeout=5)
    while time.monotonic() - start < 10:
        found = db.execute("SELECT count(*) FROM spin_key_value WHERE store='default' AND key LIKE 'dlq:%' "
                           "AND CAST(value AS TEXT) LIKE '%unknown subject%tasks.created.late%'").fetchone()[0]
        if found:
            print(f"{time.monotonic() - start:.3f}")
            return
        await asyncio.sleep(0.02)
    print("never")
asyncio.run(main())
PY
)
within_a_second() { awk -v t="$1" 'BEGIN { exit !(t != "never" && t <= 1.0) }'; }
check "  … published to stored as a dead letter in $took s" within_a_second "$took"

echo "==> (d) hostile events are dead-lettered once each; none holds back the events after it"
before=$(kv_count "$WORK" default 'dlq:%')
# Deeper subjects (a typo such as tasks.created.x) are stored by the stream (tasks.>):
# the writer takes them too and dead-letters them. A publisher's spin-nats-* header is
# not delivery metadata: a forged sequence must not make f-4 ignore its update.
python3 - "$NATS_URL" <<'PY'
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1]); js = nc.jetstream()
    for subject, payload in [
        ("tasks.q.r", b'{"id":"h-5","title":"deeper"}'),
        ("tasks.created.x", b'{"id":"h-6","title":"typo"}'),
        ("tasks.created", b"{not json"),
        ("tasks.created", b'{"id":"h-1","title":"a\\u0000b"}'),
        ("tasks.created", b'{"correlationId":{"x":1},"data":{"id":"h-2","title":"x"}}'),
        ("tasks.updated", b'{"id":"ghost","title":"x"}'),
        ("tasks.renamed", b'{"id":"h-3"}'),
    ]:
        await js.publish(subject, payload)
    forged = {"spin-nats-stream-sequence": "18446744073709551615", "Spin-Nats-Delivered": "1"}
    await js.publish("tasks.created", b'{"id":"f-4","title":"f-4 v1"}', headers=forged)
    await js.publish("tasks.updated", b'{"id":"f-4","title":"f-4 v2"}')
    for i in range(100):
        await js.publish("tasks.created", b'{"id":"after-%03d","title":"x"}' % i)
    await nc.drain()
asyncio.run(main())
PY
dead() { [[ "$(kv_count "$WORK" default 'dlq:%')" == "$((before + 7))" ]]; }
check "7 hostile events → 7 dead letters" wait_until 30 dead
check "  … the deeper subjects among them, with the reason" is "$(sqlite3 -cmd ".timeout 5000" "$WORK/local.db" \
  "SELECT count(*) FROM spin_key_value WHERE store='default' AND key LIKE 'dlq:%' AND (
     CAST(value AS TEXT) LIKE '%unknown subject%tasks.q.r%' OR CAST(value AS TEXT) LIKE '%unknown subject%tasks.created.x%')")" 2
check "the 100 creates published after them are all applied" wait_until 10 is_count after- 100
check "a forged spin-nats-stream-sequence header changes nothing (f-4 took its update)" wait_until 10 at_version f-4 1 2
sleep 3
check "  … and no more after a while (none redelivered in a loop)" dead
check "none became a task" is "$(tasks_like h-)" 0
check "the app keeps serving" is "$(status_of /api/tasks/off-000001)" 200

echo "==> (c) two instances share the consumer; kill -9 of one in the middle of a burst"
stop_spin
up "$OUT/logs-c2" state-c2
SECOND_PID=$SPIN_PID SECOND_PORT=$PORT
up "$OUT/logs-c1" state-c1
publish --tasks 3334 --updates 2 --prefix two- --acked "$WORK/acked-c.txt" >"$WORK/burst-c.txt" 2>&1 &
burst=$!
wait_until 60 test -s "$WORK/acked-c.txt"
sleep 2
killed_at=$(now)
kill -KILL -- "-$SPIN_PID"
SPIN_PID=""
wait "$burst"
check "the whole burst was acknowledged by the stream" grep -q "published 10002 of 10002" "$WORK/burst-c.txt"
c1=$(grep -c '\] CREATE task=two-' "$OUT/logs-c1/writer_stdout.txt" || true)
echo "       the killed instance had applied $c1 creates"
check "the survivor applies everything: every task at version 3 with its last title" \
  wait_until 180 at_version two- 3334 3
done_at=$(now)
c2=$(grep -c '\] CREATE task=two-' "$OUT/logs-c2/writer_stdout.txt" || true)
echo "       the survivor applied $c2 creates; all applied $(python3 -c "print(round($done_at-$killed_at))") s after the kill"
check "both instances took part" test "$c1" -gt 0 -a "$c2" -gt 0
check "no task went past version 3 (none applied twice)" is "$(sqlite3 -cmd ".timeout 5000" "$WORK/tasks.db" \
  "SELECT count(*) FROM spin_key_value WHERE store='tasks' AND key LIKE 'task:two-%' AND json_extract(CAST(value AS TEXT), '\$.version') > 3")" 0
check "no update came before its create (no dead letter for these tasks)" \
  is "$(kv_count "$WORK" default 'dlq:%')" "$((before + 7))"
SPIN_PID=$SECOND_PID PORT=$SECOND_PORT; stop_spin

echo "==> a component exporting only handle-message (bench/writer-no-order-check) gets one message per call"
cargo build --quiet --target wasm32-wasip2 --release -p bench-writer-no-order-check
sed "s|$ROOT/target/wasm32-wasip2/release/tasks_writer.wasm|$ROOT/target/wasm32-wasip2/release/bench_writer_no_order_check.wasm|" \
  "$WORK/spin.toml" >"$WORK/spin-ticked.toml"
# The app's entry calls the writer with no message each second (tick_ms): a component without
# handle-batch cannot take such calls, and the trigger refuses to start, naming it.
PORT=$(free_port)
SPIN_MANIFEST="$WORK/spin-ticked.toml" start_spin "$WORK" "$PORT" "$OUT/logs-ticked" state-ticked
check "tick_ms on a handle-message component: the trigger refuses to start, naming it" \
  wait_log "$OUT/logs-ticked/spin-up.txt" 'component "writer" has tick_ms but does not export handle-batch' 30
stop_spin
sed '/^tick_ms = /d' "$WORK/spin-ticked.toml" >"$WORK/spin-single.toml"
SPIN_MANIFEST="$WORK/spin-single.toml" up "$OUT/logs-single" state-single
check "the plugin says which export it calls" grep -q "component writer exports handle-message: one message per call" "$OUT/logs-single/spin-up.txt"
check "200 events acknowledged by the stream" publish --tasks 200 --prefix one-
check "all 200 applied" wait_until 60 at_version one- 200 1
stop_spin

echo "==> (e) no orphaned trigger-nats"
# JetStream app on the suite's server; the server comes back on the same port and store.
js_app_on() { up "$1" "state-$(basename "$1")"; }
check_trigger_stops js_app_on
start_js_nats

summary e2e-jetstream
