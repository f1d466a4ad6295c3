#!/usr/bin/env bash
# Benchmark, not a test: one controller under a simulated fleet of N agents
# speaking the real protocol (tests/src/bin/fleet_load.rs), against the
# goals of issue 18, each printed as MET or NOT MET:
#   - all N ONLINE within 15 s of connecting at once;
#   - controller RSS <= 512 MiB at steady state (CPU % printed too);
#   - ListSystems p50 <= 20 ms (p99 printed);
#   - Run-Now -> the agent's StartRun p99 <= 20 ms (200 systems);
#   - no system shown OFFLINE while its stream is up;
#   - T tasks due in the same minute: every StartRun within 2 s, no duplicates;
#   - restart storm: all N ONLINE again within 30 s of the controller's restart.
# The goals are stated for N = 10,000 and T = 2,000.
#
#   deploy/bench-fleet.sh [N [T]]     # default 10000 2000; e.g. 200 50 is a quick run
#
# Builds the release binaries, raises `ulimit -n`, inits a controller in a
# temp dir on 127.0.0.1 with a free port (schedules in UTC, no console or
# metrics listeners), starts it, runs the generator against it, stops
# everything and prints the report. The generator restarts the controller
# through `deploy/bench-fleet.sh --restart WORKDIR` (internal: stop it,
# start it again, print the new pid). NASFLEET_BENCH_KEEP=1 keeps the temp
# dir (controller log, data dir); extra generator flags may be passed in
# NASFLEET_BENCH_ARGS (e.g. "--steady-secs 60 --run-now 500").
# NASFLEET_BENCH_BIN_DIR=DIR runs the controller and generator found there
# as they are, without building: the e2e test of a small fleet does, with
# "--check" in NASFLEET_BENCH_ARGS.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=${NASFLEET_BENCH_BIN_DIR:-$TARGET/release}
CTL=$BIN/nasfleet-controller
GEN=$BIN/fleet_load

log() { printf '[bench-fleet] %s\n' "$*" >&2; }

# The controller's state: running unless it has gone or is a zombie.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [[ -n $state && $state != Z ]]
}

start_controller() {
    local work=$1
    # Not a child of whoever stops it later: the pid file is the handle.
    setsid "$CTL" run --data-dir "$work/controller" </dev/null >>"$work/controller.log" 2>&1 &
    echo $! >"$work/controller.pid"
}

# SIGTERM, up to 30 s for the exit, then SIGKILL.
stop_controller() {
    local work=$1 pid
    [[ -f $work/controller.pid ]] || return 0
    pid=$(cat "$work/controller.pid")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 300); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "controller $pid still running 30 s after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$work/controller.pid"
}

if [[ ${1:-} == --restart ]]; then
    WORK=${2:?--restart WORKDIR}
    stop_controller "$WORK"
    start_controller "$WORK"
    cat "$WORK/controller.pid"
    exit 0
fi

N=${1:-10000}
T=${2:-2000}
[[ $N =~ ^[0-9]+$ && $N -ge 1 && $N -le 99999 ]] || { echo "usage: deploy/bench-fleet.sh [N [T]]  (N from 1 to 99999)" >&2; exit 2; }
[[ $T =~ ^[0-9]+$ && $T -le $N ]] || { echo "usage: deploy/bench-fleet.sh [N [T]]  (T from 0 to N)" >&2; exit 2; }

if [[ -z ${NASFLEET_BENCH_BIN_DIR:-} ]]; then
    log "building release binaries"
    cargo build --release --locked -q -p nasfleet-controller -p nasfleet-tests --bins
fi
for bin in "$CTL" "$GEN"; do
    [[ -x $bin ]] || { log "$bin is missing; build it first"; exit 1; }
done

# Each side holds one socket per agent, plus the store's files.
want=65536
if ! ulimit -n "$want" 2>/dev/null; then
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || want=$hard
    ulimit -n "$want"
fi
log "ulimit -n $(ulimit -n)"
if (( $(ulimit -n) < N + 1024 )); then
    log "WARNING: ulimit -n $(ulimit -n) is below $((N + 1024)); connections will fail"
fi

WORK=$(mktemp -d /tmp/nasfleet-bench-fleet-XXXXXX)
cleanup() {
    stop_controller "$WORK"
    if [[ ${NASFLEET_BENCH_KEEP:-} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# A port that nothing answers on.
PORT=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[[ -n $PORT ]] || { log "no free port found"; exit 1; }

"$CTL" init --data-dir "$WORK/controller" --listen "127.0.0.1:$PORT" --name localhost >"$WORK/init.log"
CONF=$WORK/controller/controller.toml
# Schedules in UTC (the generator writes its cron in UTC); only the gRPC
# listener, so nothing else needs a free port.
grep -v -E '^(timezone|web_listen|web_url|metrics_listen)[[:space:]]*=' "$CONF" >"$CONF.new"
echo 'timezone = "UTC"' >>"$CONF.new"
mv "$CONF.new" "$CONF"

start_controller "$WORK"
for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    alive "$(cat "$WORK/controller.pid")" || { log "the controller exited:"; cat "$WORK/controller.log" >&2; exit 1; }
    sleep 0.1
done
PID=$(cat "$WORK/controller.pid")
log "controller pid $PID on 127.0.0.1:$PORT, work dir $WORK"

status=0
# shellcheck disable=SC2086 # NASFLEET_BENCH_ARGS is a list of flags
"$GEN" --data-dir "$WORK/controller" --pid "$PID" --systems "$N" --tasks "$T" \
    --restart "'$REPO/deploy/bench-fleet.sh' --restart '$WORK'" ${NASFLEET_BENCH_ARGS:-} || status=$?

warnings=$(grep -c -E ' (WARN|ERROR) ' "$WORK/controller.log" || true)
log "controller log: $warnings WARN/ERROR lines$( ((warnings > 0)) && echo '; the most frequent:')"
if ((warnings > 0)); then
    grep -E ' (WARN|ERROR) ' "$WORK/controller.log" \
        | sed -E 's/^[^ ]+ +//; s/sim[0-9]+/simN/g; s/[0-9]+/#/g' \
        | cut -c1-160 | sort | uniq -c | sort -rn | head -8 >&2
fi
exit $status
