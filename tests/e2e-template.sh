#!/usr/bin/env bash
# The `spin new` template for NATS-triggered components, as a Spin developer meets it:
#   templates/nats-rust installed with `spin templates install --dir` (into a private data
#   dir), `spin new -t nats-rust` into a temp directory, `spin build`, `spin up` with this
#   tree's trigger-nats plugin, a message published → the component's log line; and a
#   component that exports neither handler fails `spin up` with an error naming it;
# the plugin's telemetry: with OTEL_EXPORTER_OTLP_ENDPOINT on a small OTLP/HTTP receiver
# (tests/otlp_receiver.py, decoding with PyPI opentelemetry-proto), a message published
# with a W3C traceparent header gives a span with that parent and the subject attribute;
# the plugin index manifest for four platforms (scripts/plugin-manifest.py).
# The template names the SDK by its git repository; with no network here the suite points
# that one dependency at this checkout's plugins/trigger-nats/sdk (the same source).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_spin_and_plugin
require_tools cargo python3
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
# Templates go to a private data dir (spin's plugins stay where they are).
tpl() { XDG_DATA_HOME="$WORK/data" spin "$@"; }
build_tools

echo "==> spin templates install --dir . ; spin new -t nats-rust"
check "the template installs" tpl templates install --dir "$ROOT" --upgrade
check "spin templates list shows it" grep -q "nats-rust" <(tpl templates list)
( cd "$WORK" && tpl new -t nats-rust hello-nats --accept-defaults \
    --value "project-description=e2e" --value "subject=greetings.>" ) >"$OUT/spin-new.txt" 2>&1
APP="$WORK/hello-nats"
check "spin new made the app" test -f "$APP/spin.toml" -a -f "$APP/src/lib.rs" -a -f "$APP/Cargo.toml"
check "the manifest subscribes the component" grep -q '^subject = "greetings.>"' "$APP/spin.toml"
python3 - "$APP/Cargo.toml" "$ROOT/plugins/trigger-nats/sdk" <<'PY'
import re, sys
path, sdk = sys.argv[1:]
text = open(path).read()
new = re.sub(r'trigger-nats-sdk = \{ git = "[^"]+"[^}]*\}', f'trigger-nats-sdk = {{ path = "{sdk}" }}', text)
assert new != text, "the template's SDK dependency has changed form"
open(path, "w").write(new)
PY

echo "==> spin build"
check "spin build compiles the component" bash -c "cd '$APP' && spin build >'$OUT/spin-build.txt' 2>&1" ||
  tail -30 "$OUT/spin-build.txt"
check "… into the path the manifest names" test -f "$APP/target/wasm32-wasip2/release/hello_nats.wasm"

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

echo "==> the plugin index manifest for four platforms (scripts/plugin-manifest.py)"
dist=$WORK/dist; mkdir -p "$dist"
for platform in linux-amd64 linux-aarch64 macos-amd64 macos-aarch64; do
  echo "binary for $platform" >"$WORK/trigger-nats"
  tar czf "$dist/trigger-nats-9.8.7-$platform.tar.gz" -C "$WORK" trigger-nats
done
check "the manifest renders" python3 "$ROOT/scripts/plugin-manifest.py" --version 9.8.7 \
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
check "a missing archive is named, nothing written" bash -c "! python3 '$ROOT/scripts/plugin-manifest.py' \
  --version 9.8.7 --archives '$dist' --base-url https://x --out '$WORK/none.json' 2>'$WORK/err' &&
  grep -q 'trigger-nats-9.8.7-macos-aarch64.tar.gz' '$WORK/err' && test ! -e '$WORK/none.json'"
check "a version that is not semver is refused" bash -c "! python3 '$ROOT/scripts/plugin-manifest.py' \
  --version 'v1' --archives '$dist' --base-url https://x --only linux-amd64 2>/dev/null"

summary e2e-template
