#!/usr/bin/env bash
# Checks what spin-tasks needs, before anything is compiled, and names each missing piece
# with the command that installs it. Installs nothing itself, except the wasm32-wasip2
# Rust target through rustup (said when it does).
#   scripts/prereqs.sh              what the wasm build needs: Rust (cargo, rustup) with the
#                                   wasm32-wasip2 target, a C compiler
#   scripts/prereqs.sh --need spin  also the Spin CLI (>= 4.0)
#   scripts/prereqs.sh --for up     everything `make up` needs: the above, pkg-config and the
#                                   OpenSSL headers (the plugin's build), python3 (its
#                                   release manifest), Spin, and nats-server unless a NATS
#                                   server already answers on 127.0.0.1:${NATS_PORT:-4222}
#                                   or SPIN_VARIABLE_NATS_URL names another one
#   scripts/prereqs.sh --for test   everything `make test` needs (docs/testing.md): what
#                                   make up needs, nats-server itself (each suite starts its
#                                   own), rustfmt and clippy, the nightly toolchain (fuzz
#                                   targets), curl, jq, sqlite3, openssl, redis-server,
#                                   Node.js with npm, Debian's chromium, and Python's venv
# Exits 1 after listing every missing piece.
set -euo pipefail

need_spin=0 for_up=0 for_test=0
usage() { echo "usage: $0 [--need spin | --for up | --for test]" >&2; exit 2; }
case "${1:-}" in
  "") ;;
  --need) [[ ${2:-} == spin ]] || usage; need_spin=1 ;;
  --for)
    case ${2:-} in
      up) need_spin=1 for_up=1 ;;
      test) need_spin=1 for_up=1 for_test=1 ;;
      *) usage ;;
    esac ;;
  *) usage ;;
esac

missing=0
# lack WHAT FIX: one missing piece and the command that installs it.
lack() {
  printf 'missing: %s\n  fix: %s\n' "$1" "$2" >&2
  missing=1
}
debian() { command -v apt-get >/dev/null && echo "sudo apt-get install $1" || echo "$2"; }

if ! command -v cargo >/dev/null; then
  lack "Rust (cargo)" "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh, then open a new shell"
elif ! command -v rustup >/dev/null; then
  lack "rustup (to add the wasm32-wasip2 target)" "install Rust with rustup: https://rustup.rs"
else
  # Read the list first: `grep -q` closing the pipe early would fail it under pipefail.
  targets=$(rustup target list --installed || true)
  if ! grep -qx wasm32-wasip2 <<<"$targets"; then
    echo "==> adding the wasm32-wasip2 Rust target (rustup target add wasm32-wasip2)"
    rustup target add wasm32-wasip2 >&2 ||
      lack "the Rust target wasm32-wasip2 (rustup could not add it: offline?)" "rustup target add wasm32-wasip2"
  fi
fi
command -v cc >/dev/null ||
  lack "a C compiler (cc; build scripts and the bundled SQLite need it)" \
    "$(debian build-essential 'install your platform'"'"'s C toolchain (macOS: xcode-select --install)')"

if ((for_up)); then
  command -v pkg-config >/dev/null ||
    lack "pkg-config (the trigger-nats plugin's build finds OpenSSL with it)" "$(debian pkg-config 'install pkg-config')"
  if command -v pkg-config >/dev/null && ! pkg-config --exists openssl; then
    lack "the OpenSSL headers (the trigger-nats plugin links OpenSSL)" "$(debian libssl-dev 'install OpenSSL with its headers (macOS: brew install openssl@3)')"
  fi
  command -v python3 >/dev/null ||
    lack "python3 (the plugin's release manifest is rendered with it)" "$(debian python3 'install Python 3')"
fi

if ((need_spin)); then
  if ! command -v spin >/dev/null; then
    lack "the Spin CLI, 4.0 or later (tested on 4.0.2)" "see https://spinframework.dev/install (or build github.com/spinframework/spin at tag v4.0.2: cargo build --release)"
  else
    version=$(spin --version | awk '{print $2}')
    major=${version%%.*}
    if [[ ! $major =~ ^[0-9]+$ ]] || ((major < 4)); then
      lack "Spin 4.0 or later (found spin $version)" "see https://spinframework.dev/install"
    fi
  fi
fi

if ((for_test)); then
  command -v nats-server >/dev/null ||
    lack "nats-server (each suite starts its own)" \
      "$(debian nats-server 'see https://docs.nats.io/running-a-nats-service/introduction/installation')"
  # tool WHY DEBIAN-PACKAGE ELSEWHERE: one command the suites run.
  tool() {
    command -v "$1" >/dev/null || lack "$1 ($2)" "$(debian "$3" "$4")"
  }
  tool curl "the e2e suites' HTTP client" curl "install curl"
  tool jq "the e2e suites read JSON with it" jq "install jq"
  tool sqlite3 "the e2e suites read the local store with it" sqlite3 "install sqlite3"
  tool openssl "the plugin's TLS tests make a private CA with it" openssl "install openssl"
  tool redis-server "the plugin's tests and the retry, cluster and chaos suites" redis-server "install Redis"
  tool node "Cloudflare's emulator, miniflare" nodejs "install Node.js 20 or later"
  tool npm "installs miniflare into tests/miniflare" npm "install npm"
  tool chromium "the live-pages suite's browser" chromium "install Chromium"
  if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    lack "Python's venv (the suites' Python packages go into a virtual environment)" \
      "$(debian python3-venv 'install Python 3 with its venv module')"
  fi
  if command -v rustup >/dev/null; then
    components=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do
      grep -q "^$c" <<<"$components" || lack "the Rust component $c (make lint)" "rustup component add $c"
    done
    toolchains=$(rustup toolchain list 2>/dev/null || true)
    grep -q '^nightly' <<<"$toolchains" ||
      lack "the nightly Rust toolchain (the fuzz targets: libFuzzer, SanitizerCoverage)" \
        "rustup toolchain install nightly --profile minimal"
  fi
elif ((for_up)) && [[ -z ${SPIN_VARIABLE_NATS_URL:-} ]] && ! command -v nats-server >/dev/null &&
   ! (exec 3<>"/dev/tcp/127.0.0.1/${NATS_PORT:-4222}") 2>/dev/null; then
  lack "nats-server (or a NATS server with JetStream: SPIN_VARIABLE_NATS_URL=nats://host:4222 make up)" \
    "$(debian nats-server 'see https://docs.nats.io/running-a-nats-service/introduction/installation')"
fi

((missing == 0)) || echo "spin-tasks: install what is missing above, then run the command again" >&2
exit "$missing"
