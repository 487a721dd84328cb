//! prepare at a voter (docs/PROTOCOL.md section 3, "prepare(I, master M, seq Sc) at voter V").

use alloc::format;

use super::{not_member_error, Participant, Role};
use crate::error::Error;
use crate::output::RequestId;
use crate::wire::{Prepare, PrepareResult, Response};
use crate::StateMachine;

impl<S: StateMachine> Participant<S> {
    pub(super) fn on_prepare(&mut self, now: u64, id: RequestId, r: Prepare) {
        let cand = r.master.addr;
        let sc = r.seq.unwrap_or(0);
        let commit = self.hard.commit;
        if sc > commit {
            self.note_behind(now);
        }
        // 1. Unjoined or removed. A removed node pushes its committed state to a candidate of
        //    its last member list that is behind it: that candidate may still count this node
        //    in its quorum and could never win without learning of the removal (trap D).
        if matches!(self.role, Role::Unjoined | Role::Removed) {
            if self.role == Role::Removed && self.is_member(&cand) && sc < commit {
                self.push_snapshot(cand);
            }
            return self.refuse_prepare(id, not_member_error(self.role));
        }
        // 2. Not a member: refuse with our commit. If the candidate is behind us, its removal
        //    has committed (it was a member at its commit, it is not at ours): tell it with our
        //    committed state, so it stops campaigning (trap G).
        if !self.is_member(&cand) {
            if sc < commit {
                self.push_snapshot(cand.clone());
            }
            return self.refuse_prepare(id, Error::denied(format!("{cand} is not a member")));
        }
        // 3. A higher promise, or the same instance promised to another candidate.
        let p = self.hard.promised;
        let repeat = r.instance == p && self.hard.promised_master.as_deref() == Some(cand.as_str());
        if r.instance < p || (r.instance == p && !repeat) {
            return self.refuse_prepare(id, Error::denied(format!("promised instance {p}")));
        }
        // 4. A stale candidate would lose committed changes. A transfer's candidate is no
        //    exception: the old master caught it up, but it may have resumed since (the
        //    transfer abandoned) while the candidate's prepares were still on their way.
        if sc < commit {
            return self.refuse_prepare(
                id,
                Error::denied(format!("candidate commit {sc} is behind {commit}")),
            );
        }
        // 5. A live master: a node that can send but not receive must not depose it (trap I).
        //    Unless that master handed its mastership to the candidate (`timeoutnow`, which the
        //    candidate could only get by receiving): this rule serves liveness, not safety.
        if !repeat && !r.transfer && self.hears_live_master(now) {
            let m = self.master.clone().unwrap_or_default();
            return self.refuse_prepare(id, Error::denied(format!("master {m} is alive")));
        }
        // 6. Promise.
        if r.instance > p {
            self.master = None;
        }
        self.promise(now, r.instance, Some(cand));
        if self.role == Role::Participant {
            self.reset_election_timer(now);
        }
        let vote = PrepareResult {
            accepted_instance: r.instance,
            err: None,
            seq: Some(commit),
            staged: self.hard.staged.clone(),
        };
        if self.mutant(crate::Mutant::VoteBeforeDurable) {
            return self.reply_early(id, Response::Prepare(vote));
        }
        self.reply(id, Response::Prepare(vote));
    }

    /// Whether this node is master, or heard from its master within the minimum election
    /// timeout.
    pub(super) fn hears_live_master(&self, now: u64) -> bool {
        self.role == Role::Master
            || self
                .last_heard
                .is_some_and(|t| now.saturating_sub(t) < self.cfg.election_min_ms)
    }

    fn refuse_prepare(&mut self, id: RequestId, err: Error) {
        let r = PrepareResult {
            accepted_instance: self.hard.promised,
            err: Some(err),
            seq: Some(self.hard.commit),
            staged: None,
        };
        self.reply(id, Response::Prepare(r));
    }
}
