//! Apps bring their own reads: [`Reads`] answers `GET /_clusterc/<id>/<path>` for the paths the
//! library does not own.
//!
//! The library owns the protocol's `POST` methods, `status`, `metrics` and `watch`; every other `GET`
//! below a cluster goes to the app's [`Reads::read`], which runs on the cluster's task with
//! the applied state. The library does the rest for every app route alike:
//!
//! - `?consistent=true` (or `?consistent`, `?consistent=1`): the read runs only after a read
//!   index round (the master confirmed, by messages sent after the read arrived, that it is
//!   still master, and this node applied everything committed before), so it is linearizable;
//!   without it the read is this node's local state and may be stale;
//! - authentication: a consistent read needs the token, a plain one only with `auth_reads`;
//! - admission: every app read counts against `max_inflight`.
//!
//! `read` runs on the task that orders the log, so it must be cheap: bounded work whatever the
//! size of the state (one key, one page of keys; never a scan of everything).

use std::sync::Arc;

use serde_json::{json, Value};

/// Which changes a watcher sees: true to keep a change (see [`Reads::watch_filter`]).
pub type ChangeFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The read endpoints of an app. The default answers no path (every `GET` outside the
/// library's own paths is then `404`), so an app without reads writes `impl Reads for App {}`.
pub trait Reads {
    /// Answers `GET /_clusterc/<id>/<path>?<query>`, or `None` for a path the app does not
    /// serve (`404`, `ERR_CALL`). Bounded work: it runs on the cluster's task.
    fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
        let _ = req;
        None
    }

    /// The filter of a watch (`GET /_clusterc/<id>/watch?<query>`; the library owns `from`
    /// and `wait`): `Ok(None)` to send every change, `Ok(Some(f))` to send only the changes
    /// `f` keeps (an entry left without changes is skipped; membership entries always pass),
    /// `Err(answer)` to refuse the watch with that answer. The default sends everything and
    /// refuses a `prefix` (`400`): this app's changes have no keys it knows of. The key-value
    /// app filters by key prefix.
    ///
    /// It runs on the watcher's connection, not on the cluster's task, and `f` runs once per
    /// change for every watcher that has a filter: keep it cheap.
    fn watch_filter(req: &ReadRequest) -> Result<Option<ChangeFilter>, ReadAnswer>
    where
        Self: Sized,
    {
        match req.param("prefix") {
            Some(_) => Err(ReadAnswer::bad_request(
                "this app's watch has no prefix filter",
            )),
            None => Ok(None),
        }
    }
}

/// A read, as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    path: String,
    query: Option<String>,
    commit: u64,
}

impl ReadRequest {
    /// `path` as it came below `/_clusterc/<id>/` (still percent-encoded), the raw query.
    pub fn new(path: impl Into<String>, query: Option<String>, commit: u64) -> ReadRequest {
        ReadRequest {
            path: path.into(),
            query,
            commit,
        }
    }

    /// The path below `/_clusterc/<id>/`, as sent (percent-encoded: decode a segment that
    /// carries a name with [`percent_decode`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The rest of the path after `prefix` and a `/`, decoded: `kv/a%20b` with prefix `"kv"`
    /// is `Some(Ok("a b"))`; `None` if the path is not below `prefix`, `Some(Err(answer))` (a
    /// `400`) for a bad escape.
    pub fn tail(&self, prefix: &str) -> Option<Result<String, ReadAnswer>> {
        let rest = self.path.strip_prefix(prefix)?.strip_prefix('/')?;
        Some(percent_decode(rest).ok_or_else(|| ReadAnswer::bad_request("bad percent-encoding")))
    }

    /// The first value of query parameter `name`, decoded (`+` is a space); `Some("")` for a
    /// parameter without a value. `None` if absent or badly encoded.
    pub fn param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k != name {
                return None;
            }
            percent_decode(&v.replace('+', " "))
        })
    }

    /// The commit index of the state the read sees.
    pub fn commit(&self) -> u64 {
        self.commit
    }

    pub(crate) fn at(mut self, commit: u64) -> ReadRequest {
        self.commit = commit;
        self
    }
}

/// An app's answer: an HTTP status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadAnswer {
    pub status: u16,
    pub body: Value,
}

impl ReadAnswer {
    pub fn new(status: u16, body: Value) -> ReadAnswer {
        ReadAnswer { status, body }
    }

    /// `200` with `body`.
    pub fn ok(body: Value) -> ReadAnswer {
        ReadAnswer::new(200, body)
    }

    /// `404` with `body`: for "no such item", in the shape of the found answer (a client tells
    /// it from "no such cluster or path", a `404` with an error code, by the shape alone).
    pub fn not_found(body: Value) -> ReadAnswer {
        ReadAnswer::new(404, body)
    }

    /// `400` with the error body `{"code":"ERR_ENCODING","err":message}`.
    pub fn bad_request(message: &str) -> ReadAnswer {
        ReadAnswer::new(400, json!({"code": "ERR_ENCODING", "err": message}))
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but unreserved characters (`A-Z a-z 0-9 - _ . ~`) as `%XX`: a key as
/// one path segment or query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%FF"), None);
        for s in ["a b/c?d&e=f", "café", "", "~._-"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn params_and_tails() {
        let r = ReadRequest::new("kv/a%2Fb", Some("prefix=x+y&after=&limit=5".into()), 0);
        assert_eq!(r.param("prefix").as_deref(), Some("x y"));
        assert_eq!(r.param("after").as_deref(), Some(""));
        assert_eq!(r.param("limit").as_deref(), Some("5"));
        assert_eq!(r.param("nope"), None);
        assert_eq!(r.tail("kv"), Some(Ok("a/b".to_string())));
        assert_eq!(r.tail("k"), None);
        assert_eq!(r.tail("kv/a"), None);
        let bad = ReadRequest::new("kv/%zz", None, 0);
        assert_eq!(bad.tail("kv").unwrap().unwrap_err().status, 400);
        assert_eq!(ReadRequest::new("kv", None, 0).tail("kv"), None);
    }
}
