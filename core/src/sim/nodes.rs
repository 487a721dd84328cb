//! Node lifecycle: bootstrap, crash (also in the middle of a write), pause and resume, restart
//! from disk; and per node, the drain of its outputs, its persists and its timer.

use alloc::format;
use alloc::vec::Vec;

use alloc::string::String;

use super::{Ev, NetKind, NetMsg, Node, Origin, Sim, SimApp};
use crate::error::{Error, ErrorCode};
use crate::output::{Event, Output};
use crate::participant::{majority, Participant, Role};
use crate::wire::Payload;

impl<S: SimApp> Sim<S> {
    /// Bootstraps node `i` as the master of a one-member cluster.
    pub fn bootstrap(&mut self, i: usize) {
        self.bootstrap_with(i, Vec::new());
    }

    /// Bootstraps node `i` as the master of a cluster that grows to `peers`
    /// ([`Participant::bootstrap_with`](crate::Participant::bootstrap_with)).
    pub fn bootstrap_with(&mut self, i: usize, peers: Vec<alloc::string::String>) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            if p.bootstrap_with(self.now, peers).is_ok() {
                let a = self.nodes[i].addr.clone();
                self.checker.on_bootstrap(&a);
            }
        }
        self.drain(i);
    }

    /// Unjoined node `i` asks the nodes `via` to add it ([`Participant::join`](crate::Participant::join)).
    pub fn join(&mut self, i: usize, via: Vec<alloc::string::String>) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let _ = p.join(self.now, via);
        }
        self.drain(i);
    }

    /// Crashes node `i`: it loses everything not yet persisted. Requests it was answering
    /// fail at their senders after the RPC timeout; client calls on it fail (outcome unknown).
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].p.is_none() {
            return;
        }
        self.log(|| format!("{i} CRASH"));
        if let Some(p) = self.nodes[i].p.as_ref() {
            let st = &mut self.checker.stats;
            st.crashes_sending_snapshot += u64::from(p.snapshot_transfers().0 > 0);
            st.crashes_receiving_snapshot += u64::from(p.snapshot_transfers().1.is_some());
        }
        let (job, stored) = (&self.nodes[i].job, &self.nodes[i].stored);
        let st = &mut self.checker.stats;
        st.crashes_saving_snapshot += u64::from(job.is_some());
        // A snapshot saved and not yet named by a compaction: the restart must do without it.
        st.crashes_before_compaction += u64::from(!stored.saved.is_empty());
        let n = &mut self.nodes[i];
        n.p = None;
        n.persist = None;
        n.job = None;
        n.crash_mid_write = None;
        n.paused = false;
        n.incarnation += 1;
        n.timer_generation += 1;
        n.timer_at = None;
        n.deferred_calls.clear(); // their clients learn below, with every open request
                                  // What it missed while paused now meets a dead node (its senders learn of it).
        let missed = core::mem::take(&mut n.deferred);
        for ev in missed {
            self.schedule(self.now, ev);
        }
        let dead: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.to == i)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in dead {
            let o = self.open.remove(&rid).expect("listed");
            if let Origin::Client { op } = o.origin {
                // The client's connection breaks: the outcome is unknown.
                self.complete_op(op, Err(Error::new(ErrorCode::Call, "node crashed")));
            } else if let Origin::Node {
                node,
                incarnation,
                mid,
            } = o.origin
            {
                let at = self.now + self.cfg.rpc_timeout_ms;
                self.schedule(
                    at,
                    Ev::Fail {
                        node,
                        incarnation,
                        mid,
                    },
                );
            }
        }
        self.checker.on_crash(i);
    }

    /// Crashes node `i` the next time it has a write in progress, right after everything the
    /// core released ahead of that write has gone out: the write is lost. This is the window
    /// where an answer sent before its write is durable breaks a promise, which random crashes
    /// hit too rarely.
    ///
    /// With `then_master_after_ms`, the master of that moment (if another node) crashes that
    /// long after: a vote sent before its write was durable may then be all that held a chosen
    /// value.
    pub fn crash_mid_write(&mut self, i: usize, then_master_after_ms: Option<u64>) {
        if self.nodes[i].p.is_some() {
            self.log(|| format!("{i} CRASH ARMED (next write)"));
            self.nodes[i].crash_mid_write = Some(then_master_after_ms);
        }
    }

    /// Disarms every crash still to come (armed mid-write, or scheduled for a master): once
    /// the faults are healed, nothing may take a node down again.
    pub fn cancel_crashes(&mut self) {
        for n in self.nodes.iter_mut() {
            n.crash_mid_write = None;
        }
        self.events.retain(|_, e| !matches!(e, Ev::Crash { .. }));
    }

    /// Stops node `i` (SIGSTOP): time passes for everyone else; nothing reaches it.
    pub fn pause(&mut self, i: usize) {
        if self.nodes[i].p.is_some() && !self.nodes[i].paused {
            self.log(|| format!("{i} PAUSE"));
            self.nodes[i].paused = true;
        }
    }

    /// Resumes a paused node (SIGCONT): what it missed arrives now, in order.
    pub fn resume(&mut self, i: usize) {
        if !self.nodes[i].paused {
            return;
        }
        self.log(|| format!("{i} RESUME"));
        self.nodes[i].paused = false;
        for (rid, req) in core::mem::take(&mut self.nodes[i].deferred_calls) {
            if let Some(p) = self.nodes[i].p.as_mut() {
                p.handle_request(self.now, crate::RequestId(rid), req);
            }
            self.drain(i);
        }
        self.check();
        for ev in core::mem::take(&mut self.nodes[i].deferred) {
            self.schedule(self.now, ev);
        }
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].p.is_some() {
            return;
        }
        self.log(|| format!("{i} RESTART"));
        let cfg = self.node_config(i);
        let stored = self.nodes[i].stored.clone();
        match Participant::restore(cfg, S::default(), stored, self.now) {
            Ok(p) => {
                self.checker.on_restart(i, p.commit());
                self.nodes[i].p = Some(p);
                self.drain(i);
            }
            Err(e) => self
                .checker
                .violation(self.now, format!("node {i} cannot restart: {e}")),
        }
        self.check();
    }

    /// Fires node `i`'s timer now, whenever it was due.
    pub fn fire_timeout(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let t = p.poll_timeout().unwrap_or(self.now).max(self.now);
            self.now = t;
            p.handle_timeout(t);
        }
        self.drain(i);
        self.check();
    }

    /// Asks node `i` to start an election now.
    pub fn start_election(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let _ = p.start_election(self.now);
        }
        self.drain(i);
        self.check();
    }

    pub(super) fn finish_persist(&mut self, i: usize) {
        let Some(p) = self.nodes[i].persist.take() else {
            return;
        };
        self.nodes[i].stored.apply(&p);
        if let Some(node) = self.nodes[i].p.as_mut() {
            node.persisted(self.now, p.id);
        }
    }

    /// Node `i`'s host finished writing its snapshot job's file and synced it: it stores the
    /// snapshot beside the log and reports it (the participant then compacts the log).
    pub(super) fn save_snapshot(&mut self, i: usize) {
        let Some(job) = self.nodes[i].job.take() else {
            return;
        };
        let data = crate::snapshot_to_string(job.source).unwrap_or_default();
        let bytes = data.len() as u64;
        self.log(|| format!("{i} snapshot saved at {}", job.seq));
        self.checker.stats.snapshots_saved += 1;
        self.nodes[i]
            .stored
            .save_snapshot(crate::Snapshot { seq: job.seq, data });
        if let Some(p) = self.nodes[i].p.as_mut() {
            p.snapshot_saved(self.now, job.seq, bytes);
        }
    }

    /// Takes node `i`'s periodic snapshot job, if one is due: its host saves it some time
    /// later (a crash before then loses the file, never an entry).
    fn take_job(&mut self, i: usize) {
        let Some(job) = self.nodes[i].p.as_mut().and_then(|p| p.take_snapshot_job()) else {
            return;
        };
        self.log(|| format!("{i} snapshot job at {}", job.seq));
        // A newer job supersedes one still being written.
        self.nodes[i].job = Some(job);
        if self.manual {
            return self.save_snapshot(i);
        }
        let delay = self
            .rng
            .range(1, 4 * self.cfg.faults.persist_max_delay_ms + 3);
        let incarnation = self.nodes[i].incarnation;
        self.schedule(
            self.now + delay,
            Ev::SnapshotSaved {
                node: i,
                incarnation,
            },
        );
    }

    /// Handles every output of node `i` until it has none. While a persist is in progress the
    /// core hands out only what does not depend on it.
    pub(super) fn drain(&mut self, i: usize) {
        self.take_job(i);
        while let Some(out) = self.nodes[i].p.as_mut().and_then(|p| p.poll_output()) {
            match out {
                Output::Persist(p) => {
                    let delay = if self.manual {
                        0
                    } else {
                        self.rng.range(0, self.cfg.faults.persist_max_delay_ms + 1)
                    };
                    self.nodes[i].persist = Some(p);
                    if delay == 0 {
                        self.finish_persist(i);
                    } else {
                        let incarnation = self.nodes[i].incarnation;
                        self.schedule(
                            self.now + delay,
                            Ev::PersistDone {
                                node: i,
                                incarnation,
                            },
                        );
                    }
                }
                Output::Send(s) => {
                    let Some(to) = self.index_of(&s.to) else {
                        // Nobody there: connection refused.
                        let incarnation = self.nodes[i].incarnation;
                        self.schedule(
                            self.now + 1,
                            Ev::Fail {
                                node: i,
                                incarnation,
                                mid: s.id,
                            },
                        );
                        continue;
                    };
                    let m = NetMsg {
                        from: i,
                        to,
                        method: s.request.method(),
                        kind: NetKind::Request {
                            origin: Origin::Node {
                                node: i,
                                incarnation: self.nodes[i].incarnation,
                                mid: s.id,
                            },
                        },
                        body: s.request.encode(),
                        sent_at: self.now,
                        arrives_at: None,
                    };
                    self.transmit(m);
                }
                Output::Reply(r) => self.route_reply(i, r.id.0, r.response),
                Output::Event(e) => self.on_event(i, e),
            }
        }
        if let Some(then) = self.nodes[i]
            .crash_mid_write
            .filter(|_| self.nodes[i].persist.is_some())
        {
            let master = self.serving_master().filter(|m| *m != i);
            if let (Some(m), Some(after)) = (master, then) {
                self.schedule(self.now + after, Ev::Crash { node: m });
            }
            return self.crash(i);
        }
        self.rearm(i);
    }

    fn on_event(&mut self, i: usize, e: Event) {
        self.log(|| format!("{i} event {e:?}"));
        match e {
            Event::Committed { seq, payload } => {
                let by_master = self.nodes[i]
                    .p
                    .as_ref()
                    .is_some_and(|p| p.role() == Role::Master);
                self.checker.on_commit(self.now, i, seq, payload.clone());
                if by_master {
                    self.check_chosen(i, seq, &payload);
                }
            }
            Event::SnapshotInstalled { seq } => {
                // The state as installed, if nothing was applied after it yet.
                let p = self.nodes[i].p.as_ref().filter(|p| p.commit() == seq);
                self.checker
                    .on_snapshot(self.now, i, seq, p.map(|p| p.state()));
            }
            Event::BecameMaster { instance } => {
                self.checker.stats.elections_won += 1;
                self.check_elected(i, instance);
            }
            _ => {}
        }
    }

    /// A master committed `seq`: a majority of the voters before it must hold it durably (a
    /// learner's copy never counts), and a learner it promotes must have caught up.
    fn check_chosen(&mut self, i: usize, seq: u64, payload: &Payload) {
        let Some((voters, learners)) = self.checker.members_before(seq).cloned() else {
            return;
        };
        let holds = |n: &Node<S>| {
            n.stored.hard.as_ref().is_some_and(|h| {
                h.commit >= seq
                    || h.staged
                        .as_ref()
                        .is_some_and(|s| s.seq == seq && s.payload == *payload)
            })
        };
        let holding: Vec<&String> = voters
            .iter()
            .filter(|v| self.index_of(v).is_some_and(|j| holds(&self.nodes[j])))
            .collect();
        if holding.len() < majority(voters.len()) {
            let msg = format!(
                "node {i} committed seq {seq} held durably by only {holding:?} of the voters {voters:?}"
            );
            self.checker.violation(self.now, msg);
        }
        if let Payload::Add(a) = payload {
            let commit = self
                .index_of(a)
                .and_then(|j| self.nodes[j].stored.hard.as_ref())
                .map_or(0, |h| h.commit);
            if learners.contains(a) && commit + 2 < seq {
                let msg = format!("learner {a} promoted at seq {seq} holding only commit {commit}");
                self.checker.violation(self.now, msg);
            }
        }
    }

    /// Node `i` won `instance`: a majority of its voters must have promised it durably (a
    /// vote counts only once it cannot be forgotten).
    fn check_elected(&mut self, i: usize, instance: u64) {
        let Some(voters) = self.nodes[i].p.as_ref().map(|p| p.members().to_vec()) else {
            return;
        };
        let promised: Vec<&String> = voters
            .iter()
            .filter(|v| {
                self.index_of(v)
                    .and_then(|j| self.nodes[j].stored.hard.as_ref())
                    .is_some_and(|h| h.promised >= instance)
            })
            .collect();
        if promised.len() < majority(voters.len()) {
            let msg = format!(
                "node {i} won instance {instance} with durable promises from only {promised:?} of {voters:?}"
            );
            self.checker.violation(self.now, msg);
        }
    }

    fn rearm(&mut self, i: usize) {
        let t = self.nodes[i].p.as_ref().and_then(|p| p.poll_timeout());
        if t == self.nodes[i].timer_at {
            return;
        }
        self.nodes[i].timer_generation += 1;
        self.nodes[i].timer_at = t;
        if let Some(t) = t {
            let generation = self.nodes[i].timer_generation;
            self.schedule(
                t,
                Ev::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }
}
