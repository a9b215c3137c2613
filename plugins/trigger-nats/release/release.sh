#!/usr/bin/env bash
# Builds a trigger-nats release for this machine's platform and renders its plugin
# index manifest, from this folder alone (no file outside plugins/trigger-nats is read).
#
#   release/release.sh [--version V] [--out DIR] [--base-url URL] [--this-platform]
#
# - cargo build --release --locked (CARGO_TARGET_DIR honoured), with V baked in as the
#   version the plugin logs (default: the workspace's version, Cargo.toml);
# - DIR/trigger-nats-V-<os>-<arch>.tar.gz: the binary at the archive's top, as Spin's
#   plugin installer expects it;
# - DIR/trigger-nats.json: the manifest for linux and macOS, amd64 and aarch64
#   (release/manifest.json.in), url = URL/<archive>, sha256 of each archive. When DIR does
#   not hold all four archives (a release puts the other three there, built on machines of
#   those platforms), the manifest lists this platform only and says which are missing;
#   --this-platform: this platform only, silently (a local install).
#
# Default URL: the GitHub release of tag trigger-nats-vV; DIR: target/release-dist.
# Install what it wrote with: spin plugins install --file DIR/trigger-nats.json --yes
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version="" out="" base_url="" only=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --base-url) base_url=$2; shift 2 ;;
    --this-platform) only=1; shift ;;
    *) echo "usage: $0 [--version V] [--out DIR] [--base-url URL] [--this-platform]" >&2; exit 2 ;;
  esac
done
[[ -n $version ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
[[ -n $out ]] || out=$here/target/release-dist
[[ -n $base_url ]] || base_url=https://github.com/spin-tasks/spin-tasks/releases/download/trigger-nats-v$version
case "$(uname -s)" in Linux) os=linux ;; Darwin) os=macos ;; *) os=$(uname -s) ;; esac
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64|arm64) arch=aarch64 ;; *) arch=$(uname -m) ;; esac
target_dir=${CARGO_TARGET_DIR:-$here/target}

echo "==> building trigger-nats $version for $os-$arch (the first build on a machine compiles Spin's runtime crates: slow)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! (cd "$here" && TRIGGER_NATS_VERSION=$version cargo build --release --locked 2>&1 | tee "$log" >&2); then
  echo "could not build trigger-nats; the compiler said:" >&2
  grep -E -A12 '^error' "$log" | head -40 >&2 || tail -20 "$log" >&2
  if grep -qiE 'failed to (fetch|clone|get)|could not resolve host|network' "$log"; then
    echo "(Spin's crates come with git from https://github.com/spinframework/spin, tag v4.0.2: is GitHub reachable?)" >&2
  fi
  exit 1
fi

mkdir -p "$out"
archive=trigger-nats-$version-$os-$arch.tar.gz
stage=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$stage"' EXIT
cp "$target_dir/release/trigger-nats" "$stage/"
# Fixed owner, order and times: the same binary gives the same archive and sha256.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - trigger-nats |
  gzip -n >"$out/$archive"
echo "==> $out/$archive"

if [[ -z $only ]] && python3 "$here/release/manifest.py" --version "$version" --archives "$out" \
     --base-url "$base_url" --out "$out/trigger-nats.json" 2>"$stage/missing"; then
  echo "==> $out/trigger-nats.json (linux and macOS, amd64 and aarch64)"
else
  python3 "$here/release/manifest.py" --version "$version" --archives "$out" --base-url "$base_url" \
    --only "$os-$arch" --out "$out/trigger-nats.json"
  if [[ -n $only ]]; then
    echo "==> $out/trigger-nats.json ($os-$arch)"
  else
    sed 's/^/    /' "$stage/missing" >&2
    echo "==> $out/trigger-nats.json ($os-$arch only: a release adds the other platforms' archives to $out and runs this again)"
  fi
fi
