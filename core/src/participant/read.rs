//! Consistent reads (read index, no clock assumptions): the master answers a read only after a
//! majority confirmed, with messages sent after the read arrived, that it is still master; the
//! read index is its commit when the read arrived, and the node that serves the read waits until
//! it has applied that index. A follower asks its master for the index (`readindex`) and reads
//! its own state once it caught up.

use alloc::vec::Vec;

use super::{majority, Participant, Role};
use crate::error::{Error, ErrorCode};
use crate::output::RequestId;
use crate::wire::{FailResult, Method, ReadIndex, Request, Response};
use crate::StateMachine;

/// A read waiting for this node to apply its index.
#[derive(Clone, Debug)]
pub(super) struct LocalRead {
    pub id: RequestId,
    pub index: u64,
    pub deadline: u64,
}

/// A read waiting at the master for a confirmation round.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    pub id: RequestId,
    pub index: u64,
    /// The first round whose messages were all sent after the read arrived.
    pub round: u64,
}

impl<S: StateMachine> Participant<S> {
    pub(super) fn on_read_index(&mut self, now: u64, id: RequestId, r: ReadIndex) {
        if self.role == Role::Master {
            let commit = self.hard.commit;
            let Some(l) = self.leader.as_mut() else {
                return;
            };
            if l.recovering {
                let e = Error::state("the master has not confirmed its mastership yet");
                return self.reply_err(id, Method::ReadIndex, e);
            }
            // Messages of the round now open may have left before this read arrived: it
            // needs the next one.
            let round = l.read_round + 1;
            l.reads.push(PendingRead {
                id,
                index: commit,
                round,
            });
            return self.check_reads(now);
        }
        self.forward_or_refuse(
            id,
            Request::ReadIndex(ReadIndex { forwarded: true }),
            r.forwarded,
        );
    }

    /// The highest round a majority (us included) has answered.
    fn read_round_confirmed(&self) -> u64 {
        let Some(l) = self.leader.as_ref() else {
            return 0;
        };
        let need = majority(self.hard.members.len());
        let me = usize::from(self.is_member(&self.hard.self_addr));
        if me >= need {
            return l.read_round;
        }
        let mut acked: Vec<u64> = l
            .peers
            .iter()
            .filter(|(m, _)| self.is_member(m))
            .map(|(_, p)| p.read_acked)
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked.get(need - me - 1).copied().unwrap_or(0)
    }

    /// Answers the reads whose round a majority confirmed; once the open round is confirmed
    /// and reads wait for a later one, starts it (every follower gets a message tagged with it).
    pub(super) fn check_reads(&mut self, now: u64) {
        let confirmed = self.read_round_confirmed();
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let mut done = Vec::new();
        l.reads.retain(|r| {
            if r.round <= confirmed {
                done.push(r.clone());
                false
            } else {
                true
            }
        });
        let next = !l.reads.is_empty() && confirmed >= l.read_round;
        if next {
            l.read_round += 1;
        }
        for r in done {
            self.reply_read(r.id, r.index);
        }
        if next {
            self.broadcast(now);
            // A cluster of one confirms its own rounds.
            if self.read_round_confirmed() >= self.leader.as_ref().map_or(0, |l| l.read_round) {
                self.check_reads(now);
            }
        }
    }

    fn reply_read(&mut self, id: RequestId, index: u64) {
        let mut f = FailResult::ok();
        f.seq = Some(index);
        self.reply(id, Response::Fail(f));
    }

    /// The master's answer to a read this follower forwarded.
    pub(super) fn on_forward_read_result(
        &mut self,
        now: u64,
        req: RequestId,
        res: Result<Response, Error>,
    ) {
        match res {
            Ok(Response::Fail(f)) if !f.fail && f.err.is_none() && f.seq.is_some() => {
                self.forward_failures = 0;
                let index = f.seq.unwrap_or(0);
                let deadline = now + self.cfg.election_max_ms;
                self.local_reads.push(LocalRead {
                    id: req,
                    index,
                    deadline,
                });
                self.release_local_reads(now);
            }
            Ok(Response::Fail(f)) => self.reply(req, Response::Fail(f)),
            Ok(_) => {
                let e = Error::new(ErrorCode::Call, "the master answered with the wrong shape");
                self.reply_err(req, Method::ReadIndex, e);
            }
            Err(e) => {
                let e = Error::state(alloc::format!("master unreachable: {e}"));
                self.reply_err(req, Method::ReadIndex, e);
            }
        }
    }

    /// Serves the reads this node has caught up for; fails those that waited too long.
    pub(super) fn release_local_reads(&mut self, now: u64) {
        if self.local_reads.is_empty() {
            return;
        }
        let commit = self.hard.commit;
        let mut ready = Vec::new();
        let mut expired = Vec::new();
        self.local_reads.retain(|r| {
            if r.index <= commit {
                ready.push(r.clone());
                false
            } else if now >= r.deadline {
                expired.push(r.id);
                false
            } else {
                true
            }
        });
        for r in ready {
            self.reply_read(r.id, r.index);
        }
        for id in expired {
            let e = Error::state("timed out catching up to the read index");
            self.reply_err(id, Method::ReadIndex, e);
        }
    }

    pub(super) fn local_read_deadline(&self) -> Option<u64> {
        self.local_reads.iter().map(|r| r.deadline).min()
    }
}
