#!/usr/bin/env bash
# Builds the wasm crate and turns it into an ES module package in www/pkg/ (ignored by git):
# www/pkg/clusterconsensus_wasm.js (+ _bg.wasm, .d.ts). Installs wasm-bindgen-cli at exactly the
# version of the wasm-bindgen crate in Cargo.lock if it is missing or another version: the CLI
# refuses modules made by any other version.
#
#   scripts/build-wasm.sh            release build (what the dashboard and the tests use)
#   scripts/build-wasm.sh --dev      debug build (faster to compile, slower to run)
#   scripts/build-wasm.sh --install  only install the tools (the target and wasm-bindgen-cli)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
[ "${1:-}" = "--dev" ] && profile=dev

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ -z "$want" ]; then
  cargo generate-lockfile >/dev/null 2>&1 || true
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
fi
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "build-wasm: installing wasm-bindgen-cli $want (found: ${have:-none})"
  # --locked first (reproducible); if a locked dependency is not on this registry, let cargo
  # pick compatible versions.
  cargo install wasm-bindgen-cli --version "$want" --locked \
    || cargo install wasm-bindgen-cli --version "$want"
fi

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
[ "${1:-}" = "--install" ] && exit 0

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ "$profile" = release ]; then
  cargo build -p clusterconsensus-wasm --lib --target wasm32-unknown-unknown --release
  out_dir=release
else
  cargo build -p clusterconsensus-wasm --lib --target wasm32-unknown-unknown
  out_dir=debug
fi

rm -rf www/pkg
wasm-bindgen --target web --out-dir www/pkg \
  "$target_dir/wasm32-unknown-unknown/$out_dir/clusterconsensus_wasm.wasm"
echo "build-wasm: www/pkg/ ($(du -k www/pkg/clusterconsensus_wasm_bg.wasm | cut -f1) KiB wasm, wasm-bindgen $want, $profile)"
