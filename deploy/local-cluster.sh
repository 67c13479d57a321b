#!/usr/bin/env bash
# A Quire cluster of N nodes on this machine, over mutual TLS, with the Notion sandbox, a
# bootstrap admin token and a demo tenant whose integration points at the sandbox.
#
#   deploy/local-cluster.sh up 3      # build quire if needed, start 3 nodes, print the state
#   deploy/local-cluster.sh status    # the state as JSON: nodes (id, pid, http, peer,
#                                     # data_dir), admin_token, mcp_token, sandbox_url
#   deploy/local-cluster.sh down      # stop every process
#
# QUIRE_CLUSTER_DIR (default ./local-cluster) holds certificates, data dirs and logs;
# QUIRE_BIN points at a quire binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

export QUIRE_CLUSTER_DIR="${QUIRE_CLUSTER_DIR:-$PWD/local-cluster}"
if [ -n "${QUIRE_BIN:-}" ]; then
    bin="$QUIRE_BIN"
else
    bin="$PWD/target/release/quire"
    if [ "${1:-}" = "up" ]; then
        echo "==> cargo build --release --bin quire" >&2
        cargo build --release --quiet --bin quire
    fi
fi

case "${1:-}" in
    up)
        [ -n "${2:-}" ] || usage
        "$bin" local-cluster up "$2" --dir "$QUIRE_CLUSTER_DIR"
        ;;
    down)
        "$bin" local-cluster down --dir "$QUIRE_CLUSTER_DIR"
        ;;
    status)
        "$bin" local-cluster status --dir "$QUIRE_CLUSTER_DIR"
        ;;
    *)
        usage
        ;;
esac
