//! Elections at a candidate (docs/PROTOCOL.md section 3, "Election at candidate C"), and the
//! recovery of the staged slot by the winner.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use super::{majority, Durable, Participant, Pending, Role};
use crate::error::{Error, ErrorCode};
use crate::output::{Event, Status};
use crate::wire::{Member, Payload, Prepare, Request, Response, Staged};
use crate::StateMachine;

/// A candidate's election at one instance.
#[derive(Clone, Debug)]
pub(super) struct Campaign {
    pub instance: u64,
    /// Its own promise is durable.
    pub self_vote: bool,
    /// Voters and the staged slot each reported.
    pub votes: BTreeMap<String, Option<Staged>>,
    pub refused: BTreeSet<String>,
    /// Members with a prepare (or a start) outstanding.
    pub waiting: BTreeSet<String>,
    /// Unjoined members this candidate already sent a `start`.
    pub started: BTreeSet<String>,
    pub next_retry: u64,
    /// Campaigning on a master's hand-over (`timeoutnow`): the prepares say so.
    pub transfer: bool,
}

impl<S: StateMachine> Participant<S> {
    /// Starts an election at an instance above every one seen (rule 1).
    pub(super) fn campaign(&mut self, now: u64) {
        self.campaign_with(now, false)
    }

    /// Starts an election; `transfer`: on the master's hand-over (see [`super::transfer`]).
    pub(super) fn campaign_with(&mut self, now: u64, transfer: bool) {
        if self.hard.status != Status::Joined || !self.is_member(&self.hard.self_addr.clone()) {
            return;
        }
        let instance = self.max_seen.max(self.hard.promised) + 1;
        let me = self.hard.self_addr.clone();
        self.promise(now, instance, Some(me));
        self.role = Role::Candidate;
        self.master = None;
        self.forward_failures = 0;
        self.on_durable(Durable::SelfPromise { instance });
        self.reset_election_timer(now);
        self.campaign = Some(Campaign {
            instance,
            self_vote: false,
            votes: BTreeMap::new(),
            refused: BTreeSet::new(),
            waiting: BTreeSet::new(),
            started: BTreeSet::new(),
            next_retry: now + self.cfg.heartbeat_ms,
            transfer,
        });
        for peer in self.others() {
            self.send_prepare(peer);
        }
    }

    fn send_prepare(&mut self, to: String) {
        let Some(c) = self.campaign.as_mut() else {
            return;
        };
        c.waiting.insert(to.clone());
        let (instance, transfer) = (c.instance, c.transfer);
        let req = Request::Prepare(Prepare {
            instance,
            master: Member::new(self.hard.self_addr.clone()),
            seq: Some(self.hard.commit),
            transfer,
        });
        self.send(to, req, Pending::Prepare { instance });
    }

    pub(super) fn on_self_promise_durable(&mut self, now: u64, instance: u64) {
        if self.role != Role::Candidate {
            return;
        }
        if let Some(c) = self.campaign.as_mut().filter(|c| c.instance == instance) {
            c.self_vote = true;
            self.check_won(now);
        }
    }

    pub(super) fn on_prepare_result(
        &mut self,
        now: u64,
        from: String,
        instance: u64,
        res: Result<Response, Error>,
    ) {
        if self.role != Role::Candidate {
            return;
        }
        let commit = self.hard.commit;
        let n = self.hard.members.len();
        let Some(c) = self.campaign.as_mut().filter(|c| c.instance == instance) else {
            return;
        };
        c.waiting.remove(&from);
        let Ok(Response::Prepare(p)) = res else {
            return; // unreachable: asked again at the next retry
        };
        match p.err {
            None if p.accepted_instance == instance => {
                c.votes.insert(from, p.staged);
                self.check_won(now);
            }
            None => {}
            Some(_) if p.accepted_instance > instance => {
                // A higher promise: stand down; the next election goes above it (rule 2).
                self.stand_down(now);
            }
            // Not collapsed into the guard: an insert is no condition, and a second ERR_STATE
            // from the same member must not fall through to the arms below.
            #[allow(clippy::collapsible_match)]
            Some(e) if e.code == ErrorCode::State => {
                // Unjoined (its `start` was lost with the master that added it, trap F):
                // start it with our committed state, then ask again. A removed node refuses
                // the start and pushes its own state to us instead.
                if c.started.insert(from.clone()) {
                    c.waiting.insert(from.clone());
                    self.send_start(from, true);
                }
            }
            Some(_) if p.seq.unwrap_or(0) > commit => {
                // We are behind (stale candidate, or removed): we cannot win.
                self.note_behind(now);
                self.stand_down(now);
            }
            Some(_) => {
                c.refused.insert(from);
                if c.refused.len() > n - majority(n) {
                    self.stand_down(now);
                }
            }
        }
    }

    /// Gives up the current campaign; a new one starts after a fresh random timeout.
    pub(super) fn stand_down(&mut self, now: u64) {
        self.campaign = None;
        if self.role == Role::Candidate {
            self.role = Role::Participant;
        }
        self.reset_election_timer(now);
    }

    pub(super) fn candidate_tick(&mut self, now: u64) {
        if self.election_deadline.is_some_and(|d| now >= d) {
            return self.campaign(now);
        }
        let Some(c) = self.campaign.as_mut() else {
            return;
        };
        if now < c.next_retry {
            return;
        }
        c.next_retry = now + self.cfg.heartbeat_ms;
        let others = self.others();
        let Some(c) = self.campaign.as_ref() else {
            return;
        };
        let again: Vec<String> = others
            .into_iter()
            .filter(|m| {
                !c.votes.contains_key(m) && !c.refused.contains(m) && !c.waiting.contains(m)
            })
            .collect();
        for m in again {
            self.send_prepare(m);
        }
    }

    /// Called after a start we sent as candidate was answered.
    pub(super) fn after_campaign_start(&mut self, from: String, instance: u64, ok: bool) {
        let Some(c) = self.campaign.as_mut().filter(|c| c.instance == instance) else {
            return;
        };
        c.waiting.remove(&from);
        if ok && self.role == Role::Candidate {
            self.send_prepare(from);
        }
    }

    fn check_won(&mut self, now: u64) {
        let Some(c) = self.campaign.as_ref() else {
            return;
        };
        let votes = c.votes.len() + usize::from(c.self_vote);
        if votes < majority(self.hard.members.len()) {
            return;
        }
        let c = self.campaign.take().expect("checked above");
        // Recovery (rule 3): the staged slot at commit + 1 with the highest instance among the
        // votes, our own included. None found: an empty accept that only confirms mastership.
        let next = self.hard.commit + 1;
        let own = self.hard.staged.clone();
        let recovered = c
            .votes
            .into_values()
            .flatten()
            .chain(own)
            .filter(|s| s.seq == next)
            .max_by_key(|s| s.instance)
            .map(|s| s.payload)
            .unwrap_or(Payload::Changes(Default::default()));
        self.role = Role::Master;
        self.master = Some(self.hard.self_addr.clone());
        self.election_deadline = None;
        self.event(Event::BecameMaster {
            instance: c.instance,
        });
        self.lead(now, c.instance, recovered);
    }
}
