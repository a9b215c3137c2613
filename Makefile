# spin-tasks. The README's two commands are `make up` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

WASM_TARGET := wasm32-wasip2
COMPONENTS  := -p tasks-web -p tasks-kv-read
LISTEN      ?= 127.0.0.1:3000

.PHONY: help prereqs build up test test-native test-e2e lint bench clean

help:
	@echo "make up      build the components and run the app on $(LISTEN) (local SQLite store)"
	@echo "make test    lint, native tests, wasm build and the e2e suite against spin up"
	@echo "make lint    cargo fmt --check and clippy -D warnings (native and $(WASM_TARGET))"
	@echo "make bench   HTTP benchmark with 10,000 tasks (needs spin and wrk)"

prereqs:
	@echo "==> checking prerequisites"
	@scripts/prereqs.sh

build: prereqs
	@echo "==> building components for $(WASM_TARGET)"
	cargo build --target $(WASM_TARGET) --release $(COMPONENTS)

up: build
	@scripts/prereqs.sh --need spin
	@echo "==> spin up on http://$(LISTEN) (stores in .spin/)"
	spin up --runtime-config-file runtime-config.toml --listen $(LISTEN)

lint:
	@echo "==> cargo fmt --check"
	cargo fmt --all --check
	@echo "==> clippy (native)"
	cargo clippy --workspace --all-targets -- -D warnings
	@echo "==> clippy ($(WASM_TARGET) components)"
	cargo clippy --target $(WASM_TARGET) $(COMPONENTS) -- -D warnings

test-native:
	@echo "==> native tests"
	cargo test --workspace

test-e2e: build
	@echo "==> e2e suite against spin up"
	tests/e2e.sh

test: lint test-native test-e2e

bench: build
	@echo "==> HTTP benchmark"
	bench/http.sh

clean:
	cargo clean
	rm -rf .spin tests/out bench/out
