// The package checks (checks.mjs) in Cloudflare's workerd, through the package's `workerd`
// entry (it imports the .wasm as a compiled module). www/tests/client-package.test.mjs writes
// the workerd config that embeds these files from its scratch project.
//
//   GET /basic?cluster=C&url=U&url=...                     checks.basic
//   GET /watch-until-done?base=B&cluster=C&from=N&idle=MS  checks.watchUntilDone
import { Client } from "./node_modules/clusterconsensus-client/workerd.js";
import { basic, watchUntilDone } from "./checks.mjs";

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const q = url.searchParams;
    try {
      if (url.pathname === "/basic") return json(await basic(Client, q.get("cluster"), q.getAll("url"), "workerd"));
      if (url.pathname === "/watch-until-done") {
        return json(await watchUntilDone(Client, q.get("base"), q.get("cluster"), Number(q.get("from")), Number(q.get("idle"))));
      }
      return json({ error: "no such check" }, 404);
    } catch (e) {
      return json({ code: e.code ?? null, error: String(e.message ?? e) }, 500);
    }
  },
};
