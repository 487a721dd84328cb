//! Leader transfer (docs/PROTOCOL.md section 9): the master hands its mastership to a voter
//! that holds everything committed, which then campaigns at once instead of after an election
//! timeout.
//!
//! 1. `transfer` at the master picks the target (the named voter, or the most caught-up one)
//!    and stops proposing: submits and admin calls queue; the slot in flight finishes.
//! 2. Once nothing is in flight, the master brings the target up to its commit (an empty
//!    accept at `commit + 1`, or a `start` if it fell behind the log) and, as soon as the
//!    target's answer shows it holds the commit, sends it `timeoutnow`.
//! 3. The target campaigns at once with `transfer` set on its prepares: a voter that still
//!    hears the old master votes all the same (rule 5 is about liveness, not safety). It must
//!    still win a majority under every other rule, and voters still refuse a candidate behind
//!    them, so safety does not depend on any of this: a transfer can only fail, never lose a
//!    committed change.
//! 4. The old master gets the target's prepare (a higher instance) and steps down; it answers
//!    the transfer once the target's first accept shows the target leads, so a host that exits
//!    after the answer leaves a working master behind.
//!
//! Not done within `election_min_ms` (the target is unreachable, or lost its election), the
//! transfer is abandoned: the master answers with a retryable error and resumes proposing;
//! an old master that stepped down answers the same after the same bound.

use alloc::format;
use alloc::string::String;

use super::{Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{FailResult, Member, Method, Request, Response, TimeoutNow, Transfer};
use crate::StateMachine;

/// A transfer in progress at the master.
pub(super) struct Handing {
    /// The `transfer` call to answer (`None`: started by [`Participant::transfer`] with no
    /// caller to answer).
    pub id: Option<RequestId>,
    pub target: String,
    /// Abandoned at this time.
    pub until: u64,
    /// `timeoutnow` is on its way or was accepted.
    pub sent: bool,
}

/// An old master that stepped down for a transfer, waiting to see the target lead.
#[derive(Clone, Debug)]
pub(super) struct Handover {
    pub id: Option<RequestId>,
    pub target: String,
    pub until: u64,
}

impl<S: StateMachine> Participant<S> {
    /// `POST transfer`: the master starts the hand-over; a follower forwards the call to it.
    pub(super) fn on_transfer(&mut self, now: u64, id: RequestId, r: Transfer) {
        if let Some(to) = &r.to {
            if to.is_empty() || to.ends_with('/') || to.contains(char::is_whitespace) {
                let e =
                    Error::encoding("a member address is an HTTP base URL without trailing slash");
                return self.reply_err(id, Method::Transfer, e);
            }
        }
        if self.role != Role::Master {
            let req = Request::Transfer(Transfer {
                forwarded: true,
                ..r.clone()
            });
            return self.forward_or_refuse(id, req, r.forwarded);
        }
        if let Err(e) = self.begin_transfer(now, Some(id), r.to) {
            self.reply_err(id, Method::Transfer, e);
        }
    }

    /// Starts a transfer at the master (see the module docs); `Err` if it cannot start.
    pub(super) fn begin_transfer(
        &mut self,
        now: u64,
        id: Option<RequestId>,
        to: Option<String>,
    ) -> Result<(), Error> {
        let me = self.hard.self_addr.clone();
        let Some(l) = self.leader.as_ref() else {
            return Err(Error::state("not master").with_master(self.master.clone()));
        };
        if let Some(h) = &l.transfer {
            let msg = format!("a transfer to {} is in progress", h.target);
            return Err(Error::state(msg));
        }
        if l.recovering {
            return Err(Error::state("this master is not serving yet; try again"));
        }
        let target = match to {
            Some(t) if t == me => {
                let msg = format!("{t} is the master itself; name another voter");
                return Err(Error::new(ErrorCode::Denied, msg));
            }
            Some(t) if self.is_learner(&t) => {
                let msg = format!("{t} is a learner; only a voter can take over");
                return Err(Error::new(ErrorCode::Denied, msg));
            }
            Some(t) if !self.is_member(&t) => {
                let msg = format!("{t} is not a member of cluster {}", self.hard.cluster);
                return Err(Error::new(ErrorCode::Denied, msg));
            }
            Some(t) => t,
            None => self
                .best_transfer_target()
                .ok_or_else(|| Error::state("no other voter to hand mastership to"))?,
        };
        let until = now + self.cfg.election_min_ms;
        if let Some(l) = self.leader.as_mut() {
            l.transfer = Some(Handing {
                id,
                target,
                until,
                sent: false,
            });
        }
        self.transfer_progress(now);
        Ok(())
    }

    /// The most caught-up other voter: the highest known commit, then the latest answer, then
    /// the lowest address (so the choice is deterministic).
    fn best_transfer_target(&self) -> Option<String> {
        let l = self.leader.as_ref()?;
        l.peers
            .iter()
            .filter(|(m, _)| self.is_member(m))
            .max_by(|(a, pa), (b, pb)| {
                (pa.matched, pa.last_ack, core::cmp::Reverse(*a)).cmp(&(
                    pb.matched,
                    pb.last_ack,
                    core::cmp::Reverse(*b),
                ))
            })
            .map(|(m, _)| m.clone())
    }

    /// Whether a transfer holds back new proposals.
    pub(super) fn transferring(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.transfer.is_some())
    }

    /// Moves a transfer on: once nothing is in flight, brings the target to our commit, then
    /// tells it to take over. Called whenever the slot, the target's progress or the time moved.
    pub(super) fn transfer_progress(&mut self, now: u64) {
        let commit = self.hard.commit;
        let Some(l) = self.leader.as_ref() else {
            return;
        };
        let Some(h) = l.transfer.as_ref() else {
            return;
        };
        let (target, instance) = (h.target.clone(), l.instance);
        if now >= h.until {
            let ms = self.cfg.election_min_ms;
            let msg =
                format!("transfer to {target} did not complete within {ms} ms; the master resumes");
            return self.abandon_transfer(Error::state(msg));
        }
        if h.sent || l.inflight.is_some() {
            return;
        }
        let Some(p) = l.peers.get(&target) else {
            return self.abandon_transfer(Error::state(format!("{target} left the cluster")));
        };
        if p.matched < commit {
            // Not known to hold the commit yet: an empty accept at commit + 1 (its answer
            // moves us on), unless something is already on its way to it.
            if p.outstanding == 0 && !p.starting {
                self.send_current(target);
            }
            return;
        }
        if let Some(h) = self.leader.as_mut().and_then(|l| l.transfer.as_mut()) {
            h.sent = true;
        }
        let req = Request::TimeoutNow(TimeoutNow {
            instance,
            seq: commit,
            master: Member::new(self.hard.self_addr.clone()),
        });
        self.send(target, req, Pending::TimeoutNow { instance });
    }

    /// The target answered `timeoutnow`: a refusal ends the transfer; a lost call is sent again.
    pub(super) fn on_timeout_now_result(
        &mut self,
        now: u64,
        from: String,
        instance: u64,
        res: Result<Response, Error>,
    ) {
        let Some(h) = self
            .leader
            .as_mut()
            .filter(|l| l.instance == instance)
            .and_then(|l| l.transfer.as_mut())
            .filter(|h| h.target == from)
        else {
            return;
        };
        match res {
            Ok(Response::Fail(f)) if !f.fail && f.err.is_none() => {}
            Ok(r) => {
                let why = r
                    .err()
                    .map_or_else(|| String::from("refused"), |e| e.message.clone());
                self.abandon_transfer(Error::state(format!("{from} refused to take over: {why}")));
            }
            Err(_) => {
                h.sent = false;
                self.transfer_progress(now);
            }
        }
    }

    /// Gives the transfer up: answers its caller with `err` and proposes what queued meanwhile.
    fn abandon_transfer(&mut self, err: Error) {
        let Some(h) = self.leader.as_mut().and_then(|l| l.transfer.take()) else {
            return;
        };
        if let Some(id) = h.id {
            self.reply_err(id, Method::Transfer, err);
        }
        let now = self.now;
        self.try_propose_next(now);
    }

    /// Stepping down (to the target's prepare, or to anyone's higher instance) during a
    /// transfer: wait to see the target lead before answering. Returns the error the waiting
    /// submits get: retryable, naming the target.
    pub(super) fn hand_over(&mut self, now: u64, h: Handing) -> Error {
        let target = h.target.clone();
        self.handover = Some(Handover {
            id: h.id,
            target: target.clone(),
            until: h.until.max(now + self.cfg.heartbeat_ms),
        });
        Error::state(format!("mastership handed over to {target}; retry there"))
            .with_master(Some(target))
    }

    /// A master is known again (an accept from it): answer a transfer waiting for that.
    pub(super) fn handover_saw_master(&mut self, instance: u64) {
        let Some(h) = self.handover.take() else {
            return;
        };
        let Some(id) = h.id else {
            return;
        };
        match self.master.clone() {
            Some(m) if m == h.target => {
                let answer = FailResult {
                    instance: Some(instance),
                    ..FailResult::ok()
                };
                self.reply(id, Response::Fail(answer));
            }
            m => {
                let msg = format!(
                    "{} took over instead of {}",
                    m.unwrap_or_default(),
                    h.target
                );
                self.reply_err(
                    id,
                    Method::Transfer,
                    Error::state(msg).with_master(self.master.clone()),
                );
            }
        }
    }

    /// The old master gave up waiting for the target to lead.
    pub(super) fn handover_tick(&mut self, now: u64) {
        if self.handover.as_ref().is_none_or(|h| now < h.until) {
            return;
        }
        let Some(h) = self.handover.take() else {
            return;
        };
        if let Some(id) = h.id {
            let msg = format!(
                "{} did not take over in time; an election follows",
                h.target
            );
            self.reply_err(id, Method::Transfer, Error::state(msg));
        }
    }

    pub(super) fn handover_deadline(&self) -> Option<u64> {
        self.handover.as_ref().map(|h| h.until)
    }

    /// `timeoutnow` at the target: campaign at once, if this node is a voter holding the
    /// master's commit.
    pub(super) fn on_timeout_now(&mut self, now: u64, id: RequestId, r: TimeoutNow) {
        let refuse = match self.role {
            Role::Unjoined | Role::Removed => Some(super::not_member_error(self.role)),
            Role::Learner => Some(Error::state("a learner does not campaign")),
            Role::Master => Some(Error::state("already master")),
            Role::Participant | Role::Candidate => None,
        };
        let refuse = refuse.or_else(|| {
            let p = self.hard.promised;
            (r.instance < p)
                .then(|| Error::denied(format!("promised instance {p}")).with_instance(p))
        });
        let commit = self.hard.commit;
        let refuse = refuse.or_else(|| {
            (commit < r.seq).then(|| {
                Error::new(
                    ErrorCode::Gap,
                    format!("commit {commit} is behind {}", r.seq),
                )
                .with_commit(commit)
            })
        });
        if let Some(e) = refuse {
            return self.reply_err(id, Method::TimeoutNow, e);
        }
        self.campaign_with(now, true);
        if self.mutant(crate::Mutant::TransferCountsMastersVote) {
            // The bug: the hand-over is no promise; the old master has not voted yet.
            if let Some(c) = self.campaign.as_mut() {
                c.votes.insert(r.master.addr.clone(), None);
            }
        }
        self.reply(id, Response::Fail(FailResult::ok()));
    }
}
