#!/usr/bin/env bash
# The main job: a local 3-node cluster on 127.0.0.1:9001-9003 with the dashboard at
# http://127.0.0.1:9001/. Builds the wasm package for the dashboard first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only what the dashboard needs (the wasm target, wasm-bindgen-cli, the package in www/pkg/),
# not the browsers and npm packages of the tests.
scripts/build-wasm.sh
exec cargo run --release -p clusterconsensus-server --bin clusterconsensus -- demo "$@"
