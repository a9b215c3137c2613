#!/usr/bin/env bash
# trigger-nats and its template as a Spin developer meets them, in a Spin data directory
# of the suite's own:
#   the release manifest (plugins/trigger-nats/release/release.sh, rendered by make plugin)
#   installed with `spin plugins install --file`; templates/nats-rust installed with
#   `spin templates install --dir`; `spin new -t nats-rust` into a temp directory and
#   `spin add -t nats-rust` of a second component into that app; `spin build`; `spin up`
#   with the plugin so installed; a message published on each subject → each component's
#   log line; and a component that exports neither handler fails `spin up` with an error
#   naming it;
# the plugin's telemetry: with OTEL_EXPORTER_OTLP_ENDPOINT on a small OTLP/HTTP receiver
# (tests/otlp_receiver.py, decoding with PyPI opentelemetry-proto), a message published
# with a W3C traceparent header gives a span with that parent and the subject attribute;
# the plugin index manifest for four platforms (plugins/trigger-nats/release/manifest.py).
# The template names the SDK by its git repository and release tag, and the app is built
# with that dependency as written. GitHub is not reachable from the suites: a git
# repository of this tree's files, tagged as the release would be, stands in for
# https://github.com/spin-tasks/spin-tasks (git's url.insteadOf, for this suite's
# processes only). That host is the one thing substituted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools cargo python3 openssl
for module in nats:nats-py opentelemetry.proto:opentelemetry-proto; do
  python3 -c "import ${module%%:*}" 2>/dev/null ||
    cannot_run "the Python package ${module#*:} is not installed" "scripts/python-env.sh (then run through make test, which puts it on PATH)"
done

suite_dirs e2e-template
OTLP_PID=""
on_exit '[[ -n $OTLP_PID ]] && kill "$OTLP_PID" 2>/dev/null; stop_all'
# pub_with_headers SUBJECT PAYLOAD [NAME VALUE]...: one core NATS message (nats-py), raw bytes
# allowed in PAYLOAD as Python escapes.
pub_with_headers() {
  python3 - "$NATS_URL" "$@" <<'PY'
import asyncio, sys
import nats
async def main():
    url, subject, payload, *pairs = sys.argv[1:]
    headers = dict(zip(pairs[::2], pairs[1::2])) or None
    nc = await nats.connect(url)
    await nc.publish(subject, payload.encode("latin-1").decode("unicode_escape").encode("latin-1"), headers=headers)
    await nc.flush()
    await nc.close()
asyncio.run(main())
PY
}
build_tools

echo "==> spin plugins install --file <the rendered release manifest>, into an empty data dir"
export SPIN_DATA_DIR="$WORK/data"
release_manifest=$("$ROOT/scripts/install-plugin.sh" --manifest)
check "the plugin installs from its release manifest" \
  bash -c "spin plugins install --file '$release_manifest' --yes >'$OUT/plugin-install.txt' 2>&1"
check "… as this tree's build" "$ROOT/scripts/install-plugin.sh" --check

echo "==> the SDK at the release tag the template pins"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/plugins/trigger-nats/Cargo.toml" | head -1)
check "the template pins trigger-nats-sdk at tag trigger-nats-v$version (the plugin's version)" \
  grep -qF "trigger-nats-sdk = { git = \"https://github.com/spin-tasks/spin-tasks\", tag = \"trigger-nats-v$version\" }" \
  "$ROOT/templates/nats-rust/content/Cargo.toml.tmpl"
release_repo=$WORK/spin-tasks
mkdir -p "$release_repo"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$release_repo" -xf -
git -C "$release_repo" init -q
git -C "$release_repo" add -A
git -C "$release_repo" -c user.name=e2e -c user.email=e2e@localhost commit -q -m "this tree"
git -C "$release_repo" tag "trigger-nats-v$version"
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$release_repo.insteadOf" \
  GIT_CONFIG_VALUE_0="https://github.com/spin-tasks/spin-tasks" CARGO_NET_GIT_FETCH_WITH_CLI=true

echo "==> spin templates install --dir . ; spin new -t nats-rust ; spin add -t nats-rust"
check "the template installs" spin templates install --dir "$ROOT" --upgrade
check "spin templates list shows it" grep -q "nats-rust" <(spin templates list)
( cd "$WORK" && spin new -t nats-rust hello-nats --accept-defaults \
    --value "project-description=e2e" --value "subject=greetings.>" ) >"$OUT/spin-new.txt" 2>&1
APP="$WORK/hello-nats"
check "spin new made the app" test -f "$APP/spin.toml" -a -f "$APP/src/lib.rs" -a -f "$APP/Cargo.toml"
check "the manifest subscribes the component" grep -q '^subject = "greetings.>"' "$APP/spin.toml"
( cd "$APP" && spin add -t nats-rust second --accept-defaults --value "project-description=added" \
    --value "subject=second.*" ) >"$OUT/spin-add.txt" 2>&1
check "spin add made the second component in the app" test -f "$APP/second/src/lib.rs" -a -f "$APP/second/Cargo.toml"
check "… subscribed to its subject" grep -q '^subject = "second.\*"' "$APP/spin.toml"
count() { [[ $(grep -c "$1" "$APP/spin.toml") -eq $2 ]]; }
one_connection() { count '^\[application.trigger.nats\]' 1 && count '^nats_url = ' 1 && count '^\[\[trigger.nats\]\]' 2; }
check "… sharing the app's one NATS connection and variable" one_connection

echo "==> spin build"
check "spin build compiles the component" bash -c "cd '$APP' && spin build >'$OUT/spin-build.txt' 2>&1" ||
  tail -30 "$OUT/spin-build.txt"
check "… into the path the manifest names" test -f "$APP/target/wasm32-wasip2/release/hello_nats.wasm"
check "… and the added component into its own" test -f "$APP/second/target/wasm32-wasip2/release/second.wasm"
check "… with the SDK from the pinned tag" grep -q 'source = "git+https://github.com/spin-tasks/spin-tasks?tag=trigger-nats-v' "$APP/Cargo.lock"

echo "==> spin up (exporting traces to a local OTLP receiver), publish, the component logs"
start_nats "$(free_port)" "$WORK/nats-server.log"
: >"$WORK/runtime-config.toml"
OTLP_PORT=$(free_port)
python3 "$ROOT/tests/otlp_receiver.py" --port "$OTLP_PORT" --out "$OUT/spans.jsonl" &
OTLP_PID=$!
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" OTEL_BSP_SCHEDULE_DELAY=200 \
  SPIN_MANIFEST="$APP/spin.toml" start_spin "$WORK" - "$OUT/logs"
check "the plugin subscribes the component" wait_log "$OUT/logs/spin-up.txt" "hello-nats ← greetings" 60
check "… and says which export it calls" grep -q "component hello-nats exports handle-message" "$OUT/logs/spin-up.txt"
nats_tool pub greetings.world "hello from e2e" >/dev/null
check "a published message reaches the component" \
  wait_log "$OUT/logs/hello-nats_stdout.txt" "^greetings.world: hello from e2e$" 15
nats_tool pub second.one "to the added one" >/dev/null
check "… and one on the added component's subject reaches that one" \
  wait_log "$OUT/logs/second_stdout.txt" "^second.one: to the added one$" 15
pub_with_headers greetings.bytes 'caf\xe9'
check "an error from the handler is logged by the plugin with its context" \
  wait_log "$OUT/logs/spin-up.txt" "the payload on greetings.bytes is not UTF-8" 15
trace=4bf92f3577b34da6a3ce929d0e0e4736 parent=00f067aa0ba902b7
pub_with_headers greetings.traced "traced" traceparent "00-$trace-$parent-01"
traced_span() {
  [[ -s $OUT/spans.jsonl ]] && jq -e --arg t "$trace" --arg p "$parent" 'select(.trace_id == $t
    and .parent_span_id == $p and .attributes["messaging.destination.name"] == "greetings.traced"
    and .attributes["spin.component"] == "hello-nats" and .attributes.outcome == "ok")' \
    "$OUT/spans.jsonl" >/dev/null
}
check "a traceparent header becomes the delivery span's parent (subject, component, outcome)" \
  wait_until 20 traced_span
quiet_jq() { jq "$@" >/dev/null; }
check "a failed delivery's span has status ERROR" quiet_jq -e -s 'any(.[];
  .attributes["messaging.destination.name"] == "greetings.bytes" and .status == 2)' "$OUT/spans.jsonl"
stop_spin

echo "==> over TLS, as users with the least privilege docs/trigger-nats.md lists (core and JetStream)"
# A CA and a server certificate for 127.0.0.1 made here; nats-server requires TLS and a user.
certs=$WORK/certs; mkdir -p "$certs"
make_certs() {
  local ca=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$ca e2e CA" \
    -keyout "$certs/$ca.key" -out "$certs/$ca.pem" 2>/dev/null
}
make_certs ca && make_certs other-ca
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$certs/server.ext"
openssl req -newkey rsa:2048 -nodes -subj "/CN=server" -keyout "$certs/server.key" \
  -out "$certs/server.csr" 2>/dev/null
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 2 -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null
# permissions PUBLISH SUBSCRIBE: a user's permissions, each a list of subjects.
permissions() { printf '{ publish: { allow: [%s] }, subscribe: { allow: [%s] } }' "$1" "$2"; }
# The docs' rows for a core entry on greetings.> and a JetStream entry on stream GREET,
# consumer w (created by the trigger, with the stream).
js_publish='"$JS.API.STREAM.INFO.GREET", "$JS.API.STREAM.CREATE.GREET", "$JS.API.CONSUMER.INFO.GREET.w", "$JS.API.CONSUMER.NAMES.GREET", "$JS.API.CONSUMER.MSG.NEXT.GREET.w", "$JS.ACK.GREET.w.>"'
create_consumer='"$JS.API.CONSUMER.CREATE.GREET.w.>"'
tls_port=$(free_port)
cat >"$WORK/secure-nats.conf" <<CONF
host: 127.0.0.1
port: $tls_port
jetstream { store_dir: "$WORK/secure-js" }
tls { cert_file: "$certs/server.pem", key_file: "$certs/server.key", timeout: 2 }
authorization { users = [
  { user: trigger, password: "pw-trigger", permissions: $(permissions "$js_publish, $create_consumer, \"_INBOX.>\"" '"greetings.>", "_INBOX.>"') }
  { user: no-subscribe, password: "pw-no-subscribe", permissions: $(permissions "$js_publish, $create_consumer, \"_INBOX.>\"" '"_INBOX.>"') }
  { user: no-create, password: "pw-no-create", permissions: $(permissions "$js_publish, \"_INBOX.>\"" '"greetings.>", "_INBOX.>"') }
  { user: publisher, password: "pw-publisher" }
] }
CONF
nats-server -c "$WORK/secure-nats.conf" >>"$WORK/secure-nats.log" 2>&1 &
SECURE_NATS_PID=$!
on_exit '[[ -n $OTLP_PID ]] && kill "$OTLP_PID" 2>/dev/null; kill "$SECURE_NATS_PID" 2>/dev/null; stop_all'
wait_until --every 0.05 5 port_open "$tls_port"
# secure_manifest USER CA: the built component under a core entry (greetings.>) and a
# JetStream one (stream GREET, consumer w), connecting with TLS as USER.
secure_manifest() {
  cat <<TOML
spin_manifest_version = 2
[application]
name = "secure"
[application.trigger.nats]
url = "tls://127.0.0.1:$tls_port"
tls_ca_file = "$certs/$2.pem"
user = "$1"
password = "pw-$1"
[[trigger.nats]]
component = "core-hello"
subject = "greetings.>"
[[trigger.nats]]
component = "js-hello"
subject = "jsgreet.>"
stream = "GREET"
consumer = "w"
stream_subjects = ["jsgreet.>"]
[component.core-hello]
source = "$APP/target/wasm32-wasip2/release/hello_nats.wasm"
[component.js-hello]
source = "$APP/target/wasm32-wasip2/release/hello_nats.wasm"
TOML
}
# secure_pub SUBJECT PAYLOAD: published as the unrestricted user, over TLS (nats-py).
secure_pub() {
  python3 - "$tls_port" "$certs/ca.pem" "$@" <<'PY'
import asyncio, ssl, sys
import nats
async def main():
    port, ca, subject, payload = sys.argv[1:]
    nc = await nats.connect(f"tls://127.0.0.1:{port}", tls=ssl.create_default_context(cafile=ca),
                            user="publisher", password="pw-publisher")
    await nc.publish(subject, payload.encode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
PY
}
secure_up() { # USER CA NAME
  secure_manifest "$1" "$2" >"$WORK/secure-$3.toml"
  SPIN_MANIFEST="$WORK/secure-$3.toml" start_spin "$WORK" - "$OUT/logs-$3" "state-$3"
}

# No consumer exists yet (the other users would create one).
secure_up no-create ca no-create
check "a user without \$JS.API.CONSUMER.CREATE: an error naming that subject" \
  wait_log "$OUT/logs-no-create/spin-up.txt" 'Permissions Violation for Publish to "\$JS\.API\.CONSUMER\.CREATE\.GREET\.w' 30
stop_spin
secure_up no-subscribe ca no-subscribe
check "a user without subscribe permission on the entry's subject: an error naming it, and what it means" \
  wait_log "$OUT/logs-no-subscribe/spin-up.txt" 'Permissions Violation for Subscription to "greetings.>": the user this trigger connects as lacks that permission' 30
stop_spin
set +e
secure_manifest trigger other-ca >"$WORK/secure-wrong-ca.toml"
timeout 60 spin up --from "$WORK/secure-wrong-ca.toml" --runtime-config-file "$WORK/runtime-config.toml" \
  --state-dir "$WORK/state-wrong-ca" --log-dir "$OUT/logs-wrong-ca" >"$OUT/spin-up-wrong-ca.txt" 2>&1
rc=$?
set -e
check "a CA that did not sign the server's certificate: spin up stops at once (not a reconnect loop)" \
  test "$rc" -ne 0 -a "$rc" -ne 124
check "… naming tls_ca_file and the file" grep -qF "tls_ca_file" "$OUT/spin-up-wrong-ca.txt"
check "… and no password in what it says" bash -c "! grep -rqF 'pw-trigger' '$OUT/spin-up-wrong-ca.txt' '$OUT/logs-wrong-ca'"
secure_up trigger ca ok
check "the trigger user subscribes the core entry" wait_log "$OUT/logs-ok/spin-up.txt" "core-hello ← greetings" 60
check "… and provisions the JetStream one" wait_log "$OUT/logs-ok/spin-up.txt" "js-hello ← " 60
secure_pub greetings.tls "over tls"
check "a core message over TLS reaches the component" \
  wait_log "$OUT/logs-ok/core-hello_stdout.txt" "^greetings.tls: over tls$" 15
secure_pub jsgreet.tls "stored over tls"
check "a JetStream message over TLS reaches the component" \
  wait_log "$OUT/logs-ok/js-hello_stdout.txt" "^jsgreet.tls: stored over tls$" 15
check "no permission was refused to the documented rows" \
  bash -c "! grep -q 'Permissions Violation' '$OUT/logs-ok/spin-up.txt'"
check "no password in the logs" bash -c "! grep -rqF 'pw-trigger' '$OUT/logs-ok'"
stop_spin
kill "$SECURE_NATS_PID" 2>/dev/null; wait "$SECURE_NATS_PID" 2>/dev/null || true

echo "==> a guest built from the 0.1.0 world (tests/fixtures) under this plugin"
OLD="$WORK/old-guest"; mkdir -p "$OLD/src" "$OLD/wit"
cp "$ROOT/tests/fixtures/spin-nats-trigger-0.1.0.wit" "$OLD/wit/trigger.wit"
cat >"$OLD/Cargo.toml" <<'TOML'
[package]
name = "old-guest"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "0.51"

[workspace]
TOML
cat >"$OLD/src/lib.rs" <<'RS'
wit_bindgen::generate!({ path: "wit", world: "nats-trigger" });
struct Old;
impl Guest for Old {
    fn handle_message(m: spin_nats::trigger::types::Message) -> Result<(), spin_nats::trigger::types::Error> {
        println!("0.1.0 guest got {}", m.subject);
        Ok(())
    }
}
export!(Old);
RS
check "it builds" bash -c "cd '$OLD' && cargo build --quiet --target wasm32-wasip2 --release >'$OUT/old-build.txt' 2>&1" ||
  tail -20 "$OUT/old-build.txt"
sed "s|^source = .*|source = \"$OLD/target/wasm32-wasip2/release/old_guest.wasm\"|" \
  "$APP/spin.toml" >"$APP/spin-old.toml"
SPIN_MANIFEST="$APP/spin-old.toml" start_spin "$WORK" - "$OUT/logs-old" state-old
check "the plugin calls its handle-message" wait_log "$OUT/logs-old/spin-up.txt" "hello-nats ← greetings" 60
nats_tool pub greetings.old "x" >/dev/null
check "… and it handles a message" wait_log "$OUT/logs-old/hello-nats_stdout.txt" "^0.1.0 guest got greetings.old$" 15
stop_spin

echo "==> a component without the export"
cargo build --quiet --target wasm32-wasip2 --release -p bench-hello-p2 --manifest-path "$ROOT/Cargo.toml"
sed "s|^source = .*|source = \"$ROOT/target/wasm32-wasip2/release/bench_hello_p2.wasm\"|" \
  "$APP/spin.toml" >"$APP/spin-wrong.toml"
set +e
SPIN_MANIFEST="$APP/spin-wrong.toml" timeout 60 spin up --from "$APP/spin-wrong.toml" \
  --runtime-config-file "$WORK/runtime-config.toml" --state-dir "$WORK/state-wrong" \
  --log-dir "$OUT/logs-wrong" >"$OUT/spin-up-wrong.txt" 2>&1
rc=$?
set -e
check "spin up fails" test "$rc" -ne 0 -a "$rc" -ne 124
check "… naming the component and the missing export" grep -q \
  'component "hello-nats" exports neither handle-batch nor handle-message' "$OUT/spin-up-wrong.txt"

echo "==> the plugin index manifest for four platforms (plugins/trigger-nats/release/manifest.py)"
dist=$WORK/dist; mkdir -p "$dist"
for platform in linux-amd64 linux-aarch64 macos-amd64 macos-aarch64; do
  echo "binary for $platform" >"$WORK/trigger-nats"
  tar czf "$dist/trigger-nats-9.8.7-$platform.tar.gz" -C "$WORK" trigger-nats
done
check "the manifest renders" python3 "$ROOT/plugins/trigger-nats/release/manifest.py" --version 9.8.7 \
  --archives "$dist" --base-url https://example.test/releases/v9.8.7 --out "$OUT/trigger-nats.json"
index_fields() { jq -e "$@" >/dev/null; }
check "… as JSON with the index's fields" index_fields '
  .name == "trigger-nats" and .version == "9.8.7" and (.spinCompatibility | startswith(">="))
  and (.license | length > 0) and (.packages | length == 4)
  and ([.packages[] | (.os + "-" + .arch)] | sort == ["linux-aarch64","linux-amd64","macos-aarch64","macos-amd64"])
  and all(.packages[]; (.sha256 | test("^[0-9a-f]{64}$")) and (.url | startswith("https://example.test/releases/v9.8.7/trigger-nats-9.8.7-")))' \
  "$OUT/trigger-nats.json"
sums_match() {
  local os arch url sha
  while read -r os arch url sha; do
    [[ $(sha256sum "$dist/${url##*/}" | cut -d' ' -f1) == "$sha" ]] || return 1
  done < <(jq -r '.packages[] | "\(.os) \(.arch) \(.url) \(.sha256)"' "$OUT/trigger-nats.json")
}
check "… each sha256 that of its archive" sums_match
rm "$dist/trigger-nats-9.8.7-macos-aarch64.tar.gz"
check "a missing archive is named, nothing written" bash -c "! python3 '$ROOT/plugins/trigger-nats/release/manifest.py' \
  --version 9.8.7 --archives '$dist' --base-url https://x --out '$WORK/none.json' 2>'$WORK/err' &&
  grep -q 'trigger-nats-9.8.7-macos-aarch64.tar.gz' '$WORK/err' && test ! -e '$WORK/none.json'"
check "a version that is not semver is refused" bash -c "! python3 '$ROOT/plugins/trigger-nats/release/manifest.py' \
  --version 'v1' --archives '$dist' --base-url https://x --only linux-amd64 2>/dev/null"

summary e2e-template
