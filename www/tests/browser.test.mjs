// End-to-end tests of the dashboard: Debian's chromium (headless, through playwright-core)
// against a live `clusterconsensus demo`, and the simulation mode. Live mode follows the change
// stream (`watch`) and reads status at most once a second and one page of keys, never the whole
// state: a test records every request the page makes. Screenshots go to target/screenshots/.
// Run by scripts/test-web.sh (`node --test www/tests/`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startDemo, startBrowser, screenshot, eventually, sleep, serveStatic, liveCards, liveKeys, liveFeed, submitForm } from "./harness.mjs";

let demo, browser, page;
let killed = null; // the node the failover test kills
const alive = () => demo.urls.find((u) => u !== killed);

before(async () => {
  demo = await startDemo();
  browser = await startBrowser();
  page = await browser.page();
}, { timeout: 90_000 });

after(async () => {
  await browser?.stop();
  await demo?.stop();
}, { timeout: 30_000 });

/** What the live view shows, per card (see `liveCards` in the harness). */
const cards = () => liveCards(page);
/** Every card reachable and caught up with at least `seq`. */
const allAt = async (seq, n = 3) => {
  const c = await cards();
  return c.length === n && c.every((x) => x.reachable && x.commit >= seq && x.lag === 0) ? c : null;
};

test("live: the dashboard served by a node shows 3 nodes and exactly one master", { timeout: 60_000 }, async () => {
  await page.goto(`${demo.urls[1]}/`); // no hash: a node's page opens in live mode
  await page.waitForSelector("body[data-ready=true]");
  assert.equal(await page.evaluate(() => window.dashboard.mode), "live");
  const shown = await eventually("3 reachable nodes with one master in the UI", async () => {
    const c = await cards();
    return c.length === 3 && c.every((n) => n.reachable) && c.filter((n) => n.master).length === 1 ? c : null;
  }, 15_000);
  assert.deepEqual(shown.map((n) => n.addr).sort(), [...demo.urls].sort());
  const master = shown.find((n) => n.master);
  assert.equal(master.role, "master");
  assert.equal(master.addr, await demo.master(), "the UI's master is the cluster's");
  assert.equal(shown.filter((n) => n.role === "master").length, 1);
  await screenshot(page, "live-3-nodes");
});

test("live: a change submitted through the form shows in the feed, the keys, and on all 3 nodes", { timeout: 60_000 }, async () => {
  const value = `v${Date.now() % 100000}`;
  const seq = await submitForm(page, "color", value);
  assert.ok(seq > 0, "the result line says where it committed");
  // The feed has the entry at that seq, from the stream.
  await eventually(`entry #${seq} in the feed`, async () => (await liveFeed(page)).some((f) => f.seq === seq && f.text === `color = ${value}`), 10_000);
  await eventually("color in the keys page", async () => (await liveKeys(page)).color === value, 10_000);
  await eventually(`every card at commit ${seq} or later`, () => allAt(seq), 10_000);
  // And the nodes really hold it (the UI is not making it up).
  for (const u of demo.urls) assert.equal(await demo.get(u, "color"), value, u);
  await screenshot(page, "live-submitted");
});

test("live: no whole-state kv reads, even with 20,000 keys; the feed follows the stream", { timeout: 120_000 }, async () => {
  // A larger state, written outside the page: 20 batches of 1,000 keys.
  for (let b = 0; b < 20; b++) {
    const chg = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ op: "set", key: `bulk/${String(b * 1000 + i).padStart(5, "0")}`, value: "x".repeat(40) }));
    const r = await fetch(`${demo.urls[0]}/_clusterc/${demo.cluster}/submit`, { method: "POST", body: JSON.stringify({ chg }) });
    assert.equal((await r.json()).fail, false);
  }
  const requests = [];
  const record = (r) => requests.push({ url: new URL(r.url()), at: Date.now() });
  page.on("request", record);
  try {
    const t0 = Date.now();
    await page.goto(`${demo.urls[2]}/#live`);
    await page.waitForSelector("body[data-ready=true]");
    await eventually("3 cards", async () => (await cards()).length === 3, 15_000);
    const count = await eventually("the key count", async () => {
      const m = /^([\d,]+) keys at commit/.exec(await page.textContent("#keys-head"));
      return m ? Number(m[1].replace(/,/g, "")) : null;
    }, 10_000);
    assert.ok(count >= 20_000, `${count} keys`);
    assert.equal(Object.keys(await liveKeys(page)).length, 20, "one page of keys is shown");

    // A burst from outside: 30 more entries of 1,000 changes, then one write from the page.
    for (let b = 0; b < 30; b++) {
      const chg = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ op: "set", key: `burst/${b}/${i}`, value: "y" }));
      await fetch(`${demo.urls[0]}/_clusterc/${demo.cluster}/submit`, { method: "POST", body: JSON.stringify({ chg }) });
    }
    const t1 = performance.now();
    const seq = await submitForm(page, "after-burst", "1");
    await eventually(`entry #${seq} in the feed`, async () => (await liveFeed(page)).some((f) => f.seq === seq && f.text === "after-burst = 1"), 10_000);
    console.log(`# page write to its feed entry after a 30,000-change burst: ${Math.round(performance.now() - t1)} ms`);
    const feed = await liveFeed(page);
    assert.ok(feed.length <= 50, `the feed keeps the last 50 entries, not ${feed.length}`);
    assert.deepEqual(feed.map((f) => f.seq), [...feed.map((f) => f.seq)].sort((a, b) => b - a), "newest first, in commit order");
    await sleep(2500); // a few more seconds of the page running on its own
    const secs = (Date.now() - t0) / 1000;

    const path = (u) => u.pathname.replace(`/_clusterc/${demo.cluster}/`, "");
    const kv = requests.filter((r) => path(r.url) === "kv");
    for (const r of kv) {
      const limit = Number(r.url.searchParams.get("limit"));
      assert.ok(limit > 0 && limit <= 100, `a kv read without a small limit: ${r.url}`);
      assert.equal(r.url.searchParams.get("after"), null, `a kv read walking the pages: ${r.url}`);
    }
    assert.ok(kv.length >= 1 && kv.length <= secs + 2, `${kv.length} kv pages in ${secs.toFixed(1)} s: at most one a second`);
    const statuses = requests.filter((r) => path(r.url) === "status");
    assert.ok(statuses.length <= 3 * secs + 10, `${statuses.length} status reads in ${secs.toFixed(1)} s for 3 nodes`);
    const watches = requests.filter((r) => path(r.url) === "watch");
    assert.ok(watches.length >= 1 && watches.every((r) => r.url.searchParams.get("from")), "the page follows the stream");
    console.log(`# live mode over ${secs.toFixed(1)} s: ${kv.length} kv pages, ${statuses.length} status reads, ${watches.length} watch connections`);
    await screenshot(page, "live-large-state");
  } finally {
    page.off("request", record);
  }
});

test("worker: the wasm Client works in a module web worker", { timeout: 30_000 }, async () => {
  const out = await page.evaluate(({ base, cluster }) => new Promise((resolve) => {
    const w = new Worker("/tests/client-worker.js", { type: "module" });
    w.onmessage = (e) => { resolve(e.data); w.terminate(); };
    w.onerror = (e) => resolve({ ok: false, message: e.message });
    w.postMessage({ base, cluster, key: "from-worker", value: "w1" });
  }), { base: demo.urls[0], cluster: demo.cluster });
  assert.equal(out.ok, true, JSON.stringify(out));
  assert.equal(out.value, "w1");
  assert.equal(out.status.cluster, demo.cluster);
  for (const u of demo.urls) await eventually(`from-worker on ${u}`, async () => (await demo.get(u, "from-worker")) === "w1", 5_000);
});

test("live: the Remove button and the Add form change the membership", { timeout: 60_000 }, async () => {
  const c = await cards();
  // A follower that is not the node serving the page.
  const victim = c.find((n) => !n.master && n.addr !== demo.urls[1]).addr;
  await page.click(`.node-card[data-addr="${victim}"] footer button`);
  await page.waitForSelector("#member-result.ok", { timeout: 10_000 });
  await eventually("2 cards after the removal", async () => (await cards()).length === 2, 10_000);
  assert.equal((await demo.status(demo.urls[1])).members.length, 2);

  await page.fill("#member-form input[name=addr]", victim);
  await page.click("#member-form button[type=submit]");
  await page.waitForSelector("#member-result.ok", { timeout: 10_000 });
  const back = await eventually("3 cards again, the re-added node caught up", async () => {
    const c = await cards();
    const v = c.find((n) => n.addr === victim);
    return c.length === 3 && v?.reachable && v.role === "participant" && v.lag === 0 ? c : null;
  }, 15_000);
  assert.equal(back.filter((n) => n.master).length, 1);
  assert.equal(await demo.get(victim, "from-worker"), "w1", "the re-added node has the state");
  // The membership changes came through the stream.
  assert.ok((await liveFeed(page)).some((f) => f.text.startsWith("members:")), "members in the feed");
});

test("live: after the master process is killed, the UI shows a new master within seconds", { timeout: 60_000 }, async () => {
  const old = (await cards()).find((n) => n.master).addr;
  killed = old;
  demo.killNode(old);
  const t0 = Date.now();
  const c = await eventually("a new master in the UI", async () => {
    const c = await cards();
    const m = c.filter((n) => n.master);
    return m.length === 1 && m[0].addr !== old ? c : null;
  }, 20_000, 100);
  const took = Date.now() - t0;
  console.log(`# new master shown ${took} ms after kill -9`);
  assert.equal(c.find((n) => n.addr === old).reachable, false, "the killed node is shown unreachable");
  assert.equal(c.filter((n) => n.master).length, 1);
  const fresh = c.find((n) => n.master).addr;
  assert.equal(await demo.master(), fresh);
  await screenshot(page, "live-failover");

  // The cluster still takes writes through the form, on the two live nodes, and the feed
  // shows them (the stream moved to a live node if it was on the killed one).
  const seq = await eventually("a write after failover", () => submitForm(page, "after", "failover"), 15_000, 300);
  await eventually(`entry #${seq} in the feed`, async () => (await liveFeed(page)).some((f) => f.seq === seq && f.text === "after = failover"), 15_000);
  await eventually("the live cards at that commit", async () => {
    const c = await cards();
    return c.filter((n) => n.reachable).every((n) => n.commit >= seq);
  }, 15_000);
  for (const u of demo.urls.filter((u) => u !== old)) assert.equal(await demo.get(u, "after"), "failover", u);
});

// ---------------------------------------------------------------------------------------------
// Simulation mode
// ---------------------------------------------------------------------------------------------

const simNodes = () =>
  page.$$eval("#sim-ring .snode", (els) => els.map((e) => ({ index: Number(e.dataset.index), role: e.dataset.role, up: e.dataset.up === "true" })));

test("simulation: crashing the simulated master (by clicking it) produces a new one", { timeout: 60_000 }, async () => {
  await page.goto(`${alive()}/?play=0#sim`);
  await page.waitForSelector("body[data-ready=true]");
  await page.waitForSelector("#sim-ring .snode");
  assert.equal((await simNodes()).length, 5);
  // Fast forward: 5x speed.
  await page.fill("#sim-speed", "7");
  await page.dispatchEvent("#sim-speed", "input");
  await page.click("#sim-play");
  const before = await eventually("one simulated master", async () => {
    const n = await simNodes();
    const m = n.filter((x) => x.role === "master");
    return m.length === 1 ? m[0] : null;
  }, 10_000);
  // Messages are drawn in flight.
  await eventually("messages on the ring", async () => (await page.$$("#sim-ring .msg")).length > 0, 5_000, 20);
  await page.click(`#sim-ring .snode[data-index="${before.index}"] .body`, { force: true });
  await eventually("the clicked master crashed", async () => (await simNodes())[before.index].up === false, 3_000);
  const after = await eventually("a new simulated master", async () => {
    const n = await simNodes();
    const m = n.filter((x) => x.role === "master");
    return m.length === 1 && m[0].index !== before.index ? m[0] : null;
  }, 20_000);
  assert.notEqual(after.index, before.index);
  const st = await page.evaluate(() => window.dashboard.sim.snapshot());
  assert.deepEqual(st.violations, []);
  assert.match(await page.textContent("#sim-safety"), /Safety holds/);
  await screenshot(page, "sim-failover");
});

test("simulation: submit, partition by dragging, drop a message, rewind", { timeout: 60_000 }, async () => {
  // Slow down so a message stays on screen long enough to be clicked.
  await page.fill("#sim-speed", "2");
  await page.dispatchEvent("#sim-speed", "input");
  const up = (await simNodes()).find((n) => n.up);
  await page.selectOption("#sim-submit-node", String(up.index));
  await page.fill("#sim-submit input[name=key]", "k");
  await page.fill("#sim-submit input[name=value]", "42");
  await page.click("#sim-submit button[type=submit]");
  await eventually("k=42 on every live simulated node", async () => {
    const st = await page.evaluate(() => window.dashboard.sim.snapshot());
    return st.nodes.filter((n) => n.up).every((n) => n.state.k === "42");
  }, 20_000);

  // Drag a line across the ring: two groups.
  const box = await (await page.$("#sim-ring")).boundingBox();
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.55);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.55, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.55, { steps: 5 });
  await page.mouse.up();
  const hist = await page.evaluate(() => window.dashboard.sim.simulation.history());
  const cut = hist.filter((h) => h.action === "partition").at(-1);
  assert.ok(cut && cut.groups.length === 2 && cut.groups.every((g) => g.length > 0), JSON.stringify(hist));
  await eventually("cut links drawn", async () => (await page.$$("#sim-ring .link.cut")).length > 0, 3_000, 20);
  await screenshot(page, "sim-partition");
  await page.click("#sim-heal");

  // Click a message in flight: it is dropped.
  const dropped = await eventually("a message dropped by clicking it", async () => {
    const m = await page.$("#sim-ring .msg");
    if (!m) return null;
    const id = Number(await m.getAttribute("data-id"));
    await m.dispatchEvent("pointerdown");
    const h = await page.evaluate(() => window.dashboard.sim.simulation.history());
    return h.some((x) => x.action === "drop" && x.message === id) ? id : null;
  }, 10_000, 50);
  assert.ok(dropped > 0);

  // Rewind to the start of the timeline: the replayed cluster has no k yet.
  await page.click("#sim-play"); // pause
  const min = Number(await page.getAttribute("#sim-timeline", "min"));
  await page.fill("#sim-timeline", String(min));
  await page.dispatchEvent("#sim-timeline", "input");
  const st = await page.evaluate(() => window.dashboard.sim.snapshot());
  assert.equal(st.steps, min);
  assert.ok(st.horizon > min);
  assert.ok(st.nodes.every((n) => n.up && !("k" in n.state)), "back before the crash and the submit");
  await screenshot(page, "sim-rewound");
});

test("static host: plain files open the simulation, and ?node= shows a cluster on another origin", { timeout: 60_000 }, async () => {
  const host = await serveStatic();
  try {
    await page.goto(`${host.url}/`);
    await page.waitForSelector("body[data-ready=true]");
    assert.equal(await page.evaluate(() => window.dashboard.mode), "sim", "no cluster here: simulation");
    await page.waitForSelector("#sim-ring .snode");
    // The nodes answer CORS, so the same files can watch the demo from this other origin.
    await page.goto(`${host.url}/?node=${encodeURIComponent(alive())}&cluster=${demo.cluster}#live`);
    const c = await eventually("the demo's cards", async () => {
      const c = await cards();
      return c.length === 3 && c.filter((n) => n.master).length === 1 ? c : null;
    }, 15_000);
    assert.deepEqual(c.map((n) => n.addr).sort(), [...demo.urls].sort());
  } finally {
    await host.stop();
  }
});

test("screenshots of both modes for a person to look at (docs/dashboard.png comes from here)", { timeout: 60_000 }, async () => {
  await page.setViewportSize({ width: 1280, height: 888 });
  await page.goto(`${alive()}/?play=0#sim`);
  await page.waitForSelector("#sim-ring .snode");
  await page.fill("#sim-speed", "5"); // 1x
  await page.dispatchEvent("#sim-speed", "input");
  await page.click("#sim-play");
  await sleep(300);
  const m = await eventually("a master", async () => (await simNodes()).find((n) => n.role === "master"), 5_000);
  await page.click(`#sim-ring .snode[data-index="${m.index}"] .body`, { force: true });
  await page.selectOption("#sim-submit-node", String((m.index + 1) % 5));
  await page.click("#sim-submit button[type=submit]");
  await eventually("a new master", async () => (await simNodes()).some((n) => n.role === "master" && n.index !== m.index), 20_000);
  await page.click("#sim-submit button[type=submit]");
  await page.fill("#sim-speed", "2"); // 0.1x: messages caught in flight
  await page.dispatchEvent("#sim-speed", "input");
  await eventually("several messages in flight", async () => (await page.$$("#sim-ring .msg")).length >= 4, 10_000, 10);
  await page.click("#sim-play"); // pause
  await page.evaluate(() => window.scrollTo(0, 0));
  await screenshot(page, "dashboard-sim");

  await page.goto(`${alive()}/#live`);
  await eventually("live cards", async () => (await cards()).length === 3, 10_000);
  await sleep(800);
  await screenshot(page, "dashboard-live");
});
