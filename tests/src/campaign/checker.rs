//! The campaign's history and its checks: linearizability per key (the core's
//! `sim::lincheck` over a `Register` with reads, writes and compare-and-sets, bounded by a step
//! budget because a history that is not linearizable can make the search explode), no
//! acknowledged write lost, no retried change applied twice, every node converged to the same
//! state, and every watcher saw every committed entry once, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use clusterconsensus::kv::KvStore;
use clusterconsensus::sim::lincheck::{self, Register, RegisterEvent, RegisterOp, RegisterRet};
use clusterconsensus::StateMachine;
use serde_json::Value;

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
    /// `thread` starts a compare-and-set of `key` from `expect` (`None`: absent) to `value`
    /// (client `client`, request `req`).
    Cas {
        thread: u64,
        key: String,
        expect: Option<String>,
        value: String,
        client: String,
        req: u64,
    },
    /// `thread` starts a consistent read of `key`.
    Read { thread: u64, key: String },
    /// The write committed.
    WriteOk { thread: u64 },
    /// The compare-and-set committed: whether it applied, and the value after it.
    CasOk {
        thread: u64,
        ok: bool,
        current: Option<String>,
    },
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
    pub cas: u64,
    /// Compare-and-sets acknowledged as applied.
    pub cas_applied: u64,
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
            Event::Cas { .. } => {
                c.operations += 1;
                c.cas += 1;
            }
            Event::Read { .. } => {
                c.operations += 1;
                c.reads += 1;
            }
            Event::CasOk { ok, .. } => {
                c.acknowledged += 1;
                c.cas_applied += u64::from(*ok);
            }
            Event::WriteOk { .. } | Event::ReadOk { .. } => c.acknowledged += 1,
            Event::Fail { .. } => c.failed += 1,
            Event::Info { .. } => c.indeterminate += 1,
        }
    }
    c
}

/// The most search steps the linearizability check of one key may take: far more than an
/// ordinary history needs (a few hundred to a few thousand per key), and a bound that is the
/// same on a loaded CI machine. A check that does not decide within it is a problem.
pub const LIN_STEPS: u64 = 2_000_000;

/// The history as the checker takes it: failed operations had no effect (a read that never
/// got an answer, a write refused for good) and are left out; indeterminate ones, and those
/// still in flight at the end, may have taken effect at any point after their invocation.
pub fn lincheck_history(h: &[Event]) -> Vec<RegisterEvent> {
    h.iter()
        .map(|e| match e {
            Event::Write {
                thread, key, value, ..
            } => lincheck::Event::Invoke {
                id: *thread,
                key: key.clone(),
                op: RegisterOp::Write(Some(value.clone())),
            },
            Event::Cas {
                thread,
                key,
                expect,
                value,
                ..
            } => lincheck::Event::Invoke {
                id: *thread,
                key: key.clone(),
                op: RegisterOp::Cas {
                    expect: expect.clone(),
                    new: Some(value.clone()),
                },
            },
            Event::Read { thread, key } => lincheck::Event::Invoke {
                id: *thread,
                key: key.clone(),
                op: RegisterOp::Read,
            },
            Event::CasOk {
                thread,
                ok,
                current,
            } => lincheck::Event::Return {
                id: *thread,
                ret: RegisterRet::Cas {
                    ok: *ok,
                    current: current.clone(),
                },
            },
            Event::WriteOk { thread } => lincheck::Event::Return {
                id: *thread,
                ret: RegisterRet::Ok,
            },
            Event::ReadOk { thread, value } => lincheck::Event::Return {
                id: *thread,
                ret: RegisterRet::Value(value.clone()),
            },
            Event::Fail { thread } => lincheck::Event::Fail { id: *thread },
            Event::Info { thread } => lincheck::Event::Info { id: *thread },
        })
        .collect()
}

/// Checks the history per key: the number of keys, or what is wrong (the key whose history is
/// not linearizable, and how far it gets; or a check that did not decide within [`LIN_STEPS`],
/// which counts as a failure: it could hide a violation).
pub fn linearizable(h: &[Event]) -> Result<usize, String> {
    let checked = check_linearizable(h)?;
    match checked.verdict {
        lincheck::Verdict::Ok => Ok(checked.keys),
        v => Err(format!("{v} ({} events)", h.len())),
    }
}

fn check_linearizable(h: &[Event]) -> Result<lincheck::Checked, String> {
    lincheck::check(&Register, &lincheck_history(h), LIN_STEPS).map_err(|e| e.to_string())
}

/// The data checks on the converged state `data` (the key-value map every node agrees on):
/// - every acknowledged write (or compare-and-set, applied or not) of request N by client C
///   left `w/C/N` (written in the same batch as the register write, so it cannot be
///   overwritten): none lost;
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
            }
            | Event::Cas {
                thread,
                client,
                req,
                value,
                ..
            } => {
                invoked.insert(*thread, (client.clone(), *req, value.clone()));
            }
            Event::WriteOk { thread } | Event::CasOk { thread, .. } => {
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

/// What one watcher saw, in the order it was handed out.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    /// Each entry: its seq, and its changes (`None`: a membership change).
    pub entries: Vec<(u64, Option<Vec<String>>)>,
    /// Entries a node sent that the watcher had handed out already (none, if every node
    /// serves `from` right).
    pub resent: u64,
    /// Times every node of a round said it no longer held the watcher's next entry.
    pub gaps: Vec<String>,
    /// Connections after the first.
    pub reconnects: u64,
    /// The nodes it received entries from (`node<i>`).
    pub nodes: BTreeSet<String>,
}

/// The watchers' checks, once the cluster converged at commit `last` with state `data`: every
/// watcher saw every entry from `from` to `last` exactly once and in order (no gap across its
/// reconnects, nothing twice), all of them the same entries, and those entries, applied in
/// order to an empty key-value store, give `data`.
pub fn check_watchers(
    watched: &[Watched],
    from: u64,
    last: u64,
    data: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(first) = watched.first() else {
        return vec!["no watcher".into()];
    };
    for (i, w) in watched.iter().enumerate() {
        for g in &w.gaps {
            problems.push(format!("watcher {i}: a gap on every node: {g}"));
        }
        if w.resent > 0 {
            problems.push(format!(
                "watcher {i}: nodes resent {} entries it had asked to skip",
                w.resent
            ));
        }
        let mut want = from;
        for (seq, _) in &w.entries {
            if *seq != want {
                problems.push(format!(
                    "watcher {i}: entry {seq} where {want} was due (a gap or a duplicate)"
                ));
                break;
            }
            want += 1;
        }
        if want <= last {
            problems.push(format!(
                "watcher {i}: saw entries up to {} of {from}..={last}",
                want - 1
            ));
        }
        let common = w.entries.len().min(first.entries.len());
        if let Some(k) = (0..common).find(|&k| w.entries[k] != first.entries[k]) {
            problems.push(format!(
                "watcher {i} and watcher 0 saw different entries at seq {}: {:?} and {:?}",
                w.entries[k].0, w.entries[k].1, first.entries[k].1
            ));
        }
    }
    // The entries make the state: replayed, they give what every node converged to.
    let mut kv = KvStore::new();
    for (seq, chg) in first.entries.iter().filter(|(s, _)| *s <= last) {
        for c in chg.iter().flatten() {
            kv.apply(*seq, c);
        }
    }
    let replayed: BTreeMap<&str, &str> = kv.iter().collect();
    let converged: BTreeMap<&str, &str> = data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    if replayed != converged {
        let differ = converged
            .iter()
            .find(|(k, v)| replayed.get(*k) != Some(*v))
            .map(|(k, _)| *k)
            .or_else(|| {
                replayed
                    .keys()
                    .find(|k| !converged.contains_key(*k))
                    .copied()
            });
        problems.push(format!(
            "the watched entries replayed give {} keys, the nodes hold {} (first difference: {differ:?})",
            replayed.len(),
            converged.len()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::Rng;

    /// What a client of [`campaign_sized_history`] is doing.
    struct Client {
        thread: u64,
        req: u64,
        op: Option<InFlight>,
    }

    /// An op in flight: its key, the value it writes (`None`: a read), and once its moment
    /// came, what it did.
    struct InFlight {
        key: String,
        write: Option<String>,
        outcome: Option<Outcome>,
    }

    enum Outcome {
        NoEffect,
        Wrote,
        Read(Option<String>),
    }

    /// A history like a campaign's, linearizable by construction: `clients` clients on `keys`
    /// keys, each op taking effect at some moment between its invocation and its answer; some
    /// writes end indeterminate (having taken effect or not), some reads fail.
    fn campaign_sized_history(seed: u64, events: usize, keys: u64, clients: u64) -> Vec<Event> {
        let mut rng = Rng::new(seed);
        let mut data: BTreeMap<String, String> = BTreeMap::new();
        let mut cs: Vec<Client> = (0..clients)
            .map(|c| Client {
                thread: c,
                req: 0,
                op: None,
            })
            .collect();
        let mut next_thread = clients;
        let mut h = Vec::new();
        while h.len() < events {
            let c = &mut cs[rng.range(0, clients) as usize];
            let name = format!("c{}", c.thread);
            match c.op.take() {
                None => {
                    let key = format!("k{}", rng.range(0, keys));
                    if rng.chance(50) {
                        c.req += 1;
                        let value = format!("{name}-{}", c.req);
                        h.push(Event::Write {
                            thread: c.thread,
                            key: key.clone(),
                            value: value.clone(),
                            client: name,
                            req: c.req,
                        });
                        c.op = Some(InFlight {
                            key,
                            write: Some(value),
                            outcome: None,
                        });
                    } else {
                        h.push(Event::Read {
                            thread: c.thread,
                            key: key.clone(),
                        });
                        c.op = Some(InFlight {
                            key,
                            write: None,
                            outcome: None,
                        });
                    }
                }
                Some(InFlight {
                    key,
                    write,
                    outcome: None,
                }) => {
                    // It takes effect now, or (1 in 50) never.
                    let outcome = match &write {
                        _ if rng.chance(2) => Outcome::NoEffect,
                        Some(v) => {
                            data.insert(key.clone(), v.clone());
                            Outcome::Wrote
                        }
                        None => Outcome::Read(data.get(&key).cloned()),
                    };
                    c.op = Some(InFlight {
                        key,
                        write,
                        outcome: Some(outcome),
                    });
                }
                Some(InFlight {
                    write,
                    outcome: Some(outcome),
                    ..
                }) => {
                    let thread = c.thread;
                    // A write without effect is indeterminate, and so is one write in 33 that
                    // took effect; a read without effect failed.
                    h.push(match outcome {
                        Outcome::Wrote if !rng.chance(3) => Event::WriteOk { thread },
                        Outcome::Read(value) => Event::ReadOk { thread, value },
                        Outcome::NoEffect if write.is_none() => Event::Fail { thread },
                        _ => Event::Info { thread },
                    });
                    if matches!(h.last(), Some(Event::Info { .. } | Event::Fail { .. })) {
                        next_thread += 1;
                        c.thread = next_thread;
                    }
                }
            }
        }
        h
    }

    /// Makes a read in the second half of `h` return the value of an acknowledged write that
    /// another acknowledged write replaced before the read began; returns the read's key.
    fn make_a_read_stale(h: &mut [Event]) -> Option<String> {
        // Per thread, its op in flight: (key, the value of a write, its invocation).
        let mut op: BTreeMap<u64, (String, Option<String>, usize)> = BTreeMap::new();
        // Per key, its acknowledged writes: (value, invoked, acknowledged).
        let mut writes: BTreeMap<String, Vec<(String, usize, usize)>> = BTreeMap::new();
        for i in 0..h.len() {
            match &h[i] {
                Event::Write {
                    thread, key, value, ..
                } => {
                    op.insert(*thread, (key.clone(), Some(value.clone()), i));
                }
                Event::Read { thread, key } => {
                    op.insert(*thread, (key.clone(), None, i));
                }
                Event::WriteOk { thread } => {
                    let (key, value, at) = op[thread].clone();
                    let value = value.expect("a write");
                    writes.entry(key).or_default().push((value, at, i));
                }
                Event::ReadOk { thread, .. } if i > h.len() / 2 => {
                    let thread = *thread;
                    let (key, _, invoked) = op[&thread].clone();
                    let done = writes.get(&key).map_or(&[][..], |w| w.as_slice());
                    let before = |t: usize| done.iter().rfind(|w| w.2 < t);
                    let Some(stale) = before(invoked).and_then(|later| before(later.1)) else {
                        continue;
                    };
                    let value = Some(stale.0.clone());
                    h[i] = Event::ReadOk { thread, value };
                    return Some(key);
                }
                _ => {}
            }
        }
        None
    }

    /// Checks `h`, printing what it took (a measure: no time is asserted).
    fn timed_check(what: &str, h: &[Event]) -> lincheck::Checked {
        let started = std::time::Instant::now();
        let checked = check_linearizable(h).expect("a well-formed history");
        eprintln!(
            "{what}: {} events ({:?}), {} keys: {} in {:?}, {} steps (at most {} for a key)",
            h.len(),
            counts(h),
            checked.keys,
            checked.verdict,
            started.elapsed(),
            checked.steps,
            checked.max_key_steps
        );
        checked
    }

    #[test]
    fn a_campaign_sized_history_is_decided() {
        let mut h = campaign_sized_history(1, 30_000, 50, 16);
        let c = counts(&h);
        assert!(c.indeterminate > 100 && c.failed > 50, "{c:?}");
        let checked = timed_check("a campaign-sized history", &h);
        assert_eq!(checked.verdict, lincheck::Verdict::Ok);
        assert_eq!(linearizable(&h), Ok(50));

        // A read in the second half that returns a value overwritten before it began.
        let key = make_a_read_stale(&mut h).expect("a read to make stale");
        let checked = timed_check("the same with one stale read", &h);
        assert!(
            matches!(&checked.verdict, lincheck::Verdict::Violation { key: k, .. } if *k == key),
            "{}",
            checked.verdict
        );
        let err = linearizable(&h).expect_err("a stale read");
        assert!(
            err.contains(&format!("key {key:?} is not linearizable")),
            "{err}"
        );
    }

    #[test]
    fn a_hot_key_under_sixteen_clients_is_decided() {
        // The campaign's clients crowd a few keys at a time: here all 16 on one.
        let h = campaign_sized_history(2, 30_000, 1, 16);
        let checked = timed_check("a hot key", &h);
        assert_eq!(checked.verdict, lincheck::Verdict::Ok);
        assert_eq!(linearizable(&h), Ok(1));
    }

    #[test]
    fn a_compare_and_set_is_checked_as_a_read_modify_write() {
        let w = |thread, value: &str| Event::Write {
            thread,
            key: "k".into(),
            value: value.into(),
            client: format!("c{thread}"),
            req: 1,
        };
        let cas = |thread, expect: Option<&str>, value: &str| Event::Cas {
            thread,
            key: "k".into(),
            expect: expect.map(String::from),
            value: value.into(),
            client: format!("c{thread}"),
            req: 1,
        };
        let done = |thread, ok, current: &str| Event::CasOk {
            thread,
            ok,
            current: Some(current.into()),
        };
        // k = 1, then a cas 1 -> 2 that applied, then one 1 -> 3 that did not (it sees 2).
        let good = vec![
            w(1, "1"),
            Event::WriteOk { thread: 1 },
            cas(2, Some("1"), "2"),
            done(2, true, "2"),
            cas(3, Some("1"), "3"),
            done(3, false, "2"),
        ];
        assert_eq!(linearizable(&good), Ok(1));
        let c = counts(&good);
        assert_eq!((c.cas, c.cas_applied, c.acknowledged), (2, 1, 3));
        // Both applied from 1: one of them cannot have seen 1.
        let mut both = good.clone();
        both[5] = done(3, true, "3");
        assert!(linearizable(&both).is_err());
        // A cas from absent on a key that holds 1.
        let absent = vec![
            w(1, "1"),
            Event::WriteOk { thread: 1 },
            cas(2, None, "2"),
            done(2, true, "2"),
        ];
        assert!(linearizable(&absent).is_err());
    }

    #[test]
    fn the_watcher_check_catches_gaps_duplicates_and_disagreement() {
        let set = |k: &str, v: &str| format!(r#"{{"op":"set","key":"{k}","value":"{v}"}}"#);
        let entries = vec![
            (5, Some(vec![set("a", "1")])),
            (6, None),
            (7, Some(vec![set("b", "2"), set("a", "3")])),
        ];
        let data: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"a":"3","b":"2"}"#).unwrap();
        let ok = Watched {
            entries: entries.clone(),
            ..Watched::default()
        };
        assert!(check_watchers(&[ok.clone(), ok.clone()], 5, 7, &data).is_empty());

        let with = |e: Vec<(u64, Option<Vec<String>>)>| Watched {
            entries: e,
            ..Watched::default()
        };
        let gap = with(vec![entries[0].clone(), entries[2].clone()]);
        let p = check_watchers(&[ok.clone(), gap], 5, 7, &data);
        assert!(
            p.iter().any(|p| p.contains("entry 7 where 6 was due")),
            "{p:?}"
        );
        let dup = with(vec![entries[0].clone(), entries[0].clone()]);
        assert!(!check_watchers(&[ok.clone(), dup], 5, 7, &data).is_empty());
        let short = with(entries[..2].to_vec());
        let p = check_watchers(&[ok.clone(), short], 5, 7, &data);
        assert!(p.iter().any(|p| p.contains("up to 6")), "{p:?}");
        let mut other = entries.clone();
        other[2].1 = Some(vec![set("b", "2")]);
        let p = check_watchers(&[ok.clone(), with(other)], 5, 7, &data);
        assert!(
            p.iter().any(|p| p.contains("different entries at seq 7")),
            "{p:?}"
        );
        let resent = Watched {
            resent: 1,
            ..ok.clone()
        };
        assert!(!check_watchers(&[resent], 5, 7, &data).is_empty());
        // Entries that do not make the state the nodes hold.
        let wrong: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"a":"1","b":"2"}"#).unwrap();
        let p = check_watchers(&[ok], 5, 7, &wrong);
        assert!(p.iter().any(|p| p.contains("replayed")), "{p:?}");
    }
}
