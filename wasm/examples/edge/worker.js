// An edge worker (Cloudflare workerd) that talks to a clusterconsensus cluster with the wasm
// Client. Configured by two bindings: CLUSTER_URL (any member's base URL) and CLUSTER_ID, and
// optionally CLUSTER_TOKEN for nodes started with --token-file.
//
//   POST /set?key=K&value=V   submits {"op":"set","key":K,"value":V}; answers
//                             {"submitted": <change>, "status": <the node's status>} once it
//                             committed, or {"code": "ERR_...", "error": "..."} with 503/400/502
//   GET  /get?key=K           {"key": K, "value": V | null}, a linearizable read
//   GET  /status              the node's status
//
// The wasm module is imported as a compiled WebAssembly.Module (workerd's `wasm` module type),
// so it is instantiated synchronously, once per isolate.
import { initSync, Client } from "./clusterconsensus_wasm.js";
import wasmModule from "./clusterconsensus_wasm_bg.wasm";

initSync({ module: wasmModule });

const json = (status, body) =>
  new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });

// Codes worth a retry (the cluster is between masters) are 503; bad input is 400; the rest 502.
const httpStatus = (code) =>
  ({ ERR_STATE: 503, ERR_MAJORITY: 503, ERR_CALL: 504, ERR_ENCODING: 400 })[code] ?? 502;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const client = new Client(env.CLUSTER_URL, env.CLUSTER_ID);
    if (env.CLUSTER_TOKEN) client.setToken(env.CLUSTER_TOKEN);
    try {
      if (url.pathname === "/set") {
        if (request.method !== "POST") return json(405, { error: "use POST" });
        const key = url.searchParams.get("key");
        const value = url.searchParams.get("value") ?? (await request.text());
        if (!key) return json(400, { error: "key is required" });
        const change = JSON.stringify({ op: "set", key, value });
        await client.submit([change]);
        return json(200, { submitted: change, status: await client.status() });
      }
      if (url.pathname === "/get") {
        const key = url.searchParams.get("key") ?? "";
        return json(200, { key, value: await client.get(key, true) });
      }
      if (url.pathname === "/status" || url.pathname === "/") {
        return json(200, await client.status());
      }
      return json(404, { error: "try POST /set?key=K&value=V, GET /get?key=K, GET /status" });
    } catch (e) {
      return json(httpStatus(e.code), { code: e.code ?? "ERR_CALL", error: String(e.message ?? e) });
    }
  },
};
