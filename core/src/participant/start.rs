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
    pub(super) fn on_start(&mut self, now: u64, id: RequestId, mut s: Start) {
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
        // A chunk of a chunked transfer: taken into the sink; only the last one, verified,
        // goes on to install the state.
        let mut snap = None;
        let mut held = None;
        if s.is_chunk() {
            match self.take_chunk(&s) {
                Err((e, at)) => {
                    let r = FailResult {
                        offset: Some(at),
                        ..FailResult::error(e)
                    };
                    return self.reply(id, Response::Fail(r));
                }
                Ok(None) => {
                    let at = self.incoming.as_ref().map_or(0, |i| i.held);
                    if install && self.mutant(crate::Mutant::InstallBeforeLastChunk) {
                        // The deliberate bug: the new commit before the new state.
                        self.install(now, s.seq, None, String::new());
                    }
                    self.heard_from_master(now, &s);
                    let r = FailResult {
                        offset: Some(at),
                        ..FailResult::ok()
                    };
                    return self.reply(id, Response::Fail(r));
                }
                Ok(Some((app, total))) => {
                    snap = Some(app);
                    held = Some(total);
                }
            }
        } else {
            // The seed's whole snapshot supersedes any partial one.
            self.incoming = None;
        }
        if install {
            let app = match snap {
                Some(app) => app,
                None => match crate::restore_from(&self.app, s.snap.as_bytes()) {
                    Ok(app) => app,
                    Err(e) => return refuse(self, Error::encoding(e)),
                },
            };
            // What the host stores: the text as it came, or (chunked: the receiver never
            // held it whole) the new state written out once, complete.
            let text = match held {
                Some(_) => crate::snapshot_to_string(app.snapshot()).unwrap_or_default(),
                None => core::mem::take(&mut s.snap),
            };
            self.install(now, s.seq, Some(app), text);
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
        let r = FailResult {
            offset: held,
            ..FailResult::ok()
        };
        self.reply(id, Response::Fail(r));
    }

    /// Takes the state at commit `seq` (`app`: `None` keeps the current one, which only the
    /// deliberate bug `InstallBeforeLastChunk` does), to be stored as `text`.
    fn install(&mut self, now: u64, seq: u64, app: Option<S>, text: String) {
        if let Some(app) = app {
            self.app = app;
        }
        if self.role == Role::Master {
            self.step_down(now, Error::state("a newer commit exists elsewhere"));
        }
        if self.role == Role::Candidate {
            self.stand_down(now);
        }
        self.hard.commit = seq;
        self.hard.staged = None;
        self.forget_recent();
        self.pending_entries.clear();
        self.state_bytes = text.len() as u64;
        self.pending_snapshot = Some(Snapshot { seq, data: text });
        // An installed snapshot is the stored one: a compaction it contains, or a periodic job
        // not yet saved, is stale.
        self.pending_compact = None;
        self.compacted = seq;
        self.snapshot_due = false;
        self.commits_since_snapshot = 0;
        self.log_bytes_since_snapshot = 0;
        self.dirty = true;
        self.event(Event::SnapshotInstalled { seq });
    }

    /// Feeds one chunk of a chunked `start` into the transfer it belongs to. `Ok(None)`: more
    /// chunks are expected; `Ok(Some((state, size)))`: that was the last, and every byte
    /// arrived and matched the checksum. A chunk at any offset but the one expected is refused
    /// with that offset, never applied; the first chunk (offset 0) of any snapshot starts the
    /// transfer over, dropping a partial one (a newer snapshot supersedes an older transfer,
    /// and a new master starts its own).
    fn take_chunk(&mut self, s: &Start) -> Result<Option<(S, u64)>, super::chunks::Refusal> {
        let offset = s.offset.unwrap_or(0);
        if offset == 0 {
            self.incoming = Some(super::chunks::Incoming::new(s.seq, self.app.restore()));
        }
        let expected = match &self.incoming {
            Some(i) if i.seq == s.seq => i.held,
            _ => 0,
        };
        if offset != expected {
            let e = Error::new(
                ErrorCode::Sequence,
                format!(
                    "snapshot {} chunk at offset {offset}: expected offset {expected}",
                    s.seq
                ),
            );
            return Err((e, expected));
        }
        let Some(inc) = self.incoming.as_mut() else {
            return Err((Error::state("no snapshot transfer"), 0));
        };
        if let Err(e) = inc.write(&s.snap) {
            self.incoming = None;
            return Err((Error::encoding(e), 0));
        }
        if s.more {
            return Ok(None);
        }
        let inc = self.incoming.take().expect("checked above");
        let size = inc.held;
        match inc.finish(s.crc) {
            Ok(app) => Ok(Some((app, size))),
            Err(e) => Err((Error::encoding(e), 0)),
        }
    }

    /// A chunk from the master we follow keeps us from campaigning while the transfer goes
    /// on (its accepts to us pause meanwhile).
    fn heard_from_master(&mut self, now: u64, s: &Start) {
        let master = &s.master.addr;
        if s.instance >= self.hard.promised
            && *master != self.hard.self_addr
            && self.is_member(master)
        {
            // As the last chunk will (and as an accept does): follow the sender.
            self.promise(now, s.instance, Some(master.clone()));
            self.master = Some(master.clone());
            self.last_heard = Some(now);
            if self.role == Role::Participant {
                self.reset_election_timer(now);
            }
        }
    }
}
