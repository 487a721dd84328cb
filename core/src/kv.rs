//! The key-value app: one [`StateMachine`] among the examples, which the native node serves by
//! default, the simulation checks for linearizability, and the dashboard shows.
//!
//! Changes are JSON strings:
//!
//! - `{"op":"set","key":K,"value":V}` sets a key; result `{"prev": V|null}`,
//! - `{"op":"del","key":K}` deletes it; result `{"prev": V|null}`,
//! - `{"op":"cas","key":K,"expect":E,"value":W}` sets it to W only if its value is E (`"expect":
//!   null`: only if absent), and `{"op":"cas","key":K,"expect":E,"del":true}` deletes it only if
//!   its value is E; result `{"ok": true|false, "value": V|null}`, the value after the change,
//!
//! each optionally with `"client": C, "req": N` (N a positive integer) for exactly-once: the
//! store remembers the highest `req` applied per client and that request's result. A change
//! whose `req` equals it is not applied again and answers the first result; an older one is not
//! applied and answers `null`. A client numbers its requests 1, 2, 3, ... and retries a failed
//! one with the same number (docs/PROTOCOL.md, submit).
//!
//! Snapshot: JSON lines, written and read incrementally (see [`KvSnapshot`], [`KvRestore`]):
//! a header `{"kv":1,"keys":N,"clients":M}`, then one `[KEY,VALUE]` line per key in key
//! order, then one `{"c":CLIENT,"r":REQ,"v":RESULT}` line per client.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Bound;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::pmap::{self, PMap};
use crate::state_machine::{SnapshotSink, SnapshotSource, StateMachine};

/// One key-value change, as it appears inside a change string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvChange {
    pub op: KvOp,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `cas` only: the value the key must have (`Some(None)`: it must be absent).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expect: Option<Option<String>>,
    /// `cas` only: delete instead of setting.
    #[serde(default, skip_serializing_if = "is_false")]
    pub del: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field that is present (even as `null`) is `Some`: tells `"expect": null` from no `expect`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvOp {
    Set,
    Del,
    Cas,
}

impl KvChange {
    fn new(op: KvOp, key: String) -> KvChange {
        KvChange {
            op,
            key,
            value: None,
            expect: None,
            del: false,
            client: None,
            req: None,
        }
    }

    pub fn set(key: impl Into<String>, value: impl Into<String>) -> KvChange {
        let mut c = KvChange::new(KvOp::Set, key.into());
        c.value = Some(value.into());
        c
    }

    pub fn del(key: impl Into<String>) -> KvChange {
        KvChange::new(KvOp::Del, key.into())
    }

    /// Sets `key` to `value` if its value is `expect` (`None`: if it is absent).
    pub fn cas(key: impl Into<String>, expect: Option<&str>, value: impl Into<String>) -> KvChange {
        let mut c = KvChange::new(KvOp::Cas, key.into());
        c.expect = Some(expect.map(String::from));
        c.value = Some(value.into());
        c
    }

    /// Deletes `key` if its value is `expect`.
    pub fn cas_del(key: impl Into<String>, expect: Option<&str>) -> KvChange {
        let mut c = KvChange::new(KvOp::Cas, key.into());
        c.expect = Some(expect.map(String::from));
        c.del = true;
        c
    }

    /// Tags the change with a client id and request number for exactly-once.
    pub fn with_client(mut self, client: impl Into<String>, req: u64) -> KvChange {
        self.client = Some(client.into());
        self.req = Some(req);
        self
    }

    /// The change string to submit.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a change string.
    pub fn parse(change: &str) -> Result<KvChange, String> {
        let c: KvChange = serde_json::from_str(change)
            .map_err(|e| alloc::format!("bad key-value change: {e}"))?;
        let bad = |m: &str| Err(m.to_string());
        match c.op {
            KvOp::Set if c.value.is_none() => return bad("set needs a value"),
            KvOp::Del if c.value.is_some() => return bad("del takes no value"),
            KvOp::Set | KvOp::Del if c.expect.is_some() || c.del => {
                return bad("expect and del are for cas")
            }
            KvOp::Cas if c.expect.is_none() => return bad("cas needs expect (null: absent)"),
            KvOp::Cas if c.del == c.value.is_some() => {
                return bad("cas needs exactly one of value and \"del\": true")
            }
            _ => {}
        }
        match (&c.client, c.req) {
            (Some(_), Some(0)) => Err("req must be positive".to_string()),
            (Some(_), Some(_)) | (None, None) => Ok(c),
            _ => Err("client and req go together".to_string()),
        }
    }
}

/// What the store remembers of a client for exactly-once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The highest request number applied.
    pub req: u64,
    /// Its result, answered again to a retry of it.
    pub result: Value,
}

/// The key-value store: the data, and per client the last request applied.
///
/// The data is a persistent map ([`PMap`]): a snapshot freezes it in O(1) (one reference count),
/// so a master that streams a state of hundreds of MB to a new member, or a backup, neither
/// copies it nor stops the cluster's task for a time in proportion to it, and later writes copy
/// only the leaves they touch while the frozen copy is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    data: PMap,
    /// Sum of the lengths of every key and value.
    bytes: u64,
    clients: BTreeMap<String, ClientRecord>,
}

/// One page of keys, for paginated reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page {
    pub items: Vec<(String, String)>,
    /// The last key of this page when more keys follow: ask again with `after` = it.
    pub next: Option<String>,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.data.iter()
    }

    /// What the store remembers of `client`.
    pub fn client(&self, client: &str) -> Option<&ClientRecord> {
        self.clients.get(client)
    }

    /// Up to `limit` keys that start with `prefix` and come after `after`, in key order.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let mut it = match after {
            Some(a) if a >= prefix => self.data.range_after(Some(a)),
            _ => self.data.prefix(prefix),
        }
        .take_while(|(k, _)| k.starts_with(prefix));
        let items: Vec<(String, String)> = it
            .by_ref()
            .take(limit)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let next = match it.next() {
            Some(_) => items.last().map(|(k, _)| k.clone()),
            None => None,
        };
        Page { items, next }
    }

    fn set(&mut self, key: String, value: String) -> Option<String> {
        self.bytes += (key.len() + value.len()) as u64;
        let klen = key.len() as u64;
        let prev = self.data.insert(&key, &value);
        if let Some(p) = &prev {
            self.bytes -= klen + p.len() as u64;
        }
        prev
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        let prev = self.data.remove(key);
        if let Some(p) = &prev {
            self.bytes -= (key.len() + p.len()) as u64;
        }
        prev
    }

    /// Applies `c`; with `answer` false the result is `Value::Null` and never built (a
    /// `serde_json` map per change, which a follower would only drop).
    fn apply_change(&mut self, c: KvChange, answer: bool) -> Value {
        let answered = |v: Value| if answer { v } else { Value::Null };
        match c.op {
            KvOp::Set => {
                let prev = self.set(c.key, c.value.unwrap_or_default());
                answered(json!({ "prev": prev }))
            }
            KvOp::Del => {
                let prev = self.remove(&c.key);
                answered(json!({ "prev": prev }))
            }
            KvOp::Cas => {
                let expect = c.expect.unwrap_or(None);
                if self.get(&c.key) != expect.as_deref() {
                    if !answer {
                        return Value::Null;
                    }
                    return json!({"ok": false, "value": self.get(&c.key)});
                }
                match c.value {
                    Some(v) if !c.del => {
                        if !answer {
                            self.set(c.key, v);
                            return Value::Null;
                        }
                        self.set(c.key, v.clone());
                        json!({"ok": true, "value": v})
                    }
                    _ => {
                        self.remove(&c.key);
                        answered(json!({"ok": true, "value": null}))
                    }
                }
            }
        }
    }
}

impl StateMachine for KvStore {
    type Snapshot = KvSnapshot;
    type Restore = KvRestore;

    fn validate(&self, change: &str) -> Result<(), String> {
        KvChange::parse(change).map(|_| ())
    }

    fn apply(&mut self, _seq: u64, change: &str) -> Value {
        let Ok(mut c) = KvChange::parse(change) else {
            return Value::Null;
        };
        let Some((client, req)) = c.client.take().zip(c.req) else {
            return self.apply_change(c, true);
        };
        match self.clients.get(&client) {
            // A retry of the request already applied: its first result.
            Some(r) if r.req == req => return r.result.clone(),
            // An older request than the last one applied: not applied, nothing kept.
            Some(r) if r.req > req => return Value::Null,
            _ => {}
        }
        let result = self.apply_change(c, true);
        let record = ClientRecord {
            req,
            result: result.clone(),
        };
        self.clients.insert(client, record);
        result
    }

    fn apply_unanswered(&mut self, seq: u64, change: &str) {
        match KvChange::parse(change) {
            // An exactly-once change keeps its result for retries: built as `apply` builds it.
            Ok(c) if c.client.is_some() && c.req.is_some() => {
                self.apply(seq, change);
            }
            Ok(c) => {
                self.apply_change(c, false);
            }
            Err(_) => {}
        }
    }

    fn snapshot(&self) -> KvSnapshot {
        KvSnapshot {
            data: self.data.clone(),
            clients: self.clients.clone(),
            stage: Stage::Header,
        }
    }

    fn restore(&self) -> KvRestore {
        KvRestore::default()
    }
}

/// Where a [`KvSnapshot`] is in its output.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    /// Keys after this one are still to write (`None`: from the first).
    Keys(Option<String>),
    Clients(Option<String>),
    Done,
}

/// A frozen copy of a [`KvStore`] that writes itself out as snapshot lines. Taking it costs
/// O(1) for the data (a [`PMap`] clone) and a copy of the client table.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    data: PMap,
    clients: BTreeMap<String, ClientRecord>,
    stage: Stage,
}

fn after<'a, V>(
    map: &'a BTreeMap<String, V>,
    last: &Option<String>,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let start = match last {
        Some(k) => Bound::Excluded(k.as_str()),
        None => Bound::Unbounded,
    };
    map.range::<str, _>((start, Bound::Unbounded))
}

impl SnapshotSource for KvSnapshot {
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        let limit = out.len() + max.max(1);
        loop {
            if out.len() >= limit {
                return self.stage != Stage::Done;
            }
            match &self.stage {
                Stage::Header => {
                    let h =
                        json!({"kv": 1, "keys": self.data.len(), "clients": self.clients.len()});
                    line(out, &h);
                    self.stage = Stage::Keys(None);
                }
                Stage::Keys(last) => {
                    let mut next = None;
                    for (k, v) in self.data.range_after(last.as_deref()) {
                        line(out, &(k, v));
                        next = Some(k.to_string());
                        if out.len() >= limit {
                            break;
                        }
                    }
                    self.stage = match next {
                        Some(k) if out.len() >= limit => Stage::Keys(Some(k)),
                        _ => Stage::Clients(None),
                    };
                }
                Stage::Clients(last) => {
                    let mut next = None;
                    for (c, r) in after(&self.clients, last) {
                        line(out, &json!({"c": c, "r": r.req, "v": r.result}));
                        next = Some(c.clone());
                        if out.len() >= limit {
                            break;
                        }
                    }
                    self.stage = match next {
                        Some(c) if out.len() >= limit => Stage::Clients(Some(c)),
                        _ => Stage::Done,
                    };
                }
                Stage::Done => return false,
            }
        }
    }
}

fn line<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Strings, numbers and JSON values always serialize (no_std: no `io::Write`).
    if let Ok(bytes) = serde_json::to_vec(v) {
        out.extend_from_slice(&bytes);
    }
    out.push(b'\n');
}

#[derive(Deserialize)]
struct Header {
    kv: u32,
    keys: u64,
    clients: u64,
}

#[derive(Deserialize)]
struct ClientLine {
    c: String,
    r: u64,
    v: Value,
}

/// The snapshot of the format before the line format: one JSON object (read, never written).
#[derive(Deserialize)]
struct Legacy {
    data: BTreeMap<String, String>,
    #[serde(default)]
    clients: BTreeMap<String, u64>,
}

/// Builds a [`KvStore`] from snapshot lines as they arrive; holds at most one partial line
/// besides the state it builds. Refuses a snapshot that is cut short or does not decode.
#[derive(Debug, Default)]
pub struct KvRestore {
    partial: Vec<u8>,
    header: Option<(u64, u64)>,
    /// The keys, in order, packed into full leaves as they come.
    data: pmap::Builder,
    store: KvStore,
    keys: u64,
    clients: u64,
    /// The whole snapshot is the legacy single object (collected, parsed at the end).
    legacy: bool,
}

impl KvRestore {
    fn line(&mut self, l: &[u8]) -> Result<(), String> {
        let bad = |what: &str, e: serde_json::Error| alloc::format!("bad snapshot {what}: {e}");
        let Some((keys, clients)) = self.header else {
            let h: Header = serde_json::from_slice(l).map_err(|e| bad("header", e))?;
            if h.kv != 1 {
                return Err(alloc::format!("snapshot format {} is not 1", h.kv));
            }
            self.header = Some((h.keys, h.clients));
            return Ok(());
        };
        if self.keys < keys {
            let (k, v): (String, String) = serde_json::from_slice(l).map_err(|e| bad("key", e))?;
            self.data.push(&k, &v).map_err(|e| match e {
                pmap::BuildError::OutOfOrder { previous, .. } => {
                    alloc::format!("snapshot key {k:?} is out of order (after {previous:?})")
                }
                e => alloc::format!("snapshot key {k:?}: {e}"),
            })?;
            self.store.bytes += (k.len() + v.len()) as u64;
            self.keys += 1;
        } else if self.clients < clients {
            let c: ClientLine = serde_json::from_slice(l).map_err(|e| bad("client", e))?;
            let record = ClientRecord {
                req: c.r,
                result: c.v,
            };
            self.store.clients.insert(c.c, record);
            self.clients += 1;
        } else {
            return Err("snapshot has more lines than its header says".to_string());
        }
        Ok(())
    }
}

impl SnapshotSink for KvRestore {
    type State = KvStore;

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        if self.header.is_none() && self.partial.is_empty() && bytes.starts_with(b"{\"data\"") {
            self.legacy = true;
        }
        if self.legacy {
            self.partial.extend_from_slice(bytes);
            return Ok(());
        }
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            let (head, rest) = bytes.split_at(nl);
            if self.partial.is_empty() {
                self.line(head)?;
            } else {
                let mut l = core::mem::take(&mut self.partial);
                l.extend_from_slice(head);
                self.line(&l)?;
            }
            bytes = &rest[1..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(mut self) -> Result<KvStore, String> {
        if self.legacy {
            let l: Legacy = serde_json::from_slice(&self.partial)
                .map_err(|e| alloc::format!("bad key-value snapshot: {e}"))?;
            let mut store = KvStore::new();
            for (k, v) in l.data {
                store.set(k, v);
            }
            for (c, req) in l.clients {
                let record = ClientRecord {
                    req,
                    result: Value::Null,
                };
                store.clients.insert(c, record);
            }
            return Ok(store);
        }
        if !self.partial.is_empty() {
            let l = core::mem::take(&mut self.partial);
            self.line(&l)?;
        }
        match self.header {
            Some((k, c)) if k == self.keys && c == self.clients => {
                self.store.data = self.data.finish();
                Ok(self.store)
            }
            Some((k, c)) => Err(alloc::format!(
                "snapshot cut short: {} of {k} keys and {} of {c} clients",
                self.keys,
                self.clients
            )),
            None => Err("snapshot is empty: no header".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::{restore_from, snapshot_to_string};

    fn apply(kv: &mut KvStore, change: &KvChange) -> Value {
        kv.apply(0, &change.encode())
    }

    #[test]
    fn set_and_del_answer_the_previous_value() {
        let mut kv = KvStore::new();
        assert_eq!(
            apply(&mut kv, &KvChange::set("a", "1")),
            json!({"prev": null})
        );
        assert_eq!(
            apply(&mut kv, &KvChange::set("a", "2")),
            json!({"prev": "1"})
        );
        assert_eq!(
            kv.apply(3, r#"{"op":"set","key":"b","value":"x"}"#),
            json!({"prev": null})
        );
        assert_eq!(apply(&mut kv, &KvChange::del("a")), json!({"prev": "2"}));
        assert_eq!(apply(&mut kv, &KvChange::del("a")), json!({"prev": null}));
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.get("b"), Some("x"));
        assert_eq!((kv.len(), kv.bytes()), (1, 2));
    }

    #[test]
    fn cas_applies_only_against_the_expected_value() {
        let mut kv = KvStore::new();
        let r = apply(&mut kv, &KvChange::cas("k", Some("x"), "1"));
        assert_eq!(r, json!({"ok": false, "value": null}));
        let r = apply(&mut kv, &KvChange::cas("k", None, "1"));
        assert_eq!(r, json!({"ok": true, "value": "1"}));
        let r = apply(&mut kv, &KvChange::cas("k", None, "2"));
        assert_eq!(r, json!({"ok": false, "value": "1"}));
        let r = apply(&mut kv, &KvChange::cas("k", Some("1"), "2"));
        assert_eq!(r, json!({"ok": true, "value": "2"}));
        let r = apply(&mut kv, &KvChange::cas_del("k", Some("1")));
        assert_eq!(r, json!({"ok": false, "value": "2"}));
        let r = apply(&mut kv, &KvChange::cas_del("k", Some("2")));
        assert_eq!(r, json!({"ok": true, "value": null}));
        assert_eq!((kv.get("k"), kv.bytes()), (None, 0));
        // The wire form: `"expect": null` is "only if absent", a missing expect is refused.
        let raw = r#"{"op":"cas","key":"k","expect":null,"value":"v"}"#;
        assert_eq!(kv.apply(9, raw), json!({"ok": true, "value": "v"}));
    }

    #[test]
    fn apply_unanswered_leaves_the_state_apply_leaves() {
        let changes = [
            KvChange::set("a", "1"),
            KvChange::set("a", "22"),
            KvChange::set("b", "x"),
            KvChange::del("a"),
            KvChange::del("zz"),
            KvChange::cas("k", Some("x"), "1"),
            KvChange::cas("k", None, "1"),
            KvChange::cas("k", Some("1"), "2"),
            KvChange::cas_del("b", Some("y")),
            KvChange::cas_del("b", Some("x")),
            KvChange::set("c", "3").with_client("cl", 1),
            KvChange::set("c", "4").with_client("cl", 1),
            KvChange::cas("c", Some("3"), "5").with_client("cl", 2),
        ];
        let (mut answered, mut quiet) = (KvStore::new(), KvStore::new());
        for (i, c) in changes.iter().enumerate() {
            answered.apply(i as u64 + 1, &c.encode());
            quiet.apply_unanswered(i as u64 + 1, &c.encode());
        }
        quiet.apply_unanswered(99, "not json");
        let all = |kv: &KvStore| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&quiet), all(&answered));
        assert_eq!(
            all(&quiet),
            [
                ("c".to_string(), "5".to_string()),
                ("k".to_string(), "2".to_string())
            ]
        );
        assert_eq!(
            (quiet.len(), quiet.bytes()),
            (answered.len(), answered.bytes())
        );
        // A retry answered from a follower's table gets the result the master gave.
        assert_eq!(quiet.client("cl"), answered.client("cl"));
        assert_eq!(quiet.client("cl").map(|r| r.req), Some(2));
    }

    #[test]
    fn exactly_once_per_client_request_answers_the_first_result() {
        let mut kv = KvStore::new();
        let c1 = KvChange::set("k", "first").with_client("c", 1);
        let c2 = KvChange::cas("k", Some("first"), "second").with_client("c", 2);
        assert_eq!(apply(&mut kv, &c1), json!({"prev": null}));
        assert_eq!(apply(&mut kv, &c2), json!({"ok": true, "value": "second"}));
        // A retry of request 2 is not applied again and answers the first result, although
        // the cas would fail now.
        assert_eq!(apply(&mut kv, &c2), json!({"ok": true, "value": "second"}));
        // A late retry of request 1: not applied, nothing kept.
        assert_eq!(apply(&mut kv, &c1), Value::Null);
        assert_eq!(kv.get("k"), Some("second"));
        assert_eq!(kv.client("c").map(|r| r.req), Some(2));
    }

    #[test]
    fn validation() {
        let kv = KvStore::new();
        for good in [
            r#"{"op":"set","key":"a","value":"1"}"#,
            r#"{"op":"set","key":"a","value":"1","client":"c-1","req":7}"#,
            r#"{"op":"cas","key":"a","expect":null,"value":"1"}"#,
            r#"{"op":"cas","key":"a","expect":"0","del":true}"#,
        ] {
            assert!(kv.validate(good).is_ok(), "{good}");
        }
        for bad in [
            "chg1",
            "{}",
            r#"{"op":"set","key":"a"}"#,
            r#"{"op":"put","key":"a","value":"1"}"#,
            r#"{"op":"del","key":"a","value":"1"}"#,
            r#"{"op":"set","key":"a","value":"1","client":"c"}"#,
            r#"{"op":"set","key":"a","value":"1","client":"c","req":0}"#,
            r#"{"op":"set","key":"a","value":1}"#,
            r#"{"op":"set","key":"a","value":"1","extra":true}"#,
            r#"{"op":"set","key":"a","value":"1","expect":"0"}"#,
            r#"{"op":"cas","key":"a","value":"1"}"#,
            r#"{"op":"cas","key":"a","expect":null}"#,
            r#"{"op":"cas","key":"a","expect":null,"value":"1","del":true}"#,
        ] {
            assert!(kv.validate(bad).is_err(), "{bad}");
        }
    }

    fn sample() -> KvStore {
        let mut kv = KvStore::new();
        for i in 0..500 {
            let v = "é".repeat(i % 7);
            apply(
                &mut kv,
                &KvChange::set(alloc::format!("key{i:04}"), v).with_client("c", i as u64 + 1),
            );
        }
        apply(
            &mut kv,
            &KvChange::cas("other", None, "x").with_client("d", 3),
        );
        kv
    }

    #[test]
    fn snapshot_round_trips_in_parts_of_any_size() {
        let kv = sample();
        for (max, split) in [(1, 1), (7, 3), (100, 64), (1 << 20, 5000)] {
            let mut src = kv.snapshot();
            let mut bytes = Vec::new();
            while src.fill(&mut bytes, max) {}
            let mut sink = kv.restore();
            for part in bytes.chunks(split) {
                sink.write(part).unwrap();
            }
            let back = sink.finish().unwrap();
            assert_eq!(back, kv, "max {max} split {split}");
        }
    }

    #[test]
    fn a_snapshot_is_frozen_at_the_time_it_was_taken() {
        let mut kv = sample();
        let before = kv.clone();
        let mut src = kv.snapshot();
        let mut bytes = Vec::new();
        src.fill(&mut bytes, 100);
        apply(&mut kv, &KvChange::set("key0001", "changed"));
        apply(&mut kv, &KvChange::del("key0400"));
        while src.fill(&mut bytes, 100) {}
        assert_eq!(restore_from(&kv, &bytes).unwrap(), before);
    }

    #[test]
    fn a_cut_or_damaged_snapshot_is_refused() {
        let kv = sample();
        let text = snapshot_to_string(kv.snapshot()).unwrap();
        let bytes = text.as_bytes();
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 2] {
            let mut sink = kv.restore();
            let res = sink.write(&bytes[..cut]).and_then(|_| sink.finish());
            assert!(res.is_err(), "cut at {cut}");
        }
        let damaged = text.replacen("\"key0003\"", "\"key0003", 1);
        assert!(restore_from(&kv, damaged.as_bytes()).is_err());
        let extra = alloc::format!("{text}[\"zz\",\"1\"]\n");
        assert!(restore_from(&kv, extra.as_bytes()).is_err());
        let swapped = text.replacen("key0001", "key9999", 1);
        assert!(restore_from(&kv, swapped.as_bytes())
            .unwrap_err()
            .contains("order"));
    }

    #[test]
    fn the_earlier_single_object_snapshot_still_restores() {
        let old = r#"{"data":{"a":"1","b":"2"},"clients":{"c":4}}"#;
        let kv = restore_from(&KvStore::new(), old.as_bytes()).unwrap();
        assert_eq!(
            (kv.get("a"), kv.get("b"), kv.bytes()),
            (Some("1"), Some("2"), 4)
        );
        assert_eq!(kv.client("c").map(|r| r.req), Some(4));
    }

    #[test]
    fn pages_walk_a_prefix_in_order() {
        let kv = sample();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = kv.page("key01", after.as_deref(), 30);
            assert!(p.items.len() <= 30);
            seen.extend(p.items.iter().map(|(k, _)| k.clone()));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let want: Vec<String> = (100..200).map(|i| alloc::format!("key{i:04}")).collect();
        assert_eq!(seen, want);
        assert_eq!(kv.page("nope", None, 10).items.len(), 0);
        assert_eq!(kv.page("", Some("key0498"), 10).items.len(), 2);
    }
}
