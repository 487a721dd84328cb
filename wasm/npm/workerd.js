// Cloudflare workerd (wrangler picks this through the "workerd" export condition): a worker may
// not fetch at import time, so the .wasm is imported as a compiled WebAssembly.Module (the
// `wasm` module type; wrangler bundles `.wasm` imports that way) and instantiated at once.
import { initSync } from "./dist/clusterconsensus_client.js";
import wasmModule from "./dist/clusterconsensus_client_bg.wasm";

export * from "./dist/clusterconsensus_client.js";

initSync({ module: wasmModule });
