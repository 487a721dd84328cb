// Shared by the browser and edge tests: free ports, a `clusterconsensus demo` cluster, a static
// server for www/, workerd, and Debian's chromium through playwright-core. Everything started
// here is killed by `stop()` (and, as a last resort, when this process exits).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync, existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname } from "node:path";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOTS = join(ROOT, "target", "screenshots");
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
export const BINARY = process.env.CLUSTERCONSENSUS_BIN ?? join(TARGET, "debug", "clusterconsensus");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

const started = new Set(); // process groups to kill on exit
const temps = new Set(); // directories to remove on exit
function killStarted() {
  for (const pid of started) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
}
const tempDir = (prefix) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.add(dir);
  return dir;
};
process.on("exit", killStarted);
// `timeout` (scripts/test-web.sh) ends a run with SIGTERM, which skips "exit" handlers: the
// servers we started are in their own process groups, so kill them here.
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, () => {
    killStarted();
    process.exit(128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[sig]);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An error that `eventually` does not retry. */
export const fatal = (message) => Object.assign(new Error(message), { fatal: true });

/** Polls `f` until it returns a truthy value (returned) or `ms` pass (throws with `what`).
 * An error thrown by `f` is retried, unless it is `fatal()`. */
export async function eventually(what, f, ms = 10_000, every = 100) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e; // no point waiting: e.g. the process we wait for has exited
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(every);
  }
}

function portFree(port) {
  return new Promise((res) => {
    const srv = createServer();
    srv.once("error", () => res(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
  });
}

/** A base port with `count` consecutive free ports after it (random start, so parallel runs
 * rarely collide). */
export async function freePorts(count) {
  for (let tries = 0; tries < 200; tries++) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
  throw new Error("no free ports");
}

/** Spawns `cmd` in its own process group, so that `kill()` also reaches its children. */
export function run(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "pipe", "pipe"], ...opts });
  started.add(child.pid);
  let out = "";
  const onData = (d) => {
    out += d;
    if (process.env.WEB_TEST_VERBOSE) process.stderr.write(d);
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
  return {
    child,
    exited,
    output: () => out,
    /** SIGTERM to the group, then SIGKILL after `grace` ms. */
    async kill(grace = 3000) {
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, "SIGTERM");
        } catch {}
        await Promise.race([exited, sleep(grace)]);
      }
      try {
        process.kill(-child.pid, "SIGKILL"); // whatever of the group is left
      } catch {}
      started.delete(child.pid);
    },
  };
}

/** `clusterconsensus demo` on free ports. Resolves once it says the cluster is up. With `token`
 * the nodes run with `--token-file` (and `authReads`: `--auth-reads`); `status` and `get` then
 * send the token, unless called with `{ token: null }`. */
export async function startDemo({ cluster = "cluster1", token = null, authReads = false } = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build --workspace --bins first`);
  const base = await freePorts(3);
  const data = tempDir("cc-web-demo-");
  const args = ["demo", "--base-port", String(base), "--cluster", cluster, "--data-dir", data, "--www", join(ROOT, "www")];
  if (token) {
    // Beside the nodes' directories (node1/ ...), so it goes when the data does.
    const file = join(data, "token");
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    args.push("--token-file", file);
    if (authReads) args.push("--auth-reads");
  }
  const headers = (t) => (t ? { authorization: `Bearer ${t}` } : {});
  const proc = run(BINARY, args);
  await eventually("the demo cluster to come up", () => {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw fatal(`${BINARY} demo exited with ${proc.child.exitCode}:\n${proc.output()}`);
    return /is up/.test(proc.output());
  }, 40_000, 100);
  const urls = [0, 1, 2].map((i) => `http://127.0.0.1:${base + i}`);
  // "node1: http://127.0.0.1:9001   (pid 1234, ..."
  const pids = {};
  for (const m of proc.output().matchAll(/(http:\/\/127\.0\.0\.1:\d+)\s+\(pid (\d+)/g)) pids[m[1]] = Number(m[2]);
  return {
    cluster,
    urls,
    pids,
    output: proc.output,
    async status(url, opts = { token }) {
      const r = await fetch(`${url}/_clusterc/${cluster}/status`, { headers: headers(opts.token), signal: AbortSignal.timeout(1500) });
      return r.json();
    },
    /** The node's value of `key`, `null` if it has none; throws on any other answer (a 401). */
    async get(url, key, opts = { token }) {
      const r = await fetch(`${url}/_clusterc/${cluster}/kv/${encodeURIComponent(key)}`, { headers: headers(opts.token), signal: AbortSignal.timeout(1500) });
      if (r.status === 404) return null;
      if (r.status !== 200) throw new Error(`GET kv/${key} on ${url}: HTTP ${r.status} ${await r.text()}`);
      return (await r.json()).value;
    },
    /** The address of the node that serves as master, as the nodes report it. */
    async master() {
      for (const u of urls) {
        try {
          const st = await this.status(u);
          if (st.role === "master" && st.serving) return u;
        } catch {}
      }
      return null;
    },
    /** kill -9 of one node's process. */
    killNode(url) {
      process.kill(pids[url], "SIGKILL");
    },
    async stop() {
      await proc.kill();
      for (const pid of Object.values(pids)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** Headless Debian chromium with a fresh profile. */
export async function startBrowser() {
  const { chromium } = await import("playwright-core");
  const profile = tempDir("cc-web-chromium-");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    timeout: 30_000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(15_000);
  return {
    context,
    /** A new tab. `expected`: console errors caused on purpose (e.g. /401/), not printed. */
    async page({ expected = /ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED_ENCODING/ } = {}) {
      const page = await context.newPage();
      page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
      // A killed node makes fetches fail on purpose, and cuts the change stream it was sending
      // (an unfinished chunked body); anything else is worth seeing.
      page.on("console", (m) => m.type() === "error" && !expected.test(m.text()) && console.error(`console: ${m.text()}`));
      return page;
    },
    async stop() {
      await Promise.race([context.close(), sleep(5000)]);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** What the dashboard's live view shows: per node card, its address, role, reachability,
 *  whether it is the master, its commit and how far it is behind (lag). */
export const liveCards = (page) =>
  page.$$eval(".node-card", (els) =>
    els.map((e) => ({
      addr: e.dataset.addr,
      role: e.dataset.role,
      reachable: e.dataset.reachable === "true",
      master: e.classList.contains("is-master"),
      commit: e.dataset.commit === "" ? null : Number(e.dataset.commit),
      lag: e.dataset.lag === "" ? null : Number(e.dataset.lag),
    })));

/** The live view's page of keys: `{key: value}` as shown in the Keys panel. */
export const liveKeys = (page) =>
  page.$$eval("#keys li[data-key]", (els) => Object.fromEntries(els.map((li) => [li.dataset.key, li.querySelector(".v").textContent])));

/** The live view's feed: `{seq, text}` per entry shown, newest first. */
export const liveFeed = (page) =>
  page.$$eval("#feed li[data-seq]", (els) => els.map((li) => ({ seq: Number(li.dataset.seq), text: li.querySelector(".what").textContent })));

/** Submits `key = value` through the live view's form; the seq it committed at (throws with
 * the result line if it did not commit). */
export async function submitForm(page, key, value) {
  await page.fill("#submit-form input[name=key]", key);
  await page.fill("#submit-form input[name=value]", value);
  await page.click("#submit-form button[type=submit]");
  await page.waitForSelector("#submit-result.ok, #submit-result.err", { timeout: 10_000 });
  const text = await page.textContent("#submit-result");
  if (!(await page.$("#submit-result.ok"))) throw new Error(`not committed: ${text}`);
  return Number(await page.getAttribute("#submit-result", "data-seq"));
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** A plain static file server for www/ on a free port (the "any static host" case). */
export async function serveStatic() {
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm", ".png": "image/png" };
  const www = join(ROOT, "www");
  const srv = createHttpServer(async (req, res) => {
    let file = join(www, decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (!file.startsWith(www)) return res.writeHead(403).end();
    try {
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const body = await readFile(file);
      res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  const port = await freePorts(1);
  await new Promise((r) => srv.listen(port, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${port}`, stop: () => new Promise((r) => srv.close(r)) };
}
