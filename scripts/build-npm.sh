#!/usr/bin/env bash
# Builds the npm package `clusterconsensus-client` (wasm/npm/): the client-only wasm module
# (scripts/build-wasm.sh --client -> wasm/npm/dist/), then `npm pack` into target/npm/, printing
# the tarball's path last. Its version must be the wasm crate's (checked here).
#
#   scripts/build-npm.sh             build the module, then pack
#   scripts/build-npm.sh --no-build  pack what scripts/build-wasm.sh already put in wasm/npm/dist/
#
# Try it without a registry: `npm install /path/to/target/npm/clusterconsensus-client-X.tgz`.
set -euo pipefail
cd "$(dirname "$0")/.."

crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' wasm/Cargo.toml | head -1)
package=$(node -p 'require("./wasm/npm/package.json").version')
if [ "$crate" != "$package" ]; then
  echo "build-npm: wasm/npm/package.json says $package, wasm/Cargo.toml $crate: make them the same" >&2
  exit 1
fi
[ "${1:-}" = "--no-build" ] || scripts/build-wasm.sh --client
for f in clusterconsensus_client.js clusterconsensus_client.d.ts clusterconsensus_client_bg.wasm; do
  [ -f "wasm/npm/dist/$f" ] || { echo "build-npm: wasm/npm/dist/$f is missing: run scripts/build-wasm.sh" >&2; exit 1; }
done

mkdir -p target/npm
rm -f "target/npm/clusterconsensus-client-$crate.tgz"
(cd wasm/npm && npm pack --pack-destination ../../target/npm --silent >/dev/null)
tgz="target/npm/clusterconsensus-client-$crate.tgz"
echo "build-npm: $tgz ($(stat -c %s "$tgz") bytes; $(tar -tzf "$tgz" | wc -l) files)"
