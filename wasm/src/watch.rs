//! `Client.watch(from, onEvent, opts?)`: the cluster's committed entries, in commit order, from
//! any node, across node failures.
//!
//! ```js
//! const { commit, data } = await client.kv();          // the state as of `commit`
//! const w = client.watch(commit + 1, (ev) => {
//!   if (ev.type === "entry") apply(ev.chg);             // {type, seq, chg: [change, ...]}
//! });
//! // ... later
//! w.close();
//! try { await w.done; } catch (e) { if (e.code === "ERR_GAP") { /* re-read, watch from e.oldest */ } }
//! ```
//!
//! **The stream.** `GET <node>/_clusterc/<id>/watch?from=SEQ[&prefix=P]` answers
//! `text/event-stream`: `id: S` + `data: {"seq":S,"chg":[...]}` per committed entry; a
//! membership entry as `event: members` + `data: {"seq":S,"members":[...],"learners":[...]}`;
//! `event: progress` + `data: {"commit":N}` (no id) at least every second while idle; and
//! `event: error` + `data: {"code","err","oldest"?}` before the node closes the stream.
//! Without a streaming body (or with `{longPoll: true}`) the client asks
//! `GET .../watch?from=SEQ&wait=MS` instead, which answers `{"events":[...],"commit":N}`, or
//! `410 {"code":"ERR_GAP","oldest":N}`.
//!
//! **What `onEvent` gets**, each the event's data as an object with a `type`:
//! `{type: "entry", seq, chg}`, `{type: "members", seq, members, learners}`,
//! `{type: "progress", commit}` (nothing new up to `commit`), and last of all, if the node no
//! longer holds `from`: `{type: "error", code: "ERR_GAP", err, oldest}`. If `onEvent` returns a
//! promise the watch reads on only once it settles. If it throws (or its promise rejects) the
//! watch stops and `done` rejects with that.
//!
//! **No gap, no duplicate.** The client keeps the seq of the last entry it delivered
//! (`lastSeq`); a new connection asks for `from = lastSeq + 1` and sends `Last-Event-ID:
//! lastSeq` (the header overrides `from` on the server; both say the same). An entry at or
//! below `lastSeq` is never delivered twice. A connection that breaks, ends, stays silent for
//! `idleTimeoutMs` (default 5000: the node sends progress every second), answers an HTTP error,
//! or says its consumer fell behind (`ERR_STATE`) is dropped and the next node is tried at
//! once; after a whole round of nodes failed in a row, it waits 100 ms, doubling up to 5 s.
//! The nodes are `[baseUrl, ...opts.nodes]`, or when `opts.nodes` is not given, `baseUrl`
//! plus the members and learners the cluster reports (`status` at the start and after each
//! failed round, and every `members` event).
//!
//! **When it stops by itself** (`done` rejects with a coded `Error`):
//! - `ERR_GAP`: the node no longer holds `from` (its log was compacted). The caller must
//!   re-read the state (`kv()`) and watch again from after that read; `e.oldest` is the oldest
//!   seq the node still has. As with etcd's compacted revisions, entries before it are gone.
//! - `ERR_DENIED`: the token is missing or wrong (`setToken`; with `--auth-reads` a watch is a
//!   read).
//! - every node of a round refused the request with a 4xx (a bad `prefix`, an unknown cluster,
//!   a node without the watch endpoint), with the last refusal's code;
//! - `ERR_ENCODING`: an event longer than `maxEventBytes` (default 64 MiB), the one thing the
//!   client holds in memory for a stream besides the line being read.
//!
//! `close()` stops it (no event is delivered after it returns) and resolves `done`.

use crate::client::{clip, cluster_url, http_error, Client};
use crate::host::{self, get, put, Abort, Reader, Request};
use crate::json::Json;
use crate::sse::{SseEvent, SseParser};
use clusterconsensus::{Error, ErrorCode};
use js_sys::{Function, Promise};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_WATCH: &str = r#"
/** An event of `Client.watch`: the server's event data with a `type`. */
export type WatchEvent =
  | { type: "entry"; seq: number; chg: string[] }
  | { type: "members"; seq: number; members: string[]; learners?: string[] }
  | { type: "progress"; commit: number }
  | { type: "error"; code: "ERR_GAP"; err: string; oldest: number };
export interface WatchOptions {
  /** Other nodes to fail over to (base URLs). Default: the members the cluster reports. */
  nodes?: string[];
  /** Only key-value changes whose key starts with this. */
  prefix?: string;
  /** Drop a connection silent for this long and try another node (default 5000). */
  idleTimeoutMs?: number;
  /** Use the long-poll form (`wait=`) instead of a streaming body. */
  longPoll?: boolean;
  /** How long one long poll may wait at the node (default 10000). */
  pollWaitMs?: number;
  /** The largest event accepted (default 64 MiB). */
  maxEventBytes?: number;
}
"#;

const IDLE_TIMEOUT_MS: u32 = 5_000;
const POLL_WAIT_MS: u32 = 10_000;
const MAX_EVENT_BYTES: usize = 64 << 20;
const BACKOFF_FIRST_MS: u32 = 100;
const BACKOFF_MAX_MS: u32 = 5_000;

/// The options of a watch, read from the JavaScript object once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    nodes: Option<Vec<String>>,
    prefix: Option<String>,
    idle_timeout_ms: u32,
    long_poll: bool,
    poll_wait_ms: u32,
    max_event_bytes: usize,
}

impl WatchOptions {
    pub(crate) fn from_js(opts: Option<&js_sys::Object>) -> Result<WatchOptions, Error> {
        let o = opts.map(JsValue::from).unwrap_or(JsValue::UNDEFINED);
        let nodes = get(&o, "nodes");
        let nodes = if nodes.is_undefined() || nodes.is_null() {
            None
        } else if js_sys::Array::is_array(&nodes) {
            let list = js_sys::Array::from(&nodes)
                .iter()
                .map(|v| v.as_string())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::state("watch: nodes must be base URLs (strings)"))?;
            Some(list)
        } else {
            return Err(Error::state("watch: nodes must be an array of base URLs"));
        };
        let number = |key: &str, default: u32, min: u32| -> Result<u32, Error> {
            let v = get(&o, key);
            if v.is_undefined() || v.is_null() {
                return Ok(default);
            }
            match v.as_f64() {
                Some(n) if n >= f64::from(min) && n <= f64::from(u32::MAX) => Ok(n as u32),
                _ => Err(Error::state(format!(
                    "watch: {key} must be a number >= {min}"
                ))),
            }
        };
        let prefix = get(&o, "prefix");
        Ok(WatchOptions {
            nodes,
            prefix: match prefix.as_string() {
                Some(p) => Some(p),
                None if prefix.is_undefined() || prefix.is_null() => None,
                None => return Err(Error::state("watch: prefix must be a string")),
            },
            idle_timeout_ms: number("idleTimeoutMs", IDLE_TIMEOUT_MS, 100)?,
            long_poll: get(&o, "longPoll").is_truthy(),
            poll_wait_ms: number("pollWaitMs", POLL_WAIT_MS, 0)?,
            max_event_bytes: number("maxEventBytes", MAX_EVENT_BYTES as u32, 1024)? as usize,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The rules, in plain Rust (tested natively below).
// ---------------------------------------------------------------------------------------------

/// Where the watch resumes: the seq after the last entry delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resume {
    from: u64,
    last: Option<u64>,
}

impl Resume {
    fn new(from: u64) -> Resume {
        Resume { from, last: None }
    }

    /// The `from` of the next request.
    fn next(&self) -> u64 {
        self.last.map_or(self.from, |l| l + 1)
    }

    /// Whether an entry at `seq` is new (then it is the last one): below `next()` it was
    /// delivered already, by this connection or an earlier one.
    fn accept(&mut self, seq: u64) -> bool {
        if seq < self.next() {
            return false;
        }
        self.last = Some(seq);
        true
    }
}

/// The nodes a watch may use, and the one in use.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Nodes {
    list: Vec<String>,
    at: usize,
    /// Follow the members the cluster reports (no list was given).
    learn: bool,
}

impl Nodes {
    fn new(base: &str, given: Option<Vec<String>>) -> Nodes {
        let learn = given.is_none();
        let mut nodes = Nodes {
            list: vec![base.to_string()],
            at: 0,
            learn,
        };
        nodes.add(given.unwrap_or_default());
        nodes
    }

    fn current(&self) -> &str {
        &self.list[self.at]
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn advance(&mut self) {
        self.at = (self.at + 1) % self.list.len();
    }

    fn add(&mut self, more: Vec<String>) {
        for n in more {
            let n = n.trim_end_matches('/');
            if !n.is_empty() && !self.list.iter().any(|m| m == n) {
                self.list.push(n.to_string());
            }
        }
    }

    /// The cluster now has these members: the first node (the client's own) and these, in
    /// this order, staying on the current node if it is still among them.
    fn learned(&mut self, members: Vec<String>) {
        if !self.learn {
            return;
        }
        let current = self.current().to_string();
        self.list.truncate(1);
        self.add(members);
        self.at = self.list.iter().position(|n| *n == current).unwrap_or(0);
    }
}

/// How long to wait before the next connection, after `failed` in a row on `nodes` nodes:
/// nothing while some node of the round is untried, then 100 ms doubling to 5 s per round.
fn backoff_ms(failed: u32, nodes: usize) -> u32 {
    let n = nodes.max(1) as u32;
    if failed == 0 || !failed.is_multiple_of(n) {
        return 0;
    }
    let rounds = failed / n;
    BACKOFF_FIRST_MS
        .saturating_mul(1 << (rounds - 1).min(16))
        .min(BACKOFF_MAX_MS)
}

/// `.../watch?from=N[&prefix=P][&wait=MS]`, with `prefix` already percent-encoded.
fn watch_url(
    node: &str,
    cluster: &str,
    from: u64,
    prefix: Option<&str>,
    wait: Option<u32>,
) -> String {
    let mut path = format!("watch?from={from}");
    if let Some(p) = prefix {
        path.push_str("&prefix=");
        path.push_str(p);
    }
    if let Some(w) = wait {
        path.push_str(&format!("&wait={w}"));
    }
    cluster_url(node, cluster, &path)
}

/// What an `error` event means to the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// The node no longer holds the entries asked for: report and stop.
    Gap { err: Error, oldest: Option<u64> },
    /// Anything else (a consumer that fell behind, a node going away): try again elsewhere.
    Retry(Error),
}

/// The data of an `error` event: `{"code", "err", "oldest"?}`.
fn refusal<J: Json>(data: &str) -> Refusal {
    let body = J::parse(data);
    let code = body
        .as_ref()
        .and_then(|b| b.field("code"))
        .and_then(|c| c.as_str());
    let Some(code) = code else {
        return Refusal::Retry(Error::encoding(format!(
            "watch: an error event that is not {{code, err}}: {}",
            clip(data)
        )));
    };
    let message = body
        .as_ref()
        .and_then(|b| b.field("err"))
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    match ErrorCode::parse(&code) {
        Some(ErrorCode::Gap) => Refusal::Gap {
            err: Error::new(ErrorCode::Gap, message),
            oldest: oldest_of::<J>(data),
        },
        Some(code) => Refusal::Retry(Error::new(code, message)),
        None => Refusal::Retry(Error::new(ErrorCode::Call, format!("{code}: {message}"))),
    }
}

/// The `oldest` seq a gap error (an event's data, or a `410` body) says the node holds.
fn oldest_of<J: Json>(text: &str) -> Option<u64> {
    J::parse(text)?.field("oldest")?.as_u64()
}

// ---------------------------------------------------------------------------------------------
// The handle and its loop.
// ---------------------------------------------------------------------------------------------

/// A running watch (see the module docs).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Watch {
    shared: Rc<RefCell<Shared>>,
    done: Promise,
}

/// What the handle and the loop share.
#[derive(Debug)]
struct Shared {
    closed: bool,
    resume: Resume,
    nodes: Nodes,
    /// Connections after the first.
    reconnects: u32,
    /// The connection in progress, for `close()` to abort.
    abort: Option<Abort>,
    /// The backoff wait in progress: its timer and the `resolve` that ends it early.
    wait: Option<(JsValue, Function)>,
}

#[wasm_bindgen]
impl Watch {
    /// Stops the watch: the connection is aborted, no event is delivered after this returns,
    /// and `done` resolves. Closing twice does nothing.
    pub fn close(&self) {
        let (abort, wait) = {
            let mut s = self.shared.borrow_mut();
            s.closed = true;
            (s.abort.take(), s.wait.take())
        };
        if let Some(a) = abort {
            a.abort();
        }
        if let Some((timer, resolve)) = wait {
            host::clear_timeout(&timer);
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }

    /// The seq of the last entry delivered (`undefined` before the first).
    #[wasm_bindgen(getter, js_name = lastSeq)]
    pub fn last_seq(&self) -> Option<f64> {
        self.shared.borrow().resume.last.map(|s| s as f64)
    }

    /// The base URL of the node watched now (or tried next).
    #[wasm_bindgen(getter)]
    pub fn node(&self) -> String {
        self.shared.borrow().nodes.current().to_string()
    }

    /// How many times it connected again after the first connection.
    #[wasm_bindgen(getter)]
    pub fn reconnects(&self) -> u32 {
        self.shared.borrow().reconnects
    }

    /// Resolves when `close()` stopped the watch; rejects with a coded `Error` when it stopped
    /// by itself (`ERR_GAP` with `oldest`, `ERR_DENIED`, ...; see the module docs).
    #[wasm_bindgen(getter, unchecked_return_type = "Promise<void>")]
    pub fn done(&self) -> Promise {
        self.done.clone()
    }
}

impl Watch {
    pub(crate) fn start(
        client: Client,
        from: u64,
        on_event: Function,
        opts: WatchOptions,
    ) -> Watch {
        let shared = Rc::new(RefCell::new(Shared {
            closed: false,
            resume: Resume::new(from),
            nodes: Nodes::new(&client.base, opts.nodes.clone()),
            reconnects: 0,
            abort: None,
            wait: None,
        }));
        let run = Run {
            shared: shared.clone(),
            client,
            on_event,
            opts,
        };
        let done = wasm_bindgen_futures::future_to_promise(async move {
            run.run().await.map(|()| JsValue::UNDEFINED)
        });
        // A caller who only uses the callback need not await `done`: a handler here keeps a
        // stop from being an unhandled rejection (which ends a Node process). Awaiting `done`
        // still sees the rejection.
        let ignore = Closure::<dyn FnMut(JsValue)>::new(|_| {}).into_js_value();
        let _ = host::call1(&done, "catch", &ignore);
        Watch { shared, done }
    }
}

/// How one connection (or one long poll) ended.
enum End {
    /// `close()` was called.
    Closed,
    /// Stop with this rejection.
    Stop(JsValue),
    /// Try again elsewhere. `delivered`: the node sent something first (it was alive);
    /// `refused`: it answered with a 4xx that another try of the same request would get again.
    Broken {
        err: Error,
        delivered: bool,
        refused: bool,
    },
    /// A long poll answered (the node works; poll it again).
    Polled,
    /// The host cannot stream this body: long-poll from now on.
    NoStream,
}

struct Run {
    shared: Rc<RefCell<Shared>>,
    client: Client,
    on_event: Function,
    opts: WatchOptions,
}

impl Run {
    fn closed(&self) -> bool {
        self.shared.borrow().closed
    }

    async fn run(self) -> Result<(), JsValue> {
        let mut long_poll = self.opts.long_poll;
        let mut failed = 0u32; // connections in a row that broke before sending anything
        let mut refused = 0u32; // of which in a row a 4xx
        let mut first = true;
        self.learn().await;
        loop {
            if self.closed() {
                return Ok(());
            }
            if !first {
                self.shared.borrow_mut().reconnects += 1;
            }
            first = false;
            let end = if long_poll {
                self.poll_once().await
            } else {
                self.stream_once().await
            };
            match end {
                End::Closed => return Ok(()),
                End::Stop(e) => return Err(e),
                End::NoStream => long_poll = true,
                End::Polled => {
                    failed = 0;
                    refused = 0;
                }
                End::Broken {
                    err,
                    delivered,
                    refused: was_refused,
                } => {
                    if delivered {
                        failed = 0;
                        refused = 0;
                    }
                    failed += 1;
                    refused = if was_refused { refused + 1 } else { 0 };
                    let n = self.shared.borrow().nodes.len();
                    if refused as usize >= n {
                        return Err(crate::js_error(&err));
                    }
                    self.shared.borrow_mut().nodes.advance();
                    if (failed as usize).is_multiple_of(n) {
                        self.learn().await;
                    }
                    let n = self.shared.borrow().nodes.len();
                    self.sleep(backoff_ms(failed, n)).await;
                }
            }
        }
    }

    /// Learns the cluster's members from the first node that answers `status` (when no node
    /// list was given). Best effort: a failure leaves the list as it was.
    async fn learn(&self) {
        let nodes = {
            let s = self.shared.borrow();
            if !s.nodes.learn {
                return;
            }
            s.nodes.list.clone()
        };
        for node in nodes {
            if self.closed() {
                return;
            }
            let url = cluster_url(&node, &self.client.cluster, "status");
            let mut req = Request::new(&url, "GET", self.client.token.as_deref());
            req.timeout_ms = self.opts.idle_timeout_ms;
            if let Ok((200, text)) = host::fetch_text(req).await {
                if let Ok(st) = js_sys::JSON::parse(&text) {
                    let members = member_list(&st);
                    if !members.is_empty() {
                        self.shared.borrow_mut().nodes.learned(members);
                        return;
                    }
                }
            }
        }
    }

    /// Waits `ms` (0: not at all), or until `close()`.
    async fn sleep(&self, ms: u32) {
        if ms == 0 || self.closed() {
            return;
        }
        let shared = self.shared.clone();
        let p = host::sleep(ms, |resolve, timer| {
            shared.borrow_mut().wait = Some((timer, resolve));
        });
        let _ = wasm_bindgen_futures::JsFuture::from(p).await;
        self.shared.borrow_mut().wait = None;
    }

    /// A new connection's controller, registered for `close()`.
    fn connection(&self) -> Result<Connection, End> {
        let abort = Abort::new().map_err(|e| End::Stop(crate::js_error(&e)))?;
        self.shared.borrow_mut().abort = Some(abort.clone());
        Ok(Connection {
            shared: self.shared.clone(),
            dog: Watchdog::new(&abort),
            abort,
        })
    }

    fn url(&self, wait: Option<u32>) -> String {
        let s = self.shared.borrow();
        let prefix = self
            .opts
            .prefix
            .as_deref()
            .map(|p| String::from(js_sys::encode_uri_component(p)));
        watch_url(
            s.nodes.current(),
            &self.client.cluster,
            s.resume.next(),
            prefix.as_deref(),
            wait,
        )
    }

    fn headers(&self, accept: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![("accept", accept.to_string())];
        if let Some(last) = self.shared.borrow().resume.last {
            h.push(("last-event-id", last.to_string()));
        }
        h
    }

    /// One streaming connection, read until it ends.
    async fn stream_once(&self) -> End {
        let conn = match self.connection() {
            Ok(c) => c,
            Err(end) => return end,
        };
        let url = self.url(None);
        let headers = self.headers("text/event-stream");
        let signal = conn.abort.signal();
        let mut req = Request::new(&url, "GET", self.client.token.as_deref());
        req.headers = &headers;
        req.signal = Some(&signal);
        conn.dog.arm(self.opts.idle_timeout_ms);
        let answer = match host::start(req).await {
            Ok(a) => a,
            Err(e) => return self.broken(e, false),
        };
        if self.closed() {
            return End::Closed;
        }
        if !(200..300).contains(&answer.status) {
            let status = answer.status;
            let text = answer.text().await.unwrap_or_default();
            return self.refused(status, &text).await;
        }
        let kind = answer.header("content-type");
        if !kind.starts_with("text/event-stream") {
            let text = answer.text().await.unwrap_or_default();
            let e = Error::encoding(format!(
                "{url}: not an event stream ({kind}): {}",
                clip(&text)
            ));
            return End::Broken {
                err: e,
                delivered: false,
                refused: true,
            };
        }
        let Some(reader) = answer.reader() else {
            return End::NoStream;
        };
        self.read_stream(&conn, &reader).await
    }

    async fn read_stream(&self, conn: &Connection, reader: &Reader) -> End {
        let mut parser = SseParser::new(self.opts.max_event_bytes);
        let mut events = Vec::new();
        let mut delivered = false;
        loop {
            conn.dog.arm(self.opts.idle_timeout_ms);
            let chunk = match reader.read().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    let e = Error::new(ErrorCode::Connect, "the node ended the stream");
                    return self.broken(e, delivered);
                }
                Err(e) => return self.broken(e, delivered),
            };
            if self.closed() {
                return End::Closed;
            }
            if let Err(e) = parser.push(&chunk, &mut events) {
                let e = Error::encoding(format!(
                    "watch: an event longer than maxEventBytes ({})",
                    e.max_event
                ));
                return End::Stop(crate::js_error(&e));
            }
            for ev in events.drain(..) {
                match self.stream_event(ev).await {
                    Ok(true) => delivered = true,
                    Ok(false) => {}
                    Err(end) => {
                        return match end {
                            End::Broken { err, refused, .. } => End::Broken {
                                err,
                                delivered,
                                refused,
                            },
                            other => other,
                        }
                    }
                }
                if self.closed() {
                    return End::Closed;
                }
            }
        }
    }

    /// Handles one event of a stream: `Ok(true)` once delivered, `Ok(false)` if skipped.
    async fn stream_event(&self, ev: SseEvent) -> Result<bool, End> {
        let kind = match ev.event.as_str() {
            "message" => "entry",
            "members" => "members",
            "progress" => "progress",
            "error" => {
                return Err(match refusal::<JsValue>(&ev.data) {
                    Refusal::Gap { err, oldest } => self.gap(err, oldest, Some(&ev.data)).await,
                    Refusal::Retry(err) => End::Broken {
                        err,
                        delivered: false,
                        refused: false,
                    },
                })
            }
            _ => return Ok(false), // an event kind of a later version
        };
        let obj = match js_sys::JSON::parse(&ev.data) {
            Ok(o) if o.is_object() => o,
            _ => {
                let e = Error::encoding(format!(
                    "watch: event data is not a JSON object: {}",
                    clip(&ev.data)
                ));
                return Err(self.broken(e, false));
            }
        };
        let id = ev.id.as_deref().and_then(|i| i.trim().parse::<u64>().ok());
        self.deliver(kind, obj, id).await
    }

    /// Delivers an entry, members or progress object to `onEvent`, unless it is an entry
    /// delivered before.
    async fn deliver(&self, kind: &str, obj: JsValue, id: Option<u64>) -> Result<bool, End> {
        if kind != "progress" {
            let seq = id.or_else(|| seq_of(&obj));
            let Some(seq) = seq else {
                let e = Error::encoding("watch: an entry without a seq");
                return Err(self.broken(e, false));
            };
            if !self.shared.borrow_mut().resume.accept(seq) {
                return Ok(false);
            }
            if kind == "members" {
                let members = member_list(&obj);
                self.shared.borrow_mut().nodes.learned(members);
            }
        }
        put(&obj, "type", &JsValue::from_str(kind));
        self.call(&obj).await.map_err(End::Stop)?;
        Ok(true)
    }

    /// Calls `onEvent`, waiting for the promise it may return.
    async fn call(&self, obj: &JsValue) -> Result<(), JsValue> {
        let r = self.on_event.call1(&JsValue::UNDEFINED, obj)?;
        if r.is_instance_of::<Promise>() || get(&r, "then").is_function() {
            wasm_bindgen_futures::JsFuture::from(Promise::resolve(&r)).await?;
        }
        Ok(())
    }

    /// The node no longer holds what was asked for: tell `onEvent`, then stop with the error.
    async fn gap(&self, err: Error, oldest: Option<u64>, data: Option<&str>) -> End {
        let obj = data
            .and_then(|d| js_sys::JSON::parse(d).ok())
            .filter(JsValue::is_object)
            .unwrap_or_else(|| js_sys::Object::new().into());
        put(&obj, "type", &"error".into());
        put(&obj, "code", &"ERR_GAP".into());
        put(&obj, "err", &JsValue::from_str(&err.message));
        let oldest = oldest.map_or(JsValue::UNDEFINED, |o| JsValue::from_f64(o as f64));
        put(&obj, "oldest", &oldest);
        if let Err(thrown) = self.call(&obj).await {
            return End::Stop(thrown);
        }
        let e = crate::js_error(&err);
        put(&e, "oldest", &oldest);
        End::Stop(e)
    }

    fn broken(&self, err: Error, delivered: bool) -> End {
        if self.closed() {
            return End::Closed;
        }
        End::Broken {
            err,
            delivered,
            refused: false,
        }
    }

    /// A non-2xx answer to a watch request.
    async fn refused(&self, status: u16, text: &str) -> End {
        let err = http_error(status, text);
        match err.code {
            ErrorCode::Gap => {
                let oldest = oldest_of::<JsValue>(text);
                self.gap(err, oldest, None).await
            }
            ErrorCode::Denied => End::Stop(crate::js_error(&err)),
            _ => End::Broken {
                err,
                delivered: false,
                refused: (400..500).contains(&status) && status != 408 && status != 429,
            },
        }
    }

    /// One long poll: `from=next&wait=MS`.
    async fn poll_once(&self) -> End {
        let conn = match self.connection() {
            Ok(c) => c,
            Err(end) => return end,
        };
        let wait = self.opts.poll_wait_ms;
        let url = self.url(Some(wait));
        let headers = self.headers("application/json");
        let signal = conn.abort.signal();
        let mut req = Request::new(&url, "GET", self.client.token.as_deref());
        req.headers = &headers;
        req.signal = Some(&signal);
        conn.dog.arm(wait.saturating_add(self.opts.idle_timeout_ms));
        let (status, text) = match async {
            let a = host::start(req).await?;
            let status = a.status;
            Ok::<_, Error>((status, a.text().await?))
        }
        .await
        {
            Ok(r) => r,
            Err(e) => return self.broken(e, false),
        };
        conn.dog.clear();
        if self.closed() {
            return End::Closed;
        }
        if !(200..300).contains(&status) {
            return self.refused(status, &text).await;
        }
        let answer = match js_sys::JSON::parse(&text) {
            Ok(a) if js_sys::Array::is_array(&get(&a, "events")) => a,
            _ => {
                let e = Error::encoding(format!("{url}: not {{events, commit}}: {}", clip(&text)));
                return End::Broken {
                    err: e,
                    delivered: false,
                    refused: true,
                };
            }
        };
        let events = js_sys::Array::from(&get(&answer, "events"));
        for ev in events.iter() {
            let kind = if get(&ev, "members").is_undefined() {
                "entry"
            } else {
                "members"
            };
            if let Err(end) = self.deliver(kind, ev, None).await {
                return end;
            }
            if self.closed() {
                return End::Closed;
            }
        }
        if events.length() == 0 {
            let commit = get(&answer, "commit");
            if commit.as_f64().is_some() {
                let obj: JsValue = js_sys::Object::new().into();
                put(&obj, "commit", &commit);
                if let Err(end) = self.deliver("progress", obj, None).await {
                    return end;
                }
            }
        }
        End::Polled
    }
}

/// The seq of an event object, if it has a whole-number `seq`.
fn seq_of(obj: &JsValue) -> Option<u64> {
    let s = get(obj, "seq").as_f64()?;
    (s >= 0.0 && s.fract() == 0.0).then_some(s as u64)
}

/// `members` and `learners` of a status or a members event, as strings.
fn member_list(obj: &JsValue) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["members", "learners"] {
        let list = get(obj, key);
        if js_sys::Array::is_array(&list) {
            out.extend(
                js_sys::Array::from(&list)
                    .iter()
                    .filter_map(|v| v.as_string()),
            );
        }
    }
    out
}

/// One connection's controller and idle watchdog; dropping it aborts the connection (a no-op
/// if it already ended) and clears the timer, on every way out of the connection.
struct Connection {
    shared: Rc<RefCell<Shared>>,
    abort: Abort,
    dog: Watchdog,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.dog.clear();
        self.abort.abort();
        self.shared.borrow_mut().abort = None;
    }
}

/// Aborts the connection when nothing arrives for a while: `arm` (again) before each wait.
struct Watchdog {
    abort: Function,
    timer: RefCell<Option<JsValue>>,
}

impl Watchdog {
    fn new(abort: &Abort) -> Watchdog {
        Watchdog {
            abort: abort.abort_fn(),
            timer: RefCell::new(None),
        }
    }

    fn arm(&self, ms: u32) {
        self.clear();
        *self.timer.borrow_mut() = Some(host::set_timeout(&self.abort, ms));
    }

    fn clear(&self) {
        if let Some(t) = self.timer.borrow_mut().take() {
            host::clear_timeout(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn resume_skips_what_was_delivered() {
        let mut r = Resume::new(5);
        assert_eq!((r.next(), r.last), (5, None));
        assert!(!r.accept(4), "before from");
        assert!(r.accept(5));
        assert!(r.accept(9), "a prefix watch skips seqs");
        assert_eq!((r.next(), r.last), (10, Some(9)));
        assert!(!r.accept(9), "a duplicate after a reconnect");
        assert!(!r.accept(7));
        assert!(r.accept(10));
    }

    #[test]
    fn nodes_rotate_and_learn() {
        let mut n = Nodes::new("http://a", None);
        assert!(n.learn);
        assert_eq!(n.current(), "http://a");
        n.advance();
        assert_eq!(n.current(), "http://a", "one node: itself again");
        n.learned(vec![
            "http://b/".into(),
            "http://a".into(),
            "http://c".into(),
        ]);
        assert_eq!(n.list, ["http://a", "http://b", "http://c"]);
        n.advance();
        n.advance();
        assert_eq!(n.current(), "http://c");
        // c is still there: stay on it; b left.
        n.learned(vec!["http://c".into(), "http://d".into()]);
        assert_eq!(
            (n.list.as_slice(), n.current()),
            (
                &["http://a".to_string(), "http://c".into(), "http://d".into()][..],
                "http://c"
            )
        );
        // The watched node left: back to the first.
        n.learned(vec!["http://d".into()]);
        assert_eq!(n.current(), "http://a");
        n.advance();
        assert_eq!(n.current(), "http://d");
        n.advance();
        assert_eq!(n.current(), "http://a");

        // A given list is kept as given.
        let mut n = Nodes::new("http://a", Some(vec!["http://b".into(), "".into()]));
        n.learned(vec!["http://x".into()]);
        assert_eq!(n.list, ["http://a", "http://b"]);
    }

    #[test]
    fn backoff_waits_only_after_a_whole_round() {
        assert_eq!(backoff_ms(0, 3), 0);
        assert_eq!(backoff_ms(1, 3), 0);
        assert_eq!(backoff_ms(2, 3), 0);
        assert_eq!(backoff_ms(3, 3), 100);
        assert_eq!(backoff_ms(4, 3), 0);
        assert_eq!(backoff_ms(6, 3), 200);
        assert_eq!(backoff_ms(1, 1), 100);
        assert_eq!(backoff_ms(2, 1), 200);
        assert_eq!(backoff_ms(7, 1), 5_000);
        assert_eq!(backoff_ms(u32::MAX, 1), 5_000);
        assert_eq!(backoff_ms(5, 0), 1_600, "no nodes counts as one");
    }

    #[test]
    fn urls() {
        assert_eq!(
            watch_url("http://a:1", "demo", 7, None, None),
            "http://a:1/_clusterc/demo/watch?from=7"
        );
        assert_eq!(
            watch_url("http://a:1", "demo", 0, Some("user%2F"), Some(250)),
            "http://a:1/_clusterc/demo/watch?from=0&prefix=user%2F&wait=250"
        );
    }

    #[test]
    fn error_events() {
        assert_eq!(
            refusal::<Value>(r#"{"code":"ERR_GAP","err":"compacted","oldest":42}"#),
            Refusal::Gap {
                err: Error::new(ErrorCode::Gap, "compacted"),
                oldest: Some(42)
            }
        );
        assert_eq!(
            refusal::<Value>(r#"{"code":"ERR_STATE","err":"the watcher fell behind"}"#),
            Refusal::Retry(Error::new(ErrorCode::State, "the watcher fell behind"))
        );
        let Refusal::Retry(e) = refusal::<Value>("oops") else {
            panic!("not a gap")
        };
        assert_eq!(e.code, ErrorCode::Encoding);
        let Refusal::Retry(e) = refusal::<Value>(r#"{"code":"ERR_NEW"}"#) else {
            panic!("not a gap")
        };
        assert_eq!(e.code, ErrorCode::Call);
    }
}
