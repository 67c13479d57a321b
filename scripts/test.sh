#!/usr/bin/env bash
# Runs Quire's whole test suite: sets up the Python MCP SDK the end-to-end tests drive
# (in .venv, once), then every Rust test of the workspace in one cargo invocation.
#
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -E 'package(quire-raft)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import mcp' 2>/dev/null; then
    echo "==> setting up .venv with the MCP Python SDK"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r node/tests/python/requirements.txt
fi
export QUIRE_TEST_PYTHON="$PWD/.venv/bin/python"

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
