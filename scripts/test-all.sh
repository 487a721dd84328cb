#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need, builds,
# runs the browser / edge / wasm tests, then the Rust workspace tests (whose summary closes
# the output).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

scripts/setup.sh
# The node binary, the benchmark and the example apps: the integration tests run them.
cargo build --workspace --bins --examples
# The README's `cargo run -p clusterconsensus-server -- demo` must pick the node binary.
cargo run -q -p clusterconsensus-server -- demo --help >/dev/null
bash -n scripts/demo.sh
# Every suite runs even when an earlier one failed (all failures show in one run); the exit
# status is non-zero if any did.
status=0
scripts/test-web.sh || status=1
scripts/fuzz.sh 30 || status=1
cargo test --workspace 2>&1 | tee target/cargo-test.log || status=1
# The mutation checks: each deliberate protocol bug must be caught by the simulation's checks.
cargo test -p clusterconsensus --release --features mutants --test mutations -- --nocapture 2>&1 \
  | tee -a target/cargo-test.log || status=1
grep -h '^simulation\|^linearizability\|^mutant' target/cargo-test.log || true
# One countable closing line for every cargo test binary of the workspace.
grep -h '^test result:' target/cargo-test.log | awk '{p+=$4; f+=$6; i+=$8} END {printf "workspace: %d passed, %d failed, %d skipped\n", p, f, i}'
exit $status
