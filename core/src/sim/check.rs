//! The safety properties of docs/PROTOCOL.md section 4, checked after every step of a simulation.
//!
//! 1. At most one master per instance.
//! 2. State machine safety: no two nodes apply different payloads at the same seq, and every
//!    node's state equals the reference state (the chosen log replayed) at its commit.
//! 3. Durability: a submit answered with success is in the chosen log when answered (and, by
//!    2, on every node that later reaches that seq).
//! 4. No double apply: a node applies seq `s` only right after `s - 1` (or a snapshot).
//!    No partial snapshot is ever applied: a node that installs a snapshot at `s` holds the
//!    reference state at `s` (a chunked transfer installs only once complete and verified).
//! 6. Exactly once: follows from 2 and the key-value store's deduplication; the scenario's
//!    linearizability check (5) sees any write applied twice.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::SimApp;
use crate::participant::{Participant, Role};
use crate::wire::Payload;

/// Accumulates what every node did and what went wrong.
#[derive(Debug)]
pub struct Checker<S> {
    pub violations: Vec<String>,
    /// instance -> the master of it.
    masters: BTreeMap<u64, String>,
    /// The chosen log: seq -> payload.
    pub chosen: BTreeMap<u64, Payload>,
    /// Every change string in the chosen log -> the first seq holding it.
    pub changes: BTreeMap<String, u64>,
    /// The reference state replayed from the chosen log, and its digest at each seq.
    reference: S,
    reference_at: u64,
    digests: BTreeMap<u64, u64>,
    /// Per node, the last seq it applied (this incarnation).
    applied: BTreeMap<usize, u64>,
    /// Per node, the commit whose state was last compared.
    compared: BTreeMap<usize, u64>,
    /// What happened, to show that a run exercised something.
    pub stats: Stats,
    /// The voters and learners as the chosen log has them at `reference_at` (from the node that
    /// bootstrapped), and the voters and learners before each chosen seq: whose durable copies
    /// make a majority for it.
    voters: Vec<String>,
    learners: Vec<String>,
    before: BTreeMap<u64, (Vec<String>, Vec<String>)>,
}

/// Counts of interesting events in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub elections_won: u64,
    pub snapshots_installed: u64,
    pub membership_commits: u64,
    /// Learners added, and learners promoted to voters.
    pub learners_added: u64,
    pub promotions: u64,
    pub crashes: u64,
    /// Leader transfers answered with success (the target led).
    pub transfers: u64,
    /// Chunks of chunked snapshot transfers delivered.
    pub chunks_delivered: u64,
    /// Catch-up batches (accepts with `entries`) delivered, and the entries they carried.
    pub batches_delivered: u64,
    pub batch_entries_delivered: u64,
    /// Crashes of a master in the middle of sending a chunked snapshot, and of a node in the
    /// middle of receiving one.
    pub crashes_sending_snapshot: u64,
    pub crashes_receiving_snapshot: u64,
    /// Periodic snapshot jobs a host saved; crashes while one was being saved, and between
    /// a saved snapshot and the compaction of the log (entries at or below it still stored).
    pub snapshots_saved: u64,
    pub crashes_saving_snapshot: u64,
    pub crashes_before_compaction: u64,
}

/// FNV-1a: a stable digest of a snapshot.
pub fn digest(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl<S: SimApp> Default for Checker<S> {
    fn default() -> Checker<S> {
        Checker {
            violations: Vec::new(),
            masters: BTreeMap::new(),
            chosen: BTreeMap::new(),
            changes: BTreeMap::new(),
            reference: S::default(),
            reference_at: 0,
            digests: BTreeMap::new(),
            applied: BTreeMap::new(),
            compared: BTreeMap::new(),
            stats: Stats::default(),
            voters: Vec::new(),
            learners: Vec::new(),
            before: BTreeMap::new(),
        }
    }
}

/// The digest of an application's whole state.
fn state_digest<S: SimApp>(s: &S) -> u64 {
    digest(&crate::snapshot_to_string(s.snapshot()).unwrap_or_default())
}

impl<S: SimApp> Checker<S> {
    pub fn violation(&mut self, now: u64, what: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("t={now}: {what}"));
        }
    }

    pub(crate) fn on_crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        self.applied.remove(&i);
        self.compared.remove(&i);
    }

    pub(crate) fn on_restart(&mut self, i: usize, commit: u64) {
        self.applied.insert(i, commit);
    }

    /// Node `i` installed a snapshot at `seq`; `state` is its state then (`None` if it has
    /// applied more since: the per-commit comparison covers that).
    pub(crate) fn on_snapshot(&mut self, now: u64, i: usize, seq: u64, state: Option<&S>) {
        self.stats.snapshots_installed += 1;
        self.applied.insert(i, seq);
        let want = self.digests.get(&seq).copied();
        if let (Some(s), Some(d)) = (state, want) {
            if state_digest(s) != d {
                let msg = format!("node {i} installed a snapshot at {seq} that is not the state at {seq} (a partial snapshot applied)");
                self.violation(now, msg);
            }
        }
    }

    pub(crate) fn on_commit(&mut self, now: u64, i: usize, seq: u64, payload: Payload) {
        let last = self.applied.get(&i).copied().unwrap_or(0);
        if seq != last + 1 {
            self.violation(now, format!("node {i} applied seq {seq} after {last}"));
        }
        self.applied.insert(i, seq);
        match self.chosen.get(&seq) {
            Some(p) if *p != payload => {
                let msg = format!("node {i} applied {payload:?} at seq {seq}, others {p:?}");
                self.violation(now, msg);
            }
            Some(_) => {}
            None => {
                if !matches!(payload, Payload::Changes(_)) {
                    self.stats.membership_commits += 1;
                }
                if let Payload::Changes(c) = &payload {
                    for ch in c {
                        self.changes.entry(ch.clone()).or_insert(seq);
                    }
                }
                self.chosen.insert(seq, payload);
                self.advance_reference();
            }
        }
    }

    fn advance_reference(&mut self) {
        while let Some(p) = self.chosen.get(&(self.reference_at + 1)) {
            let seq = self.reference_at + 1;
            let before = (self.voters.clone(), self.learners.clone());
            self.before.insert(seq, before);
            match p {
                Payload::Changes(c) => {
                    for ch in c {
                        let _ = self.reference.apply(seq, ch);
                    }
                }
                Payload::Add(a) => {
                    if self.learners.contains(a) {
                        self.stats.promotions += 1;
                    }
                    self.learners.retain(|l| l != a);
                    if !self.voters.contains(a) {
                        self.voters.push(a.clone());
                    }
                }
                Payload::Learner(l) => {
                    self.stats.learners_added += 1;
                    if !self.voters.contains(&l.addr) && !self.learners.contains(&l.addr) {
                        self.learners.push(l.addr.clone());
                    }
                }
                Payload::Rm(a) => {
                    self.voters.retain(|v| v != a);
                    self.learners.retain(|l| l != a);
                }
            }
            self.reference_at = seq;
            self.digests.insert(seq, state_digest(&self.reference));
        }
    }

    /// Node `addr` bootstrapped the cluster: the only voter before seq 1.
    pub(crate) fn on_bootstrap(&mut self, addr: &str) {
        if self.reference_at == 0 && self.voters.is_empty() {
            self.voters.push(String::from(addr));
        }
    }

    /// The voters and the learners just before `seq` was chosen, if the log up to it is known.
    pub fn members_before(&self, seq: u64) -> Option<&(Vec<String>, Vec<String>)> {
        self.before.get(&seq).filter(|(v, _)| !v.is_empty())
    }

    /// A client was told its change committed: it must be chosen.
    pub(crate) fn on_acknowledged(&mut self, now: u64, change: &str) {
        if change.starts_with("members/") || change.starts_with("transfer") {
            return;
        }
        if !self.changes.contains_key(change) {
            self.violation(
                now,
                format!("acknowledged change {change} is not in the log"),
            );
        }
    }

    pub(crate) fn check_node(&mut self, now: u64, i: usize, p: &Participant<S>) {
        if p.role() == Role::Master {
            let me = p.self_addr();
            let m = self
                .masters
                .entry(p.instance())
                .or_insert_with(|| me.into());
            if m != me {
                let msg = format!("two masters in instance {}: {m} and {me}", p.instance());
                self.violation(now, msg);
            }
        }
        let c = p.commit();
        // Compare once the node's commit events up to `c` were seen (outputs can wait behind
        // a persist).
        if c > 0 && self.applied.get(&i) == Some(&c) && self.compared.get(&i) != Some(&c) {
            self.compared.insert(i, c);
            match self.digests.get(&c) {
                Some(d) if *d != state_digest(p.state()) => {
                    self.violation(now, format!("node {i} state at commit {c} differs"));
                }
                Some(_) => {}
                None => self.violation(now, format!("node {i} at commit {c}, never chosen")),
            }
        }
        if let Some(s) = p.staged() {
            if s.seq != c + 1 {
                self.violation(now, format!("node {i} staged seq {} at commit {c}", s.seq));
            }
        }
    }

    /// The reference state at `seq` (replaying the chosen log), if every seq up to it is known.
    pub fn state_at(&self, seq: u64) -> Option<S> {
        let mut state = S::default();
        for s in 1..=seq {
            if let Payload::Changes(c) = self.chosen.get(&s)? {
                for ch in c {
                    let _ = state.apply(s, ch);
                }
            }
        }
        Some(state)
    }
}
