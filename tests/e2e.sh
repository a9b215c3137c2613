#!/usr/bin/env bash
# Read-side e2e suite against a real `spin up` on a free loopback port with a
# fresh store, seeded through published events. Without Spin or this tree's
# plugin it cannot run: see cannot_run in lib.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools curl jq python3 sqlite3

suite_dirs e2e
use_core_mode   # its checks read the writer's replies to requests (core NATS)
on_exit stop_all


# GET with headers saved; sets BODY, STATUS, HDRS (file).
HDRS="$WORK/headers"
get() {
  local url=$1; shift
  BODY=$(curl -sS -D "$HDRS" -o - "$@" "http://127.0.0.1:$PORT$url") || BODY=""
  STATUS=$(awk 'NR==1{print $2}' "$HDRS")
}
header() { grep -i "^$1:" "$HDRS" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
has() { grep -qF -- "$1" <<<"$BODY"; }
lacks() { ! grep -qF -- "$1" <<<"$BODY"; }
jqe() { jq -e "$1" >/dev/null; }

build_tools
# Change streams end after 4 s here (1800 by default): checked below.
export SPIN_VARIABLE_STREAM_MAX_SECONDS=4
start_app "$WORK" "$OUT/logs"
echo "==> spin up on 127.0.0.1:$PORT (NATS $NATS_URL)"

echo "==> seeding through published events"
# 120 generated tasks, 30 of them moved to in_progress, plus three written for the checks.
nats_tool burst --count 120 --prefix e2e- --request >/dev/null
for i in $(seq 0 4 116); do
  nats_tool request tasks.updated "$(printf '{"id":"e2e-%06d","status":"in_progress"}' "$i")" >/dev/null
done
nats_tool request tasks.created '{"id":"t-1","title":"Buy milk","description":"Two litres, semi-skimmed.\nFrom the corner shop."}' >/dev/null
nats_tool request tasks.created '{"data":{"id":"xss","title":"<script>alert(1)</script>","status":"in_progress"}}' >/dev/null
nats_tool request tasks.created '{"id":"ns:report","title":"Write the quarterly report","status":"completed"}' >/dev/null

echo "==> checks"
journal() { sqlite3 -cmd ".timeout 5000" "$WORK/$1" "PRAGMA journal_mode"; }
check "the stores' files run in WAL mode (tasks-wal before spin up)" \
  is "$(journal tasks.db) $(journal local.db) $(journal feed.db)" "wal wal wal"
get /
check "GET / is 200 HTML" is "$STATUS" 200
check "GET / lists the first tasks by id" has '<a href="/tasks/e2e-000000">Task 0</a>'
check "GET / offers a next page" has 'rel="next"'
check "GET / has status filter links" has 'href="/?status=in_progress"'
get "/?limit=200"
check "GET /?limit=200 lists a task published later" has "Buy milk"
check "it links to the task page" has 'href="/tasks/t-1"'
check "it escapes a <script> title" has '&#60;script&#62;alert(1)&#60;/script&#62;'
check "it has no live <script>" lacks '<script>'

get /tasks/t-1
check "GET /tasks/t-1 is 200" is "$STATUS" 200
check "task page shows the title" has "<h1>Buy milk</h1>"
check "task page shows the description" has "From the corner shop."
get /tasks/ns:report
check "task ids with ':' resolve" is "$STATUS" 200

get /tasks/does-not-exist
check "missing task page is 404" is "$STATUS" 404
check "missing task page is styled" has 'class="card error"'
check "missing task page says so" has "Task not found"
get /api/tasks/does-not-exist
check "missing task JSON is 404" is "$STATUS" 404
check "missing task JSON has code not_found" is "$(jq -r .error.code <<<"$BODY")" not_found

get /api/tasks/t-1
check "GET /api/tasks/t-1 is 200" is "$STATUS" 200
check "task JSON has camelCase fields" is "$(jq -r '[.id,.title,.status,.version]|join(",")' <<<"$BODY")" "t-1,Buy milk,pending,1"
check "task JSON has createdAt" jqe '.createdAt|test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")' <<<"$BODY"

# Paging: 123 tasks in pages of 50 -> 50, 50, 23.
ids="$WORK/ids"; : >"$ids"; sizes=""; cursor=""
for _ in 1 2 3 4; do
  get "/api/tasks?limit=50${cursor:+&cursor=$cursor}"
  jq -r '.tasks[].id' <<<"$BODY" >>"$ids"
  sizes+="$(jq '.tasks|length' <<<"$BODY") "
  cursor=$(jq -r '.nextCursor // empty' <<<"$BODY")
  [[ -n "$cursor" ]] || break
done
check "paging gives 50, 50, 23" is "$sizes" "50 50 23 "
check "paging returns every task once" is "$(sort -u "$ids" | wc -l)" 123
check "pages are in id order" cmp -s "$ids" <(LC_ALL=C sort "$ids")
get "/?cursor=$(jq -Rr @uri <<<"$(sed -n 1p <<<"$(curl -s "http://127.0.0.1:$PORT/api/tasks?limit=50" | jq -r .nextCursor)")")"
check "HTML page 2 renders with a first-page link" has "First page"

get "/api/tasks?status=in_progress&limit=200"
check "status filter returns only in_progress" is "$(jq '[.tasks[]|select(.status!="in_progress")]|length' <<<"$BODY")" 0
check "status filter finds all 31" is "$(jq '.tasks|length' <<<"$BODY")" 31
get "/?status=completed"
check "HTML status filter marks its link active" has 'href="/?status=completed" class="active"'

get "/api/tasks?limit=0"
check "limit=0 is 400" is "$STATUS" 400
check "limit=0 says why" has "limit must be between 1 and 200"
get "/api/tasks?status=bogus"
check "unknown status is 400" is "$STATUS" 400
get "/api/tasks?cursor=not-a-cursor"
check "garbage cursor is 400" is "$STATUS" 400
get "/api/tasks/bad%20id"
check "invalid id is 400" is "$STATUS" 400
get /api/tasks -X POST
check "POST /api/tasks is 405" is "$STATUS" 405

get /api/tasks/t-1 -H "X-Correlation-Id: e2e-cid-42"
check "correlation id is echoed" is "$(header x-correlation-id)" e2e-cid-42
get /api/tasks/t-1
check "a correlation id is generated (UUID v4)" grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' <<<"$(header x-correlation-id)"
sleep 0.5
check "web logs the request in one line with the id, method, path, status and time" \
  grep -qE '^\[e2e-cid-42\] GET /api/tasks/t-1 → 200 \([0-9]+ ms\)$' "$OUT/logs/web_stdout.txt"
check "one line carries the id: web's (kv-read logs a read only when it fails)" \
  is "$(grep -c '^\[e2e-cid-42\] ' "$OUT/logs/web_stdout.txt")" 1

# Hostile requests. An id that decodes to a line break is refused before anything logs it.
get "/api/tasks/x%0A%5Bforged-cid%5D%20REPLAY%20dlq:1-a%20OK"
check "an id with a line break in it is 400" is "$STATUS" 400
check "it says what an id may hold" has "id may only contain"
sleep 0.3
check "and no log line starts with the forged correlation id" bash -c '! grep -h "^\[forged-cid\]" "$1"/logs/*.txt' _ "$OUT"
# A body is read only by the routes that take one, and at most 64 KiB of it.
rss_kib() { ps -o rss= --sid "$SPIN_PID" | awk '{s += $1} END {print s + 0}'; }
before=$(rss_kib)
big_status=$(head -c 300000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' --max-time 20 -X POST \
  -H 'Transfer-Encoding: chunked' --data-binary @- "http://127.0.0.1:$PORT/nowhere" || true)
grown=$((($(rss_kib) - before) / 1024))
check "a 300 MB body to a path that takes none is answered 404" is "$big_status" 404
check "without reading it (the app grew by $grown MiB)" test "$grown" -lt 100
over=$(head -c 70000 /dev/zero | tr '\0' 'a')
for how in "content-length" "chunked"; do
  extra=()
  [[ $how == chunked ]] && extra=(-H 'Transfer-Encoding: chunked')
  get /api/cache/purge -X POST -H 'Content-Type: application/json' "${extra[@]}" --data-binary "{\"taskIds\":[\"$over\"]}"
  check "a purge body over 64 KiB ($how) is 413" is "$STATUS" 413
  check "the 413 says the limit ($how)" has "over 65536 bytes"
done
get /health
check "the app serves after the hostile requests" is "$STATUS" 200

# Request counts have a sequence of their own: traffic spends no change feed number (which
# would shorten what the feed keeps for reconnecting pages).
metric() { api /metrics | awk -v m="$1" '$1 == m {print $2}'; }
health='tasks_http_requests_total{route="/health",status="200"}'
head_before=$(metric tasks_change_feed_head); health_before=$(metric "$health")
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; done
sleep 0.4; curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; sleep 0.3
check "300 requests leave the change feed's head where it was ($head_before)" \
  is "$(metric tasks_change_feed_head)" "$head_before"
check "and /metrics counts them" test "$(($(metric "$health") - ${health_before:-0}))" -ge 200

# A change stream ends after its lifetime (stream_max_seconds) with a comment saying where to
# resume; the browser's EventSource reconnects from there.
started=$(date +%s%N)
curl -sN --max-time 20 "http://127.0.0.1:$PORT/api/events" >"$WORK/stream.txt" || true
took=$((($(date +%s%N) - started) / 1000000))
check "a change stream ends by itself after stream_max_seconds (took $took ms)" \
  test "$took" -ge 3500 -a "$took" -lt 10000
check "its last bytes say where to resume" grep -q '^: closing after 4 s; reconnect with Last-Event-ID [0-9]' "$WORK/stream.txt"

for path in / /tasks/t-1 /api/tasks/t-1 /api/tasks/nope /health /nowhere; do
  get "$path"
  check "security headers on $path" bash -c '
    grep -qi "^content-security-policy: default-src '"'"'self'"'"'" "$1" &&
    grep -qi "^x-content-type-options: nosniff" "$1" &&
    grep -qi "^x-frame-options: DENY" "$1" &&
    grep -qi "^referrer-policy: no-referrer" "$1" &&
    grep -qi "^x-correlation-id: " "$1"' _ "$HDRS"
done

get /api/tasks/t-1
etag=$(header etag)
check "JSON task has an ETag" grep -q '^".*"$' <<<"$etag"
check "JSON is revalidated (no-cache)" is "$(header cache-control)" no-cache
get /api/tasks/t-1 -H "If-None-Match: $etag"
check "matching If-None-Match is 304" is "$STATUS" 304
check "304 has no body" is "$BODY" ""
get "/api/tasks?limit=5"
list_etag=$(header etag)
get "/api/tasks?limit=5" -H "If-None-Match: $list_etag"
check "list ETag gives 304" is "$STATUS" 304

get /health
check "health is 200" is "$STATUS" 200
check "health reports the store" is "$(jq -r '.store' <<<"$BODY")" reachable
check "health reports the version" jqe '.version|test("^[0-9]+\\.[0-9]+\\.[0-9]+")' <<<"$BODY"

# A task created while running appears at once: the writer changed the membership stamp.
nats_tool request tasks.created '{"id":"a-late","title":"Arrived while running"}' >/dev/null
get "/api/tasks?limit=1"
check "a new task shows up in the listing" is "$(jq -r '.tasks[0].id' <<<"$BODY")" a-late
check "kv-read logged the index rebuild" grep -qE 'RPC listTasks\(limit=1\) → 1 tasks, index rebuilt \(124 ids\)' "$OUT/logs/web_stdout.txt"

if command -v chromium >/dev/null; then
  echo "==> screenshots (headless Chromium) in $OUT"
  shot() {
    timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --user-data-dir="$WORK/chromium" --hide-scrollbars --window-size=1280,1000 \
      --screenshot="$OUT/$1" "http://127.0.0.1:$PORT$2" >/dev/null 2>&1
  }
  check "screenshot of /" shot home.png /
  check "screenshot of /tasks/t-1" shot task.png /tasks/t-1
  check "screenshot of a 404" shot not-found.png /tasks/nope
else
  echo "==> screenshots SKIPPED: chromium not installed"
fi

summary e2e
