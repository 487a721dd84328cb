#!/usr/bin/env bash
# Installs what the tests need (idempotent): Rust targets and tools, and for the browser and
# edge tests, Debian's chromium and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
