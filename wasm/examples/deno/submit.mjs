// The wasm Client in Deno: submits key=value through a node, then reads it back.
//
//   deno run --allow-net --allow-read wasm/examples/deno/submit.mjs http://127.0.0.1:9001 cluster1 a 1
//
// Prints {"value": ..., "role": ..., "commit": ...} as JSON, or {"code", "message"} and exits 1.
// `init()` fetches the .wasm next to the module (a file: URL, hence --allow-read).
import init, { Client } from "../../../www/pkg/clusterconsensus_wasm.js";

const [base, cluster, key, value] = Deno.args;
await init();
const client = new Client(base, cluster);
try {
  await client.submit([JSON.stringify({ op: "set", key, value })]);
  const status = await client.status();
  console.log(JSON.stringify({ value: await client.get(key), role: status.role, commit: status.commit }));
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
  Deno.exit(1);
}
