//! A lock service with fencing tokens, replicated by clusterconsensus.
//!
//! `cargo run --example lock` starts a local 3-node cluster of it (child processes on
//! 127.0.0.1:9001-9003, `--base-port` to move them) and prints how to try it; `lock node
//! --listen ... --cluster ... --data-dir ...` runs one node (the flags of `clusterconsensus
//! node`).
//!
//! Changes (JSON strings in a `submit`), with the result each one answers:
//!
//! - `{"op":"acquire","lock":L,"owner":O}`: `{"ok":true,"token":T}` when O now holds L, where T
//!   is the seq of the log entry that gave it the lock, a fencing token: every later holder of
//!   L gets a larger one, so a store that remembers the largest token it saw can refuse a
//!   holder that lost the lock without knowing it. `{"ok":false,"holder":H,"token":T}` while H
//!   holds it. An acquire by the holder (a retry after a lost answer) answers its token again:
//!   owners must be unique per client.
//! - `{"op":"release","lock":L,"owner":O,"token":T}`: `{"ok":true}`; `{"ok":false,"error":...}`
//!   unless O holds L with token T (a stale token is refused).
//!
//! Read: `GET /_clusterc/<cluster>/lock/<L>` answers `{"lock":L,"holder":O|null,"token":T|null}`
//! (`?consistent=true`: linearizable).
//!
//! No leases: a lock is held until released. The service keeps, per lock name ever used, the
//! last token it gave out.

use std::collections::BTreeMap;

use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
use clusterconsensus_server::cli::{self, Demo};
use clusterconsensus_server::{ReadAnswer, ReadRequest, Reads};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Change {
    Acquire {
        lock: String,
        owner: String,
    },
    Release {
        lock: String,
        owner: String,
        token: u64,
    },
}

impl Change {
    fn parse(change: &str) -> Result<Change, String> {
        let c: Change =
            serde_json::from_str(change).map_err(|e| format!("bad lock change: {e}"))?;
        let (Change::Acquire { lock, owner } | Change::Release { lock, owner, .. }) = &c;
        if lock.is_empty() || owner.is_empty() {
            return Err("lock and owner must not be empty".into());
        }
        Ok(c)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    /// The owner and its token.
    holder: Option<(String, u64)>,
    /// The last token given out for this lock.
    last: u64,
}

/// Every lock by name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Locks {
    locks: BTreeMap<String, Lock>,
}

impl StateMachine for Locks {
    type Snapshot = WholeSnapshot;
    type Restore = WholeRestore<Locks>;

    fn validate(&self, change: &str) -> Result<(), String> {
        Change::parse(change).map(|_| ())
    }

    fn apply(&mut self, seq: u64, change: &str) -> Value {
        let Ok(change) = Change::parse(change) else {
            return Value::Null;
        };
        match change {
            Change::Acquire { lock, owner } => {
                let l = self.locks.entry(lock).or_default();
                match &l.holder {
                    Some((o, t)) if *o == owner => json!({"ok": true, "token": t}),
                    Some((o, t)) => json!({"ok": false, "holder": o, "token": t}),
                    // Acquired, released and acquired again within one batch (one seq): the
                    // token would not grow. Only a client that guessed the token gets here.
                    None if seq <= l.last => {
                        json!({"ok": false, "holder": null, "error": "released in this batch; try again"})
                    }
                    None => {
                        l.holder = Some((owner, seq));
                        l.last = seq;
                        json!({"ok": true, "token": seq})
                    }
                }
            }
            Change::Release { lock, owner, token } => {
                let Some(l) = self.locks.get_mut(&lock) else {
                    return json!({"ok": false, "error": "not held"});
                };
                match &l.holder {
                    Some((o, t)) if *o == owner && *t == token => {
                        l.holder = None;
                        json!({"ok": true})
                    }
                    Some((o, t)) if *o == owner => {
                        json!({"ok": false, "error": format!("stale token {token}: held with token {t}")})
                    }
                    Some(_) => json!({"ok": false, "error": "held by another owner"}),
                    None => json!({"ok": false, "error": "not held"}),
                }
            }
        }
    }

    fn snapshot(&self) -> WholeSnapshot {
        WholeSnapshot::new(serde_json::to_string(self).unwrap_or_default())
    }

    fn restore(&self) -> WholeRestore<Locks> {
        WholeRestore::new(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
    }
}

impl Reads for Locks {
    fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
        let name = match req.tail("lock")? {
            Ok(n) => n,
            Err(bad) => return Some(bad),
        };
        let holder = self.locks.get(&name).and_then(|l| l.holder.clone());
        let (owner, token) = holder.unzip();
        Some(ReadAnswer::ok(
            json!({"lock": name, "holder": owner, "token": token}),
        ))
    }
}

fn hints(d: &Demo) -> Vec<String> {
    let submit = |node: usize, change: &str| {
        let body = json!({ "chg": [change] }).to_string();
        format!(
            "curl -s{} -X POST {} -d '{body}'",
            d.write_auth,
            d.url(node, "submit")
        )
    };
    vec![
        submit(1, r#"{"op":"acquire","lock":"L","owner":"me"}"#),
        format!("curl -s{} {}", d.read_auth, d.url(2, "lock/L")),
        format!(
            "{}   # T: the token the acquire answered",
            submit(0, r#"{"op":"release","lock":"L","owner":"me","token":T}"#)
        ),
    ]
}

fn main() -> std::process::ExitCode {
    cli::app_main("lock", Locks::default, hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(l: &mut Locks, seq: u64, owner: &str) -> Value {
        let c = json!({"op": "acquire", "lock": "L", "owner": owner}).to_string();
        l.apply(seq, &c)
    }

    fn release(l: &mut Locks, seq: u64, owner: &str, token: u64) -> Value {
        let c = json!({"op": "release", "lock": "L", "owner": owner, "token": token}).to_string();
        l.apply(seq, &c)
    }

    #[test]
    fn tokens_grow_stale_ones_are_refused_and_one_owner_holds() {
        let mut l = Locks::default();
        assert_eq!(acquire(&mut l, 3, "a"), json!({"ok": true, "token": 3}));
        assert_eq!(
            acquire(&mut l, 4, "b"),
            json!({"ok": false, "holder": "a", "token": 3})
        );
        assert_eq!(acquire(&mut l, 5, "a"), json!({"ok": true, "token": 3}));
        assert_eq!(release(&mut l, 6, "a", 2)["ok"], false);
        assert_eq!(release(&mut l, 6, "b", 3)["ok"], false);
        assert_eq!(release(&mut l, 6, "a", 3), json!({"ok": true}));
        assert_eq!(
            release(&mut l, 7, "a", 3),
            json!({"ok": false, "error": "not held"})
        );
        // Released in a later batch than the acquire: taken again with a larger token.
        assert_eq!(acquire(&mut l, 6, "b"), json!({"ok": true, "token": 6}));
        // Acquired, released (by a client that guessed the token) and acquired again in one
        // batch: the token would not grow, so the second acquire is refused.
        assert_eq!(release(&mut l, 6, "b", 6), json!({"ok": true}));
        assert_eq!(acquire(&mut l, 6, "c")["ok"], false);
        assert_eq!(acquire(&mut l, 8, "c"), json!({"ok": true, "token": 8}));
        let back = clusterconsensus::restore_from(&l, l.snapshot_text().as_bytes()).unwrap();
        assert_eq!(back.locks, l.locks);
        for bad in [
            "{}",
            r#"{"op":"acquire","lock":"","owner":"a"}"#,
            r#"{"op":"release","lock":"L","owner":"a"}"#,
            r#"{"op":"acquire","lock":"L","owner":"a","x":1}"#,
        ] {
            assert!(l.validate(bad).is_err(), "{bad}");
        }
    }

    impl Locks {
        fn snapshot_text(&self) -> String {
            clusterconsensus::snapshot_to_string(self.snapshot()).unwrap()
        }
    }
}
