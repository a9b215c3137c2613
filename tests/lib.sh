# Shared helpers for the e2e suite and the benchmarks. Source it; needs bash.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The operator token every app under test gets (GET /api/dead-letters, /metrics).
export SPIN_VARIABLE_ADMIN_TOKEN=${SPIN_VARIABLE_ADMIN_TOKEN:-admin-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
SPIN_PID=""
NATS_PID=""

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# write_runtime_config DIR [REDIS_PORT]: a runtime config in DIR with `default` in DIR's
# local.db, `feed` in DIR's feed.db and `tasks` in DIR's tasks.db, or on the Redis at
# REDIS_PORT.
write_runtime_config() {
  local tasks='type = "spin"
path = "tasks.db"'
  [[ -n ${2:-} ]] && tasks="type = \"redis\"
url = \"redis://127.0.0.1:$2\""
  cat >"$1/runtime-config.toml" <<TOML
[key_value_store.tasks]
$tasks

[key_value_store.default]
type = "spin"
path = "local.db"

[key_value_store.feed]
type = "spin"
path = "feed.db"
TOML
}

# write_shared_runtime_config DIR REDIS_PORT: every store on the Redis at REDIS_PORT, one
# database per label (runtime-config.redis.toml's layout), for several instances.
write_shared_runtime_config() {
  sed "s|redis://127.0.0.1:6379/|redis://127.0.0.1:$2/|" "$ROOT/runtime-config.redis.toml" \
    >"$1/runtime-config.toml"
}

# Seeds tasks into the tasks store of directory $1: tasks_seed DIR ARGS...
tasks_seed() {
  local dir=$1; shift
  "$ROOT/target/release/tasks-seed" --db "$dir/tasks.db" "$@"
}

build_tools() {
  cargo build --quiet --release -p tasks-seed -p tasks-nats --manifest-path "$ROOT/Cargo.toml"
}

# Publishes with our NATS client: nats_tool pub|request|burst ARGS...
nats_tool() {
  "$ROOT/target/release/tasks-nats" --server "$NATS_URL" "$@"
}

# cannot_run REASON FIX: this suite cannot run here. Under CI=true that is a
# failure naming the reason; in an interactive run a `SKIPPED:` line with the fix.
cannot_run() {
  if [[ ${CI:-} == true ]]; then
    echo "FAILED: $1 (under CI=true a suite that cannot run fails; fix: $2)" >&2
    exit 1
  fi
  echo "SKIPPED: $1 (fix: $2)"
  exit 0
}

# The suite needs spin, nats-server, trigger-cron and, installed in Spin, the
# trigger-nats plugin built from this tree (not whatever build was there).
require_spin_and_plugin() {
  command -v spin >/dev/null ||
    cannot_run "spin not installed" "install the Spin CLI >= 4.0 (https://spinframework.dev/install), then make plugin"
  require_tools nats-server
  local installed why
  # Read the list first: `grep -q` closing the pipe early would fail it under pipefail.
  installed=$(spin plugins list --installed 2>/dev/null || true)
  grep -q "^trigger-cron " <<<"$installed" ||
    cannot_run "the trigger-cron plugin is not installed" "make plugin"
  why=$("$ROOT/scripts/install-plugin.sh" --check 2>&1) ||
    cannot_run "$why" "make plugin"
}

# start_nats PORT LOG: a private nats-server on loopback with JetStream (its store next to
# LOG, kept across restarts on the same PORT); sets NATS_URL.
start_nats() {
  local port=$1 log=$2
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$(dirname "$log")/jetstream-$port" >>"$log" 2>&1 &
  NATS_PID=$!
  NATS_URL="nats://127.0.0.1:$port"
  export SPIN_VARIABLE_NATS_URL="$NATS_URL"
  wait_until --every 0.05 5 port_open "$port" && return 0
  echo "nats-server did not start on $port" >&2
  return 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_nats() {
  if [[ -n "$NATS_PID" ]]; then
    kill "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true   # a killed server's status is not ours
  fi
  NATS_PID=""
}

# suite_dirs NAME: OUT=tests/out/NAME (emptied) for what the suite keeps; WORK, a fresh temp dir.
suite_dirs() { OUT="$ROOT/tests/out/$1"; rm -rf "$OUT"; mkdir -p "$OUT"; WORK=$(mktemp -d); }
# bench_dirs: OUT=bench/out (kept across runs) for the results; WORK, a fresh temp dir.
bench_dirs() { OUT="$ROOT/bench/out"; mkdir -p "$OUT"; WORK=$(mktemp -d); }
# stop_all: stops what lib.sh started (spin up, nats-server, Cloudflare's emulator and proxy)
# and removes WORK: the usual cleanup, `on_exit stop_all`.
stop_all() { stop_spin; stop_nats; stop_cloudflare; rm -rf "$WORK"; }

# on_exit FUNC: runs FUNC when the script ends, keeping the script's own exit code.
on_exit() {
  # shellcheck disable=SC2064
  trap "rc=\$?; set +e; $1; exit \$rc" EXIT
}

# kv_count DIR STORE LIKE: rows of a store in DIR's SQLite files matching a key pattern.
kv_count() {
  local db=$1/local.db; [[ $2 == tasks ]] && db=$1/tasks.db
  # Spin holds the files open and locks them while writing: wait for the lock.
  sqlite3 -cmd ".timeout 5000" "$db" "SELECT count(*) FROM spin_key_value WHERE store='$2' AND key LIKE '$3'"
}

# app_manifest MODE DST: the app's spin.toml at DST with component paths made absolute.
# MODE jetstream: as shipped (the writer on the JetStream stream TASKS). MODE core: its
# [[trigger.nats]] entry swapped for core NATS (a queue group; each message handled once
# by one instance, requesters get {"ok":true} or {"ok":false,"error":…}).
app_manifest() {
  python3 - "$ROOT/spin.toml" "$2" "$ROOT" "$1" <<'PY'
import re, sys
src, dst, root, mode = sys.argv[1:]
text = open(src).read().replace('source = "target/', f'source = "{root}/target/')
if mode == "core":
    entry = re.search(r'^\[\[trigger\.nats\]\]\n(?:(?!\[).*\n)*', text, re.M).group(0)
    text = text.replace(entry, """[[trigger.nats]]
component = "writer"
subject = "tasks.>"
queue_group = "spin-tasks-writer"
handler_timeout_ms = 5000
tick_ms = 1000

""")
elif mode != "jetstream":
    sys.exit(f"app_manifest: unknown mode {mode}")
open(dst, "w").write(text)
PY
}

# The `spin up` and nats-server processes a script started besides SPIN_PID / NATS_PID
# (named_app adds to them); stop_named_apps stops them and everything stop_all does.
PIDS=() NATS_PIDS=()
stop_named_apps() {
  local p
  for p in "${PIDS[@]}"; do SPIN_PID=$p; stop_spin; done
  for p in "${NATS_PIDS[@]}"; do NATS_PID=$p; stop_nats; done
  stop_all
}

# named_app NAME: the app from $WORK/spin-NAME.toml with its own stores ($WORK/NAME) and
# nats-server, left running for the caller's cleanup (appends to PIDS and NATS_PIDS);
# sets NAME_PORT and NAME_NATS.
named_app() {
  mkdir -p "$WORK/$1"
  SPIN_MANIFEST="$WORK/spin-$1.toml" start_app "$WORK/$1" "$WORK/$1/logs"
  PIDS+=("$SPIN_PID"); NATS_PIDS+=("$NATS_PID"); SPIN_PID="" NATS_PID=""
  printf -v "${1}_PORT" '%s' "$PORT"
  printf -v "${1}_NATS" '%s' "$NATS_URL"
}

# named_rate NAME ROUND COUNT [burst options]: COUNT tasks.created to the named app
# (ids <first letter of NAME><ROUND>-<n>); prints events/s from the first publish until
# the last id is readable through its API.
named_rate() {
  local port="${1}_PORT" nats="${1}_NATS" last t0 t1
  last=$(printf '%s%d-%06d' "${1:0:1}" "$2" $(($3 - 1)))
  t0=$(now)
  NATS_URL=${!nats} nats_tool burst --count "$3" --prefix "${1:0:1}$2-" "${@:4}" >/dev/null
  # Runs in $(…), where set -e does not reach: fail explicitly.
  wait_until --every 0.02 600 task_visible "$last" "${!port}" || return 1
  t1=$(now)
  python3 -c "print(round($3/($t1-$t0)))"
}

# use_core_mode: the suite runs the writer on core NATS (app_manifest core into WORK).
use_core_mode() { app_manifest core "$WORK/spin.toml"; export SPIN_MANIFEST="$WORK/spin.toml"; }

# start_cluster: a 3-node nats-server cluster with JetStream on loopback (stores in
# $WORK/nats-I, logs in $OUT/nats-I.log); sets CLIENT and ROUTE (the nodes' ports), NODE_PIDS
# and SERVERS (every node's URL); returns once JetStream has a leader. `node I` restarts
# node I on its ports and store; the caller stops NODE_PIDS.
CLIENT=() ROUTE=() NODE_PIDS=()
node() {
  local routes
  routes=$(printf 'nats://127.0.0.1:%s,' "${ROUTE[@]}"); routes=${routes%,}
  nats-server -a 127.0.0.1 -p "${CLIENT[$1]}" -n "node$1" -js -sd "$WORK/nats-$1" \
    --cluster_name spin-tasks --cluster "nats://127.0.0.1:${ROUTE[$1]}" --routes "$routes" \
    >>"$OUT/nats-$1.log" 2>&1 &
  NODE_PIDS[$1]=$!
}
jetstream_ready() {
  python3 - "$SERVERS" <<'PY' 2>/dev/null
import asyncio, sys
import nats
async def main():
    nc = await nats.connect(servers=sys.argv[1].split(","), connect_timeout=1, max_reconnect_attempts=0)
    await nc.jetstream(timeout=1).account_info()
    await nc.close()
asyncio.run(main())
PY
}
start_cluster() {
  local i
  for i in 0 1 2; do CLIENT[i]=$(free_port); ROUTE[i]=$(free_port); done
  for i in 0 1 2; do node "$i"; done
  SERVERS=$(printf 'nats://127.0.0.1:%s,' "${CLIENT[@]}"); SERVERS=${SERVERS%,}
  wait_until --every 0.5 30 jetstream_ready
}

# start_spin STORE_DIR PORT|- LOG_DIR [STATE_NAME]: runs `spin up` in its own
# process group. Instances started with the same STORE_DIR share the stores.
start_spin() {
  local dir=$1 port=$2 logs=$3 state=${4:-state} listen=()
  # PORT "-": an app without an HTTP trigger (spin up then takes no --listen).
  [[ $port != - ]] && listen=(--listen "127.0.0.1:$port")
  mkdir -p "$logs"
  # A restarted instance's earlier log is kept (the faults' evidence).
  [[ -s $logs/spin-up.txt ]] && cat "$logs/spin-up.txt" >>"$logs/spin-up.earlier.txt"
  # The stores' SQLite files in WAL mode, as `make up` has them (tools/seed/src/bin/tasks-wal.rs).
  "$ROOT/target/release/tasks-wal" "$dir/runtime-config.toml" >>"$logs/stores.txt"
  setsid spin up --from "${SPIN_MANIFEST:-$ROOT/spin.toml}" \
    --runtime-config-file "$dir/runtime-config.toml" \
    --state-dir "$dir/$state" --log-dir "$logs" \
    "${listen[@]}" >"$logs/spin-up.txt" 2>&1 &
  SPIN_PID=$!
}

# start_app DIR LOG_DIR: runtime config in DIR, a private nats-server, and
# `spin up` on a free port (sets PORT); returns once HTTP answers and the
# writer's NATS subscription is up.
start_app() {
  write_runtime_config "$1"
  start_nats "$(free_port)" "$1/nats-server.log"
  PORT=$(free_port)
  start_spin "$1" "$PORT" "$2"
  wait_http "http://127.0.0.1:$PORT/health" 60
  wait_log "$2/spin-up.txt" "writer ← tasks" 30
}

# descendants PID: every process below PID, one pid a line.
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}
# named NAME PID...: those of the PIDs still running whose command is NAME.
named() {
  local name=$1 pid; shift
  for pid in "$@"; do [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == "$name" ]] && echo "$pid"; done
  return 0
}

# check_trigger_stops START_APP: no orphaned trigger-nats. START_APP LOG_DIR starts spin up
# (sets SPIN_PID) on the suite's NATS server (start_nats; restarted here on a new port).
#   kill -9 of spin up alone: its trigger-nats stops within 5 s and says why;
#   SIGTERM to trigger-nats with its NATS server stopped: it exits within 10 s.
check_trigger_stops() {
  local below plugin pid
  "$1" "$OUT/logs-orphan"
  mapfile -t below < <(descendants "$SPIN_PID")
  mapfile -t plugin < <(named trigger-nats "${below[@]}")
  check "spin up runs one trigger-nats" is "${#plugin[@]}" 1
  kill -KILL "$SPIN_PID"
  gone() { [[ -z "$(named trigger-nats "${plugin[@]}")" ]]; }
  check "trigger-nats stops within 5 s of spin up's SIGKILL" wait_until 5 gone
  check "  … and says why" wait_log "$OUT/logs-orphan/spin-up.txt" "spin up \\(process $SPIN_PID\\) is gone; stopping" 5
  echo "       trigger-cron (not ours) left running: $(named trigger-cron "${below[@]}" | wc -l)"
  for pid in "${below[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  SPIN_PID=""
  "$1" "$OUT/logs-no-nats"
  mapfile -t plugin < <(named trigger-nats $(descendants "$SPIN_PID"))
  stop_nats
  sleep 1
  kill -TERM "${plugin[0]}"
  check "with NATS gone, trigger-nats exits within 10 s of SIGTERM" wait_until 10 gone
  stop_spin
}

# wait_log FILE PATTERN SECONDS: until FILE has a line matching PATTERN (grep -E), or fail after SECONDS s.
wait_log() {
  # Quiet: grep complains until FILE exists; the message below says what was awaited.
  wait_until "$3" grep -qE -- "$2" "$1" 2>/dev/null && return 0
  echo "timed out after ${3}s waiting for /$2/ in $1" >&2
  return 1
}

# wait_until [--every S] SECONDS COMMAND...: reruns COMMAND every S (0.1) s until it succeeds; after SECONDS s names it and fails.
wait_until() {
  local every=0.1 secs deadline
  if [[ $1 == --every ]]; then every=$2; shift 2; fi
  # SECONDS counts whole seconds: one more makes the wait at least SECONDS s long.
  secs=$1 deadline=$((SECONDS + $1 + 1)); shift
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${secs}s waiting for: $*" >&2
      return 1
    fi
    sleep "$every"
  done
}

# stop_spin: SIGTERM to spin up's process group (its plugins included, even when spin up
# itself has exited already), SIGKILL to what is left after 5 s.
stop_spin() {
  if [[ -n "$SPIN_PID" ]] && kill -0 -- "-$SPIN_PID" 2>/dev/null; then
    kill -TERM -- "-$SPIN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$SPIN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SPIN_PID" 2>/dev/null || true
  fi
  SPIN_PID=""
}

# wait_http URL SECONDS: until URL answers 200, or fail (at once when spin up has exited, else after SECONDS s).
wait_http() {
  local url=$1 secs=$2 deadline=$((SECONDS + $2 + 1))
  # --max-time (the time left, at least 1 s: 0 would mean none): a server that accepts
  # the connection but never answers cannot outlast the wait.
  until curl -fsS -o /dev/null --max-time $((deadline > SECONDS ? deadline - SECONDS : 1)) "$url" 2>/dev/null; do
    if [[ -n "$SPIN_PID" ]] && ! kill -0 "$SPIN_PID" 2>/dev/null; then
      echo "spin up exited before $url answered" >&2; return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "timed out after ${secs}s waiting for $url" >&2; return 1
    fi
    sleep 0.1
  done
}

# --- the app under test on 127.0.0.1:$PORT (stores in $WORK, logs in $OUT/logs) --------
# api PATH: GET PATH from the app, with the operator token; prints the body.
api() { curl -sS -H "Authorization: Bearer $SPIN_VARIABLE_ADMIN_TOKEN" "http://127.0.0.1:$PORT$1"; }
# field ID JQ: JQ (raw output) applied to GET /api/tasks/ID.
field() { api "/api/tasks/$1" | jq -r "$2"; }
# status_of PATH: the HTTP status code of GET PATH.
status_of() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$1"; }
# task_visible ID [PORT]: GET /api/tasks/ID answers 200 on 127.0.0.1:PORT (default $PORT); one try of at most 10 s.
task_visible() { [[ $(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://127.0.0.1:${2:-$PORT}/api/tasks/$1") == 200 ]]; }
# logged COMPONENT TEXT: COMPONENT's log, $OUT/logs/COMPONENT_stdout.txt, has a line containing TEXT.
logged() { grep -qF -- "$2" "$OUT/logs/$1_stdout.txt"; }
# replay_logged TEXT: an outbox replay's line, from the cron retrier or from the writer,
# whose calls (a queueing call, and its tick_ms calls with no message) replay the outbox too.
replay_logged() { logged retrier "$1" || logged writer "$1"; }
# outbox [DIR]: how many outbox records (deferred events) the stores in DIR (default $WORK) hold.
outbox() { kv_count "${1:-$WORK}" default 'outbox:%'; }
# outbox_empty [DIR]: the stores in DIR (default $WORK) hold no outbox record.
outbox_empty() { [[ "$(outbox "$@")" == 0 ]]; }
# now: the time in seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
# redis_start: (re)starts a Redis on REDIS_PORT with its append-only file (fsync on every
# write) in WORK, logging to OUT/redis.log; sets REDIS_PID. A restart finds what it held.
redis_start() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes \
    --appendfsync always --save "" >>"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_until 10 redis_up redis-cli -p "$REDIS_PORT"
}

# redis_up REDIS_CLI...: that redis-cli command line (program and options) gets PONG to a PING.
redis_up() { grep -q PONG <<<"$("$@" ping 2>/dev/null)"; }

# --- assertions: check NAME COMMAND... counts a pass or a failure ---------------
passed=0; failed=0
check() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "  ok   $name"
  else failed=$((failed + 1)); echo "  FAIL $name"; fi
}
is() { [[ "$1" == "$2" ]] || { echo "       expected '$2', got '$1'" >&2; return 1; }; }

# summary SUITE: the closing line; fails the suite when any check failed.
summary() {
  echo
  echo "$1: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

# require_tools TOOL...: every tool on PATH, else cannot_run naming the first
# missing one and its Debian package.
require_tools() {
  local t pkg
  for t in "$@"; do
    command -v "$t" >/dev/null && continue
    case $t in
      redis-cli) pkg=redis-server ;;
      node | npm) pkg="nodejs npm" ;;
      *) pkg=$t ;;
    esac
    cannot_run "$t is not installed" "apt-get install $pkg"
  done
}

# --- Cloudflare: Cloudflare's emulator (miniflare) behind tools/cf-fault-proxy ---
MF_PID="" PROXY_PID=""

# start_cloudflare_app DIR OUT: miniflare (installed into tests/miniflare from
# its lockfile when missing), the fault proxy in front of it, nats-server and
# `spin up` with runtime-config.cloudflare.toml (stores in DIR, logs in
# OUT/logs). Sets MF_BASE, MF_ORIGIN, NAMESPACE, PROXY, PORT; exports the
# SPIN_VARIABLE_CF_* and a fresh SPIN_VARIABLE_HMAC_KEY.
start_cloudflare_app() {
  local dir=$1 out=$2 mf=$ROOT/tests/miniflare
  if [[ ! -f $mf/node_modules/miniflare/package.json ]]; then
    (cd "$mf" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) >"$out/npm.log" 2>&1
  fi
  build_tools
  cargo build --quiet --release -p tasks-sign -p tasks-cf-fault-proxy --manifest-path "$ROOT/Cargo.toml"
  # serve.mjs stays up while its stdin is open.
  setsid bash -c "sleep 100000 | exec node '$mf/serve.mjs'" >"$out/miniflare.out" 2>"$out/miniflare.err" &
  MF_PID=$!
  wait_log "$out/miniflare.out" '"namespaceId"' 60
  MF_BASE=$(head -1 "$out/miniflare.out" | jq -r .base)
  NAMESPACE=$(head -1 "$out/miniflare.out" | jq -r .namespaceId)
  MF_ORIGIN=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(f'{p.scheme}://{p.netloc}')" "$MF_BASE")
  "$ROOT/target/release/cf-fault-proxy" --listen 127.0.0.1:0 --upstream "$MF_ORIGIN" >"$out/proxy.out" 2>&1 &
  PROXY_PID=$!
  wait_log "$out/proxy.out" '^listening on ' 10
  PROXY=$(sed -n 's/^listening on //p' "$out/proxy.out" | head -1)
  export SPIN_VARIABLE_CF_API_BASE="$PROXY${MF_BASE#"$MF_ORIGIN"}"
  export SPIN_VARIABLE_CF_NAMESPACE_ID="$NAMESPACE"
  export SPIN_VARIABLE_CF_API_TOKEN="test-token"
  export SPIN_VARIABLE_CF_API_ORIGIN="$PROXY"
  export SPIN_VARIABLE_HMAC_KEY="test-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  sed -e 's|^path = ".spin/cloudflare-copy.db"|path = "copy.db"|' \
      -e 's|^path = ".spin/cloudflare-local.db"|path = "local.db"|' \
      "$ROOT/runtime-config.cloudflare.toml" >"$dir/runtime-config.toml"
  grep -q 'path = "copy.db"' "$dir/runtime-config.toml"
  start_nats "$(free_port)" "$dir/nats-server.log"
  PORT=$(free_port)
  start_spin "$dir" "$PORT" "$out/logs"
  wait_http "http://127.0.0.1:$PORT/health" 60
  wait_log "$out/logs/spin-up.txt" "writer ← tasks" 30
}

stop_cloudflare() {
  [[ -n "$PROXY_PID" ]] && kill "$PROXY_PID" 2>/dev/null
  [[ -n "$MF_PID" ]] && kill -- "-$MF_PID" 2>/dev/null
  PROXY_PID="" MF_PID=""
}

# The proxy's request counters (JSON), and resetting them.
cf_stats() { curl -sS "$PROXY/__proxy/stats"; }
cf_reset_stats() { curl -sS -X POST "$PROXY/__proxy/stats/reset" >/dev/null; }
# cf_calls: how many calls reached Cloudflare's emulator since the last cf_reset_stats.
cf_calls() { cf_stats | jq '.total'; }
# flushed [DIR]: no write in DIR's stores (default $WORK) awaits its flush to Cloudflare (flush:0… keys); quiet while Spin creates the table.
flushed() { [[ "$(kv_count "${1:-$WORK}" default 'flush:0%' 2>/dev/null)" == 0 ]]; }
# A value as Cloudflare's emulator holds it (behind no proxy: not counted).
remote_value() { curl -sS "$MF_BASE/storage/kv/namespaces/$NAMESPACE/values/$1"; }
