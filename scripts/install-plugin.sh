#!/usr/bin/env bash
# The trigger plugins the app uses.
#   scripts/install-plugin.sh            make sure both are installed in Spin (in
#       SPIN_DATA_DIR when set: make test uses a private one):
#     - trigger-nats: builds a copy of plugins/trigger-nats alone with its release
#       script (plugins/trigger-nats/release/release.sh) and installs the manifest
#       that renders, reinstalling only when the binary changed;
#     - trigger-cron (the retrier's schedule): copied from the user's own Spin into a
#       private data dir, else from Spin's plugin index.
#   scripts/install-plugin.sh --check    exit 0 only when the trigger-nats that
#       Spin runs is this tree's build (version and binary); else say why.
#   scripts/install-plugin.sh --version  this tree's trigger-nats version.
#   scripts/install-plugin.sh --copy     copy plugins/trigger-nats alone (nothing else of
#       the repository) to a folder of its own and print its path: where the plugin is
#       built and its crates' tests run (make test-native), which shows the folder is
#       self-contained.
#   scripts/install-plugin.sh --manifest the release manifest of the last build (what
#       Spin installed it from; the template suite installs it into a data dir of its own).
#
# The version is the crate's plus build metadata naming the commit and, for
# uncommitted changes to the plugin's inputs, a hash of them
# (0.2.0+g1a2b3c4d5e6f or 0.2.0+g1a2b3c4d5e6f.dirty.0a1b2c3d4e5f); the plugin
# logs it at start-up. Its cargo target directory lives outside the clone
# (TRIGGER_NATS_TARGET_DIR, default ~/.cache/spin-tasks/plugin-target), so
# Spin's crates compile once per machine, not once per clone.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=plugins/trigger-nats
# What the plugin is built from: a change to any of these is a new build.
inputs=("$dir")
export CARGO_TARGET_DIR=${TRIGGER_NATS_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/plugin-target}
out=$CARGO_TARGET_DIR/package
# This tree's last build as packaged (make plugin-release may build over cargo's own copy).
bin=$out/trigger-nats
alone=${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/plugin-alone/trigger-nats
# Spin's data directory (its own rule: SPIN_DATA_DIR, else the XDG data dir); make test
# sets SPIN_DATA_DIR to a private one.
user_plugins=${XDG_DATA_HOME:-$HOME/.local/share}/spin/plugins
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

# Modification times are kept, so cargo rebuilds only what changed.
copy_alone() {
  rm -rf "$alone"; mkdir -p "$alone"
  tar -C "$dir" --exclude=./target -cf - . | tar -C "$alone" -xf -
}

case ${1:-} in
  --version) version; exit 0 ;;
  --copy) copy_alone; echo "$alone"; exit 0 ;;
  --check) check; exit ;;
  --manifest) echo "$out/trigger-nats.json"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--check | --version | --copy | --manifest]" >&2; exit 2 ;;
esac

if ! command -v spin >/dev/null; then
  echo "missing: the Spin CLI (>= 4.0), needed to install the trigger plugins" >&2
  exit 1
fi

version=$(version)
# Built from a copy of plugins/trigger-nats alone (the folder is self-contained: this
# build proves it), by the folder's own release script, and installed from the manifest
# that script renders, the way a user installs a release.
copy_alone
rm -rf "$out"
if ! "$alone/release/release.sh" --version "$version" --out "$out" --base-url "file://$out" --this-platform; then
  echo "could not build plugins/trigger-nats (built from its copy in $alone)" >&2
  exit 1
fi
cp "$CARGO_TARGET_DIR/release/trigger-nats" "$bin"

if check >/dev/null; then
  echo "==> trigger-nats $version is installed and up to date"
else
  if grep -q '^trigger-nats ' <<<"$(installed)"; then
    spin plugins uninstall trigger-nats >/dev/null
  fi
  echo "==> installing trigger-nats $version into Spin ($plugins_dir)"
  spin plugins install --file "$out/trigger-nats.json" --yes
  why=$(check) || { echo "installed, but: $why" >&2; exit 1; }
fi

# trigger-cron drives the app's retrier (trigger-nats does not need it).
if grep -q '^trigger-cron ' <<<"$(installed)"; then
  echo "==> trigger-cron plugin is installed"
elif [[ -n ${SPIN_DATA_DIR:-} && -f $user_plugins/manifests/trigger-cron.json && $user_plugins != "$plugins_dir" ]]; then
  # A private data dir (make test): a copy of the user's own trigger-cron, theirs untouched.
  echo "==> copying the trigger-cron plugin from $user_plugins into $plugins_dir"
  mkdir -p "$plugins_dir/manifests"
  cp -r "$user_plugins/trigger-cron" "$plugins_dir/"
  cp "$user_plugins/manifests/trigger-cron.json" "$plugins_dir/manifests/"
else
  echo "==> installing the trigger-cron plugin from Spin's plugin index"
  if ! { spin plugins update && spin plugins install trigger-cron --yes; }; then
    cat >&2 <<MSG
could not install the trigger-cron plugin (it drives the app's retrier; trigger-nats is
installed). With network access:
  spin plugins update && spin plugins install trigger-cron --yes
Without access to GitHub, build it from source: see docs/operations.md, "Troubleshooting".
MSG
    exit 1
  fi
fi
