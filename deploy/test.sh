#!/usr/bin/env bash
# Runs every nasfleet test, in two tiers, and says which one is running:
#   1. on the host: the unit tests, then the end-to-end tests on zfs-fuse;
#   2. in the OpenZFS guest (deploy/openzfs-guest.sh): the end-to-end tests
#      again, against the real OpenZFS kernel module.
# Installs the system dependencies (as root) and builds the binaries the
# end-to-end tests start.
#
#   deploy/test.sh                        # everything (.ci/run always runs this)
#   OPENZFS=0 deploy/test.sh              # host tier only: the quick local loop
#   NASFLEET_OPENZFS=2.1 deploy/test.sh   # the guest tier on OpenZFS 2.1 instead of 2.3
#   E2E_TEST_THREADS=2 deploy/test.sh     # parallel host e2e tests (risks the zfs-fuse mount deadlock)
#   NASFLEET_TEST_KEEP=1 deploy/test.sh   # keep test temp dirs and logs
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n[test.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# zpool, zfs and sshd live in /usr/sbin; the tests and the agent run them.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

OPENZFS=${OPENZFS:-1}
case $OPENZFS in
0 | 1) ;;
*)
    echo "OPENZFS=$OPENZFS: expected 0 (host tier only) or 1 (both tiers)" >&2
    exit 2
    ;;
esac
if [[ $OPENZFS == 0 && ${CI:-} == true ]]; then
    echo "OPENZFS=0 under CI=true: CI runs both tiers, the guest is never skipped" >&2
    exit 2
fi
guest="OpenZFS ${NASFLEET_OPENZFS:-2.3} guest"

if [[ $(id -u) -eq 0 ]]; then
    step "installing dependencies"
    deploy/install-deps.sh
else
    # The end-to-end tests need root (zfs, sshd); say so instead of failing
    # obscurely halfway through.
    echo "deploy/test.sh must run as root: the tests create zfs pools and start sshd" >&2
    exit 1
fi

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

# The guest image (built once, then cached) is made in the background while
# the host tier runs: most of it is the DKMS build of the module, niced so
# that the host's builds and tests come first.
guest_build_pid=
guest_build_log=
if [[ $OPENZFS == 1 ]]; then
    step "tier 2/2 ($guest): host packages, then the image in the background"
    deploy/openzfs-guest.sh deps
    guest_build_log=$(mktemp /tmp/nasfleet-guest-build.XXXXXX)
    nice -n 19 deploy/openzfs-guest.sh build > "$guest_build_log" 2>&1 &
    guest_build_pid=$!
fi

# The e2e tests start target/debug/nasfleet{,-controller,-agent}, which
# `cargo test` does not build for another package's tests.
step "building binaries"
cargo build --workspace --bins "${locked[@]}"

# Every wait in the harness is bounded; these outer limits only keep a
# wedged run from eating the whole CI budget.
step "tier 1/2 (host): unit and integration tests (all crates but the e2e harness)"
timeout --kill-after=30 1500 \
    cargo test --workspace --exclude nasfleet-tests "${locked[@]}"

# Real controller, agents, zfs-fuse pools and sshds, one test at a time:
# zfs-fuse can deadlock when two file systems are mounted at the same
# moment (two unsynchronised writes in its FUSE listener), and tests that
# run in parallel mount from several processes (pool creation, zfs receive).
step "tier 1/2 (host, zfs-fuse): end-to-end tests"
timeout --kill-after=30 2700 \
    cargo test -p nasfleet-tests "${locked[@]}" -- --test-threads="${E2E_TEST_THREADS:-1}"

if [[ $OPENZFS == 0 ]]; then
    step "OPENZFS=0: skipping tier 2/2 ($guest)"
    step "host tier passed"
    exit 0
fi

# What the guest runs, built while its image may still be building.
step "tier 2/2 ($guest): release build of the binaries and tests the guest runs"
cargo build --workspace --bins --release "${locked[@]}"
cargo test -p nasfleet-tests --release --no-run "${locked[@]}"

# The image is built once per kernel/OpenZFS version and cached under
# /var/tmp (first build about 10 minutes); a failed build or boot fails
# the run, it is never skipped. The guest kills itself at its own deadline
# (NASFLEET_GUEST_TIMEOUT); these limits are the outer bound.
step "tier 2/2 ($guest): waiting for the image built in the background"
if ! wait "$guest_build_pid"; then
    cat "$guest_build_log" >&2
    step "the background build failed (its log is above); building once more in the foreground"
fi
rm -f "$guest_build_log"
# Finds the image just built; builds it if the background build failed.
timeout --kill-after=30 2400 deploy/openzfs-guest.sh build

# One test at a time here too: the guest has 2 emulated CPUs (TCG), and the
# tests' deadlines were set for the host.
step "tier 2/2 ($guest): harness self-checks"
NASFLEET_GUEST_TEST=harness_smoke timeout --kill-after=30 1200 deploy/openzfs-guest.sh test

# The console's browser tests, the promtool check of /metrics, the
# notification channels' tests and the simulated fleet's storms ran in
# tier 1: the guest has no browser, promtool or aiosmtpd, its 2 emulated
# CPUs are no place for 300 simulated agents, and what they check (pages,
# sessions, roles; the metrics' format; mail and webhook delivery; the
# controller under storms) does not depend on the ZFS.
step "tier 2/2 ($guest): end-to-end tests (console::, alerts::metrics_, notify:: and fleet_storm:: ran on the host)"
NASFLEET_GUEST_TEST=e2e timeout --kill-after=60 4000 deploy/openzfs-guest.sh test --skip console:: --skip alerts::metrics_ --skip notify:: --skip fleet_storm::

step "all tests passed (host and $guest)"
