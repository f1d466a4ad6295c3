#!/usr/bin/env bash
# Benchmark, not a test: an rsync task run of nasfleet against the plain rsync
# command it wraps, in one run, over the same rsync daemon and the same data.
#
#   deploy/bench-rsync.sh [FILES [MIB]]   # default 20000 files, 1024 MiB in total
#
# Sets up a one-system fleet (release build; fleet-lib.sh), fills a dataset on
# nas1 with FILES files of incompressible data (MIB MiB in total, 100 files a
# directory), starts an rsync daemon on 127.0.0.4 whose module is a plain
# directory under the bench dir, reads the tree once (so both runs start from
# the same warm caches), then times
#   (a) raw:      rsync with exactly the task's default flags
#                 (-z --delay-updates -r -t --info=progress2,stats2 --outbuf=L)
#                 pushing the dataset into a fresh module subdirectory, and
#   (b) nasfleet: `nasfleet rsync run ID --watch` of an rsync task (user root,
#                 push, module mode, task defaults) into another fresh subdirectory,
#                 wall clock: dispatch, the agent's checks, rsync, the CLI noticing the end,
# checks both copies are complete, and prints both times, throughputs and the
# ratio raw_time / nasfleet_time (1.0 = as fast as plain rsync). Needs root;
# cleans up after itself unless NASFLEET_BENCH_KEEP=1.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
FILES=${1:-20000}
MIB=${2:-1024}
usage() { echo "usage: deploy/bench-rsync.sh [FILES [MIB]]" >&2; exit 2; }
[[ $FILES =~ ^[0-9]+$ && $FILES -gt 0 ]] || usage
[[ $MIB =~ ^[0-9]+$ && $MIB -gt 0 ]] || usage
FLEET=${NASFLEET_BENCH_DIR:-/tmp/nasfleet-bench-rsync}
PORT=${NASFLEET_BENCH_PORT:-7544}
RSYNCD_IP=127.0.0.4
RSYNCD_PORT=${NASFLEET_BENCH_RSYNCD_PORT:-8873}
BIN=$REPO/target/release
FLEET_LOG_TAG=bench-rsync
POOL=bench-rsync
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=deploy/fleet-lib.sh
source deploy/fleet-lib.sh

[[ $(id -u) -eq 0 ]] || die "run as root: the benchmark creates a zfs pool and starts daemons"
deploy/install-deps.sh
log "building nasfleet (release)"
cargo build --release --workspace --bins --locked

cleanup() {
    fleet_stop "$POOL"
}
cleanup
# NASFLEET_BENCH_KEEP=1 keeps the fleet, the copies and the logs for a look afterwards.
[[ ${NASFLEET_BENCH_KEEP:-} == 1 ]] || trap cleanup EXIT

# Room for the data plus zfs overhead (small files cost metadata).
size="$((MIB * 3 / 2 + FILES / 40 + 512))M"
fleet_controller
fleet_host nas1 "$POOL" 127.0.0.2 "$size"
fleet_mounting zfs create "$POOL/data"
fleet_wait_online 1
SRC=$FLEET/mnt/$POOL/data

log "writing $FILES files, $MIB MiB of incompressible data in total"
python3 - "$SRC" "$FILES" "$MIB" <<'PY'
import os, sys
root, files, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = mib * 1024 * 1024
base, extra = divmod(total, files)
for i in range(files):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(base + (1 if i < extra else 0)))
PY
sync
bytes=$(find "$SRC" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

log "rsync daemon on $RSYNCD_IP:$RSYNCD_PORT, module 'bench' in $FLEET/module"
mkdir -p "$FLEET/module" "$FLEET/rsyncd"
cat >"$FLEET/rsyncd/rsyncd.conf" <<EOF
address = $RSYNCD_IP
port = $RSYNCD_PORT
pid file = $FLEET/rsyncd/rsyncd.pid
log file = $FLEET/logs/rsyncd-file.log
use chroot = no
uid = root
gid = root
reverse lookup = no

[bench]
    path = $FLEET/module
    read only = no
EOF
fleet_start_bg rsyncd rsync --daemon --no-detach --config "$FLEET/rsyncd/rsyncd.conf"
for _ in $(seq 100); do
    rsync "rsync://$RSYNCD_IP:$RSYNCD_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
rsync "rsync://$RSYNCD_IP:$RSYNCD_PORT/" >/dev/null || die "rsync daemon does not answer; see $FLEET/logs/rsyncd.log"

task_json=$(fleet_cli -o json rsync create --system nas1 --path "$SRC" --user root --direction push \
    --remote-host "$RSYNCD_IP" --remote-port "$RSYNCD_PORT" --remote-module bench --remote-path task \
    --description "bench rsync" --disabled)
task_id=$(printf '%s' "$task_json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

log "reading the tree once, so both runs start from the same caches"
tar -cf - -C "$SRC" . | cat >/dev/null

log "(a) raw: rsync -z --delay-updates -r -t ... -> module/raw"
raw_start=$(date +%s.%N)
rsync -z --delay-updates -r -t --info=progress2,stats2 --outbuf=L -- "$SRC/" \
    "rsync://$RSYNCD_IP:$RSYNCD_PORT/bench/raw/" >"$FLEET/logs/raw-rsync.out"
raw_end=$(date +%s.%N)

log "(b) nasfleet: rsync run $task_id --watch -> module/task"
nf_start=$(date +%s.%N)
fleet_cli rsync run "$task_id" --watch >"$FLEET/logs/task-watch.out"
nf_end=$(date +%s.%N)

# Both copies must be complete, or the times mean nothing.
for copy in raw task; do
    n=$(find "$FLEET/module/$copy" -type f | wc -l)
    b=$(find "$FLEET/module/$copy" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    [[ $n -eq $FILES && $b -eq $bytes ]] ||
        die "module/$copy holds $n files, $b bytes; expected $FILES files, $bytes bytes"
done

python3 - "$bytes" "$raw_start" "$raw_end" "$nf_start" "$nf_end" "$FILES" <<'PY'
import sys
nbytes = int(sys.argv[1])
raw = float(sys.argv[3]) - float(sys.argv[2])
nf = float(sys.argv[5]) - float(sys.argv[4])
files = int(sys.argv[6])
mb = nbytes / 1e6
print(f"data: {files} files, {mb:.1f} MB of incompressible data; both copies complete")
print(f"(a) raw rsync (task flags)     : {raw:8.2f} s  {mb / raw:8.1f} MB/s  {files / raw:8.0f} files/s")
print(f"(b) nasfleet rsync task run    : {nf:8.2f} s  {mb / nf:8.1f} MB/s  {files / nf:8.0f} files/s")
print(f"ratio raw_time / nasfleet_time : {raw / nf:8.3f}  (target >= 0.98)")
PY
