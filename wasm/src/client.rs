//! `Client`: a cluster's client API over HTTP, using whatever global `fetch` the JavaScript host
//! provides (page, web worker, workerd, Deno, Node 20). No `window` is assumed.
//!
//! Endpoints (below `<baseUrl>/_clusterc/<clusterId>/`):
//!
//! | method | call | body |
//! |---|---|---|
//! | `submit(changes)` | `POST submit` | `{"chg": [...]}` ([`Submit`]), answer [`FailResult`] |
//! | `status()` | `GET status` | the node's status object, returned as is |
//! | `get(key, consistent?)` | `GET kv/<key>` (`?consistent=true`) | `{"key","value"}`, or `404` for a missing key (`null`) |
//! | `kv()` | `GET kv` | `{"commit", "data": {...}}`, the node's whole key-value state |
//! | `addMember(addr, version?)` | `POST members/add` | [`AdminMember`], answer [`FailResult`] |
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

use clusterconsensus::wire::{valid_cluster_id, AdminMember, Submit};
use clusterconsensus::{Error, ErrorCode, Method, Response};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

/// A client of one cluster, through one node (`baseUrl`). Followers forward submits and admin
/// calls to their master, so any member will do.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    cluster: String,
    timeout_ms: u32,
    /// Sent as `Authorization: Bearer <token>` when set (nodes started with `--token-file`).
    token: Option<String>,
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
    /// `{"op":"set","key":K,"value":V}`). Resolves once the batch is committed.
    pub fn submit(&self, changes: Vec<String>) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let body = Submit {
                chg: changes,
                forwarded: false,
            };
            let body = serde_json::to_string(&body).unwrap_or_default();
            let (status, text) = this.call("POST", Method::Submit.path(), Some(body)).await?;
            fail_result(status, &text)?;
            Ok(JsValue::UNDEFINED)
        })
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
            Ok(match kv_value(status, &text)? {
                Some(v) => JsValue::from_str(&v),
                None => JsValue::NULL,
            })
        })
    }

    /// This node's whole key-value state: `{commit, data: {key: value, ...}}`.
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

impl Client {
    fn build(base_url: &str, cluster_id: &str) -> Result<Client, Error> {
        if !valid_cluster_id(cluster_id) {
            return Err(Error::state(format!(
                "cluster id {cluster_id:?} is not [A-Za-z0-9._-]{{1,64}}"
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
        format!("{}/_clusterc/{}/{}", self.base, self.cluster, path)
    }

    fn admin(&self, method: Method, addr: String, version: Option<f64>) -> js_sys::Promise {
        let this = self.clone();
        promise(async move {
            let body = AdminMember {
                addr,
                version: version.map(|v| v as u64),
                forwarded: false,
            };
            let body = serde_json::to_string(&body).unwrap_or_default();
            let (status, text) = this.call("POST", method.path(), Some(body)).await?;
            fail_result(status, &text)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), Error> {
        host::fetch(
            &self.url(path),
            method,
            body,
            self.token.as_deref(),
            self.timeout_ms,
        )
        .await
    }
}

/// Runs `f` as a JS promise that rejects with [`crate::js_error`].
fn promise<F>(f: F) -> js_sys::Promise
where
    F: core::future::Future<Output = Result<JsValue, Error>> + 'static,
{
    wasm_bindgen_futures::future_to_promise(async move { f.await.map_err(|e| crate::js_error(&e)) })
}

// ---------------------------------------------------------------------------------------------
// Mapping answers to results: plain Rust, tested natively below.
// ---------------------------------------------------------------------------------------------

/// The result of a call answered with a [`FailResult`] (submit, admin calls).
fn fail_result(status: u16, text: &str) -> Result<(), Error> {
    if !(200..300).contains(&status) {
        return Err(http_error(status, text));
    }
    match Response::decode(Method::Submit, text.as_bytes())? {
        Response::Fail(r) => r.into_result(),
        // decode(Submit) only produces Fail; anything else would be a core bug.
        _ => Err(Error::encoding("unexpected response shape")),
    }
}

/// The value of a `GET kv/<key>` answer: `Some` on 200, `None` on a 404 without an error code.
fn kv_value(status: u16, text: &str) -> Result<Option<String>, Error> {
    #[derive(Deserialize)]
    struct Kv {
        #[serde(default)]
        value: Option<String>,
    }
    match status {
        200..=299 => serde_json::from_str::<Kv>(text)
            .map(|kv| kv.value)
            .map_err(|e| Error::encoding(format!("kv answer is not {{key, value}}: {e}"))),
        // The native host answers a missing key with 404 `{"key": K, "value": null}` and an
        // unknown cluster id with 404 and an error code.
        404 => match coded_error(text) {
            Some(e) => Err(e),
            None => Ok(None),
        },
        _ => Err(http_error(status, text)),
    }
}

/// The error of a non-2xx answer: the code in its body if it has one (`{"code","err"}` as the
/// host's 400s are, or a `FailResult`), else `ERR_CALL` with the status.
fn http_error(status: u16, text: &str) -> Error {
    coded_error(text).unwrap_or_else(|| {
        Error::new(
            ErrorCode::Call,
            format!("HTTP {status}: {}", clip(text.trim())),
        )
    })
}

/// An error code carried by a body, in either shape the hosts use.
fn coded_error(text: &str) -> Option<Error> {
    #[derive(Deserialize)]
    struct Flat {
        code: String,
        #[serde(default)]
        err: serde_json::Value,
        #[serde(default)]
        instance: Option<u64>,
    }
    if let Ok(Response::Fail(r)) = Response::decode(Method::Submit, text.as_bytes()) {
        if let Err(e) = r.into_result() {
            return Some(e);
        }
    }
    let flat: Flat = serde_json::from_str(text).ok()?;
    let code = ErrorCode::parse(&flat.code)?;
    let message = match flat.err {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let e = Error::new(code, message);
    Some(match flat.instance {
        Some(i) => e.with_instance(i),
        None => e,
    })
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------
// The host's fetch.
// ---------------------------------------------------------------------------------------------

cfg_if::cfg_if! {
    if #[cfg(target_arch = "wasm32")] {
        mod host {
            use super::*;
            use wasm_bindgen::JsCast;
            use wasm_bindgen_futures::JsFuture;

            /// One HTTP exchange with the global `fetch` (`globalThis.fetch`, looked up at call
            /// time so a test or a polyfill may replace it). Returns the status and body text.
            pub async fn fetch(
                url: &str,
                method: &str,
                body: Option<String>,
                token: Option<&str>,
                timeout_ms: u32,
            ) -> Result<(u16, String), Error> {
                let global = js_sys::global();
                let fetch: js_sys::Function = get(&global, "fetch")
                    .dyn_into()
                    .map_err(|_| Error::new(ErrorCode::Call, "this host has no global fetch"))?;
                let init = js_sys::Object::new();
                put(&init, "method", &method.into());
                let headers = js_sys::Object::new();
                if let Some(token) = token {
                    put(&headers, "authorization", &format!("Bearer {token}").into());
                }
                if let Some(body) = body {
                    put(&headers, "content-type", &"application/json".into());
                    put(&init, "body", &body.into());
                }
                put(&init, "headers", &headers);
                if let Some(signal) = timeout_signal(timeout_ms) {
                    put(&init, "signal", &signal);
                }
                let started = fetch
                    .call2(&global, &url.into(), &init)
                    .map_err(|e| fetch_error(url, &e))?;
                let answer = JsFuture::from(js_sys::Promise::resolve(&started))
                    .await
                    .map_err(|e| fetch_error(url, &e))?;
                // Not `dyn_into`: in workerd and Node the object need not be this realm's Response.
                let answer: web_sys::Response = answer.unchecked_into();
                let status = answer.status();
                let text = answer
                    .text()
                    .map_err(|e| fetch_error(url, &e))?;
                let text = JsFuture::from(text).await.map_err(|e| fetch_error(url, &e))?;
                Ok((status, text.as_string().unwrap_or_default()))
            }

            /// `AbortSignal.timeout(ms)` where the host has it (browsers, Node 18+, workerd, Deno).
            fn timeout_signal(ms: u32) -> Option<JsValue> {
                if ms == 0 {
                    return None;
                }
                let class = get(&js_sys::global(), "AbortSignal");
                let timeout: js_sys::Function = get(&class, "timeout").dyn_into().ok()?;
                timeout.call1(&class, &JsValue::from_f64(ms as f64)).ok()
            }

            /// A rejected fetch: a timeout is `ERR_CALL`; anything else (refused, DNS, CORS) is
            /// `ERR_CONNECT`.
            fn fetch_error(url: &str, e: &JsValue) -> Error {
                let name = get(e, "name").as_string().unwrap_or_default();
                let message = get(e, "message").as_string().unwrap_or_else(|| format!("{e:?}"));
                let cause = get(&get(e, "cause"), "message").as_string();
                let detail = match cause {
                    Some(c) if !c.is_empty() => format!("{message} ({c})"),
                    _ => message,
                };
                if name == "TimeoutError" || name == "AbortError" {
                    Error::new(ErrorCode::Call, format!("{url}: no answer in time: {detail}"))
                } else {
                    Error::new(ErrorCode::Connect, format!("{url}: {detail}"))
                }
            }

            fn get(target: &JsValue, key: &str) -> JsValue {
                if target.is_undefined() || target.is_null() {
                    return JsValue::UNDEFINED;
                }
                js_sys::Reflect::get(target, &key.into()).unwrap_or(JsValue::UNDEFINED)
            }

            fn put(target: &JsValue, key: &str, value: &JsValue) {
                let _ = js_sys::Reflect::set(target, &key.into(), value);
            }
        }
    } else {
        mod host {
            use super::*;

            /// Outside a JavaScript host there is no `fetch`; the crate still builds (and its
            /// pure mapping code is tested) on the native target.
            pub async fn fetch(
                url: &str,
                _method: &str,
                _body: Option<String>,
                _token: Option<&str>,
                _timeout_ms: u32,
            ) -> Result<(u16, String), Error> {
                Err(Error::new(
                    ErrorCode::Call,
                    format!("{url}: Client needs a JavaScript host (wasm32)"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
