//! Named counters with exactly-once increments, replicated by clusterconsensus.
//!
//! `cargo run --example counter` starts a local 3-node cluster of it (child processes on
//! 127.0.0.1:9001-9003, `--base-port` to move them) and prints how to try it; `counter node
//! --listen ... --cluster ... --data-dir ...` runs one node (the flags of `clusterconsensus
//! node`).
//!
//! Change: `{"op":"add","counter":C,"by":N}` (N a signed integer), optionally with
//! `"client":ID,"req":R` (R = 1, 2, 3, ... per client): the result is `{"value":V}`, the
//! counter's new value (`{"error":"overflow","value":V}` and no change past the range of i64).
//! A client that lost an answer retries with the same `req`: the increment is applied once and
//! the retry answers the first result (an older `req` than the last one applied answers `null`
//! and changes nothing).
//!
//! Read: `GET /_clusterc/<cluster>/counter/<C>` answers `{"counter":C,"value":V}` (0 for a
//! counter never added to; `?consistent=true`: linearizable).

use std::collections::BTreeMap;

use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
use clusterconsensus_server::cli::{self, Demo};
use clusterconsensus_server::{ReadAnswer, ReadRequest, Reads};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    op: Op,
    counter: String,
    by: i64,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    req: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Add,
}

impl Add {
    fn parse(change: &str) -> Result<Add, String> {
        let a: Add =
            serde_json::from_str(change).map_err(|e| format!("bad counter change: {e}"))?;
        match (&a.client, a.req) {
            (Some(_), Some(0)) => Err("req must be positive".into()),
            (Some(_), Some(_)) | (None, None) => Ok(a),
            _ => Err("client and req go together".into()),
        }
    }
}

/// The counters, and per client its last request and that request's result.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counters {
    values: BTreeMap<String, i64>,
    clients: BTreeMap<String, (u64, Value)>,
}

impl Counters {
    fn add(&mut self, counter: String, by: i64) -> Value {
        let v = self.values.get(&counter).copied().unwrap_or(0);
        match v.checked_add(by) {
            Some(n) => {
                self.values.insert(counter, n);
                json!({"value": n})
            }
            None => json!({"error": "overflow", "value": v}),
        }
    }
}

impl StateMachine for Counters {
    type Snapshot = WholeSnapshot;
    type Restore = WholeRestore<Counters>;

    fn validate(&self, change: &str) -> Result<(), String> {
        Add::parse(change).map(|_| ())
    }

    fn apply(&mut self, _seq: u64, change: &str) -> Value {
        let Ok(a) = Add::parse(change) else {
            return Value::Null;
        };
        let _ = a.op;
        let Some((client, req)) = a.client.zip(a.req) else {
            return self.add(a.counter, a.by);
        };
        match self.clients.get(&client) {
            // A retry of the request already applied: its first result.
            Some((r, result)) if *r == req => return result.clone(),
            // Older than the last one applied: not applied.
            Some((r, _)) if *r > req => return Value::Null,
            _ => {}
        }
        let result = self.add(a.counter, a.by);
        self.clients.insert(client, (req, result.clone()));
        result
    }

    fn snapshot(&self) -> WholeSnapshot {
        WholeSnapshot::new(serde_json::to_string(self).unwrap_or_default())
    }

    fn restore(&self) -> WholeRestore<Counters> {
        WholeRestore::new(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
    }
}

impl Reads for Counters {
    fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
        let name = match req.tail("counter")? {
            Ok(n) => n,
            Err(bad) => return Some(bad),
        };
        let value = self.values.get(&name).copied().unwrap_or(0);
        Some(ReadAnswer::ok(json!({"counter": name, "value": value})))
    }
}

fn hints(d: &Demo) -> Vec<String> {
    let change = r#"{"op":"add","counter":"hits","by":5,"client":"me","req":1}"#;
    let body = json!({ "chg": [change] }).to_string();
    vec![
        format!(
            "curl -s{} -X POST {} -d '{body}'   # again: the same answer, added once",
            d.write_auth,
            d.url(1, "submit")
        ),
        format!("curl -s{} {}", d.read_auth, d.url(2, "counter/hits")),
    ]
}

fn main() -> std::process::ExitCode {
    cli::app_main("counter", Counters::default, hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(c: &mut Counters, by: i64, who: Option<(&str, u64)>) -> Value {
        let mut change = json!({"op": "add", "counter": "n", "by": by});
        if let Some((client, req)) = who {
            change["client"] = json!(client);
            change["req"] = json!(req);
        }
        c.apply(0, &change.to_string())
    }

    #[test]
    fn adds_apply_once_per_client_request() {
        let mut c = Counters::default();
        assert_eq!(add(&mut c, 5, None), json!({"value": 5}));
        assert_eq!(add(&mut c, 2, Some(("a", 1))), json!({"value": 7}));
        assert_eq!(add(&mut c, 2, Some(("a", 1))), json!({"value": 7}));
        assert_eq!(add(&mut c, -10, Some(("b", 1))), json!({"value": -3}));
        assert_eq!(add(&mut c, 1, Some(("a", 2))), json!({"value": -2}));
        assert_eq!(add(&mut c, 1, Some(("a", 1))), Value::Null);
        assert_eq!(add(&mut c, i64::MAX, None), json!({"value": i64::MAX - 2}));
        assert_eq!(
            add(&mut c, 3, None),
            json!({"error": "overflow", "value": i64::MAX - 2})
        );
        let text = clusterconsensus::snapshot_to_string(c.snapshot()).unwrap();
        let back = clusterconsensus::restore_from(&c, text.as_bytes()).unwrap();
        assert_eq!(
            (back.values, back.clients),
            (c.values.clone(), c.clients.clone())
        );
        for bad in [
            "{}",
            r#"{"op":"add","counter":"n","by":1.5}"#,
            r#"{"op":"add","counter":"n","by":1,"client":"a"}"#,
            r#"{"op":"add","counter":"n","by":1,"client":"a","req":0}"#,
            r#"{"op":"sub","counter":"n","by":1}"#,
        ] {
            assert!(c.validate(bad).is_err(), "{bad}");
        }
    }
}
