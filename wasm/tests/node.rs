//! The JavaScript-facing API under Node (wasm-bindgen-test-runner runs these in Node 20):
//! `Client`'s mapping of answers and transport failures to errors with a `code`, against a
//! stubbed global `fetch` and against a closed port; `Simulation`'s failover, replication,
//! determinism and rewind through the same calls the dashboard makes.
//!
//! ```sh
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test -p clusterconsensus-wasm --target wasm32-unknown-unknown --test node
//! ```
#![cfg(target_arch = "wasm32")]

use clusterconsensus_wasm::{Client, Simulation};
use js_sys::{Reflect, JSON};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

#[wasm_bindgen(inline_js = r#"
const real = globalThis.fetch;
let calls = [];
export function stub_fetch(status, body) {
  calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url: String(url), method: init?.method, body: init?.body ?? null,
                 contentType: init?.headers?.["content-type"] ?? null,
                 authorization: init?.headers?.["authorization"] ?? null, signal: !!init?.signal });
    return new Response(body, { status, headers: { "content-type": "application/json" } });
  };
}
export function reject_fetch(name, message) {
  calls = [];
  globalThis.fetch = async (url) => {
    calls.push({ url: String(url) });
    const e = name === "TypeError" ? new TypeError(message) : new DOMException(message, name);
    throw e;
  };
}
export function restore_fetch() { globalThis.fetch = real; }
export function last_call() { return calls[calls.length - 1]; }
export function is_error(e) { return e instanceof Error; }
"#)]
extern "C" {
    fn stub_fetch(status: u16, body: &str);
    fn reject_fetch(name: &str, message: &str);
    fn restore_fetch();
    fn last_call() -> JsValue;
    fn is_error(e: &JsValue) -> bool;
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

fn to_json(v: &JsValue) -> Value {
    serde_json::from_str(&String::from(JSON::stringify(v).unwrap())).unwrap()
}

fn client() -> Client {
    Client::new("http://cluster.test:9001/", "demo").unwrap()
}

/// The rejection of `p`, checked to be an `Error` with a string `code`; returns (code, error).
async fn rejection(p: js_sys::Promise) -> (String, JsValue) {
    let e = JsFuture::from(p).await.expect_err("should reject");
    assert!(is_error(&e), "rejects with an Error");
    let code = get(&e, "code").as_string().expect("the Error has a code");
    (code, e)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen_test]
async fn submit_posts_the_seed_json_and_resolves_on_success() {
    stub_fetch(200, r#"{"fail":false,"err":null}"#);
    let r = JsFuture::from(client().submit(vec!["c1".into(), "c2".into()])).await;
    let call = to_json(&last_call());
    restore_fetch();
    assert!(r.unwrap().is_undefined());
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/submit"
    );
    assert_eq!(call["method"], "POST");
    assert_eq!(call["contentType"], "application/json");
    assert_eq!(call["signal"], true, "a timeout signal is attached");
    assert_eq!(call["authorization"], Value::Null, "no token, no header");
    let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"chg": ["c1", "c2"]}));
}

#[wasm_bindgen_test]
async fn a_refused_submit_rejects_with_the_seed_code() {
    stub_fetch(
        200,
        r#"{"fail":true,"err":{"code":"ERR_STATE","err":"no master known"},"instance":7}"#,
    );
    let (code, e) = rejection(client().submit(vec!["c".into()])).await;
    restore_fetch();
    assert_eq!(code, "ERR_STATE");
    assert_eq!(get(&e, "instance").as_f64(), Some(7.0));
    assert_eq!(get(&e, "retryable").as_bool(), Some(true));
    let message = get(&e, "message").as_string().unwrap();
    assert!(message.contains("no master known"), "{message}");

    stub_fetch(
        200,
        r#"{"fail":true,"err":{"code":"ERR_MAJORITY","err":"lost quorum"}}"#,
    );
    let (code, _) = rejection(client().submit(vec!["c".into()])).await;
    restore_fetch();
    assert_eq!(code, "ERR_MAJORITY");
}

#[wasm_bindgen_test]
async fn http_errors_keep_the_code_of_their_body() {
    stub_fetch(
        400,
        r#"{"code":"ERR_ENCODING","err":"bad key-value change"}"#,
    );
    let (code, e) = rejection(client().submit(vec!["not json".into()])).await;
    assert_eq!(code, "ERR_ENCODING");
    assert_eq!(get(&e, "retryable").as_bool(), Some(false));

    stub_fetch(502, "Bad Gateway");
    let (code, e) = rejection(client().submit(vec!["c".into()])).await;
    assert_eq!(code, "ERR_CALL");
    assert!(get(&e, "message").as_string().unwrap().contains("502"));

    stub_fetch(200, "<html>not json</html>");
    let (code, _) = rejection(client().submit(vec!["c".into()])).await;
    assert_eq!(code, "ERR_ENCODING");

    stub_fetch(
        404,
        r#"{"code":"ERR_STATE","err":"this node hosts no cluster \"demo\""}"#,
    );
    let (code, _) = rejection(client().status()).await;
    restore_fetch();
    assert_eq!(code, "ERR_STATE");
}

#[wasm_bindgen_test]
async fn transport_failures_are_connect_or_call_errors() {
    reject_fetch("TypeError", "fetch failed");
    let (code, _) = rejection(client().status()).await;
    assert_eq!(code, "ERR_CONNECT");

    reject_fetch("TimeoutError", "signal timed out");
    let (code, _) = rejection(client().submit(vec!["c".into()])).await;
    restore_fetch();
    assert_eq!(code, "ERR_CALL");

    // Node's real fetch, to a port nobody listens on.
    let c = Client::new("http://127.0.0.1:1", "demo").unwrap();
    let (code, _) = rejection(c.status()).await;
    assert_eq!(code, "ERR_CONNECT");
}

#[wasm_bindgen_test]
async fn reads_status_values_and_missing_keys() {
    stub_fetch(
        200,
        r#"{"cluster":"demo","role":"master","commit":4,"members":["a","b","c"]}"#,
    );
    let st = JsFuture::from(client().status()).await.unwrap();
    assert_eq!(get(&st, "role").as_string().as_deref(), Some("master"));
    assert_eq!(get(&st, "commit").as_f64(), Some(4.0));

    stub_fetch(200, r#"{"key":"a b","value":"1"}"#);
    let v = JsFuture::from(client().get("a b".into(), None))
        .await
        .unwrap();
    let call = to_json(&last_call());
    assert_eq!(v.as_string().as_deref(), Some("1"));
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/kv/a%20b"
    );
    assert_eq!(call["method"], "GET");

    stub_fetch(404, r#"{"key":"zz","value":null}"#);
    let v = JsFuture::from(client().get("zz".into(), None))
        .await
        .unwrap();
    assert!(v.is_null());

    // An unknown cluster is a 404 too, but with an error code: it rejects.
    stub_fetch(
        404,
        r#"{"code":"ERR_STATE","err":"this node hosts no cluster \"demo\""}"#,
    );
    let (code, _) = rejection(client().get("zz".into(), None)).await;
    assert_eq!(code, "ERR_STATE");

    stub_fetch(200, r#"{"key":"a","value":"2"}"#);
    JsFuture::from(client().get("a".into(), Some(true)))
        .await
        .unwrap();
    let call = to_json(&last_call());
    restore_fetch();
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/kv/a?consistent=true"
    );
}

#[wasm_bindgen_test]
async fn membership_calls_carry_the_version() {
    stub_fetch(200, r#"{"fail":false,"err":null}"#);
    JsFuture::from(client().add_member("http://127.0.0.1:9004".into(), Some(3.0)))
        .await
        .unwrap();
    let call = to_json(&last_call());
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/members/add"
    );
    let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"addr": "http://127.0.0.1:9004", "version": 3})
    );

    stub_fetch(
        200,
        r#"{"fail":true,"err":{"code":"ERR_SEQUENCE","err":"stale version"}}"#,
    );
    let (code, _) =
        rejection(client().remove_member("http://127.0.0.1:9004".into(), Some(1.0))).await;
    let call = to_json(&last_call());
    restore_fetch();
    assert_eq!(code, "ERR_SEQUENCE");
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/members/remove"
    );
}

#[wasm_bindgen_test]
async fn a_token_is_sent_as_a_bearer_header_and_a_refusal_is_denied() {
    let mut c = client();
    c.set_token(Some("0123456789abcdef-secret".into()));
    stub_fetch(
        401,
        r#"{"code":"ERR_DENIED","err":"missing or wrong token"}"#,
    );
    let (code, _) = rejection(c.submit(vec!["c".into()])).await;
    let call = to_json(&last_call());
    assert_eq!(code, "ERR_DENIED");
    assert_eq!(call["authorization"], "Bearer 0123456789abcdef-secret");
    assert_eq!(call["contentType"], "application/json");

    stub_fetch(200, r#"{"cluster":"demo"}"#);
    c.set_token(None);
    JsFuture::from(c.status()).await.unwrap();
    let call = to_json(&last_call());
    restore_fetch();
    assert_eq!(call["authorization"], Value::Null);
}

#[wasm_bindgen_test]
fn a_bad_cluster_id_throws_with_a_code() {
    let e = Client::new("http://x", "no/slashes").unwrap_err();
    assert!(is_error(&e));
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_STATE"));
}

// ---------------------------------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------------------------------

fn state(sim: &Simulation) -> Value {
    to_json(&sim.state())
}

fn set(key: &str, value: &str) -> String {
    serde_json::json!({"op": "set", "key": key, "value": value}).to_string()
}

fn masters(st: &Value) -> Vec<u64> {
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["up"] == true && n["role"] == "master")
        .map(|n| n["index"].as_u64().unwrap())
        .collect()
}

#[wasm_bindgen_test]
fn crashing_the_master_elects_a_new_one() {
    let mut sim = Simulation::new(5, 3.0, None).unwrap();
    sim.run(500.0);
    let st = state(&sim);
    assert_eq!(masters(&st).len(), 1, "one master: {st}");
    let old = sim.master().expect("a serving master");
    assert_eq!(masters(&st), [old as u64]);
    let instance = st["nodes"][old]["instance"].as_u64().unwrap();

    sim.crash(old).unwrap();
    assert_eq!(state(&sim)["nodes"][old]["up"], false);
    sim.run(5_000.0);
    let st = state(&sim);
    let new = sim.master().expect("a new master within 5 s");
    assert_ne!(new, old);
    assert_eq!(masters(&st), [new as u64]);
    assert!(st["nodes"][new]["instance"].as_u64().unwrap() > instance);
    assert_eq!(st["violations"], serde_json::json!([]));
}

/// Submits `(client, req)`-tagged `key = value` at `node` until it succeeds, as a client would:
/// with 5% of messages lost a forward can time out, and a retry with the same request number
/// is applied at most once. Returns how many tries it took.
fn submit_until_ok(sim: &mut Simulation, node: usize, key: &str, value: &str, req: u64) -> u32 {
    let change =
        serde_json::json!({"op": "set", "key": key, "value": value, "client": "t", "req": req})
            .to_string();
    for tries in 1..=10 {
        let id = sim.submit(node, change.clone()).unwrap();
        sim.run(1_500.0);
        let st = state(sim);
        let op = st["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"].as_f64() == Some(id))
            .cloned();
        if op.is_some_and(|o| o["ok"] == true) {
            return tries;
        }
    }
    panic!("{key} = {value} never committed: {}", state(sim));
}

#[wasm_bindgen_test]
fn submitted_changes_are_applied_on_every_live_node() {
    let mut sim = Simulation::new(5, 9.0, Some(faults())).unwrap();
    sim.run(300.0);
    submit_until_ok(&mut sim, 1, "a", "1", 1);
    sim.crash(4).unwrap();
    submit_until_ok(&mut sim, 2, "b", "2", 2);
    submit_until_ok(&mut sim, 3, "a", "3", 3);
    sim.run(1_000.0);
    let st = state(&sim);
    for n in st["nodes"].as_array().unwrap() {
        if n["up"] == true {
            assert_eq!(
                n["state"],
                serde_json::json!({"a": "3", "b": "2"}),
                "node {n}"
            );
        } else {
            assert_eq!(n["index"], 4);
        }
    }
    // Messages in flight carry what the dashboard draws.
    let m = &st["messages"][0];
    for key in [
        "id",
        "from",
        "to",
        "method",
        "response",
        "body",
        "sent_at",
        "arrives_at",
    ] {
        assert!(m.get(key).is_some(), "message has {key}: {m}");
    }
    assert_eq!(st["violations"], serde_json::json!([]));
}

fn faults() -> js_sys::Object {
    let o = js_sys::Object::new();
    for (k, v) in [
        ("minDelayMs", 5.0),
        ("maxDelayMs", 40.0),
        ("dropPermille", 50.0),
    ] {
        Reflect::set(&o, &k.into(), &v.into()).unwrap();
    }
    o
}

/// The same calls on a cluster from the same seed; returns the state after each.
fn scripted(seed: f64) -> Vec<String> {
    let mut sim = Simulation::new(5, seed, Some(faults())).unwrap();
    let mut states = Vec::new();
    let mut snap =
        |sim: &Simulation| states.push(String::from(JSON::stringify(&sim.state()).unwrap()));
    sim.run(250.0);
    sim.submit(0, set("k", "1")).unwrap();
    sim.run(100.0);
    snap(&sim);
    let m = sim.master().unwrap_or(0);
    sim.crash(m).unwrap();
    sim.partition(JSON::parse("[[0,1],[2,3,4]]").unwrap())
        .unwrap();
    for _ in 0..50 {
        sim.step();
    }
    snap(&sim);
    sim.heal();
    sim.restart(m).unwrap();
    sim.submit(3, set("k", "2")).unwrap();
    sim.run(3_000.0);
    snap(&sim);
    states
}

#[wasm_bindgen_test]
fn same_seed_same_history() {
    let one = scripted(21.0);
    let two = scripted(21.0);
    assert_eq!(one, two);
    let other = scripted(22.0);
    assert_ne!(one, other, "a different seed gives a different history");
}

#[wasm_bindgen_test]
fn rewind_replays_to_the_same_state() {
    let mut sim = Simulation::new(3, 5.0, Some(faults())).unwrap();
    sim.run(200.0);
    sim.submit(1, set("x", "1")).unwrap();
    sim.run(150.0);
    let mid_steps = sim.steps();
    let mid = String::from(JSON::stringify(&sim.state()).unwrap());
    // (An action made at step T is part of "after step T": move on before acting.)
    sim.run(50.0);
    let m = sim.master().unwrap();
    sim.crash(m).unwrap();
    sim.run(3_000.0);
    let end_steps = sim.steps();
    let end = String::from(JSON::stringify(&sim.state()).unwrap());

    assert_eq!(sim.rewind(mid_steps), mid_steps);
    let again: Value = state(&sim);
    let mid: Value = serde_json::from_str(&mid).unwrap();
    assert_eq!(again["nodes"], mid["nodes"]);
    assert_eq!(again["messages"], mid["messages"]);
    assert_eq!(
        again["horizon"].as_f64(),
        Some(end_steps),
        "the future is kept"
    );

    sim.rewind(end_steps);
    let end: Value = serde_json::from_str(&end).unwrap();
    assert_eq!(state(&sim)["nodes"], end["nodes"]);
    assert_eq!(to_json(&sim.history())[0]["action"], "submit");

    // Acting after a rewind starts a new branch.
    sim.rewind(mid_steps);
    sim.heal();
    assert_eq!(sim.horizon(), mid_steps);
}

#[wasm_bindgen_test]
fn bad_arguments_throw_instead_of_trapping() {
    let e = Simulation::new(0, 1.0, None).unwrap_err();
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_STATE"));
    let mut sim = Simulation::new(3, 1.0, None).unwrap();
    assert!(sim.crash(3).is_err());
    assert!(sim.submit(9, "x".into()).is_err());
    assert!(sim.partition(JSON::parse("[[0],[7]]").unwrap()).is_err());
    assert!(sim.partition(JSON::parse(r#""nope""#).unwrap()).is_err());
    assert!(!sim.drop_message(123_456.0));
    sim.run(100.0);
    assert!(sim.master().is_some(), "still usable");
}
