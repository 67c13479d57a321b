#!/bin/sh
# Regenerates benches/REPORT.md, benches/report/*.json and the latency charts (SVG):
# a release build of quire and quire-bench, then `quire-bench report` (about 13 minutes on
# 2 cores). Notion's MCP server is installed once with npm under target/bench-cache/npm when
# Node.js is present; without it the report says the Notion side was not run.
# Extra arguments go to `quire-bench report` (e.g. --duration-secs 10).
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p quire-node -p quire-bench
exec target/release/quire-bench report "$@"
