#!/usr/bin/env bash
# Starts a local nats-server with JetStream on 127.0.0.1:4222 (NATS_PORT) unless something
# already answers there: its stream store in .spin/jetstream (kept across restarts, so
# events published while the app is stopped wait there), its pid in .spin/nats-server.pid
# for scripts/nats-down.sh (`make stop`).
# Installs nothing: when nats-server is missing it says how to install it.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${NATS_PORT:-4222}

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "==> a NATS server already answers on 127.0.0.1:$port (the writer needs JetStream on it: nats-server -js)"
  exit 0
fi
if [[ -n ${SPIN_VARIABLE_NATS_URL:-} ]]; then
  echo "==> the app connects to SPIN_VARIABLE_NATS_URL=$SPIN_VARIABLE_NATS_URL: no local nats-server started"
  exit 0
fi
if ! command -v nats-server >/dev/null; then
  echo "missing: nats-server. Install it (Debian/Ubuntu: sudo apt-get install nats-server," >&2
  echo "  or see https://docs.nats.io/running-a-nats-service/introduction/installation)," >&2
  echo "  or point the app at another server: SPIN_VARIABLE_NATS_URL=nats://host:4222 make up" >&2
  exit 1
fi
mkdir -p .spin
nohup nats-server -a 127.0.0.1 -p "$port" -js -sd .spin/jetstream >.spin/nats-server.log 2>&1 &
echo $! >.spin/nats-server.pid
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "==> nats-server with JetStream started on 127.0.0.1:$port (stream store .spin/jetstream; pid $(cat .spin/nats-server.pid), log .spin/nats-server.log; make stop stops it)"
    exit 0
  fi
  sleep 0.1
done
echo "nats-server did not start; see .spin/nats-server.log" >&2
exit 1
