# Shared by deploy/demo.sh and the benchmarks (bench-replication.sh, bench-streams.sh): a local fleet of
# one controller and several "hosts", each a file-backed zfs-fuse pool, an
# sshd on its own loopback address, and an enrolled agent. Source it after
# setting FLEET (work dir), BIN (dir of the nasfleet binaries) and PORT.

log() { printf '[%s] %s\n' "${FLEET_LOG_TAG:-fleet}" "$*" >&2; }

# zfs-fuse hangs for good when two file systems are mounted at the same
# moment, so every command here that mounts (zpool create, zfs create) runs
# under the machine-wide lock the test harness takes too (MountLock in
# tests/src/zfs.rs).
FLEET_MOUNT_LOCK=/run/lock/nasfleet-zfs-fuse-mount.lock
fleet_mounting() {
    mkdir -p "$(dirname "$FLEET_MOUNT_LOCK")"
    flock -w 300 "$FLEET_MOUNT_LOCK" "$@"
}
die() { log "ERROR: $*"; exit 1; }

# Starts a command in the background with its log and pid file.
fleet_start_bg() {
    local name=$1
    shift
    nohup "$@" >"$FLEET/logs/$name.log" 2>&1 &
    echo $! >"$FLEET/run/$name.pid"
}

# Stops everything started by fleet_start_bg and destroys the given pools.
fleet_stop() {
    local pidfile pid pool
    for pidfile in "$FLEET"/run/*.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    for pool in "$@"; do
        if zpool list -H -o name "$pool" >/dev/null 2>&1; then
            # zfs-fuse may call a freshly used pool busy once.
            zpool destroy -f "$pool" 2>/dev/null || { sleep 1; zpool destroy -f "$pool"; }
        fi
    done
    rm -rf "$FLEET"
}

fleet_cli() { "$BIN/nasfleet" --config "$FLEET/controller/admin.toml" "$@"; }

# Initialises and starts the controller on 127.0.0.1:$PORT.
fleet_controller() {
    mkdir -p "$FLEET"/{run,logs,pools,hosts}
    log "controller on 127.0.0.1:$PORT"
    "$BIN/nasfleet-controller" init --data-dir "$FLEET/controller" --listen "127.0.0.1:$PORT" --name localhost >/dev/null
    fleet_start_bg controller "$BIN/nasfleet-controller" run --data-dir "$FLEET/controller" --heartbeat-interval 2s
    for _ in $(seq 100); do
        fleet_cli system list >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "controller did not start; see $FLEET/logs/controller.log"
}

# fleet_host SYSTEM POOL IP SIZE: a pool, an sshd on IP:2222, an enrolled agent.
fleet_host() {
    local system=$1 pool=$2 ip=$3 size=$4
    local host="$FLEET/hosts/$system" token_json token fingerprint
    mkdir -p "$host" /run/sshd
    log "$system: pool $pool ($size), sshd on $ip:2222, agent"
    truncate -s "$size" "$FLEET/pools/$pool.img"
    fleet_mounting zpool create -m "$FLEET/mnt/$pool" "$pool" "$FLEET/pools/$pool.img" >/dev/null
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
    fleet_start_bg "sshd-$system" /usr/sbin/sshd -D -e -f "$host/sshd_config"
    token_json=$(fleet_cli -o json token create --ttl 10m)
    token=$(printf '%s' "$token_json" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
    fingerprint=$(printf '%s' "$token_json" | sed -n 's/.*"ca_fingerprint": "\([^"]*\)".*/\1/p')
    "$BIN/nasfleet-agent" join --controller "https://127.0.0.1:$PORT" --token "$token" \
        --ca-fingerprint "$fingerprint" --name "$system" --state-dir "$host/agent" >/dev/null
    fleet_start_bg "agent-$system" "$BIN/nasfleet-agent" run --state-dir "$host/agent" --pool "$pool" \
        --ssh-address "$ip:2222" --ssh-host-key "$host/ssh_host_ed25519_key.pub"
}

# Waits (30 s at most) until COUNT systems are ONLINE.
fleet_wait_online() {
    local count=$1 online=0
    for _ in $(seq 150); do
        online=$(fleet_cli -o json system list | grep -c '"status": "ONLINE"' || true)
        [[ $online -eq $count ]] && return 0
        sleep 0.2
    done
    die "only $online of $count systems came ONLINE; see $FLEET/logs"
}

# Removes this fleet's replication keys from root's authorized_keys again.
fleet_forget_keys() {
    local pub body
    [[ -f /root/.ssh/authorized_keys ]] || return 0
    for pub in "$FLEET"/hosts/*/agent/replication_ed25519.pub "$FLEET"/*_ed25519.pub; do
        [[ -f $pub ]] || continue
        body=$(awk '{print $2}' "$pub")
        [[ -n $body ]] && sed -i "\\|$body|d" /root/.ssh/authorized_keys
    done
}

# For the benchmarks: as root, with the release binaries (built here, or
# by the host when NASFLEET_BENCH_PREBUILT=1 in the OpenZFS guest, which
# has no network and no cargo), and a clean start: a fleet left over under
# $FLEET and the pools named in POOLS are removed now and again at exit
# (NASFLEET_BENCH_KEEP=1 keeps them, with the logs, for a look afterwards).
fleet_bench_prepare() {
    [[ $(id -u) -eq 0 ]] || die "run as root: the benchmark creates zfs pools and starts sshd"
    if [[ ${NASFLEET_BENCH_PREBUILT:-0} == 1 ]]; then
        [[ -x $BIN/nasfleet && -x $BIN/nasfleet-agent && -x $BIN/nasfleet-controller ]] ||
            die "NASFLEET_BENCH_PREBUILT=1 but no release binaries in $BIN"
    else
        deploy/install-deps.sh
        log "building nasfleet (release)"
        cargo build --release --workspace --bins --locked
    fi
    fleet_bench_cleanup
    [[ ${NASFLEET_BENCH_KEEP:-} == 1 ]] || trap fleet_bench_cleanup EXIT
}

fleet_bench_cleanup() {
    [[ -d $FLEET ]] && fleet_forget_keys
    fleet_stop "${POOLS[@]}"
}

# fleet_ssh_connection SOURCE TARGET: `ssh-connection create`, retried for
# a while: a target reports its sshd and host keys with its first
# inventory, which follows ONLINE by seconds on a slow machine.
fleet_ssh_connection() {
    for _ in $(seq 60); do
        fleet_cli ssh-connection create "$1" "$2" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fleet_cli ssh-connection create "$1" "$2" >/dev/null
}
