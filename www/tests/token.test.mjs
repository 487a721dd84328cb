// The dashboard against token-protected clusters (`clusterconsensus demo --token-file`): without
// the token a write through the form is refused with a hint, and nothing changes on the nodes;
// with the token typed into the Token field it commits, also through a client made after the node
// URL changed; with --auth-reads the status polling, the keys page and the change stream need
// the token. Screenshots go to
// target/screenshots/. Run by scripts/test-web.sh (`node --test www/tests/`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startDemo, startBrowser, screenshot, eventually, liveCards, liveKeys, liveFeed } from "./harness.mjs";

const TOKEN_KEY = "clusterconsensus.token"; // the dashboard's sessionStorage key

let browser, page;

before(async () => {
  browser = await startBrowser();
  // Refused calls make the browser log "status of 401" on purpose.
  page = await browser.page({ expected: /ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED_ENCODING|status of 401/ });
}, { timeout: 60_000 });

after(async () => {
  await browser?.stop();
}, { timeout: 30_000 });

/** What the live view shows, per card (see `liveCards` in the harness). */
const cards = () => liveCards(page);

const threeWithMaster = async () => {
  const c = await cards();
  return c.length === 3 && c.every((n) => n.reachable) && c.filter((n) => n.master).length === 1 ? c : null;
};

async function submit(key, value) {
  await page.fill("#submit-form input[name=key]", key);
  await page.fill("#submit-form input[name=value]", value);
  await page.click("#submit-form button[type=submit]");
  // The result line leaves its "…" state once the call is answered.
  await page.waitForSelector("#submit-result.ok, #submit-result.err", { timeout: 10_000 });
  return { ok: await page.$eval("#submit-result", (e) => e.classList.contains("ok")), text: await page.textContent("#submit-result") };
}

test("token: a write without the token shows the hint and changes nothing; with it, it commits", { timeout: 120_000 }, async () => {
  const token = `tok-${randomBytes(12).toString("hex")}`;
  const demo = await startDemo({ token });
  try {
    assert.match(demo.output(), /Token field/, "the demo's banner tells about the dashboard's token");
    await page.goto(`${demo.urls[1]}/`);
    await page.waitForSelector("body[data-ready=true]");
    assert.equal(await page.evaluate(() => window.dashboard.mode), "live");
    // Status stays open without --auth-reads: the cluster is shown before any token.
    await eventually("3 reachable nodes with one master", threeWithMaster, 15_000);
    assert.equal(await page.getAttribute("#token", "type"), "password");
    assert.equal(await page.inputValue("#token"), "");

    // No token: refused, with the hint instead of a bare error, and no node has the key.
    const refused = await submit("guarded", "nope");
    assert.equal(refused.ok, false, refused.text);
    assert.match(refused.text, /needs a token/);
    assert.match(refused.text, /Token field/);
    assert.ok(await page.$("#token-box.wanted"), "the Token field is marked");
    await screenshot(page, "live-token-needed");
    for (const u of demo.urls) assert.equal(await demo.get(u, "guarded"), null, `${u} after the refused submit`);

    // A wrong token: refused too, and said so.
    await page.fill("#token", "not-the-right-token-at-all");
    const wrong = await submit("guarded", "still-nope");
    assert.equal(wrong.ok, false, wrong.text);
    assert.match(wrong.text, /refused this token/);
    for (const u of demo.urls) assert.equal(await demo.get(u, "guarded"), null, `${u} after the wrong token`);

    // The right token: committed, held by every node, shown on every card.
    await page.fill("#token", token);
    assert.equal(await page.$("#token-box.wanted"), null, "typing a token clears the mark");
    const value = `v${Date.now() % 100000}`;
    const done = await submit("guarded", value);
    assert.equal(done.ok, true, done.text);
    for (const u of demo.urls) await eventually(`guarded on ${u}`, async () => (await demo.get(u, "guarded")) === value, 5_000);
    await eventually("guarded in the feed and the keys", async () =>
      (await liveFeed(page)).some((f) => f.text === `guarded = ${value}`) && (await liveKeys(page)).guarded === value, 10_000);
    // In this tab's sessionStorage only: never localStorage, never the URL.
    const stored = await page.evaluate((k) => ({ session: sessionStorage.getItem(k), local: localStorage.length, url: location.href }), TOKEN_KEY);
    assert.equal(stored.session, token);
    assert.equal(stored.local, 0);
    assert.ok(!stored.url.includes(token));
    await screenshot(page, "live-token");

    // Another entry node (?node=, as the connect form does): the token comes back from
    // sessionStorage and goes to the new page's clients.
    await page.goto(`${demo.urls[1]}/?node=${encodeURIComponent(demo.urls[2])}&cluster=${demo.cluster}#live`);
    await page.waitForSelector("body[data-ready=true]");
    assert.equal(await page.inputValue("#token"), token);
    await eventually("3 nodes via the new entry", threeWithMaster, 15_000);
    const again = await submit("guarded", `${value}-2`);
    assert.equal(again.ok, true, again.text);
    for (const u of demo.urls) await eventually(`guarded (2) on ${u}`, async () => (await demo.get(u, "guarded")) === `${value}-2`, 5_000);
  } finally {
    await demo.stop();
  }
});

test("token: with --auth-reads the dashboard says the status needs the token, then shows the cluster", { timeout: 120_000 }, async () => {
  const token = `tok-${randomBytes(12).toString("hex")}`;
  const demo = await startDemo({ token, authReads: true });
  try {
    // Reads are closed to anyone without the token.
    await assert.rejects(demo.get(demo.urls[0], "x", { token: null }), /HTTP 401/);
    // A new origin (other ports): its sessionStorage holds no token.
    await page.goto(`${demo.urls[0]}/`);
    await page.waitForSelector("body[data-ready=true]");
    assert.equal(await page.evaluate(() => window.dashboard.mode), "live", "a refused status still means a cluster is here");
    assert.equal(await page.inputValue("#token"), "");
    await page.waitForSelector("#live-auth:not([hidden])", { timeout: 10_000 });
    assert.match(await page.textContent("#live-auth"), /needs a token.*Token field/);
    assert.equal((await cards())[0]?.role, "denied");
    await screenshot(page, "live-token-reads");

    await page.fill("#token", token);
    await eventually("3 reachable nodes once the token is set", threeWithMaster, 15_000);
    await page.waitForSelector("#live-auth[hidden]", { state: "attached", timeout: 5_000 });
    const done = await submit("read-guarded", "yes");
    assert.equal(done.ok, true, done.text);
    for (const u of demo.urls) await eventually(`read-guarded on ${u}`, async () => (await demo.get(u, "read-guarded")) === "yes", 5_000);
    // The stream and the keys page need the token too (a watch is a read): both show it.
    await eventually("read-guarded in the feed and the keys", async () =>
      (await liveFeed(page)).some((f) => f.text === "read-guarded = yes") && (await liveKeys(page))["read-guarded"] === "yes", 10_000);
  } finally {
    await demo.stop();
  }
});
