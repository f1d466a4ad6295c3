#!/usr/bin/env bash
# Runs every nasfleet test: installs the system dependencies (as root),
# builds the binaries the end-to-end tests start, then runs the unit tests
# and the end-to-end tests.
#
#   deploy/test.sh                  # everything
#   E2E_TEST_THREADS=2 deploy/test.sh    # parallel e2e tests (risks the zfs-fuse mount deadlock)
#   NASFLEET_TEST_KEEP=1 deploy/test.sh   # keep test temp dirs and logs
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n[test.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# zpool, zfs and sshd live in /usr/sbin; the tests and the agent run them.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

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

# The e2e tests start target/debug/nasfleet{,-controller,-agent}, which
# `cargo test` does not build for another package's tests.
step "building binaries"
cargo build --workspace --bins "${locked[@]}"

# Every wait in the harness is bounded; these outer limits only keep a
# wedged run from eating the whole CI budget.
step "unit and integration tests (all crates but the e2e harness)"
timeout --kill-after=30 1500 \
    cargo test --workspace --exclude nasfleet-tests "${locked[@]}"

# Real controller, agents, zfs-fuse pools and sshds, one test at a time:
# zfs-fuse can deadlock when two file systems are mounted at the same
# moment (two unsynchronised writes in its FUSE listener), and tests that
# run in parallel mount from several processes (pool creation, zfs receive).
step "end-to-end tests"
timeout --kill-after=30 2700 \
    cargo test -p nasfleet-tests "${locked[@]}" -- --test-threads="${E2E_TEST_THREADS:-1}"

step "all tests passed"
