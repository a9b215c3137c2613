#!/usr/bin/env bash
# Checks (and where it can, installs) what spin-tasks needs.
#   scripts/prereqs.sh              Rust toolchain and the wasm32-wasip2 target
#   scripts/prereqs.sh --need spin  also the Spin CLI
# Exits non-zero naming exactly what is missing and how to get it.
set -euo pipefail

missing=0
say() { printf '%s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
  say "missing: Rust (cargo). Install rustup from https://rustup.rs, then re-run."
  missing=1
elif command -v rustup >/dev/null; then
  # Read the list first: `grep -q` closing the pipe early would fail it under pipefail.
  # A failing `rustup target list` means "not installed", as the pipe did.
  targets=$(rustup target list --installed || true)
  if ! grep -qx wasm32-wasip2 <<<"$targets"; then
    echo "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2 || {
      say "missing: Rust target wasm32-wasip2 and it could not be installed (offline?)."
      say "  fix: rustup target add wasm32-wasip2"
      missing=1
    }
  fi
fi

if [[ "${1:-}" == "--need" && "${2:-}" == "spin" ]]; then
  if ! command -v spin >/dev/null; then
    say "missing: the Spin CLI (4.0.x). Install it from https://spinframework.dev/install"
    say "  (or build it from github.com/spinframework/spin at tag v4.0.2: cargo build --release)"
    missing=1
  else
    version=$(spin --version | awk '{print $2}')
    major=${version%%.*}
    minor=${version#*.}; minor=${minor%%.*}
    if [[ "$major" =~ ^[0-9]+$ ]] && (( major < 4 )); then
      say "spin $version is too old: spin-tasks needs Spin 4.0.x"
      missing=1
    elif [[ "$major.$minor" != "4.0" ]]; then
      # Not fatal: a later Spin may still implement the WASI 0.3 release candidate web uses.
      say "note: spin $version is not 4.0.x; the web component's WASI 0.3 handler targets the release candidate Spin 4.0 implements (wasi:http@0.3.0-rc-2026-03-15)"
    fi
  fi
fi
exit "$missing"
