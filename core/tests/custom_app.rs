//! Any app in the simulation: an app of this test's own, not the key-value store, runs the seed
//! sweep's scenarios (faults, crashes, membership changes) with every safety check and the
//! linearizability check, over 200 seeds.
//!
//! The app is a journal: it keeps every value each key ever had and answers the last one. It
//! takes the scenario's key-value changes but shares no code with `KvStore` (its own state, its
//! own exactly-once rule, its own snapshot format), so a violation here that the key-value sweep
//! does not show would point at something the protocol leaves to the app.

use std::collections::BTreeMap;

use clusterconsensus::kv::{KvChange, KvOp};
use clusterconsensus::sim::scenario::{self, ScenarioConfig};
use clusterconsensus::sim::SimApp;
use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Every value each key had, and per client the last request applied with its result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Journal {
    /// `None` in a key's history: deleted then.
    keys: BTreeMap<String, Vec<Option<String>>>,
    clients: BTreeMap<String, (u64, Value)>,
}

impl Journal {
    fn last(&self, key: &str) -> Option<&str> {
        self.keys.get(key)?.last()?.as_deref()
    }

    fn change(&mut self, c: &KvChange) -> Value {
        let now = self.last(&c.key).map(String::from);
        let next = match c.op {
            KvOp::Set => c.value.clone(),
            KvOp::Del => None,
            KvOp::Cas => {
                let expect = c.expect.clone().flatten();
                if expect != now {
                    return json!({ "ok": false, "value": now });
                }
                if c.del {
                    None
                } else {
                    c.value.clone()
                }
            }
        };
        self.keys.entry(c.key.clone()).or_default().push(next);
        json!({ "prev": now, "len": self.keys[&c.key].len() })
    }
}

impl StateMachine for Journal {
    type Snapshot = WholeSnapshot;
    type Restore = WholeRestore<Journal>;

    fn validate(&self, change: &str) -> Result<(), String> {
        KvChange::parse(change).map(|_| ())
    }

    fn apply(&mut self, _seq: u64, change: &str) -> Value {
        let Ok(c) = KvChange::parse(change) else {
            return Value::Null;
        };
        match (c.client.clone(), c.req) {
            (Some(client), Some(req)) => {
                match self.clients.get(&client) {
                    Some((last, first)) if *last == req => return first.clone(),
                    Some((last, _)) if *last > req => return Value::Null,
                    _ => {}
                }
                let result = self.change(&c);
                self.clients.insert(client, (req, result.clone()));
                result
            }
            _ => self.change(&c),
        }
    }

    fn snapshot(&self) -> WholeSnapshot {
        WholeSnapshot::new(serde_json::to_string(self).unwrap_or_default())
    }

    fn restore(&self) -> WholeRestore<Journal> {
        WholeRestore::new(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
    }
}

impl SimApp for Journal {
    fn view(&self) -> Value {
        json!({ "keys": self.keys.len() })
    }

    fn read(&self, key: &str) -> Option<String> {
        self.last(key).map(String::from)
    }
}

#[test]
fn a_custom_app_runs_the_sweep_without_violations() {
    let seeds: u64 = std::env::var("SIM_APP_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (mut bad, mut commits, mut faults) = (Vec::new(), 0, 0);
    for seed in 0..seeds {
        let cfg = ScenarioConfig::random(seed);
        let r = scenario::run_app::<Journal>(&cfg, false);
        let mut violations = r.violations.clone();
        if violations.is_empty() {
            if let Err(e) = scenario::check_linearizable(&r.history, 1_000_000) {
                violations.push(e);
            }
        }
        if !violations.is_empty() {
            bad.push(format!(
                "seed {seed}: {violations:?}\n  {}",
                cfg.replay_command()
            ));
        }
        commits += r.commit;
        faults += r.faults;
    }
    println!(
        "simulation (custom app): {seeds} seeds, {commits} commits, {faults} faults, {} violations",
        bad.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The runs did something: a sweep of idle clusters would pass as well.
    assert!(
        commits > seeds * 20,
        "only {commits} commits in {seeds} seeds"
    );
}

#[test]
fn the_journal_keeps_history_and_answers_a_retry_with_its_first_result() {
    let mut j = Journal::default();
    let set = |v: &str, req| KvChange::set("k", v).with_client("c", req).encode();
    assert_eq!(j.apply(1, &set("a", 1)), json!({"prev": null, "len": 1}));
    assert_eq!(j.apply(2, &set("b", 2)), json!({"prev": "a", "len": 2}));
    assert_eq!(j.apply(3, &set("a", 1)), Value::Null, "older than the last");
    assert_eq!(j.apply(4, &set("b", 2)), json!({"prev": "a", "len": 2}));
    assert_eq!(j.read("k").as_deref(), Some("b"));
    let cas = KvChange::cas("k", Some("x"), "y").encode();
    assert_eq!(j.apply(5, &cas), json!({"ok": false, "value": "b"}));
    let text = clusterconsensus::snapshot_to_string(j.snapshot()).unwrap();
    let back = clusterconsensus::restore_from(&j, text.as_bytes()).unwrap();
    assert_eq!(back, j);
}
