// Uses the installed `clusterconsensus-client` package against a live cluster, from Node 20 or
// Deno (www/tests/client-package.test.mjs copies this into a scratch project that installed the
// `npm pack` tarball, and runs it there). Prints one JSON line per result.
//
//   live.mjs basic CLUSTER URL...   submit, consistent get on every node, status, a bad change
//   live.mjs cas CLUSTER URL...     submit's {seq, results}, cas, cas lost, casDel
//   live.mjs watch CLUSTER FROM URL...  a watch through URL[0]: one line per event, until killed
import { Client } from "clusterconsensus-client";

const args = globalThis.Deno ? Deno.args : process.argv.slice(2);
const runtime = globalThis.Deno ? "deno" : "node";
const print = (o) => console.log(JSON.stringify(o));
const [mode, cluster, ...rest] = args;

async function codeOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return e.code ?? String(e);
  }
}

if (mode === "basic") {
  const urls = rest;
  const c = new Client(urls[urls.length - 1], cluster); // a follower, most likely: it forwards
  const key = `pkg-${runtime}`;
  await c.submit([JSON.stringify({ op: "set", key, value: runtime })]);
  const values = [];
  for (const u of urls) values.push(await new Client(u, cluster).get(key, true));
  const st = await c.status();
  print({
    values,
    cluster: st.cluster,
    members: st.members.length,
    badChange: await codeOf(c.submit(["not a change"])),
    unknownCluster: await codeOf(new Client(urls[0], "nosuchcluster").status()),
    missing: await c.get("never-set-" + runtime, true),
  });
} else if (mode === "cas") {
  const c = new Client(rest[0], cluster);
  const key = `lock-${runtime}`;
  const set = await c.submit([JSON.stringify({ op: "set", key: `${key}-plain`, value: "1" })]);
  const take = await c.cas(key, null, "a");
  const lost = await c.cas(key, null, "b");
  const swap = await c.cas(key, "a", "b");
  const delLost = await c.casDel(key, "a");
  const del = await c.casDel(key, "b", { client: `pkg-${runtime}`, req: 1 });
  print({ set, take, lost, swap, delLost, del, after: await c.get(key, true) });
} else if (mode === "watch") {
  const [from, ...urls] = rest;
  const c = new Client(urls[0], cluster);
  const w = c.watch(Number(from), (ev) => print({ event: ev, node: w.node }), { idleTimeoutMs: 3000 });
  try {
    await w.done;
    print({ done: "closed" });
  } catch (e) {
    print({ done: e.code, oldest: e.oldest ?? null, message: e.message });
  }
} else {
  print({ error: `unknown mode ${mode}` });
}
