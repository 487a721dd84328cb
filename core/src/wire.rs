//! Wire types: the JSON bodies of the six seed endpoints (field names exactly as the seed), the
//! optional extension fields of docs/PROTOCOL.md section 2, and the two admin endpoints
//! (`members/add`, `members/remove`).
//!
//! Decoding never panics: a body that is not valid for its method is an [`ErrorCode::Encoding`]
//! error. Unknown fields are ignored. Encoding then decoding gives an equal value, and decoding
//! then encoding a conformance example gives an equal JSON value.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorCode};

/// A member, on the wire `{"addr": "http://127.0.0.1:9001"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
}

impl Member {
    pub fn new(addr: impl Into<String>) -> Member {
        Member { addr: addr.into() }
    }
}

/// The `err` field of every response: `null`/absent (or a code of `""`, as Go peers send) means
/// no error.
mod err_field {
    use super::*;

    #[derive(Serialize)]
    struct Out<'a> {
        code: &'a str,
        err: &'a str,
    }

    #[derive(Deserialize)]
    struct In {
        #[serde(default)]
        code: String,
        #[serde(default)]
        err: String,
    }

    pub fn serialize<S: Serializer>(v: &Option<Error>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(e) => Out {
                code: e.code.as_str(),
                err: &e.message,
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Error>, D::Error> {
        let raw: Option<In> = Option::deserialize(d)?;
        match raw {
            None => Ok(None),
            Some(In { code, .. }) if code.is_empty() => Ok(None),
            Some(In { code, err }) => match ErrorCode::parse(&code) {
                Some(c) => Ok(Some(Error::new(c, err))),
                None => Err(serde::de::Error::custom(alloc::format!(
                    "unknown error code {code:?}"
                ))),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `POST prepare`: a candidate asks for a promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub instance: u64,
    pub master: Member,
    /// Extension: the candidate's commit index. Absent means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Extension: the candidate campaigns because its master handed mastership over to it
    /// (`timeoutnow`), so a voter that still hears that master votes all the same (leader
    /// transfer, docs/PROTOCOL.md section 9). Every other rule of the prepare still holds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transfer: bool,
}

/// `POST accept`: the master proposes a batch of changes at `seq` (or, empty, heartbeats).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub instance: u64,
    pub seq: u64,
    pub chg: Vec<String>,
    /// Extension: the sender, so a follower that missed the prepare learns its master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<Member>,
    /// Extension (catch-up batch, docs/PROTOCOL.md section 12): committed entries at
    /// consecutive seqs ending at `seq - 1`, which the follower commits in order before it
    /// handles the accept itself. Sent only to a node whose `ERR_GAP` said `"entries": true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<CommittedEntry>,
}

/// A committed entry in a catch-up batch: on the wire `{"seq": S, "chg": [...]}`, or with
/// `"add": {"addr"}` (and `"learner": true`, `"promote": false` as on `addmember`) or
/// `"rm": {"addr"}` in place of `chg`, like a staged slot without its instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommittedWire", into = "CommittedWire")]
pub struct CommittedEntry {
    pub seq: u64,
    pub payload: Payload,
}

#[derive(Serialize, Deserialize)]
struct CommittedWire {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chg: Option<Changes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rm: Option<Member>,
    #[serde(default, skip_serializing_if = "is_false")]
    learner: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    promote: bool,
}

impl TryFrom<CommittedWire> for CommittedEntry {
    type Error = String;
    fn try_from(w: CommittedWire) -> Result<CommittedEntry, String> {
        let s = Staged::try_from(StagedWire {
            instance: 0,
            seq: w.seq,
            chg: w.chg,
            add: w.add,
            rm: w.rm,
            learner: w.learner,
            promote: w.promote,
        })?;
        Ok(CommittedEntry {
            seq: s.seq,
            payload: s.payload,
        })
    }
}

impl From<CommittedEntry> for CommittedWire {
    fn from(e: CommittedEntry) -> CommittedWire {
        let w = StagedWire::from(Staged {
            instance: 0,
            seq: e.seq,
            payload: e.payload,
        });
        CommittedWire {
            seq: w.seq,
            chg: w.chg,
            add: w.add,
            rm: w.rm,
            learner: w.learner,
            promote: w.promote,
        }
    }
}

/// A member that receives the log but does not vote (docs/PROTOCOL.md section 8), on the wire
/// `{"addr": A}` or `{"addr": A, "promote": false}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Learner {
    pub addr: String,
    /// The master makes it a voter once it has caught up (else only `members/promote` does).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub promote: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `POST addmember` / `POST rmmember`: an accept whose payload is one membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub instance: u64,
    pub seq: u64,
    pub mem: Member,
    /// Extension: the sender (see [`Accept::master`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<Member>,
    /// Extension, on `addmember`: add `mem` as a learner (a seed peer adds a voter, which only
    /// makes its own majorities larger).
    #[serde(default, skip_serializing_if = "is_false")]
    pub learner: bool,
    /// Extension, with `learner`: whether the master promotes it once caught up.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub promote: bool,
}

/// `POST start`: committed state for a node that joins or fell behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub instance: u64,
    pub seq: u64,
    pub cluster: String,
    #[serde(rename = "self")]
    pub self_: Member,
    pub master: Member,
    /// Every member: the voters and the learners (a seed peer sees them all as voters).
    pub participants: Vec<Member>,
    pub snap: String,
    /// Extension: the member-list version (seq of the last committed membership change) at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Extension: which of `participants` are learners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<Learner>,
    /// Extension (chunked transfer, docs/PROTOCOL.md section 11): `snap` holds the snapshot's
    /// text from this byte offset on, not the whole text. Absent: the seed's one-body start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Extension, with `offset`: more chunks of this snapshot follow this one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    /// Extension, on the last chunk (`offset` set, `more` false): the CRC-32 (IEEE) of the
    /// whole snapshot text. The receiver installs the snapshot only if it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc: Option<u32>,
}

impl Start {
    /// Whether this is one chunk of a chunked transfer (else the seed's whole `snap`).
    pub fn is_chunk(&self) -> bool {
        self.offset.is_some()
    }
}

/// `POST submit`: changes for the master to replicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    pub chg: Vec<String>,
    /// Extension: set by a follower that forwards a submit to its master, so that the submit is
    /// forwarded at most once (no loops while two nodes disagree on who is master).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forwarded: bool,
}

/// `POST members/add`, `members/remove` and `members/promote` (admin, not in the seed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminMember {
    pub addr: String,
    /// The member-list version the caller saw; a stale one is refused with `ERR_SEQUENCE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Set when a follower forwards the request to its master.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forwarded: bool,
    /// `members/add` only: add a voter at once, as the seed does, instead of a learner that is
    /// promoted once caught up (until it holds the state the cluster needs a majority of the
    /// larger member list).
    #[serde(default, skip_serializing_if = "is_false")]
    pub voter: bool,
    /// `members/add` only: `false` keeps the learner a learner until `members/promote`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub promote: bool,
}

impl AdminMember {
    /// An admin call about `addr` with the defaults (a learner promoted once caught up).
    pub fn new(addr: impl Into<String>) -> AdminMember {
        AdminMember {
            addr: addr.into(),
            version: None,
            forwarded: false,
            voter: false,
            promote: true,
        }
    }
}

/// `POST readindex` (not in the seed): a follower asks its master for a read index. The
/// answer's `seq` is a commit index that includes every change acknowledged before the request
/// arrived, confirmed by a majority after it arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndex {
    #[serde(default, skip_serializing_if = "is_false")]
    pub forwarded: bool,
}

/// `POST transfer` (admin, not in the seed): the master hands its mastership to the voter
/// `to`, or with `{}` to the most caught-up voter (docs/PROTOCOL.md section 9).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Set when a follower forwards the request to its master.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forwarded: bool,
}

/// `POST timeoutnow` (peer, not in the seed): the master of `instance`, whose commit is `seq`,
/// tells the target of a transfer to campaign at once, without waiting out an election
/// timeout. The target refuses it unless it holds every entry up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    pub instance: u64,
    pub seq: u64,
    pub master: Member,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// Answer to `prepare`. A vote is `accepted_instance == instance` with no `err`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareResult {
    #[serde(rename = "acceptedInstance")]
    pub accepted_instance: u64,
    #[serde(default, with = "err_field")]
    pub err: Option<Error>,
    /// Extension: the voter's commit index (also on refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Extension: the voter's staged slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
}

/// Answer to `accept`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptResult {
    pub accepted: bool,
    #[serde(default, with = "err_field")]
    pub err: Option<Error>,
    /// Extension: on a refusal, the instance the node has promised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u64>,
    /// Extension: on an `ERR_GAP` refusal, the node's commit (what it needs next follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Extension, on an `ERR_GAP` refusal: the node takes catch-up batches (an accept's
    /// `entries`, docs/PROTOCOL.md section 12). Absent: the master catches it up one entry
    /// per accept, as before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub entries: bool,
}

/// Answer to `addmember`, `rmmember`, `start`, `submit` and the admin calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailResult {
    pub fail: bool,
    #[serde(default, with = "err_field")]
    pub err: Option<Error>,
    /// Extension: on a refusal, the instance the node has promised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u64>,
    /// Extension: the read index, on the answer to `readindex`; the seq of the entry that
    /// committed the changes, on the answer to `submit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Extension, on the answer to `submit`: the application's result for each change, in
    /// order ([`StateMachine::apply`](crate::StateMachine::apply)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<serde_json::Value>>,
    /// Extension, on the answer to a chunked `start`: how many bytes of that snapshot the
    /// receiver holds, i.e. the offset of the chunk it expects next (also on a refusal, so
    /// that the sender resumes there; 0: start the transfer over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl FailResult {
    pub fn ok() -> FailResult {
        FailResult {
            fail: false,
            err: None,
            instance: None,
            seq: None,
            results: None,
            offset: None,
        }
    }

    /// A submit's success: its changes committed at `seq` with these results.
    pub fn committed(seq: u64, results: Vec<serde_json::Value>) -> FailResult {
        FailResult {
            seq: Some(seq),
            results: Some(results),
            ..FailResult::ok()
        }
    }

    pub fn error(e: Error) -> FailResult {
        FailResult {
            fail: true,
            instance: e.instance,
            seq: e.commit,
            err: Some(e),
            results: None,
            offset: None,
        }
    }

    /// `Ok(())` on success, else the error (a `fail: true` without `err` becomes `ERR_CALL`).
    pub fn into_result(self) -> Result<(), Error> {
        match (self.fail, self.err) {
            (false, None) => Ok(()),
            (_, Some(mut e)) => {
                e.instance = e.instance.or(self.instance);
                Err(e)
            }
            (true, None) => Err(Error::new(ErrorCode::Call, "failed without an error")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Staged slot and payloads
// ---------------------------------------------------------------------------------------------

/// A batch of application changes, shared rather than copied: one committed batch is held at
/// once by the entry to persist, the catch-up window (`Config::catchup_bytes`), the
/// `Committed` event and, on a master, the in-flight slot. Copying the strings for each of them
/// cost an allocation and a copy per change per holder on the commit path, on the cluster's
/// task, where it limited throughput; a clone is now a reference count. On the wire it is the
/// plain JSON array of strings (`"chg":[...]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes(Arc<Vec<String>>);

impl Changes {
    /// The changes as an owned vector: moved out when this is the only holder, copied
    /// otherwise.
    pub fn into_vec(self) -> Vec<String> {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl core::ops::Deref for Changes {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl From<Vec<String>> for Changes {
    fn from(v: Vec<String>) -> Changes {
        Changes(Arc::new(v))
    }
}

impl FromIterator<String> for Changes {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Changes {
        Changes::from(iter.into_iter().collect::<Vec<String>>())
    }
}

impl<'a> IntoIterator for &'a Changes {
    type Item = &'a String;
    type IntoIter = core::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq<Vec<String>> for Changes {
    fn eq(&self, other: &Vec<String>) -> bool {
        *self.0 == *other
    }
}

impl Serialize for Changes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Changes, D::Error> {
        Vec::<String>::deserialize(d).map(Changes::from)
    }
}

/// What a slot carries: a batch of changes, or one membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// Application changes, applied in order.
    Changes(Changes),
    /// Make this member a voter (add it, or promote the learner).
    Add(String),
    /// Add this member as a learner.
    Learner(Learner),
    /// Remove this member (voter or learner).
    Rm(String),
}

impl Payload {
    /// True for a batch without changes (a heartbeat or a new master's confirmation).
    pub fn is_empty(&self) -> bool {
        matches!(self, Payload::Changes(c) if c.is_empty())
    }

    /// The request that proposes this payload at `(instance, seq)`.
    pub fn to_request(&self, instance: u64, seq: u64, master: &str) -> Request {
        let master = Some(Member::new(master));
        match self {
            Payload::Changes(chg) => Request::Accept(Accept {
                instance,
                seq,
                chg: chg.to_vec(),
                master,
                entries: Vec::new(),
            }),
            Payload::Add(a) => Request::AddMember(MemberChange {
                instance,
                seq,
                mem: Member::new(a.clone()),
                master,
                learner: false,
                promote: true,
            }),
            Payload::Learner(l) => Request::AddMember(MemberChange {
                instance,
                seq,
                mem: Member::new(l.addr.clone()),
                master,
                learner: true,
                promote: l.promote,
            }),
            Payload::Rm(a) => Request::RmMember(MemberChange {
                instance,
                seq,
                mem: Member::new(a.clone()),
                master,
                learner: false,
                promote: true,
            }),
        }
    }
}

/// A value accepted at `(instance, seq)` and not yet known to be committed.
///
/// On the wire (prepare response extension): `{"instance","seq","chg":[...]}`, or with
/// `"add": {"addr"}` / `"rm": {"addr"}` in place of `chg`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StagedWire", into = "StagedWire")]
pub struct Staged {
    pub instance: u64,
    pub seq: u64,
    pub payload: Payload,
}

#[derive(Serialize, Deserialize)]
struct StagedWire {
    instance: u64,
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chg: Option<Changes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rm: Option<Member>,
    /// With `add`: a learner.
    #[serde(default, skip_serializing_if = "is_false")]
    learner: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    promote: bool,
}

impl TryFrom<StagedWire> for Staged {
    type Error = String;
    fn try_from(w: StagedWire) -> Result<Staged, String> {
        let payload = match (w.chg, w.add, w.rm) {
            (Some(c), None, None) => Payload::Changes(c),
            (None, Some(a), None) if w.learner => Payload::Learner(Learner {
                addr: a.addr,
                promote: w.promote,
            }),
            (None, Some(a), None) => Payload::Add(a.addr),
            (None, None, Some(r)) => Payload::Rm(r.addr),
            _ => return Err("staged needs exactly one of chg, add, rm".to_string()),
        };
        Ok(Staged {
            instance: w.instance,
            seq: w.seq,
            payload,
        })
    }
}

impl From<Staged> for StagedWire {
    fn from(s: Staged) -> StagedWire {
        let (mut learner, mut promote) = (false, true);
        let (chg, add, rm) = match s.payload {
            Payload::Changes(c) => (Some(c), None, None),
            Payload::Add(a) => (None, Some(Member { addr: a }), None),
            Payload::Learner(l) => {
                (learner, promote) = (true, l.promote);
                (None, Some(Member { addr: l.addr }), None)
            }
            Payload::Rm(r) => (None, None, Some(Member { addr: r })),
        };
        StagedWire {
            instance: s.instance,
            seq: s.seq,
            chg,
            add,
            rm,
            learner,
            promote,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Methods, and the typed request/response enums
// ---------------------------------------------------------------------------------------------

/// The last path segment(s) after `/_clusterc/<clusterId>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Prepare,
    Accept,
    AddMember,
    RmMember,
    Start,
    Submit,
    /// Admin: `members/add`.
    MembersAdd,
    /// Admin: `members/remove`.
    MembersRemove,
    /// Admin: `members/promote` (a learner becomes a voter).
    MembersPromote,
    /// A follower's read-index request to its master.
    ReadIndex,
    /// Admin: `transfer` (leader transfer).
    Transfer,
    /// A master's hand-over to the target of a transfer.
    TimeoutNow,
}

impl Method {
    pub const ALL: [Method; 12] = [
        Method::Prepare,
        Method::Accept,
        Method::AddMember,
        Method::RmMember,
        Method::Start,
        Method::Submit,
        Method::MembersAdd,
        Method::MembersRemove,
        Method::MembersPromote,
        Method::ReadIndex,
        Method::Transfer,
        Method::TimeoutNow,
    ];

    /// The path below `/_clusterc/<clusterId>/`.
    pub const fn path(self) -> &'static str {
        match self {
            Method::Prepare => "prepare",
            Method::Accept => "accept",
            Method::AddMember => "addmember",
            Method::RmMember => "rmmember",
            Method::Start => "start",
            Method::Submit => "submit",
            Method::MembersAdd => "members/add",
            Method::MembersRemove => "members/remove",
            Method::MembersPromote => "members/promote",
            Method::ReadIndex => "readindex",
            Method::Transfer => "transfer",
            Method::TimeoutNow => "timeoutnow",
        }
    }

    /// `None` for an unknown method (a host answers 404).
    pub fn from_path(path: &str) -> Option<Method> {
        Method::ALL.iter().copied().find(|m| m.path() == path)
    }

    /// A call between members of the cluster (the peer protocol), as opposed to a client's
    /// (`submit`, the admin calls). A host may require the peers' credentials for these.
    pub const fn is_peer_call(self) -> bool {
        !matches!(
            self,
            Method::Submit
                | Method::MembersAdd
                | Method::MembersRemove
                | Method::MembersPromote
                | Method::Transfer
        )
    }

    /// Whether a host may refuse this call when it is over its limit of concurrent client
    /// calls. The replication calls are bounded by the member count and must never starve
    /// behind clients; a read index costs the master a round and comes from a client's read,
    /// so it counts like one.
    pub const fn counts_as_client_load(self) -> bool {
        !self.is_peer_call() || matches!(self, Method::ReadIndex)
    }

    /// Whether calls of this method to one peer must arrive in the order they were sent: see
    /// [`Send::ordered`](crate::Send::ordered).
    pub const fn is_ordered(self) -> bool {
        matches!(
            self,
            Method::Accept | Method::AddMember | Method::RmMember | Method::Start
        )
    }
}

/// The path of `sub` (a method's [`Method::path`], or a read endpoint such as `status`) of
/// cluster `cluster`: `/_clusterc/<cluster>/<sub>`.
pub fn path(cluster: &str, sub: &str) -> String {
    alloc::format!("/_clusterc/{cluster}/{sub}")
}

/// The URL of `sub` of `cluster` at the node whose address (base URL) is `base`.
pub fn url(base: &str, cluster: &str, sub: &str) -> String {
    alloc::format!("{}{}", base.trim_end_matches('/'), path(cluster, sub))
}

/// A request body, typed by its method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Prepare(Prepare),
    Accept(Accept),
    AddMember(MemberChange),
    RmMember(MemberChange),
    Start(Start),
    Submit(Submit),
    MembersAdd(AdminMember),
    MembersRemove(AdminMember),
    MembersPromote(AdminMember),
    ReadIndex(ReadIndex),
    Transfer(Transfer),
    TimeoutNow(TimeoutNow),
}

/// A response body. `addmember`, `rmmember`, `start`, `submit` and the admin calls share
/// [`FailResult`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Prepare(PrepareResult),
    Accept(AcceptResult),
    Fail(FailResult),
}

fn decode_json<'a, T: Deserialize<'a>>(method: Method, body: &'a [u8]) -> Result<T, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::encoding(alloc::format!("bad {} body: {e}", method.path())))
}

fn encode_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: all keys are strings, no custom errors.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Request {
    pub fn method(&self) -> Method {
        match self {
            Request::Prepare(_) => Method::Prepare,
            Request::Accept(_) => Method::Accept,
            Request::AddMember(_) => Method::AddMember,
            Request::RmMember(_) => Method::RmMember,
            Request::Start(_) => Method::Start,
            Request::Submit(_) => Method::Submit,
            Request::MembersAdd(_) => Method::MembersAdd,
            Request::MembersRemove(_) => Method::MembersRemove,
            Request::MembersPromote(_) => Method::MembersPromote,
            Request::ReadIndex(_) => Method::ReadIndex,
            Request::Transfer(_) => Method::Transfer,
            Request::TimeoutNow(_) => Method::TimeoutNow,
        }
    }

    /// Decodes a request body for `method`; `ERR_ENCODING` if it is not valid for it.
    pub fn decode(method: Method, body: &[u8]) -> Result<Request, Error> {
        Ok(match method {
            Method::Prepare => Request::Prepare(decode_json(method, body)?),
            Method::Accept => Request::Accept(decode_json(method, body)?),
            Method::AddMember => Request::AddMember(decode_json(method, body)?),
            Method::RmMember => Request::RmMember(decode_json(method, body)?),
            Method::Start => Request::Start(decode_json(method, body)?),
            Method::Submit => Request::Submit(decode_json(method, body)?),
            Method::MembersAdd => Request::MembersAdd(decode_json(method, body)?),
            Method::MembersRemove => Request::MembersRemove(decode_json(method, body)?),
            Method::MembersPromote => Request::MembersPromote(decode_json(method, body)?),
            Method::ReadIndex => Request::ReadIndex(decode_json(method, body)?),
            Method::Transfer => Request::Transfer(decode_json(method, body)?),
            Method::TimeoutNow => Request::TimeoutNow(decode_json(method, body)?),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Prepare(r) => encode_json(r),
            Request::Accept(r) => encode_json(r),
            Request::AddMember(r) | Request::RmMember(r) => encode_json(r),
            Request::Start(r) => encode_json(r),
            Request::Submit(r) => encode_json(r),
            Request::MembersAdd(r) | Request::MembersRemove(r) | Request::MembersPromote(r) => {
                encode_json(r)
            }
            Request::ReadIndex(r) => encode_json(r),
            Request::Transfer(r) => encode_json(r),
            Request::TimeoutNow(r) => encode_json(r),
        }
    }

    /// The answer a node gives to this request when it refuses it with `err`.
    pub fn refusal(&self, err: Error) -> Response {
        response_error(self.method(), err)
    }
}

/// The response of the right shape for `method` carrying `err`.
pub fn response_error(method: Method, err: Error) -> Response {
    match method {
        Method::Prepare => Response::Prepare(PrepareResult {
            accepted_instance: err.instance.unwrap_or(0),
            err: Some(err),
            seq: None,
            staged: None,
        }),
        Method::Accept => Response::Accept(AcceptResult {
            accepted: false,
            instance: err.instance,
            seq: err.commit,
            // Every node of ours takes catch-up batches: say so where the master decides how
            // to catch it up.
            entries: err.code == ErrorCode::Gap && err.commit.is_some(),
            err: Some(err),
        }),
        _ => Response::Fail(FailResult::error(err)),
    }
}

impl Response {
    /// Decodes the response to a request of `method`.
    pub fn decode(method: Method, body: &[u8]) -> Result<Response, Error> {
        Ok(match method {
            Method::Prepare => Response::Prepare(decode_json(method, body)?),
            Method::Accept => Response::Accept(decode_json(method, body)?),
            _ => Response::Fail(decode_json(method, body)?),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Prepare(r) => encode_json(r),
            Response::Accept(r) => encode_json(r),
            Response::Fail(r) => encode_json(r),
        }
    }

    /// The error this response carries, if any.
    pub fn err(&self) -> Option<&Error> {
        match self {
            Response::Prepare(r) => r.err.as_ref(),
            Response::Accept(r) => r.err.as_ref(),
            Response::Fail(r) => r.err.as_ref(),
        }
    }
}

/// Checks a cluster id: `[A-Za-z0-9._-]`, 1-64 characters (docs/PROTOCOL.md section 1).
pub fn valid_cluster_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn staged_needs_exactly_one_payload() {
        let bad = br#"{"acceptedInstance":1,"err":null,"staged":{"instance":1,"seq":2}}"#;
        let e = Response::decode(Method::Prepare, bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::Encoding);
        let two =
            br#"{"acceptedInstance":1,"staged":{"instance":1,"seq":2,"chg":[],"rm":{"addr":"x"}}}"#;
        assert!(Response::decode(Method::Prepare, two).is_err());
    }

    #[test]
    fn unknown_error_code_is_an_encoding_error() {
        let body = br#"{"accepted":false,"err":{"code":"ERR_WHAT","err":"x"}}"#;
        assert_eq!(
            Response::decode(Method::Accept, body).unwrap_err().code,
            ErrorCode::Encoding
        );
    }

    #[test]
    fn a_learner_travels_as_an_addmember_with_extensions_a_seed_peer_ignores() {
        let l = Payload::Learner(Learner {
            addr: "http://n:1".into(),
            promote: true,
        });
        let body = l.to_request(2, 9, "http://m:1").encode();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"instance":2,"seq":9,"mem":{"addr":"http://n:1"},"master":{"addr":"http://m:1"},"learner":true}"#
        );
        let staged = Staged {
            instance: 2,
            seq: 9,
            payload: l,
        };
        let text = serde_json::to_string(&staged).unwrap();
        assert_eq!(
            text,
            r#"{"instance":2,"seq":9,"add":{"addr":"http://n:1"},"learner":true}"#
        );
        assert_eq!(serde_json::from_str::<Staged>(&text).unwrap(), staged);
    }

    #[test]
    fn a_chunked_start_adds_three_fields_and_a_seed_start_has_none() {
        let seed = r#"{"instance":1,"seq":4,"cluster":"c","self":{"addr":"http://b"},"master":{"addr":"http://a"},"participants":[{"addr":"http://a"},{"addr":"http://b"}],"snap":"xyz"}"#;
        let Request::Start(mut s) = Request::decode(Method::Start, seed.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(!s.is_chunk());
        assert_eq!(serde_json::to_string(&s).unwrap(), seed);
        s.offset = Some(3);
        s.more = true;
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.ends_with(r#""snap":"xyz","offset":3,"more":true}"#),
            "{text}"
        );
        s.more = false;
        s.crc = Some(7);
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.ends_with(r#""snap":"xyz","offset":3,"crc":7}"#),
            "{text}"
        );
        let back = Request::decode(Method::Start, text.as_bytes()).unwrap();
        assert_eq!(back, Request::Start(s));
        let r = FailResult {
            offset: Some(12),
            ..FailResult::ok()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"fail":false,"err":null,"offset":12}"#);
    }

    #[test]
    fn requests_round_trip_through_bytes() {
        let reqs = vec![
            Request::Submit(Submit {
                chg: vec!["a".into()],
                forwarded: true,
            }),
            Request::MembersAdd(AdminMember {
                version: Some(3),
                promote: false,
                ..AdminMember::new("http://x:1")
            }),
            Request::MembersPromote(AdminMember::new("http://x:1")),
            Request::Transfer(Transfer::default()),
            Request::Transfer(Transfer {
                to: Some("http://x:1".into()),
                forwarded: true,
            }),
            Request::TimeoutNow(TimeoutNow {
                instance: 3,
                seq: 9,
                master: Member::new("http://m:1"),
            }),
            Payload::Rm("http://y:2".into()).to_request(4, 5, "http://m:1"),
            Payload::Learner(Learner {
                addr: "http://z:3".into(),
                promote: false,
            })
            .to_request(4, 6, "http://m:1"),
        ];
        for r in reqs {
            assert_eq!(Request::decode(r.method(), &r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn fail_result_into_result() {
        assert_eq!(FailResult::ok().into_result(), Ok(()));
        let r = FailResult {
            fail: true,
            ..FailResult::ok()
        };
        assert_eq!(r.into_result().unwrap_err().code, ErrorCode::Call);
        let r = FailResult::error(Error::state("x").with_instance(9));
        let e = r.into_result().unwrap_err();
        assert_eq!((e.code, e.instance), (ErrorCode::State, Some(9)));
    }

    #[test]
    fn cluster_ids() {
        assert!(valid_cluster_id("cluster1"));
        assert!(valid_cluster_id("a.b_c-D9"));
        assert!(!valid_cluster_id(""));
        assert!(!valid_cluster_id("a/b"));
        assert!(!valid_cluster_id(&"x".repeat(65)));
    }

    #[test]
    fn paths_are_built_in_one_place() {
        assert_eq!(
            path("c1", Method::MembersAdd.path()),
            "/_clusterc/c1/members/add"
        );
        assert_eq!(
            url("http://127.0.0.1:9001/", "c1", "status"),
            "http://127.0.0.1:9001/_clusterc/c1/status"
        );
        // The peer protocol, the client calls, and what a host may shed under load.
        assert!(Method::Accept.is_peer_call() && !Method::Accept.counts_as_client_load());
        assert!(!Method::Submit.is_peer_call() && Method::Submit.counts_as_client_load());
        assert!(Method::ReadIndex.is_peer_call() && Method::ReadIndex.counts_as_client_load());
        let ordered: Vec<Method> = Method::ALL.into_iter().filter(|m| m.is_ordered()).collect();
        assert_eq!(
            ordered,
            [
                Method::Accept,
                Method::AddMember,
                Method::RmMember,
                Method::Start
            ]
        );
    }

    #[test]
    fn a_submit_answer_carries_seq_and_results_and_a_seed_answer_still_decodes() {
        let r = Response::Fail(FailResult::committed(
            7,
            vec![serde_json::json!({"prev": null})],
        ));
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"fail":false,"err":null,"seq":7,"results":[{"prev":null}]}"#
        );
        assert_eq!(
            Response::decode(Method::Submit, text.as_bytes()).unwrap(),
            r
        );
        let seed = Response::decode(Method::Submit, br#"{"fail":false,"err":null}"#).unwrap();
        assert_eq!(seed, Response::Fail(FailResult::ok()));
    }

    #[test]
    fn methods_from_path() {
        for m in Method::ALL {
            assert_eq!(Method::from_path(m.path()), Some(m));
        }
        assert_eq!(Method::from_path("nosuchmethod"), None);
    }
}
