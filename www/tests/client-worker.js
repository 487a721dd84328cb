// A module web worker that uses the wasm Client off the main thread (the browser tests load it
// from a node; the README shows it). Message in: {base, cluster, key, value}; out: the value
// read back and the node's status, or the error's code.
import init, { Client } from "../pkg/clusterconsensus_wasm.js";

const ready = init(); // fetches ../pkg/clusterconsensus_wasm_bg.wasm relative to the module

self.onmessage = async ({ data: { base, cluster, key, value } }) => {
  await ready;
  const client = new Client(base, cluster);
  try {
    await client.submit([JSON.stringify({ op: "set", key, value })]);
    self.postMessage({ ok: true, value: await client.get(key), status: await client.status() });
  } catch (e) {
    self.postMessage({ ok: false, code: e.code, message: e.message });
  }
};
