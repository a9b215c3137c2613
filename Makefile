# spin-tasks. The README's two commands are `make up` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

WASM_TARGET := wasm32-wasip2
COMPONENTS  := -p tasks-web -p tasks-events -p tasks-kv-read -p tasks-writer -p tasks-retrier
# web and events exporting the WASI 0.2 HTTP handler instead of Spin 4's WASI 0.3 release
# candidate, in a target directory of their own: what deploy/read-side/spin.toml runs.
WASI_HTTP_0_2 := -p tasks-web -p tasks-events --no-default-features --features wasi-http-0-2 --target-dir target/wasi-http-0.2
# bench/retry.sh's writer variant and bench/http.sh's hello-world yardsticks: linted with the
# components, built by the benchmarks (and e2e-jetstream, for the variant).
BENCH_COMPONENTS := -p bench-writer-no-order-check -p bench-hello-p2 -p bench-hello-p3 -p bench-hello-p3-kv
# Components link only for wasm32-wasip2 (their export names are not valid
# native symbols); their logic and tests live in crates/. tasks-cf-kv is tested
# whole by test-cloudflare, which first installs Cloudflare's emulator.
NATIVE      := --workspace --exclude tasks-web --exclude tasks-events --exclude tasks-kv-read --exclude tasks-writer --exclude tasks-retrier --exclude bench-writer-no-order-check --exclude bench-hello-p2 --exclude bench-hello-p3 --exclude bench-hello-p3-kv --exclude tasks-cf-kv
LISTEN      ?= 127.0.0.1:3000
# plugins/trigger-nats is its own workspace; its cargo target directory lives outside the
# clone (Spin's crates compile once per machine). The same rule as scripts/install-plugin.sh.
PLUGIN_TARGET := $(or $(TRIGGER_NATS_TARGET_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/spin-tasks/plugin-target)
# The plugin's crates with tests (the plugin itself is tested through the e2e suites).
PLUGIN_TESTED := -p trigger-nats-core -p trigger-nats-redis -p trigger-nats-sdk -p trigger-nats-macro
# make test (scripts/test.sh) and the suites' targets install plugins into a Spin data
# directory of their own, so the user's own Spin keeps its plugins untouched.
TEST_SPIN_DATA_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/spin-tasks/spin-data

.PHONY: help prereqs prereqs-up secrets build plugin plugin-release nats stop up fuzz test test-native test-cloudflare test-e2e test-cluster test-chaos test-properties-long lint lint-fmt lint-clippy lint-imports bench clean

help:
	@echo "make up      build everything, start nats-server if needed, run the app on $(LISTEN)"
	@echo "make test    lint, native tests (real nats-server), Cloudflare client vs miniflare, wasm build,"
	@echo "             this tree's trigger-nats plugin, e2e suites on spin up; one count line per stage"
	@echo "make lint    cargo fmt --check, clippy -D warnings (native and $(WASM_TARGET)), no import cycles, crate layering"
	@echo "make plugin  build + install this tree's trigger-nats and the trigger-cron plugin into your Spin"
	@echo "make plugin-release  trigger-nats's release archive for this platform + its plugin index manifest (target/plugin-release)"
	@echo "make nats    start a local nats-server on 127.0.0.1:4222 unless one answers"
	@echo "make stop    stop the nats-server make nats started (.spin/nats-server.pid), nothing else"
	@echo "make test-chaos SEEDS=N INSTANCES=I CLUSTER=0|1  the history checker (tests/e2e-chaos.sh) over seeds 1..N, I instances, faults injected"
	@echo "make test-cloudflare  the Cloudflare KV client against Cloudflare's emulator (miniflare), direct and behind cf-fault-proxy"
	@echo "make bench   HTTP (10,000 tasks, wrk), ingest (vs a native baseline), retry (order-check cost, outbox drain),"
	@echo "             Cloudflare, change stream (200 clients) and counting-cost benchmarks"

prereqs:
	@echo "==> checking prerequisites"
	@scripts/prereqs.sh

build: prereqs
	@echo "==> building components for $(WASM_TARGET)"
	cargo build --target $(WASM_TARGET) --release $(COMPONENTS)
	@echo "==> building web and events with the WASI 0.2 HTTP handler (deploy/read-side: any Spin host)"
	cargo build --target $(WASM_TARGET) --release $(WASI_HTTP_0_2)

plugin:
	@scripts/prereqs.sh --need spin
	@scripts/install-plugin.sh

plugin-release:
	CARGO_TARGET_DIR=$(PLUGIN_TARGET) plugins/trigger-nats/release/release.sh --out $(CURDIR)/target/plugin-release

nats:
	@scripts/nats-up.sh

stop:
	@scripts/nats-down.sh

# An admin_token or hmac_key under 32 bytes is refused before anything builds.
secrets:
	@scripts/check-secrets.sh

# Everything make up needs is checked before anything compiles (scripts/prereqs.sh --for up).
prereqs-up:
	@echo "==> checking what make up needs"
	@scripts/prereqs.sh --for up

up: prereqs-up secrets build plugin nats
	@cargo build --quiet --release -p tasks-seed -p tasks-nats
	@echo "==> spin up on http://$(LISTEN) (stores in .spin/). It runs until Ctrl-C; in a second terminal:"
	@echo "      target/release/tasks-nats pub tasks.created '{\"id\":\"t-1\",\"title\":\"Buy milk\"}'"
	@echo "    then open http://$(LISTEN)/tasks/t-1 ; make stop stops the nats-server make up started"
	@target/release/tasks-wal runtime-config.toml
	spin up --runtime-config-file runtime-config.toml --listen $(LISTEN)

lint: lint-fmt lint-clippy lint-imports

lint-fmt:
	@echo "==> cargo fmt --check"
	cargo fmt --all --check
	cd plugins/trigger-nats && cargo fmt --all --check
	cd fuzz && cargo fmt --check

lint-imports:
	@echo "==> no import cycle between the files of a crate; crate dependencies as docs/architecture.md draws them"
	scripts/check-imports.py

lint-clippy:
	@echo "==> clippy (native)"
	cargo clippy --workspace --all-targets -- -D warnings
	@echo "==> clippy ($(WASM_TARGET) components)"
	cargo clippy --target $(WASM_TARGET) $(COMPONENTS) $(BENCH_COMPONENTS) -- -D warnings
	@echo "==> clippy (web and events with the WASI 0.2 HTTP handler)"
	cargo clippy --target $(WASM_TARGET) $(WASI_HTTP_0_2) -- -D warnings
	@echo "==> clippy (plugins/trigger-nats: the plugin, its core, Redis store, SDK and macro)"
	cd plugins/trigger-nats && CARGO_TARGET_DIR=$(PLUGIN_TARGET) cargo clippy --release --locked --all-targets -- -D warnings
	# Its other crates apart from the plugin: linted together, features would be unified
	# with the SDK's wasm tooling and Spin's crates checked again.
	cd plugins/trigger-nats && CARGO_TARGET_DIR=$(PLUGIN_TARGET) cargo clippy --release --locked --all-targets $(PLUGIN_TESTED) -- -D warnings

test-native:
	@echo "==> native tests"
	cargo test --no-fail-fast $(NATIVE)
	@echo "==> native tests of plugins/trigger-nats, run in a copy of that folder alone (real nats-server, redis-server, openssl)"
	cd "$$(scripts/install-plugin.sh --copy)" && CARGO_TARGET_DIR=$(PLUGIN_TARGET) cargo test --locked --no-fail-fast $(PLUGIN_TESTED)

test-cloudflare:
	@echo "==> Cloudflare KV client conformance (miniflare + cf-fault-proxy)"
	tests/cloudflare-conformance.sh

test-e2e: build plugin
	@echo "==> e2e suites against spin up"
	tests/e2e.sh
	tests/e2e-nats.sh
	tests/e2e-jetstream.sh
	tests/e2e-retry.sh
	tests/e2e-cloudflare.sh
	tests/e2e-live.sh
	tests/e2e-template.sh
	tests/e2e-cluster.sh
	tests/e2e-chaos.sh

test-e2e test-cluster test-chaos: export SPIN_DATA_DIR := $(TEST_SPIN_DATA_DIR)

# Scale-out (3-node NATS cluster, Redis, 3 instances; about 6 minutes), also part of make test.
test-cluster: build plugin
	tests/e2e-cluster.sh

# The history checker over many seeds (make test runs seeds 1-3 with two instances):
# make test-chaos SEEDS=20 INSTANCES=3 CLUSTER=1 (a 3-node NATS cluster; 0: one server)
SEEDS ?= 20
INSTANCES ?= 3
CLUSTER ?= 1
test-chaos: build plugin
	CHAOS_SEEDS="$$(seq -s ' ' 1 $(SEEDS))" CHAOS_INSTANCES=$(INSTANCES) CHAOS_CLUSTER=$(CLUSTER) tests/e2e-chaos.sh

# The long property run (about 10 minutes on 2 cores); not part of make test.
test-properties-long:
	tests/properties-long.sh

# Every stage even when one fails, then one line per stage and a total (scripts/test.sh).
test:
	@scripts/test.sh

# Fuzz each target FUZZ_SECONDS (default 300) s: `make test` runs a short pass of the same.
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} tests/fuzz.sh

bench: build
	@echo "==> HTTP benchmark"
	bench/http.sh
	@echo "==> ingest benchmark"
	bench/ingest.sh
	@echo "==> retry benchmark"
	bench/retry.sh
	@echo "==> Cloudflare benchmark"
	bench/cloudflare.sh
	@echo "==> change stream benchmark"
	bench/sse.sh
	@echo "==> counting benchmark"
	bench/counting.sh

# The nats-server make nats started keeps its pid and store in .spin/: stopped first.
clean: stop
	cargo clean
	rm -rf .spin tests/out bench/out

print-test-spin-data-dir:
	@echo $(TEST_SPIN_DATA_DIR)
