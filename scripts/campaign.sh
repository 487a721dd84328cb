#!/usr/bin/env bash
# The fault campaign over real node processes (tests/src/campaign): partitions (one-way ones
# and one isolating the master), delays, loss, SIGSTOP, SIGKILL + restart, membership changes,
# while clients write and read linearizably; then heal and check.
#
#   scripts/campaign.sh --duration 10m              # a fresh seed, printed first
#   scripts/campaign.sh --duration 10m --seed 42    # replay a seed's choice of faults
#   scripts/campaign.sh --duration 2m --token T -v  # with --token-file on every node, verbose
#   scripts/campaign.sh --starve 8 --duration 60s --seed 42
#                                                   # with 8 busy loops on the CPUs meanwhile
#
# Prints "campaign: seed S, ... operations, ... acknowledged, ... failed, ... indeterminate,
# ... faults injected (...), ... heal->master: T ms, ... unattributed connections: N,
# verdict: PASS|FAIL" and exits 1 on FAIL (node logs are kept in the directory it names).
# The 1-minute run is part of `cargo test` (tests/tests/campaign.rs).
#
# --starve N (this script's own flag, first or anywhere) runs N busy loops at normal priority
# for the whole campaign, as a loaded CI machine would: once faults heal, a master must serve
# again even so. The loops are killed when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
starve=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --starve)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "campaign.sh: --starve needs a count" >&2; exit 2; }
      starve="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build --release -p clusterconsensus-server -p clusterconsensus-tests --bins
target="${CARGO_TARGET_DIR:-target}"
if [ "$starve" -eq 0 ]; then
  exec "$target/release/campaign" "${args[@]}"
fi
loops=()
stop_loops() { [ ${#loops[@]} -eq 0 ] || kill "${loops[@]}" 2>/dev/null || true; }
trap stop_loops EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$starve"); do
  (while :; do :; done) &
  loops+=($!)
done
echo "campaign.sh: $starve busy loops running (pids ${loops[*]})" >&2
"$target/release/campaign" "${args[@]}"
