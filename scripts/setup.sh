#!/usr/bin/env bash
# Installs what the tests need (idempotent): Rust targets and tools, and for the browser and
# edge tests, Debian's chromium and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

# Browser, simulation and edge tests (scripts/test-web.sh): Debian's chromium for playwright-core
# (its own browser download does not work here), the npm packages pinned in package-lock.json
# (playwright-core, workerd, deno), and wasm-bindgen-cli at the wasm-bindgen crate's exact version.
# Debian packages: chromium for the browser tests, systemd-analyze for the deploy unit's check,
# python3's venv for the deploy files' schema checks.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ ! -x node_modules/.bin/workerd ] || [ ! -x node_modules/.bin/deno ] || [ ! -d node_modules/playwright-core ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
scripts/build-wasm.sh --install
