#!/usr/bin/env bash
# Cloudflare e2e suite: real `spin up` with runtime-config.cloudflare.toml,
# the `tasks` store on Cloudflare's own emulator (miniflare's Local Explorer
# KV REST API) behind our fault-injecting, counting proxy (tools/cf-fault-proxy).
# Checks publish → visible, the bulk flush to Cloudflare, cached reads costing
# no calls, 429s during a flush, the signed purge (one good, six bad), and a
# missing variable named on the first request, JetStream batches on this backend, and the
# read side started on its own from deploy/read-side/spin.toml.
# Cannot run without Node.js or nats-py: see
# cannot_run in lib.sh (fails under CI=true, else `SKIPPED: …` with the fix).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools curl jq python3 sqlite3 node npm
python3 -c 'import nats' 2>/dev/null ||
  cannot_run "the Python NATS client is not installed" "scripts/python-env.sh (then run through make test, which puts it on PATH)"

suite_dirs e2e-cloudflare; mkdir -p "$OUT/logs"
use_core_mode   # its checks read the writer's replies to requests (core NATS)
on_exit stop_all

start_cloudflare_app "$WORK" "$OUT"
echo "==> miniflare at $MF_ORIGIN (namespace $NAMESPACE), proxy at $PROXY, spin up on :$PORT"
export SPIN_VARIABLE_HMAC_KEY  # set by start_cloudflare_app; tasks-sign reads it

fault() { curl -sS -X POST -H 'content-type: application/json' -d "$1" "$PROXY/__proxy/faults" >/dev/null; }
# purge BODY [TIME] [KEY] [SIGNED_PATH]: signed POST /api/cache/purge; prints the status.
purge() {
  local body=$1 t=${2:-} key=${3:-$SPIN_VARIABLE_HMAC_KEY} signed=${4:-/api/cache/purge}
  curl -sS -o "$OUT/purge.json" -w '%{http_code}' -X POST \
    -H @<(SPIN_VARIABLE_HMAC_KEY=$key TASKS_SIGN_TIME=$t "$ROOT/target/release/tasks-sign" POST "$signed" "$body") \
    --data-binary "$body" "http://127.0.0.1:$PORT/api/cache/purge"
}

echo "==> publish → visible, then flushed to Cloudflare in bulk"
check "create acknowledged" is "$(nats_tool request tasks.created '{"id":"cf-1","title":"In Workers KV","correlationId":"cid-cf-1"}')" '{"ok":true}'
check "visible at once (working copy)" is "$(field cf-1 '[.title,.version]|join(",")')" "In Workers KV,1"
check "flushed to Cloudflare within seconds" wait_until 15 flushed
check "the document is in Cloudflare" is "$(remote_value task:cf-1 | jq -r .title)" "In Workers KV"
check "the flush is logged" logged retrier "FLUSH"
nats_tool request tasks.updated '{"id":"cf-1","status":"completed","correlationId":"cid-cf-2"}' >/dev/null
check "update visible at once" is "$(field cf-1 '[.status,.version]|join(",")')" "completed,2"
check "update flushed" wait_until 15 bash -c "[[ \$(curl -sS '$MF_BASE/storage/kv/namespaces/$NAMESPACE/values/task:cf-1' | jq -r .version) == 2 ]]"

echo "==> 100 events cost a few calls (coalesced bulk writes, one per retrier run)"
wait_until 15 flushed
cf_reset_stats
nats_tool burst --count 100 --prefix cfb- --request >/dev/null
check "all 100 flushed" wait_until 30 flushed
check "all 100 in Cloudflare" is "$(remote_value task:cfb-000099 | jq -r .id)" "cfb-000099"
s=$(cf_stats); echo "$s" >"$OUT/calls-100-events.json"
echo "       calls for 100 events: $(echo "$s" | jq -c .)"
# One bulk write per retrier run (each second) the burst spans.
check "at most 10 calls for 100 events" test "$(echo "$s" | jq .total)" -le 10

echo "==> reads: a cached GET / costs no Cloudflare call"
api / >/dev/null
cf_reset_stats
api / >/dev/null; api /api/tasks >/dev/null; api /api/tasks/cf-1 >/dev/null
check "cached reads: 0 calls" is "$(cf_calls)" "0"
check "purge all (signed) is 200" is "$(purge '{"all":true}')" "200"
cf_reset_stats
api / >"$OUT/home-uncached.html"
uncached=$(cf_calls); echo "       calls for an uncached GET /: $uncached ($(cf_stats | jq -c .))"
check "uncached GET /: at most 3 calls (stamp, list on a new stamp, bulk get)" test "$uncached" -le 3
check "the page lists the tasks" grep -q "In Workers KV" "$OUT/home-uncached.html"

echo "==> a 429 during a flush leaves the writes pending, then they go"
fault '{"status":429,"retryAfter":1,"count":2,"path":"/bulk","method":"PUT"}'
nats_tool request tasks.created '{"id":"cf-429","title":"Rate limited","correlationId":"cid-429"}' >/dev/null
check "visible at once despite the 429" is "$(field cf-429 .title)" "Rate limited"
check "the failed flush is logged with its attempt" wait_until 10 logged retrier "FLUSH attempt=1/5"
check "flushed once the 429s pass" wait_until 30 flushed
check "in Cloudflare" is "$(remote_value task:cf-429 | jq -r .title)" "Rate limited"
fault '{"clear":true}'

echo "==> signed purge: one good request, six bad ones"
check "good: 200" is "$(purge '{"taskIds":["cf-1"]}')" "200"
check "  … says what it purged" is "$(jq 'has("purged")' "$OUT/purge.json")" "true"
# One signed request sent twice (read on the way and sent again within its window).
signed_once=$("$ROOT/target/release/tasks-sign" POST /api/cache/purge '{"taskIds":["cf-1"],"nonce":"twice"}')
twice=""
for _ in 1 2; do
  twice+=" $(curl -sS -o "$OUT/purge.json" -w '%{http_code}' -X POST -H @<(echo "$signed_once") \
    --data-binary '{"taskIds":["cf-1"],"nonce":"twice"}' "http://127.0.0.1:$PORT/api/cache/purge")"
done
check "the same signed request twice: 200, then 409" is "$twice" " 200 409"
check "  … replayed" is "$(jq -r .error.code "$OUT/purge.json")" "replayed"
check "missing signature: 401" is "$(curl -sS -o "$OUT/purge.json" -w '%{http_code}' -X POST --data-binary '{"all":true}' "http://127.0.0.1:$PORT/api/cache/purge")" "401"
check "  … missing_signature" is "$(jq -r .error.code "$OUT/purge.json")" "missing_signature"
check "expired: 401" is "$(purge '{"all":true}' $(( $(date +%s) - 60 )))" "401"
check "  … expired" is "$(jq -r .error.code "$OUT/purge.json")" "expired"
check "future: 401" is "$(purge '{"all":true}' $(( $(date +%s) + 60 )))" "401"
check "  … expired" is "$(jq -r .error.code "$OUT/purge.json")" "expired"
tampered=$(curl -sS -o "$OUT/purge.json" -w '%{http_code}' -X POST \
  -H @<("$ROOT/target/release/tasks-sign" POST /api/cache/purge '{"taskIds":["cf-1"]}') \
  --data-binary '{"all":true}' "http://127.0.0.1:$PORT/api/cache/purge")
check "tampered body: 401" is "$tampered" "401"
check "  … bad_signature" is "$(jq -r .error.code "$OUT/purge.json")" "bad_signature"
check "wrong path: 401" is "$(purge '{"all":true}' '' "$SPIN_VARIABLE_HMAC_KEY" /api/dead-letters)" "401"
check "  … bad_signature" is "$(jq -r .error.code "$OUT/purge.json")" "bad_signature"
check "wrong key: 401" is "$(purge '{"all":true}' '' not-the-key)" "401"
check "  … bad_signature" is "$(jq -r .error.code "$OUT/purge.json")" "bad_signature"

echo "==> verify_writes, and telling a web elsewhere (web_purge_url) after each flush"
stop_spin
export SPIN_VARIABLE_VERIFY_WRITES=true
export SPIN_VARIABLE_WEB_PURGE_URL="http://127.0.0.1:$PORT/api/cache/purge"
export SPIN_VARIABLE_WEB_PURGE_ORIGIN="http://127.0.0.1:$PORT"
start_spin "$WORK" "$PORT" "$OUT/logs-notify"
wait_http "http://127.0.0.1:$PORT/health" 60
wait_log "$OUT/logs-notify/spin-up.txt" "writer ← tasks" 30
nats_tool request tasks.updated '{"id":"cf-1","title":"Told","correlationId":"cid-notify"}' >/dev/null
check "the write is read back" grep -q "\[cid-notify\] KV verify task:cf-1 → ok" "$OUT/logs-notify/writer_stdout.txt"
check "after the flush the web is told (signed)" \
  wait_until 15 grep -q "PURGE http://127.0.0.1:$PORT/api/cache/purge → 200" "$OUT/logs-notify/retrier_stdout.txt"
check "  … and purged that task" grep -q "PURGE tasks cf-1" "$OUT/logs-notify/web_stdout.txt"
unset SPIN_VARIABLE_VERIFY_WRITES SPIN_VARIABLE_WEB_PURGE_URL SPIN_VARIABLE_WEB_PURGE_ORIGIN

echo "==> JetStream mode (the manifest as shipped): batches of creates and updates, on Cloudflare"
stop_spin
app_manifest jetstream "$WORK/spin-jetstream.toml"
SPIN_MANIFEST="$WORK/spin-jetstream.toml" start_spin "$WORK" "$PORT" "$OUT/logs-jetstream"
wait_http "http://127.0.0.1:$PORT/health" 60
wait_log "$OUT/logs-jetstream/spin-up.txt" "writer ← tasks" 30
check "300 creates + 300 updates acknowledged by the stream" \
  python3 "$ROOT/tests/js_publish.py" --server "$NATS_URL" --tasks 300 --updates 1 --prefix cfj-
check "the plugin hands the writer batches" grep -q "component writer exports handle-batch: up to 100 messages per call" "$OUT/logs-jetstream/spin-up.txt"
check "all visible at version 2 with the last title" \
  wait_until 30 bash -c "[[ \$(curl -sS 'http://127.0.0.1:$PORT/api/tasks/cfj-000299' | jq -r '[.version,.title]|join(\",\")') == '2,cfj-000299 v2' ]]"
check "flushed to Cloudflare" wait_until 30 flushed
check "the last task is in Cloudflare at version 2" is "$(remote_value task:cfj-000299 | jq -r '[.version,.title]|join(",")')" "2,cfj-000299 v2"
check "the first task too" is "$(remote_value task:cfj-000000 | jq -r '[.version,.title]|join(",")')" "2,cfj-000000 v2"

echo "==> the read side on its own (deploy/read-side/spin.toml) serves what was flushed"
# It runs on any Spin host: the components it names export the WASI 0.2 HTTP handler and
# nothing of Spin 4's WASI 0.3 release candidate.
rs_components=$(sed -n 's|^source = "\.\./\.\./\(.*\)"$|\1|p' "$ROOT/deploy/read-side/spin.toml")
wasi_0_2_only() {
  local c
  for c in $rs_components; do
    grep -q "^target/wasi-http-0.2/\|kv_read" <<<"$c" || return 1
    ! grep -qa "0\.3\.0-rc" "$ROOT/$c" || return 1
  done
  for c in $rs_components; do
    [[ $c == *kv_read* ]] || grep -qa "wasi:http/incoming-handler@0\.2\." "$ROOT/$c" || return 1
  done
}
check "its components ($(wc -w <<<"$rs_components")) export WASI 0.2's HTTP handler, nothing of WASI 0.3" wasi_0_2_only
RS="$WORK/read-side"; mkdir -p "$RS"
sed 's|^path = ".spin/|path = "|' "$ROOT/deploy/read-side/runtime-config.toml" >"$RS/runtime-config.toml"
RS_PORT=$(free_port) APP_PID=$SPIN_PID
RS_PURGE_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
SPIN_VARIABLE_CF_ACCOUNT_ID=${SPIN_VARIABLE_CF_ACCOUNT_ID:-e2e-account} SPIN_VARIABLE_PURGE_KEY=$RS_PURGE_KEY \
  SPIN_MANIFEST="$ROOT/deploy/read-side/spin.toml" start_spin "$RS" "$RS_PORT" "$OUT/logs-read-side" state-read-side
RS_PID=$SPIN_PID SPIN_PID=$APP_PID
check "it starts (web, kv-read, events; no writer, no NATS)" wait_http "http://127.0.0.1:$RS_PORT/health" 60
check "it reads a task from Cloudflare, not from local files it never had" \
  is "$(curl -sS "http://127.0.0.1:$RS_PORT/api/tasks/cfj-000299" | jq -r '[.version,.title]|join(",")')" "2,cfj-000299 v2"
check "its list pages list them (a page after cfj-000298)" \
  grep -q "cfj-000299 v2" <(curl -sS "http://127.0.0.1:$RS_PORT/?limit=5&cursor=c1:cfj-000298")
no_nats() { ! grep -q "trigger-nats" "$OUT/logs-read-side/spin-up.txt"; }
check "no NATS trigger runs" no_nats
check "its change stream opens (events, WASI 0.2)" \
  grep -q "^: spin-tasks changes after" <(curl -sS -N --max-time 2 "http://127.0.0.1:$RS_PORT/api/events" || true)
rs_purge() {
  curl -sS -o "$OUT/purge.json" -w '%{http_code}' -X POST -H @<(echo "$1") \
    --data-binary '{"all":true}' "http://127.0.0.1:$RS_PORT/api/cache/purge"
}
rs_signed=$(SPIN_VARIABLE_HMAC_KEY=$RS_PURGE_KEY "$ROOT/target/release/tasks-sign" POST /api/cache/purge '{"all":true}')
check "a purge signed with its purge_key: 200, the same again: 409" \
  is "$(rs_purge "$rs_signed") $(rs_purge "$rs_signed")" "200 409"
check "a body over the purge's limit: 413, not read" is "$(head -c 200000 /dev/zero | curl -sS -o /dev/null -w '%{http_code}' -X POST \
  -H 'transfer-encoding: chunked' --data-binary @- "http://127.0.0.1:$RS_PORT/api/cache/purge")" "413"
SPIN_PID=$RS_PID; stop_spin; SPIN_PID=$APP_PID

echo "==> a missing variable is named on the first request"
stop_spin
unset SPIN_VARIABLE_CF_NAMESPACE_ID
start_spin "$WORK" "$PORT" "$OUT/logs-missing"
wait_log "$OUT/logs-missing/spin-up.txt" "Serving http" 60
check "the request fails" is "$(status_of /api/tasks)" "500"
check "the log names cf_namespace_id" grep -q "variable cf_namespace_id is not set (SPIN_VARIABLE_CF_NAMESPACE_ID)" "$OUT/logs-missing/web_stdout.txt"

summary e2e-cloudflare
