#!/usr/bin/env bash
# Builds the wasm crate twice and turns each build into an ES module (both ignored by git):
#
#   www/pkg/clusterconsensus_wasm.js (+ _bg.wasm, .d.ts)        the full module: Client and
#       Simulation, what the dashboard uses (`--release`, the crate's default features);
#   wasm/npm/dist/clusterconsensus_client.js (+ _bg.wasm, .d.ts) the client-only module of the
#       npm package `clusterconsensus-client` (scripts/build-npm.sh): `--no-default-features`,
#       so neither this crate's nor the core's `sim` feature is on, built with the workspace's
#       `wasm-client` profile (opt-level "z", fat LTO, one codegen unit, panic = abort).
#
# The client-only `.wasm` must stay within CLIENT_WASM_BUDGET bytes (150000) as wasm-bindgen
# writes it, before any compression: the build fails past it. Both sizes are printed last
# (bytes, and gzip -9 for reference). No wasm-opt is needed for the budget.
#
# Installs wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock if it
# is missing or another version: the CLI refuses modules made by any other version.
#
#   scripts/build-wasm.sh            release builds (what the dashboard and the tests use)
#   scripts/build-wasm.sh --dev      debug builds (faster to compile, slower to run, no budget)
#   scripts/build-wasm.sh --client   only the client-only module (release)
#   scripts/build-wasm.sh --install  only install the tools (the target and wasm-bindgen-cli)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
client_profile=wasm-client
full=1
case "${1:-}" in
  --dev) profile=dev client_profile=dev ;;
  --client) full=0 ;;
esac
budget=${CLIENT_WASM_BUDGET:-150000}

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
out_dir() { # cargo's output directory of a profile
  case "$1" in dev) echo debug ;; *) echo "$1" ;; esac
}
size_line() { # NAME FILE
  echo "build-wasm: $1 $(stat -c %s "$2") bytes of wasm ($(gzip -9 -c "$2" | wc -c) gzipped): $2"
}

if [ "$full" = 1 ]; then
  cargo build -p clusterconsensus-wasm --lib --target wasm32-unknown-unknown --profile "$profile"
  rm -rf www/pkg
  wasm-bindgen --target web --out-dir www/pkg \
    "$target_dir/wasm32-unknown-unknown/$(out_dir "$profile")/clusterconsensus_wasm.wasm"
fi

# The client alone. Its own profile keeps it from overwriting the full build's output.
cargo build -p clusterconsensus-wasm --lib --target wasm32-unknown-unknown \
  --profile "$client_profile" --no-default-features
rm -rf wasm/npm/dist
# Without the name and producers sections: nothing at run time reads them.
wasm-bindgen --target web --out-dir wasm/npm/dist --out-name clusterconsensus_client \
  --remove-name-section --remove-producers-section \
  "$target_dir/wasm32-unknown-unknown/$(out_dir "$client_profile")/clusterconsensus_wasm.wasm"

echo "build-wasm: wasm-bindgen $want, $profile"
[ "$full" = 1 ] && size_line "full module (Client + Simulation)" www/pkg/clusterconsensus_wasm_bg.wasm
size_line "client-only module" wasm/npm/dist/clusterconsensus_client_bg.wasm
client_size=$(stat -c %s wasm/npm/dist/clusterconsensus_client_bg.wasm)
if [ "$client_profile" != dev ] && [ "$client_size" -gt "$budget" ]; then
  echo "build-wasm: the client-only module is $client_size bytes, over its budget of $budget" >&2
  exit 1
fi
