// The package checks (checks.mjs) from Node 20 or Deno, in the scratch project that installed
// the `npm pack` tarball (`import ... from "clusterconsensus-client"` resolves through its
// `exports`). Prints JSON lines.
//
//   cli.mjs basic CLUSTER URL...               checks.basic
//   cli.mjs cas CLUSTER URL                    checks.cas
//   cli.mjs watch-until-done BASE CLUSTER FROM IDLE_MS   checks.watchUntilDone, a line per event
//   cli.mjs watch CLUSTER FROM URL             a live watch: a line per event as it comes, until killed
import { Client } from "clusterconsensus-client";
import { basic, cas, watchUntilDone } from "./checks.mjs";

const args = globalThis.Deno ? Deno.args : process.argv.slice(2);
const runtime = globalThis.Deno ? "deno" : "node";
const print = (o) => console.log(JSON.stringify(o));
const [mode, ...rest] = args;

if (mode === "basic") {
  print(await basic(Client, rest[0], rest.slice(1), runtime));
} else if (mode === "cas") {
  print(await cas(Client, rest[0], rest[1], runtime));
} else if (mode === "watch-until-done") {
  const [base, cluster, from, idle] = rest;
  for (const line of await watchUntilDone(Client, base, cluster, Number(from), Number(idle))) print(line);
} else if (mode === "watch") {
  const [cluster, from, url] = rest;
  const w = new Client(url, cluster).watch(Number(from), (ev) => print({ event: ev, node: w.node }), { idleTimeoutMs: 3000 });
  try {
    await w.done;
  } catch (e) {
    print({ done: e.code, oldest: e.oldest ?? null, message: e.message });
  }
} else {
  print({ error: `unknown mode ${mode}` });
}
