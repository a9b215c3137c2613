#!/usr/bin/env bash
# `make stop`: stops the nats-server that `make nats` (scripts/nats-up.sh) started,
# the one .spin/nats-server.pid names, and removes that file. A pid that is not a
# nats-server (the server is gone and the pid reused) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=.spin/nats-server.pid

if [[ ! -f $pidfile ]]; then
  echo "==> no $pidfile: no nats-server started by make nats to stop"
  exit 0
fi
pid=$(<"$pidfile")
if [[ ! $pid =~ ^[0-9]+$ ]]; then
  rm -f "$pidfile"
  echo "==> $pidfile held no pid (${pid:-empty}): removed it, stopped nothing"
  exit 0
fi

# running PID: PID is a live process (a zombie has exited: it only awaits its parent).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

if ! running "$pid"; then
  rm -f "$pidfile"
  echo "==> nats-server (pid $pid) was not running: removed $pidfile"
  exit 0
fi
# ps truncates comm on Linux and gives the full path on macOS: compare the last part.
comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
if [[ ${comm##*/} != nats-server ]]; then
  rm -f "$pidfile"
  echo "==> pid $pid from $pidfile is now ${comm:-unknown}, not a nats-server: left it running, removed the stale $pidfile"
  exit 0
fi

args=$(ps -o args= -p "$pid" 2>/dev/null || true)
# stop SIGNAL: sends SIGNAL, then waits up to 5 s for the server to exit.
stop() {
  kill -"$1" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    running "$pid" || return 0
    sleep 0.1
  done
  return 1
}
if stop TERM; then
  how="stopped it (SIGTERM)"
elif stop KILL; then
  how="it ignored SIGTERM for 5 s: killed it (SIGKILL)"
else
  echo "nats-server pid $pid (${args:-nats-server}) is still running after SIGTERM and SIGKILL; $pidfile kept" >&2
  exit 1
fi
rm -f "$pidfile"
echo "==> nats-server pid $pid (${args:-nats-server}): $how; removed $pidfile"
