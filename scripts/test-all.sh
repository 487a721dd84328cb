#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need, builds,
# runs the browser / edge / wasm tests, then the Rust workspace tests (whose summary closes
# the output).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

scripts/setup.sh
# The node binary, the benchmark and the example apps: the integration tests run them.
if ! cargo build --workspace --bins --examples; then
  echo "workspace: 0 passed, 1 failed, 0 skipped (the workspace does not build)"
  exit 1
fi
# The README's `cargo run -p clusterconsensus-server -- demo` must pick the node binary.
cargo run -q -p clusterconsensus-server -- demo --help >/dev/null
bash -n scripts/demo.sh
# Every suite runs even when an earlier one failed (all failures show in one run); the exit
# status is non-zero if any did, and the closing line counts every one of them.
status=0
# The suites' logs go to ./target, which cargo does not create when CARGO_TARGET_DIR points
# elsewhere.
mkdir -p target
scripts/test-web.sh 2>&1 | tee target/test-web.log || status=1
scripts/fuzz.sh 30 2>&1 | tee target/fuzz.log || status=1
deploy/check.sh 2>&1 | tee target/deploy-check.log || status=1
cargo_status=0
cargo test --workspace --no-fail-fast 2>&1 | tee target/cargo-test.log || cargo_status=1
# The mutation checks: each deliberate protocol bug must be caught by the simulation's checks.
cargo test -p clusterconsensus --release --features mutants --test mutations -- --nocapture 2>&1 \
  | tee -a target/cargo-test.log || cargo_status=1
[ "$cargo_status" -eq 0 ] || status=1
grep -h '^simulation\|^linearizability\|^mutant' target/cargo-test.log || true

# One countable closing line: every cargo test, web test, fuzz target (a crash is a failure) and
# deploy validator. A suite that printed no summary (it did not build) counts as one failure.
count() { # FILE PATTERN -> "passed failed" from its last summary line, or "0 1"
  local line
  line=$(grep -E "$2" "$1" 2>/dev/null | tail -1 || true)
  [ -n "$line" ] || { echo "0 1"; return; }
  echo "$line"
}
read -r wp wf < <(count target/test-web.log '^web: ' | sed -E 's/^web: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/')
read -r ft fc < <(count target/fuzz.log '^fuzz: [0-9]+ targets' | sed -E 's/^fuzz: ([0-9]+) targets, [0-9]+ executions, ([0-9]+) crashes.*/\1 \2/')
read -r dp df < <(count target/deploy-check.log '^deploy-check: ' | sed -E 's/^deploy-check: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/')
read -r cp cf ci < <(grep -h '^test result:' target/cargo-test.log | awk '{p+=$4; f+=$6; i+=$8} END {print p+0, f+0, i+0}')
# cargo failed without a failing test: a build error, a crashed test binary.
[ "$cargo_status" -eq 0 ] || [ "$cf" -gt 0 ] || cf=1
echo "web: $wp passed, $wf failed; fuzz: $((ft - fc)) of $ft targets clean; deploy-check: $dp passed, $df failed"
echo "workspace: $((cp + wp + ft - fc + dp)) passed, $((cf + wf + fc + df)) failed, $ci skipped"
exit $status
