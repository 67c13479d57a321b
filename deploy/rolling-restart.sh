#!/usr/bin/env bash
# Restarts (and optionally upgrades) the nodes of a Quire cluster one at a time, keeping it
# serving: followers first, the leader last. For each node: stop it (`systemctl stop quire`:
# SIGTERM, the node drains within node.shutdown_grace_ms and, if it leads, stops heartbeating
# so the others elect a successor), wait until it is gone, install the new binary if one was
# given, start it, and wait until /readyz answers 200 and the node has applied everything the
# others had applied when it came back. It stops at the first node that does not come back.
#
#   deploy/rolling-restart.sh --ca-file agents-ca/ca.pem 10.0.0.1 10.0.0.2 10.0.0.3
#   deploy/rolling-restart.sh --ca-file agents-ca/ca.pem --binary target/release/quire 10.0.0.{1,2,3}
#
# Needs curl, and ssh access as --ssh-user (root by default) to each host.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/rolling-restart.sh [options] HOST...
  --ca-file FILE     CA certificate the nodes' HTTPS front is signed by (curl --cacert)
  --scheme S         https (default) or http
  --port N           the nodes' HTTP port (default 7800)
  --ssh-user USER    user for ssh/scp to each host (default root)
  --binary FILE      install this quire binary as PREFIX/bin/quire on each node before it starts
  --prefix DIR       where install.sh put the binary (default /usr/local)
  --timeout SECS     how long each step may take (default 120)
  --dry-run          print the order and the commands, change nothing
EOF
}

ca_file=""
scheme=https
port=7800
ssh_user=root
binary=""
prefix=/usr/local
timeout=120
dry_run=0
hosts=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --ca-file) ca_file=${2:?--ca-file needs a file}; shift 2 ;;
        --scheme) scheme=${2:?--scheme needs https or http}; shift 2 ;;
        --port) port=${2:?--port needs a number}; shift 2 ;;
        --ssh-user) ssh_user=${2:?--ssh-user needs a user}; shift 2 ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
        *) hosts+=("$1"); shift ;;
    esac
done
if [ "${#hosts[@]}" -eq 0 ]; then
    echo "name the cluster's hosts" >&2
    usage >&2
    exit 2
fi
if [ -n "$binary" ] && [ ! -x "$binary" ]; then
    echo "--binary $binary is not an executable file" >&2
    exit 2
fi

curl_args=(-sS --max-time 5)
if [ -n "$ca_file" ]; then
    curl_args+=(--cacert "$ca_file")
fi

# readyz HOST: the node's /readyz body (any status), or nothing when it does not answer.
readyz() {
    curl "${curl_args[@]}" "$scheme://$1:$port/readyz" 2>/dev/null || true
}

# field NAME BODY: a numeric field of a /readyz body ("" when absent or null).
field() {
    sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" <<<"$2"
}

run() {
    echo "+ $*"
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

# wait_for WHAT COMMAND...: runs COMMAND every second until it succeeds, for --timeout seconds.
wait_for() {
    local what=$1
    shift
    if [ "$dry_run" -eq 1 ]; then
        echo "  (wait until $what)"
        return 0
    fi
    local waited=0
    until "$@"; do
        if [ "$waited" -ge "$timeout" ]; then
            echo "gave up after ${timeout}s waiting until $what" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

is_ready() { grep -q '"ready":true' <<<"$(readyz "$1")"; }
is_gone() { ! curl "${curl_args[@]}" -o /dev/null "$scheme://$1:$port/healthz" 2>/dev/null; }

# caught_up HOST INDEX: the node has applied at least INDEX.
caught_up() {
    local applied
    applied=$(field applied_index "$(readyz "$1")")
    [ -n "$applied" ] && [ "$applied" -ge "$2" ]
}

# Every node must be ready before anything stops; the leader goes last.
leader=""
for host in "${hosts[@]}"; do
    body=$(readyz "$host")
    if ! grep -q '"ready":true' <<<"$body"; then
        echo "$host is not ready (${body:-no answer}); restart nothing while a node is down" >&2
        exit 1
    fi
    if [ "$(field leader "$body")" = "$(field node_id "$body")" ]; then
        leader=$host
    fi
done
order=()
for host in "${hosts[@]}"; do
    if [ "$host" != "$leader" ]; then
        order+=("$host")
    fi
done
if [ -n "$leader" ]; then
    order+=("$leader")
fi
echo "order: ${order[*]} (leader: ${leader:-unknown})"

for host in "${order[@]}"; do
    echo "==> $host"
    others_applied=0
    run ssh "$ssh_user@$host" systemctl stop quire
    wait_for "$host has stopped" is_gone "$host"
    if [ -n "$binary" ]; then
        run scp "$binary" "$ssh_user@$host:$prefix/bin/quire.new"
        run ssh "$ssh_user@$host" mv "$prefix/bin/quire.new" "$prefix/bin/quire"
    fi
    for other in "${hosts[@]}"; do
        if [ "$other" = "$host" ]; then
            continue
        fi
        applied=$(field applied_index "$(readyz "$other")")
        if [ -n "$applied" ] && [ "$applied" -gt "$others_applied" ]; then
            others_applied=$applied
        fi
    done
    run ssh "$ssh_user@$host" systemctl start quire
    wait_for "$host is ready" is_ready "$host"
    wait_for "$host has applied index $others_applied" caught_up "$host" "$others_applied"
    echo "    $host is back and caught up (applied index >= $others_applied)"
done
echo "rolling restart done: ${#order[@]} node(s)"
