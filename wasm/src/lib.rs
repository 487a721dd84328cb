//! # clusterconsensus-wasm
//!
//! The JavaScript face of clusterconsensus, built with wasm-bindgen into ES modules by
//! `scripts/build-wasm.sh`, in two builds of this one crate:
//!
//! | module | features | profile | written to | exports |
//! |---|---|---|---|---|
//! | full (the dashboard's) | default (`sim`) | `release` | `www/pkg/clusterconsensus_wasm.js` | [`Client`], [`Watch`], `Simulation` |
//! | client-only (npm `clusterconsensus-client`) | `--no-default-features` | `wasm-client` (size) | `wasm/npm/dist/clusterconsensus_client.js` | [`Client`], [`Watch`] |
//!
//! - [`Client`]: talks to a running cluster over HTTP with the global `fetch`, so the same module
//!   works on a page, in a web worker, in Cloudflare's `workerd`, in Deno and in Node 20: submit
//!   (resolving to the batch's `{seq, results}`), reads, compare-and-set, membership, and
//!   [`Client::watch`], the stream of committed entries ([`watch`]).
//! - `Simulation` (feature `sim`, which turns on the core's): N real
//!   [`clusterconsensus::Participant`]s on the core's virtual network, deterministic for a seed,
//!   with the harness's safety checks; the dashboard draws it.
//!
//! The client-only module must stay within 150 KB of wasm (the build fails past it). It reads
//! the nodes' answers with the host's `JSON.parse` (the `json` module says why) and writes requests
//! with the core's wire types.
//!
//! ```js
//! import init, { Client, Simulation } from "./pkg/clusterconsensus_wasm.js";
//! await init();                                   // fetches and instantiates the .wasm
//!
//! const c = new Client("http://127.0.0.1:9001", "demo");
//! const { seq } = await c.submit([JSON.stringify({ op: "set", key: "a", value: "1" })]);
//! console.log(await c.get("a"));                  // "1"
//! const { ok, value } = await c.cas("lock", null, "me"); // set only if absent
//! try { await c.submit(["not json"]); } catch (e) { console.log(e.code); } // "ERR_ENCODING"
//!
//! const { commit } = await c.kv();                // a state, then every change after it
//! const w = c.watch(commit + 1, (ev) => console.log(ev.type, ev.seq, ev.chg));
//! w.close();
//!
//! const sim = new Simulation(5, 42);
//! sim.run(2000);                                  // 2 s of virtual time
//! const st = sim.state();                         // nodes, messages in flight, violations
//! ```
//!
//! Errors reject (or throw) with a JavaScript `Error` whose `code` property is one of the
//! protocol's codes (`ERR_STATE`, `ERR_ENCODING`, ...); see [`client`] for the mapping and
//! [`watch`] for when a watch stops (`ERR_GAP`: re-read the state and watch from after it).

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod client;
mod host;
mod json;
#[cfg(feature = "sim")]
pub mod simulation;

mod sse;
pub mod watch;

pub use client::Client;
#[cfg(feature = "sim")]
pub use simulation::Simulation;
pub use watch::Watch;

use clusterconsensus::{Error, ErrorCode};
use host::put;
use wasm_bindgen::JsValue;

/// A JavaScript `Error` for `e`: `message` is `e`'s display text, `code` its wire code, and
/// `master` / `instance` are set when the error carries them (the caller can act on them).
pub(crate) fn js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    put(&err, "code", &JsValue::from_str(e.code.as_str()));
    put(
        &err,
        "retryable",
        &JsValue::from_bool(e.code.is_retryable()),
    );
    if let Some(m) = &e.master {
        put(&err, "master", &JsValue::from_str(m));
    }
    if let Some(i) = e.instance {
        put(&err, "instance", &JsValue::from_f64(i as f64));
    }
    err.into()
}

/// `js_error` of a fresh error.
pub(crate) fn js_err(code: ErrorCode, message: impl Into<String>) -> JsValue {
    js_error(&Error::new(code, message))
}
