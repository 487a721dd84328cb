//! `Client`: a cluster's client API over HTTP, using whatever global `fetch` the JavaScript host
//! provides (page, web worker, workerd, Deno, Node 20). No `window` is assumed.
//!
//! Endpoints (below `<baseUrl>/_clusterc/<clusterId>/`):
//!
//! | method | call | body |
//! |---|---|---|
//! | `submit(changes)` | `POST submit` | `{"chg": [...]}` ([`Submit`]), answer [`FailResult`](clusterconsensus::wire::FailResult) with `seq` and `results` |
//! | `cas(key, expect, value)` | `POST submit` | one change `{"op":"cas","key","expect","value"}`, answer `results[0]` = `{ok, value}` |
//! | `casDel(key, expect)` | `POST submit` | one change `{"op":"cas","key","expect","del":true}`, same answer |
//! | `watch(from, onEvent, opts?)` | `GET watch?from=SEQ` | `text/event-stream`, or the long poll `&wait=MS`; see [`crate::watch`] |
//! | `status()` | `GET status` | the node's status object, returned as is |
//! | `get(key, consistent?)` | `GET kv/<key>` (`?consistent=true`) | `{"key","value"}`, or `404` for a missing key (`null`) |
//! | `kv()` | `GET kv` | `{"commit", "items": [[key, value], ...], "next", "count"}`: the first page (1,000 keys) of the node's key-value state |
//! | `addMember(addr, version?)` | `POST members/add` | [`AdminMember`], answer [`FailResult`](clusterconsensus::wire::FailResult) |
//! | `removeMember(addr, version?)` | `POST members/remove` | same |
//!
//! Every failure rejects with an `Error` whose `code` is a protocol code:
//!
//! - the node answered with an error (`fail: true`, or a non-2xx body carrying a code): that code
//!   (`ERR_STATE`, `ERR_MAJORITY`, `ERR_ENCODING`, ...), with `instance` / `master` when known;
//! - `fetch` itself failed (refused, DNS, CORS): `ERR_CONNECT`;
//! - no answer within `timeoutMs` (default 10 s), or a non-2xx answer without a code: `ERR_CALL`;
//! - an answer that is not the expected JSON: `ERR_ENCODING`.
//!
//! A failed `submit` has an unknown outcome (the change may still commit): retry it with the same
//! `client` / `req` in the change so it applies at most once (PROTOCOL.md section 3).

use crate::host::{self, get, put, Request};
use crate::json::Json;
use crate::watch::{Watch, WatchOptions};
use clusterconsensus::wire::{valid_cluster_id, AdminMember, Submit};
use clusterconsensus::{Error, ErrorCode, Method};
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_RESULTS: &str = r#"
/** What a committed submit resolves to (nodes that predate per-change results answer without). */
export interface SubmitResult {
  /** The log position of the committed batch. */
  seq?: number;
  /** One result per change, in order: `{prev}` for a key-value set or del, `{ok, value}` for a cas. */
  results?: Array<{ prev: string | null } | CasResult | unknown>;
}
/** A compare-and-set's outcome: whether it applied, and the key's value after it. */
export interface CasResult {
  ok: boolean;
  value: string | null;
}
/** Makes a cas exactly-once across retries (PROTOCOL.md section 3): the same client and req. */
export interface ChangeTag {
  client?: string;
  req?: number;
}
"#;

/// A client of one cluster, through one node (`baseUrl`). Followers forward submits and admin
/// calls to their master, so any member will do.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) base: String,
    pub(crate) cluster: String,
    pub(crate) timeout_ms: u32,
    /// Sent as `Authorization: Bearer <token>` when set (nodes started with `--token-file`).
    pub(crate) token: Option<String>,
}

#[wasm_bindgen]
impl Client {
    /// `new Client("http://127.0.0.1:9001", "demo")`. A trailing `/` on the base URL is ignored;
    /// an empty base URL means "this page's origin" (relative URLs; browsers only). Throws
    /// `ERR_STATE` for a cluster id outside `[A-Za-z0-9._-]{1,64}`.
    #[wasm_bindgen(constructor)]
    pub fn new(base_url: &str, cluster_id: &str) -> Result<Client, JsValue> {
        Client::build(base_url, cluster_id).map_err(|e| crate::js_error(&e))
    }

    #[wasm_bindgen(getter, js_name = baseUrl)]
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    #[wasm_bindgen(getter, js_name = clusterId)]
    pub fn cluster_id(&self) -> String {
        self.cluster.clone()
    }

    /// Milliseconds before a call gives up with `ERR_CALL` (0: never). Default 10000.
    #[wasm_bindgen(getter, js_name = timeoutMs)]
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    #[wasm_bindgen(setter, js_name = timeoutMs)]
    pub fn set_timeout_ms(&mut self, ms: u32) {
        self.timeout_ms = ms;
    }

    /// The cluster's shared secret, for nodes started with `--token-file`: every call then
    /// carries `Authorization: Bearer <token>` (without it, writes are refused with
    /// `ERR_DENIED`). `null` or `undefined` stops sending it. There is no getter, on purpose.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token.filter(|t| !t.is_empty());
    }

    /// Submits a batch of changes (opaque strings; for the key-value app,
    /// `{"op":"set","key":K,"value":V}`). Resolves once the batch is committed, to
    /// `{seq, results}`: the batch's log position and one result per change (`{prev}` for a
    /// key-value set or del, `{ok, value}` for a cas), or to `undefined` from a node whose
    /// answer carries neither.
    #[wasm_bindgen(unchecked_return_type = "Promise<SubmitResult | undefined>")]
    pub fn submit(&self, changes: Vec<String>) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let answer = this.submit_answer(changes).await?;
            let out = js_sys::Object::new();
            let mut any = false;
            for key in ["seq", "results"] {
                let v = get(&answer, key);
                if !v.is_undefined() && !v.is_null() {
                    put(&out, key, &v);
                    any = true;
                }
            }
            Ok(if any { out.into() } else { JsValue::UNDEFINED })
        })
    }

    /// Compare-and-set in the key-value app: sets `key` to `value` only if its value is
    /// `expect` (`null`: only if the key is absent). Resolves to `{ok, value}`: whether it
    /// applied, and the key's value after the change (so on `ok: false`, the value that was
    /// there instead). `tag` (`{client, req}`) makes it exactly-once across retries of an
    /// unknown outcome. Rejects with `ERR_ENCODING` if the node's answer has no per-change
    /// results (a node older than cas).
    #[wasm_bindgen(unchecked_return_type = "Promise<CasResult>")]
    pub fn cas(
        &self,
        key: String,
        expect: Option<String>,
        value: String,
        #[wasm_bindgen(unchecked_optional_param_type = "ChangeTag")] tag: Option<js_sys::Object>,
    ) -> js_sys::Promise {
        self.cas_change(key, expect, Some(value), tag)
    }

    /// Compare-and-delete: deletes `key` only if its value is `expect`; otherwise like
    /// [`Client::cas`] (`value` is `null` after a delete that applied).
    #[wasm_bindgen(js_name = casDel, unchecked_return_type = "Promise<CasResult>")]
    pub fn cas_del(
        &self,
        key: String,
        expect: Option<String>,
        #[wasm_bindgen(unchecked_optional_param_type = "ChangeTag")] tag: Option<js_sys::Object>,
    ) -> js_sys::Promise {
        self.cas_change(key, expect, None, tag)
    }

    /// Follows the committed entries from `from` on: calls `onEvent` with each (the events and
    /// the options are described with `WatchEvent` and `WatchOptions`) and reconnects through another node
    /// when the connection or the node fails, resuming after the last seq it delivered.
    /// Returns the handle: `close()`, `lastSeq`, `done`.
    pub fn watch(
        &self,
        from: f64,
        #[wasm_bindgen(unchecked_param_type = "(event: WatchEvent) => void | Promise<void>")]
        on_event: js_sys::Function,
        #[wasm_bindgen(unchecked_optional_param_type = "WatchOptions")] opts: Option<
            js_sys::Object,
        >,
    ) -> Result<Watch, JsValue> {
        let opts = WatchOptions::from_js(opts.as_ref()).map_err(|e| crate::js_error(&e))?;
        if !(from >= 0.0 && from.fract() == 0.0 && from <= MAX_SAFE) {
            return Err(crate::js_err(
                ErrorCode::State,
                "watch: from must be a seq (a whole number >= 0)",
            ));
        }
        Ok(Watch::start(self.clone(), from as u64, on_event, opts))
    }

    /// The node's status object (cluster, self, role, instance, commit, master, members,
    /// staged, peers, ...), parsed from its JSON.
    pub fn status(&self) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let (status, text) = this.call("GET", "status", None).await?;
            if !(200..300).contains(&status) {
                return Err(http_error(status, &text));
            }
            js_sys::JSON::parse(&text)
                .map_err(|_| Error::encoding(format!("status is not JSON: {}", clip(&text))))
        })
    }

    /// The value of `key` in the key-value app, or `null` if there is none. By default it
    /// reads the node's applied state, which on a follower may lag its master by a heartbeat;
    /// `get(key, true)` asks for a linearizable read (`?consistent=true`: the node first learns
    /// the master's commit index and waits until it has applied it).
    pub fn get(&self, key: String, consistent: Option<bool>) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let mut path = format!("kv/{}", String::from(js_sys::encode_uri_component(&key)));
            if consistent == Some(true) {
                path.push_str("?consistent=true");
            }
            let (status, text) = this.call("GET", &path, None).await?;
            Ok(match kv_value::<JsValue>(status, &text)? {
                Some(v) => JsValue::from_str(&v),
                None => JsValue::NULL,
            })
        })
    }

    /// The first page of this node's key-value state: `{commit, items: [[key, value], ...],
    /// next, count}` (the first 1,000 keys in key order; `next` is the last key of the page when
    /// more follow, `count` the number of keys).
    pub fn kv(&self) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let (status, text) = this.call("GET", "kv", None).await?;
            if !(200..300).contains(&status) {
                return Err(http_error(status, &text));
            }
            js_sys::JSON::parse(&text)
                .map_err(|_| Error::encoding(format!("kv is not JSON: {}", clip(&text))))
        })
    }

    /// Adds a member (its base URL). `version` is the member-list version the caller saw in
    /// `status()`; a stale one is refused with `ERR_SEQUENCE`. Resolves once committed.
    #[wasm_bindgen(js_name = addMember)]
    pub fn add_member(&self, addr: String, version: Option<f64>) -> js_sys::Promise {
        self.admin(Method::MembersAdd, addr, version)
    }

    /// Removes a member; like [`Client::add_member`]. The last member cannot be removed.
    #[wasm_bindgen(js_name = removeMember)]
    pub fn remove_member(&self, addr: String, version: Option<f64>) -> js_sys::Promise {
        self.admin(Method::MembersRemove, addr, version)
    }
}

use crate::json::MAX_SAFE;

impl Client {
    fn build(base_url: &str, cluster_id: &str) -> Result<Client, Error> {
        if !valid_cluster_id(cluster_id) {
            return Err(Error::state(format!(
                "cluster id \"{cluster_id}\" is not [A-Za-z0-9._-]{{1,64}}"
            )));
        }
        Ok(Client {
            base: base_url.trim_end_matches('/').to_string(),
            cluster: cluster_id.to_string(),
            timeout_ms: 10_000,
            token: None,
        })
    }

    /// `<base>/_clusterc/<cluster>/<path>`.
    fn url(&self, path: &str) -> String {
        cluster_url(&self.base, &self.cluster, path)
    }

    /// The parsed answer of a committed submit, or its error.
    async fn submit_answer(&self, changes: Vec<String>) -> Result<JsValue, Error> {
        let body = Submit {
            chg: changes,
            forwarded: false,
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let (status, text) = self.call("POST", Method::Submit.path(), Some(body)).await?;
        fail_result(status, &text)
    }

    fn cas_change(
        &self,
        key: String,
        expect: Option<String>,
        value: Option<String>,
        tag: Option<js_sys::Object>,
    ) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let tag = tag.map(JsValue::from).unwrap_or(JsValue::UNDEFINED);
            let req = get(&tag, "req");
            let change = CasChange {
                op: "cas",
                key: &key,
                expect: expect.as_deref(),
                del: value.is_none(),
                value: value.as_deref(),
                client: get(&tag, "client").as_string(),
                req: match req.as_f64() {
                    Some(r) if r >= 0.0 && r.fract() == 0.0 && r <= MAX_SAFE => Some(r as u64),
                    None if req.is_undefined() || req.is_null() => None,
                    _ => return Err(Error::state("cas: tag.req must be a whole number >= 0")),
                },
            };
            let change = serde_json::to_string(&change).unwrap_or_default();
            let answer = this.submit_answer(vec![change]).await?;
            let r = cas_result(&answer)?;
            let out = js_sys::Object::new();
            put(&out, "ok", &JsValue::from_bool(r.ok));
            put(
                &out,
                "value",
                &r.value.map_or(JsValue::NULL, |v| JsValue::from_str(&v)),
            );
            Ok(out.into())
        })
    }

    fn admin(&self, method: Method, addr: String, version: Option<f64>) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let body = AdminMember {
                version: version.map(|v| v as u64),
                ..AdminMember::new(addr)
            };
            let body = serde_json::to_string(&body).unwrap_or_default();
            let (status, text) = this.call("POST", method.path(), Some(body)).await?;
            fail_result::<JsValue>(status, &text)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), Error> {
        let url = self.url(path);
        let mut req = Request::new(&url, method, self.token.as_deref());
        req.body = body;
        req.timeout_ms = self.timeout_ms;
        host::fetch_text(req).await
    }
}

/// `<base>/_clusterc/<cluster>/<path>`: the one place a method's URL is built.
pub(crate) fn cluster_url(base: &str, cluster: &str, path: &str) -> String {
    format!("{base}/_clusterc/{cluster}/{path}")
}

/// A key-value compare-and-set, as submitted: `expect` is written out as `null` when absent,
/// since `null` is what it means ("only if the key is absent").
#[derive(Serialize)]
struct CasChange<'a> {
    op: &'static str,
    key: &'a str,
    expect: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    del: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    req: Option<u64>,
}

/// The outcome of one cas: `results[0]` of its submit answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CasOutcome {
    ok: bool,
    value: Option<String>,
}

/// Runs `f` as a JS promise that rejects with [`crate::js_error`].
pub(crate) fn promise<F>(f: F) -> js_sys::Promise
where
    F: core::future::Future<Output = Result<JsValue, Error>> + 'static,
{
    wasm_bindgen_futures::future_to_promise(async move { f.await.map_err(|e| crate::js_error(&e)) })
}

// ---------------------------------------------------------------------------------------------
// Mapping answers to results: plain Rust over [`Json`], tested natively below.
// ---------------------------------------------------------------------------------------------

fn parse<J: Json>(text: &str, what: &str) -> Result<J, Error> {
    J::parse(text).ok_or_else(|| Error::encoding(format!("{what} is not JSON: {}", clip(text))))
}

/// A call answered with a [`FailResult`](clusterconsensus::wire::FailResult) (submit, admin
/// calls): the parsed answer once it says the call succeeded, else its error.
fn fail_result<J: Json>(status: u16, text: &str) -> Result<J, Error> {
    if !(200..300).contains(&status) {
        return Err(http_error(status, text));
    }
    let answer: J = parse(text, "the answer")?;
    fail_of(&answer)?;
    Ok(answer)
}

/// `FailResult::into_result` of a parsed answer: `Ok` for `fail: false` without an error; the
/// error with the answer's `instance` when it has none of its own; `ERR_CALL` for a failure
/// without an error; `ERR_ENCODING` for anything that is not a `FailResult`.
fn fail_of<J: Json>(answer: &J) -> Result<(), Error> {
    let bad = |why: &str| Error::encoding(format!("bad submit answer: {why}"));
    let fail = answer
        .get("fail")
        .and_then(|f| f.as_bool())
        .ok_or_else(|| bad("no \"fail\": true or false"))?;
    let code = answer
        .field("err")
        .and_then(|e| e.field("code"))
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    if code.is_empty() {
        return match fail {
            false => Ok(()),
            true => Err(Error::new(ErrorCode::Call, "failed without an error")),
        };
    }
    let code =
        ErrorCode::parse(&code).ok_or_else(|| bad(&format!("unknown error code \"{code}\"")))?;
    let message = answer
        .field("err")
        .and_then(|e| e.field("err"))
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let e = Error::new(code, message);
    Err(match answer.field("instance").and_then(|i| i.as_u64()) {
        Some(i) => e.with_instance(i),
        None => e,
    })
}

/// The result of the single cas in a committed submit's answer.
fn cas_result<J: Json>(answer: &J) -> Result<CasOutcome, Error> {
    let Some(results) = answer.field("results") else {
        return Err(Error::encoding(
            "cas: the node's answer has no per-change results (a node older than cas?)",
        ));
    };
    let results = results
        .items()
        .ok_or_else(|| Error::encoding("cas: results is not an array"))?;
    let [r] = results.as_slice() else {
        return Err(Error::encoding(format!(
            "cas: {} results for one change",
            results.len()
        )));
    };
    let ok = r
        .get("ok")
        .and_then(|o| o.as_bool())
        .ok_or_else(|| Error::encoding("cas: the result is not {ok, value}"))?;
    let value = match r.field("value") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| Error::encoding("cas: the result's value is not a string"))?,
        ),
    };
    Ok(CasOutcome { ok, value })
}

/// The value of a `GET kv/<key>` answer: `Some` on 200, `None` on a 404 without an error code.
fn kv_value<J: Json>(status: u16, text: &str) -> Result<Option<String>, Error> {
    match status {
        200..=299 => {
            let kv: J = parse(text, "the kv answer")?;
            if !kv.is_object() {
                return Err(Error::encoding("the kv answer is not {key, value}"));
            }
            match kv.field("value") {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(Some)
                    .ok_or_else(|| Error::encoding("the kv answer's value is not a string")),
            }
        }
        // The native host answers a missing key with 404 `{"key": K, "value": null}` and an
        // unknown cluster id with 404 and an error code.
        404 => match coded_error::<J>(text) {
            Some(e) => Err(e),
            None => Ok(None),
        },
        _ => Err(http_error(status, text)),
    }
}

/// The error of a non-2xx answer: the code in its body if it has one (`{"code","err"}` as the
/// host's 400s are, or a `FailResult`), else `ERR_CALL` with the status.
pub(crate) fn http_error(status: u16, text: &str) -> Error {
    coded_error::<JsValueOr>(text).unwrap_or_else(|| {
        Error::new(
            ErrorCode::Call,
            format!("HTTP {status}: {}", clip(text.trim())),
        )
    })
}

/// The JSON the client reads with: the host's in JavaScript, serde_json's in native tests.
#[cfg(not(test))]
pub(crate) type JsValueOr = JsValue;
#[cfg(test)]
pub(crate) type JsValueOr = serde_json::Value;

/// An error code carried by a body, in either shape the hosts use: a `FailResult`, or
/// `{"code", "err", "instance"}`.
pub(crate) fn coded_error<J: Json>(text: &str) -> Option<Error> {
    let body = J::parse(text)?;
    if body.get("fail").is_some() {
        return fail_of(&body).err();
    }
    let code = ErrorCode::parse(&body.field("code")?.as_str()?)?;
    let message = body
        .field("err")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let e = Error::new(code, message);
    Some(match body.field("instance").and_then(|i| i.as_u64()) {
        Some(i) => e.with_instance(i),
        None => e,
    })
}

pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fail_result(status: u16, text: &str) -> Result<(), Error> {
        super::fail_result::<Value>(status, text).map(|_| ())
    }

    fn cas_result(text: &str) -> Result<CasOutcome, Error> {
        super::cas_result(&Value::parse(text).unwrap())
    }

    fn kv_value(status: u16, text: &str) -> Result<Option<String>, Error> {
        super::kv_value::<Value>(status, text)
    }

    #[test]
    fn urls_and_cluster_ids() {
        let c = Client::build("http://127.0.0.1:9001/", "demo").unwrap();
        assert_eq!(
            c.url("submit"),
            "http://127.0.0.1:9001/_clusterc/demo/submit"
        );
        assert_eq!(
            c.url(Method::MembersAdd.path()),
            "http://127.0.0.1:9001/_clusterc/demo/members/add"
        );
        let e = Client::build("http://x", "a/b").unwrap_err();
        assert_eq!(e.code, ErrorCode::State);
    }

    #[test]
    fn fail_results_map_to_their_codes() {
        assert_eq!(fail_result(200, r#"{"fail":false,"err":null}"#), Ok(()));
        let e = fail_result(
            200,
            r#"{"fail":true,"err":{"code":"ERR_STATE","err":"no master"},"instance":4}"#,
        )
        .unwrap_err();
        assert_eq!((e.code, e.instance), (ErrorCode::State, Some(4)));
        let e = fail_result(200, r#"{"fail":true}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Call);
        let e = fail_result(200, "<html>").unwrap_err();
        assert_eq!(e.code, ErrorCode::Encoding);
    }

    #[test]
    fn http_errors_keep_the_body_code() {
        let e = fail_result(400, r#"{"code":"ERR_ENCODING","err":"bad submit body"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Encoding, "bad submit body")
        );
        let e = fail_result(
            503,
            r#"{"fail":true,"err":{"code":"ERR_MAJORITY","err":"no quorum"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Majority);
        let e = fail_result(502, "Bad Gateway").unwrap_err();
        assert_eq!(e.code, ErrorCode::Call);
        assert!(e.message.contains("502"), "{}", e.message);
    }

    #[test]
    fn cas_changes_and_their_results() {
        let change = |expect, value: Option<&str>, client: Option<&str>, req| {
            serde_json::to_string(&CasChange {
                op: "cas",
                key: "lock",
                expect,
                del: value.is_none(),
                value,
                client: client.map(Into::into),
                req,
            })
            .unwrap()
        };
        assert_eq!(
            change(None, Some("me"), None, None),
            r#"{"op":"cas","key":"lock","expect":null,"value":"me"}"#
        );
        assert_eq!(
            change(Some("me"), None, Some("c1"), Some(4)),
            r#"{"op":"cas","key":"lock","expect":"me","del":true,"client":"c1","req":4}"#
        );

        let ok = r#"{"fail":false,"err":null,"seq":12,"results":[{"ok":true,"value":"me"}]}"#;
        assert_eq!(
            cas_result(ok),
            Ok(CasOutcome {
                ok: true,
                value: Some("me".into())
            })
        );
        let lost = r#"{"fail":false,"seq":13,"results":[{"ok":false,"value":"you"}]}"#;
        assert_eq!(
            cas_result(lost),
            Ok(CasOutcome {
                ok: false,
                value: Some("you".into())
            })
        );
        let deleted = r#"{"fail":false,"results":[{"ok":true,"value":null}]}"#;
        assert_eq!(
            cas_result(deleted),
            Ok(CasOutcome {
                ok: true,
                value: None
            })
        );
        // A node without per-change results, or with results of another shape, is an error,
        // never a cas that looks as if it applied.
        for text in [
            r#"{"fail":false,"err":null}"#,
            r#"{"fail":false,"results":[]}"#,
            r#"{"fail":false,"results":[{"prev":null}]}"#,
            r#"{"fail":false,"results":[{"ok":true},{"ok":true}]}"#,
        ] {
            assert_eq!(
                cas_result(text).unwrap_err().code,
                ErrorCode::Encoding,
                "{text}"
            );
        }
    }

    #[test]
    fn kv_answers() {
        assert_eq!(
            kv_value(200, r#"{"key":"a","value":"1"}"#),
            Ok(Some("1".into()))
        );
        assert_eq!(kv_value(404, ""), Ok(None));
        assert_eq!(kv_value(404, r#"{"key":"a"}"#), Ok(None));
        assert_eq!(kv_value(404, r#"{"key":"a","value":null}"#), Ok(None));
        let e = kv_value(
            404,
            r#"{"code":"ERR_STATE","err":"this node hosts no cluster \"x\""}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::State);
        assert_eq!(kv_value(200, "nope").unwrap_err().code, ErrorCode::Encoding);
        assert_eq!(kv_value(500, "boom").unwrap_err().code, ErrorCode::Call);
    }
}
