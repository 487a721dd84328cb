//! Membership (docs/PROTOCOL.md section 3, "Membership"): admin calls to add or remove a member,
//! and how removed nodes pass on what they know.

use alloc::string::String;

use super::{Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{AdminMember, Method, Payload, Request, Response};
use crate::StateMachine;

use super::master::AdminOp;

impl<S: StateMachine> Participant<S> {
    /// `members/add` or `members/remove`: queued at the master (one change at a time, each a
    /// slot of its own), forwarded by a follower.
    pub(super) fn on_admin(
        &mut self,
        now: u64,
        id: RequestId,
        payload: Payload,
        version: Option<u64>,
        forwarded: bool,
    ) {
        let addr = match &payload {
            Payload::Add(a) | Payload::Rm(a) => a.clone(),
            Payload::Changes(_) => return,
        };
        let method = if matches!(payload, Payload::Add(_)) {
            Method::MembersAdd
        } else {
            Method::MembersRemove
        };
        if addr.is_empty() || addr.ends_with('/') || addr.contains(char::is_whitespace) {
            let e = Error::encoding("a member address is an HTTP base URL without trailing slash");
            return self.reply_err(id, method, e);
        }
        if self.role == Role::Master {
            if let Some(l) = self.leader.as_mut() {
                l.admin.push_back(AdminOp {
                    id,
                    payload,
                    version,
                });
            }
            return self.try_propose_next(now);
        }
        let body = AdminMember {
            addr,
            version,
            forwarded: true,
        };
        let req = match method {
            Method::MembersAdd => Request::MembersAdd(body),
            _ => Request::MembersRemove(body),
        };
        self.forward_or_refuse(id, req, forwarded);
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
        if gap {
            self.push_snapshot(from);
        }
    }
}
