#!/usr/bin/env bash
# The test suites' Python packages, in a virtual environment kept between runs
# (${XDG_CACHE_HOME:-~/.cache}/spin-tasks/venv), never in the system's Python (Debian 12 and
# Ubuntu 24.04 refuse a bare `pip install`, PEP 668): nats-py (the independent JetStream
# publisher), playwright (the live pages' browser, on Debian's chromium),
# openapi-spec-validator and schemathesis (the OpenAPI checks), opentelemetry-proto (the
# template suite's trace receiver). scripts/test.sh puts its bin/ first on PATH.
set -euo pipefail
venv=${XDG_CACHE_HOME:-$HOME/.cache}/spin-tasks/venv
if [[ ! -x $venv/bin/python3 ]]; then
  python3 -m venv "$venv" || {
    echo "python3 -m venv failed: install the venv module (Debian, Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$venv/bin/python3" -m pip install -q --disable-pip-version-check \
  nats-py playwright openapi-spec-validator schemathesis opentelemetry-proto
echo "==> the suites' Python packages are in $venv"
