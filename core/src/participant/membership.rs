//! Membership (docs/PROTOCOL.md section 3, "Membership"): admin calls to add or remove a member,
//! and how removed nodes pass on what they know.

use alloc::string::String;

use super::{Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{AdminMember, Learner, Method, Payload, Request, Response};
use crate::StateMachine;

use super::master::AdminOp;

impl<S: StateMachine> Participant<S> {
    /// `members/add`, `members/remove` or `members/promote`: queued at the master (one change
    /// at a time, each a slot of its own), forwarded by a follower. An add is a learner unless
    /// the call asks for a voter (docs/PROTOCOL.md section 8).
    pub(super) fn on_admin(&mut self, now: u64, id: RequestId, method: Method, r: AdminMember) {
        let addr = r.addr.clone();
        if addr.is_empty() || addr.ends_with('/') || addr.contains(char::is_whitespace) {
            let e = Error::encoding("a member address is an HTTP base URL without trailing slash");
            return self.reply_err(id, method, e);
        }
        if self.role == Role::Master {
            let payload = match method {
                Method::MembersRemove => Payload::Rm(addr),
                Method::MembersAdd if !r.voter => Payload::Learner(Learner {
                    addr,
                    promote: r.promote,
                }),
                _ => Payload::Add(addr),
            };
            if let Some(l) = self.leader.as_mut() {
                l.admin.push_back(AdminOp {
                    id: Some(id),
                    method,
                    payload,
                    version: r.version,
                });
            }
            return self.try_propose_next(now);
        }
        let body = AdminMember {
            forwarded: true,
            ..r.clone()
        };
        let req = match method {
            Method::MembersAdd => Request::MembersAdd(body),
            Method::MembersPromote => Request::MembersPromote(body),
            _ => Request::MembersRemove(body),
        };
        self.forward_or_refuse(id, req, r.forwarded);
    }

    /// Pushes our committed state to `to` as a `start` that names no usable master: `to` is
    /// behind, and our state tells it what it missed (its own removal, or a removal that lets
    /// it win an election).
    pub(super) fn push_snapshot(&mut self, to: String) {
        let req = Request::Start(self.start_for(&to, self.hard.self_addr.clone()));
        self.send(to, req, Pending::Notice);
    }

    /// A one-shot notice was answered: a gap means the receiver is behind; give it our state.
    pub(super) fn on_notice_result(
        &mut self,
        _now: u64,
        from: String,
        res: Result<Response, Error>,
    ) {
        let gap = matches!(&res, Ok(r) if r.err().is_some_and(|e| e.code == ErrorCode::Gap));
        match &res {
            // Accepted the commit after its removal, installed our state, or refused for
            // another reason (it knows better): it needs no more notices.
            Ok(_) if !gap => {
                self.removal_notices.remove(&from);
            }
            // A gap gets our state (below, again a notice in flight); a failed call is tried
            // again at the next heartbeat.
            _ => {
                if let Some((_, inflight)) = self.removal_notices.get_mut(&from) {
                    *inflight = gap;
                }
            }
        }
        if gap {
            self.push_snapshot(from);
        }
    }
}
