//! # clusterconsensus-wasm
//!
//! The JavaScript face of clusterconsensus, built with wasm-bindgen into an ES module
//! (`scripts/build-wasm.sh` writes it to `www/pkg/`). Two exports:
//!
//! - [`Client`]: talks to a running cluster over HTTP with the global `fetch`, so the same module
//!   works on a page, in a web worker, in Cloudflare's `workerd`, in Deno and in Node 20.
//! - [`Simulation`]: N real [`clusterconsensus::Participant`]s on the core's virtual network
//!   (`clusterconsensus::sim`), deterministic for a seed, with the harness's safety checks; the
//!   dashboard draws it.
//!
//! ```js
//! import init, { Client, Simulation } from "./pkg/clusterconsensus_wasm.js";
//! await init();                                   // fetches and instantiates the .wasm
//!
//! const c = new Client("http://127.0.0.1:9001", "demo");
//! await c.submit([JSON.stringify({ op: "set", key: "a", value: "1" })]);
//! console.log(await c.get("a"));                  // "1"
//! try { await c.submit(["not json"]); } catch (e) { console.log(e.code); } // "ERR_ENCODING"
//!
//! const sim = new Simulation(5, 42);
//! sim.run(2000);                                  // 2 s of virtual time
//! const st = sim.state();                         // nodes, messages in flight, violations
//! ```
//!
//! Errors reject (or throw) with a JavaScript `Error` whose `code` property is one of the
//! protocol's codes (`ERR_STATE`, `ERR_ENCODING`, ...); see [`client`] for the mapping.

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
