//! submit at a node (docs/PROTOCOL.md section 3, "submit(changes) at node N"): the master queues,
//! a follower forwards once, everyone else refuses.

use alloc::format;

use super::{Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{FailResult, Method, Request, Response, Submit};
use crate::StateMachine;

impl<S: StateMachine> Participant<S> {
    pub(super) fn on_submit(&mut self, now: u64, id: RequestId, r: Submit) {
        // Nothing malformed enters the log.
        for (i, c) in r.chg.iter().enumerate() {
            if let Err(e) = self.app.validate(c) {
                let e = Error::encoding(format!("change {i}: {e}"));
                return self.reply_err(id, Method::Submit, e);
            }
        }
        if r.chg.is_empty() {
            return self.reply(id, Response::Fail(FailResult::ok()));
        }
        if self.role == Role::Master {
            let max = self.cfg.max_queued;
            let Some(l) = self.leader.as_mut() else {
                return;
            };
            if l.queued_changes + r.chg.len() > max {
                let e = Error::state(format!("overloaded: {} changes queued", l.queued_changes));
                return self.reply_err(id, Method::Submit, e);
            }
            l.queued_changes += r.chg.len();
            l.queue.push_back((id, r.chg));
            return self.try_propose_next(now);
        }
        let req = Request::Submit(Submit {
            chg: r.chg,
            forwarded: true,
        });
        self.forward_or_refuse(id, req, r.forwarded);
    }

    /// A follower forwards a client call to its master, once; anyone else refuses it.
    pub(super) fn forward_or_refuse(&mut self, id: RequestId, req: Request, forwarded: bool) {
        let method = req.method();
        match (&self.master, self.role) {
            (Some(m), Role::Participant | Role::Learner) if !forwarded => {
                let m = m.clone();
                let pending = if method == Method::ReadIndex {
                    Pending::ForwardRead { req: id }
                } else {
                    Pending::Forward { req: id }
                };
                // A forward depends on nothing this node writes: it goes ahead of any write in
                // progress (a follower stages an accept every round trip under load).
                self.send_early(m, req, pending);
            }
            _ => {
                let e = match self.role {
                    Role::Unjoined | Role::Removed => super::not_member_error(self.role),
                    Role::Candidate => Error::state("an election is in progress"),
                    _ if self.master.is_none() => Error::state("no master known"),
                    _ => Error::state("not master"),
                };
                self.reply_err(id, method, e.with_master(self.master.clone()));
            }
        }
    }

    pub(super) fn on_forward_result(
        &mut self,
        now: u64,
        req: RequestId,
        res: Result<Response, Error>,
    ) {
        match res {
            Ok(Response::Fail(f)) => {
                self.forward_failures = 0;
                // The master's answer, relayed: it depends on no write of this node.
                self.reply_early(req, Response::Fail(f));
            }
            Ok(_) => {
                let e = Error::new(ErrorCode::Call, "the master answered with the wrong shape");
                self.reply_err(req, Method::Submit, e);
            }
            Err(e) => {
                // The master cannot be reached: the outcome is unknown (it may have got it).
                let msg = format!("master unreachable: {e}");
                self.reply_err(req, Method::Submit, Error::state(msg));
                self.forward_failures += 1;
                if self.role == Role::Participant
                    && self.forward_failures >= self.cfg.forward_failures_before_election
                {
                    self.campaign(now);
                }
            }
        }
    }
}
