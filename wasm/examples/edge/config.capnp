# workerd configuration of the edge example. Run from the repo root, after scripts/build-wasm.sh:
#
#   CLUSTER_URL=http://127.0.0.1:9001 CLUSTER_ID=cluster1 \
#     node_modules/.bin/workerd serve wasm/examples/edge/config.capnp
#   curl -X POST 'http://127.0.0.1:8787/set?key=a&value=1'
#
# (`--socket-addr http=127.0.0.1:PORT` listens elsewhere.) The package's files are embedded
# from www/pkg/, where scripts/build-wasm.sh writes them.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edgeWorker),
    # A worker may only fetch public addresses by default; the cluster here is on loopback.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "edge")],
);

const edgeWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "clusterconsensus_wasm.js", esModule = embed "../../../www/pkg/clusterconsensus_wasm.js"),
    (name = "clusterconsensus_wasm_bg.wasm", wasm = embed "../../../www/pkg/clusterconsensus_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "CLUSTER_URL", fromEnvironment = "CLUSTER_URL"),
    (name = "CLUSTER_ID", fromEnvironment = "CLUSTER_ID"),
  ],
  globalOutbound = "internet",
);
