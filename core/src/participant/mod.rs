//! The [`Participant`]: one node's view of one cluster, as a state machine the host drives.
//!
//! The protocol rules live in one module per concern: [`prepare`] (voter), [`election`]
//! (candidate), [`accept`] (follower), [`master`] (proposer), [`start`] (snapshots and joining),
//! [`submit`] (client calls and forwarding) and [`membership`] (admin changes, removal).
//! This module holds the state, the output queue with its durability barrier, and the commit
//! step every role shares.

mod accept;
mod chunks;
mod election;
mod master;
mod membership;
mod prepare;
mod read;
mod start;
mod submit;
mod transfer;

#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

use crate::config::{Config, Rng};
use crate::error::{ConfigError, Error, RestoreError};
use crate::output::{
    Entry, Event, HardState, MessageId, Output, Persist, PersistId, Reply, RequestId, Send,
    Snapshot, SnapshotJob, Status, Stored,
};
use crate::wire::{AdminMember, Learner, Method, Payload, Request, Response, Staged};
use crate::StateMachine;

use election::Campaign;
use master::Leadership;

/// What a node is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Waiting for a `start` (or `bootstrap`).
    Unjoined,
    /// A member following a master (or waiting for one).
    Participant,
    /// A member that receives the log and state but does not vote or campaign (it is not
    /// counted in any majority) until it is promoted (docs/PROTOCOL.md section 8).
    Learner,
    /// Campaigning for mastership.
    Candidate,
    /// The master.
    Master,
    /// Knows its removal has committed.
    Removed,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unjoined => "unjoined",
            Role::Participant => "participant",
            Role::Learner => "learner",
            Role::Candidate => "candidate",
            Role::Master => "master",
            Role::Removed => "removed",
        }
    }
}

/// What an outstanding outgoing request was for, so its answer can be interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Prepare {
        instance: u64,
    },
    /// `proposal`: the master's number for the proposal this accept carries (`None` for a
    /// heartbeat). A vote counts for that proposal only: `(instance, seq)` does not identify
    /// one, since a new master's empty confirmation and its first batch share a seq.
    Accept {
        instance: u64,
        proposal: Option<u64>,
        /// The master's read round when it was sent (see [`read`]).
        round: u64,
        /// The seq it proposes at (an accepted answer shows the receiver's commit is at least
        /// one below).
        seq: u64,
    },
    /// `campaign`: sent by a candidate to an unjoined member (then prepare again).
    /// `chunk`: the (snapshot seq, offset) of the chunk it carries, for a chunked transfer.
    Start {
        instance: u64,
        campaign: bool,
        chunk: Option<(u64, u64)>,
    },
    /// A submit or admin call forwarded to the master for the incoming request `req`.
    Forward {
        req: RequestId,
    },
    /// A read forwarded to the master for its read index.
    ForwardRead {
        req: RequestId,
    },
    /// A one-shot notice (a removed member's last accept, a snapshot push): its answer only
    /// matters if it reports a gap.
    Notice,
    /// A committed entry at `seq` re-sent to a follower that is behind (see `catch_up`); with
    /// `batch`, an accept at `seq` carrying the committed entries before it.
    CatchUp {
        instance: u64,
        seq: u64,
        batch: bool,
    },
    /// An unjoined node's request to be added: it waits for the `start` either way.
    Join,
    /// A master's `timeoutnow` to the target of its transfer.
    TimeoutNow {
        instance: u64,
    },
}

/// Work to do once a persist is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Durable {
    /// The candidate's promise to itself at `instance`: its own vote.
    SelfPromise { instance: u64 },
    /// The master's own staged slot: its own accept vote.
    SelfAccept { instance: u64, seq: u64 },
}

/// A node's view of one cluster. See the crate docs for the run loop.
pub struct Participant<S: StateMachine> {
    cfg: Config,
    app: S,
    rng: Rng,
    /// The time of the input being handled (for the deadlines of the sends it makes).
    now: u64,
    /// Durable state (the live copy; a clone goes out with every [`Persist`]).
    hard: HardState,
    role: Role,
    /// The master this node follows (or itself).
    master: Option<String>,
    /// The highest instance seen anywhere (elections go above it).
    max_seen: u64,
    /// When a live master was last heard from (prepare rule 5).
    last_heard: Option<u64>,
    election_deadline: Option<u64>,
    /// This node learned that others are ahead of it (a stale-candidate refusal, or a prepare
    /// from a candidate with a higher commit): it leaves elections to them until then.
    behind_until: Option<u64>,
    /// When each peer last answered successfully.
    contact: BTreeMap<String, u64>,
    /// The highest commit a master's accept showed this node (see [`Participant::known_commit`]).
    heard_commit: u64,
    forward_failures: u32,
    /// Commits since the last periodic snapshot job (or installed snapshot), and the bytes of
    /// their changes.
    commits_since_snapshot: u64,
    log_bytes_since_snapshot: u64,
    /// Nodes whose removal this node committed and that have not yet shown that they know
    /// it, with the notices sent and whether one is in flight. Whoever is master re-sends the
    /// notice every heartbeat (at most `MAX_REMOVAL_NOTICES`): a learner that missed it never
    /// campaigns, so it would never learn of its removal otherwise, also when the master that
    /// removed it is gone. Kept in memory only.
    removal_notices: BTreeMap<String, (u32, bool)>,
    /// The size of the state's last snapshot (saved, installed or restored): a snapshot is due
    /// once the log since it holds as many bytes of changes (`Config::snapshot_every`).
    state_bytes: u64,
    /// A periodic snapshot is due: [`Participant::take_snapshot_job`] hands it out.
    snapshot_due: bool,
    /// The seq of the stored snapshot: the log holds no entry the host needs at or below it.
    /// A saved snapshot at or below it is stale.
    compacted: u64,

    // Output queue and durability barrier.
    /// Each output with whether it may go ahead of a Persist still in progress (it depends on
    /// no write: a master's proposal, the answers to a chosen batch).
    outputs: VecDeque<(Output, bool)>,
    /// How many outputs in `outputs` may go ahead.
    early: usize,
    dirty: bool,
    pending_entries: Vec<Entry>,
    pending_snapshot: Option<Snapshot>,
    /// The next Persist compacts the log up to this seq ([`Participant::snapshot_saved`]).
    pending_compact: Option<u64>,
    next_persist: u64,
    /// A Persist handed to the host and not yet reported durable.
    blocked_on: Option<PersistId>,
    /// Work registered since the last flush, and work waiting for a given persist id.
    durable_next: Vec<Durable>,
    durable_waiting: Vec<(PersistId, Durable)>,

    next_msg: u64,
    outstanding: BTreeMap<MessageId, (String, Pending)>,

    campaign: Option<Campaign>,
    leader: Option<Leadership>,
    /// Reads waiting for this node to apply their index.
    local_reads: Vec<read::LocalRead>,
    /// Peers a bootstrapped master adds once it serves ([`Participant::bootstrap_with`]).
    joiners: Vec<String>,
    /// An unjoined node asking to be added ([`Participant::join`]).
    joining: Option<Joining>,
    /// An old master that handed over, waiting to see the target lead ([`transfer`]).
    handover: Option<transfer::Handover>,
    /// On a master: the chunked snapshot transfer to each follower that needs one.
    transfers: BTreeMap<String, chunks::Outgoing<S::Snapshot>>,
    /// A chunked snapshot being received (in memory only: a restart starts it over).
    incoming: Option<chunks::Incoming<S::Restore>>,
    /// The newest committed entries (at most `Config::catchup_bytes` of changes), from which a
    /// master catches up a follower that is behind without a snapshot.
    recent: VecDeque<Entry>,
    recent_bytes: usize,
}

/// An unjoined node's requests to be added.
#[derive(Clone, Debug)]
struct Joining {
    via: Vec<String>,
    /// Which of `via` to ask next.
    next: usize,
    /// When to ask.
    at: u64,
}

/// Majority of `n` members: `n/2 + 1` (docs/PROTOCOL.md section 3; trap J).
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// A snapshot of everything an operator wants to see about a participant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    pub cluster: String,
    #[serde(rename = "self")]
    pub self_addr: String,
    pub role: Role,
    pub instance: u64,
    pub commit: u64,
    pub master: Option<String>,
    /// The voters.
    pub members: Vec<String>,
    pub learners: Vec<Learner>,
    pub version: u64,
    pub staged: Option<Staged>,
    /// Milliseconds since a live master was last heard from (0 on the master).
    pub last_master_contact_ms: Option<u64>,
    pub queued: usize,
    pub peers: Vec<PeerStatus>,
    /// A chunked snapshot this node is receiving: its seq and the bytes received so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving: Option<SnapshotProgress>,
}

/// How far a chunked snapshot transfer has gone (docs/PROTOCOL.md section 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotProgress {
    /// The commit the snapshot is at.
    pub seq: u64,
    /// Bytes of its text the receiver holds (on a master: acknowledged by the follower).
    pub bytes: u64,
}

/// One other member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub addr: String,
    /// Answered within the minimum election timeout.
    pub reachable: bool,
    /// Milliseconds since its last successful answer.
    pub last_contact_ms: Option<u64>,
    pub learner: bool,
    /// On a master: the commit it is known to hold (it answered an accept at `matched + 1`).
    pub matched: Option<u64>,
    /// On a master: how many committed entries it is behind.
    pub lag: Option<u64>,
    /// On a master: the chunked snapshot it is sending this member, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

impl<S: StateMachine> core::fmt::Debug for Participant<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Participant")
            .field("self", &self.hard.self_addr)
            .field("role", &self.role)
            .field("instance", &self.hard.promised)
            .field("commit", &self.hard.commit)
            .field("master", &self.master)
            .field("members", &self.hard.members)
            .field("staged", &self.hard.staged)
            .finish()
    }
}

impl<S: StateMachine> Participant<S> {
    /// A fresh, unjoined node: it waits for a `start` from a master, or for [`bootstrap`](Self::bootstrap).
    pub fn new(cfg: Config, app: S) -> Result<Participant<S>, ConfigError> {
        cfg.validate()?;
        let hard = HardState {
            cluster: cfg.cluster.clone(),
            self_addr: cfg.self_addr.clone(),
            status: Status::Unjoined,
            promised: 0,
            promised_master: None,
            commit: 0,
            staged: None,
            members: Vec::new(),
            learners: Vec::new(),
            members_version: 0,
        };
        Ok(Participant {
            rng: Rng::new(cfg.seed),
            cfg,
            app,
            now: 0,
            hard,
            role: Role::Unjoined,
            master: None,
            max_seen: 0,
            last_heard: None,
            election_deadline: None,
            behind_until: None,
            contact: BTreeMap::new(),
            heard_commit: 0,
            forward_failures: 0,
            commits_since_snapshot: 0,
            log_bytes_since_snapshot: 0,
            state_bytes: 0,
            removal_notices: BTreeMap::new(),
            snapshot_due: false,
            compacted: 0,
            outputs: VecDeque::new(),
            early: 0,
            dirty: false,
            pending_entries: Vec::new(),
            pending_snapshot: None,
            pending_compact: None,
            next_persist: 1,
            blocked_on: None,
            durable_next: Vec::new(),
            durable_waiting: Vec::new(),
            next_msg: 1,
            outstanding: BTreeMap::new(),
            campaign: None,
            leader: None,
            local_reads: Vec::new(),
            joiners: Vec::new(),
            joining: None,
            handover: None,
            transfers: BTreeMap::new(),
            incoming: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
        })
    }

    /// A node restarted from what its host stored. It resumes as the member it was (a follower;
    /// it never resumes as master), or unjoined if nothing was stored. `app` must be empty: the
    /// stored snapshot and entries are applied to it.
    pub fn restore(
        cfg: Config,
        app: S,
        stored: Stored,
        now: u64,
    ) -> Result<Participant<S>, RestoreError> {
        let mut p = Participant::new(cfg, app)?;
        p.now = now;
        let Some(hard) = stored.hard else {
            return Ok(p);
        };
        let corrupt = RestoreError::Inconsistent;
        if hard.cluster != p.cfg.cluster {
            return Err(RestoreError::WrongCluster {
                stored: hard.cluster,
                configured: p.cfg.cluster,
            });
        }
        let mut at = 0;
        if let Some(s) = &stored.snapshot {
            p.app =
                crate::restore_from(&p.app, s.data.as_bytes()).map_err(RestoreError::Snapshot)?;
            at = s.seq;
        }
        for e in &stored.entries {
            if e.seq <= at {
                continue;
            }
            if e.seq != at + 1 {
                return Err(corrupt(alloc::format!("entry {} follows {}", e.seq, at)));
            }
            if e.seq > hard.commit {
                break;
            }
            if let Payload::Changes(chg) = &e.payload {
                for c in chg {
                    p.app.apply_unanswered(e.seq, c);
                }
            }
            p.remember(e.seq, &e.payload, entry_size(&e.payload));
            at = e.seq;
        }
        if at != hard.commit {
            return Err(corrupt(alloc::format!(
                "commit is {} but entries end at {}",
                hard.commit,
                at
            )));
        }
        // Entries at or below the snapshot (a crash before the log was compacted) were skipped.
        let base = stored.snapshot.as_ref().map_or(0, |s| s.seq);
        p.compacted = base;
        let since = stored.entries.iter().filter(|e| e.seq > base);
        p.commits_since_snapshot = since.clone().count() as u64;
        p.log_bytes_since_snapshot = since.map(|e| entry_size(&e.payload) as u64).sum();
        p.state_bytes = stored.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        p.max_seen = hard.promised;
        p.hard = hard;
        p.role = match p.hard.status {
            Status::Unjoined => Role::Unjoined,
            Status::Joined => p.follower_role(),
            Status::Removed => Role::Removed,
        };
        if p.role == Role::Participant {
            p.reset_election_timer(now);
        }
        Ok(p)
    }

    // -----------------------------------------------------------------------------------------
    // Getters
    // -----------------------------------------------------------------------------------------

    pub fn role(&self) -> Role {
        self.role
    }
    /// The highest instance this node has promised.
    pub fn instance(&self) -> u64 {
        self.hard.promised
    }
    /// The commit index: the highest seq applied to the state machine.
    pub fn commit(&self) -> u64 {
        self.hard.commit
    }
    /// The highest commit index this node knows the cluster has reached: its own, or what a
    /// master's accept showed it (a master proposes at its commit + 1, one slot at a time, so
    /// an accept at seq S says S - 1 is committed). `known_commit() - commit()` is how far this
    /// node is behind, as of the master's last accept (a readiness probe's lag). Never
    /// decreases; not durable (a restarted node learns it again from the next heartbeat).
    pub fn known_commit(&self) -> u64 {
        self.heard_commit.max(self.hard.commit)
    }
    /// The master this node follows (its own address when it is master).
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }
    /// The voters as of the commit index (sorted).
    pub fn members(&self) -> &[String] {
        &self.hard.members
    }
    /// The learners as of the commit index (sorted by address).
    pub fn learners(&self) -> &[Learner] {
        &self.hard.learners
    }
    /// The member-list version: seq of the last committed membership change.
    pub fn members_version(&self) -> u64 {
        self.hard.members_version
    }
    pub fn staged(&self) -> Option<&Staged> {
        self.hard.staged.as_ref()
    }
    /// The application's state machine (at the commit index).
    pub fn state(&self) -> &S {
        &self.app
    }
    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn cluster(&self) -> &str {
        &self.hard.cluster
    }
    pub fn self_addr(&self) -> &str {
        &self.hard.self_addr
    }
    /// Chunked snapshot transfers under way: how many this master is sending, and the
    /// (snapshot seq, bytes held) of the one this node is receiving.
    pub fn snapshot_transfers(&self) -> (usize, Option<(u64, u64)>) {
        let incoming = self.incoming.as_ref().map(|i| (i.seq, i.held));
        (self.transfers.len(), incoming)
    }
    /// Whether this node is master and has confirmed it on a majority (it serves submits).
    pub fn is_serving_master(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| !l.recovering)
    }

    /// Everything an operator wants to see, for a status page.
    pub fn status(&self, now: u64) -> StatusReport {
        let peers = self
            .replicas()
            .into_iter()
            .map(|m| {
                let last = self.contact.get(&m).map(|t| now.saturating_sub(*t));
                let (matched, lag) = self.peer_progress(&m).unzip();
                PeerStatus {
                    learner: self.is_learner(&m),
                    reachable: last.is_some_and(|d| d < self.cfg.election_min_ms),
                    last_contact_ms: last,
                    matched,
                    lag,
                    snapshot: self.transfers.get(&m).map(|t| SnapshotProgress {
                        seq: t.seq,
                        bytes: t.sent.as_ref().map_or(0, |c| c.offset),
                    }),
                    addr: m,
                }
            })
            .collect();
        StatusReport {
            cluster: self.hard.cluster.clone(),
            self_addr: self.hard.self_addr.clone(),
            role: self.role,
            instance: self.hard.promised,
            commit: self.hard.commit,
            master: self.master.clone(),
            members: self.hard.members.clone(),
            learners: self.hard.learners.clone(),
            version: self.hard.members_version,
            staged: self.hard.staged.clone(),
            last_master_contact_ms: if self.role == Role::Master {
                Some(0)
            } else {
                self.last_heard.map(|t| now.saturating_sub(t))
            },
            queued: self.leader.as_ref().map_or(0, |l| l.queued_changes),
            peers,
            receiving: self.incoming.as_ref().map(|i| SnapshotProgress {
                seq: i.seq,
                bytes: i.held,
            }),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Inputs
    // -----------------------------------------------------------------------------------------

    /// An incoming request `id` (the host's id for it). The answer comes out as an
    /// [`Output::Reply`] with the same id, possibly much later (a submit is answered once it
    /// committed), and always exactly once.
    pub fn handle_request(&mut self, now: u64, id: RequestId, req: Request) {
        self.now = now;
        match req {
            Request::Prepare(r) => self.on_prepare(now, id, r),
            Request::Accept(r) => {
                let master = r.master.map(|m| m.addr);
                self.on_accept(
                    now,
                    id,
                    Method::Accept,
                    (r.instance, r.seq),
                    Payload::Changes(r.chg.into()),
                    master,
                    r.entries,
                )
            }
            Request::AddMember(r) => {
                let master = r.master.map(|m| m.addr);
                let payload = match r.learner {
                    true => Payload::Learner(Learner {
                        addr: r.mem.addr,
                        promote: r.promote,
                    }),
                    false => Payload::Add(r.mem.addr),
                };
                self.on_accept(
                    now,
                    id,
                    Method::AddMember,
                    (r.instance, r.seq),
                    payload,
                    master,
                    Vec::new(),
                )
            }
            Request::RmMember(r) => {
                let master = r.master.map(|m| m.addr);
                self.on_accept(
                    now,
                    id,
                    Method::RmMember,
                    (r.instance, r.seq),
                    Payload::Rm(r.mem.addr),
                    master,
                    Vec::new(),
                )
            }
            Request::Start(r) => self.on_start(now, id, r),
            Request::Submit(r) => self.on_submit(now, id, r),
            Request::MembersAdd(r) => self.on_admin(now, id, Method::MembersAdd, r),
            Request::MembersRemove(r) => self.on_admin(now, id, Method::MembersRemove, r),
            Request::MembersPromote(r) => self.on_admin(now, id, Method::MembersPromote, r),
            Request::ReadIndex(r) => self.on_read_index(now, id, r),
            Request::Transfer(r) => self.on_transfer(now, id, r),
            Request::TimeoutNow(r) => self.on_timeout_now(now, id, r),
        }
        self.release_local_reads(now);
        self.flush();
    }

    /// The answer to the outgoing request `id` ([`Output::Send`]), or the transport error that
    /// stopped it. Call exactly once per `Send`.
    pub fn handle_response(&mut self, now: u64, id: MessageId, res: Result<Response, Error>) {
        self.now = now;
        let Some((from, pending)) = self.outstanding.remove(&id) else {
            return;
        };
        if let Ok(r) = &res {
            if let Some(i) = response_instance(r) {
                self.max_seen = self.max_seen.max(i);
            }
            if r.err().is_none() {
                self.contact.insert(from.clone(), now);
            }
        }
        match pending {
            Pending::Prepare { instance } => self.on_prepare_result(now, from, instance, res),
            Pending::Accept {
                instance,
                proposal,
                round,
                seq,
            } => self.on_accept_result(now, from, instance, proposal, round, seq, res),
            Pending::Start {
                instance,
                campaign,
                chunk,
            } => self.on_start_result(now, from, instance, campaign, chunk, res),
            Pending::Forward { req } => self.on_forward_result(now, req, res),
            Pending::ForwardRead { req } => self.on_forward_read_result(now, req, res),
            Pending::Notice => self.on_notice_result(now, from, res),
            Pending::CatchUp {
                instance,
                seq,
                batch,
            } => self.on_catch_up_result(now, from, instance, seq, batch, res),
            Pending::Join => {}
            Pending::TimeoutNow { instance } => {
                self.on_timeout_now_result(now, from, instance, res)
            }
        }
        self.release_local_reads(now);
        self.flush();
    }

    /// Time has passed; call when `now` reaches [`poll_timeout`](Self::poll_timeout) (calling
    /// early or late is harmless).
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        match self.role {
            Role::Master => self.master_tick(now),
            Role::Candidate => self.candidate_tick(now),
            Role::Participant => {
                if self.election_deadline.is_some_and(|d| now >= d) {
                    if self.behind_until.is_some_and(|b| now < b) {
                        self.reset_election_timer(now);
                    } else {
                        self.campaign(now);
                    }
                }
            }
            Role::Unjoined => self.ask_to_join(now),
            Role::Removed | Role::Learner => {}
        }
        self.handover_tick(now);
        self.release_local_reads(now);
        self.flush();
    }

    /// The host made the [`Persist`] `id` durable. Outputs behind it are released.
    pub fn persisted(&mut self, now: u64, id: PersistId) {
        self.now = now;
        if self.blocked_on == Some(id) {
            self.blocked_on = None;
        }
        let mut done = Vec::new();
        self.durable_waiting.retain(|(pid, d)| {
            if *pid <= id {
                done.push(d.clone());
                false
            } else {
                true
            }
        });
        for d in done {
            match d {
                Durable::SelfPromise { instance } => self.on_self_promise_durable(now, instance),
                Durable::SelfAccept { instance, seq } => {
                    self.on_self_accept_durable(now, instance, seq)
                }
            }
        }
        self.flush();
    }

    /// A periodic snapshot to save, once `Config::snapshot_every` commits went by since the
    /// last: a frozen view of the state at the commit index (O(1) for an app on a persistent
    /// map), for the host to write out off the hot path (see [`SnapshotJob`]). Poll it after
    /// every input, like [`poll_output`](Self::poll_output); each due snapshot is handed out
    /// once. A newer job supersedes an unfinished older one (the host may drop the older);
    /// a job never saved loses nothing, the log just keeps its entries longer.
    #[must_use = "save the snapshot and report it with snapshot_saved, or drop it"]
    pub fn take_snapshot_job(&mut self) -> Option<SnapshotJob<S::Snapshot>> {
        if !core::mem::take(&mut self.snapshot_due) || self.hard.commit <= self.compacted {
            return None;
        }
        let seq = self.hard.commit;
        if self.mutant(crate::Mutant::CompactBeforeSnapshotDurable) {
            self.compact_to(seq);
        }
        Some(SnapshotJob {
            seq,
            source: self.app.snapshot(),
        })
    }

    /// The host made the snapshot of the [`SnapshotJob`] at `seq` durable, `bytes` long: the
    /// next [`Persist`] (emitted now) carries `compact: Some(seq)`, letting the host drop the
    /// log's entries up to `seq`. A stale `seq` (at or below a snapshot stored since) is
    /// ignored. The size sets when the next snapshot is due (`Config::snapshot_every`).
    pub fn snapshot_saved(&mut self, now: u64, seq: u64, bytes: u64) {
        self.now = now;
        // Compacting before the snapshot is durable would lose the entries to a crash: the
        // host calls this only once its file is synced (CompactBeforeSnapshotDurable).
        if seq <= self.hard.commit && seq > self.compacted {
            self.state_bytes = bytes;
        }
        if seq <= self.hard.commit {
            self.compact_to(seq);
        }
        self.flush();
    }

    fn compact_to(&mut self, seq: u64) {
        if seq > self.compacted {
            self.compacted = seq;
            self.pending_compact = Some(seq);
            self.dirty = true;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Commands
    // -----------------------------------------------------------------------------------------

    /// Makes an unjoined node the master of a new one-member cluster. Add members with
    /// [`add_member`](Self::add_member), one at a time.
    pub fn bootstrap(&mut self, now: u64) -> Result<(), Error> {
        self.bootstrap_with(now, Vec::new())
    }

    /// Makes an unjoined node the master of a new cluster that grows to `peers`: once it
    /// serves, it adds each as a learner, in order, and promotes each once it has caught up
    /// (docs/PROTOCOL.md section 8). A peer that is not up yet is added all the same: as a
    /// learner it lowers no majority, and it is started as soon as it answers.
    pub fn bootstrap_with(&mut self, now: u64, peers: Vec<String>) -> Result<(), Error> {
        self.now = now;
        if self.hard.status != Status::Unjoined || self.hard.commit != 0 {
            return Err(Error::state("bootstrap needs a fresh, unjoined node"));
        }
        self.joiners = peers
            .into_iter()
            .filter(|p| *p != self.hard.self_addr)
            .collect();
        self.hard.status = Status::Joined;
        self.hard.members = alloc::vec![self.hard.self_addr.clone()];
        self.role = Role::Participant;
        self.dirty = true;
        self.event(Event::Joined);
        self.event(Event::MembersChanged {
            members: self.hard.members.clone(),
            learners: Vec::new(),
            version: 0,
        });
        self.campaign(now);
        self.flush();
        Ok(())
    }

    /// Asks the members at `via` (any of them; a follower forwards) to add this unjoined node,
    /// one after the other every `election_max_ms`, until a master starts it. It joins as a
    /// learner and becomes a voter once it has caught up.
    pub fn join(&mut self, now: u64, via: Vec<String>) -> Result<(), Error> {
        self.now = now;
        if self.hard.status != Status::Unjoined {
            return Err(Error::state("only an unjoined node joins"));
        }
        if via.is_empty() {
            return Err(Error::state("join needs the address of a member"));
        }
        self.joining = Some(Joining {
            via,
            next: 0,
            at: now,
        });
        self.handle_timeout(now);
        Ok(())
    }

    /// Submits changes as if a client called `submit` on this node; answered as request `id`.
    pub fn submit(&mut self, now: u64, id: RequestId, changes: Vec<String>) {
        self.handle_request(
            now,
            id,
            Request::Submit(crate::wire::Submit {
                chg: changes,
                forwarded: false,
            }),
        );
    }

    /// Adds a member as a learner that the master promotes to voter once it has caught up
    /// (admin); answered as request `id` once the learner's addition committed. `version`, if
    /// given, must equal the current member-list version.
    pub fn add_member(&mut self, now: u64, id: RequestId, addr: String, version: Option<u64>) {
        let r = AdminMember {
            version,
            ..AdminMember::new(addr)
        };
        self.handle_request(now, id, Request::MembersAdd(r));
    }

    /// Removes a member, voter or learner (admin); answered as request `id` once the change
    /// committed.
    pub fn remove_member(&mut self, now: u64, id: RequestId, addr: String, version: Option<u64>) {
        let r = AdminMember {
            version,
            ..AdminMember::new(addr)
        };
        self.handle_request(now, id, Request::MembersRemove(r));
    }

    /// A consistent (linearizable) read, answered as request `id` with `seq` set to the read
    /// index once this node has applied it: read the state machine right after the answer. A
    /// follower asks its master; the master confirms its mastership with a majority first.
    /// Refused with `ERR_STATE` (retryable) when there is no serving master.
    pub fn read(&mut self, now: u64, id: RequestId) {
        let req = Request::ReadIndex(crate::wire::ReadIndex::default());
        self.handle_request(now, id, req);
    }

    /// Hands this master's mastership to the voter `to`, or to the most caught-up voter
    /// (docs/PROTOCOL.md section 9), as if a client called `transfer` here; answered as
    /// request `id` once the target leads, or with a retryable error if it did not within
    /// `election_min_ms`. On a follower, the call is forwarded to the master.
    pub fn transfer(&mut self, now: u64, id: RequestId, to: Option<String>) {
        let r = crate::wire::Transfer {
            to,
            forwarded: false,
        };
        self.handle_request(now, id, Request::Transfer(r));
    }

    /// Starts an election now (voters that heard from a live master recently still refuse).
    pub fn start_election(&mut self, now: u64) -> Result<(), Error> {
        self.now = now;
        match self.role {
            Role::Unjoined | Role::Removed => Err(Error::state("not a member")),
            Role::Learner => Err(Error::state("a learner does not campaign")),
            Role::Master => Err(Error::state("already master")),
            Role::Participant | Role::Candidate => {
                self.campaign(now);
                self.flush();
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Outputs
    // -----------------------------------------------------------------------------------------

    /// The next obligation, or `None`. After an [`Output::Persist`], returns only outputs that
    /// do not depend on it (a master's proposal to its followers, the answers to a batch a
    /// majority already holds) until [`persisted`](Self::persisted) is called with its id.
    /// Poll until `None` after every input.
    #[must_use = "every output is an obligation for the host"]
    pub fn poll_output(&mut self) -> Option<Output> {
        let (out, early) = if self.blocked_on.is_none() {
            self.outputs.pop_front()?
        } else if self.early > 0 {
            let i = self.outputs.iter().position(|(_, early)| *early)?;
            self.outputs.remove(i)?
        } else {
            return None;
        };
        if early {
            self.early -= 1;
        }
        if let Output::Persist(p) = &out {
            self.blocked_on = Some(p.id);
        }
        Some(out)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if ever.
    #[must_use = "arm a timer for this time"]
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.role_timeout(),
            self.local_read_deadline(),
            self.handover_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn role_timeout(&self) -> Option<u64> {
        match self.role {
            Role::Master => self.leader.as_ref().map(|l| l.next_tick),
            Role::Candidate => {
                let retry = self.campaign.as_ref().map(|c| c.next_retry);
                match (retry, self.election_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Role::Participant => self.election_deadline,
            Role::Unjoined => self.joining.as_ref().map(|j| j.at),
            Role::Removed | Role::Learner => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shared machinery
    // -----------------------------------------------------------------------------------------

    /// Emits a Persist for everything changed since the last one, if anything did. Every
    /// output pushed after it waits for it.
    fn flush(&mut self) {
        if !self.dirty {
            debug_assert!(self.durable_next.is_empty());
            return;
        }
        let id = PersistId(self.next_persist);
        self.next_persist += 1;
        for d in self.durable_next.drain(..) {
            self.durable_waiting.push((id, d));
        }
        self.dirty = false;
        let p = Persist {
            id,
            hard: self.hard.clone(),
            entries: core::mem::take(&mut self.pending_entries),
            snapshot: self.pending_snapshot.take(),
            compact: self.pending_compact.take(),
        };
        self.outputs.push_back((Output::Persist(p), false));
    }

    /// Queues an output that depends on the state changed so far: flushes first.
    fn push(&mut self, out: Output) {
        self.flush();
        self.outputs.push_back((out, false));
    }

    /// Queues an output that depends on no write (see [`send_early`](Self::send_early)).
    fn push_early(&mut self, out: Output) {
        self.early += 1;
        self.outputs.push_back((out, true));
    }

    fn reply(&mut self, id: RequestId, response: Response) {
        self.push(Output::Reply(Reply { id, response }));
    }

    /// Answers ahead of any write in progress: only for answers that depend on none.
    fn reply_early(&mut self, id: RequestId, response: Response) {
        self.push_early(Output::Reply(Reply { id, response }));
    }

    fn reply_err(&mut self, id: RequestId, method: Method, err: Error) {
        self.reply(id, crate::wire::response_error(method, err));
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back((Output::Event(e), false));
    }

    /// Sends `request` to `to`, after everything changed so far is durable.
    fn send(&mut self, to: String, request: Request, pending: Pending) -> MessageId {
        self.flush();
        self.send_now(to, request, pending)
    }

    /// Sends after the writes already queued (everything changed before the last flush).
    fn send_now(&mut self, to: String, request: Request, pending: Pending) -> MessageId {
        self.queue_send(to, request, pending, false)
    }

    /// Sends at once, ahead of every write not yet durable. Only for requests that depend on
    /// none: a master's proposal at `commit + 1` depends on its promise (durable before it won)
    /// and on the slot at `commit` being chosen (a majority holds it durably, our own vote
    /// counted only once durable), not on its own staged copy or its record of the commit.
    /// etcd's raft does the same: a leader sends its appends in parallel with its own write.
    fn send_early(&mut self, to: String, request: Request, pending: Pending) -> MessageId {
        self.queue_send(to, request, pending, true)
    }

    /// Numbers an outgoing request, remembers what its answer is for, and queues it.
    fn queue_send(
        &mut self,
        to: String,
        request: Request,
        pending: Pending,
        early: bool,
    ) -> MessageId {
        let id = MessageId(self.next_msg);
        self.next_msg += 1;
        self.outstanding.insert(id, (to.clone(), pending));
        let deadline = self.now + self.cfg.request_timeout_ms;
        let out = Output::Send(Send {
            id,
            to,
            request,
            deadline,
        });
        if early {
            self.push_early(out);
        } else {
            self.outputs.push_back((out, false));
        }
        id
    }

    fn on_durable(&mut self, d: Durable) {
        debug_assert!(self.dirty, "durable work needs a pending persist");
        self.durable_next.push(d);
    }

    /// Others are ahead of this node: let them campaign first (a stale candidate cannot win,
    /// and its prepares make low-commit voters promise instances that an up-to-date candidate
    /// then collides with).
    fn note_behind(&mut self, now: u64) {
        self.behind_until = Some(now + 3 * self.cfg.election_max_ms);
    }

    fn reset_election_timer(&mut self, now: u64) {
        let t = self
            .rng
            .range(self.cfg.election_min_ms, self.cfg.election_max_ms);
        self.election_deadline = Some(now + t);
    }

    /// Whether this participant carries the deliberate bug `m` (only with feature `mutants`).
    #[allow(unused_variables)]
    fn mutant(&self, m: crate::Mutant) -> bool {
        #[cfg(feature = "mutants")]
        return self.cfg.mutant == Some(m);
        #[cfg(not(feature = "mutants"))]
        false
    }

    /// Whether `addr` is a voter.
    fn is_member(&self, addr: &str) -> bool {
        self.hard.members.iter().any(|m| m == addr)
    }

    fn is_learner(&self, addr: &str) -> bool {
        self.hard.learners.iter().any(|l| l.addr == addr)
    }

    /// Unjoined and asked to join: asks the next member, and again after `election_max_ms`.
    fn ask_to_join(&mut self, now: u64) {
        let Some(j) = self.joining.as_mut().filter(|j| now >= j.at) else {
            return;
        };
        let to = j.via[j.next % j.via.len()].clone();
        j.next += 1;
        j.at = now + self.cfg.election_max_ms;
        let req = Request::MembersAdd(AdminMember::new(self.hard.self_addr.clone()));
        self.send(to, req, Pending::Join);
    }

    /// The role of a joined node that is neither master nor candidate.
    fn follower_role(&self) -> Role {
        match self.is_learner(&self.hard.self_addr) {
            true => Role::Learner,
            false => Role::Participant,
        }
    }

    /// The other voters: whom a candidate asks, whose votes count.
    fn others(&self) -> Vec<String> {
        self.hard
            .members
            .iter()
            .filter(|m| **m != self.hard.self_addr)
            .cloned()
            .collect()
    }

    /// The other voters and the learners: whom a master replicates to.
    fn replicas(&self) -> Vec<String> {
        let learners = self.hard.learners.iter().map(|l| &l.addr);
        self.hard
            .members
            .iter()
            .chain(learners)
            .filter(|m| **m != self.hard.self_addr)
            .cloned()
            .collect()
    }

    /// Every member, voters first, as a `start` lists them.
    fn all_members(&self) -> Vec<String> {
        let mut all = self.hard.members.clone();
        all.extend(self.hard.learners.iter().map(|l| l.addr.clone()));
        all
    }

    /// Applies the entry at `commit + 1`: the one step by which every role commits. Returns
    /// the application's result for each change of a batch.
    /// `chosen_here`: this master counted the majority itself, so the events need not wait for
    /// any write (they go out ahead of it, before the answers to the batch).
    fn commit_entry(
        &mut self,
        now: u64,
        seq: u64,
        payload: Payload,
        chosen_here: bool,
    ) -> Vec<serde_json::Value> {
        debug_assert_eq!(seq, self.hard.commit + 1);
        let mut results = Vec::new();
        match &payload {
            // Only a master that chose the batch answers its submits; elsewhere the app may
            // skip building results nobody reads.
            Payload::Changes(chg) if chosen_here => {
                results = chg.iter().map(|c| self.app.apply(seq, c)).collect();
            }
            Payload::Changes(chg) => {
                for c in chg.iter() {
                    self.app.apply_unanswered(seq, c);
                }
            }
            Payload::Add(a) => {
                self.removal_notices.remove(a);
                self.hard.learners.retain(|l| l.addr != *a);
                if !self.is_member(a) {
                    self.hard.members.push(a.clone());
                    self.hard.members.sort();
                }
                self.hard.members_version = seq;
            }
            Payload::Learner(l) => {
                self.removal_notices.remove(&l.addr);
                if !self.is_member(&l.addr) && !self.is_learner(&l.addr) {
                    self.hard.learners.push(l.clone());
                    self.hard.learners.sort();
                }
                self.hard.members_version = seq;
            }
            Payload::Rm(a) => {
                self.hard.members.retain(|m| m != a);
                self.hard.learners.retain(|l| l.addr != *a);
                self.hard.members_version = seq;
                if *a != self.hard.self_addr {
                    self.removal_notices.insert(a.clone(), (0, false));
                }
            }
        }
        if self.role == Role::Learner && self.is_member(&self.hard.self_addr) {
            // Promoted: from now on this node votes, and campaigns when its master goes quiet.
            self.role = Role::Participant;
            self.reset_election_timer(now);
        }
        let bytes = entry_size(&payload);
        self.remember(seq, &payload, bytes);
        self.hard.commit = seq;
        if self.hard.staged.as_ref().is_some_and(|s| s.seq <= seq) {
            self.hard.staged = None;
        }
        self.dirty = true;
        self.pending_entries.push(Entry {
            seq,
            payload: payload.clone(),
        });
        self.commits_since_snapshot += 1;
        self.log_bytes_since_snapshot += bytes as u64;
        let size_due =
            self.log_bytes_since_snapshot >= self.cfg.snapshot_min_bytes.max(self.state_bytes);
        if self.commits_since_snapshot >= self.cfg.snapshot_every || size_due {
            // The state is not serialized here, on the path every commit takes: the host takes
            // a frozen view with `take_snapshot_job` and saves it off this path.
            self.commits_since_snapshot = 0;
            self.log_bytes_since_snapshot = 0;
            self.snapshot_due = true;
        }
        let membership = !matches!(payload, Payload::Changes(_));
        let removed = match &payload {
            Payload::Rm(a) => Some(a.clone()),
            _ => None,
        };
        let committed = Event::Committed { seq, payload };
        let changed = membership.then(|| Event::MembersChanged {
            members: self.hard.members.clone(),
            learners: self.hard.learners.clone(),
            version: seq,
        });
        for e in core::iter::once(committed).chain(changed) {
            if chosen_here {
                self.push_early(Output::Event(e));
            } else {
                self.event(e);
            }
        }
        if let Some(gone) = removed {
            if gone == self.hard.self_addr {
                self.hard.status = Status::Removed;
                if self.role != Role::Master {
                    // A master finishes its own removal in `master`; anyone else stops here.
                    self.become_removed();
                }
            } else if self.master.as_deref() == Some(gone.as_str()) {
                // Our master left: no need to wait for its silence before electing another.
                self.master = None;
                self.last_heard = None;
                self.reset_election_timer(now);
            }
            self.contact.remove(&gone);
        }
        results
    }

    /// Keeps the entry just committed at `seq` (`bytes` as [`entry_size`] counts it) in
    /// [`recent`](Self::recent), dropping the oldest past its bounds.
    fn remember(&mut self, seq: u64, payload: &Payload, bytes: usize) {
        if self.recent.back().is_some_and(|e| e.seq + 1 != seq) {
            self.forget_recent();
        }
        self.recent_bytes += bytes;
        self.recent.push_back(Entry {
            seq,
            payload: payload.clone(),
        });
        while self.recent_bytes > self.cfg.catchup_bytes {
            match self.recent.pop_front() {
                Some(e) => self.recent_bytes -= entry_size(&e.payload),
                None => break,
            }
        }
    }

    fn forget_recent(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    /// The committed entry at `seq`, if still kept.
    fn recent_entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.recent.front()?.seq;
        let e = self
            .recent
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (e.seq == seq).then_some(e)
    }

    /// The whole state as one string (the seed's `start` carries it so).
    fn snapshot_string(&self) -> String {
        crate::snapshot_to_string(self.app.snapshot()).unwrap_or_default()
    }

    fn become_removed(&mut self) {
        self.hard.status = Status::Removed;
        self.dirty = true;
        self.role = Role::Removed;
        self.master = None;
        self.campaign = None;
        self.election_deadline = None;
        self.event(Event::Removed);
    }

    /// Raises the promise to `instance` for `master`. Anyone campaigning or mastering at a
    /// lower instance gives that up.
    fn promise(&mut self, now: u64, instance: u64, master: Option<String>) {
        debug_assert!(instance >= self.hard.promised);
        if instance > self.hard.promised || self.hard.promised_master != master {
            self.hard.promised = instance;
            self.hard.promised_master = master;
            self.dirty = true;
        }
        self.max_seen = self.max_seen.max(instance);
        let mine = self.hard.promised_master.as_deref() == Some(self.hard.self_addr.as_str());
        if !mine {
            if self.role == Role::Master {
                self.step_down(now, Error::state("a higher instance was promised"));
            }
            if self.role == Role::Candidate {
                self.campaign = None;
                self.role = Role::Participant;
            }
        }
    }
}

/// What an entry counts for against `Config::catchup_batch`, `Config::catchup_bytes` and the
/// size rule of `Config::snapshot_every`: its changes with a little for their encoding, or 64
/// bytes for a membership change.
fn entry_size(p: &Payload) -> usize {
    match p {
        Payload::Changes(c) => c.iter().map(|x| x.len() + 8).sum(),
        _ => 64,
    }
}

fn response_instance(r: &Response) -> Option<u64> {
    match r {
        Response::Prepare(p) => Some(p.accepted_instance),
        Response::Accept(a) => a.instance,
        Response::Fail(f) => f.instance,
    }
}

/// The refusal of `what` because this node is `role`.
fn not_member_error(role: Role) -> Error {
    Error::state(match role {
        Role::Unjoined => "this node has not joined the cluster",
        _ => "this node was removed from the cluster",
    })
}
