//! One test per rule of PROTOCOL.md section 3: put a participant in a known state, feed it ONE
//! input, and assert the exact outputs it emitted, in order (each Persist with its hard state,
//! each Send's target and request, each Reply, each Event).
//!
//! States are reached through the public inputs only: a master is bootstrapped and grows its
//! cluster by `add_member`, with a tiny synchronous in-memory network ([`Net`]) carrying the
//! messages; followers join by the `start` their master sends. Error texts are free-form on the
//! wire, so [`drain`] blanks them and the tests compare codes and the structured fields.
//!
//! This module holds that shared harness and the tests of the setup itself; the tests of each
//! rule sit in one file per concern, matching the participant's modules.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::{majority, Participant, Role};
use crate::error::{Error, ErrorCode, RestoreError};
use crate::kv::{KvChange, KvStore};
use crate::output::{
    Entry, Event, HardState, MessageId, Output, Persist, PersistId, Reply, RequestId, Send,
    Snapshot, Status, Stored,
};
use crate::wire::{
    Accept, AcceptResult, AdminMember, FailResult, Learner, Member, MemberChange, Payload, Prepare,
    PrepareResult, ReadIndex, Request, Response, Staged, Start, Submit,
};
use crate::{Config, StateMachine};

mod accept;
mod catchup;
mod chunked;
mod early;
mod election;
mod learners;
mod master;
mod membership;
mod prepare;
mod read;
mod restore;
mod results;
mod snapjob;
mod start;
mod submit;
mod transfer;

const A: &str = "http://a";
const B: &str = "http://b";
const C: &str = "http://c";
const D: &str = "http://d";
const E: &str = "http://e";
const CLUSTER: &str = "c1";

type P = Participant<KvStore>;

// ---------------------------------------------------------------------------------------------
// Driving one participant
// ---------------------------------------------------------------------------------------------

/// The handler tests see every commit notice at once (`commit_notice_ms: 0`), so that a state
/// is reached without advancing time; the delayed notice of the default has tests of its own.
fn cfg(addr: &str) -> Config {
    let mut c = Config::new(CLUSTER, addr);
    c.commit_notice_ms = 0;
    c
}

fn node(addr: &str) -> P {
    Participant::new(cfg(addr), KvStore::new()).unwrap()
}

fn s(x: &str) -> String {
    x.to_string()
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|x| x.to_string()).collect()
}

fn set(k: &str, v: &str) -> String {
    KvChange::set(k, v).encode()
}

fn empty_snap() -> String {
    snap_of(&KvStore::new())
}

fn snap_of(kv: &KvStore) -> String {
    crate::snapshot_to_string(kv.snapshot()).unwrap()
}

/// Polls every output, making each Persist durable at once (as a host does), with error texts
/// blanked.
fn drain(p: &mut P, now: u64) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = p.poll_output() {
        let persist = match &o {
            Output::Persist(x) => Some(x.id),
            _ => None,
        };
        out.push(o);
        if let Some(id) = persist {
            p.persisted(now, id);
        }
    }
    norm(out)
}

/// One output, normalized like [`drain`]'s (without making a Persist durable).
fn poll(p: &mut P) -> Option<Output> {
    let o = p.poll_output()?;
    norm(vec![o]).pop()
}

fn blank(e: &mut Option<Error>) {
    if let Some(e) = e {
        e.message.clear();
    }
}

/// Blanks error texts, and the deadlines of sends (each is `now + request_timeout_ms`, which
/// `a_send_must_start_within_the_request_timeout` checks once).
fn norm(mut outs: Vec<Output>) -> Vec<Output> {
    for o in &mut outs {
        match o {
            Output::Reply(r) => match &mut r.response {
                Response::Prepare(x) => blank(&mut x.err),
                Response::Accept(x) => blank(&mut x.err),
                Response::Fail(x) => blank(&mut x.err),
            },
            Output::Send(x) => x.deadline = 0,
            _ => {}
        }
    }
    outs
}

fn request(p: &mut P, now: u64, id: u64, r: Request) -> Vec<Output> {
    p.handle_request(now, RequestId(id), r);
    drain(p, now)
}

fn respond(p: &mut P, now: u64, msg: u64, r: Response) -> Vec<Output> {
    p.handle_response(now, MessageId(msg), Ok(r));
    drain(p, now)
}

fn unreachable_peer(p: &mut P, now: u64, msg: u64) -> Vec<Output> {
    p.handle_response(
        now,
        MessageId(msg),
        Err(Error::new(ErrorCode::Connect, "connection refused")),
    );
    drain(p, now)
}

/// `members/add` of a voter at once (`"voter": true`), the seed's way: most handler tests build
/// their clusters so; the learners have tests of their own.
fn add_voter(p: &mut P, now: u64, id: RequestId, addr: String, version: Option<u64>) {
    let r = AdminMember {
        version,
        voter: true,
        ..AdminMember::new(addr)
    };
    p.handle_request(now, id, Request::MembersAdd(r));
}

fn tick(p: &mut P, now: u64) -> Vec<Output> {
    p.handle_timeout(now);
    drain(p, now)
}

// Expected outputs -----------------------------------------------------------------------------

fn persist(id: u64, hard: HardState) -> Output {
    persist_full(id, hard, vec![], None)
}

fn persist_full(
    id: u64,
    hard: HardState,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
) -> Output {
    Output::Persist(Persist {
        id: PersistId(id),
        hard,
        entries,
        snapshot,
        compact: None,
    })
}

fn send(id: u64, to: &str, request: Request) -> Output {
    Output::Send(Send {
        id: MessageId(id),
        to: s(to),
        request,
        deadline: 0,
    })
}

fn reply(id: u64, response: Response) -> Output {
    Output::Reply(Reply {
        id: RequestId(id),
        response,
    })
}

fn ev(e: Event) -> Output {
    Output::Event(e)
}

fn committed(seq: u64, payload: Payload) -> Output {
    ev(Event::Committed { seq, payload })
}

fn members_changed(members: &[&str], version: u64) -> Output {
    ev(Event::MembersChanged {
        members: strings(members),
        learners: vec![],
        version,
    })
}

fn err(code: ErrorCode) -> Error {
    Error::new(code, "")
}

// Requests --------------------------------------------------------------------------------------

fn prepare(instance: u64, cand: &str, seq: Option<u64>) -> Request {
    Request::Prepare(Prepare {
        instance,
        master: Member::new(cand),
        seq,
        transfer: false,
    })
}

fn accept(instance: u64, seq: u64, chg: Vec<String>, master: Option<&str>) -> Request {
    Request::Accept(Accept {
        instance,
        seq,
        chg,
        master: master.map(Member::new),
        entries: Vec::new(),
    })
}

fn addmember(instance: u64, seq: u64, mem: &str, master: &str) -> Request {
    Request::AddMember(MemberChange {
        instance,
        seq,
        mem: Member::new(mem),
        master: Some(Member::new(master)),
        learner: false,
        promote: true,
    })
}

fn rmmember(instance: u64, seq: u64, mem: &str, master: &str) -> Request {
    Request::RmMember(MemberChange {
        instance,
        seq,
        mem: Member::new(mem),
        master: Some(Member::new(master)),
        learner: false,
        promote: true,
    })
}

#[allow(clippy::too_many_arguments)]
fn start(
    instance: u64,
    seq: u64,
    to: &str,
    master: &str,
    participants: &[&str],
    snap: String,
    version: Option<u64>,
) -> Request {
    Request::Start(Start {
        instance,
        seq,
        cluster: s(CLUSTER),
        self_: Member::new(to),
        master: Member::new(master),
        participants: participants.iter().map(|m| Member::new(*m)).collect(),
        snap,
        version,
        learners: vec![],
        offset: None,
        more: false,
        crc: None,
    })
}

fn submit(chg: Vec<String>, forwarded: bool) -> Request {
    Request::Submit(Submit { chg, forwarded })
}

fn staged(instance: u64, seq: u64, payload: Payload) -> Staged {
    Staged {
        instance,
        seq,
        payload,
    }
}

fn changes(chg: &[&str]) -> Payload {
    Payload::Changes(strings(chg).into())
}

// Responses -------------------------------------------------------------------------------------

fn vote(instance: u64, seq: u64, st: Option<Staged>) -> Response {
    Response::Prepare(PrepareResult {
        accepted_instance: instance,
        err: None,
        seq: Some(seq),
        staged: st,
    })
}

fn prepare_refusal(promised: u64, code: ErrorCode, seq: u64) -> Response {
    Response::Prepare(PrepareResult {
        accepted_instance: promised,
        err: Some(err(code)),
        seq: Some(seq),
        staged: None,
    })
}

fn accepted() -> Response {
    Response::Accept(AcceptResult {
        accepted: true,
        err: None,
        instance: None,
        seq: None,
        entries: false,
    })
}

fn accept_refusal(code: ErrorCode, instance: Option<u64>) -> Response {
    let mut e = err(code);
    e.instance = instance;
    Response::Accept(AcceptResult {
        accepted: false,
        err: Some(e),
        instance,
        seq: None,
        entries: false,
    })
}

/// A follower's `ERR_GAP`: it says its commit, so the master knows what it needs next, and
/// that it takes catch-up batches (every node of ours does).
fn gap_refusal(commit: u64) -> Response {
    match gap_refusal_unbatched(commit) {
        Response::Accept(a) => Response::Accept(AcceptResult { entries: true, ..a }),
        r => r,
    }
}

/// The `ERR_GAP` of a node that does not take catch-up batches (no `"entries": true`).
fn gap_refusal_unbatched(commit: u64) -> Response {
    let mut e = err(ErrorCode::Gap);
    e.commit = Some(commit);
    Response::Accept(AcceptResult {
        accepted: false,
        err: Some(e),
        instance: None,
        seq: Some(commit),
        entries: false,
    })
}

fn ok() -> Response {
    Response::Fail(FailResult::ok())
}

/// A submit's answer: committed at `seq`, each of its `n` key-value sets answering
/// `{"prev": null}` (a key set for the first time).
fn committed_ok(seq: u64, n: usize) -> Response {
    let r = serde_json::json!({ "prev": null });
    Response::Fail(FailResult::committed(seq, vec![r; n]))
}

fn failed(code: ErrorCode, instance: Option<u64>) -> Response {
    let mut e = err(code);
    e.instance = instance;
    Response::Fail(FailResult::error(e))
}

/// The id the next Send / Persist of `p` will get.
fn next_msg(p: &P) -> u64 {
    p.next_msg
}

fn next_persist(p: &P) -> u64 {
    p.next_persist
}

/// The hard state of `p` with `f` applied: what its next Persist must carry.
fn hard_with(p: &P, f: impl FnOnce(&mut HardState)) -> HardState {
    let mut h = p.hard_state().clone();
    f(&mut h);
    h
}

// ---------------------------------------------------------------------------------------------
// A synchronous in-memory network, only to reach states
// ---------------------------------------------------------------------------------------------

/// Delivers every Send at once, in order, and routes each Reply back as the answer. Messages to
/// an address that is not in the net are lost (never answered).
struct Net {
    nodes: BTreeMap<String, P>,
    disks: BTreeMap<String, Stored>,
    now: u64,
    next_req: u64,
    routes: BTreeMap<RequestId, (String, MessageId)>,
    /// Replies to client calls (ids below `1 << 32`).
    client: Vec<Reply>,
}

impl Net {
    fn new(addrs: &[&str], f: impl Fn(&mut Config)) -> Net {
        let nodes = addrs
            .iter()
            .map(|a| {
                let mut c = cfg(a);
                f(&mut c);
                (s(a), Participant::new(c, KvStore::new()).unwrap())
            })
            .collect();
        Net {
            nodes,
            disks: BTreeMap::new(),
            now: 0,
            next_req: 1 << 32,
            routes: BTreeMap::new(),
            client: Vec::new(),
        }
    }

    fn node(&mut self, a: &str) -> &mut P {
        self.nodes.get_mut(a).expect("node in net")
    }

    fn run(&mut self) {
        for _ in 0..1000 {
            let mut work: Vec<(String, Output)> = Vec::new();
            for (addr, p) in self.nodes.iter_mut() {
                while let Some(o) = p.poll_output() {
                    if let Output::Persist(x) = &o {
                        self.disks.entry(addr.clone()).or_default().apply(x);
                        p.persisted(self.now, x.id);
                    }
                    work.push((addr.clone(), o));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, o) in work {
                match o {
                    Output::Send(snd) => {
                        let rid = RequestId(self.next_req);
                        self.next_req += 1;
                        if let Some(to) = self.nodes.get_mut(&snd.to) {
                            self.routes.insert(rid, (from, snd.id));
                            to.handle_request(self.now, rid, snd.request);
                        }
                    }
                    Output::Reply(r) => match self.routes.remove(&r.id) {
                        Some((back, msg)) => {
                            let p = self.nodes.get_mut(&back).expect("sender in net");
                            p.handle_response(self.now, msg, Ok(r.response));
                        }
                        None => self.client.push(r),
                    },
                    Output::Persist(_) | Output::Event(_) => {}
                }
            }
        }
        panic!("the net did not settle");
    }

    fn take(&mut self, a: &str) -> P {
        self.nodes.remove(a).expect("node in net")
    }
}

/// `addrs[0]` bootstraps at time 0 and adds the others one at a time: a master at instance 1
/// with commit `addrs.len() - 1`, every follower at the same commit, following it.
fn cluster_with(addrs: &[&str], f: impl Fn(&mut Config)) -> Net {
    let mut net = Net::new(addrs, f);
    net.node(addrs[0]).bootstrap(0).unwrap();
    net.run();
    for (i, a) in addrs[1..].iter().enumerate() {
        add_voter(net.node(addrs[0]), 0, RequestId(i as u64 + 1), s(a), None);
        net.run();
    }
    let n = addrs.len() as u64 - 1;
    assert_eq!(net.client.len() as u64, n);
    assert!(net.client.iter().all(|r| r.response == ok()));
    for (a, p) in &net.nodes {
        assert_eq!(p.commit(), n, "{a}");
        assert_eq!(p.instance(), 1, "{a}");
        assert_eq!(p.members(), strings(addrs).as_slice(), "{a}");
    }
    assert!(net.nodes[addrs[0]].is_serving_master());
    net.client.clear();
    net
}

fn cluster(addrs: &[&str]) -> Net {
    cluster_with(addrs, |_| {})
}

/// A 3-member cluster [a, b, c] at commit 2, instance 1, master a; all heard at time 0.
fn cluster3() -> Net {
    cluster(&[A, B, C])
}

fn master3() -> P {
    cluster3().take(A)
}

fn follower3() -> P {
    cluster3().take(B)
}

/// A follower of [a, b, c] that staged `x` at (1, 3) from its master at time 0.
fn follower3_staged() -> (P, Staged) {
    let mut b = follower3();
    let x = set("x", "1");
    let outs = request(&mut b, 0, 1, accept(1, 3, vec![x.clone()], Some(A)));
    assert_eq!(outs.last(), Some(&reply(1, accepted())));
    (b, staged(1, 3, Payload::Changes(vec![x].into())))
}

// ---------------------------------------------------------------------------------------------
// The setup itself
// ---------------------------------------------------------------------------------------------

#[test]
fn majority_is_n_over_2_plus_1() {
    let got: Vec<usize> = (1..=6).map(majority).collect();
    assert_eq!(got, [1, 2, 2, 3, 3, 4]);
}

#[test]
fn bootstrap_makes_a_serving_master_of_one() {
    let mut a = node(A);
    a.bootstrap(0).unwrap();
    let outs = drain(&mut a, 0);
    let hard = HardState {
        cluster: s(CLUSTER),
        self_addr: s(A),
        status: Status::Joined,
        promised: 1,
        promised_master: Some(s(A)),
        commit: 0,
        staged: None,
        members: strings(&[A]),

        learners: vec![],
        members_version: 0,
    };
    assert_eq!(
        outs,
        vec![
            ev(Event::Joined),
            members_changed(&[A], 0),
            persist(1, hard),
            ev(Event::BecameMaster { instance: 1 }),
        ]
    );
    assert!(a.is_serving_master());
    assert_eq!(a.poll_timeout(), Some(100));
    assert_eq!(a.bootstrap(0).unwrap_err().code, ErrorCode::State);
}

#[test]
fn a_fresh_node_joins_with_its_first_start() {
    let mut b = node(B);
    let snap = {
        let mut kv = KvStore::new();
        kv.apply(1, &set("k", "v"));
        snap_of(&kv)
    };
    let outs = request(
        &mut b,
        0,
        9,
        start(1, 2, B, A, &[A, B, C], snap.clone(), Some(2)),
    );
    let hard = HardState {
        cluster: s(CLUSTER),
        self_addr: s(B),
        status: Status::Joined,
        promised: 1,
        promised_master: Some(s(A)),
        commit: 2,
        staged: None,
        members: strings(&[A, B, C]),

        learners: vec![],
        members_version: 2,
    };
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 2 }),
            members_changed(&[A, B, C], 2),
            ev(Event::Joined),
            persist_full(1, hard, vec![], Some(Snapshot { seq: 2, data: snap })),
            reply(9, ok()),
        ]
    );
    assert_eq!(b.role(), Role::Participant);
    assert_eq!(b.master(), Some(A));
    assert_eq!(b.state().get("k"), Some("v"));
}
