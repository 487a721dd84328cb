#!/usr/bin/env bash
# The fault campaign over real node processes (tests/src/campaign): partitions (one-way ones
# and one isolating the master), delays, loss, SIGSTOP, SIGKILL + restart, membership changes,
# while clients write and read linearizably; then heal and check.
#
#   scripts/campaign.sh --duration 10m              # a fresh seed, printed first
#   scripts/campaign.sh --duration 10m --seed 42    # replay a seed's choice of faults
#   scripts/campaign.sh --duration 2m --token T -v  # with --token-file on every node, verbose
#
# Prints "campaign: seed S, ... operations, ... acknowledged, ... failed, ... indeterminate,
# ... faults injected (...), ... heal->master: T ms, ... unattributed connections: N,
# verdict: PASS|FAIL" and exits 1 on FAIL (node logs are kept in the directory it names). The 1-minute run is part of `cargo test` (tests/tests/campaign.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clusterconsensus-native -p clusterconsensus-tests --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/campaign" "$@"
