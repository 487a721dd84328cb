// What the package tests do with the installed `clusterconsensus-client`, written once for
// every runtime: cli.mjs runs them from Node and Deno, worker.js from workerd
// (www/tests/client-package.test.mjs copies these files into its scratch project). Each returns
// a plain object for the test to check; `Client` is the package's, as the runtime imported it.

async function codeOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return e.code ?? String(e);
  }
}

/** Submit through the last node (a follower, most likely: it forwards), a consistent read on
 * every node, status, and the codes of a bad change and an unknown cluster. */
export async function basic(Client, cluster, urls, runtime) {
  const c = new Client(urls[urls.length - 1], cluster);
  const key = `pkg-${runtime}`;
  await c.submit([JSON.stringify({ op: "set", key, value: runtime })]);
  const values = [];
  for (const u of urls) values.push(await new Client(u, cluster).get(key, true));
  const st = await c.status();
  return {
    values,
    cluster: st.cluster,
    members: st.members.length,
    badChange: await codeOf(c.submit(["not a change"])),
    unknownCluster: await codeOf(new Client(urls[0], "nosuchcluster").status()),
    missing: await c.get(`never-set-${runtime}`, true),
  };
}

/** Submit's {seq, results}, a cas taken, lost, swapped, a casDel lost and applied. */
export async function cas(Client, cluster, url, runtime) {
  const c = new Client(url, cluster);
  const key = `lock-${runtime}`;
  const set = await c.submit([JSON.stringify({ op: "set", key: `${key}-plain`, value: "1" })]);
  const take = await c.cas(key, null, "a");
  const lost = await c.cas(key, null, "b");
  const swap = await c.cas(key, "a", "b");
  const delLost = await c.casDel(key, "a");
  const del = await c.casDel(key, "b", { client: `pkg-${runtime}`, req: 1 });
  return { set, take, lost, swap, delLost, del, after: await c.get(key, true) };
}

/** A watch from `from` until it stops by itself: every event, then how it ended. */
export async function watchUntilDone(Client, base, cluster, from, idleTimeoutMs) {
  const lines = [];
  const w = new Client(base, cluster).watch(from, (ev) => lines.push({ event: ev }), { idleTimeoutMs });
  try {
    await w.done;
    lines.push({ done: "closed" });
  } catch (e) {
    lines.push({ done: e.code, oldest: e.oldest ?? null, lastSeq: w.lastSeq, reconnects: w.reconnects });
  }
  return lines;
}
