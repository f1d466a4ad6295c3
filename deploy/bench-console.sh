#!/usr/bin/env bash
# Benchmark, not a test: server-side time and weight of the web console's
# Dashboard, Replication and Data Protection pages with 1,000 systems and
# 5,000 tasks in the store (goal: under 100 ms each), against reading the
# same records from the store in the same run.
#
#   deploy/bench-console.sh [SYSTEMS [TASKS [ROUNDS]]]   # default 1000 5000 20
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -q -p nasfleet-controller --example bench_console -- "$@"
