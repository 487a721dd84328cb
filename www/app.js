// The dashboard's entry point: loads the wasm package, then shows one of two modes, chosen by
// the URL hash (#live, #sim). Without a hash: live mode if the page comes from a cluster node,
// else the simulation (e.g. on a plain static host).
import init, { Client, Simulation } from "./pkg/clusterconsensus_wasm.js";
import { createLive } from "./live.js";
import { createSim } from "./sim.js";

const $ = (id) => document.getElementById(id);

await init();

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
