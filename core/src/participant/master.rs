//! The master of an instance (docs/PROTOCOL.md section 3, "Master M of instance I"): one slot in
//! flight at a time, queued submits batched into it, heartbeats, snapshots for followers that
//! fell behind, and stepping down.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use super::{majority, Durable, Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::{Event, RequestId, Status};
use crate::wire::{
    Accept, CommittedEntry, FailResult, Learner, Member, Method, Payload, Request, Response,
    Staged, Start,
};
use crate::StateMachine;

/// Most requests outstanding to one follower before heartbeats to it pause.
const MAX_OUTSTANDING_PER_PEER: u32 = 3;

pub(super) struct Leadership {
    pub instance: u64,
    /// The first accept of this instance (the recovered slot, or an empty confirmation) is not
    /// yet on a majority: no new submits or membership changes are proposed.
    pub recovering: bool,
    pub inflight: Option<Inflight>,
    pub queue: VecDeque<(RequestId, Vec<String>)>,
    pub queued_changes: usize,
    pub admin: VecDeque<AdminOp>,
    pub peers: BTreeMap<String, Peer>,
    pub next_tick: u64,
    pub since: u64,
    /// Numbers the proposals of this instance.
    pub proposals: u64,
    /// The last read round started; every accept is tagged with it (see `read`).
    pub read_round: u64,
    pub reads: Vec<super::read::PendingRead>,
    /// A leader transfer in progress: nothing new is proposed (see [`super::transfer`]).
    pub transfer: Option<super::transfer::Handing>,
}

/// The most notices a master sends a removed node that does not answer (a node that is gone
/// for good costs one failed call per heartbeat until then).
pub(super) const MAX_REMOVAL_NOTICES: u32 = 600;

pub(super) struct AdminOp {
    /// The admin call to answer (`None`: the master's own promotion of a learner).
    pub id: Option<RequestId>,
    pub method: Method,
    pub payload: Payload,
    pub version: Option<u64>,
}

/// The one slot being decided.
pub(super) struct Inflight {
    pub proposal: u64,
    pub seq: u64,
    pub payload: Payload,
    pub acks: BTreeSet<String>,
    pub self_ack: bool,
    /// The calls this slot answers, each with how many of the batch's changes are its own (in
    /// order), so each gets its own changes' results.
    pub waiters: Vec<(RequestId, usize)>,
}

#[derive(Default)]
pub(super) struct Peer {
    pub last_ack: u64,
    /// A commit this peer is known to hold: it accepted an accept at `matched + 1`.
    pub matched: u64,
    /// The master's promotion of this learner is queued or in flight.
    pub promoting: bool,
    pub outstanding: u32,
    /// The highest read round it answered.
    pub read_acked: u64,
    /// A `start` is on its way: accepts would only get `ERR_GAP` again.
    pub starting: bool,
    /// It said (`"entries": true` on an `ERR_GAP`) that it takes catch-up batches.
    pub batches: bool,
}

impl Peer {
    /// Learns from an `ERR_GAP` whether the peer takes catch-up batches. Every such refusal
    /// says it anew, so a peer that restarted as an implementation without them (a seed peer
    /// at the same address) is caught up one entry at a time again rather than sent batches it
    /// would take for heartbeats.
    fn note_gap_answer(&mut self, a: &crate::wire::AcceptResult) {
        if a.err.as_ref().is_some_and(|e| e.code == ErrorCode::Gap) {
            self.batches = a.entries;
        }
    }
}

impl<S: StateMachine> Participant<S> {
    /// Takes office at `instance`: the first accept carries the recovered payload.
    pub(super) fn lead(&mut self, now: u64, instance: u64, recovered: Payload) {
        self.transfers.clear();
        let peers = self
            .replicas()
            .into_iter()
            .map(|m| {
                let p = Peer {
                    last_ack: now,
                    ..Peer::default()
                };
                (m, p)
            })
            .collect();
        self.leader = Some(Leadership {
            instance,
            recovering: true,
            inflight: None,
            queue: VecDeque::new(),
            queued_changes: 0,
            admin: VecDeque::new(),
            peers,
            next_tick: now + self.cfg.heartbeat_ms,
            since: now,
            proposals: 0,
            read_round: 0,
            reads: Vec::new(),
            transfer: None,
        });
        // A bootstrapped master grows its cluster once it serves (the queue waits for that).
        for addr in core::mem::take(&mut self.joiners) {
            if let Some(l) = self.leader.as_mut() {
                l.admin.push_back(AdminOp {
                    id: None,
                    method: Method::MembersAdd,
                    payload: Payload::Learner(Learner {
                        addr,
                        promote: true,
                    }),
                    version: None,
                });
            }
        }
        self.propose(now, recovered, Vec::new());
    }

    /// Proposes `payload` at `commit + 1` to every member; stages it here too (our own vote
    /// counts once that is durable). An empty payload proposes nothing: it confirms mastership.
    fn propose(&mut self, now: u64, payload: Payload, waiters: Vec<(RequestId, usize)>) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        l.proposals += 1;
        let (instance, proposal) = (l.instance, l.proposals);
        let seq = self.hard.commit + 1;
        let empty = payload.is_empty();
        let request = payload.to_request(instance, seq, &self.hard.self_addr);
        // The proposal does not depend on our own staged copy: send before persisting it.
        for peer in self.replicas() {
            self.send_to_peer(peer, request.clone(), Some(proposal), true);
        }
        if !empty {
            self.hard.staged = Some(Staged {
                instance,
                seq,
                payload: payload.clone(),
            });
            self.dirty = true;
            self.on_durable(Durable::SelfAccept { instance, seq });
        }
        let l = self.leader.as_mut().expect("checked above");
        l.inflight = Some(Inflight {
            proposal,
            seq,
            payload,
            acks: BTreeSet::new(),
            self_ack: empty,
            waiters,
        });
        l.next_tick = now + self.cfg.heartbeat_ms;
        if empty {
            self.check_quorum(now);
        }
    }

    /// Sends an accept-like request to a follower, counting it as outstanding.
    fn send_to_peer(&mut self, to: String, request: Request, proposal: Option<u64>, early: bool) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let (instance, round) = (l.instance, l.read_round);
        if let Some(p) = l.peers.get_mut(&to) {
            p.outstanding += 1;
        }
        let seq = match &request {
            Request::Accept(a) => a.seq,
            Request::AddMember(m) | Request::RmMember(m) => m.seq,
            _ => 0,
        };
        let pending = Pending::Accept {
            instance,
            proposal,
            round,
            seq,
        };
        if early {
            self.send_early(to, request, pending);
        } else {
            self.send(to, request, pending);
        }
    }

    pub(super) fn on_self_accept_durable(&mut self, now: u64, instance: u64, seq: u64) {
        let Some(l) = self.leader.as_mut().filter(|l| l.instance == instance) else {
            return;
        };
        if let Some(f) = l.inflight.as_mut().filter(|f| f.seq == seq) {
            f.self_ack = true;
            self.check_quorum(now);
        }
    }

    /// Decides the in-flight slot once a majority (us included) holds it.
    fn check_quorum(&mut self, now: u64) {
        let learner_votes = self.mutant(crate::Mutant::LearnerVotes);
        let me = self.hard.self_addr.clone();
        let n = self.hard.members.len();
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let Some(f) = l.inflight.as_ref() else {
            return;
        };
        let votes = f
            .acks
            .iter()
            .filter(|a| self.hard.members.contains(a) || learner_votes)
            .count()
            + usize::from(f.self_ack && self.hard.members.contains(&me));
        if votes < majority(n) {
            return;
        }
        let f = l.inflight.take().expect("checked above");
        l.recovering = false;
        if f.payload.is_empty() {
            // The confirmation of a new master: nothing committed, the seq stays free.
            self.try_propose_next(now);
            return;
        }
        let payload = f.payload.clone();
        let batch = matches!(payload, Payload::Changes(_));
        let results = self.commit_entry(now, f.seq, f.payload, true);
        match payload {
            Payload::Add(a) | Payload::Learner(Learner { addr: a, .. }) if a != me => {
                let known = self
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.peers.contains_key(&a));
                if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(&a)) {
                    // A learner promoted: it holds the state already.
                    p.promoting = false;
                }
                if !known {
                    if let Some(l) = self.leader.as_mut() {
                        let p = Peer {
                            last_ack: now,
                            ..Peer::default()
                        };
                        l.peers.insert(a.clone(), p);
                    }
                    self.send_start(a, false);
                }
            }
            Payload::Rm(a) if a != me => {
                if let Some(l) = self.leader.as_mut() {
                    l.peers.remove(&a);
                }
                self.removal_notices.insert(a.clone(), (1, true));
                // One more empty accept so the removed node learns of it.
                self.notify_commit(a);
            }
            _ => {}
        }
        if self.hard.status == Status::Removed {
            // We removed ourselves: tell the others it committed, answer, and leave.
            for m in self.others() {
                self.notify_commit(m);
            }
            for (w, _) in f.waiters {
                self.reply(w, Response::Fail(FailResult::ok()));
            }
            self.step_down(now, Error::state("this node was removed from the cluster"));
            self.become_removed();
            return;
        }
        // The batch is chosen: a majority holds it durably (our own vote counted only once our
        // staged copy was durable), and any later master recovers it. So the answers wait for
        // no write of ours (neither our record of the commit nor a staged copy still in
        // progress), and neither does the next batch's accept.
        let mut results = results.into_iter();
        for (w, n) in f.waiters {
            let answer = match batch {
                true => FailResult::committed(f.seq, results.by_ref().take(n).collect()),
                false => FailResult::ok(),
            };
            self.reply_early(w, Response::Fail(answer));
        }
        self.try_propose_next(now);
        let wait = self.cfg.commit_notice_ms.min(self.cfg.heartbeat_ms);
        if wait == 0 && self.leader.as_ref().is_some_and(|l| l.inflight.is_none()) {
            self.broadcast(now);
        } else if let Some(l) = self
            .leader
            .as_mut()
            .filter(|l| l.inflight.is_none() && !l.peers.is_empty())
        {
            // Nothing else to send. The followers learn the commit from the next accept; if no
            // submit comes within `commit_notice_ms`, from an empty accept then. Sending that
            // empty accept at once would put it ahead of the next batch in each follower's
            // ordered lane, and a client writing one change at a time would wait for two
            // follower round trips (and two fsyncs) per write instead of one.
            l.next_tick = l.next_tick.min(now + wait);
        }
    }

    /// An empty accept at `commit + 1`: a follower holding our slot at `commit` commits it.
    fn notify_commit(&mut self, to: String) {
        let req = Request::Accept(Accept {
            instance: self.hard.promised,
            seq: self.hard.commit + 1,
            chg: Vec::new(),
            master: Some(Member::new(self.hard.self_addr.clone())),
            entries: Vec::new(),
        });
        self.send(to, req, Pending::Notice);
    }

    /// Proposes the next membership change or batch of submits, if nothing is in flight.
    pub(super) fn try_propose_next(&mut self, now: u64) {
        loop {
            let Some(l) = self.leader.as_mut() else {
                return;
            };
            if l.recovering || l.inflight.is_some() {
                return;
            }
            if l.transfer.is_some() {
                // Submits and admin calls wait: the target must hold everything committed
                // when it takes over, so the commit stops moving.
                return self.transfer_progress(now);
            }
            if let Some(op) = l.admin.pop_front() {
                let refusal = self.admin_refusal(&op);
                let waiters: Vec<(RequestId, usize)> =
                    op.id.map(|id| (id, 0)).into_iter().collect();
                match (refusal, op.id) {
                    (None, _) => return self.propose(now, op.payload, waiters),
                    (Some(Ok(())), Some(id)) => self.reply(id, Response::Fail(FailResult::ok())),
                    (Some(Err(e)), Some(id)) => self.reply_err(id, op.method, e),
                    (Some(_), None) => {}
                }
                if let Payload::Add(a) = &op.payload {
                    // Not proposed: the master may try to promote it again later.
                    if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(a)) {
                        p.promoting = false;
                    }
                }
                continue;
            }
            if l.queue.is_empty() {
                return;
            }
            let mut batch = Vec::new();
            let mut waiters = Vec::new();
            while let Some((_, chg)) = l.queue.front() {
                if !batch.is_empty() && batch.len() + chg.len() > self.cfg.max_batch {
                    break;
                }
                let (id, chg) = l.queue.pop_front().expect("front exists");
                l.queued_changes -= chg.len();
                waiters.push((id, chg.len()));
                batch.extend(chg);
            }
            return self.propose(now, Payload::Changes(batch.into()), waiters);
        }
    }

    /// Membership rules checked when a change is about to be proposed: `Some(Ok)` if it is
    /// already in effect, `Some(Err)` if refused, `None` to propose it.
    fn admin_refusal(&self, op: &AdminOp) -> Option<Result<(), Error>> {
        let v = self.hard.members_version;
        if op.version.is_some_and(|x| x != v) {
            let msg = alloc::format!(
                "member-list version {} is stale (now {v})",
                op.version.unwrap_or(0)
            );
            return Some(Err(Error::new(ErrorCode::Sequence, msg)));
        }
        match &op.payload {
            Payload::Add(a) if self.is_member(a) => Some(Ok(())),
            Payload::Add(a) if op.method == Method::MembersPromote && !self.is_learner(a) => {
                Some(Err(Error::state(alloc::format!("{a} is not a learner"))))
            }
            Payload::Add(a) if self.is_learner(a) => self.promotion_refusal(a).map(Err),
            Payload::Learner(l) if self.is_member(&l.addr) || self.is_learner(&l.addr) => {
                Some(Ok(()))
            }
            Payload::Rm(a) if !self.is_member(a) && !self.is_learner(a) => Some(Ok(())),
            Payload::Rm(a) if self.is_member(a) && self.hard.members.len() == 1 => {
                Some(Err(Error::state("the last member cannot be removed")))
            }
            _ => None,
        }
    }

    /// Why learner `a` cannot become a voter now: it must hold every committed entry but the
    /// newest, which it holds staged (docs/PROTOCOL.md section 8). A voter that cannot vote
    /// because it still lacks the state lowers availability.
    fn promotion_refusal(&self, a: &str) -> Option<Error> {
        let matched = self.peer_progress(a).map_or(0, |(m, _)| m);
        let behind = self.hard.commit.saturating_sub(matched);
        (behind > 1 && !self.mutant(crate::Mutant::PromoteBehind)).then(|| {
            Error::state(alloc::format!(
                "learner {a} is {behind} entries behind; it is promoted once it has caught up"
            ))
        })
    }

    /// On a master: the commit `peer` is known to hold, and how far it is behind.
    pub(super) fn peer_progress(&self, peer: &str) -> Option<(u64, u64)> {
        let p = self.leader.as_ref()?.peers.get(peer)?;
        Some((p.matched, self.hard.commit.saturating_sub(p.matched)))
    }

    /// A learner that the master promotes by itself has caught up: queue its promotion.
    fn maybe_promote(&mut self, now: u64, peer: &str) {
        let auto = self
            .hard
            .learners
            .iter()
            .any(|l| l.addr == peer && l.promote);
        if !auto || self.promotion_refusal(peer).is_some() {
            return;
        }
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        match l.peers.get_mut(peer) {
            Some(p) if !p.promoting => p.promoting = true,
            _ => return,
        }
        l.admin.push_back(AdminOp {
            id: None,
            method: Method::MembersPromote,
            payload: Payload::Add(String::from(peer)),
            version: None,
        });
        self.try_propose_next(now);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_accept_result(
        &mut self,
        now: u64,
        from: String,
        instance: u64,
        proposal: Option<u64>,
        round: u64,
        seq: u64,
        res: Result<Response, Error>,
    ) {
        let Some(l) = self.leader.as_mut().filter(|l| l.instance == instance) else {
            return;
        };
        let Some(peer) = l.peers.get_mut(&from) else {
            return;
        };
        peer.outstanding = peer.outstanding.saturating_sub(1);
        let (ok, err, refused_at, their_commit) = match res {
            Err(_) => return, // unreachable: re-sent at the next tick
            Ok(Response::Accept(a)) => {
                peer.note_gap_answer(&a);
                (a.accepted && a.err.is_none(), a.err, a.instance, a.seq)
            }
            Ok(Response::Fail(f)) => (!f.fail && f.err.is_none(), f.err, f.instance, f.seq),
            Ok(Response::Prepare(_)) => return,
        };
        if ok {
            peer.last_ack = now;
            peer.read_acked = peer.read_acked.max(round);
            // An accept at `seq` is accepted only by a node whose commit is at least seq - 1.
            peer.matched = peer.matched.max(seq.saturating_sub(1));
            if let Some(f) = l.inflight.as_mut().filter(|f| Some(f.proposal) == proposal) {
                f.acks.insert(from.clone());
                self.check_quorum(now);
            }
            if self.is_learner(&from) {
                self.maybe_promote(now, &from);
            }
            if self.transferring() {
                self.transfer_progress(now);
            }
            return self.check_reads(now);
        }
        let code = err.map(|e| e.code);
        if refused_at.is_some_and(|i| i > instance)
            || (code == Some(ErrorCode::Denied) && refused_at.is_none())
        {
            // Someone promised a higher instance (trap E): step down; the next election goes
            // above it.
            return self.step_down(now, Error::state("a higher instance was promised"));
        }
        let starting = peer.starting;
        if code == Some(ErrorCode::Gap) && !starting {
            if let Some(c) = their_commit {
                if self.catch_up(from.clone(), c + 1) {
                    return;
                }
            }
        }
        if matches!(code, Some(ErrorCode::Gap) | Some(ErrorCode::State)) && !starting {
            self.send_start(from, false);
        }
    }

    /// Catches `to` up from `seq` with the committed entries we still keep (a follower commits
    /// each as it would have on the accepts that carried it: the value at a committed seq is
    /// the chosen one, so re-sending it is what any master would propose there). Far cheaper
    /// than a snapshot of a large state, and what lets a follower that took a snapshot while
    /// writes went on join the stream. `false` if those entries are no longer kept: send a
    /// snapshot.
    ///
    /// A follower that takes batches ([`Peer::batches`]) gets as many entries as
    /// `Config::catchup_batch` allows in one accept (docs/PROTOCOL.md section 12), so it gains
    /// thousands of seqs per round trip and overtakes a write load; any other gets one entry per
    /// accept, each once the previous one was accepted (it commits its staged slot at `S` when
    /// the accept at `S + 1` comes in the same instance).
    fn catch_up(&mut self, to: String, seq: u64) -> bool {
        if seq > self.hard.commit {
            return false;
        }
        let Some(l) = self.leader.as_ref() else {
            return false;
        };
        let instance = l.instance;
        let batched = self.cfg.catchup_batch > 0 && l.peers.get(&to).is_some_and(|p| p.batches);
        let (req, pending) = if batched {
            let mut entries = Vec::new();
            let (mut bytes, mut next) = (0, seq);
            while next <= self.hard.commit {
                let Some(e) = self.recent_entry(next) else {
                    break;
                };
                let n = super::entry_size(&e.payload);
                if !entries.is_empty() && bytes + n > self.cfg.catchup_batch {
                    break;
                }
                bytes += n;
                entries.push(CommittedEntry {
                    seq: next,
                    payload: e.payload.clone(),
                });
                next += 1;
            }
            if entries.is_empty() {
                return false;
            }
            // An empty accept at the seq after the batch: everything before it is committed,
            // and it stages nothing, so an accepted answer says the follower holds `next - 1`.
            let req = Request::Accept(Accept {
                instance,
                seq: next,
                chg: Vec::new(),
                master: Some(Member::new(self.hard.self_addr.clone())),
                entries,
            });
            let pending = Pending::CatchUp {
                instance,
                seq: next,
                batch: true,
            };
            (req, pending)
        } else {
            let Some(e) = self.recent_entry(seq) else {
                return false;
            };
            let req = e.payload.to_request(instance, seq, &self.hard.self_addr);
            let pending = Pending::CatchUp {
                instance,
                seq,
                batch: false,
            };
            (req, pending)
        };
        if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(&to)) {
            p.starting = true;
        }
        self.send(to, req, pending);
        true
    }

    /// The answer to a catch-up accept at `seq` (with `batch`, one carrying the entries before
    /// `seq`): the next entries, the current slot once it holds everything committed, or a
    /// snapshot.
    pub(super) fn on_catch_up_result(
        &mut self,
        now: u64,
        from: String,
        instance: u64,
        seq: u64,
        batch: bool,
        res: Result<Response, Error>,
    ) {
        let Some(l) = self.leader.as_mut().filter(|l| l.instance == instance) else {
            return;
        };
        let Some(peer) = l.peers.get_mut(&from) else {
            return;
        };
        peer.starting = false;
        let (ok, err, refused_at, their_commit) = match res {
            Err(_) => return, // the next tick finds the gap again
            Ok(Response::Accept(a)) => {
                peer.note_gap_answer(&a);
                (a.accepted && a.err.is_none(), a.err, a.instance, a.seq)
            }
            Ok(Response::Fail(f)) => (!f.fail && f.err.is_none(), f.err, f.instance, f.seq),
            Ok(Response::Prepare(_)) => return,
        };
        if ok {
            peer.last_ack = now;
            // Accepted at `seq`: its commit is at least `seq - 1`.
            peer.matched = peer.matched.max(seq.saturating_sub(1));
            // What it needs next: the entry at `seq` after a batch (which ended before it),
            // the one after `seq` after a single entry (which it holds staged).
            let next = if batch { seq } else { seq + 1 };
            if next <= self.hard.commit {
                if !self.catch_up(from.clone(), next) {
                    self.send_start(from.clone(), false);
                }
            } else {
                // Caught up: the slot in flight (or a heartbeat) commits the rest there.
                self.send_current(from.clone());
            }
            if self.is_learner(&from) {
                self.maybe_promote(now, &from);
            }
            return;
        }
        if refused_at.is_some_and(|i| i > instance) {
            return self.step_down(now, Error::state("a higher instance was promised"));
        }
        if err.is_some_and(|e| e.code == ErrorCode::Gap) {
            // Further behind than it was (it restarted from older state): from there, or a
            // snapshot.
            let from_seq = their_commit.map_or(0, |c| c + 1);
            if from_seq == 0 || !self.catch_up(from.clone(), from_seq) {
                self.send_start(from, false);
            }
        }
    }

    /// Sends our committed state to `to` (it fell behind, joined, or is unjoined). A master
    /// sends it through a transfer ([`transfer`](super::transfer)): the seed's one-body `start`
    /// when the snapshot fits in one chunk, else the chunk in flight again (after a cut), or
    /// the first chunk of a fresh snapshot. A candidate (`campaign`) sends the whole state.
    pub(super) fn send_start(&mut self, to: String, campaign: bool) {
        let instance = self.hard.promised;
        if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(&to)) {
            p.starting = true;
        }
        if campaign || self.leader.is_none() {
            let req = Request::Start(self.start_for(&to, self.hard.self_addr.clone()));
            let pending = Pending::Start {
                instance,
                campaign,
                chunk: None,
            };
            self.send(to, req, pending);
            return;
        }
        match self.transfers.get(&to).and_then(|t| t.sent.clone()) {
            // Resume: the follower answers with the offset it holds if it already has it.
            Some(c) => self.send_chunk(to, c),
            None => self.restart_transfer(to),
        }
    }

    /// Starts a transfer of our state at the current commit to `to` (superseding any older
    /// one) and sends its first chunk.
    fn restart_transfer(&mut self, to: String) {
        let mut t = super::chunks::Outgoing::new(self.hard.commit, self.app.snapshot());
        match t.next_chunk(self.cfg.snapshot_chunk) {
            Ok(c) if c.offset == 0 && !c.more => {
                // It fits in one body: the seed's start, which every peer speaks.
                self.transfers.remove(&to);
                let start = self.start_header(&to, self.hard.self_addr.clone(), c.text);
                let pending = Pending::Start {
                    instance: self.hard.promised,
                    campaign: false,
                    chunk: None,
                };
                self.send(to, Request::Start(start), pending);
            }
            Ok(c) => {
                self.transfers.insert(to.clone(), t);
                self.send_chunk(to, c);
            }
            Err(_) => {
                // Not text: it cannot travel in a `start` (the application breaks the
                // snapshot contract). Try again at the next tick.
                self.transfers.remove(&to);
                if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(&to)) {
                    p.starting = false;
                }
            }
        }
    }

    /// Sends one chunk of the transfer to `to`.
    fn send_chunk(&mut self, to: String, c: super::chunks::Chunk) {
        let Some(seq) = self.transfers.get(&to).map(|t| t.seq) else {
            return;
        };
        if let Some(p) = self.leader.as_mut().and_then(|l| l.peers.get_mut(&to)) {
            p.starting = true;
        }
        let mut start = self.start_header(&to, self.hard.self_addr.clone(), c.text);
        start.seq = seq;
        start.offset = Some(c.offset);
        start.more = c.more;
        start.crc = c.crc;
        let pending = Pending::Start {
            instance: self.hard.promised,
            campaign: false,
            chunk: Some((seq, c.offset)),
        };
        self.send(to, Request::Start(start), pending);
    }

    /// A `start` carrying our committed state for `to`, naming `master`.
    pub(super) fn start_for(&self, to: &str, master: String) -> Start {
        self.start_header(to, master, self.snapshot_string())
    }

    /// A `start` of our commit for `to`, naming `master`, with `snap` as given.
    fn start_header(&self, to: &str, master: String, snap: String) -> Start {
        Start {
            instance: self.hard.promised,
            seq: self.hard.commit,
            cluster: self.hard.cluster.clone(),
            self_: Member::new(to),
            master: Member::new(master),
            participants: self.all_members().into_iter().map(Member::new).collect(),
            snap,
            version: Some(self.hard.members_version),
            learners: self.hard.learners.clone(),
            offset: None,
            more: false,
            crc: None,
        }
    }

    pub(super) fn on_start_result(
        &mut self,
        now: u64,
        from: String,
        instance: u64,
        campaign: bool,
        chunk: Option<(u64, u64)>,
        res: Result<Response, Error>,
    ) {
        let ok = matches!(&res, Ok(Response::Fail(f)) if !f.fail && f.err.is_none());
        if campaign {
            return self.after_campaign_start(from, instance, ok);
        }
        let Some(l) = self.leader.as_mut().filter(|l| l.instance == instance) else {
            return;
        };
        if let Some(p) = l.peers.get_mut(&from) {
            p.starting = false;
            if ok {
                p.last_ack = now;
            }
        }
        if let Ok(Response::Fail(f)) = &res {
            if f.instance.is_some_and(|i| i > instance) {
                return self.step_down(now, Error::state("a higher instance was promised"));
            }
        }
        if let Some((seq, offset)) = chunk {
            return self.on_chunk_result(from, seq, offset, ok, res);
        }
        if ok {
            self.send_current(from);
        }
    }

    /// A chunk at `offset` of the transfer of snapshot `seq` to `from` was answered: send the
    /// next chunk, the same again, or start over, by the offset the follower says it holds.
    fn on_chunk_result(
        &mut self,
        from: String,
        seq: u64,
        offset: u64,
        ok: bool,
        res: Result<Response, Error>,
    ) {
        let Ok(Response::Fail(f)) = res else {
            // Cut or not answered: the transfer stays; the next tick's accept finds the gap and
            // `send_start` re-sends the chunk in flight.
            return;
        };
        let Some(t) = self.transfers.get_mut(&from).filter(|t| t.seq == seq) else {
            return;
        };
        let Some(sent) = t.sent.clone().filter(|c| c.offset == offset) else {
            return; // the answer to an older chunk
        };
        match f.offset {
            Some(held) if held == sent.end() && !sent.more => {
                // Installed (or refused as not newer): done. A follower that installed it is
                // sent the current slot; one still behind gets a newer snapshot then.
                self.transfers.remove(&from);
                if ok {
                    self.send_current(from);
                }
            }
            Some(held) if held == sent.end() => match t.next_chunk(self.cfg.snapshot_chunk) {
                Ok(c) => self.send_chunk(from, c),
                Err(_) => {
                    self.transfers.remove(&from);
                }
            },
            Some(held) if held == sent.offset => self.send_chunk(from, sent),
            // It holds nothing we can resume from (it restarted, took another snapshot, or
            // refused the bytes): start over from our current state.
            Some(_) => self.restart_transfer(from),
            None => {
                // A refusal about the start itself (not newer, not ours): give up this
                // transfer; the next tick decides again.
                self.transfers.remove(&from);
                if ok {
                    self.send_current(from);
                }
            }
        }
    }

    /// The in-flight slot if `to` has not accepted it, else a heartbeat.
    pub(super) fn send_current(&mut self, to: String) {
        let Some(l) = self.leader.as_ref() else {
            return;
        };
        let instance = l.instance;
        let me = self.hard.self_addr.clone();
        let (req, proposal) = match &l.inflight {
            Some(f) if !f.acks.contains(&to) => {
                (f.payload.to_request(instance, f.seq, &me), Some(f.proposal))
            }
            _ => {
                let seq = self.hard.commit + 1;
                (
                    Payload::Changes(Default::default()).to_request(instance, seq, &me),
                    None,
                )
            }
        };
        self.send_to_peer(to, req, proposal, false);
    }

    /// Heartbeats (or the in-flight slot) to every follower not already busy.
    pub(super) fn broadcast(&mut self, now: u64) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        l.next_tick = now + self.cfg.heartbeat_ms;
        let targets: Vec<String> = l
            .peers
            .iter()
            .filter(|(_, p)| !p.starting && p.outstanding < MAX_OUTSTANDING_PER_PEER)
            .map(|(m, _)| m.clone())
            .collect();
        for t in targets {
            self.send_current(t);
        }
        let again: Vec<String> = self
            .removal_notices
            .iter_mut()
            .filter(|(_, (sent, inflight))| !*inflight && *sent < MAX_REMOVAL_NOTICES)
            .map(|(a, (sent, inflight))| {
                *sent += 1;
                *inflight = true;
                a.clone()
            })
            .collect();
        for a in again {
            self.notify_commit(a);
        }
    }

    pub(super) fn master_tick(&mut self, now: u64) {
        let Some(l) = self.leader.as_ref() else {
            return;
        };
        if now < l.next_tick {
            return;
        }
        // No majority heard from for an election timeout: step down.
        let window = self.cfg.election_min_ms;
        let me_member = usize::from(self.is_member(&self.hard.self_addr));
        let live = me_member
            + l.peers
                .iter()
                .filter(|(m, p)| self.is_member(m) && now.saturating_sub(p.last_ack) < window)
                .count();
        if live < majority(self.hard.members.len()) && now.saturating_sub(l.since) >= window {
            let e = Error::new(ErrorCode::Majority, "no majority reachable; stepped down");
            return self.step_down(now, e);
        }
        self.transfer_progress(now);
        if self.leader.as_ref().is_some_and(|l| now < l.next_tick) {
            // An abandoned transfer just proposed what waited: that went to everyone.
            return;
        }
        self.broadcast(now);
    }

    /// Stops being master: every waiting submit or admin call is answered with `err` (its
    /// outcome is unknown: the in-flight slot may still commit under the next master).
    pub(super) fn step_down(&mut self, now: u64, err: Error) {
        let Some(mut l) = self.leader.take() else {
            return;
        };
        let err = match l.transfer.take() {
            Some(h) => self.hand_over(now, h),
            None => err,
        };
        self.transfers.clear();
        let mut waiters: Vec<RequestId> = Vec::new();
        if let Some(f) = l.inflight {
            waiters.extend(f.waiters.into_iter().map(|(id, _)| id));
        }
        waiters.extend(l.queue.into_iter().map(|(id, _)| id));
        waiters.extend(l.admin.into_iter().filter_map(|op| op.id));
        waiters.extend(l.reads.into_iter().map(|r| r.id));
        for w in waiters {
            self.reply_err(w, Method::Submit, err.clone());
        }
        if self.role == Role::Master {
            self.role = if self.hard.status == Status::Removed {
                Role::Removed
            } else {
                self.follower_role()
            };
        }
        self.master = None;
        self.last_heard = None;
        self.event(Event::LostMastership {
            instance: l.instance,
        });
        if self.role == Role::Participant {
            self.reset_election_timer(now);
        }
    }
}
