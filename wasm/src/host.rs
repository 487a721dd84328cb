//! What the client needs from its JavaScript host: the global `fetch` (a whole answer, or a
//! body read chunk by chunk), `AbortController`, and timers. Everything is looked up on
//! `globalThis` at call time, through `Reflect`, so the same module runs on a page, in a web
//! worker, in workerd, Deno and Node 20, and a test or a polyfill may replace `fetch`.
//!
//! The objects a host hands back need not be this realm's classes (workerd's and Node's
//! `Response` are not a page's), hence no `dyn_into` on them. On a target other than wasm32
//! these calls panic: the crate builds natively only so that its plain Rust is tested there.

use clusterconsensus::{Error, ErrorCode};
use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// One request: `GET` or `POST` of a JSON body.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub body: Option<String>,
    pub token: Option<&'a str>,
    /// Extra headers (`accept`, `last-event-id`).
    pub headers: &'a [(&'a str, String)],
    /// Gives up after this many milliseconds, with `ERR_CALL` (0: never).
    pub timeout_ms: u32,
    /// An `AbortSignal` of the caller's, instead of the timeout.
    pub signal: Option<&'a JsValue>,
}

impl<'a> Request<'a> {
    pub fn new(url: &'a str, method: &'a str, token: Option<&'a str>) -> Request<'a> {
        Request {
            url,
            method,
            body: None,
            token,
            headers: &[],
            timeout_ms: 0,
            signal: None,
        }
    }
}

/// An answer whose body is not read yet.
#[derive(Debug)]
pub struct Answer {
    url: String,
    response: JsValue,
    pub status: u16,
}

/// One HTTP exchange: the status and the whole body as text.
pub async fn fetch_text(req: Request<'_>) -> Result<(u16, String), Error> {
    let answer = start(req).await?;
    let status = answer.status;
    Ok((status, answer.text().await?))
}

/// Sends `req` and waits for the head of the answer.
pub async fn start(req: Request<'_>) -> Result<Answer, Error> {
    let global = js_sys::global();
    let fetch: Function = get(&global, "fetch")
        .dyn_into()
        .map_err(|_| Error::new(ErrorCode::Call, "this host has no global fetch"))?;
    let init = js_sys::Object::new();
    put(&init, "method", &req.method.into());
    let headers = js_sys::Object::new();
    if let Some(token) = req.token {
        put(&headers, "authorization", &format!("Bearer {token}").into());
    }
    for (name, value) in req.headers {
        put(&headers, name, &value.into());
    }
    if let Some(body) = req.body {
        put(&headers, "content-type", &"application/json".into());
        put(&init, "body", &body.into());
    }
    put(&init, "headers", &headers);
    match req.signal {
        Some(signal) => put(&init, "signal", signal),
        None => {
            if let Some(signal) = timeout_signal(req.timeout_ms) {
                put(&init, "signal", &signal);
            }
        }
    }
    let url = req.url;
    let started = fetch
        .call2(&global, &url.into(), &init)
        .map_err(|e| fetch_error(url, &e))?;
    let response = JsFuture::from(Promise::resolve(&started))
        .await
        .map_err(|e| fetch_error(url, &e))?;
    let status = get(&response, "status").as_f64().unwrap_or(0.0) as u16;
    Ok(Answer {
        url: url.into(),
        response,
        status,
    })
}

impl Answer {
    /// A response header (lower-case name), `""` if absent.
    pub fn header(&self, name: &str) -> String {
        let headers = get(&self.response, "headers");
        call1(&headers, "get", &name.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    }

    pub async fn text(self) -> Result<String, Error> {
        let text = call0(&self.response, "text").map_err(|e| fetch_error(&self.url, &e))?;
        let text = JsFuture::from(Promise::resolve(&text))
            .await
            .map_err(|e| fetch_error(&self.url, &e))?;
        Ok(text.as_string().unwrap_or_default())
    }

    /// A reader of the body as it arrives, or `None` where the host cannot stream a body
    /// (then read it whole with [`Answer::text`]).
    pub fn reader(&self) -> Option<Reader> {
        let body = get(&self.response, "body");
        let reader = call0(&body, "getReader").ok()?;
        (!reader.is_undefined()).then(|| Reader {
            url: self.url.clone(),
            reader,
        })
    }
}

/// The body of an answer, chunk by chunk.
#[derive(Debug)]
pub struct Reader {
    url: String,
    reader: JsValue,
}

impl Reader {
    /// The next chunk, `None` at the end of the body. Rejects when the connection breaks or
    /// its `AbortSignal` fires.
    pub async fn read(&self) -> Result<Option<Vec<u8>>, Error> {
        let next = call0(&self.reader, "read").map_err(|e| fetch_error(&self.url, &e))?;
        let next = JsFuture::from(Promise::resolve(&next))
            .await
            .map_err(|e| fetch_error(&self.url, &e))?;
        if get(&next, "done").is_truthy() {
            return Ok(None);
        }
        let value = get(&next, "value");
        if value.is_instance_of::<Uint8Array>() || get(&value, "byteLength").as_f64().is_some() {
            Ok(Some(Uint8Array::new(&value).to_vec()))
        } else {
            Err(Error::encoding(format!(
                "{}: a body chunk is not bytes",
                self.url
            )))
        }
    }
}

/// An `AbortController`: one per watch connection, so that `close()`, the idle watchdog and
/// the end of the connection can all stop it.
#[derive(Clone, Debug)]
pub struct Abort(JsValue);

impl Abort {
    pub fn new() -> Result<Abort, Error> {
        let class: Function = get(&js_sys::global(), "AbortController")
            .dyn_into()
            .map_err(|_| Error::new(ErrorCode::Call, "this host has no AbortController"))?;
        Reflect::construct(&class, &js_sys::Array::new())
            .map(Abort)
            .map_err(|_| Error::new(ErrorCode::Call, "new AbortController() failed"))
    }

    pub fn signal(&self) -> JsValue {
        get(&self.0, "signal")
    }

    pub fn abort(&self) {
        let _ = call0(&self.0, "abort");
    }

    /// `abort`, bound to this controller: a function a timer can call.
    pub fn abort_fn(&self) -> Function {
        get(&self.0, "abort")
            .unchecked_into::<Function>()
            .bind0(&self.0)
    }
}

/// `setTimeout(f, ms)`; the timer's id for [`clear_timeout`].
pub fn set_timeout(f: &Function, ms: u32) -> JsValue {
    let global = js_sys::global();
    get(&global, "setTimeout")
        .unchecked_into::<Function>()
        .call2(&global, f, &JsValue::from_f64(ms.into()))
        .unwrap_or(JsValue::UNDEFINED)
}

pub fn clear_timeout(id: &JsValue) {
    let global = js_sys::global();
    let _ = get(&global, "clearTimeout")
        .unchecked_into::<Function>()
        .call1(&global, id);
}

/// A promise resolved after `ms`; `keep` is given its `resolve` and the timer id, so that the
/// wait can be cut short (clear the timer, call `resolve`).
pub fn sleep(ms: u32, mut keep: impl FnMut(Function, JsValue)) -> Promise {
    Promise::new(&mut |resolve, _reject| {
        let id = set_timeout(&resolve, ms);
        keep(resolve, id);
    })
}

/// `AbortSignal.timeout(ms)` where the host has it (browsers, Node 18+, workerd, Deno).
fn timeout_signal(ms: u32) -> Option<JsValue> {
    if ms == 0 {
        return None;
    }
    let class = get(&js_sys::global(), "AbortSignal");
    let timeout: Function = get(&class, "timeout").dyn_into().ok()?;
    timeout.call1(&class, &JsValue::from_f64(ms as f64)).ok()
}

/// A rejected fetch or read: a timeout or an abort is `ERR_CALL`; anything else (refused, DNS,
/// CORS, a connection cut) is `ERR_CONNECT`.
fn fetch_error(url: &str, e: &JsValue) -> Error {
    let name = get(e, "name").as_string().unwrap_or_default();
    let message = get(e, "message")
        .as_string()
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "fetch failed".into());
    let cause = get(&get(e, "cause"), "message").as_string();
    let detail = match cause {
        Some(c) if !c.is_empty() => format!("{message} ({c})"),
        _ => message,
    };
    if name == "TimeoutError" || name == "AbortError" {
        Error::new(
            ErrorCode::Call,
            format!("{url}: no answer in time: {detail}"),
        )
    } else {
        Error::new(ErrorCode::Connect, format!("{url}: {detail}"))
    }
}

pub fn get(target: &JsValue, key: &str) -> JsValue {
    if target.is_undefined() || target.is_null() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(target, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

pub fn put(target: &JsValue, key: &str, value: &JsValue) {
    // Reflect.set on a plain object cannot fail (it is extensible, the keys are not frozen).
    let _ = Reflect::set(target, &key.into(), value);
}

fn call0(target: &JsValue, method: &str) -> Result<JsValue, JsValue> {
    get(target, method)
        .dyn_into::<Function>()
        .map_err(|_| JsValue::from_str(&format!("no method {method}")))?
        .call0(target)
}

pub fn call1(target: &JsValue, method: &str, arg: &JsValue) -> Result<JsValue, JsValue> {
    get(target, method)
        .dyn_into::<Function>()
        .map_err(|_| JsValue::from_str(&format!("no method {method}")))?
        .call1(target, arg)
}
