//! Following a cluster's change stream from a program: [`Watch`] reads `watch` from one node
//! and moves to another when that one fails, resuming after the last entry it handed out, so
//! the entries it hands out have no gap and no duplicate. The CLI's `watch`, the benchmark's
//! watchers and the fault campaign's use it.
//!
//! ```no_run
//! # async fn f() -> Result<(), clusterconsensus_server::WatchError> {
//! use std::time::Duration;
//! use clusterconsensus_server::{HttpClient, Watch, WatchEvent};
//!
//! let nodes = vec!["http://127.0.0.1:9001".to_string(), "http://127.0.0.1:9002".to_string()];
//! let mut watch = Watch::new(HttpClient::new(Duration::from_secs(5)), "cluster1", nodes).from(1);
//! loop {
//!     match watch.next().await? {
//!         WatchEvent::Entry { seq, chg } => println!("{seq}: {chg:?}"),
//!         WatchEvent::Members { seq, members, .. } => println!("{seq}: members {members:?}"),
//!         WatchEvent::Progress { .. } => {}
//!     }
//! }
//! # }
//! ```
//!
//! A connection that breaks, ends, stays silent for the idle timeout (the node sends progress
//! at least every second), answers an HTTP error or says the watcher fell behind (`ERR_STATE`)
//! is dropped and the next node is tried at once; after a whole round of nodes failed in a row
//! it waits 100 ms, doubling up to 5 s. [`Watch::next`] returns an error only when it cannot go
//! on: `ERR_GAP` when every node of a round said it no longer holds the next entry (re-read the
//! state and watch from after it; calling `next` again tries another round), `ERR_DENIED` for
//! a missing or wrong token, or the refusal of a round in which every node refused the request
//! (an unknown cluster, a bad prefix).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use clusterconsensus::{Error, ErrorCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{http_error, HttpClient};
use crate::reads::percent_encode;
use crate::watch::WatchError;

const IDLE: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest event a watch accepts (a batch of changes is at most a request body).
const MAX_EVENT: usize = 64 << 20;

/// One event of a watch. Serialized as the wasm client hands it to JavaScript: the event's
/// data with a `type` (`{"type":"entry","seq":S,"chg":[...]}`, `"members"`, `"progress"`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchEvent {
    /// A committed entry (with a prefix: only the changes that match).
    Entry { seq: u64, chg: Vec<String> },
    /// A committed membership change and the member list after it.
    Members {
        seq: u64,
        members: Vec<String>,
        learners: Vec<String>,
    },
    /// Everything up to `commit` was handed out (or filtered out).
    Progress { commit: u64 },
}

impl WatchEvent {
    /// The seq of an entry or membership change.
    pub fn seq(&self) -> Option<u64> {
        match self {
            WatchEvent::Entry { seq, .. } | WatchEvent::Members { seq, .. } => Some(*seq),
            WatchEvent::Progress { .. } => None,
        }
    }

    /// One JSON line (see the type's docs).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An incremental `text/event-stream` reader for what the node sends: `id`, `event` and `data`
/// fields, lines ending in `\n` (or `\r\n`), an empty line ending an event. It holds only the
/// event being read, at most [`MAX_EVENT`] bytes.
#[derive(Debug, Default)]
struct Sse {
    line: Vec<u8>,
    event: String,
    data: String,
}

/// A dispatched event: its kind (`message` without `event:`) and data.
#[derive(Debug, PartialEq, Eq)]
struct Raw {
    kind: String,
    data: String,
}

impl Sse {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<Raw>) -> Result<(), String> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.field(&line, out);
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > MAX_EVENT {
            return Err(format!("an event longer than {MAX_EVENT} bytes"));
        }
        Ok(())
    }

    fn field(&mut self, line: &[u8], out: &mut Vec<Raw>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                let kind = match std::mem::take(&mut self.event) {
                    k if k.is_empty() => "message".to_string(),
                    k => k,
                };
                out.push(Raw {
                    kind,
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (name, value) = text.split_once(':').unwrap_or((&text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            "event" => self.event = value.to_string(),
            _ => {} // `id` (the data carries the seq), comments, unknown fields
        }
    }
}

/// The data of the events, as the node sends them.
#[derive(Deserialize)]
struct Data {
    seq: Option<u64>,
    chg: Option<Vec<String>>,
    members: Option<Vec<String>>,
    #[serde(default)]
    learners: Vec<String>,
    commit: Option<u64>,
    code: Option<String>,
    err: Option<String>,
    oldest: Option<u64>,
}

impl Data {
    fn error(self) -> WatchError {
        let code = self
            .code
            .as_deref()
            .and_then(ErrorCode::parse)
            .unwrap_or(ErrorCode::Call);
        WatchError {
            code,
            err: self.err.unwrap_or_default(),
            oldest: self.oldest,
        }
    }
}

/// What ended a connection.
enum Broken {
    /// Try the next node.
    Retry(String),
    /// The node no longer holds the next entry.
    Gap(WatchError),
    /// Give up.
    Stop(WatchError),
}

/// One open stream.
struct Conn {
    body: hyper::body::Incoming,
    sse: Sse,
}

/// A watch of one cluster through a list of its nodes (see the module docs).
pub struct Watch {
    client: HttpClient,
    cluster: String,
    nodes: Vec<String>,
    at: usize,
    prefix: Option<String>,
    /// Add the members that `members` events name to the node list.
    learn: bool,
    idle: Duration,
    /// The seq of the next entry to hand out (`None`: whatever comes next, until the first
    /// event says where the stream is).
    next: Option<u64>,
    conn: Option<Conn>,
    events: VecDeque<WatchEvent>,
    /// Connections in a row that ended before an event; of those, refusals (4xx) and gaps.
    failed: u32,
    refused: u32,
    gaps: u32,
    reconnects: u32,
    connected: bool,
    /// Entries a node sent at or before one already handed out.
    resent: u64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .field("node", &self.node())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// A watch of `cluster` through `nodes` (base URLs; the first is tried first), from the
    /// next entry committed (see [`Watch::from`]). Needs a tokio runtime.
    pub fn new(client: HttpClient, cluster: impl Into<String>, nodes: Vec<String>) -> Watch {
        let mut list: Vec<String> = Vec::new();
        for n in nodes {
            let n = n.trim().trim_end_matches('/').to_string();
            if !n.is_empty() && !list.contains(&n) {
                list.push(n);
            }
        }
        Watch {
            client,
            cluster: cluster.into(),
            nodes: list,
            at: 0,
            prefix: None,
            learn: false,
            idle: IDLE,
            next: None,
            conn: None,
            events: VecDeque::new(),
            failed: 0,
            refused: 0,
            gaps: 0,
            reconnects: 0,
            connected: false,
            resent: 0,
        }
    }

    /// Start with the entry at `seq`.
    pub fn from(mut self, seq: u64) -> Watch {
        self.next = Some(seq.max(1));
        self
    }

    /// Only key-value changes whose key starts with `prefix` (an app's filter: see
    /// [`Reads::watch_filter`](crate::Reads::watch_filter)).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Watch {
        self.prefix = Some(prefix.into());
        self
    }

    /// Also fail over to the members the cluster names (in `members` events, and in the
    /// `status` of the first node that answers it, before the first connection).
    pub fn learn_members(mut self, learn: bool) -> Watch {
        self.learn = learn;
        self
    }

    /// Drop a connection silent for this long (default 5 s; the node sends progress at least
    /// every second).
    pub fn idle_timeout(mut self, idle: Duration) -> Watch {
        self.idle = idle;
        self
    }

    /// The node watched now (or tried next).
    pub fn node(&self) -> &str {
        self.nodes.get(self.at).map_or("", String::as_str)
    }

    /// The seq of the next entry it will hand out, once known: where a new watch must start
    /// to continue this one. Events read from the node but not yet handed out count as not
    /// seen (a frame often brings several), so a watch dropped here and remade from this seq
    /// neither skips nor repeats one.
    pub fn next_seq(&self) -> Option<u64> {
        self.events.iter().find_map(WatchEvent::seq).or(self.next)
    }

    /// Connections made after the first.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// Entries a node sent at or before one this watch had handed out already (they are
    /// dropped). Each connection asks for the entries after the last one handed out, so a node
    /// that serves `from` correctly sends none: a test can count on zero.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// The next event. Entries come in commit order, each once, across reconnects; see the
    /// module docs for when it gives up.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchError> {
        if self.nodes.is_empty() {
            return Err(WatchError::state("a watch needs at least one node".into()));
        }
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let broken = match self.conn.is_some() {
                true => self.read().await,
                false => self.open().await,
            };
            let Err(broken) = broken else { continue };
            self.conn = None;
            self.failed += 1;
            match broken {
                Broken::Stop(e) => return Err(e),
                Broken::Retry(why) => {
                    tracing::debug!(node = self.node(), "watch: {why}");
                    self.gaps = 0;
                }
                Broken::Gap(e) => {
                    self.gaps += 1;
                    if self.gaps as usize >= self.nodes.len() {
                        // Every node of a round: give up for now (a call again tries again).
                        self.gaps = 0;
                        self.failed = 0;
                        self.at = (self.at + 1) % self.nodes.len();
                        return Err(e);
                    }
                }
            }
            if self.refused as usize >= self.nodes.len() {
                self.refused = 0;
                return Err(WatchError::state(format!(
                    "every node refused the watch of {:?}",
                    self.cluster
                )));
            }
            self.at = (self.at + 1) % self.nodes.len();
            let n = self.nodes.len() as u32;
            if self.failed.is_multiple_of(n) {
                let rounds = self.failed / n;
                let wait = BACKOFF_FIRST.saturating_mul(1 << (rounds - 1).min(16));
                tokio::time::sleep(wait.min(BACKOFF_MAX)).await;
            }
        }
    }

    /// Connects to the current node.
    async fn open(&mut self) -> Result<(), Broken> {
        if self.learn && !self.connected {
            self.learn_from_status().await;
        }
        if self.connected {
            self.reconnects += 1;
        }
        self.connected = true;
        let mut path = "watch".to_string();
        let mut sep = '?';
        let mut headers = vec![("accept", "text/event-stream".to_string())];
        if let Some(n) = self.next {
            path.push_str(&format!("?from={n}"));
            sep = '&';
            if n > 1 {
                // Says the same as `from` (the node takes the header first).
                headers.push(("last-event-id", (n - 1).to_string()));
            }
        }
        if let Some(p) = &self.prefix {
            path.push_str(&format!("{sep}prefix={}", percent_encode(p)));
        }
        let url = clusterconsensus::wire::url(self.node(), &self.cluster, &path);
        let res = self
            .client
            .open(&url, &headers)
            .await
            .map_err(|e| Broken::Retry(e.message))?;
        let status = res.status().as_u16();
        if status != 200 {
            let body = self.body_of(res).await;
            let e = http_error(&url, status, &body);
            let refusal = WatchError {
                code: e.code,
                err: e.message,
                oldest: serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["oldest"].as_u64()),
            };
            return Err(match (status, refusal.code) {
                (_, ErrorCode::Gap) => Broken::Gap(refusal),
                (401, _) | (_, ErrorCode::Denied) => Broken::Stop(refusal),
                (400..=499, _) if status != 408 && status != 429 => {
                    self.refused += 1;
                    Broken::Retry(refusal.to_string())
                }
                _ => Broken::Retry(refusal.to_string()),
            });
        }
        let kind = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !kind.starts_with("text/event-stream") {
            self.refused += 1;
            return Err(Broken::Retry(format!(
                "{url}: not an event stream ({kind})"
            )));
        }
        self.refused = 0;
        self.conn = Some(Conn {
            body: res.into_body(),
            sse: Sse::default(),
        });
        Ok(())
    }

    /// The start of an error answer's body.
    async fn body_of(&self, res: hyper::Response<hyper::body::Incoming>) -> Bytes {
        let limited = http_body_util::Limited::new(res.into_body(), 1 << 16);
        match tokio::time::timeout(self.idle, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        }
    }

    /// Reads the next chunk of the open stream into events.
    async fn read(&mut self) -> Result<(), Broken> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let frame = match tokio::time::timeout(self.idle, conn.body.frame()).await {
            Err(_) => return Err(Broken::Retry(format!("silent for {:?}", self.idle))),
            Ok(None) => return Err(Broken::Retry("the node ended the stream".into())),
            Ok(Some(Err(e))) => return Err(Broken::Retry(format!("reading the stream: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(chunk) = frame.into_data() else {
            return Ok(()); // trailers: nothing for us
        };
        let mut raw = Vec::new();
        conn.sse.push(&chunk, &mut raw).map_err(Broken::Retry)?;
        for ev in raw {
            self.event(ev)?;
        }
        Ok(())
    }

    /// Takes one event of the stream: an entry not handed out before goes to `events`.
    fn event(&mut self, raw: Raw) -> Result<(), Broken> {
        let data: Data = serde_json::from_str(&raw.data)
            .map_err(|e| Broken::Retry(format!("an event that is not JSON: {e}")))?;
        let event = match raw.kind.as_str() {
            "error" => {
                let e = data.error();
                return Err(match e.code {
                    ErrorCode::Gap => Broken::Gap(e),
                    ErrorCode::Denied => Broken::Stop(e),
                    _ => Broken::Retry(e.to_string()),
                });
            }
            "progress" => {
                let Some(commit) = data.commit else {
                    return Err(Broken::Retry("a progress event without commit".into()));
                };
                // Everything up to `commit` was sent or filtered out: resume after it.
                if self.next.is_none_or(|n| n <= commit) {
                    self.next = Some(commit + 1);
                }
                WatchEvent::Progress { commit }
            }
            "members" | "message" => {
                let Some(seq) = data.seq else {
                    return Err(Broken::Retry("an entry without a seq".into()));
                };
                if self.next.is_some_and(|n| seq < n) {
                    self.resent += 1;
                    return Ok(()); // handed out already
                }
                self.next = Some(seq + 1);
                match data.members {
                    Some(members) if raw.kind == "members" => {
                        if self.learn {
                            self.add_nodes(members.iter().chain(&data.learners));
                        }
                        WatchEvent::Members {
                            seq,
                            members,
                            learners: data.learners,
                        }
                    }
                    _ => WatchEvent::Entry {
                        seq,
                        chg: data.chg.unwrap_or_default(),
                    },
                }
            }
            _ => return Ok(()), // an event kind of a later version
        };
        self.failed = 0;
        self.gaps = 0;
        self.events.push_back(event);
        Ok(())
    }

    fn add_nodes<'a>(&mut self, more: impl Iterator<Item = &'a String>) {
        for n in more {
            let n = n.trim_end_matches('/');
            if !n.is_empty() && !self.nodes.iter().any(|m| m == n) {
                self.nodes.push(n.to_string());
            }
        }
    }

    /// Adds the members and learners of the first node's `status` that answers.
    async fn learn_from_status(&mut self) {
        for node in self.nodes.clone() {
            let url = clusterconsensus::wire::url(&node, &self.cluster, "status");
            if let Ok((200, body)) = self.client.get(&url).await {
                if let Ok(st) = serde_json::from_slice::<Value>(&body) {
                    let list = |k: &str| -> Vec<String> {
                        st[k]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|m| {
                                        m.as_str().or_else(|| m["addr"].as_str()).map(String::from)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let (m, l) = (list("members"), list("learners"));
                    self.add_nodes(m.iter().chain(&l));
                    return;
                }
            }
        }
    }
}

impl From<Error> for WatchError {
    fn from(e: Error) -> WatchError {
        WatchError {
            code: e.code,
            err: e.message,
            oldest: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Raw> {
        let mut s = Sse::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = "id: 1\ndata: {\"seq\":1,\"chg\":[\"caf\u{e9}\"]}\n\n: comment\n\nevent: progress\r\ndata: {\"commit\":1}\r\n\r\nid: 2\nevent: members\ndata: {\"seq\":2,\ndata: \"members\":[]}\n\n";
        let want = vec![
            Raw {
                kind: "message".into(),
                data: "{\"seq\":1,\"chg\":[\"caf\u{e9}\"]}".into(),
            },
            Raw {
                kind: "progress".into(),
                data: "{\"commit\":1}".into(),
            },
            Raw {
                kind: "members".into(),
                data: "{\"seq\":2,\n\"members\":[]}".into(),
            },
        ];
        let b = stream.as_bytes();
        for cut in 0..=b.len() {
            assert_eq!(parse(&[&b[..cut], &b[cut..]]), want, "cut at {cut}");
        }
    }

    #[test]
    fn events_become_watch_events_once() {
        let mut w = Watch::new(HttpClient::new(IDLE), "c", vec!["http://a/".into()]).from(5);
        assert_eq!(w.node(), "http://a");
        let raw = |kind: &str, data: &str| Raw {
            kind: kind.into(),
            data: data.into(),
        };
        assert!(w
            .event(raw("message", r#"{"seq":4,"chg":["old"]}"#))
            .is_ok());
        assert!(w.events.is_empty(), "before from");
        assert_eq!(w.resent(), 1);
        w.event(raw("message", r#"{"seq":5,"chg":["a"]}"#))
            .ok()
            .unwrap();
        w.event(raw("message", r#"{"seq":5,"chg":["a"]}"#))
            .ok()
            .unwrap();
        w.event(raw("progress", r#"{"commit":9}"#)).ok().unwrap();
        w.event(raw(
            "members",
            r#"{"seq":10,"members":["http://b"],"learners":[]}"#,
        ))
        .ok()
        .unwrap();
        assert_eq!(
            w.events.iter().map(WatchEvent::to_line).collect::<Vec<_>>(),
            [
                r#"{"type":"entry","seq":5,"chg":["a"]}"#,
                r#"{"type":"progress","commit":9}"#,
                r#"{"type":"members","seq":10,"members":["http://b"],"learners":[]}"#,
            ]
        );
        // Read but not handed out: a watch remade from `next_seq` must bring them again.
        assert_eq!((w.next_seq(), w.resent()), (Some(5), 2));
        assert!(matches!(
            w.events.pop_front(),
            Some(WatchEvent::Entry { seq: 5, .. })
        ));
        assert_eq!(
            w.next_seq(),
            Some(10),
            "the progress says nothing before 10 is due"
        );
        w.events.pop_front();
        w.events.pop_front();
        assert_eq!(w.next_seq(), Some(11));
        assert_eq!(w.nodes, ["http://a"], "learns only when asked to");
        let gap = w.event(raw(
            "error",
            r#"{"code":"ERR_GAP","err":"compacted","oldest":50}"#,
        ));
        assert!(matches!(gap, Err(Broken::Gap(e)) if e.oldest == Some(50)));
        let behind = w.event(raw("error", r#"{"code":"ERR_STATE","err":"fell behind"}"#));
        assert!(matches!(behind, Err(Broken::Retry(_))));
    }
}
