// The npm package `clusterconsensus-client` as a user gets it: the tarball of `npm pack`
// (scripts/build-npm.sh, run by scripts/test-web.sh) installed offline into a scratch project,
// then imported by its name from Node 20 and from Deno, which pick their entries through the
// package's `exports` (node.js reads the .wasm with fs, Deno's index.js fetches it), and from
// workerd through its `workerd` entry (the .wasm imported as a module). The checks themselves are
// www/tests/package/checks.mjs, the same for every runtime.
//
// - against a live `clusterconsensus demo`, from Node, Deno and workerd: submit, consistent
//   reads on every node, status and the error codes;
// - `watch` against two stub nodes (a Node http server speaking the watch stream), from Node,
//   Deno and workerd: events cut mid-event and mid-character, a connection cut, a silent node
//   dropped after idleTimeoutMs, a consumer "fell behind" error, each reconnect going to the
//   other node with Last-Event-ID, the node list learnt from `status`, and the ERR_GAP stop;
// - against the live cluster, from Node and Deno: cas and the `{seq, results}` of submit, and
//   a live watch through a follower that follows the kill of its node to another one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, copyFileSync, existsSync, readFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { promisify } from "node:util";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startDemo, freePorts, run, eventually, sleep, fatal } from "./harness.mjs";

const DENO = join(ROOT, "node_modules", ".bin", "deno");
const WORKERD = join(ROOT, "node_modules", ".bin", "workerd");
const VERSION = JSON.parse(readFileSync(join(ROOT, "wasm/npm/package.json"), "utf8")).version;
const TARBALL = join(ROOT, "target", "npm", `clusterconsensus-client-${VERSION}.tgz`);
const exec = promisify(execFile);
let project, demo, workerd, edge;

before(async () => {
  if (!existsSync(TARBALL)) throw new Error(`${TARBALL} is missing: run scripts/build-npm.sh first`);
  project = mkdtempSync(join(tmpdir(), "cc-npm-"));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "scratch", private: true, type: "module" }));
  // Offline: a local tarball without dependencies needs no registry.
  await exec("npm", ["install", "--offline", "--no-audit", "--no-fund", "--no-package-lock", TARBALL], {
    cwd: project,
    timeout: 120_000,
  });
  for (const f of ["checks.mjs", "cli.mjs", "worker.js"]) copyFileSync(join(ROOT, "www/tests/package", f), join(project, f));
  demo = await startDemo({ cluster: "pkg" });
  await startWorkerd();
}, { timeout: 180_000 });

after(async () => {
  await workerd?.kill();
  await demo?.stop();
  if (project) rmSync(project, { recursive: true, force: true });
}, { timeout: 30_000 });

/** Runs a script of the scratch project in `runtime` ("node" or "deno"); its JSON lines. */
async function script(runtime, args, timeout = 60_000) {
  const [cmd, pre] = runtime === "node" ? ["node", []] : [DENO, ["run", "--allow-net", "--allow-read"]];
  const { stdout } = await exec(cmd, [...pre, ...args], {
    cwd: project,
    timeout,
    killSignal: "SIGKILL",
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", DENO_DIR: join(project, ".deno") },
  });
  return stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

test("package: the tarball installs with its entries, types and the client-only wasm", async () => {
  const dir = join(project, "node_modules", "clusterconsensus-client");
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  assert.equal(pkg.name, "clusterconsensus-client");
  assert.equal(pkg.version, VERSION);
  for (const cond of ["types", "workerd", "deno", "node", "browser", "default"]) {
    assert.ok(existsSync(join(dir, pkg.exports["."][cond])), `${cond} entry exists`);
  }
  const dts = readFileSync(join(dir, "index.d.ts"), "utf8") + readFileSync(join(dir, "dist/clusterconsensus_client.d.ts"), "utf8");
  for (const name of ["class Client", "class Watch", "type WatchEvent", "interface WatchOptions", "interface CasResult", "cas(", "casDel(", "watch("]) {
    assert.ok(dts.includes(name), `the types declare ${name}`);
  }
  const wasm = readFileSync(join(dir, "dist/clusterconsensus_client_bg.wasm"));
  assert.ok(wasm.length <= 150_000, `client-only wasm is ${wasm.length} bytes`);
  // No simulation in it: the Simulation class is not exported.
  assert.ok(!dts.includes("class Simulation"));
});

/** Runs a check in `runtime`: "node" and "deno" run cli.mjs in the scratch project (its JSON
 * lines), "workerd" asks the worker there (its JSON answer). */
async function check(runtime, mode, args, query) {
  if (runtime === "workerd") {
    const r = await fetch(`${edge}/${mode}?${query}`, { signal: AbortSignal.timeout(60_000) });
    const body = await r.json();
    assert.equal(r.status, 200, JSON.stringify(body));
    return Array.isArray(body) ? body : [body];
  }
  return script(runtime, ["cli.mjs", mode, ...args]);
}

for (const runtime of ["node", "deno", "workerd"]) {
  test(`${runtime}: the installed package submits, reads on every node, and maps errors`, { timeout: 90_000 }, async () => {
    const query = new URLSearchParams([["cluster", demo.cluster], ...demo.urls.map((u) => ["url", u])]);
    const [out] = await check(runtime, "basic", [demo.cluster, ...demo.urls], query);
    assert.deepEqual(out.values, [runtime, runtime, runtime]);
    assert.equal(out.cluster, demo.cluster);
    assert.equal(out.members, 3);
    assert.equal(out.badChange, "ERR_ENCODING");
    assert.equal(out.unknownCluster, "ERR_STATE");
    assert.equal(out.missing, null);
  });

  test(`${runtime}: watch resumes on the other node after cuts and silence, without gap or duplicate`, { timeout: 90_000 }, async () => {
    const stub = await stubNodes();
    try {
      const query = new URLSearchParams({ base: stub.urls[0], cluster: "pkg", from: "1", idle: "400" });
      const lines = await check(runtime, "watch-until-done", [stub.urls[0], "pkg", "1", "400"], query);
      const events = lines.filter((l) => l.event).map((l) => l.event);
      assert.deepEqual(events, [
        { type: "entry", seq: 1, chg: ["c1"] },
        { type: "entry", seq: 2, chg: ["c2"] },
        { type: "entry", seq: 3, chg: ["c3"] },
        { type: "progress", commit: 3 },
        { type: "entry", seq: 4, chg: ["c4"] },
        { type: "entry", seq: 5, chg: ["caf\u00e9 \u2603"] },
        { type: "entry", seq: 6, chg: ["c6"] },
        { type: "error", code: "ERR_GAP", err: "compacted", oldest: 50 },
      ]);
      assert.deepEqual(lines.at(-1), { done: "ERR_GAP", oldest: 50, lastSeq: 6, reconnects: 3 });
      const [a, b] = stub.urls;
      assert.deepEqual(stub.watches, [
        { node: a, from: "1", lastEventId: null },
        { node: b, from: "4", lastEventId: "3" }, // A cut the connection mid-event
        { node: a, from: "6", lastEventId: "5" }, // B went silent: dropped after 400 ms
        { node: b, from: "7", lastEventId: "6" }, // A said the consumer fell behind
      ]);
      assert.deepEqual(stub.statuses, [a], "the node list came from A's status");
    } finally {
      await stub.stop();
    }
  });

  if (runtime === "workerd") continue; // the live cas and watch checks run from Node and Deno

  test(`${runtime}: cas and submit results against the live cluster`, { timeout: 90_000 }, async () => {
    const [out] = await script(runtime, ["cli.mjs", "cas", demo.cluster, demo.urls[1]]);
    assert.equal(typeof out.set.seq, "number");
    assert.deepEqual(out.set.results, [{ prev: null }]);
    assert.deepEqual(out.take, { ok: true, value: "a" });
    assert.deepEqual(out.lost, { ok: false, value: "a" });
    assert.deepEqual(out.swap, { ok: true, value: "b" });
    assert.deepEqual(out.delLost, { ok: false, value: "b" });
    assert.deepEqual(out.del, { ok: true, value: null });
    assert.equal(out.after, null);
  });

  test(`${runtime}: a live watch follows a kill of its node without gap or duplicate`, { timeout: 120_000 }, async () => {
    await liveWatch(runtime);
  });
}

/** workerd serving worker.js of the scratch project, which imports the installed package's
 * `workerd` entry by its path (workerd resolves no bare names; wrangler would pick the entry
 * through the `workerd` export condition). */
async function startWorkerd() {
  const port = await freePorts(1);
  edge = `http://127.0.0.1:${port}`;
  const pkg = "node_modules/clusterconsensus-client";
  const modules = [
    ["worker.js", "esModule"],
    ["checks.mjs", "esModule"],
    [`${pkg}/workerd.js`, "esModule"],
    [`${pkg}/dist/clusterconsensus_client.js`, "esModule"],
    [`${pkg}/dist/clusterconsensus_client_bg.wasm`, "wasm"],
  ];
  writeFileSync(join(project, "config.capnp"), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [
${modules.map(([name, type]) => `    (name = "${name}", ${type} = embed "${name}"),`).join("\n")}
  ],
  compatibilityDate = "2025-01-01",
  globalOutbound = "internet",
);
`);
  workerd = run(WORKERD, ["serve", join(project, "config.capnp")]);
  await eventually("workerd to listen", async () => {
    if (workerd.child.exitCode !== null) throw fatal(`workerd exited with ${workerd.child.exitCode}:\n${workerd.output()}`);
    return (await fetch(`${edge}/none`, { signal: AbortSignal.timeout(2000) })).status === 404;
  }, 30_000, 200);
}

/** The live watch test: watch through a follower, write 20 changes, kill the watched node,
 * write 20 more through another, and check every change arrived once, in commit order. */
async function liveWatch(runtime) {
  // A fresh cluster: this test kills one of its nodes.
  const cluster = await startDemo({ cluster: `w${runtime}` });
  let proc;
  try {
    const { commit } = await cluster.status(cluster.urls[0]);
    const master = await eventually("a master", () => cluster.master(), 10_000);
    const watched = cluster.urls.find((u) => u !== master);
    const [cmd, pre] = runtime === "node" ? ["node", []] : [DENO, ["run", "--allow-net", "--allow-read"]];
    proc = run(cmd, [...pre, "cli.mjs", "watch", cluster.cluster, String(commit + 1), watched], {
      cwd: project,
      env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", DENO_DIR: join(project, ".deno") },
    });
    const lines = () => proc.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    const entries = () => lines().filter((l) => l.event?.type === "entry");
    const write = async (i, via) => {
      const r = await fetch(`${via}/_clusterc/${cluster.cluster}/submit`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        // client/req: a retried write applies once, so each key is one entry.
        body: JSON.stringify({ chg: [JSON.stringify({ op: "set", key: `w${i}`, value: String(i), client: "livewatch", req: i + 1 })] }),
      });
      assert.equal((await r.json()).fail, false);
    };
    for (let i = 0; i < 20; i++) await write(i, master);
    await eventually("the first 20 changes watched", () => entries().length >= 20, 20_000);
    cluster.killNode(watched);
    const survivor = cluster.urls.find((u) => u !== watched);
    for (let i = 20; i < 40; i++) await eventually(`write ${i}`, async () => (await write(i, survivor), true), 20_000);
    await eventually("all 40 changes watched", () => entries().length >= 40, 30_000);
    await sleep(1500); // anything duplicated after the last would show up here
    const seen = entries();
    const seqs = seen.map((l) => l.event.seq);
    assert.deepEqual([...seqs].sort((x, y) => x - y), seqs, "commit order");
    assert.equal(new Set(seqs).size, seqs.length, "no duplicate");
    const keys = seen.flatMap((l) => l.event.chg.map((c) => JSON.parse(c).key));
    // A write retried after the kill may commit twice (as two entries; the app applies it
    // once): each key's first entry, in order, is the check for gaps.
    assert.deepEqual([...new Set(keys)], Array.from({ length: 40 }, (_, i) => `w${i}`), "no gap");
    assert.ok(seen.some((l) => l.node !== watched), "moved to another node");
  } finally {
    await proc?.kill();
    await cluster.stop();
  }
}

/** Two stub nodes A and B of cluster "pkg": `status` lists both; `watch` answers, in turn:
 *  1. (A) entries 1-3, progress, half of entry 4, then the connection is cut;
 *  2. (B) entry 4, entry 5 written in two pieces split inside "é", then silence;
 *  3. (A) entry 5 again (not to be delivered twice), 6, then ERR_STATE "fell behind", end;
 *  4. (B) ERR_GAP with oldest 50, end.
 * Records each watch request's node, `from` and Last-Event-ID. */
async function stubNodes() {
  const base = await freePorts(2);
  const urls = [`http://127.0.0.1:${base}`, `http://127.0.0.1:${base + 1}`];
  const watches = [];
  const statuses = [];
  const entry = (seq, chg) => `id: ${seq}\ndata: ${JSON.stringify({ seq, chg })}\n\n`;
  const plan = [
    async (res) => {
      res.write(entry(1, ["c1"]) + entry(2, ["c2"]));
      await sleep(20);
      res.write(entry(3, ["c3"]) + `event: progress\ndata: {"commit":3}\n\n` + `id: 4\ndata: {"seq":4,"ch`);
      await sleep(50);
      res.socket.destroy();
    },
    async (res) => {
      const five = Buffer.from(entry(4, ["c4"]) + entry(5, ["caf\u00e9 \u2603"]));
      const cut = five.indexOf(0xa9) ; // the second byte of "é"
      res.write(five.subarray(0, cut));
      await sleep(30);
      res.write(five.subarray(cut));
      // ... and then nothing, not even progress: the client's idle timeout must drop it.
    },
    async (res) => {
      res.write(entry(5, ["caf\u00e9 \u2603"]) + entry(6, ["c6"]));
      res.end(`event: error\ndata: {"code":"ERR_STATE","err":"the watcher fell behind"}\n\n`);
    },
    async (res) => {
      res.end(`event: error\ndata: {"code":"ERR_GAP","err":"compacted","oldest":50}\n\n`);
    },
  ];
  const servers = urls.map((node) =>
    createServer((req, res) => {
      const url = new URL(req.url, node);
      if (url.pathname === "/_clusterc/pkg/status") {
        statuses.push(node);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ cluster: "pkg", members: urls }));
        return;
      }
      if (url.pathname !== "/_clusterc/pkg/watch") return res.writeHead(404).end();
      watches.push({ node, from: url.searchParams.get("from"), lastEventId: req.headers["last-event-id"] ?? null });
      const step = plan.shift();
      if (!step) return res.writeHead(500).end("the stub has no more answers");
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.flushHeaders();
      step(res).catch(() => {});
    }),
  );
  await Promise.all(servers.map((s, i) => new Promise((r) => s.listen(base + i, "127.0.0.1", r))));
  return {
    urls,
    watches,
    statuses,
    stop: () =>
      Promise.all(
        servers.map((s) => {
          s.closeAllConnections();
          return new Promise((r) => s.close(r));
        }),
      ),
  };
}
