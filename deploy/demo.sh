#!/usr/bin/env bash
# A local demo fleet on this machine: one controller (embedded sled store)
# and two agents, "nas1" and "nas2", each owning a file-backed zfs-fuse pool
# and reachable through its own sshd on a loopback address. Ends by printing
# `nasfleet system list`; everything keeps running until `deploy/demo.sh stop`.
#
#   deploy/demo.sh          # set up (again) and start the demo fleet
#   deploy/demo.sh stop     # stop it and destroy the demo pools
#
# Needs root (zfs pools, sshd). NASFLEET_DEMO_DIR overrides /tmp/nasfleet-demo.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
DEMO=${NASFLEET_DEMO_DIR:-/tmp/nasfleet-demo}
PORT=${NASFLEET_DEMO_PORT:-7443}
SYSTEMS=(nas1 nas2)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '[demo] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pool_of() { echo "demo-$1"; }
ip_of() { case "$1" in nas1) echo 127.0.0.2 ;; nas2) echo 127.0.0.3 ;; esac; }

stop_demo() {
    for pidfile in "$DEMO"/run/*.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    for system in "${SYSTEMS[@]}"; do
        pool=$(pool_of "$system")
        if zpool list -H -o name "$pool" >/dev/null 2>&1; then
            zpool destroy -f "$pool"
        fi
    done
    rm -rf "$DEMO"
}

if [[ ${1:-} == stop ]]; then
    stop_demo
    log "demo stopped"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: deploy/demo.sh [stop]"
[[ $(id -u) -eq 0 ]] || die "run as root: the demo creates zfs pools and starts sshd"

log "installing dependencies and starting zfs-fuse"
deploy/install-deps.sh

log "building nasfleet"
cargo build --workspace --bins --locked
BIN=$REPO/target/debug

stop_demo
mkdir -p "$DEMO"/{run,logs,pools}
CLI=("$BIN/nasfleet" --config "$DEMO/controller/admin.toml")

# Starts a command in the background with its log and pid file.
start_bg() {
    local name=$1
    shift
    nohup "$@" >"$DEMO/logs/$name.log" 2>&1 &
    echo $! >"$DEMO/run/$name.pid"
}

log "initialising the controller on 127.0.0.1:$PORT"
"$BIN/nasfleet-controller" init --data-dir "$DEMO/controller" --listen "127.0.0.1:$PORT" --name localhost >/dev/null
start_bg controller "$BIN/nasfleet-controller" run --data-dir "$DEMO/controller" --heartbeat-interval 2s
for _ in $(seq 100); do
    "${CLI[@]}" system list >/dev/null 2>&1 && break
    sleep 0.1
done
"${CLI[@]}" system list >/dev/null || die "controller did not start; see $DEMO/logs/controller.log"

mkdir -p /run/sshd
for system in "${SYSTEMS[@]}"; do
    pool=$(pool_of "$system")
    ip=$(ip_of "$system")
    host="$DEMO/hosts/$system"
    mkdir -p "$host"

    log "$system: pool $pool with a dataset and a snapshot"
    truncate -s 256M "$DEMO/pools/$pool.img"
    zpool create -m "$DEMO/mnt/$pool" "$pool" "$DEMO/pools/$pool.img" >/dev/null
    zfs create "$pool/data"
    echo "hello from $system" >"$DEMO/mnt/$pool/data/hello.txt"
    zfs snapshot "$pool/data@manual-$(date +%Y-%m-%d_%H-%M)"

    log "$system: sshd on $ip:2222"
    ssh-keygen -q -t ed25519 -N '' -f "$host/ssh_host_ed25519_key"
    cat >"$host/sshd_config" <<EOF
ListenAddress $ip:2222
HostKey $host/ssh_host_ed25519_key
PidFile $host/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
EOF
    start_bg "sshd-$system" /usr/sbin/sshd -D -e -f "$host/sshd_config"

    log "$system: enrolling with a fresh join token"
    token_json=$("${CLI[@]}" -o json token create --ttl 10m)
    token=$(printf '%s' "$token_json" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
    fingerprint=$(printf '%s' "$token_json" | sed -n 's/.*"ca_fingerprint": "\([^"]*\)".*/\1/p')
    "$BIN/nasfleet-agent" join --controller "https://127.0.0.1:$PORT" --token "$token" \
        --ca-fingerprint "$fingerprint" --name "$system" --state-dir "$host/agent" >/dev/null
    start_bg "agent-$system" "$BIN/nasfleet-agent" run --state-dir "$host/agent" --pool "$pool" \
        --ssh-address "$ip:2222" --ssh-host-key "$host/ssh_host_ed25519_key.pub"
done

log "waiting for both systems to come ONLINE"
for _ in $(seq 150); do
    online=$("${CLI[@]}" -o json system list | grep -c '"status": "ONLINE"' || true)
    [[ $online -eq ${#SYSTEMS[@]} ]] && break
    sleep 0.2
done

echo
echo "\$ nasfleet system list"
"${CLI[@]}" system list
echo

# A periodic snapshot task on nas1 (hourly, two weeks' retention), run once
# now and watched, then the snapshots of the demo dataset.
echo "\$ nasfleet snapshot-task create --system nas1 --dataset demo-nas1/data --schedule hourly --lifetime 2w"
task_id=$("${CLI[@]}" -o json snapshot-task create --system nas1 --dataset demo-nas1/data --schedule hourly --lifetime 2w |
    sed -n 's/^  "id": \([0-9]*\),*$/\1/p')
[[ -n $task_id ]] || die "snapshot task was not created"
echo "\$ nasfleet snapshot-task run $task_id --watch"
"${CLI[@]}" snapshot-task run "$task_id" --watch
echo
echo "\$ nasfleet snapshot-task list"
"${CLI[@]}" snapshot-task list
echo
echo "\$ nasfleet snapshot list nas1 demo-nas1/data --refresh"
"${CLI[@]}" snapshot list nas1 demo-nas1/data --refresh
echo
cat <<EOF
The demo fleet is running. Try:
  export NASFLEET_CONFIG=$DEMO/controller/admin.toml
  $BIN/nasfleet system show nas1
  $BIN/nasfleet system services nas2
  $BIN/nasfleet dataset list nas1
  $BIN/nasfleet run list
Logs are in $DEMO/logs. Stop everything with: deploy/demo.sh stop
EOF
[[ $online -eq ${#SYSTEMS[@]} ]] || die "only $online of ${#SYSTEMS[@]} systems came ONLINE; see $DEMO/logs"
