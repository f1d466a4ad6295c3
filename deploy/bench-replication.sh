#!/usr/bin/env bash
# Benchmark, not a test: replication throughput of nasfleet against the raw
# pipeline it wraps, in one run, over the same sshd and the same data.
#
#   deploy/bench-replication.sh [MIB]     # default 1024 MiB of incompressible data
#
# Sets up a two-system fleet (release build; fleet-lib.sh), fills a dataset
# on nas1 with MIB MiB from /dev/urandom, snapshots it, then times
#   (a) raw:      zfs send SRC@snap | ssh <nas1's replication key, pinned host key> root@nas2 zfs receive RAW
#   (b) nasfleet: a replication run of the same snapshot to nas2 (pre-flight included),
#                 from the run's own start and finish times,
# and prints both times, throughputs and the ratio raw_time / nasfleet_time
# (1.0 = as fast as the raw pipeline). Needs root; cleans up after itself.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
MIB=${1:-1024}
[[ $MIB =~ ^[0-9]+$ && $MIB -gt 0 ]] || { echo "usage: deploy/bench-replication.sh [MIB]" >&2; exit 2; }
FLEET=${NASFLEET_BENCH_DIR:-/tmp/nasfleet-bench}
PORT=${NASFLEET_BENCH_PORT:-7543}
BIN=$REPO/target/release
FLEET_LOG_TAG=bench
POOLS=(bench-src bench-dst)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=deploy/fleet-lib.sh
source deploy/fleet-lib.sh

[[ $(id -u) -eq 0 ]] || die "run as root: the benchmark creates zfs pools and starts sshd"
deploy/install-deps.sh
log "building nasfleet (release)"
cargo build --release --workspace --bins --locked

cleanup() {
    [[ -d $FLEET ]] && fleet_forget_keys
    fleet_stop "${POOLS[@]}"
}
cleanup
# NASFLEET_BENCH_KEEP=1 keeps the fleet (and its logs) for a look afterwards.
[[ ${NASFLEET_BENCH_KEEP:-} == 1 ]] || trap cleanup EXIT

# Room for the data on each side plus zfs overhead.
size="$((MIB * 2 + 512))M"
fleet_controller
fleet_host nas1 bench-src 127.0.0.2 "$size"
fleet_host nas2 bench-dst 127.0.0.3 "$size"
fleet_wait_online 2

log "writing $MIB MiB of incompressible data"
fleet_mounting zfs create bench-src/data
dd if=/dev/urandom of="$FLEET/mnt/bench-src/data/payload.bin" bs=1M count="$MIB" status=none
sync
zfs snapshot bench-src/data@auto-2026-01-01_00-00
bytes=$(zfs get -H -p -o value referenced bench-src/data@auto-2026-01-01_00-00)

# The SSH connection nasfleet makes (key authorized on nas2, host key
# pinned for nas1) is what the raw pipeline uses too.
fleet_cli ssh-connection create nas1 nas2 >/dev/null
agent_dir=$FLEET/hosts/nas1/agent
known_hosts=$FLEET/bench_known_hosts
printf '[127.0.0.3]:2222 %s\n' "$(awk '{print $1" "$2}' "$FLEET/hosts/nas2/ssh_host_ed25519_key.pub")" >"$known_hosts"
fleet_mounting zfs create bench-dst/raw

log "(a) raw: zfs send | ssh zfs receive"
raw_start=$(date +%s.%N)
zfs send bench-src/data@auto-2026-01-01_00-00 |
    ssh -i "$agent_dir/replication_ed25519" -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes \
        -o UserKnownHostsFile="$known_hosts" -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
        -o LogLevel=ERROR root@127.0.0.3 zfs receive bench-dst/raw/data
raw_end=$(date +%s.%N)

log "(b) nasfleet replication run"
fleet_cli replication create bench --source nas1:bench-src/data --target nas2:bench-dst/nf --disabled --yes >/dev/null
# Wall clock of `run --watch`: dispatch, pre-flight, transfer, and the CLI
# noticing the end. Conservative: every overhead counts against nasfleet.
nf_start=$(date +%s.%N)
fleet_cli replication run bench --watch >/dev/null
nf_end=$(date +%s.%N)
received=$(zfs get -H -p -o value referenced bench-dst/nf/nas1/bench-src/data@auto-2026-01-01_00-00)

python3 - "$bytes" "$raw_start" "$raw_end" "$nf_start" "$nf_end" "$MIB" "$received" <<'PY'
import sys
nbytes = int(sys.argv[1])
raw = float(sys.argv[3]) - float(sys.argv[2])
nf = float(sys.argv[5]) - float(sys.argv[4])
mib, received = sys.argv[6], int(sys.argv[7])
mb = nbytes / 1e6
print(f"data: {mib} MiB written; snapshot references {mb:.1f} MB on the source, {received / 1e6:.1f} MB on the target")
print(f"(a) raw zfs send | ssh zfs receive : {raw:8.2f} s  {mb / raw:8.1f} MB/s")
print(f"(b) nasfleet replication run       : {nf:8.2f} s  {mb / nf:8.1f} MB/s")
print(f"ratio raw_time / nasfleet_time     : {raw / nf:8.3f}  (target >= 0.95)")
PY
