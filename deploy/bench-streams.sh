#!/usr/bin/env bash
# Benchmark, not a test: how replication streams travel, each against the
# raw zfs pipeline in the same run, over the same sshd.
#
#   deploy/bench-streams.sh snapshots [N]        # N small snapshots (default 500): one -I stream vs a chain of -i
#   deploy/bench-streams.sh compression [MIB]    # a compressible lz4 dataset (default 1024 MiB): -L -c -e vs plain
#   deploy/bench-streams.sh bandwidth [MIB] [RATE]  # a task capped at RATE (default 50M) moving MIB (default 1024)
#   deploy/openzfs-guest.sh bench-streams MODE [ARGS]  # the same on kernel OpenZFS, in the guest
#
# snapshots:   N snapshots of a dataset, each after a 4 KiB write. Times
#              (a) raw chain: a full stream of the first, then one
#                  `zfs send -i | ssh zfs receive` per snapshot;
#              (b) raw -I:    the full stream, then one `zfs send -I`;
#              (c) nasfleet:  `replication run --watch` of a task over them
#                  (it sends neighbouring snapshots with -I).
# compression: MIB MiB of text (numbers from `seq`) on a compression=lz4 dataset.
#              Bytes on the wire and time of (a) a plain `zfs send` and
#              (b) `zfs send -L -c -e` (OpenZFS only), both piped over ssh
#              into `zfs receive`, and (c) nasfleet's run, which picks -L -c -e
#              when both ends run OpenZFS.
# bandwidth:   MIB MiB of random data replicated by a task with
#              --bandwidth-limit RATE; the rate its step reports (bytes /
#              step time) against the cap.
# Needs root; cleans up after itself. Release build (fleet-lib.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=${1:-}
FLEET=${NASFLEET_BENCH_DIR:-/tmp/nasfleet-bench-streams}
PORT=${NASFLEET_BENCH_PORT:-7544}
BIN=$REPO/target/release
FLEET_LOG_TAG=bench-streams
POOLS=(streams-src streams-dst)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=deploy/fleet-lib.sh
source deploy/fleet-lib.sh

usage() {
    echo "usage: deploy/bench-streams.sh snapshots [N] | compression [MIB] | bandwidth [MIB] [RATE]" >&2
    exit 2
}
whole() { [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]]; }
case $MODE in
snapshots)
    COUNT=${2:-500}
    whole "$COUNT" && ((COUNT <= 5000)) || usage
    SIZE=2G
    ;;
compression)
    MIB=${2:-1024}
    whole "$MIB" || usage
    SIZE="$((MIB * 3 + 512))M"
    ;;
bandwidth)
    MIB=${2:-1024}
    RATE=${3:-50M}
    whole "$MIB" || usage
    [[ $RATE =~ ^[0-9]+(\.[0-9]+)?[KMGT]?$ ]] || usage
    SIZE="$((MIB * 2 + 512))M"
    ;;
*) usage ;;
esac

fleet_bench_prepare

fleet_controller
fleet_host nas1 streams-src 127.0.0.2 "$SIZE"
fleet_host nas2 streams-dst 127.0.0.3 "$SIZE"
fleet_wait_online 2
fleet_ssh_connection nas1 nas2
openzfs=0
zfs version >/dev/null 2>&1 && openzfs=1

# The raw pipelines log in to nas2's sshd with a key of their own,
# authorized without nasfleet's gate.
raw_key=$FLEET/bench_raw_ed25519
ssh-keygen -q -t ed25519 -N '' -C nasfleet-bench-raw -f "$raw_key"
mkdir -p /root/.ssh && chmod 700 /root/.ssh
cat "$raw_key.pub" >>/root/.ssh/authorized_keys
known_hosts=$FLEET/bench_known_hosts
printf '[127.0.0.3]:2222 %s\n' "$(awk '{print $1" "$2}' "$FLEET/hosts/nas2/ssh_host_ed25519_key.pub")" >"$known_hosts"
to_nas2() {
    ssh -i "$raw_key" -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes \
        -o UserKnownHostsFile="$known_hosts" -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
        -o LogLevel=ERROR root@127.0.0.3 "$@"
}
fleet_mounting zfs create streams-dst/raw
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
# `zfs destroy -r` with zfs-fuse's one "dataset is busy" after a mount.
destroy_replica() {
    zfs list -H -o name "$1" >/dev/null 2>&1 || return 0
    for _ in $(seq 10); do zfs destroy -r "$1" 2>/dev/null && return 0; sleep 0.5; done
    die "cannot destroy $1"
}
# A run's dataset step (`run show -o json`): "BYTES SECONDS", the seconds
# being the whole run's (its pre-flight and zfs calls included, so a rate
# from them is a little under the transfer's own).
step_figures() {
    fleet_cli -o json run show "$1" | python3 -c '
import json, sys
from datetime import datetime
run = json.load(sys.stdin)
step = next(s for s in run["steps"] if " → " in s["name"])
def t(v): return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
secs = t(run["finished"]) - t(run["started"])
print(step["bytes"], round(secs, 2))'
}
run_task() {
    local task=$1 id
    id=$(fleet_cli -o json replication run "$task" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    fleet_cli run watch "$id" >/dev/null || true
    state=$(fleet_cli -o json run show "$id" | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])')
    [[ $state == FINISHED ]] || die "run $id of $task ended $state: $(fleet_cli run show "$id")"
    run_id=$id
}

case $MODE in
snapshots)
    fleet_mounting zfs create streams-src/many
    log "taking $COUNT snapshots, 4 KiB written before each"
    for ((i = 1; i <= COUNT; i++)); do
        head -c 4096 /dev/urandom >"$FLEET/mnt/streams-src/many/f$((i % 64))"
        printf -v name 'auto-2026-01-%02d_%02d-%02d' $((1 + i / 1440)) $((i / 60 % 24)) $((i % 60))
        zfs snapshot "streams-src/many@$name"
    done
    mapfile -t snaps < <(zfs list -H -o name -t snapshot -s createtxg -d 1 streams-src/many)
    first=${snaps[0]} last=${snaps[-1]}

    log "(a) raw: a chain of $((COUNT - 1)) -i streams"
    sync
    t0=$(now)
    zfs send "$first" | to_nas2 zfs receive streams-dst/raw/chain
    for ((i = 1; i < COUNT; i++)); do
        zfs send -i "${snaps[i - 1]}" "${snaps[i]}" | to_nas2 zfs receive streams-dst/raw/chain
    done
    chain=$(since "$t0")

    log "(b) raw: one -I stream"
    sync
    t0=$(now)
    zfs send "$first" | to_nas2 zfs receive streams-dst/raw/range
    zfs send -I "$first" "$last" | to_nas2 zfs receive streams-dst/raw/range
    range=$(since "$t0")

    log "(c) nasfleet"
    fleet_cli replication create many --source nas1:streams-src/many --target nas2:streams-dst/nf --disabled --yes >/dev/null
    sync
    t0=$(now)
    run_task many
    nasfleet=$(since "$t0")
    arrived=$(zfs list -H -o name -t snapshot -d 1 streams-dst/nf/nas1/streams-src/many | wc -l)
    [[ $arrived -eq $COUNT ]] || die "nasfleet brought $arrived of $COUNT snapshots"
    python3 - "$COUNT" "$chain" "$range" "$nasfleet" <<'PY'
import sys
count, chain, rng, nf = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"{count} snapshots, one full stream then the rest:")
print(f"(a) raw chain of -i streams : {chain:8.2f} s")
print(f"(b) raw single -I stream    : {rng:8.2f} s   chain / -I = {chain / rng:6.1f}x")
print(f"(c) nasfleet run (-I)       : {nf:8.2f} s   raw -I / nasfleet = {rng / nf:6.3f}")
PY
    ;;
compression)
    fleet_mounting zfs create -o compression=lz4 streams-src/text
    log "writing $MIB MiB of text (numbers from seq) to a compression=lz4 dataset"
    # A 16 MiB piece of 13-digit numbers (seq's fast integer path), written
    # over and over: lz4 compresses each 128 KiB record on its own, so the
    # repetition does not help it; it only spares a slow machine seq's time.
    seq 1000000000000 1000001300000 | head -c $((16 << 20)) >"$FLEET/piece.txt" || true
    for ((i = 0; i < MIB / 16 + 1; i++)); do cat "$FLEET/piece.txt"; done |
        head -c "$((MIB << 20))" >"$FLEET/mnt/streams-src/text/numbers.txt" || true
    sync
    zfs snapshot streams-src/text@auto-2026-01-01_00-00
    snap=streams-src/text@auto-2026-01-01_00-00
    logical=$(zfs get -H -p -o value logicalreferenced "$snap" 2>/dev/null || echo 0)
    physical=$(zfs get -H -p -o value referenced "$snap")
    counted() { # counts the bytes of a pipeline's middle
        python3 -c '
import sys
total = 0
while chunk := sys.stdin.buffer.read(1 << 20):
    sys.stdout.buffer.write(chunk)
    total += len(chunk)
sys.stdout.flush()
print(total, file=sys.stderr)'
    }
    log "(a) raw: plain zfs send"
    t0=$(now)
    plain_bytes=$( { zfs send "$snap" | counted | to_nas2 zfs receive streams-dst/raw/plain; } 2>&1 >/dev/null | tail -1)
    plain=$(since "$t0")
    if ((openzfs)); then
        log "(b) raw: zfs send -L -c -e"
        sync
        t0=$(now)
        compact_bytes=$( { zfs send -L -c -e "$snap" | counted | to_nas2 zfs receive streams-dst/raw/compact; } 2>&1 >/dev/null | tail -1)
        compact=$(since "$t0")
    else
        compact_bytes=0 compact=0
    fi
    log "(c) nasfleet"
    fleet_cli replication create text --source nas1:streams-src/text --target nas2:streams-dst/nf --disabled --yes >/dev/null
    sync
    run_task text
    read -r nf_bytes nf_secs < <(step_figures "$run_id")
    python3 - "$MIB" "$logical" "$physical" "$plain_bytes" "$plain" "$compact_bytes" "$compact" "$nf_bytes" "$nf_secs" <<'PY'
import sys
mib = sys.argv[1]
logical, physical, plain_b = (int(x) for x in sys.argv[2:5])
plain_t = float(sys.argv[5])
compact_b, compact_t = int(sys.argv[6]), float(sys.argv[7])
nf_b, nf_t = int(sys.argv[8]), float(sys.argv[9])
print(f"{mib} MiB of text on lz4: {logical / 1e6:.1f} MB logical, {physical / 1e6:.1f} MB on disk")
print(f"(a) raw zfs send            : {plain_b / 1e6:8.1f} MB on the wire  {plain_t:7.2f} s")
if compact_b:
    print(f"(b) raw zfs send -L -c -e   : {compact_b / 1e6:8.1f} MB on the wire  {compact_t:7.2f} s   bytes plain / compact = {plain_b / compact_b:5.2f}x")
else:
    print("(b) raw zfs send -L -c -e   : zfs-fuse has no compressed streams")
print(f"(c) nasfleet run (step)     : {nf_b / 1e6:8.1f} MB on the wire  {nf_t:7.2f} s   bytes plain / nasfleet = {plain_b / nf_b:5.2f}x")
PY
    ;;
bandwidth)
    fleet_mounting zfs create streams-src/bulk
    log "writing $MIB MiB of random data"
    dd if=/dev/urandom of="$FLEET/mnt/streams-src/bulk/payload.bin" bs=1M count="$MIB" status=none
    sync
    zfs snapshot streams-src/bulk@auto-2026-01-01_00-00
    fleet_cli replication create capped --source nas1:streams-src/bulk --target nas2:streams-dst/nf \
        --bandwidth-limit "$RATE" --disabled --yes >/dev/null
    limit=$(fleet_cli -o json replication show capped | python3 -c 'import json, sys; print(json.load(sys.stdin)["bandwidth_limit"])')
    log "(nasfleet) one run capped at $RATE ($limit bytes/s)"
    run_task capped
    read -r nf_bytes nf_secs < <(step_figures "$run_id")
    python3 - "$limit" "$nf_bytes" "$nf_secs" <<'PY'
import sys
limit, moved, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rate = moved / secs
print(f"cap {limit / 2**20:.1f} MiB/s: moved {moved / 2**20:.1f} MiB in {secs:.2f} s = {rate / 2**20:.2f} MiB/s, {100 * (rate - limit) / limit:+.1f} % from the cap")
PY
    ;;
esac
