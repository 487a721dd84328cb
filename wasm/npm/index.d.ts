// Every entry (browser, Deno, Node, workerd) exports the wasm-bindgen module, ready to use.
export * from "./dist/clusterconsensus_client.js";
