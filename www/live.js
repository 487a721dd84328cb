// Live mode: a running cluster, followed through its change stream.
//
// The entry node is ?node=URL, else the origin that served this page; the cluster id is
// ?cluster=ID, else the first of a few usual ids that the entry node answers for. What it reads:
//
// - the change stream (`GET watch`, the wasm Client's `watch`, which moves to another member
//   when its node fails): the feed of recent commits, the commit index, and the commits per
//   second of the chart;
// - every member's status, at most once a second: role, instance, commit and lag per card;
//   members are taken from the statuses (the master's list wins), so added and removed members
//   appear and disappear by themselves;
// - one page of keys (`GET kv?limit=20`, with a prefix and a cursor the user can change) and
//   the key count that comes with it, at most once a second and only after new commits. Never
//   the whole state: the page stays cheap on a cluster with millions of keys.
//
// Events may arrive far faster than a page can draw (thousands of entries a second): they are
// counted and kept (the last FEED_MAX) as they come, and drawn at most every DRAW_MS.
//
// Nodes started with --token-file refuse writes without `Authorization: Bearer <token>` (with
// --auth-reads, status, reads and the watch too): the Token field's value goes to every Client
// through setToken. It is kept in sessionStorage, so it survives a reload and a change of node
// (both reload the page) but not the tab; never in the URL, where it would end up in history
// and logs.

const STATUS_MS = 1000;
const PAGE_MS = 1000;
const DRAW_MS = 250;
const CALL_MS = 1500;
const FEED_MAX = 50;
const PAGE_LIMIT = 20;
const CHART_SECS = 60;
const CLUSTER_GUESSES = ["cluster1", "demo", "default"];
const TOKEN_KEY = "clusterconsensus.token";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) if (kid != null) e.append(kid);
  return e;
};
const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
};
const hostOf = (addr) => addr.replace(/^https?:\/\//, "");
const clock = () => new Date().toLocaleTimeString([], { hour12: false });
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
/** A refusal for lack of the right token: 401 with ERR_DENIED (or a bare 401 from a proxy). */
const isDenied = (e) => e?.code === "ERR_DENIED" || /\bHTTP 401\b/.test(e?.message ?? "");

// sessionStorage can throw (storage disabled, some file:// pages): then the token lasts as long
// as the page.
function loadToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}
function saveToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {}
}

/** How a change reads in the feed: `k = v`, `del k`, `cas k: a → b`. */
function describe(change) {
  let c;
  try {
    c = JSON.parse(change);
  } catch {
    return change;
  }
  if (c?.op === "set") return `${c.key} = ${c.value}`;
  if (c?.op === "del") return `del ${c.key}`;
  if (c?.op === "cas") {
    const from = c.expect === null ? "absent" : c.expect;
    return `cas ${c.key}: ${from} → ${c.del ? "deleted" : c.value}`;
  }
  return change;
}

export function createLive({ Client, conn }) {
  const params = new URLSearchParams(location.search);
  const s = {
    entry: null,          // base URL of the node we started from
    cluster: null,
    nodes: new Map(),     // addr -> { client, status, ok, error, denied, since }
    timer: null,
    running: false,
    token: loadToken(),   // "" = none
    actDenied: false,     // the last submit / membership call was refused for the token
    fresh: new Map(),     // key -> time it was last submitted here (highlighted)
    // The stream.
    watch: null,          // the Client's watch handle
    watchFrom: null,      // where the current watch started
    watchNote: "",        // what the stream is doing, for the feed's header
    watchDenied: false,
    commit: 0,            // the highest commit the stream or a status told
    feed: [],             // newest first: { seq, kind, chg | members, when }
    before: null,         // { commit } when the page opened: what the feed does not show
    // Commits per second (by the second they arrived) and this page's write latencies.
    rate: new Map(),      // second -> { entries, changes }
    latencies: [],        // { t: seconds, ms }
    // The keys panel: one page.
    page: null,           // { commit, items, next, count }
    pageQuery: { prefix: "", after: null, trail: [] },
    pageDirty: true,
    pageAt: 0,
    pageError: null,
    drawTimer: null,
  };

  const client = (addr, cluster = s.cluster) => {
    const c = new Client(addr, cluster);
    c.timeoutMs = CALL_MS;
    c.setToken(s.token || null);
    return c;
  };

  /** What to tell the user when a node refused a call for the token. */
  const tokenHint = () => s.token
    ? "the nodes refused this token (401 ERR_DENIED): check the Token field, it must be the first line of their --token-file"
    : "this cluster needs a token (401 ERR_DENIED): enter it in the Token field (nodes started with --token-file)";

  /** Finds a node and a cluster id that answers; true if live mode can run. */
  async function discover() {
    if (s.cluster) return true;
    const entry = params.get("node") ?? (location.protocol.startsWith("http") ? location.origin : null);
    if (!entry) return false;
    const guesses = params.get("cluster") ? [params.get("cluster")] : CLUSTER_GUESSES;
    for (const id of guesses) {
      try {
        const st = await client(entry, id).status();
        s.entry = entry.replace(/\/+$/, "");
        s.cluster = id;
        track(s.entry, st);
        return true;
      } catch (e) {
        // A node checks the cluster id before the token, so a refusal means the cluster is
        // there but its status needs the token (--auth-reads): show it, with the hint.
        if (isDenied(e)) {
          s.entry = entry.replace(/\/+$/, "");
          s.cluster = id;
          track(s.entry, null);
          Object.assign(s.nodes.get(s.entry), { error: e.code ?? "ERR_DENIED", denied: true });
          return true;
        }
        // else: not this id, or no node there
      }
    }
    return false;
  }

  function track(addr, status) {
    if (!s.nodes.has(addr)) {
      s.nodes.set(addr, { client: client(addr), status: null, ok: false, error: null, denied: false, since: 0 });
    }
    if (status) Object.assign(s.nodes.get(addr), { status, ok: true });
  }

  async function refresh(n) {
    try {
      const status = await n.client.status();
      Object.assign(n, { status, ok: true, error: null, denied: false, since: Date.now() });
      s.commit = Math.max(s.commit, status.commit ?? 0);
    } catch (e) {
      Object.assign(n, { ok: false, error: e.code ?? String(e), denied: isDenied(e) });
    }
  }

  /** The node whose view of the cluster counts: the reachable master of the highest instance. */
  function leader() {
    let best = null;
    for (const [addr, n] of s.nodes) {
      if (!n.ok || n.status?.role !== "master") continue;
      if (!best || n.status.instance > best[1].status.instance) best = [addr, n];
    }
    return best;
  }

  /** Every member's status, once a second (and the stream, once a status says where it is). */
  async function poll() {
    if (!s.running) return;
    const t0 = performance.now();
    await Promise.all([...s.nodes.values()].map(refresh));
    // Membership: the master's list if there is one, else the union of what the nodes say.
    const lead = leader();
    const lists = lead ? [lead[1].status.members] : [...s.nodes.values()].filter((n) => n.ok).map((n) => n.status.members ?? []);
    const members = new Set(lists.flat());
    if (members.size) {
      for (const addr of members) track(addr.replace(/\/+$/, ""), null);
      for (const addr of [...s.nodes.keys()]) if (!members.has(addr) && lead) s.nodes.delete(addr);
    }
    if (!s.watch && !s.watchDenied) startWatch();
    if (s.pageDirty && Date.now() - s.pageAt >= PAGE_MS) loadPage();
    draw();
    if (s.running) s.timer = setTimeout(poll, Math.max(50, STATUS_MS - (performance.now() - t0)));
  }

  // ---------------------------------------------------------------------------------------------
  // The stream
  // ---------------------------------------------------------------------------------------------

  /** Follows the commits from after the entry node's commit (or from where the last watch
   * stopped). The Client moves to another member when its node fails. */
  function startWatch() {
    const n = s.nodes.get(s.entry) ?? [...s.nodes.values()].find((x) => x.ok);
    if (!n?.ok) return; // no status yet: the next poll tries again
    const from = s.watchFrom ?? (n.status.commit ?? 0) + 1;
    if (!s.before) s.before = { commit: from - 1 };
    s.watchFrom = from;
    s.watchNote = "connecting…";
    const w = n.client.watch(from, onEvent, { idleTimeoutMs: 4000 });
    s.watch = w;
    w.done.then(
      () => {},
      (e) => {
        if (s.watch !== w) return;
        s.watch = null;
        s.watchFrom = (w.lastSeq ?? from - 1) + 1;
        if (isDenied(e)) {
          s.watchDenied = true;
          s.watchNote = "the stream needs the token";
        } else if (e.code === "ERR_GAP") {
          // The nodes no longer hold what comes next: start again from what they have (the
          // keys page reloads, so what the feed missed shows there).
          s.watchFrom = null;
          s.before = null;
          s.pageDirty = true;
          note(`stream: entries before #${e.oldest ?? "?"} are gone from the nodes; resuming from now`);
        } else {
          s.watchNote = `stream stopped (${e.code ?? e}); retrying`;
        }
        draw();
      },
    );
  }

  function stopWatch() {
    const w = s.watch;
    s.watch = null;
    if (w) {
      s.watchFrom = (w.lastSeq ?? s.watchFrom - 1) + 1;
      w.close();
    }
  }

  function note(what) {
    s.feed.unshift({ seq: null, kind: "note", what, when: clock() });
    s.feed.length = Math.min(s.feed.length, FEED_MAX);
  }

  function onEvent(ev) {
    s.watchNote = "";
    if (ev.type === "progress") {
      s.commit = Math.max(s.commit, ev.commit);
      schedule();
      return;
    }
    s.commit = Math.max(s.commit, ev.seq);
    const sec = Math.floor(Date.now() / 1000);
    const r = s.rate.get(sec) ?? { entries: 0, changes: 0 };
    r.entries += 1;
    if (ev.type === "entry") {
      r.changes += ev.chg.length;
      s.feed.unshift({ seq: ev.seq, kind: "entry", chg: ev.chg, when: clock() });
      if (ev.chg.length) s.pageDirty = true;
    } else if (ev.type === "members") {
      s.feed.unshift({ seq: ev.seq, kind: "members", members: ev.members, learners: ev.learners ?? [], when: clock() });
    }
    s.rate.set(sec, r);
    s.feed.length = Math.min(s.feed.length, FEED_MAX);
    schedule();
  }

  /** Draws soon, at most once per DRAW_MS whatever the rate of events. */
  function schedule() {
    if (s.drawTimer) return;
    s.drawTimer = setTimeout(() => {
      s.drawTimer = null;
      draw();
    }, DRAW_MS);
  }

  // ---------------------------------------------------------------------------------------------
  // The keys page
  // ---------------------------------------------------------------------------------------------

  /** One page of keys from the master (or the entry node): `kv?limit=20[&prefix][&after]`. */
  async function loadPage() {
    s.pageDirty = false;
    s.pageAt = Date.now();
    const lead = leader();
    const base = lead?.[0] ?? s.entry;
    const q = new URLSearchParams({ limit: String(PAGE_LIMIT) });
    if (s.pageQuery.prefix) q.set("prefix", s.pageQuery.prefix);
    if (s.pageQuery.after !== null) q.set("after", s.pageQuery.after);
    const headers = s.token ? { authorization: `Bearer ${s.token}` } : {};
    try {
      const r = await fetch(`${base}/_clusterc/${encodeURIComponent(s.cluster)}/kv?${q}`, { headers, signal: AbortSignal.timeout(CALL_MS) });
      if (!r.ok) throw Object.assign(new Error(`HTTP ${r.status}`), { code: (await r.json().catch(() => ({}))).code });
      s.page = await r.json();
      s.pageError = null;
    } catch (e) {
      s.pageError = isDenied(e) ? "needs the token" : `${e.code ?? "error"} ${e.message ?? e}`;
      s.pageDirty = true; // try again at the next poll
    }
    draw();
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------------------------------

  function draw() {
    const lead = leader();
    const box = $("live-nodes");
    const addrs = [...s.nodes.keys()].sort();
    const top = Math.max(s.commit, ...addrs.map((a) => s.nodes.get(a).status?.commit ?? 0));
    box.replaceChildren(...addrs.map((addr, i) => card(addr, s.nodes.get(addr), i, lead?.[0] === addr, top)));
    const up = addrs.filter((a) => s.nodes.get(a).ok).length;
    const denied = addrs.some((a) => s.nodes.get(a).denied) || s.watchDenied;
    conn.replaceChildren(
      el("span", { class: `pulse${up ? "" : " bad"}` }),
      el("span", { text: `${s.cluster} via ${hostOf(s.entry)} · ${up}/${addrs.length} nodes up · ${lead ? "master " + hostOf(lead[0]) : "no master"}${denied ? " · token needed" : ""}` }),
    );
    // Status polling refused (--auth-reads): the same hint as a refused write, above the cards.
    const banner = $("live-auth");
    banner.hidden = !denied;
    if (denied) banner.textContent = `Status refused: ${tokenHint()}.`;
    $("token-box").classList.toggle("wanted", denied || s.actDenied);
    drawFeed();
    drawPage();
    drawChart();
  }

  function drawFeed() {
    const w = s.watch;
    const where = w ? ` · stream from ${hostOf(w.node)}${w.reconnects ? `, ${plural(w.reconnects, "reconnect")}` : ""}` : "";
    $("commit-head").textContent = `commit ${s.commit}${where}${s.watchNote ? ` · ${s.watchNote}` : ""}`;
    const items = s.feed.map((f) => {
      if (f.kind === "note") return el("li", { class: "note" }, el("span", { class: "seq", text: "·" }), el("span", { class: "what", text: f.what }), el("span", { class: "when", text: f.when }));
      let what;
      if (f.kind === "members") {
        what = `members: ${f.members.map(hostOf).join(", ")}${f.learners.length ? ` · learners: ${f.learners.map(hostOf).join(", ")}` : ""}`;
      } else if (!f.chg.length) {
        what = "(no changes: a new master's first entry)";
      } else {
        const shown = f.chg.slice(0, 3).map(describe);
        what = shown.join(", ") + (f.chg.length > 3 ? ` … and ${f.chg.length - 3} more` : "");
      }
      return el("li", { "data-seq": f.seq }, el("span", { class: "seq", text: `#${f.seq}` }), el("span", { class: "what", text: what, title: what }), el("span", { class: "when", text: f.when }));
    });
    if (s.before?.commit > 0) {
      items.push(el("li", { class: "muted" }, el("span", { class: "seq", text: s.before.commit > 1 ? `#1–${s.before.commit}` : "#1" }), el("span", { class: "what", text: "committed before this page opened" })));
    }
    if (!items.length) items.push(el("li", { class: "muted", text: "waiting for the first commit…" }));
    $("feed").replaceChildren(...items);
  }

  function drawPage() {
    const p = s.page;
    const head = $("keys-head");
    head.textContent = p ? `${plural(p.count, "key")} at commit ${p.commit}` : s.pageError ?? "";
    const list = $("keys");
    if (!p) {
      list.replaceChildren(el("li", { class: "muted", text: s.pageError ? `not readable: ${s.pageError}` : "reading…" }));
      return;
    }
    list.replaceChildren(...(p.items.length
      ? p.items.map(([k, v]) => el("li", { class: s.fresh.has(k) ? "fresh" : "", "data-key": k }, el("span", { class: "k", text: k }), el("span", { class: "v", text: v, title: v })))
      : [el("li", { class: "muted", text: s.pageQuery.prefix ? "no key with this prefix" : "no keys yet" })]));
    $("keys-prev").disabled = !s.pageQuery.trail.length;
    $("keys-next").disabled = !p.next;
  }

  /** Commits per second over the last minute (bars, from the stream) and the latency of this
   * page's writes (dots, right axis). */
  function drawChart() {
    const chart = $("chart");
    const W = 600, H = 120, padL = 34, padR = 40, padB = 16, padT = 8;
    const now = Math.floor(Date.now() / 1000);
    for (const sec of s.rate.keys()) if (sec < now - CHART_SECS) s.rate.delete(sec);
    s.latencies = s.latencies.filter((l) => l.t >= now - CHART_SECS);
    const secs = Array.from({ length: CHART_SECS }, (_, i) => now - CHART_SECS + 1 + i);
    const counts = secs.map((sec) => s.rate.get(sec)?.entries ?? 0);
    const maxRate = Math.max(1, ...counts);
    const maxMs = Math.max(10, ...s.latencies.map((l) => l.ms));
    const bw = (W - padL - padR) / CHART_SECS;
    const y = (v, max) => padT + (H - padT - padB) * (1 - v / max);
    const kids = [
      svg("line", { class: "axis", x1: padL, y1: H - padB, x2: W - padR, y2: H - padB }),
      text(padL - 4, y(maxRate, maxRate) + 4, `${maxRate}/s`, "end"),
      text(padL - 4, H - padB, "0", "end"),
      text(W - padR + 4, y(maxMs, maxMs) + 4, `${Math.round(maxMs)} ms`, "start", "lat"),
      text(W - padR, H - 3, "now", "end"),
      text(padL, H - 3, `-${CHART_SECS} s`, "start"),
    ];
    counts.forEach((c, i) => {
      if (!c) return;
      const top = y(c, maxRate);
      kids.push(svg("rect", { class: "bar", x: padL + i * bw + 0.5, y: top, width: Math.max(1, bw - 1), height: H - padB - top }));
    });
    for (const l of s.latencies) {
      const x = padL + (l.t - (now - CHART_SECS + 1)) * bw + bw / 2;
      kids.push(svg("circle", { class: "lat", cx: x, cy: y(l.ms, maxMs), r: 3 }));
    }
    chart.replaceChildren(...kids);
    const last = s.rate.get(now - 1);
    const lat = s.latencies.at(-1);
    $("chart-head").textContent = `${last?.entries ?? 0} commits/s (${last?.changes ?? 0} changes/s) · your last write ${lat ? `${Math.round(lat.ms)} ms` : "–"}`;
  }

  function text(x, yy, t, anchor, cls = "") {
    const e = svg("text", { x, y: yy, "text-anchor": anchor, class: `tick ${cls}` });
    e.textContent = t;
    return e;
  }

  function card(addr, n, i, isMaster, top) {
    const st = n.status;
    const role = !n.ok ? (n.denied ? "denied" : "unreachable") : isMaster ? "master" : st.role === "master" ? "deposed" : st.role;
    const badgeClass = !n.ok ? "down" : isMaster ? "master" : st.role === "candidate" ? "candidate" : "";
    const staged = st?.staged;
    const stagedText = staged
      ? (staged.chg ? plural(staged.chg.length, "change") : staged.add ? `add ${hostOf(staged.add.addr)}` : `remove ${hostOf(staged.rm.addr)}`)
      : null;
    const lag = n.ok && st ? Math.max(0, top - (st.commit ?? 0)) : null;
    const version = leader()?.[1].status.version;
    return el("article", {
      class: `node-card${isMaster ? " is-master" : ""}${n.ok ? "" : " unreachable"}`,
      "data-addr": addr, "data-role": role, "data-reachable": String(n.ok),
      "data-commit": st?.commit ?? "", "data-lag": lag ?? "",
    },
      el("header", {},
        el("span", { class: "dot" }),
        el("span", { class: "name", text: `node ${i + 1}` }),
        el("span", { class: `badge ${badgeClass}`, text: isMaster ? "★ master" : role === "participant" ? "follower" : role === "denied" ? "needs token" : role })),
      el("div", { class: "addr", text: addr, title: addr }),
      el("dl", { class: "facts" },
        fact("instance", st?.instance ?? "–"),
        fact("commit", st?.commit ?? "–"),
        fact("lag", lag ?? "–", lag ? "behind" : "")),
      el("div", { class: "staged" }, staged
        ? ["staged ", el("b", { text: `#${staged.seq}` }), ` @ instance ${staged.instance}: ${stagedText}`]
        : n.ok ? `nothing staged · ${plural(st?.members?.length ?? 0, "member")}` : n.denied ? `refused: ${s.token ? "wrong token" : "needs the token"} (${n.error})` : `no answer (${n.error ?? "?"})`),
      // The master talks to every member, so its view of reachability is the one worth showing;
      // a follower only hears from its master.
      el("div", { class: "peers" }, !n.ok ? null : isMaster
        ? (st.peers ?? []).map((p) =>
          el("span", { class: `peer${p.reachable ? "" : " bad"}`, title: `last answer ${p.last_contact_ms ?? "never"} ms ago`, text: `${p.reachable ? "✓" : "✕"} ${hostOf(p.addr)}` }))
        : el("span", { class: `peer${st.last_master_contact_ms != null && st.last_master_contact_ms < 1000 ? "" : " bad"}`,
          text: st.last_master_contact_ms != null ? `master heard ${st.last_master_contact_ms} ms ago` : "no master heard" })),
      el("footer", {},
        el("span", { text: n.ok ? `${st.queued ? st.queued + " queued · " : ""}seen ${new Date(n.since).toLocaleTimeString([], { hour12: false })}` : "" }),
        el("button", { class: "danger", title: `remove ${addr} from the cluster`, onclick: () => removeMember(addr, version) }, "Remove")),
    );
  }

  const fact = (k, v, cls = "") => el("div", { class: cls }, el("dt", { text: k }), el("dd", { text: String(v) }));

  // ---------------------------------------------------------------------------------------------
  // Actions
  // ---------------------------------------------------------------------------------------------

  /** The node to send writes to: the master if known (saves a forward), else any reachable one. */
  function writer() {
    const lead = leader();
    if (lead) return lead[1].client;
    const any = [...s.nodes.values()].find((n) => n.ok);
    return (any ?? s.nodes.get(s.entry)).client;
  }

  async function act(out, what, f) {
    out.className = "result";
    out.textContent = `${what}…`;
    const t0 = performance.now();
    try {
      const answer = await f();
      const ms = performance.now() - t0;
      s.latencies.push({ t: Math.floor(Date.now() / 1000), ms });
      out.className = "result ok";
      out.dataset.seq = answer?.seq ?? "";
      out.textContent = `✓ ${what}: committed${answer?.seq ? ` at #${answer.seq}` : ""} in ${Math.round(ms)} ms`;
      s.actDenied = false;
    } catch (e) {
      out.className = "result err";
      s.actDenied = isDenied(e);
      // A refused token is the user's to fix, so say how rather than echo the node's message.
      out.textContent = s.actDenied ? `✕ ${what}: ${tokenHint()}` : `✕ ${what}: ${e.code ?? "error"} ${e.message ?? e}`;
      out.classList.toggle("denied", s.actDenied);
    }
    $("token-box").classList.toggle("wanted", s.actDenied || [...s.nodes.values()].some((n) => n.denied));
    drawChart();
  }

  const tokenInput = $("token");
  tokenInput.value = s.token;
  tokenInput.addEventListener("input", () => {
    s.token = tokenInput.value.trim();
    saveToken(s.token);
    for (const n of s.nodes.values()) n.client.setToken(s.token || null);
    s.actDenied = false;
    $("token-box").classList.remove("wanted");
    // The stream and the page may have been refused for the token: again with this one.
    if (s.watchDenied || s.watch) {
      stopWatch();
      s.watchDenied = false;
    }
    s.pageDirty = true;
  });

  $("submit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const key = f.key.value.trim();
    if (!key) return;
    const change = f.del.checked ? { op: "del", key } : { op: "set", key, value: f.value.value };
    s.fresh.set(key, Date.now());
    setTimeout(() => s.fresh.delete(key), 4000);
    act($("submit-result"), f.del.checked ? `del ${key}` : `${key} = ${f.value.value}`, () => writer().submit([JSON.stringify(change)]));
  });

  $("member-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const addr = ev.target.addr.value.trim().replace(/\/+$/, "");
    const version = leader()?.[1].status.version;
    act($("member-result"), `add ${addr}`, () => writer().addMember(addr, version));
  });

  function removeMember(addr, version) {
    act($("member-result"), `remove ${hostOf(addr)}`, () => writer().removeMember(addr, version));
  }

  // The keys page: a prefix, and a cursor forward (`after`) and back (the trail of cursors).
  $("keys-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    s.pageQuery = { prefix: ev.target.prefix.value, after: null, trail: [] };
    loadPage();
  });
  $("keys-next").addEventListener("click", () => {
    if (!s.page?.next) return;
    s.pageQuery.trail.push(s.pageQuery.after);
    s.pageQuery.after = s.page.next;
    loadPage();
  });
  $("keys-prev").addEventListener("click", () => {
    if (!s.pageQuery.trail.length) return;
    s.pageQuery.after = s.pageQuery.trail.pop();
    loadPage();
  });

  $("connect-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ node: ev.target.node.value.trim(), cluster: ev.target.cluster.value.trim() || "cluster1" });
    location.href = `${location.pathname}?${q}#live`;
  });

  return {
    discover,
    async start() {
      const ok = await discover();
      $("live-connect").hidden = ok;
      if (!ok) {
        $("live-connect-msg").textContent = "No cluster answered here. Point the dashboard at a node of a running cluster (for example `clusterconsensus demo`), or open the simulation.";
        conn.textContent = "";
        return;
      }
      s.running = true;
      poll();
    },
    stop() {
      s.running = false;
      clearTimeout(s.timer);
      stopWatch();
    },
    /** What the UI shows, for tests and the console. */
    snapshot() {
      return {
        cluster: s.cluster,
        entry: s.entry,
        master: leader()?.[0] ?? null,
        token: Boolean(s.token),
        commit: s.commit,
        watching: s.watch ? { node: s.watch.node, lastSeq: s.watch.lastSeq ?? null, reconnects: s.watch.reconnects } : null,
        feed: s.feed.map((f) => ({ seq: f.seq, kind: f.kind, chg: f.chg, members: f.members })),
        page: s.page,
        nodes: [...s.nodes].map(([addr, n]) => ({ addr, ok: n.ok, denied: n.denied, role: n.status?.role, commit: n.status?.commit })),
      };
    },
  };
}
