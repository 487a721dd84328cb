#!/usr/bin/env bash
# The browser, simulation and edge tests (what scripts/setup.sh installed must be there):
#
#   1. the wasm modules: scripts/build-wasm.sh -> www/pkg/ (full) and wasm/npm/dist/ (client
#      only, within its size budget), and the npm package: scripts/build-npm.sh -> target/npm/
#   2. wasm-bindgen tests of Client and Simulation, run in Node by wasm-bindgen-test-runner
#   3. node --test www/tests/: the dashboard in Debian's chromium (playwright-core) against a live
#      `clusterconsensus demo`, the edge example in workerd against another one, and the npm
#      package installed into a scratch project, from Node and Deno
#
# Every step is bounded in time; the test processes kill what they start. Screenshots land in
# target/screenshots/, logs in target/web-tests/. The last line is `web: N passed, N failed`;
# the exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

logs=target/web-tests
mkdir -p "$logs"
passed=0
failed=0

step_failed() { # a step that could not even run its tests counts as one failure
  echo "test-web: $1 FAILED (see $2)"
  failed=$((failed + 1))
}

# 1. The package the dashboard, the worker and the Node tests import; the demo binary.
if ! timeout 1200 scripts/build-wasm.sh >"$logs/build-wasm.log" 2>&1; then
  tail -30 "$logs/build-wasm.log"
  step_failed "scripts/build-wasm.sh" "$logs/build-wasm.log"
  echo "web: $passed passed, $failed failed"
  exit 1
fi
grep '^build-wasm: ' "$logs/build-wasm.log"
if ! timeout 300 scripts/build-npm.sh --no-build >"$logs/build-npm.log" 2>&1; then
  tail -30 "$logs/build-npm.log"
  step_failed "scripts/build-npm.sh" "$logs/build-npm.log"
fi
tail -1 "$logs/build-npm.log"
if ! timeout 1200 cargo build -p clusterconsensus-server --bin clusterconsensus >"$logs/build-native.log" 2>&1; then
  tail -30 "$logs/build-native.log"
  step_failed "cargo build -p clusterconsensus-server" "$logs/build-native.log"
fi

# 2. wasm-bindgen tests under Node.
log="$logs/wasm-node.log"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  timeout -k 10 900 cargo test -p clusterconsensus-wasm --target wasm32-unknown-unknown --test node \
  >"$log" 2>&1
grep -E '^test |^test result:' "$log"
if line=$(grep -E '^test result:' "$log" | tail -1) && [ -n "$line" ]; then
  p=$(echo "$line" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
  f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  [ "${f:-0}" -gt 0 ] && grep -E 'panicked at|left:|right:' "$log" | head -20
else
  tail -30 "$log"
  step_failed "wasm-bindgen tests" "$log"
fi

# 3. Browser and edge tests.
log="$logs/node-test.log"
timeout -k 10 900 node --test --test-concurrency=1 --test-timeout=180000 --test-reporter=tap www/tests/ \
  >"$log" 2>&1
status=$?
grep -E '^(not )?ok |^# (new master|pass|fail|cancelled)' "$log"
p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -1)
f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -1)
c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$log" | tail -1)
if [ -z "$p" ]; then
  tail -40 "$log"
  step_failed "node --test www/tests/ (exit $status)" "$log"
else
  passed=$((passed + p))
  failed=$((failed + ${f:-0} + ${c:-0}))
  if [ "${f:-0}" -gt 0 ] || [ "${c:-0}" -gt 0 ]; then
    grep -B2 -A25 '^not ok' "$log" | head -80
  elif [ "$status" -ne 0 ]; then
    step_failed "node --test www/tests/ (exit $status)" "$log"
  fi
fi

echo "screenshots: $(ls target/screenshots/*.png 2>/dev/null | wc -l) in target/screenshots/"
echo "web: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
