// Simulation mode, in the spirit of RaftScope: the core's real Participants on a virtual
// network (the wasm Simulation), nodes in a ring, messages animated in flight.
//
// Virtual time advances at `speed` times real time. Everything the user does goes through the
// Simulation, which records it; the timeline rewinds by replaying from the seed.

const SPEEDS = [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];
// Slower than the core's defaults so that messages can be watched: 40-90 ms on the wire,
// a heartbeat every 100 ms, elections after 0.6-1.2 s without one.
const TIMING = { minDelayMs: 40, maxDelayMs: 90, heartbeatMs: 100, electionMinMs: 600, electionMaxMs: 1200, rpcTimeoutMs: 400 };
const COLORS = {
  prepare: "#8b5cf6",
  accept: "#2563eb",
  heartbeat: "#9aa3b5",
  start: "#ea580c",
  addmember: "#0d9488",
  rmmember: "#0d9488",
  "members/add": "#0d9488",
  "members/remove": "#0d9488",
  submit: "#16a34a",
};
const LEGEND = [["prepare", "prepare"], ["accept", "accept"], ["heartbeat", "heartbeat"], ["start", "start"], ["addmember", "membership"], ["submit", "submit"]];
const GROUP_TINTS = ["#6366f1", "#ec4899", "#14b8a6", "#f59e0b"];
const SVGNS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
};
const html = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, String(v));
  }
  e.append(...kids.flat().filter((k) => k != null));
  return e;
};
const name = (i) => `n${i}`;
const describeChange = (c) => {
  try {
    const v = JSON.parse(c);
    return v.op === "del" ? `del ${v.key}` : `${v.key} = ${v.value}`;
  } catch {
    return c;
  }
};

export function createSim({ Simulation, conn }) {
  const s = {
    sim: null,
    st: null,
    playing: false,
    speed: SPEEDS[Number($("sim-speed").value)],
    acc: 0,
    last: 0,
    raf: 0,
    running: false,
    groups: null,         // current partition, as given to the Simulation (null: none)
    firstStep: 0,         // steps after the cluster formed (the timeline's start)
    firstOp: 0,           // ops made while forming (not shown)
    heartbeats: new Map(), // "to>from@t" -> true: responses to heartbeats, to color them alike
    nodes: [],            // persistent SVG groups, one per node
    cut: null,            // the line being dragged {x1, y1, x2, y2}
    dirty: true,
  };

  // -------------------------------------------------------------------------------------------
  // Building
  // -------------------------------------------------------------------------------------------

  function reset() {
    const n = Number($("sim-nodes").value);
    const seed = Math.max(0, Math.floor(Number($("sim-seed").value) || 0));
    $("sim-seed").value = seed;
    s.sim?.free();
    s.sim = new Simulation(n, seed, { ...TIMING, dropPermille: Number($("sim-drop").value) });
    s.groups = null;
    s.heartbeats.clear();
    s.st = s.sim.state();
    s.firstStep = s.st.steps;
    s.firstOp = s.st.ops.length;
    buildRing(n);
    $("sim-submit-node").replaceChildren(...Array.from({ length: n }, (_, i) => html("option", { value: i, text: name(i) })));
    s.dirty = true;
  }

  function layout(n) {
    const R = n <= 3 ? 180 : 215;
    const r = n <= 5 ? 46 : 38;
    const pos = Array.from({ length: n }, (_, i) => {
      const a = -Math.PI / 2 + (i * 2 * Math.PI) / n;
      return { x: R * Math.cos(a), y: R * Math.sin(a) };
    });
    return { R, r, pos };
  }

  function buildRing(n) {
    const ring = $("sim-ring");
    const { R, r, pos } = (s.geom = layout(n));
    ring.replaceChildren();
    ring.append(svg("circle", { class: "ring-guide", r: R }));
    s.links = svg("g");
    ring.append(s.links);
    s.nodes = pos.map((p, i) => {
      const g = svg("g", { class: "snode", transform: `translate(${p.x},${p.y})`, "data-index": i });
      const halo = svg("circle", { class: "halo", r: r + 11, fill: "transparent" });
      const body = svg("circle", { class: "body", r });
      const crown = svg("text", { class: "crown", y: -r - 10 });
      const label = svg("text", { class: "label", y: -4 });
      const sub = svg("text", { class: "sub", y: 14 });
      const sub2 = svg("text", { class: "sub", y: 29 });
      const role = svg("text", { class: "role", y: r + 22 });
      const data = svg("text", { class: "sub", y: r + 38 });
      const title = svg("title");
      label.textContent = name(i);
      g.append(title, halo, body, crown, label, sub, sub2, role, data);
      g.addEventListener("click", (ev) => {
        ev.stopPropagation();
        if (s.moved) return;
        const up = s.st.nodes[i].up;
        up ? s.sim.crash(i) : s.sim.restart(i);
        after();
      });
      ring.append(g);
      return { g, halo, body, crown, sub, sub2, role, data, title };
    });
    s.msgs = svg("g");
    ring.append(s.msgs);
    s.cutLine = svg("line", { class: "cutline", visibility: "hidden" });
    ring.append(s.cutLine);
  }

  // -------------------------------------------------------------------------------------------
  // Running
  // -------------------------------------------------------------------------------------------

  function frame(ts) {
    if (!s.running) return;
    const dt = s.last ? Math.min(ts - s.last, 100) : 0;
    s.last = ts;
    if (s.playing && dt > 0) {
      s.acc += dt * s.speed;
      const whole = Math.floor(s.acc);
      if (whole >= 1) {
        s.acc -= whole;
        s.sim.run(whole);
        s.dirty = true;
      }
    }
    if (s.dirty) render();
    s.raf = requestAnimationFrame(frame);
  }

  function setPlaying(on) {
    s.playing = on;
    $("sim-play").textContent = on ? "❚❚ Pause" : "▶ Play";
    $("sim-play").classList.toggle("primary", !on);
  }

  /** After an action: redraw, and re-derive the partition from the recorded history. */
  function after() {
    syncGroups();
    s.dirty = true;
  }

  function syncGroups() {
    s.groups = null;
    for (const r of s.sim.history()) {
      if (r.step > s.sim.steps) break;
      if (r.action === "partition") s.groups = r.groups;
      if (r.action === "heal") s.groups = null;
    }
  }

  const groupOf = (i) => (s.groups ? s.groups.findIndex((g) => g.includes(i)) : 0);
  const cutOff = (a, b) => s.groups !== null && (groupOf(a) === -1 || groupOf(a) !== groupOf(b));

  // -------------------------------------------------------------------------------------------
  // Drawing
  // -------------------------------------------------------------------------------------------

  /** The master to crown: the up node claiming mastership at the highest instance. */
  function crowned(st) {
    let best = null;
    for (const n of st.nodes) if (n.up && n.role === "master" && (!best || n.instance > best.instance)) best = n;
    return best;
  }

  function render() {
    s.dirty = false;
    const st = (s.st = s.sim.state());
    const { r, pos } = s.geom;
    const king = crowned(st);

    // Links: grey, or red dashed where the network is cut.
    s.links.replaceChildren();
    for (let a = 0; a < pos.length; a++) {
      for (let b = a + 1; b < pos.length; b++) {
        s.links.append(svg("line", { class: `link${cutOff(a, b) || cutOff(b, a) ? " cut" : ""}`, x1: pos[a].x, y1: pos[a].y, x2: pos[b].x, y2: pos[b].y }));
      }
    }

    st.nodes.forEach((n, i) => {
      const v = s.nodes[i];
      const isKing = king?.index === i;
      const role = !n.up ? "down" : isKing ? "master" : n.role === "master" ? "deposed" : n.role;
      v.g.setAttribute("class", `snode ${role}`);
      v.g.dataset.role = role;
      v.g.dataset.up = String(n.up);
      v.crown.textContent = isKing ? "★" : "";
      v.sub.textContent = `inst ${n.instance} · c${n.commit}`;
      v.sub2.textContent = n.staged ? `staged #${n.staged.seq}` : "";
      v.role.textContent = !n.up ? "crashed" : role === "participant" ? "follower" : role;
      const kv = Object.entries(n.state ?? {}).map(([k, val]) => `${k}=${val}`).join(" ");
      v.data.textContent = kv.length > 30 ? kv.slice(0, 29) + "…" : kv;
      const g = groupOf(i);
      v.halo.setAttribute("fill", s.groups && g >= 0 ? GROUP_TINTS[g % GROUP_TINTS.length] : "transparent");
      v.halo.setAttribute("opacity", s.groups ? (g >= 0 ? 0.16 : 0) : 0);
      v.title.textContent = `${n.addr}: ${role}, instance ${n.instance}, commit ${n.commit}. Click to ${n.up ? "crash" : "restart"}.`;
    });

    // Messages in flight.
    s.msgs.replaceChildren();
    for (const m of st.messages) {
      if (m.arrives_at == null) continue;
      const A = pos[m.from], B = pos[m.to];
      const dx = B.x - A.x, dy = B.y - A.y, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len;
      const off = m.response ? -6 : 6; // requests and answers on either side of the link
      const span = Math.max(1, m.arrives_at - m.sent_at);
      const t = Math.min(1, Math.max(0, (st.now - m.sent_at) / span));
      const d = r + 4 + t * (len - 2 * r - 8);
      const x = A.x + ux * d - uy * off, y = A.y + uy * d + ux * off;
      const kind = kindOf(m);
      const color = COLORS[kind] ?? "#64748b";
      const lost = cutOff(m.from, m.to) || !st.nodes[m.to].up;
      const g = svg("g", { class: "msg", "data-id": m.id, "data-method": m.method, opacity: lost ? 0.35 : 1 });
      const title = svg("title");
      title.textContent = `#${m.id} ${name(m.from)} → ${name(m.to)} ${m.method}${m.response ? " (answer)" : ""}${lost ? " — will be lost" : ""}\n${m.body}\nclick to drop`;
      g.append(title, svg("circle", { cx: x, cy: y, r: m.response ? 6.5 : 8, fill: m.response ? "#fff" : color, stroke: color }));
      g.addEventListener("pointerdown", (ev) => {
        ev.stopPropagation();
        s.sim.drop(m.id);
        after();
      });
      s.msgs.append(g);
    }

    renderPanel(st, king);
  }

  /** A message's color class: an empty accept is a heartbeat, and so is its answer. */
  function kindOf(m) {
    if (m.method !== "accept") return m.method;
    if (!m.response) {
      let hb = false;
      try {
        hb = JSON.parse(m.body).chg.length === 0;
      } catch {}
      if (hb) s.heartbeats.set(`${m.to}>${m.from}@${m.arrives_at}`, m.arrives_at);
      return hb ? "heartbeat" : "accept";
    }
    return s.heartbeats.has(`${m.from}>${m.to}@${m.sent_at}`) ? "heartbeat" : "accept";
  }

  function renderPanel(st, king) {
    if (s.heartbeats.size > 500) for (const [k, t] of s.heartbeats) if (t < st.now - 5000) s.heartbeats.delete(k);
    const safe = $("sim-safety");
    if (st.violations.length === 0) {
      safe.className = "safety";
      safe.textContent = `✓ Safety holds: at most one master per instance, one value per seq, no lost or doubled commits — checked after each of ${st.steps.toLocaleString()} steps.`;
    } else {
      safe.className = "safety bad";
      safe.replaceChildren(`✕ ${st.violations.length} safety violation${st.violations.length > 1 ? "s" : ""}:`, html("ul", {}, st.violations.slice(-6).map((v) => html("li", { text: v }))));
    }

    $("sim-table").replaceChildren(
      html("tr", {}, ["node", "role", "inst", "commit", "staged", "data"].map((h) => html("th", { text: h }))),
      ...st.nodes.map((n) => {
        const isKing = king?.index === n.index;
        const role = !n.up ? "crashed" : isKing ? "master" : n.role === "participant" ? "follower" : n.role;
        return html("tr", { class: !n.up ? "down" : isKing ? "master" : "" },
          html("td", { text: (isKing ? "★ " : "") + name(n.index) }),
          html("td", { text: role }),
          html("td", { text: n.instance }),
          html("td", { text: n.commit }),
          html("td", { text: n.staged ? `#${n.staged.seq}` : "–" }),
          html("td", { class: "data", text: Object.entries(n.state ?? {}).map(([k, v]) => `${k}=${v}`).join(" ") || "–" }));
      }));

    const ops = st.ops.slice(s.firstOp).slice(-10).reverse();
    $("sim-ops").replaceChildren(...(ops.length ? ops.map((o) => {
      const res = o.completed_at == null ? html("span", { class: "when", text: "pending…" })
        : o.ok ? html("span", { class: "good", text: `✓ ${o.completed_at - o.invoked_at} ms` })
          : html("span", { class: "bad", text: `✕ ${(o.err ?? "").split(":")[0]}`, title: o.err ?? "" });
      return html("li", {}, html("span", { class: "seq", text: `${name(o.node)}` }), html("span", { class: "what", text: describeChange(o.change) }), res);
    }) : [html("li", { class: "muted", text: "none yet" })]));

    const tl = $("sim-timeline");
    tl.min = s.firstStep;
    tl.max = st.horizon;
    tl.value = st.steps;
    $("sim-clock").textContent = `t = ${(st.now / 1000).toFixed(3)} s · step ${st.steps}${st.horizon > st.steps ? ` / ${st.horizon}` : ""}`;
    const up = st.nodes.filter((n) => n.up).length;
    conn.replaceChildren(
      html("span", { class: `pulse${st.violations.length ? " bad" : ""}` }),
      html("span", { text: `simulation · seed ${st.seed} · ${up}/${st.nodes.length} up · ${king ? "master " + name(king.index) : "no master"}${s.groups ? " · partitioned" : ""}` }));
  }

  // -------------------------------------------------------------------------------------------
  // Input
  // -------------------------------------------------------------------------------------------

  $("sim-play").addEventListener("click", () => setPlaying(!s.playing));
  $("sim-step").addEventListener("click", () => {
    setPlaying(false);
    s.sim.step();
    s.dirty = true;
  });
  $("sim-speed").addEventListener("input", (ev) => {
    s.speed = SPEEDS[Number(ev.target.value)];
    $("sim-speed-out").textContent = `${s.speed}×`;
  });
  $("sim-speed-out").textContent = `${s.speed}×`;
  for (const id of ["sim-reset", "sim-nodes", "sim-drop"]) {
    $(id).addEventListener(id === "sim-reset" ? "click" : "change", () => reset());
  }
  $("sim-seed").addEventListener("change", () => reset());
  $("sim-heal").addEventListener("click", () => {
    s.sim.heal();
    after();
  });
  $("sim-isolate").addEventListener("click", () => {
    const king = crowned(s.st);
    if (!king) return;
    const rest = s.st.nodes.map((n) => n.index).filter((i) => i !== king.index);
    s.sim.partition([[king.index], rest]);
    after();
  });
  $("sim-submit").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const change = JSON.stringify({ op: "set", key: f.key.value.trim() || "x", value: f.value.value });
    s.sim.submit(Number(f.node.value), change);
    // Next time, a new value, so that repeated submits are visible.
    if (/^\d+$/.test(f.value.value)) f.value.value = String(Number(f.value.value) + 1);
    after();
  });
  $("sim-timeline").addEventListener("input", (ev) => {
    setPlaying(false);
    s.sim.rewind(Number(ev.target.value));
    after();
  });
  $("sim-back").addEventListener("click", () => {
    setPlaying(false);
    s.sim.rewind(Math.max(s.firstStep, s.sim.steps - 100));
    after();
  });
  document.addEventListener("keydown", (ev) => {
    if (!s.running || ev.target.closest?.("input, select, textarea, button")) return;
    if (ev.code === "Space") {
      ev.preventDefault();
      setPlaying(!s.playing);
    }
  });

  // Drag across the ring to cut it: nodes on either side of the line form two groups.
  const ring = $("sim-ring");
  const toSvg = (ev) => {
    const p = ring.createSVGPoint();
    p.x = ev.clientX;
    p.y = ev.clientY;
    return p.matrixTransform(ring.getScreenCTM().inverse());
  };
  ring.addEventListener("pointerdown", (ev) => {
    s.moved = false;
    const p = toSvg(ev);
    s.cut = { x1: p.x, y1: p.y, x2: p.x, y2: p.y };
  });
  // On window, not with pointer capture: capture would retarget the click that crashes a node.
  window.addEventListener("pointermove", (ev) => {
    if (!s.cut) return;
    const p = toSvg(ev);
    Object.assign(s.cut, { x2: p.x, y2: p.y });
    if (Math.hypot(s.cut.x2 - s.cut.x1, s.cut.y2 - s.cut.y1) > 12) s.moved = true;
    if (s.moved) {
      for (const k of ["x1", "y1", "x2", "y2"]) s.cutLine.setAttribute(k, s.cut[k]);
      s.cutLine.setAttribute("visibility", "visible");
    }
  });
  window.addEventListener("pointerup", () => {
    const c = s.cut;
    if (!c) return;
    s.cut = null;
    s.cutLine.setAttribute("visibility", "hidden");
    if (!c || Math.hypot(c.x2 - c.x1, c.y2 - c.y1) < 40) return;
    const side = (p) => (c.x2 - c.x1) * (p.y - c.y1) - (c.y2 - c.y1) * (p.x - c.x1);
    const a = [], b = [];
    s.geom.pos.forEach((p, i) => (side(p) < 0 ? a : b).push(i));
    if (a.length && b.length) {
      s.sim.partition([a, b]);
      after();
    }
    // The click that follows a drag must not crash a node.
    setTimeout(() => (s.moved = false), 0);
  });

  $("sim-legend").replaceChildren(
    ...LEGEND.map(([k, label]) => html("span", {}, html("i", { style: `background:${COLORS[k]}` }), label)),
    html("span", {}, html("i", { class: "resp", style: "border-color:#64748b" }), "answer"),
  );

  return {
    async start() {
      if (!s.sim) reset();
      s.running = true;
      s.last = 0;
      s.dirty = true;
      s.raf = requestAnimationFrame(frame);
      const auto = new URLSearchParams(location.search).get("play");
      if (auto !== "0" && !s.startedOnce) setPlaying(true);
      s.startedOnce = true;
    },
    stop() {
      s.running = false;
      cancelAnimationFrame(s.raf);
    },
    get simulation() {
      return s.sim;
    },
    snapshot() {
      return s.sim.state();
    },
  };
}
