//! start at a node (docs/PROTOCOL.md section 3, "start(I, S, cluster, self, master, participants,
//! snap) at node N"): joining, catching up, and learning of a removal.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Participant, Role};
use crate::error::{Error, ErrorCode};
use crate::output::{Event, RequestId, Snapshot, Status};
use crate::wire::{FailResult, Learner, Method, Response, Start};
use crate::StateMachine;

impl<S: StateMachine> Participant<S> {
    pub(super) fn on_start(&mut self, now: u64, id: RequestId, s: Start) {
        let refuse = |this: &mut Self, e: Error| this.reply_err(id, Method::Start, e);
        if s.cluster != self.hard.cluster {
            let e = Error::denied(format!("this node serves cluster {}", self.hard.cluster));
            return refuse(self, e);
        }
        let me = s.self_.addr.clone();
        // `participants` lists every member; the extension says which of them are learners.
        let mut learners: Vec<Learner> = s
            .learners
            .iter()
            .filter(|l| s.participants.iter().any(|m| m.addr == l.addr))
            .cloned()
            .collect();
        learners.sort();
        learners.dedup_by(|a, b| a.addr == b.addr);
        let mut members: Vec<String> = s
            .participants
            .iter()
            .map(|m| m.addr.clone())
            .filter(|a| !learners.iter().any(|l| l.addr == *a))
            .collect();
        members.sort();
        members.dedup();
        let includes = members.contains(&me) || learners.iter().any(|l| l.addr == me);
        match self.role {
            Role::Removed if !includes => {
                return refuse(self, Error::state("this node was removed from the cluster"))
            }
            Role::Unjoined if !includes => {
                return refuse(self, Error::denied("the start does not include this node"))
            }
            _ => {}
        }
        let (commit, promised) = (self.hard.commit, self.hard.promised);
        if s.seq < commit {
            let e = Error::new(
                ErrorCode::Sequence,
                format!(
                    "snapshot {}/{} is older than {promised}/{commit}",
                    s.instance, s.seq
                ),
            );
            return refuse(self, e);
        }
        // Committed state is the same everywhere: a newer one is installed whatever its
        // instance. At the same commit only a start of our instance or above is adopted (it
        // may come after an accept the master counted: the staged slot stays).
        let install = s.seq > commit || self.role == Role::Unjoined;
        if !install && s.instance < promised {
            let e = Error::state(format!("promised instance {promised}")).with_instance(promised);
            return refuse(self, e);
        }
        if install {
            match crate::restore_from(&self.app, s.snap.as_bytes()) {
                Ok(app) => self.app = app,
                Err(e) => return refuse(self, Error::encoding(e)),
            }
            if self.role == Role::Master {
                self.step_down(now, Error::state("a newer commit exists elsewhere"));
            }
            if self.role == Role::Candidate {
                self.stand_down(now);
            }
            self.hard.commit = s.seq;
            self.hard.staged = None;
            self.pending_entries.clear();
            self.pending_snapshot = Some(Snapshot {
                seq: s.seq,
                data: s.snap,
            });
            self.commits_since_snapshot = 0;
            self.dirty = true;
            self.event(Event::SnapshotInstalled { seq: s.seq });
        }
        if install || members != self.hard.members || learners != self.hard.learners {
            let changed = members != self.hard.members || learners != self.hard.learners;
            let v = s.version.unwrap_or(if changed {
                s.seq
            } else {
                self.hard.members_version
            });
            self.hard.members = members;
            self.hard.learners = learners;
            self.hard.members_version = v;
            self.dirty = true;
            self.event(Event::MembersChanged {
                members: self.hard.members.clone(),
                learners: self.hard.learners.clone(),
                version: v,
            });
        }
        if self.hard.self_addr != me {
            self.hard.self_addr = me.clone();
            self.dirty = true;
        }
        let master = s.master.addr;
        if s.instance >= self.hard.promised && master != me && self.is_member(&master) {
            self.promise(now, s.instance, Some(master.clone()));
            self.master = Some(master);
            self.last_heard = Some(now);
        }
        if !includes {
            self.become_removed();
        } else if self.hard.status != Status::Joined {
            self.hard.status = Status::Joined;
            self.dirty = true;
            self.role = self.follower_role();
            self.joining = None;
            self.event(Event::Joined);
        } else if matches!(self.role, Role::Participant | Role::Learner) {
            self.role = self.follower_role();
        }
        if self.role == Role::Participant {
            self.reset_election_timer(now);
        }
        self.reply(id, Response::Fail(FailResult::ok()));
    }
}
