//! What a [`Participant`](crate::Participant) asks its host to do, and what the host keeps on
//! disk for it.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::wire::{Learner, Payload, Request, Response, Staged};

/// Chosen by the host for each incoming request (and for local commands); the answer comes back
/// as [`Output::Reply`] with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Chosen by the participant for each outgoing request; the host reports its answer with
/// [`Participant::handle_response`](crate::Participant::handle_response) and the same id. Only
/// the participant makes them, so a host cannot answer a request that was never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub(crate) u64);

impl MessageId {
    /// The number, for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Names one [`Persist`]; the host reports it durable with
/// [`Participant::persisted`](crate::Participant::persisted). Only the participant makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub(crate) u64);

impl PersistId {
    /// The number, for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One obligation for the host, in the order [`Participant::poll_output`](crate::Participant::poll_output)
/// hands them out.
#[must_use = "every output is an obligation: persist it, send it, reply with it, or observe it"]
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Write this durably (fsync). Until the host calls
    /// [`Participant::persisted`](crate::Participant::persisted) with its id, `poll_output`
    /// returns only outputs that do not depend on it (a master's proposal, answers to a batch a
    /// majority already holds), then nothing.
    Persist(Persist),
    /// POST `request.encode()` to [`Send::url`], then call `handle_response` with `id` exactly
    /// once: with the decoded answer, or with an error (`ERR_CONNECT`, `ERR_CALL` on timeout,
    /// `ERR_ENCODING` for an undecodable answer). Sends to one peer for which
    /// [`Send::ordered`] is true MUST go one at a time, in the order polled (see there).
    Send(Send),
    /// Answer the incoming request `id` with this body.
    Reply(Reply),
    /// Something the application may want to know. Needs no action.
    Event(Event),
}

/// An outgoing request.
#[derive(Clone, Debug, PartialEq)]
pub struct Send {
    pub id: MessageId,
    /// The member's address (an HTTP base URL).
    pub to: String,
    pub request: Request,
    /// Do not start the call after this time (the host's `now`): report it failed with
    /// `ERR_CALL` instead. A call that waited this long behind others to the same peer is
    /// stale, and the participant re-sends what still matters at its next tick, so a slow
    /// peer's queue cannot build up.
    pub deadline: u64,
}

impl Send {
    /// Whether this call takes its peer's ordered lane: the master's accepts, membership
    /// accepts and starts must arrive in the order they were sent (seq S + 1 before S is a gap
    /// at the follower, answered with the whole state), so a host sends them to one peer one at
    /// a time, each after the previous one was answered or failed. Other calls go at once.
    pub fn ordered(&self) -> bool {
        self.request.method().is_ordered()
    }

    /// The URL to POST to: the peer's address, then `/_clusterc/<cluster>/<method>`.
    pub fn url(&self, cluster: &str) -> String {
        crate::wire::url(&self.to, cluster, self.request.method().path())
    }
}

/// An answer to an incoming request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub id: RequestId,
    pub response: Response,
}

/// A durable write. Apply it as one atomic transaction:
///
/// 1. if `snapshot` is set (a snapshot installed from a master), replace the stored snapshot
///    with it and delete every stored entry;
/// 2. if `compact` is `Some(n)`, the snapshot at `n` that the host saved for a
///    [`SnapshotJob`](crate::SnapshotJob) and reported with
///    [`Participant::snapshot_saved`](crate::Participant::snapshot_saved) becomes the stored
///    snapshot (if newer than the stored one), and every stored entry at or below `n` may be
///    deleted (the log is compacted);
/// 3. append `entries` (committed, in seq order);
/// 4. replace the stored hard state with `hard`.
#[derive(Clone, Debug, PartialEq)]
pub struct Persist {
    pub id: PersistId,
    pub hard: HardState,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    /// Compact the log up to this seq: its state is in a snapshot the host saved durably (see
    /// step 2 above). Never set in the same `Persist` as `snapshot`.
    pub compact: Option<u64>,
}

impl Persist {
    /// A write that no participant asked for, with id 0 (a participant numbers its writes from
    /// 1, so [`Participant::persisted`](crate::Participant::persisted) ignores it): for a
    /// host's storage tests and for folding stored records with [`Stored::apply`].
    pub fn record(hard: HardState, entries: Vec<Entry>, snapshot: Option<Snapshot>) -> Persist {
        Persist {
            id: PersistId(0),
            hard,
            entries,
            snapshot,
            compact: None,
        }
    }

    /// [`Persist::record`] of a compaction up to `seq` (see [`Persist::compact`]).
    pub fn compaction(hard: HardState, entries: Vec<Entry>, seq: u64) -> Persist {
        Persist {
            compact: Some(seq),
            ..Persist::record(hard, entries, None)
        }
    }
}

/// The small state a node must never forget: its promise, its staged slot, its commit index and
/// its member list (as of that commit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub cluster: String,
    #[serde(rename = "self")]
    pub self_addr: String,
    pub status: Status,
    /// The highest instance promised.
    pub promised: u64,
    /// The master promised at `promised` (a candidate's own address while it campaigns).
    pub promised_master: Option<String>,
    pub commit: u64,
    pub staged: Option<Staged>,
    /// The voters (sorted).
    pub members: Vec<String>,
    /// The learners: members that receive the log but do not vote (sorted by address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<Learner>,
    /// Seq of the last committed membership change (the member-list version).
    pub members_version: u64,
}

/// Whether a node is part of its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a `start`.
    Unjoined,
    /// A member.
    Joined,
    /// Knows that its removal has committed.
    Removed,
}

/// A committed log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub payload: Payload,
}

/// The application's state at commit `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: u64,
    pub data: String,
}

/// Everything a host has stored for one participant; give it to
/// [`Participant::restore`](crate::Participant::restore) after a restart.
///
/// `entries` may start at or below the snapshot's seq (a host that names a saved snapshot in
/// its log before it drops the entries it covers leaves them so after a crash): `restore`
/// skips those.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub hard: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// Periodic snapshots saved ([`Stored::save_snapshot`]) that no `compact` has made the
    /// stored snapshot yet: `restore` ignores them, as a host ignores (and deletes) a snapshot
    /// file its log does not name. Such a snapshot may be of a commit the stored hard state
    /// does not have yet (its `Persist` was still being written), so restoring from it could
    /// pair a newer state with an older member list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved: Vec<Snapshot>,
}

impl Stored {
    /// Applies a [`Persist`] the way a host must: what an in-memory host (or a test) stores.
    /// For a `compact`, the host must have given the saved snapshot to
    /// [`Stored::save_snapshot`] first; the entries at or below it are dropped.
    pub fn apply(&mut self, p: &Persist) {
        if let Some(s) = &p.snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
            self.saved.retain(|x| x.seq > s.seq);
        }
        if let Some(n) = p.compact {
            // The compaction names the snapshot saved at `n`: now it is the stored one.
            if let Some(i) = self.saved.iter().position(|s| s.seq == n) {
                let s = self.saved.remove(i);
                self.saved.retain(|x| x.seq > n);
                if self.snapshot.as_ref().is_none_or(|old| old.seq < n) {
                    self.snapshot = Some(s);
                }
            }
            // As a host does, trusting the participant: it asks for a compaction only after
            // `snapshot_saved` (a participant that did otherwise would lose the entries here).
            self.entries.retain(|e| e.seq > n);
        }
        self.entries.extend(p.entries.iter().cloned());
        self.hard = Some(p.hard.clone());
    }

    /// The host saved `snapshot` durably for a [`SnapshotJob`](crate::SnapshotJob): it becomes
    /// the stored snapshot with the `Persist` whose `compact` names its seq, which the
    /// participant emits after [`snapshot_saved`](crate::Participant::snapshot_saved) and after
    /// every `Persist` before it (so the stored hard state then holds its commit). Until then a
    /// crash restores without it, from the entries that are all still there.
    pub fn save_snapshot(&mut self, snapshot: Snapshot) {
        if self.snapshot.as_ref().is_none_or(|s| s.seq < snapshot.seq) {
            self.saved.retain(|s| s.seq != snapshot.seq);
            self.saved.push(snapshot);
        }
    }
}

/// A periodic snapshot for the host to save off the hot path
/// ([`Participant::take_snapshot_job`](crate::Participant::take_snapshot_job)): the frozen
/// state at commit `seq`. Write `source` out through
/// [`SnapshotSource::fill`](crate::SnapshotSource::fill) (on another thread, while the
/// participant goes on), make it durable, then call
/// [`Participant::snapshot_saved`](crate::Participant::snapshot_saved) with `seq`: the
/// participant then emits a `Persist` with `compact: Some(seq)`. A job the host drops or fails
/// loses nothing: the log keeps every entry until a later job succeeds.
#[must_use = "save the snapshot and report it with snapshot_saved, or drop it (nothing is lost)"]
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotJob<T> {
    pub seq: u64,
    pub source: T,
}

/// Things that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node won the election for `instance` (it serves submits once its first accept is on
    /// a majority).
    BecameMaster { instance: u64 },
    /// This node was master of `instance` and no longer is.
    LostMastership { instance: u64 },
    /// The entry at `seq` was applied to the state machine.
    Committed { seq: u64, payload: Payload },
    /// A snapshot replaced the state: the state is now that at commit `seq`.
    SnapshotInstalled { seq: u64 },
    /// The member list changed (a membership change committed or a snapshot was installed).
    MembersChanged {
        members: Vec<String>,
        learners: Vec<Learner>,
        version: u64,
    },
    /// The node joined a cluster (its first `start`, or `bootstrap`).
    Joined,
    /// The node learned that it was removed.
    Removed,
}
