# Shared helpers for the e2e suite and the benchmarks. Source it; needs bash.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPIN_PID=""

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Writes a runtime config whose stores live in directory $1.
write_runtime_config() {
  local dir=$1
  cat >"$dir/runtime-config.toml" <<TOML
[key_value_store.tasks]
type = "spin"
path = "tasks.db"

[key_value_store.default]
type = "spin"
path = "local.db"
TOML
}

# Seeds tasks into the tasks store of directory $1: tasks_seed DIR ARGS...
tasks_seed() {
  local dir=$1; shift
  "$ROOT/target/release/tasks-seed" --db "$dir/tasks.db" "$@"
}

build_seed_tool() {
  cargo build --quiet --release -p tasks-seed --manifest-path "$ROOT/Cargo.toml"
}

# start_spin STATE_DIR PORT LOG_DIR: runs `spin up` in its own process group.
start_spin() {
  local dir=$1 port=$2 logs=$3
  mkdir -p "$logs"
  setsid spin up --from "$ROOT/spin.toml" \
    --runtime-config-file "$dir/runtime-config.toml" \
    --state-dir "$dir/state" --log-dir "$logs" \
    --listen "127.0.0.1:$port" >"$logs/spin-up.txt" 2>&1 &
  SPIN_PID=$!
}

stop_spin() {
  if [[ -n "$SPIN_PID" ]] && kill -0 "$SPIN_PID" 2>/dev/null; then
    kill -TERM -- "-$SPIN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SPIN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SPIN_PID" 2>/dev/null || true
  fi
  SPIN_PID=""
}

# wait_http URL SECONDS: until URL answers 200, or fail.
wait_http() {
  local url=$1 secs=$2
  for _ in $(seq $((secs * 10))); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if [[ -n "$SPIN_PID" ]] && ! kill -0 "$SPIN_PID" 2>/dev/null; then
      echo "spin up exited before $url answered" >&2; return 1
    fi
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $url" >&2
  return 1
}
