//! accept, addmember and rmmember at a follower (docs/PROTOCOL.md section 3, "accept(I, S, payload)
//! at follower F").

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{not_member_error, Participant, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{AcceptResult, CommittedEntry, FailResult, Method, Payload, Response, Staged};
use crate::StateMachine;

impl<S: StateMachine> Participant<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_accept(
        &mut self,
        now: u64,
        id: RequestId,
        method: Method,
        (instance, seq): (u64, u64),
        payload: Payload,
        master: Option<String>,
        entries: Vec<CommittedEntry>,
    ) {
        // 1. Unjoined / removed; a lower instance; a higher one is promised on the spot.
        if matches!(self.role, Role::Unjoined | Role::Removed) {
            return self.reply_err(id, method, not_member_error(self.role));
        }
        let p = self.hard.promised;
        if instance < p {
            let e = Error::denied(format!("promised instance {p}")).with_instance(p);
            return self.reply_err(id, method, e);
        }
        let me = self.hard.self_addr.clone();
        let mine = self.hard.promised_master.as_deref() == Some(me.as_str());
        if instance == p && mine && self.role == Role::Master {
            // Only we propose in our own instance; a second proposer is a bug or an attack.
            let e = Error::denied(format!("instance {p} is ours")).with_instance(p);
            return self.reply_err(id, method, e);
        }
        let sender = master.filter(|m| *m != me);
        let other = sender.is_some() && sender != self.hard.promised_master;
        if instance > p || self.hard.promised_master.is_none() || other {
            // A higher instance; or, in the instance we promised to another candidate (or to
            // ourselves), the one that won it: voters promise one candidate per instance, so
            // the sender had a majority and the one we promised cannot get one. Follow it.
            self.promise(now, instance, sender);
        }
        self.master = self.hard.promised_master.clone();
        if self.master.is_some() && self.handover.is_some() {
            self.handover_saw_master(instance);
        }
        self.last_heard = Some(now);
        self.behind_until = None;
        self.forward_failures = 0;
        self.reset_election_timer(now);
        if self.master.is_none() {
            // The seed's accept does not name its sender: ask for a start, which does.
            return self.reply_err(id, method, Error::state("master unknown; send start"));
        }
        // The master proposes at its commit + 1 (heartbeats too): what a follower is behind by.
        self.heard_commit = self.heard_commit.max(seq.saturating_sub(1));
        // 1a. A catch-up batch (docs/PROTOCOL.md section 12): entries the master committed,
        //     before `seq`. Each is the chosen value at its seq, so committing it is what this
        //     node would do on the accepts that carried it one by one. Those at or below our
        //     commit are already applied (a duplicated or overlapping batch); one past
        //     `commit + 1` leaves a gap, refused below like any accept beyond `commit + 1`.
        //     The answer goes out only after these commits are durable (`reply` waits for the
        //     Persist that carries them), like every accept's answer.
        let reapply = self.mutant(crate::Mutant::BatchReapplies);
        for e in entries {
            let commit = self.hard.commit;
            if e.seq >= seq {
                // The accept at `seq` says only that `seq - 1` is committed.
                break;
            }
            if e.seq <= commit && !reapply {
                continue;
            }
            if e.seq > commit + 1 {
                break;
            }
            self.commit_entry(now, e.seq, e.payload, false);
            if self.role == Role::Removed {
                return self.reply_err(id, method, not_member_error(Role::Removed));
            }
        }
        // 2. Already committed here: the value at that seq is the chosen one.
        let commit = self.hard.commit;
        if seq <= commit {
            return self.reply_accepted(id, method);
        }
        // 3. The slot we staged in this instance at commit + 1 is committed: the master only
        //    proposes the next seq once it is.
        if seq == commit + 2 {
            if let Some(s) = self
                .hard
                .staged
                .clone()
                .filter(|s| s.seq == commit + 1 && s.instance == instance)
            {
                self.commit_entry(now, s.seq, s.payload, false);
                if self.role == Role::Removed {
                    return self.reply_err(id, method, not_member_error(Role::Removed));
                }
            }
        }
        let commit = self.hard.commit;
        if seq > commit + 1 {
            let e = Error::new(
                ErrorCode::Gap,
                format!("received seq {seq}, commit is {commit}"),
            )
            .with_commit(commit);
            return self.reply_err(id, method, e);
        }
        // 4. seq == commit + 1. An empty payload stages nothing and clears nothing (traps A, B).
        if !payload.is_empty() {
            let s = Staged {
                instance,
                seq,
                payload,
            };
            if self.hard.staged.as_ref() != Some(&s) {
                self.hard.staged = Some(s);
                self.dirty = true;
            }
        }
        self.reply_accepted(id, method)
    }

    fn reply_accepted(&mut self, id: RequestId, method: Method) {
        let r = match method {
            Method::Accept => Response::Accept(AcceptResult {
                accepted: true,
                err: None,
                instance: None,
                seq: None,
                entries: false,
            }),
            _ => Response::Fail(FailResult::ok()),
        };
        if self.mutant(crate::Mutant::AcceptBeforeDurable) {
            return self.reply_early(id, r);
        }
        self.reply(id, r);
    }
}
