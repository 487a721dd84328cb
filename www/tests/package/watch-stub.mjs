// A watch through the installed `clusterconsensus-client` package, against the stub SSE nodes
// of www/tests/client-package.test.mjs (copied into its scratch project, run by Node and by
// Deno). Prints one JSON line per event, then how the watch ended.
//
//   watch-stub.mjs BASE CLUSTER FROM IDLE_MS
import { Client } from "clusterconsensus-client";

const [base, cluster, from, idle] = globalThis.Deno ? Deno.args : process.argv.slice(2);
const print = (o) => console.log(JSON.stringify(o));
const w = new Client(base, cluster).watch(Number(from), (ev) => print({ event: ev }), {
  idleTimeoutMs: Number(idle),
});
try {
  await w.done;
  print({ done: "closed" });
} catch (e) {
  print({ done: e.code, oldest: e.oldest ?? null, lastSeq: w.lastSeq, reconnects: w.reconnects });
}
