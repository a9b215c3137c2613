#!/usr/bin/env bash
# Makes sure both trigger plugins the app uses are installed:
# - trigger-cron (the retrier's schedule) from Spin's plugin index;
# - trigger-nats: builds plugins/trigger-nats (release) and installs it from a
#   local plugin manifest, reinstalling only when the binary changed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=plugins/trigger-nats

if ! command -v spin >/dev/null; then
  echo "missing: the Spin CLI (>= 4.0), needed to install the trigger plugins" >&2
  exit 1
fi

# Read the list once: `grep -q` closing a pipe early fails it under pipefail.
installed() { spin plugins list --installed 2>/dev/null | cat; }
if grep -q '^trigger-cron ' <<<"$(installed)"; then
  echo "==> trigger-cron plugin is installed"
else
  echo "==> installing the trigger-cron plugin from Spin's plugin index"
  if ! { spin plugins update && spin plugins install trigger-cron --yes; }; then
    cat >&2 <<MSG
could not install the trigger-cron plugin (it drives the retrier). With network access:
  spin plugins update && spin plugins install trigger-cron --yes
Offline, build it from https://github.com/spinframework/spin-trigger-plugins (trigger-cron)
against your Spin version and install it with: spin plugins install --file <manifest.json>
MSG
    exit 1
  fi
fi

echo "==> building the trigger-nats plugin (first build compiles Spin's runtime crates: slow)"
if ! (cd "$dir" && cargo build --release); then
  cat >&2 <<MSG
could not build plugins/trigger-nats. It depends on Spin's crates, which are fetched
with git from https://github.com/spinframework/spin (tag v4.0.2): check network access
to GitHub, or point cargo at a local checkout of that tag (a [patch] in your own
~/.cargo/config.toml; never commit it).
MSG
  exit 1
fi

target_dir=$(cd "$dir" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/package"
mkdir -p "$out"
bin="$target_dir/release/trigger-nats"
sha_bin=$(sha256sum "$bin" | cut -d' ' -f1)
if [[ -f "$out/installed.sha256" && "$(cat "$out/installed.sha256")" == "$sha_bin" ]] &&
   grep -q '^trigger-nats ' <<<"$(installed)"; then
  echo "==> trigger-nats plugin is installed and up to date"
  exit 0
fi

tar czf "$out/trigger-nats.tar.gz" -C "$(dirname "$bin")" trigger-nats
sha=$(sha256sum "$out/trigger-nats.tar.gz" | cut -d' ' -f1)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
case "$(uname -s)" in Linux) os=linux ;; Darwin) os=macos ;; *) os=$(uname -s) ;; esac
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64|arm64) arch=aarch64 ;; *) arch=$(uname -m) ;; esac
sed -e "s|@VERSION@|$version|" -e "s|@OS@|$os|" -e "s|@ARCH@|$arch|" \
    -e "s|@URL@|file://$out/trigger-nats.tar.gz|" -e "s|@SHA256@|$sha|" \
    "$dir/trigger-nats.json.in" >"$out/trigger-nats.json"

if grep -q '^trigger-nats ' <<<"$(installed)"; then
  spin plugins uninstall trigger-nats >/dev/null
fi
echo "==> installing trigger-nats $version into Spin"
spin plugins install --file "$out/trigger-nats.json" --yes
echo "$sha_bin" >"$out/installed.sha256"
