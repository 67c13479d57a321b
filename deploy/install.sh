#!/usr/bin/env bash
# Installs one Quire node as a systemd service on this host.
#
#   sudo deploy/install.sh --binary PATH [--config FILE] [--tls-dir DIR] [--master-key FILE]
#                          [--env FILE] [--prefix /usr/local] [--dry-run]
#
# What it does (each step is skipped when already done, so running it again is safe):
#   - checks the config with `quire config check` first and refuses it on any problem;
#   - installs the binary as PREFIX/bin/quire;
#   - creates the `quire` system user and group if missing;
#   - creates /etc/quire (0750 root:quire) and /var/lib/quire (0750 quire:quire);
#   - copies the config to /etc/quire/quire.toml, the node's TLS directory (node.pem,
#     node.key, ca.pem, and the HTTPS front's http.pem and http.key when present) to
#     /etc/quire/tls and the master key to /etc/quire/master.key, all 0640 root:quire;
#   - installs /etc/quire/quire.env (only if absent: it is yours to edit) and the unit
#     /etc/systemd/system/quire.service, then runs `systemctl daemon-reload`;
#   - checks the installed config again as the quire user, with its files and quire.env;
#   - prints the commands that start the node.
# --dry-run prints every step without changing anything (and needs no root).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_SRC="$SCRIPT_DIR/systemd/quire.service"
ENV_SRC="$SCRIPT_DIR/systemd/quire.env"
EXAMPLE_CONFIG="$SCRIPT_DIR/quire.example.toml"

ETC_DIR=/etc/quire
STATE_DIR=/var/lib/quire
UNIT_DIR=/etc/systemd/system
USER_NAME=quire

BINARY=""
CONFIG=""
TLS_DIR=""
MASTER_KEY=""
ENV_FILE=""
PREFIX=/usr/local
DRY_RUN=0

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

usage() {
    sed -n '4,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Runs a command, or only prints it with --dry-run.
run() {
    local shown
    printf -v shown '%q ' "$@"
    echo "+ ${shown% }"
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@"
    fi
}

note() {
    echo "  $*"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --tls-dir) TLS_DIR="${2:?--tls-dir needs a directory}"; shift 2 ;;
        --master-key) MASTER_KEY="${2:?--master-key needs a file}"; shift 2 ;;
        --env) ENV_FILE="${2:?--env needs a file}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# --- Check every input before changing anything. ---------------------------------------
[[ -n "$BINARY" ]] || { usage >&2; die "--binary PATH is required"; }
[[ -f "$BINARY" && -x "$BINARY" ]] || die "--binary $BINARY is not an executable file"
[[ -f "$UNIT_SRC" ]] || die "missing $UNIT_SRC (run the script from the Quire source tree)"
[[ -f "$ENV_SRC" ]] || die "missing $ENV_SRC (run the script from the Quire source tree)"
[[ "$PREFIX" =~ ^/[A-Za-z0-9/._-]*$ ]] \
    || die "--prefix must be an absolute path of letters, digits and / . _ - (it goes into the unit), got $PREFIX"
if [[ -n "$CONFIG" ]]; then
    [[ -f "$CONFIG" && -r "$CONFIG" ]] || die "--config $CONFIG is not a readable file"
fi
if [[ -n "$TLS_DIR" ]]; then
    [[ -d "$TLS_DIR" ]] || die "--tls-dir $TLS_DIR is not a directory"
    for f in node.pem node.key ca.pem; do
        [[ -f "$TLS_DIR/$f" && -r "$TLS_DIR/$f" ]] \
            || die "--tls-dir $TLS_DIR has no readable $f (make it with \`quire certs node\`)"
    done
    # The HTTPS front's certificate and key (`quire certs http`) travel together or not at all.
    if [[ -e "$TLS_DIR/http.pem" || -e "$TLS_DIR/http.key" ]]; then
        for f in http.pem http.key; do
            [[ -f "$TLS_DIR/$f" && -r "$TLS_DIR/$f" ]] \
                || die "--tls-dir $TLS_DIR has no readable $f beside the other (make both with \`quire certs http\`)"
        done
    fi
fi
if [[ -n "$MASTER_KEY" ]]; then
    [[ -f "$MASTER_KEY" && -r "$MASTER_KEY" ]] \
        || die "--master-key $MASTER_KEY is not a readable file (make one with \`quire keygen --out FILE\`)"
fi
if [[ -n "$ENV_FILE" ]]; then
    [[ -f "$ENV_FILE" && -r "$ENV_FILE" ]] || die "--env $ENV_FILE is not a readable file"
fi
if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo), or with --dry-run to see what it would do"
fi

# The config this install will use: the given one, else the one already installed, else the
# example (which needs editing before the node starts).
CONFIG_SRC="$CONFIG"
if [[ -z "$CONFIG_SRC" ]]; then
    if [[ -f "$ETC_DIR/quire.toml" ]]; then
        CONFIG_SRC=""
    else
        [[ -f "$EXAMPLE_CONFIG" ]] || die "no --config given and $EXAMPLE_CONFIG is missing"
        CONFIG_SRC="$EXAMPLE_CONFIG"
        echo "install.sh: no --config: installing $EXAMPLE_CONFIG; edit $ETC_DIR/quire.toml before starting"
    fi
fi
if [[ -n "$CONFIG_SRC" ]]; then
    # The files it names are installed below, so only their existence is skipped here;
    # they are checked after the install, as the quire user.
    echo "+ $BINARY config check --no-files $CONFIG_SRC"
    if ! "$BINARY" config check --no-files "$CONFIG_SRC"; then
        die "$CONFIG_SRC has problems (listed above); nothing was installed"
    fi
fi

# --- Install. ----------------------------------------------------------------------------
[[ $DRY_RUN -eq 1 ]] && echo "install.sh: dry run: nothing below is done"

run install -d -m 0755 "$PREFIX/bin"
run install -m 0755 -o root -g root "$BINARY" "$PREFIX/bin/quire"

if getent group "$USER_NAME" >/dev/null; then
    note "group $USER_NAME exists"
else
    run groupadd --system "$USER_NAME"
fi
if getent passwd "$USER_NAME" >/dev/null; then
    note "user $USER_NAME exists"
else
    run useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "Quire node" "$USER_NAME"
fi

run install -d -m 0750 -o root -g "$USER_NAME" "$ETC_DIR"
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"

if [[ -n "$CONFIG_SRC" ]]; then
    run install -m 0640 -o root -g "$USER_NAME" "$CONFIG_SRC" "$ETC_DIR/quire.toml"
else
    note "keeping $ETC_DIR/quire.toml"
fi
if [[ -n "$TLS_DIR" ]]; then
    run install -d -m 0750 -o root -g "$USER_NAME" "$ETC_DIR/tls"
    for f in node.pem node.key ca.pem http.pem http.key; do
        if [[ -f "$TLS_DIR/$f" ]]; then
            run install -m 0640 -o root -g "$USER_NAME" "$TLS_DIR/$f" "$ETC_DIR/tls/$f"
        fi
    done
fi
if [[ -n "$MASTER_KEY" ]]; then
    run install -m 0640 -o root -g "$USER_NAME" "$MASTER_KEY" "$ETC_DIR/master.key"
fi
if [[ -n "$ENV_FILE" ]]; then
    run install -m 0640 -o root -g "$USER_NAME" "$ENV_FILE" "$ETC_DIR/quire.env"
elif [[ -f "$ETC_DIR/quire.env" ]]; then
    note "keeping $ETC_DIR/quire.env"
else
    run install -m 0640 -o root -g "$USER_NAME" "$ENV_SRC" "$ETC_DIR/quire.env"
fi

# The unit names /usr/local/bin/quire; point it at PREFIX.
UNIT_TMP="$(mktemp)"
trap 'rm -f "$UNIT_TMP"' EXIT
sed "s#/usr/local/bin/quire#$PREFIX/bin/quire#g" "$UNIT_SRC" >"$UNIT_TMP"
run install -m 0644 -o root -g root "$UNIT_TMP" "$UNIT_DIR/quire.service"

if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    run systemctl daemon-reload
else
    note "systemd is not running here: skipping systemctl daemon-reload"
fi

# The installed config, with its files and quire.env's QUIRE_* settings, as the service will
# read it (the unit runs the same check before each start).
ENV_VARS=()
if [[ -f "$ETC_DIR/quire.env" ]]; then
    while IFS= read -r line; do
        if [[ "$line" =~ ^QUIRE_[A-Z0-9_]+= ]]; then
            ENV_VARS+=("$line")
        fi
    done <"$ETC_DIR/quire.env"
fi
CHECK=(env "${ENV_VARS[@]}" "$PREFIX/bin/quire" config check --env "$ETC_DIR/quire.toml")
if [[ $DRY_RUN -eq 1 ]]; then
    echo "+ runuser -u $USER_NAME -- ${CHECK[*]}"
elif ! runuser -u "$USER_NAME" -- "${CHECK[@]}"; then
    die "the installed $ETC_DIR/quire.toml has problems (listed above); fix them, then run install.sh again"
fi

if [[ $DRY_RUN -eq 1 ]]; then
    echo
    echo "Dry run: nothing was changed. Without --dry-run (as root) the steps above are done."
fi
cat <<EOF

Next:
  sudo systemctl enable --now quire      # start now and at boot
  systemctl status quire                 # is it running?
  journalctl -u quire -f                 # its log
  sudo systemctl reload quire            # re-read the HTTPS certificate after replacing it
With [[peer.members]] in the config, the cluster forms once a majority of its members run.
Without it, the first node of a new cluster is initialised once before its first start:
  sudo runuser -u $USER_NAME -- $PREFIX/bin/quire init --config $ETC_DIR/quire.toml
and a node that joins an existing cluster sets peer.join in $ETC_DIR/quire.toml.
(README: "Install on a Linux host".)
EOF
