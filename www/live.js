// Live mode: every member of a running cluster, polled through the wasm Client.
//
// The entry node is ?node=URL, else the origin that served this page; the cluster id is
// ?cluster=ID, else the first of a few usual ids that the entry node answers for. Members are
// taken from the statuses (the master's list wins), so added and removed members appear and
// disappear by themselves. Every POLL_MS each member's status and key-value state are read.
//
// Nodes started with --token-file refuse writes without `Authorization: Bearer <token>` (with
// --auth-reads, status and reads too): the Token field's value goes to every Client through
// setToken. It is kept in sessionStorage, so it survives a reload and a change of node (both
// reload the page) but not the tab; never in the URL, where it would end up in history and logs.

const POLL_MS = 500;
const CALL_MS = 1500;
const FEED_MAX = 10;
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
const hostOf = (addr) => addr.replace(/^https?:\/\//, "");
const clock = () => new Date().toLocaleTimeString([], { hour12: false });
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

export function createLive({ Client, conn }) {
  const params = new URLSearchParams(location.search);
  const s = {
    entry: null,          // base URL of the node we started from
    cluster: null,
    nodes: new Map(),     // addr -> { client, status, kv, ok, error, since }
    feed: [],
    seen: null,           // { commit, data, members } at the last poll, from the master
    timer: null,
    running: false,
    lastPoll: 0,
    fresh: new Map(),     // key -> time it was last submitted here (highlighted)
    token: loadToken(),   // "" = none
    actDenied: false,     // the last submit / membership call was refused for the token
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
      s.nodes.set(addr, { client: client(addr), status: null, kv: null, ok: false, error: null, denied: false, since: 0 });
    }
    if (status) Object.assign(s.nodes.get(addr), { status, ok: true });
  }

  async function refresh(addr, n) {
    try {
      const [status, page] = await Promise.all([n.client.status(), n.client.kv()]);
      // The first page of keys (`GET kv`: {commit, items: [[key, value], ...], next, count}).
      const kv = { commit: page.commit, data: Object.fromEntries(page.items), count: page.count };
      Object.assign(n, { status, kv, ok: true, error: null, denied: false, since: Date.now() });
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

  async function poll() {
    if (!s.running) return;
    const t0 = performance.now();
    await Promise.all([...s.nodes].map(([addr, n]) => refresh(addr, n)));
    // Membership: the master's list if there is one, else the union of what the nodes say.
    const lead = leader();
    const lists = lead ? [lead[1].status.members] : [...s.nodes.values()].filter((n) => n.ok).map((n) => n.status.members ?? []);
    const members = new Set(lists.flat());
    if (members.size) {
      for (const addr of members) track(addr.replace(/\/+$/, ""), null);
      for (const addr of [...s.nodes.keys()]) if (!members.has(addr) && lead) s.nodes.delete(addr);
    }
    if (lead) noteCommits(lead[1]);
    s.lastPoll = Date.now();
    render();
    if (s.running) s.timer = setTimeout(poll, Math.max(50, POLL_MS - (performance.now() - t0)));
  }

  /** Turns the master's commit index and data into feed entries (what changed, per poll). */
  function noteCommits(master) {
    const commit = master.kv?.commit ?? master.status.commit;
    const data = master.kv?.data ?? {};
    const members = master.status.members ?? [];
    const prev = s.seen;
    s.seen = { commit, data, members };
    if (!prev) {
      const keys = Object.keys(data).length;
      if (commit > 0) s.feed.unshift({ seq: commit > 1 ? `1–${commit}` : "1", what: `before this page: ${keys} key${keys === 1 ? "" : "s"}, ${members.length} members`, when: clock() });
      return;
    }
    if (commit <= prev.commit) return;
    const what = [];
    for (const [k, v] of Object.entries(data)) if (prev.data[k] !== v) what.push(`${k} = ${v}`);
    for (const k of Object.keys(prev.data)) if (!(k in data)) what.push(`del ${k}`);
    for (const m of members) if (!prev.members.includes(m)) what.push(`+member ${hostOf(m)}`);
    for (const m of prev.members) if (!members.includes(m)) what.push(`−member ${hostOf(m)}`);
    const seq = commit - prev.commit > 1 ? `${prev.commit + 1}–${commit}` : `${commit}`;
    s.feed.unshift({ seq, what: what.join(", ") || "(same values)", when: clock() });
    s.feed.length = Math.min(s.feed.length, FEED_MAX);
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------------------------------

  function render() {
    const lead = leader();
    const box = $("live-nodes");
    const addrs = [...s.nodes.keys()].sort();
    box.replaceChildren(...addrs.map((addr, i) => card(addr, s.nodes.get(addr), i, lead?.[0] === addr)));
    const up = addrs.filter((a) => s.nodes.get(a).ok).length;
    const denied = addrs.some((a) => s.nodes.get(a).denied);
    conn.replaceChildren(
      el("span", { class: `pulse${up ? "" : " bad"}` }),
      el("span", { text: `${s.cluster} via ${hostOf(s.entry)} · ${up}/${addrs.length} nodes up · ${lead ? "master " + hostOf(lead[0]) : "no master"}${denied ? " · token needed" : ""}` }),
    );
    // Status polling refused (--auth-reads): the same hint as a refused write, above the cards.
    const banner = $("live-auth");
    banner.hidden = !denied;
    if (denied) banner.textContent = `Status refused: ${tokenHint()}.`;
    $("token-box").classList.toggle("wanted", denied || s.actDenied);
    $("commit-head").textContent = s.seen ? `commit ${s.seen.commit}` : "";
    const feed = $("feed");
    if (s.feed.length) {
      feed.replaceChildren(...s.feed.map((f) =>
        el("li", {}, el("span", { class: "seq", text: `#${f.seq}` }), el("span", { class: "what", text: f.what, title: f.what }), el("span", { class: "when", text: f.when }))));
    }
  }

  function card(addr, n, i, isMaster) {
    const st = n.status;
    const role = !n.ok ? (n.denied ? "denied" : "unreachable") : isMaster ? "master" : st.role === "master" ? "deposed" : st.role;
    const badgeClass = !n.ok ? "down" : isMaster ? "master" : st.role === "candidate" ? "candidate" : "";
    const staged = st?.staged;
    const stagedText = staged
      ? (staged.chg ? `${staged.chg.length} change${staged.chg.length === 1 ? "" : "s"}` : staged.add ? `add ${hostOf(staged.add.addr)}` : `remove ${hostOf(staged.rm.addr)}`)
      : null;
    const data = n.kv?.data ?? {};
    const keys = Object.keys(data).sort();
    const version = leader()?.[1].status.version;
    return el("article", {
      class: `node-card${isMaster ? " is-master" : ""}${n.ok ? "" : " unreachable"}`,
      "data-addr": addr, "data-role": role, "data-reachable": String(n.ok),
    },
      el("header", {},
        el("span", { class: "dot" }),
        el("span", { class: "name", text: `node ${i + 1}` }),
        el("span", { class: `badge ${badgeClass}`, text: isMaster ? "★ master" : role === "participant" ? "follower" : role === "denied" ? "needs token" : role })),
      el("div", { class: "addr", text: addr, title: addr }),
      el("dl", { class: "facts" },
        fact("instance", st?.instance ?? "–"),
        fact("commit", st?.commit ?? "–"),
        fact("members", st?.members?.length ?? "–")),
      el("div", { class: "staged" }, staged
        ? ["staged ", el("b", { text: `#${staged.seq}` }), ` @ instance ${staged.instance}: ${stagedText}`]
        : n.ok ? "nothing staged" : n.denied ? `refused: ${s.token ? "wrong token" : "needs the token"} (${n.error})` : `no answer (${n.error ?? "?"})`),
      // The master talks to every member, so its view of reachability is the one worth showing;
      // a follower only hears from its master.
      el("div", { class: "peers" }, !n.ok ? null : isMaster
        ? (st.peers ?? []).map((p) =>
          el("span", { class: `peer${p.reachable ? "" : " bad"}`, title: `last answer ${p.last_contact_ms ?? "never"} ms ago`, text: `${p.reachable ? "✓" : "✕"} ${hostOf(p.addr)}` }))
        : el("span", { class: `peer${st.last_master_contact_ms != null && st.last_master_contact_ms < 1000 ? "" : " bad"}`,
          text: st.last_master_contact_ms != null ? `master heard ${st.last_master_contact_ms} ms ago` : "no master heard" })),
      el("ul", { class: "kv" }, keys.length
        ? keys.map((k) => el("li", { class: s.fresh.has(k) ? "fresh" : "", "data-key": k }, el("span", { class: "k", text: k }), el("span", { class: "v", text: data[k], title: data[k] })))
        : el("li", { class: "muted", text: n.ok ? "no keys yet" : "" })),
      el("footer", {},
        el("span", { text: n.ok ? `${st.queued ? st.queued + " queued · " : ""}seen ${clock()}` : "" }),
        el("button", { class: "danger", title: `remove ${addr} from the cluster`, onclick: () => removeMember(addr, version) }, "Remove")),
    );
  }

  const fact = (k, v) => el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }));

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
      await f();
      out.className = "result ok";
      out.textContent = `✓ ${what}: committed in ${Math.round(performance.now() - t0)} ms`;
      s.actDenied = false;
    } catch (e) {
      out.className = "result err";
      s.actDenied = isDenied(e);
      // A refused token is the user's to fix, so say how rather than echo the node's message.
      out.textContent = s.actDenied ? `✕ ${what}: ${tokenHint()}` : `✕ ${what}: ${e.code ?? "error"} ${e.message ?? e}`;
      out.classList.toggle("denied", s.actDenied);
    }
    $("token-box").classList.toggle("wanted", s.actDenied || [...s.nodes.values()].some((n) => n.denied));
  }

  const tokenInput = $("token");
  tokenInput.value = s.token;
  tokenInput.addEventListener("input", () => {
    s.token = tokenInput.value.trim();
    saveToken(s.token);
    for (const n of s.nodes.values()) n.client.setToken(s.token || null);
    s.actDenied = false;
    $("token-box").classList.remove("wanted");
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
    },
    /** What the UI shows, for tests and the console. */
    snapshot() {
      return { cluster: s.cluster, entry: s.entry, master: leader()?.[0] ?? null, token: Boolean(s.token), nodes: [...s.nodes].map(([addr, n]) => ({ addr, ok: n.ok, denied: n.denied, role: n.status?.role, data: n.kv?.data })) };
    },
  };
}
