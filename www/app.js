// The dashboard's entry point: loads the wasm package, then shows one of two modes, chosen by
// the URL hash (#live, #sim). Without a hash: live mode if the page comes from a cluster node,
// else the simulation (e.g. on a plain static host).
import { createLive } from "./live.js";
import { createSim } from "./sim.js";

const $ = (id) => document.getElementById(id);

// Imported dynamically so that a missing package gets a message instead of a blank page.
let pkg;
try {
  pkg = await import("./pkg/clusterconsensus_wasm.js");
  await pkg.default();
} catch (e) {
  document.querySelector("main").innerHTML =
    `<div class="live-connect"><p><b>The WebAssembly package is not built.</b> Run
    <code>scripts/build-wasm.sh</code> in the repository (it writes <code>www/pkg/</code>), then reload.</p>
    <p class="small">${String(e.message ?? e).replace(/</g, "&lt;")}</p></div>`;
  throw e;
}
const { Client, Simulation } = pkg;

const live = createLive({ Client, conn: $("conn") });
const sim = createSim({ Simulation, conn: $("conn") });
const modes = { live, sim };
let current = null;

async function show(mode) {
  if (!modes[mode]) mode = "sim";
  if (current === mode) return;
  if (current) modes[current].stop();
  current = mode;
  for (const m of Object.keys(modes)) {
    $(m).hidden = m !== mode;
    $(`tab-${m}`).classList.toggle("active", m === mode);
    $(`tab-${m}`).setAttribute("aria-selected", String(m === mode));
  }
  document.title = `clusterconsensus · ${mode === "live" ? "live cluster" : "simulation"}`;
  await modes[mode].start();
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));

let first = location.hash.slice(1);
if (!modes[first]) first = (await live.discover()) ? "live" : "sim";
await show(first);

// For people poking around in the console, and for the browser tests.
window.dashboard = { live, sim, Client, Simulation, get mode() { return current; } };
document.body.dataset.ready = "true";
