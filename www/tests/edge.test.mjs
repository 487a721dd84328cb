// The edge example (wasm/examples/edge) in Cloudflare's workerd, against a live 3-node
// `clusterconsensus demo`: a request to the worker submits a change through the wasm Client, and
// the change is read back from every node. Also the same package in plain Node 20 and in Deno.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { ROOT, startDemo, run, freePorts, eventually, fatal } from "./harness.mjs";

const WORKERD = join(ROOT, "node_modules", ".bin", "workerd");
const DENO = join(ROOT, "node_modules", ".bin", "deno");
let demo, workerd, edge;

before(async () => {
  demo = await startDemo();
  const port = await freePorts(1);
  edge = `http://127.0.0.1:${port}`;
  workerd = run(WORKERD, ["serve", join(ROOT, "wasm/examples/edge/config.capnp"), "--socket-addr", `http=127.0.0.1:${port}`], {
    // Through a follower: it forwards the submit to its master.
    env: { ...process.env, CLUSTER_URL: demo.urls[2], CLUSTER_ID: demo.cluster },
  });
  await eventually("workerd to listen", async () => {
    if (workerd.child.exitCode !== null) throw fatal(`workerd exited with ${workerd.child.exitCode}:\n${workerd.output()}`);
    return (await fetch(`${edge}/status`, { signal: AbortSignal.timeout(2000) })).ok;
  }, 30_000, 200);
}, { timeout: 90_000 });

after(async () => {
  await workerd?.kill();
  await demo?.stop();
}, { timeout: 30_000 });

test("edge: a request to the worker submits a change that every node then holds", { timeout: 30_000 }, async () => {
  const value = `edge-${Date.now()}`;
  const r = await fetch(`${edge}/set?key=from-edge&value=${value}`, { method: "POST", signal: AbortSignal.timeout(10_000) });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.deepEqual(JSON.parse(body.submitted), { op: "set", key: "from-edge", value });
  assert.equal(body.status.cluster, demo.cluster);
  assert.equal(body.status.members.length, 3);
  for (const u of demo.urls) {
    await eventually(`the value on ${u}`, async () => (await demo.get(u, "from-edge")) === value, 5_000);
  }
  const g = await (await fetch(`${edge}/get?key=from-edge`)).json();
  assert.equal(g.value, value);
});

test("edge: a bad request is a 400, a missing key is null, status passes through", { timeout: 30_000 }, async () => {
  const r = await fetch(`${edge}/set?key=`, { method: "POST", body: "x" });
  assert.equal(r.status, 400);
  const bad = await fetch(`${edge}/get?key=never-set`);
  assert.deepEqual(await bad.json(), { key: "never-set", value: null });
  const st = await (await fetch(`${edge}/status`)).json();
  assert.ok(["master", "participant"].includes(st.role), JSON.stringify(st));
});

test("node: the same package in plain Node 20 submits and reads back", { timeout: 30_000 }, async () => {
  const { initSync, Client } = await import(join(ROOT, "www/pkg/clusterconsensus_wasm.js"));
  initSync({ module: readFileSync(join(ROOT, "www/pkg/clusterconsensus_wasm_bg.wasm")) });
  const c = new Client(demo.urls[1], demo.cluster);
  await c.submit([JSON.stringify({ op: "set", key: "from-node", value: "20" })]);
  // A linearizable read sees the write at once, on every node (no waiting for a heartbeat).
  for (const u of demo.urls) assert.equal(await new Client(u, demo.cluster).get("from-node", true), "20", u);
  for (const u of demo.urls) {
    const cu = new Client(u, demo.cluster);
    await eventually(`from-node on ${u}`, async () => (await cu.get("from-node")) === "20", 5_000);
  }
  await assert.rejects(c.submit(["not a change"]), (e) => e instanceof Error && e.code === "ERR_ENCODING");
  await assert.rejects(new Client(demo.urls[0], "nosuchcluster").status(), (e) => e.code === "ERR_STATE");
});

test("deno: the package in Deno submits and reads back (wasm/examples/deno)", { timeout: 60_000 }, async () => {
  const { stdout } = await promisify(execFile)(
    DENO,
    ["run", "--allow-net", "--allow-read", join(ROOT, "wasm/examples/deno/submit.mjs"), demo.urls[0], demo.cluster, "from-deno", "d2"],
    { timeout: 45_000, killSignal: "SIGKILL", env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" } },
  );
  const out = JSON.parse(stdout.trim().split("\n").at(-1));
  assert.equal(out.value, "d2", stdout);
  for (const u of demo.urls) await eventually(`from-deno on ${u}`, async () => (await demo.get(u, "from-deno")) === "d2", 5_000);
});
