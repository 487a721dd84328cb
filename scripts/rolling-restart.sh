#!/usr/bin/env bash
# Rolling restart of a 3-node release cluster under a steady write load (tests/src/bin/
# rolling_restart.rs): each node in turn gets SIGTERM, starts again on its data and is waited
# for until it has caught up; once with transfer-on-shutdown (the default: a master hands its
# mastership over before it exits) and once with --no-transfer-on-shutdown, each on a fresh
# cluster. Prints for each: writes acknowledged, failed submits (each failed attempt; writers
# retry the same write at the next node), the longest time no write was acknowledged while the
# restarts went on, and the acknowledged writes lost (must be 0: exit 1 otherwise).
#
#   scripts/rolling-restart.sh                       # 8 writers, one round, both ways
#   scripts/rolling-restart.sh --writers 32 --rounds 3
#   scripts/rolling-restart.sh --only no-transfer
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clusterconsensus-server -p clusterconsensus-tests --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/rolling_restart" "$@"
