//! One `Participant` fed an arbitrary sequence of requests, responses (well-formed votes and
//! refusals, transport errors, arbitrary fields), timeouts, persist completions and commands.
//! Never a panic, and after every step:
//! - a staged slot, when present, is at `commit + 1`;
//! - the commit index never decreases;
//! - at most one persist is outstanding (`poll_output` hands out nothing after a `Persist`
//!   until `persisted`);
//! - every request id is answered at most once, and only ids that were given.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use clusterconsensus::kv::KvStore;
use clusterconsensus::wire::{
    Accept, AcceptResult, AdminMember, FailResult, Learner, Member, MemberChange, Prepare,
    PrepareResult, ReadIndex, Request, Response, Staged, Start, Submit,
};
use clusterconsensus::{
    Config, Error, ErrorCode, HardState, MessageId, Output, Participant, Payload, PersistId,
    RequestId, Status, Stored,
};
use libfuzzer_sys::fuzz_target;

const ME: &str = "http://a";
const ADDRS: [&str; 5] = [ME, "http://b", "http://c", "http://d", "http://e"];

#[derive(Arbitrary, Debug)]
enum Start0 {
    Fresh,
    Bootstrap,
    /// A joined member of {a, b, c} at this commit, with this promise.
    Member {
        commit: u8,
        promised: u8,
        staged: bool,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Code {
    State,
    Denied,
    Gap,
    Majority,
    Sequence,
    Encoding,
    Call,
    Connect,
}

impl Code {
    fn code(self) -> ErrorCode {
        match self {
            Code::State => ErrorCode::State,
            Code::Denied => ErrorCode::Denied,
            Code::Gap => ErrorCode::Gap,
            Code::Majority => ErrorCode::Majority,
            Code::Sequence => ErrorCode::Sequence,
            Code::Encoding => ErrorCode::Encoding,
            Code::Call => ErrorCode::Call,
            Code::Connect => ErrorCode::Connect,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Answer {
    /// The answer a healthy peer at `commit` gives (a vote, an accept, success).
    Yes { commit: u8 },
    /// A refusal with a code, maybe a higher instance.
    No {
        code: Code,
        instance: Option<u8>,
        commit: Option<u8>,
    },
    /// The call failed in transport.
    Transport { connect: bool },
    /// A vote carrying a staged slot.
    Staged {
        instance: u8,
        seq: u8,
        change: u8,
        commit: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Action {
    Prepare {
        instance: u8,
        master: u8,
        seq: Option<u8>,
    },
    Accept {
        instance: u8,
        seq: u8,
        changes: u8,
        master: Option<u8>,
    },
    AddMember {
        instance: u8,
        seq: u8,
        mem: u8,
        master: Option<u8>,
        learner: bool,
        promote: bool,
    },
    RmMember {
        instance: u8,
        seq: u8,
        mem: u8,
        master: Option<u8>,
    },
    Start {
        instance: u8,
        seq: u8,
        master: u8,
        participants: u8,
        /// Which of the participants are learners (a bit mask over the same addresses).
        learners: u8,
        snap: u8,
    },
    Submit {
        changes: u8,
        forwarded: bool,
        bad: bool,
    },
    MembersAdd {
        mem: u8,
        version: Option<u8>,
        forwarded: bool,
        voter: bool,
        promote: bool,
    },
    MembersPromote {
        mem: u8,
        version: Option<u8>,
        forwarded: bool,
    },
    MembersRemove {
        mem: u8,
        version: Option<u8>,
        forwarded: bool,
    },
    ReadIndex {
        forwarded: bool,
    },
    Read,
    Respond {
        which: u8,
        answer: Answer,
    },
    Tick {
        ms: u16,
    },
    Persisted,
    StartElection,
}

fn addr(i: u8) -> String {
    ADDRS[i as usize % ADDRS.len()].to_string()
}

fn change(i: u8) -> String {
    format!(
        r#"{{"op":"set","key":"k{}","value":"{i}","client":"c{}","req":{}}}"#,
        i % 4,
        i % 3,
        1 + i / 3
    )
}

fn changes(n: u8) -> Vec<String> {
    (0..n % 4).map(|i| change(n.wrapping_add(i))).collect()
}

struct Host {
    node: Participant<KvStore>,
    now: u64,
    next_req: u64,
    /// Requests given and not yet answered.
    open: BTreeSet<RequestId>,
    answered: BTreeSet<RequestId>,
    /// Sends not yet answered: id -> the request.
    sends: BTreeMap<MessageId, Request>,
    persist: Option<PersistId>,
    commit: u64,
}

impl Host {
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(p) => {
                    assert!(
                        self.persist.is_none(),
                        "a second persist while {:?} is outstanding",
                        self.persist
                    );
                    self.persist = Some(p.id);
                }
                Output::Send(s) => {
                    self.sends.insert(s.id, s.request);
                }
                Output::Reply(r) => {
                    assert!(
                        self.open.remove(&r.id),
                        "reply to {:?} which is not open (answered before: {})",
                        r.id,
                        self.answered.contains(&r.id)
                    );
                    self.answered.insert(r.id);
                }
                Output::Event(_) => {}
            }
        }
        self.check();
    }

    fn check(&mut self) {
        let c = self.node.commit();
        assert!(
            c >= self.commit,
            "commit went back from {} to {c}",
            self.commit
        );
        self.commit = c;
        if let Some(s) = self.node.staged() {
            assert_eq!(s.seq, c + 1, "staged {s:?} at commit {c}");
        }
    }

    fn request(&mut self, req: Request) {
        let id = RequestId(self.next_req);
        self.next_req += 1;
        self.open.insert(id);
        self.node.handle_request(self.now, id, req);
    }

    fn respond(&mut self, which: u8, answer: Answer) {
        let Some((&id, _)) = self
            .sends
            .iter()
            .nth(which as usize % self.sends.len().max(1))
        else {
            return;
        };
        let req = self.sends.remove(&id).unwrap();
        let instance_of = |r: &Request| match r {
            Request::Prepare(p) => p.instance,
            Request::Accept(a) => a.instance,
            Request::AddMember(m) | Request::RmMember(m) => m.instance,
            Request::Start(s) => s.instance,
            _ => 0,
        };
        let inst = instance_of(&req);
        let res: Result<Response, Error> = match answer {
            Answer::Transport { connect } => Err(Error::new(
                if connect {
                    ErrorCode::Connect
                } else {
                    ErrorCode::Call
                },
                "fuzz: transport",
            )),
            Answer::Yes { commit } => Ok(match &req {
                Request::Prepare(_) => Response::Prepare(PrepareResult {
                    accepted_instance: inst,
                    err: None,
                    seq: Some(u64::from(commit)),
                    staged: None,
                }),
                Request::Accept(_) => Response::Accept(AcceptResult {
                    accepted: true,
                    err: None,
                    instance: None,
                    seq: None,
                    entries: false,
                }),
                Request::ReadIndex(_) => Response::Fail(FailResult {
                    seq: Some(u64::from(commit)),
                    ..FailResult::ok()
                }),
                _ => Response::Fail(FailResult::ok()),
            }),
            Answer::No {
                code,
                instance,
                commit,
            } => {
                let mut e = Error::new(code.code(), "fuzz: refused");
                if let Some(i) = instance {
                    e = e.with_instance(u64::from(i));
                }
                let mut r = req.refusal(e);
                if let (Response::Prepare(p), Some(c)) = (&mut r, commit) {
                    p.seq = Some(u64::from(c));
                }
                Ok(r)
            }
            Answer::Staged {
                instance,
                seq,
                change: ch,
                commit,
            } => Ok(match &req {
                Request::Prepare(_) => Response::Prepare(PrepareResult {
                    accepted_instance: inst,
                    err: None,
                    seq: Some(u64::from(commit)),
                    staged: Some(Staged {
                        instance: u64::from(instance),
                        seq: u64::from(seq),
                        payload: Payload::Changes(vec![change(ch)].into()),
                    }),
                }),
                _ => Response::Fail(FailResult::ok()),
            }),
        };
        self.node.handle_response(self.now, id, res);
    }
}

fn initial(start: &Start0) -> Participant<KvStore> {
    let mut cfg = Config::new("c1", ME);
    cfg.seed = 7;
    cfg.snapshot_every = 3;
    cfg.max_queued = 8;
    match start {
        Start0::Fresh | Start0::Bootstrap => Participant::new(cfg, KvStore::new()).unwrap(),
        Start0::Member {
            commit,
            promised,
            staged,
        } => {
            let commit = u64::from(*commit);
            let members: Vec<String> = ADDRS[..3].iter().map(|s| s.to_string()).collect();
            let hard = HardState {
                cluster: "c1".into(),
                self_addr: ME.into(),
                status: Status::Joined,
                promised: u64::from(*promised),
                promised_master: (*promised > 0).then(|| addr(*promised % 3)),
                commit,
                staged: staged.then(|| Staged {
                    instance: u64::from(*promised),
                    seq: commit + 1,
                    payload: Payload::Changes(vec![change(1)].into()),
                }),
                members,
                learners: vec![],
                members_version: 0,
            };
            let stored = Stored {
                hard: Some(hard),
                snapshot: Some(clusterconsensus::Snapshot {
                    seq: commit,
                    data: "{}".into(),
                }),
                entries: vec![],
                saved: vec![],
            };
            match Participant::restore(cfg.clone(), KvStore::new(), stored, 0) {
                Ok(p) => p,
                Err(_) => Participant::new(cfg, KvStore::new()).unwrap(),
            }
        }
    }
}

fuzz_target!(|input: (Start0, Vec<Action>)| {
    let (start, actions) = input;
    let mut h = Host {
        node: initial(&start),
        now: 0,
        next_req: 1,
        open: BTreeSet::new(),
        answered: BTreeSet::new(),
        sends: BTreeMap::new(),
        persist: None,
        commit: 0,
    };
    h.commit = h.node.commit();
    if matches!(start, Start0::Bootstrap) {
        h.node.bootstrap(0).unwrap();
    }
    h.drain();
    for a in actions.into_iter().take(400) {
        let m = |i: Option<u8>| i.map(|i| Member::new(addr(i)));
        match a {
            Action::Prepare {
                instance,
                master,
                seq,
            } => h.request(Request::Prepare(Prepare {
                instance: u64::from(instance),
                master: Member::new(addr(master)),
                seq: seq.map(u64::from),
                transfer: false,
            })),
            Action::Accept {
                instance,
                seq,
                changes: c,
                master,
            } => h.request(Request::Accept(Accept {
                instance: u64::from(instance),
                seq: u64::from(seq),
                chg: changes(c),
                master: m(master),
                entries: Vec::new(),
            })),
            Action::AddMember {
                instance,
                seq,
                mem,
                master,
                learner,
                promote,
            } => h.request(Request::AddMember(MemberChange {
                instance: u64::from(instance),
                seq: u64::from(seq),
                mem: Member::new(addr(mem)),
                master: m(master),
                learner,
                promote,
            })),
            Action::RmMember {
                instance,
                seq,
                mem,
                master,
            } => h.request(Request::RmMember(MemberChange {
                instance: u64::from(instance),
                seq: u64::from(seq),
                mem: Member::new(addr(mem)),
                master: m(master),
                learner: false,
                promote: true,
            })),
            Action::Start {
                instance,
                seq,
                master,
                participants,
                learners,
                snap,
            } => {
                let parts: Vec<Member> = (0..5u8)
                    .filter(|i| participants & (1 << i) != 0)
                    .map(|i| Member::new(addr(i)))
                    .collect();
                let learners: Vec<Learner> = (0..5u8)
                    .filter(|i| participants & learners & (1 << i) != 0)
                    .map(|i| Learner {
                        addr: addr(i),
                        promote: i % 2 == 0,
                    })
                    .collect();
                let snap = match snap % 3 {
                    0 => "{}".to_string(),
                    1 => format!(r#"{{"data":{{"k{snap}":"v"}},"clients":{{"c1":{snap}}}}}"#),
                    _ => "garbage".to_string(),
                };
                h.request(Request::Start(Start {
                    instance: u64::from(instance),
                    seq: u64::from(seq),
                    cluster: "c1".into(),
                    self_: Member::new(ME),
                    master: Member::new(addr(master)),
                    participants: parts,
                    // A chunk when `seq` is odd: the whole `snap` as a one-chunk transfer (its
                    // checksum right when `participants` is even), or a chunk at offset 1.
                    offset: (seq % 2 == 1).then_some(u64::from(instance % 2)),
                    more: false,
                    crc: (seq % 2 == 1).then(|| match participants % 2 {
                        0 => clusterconsensus::crc32::crc32(snap.as_bytes()),
                        _ => 0,
                    }),
                    snap,
                    version: None,
                    learners,
                }))
            }
            Action::Submit {
                changes: c,
                forwarded,
                bad,
            } => {
                let mut chg = changes(c);
                if bad {
                    chg.push("not a change".into());
                }
                h.request(Request::Submit(Submit { chg, forwarded }))
            }
            Action::MembersAdd {
                mem,
                version,
                forwarded,
                voter,
                promote,
            } => h.request(Request::MembersAdd(AdminMember {
                version: version.map(u64::from),
                forwarded,
                voter,
                promote,
                ..AdminMember::new(addr(mem))
            })),
            Action::MembersPromote {
                mem,
                version,
                forwarded,
            } => h.request(Request::MembersPromote(AdminMember {
                version: version.map(u64::from),
                forwarded,
                ..AdminMember::new(addr(mem))
            })),
            Action::MembersRemove {
                mem,
                version,
                forwarded,
            } => h.request(Request::MembersRemove(AdminMember {
                version: version.map(u64::from),
                forwarded,
                ..AdminMember::new(addr(mem))
            })),
            Action::ReadIndex { forwarded } => {
                h.request(Request::ReadIndex(ReadIndex { forwarded }))
            }
            Action::Read => {
                let id = RequestId(h.next_req);
                h.next_req += 1;
                h.open.insert(id);
                h.node.read(h.now, id);
            }
            Action::Respond { which, answer } => h.respond(which, answer),
            Action::Tick { ms } => {
                h.now += u64::from(ms);
                h.node.handle_timeout(h.now);
            }
            Action::Persisted => {
                if let Some(id) = h.persist.take() {
                    h.node.persisted(h.now, id);
                }
            }
            Action::StartElection => {
                let _ = h.node.start_election(h.now);
            }
        }
        h.drain();
    }
});
