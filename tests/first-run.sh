#!/usr/bin/env bash
# A first run on a machine that lacks something: `make up` in a fresh copy of this tree,
# with one tool taken off PATH, stops before compiling anything (within 60 s) naming the
# missing tool and the command that installs it; and scripts/prereqs.sh --for up names
# each tool make up needs when that one is missing (cargo, rustup, a C compiler,
# pkg-config, the OpenSSL headers, python3, spin, nats-server), and --for test each command
# make test needs besides (nats-server, curl, jq, sqlite3, openssl, redis-server, node, npm,
# chromium); and `make clean` stops the
# nats-server `make nats` started before it removes .spin/ (its pid file and store).
# "Off PATH": PATH becomes one directory of links to every command on the real PATH but
# the ones named, so nothing else changes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

suite_dirs first-run
on_exit '[[ -f $WORK/clone/.spin/nats-server.pid ]] && kill "$(cat "$WORK/clone/.spin/nats-server.pid")" 2>/dev/null; rm -rf "$WORK"'
passed=0 failed=0

# path_without NAME...: a PATH (one directory) with every command of PATH but NAME...
path_without() {
  local dir=$WORK/path-$(IFS=-; echo "$*") d f name skip
  mkdir -p "$dir"
  IFS=: read -ra dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [[ -d $d ]] || continue
    for f in "$d"/*; do
      name=${f##*/}
      [[ -x $f && ! -e $dir/$name ]] || continue
      skip=0
      for n in "$@"; do [[ $name == "$n" ]] && skip=1; done
      ((skip)) || ln -s "$f" "$dir/$name"
    done
  done
  echo "$dir"
}

# A fresh copy of this tree (its files as they are, without build output), as a clone has it.
copy=$WORK/clone
mkdir -p "$copy"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$copy" -xf -
# Nothing may answer where make up would look for NATS.
free=$(free_port)

# make_up_without NAME WANT: make up in the copy without NAME; WANT, a line it must print.
make_up_without() {
  local name=$1 want=$2 out=$OUT/make-up-without-$1.txt rc start
  start=$(date +%s)
  set +e
  (cd "$copy" && env -u SPIN_VARIABLE_NATS_URL PATH="$(path_without "$name")" NATS_PORT=$free \
     timeout 60 make up) >"$out" 2>&1
  rc=$?
  set -e
  echo "       make up without $name: exit $rc after $(($(date +%s) - start)) s"
  check "make up without $name exits non-zero before 60 s" test "$rc" -ne 0 -a "$rc" -ne 124
  check "… naming it and how to install it" grep -qF "$want" "$out"
  check "… having compiled nothing" bash -c "! grep -q 'Compiling' '$out' && test ! -d '$copy/target'"
}
make_up_without spin "missing: the Spin CLI"
make_up_without nats-server "missing: nats-server"

echo "==> scripts/prereqs.sh --for up, each tool missing in turn"
prereqs_without() { # NAME WANT [ENV...]: prereqs.sh --for ${FOR:-up} without NAME
  local name=$1 want=$2 for=${FOR:-up} out=$OUT/prereqs-${FOR:-up}-without-$1.txt
  shift 2
  set +e
  env -u SPIN_VARIABLE_NATS_URL PATH="$(path_without "$name")" NATS_PORT=$free "$@" \
    "$ROOT/scripts/prereqs.sh" --for "$for" >"$out" 2>&1
  local rc=$?
  set -e
  check "without $name: exit 1 naming it ($want)" bash -c "test $rc -eq 1 && grep -qF '$want' '$out' && grep -q '^  fix: ' '$out'"
}
prereqs_without cargo "missing: Rust (cargo)"
prereqs_without rustup "missing: rustup"
prereqs_without cc "missing: a C compiler"
prereqs_without pkg-config "missing: pkg-config"
prereqs_without python3 "missing: python3"
prereqs_without spin "missing: the Spin CLI"
prereqs_without nats-server "missing: nats-server"
# The OpenSSL headers: pkg-config finds no openssl.pc.
mkdir -p "$WORK/empty-pc"
prereqs_without openssl-headers "missing: the OpenSSL headers" PKG_CONFIG_PATH="$WORK/empty-pc" PKG_CONFIG_LIBDIR="$WORK/empty-pc"
check "with everything there: exit 0, nothing missing" bash -c "env -u SPIN_VARIABLE_NATS_URL NATS_PORT=$free '$ROOT/scripts/prereqs.sh' --for up >'$OUT/prereqs-all.txt' 2>&1 && ! grep -q missing '$OUT/prereqs-all.txt'"

echo "==> scripts/prereqs.sh --for test (what make test needs besides), each tool missing in turn"
# nats-server even when a NATS server answers: each suite starts its own.
FOR=test prereqs_without nats-server "missing: nats-server (each suite starts its own)"
for t in curl jq sqlite3 openssl redis-server node npm chromium; do
  FOR=test prereqs_without "$t" "missing: $t ("
done

echo "==> make clean stops the nats-server make nats started before removing .spin/"
(cd "$copy" && NATS_PORT=$free make -s nats) >"$OUT/make-nats.txt" 2>&1
pid=$(cat "$copy/.spin/nats-server.pid")
check "make nats started nats-server (pid $pid)" kill -0 "$pid"
(cd "$copy" && make -s clean) >"$OUT/make-clean.txt" 2>&1
gone() { ! kill -0 "$pid" 2>/dev/null; }
check "make clean stopped it" wait_until 5 gone
check "… and removed .spin/" test ! -e "$copy/.spin"

summary first-run
