#!/usr/bin/env bash
# The trigger plugins the app uses.
#   scripts/install-plugin.sh            make sure both are installed in Spin:
#     - trigger-cron (the retrier's schedule) from Spin's plugin index;
#     - trigger-nats: builds plugins/trigger-nats (release) from this tree and
#       installs it from a local plugin manifest, reinstalling only when the
#       binary changed.
#   scripts/install-plugin.sh --check    exit 0 only when the trigger-nats that
#       Spin runs is this tree's build (version and binary); else say why.
#   scripts/install-plugin.sh --version  this tree's trigger-nats version.
#
# The version is the crate's plus build metadata naming the commit and, for
# uncommitted changes to the plugin's inputs, a hash of them
# (0.1.0+g1a2b3c4d5e6f or 0.1.0+g1a2b3c4d5e6f.dirty.0a1b2c3d4e5f); the plugin
# logs it at start-up. Its cargo target directory lives outside the clone
# (TRIGGER_NATS_TARGET_DIR, default ~/.cache/spin-tasks/plugin-target), so
# Spin's crates compile once per machine, not once per clone.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=plugins/trigger-nats
# What the plugin is built from: a change to any of these is a new build.
inputs=("$dir" crates/trigger-nats-core Cargo.toml)
export CARGO_TARGET_DIR=${TRIGGER_NATS_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/plugin-target}
bin=$CARGO_TARGET_DIR/release/trigger-nats
out=$CARGO_TARGET_DIR/package
plugins_dir=${SPIN_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/spin}/plugins

version() {
  local base commit changes
  base=$(sed -n 's/^version = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
  if ! commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    echo "$base+local"
    return
  fi
  if [[ -z $(git status --porcelain -- "${inputs[@]}") ]]; then
    echo "$base+g$commit"
    return
  fi
  changes=$({
    git diff HEAD -- "${inputs[@]}"
    git ls-files --others --exclude-standard -z -- "${inputs[@]}" | xargs -0 -r sha256sum
  } | sha256sum | cut -c1-12)
  echo "$base+g$commit.dirty.$changes"
}

# Read the list once: `grep -q` closing a pipe early fails it under pipefail.
installed() { spin plugins list --installed 2>/dev/null | cat; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

check() {
  local want have
  command -v spin >/dev/null || { echo "spin is not installed"; return 1; }
  want=$(version)
  have=$(installed | awk '$1 == "trigger-nats" {print $2}')
  if [[ -z $have ]]; then
    echo "the trigger-nats plugin is not installed"
    return 1
  fi
  if [[ $have != "$want" ]]; then
    echo "Spin runs trigger-nats $have, but this tree builds $want"
    return 1
  fi
  if [[ ! -f $bin || ! -f $plugins_dir/trigger-nats/trigger-nats ]] ||
     [[ $(sha "$bin") != $(sha "$plugins_dir/trigger-nats/trigger-nats") ]]; then
    echo "the installed trigger-nats binary is not $bin (this tree's build)"
    return 1
  fi
}

case ${1:-} in
  --version) version; exit 0 ;;
  --check) check; exit ;;
  "") ;;
  *) echo "usage: $0 [--check | --version]" >&2; exit 2 ;;
esac

if ! command -v spin >/dev/null; then
  echo "missing: the Spin CLI (>= 4.0), needed to install the trigger plugins" >&2
  exit 1
fi

if grep -q '^trigger-cron ' <<<"$(installed)"; then
  echo "==> trigger-cron plugin is installed"
else
  echo "==> installing the trigger-cron plugin from Spin's plugin index"
  if ! { spin plugins update && spin plugins install trigger-cron --yes; }; then
    cat >&2 <<MSG
could not install the trigger-cron plugin (it drives the retrier). With network access:
  spin plugins update && spin plugins install trigger-cron --yes
Without access to GitHub, build it from source: see the README's troubleshooting.
MSG
    exit 1
  fi
fi

version=$(version)
echo "==> building trigger-nats $version (the first build on a machine compiles Spin's runtime crates: slow)"
if ! (cd "$dir" && TRIGGER_NATS_VERSION=$version cargo build --release --locked); then
  cat >&2 <<MSG
could not build plugins/trigger-nats. It depends on Spin's crates, which are fetched
with git from https://github.com/spinframework/spin (tag v4.0.2): check network access
to GitHub, or see the README's troubleshooting for a machine without it.
MSG
  exit 1
fi

if check >/dev/null; then
  echo "==> trigger-nats $version is installed and up to date"
  exit 0
fi

case "$(uname -s)" in Linux) os=linux ;; Darwin) os=macos ;; *) os=$(uname -s) ;; esac
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64|arm64) arch=aarch64 ;; *) arch=$(uname -m) ;; esac
# The release archive of this platform and the index manifest, as a release would have
# them (scripts/plugin-manifest.py), naming the archive by file:// URL.
rm -rf "$out"; mkdir -p "$out"
tar czf "$out/trigger-nats-$version-$os-$arch.tar.gz" -C "$(dirname "$bin")" trigger-nats
python3 scripts/plugin-manifest.py --version "$version" --archives "$out" \
  --base-url "file://$out" --only "$os-$arch" --out "$out/trigger-nats.json"

if grep -q '^trigger-nats ' <<<"$(installed)"; then
  spin plugins uninstall trigger-nats >/dev/null
fi
echo "==> installing trigger-nats $version into Spin"
spin plugins install --file "$out/trigger-nats.json" --yes
why=$(check) || { echo "installed, but: $why" >&2; exit 1; }
