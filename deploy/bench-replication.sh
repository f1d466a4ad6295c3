#!/usr/bin/env bash
# Benchmark, not a test: replication throughput of nasfleet against the raw
# pipeline it wraps, in one run, over the same sshd and the same data.
#
#   deploy/bench-replication.sh [MIB]     # default 1024 MiB of incompressible data
#   deploy/openzfs-guest.sh bench [MIB]   # the same on kernel OpenZFS, in the guest
#
# Sets up a two-system fleet (release build; fleet-lib.sh), fills a dataset
# on nas1 with MIB MiB from /dev/urandom, snapshots it, then times, in
# NASFLEET_BENCH_ROUNDS rounds (default 7),
#   (a) raw:      zfs send SRC@snap | ssh <a plain key of its own, pinned host key> root@nas2 zfs receive RAW
#   (b) nasfleet: `nasfleet replication run --watch` of the same snapshot to nas2,
#                 wall clock: dispatch, pre-flight, parents, transfer, readonly, the CLI seeing the end.
# Every measurement starts with both replicas destroyed and the previous
# transfer's dirty pages written back, so each moves the full stream; the
# order of (a) and (b) alternates between rounds. Like the raw pipeline's
# parent (bench-dst/raw), nasfleet's fan-in parents (bench-dst/nf/nas1/...)
# are kept once made: round 1's run creates them, as a task's first run does. Prints every round, the median times and the ratio of the medians
# raw_time / nasfleet_time (1.0 = as fast as the raw pipeline). Needs root;
# cleans up after itself.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
MIB=${1:-1024}
[[ $MIB =~ ^[0-9]+$ && $MIB -gt 0 ]] || { echo "usage: deploy/bench-replication.sh [MIB]" >&2; exit 2; }
ROUNDS=${NASFLEET_BENCH_ROUNDS:-7}
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 && $ROUNDS -le 20 ]] || { echo "NASFLEET_BENCH_ROUNDS: a whole number from 1 to 20" >&2; exit 2; }
FLEET=${NASFLEET_BENCH_DIR:-/tmp/nasfleet-bench}
PORT=${NASFLEET_BENCH_PORT:-7543}
BIN=$REPO/target/release
FLEET_LOG_TAG=bench
POOLS=(bench-src bench-dst)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=deploy/fleet-lib.sh
source deploy/fleet-lib.sh

fleet_bench_prepare

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

# The SSH connection nasfleet makes (key authorized on nas2 behind its
# gate, host key pinned for nas1). The raw pipeline logs in to the same
# sshd with a key of its own, authorized without the gate: the baseline is
# plain zfs over ssh, and the gate's cost counts against nasfleet.
fleet_ssh_connection nas1 nas2
raw_key=$FLEET/bench_raw_ed25519
rm -f "$raw_key" "$raw_key.pub"
ssh-keygen -q -t ed25519 -N '' -C nasfleet-bench-raw -f "$raw_key"
mkdir -p /root/.ssh && chmod 700 /root/.ssh
cat "$raw_key.pub" >>/root/.ssh/authorized_keys
known_hosts=$FLEET/bench_known_hosts
printf '[127.0.0.3]:2222 %s\n' "$(awk '{print $1" "$2}' "$FLEET/hosts/nas2/ssh_host_ed25519_key.pub")" >"$known_hosts"
fleet_mounting zfs create bench-dst/raw
fleet_cli replication create bench --source nas1:bench-src/data --target nas2:bench-dst/nf --disabled --yes >/dev/null
# Each run holds its base on both sides (nasfleet:TASKID); the replica is
# destroyed between rounds, so its hold is released first.
task_id=$(fleet_cli -o json replication show bench | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
[[ -n $task_id ]] || die "no id for the bench task"

# zfs-fuse answers the first destroy of a dataset it just had mounted with
# "dataset is busy"; it goes through a moment later.
destroy_if_present() {
    local dataset=$1
    zfs list -H -o name "$dataset" >/dev/null 2>&1 || return 0
    zfs release "nasfleet:$task_id" "$dataset@auto-2026-01-01_00-00" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        zfs destroy -r "$dataset" 2>/dev/null && return 0
        sleep 0.5
    done
    die "cannot destroy $dataset"
}

now() { date +%s.%N; }

# Each sets $started and $ended; a failure stops the benchmark (set -e).
time_raw() {
    started=$(now)
    zfs send bench-src/data@auto-2026-01-01_00-00 |
        ssh -i "$raw_key" -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes \
            -o UserKnownHostsFile="$known_hosts" -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
            -o LogLevel=ERROR root@127.0.0.3 zfs receive bench-dst/raw/data
    ended=$(now)
}

time_nasfleet() {
    started=$(now)
    fleet_cli replication run bench --watch >/dev/null
    ended=$(now)
    received=$(zfs get -H -p -o value referenced bench-dst/nf/nas1/bench-src/data@auto-2026-01-01_00-00)
}

results=()
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then order=(raw nasfleet); else order=(nasfleet raw); fi
    for which in "${order[@]}"; do
        # The same start for every measurement: both replicas gone and the
        # previous transfer's dirty pages written back, so no transfer
        # competes with the write-back of the one before.
        destroy_if_present bench-dst/raw/data
        destroy_if_present bench-dst/nf/nas1/bench-src/data
        sync
        sleep 2
        log "round $round/$ROUNDS: $which"
        "time_$which"
        results+=("$round $which $started $ended")
    done
done

python3 - "$bytes" "$MIB" "$received" "${results[@]}" <<'PY'
import statistics
import sys

nbytes, mib, received = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
times = {}
for result in sys.argv[4:]:
    rnd, which, start, end = result.split()
    times.setdefault(int(rnd), {})[which] = float(end) - float(start)
mb = nbytes / 1e6
print(f"data: {mib} MiB written; snapshot references {mb:.1f} MB on the source, {received / 1e6:.1f} MB on the target")
for rnd in sorted(times):
    raw, nf = times[rnd]["raw"], times[rnd]["nasfleet"]
    first = "raw first" if rnd % 2 == 1 else "nasfleet first"
    print(f"round {rnd} ({first:14}): raw {raw:6.2f} s  nasfleet {nf:6.2f} s  ratio {raw / nf:6.3f}")
raw = statistics.median(t["raw"] for t in times.values())
nf = statistics.median(t["nasfleet"] for t in times.values())
print(f"(a) raw zfs send | ssh zfs receive : {raw:8.2f} s  {mb / raw:8.1f} MB/s  (median of {len(times)})")
print(f"(b) nasfleet replication run       : {nf:8.2f} s  {mb / nf:8.1f} MB/s  (median of {len(times)})")
print(f"ratio raw_time / nasfleet_time     : {raw / nf:8.3f}  (target >= 0.95)")
PY
