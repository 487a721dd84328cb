// Node 20 (and Bun): the .wasm is read from disk and instantiated synchronously at import.
import { readFileSync } from "node:fs";
import { initSync } from "./dist/clusterconsensus_client.js";

export * from "./dist/clusterconsensus_client.js";

initSync({ module: readFileSync(new URL("./dist/clusterconsensus_client_bg.wasm", import.meta.url)) });
