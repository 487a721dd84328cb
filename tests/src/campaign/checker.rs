//! The campaign's history and its checks: linearizability per key (stateright's
//! `LinearizabilityTester` over a `Register`, with a time budget because a history that is not
//! linearizable makes the search explode), no acknowledged write lost, no retried change
//! applied twice, and every node converged to the same state.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

/// One entry of the history, in real-time order (pushed under one lock).
#[derive(Clone, Debug)]
pub enum Event {
    /// `thread` starts a write of `value` to `key` (client `client`, request `req`).
    Write {
        thread: u64,
        key: String,
        value: String,
        client: String,
        req: u64,
    },
    /// `thread` starts a consistent read of `key`.
    Read { thread: u64, key: String },
    /// The write committed.
    WriteOk { thread: u64 },
    /// The read answered (None: no such key).
    ReadOk { thread: u64, value: Option<String> },
    /// Definitely no effect (a read that never got an answer, a write refused for good).
    Fail { thread: u64 },
    /// Unknown outcome: the write may have committed, now or later. The thread never invokes
    /// again (its client continues under a new thread id).
    Info { thread: u64 },
}

/// The recorded history.
#[derive(Debug, Default)]
pub struct History(Mutex<Vec<Event>>);

impl History {
    pub fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

/// Counts of a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub operations: u64,
    pub writes: u64,
    pub reads: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub indeterminate: u64,
}

pub fn counts(h: &[Event]) -> Counts {
    let mut c = Counts::default();
    for e in h {
        match e {
            Event::Write { .. } => {
                c.operations += 1;
                c.writes += 1;
            }
            Event::Read { .. } => {
                c.operations += 1;
                c.reads += 1;
            }
            Event::WriteOk { .. } | Event::ReadOk { .. } => c.acknowledged += 1,
            Event::Fail { .. } => c.failed += 1,
            Event::Info { .. } => c.indeterminate += 1,
        }
    }
    c
}

type Tester = LinearizabilityTester<u64, Register<Option<String>>>;

/// Checks the history per key; `Err` names the first key whose history is not linearizable.
/// Failed reads are left out (they had no effect); failed writes too (refused for good);
/// indeterminate writes stay in flight forever (they may or may not have taken effect).
pub fn linearizable(h: &[Event]) -> Result<usize, String> {
    // A client moves to a new thread id after a failed or indeterminate operation, so a failed
    // thread's failed operation is its last invocation: leave that one out.
    let mut last_invoke: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, e) in h.iter().enumerate() {
        if let Event::Write { thread, .. } | Event::Read { thread, .. } = e {
            last_invoke.insert(*thread, i);
        }
    }
    let skip: std::collections::BTreeSet<usize> = h
        .iter()
        .filter_map(|e| match e {
            Event::Fail { thread } => last_invoke.get(thread).copied(),
            _ => None,
        })
        .collect();
    let mut testers: BTreeMap<String, Tester> = BTreeMap::new();
    let mut key_of: BTreeMap<u64, String> = BTreeMap::new();
    for (i, e) in h.iter().enumerate() {
        let (thread, key, op) = match e {
            Event::Write {
                thread, key, value, ..
            } => (thread, key, RegisterOp::Write(Some(value.clone()))),
            Event::Read { thread, key } => (thread, key, RegisterOp::Read),
            Event::WriteOk { thread } | Event::ReadOk { thread, .. } => {
                let ret = match e {
                    Event::ReadOk { value, .. } => RegisterRet::ReadOk(value.clone()),
                    _ => RegisterRet::WriteOk,
                };
                let key = key_of.get(thread).ok_or("return without invoke")?;
                testers
                    .get_mut(key)
                    .expect("invoked before")
                    .on_return(*thread, ret)
                    .map_err(|e| format!("bad history: {e}"))?;
                continue;
            }
            _ => continue,
        };
        if skip.contains(&i) {
            continue;
        }
        key_of.insert(*thread, key.clone());
        testers
            .entry(key.clone())
            .or_insert_with(|| Tester::new(Register(None)))
            .on_invoke(*thread, op)
            .map_err(|e| format!("bad history: {e}"))?;
    }
    let keys = testers.len();
    for (key, t) in testers {
        if !t.is_consistent() {
            return Err(format!("the history of key {key} is not linearizable"));
        }
    }
    Ok(keys)
}

/// [`linearizable`] on its own thread (with a deep stack: the search recurses once per
/// operation of a key); a check that outlives `budget` is reported as not proven.
pub fn linearizable_within(h: Vec<Event>, budget: Duration) -> Result<usize, String> {
    let n = h.len();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let _ = tx.send(linearizable(&h));
        })
        .expect("spawn the checker");
    rx.recv_timeout(budget).unwrap_or_else(|_| {
        Err(format!(
            "the linearizability check of {n} events did not finish within {budget:?}"
        ))
    })
}

/// The data checks on the converged state `data` (the key-value map every node agrees on):
/// - every acknowledged write of request N by client C left `w/C/N` (written in the same
///   batch as the register write, so it cannot be overwritten): none lost;
/// - `last/C` (also in the same batch) is at least C's highest acknowledged request: a retried
///   older request applied again after a newer one would move it back.
pub fn check_data(h: &[Event], data: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut invoked: BTreeMap<u64, (String, u64, String)> = BTreeMap::new();
    let mut max_acked: BTreeMap<String, u64> = BTreeMap::new();
    for e in h {
        match e {
            Event::Write {
                thread,
                client,
                req,
                value,
                ..
            } => {
                invoked.insert(*thread, (client.clone(), *req, value.clone()));
            }
            Event::WriteOk { thread } => {
                let (client, req, value) = invoked[thread].clone();
                let wkey = format!("w/{client}/{req}");
                if data.get(&wkey).and_then(Value::as_str) != Some(value.as_str()) {
                    problems.push(format!(
                        "acknowledged write {client}#{req} ({value}) is missing: {wkey} = {:?}",
                        data.get(&wkey)
                    ));
                }
                let m = max_acked.entry(client).or_default();
                *m = (*m).max(req);
            }
            _ => {}
        }
    }
    for (client, m) in max_acked {
        let last = data
            .get(&format!("last/{client}"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if last < m {
            problems.push(format!(
                "last/{client} = {last} below its acknowledged request {m}: an older request was applied again"
            ));
        }
    }
    problems
}
