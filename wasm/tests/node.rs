//! The JavaScript-facing API under Node (wasm-bindgen-test-runner runs these in Node 20):
//! `Client`'s mapping of answers and transport failures to errors with a `code`, against a
//! stubbed global `fetch` and against a closed port; `cas` and the per-change results of
//! `submit`; `watch` over stubbed streams (events cut at any byte, a reconnect to the next node
//! with `Last-Event-ID`, the gap error, `close()`, the long poll); and, with the `sim` feature
//! (the default), `Simulation`'s failover, replication, determinism and rewind through the same
//! calls the dashboard makes.
//!
//! ```sh
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test -p clusterconsensus-wasm --target wasm32-unknown-unknown --test node
//! ```
#![cfg(target_arch = "wasm32")]

use clusterconsensus_wasm::{Client, Watch};
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
// Per-change results and compare-and-set
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen_test]
async fn submit_resolves_to_the_seq_and_results_of_the_answer() {
    stub_fetch(
        200,
        r#"{"fail":false,"err":null,"seq":41,"results":[{"prev":null},{"prev":"1"}]}"#,
    );
    let r = JsFuture::from(client().submit(vec!["c1".into(), "c2".into()]))
        .await
        .unwrap();
    restore_fetch();
    assert_eq!(
        to_json(&r),
        serde_json::json!({"seq": 41, "results": [{"prev": null}, {"prev": "1"}]})
    );
}

#[wasm_bindgen_test]
async fn cas_submits_one_change_and_resolves_to_its_result() {
    stub_fetch(
        200,
        r#"{"fail":false,"err":null,"seq":7,"results":[{"ok":true,"value":"me"}]}"#,
    );
    let r = JsFuture::from(client().cas("lock".into(), None, "me".into(), None))
        .await
        .unwrap();
    let call = to_json(&last_call());
    assert_eq!(to_json(&r), serde_json::json!({"ok": true, "value": "me"}));
    assert_eq!(
        call["url"],
        "http://cluster.test:9001/_clusterc/demo/submit"
    );
    let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    let change: Value = serde_json::from_str(body["chg"][0].as_str().unwrap()).unwrap();
    assert_eq!(body["chg"].as_array().unwrap().len(), 1);
    assert_eq!(
        change,
        serde_json::json!({"op": "cas", "key": "lock", "expect": null, "value": "me"})
    );

    // Lost: not an error, the current value comes back.
    stub_fetch(
        200,
        r#"{"fail":false,"seq":8,"results":[{"ok":false,"value":"you"}]}"#,
    );
    let r = JsFuture::from(client().cas("lock".into(), Some("me".into()), "x".into(), None))
        .await
        .unwrap();
    assert_eq!(
        to_json(&r),
        serde_json::json!({"ok": false, "value": "you"})
    );

    // casDel, with a tag for exactly-once retries.
    stub_fetch(
        200,
        r#"{"fail":false,"seq":9,"results":[{"ok":true,"value":null}]}"#,
    );
    let tag = JSON::parse(r#"{"client":"c1","req":3}"#).unwrap();
    let r = JsFuture::from(client().cas_del("lock".into(), Some("you".into()), Some(tag.into())))
        .await
        .unwrap();
    let call = to_json(&last_call());
    assert_eq!(to_json(&r), serde_json::json!({"ok": true, "value": null}));
    let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    let change: Value = serde_json::from_str(body["chg"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        change,
        serde_json::json!({"op": "cas", "key": "lock", "expect": "you", "del": true, "client": "c1", "req": 3})
    );

    // A refusal keeps its code; an answer without results is not taken for a success.
    stub_fetch(
        200,
        r#"{"fail":true,"err":{"code":"ERR_MAJORITY","err":"no quorum"}}"#,
    );
    let (code, _) = rejection(client().cas("k".into(), None, "v".into(), None)).await;
    assert_eq!(code, "ERR_MAJORITY");
    stub_fetch(200, r#"{"fail":false,"err":null}"#);
    let (code, e) = rejection(client().cas("k".into(), None, "v".into(), None)).await;
    restore_fetch();
    assert_eq!(code, "ERR_ENCODING");
    let message = get(&e, "message").as_string().unwrap();
    assert!(message.contains("no per-change results"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen(inline_js = r#"
let answers = [];
let watchCalls = [];
export function stub_answers(list) {
  answers = list;
  watchCalls = [];
  globalThis.fetch = async (url, init) => {
    watchCalls.push({ url: String(url), lastEventId: init?.headers?.["last-event-id"] ?? null,
                      accept: init?.headers?.["accept"] ?? null });
    const a = answers.shift();
    if (!a) throw new TypeError("fetch failed (no stubbed answer left)");
    if (a.refuse) throw new TypeError("connect ECONNREFUSED");
    const bytes = new TextEncoder().encode(a.text ?? "");
    const cuts = [0, ...(a.cuts ?? []), bytes.length];
    // One chunk per read; then the end, a cut connection (an error after the last chunk:
    // erroring at once would drop the chunks still queued), or nothing more ever.
    let i = 0;
    const body = new ReadableStream({
      pull(c) {
        if (i + 1 < cuts.length) {
          c.enqueue(bytes.slice(cuts[i], cuts[i + 1]));
          i++;
        } else if (a.cut) c.error(new TypeError("terminated: other side closed"));
        else if (!a.hang) c.close();
        else return new Promise(() => {});
      },
    });
    return new Response(body, { status: a.status ?? 200,
      headers: { "content-type": a.type ?? "text/event-stream" } });
  };
}
export function watch_calls() { return watchCalls; }
/** An onEvent that records events; after `closeAfter` of them it closes `handle.w`. */
export function recorder(closeAfter) {
  const events = [];
  const handle = { w: null };
  const onEvent = (e) => {
    events.push(e);
    if (events.length === closeAfter) handle.w.close();
  };
  return { events, handle, onEvent };
}
export function set_handle(rec, w) { rec.handle.w = w; }
export function on_event(rec) { return rec.onEvent; }
export function events(rec) { return rec.events; }
export function options(json) { return JSON.parse(json); }
"#)]
extern "C" {
    fn stub_answers(list: JsValue);
    fn watch_calls() -> JsValue;
    fn recorder(close_after: u32) -> JsValue;
    fn set_handle(rec: &JsValue, w: Watch);
    fn on_event(rec: &JsValue) -> js_sys::Function;
    fn events(rec: &JsValue) -> JsValue;
    fn options(json: &str) -> js_sys::Object;
}

/// Starts a watch from `from` through `client()` with the options in `opts` (JSON), against
/// the stubbed `answers`; returns the recorder, the handle and its `done` promise.
fn start_watch(
    answers: Value,
    from: f64,
    opts: &str,
    close_after: u32,
) -> (JsValue, js_sys::Promise) {
    stub_answers(JSON::parse(&answers.to_string()).unwrap());
    let rec = recorder(close_after);
    let w = client()
        .watch(from, on_event(&rec), Some(options(opts)))
        .unwrap();
    let done = w.done();
    set_handle(&rec, w);
    (rec, done)
}

#[wasm_bindgen_test]
async fn watch_reconnects_to_the_next_node_without_gap_or_duplicate() {
    let first = "id: 5\ndata: {\"seq\":5,\"chg\":[\"a\"]}\n\n\
                 event: progress\ndata: {\"commit\":5}\n\n\
                 id: 6\ndata: {\"seq\":6,\"ch";
    // The second node resends 5 (it must not be delivered twice); the text is cut inside "é".
    let second = "id: 5\ndata: {\"seq\":5,\"chg\":[\"a\"]}\n\n\
                  id: 6\r\ndata: {\"seq\":6,\"chg\":[\"caf\u{e9}\"]}\r\n\r\n\
                  id: 7\nevent: members\ndata: {\"seq\":7,\"members\":[\"http://m1\"],\"learners\":[]}\n\n\
                  event: error\ndata: {\"code\":\"ERR_STATE\",\"err\":\"the watcher fell behind\"}\n\n";
    let cut_in_e = second.find('\u{e9}').unwrap() + 1;
    let third =
        "event: error\ndata: {\"code\":\"ERR_GAP\",\"err\":\"compacted\",\"oldest\":100}\n\n";
    let answers = serde_json::json!([
        {"text": first, "cuts": [3, 40], "cut": true},
        {"text": second, "cuts": [cut_in_e]},
        {"text": third},
    ]);
    let (rec, done) = start_watch(answers, 5.0, r#"{"nodes":["http://other.test:9002/"]}"#, 0);
    let e = JsFuture::from(done).await.expect_err("stops at the gap");
    restore_fetch();
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_GAP"));
    assert_eq!(get(&e, "oldest").as_f64(), Some(100.0));
    assert_eq!(
        to_json(&events(&rec)),
        serde_json::json!([
            {"type": "entry", "seq": 5, "chg": ["a"]},
            {"type": "progress", "commit": 5},
            {"type": "entry", "seq": 6, "chg": ["caf\u{e9}"]},
            {"type": "members", "seq": 7, "members": ["http://m1"], "learners": []},
            {"type": "error", "code": "ERR_GAP", "err": "compacted", "oldest": 100},
        ])
    );
    // A given node list is used as given; each new connection resumes after the last seq.
    assert_eq!(
        to_json(&watch_calls()),
        serde_json::json!([
            {"url": "http://cluster.test:9001/_clusterc/demo/watch?from=5", "lastEventId": null, "accept": "text/event-stream"},
            {"url": "http://other.test:9002/_clusterc/demo/watch?from=6", "lastEventId": "5", "accept": "text/event-stream"},
            {"url": "http://cluster.test:9001/_clusterc/demo/watch?from=8", "lastEventId": "7", "accept": "text/event-stream"},
        ])
    );
}

#[wasm_bindgen_test]
async fn close_stops_the_watch_and_resolves_done() {
    // Three events in one chunk, and the stream stays open: closing in the second event's
    // callback delivers no third.
    let text = "id: 1\ndata: {\"seq\":1,\"chg\":[]}\n\nid: 2\ndata: {\"seq\":2,\"chg\":[]}\n\n\
                id: 3\ndata: {\"seq\":3,\"chg\":[]}\n\n";
    let answers = serde_json::json!([{"text": text, "hang": true}]);
    let (rec, done) = start_watch(answers, 1.0, r#"{"nodes":[], "prefix":"a/b"}"#, 2);
    let r = JsFuture::from(done).await;
    restore_fetch();
    assert!(r.unwrap().is_undefined(), "done resolves on close()");
    let seqs: Vec<u64> = to_json(&events(&rec))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(
        to_json(&watch_calls())[0]["url"],
        "http://cluster.test:9001/_clusterc/demo/watch?from=1&prefix=a%2Fb"
    );
}

#[wasm_bindgen_test]
async fn a_watch_stops_on_a_refusal_every_node_gives() {
    // A 404 from both nodes (say, nodes without the watch endpoint): stop with its code rather
    // than retrying forever. A refused connection in between does not count as a refusal.
    let nf = r#"{"code":"ERR_STATE","err":"this node hosts no cluster \"demo\""}"#;
    let answers = serde_json::json!([
        {"status": 404, "type": "application/json", "text": nf},
        {"refuse": true},
        {"status": 404, "type": "application/json", "text": nf},
        {"status": 404, "type": "application/json", "text": nf},
    ]);
    let (rec, done) = start_watch(answers, 0.0, r#"{"nodes":["http://other.test"]}"#, 0);
    let e = JsFuture::from(done).await.expect_err("gives up");
    let calls = to_json(&watch_calls());
    restore_fetch();
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_STATE"));
    assert_eq!(calls.as_array().unwrap().len(), 4);
    assert_eq!(to_json(&events(&rec)), serde_json::json!([]));

    let answers = serde_json::json!([
        {"status": 401, "type": "application/json", "text": r#"{"code":"ERR_DENIED","err":"missing or wrong token"}"#},
    ]);
    let (_, done) = start_watch(answers, 0.0, r#"{"nodes":[]}"#, 0);
    let e = JsFuture::from(done).await.expect_err("denied");
    restore_fetch();
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_DENIED"));
}

#[wasm_bindgen_test]
async fn the_long_poll_form() {
    let answers = serde_json::json!([
        {"type": "application/json", "text": r#"{"events":[{"seq":3,"chg":["x"]},{"seq":4,"members":["http://a"],"learners":[]}],"commit":4}"#},
        {"type": "application/json", "text": r#"{"events":[],"commit":4}"#},
        {"status": 410, "type": "application/json", "text": r#"{"code":"ERR_GAP","err":"compacted","oldest":9}"#},
    ]);
    let (rec, done) = start_watch(
        answers,
        3.0,
        r#"{"nodes":[], "longPoll": true, "pollWaitMs": 250}"#,
        0,
    );
    let e = JsFuture::from(done).await.expect_err("stops at the gap");
    restore_fetch();
    assert_eq!(get(&e, "code").as_string().as_deref(), Some("ERR_GAP"));
    assert_eq!(get(&e, "oldest").as_f64(), Some(9.0));
    assert_eq!(
        to_json(&events(&rec)),
        serde_json::json!([
            {"type": "entry", "seq": 3, "chg": ["x"]},
            {"type": "members", "seq": 4, "members": ["http://a"], "learners": []},
            {"type": "progress", "commit": 4},
            {"type": "error", "code": "ERR_GAP", "err": "compacted", "oldest": 9},
        ])
    );
    let urls: Vec<String> = to_json(&watch_calls())
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        urls,
        [
            "http://cluster.test:9001/_clusterc/demo/watch?from=3&wait=250",
            "http://cluster.test:9001/_clusterc/demo/watch?from=5&wait=250",
            "http://cluster.test:9001/_clusterc/demo/watch?from=5&wait=250",
        ]
    );
}

#[wasm_bindgen_test]
fn bad_watch_arguments_throw() {
    let f = js_sys::Function::new_no_args("");
    for (from, opts) in [
        (-1.0, "{}"),
        (1.5, "{}"),
        (0.0, r#"{"nodes":"http://a"}"#),
        (0.0, r#"{"idleTimeoutMs":5}"#),
        (0.0, r#"{"prefix":3}"#),
    ] {
        let e = client()
            .watch(from, f.clone(), Some(options(opts)))
            .expect_err(opts);
        assert_eq!(
            get(&e, "code").as_string().as_deref(),
            Some("ERR_STATE"),
            "{from} {opts}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Simulation (the full module only)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "sim")]
mod simulation {
    use super::*;
    use clusterconsensus_wasm::Simulation;

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
}
