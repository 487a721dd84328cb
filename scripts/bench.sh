#!/bin/sh
# The full performance comparison of README "Performance": our 3-node cluster against a 3-member
# etcd 3.4 cluster (Debian's etcd-server), both on 127.0.0.1 with fsync on, under the same
# keep-alive clients. Installs etcd-server if it is missing, builds release, runs
# clusterconsensus-bench and writes its table and JSON to $OUT_DIR (default
# <target>/bench/latest.md and latest.json).
#
#   scripts/bench.sh                       # C = 1, 8, 32, 128, 512, 5 s each, plus etcd
#   scripts/bench.sh --duration 10s        # any clusterconsensus-bench flag (--help lists them)
#   scripts/bench.sh --soak 10m            # the RSS soak instead of the comparison
set -eu
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd-server (Debian's etcd 3.4) ..." >&2
    apt-get install -y etcd-server >/dev/null || { apt-get update >/dev/null && apt-get install -y etcd-server >/dev/null; }
fi
cargo build --release -p clusterconsensus-server --bins
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=${OUT_DIR:-$target/bench}
mkdir -p "$out"
"$target/release/clusterconsensus-bench" --out "$out/latest.json" "$@" | tee "$out/latest.md"
echo "table: $out/latest.md  json: $out/latest.json" >&2
