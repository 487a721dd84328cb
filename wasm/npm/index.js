// Pages, web workers and Deno: the .wasm next to this file is fetched and instantiated once,
// when this module is first imported (top-level await), so `Client` is ready to use.
// (Deno reads it from node_modules: run with --allow-read, as well as --allow-net.)
import init from "./dist/clusterconsensus_client.js";

export * from "./dist/clusterconsensus_client.js";

await init({ module_or_path: new URL("./dist/clusterconsensus_client_bg.wasm", import.meta.url) });
