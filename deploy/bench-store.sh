#!/usr/bin/env bash
# Benchmark, not a test: durable store writes per second and p50/p99 latency
# at 1, 8 and 64 concurrent writers, nasfleet's store (one writer thread,
# group commit) against raw sled with one flush per write, in one run.
#
#   deploy/bench-store.sh [WRITES_PER_LEVEL [DIR]]   # default 2000 writes, a temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -q -p nasfleet-controller --example bench_store -- "$@"
