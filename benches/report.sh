#!/bin/sh
# Regenerates benches/REPORT.md, benches/report/*.json and the latency charts (SVG):
# a release build of quire and quire-bench, then `quire-bench report` (about 13 minutes on
# 2 cores). Notion's MCP server is installed once with npm under target/bench-cache/npm when
# Node.js is present; without it the report says the Notion side was not run. etcd-server is
# installed with apt-get when missing (as root).
# Extra arguments go to `quire-bench report` (e.g. --duration-secs 10).
set -eu
cd "$(dirname "$0")/.."
# The Raft commit side by side needs etcd (Debian's etcd-server); installed when missing and
# this runs as root with apt-get, otherwise the report says etcd was not run.
if ! command -v etcd >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install etcd-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
cargo build --release -p quire-node -p quire-bench
exec target/release/quire-bench report "$@"
