#!/usr/bin/env bash
# Bounded fuzzing of the core with cargo-fuzz (libFuzzer, nightly): every target in
# core/fuzz/fuzz_targets for an equal share of SECONDS (default 30).
#
#   scripts/fuzz.sh 30        # CI: ~15 s per target, after a one-time build
#   scripts/fuzz.sh 3600      # a longer hunt
#
# Installs what it needs (the nightly toolchain, cargo-fuzz from crates.io) and works as root.
# The corpus grows in core/fuzz/corpus/<target> (not committed; seeded from core/fuzz/seeds).
# A crash stops the run with its input in core/fuzz/artifacts/<target>/ and exit code 1: turn
# it into a regression test in core/tests/fuzz_regressions.rs, then fix the core.
# Prints one line per target and a summary: "fuzz: N targets, E executions, C crashes".
set -euo pipefail
cd "$(dirname "$0")/../core"
secs="${1:-30}"

# cargo-fuzz needs nightly's -Z flags. Without a nightly toolchain (and none can be fetched),
# the stable one accepts them under RUSTC_BOOTSTRAP=1; its sanitizer runtime may be missing, so
# that mode fuzzes without AddressSanitizer (the core has no unsafe code; panics and failed
# invariants are what the targets look for).
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal || true
fi
if rustup toolchain list | grep -q '^nightly'; then
  tc=+nightly; san=()
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1 and no sanitizer"
  export RUSTC_BOOTSTRAP=1; tc=+stable; san=(--sanitizer none)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=$(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//')
n=$(echo "$targets" | wc -w)
per=$(( secs / n )); [ "$per" -ge 1 ] || per=1
# A target that does not build is a failure of the run (it once rotted unseen behind `|| true`):
# its errors are shown and every target counts as crashed.
build_log=$(mktemp)
if ! cargo $tc fuzz build --release "${san[@]}" >"$build_log" 2>&1; then
  grep -E "^error" -A12 "$build_log" | head -80 || tail -40 "$build_log"
  rm -f "$build_log"
  echo "fuzz: the targets do not build"
  echo "fuzz: $n targets, 0 executions, $n crashes"
  exit 1
fi
rm -f "$build_log"

total=0; crashes=0
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  if [ -d "fuzz/seeds/$t" ]; then cp -n fuzz/seeds/$t/* "fuzz/corpus/$t/" 2>/dev/null || true; fi
  log=$(mktemp)
  if cargo $tc fuzz run --release "${san[@]}" "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH; crashes=$((crashes + 1))
    grep -E 'panicked|ERROR|SUMMARY|artifact' "$log" | head -20 || true
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
  runs=${runs:-0}
  total=$((total + runs))
  echo "fuzz $t: $runs executions in ${per} s, $status"
  rm -f "$log"
done
echo "fuzz: $n targets, $total executions, $crashes crashes"
[ "$crashes" -eq 0 ]
