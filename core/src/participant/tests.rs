//! One test per rule of PROTOCOL.md section 3: put a participant in a known state, feed it ONE
//! input, and assert the exact outputs it emitted, in order (each Persist with its hard state,
//! each Send's target and request, each Reply, each Event).
//!
//! States are reached through the public inputs only: a master is bootstrapped and grows its
//! cluster by `add_member`, with a tiny synchronous in-memory network ([`Net`]) carrying the
//! messages; followers join by the `start` their master sends. Error texts are free-form on the
//! wire, so [`drain`] blanks them and the tests compare codes and the structured fields.

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
    Accept, AcceptResult, AdminMember, FailResult, Member, MemberChange, Payload, Prepare,
    PrepareResult, ReadIndex, Request, Response, Staged, Start, Submit,
};
use crate::{Config, StateMachine};

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
    })
}

fn accept(instance: u64, seq: u64, chg: Vec<String>, master: Option<&str>) -> Request {
    Request::Accept(Accept {
        instance,
        seq,
        chg,
        master: master.map(Member::new),
    })
}

fn addmember(instance: u64, seq: u64, mem: &str, master: &str) -> Request {
    Request::AddMember(MemberChange {
        instance,
        seq,
        mem: Member::new(mem),
        master: Some(Member::new(master)),
    })
}

fn rmmember(instance: u64, seq: u64, mem: &str, master: &str) -> Request {
    Request::RmMember(MemberChange {
        instance,
        seq,
        mem: Member::new(mem),
        master: Some(Member::new(master)),
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
    Payload::Changes(strings(chg))
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
    })
}

fn accept_refusal(code: ErrorCode, instance: Option<u64>) -> Response {
    let mut e = err(code);
    e.instance = instance;
    Response::Accept(AcceptResult {
        accepted: false,
        err: Some(e),
        instance,
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
        net.node(addrs[0])
            .add_member(0, RequestId(i as u64 + 1), s(a), None);
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
    (b, staged(1, 3, Payload::Changes(vec![x])))
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

// ---------------------------------------------------------------------------------------------
// prepare at a voter (rules 1-6)
// ---------------------------------------------------------------------------------------------

#[test]
fn prepare_rule1_unjoined_refuses_with_err_state() {
    let mut b = node(B);
    let outs = request(&mut b, 10, 7, prepare(5, C, Some(0)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(0, ErrorCode::State, 0))]
    );
    assert_eq!(b.instance(), 0);
}

#[test]
fn prepare_rule2_non_member_is_refused_with_the_voters_commit() {
    let mut b = follower3();
    // Level with us: a plain refusal.
    let outs = request(&mut b, 5000, 7, prepare(9, D, Some(2)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    assert_eq!(b.instance(), 1);
}

#[test]
fn prepare_rule2_non_member_behind_us_also_gets_our_snapshot() {
    let mut b = follower3();
    let m = next_msg(&b);
    let outs = request(&mut b, 5000, 7, prepare(9, D, Some(1)));
    assert_eq!(
        outs,
        vec![
            send(m, D, start(1, 2, D, B, &[A, B, C], empty_snap(), Some(2))),
            reply(7, prepare_refusal(1, ErrorCode::Denied, 2)),
        ]
    );
    assert_eq!(b.instance(), 1);
}

#[test]
fn prepare_rule3_lower_or_same_instance_for_another_master_is_refused() {
    let mut b = follower3();
    for (i, r) in [prepare(1, C, Some(2)), prepare(0, C, Some(2))]
        .into_iter()
        .enumerate()
    {
        let outs = request(&mut b, 5000, i as u64, r);
        assert_eq!(
            outs,
            vec![reply(i as u64, prepare_refusal(1, ErrorCode::Denied, 2))]
        );
    }
    assert_eq!(b.hard_state().promised_master.as_deref(), Some(A));
    // The same instance for the same master is a repeat: the vote again, nothing to persist.
    let outs = request(&mut b, 5000, 3, prepare(1, A, Some(2)));
    assert_eq!(outs, vec![reply(3, vote(1, 2, None))]);
}

#[test]
fn prepare_rule4_stale_candidate_is_refused() {
    let mut b = follower3();
    let outs = request(&mut b, 5000, 7, prepare(5, C, Some(1)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    // An absent seq counts as 0.
    let outs = request(&mut b, 5000, 8, prepare(5, C, None));
    assert_eq!(
        outs,
        vec![reply(8, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    assert_eq!(b.instance(), 1);
}

#[test]
fn prepare_rule5_refused_while_the_master_is_live() {
    let mut b = follower3(); // heard from its master at 0; minimum election timeout 1000
    let outs = request(&mut b, 999, 7, prepare(5, C, Some(2)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    let pid = next_persist(&b);
    let outs = request(&mut b, 1000, 8, prepare(5, C, Some(2)));
    let hard = hard_with(&b, |h| {
        h.promised = 5;
        h.promised_master = Some(s(C));
    });
    assert_eq!(outs, vec![persist(pid, hard), reply(8, vote(5, 2, None))]);
}

#[test]
fn prepare_rule5_a_master_refuses_to_be_deposed() {
    let mut a = master3();
    let outs = request(&mut a, 5000, 7, prepare(5, B, Some(2)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    assert_eq!(a.role(), Role::Master);
    assert_eq!(a.instance(), 1);
}

#[test]
fn prepare_rule6_vote_persists_the_promise_and_carries_seq_and_staged() {
    let (mut b, st) = follower3_staged();
    let pid = next_persist(&b);
    let outs = request(&mut b, 5000, 7, prepare(5, C, Some(2)));
    let hard = hard_with(&b, |h| {
        h.promised = 5;
        h.promised_master = Some(s(C));
    });
    assert_eq!(hard.staged, Some(st.clone()));
    assert_eq!(
        outs,
        vec![persist(pid, hard), reply(7, vote(5, 2, Some(st)))]
    );
    assert_eq!(b.role(), Role::Participant);
    assert_eq!(b.master(), None);
    // Voting restarts the election timer: [now + min, now + max).
    let t = b.poll_timeout().unwrap();
    assert!((6000..7000).contains(&t), "{t}");
}

#[test]
fn prepare_at_a_candidate_for_a_higher_instance_ends_its_campaign() {
    let mut b = follower3();
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    assert_eq!((b.role(), b.instance()), (Role::Candidate, 2));
    let pid = next_persist(&b);
    let outs = request(&mut b, 5001, 7, prepare(3, C, Some(2)));
    let hard = hard_with(&b, |h| {
        h.promised = 3;
        h.promised_master = Some(s(C));
    });
    assert_eq!(outs, vec![persist(pid, hard), reply(7, vote(3, 2, None))]);
    assert_eq!(b.role(), Role::Participant);
}

// ---------------------------------------------------------------------------------------------
// Election at a candidate
// ---------------------------------------------------------------------------------------------

#[test]
fn election_promises_to_itself_then_sends_prepare_to_every_other_member() {
    let mut b = follower3();
    let (pid, m) = (next_persist(&b), next_msg(&b));
    b.start_election(5000).unwrap();
    let outs = drain(&mut b, 5000);
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            persist(pid, hard),
            send(m, A, prepare(2, B, Some(2))),
            send(m + 1, C, prepare(2, B, Some(2))),
        ]
    );
    assert_eq!(b.role(), Role::Candidate);
}

#[test]
fn election_counts_its_own_vote_only_once_the_promise_is_durable() {
    let mut b = follower3();
    let (pid, m) = (next_persist(&b), next_msg(&b));
    b.start_election(5000).unwrap();
    let Some(Output::Persist(p)) = b.poll_output() else {
        panic!("the promise must be persisted first");
    };
    assert_eq!(p.id, PersistId(pid));
    assert_eq!(p.hard.promised, 2);
    assert_eq!(
        b.poll_output(),
        None,
        "nothing before the promise is durable"
    );
    // A's vote arrives while our own promise is not durable: one vote of two needed.
    b.handle_response(5000, MessageId(m), Ok(vote(2, 2, None)));
    assert_eq!(b.role(), Role::Candidate);
    assert_eq!(poll(&mut b), None);
    b.persisted(5000, PersistId(pid));
    let outs = drain(&mut b, 5000);
    assert_eq!(
        outs,
        vec![
            send(m, A, prepare(2, B, Some(2))),
            send(m + 1, C, prepare(2, B, Some(2))),
            ev(Event::BecameMaster { instance: 2 }),
            send(m + 2, A, accept(2, 3, vec![], Some(B))),
            send(m + 3, C, accept(2, 3, vec![], Some(B))),
        ]
    );
    assert_eq!(b.role(), Role::Master);
    assert!(
        !b.is_serving_master(),
        "not before its first accept is on a majority"
    );
}

#[test]
fn election_needs_n_over_2_plus_1_votes_with_four_members() {
    let mut b = cluster(&[A, B, C, D]).take(B);
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    drain(&mut b, 5000); // own promise durable: 1 vote
    assert_eq!(respond(&mut b, 5000, m, vote(2, 3, None)), vec![]);
    assert_eq!(b.role(), Role::Candidate, "2 of 4 is no majority");
    let outs = respond(&mut b, 5000, m + 1, vote(2, 3, None));
    assert_eq!(outs[0], ev(Event::BecameMaster { instance: 2 }));
    assert_eq!(b.role(), Role::Master);
}

#[test]
fn election_recovery_proposes_the_highest_instance_slot_at_commit_plus_1() {
    // Five members at commit 4; b staged x at (1, 5), then voted for c at 5, so it campaigns
    // at 6.
    let mut b = cluster(&[A, B, C, D, E]).take(B);
    let x = set("x", "1");
    request(&mut b, 0, 1, accept(1, 5, vec![x.clone()], Some(A)));
    request(&mut b, 5000, 2, prepare(5, C, Some(4)));
    let m = next_msg(&b);
    b.start_election(7000).unwrap();
    drain(&mut b, 7000);
    assert_eq!(b.instance(), 6);
    let y = set("y", "2");
    let z = set("z", "3");
    // c holds y from instance 3 at seq 5: higher than our x from instance 1.
    let outs = respond(
        &mut b,
        7000,
        m + 1,
        vote(6, 4, Some(staged(3, 5, changes(&[&y])))),
    );
    assert_eq!(outs, vec![]);
    // d holds z from instance 4, but at seq 4 (committed here): not a candidate for seq 5.
    let pid = next_persist(&b);
    let m2 = next_msg(&b);
    let outs = respond(
        &mut b,
        7000,
        m + 2,
        vote(6, 3, Some(staged(4, 4, changes(&[&z])))),
    );
    let first = accept(6, 5, vec![y.clone()], Some(B));
    let hard = hard_with(&b, |h| h.staged = Some(staged(6, 5, changes(&[&y]))));
    assert_eq!(
        outs,
        vec![
            ev(Event::BecameMaster { instance: 6 }),
            send(m2, A, first.clone()),
            send(m2 + 1, C, first.clone()),
            send(m2 + 2, D, first.clone()),
            send(m2 + 3, E, first),
            persist(pid, hard),
        ]
    );
}

#[test]
fn election_recovery_takes_its_own_staged_slot_when_no_vote_has_a_higher_one() {
    let (mut b, st) = follower3_staged();
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    let pid = next_persist(&b);
    let outs = respond(&mut b, 5000, m, vote(2, 2, None));
    let Payload::Changes(x) = st.payload.clone() else {
        unreachable!()
    };
    let first = accept(2, 3, x, Some(B));
    let hard = hard_with(&b, |h| h.staged = Some(staged(2, 3, st.payload.clone())));
    assert_eq!(
        outs,
        vec![
            ev(Event::BecameMaster { instance: 2 }),
            send(m + 2, A, first.clone()),
            send(m + 3, C, first),
            persist(pid, hard),
        ]
    );
}

#[test]
fn election_without_staged_slots_confirms_with_an_empty_accept_and_keeps_the_seq_free() {
    let mut b = follower3();
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    let outs = respond(&mut b, 5000, m, vote(2, 2, None));
    assert_eq!(
        outs,
        vec![
            ev(Event::BecameMaster { instance: 2 }),
            send(m + 2, A, accept(2, 3, vec![], Some(B))),
            send(m + 3, C, accept(2, 3, vec![], Some(B))),
        ]
    );
    assert!(!b.is_serving_master());
    // Submits wait for the confirmation.
    assert_eq!(
        request(&mut b, 5001, 50, submit(vec![set("k", "v")], false)),
        vec![]
    );
    // The confirmation is on a majority: the queued submit goes at the same seq 3, and nothing
    // was committed.
    let pid = next_persist(&b);
    let outs = respond(&mut b, 5002, m + 2, accepted());
    let batch = accept(2, 3, vec![set("k", "v")], Some(B));
    let hard = hard_with(&b, |h| {
        h.staged = Some(staged(2, 3, changes(&[&set("k", "v")])))
    });
    assert_eq!(
        outs,
        vec![
            send(m + 4, A, batch.clone()),
            send(m + 5, C, batch),
            persist(pid, hard)
        ]
    );
    assert!(b.is_serving_master());
    assert_eq!(b.commit(), 2);
}

#[test]
fn election_stands_down_on_a_refusal_with_a_higher_instance() {
    let mut b = follower3();
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    let outs = respond(&mut b, 5000, m, prepare_refusal(7, ErrorCode::Denied, 2));
    assert_eq!(
        outs,
        vec![],
        "it does not promise an instance it only heard of"
    );
    assert_eq!(b.role(), Role::Participant);
    assert_eq!(b.instance(), 2);
    let t = b.poll_timeout().unwrap();
    assert!((6000..7000).contains(&t), "{t}");
    // The next election goes above what it saw.
    let m = next_msg(&b);
    b.start_election(6000).unwrap();
    let outs = drain(&mut b, 6000);
    assert_eq!(outs[1], send(m, A, prepare(8, B, Some(2))));
}

#[test]
fn election_stands_down_when_a_voter_has_a_higher_commit() {
    let mut b = follower3();
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    let outs = respond(&mut b, 5000, m, prepare_refusal(1, ErrorCode::Denied, 9));
    assert_eq!(outs, vec![]);
    assert_eq!(b.role(), Role::Participant);
}

#[test]
fn election_starts_an_unjoined_voter_then_asks_it_again() {
    // d was added (commit 3) but its start was lost: it is still unjoined.
    let mut net = cluster3();
    net.node(A).add_member(0, RequestId(1), s(D), None);
    net.run();
    let mut b = net.take(B);
    assert_eq!(b.members(), strings(&[A, B, C, D]).as_slice());
    let mut d = node(D);
    let m = next_msg(&b);
    b.start_election(5000).unwrap();
    let outs = drain(&mut b, 5000);
    assert_eq!(outs[3], send(m + 2, D, prepare(2, B, Some(3))));
    let answer = request(&mut d, 5000, 1, prepare(2, B, Some(3)));
    assert_eq!(
        answer,
        vec![reply(1, prepare_refusal(0, ErrorCode::State, 0))]
    );
    let outs = respond(&mut b, 5000, m + 2, prepare_refusal(0, ErrorCode::State, 0));
    let st = start(2, 3, D, B, &[A, B, C, D], empty_snap(), Some(3));
    assert_eq!(outs, vec![send(m + 3, D, st.clone())]);
    // d joins with it, following the candidate at its instance, and then can vote for it.
    let Request::Start(st) = st else {
        unreachable!()
    };
    let answer = request(&mut d, 5000, 2, Request::Start(st));
    assert_eq!(answer.last(), Some(&reply(2, ok())));
    assert_eq!(d.instance(), 2);
    let outs = respond(&mut b, 5000, m + 3, ok());
    assert_eq!(outs, vec![send(m + 4, D, prepare(2, B, Some(3)))]);
    let answer = request(&mut d, 5000, 3, prepare(2, B, Some(3)));
    assert_eq!(answer, vec![reply(3, vote(2, 3, None))]);
}

// ---------------------------------------------------------------------------------------------
// accept at a follower (rules 1-4)
// ---------------------------------------------------------------------------------------------

#[test]
fn accept_rule1_unjoined_refuses_with_err_state() {
    let mut b = node(B);
    let outs = request(&mut b, 0, 7, accept(1, 1, vec![set("k", "v")], Some(A)));
    assert_eq!(outs, vec![reply(7, accept_refusal(ErrorCode::State, None))]);
}

#[test]
fn accept_rule1_lower_instance_is_refused_with_the_promise() {
    let mut b = follower3();
    request(&mut b, 5000, 1, prepare(5, C, Some(2)));
    let outs = request(&mut b, 5001, 7, accept(1, 3, vec![set("k", "v")], Some(A)));
    assert_eq!(
        outs,
        vec![reply(7, accept_refusal(ErrorCode::Denied, Some(5)))]
    );
    assert_eq!(b.staged(), None);
}

#[test]
fn accept_rule1_higher_instance_is_promised_and_names_the_master() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let k = set("k", "v");
    let outs = request(&mut b, 10, 7, accept(3, 3, vec![k.clone()], Some(C)));
    let hard = hard_with(&b, |h| {
        h.promised = 3;
        h.promised_master = Some(s(C));
        h.staged = Some(staged(3, 3, changes(&[&k])));
    });
    assert_eq!(outs, vec![persist(pid, hard), reply(7, accepted())]);
    assert_eq!(b.master(), Some(C));
}

#[test]
fn accept_rule1_higher_instance_without_master_asks_for_a_start() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let outs = request(&mut b, 10, 7, accept(3, 3, vec![set("k", "v")], None));
    let hard = hard_with(&b, |h| {
        h.promised = 3;
        h.promised_master = None;
    });
    assert_eq!(
        outs,
        vec![
            persist(pid, hard),
            reply(7, accept_refusal(ErrorCode::State, None))
        ]
    );
    assert_eq!(b.staged(), None);
    assert_eq!(b.master(), None);
}

#[test]
fn accept_rule2_at_or_below_commit_is_accepted_without_change() {
    let mut b = follower3();
    let before = b.hard_state().clone();
    let outs = request(&mut b, 10, 7, accept(1, 2, vec![set("k", "v")], Some(A)));
    assert_eq!(outs, vec![reply(7, accepted())]);
    assert_eq!(b.hard_state(), &before);
    assert_eq!(b.state().get("k"), None);
}

#[test]
fn accept_rule3_commits_the_staged_slot_of_its_instance_at_commit_plus_2() {
    let (mut b, st) = follower3_staged();
    let pid = next_persist(&b);
    let y = set("y", "2");
    let outs = request(&mut b, 10, 7, accept(1, 4, vec![y.clone()], Some(A)));
    let hard = hard_with(&b, |h| {
        h.commit = 3;
        h.staged = Some(staged(1, 4, changes(&[&y])));
    });
    let entry = Entry {
        seq: 3,
        payload: st.payload.clone(),
    };
    assert_eq!(
        outs,
        vec![
            committed(3, st.payload),
            persist_full(pid, hard, vec![entry], None),
            reply(7, accepted()),
        ]
    );
    assert_eq!(b.state().get("x"), Some("1"));
}

#[test]
fn accept_rule3_empty_accept_at_commit_plus_2_commits_only_up_to_s_minus_1() {
    let (mut b, st) = follower3_staged();
    let outs = request(&mut b, 10, 7, accept(1, 4, vec![], Some(A)));
    assert_eq!(outs[0], committed(3, st.payload));
    assert_eq!(outs.last(), Some(&reply(7, accepted())));
    assert_eq!((b.commit(), b.staged()), (3, None));
}

#[test]
fn accept_rule3_staged_slot_of_another_instance_is_a_gap() {
    let (mut b, st) = follower3_staged();
    let pid = next_persist(&b);
    let outs = request(&mut b, 10, 7, accept(2, 4, vec![set("y", "2")], Some(C)));
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(C));
    });
    assert_eq!(
        outs,
        vec![
            persist(pid, hard),
            reply(7, accept_refusal(ErrorCode::Gap, None))
        ]
    );
    assert_eq!((b.commit(), b.staged()), (2, Some(&st)));
}

#[test]
fn accept_rule3_further_ahead_is_a_gap() {
    let mut b = follower3();
    let outs = request(&mut b, 10, 7, accept(1, 5, vec![], Some(A)));
    assert_eq!(outs, vec![reply(7, accept_refusal(ErrorCode::Gap, None))]);
    let outs = request(&mut b, 10, 8, accept(1, 4, vec![set("y", "2")], Some(A)));
    assert_eq!(outs, vec![reply(8, accept_refusal(ErrorCode::Gap, None))]);
    assert_eq!((b.commit(), b.staged()), (2, None));
}

#[test]
fn accept_rule4_stages_a_payload_replacing_the_staged_slot() {
    let (mut b, _) = follower3_staged();
    let pid = next_persist(&b);
    let y = set("y", "2");
    let outs = request(&mut b, 10, 7, accept(2, 3, vec![y.clone()], Some(C)));
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(C));
        h.staged = Some(staged(2, 3, changes(&[&y])));
    });
    assert_eq!(outs, vec![persist(pid, hard), reply(7, accepted())]);
}

#[test]
fn accept_rule4_the_same_accept_again_persists_nothing() {
    let (mut b, st) = follower3_staged();
    let Payload::Changes(x) = st.payload.clone() else {
        unreachable!()
    };
    let outs = request(&mut b, 10, 7, accept(1, 3, x, Some(A)));
    assert_eq!(outs, vec![reply(7, accepted())]);
    assert_eq!(b.staged(), Some(&st));
}

#[test]
fn accept_rule4_empty_accept_clears_nothing() {
    let (mut b, st) = follower3_staged();
    // A heartbeat of the same instance.
    let outs = request(&mut b, 10, 7, accept(1, 3, vec![], Some(A)));
    assert_eq!(outs, vec![reply(7, accepted())]);
    // A new master's confirmation (traps A, B): the promise moves, the slot stays.
    let pid = next_persist(&b);
    let outs = request(&mut b, 11, 8, accept(2, 3, vec![], Some(C)));
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(C));
    });
    assert_eq!(hard.staged, Some(st.clone()));
    assert_eq!(outs, vec![persist(pid, hard), reply(8, accepted())]);
    assert_eq!((b.commit(), b.staged()), (2, Some(&st)));
}

#[test]
fn accept_in_an_instance_promised_to_another_candidate_follows_its_sender() {
    // Voters promise one candidate per instance: whoever sends accepts in it won it.
    let mut b = follower3();
    request(&mut b, 5000, 1, prepare(5, C, Some(2)));
    let pid = next_persist(&b);
    let k = set("k", "v");
    let outs = request(&mut b, 5001, 7, accept(5, 3, vec![k.clone()], Some(A)));
    let hard = hard_with(&b, |h| {
        h.promised_master = Some(s(A));
        h.staged = Some(staged(5, 3, changes(&[&k])));
    });
    assert_eq!(hard.promised, 5);
    assert_eq!(outs, vec![persist(pid, hard), reply(7, accepted())]);
    assert_eq!(b.master(), Some(A));
}

#[test]
fn accept_in_its_own_instance_ends_a_candidates_campaign() {
    let mut b = follower3();
    b.start_election(5000).unwrap();
    drain(&mut b, 5000);
    let pid = next_persist(&b);
    let k = set("k", "v");
    let outs = request(&mut b, 5001, 7, accept(2, 3, vec![k.clone()], Some(C)));
    let hard = hard_with(&b, |h| {
        h.promised_master = Some(s(C));
        h.staged = Some(staged(2, 3, changes(&[&k])));
    });
    assert_eq!(outs, vec![persist(pid, hard), reply(7, accepted())]);
    assert_eq!((b.role(), b.master()), (Role::Participant, Some(C)));
}

#[test]
fn accept_in_a_masters_own_instance_from_another_sender_is_refused() {
    let mut a = master3();
    let before = a.hard_state().clone();
    let outs = request(&mut a, 10, 7, accept(1, 3, vec![set("k", "v")], Some(B)));
    assert_eq!(
        outs,
        vec![reply(7, accept_refusal(ErrorCode::Denied, Some(1)))]
    );
    assert_eq!(a.hard_state(), &before);
    assert_eq!(a.role(), Role::Master);
}

#[test]
fn addmember_at_a_follower_stages_the_member_change() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let outs = request(&mut b, 10, 7, addmember(1, 3, D, A));
    let hard = hard_with(&b, |h| h.staged = Some(staged(1, 3, Payload::Add(s(D)))));
    assert_eq!(outs, vec![persist(pid, hard), reply(7, ok())]);
    assert_eq!(
        b.members(),
        strings(&[A, B, C]).as_slice(),
        "not before it commits"
    );
}

#[test]
fn follower_learns_its_masters_self_removal_and_drops_it() {
    let mut b = follower3();
    request(&mut b, 0, 1, rmmember(1, 3, A, A));
    let pid = next_persist(&b);
    let outs = request(&mut b, 10, 7, accept(1, 4, vec![], Some(A)));
    let hard = hard_with(&b, |h| {
        h.commit = 3;
        h.staged = None;
        h.members = strings(&[B, C]);
        h.members_version = 3;
    });
    let entry = Entry {
        seq: 3,
        payload: Payload::Rm(s(A)),
    };
    assert_eq!(
        outs,
        vec![
            committed(3, Payload::Rm(s(A))),
            members_changed(&[B, C], 3),
            persist_full(pid, hard, vec![entry], None),
            reply(7, accepted()),
        ]
    );
    assert_eq!(
        b.master(),
        None,
        "no need to wait for the silence of a removed master"
    );
    // And with its master gone it can win with c's vote right away.
    let outs = request(&mut b, 11, 8, prepare(2, C, Some(3)));
    assert_eq!(outs.last(), Some(&reply(8, vote(2, 3, None))));
}

// ---------------------------------------------------------------------------------------------
// The master
// ---------------------------------------------------------------------------------------------

#[test]
fn master_heartbeats_every_interval_when_idle() {
    let mut a = master3();
    assert_eq!(a.poll_timeout(), Some(100));
    assert_eq!(tick(&mut a, 50), vec![], "early: nothing");
    let m = next_msg(&a);
    let outs = tick(&mut a, 100);
    let hb = accept(1, 3, vec![], Some(A));
    assert_eq!(outs, vec![send(m, B, hb.clone()), send(m + 1, C, hb)]);
    assert_eq!(a.poll_timeout(), Some(200));
}

#[test]
fn master_answers_a_submit_only_after_a_majority_holds_it() {
    let mut a = master3();
    let (pid, m) = (next_persist(&a), next_msg(&a));
    let k = set("k", "v");
    let outs = request(&mut a, 10, 100, submit(vec![k.clone()], false));
    let hard = hard_with(&a, |h| h.staged = Some(staged(1, 3, changes(&[&k]))));
    let acc = accept(1, 3, vec![k.clone()], Some(A));
    assert_eq!(
        outs,
        vec![
            send(m, B, acc.clone()),
            send(m + 1, C, acc),
            persist(pid, hard)
        ],
        "sent before its own copy is durable, no answer yet"
    );
    // Its own durable vote is 1 of 2: still no answer.
    assert_eq!(a.commit(), 2);
    let outs = respond(&mut a, 20, m, accepted());
    let hard = hard_with(&a, |h| {
        h.commit = 3;
        h.staged = None;
    });
    let entry = Entry {
        seq: 3,
        payload: changes(&[&k]),
    };
    let hb = accept(1, 4, vec![], Some(A));
    assert_eq!(
        outs,
        vec![
            committed(3, changes(&[&k])),
            // Chosen: answered without waiting for the master's own record of the commit.
            reply(100, committed_ok(3, 1)),
            persist_full(pid + 1, hard, vec![entry], None),
            send(m + 2, B, hb.clone()),
            send(m + 3, C, hb),
        ]
    );
    assert_eq!(a.state().get("k"), Some("v"));
    // A late vote for a decided slot changes nothing.
    assert_eq!(respond(&mut a, 21, m + 1, accepted()), vec![]);
}

#[test]
fn master_counts_its_own_accept_only_once_durable() {
    let mut a = master3();
    let (pid, m) = (next_persist(&a), next_msg(&a));
    let k = set("k", "v");
    a.handle_request(10, RequestId(100), submit(vec![k.clone()], false));
    // The accept goes out before the master's own copy is durable...
    let acc = accept(1, 3, vec![k.clone()], Some(A));
    assert_eq!(poll(&mut a), Some(send(m, B, acc.clone())));
    assert_eq!(poll(&mut a), Some(send(m + 1, C, acc)));
    let Some(Output::Persist(p)) = a.poll_output() else {
        panic!("the master's own staged copy is persisted");
    };
    assert_eq!(p.id, PersistId(pid));
    // ...so b's vote is 1 of the 2 needed until that copy is durable.
    a.handle_response(20, MessageId(m), Ok(accepted()));
    assert_eq!(a.commit(), 2);
    assert_eq!(poll(&mut a), None);
    a.persisted(20, PersistId(pid));
    let outs = drain(&mut a, 20);
    assert_eq!(outs[0], committed(3, changes(&[&k])));
    assert!(outs.contains(&reply(100, committed_ok(3, 1))));
    assert_eq!(a.commit(), 3);
}

#[test]
fn master_batches_queued_submits_into_the_next_accept() {
    let mut a = master3();
    let m = next_msg(&a);
    let (c1, c2, c3) = (set("k1", "1"), set("k2", "2"), set("k3", "3"));
    request(&mut a, 10, 100, submit(vec![c1.clone()], false));
    // In flight: the next two only queue.
    assert_eq!(
        request(&mut a, 11, 101, submit(vec![c2.clone()], false)),
        vec![]
    );
    assert_eq!(
        request(&mut a, 12, 102, submit(vec![c3.clone()], false)),
        vec![]
    );
    let pid = next_persist(&a);
    let outs = respond(&mut a, 20, m, accepted());
    let batch = accept(1, 4, vec![c2.clone(), c3.clone()], Some(A));
    let hard = hard_with(&a, |h| {
        h.commit = 3;
        h.staged = Some(staged(1, 4, changes(&[&c2, &c3])));
    });
    let entry = Entry {
        seq: 3,
        payload: changes(&[&c1]),
    };
    assert_eq!(
        outs,
        vec![
            committed(3, changes(&[&c1])),
            reply(100, committed_ok(3, 1)),
            send(m + 2, B, batch.clone()),
            send(m + 3, C, batch),
            persist_full(pid, hard, vec![entry], None),
        ]
    );
    // Both batched submits are answered by one decision.
    let outs = respond(&mut a, 30, m + 3, accepted());
    assert_eq!(outs[0], committed(4, changes(&[&c2, &c3])));
    let replies: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Reply(_)))
        .collect();
    assert_eq!(
        replies,
        vec![
            &reply(101, committed_ok(4, 1)),
            &reply(102, committed_ok(4, 1))
        ]
    );
}

#[test]
fn master_bounds_a_batch_by_max_batch() {
    let mut a = cluster_with(&[A, B, C], |c| c.max_batch = 2).take(A);
    let m = next_msg(&a);
    let c: Vec<String> = (0..4).map(|i| set(&alloc::format!("k{i}"), "v")).collect();
    request(&mut a, 10, 100, submit(vec![c[0].clone()], false));
    for (i, x) in c[1..].iter().enumerate() {
        request(&mut a, 11, 101 + i as u64, submit(vec![x.clone()], false));
    }
    let outs = respond(&mut a, 20, m, accepted());
    let batch = accept(1, 4, vec![c[1].clone(), c[2].clone()], Some(A));
    assert_eq!(outs[2], send(m + 2, B, batch.clone()));
    assert_eq!(outs[3], send(m + 3, C, batch));
}

#[test]
fn master_resends_the_inflight_accept_unchanged() {
    let mut a = master3();
    let m = next_msg(&a);
    let c1 = set("k1", "1");
    request(&mut a, 10, 100, submit(vec![c1.clone()], false));
    request(&mut a, 11, 101, submit(vec![set("k2", "2")], false));
    // Unanswered at the next tick: the same accept again, not re-batched with k2 (trap K).
    let outs = tick(&mut a, 110);
    let same = accept(1, 3, vec![c1], Some(A));
    assert_eq!(
        outs,
        vec![send(m + 2, B, same.clone()), send(m + 3, C, same)]
    );
}

#[test]
fn master_sends_start_on_err_gap_then_resends_the_accept() {
    let mut a = master3();
    let m = next_msg(&a);
    let c1 = set("k1", "1");
    request(&mut a, 10, 100, submit(vec![c1.clone()], false));
    let outs = respond(&mut a, 20, m, accept_refusal(ErrorCode::Gap, None));
    assert_eq!(
        outs,
        vec![send(
            m + 2,
            B,
            start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2))
        )]
    );
    // While the start is on its way, a tick does not send b accepts that would only gap again.
    let outs = tick(&mut a, 110);
    assert_eq!(
        outs,
        vec![send(m + 3, C, accept(1, 3, vec![c1.clone()], Some(A)))]
    );
    let outs = respond(&mut a, 120, m + 2, ok());
    assert_eq!(outs, vec![send(m + 4, B, accept(1, 3, vec![c1], Some(A)))]);
}

#[test]
fn master_sends_start_on_err_state() {
    let mut a = master3();
    let m = next_msg(&a);
    request(&mut a, 10, 100, submit(vec![set("k1", "1")], false));
    let outs = respond(&mut a, 20, m + 1, accept_refusal(ErrorCode::State, None));
    assert_eq!(
        outs,
        vec![send(
            m + 2,
            C,
            start(1, 2, C, A, &[A, B, C], empty_snap(), Some(2))
        )]
    );
}

#[test]
fn master_steps_down_on_a_refusal_with_a_higher_instance() {
    let mut a = master3();
    let m = next_msg(&a);
    request(&mut a, 10, 100, submit(vec![set("k1", "1")], false));
    request(&mut a, 11, 101, submit(vec![set("k2", "2")], false));
    let outs = respond(&mut a, 20, m, accept_refusal(ErrorCode::Denied, Some(4)));
    assert_eq!(
        outs,
        vec![
            reply(100, failed(ErrorCode::State, None)),
            reply(101, failed(ErrorCode::State, None)),
            ev(Event::LostMastership { instance: 1 }),
        ]
    );
    assert_eq!(
        (a.role(), a.master(), a.instance()),
        (Role::Participant, None, 1)
    );
    // The next election goes above the instance it learned of.
    let m = next_msg(&a);
    a.start_election(30).unwrap();
    let outs = drain(&mut a, 30);
    assert_eq!(outs[1], send(m, B, prepare(5, A, Some(2))));
}

#[test]
fn master_steps_down_on_err_denied_without_an_instance() {
    let mut a = master3();
    let m = next_msg(&a);
    request(&mut a, 10, 100, submit(vec![set("k1", "1")], false));
    let outs = respond(&mut a, 20, m, accept_refusal(ErrorCode::Denied, None));
    assert_eq!(
        outs,
        vec![
            reply(100, failed(ErrorCode::State, None)),
            ev(Event::LostMastership { instance: 1 }),
        ]
    );
    assert_eq!(a.role(), Role::Participant);
}

#[test]
fn master_steps_down_without_a_majority_for_an_election_timeout() {
    let mut a = master3(); // last heard from b and c at 0; minimum election timeout 1000
    let m = next_msg(&a);
    let c1 = set("k1", "1");
    request(&mut a, 10, 100, submit(vec![c1.clone()], false));
    request(&mut a, 11, 101, submit(vec![set("k2", "2")], false));
    let outs = tick(&mut a, 900);
    let again = accept(1, 3, vec![c1], Some(A));
    assert_eq!(
        outs,
        vec![send(m + 2, B, again.clone()), send(m + 3, C, again)],
        "still within the timeout: re-send"
    );
    assert_eq!(a.poll_timeout(), Some(1000));
    let outs = tick(&mut a, 1000);
    assert_eq!(
        outs,
        vec![
            reply(100, failed(ErrorCode::Majority, None)),
            reply(101, failed(ErrorCode::Majority, None)),
            ev(Event::LostMastership { instance: 1 }),
        ]
    );
    assert_eq!(a.role(), Role::Participant);
}

#[test]
fn master_keeps_office_while_a_majority_answers() {
    let mut a = master3();
    let m = next_msg(&a);
    request(&mut a, 10, 100, submit(vec![set("k1", "1")], false));
    tick(&mut a, 900);
    // b answers the re-sent accept at 950: a and b are a majority.
    respond(&mut a, 950, m + 2, accepted());
    let outs = tick(&mut a, 1050);
    assert_eq!(a.role(), Role::Master);
    assert!(
        outs.iter().all(|o| matches!(o, Output::Send(_))),
        "{outs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// start at a node
// ---------------------------------------------------------------------------------------------

#[test]
fn start_with_a_newer_commit_is_installed_whatever_its_instance() {
    let (mut b, _) = follower3_staged();
    request(&mut b, 5000, 1, prepare(5, C, Some(2))); // promised 5 to c
    let snap = {
        let mut kv = KvStore::new();
        kv.apply(3, &set("x", "1"));
        kv.apply(4, &set("k", "v"));
        snap_of(&kv)
    };
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        5010,
        7,
        start(1, 4, B, A, &[A, B, C], snap.clone(), Some(2)),
    );
    let hard = hard_with(&b, |h| {
        h.commit = 4;
        h.staged = None; // covered by the snapshot
    });
    assert_eq!(
        (hard.promised, hard.promised_master.as_deref()),
        (5, Some(C))
    );
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 4 }),
            members_changed(&[A, B, C], 2),
            persist_full(pid, hard, vec![], Some(Snapshot { seq: 4, data: snap })),
            reply(7, ok()),
        ]
    );
    assert_eq!(b.state().get("k"), Some("v"));
    assert_eq!(
        (b.instance(), b.master()),
        (5, None),
        "promise and master unchanged"
    );
}

#[test]
fn start_at_the_same_commit_keeps_the_staged_slot() {
    let (mut b, st) = follower3_staged();
    let outs = request(
        &mut b,
        10,
        7,
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    assert_eq!(outs, vec![reply(7, ok())]);
    assert_eq!(b.staged(), Some(&st));
    // From a new master at a higher instance: adopts it, still keeps the slot.
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        11,
        8,
        start(3, 2, B, C, &[A, B, C], empty_snap(), Some(2)),
    );
    let hard = hard_with(&b, |h| {
        h.promised = 3;
        h.promised_master = Some(s(C));
    });
    assert_eq!(hard.staged, Some(st.clone()));
    assert_eq!(outs, vec![persist(pid, hard), reply(8, ok())]);
    assert_eq!(b.master(), Some(C));
}

#[test]
fn start_at_the_same_commit_from_a_lower_instance_is_refused_with_the_promise() {
    let mut b = follower3();
    request(&mut b, 5000, 1, prepare(5, C, Some(2)));
    let outs = request(
        &mut b,
        5010,
        7,
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, Some(5)))]);
}

#[test]
fn start_with_an_older_snapshot_is_err_sequence() {
    let mut b = follower3();
    let before = b.hard_state().clone();
    let outs = request(
        &mut b,
        10,
        7,
        start(4, 1, B, A, &[A, B, C], empty_snap(), Some(1)),
    );
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::Sequence, None))]);
    assert_eq!(b.hard_state(), &before);
}

#[test]
fn start_whose_participants_exclude_the_node_removes_it() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        10,
        7,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let hard = hard_with(&b, |h| {
        h.status = Status::Removed;
        h.commit = 3;
        h.members = strings(&[A, C]);
        h.members_version = 3;
    });
    let snapshot = Some(Snapshot {
        seq: 3,
        data: empty_snap(),
    });
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 3 }),
            members_changed(&[A, C], 3),
            ev(Event::Removed),
            persist_full(pid, hard, vec![], snapshot),
            reply(7, ok()),
        ]
    );
    assert_eq!((b.role(), b.poll_timeout()), (Role::Removed, None));
}

#[test]
fn start_that_includes_a_removed_node_again_rejoins_it() {
    let mut b = follower3();
    request(
        &mut b,
        10,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(b.role(), Role::Removed);
    let outs = request(
        &mut b,
        20,
        7,
        start(1, 4, B, A, &[A, B, C], empty_snap(), Some(4)),
    );
    assert_eq!(
        outs[..3],
        [
            ev(Event::SnapshotInstalled { seq: 4 }),
            members_changed(&[A, B, C], 4),
            ev(Event::Joined),
        ]
    );
    assert_eq!(outs.last(), Some(&reply(7, ok())));
    assert_eq!(
        (b.role(), b.hard_state().status),
        (Role::Participant, Status::Joined)
    );
}

#[test]
fn start_for_another_cluster_is_refused() {
    let mut b = follower3();
    let Request::Start(mut st) = start(1, 9, B, A, &[A, B, C], empty_snap(), None) else {
        unreachable!()
    };
    st.cluster = s("other");
    let outs = request(&mut b, 10, 7, Request::Start(st));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::Denied, None))]);
    assert_eq!(b.commit(), 2);
}

// ---------------------------------------------------------------------------------------------
// submit
// ---------------------------------------------------------------------------------------------

#[test]
fn submit_of_a_malformed_change_is_err_encoding_and_never_replicated() {
    let mut a = master3();
    let outs = request(&mut a, 10, 7, submit(vec![set("k", "v"), s("chg1")], false));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::Encoding, None))]);
    let mut b = follower3();
    let outs = request(&mut b, 10, 8, submit(vec![s("{\"op\":\"put\"}")], false));
    assert_eq!(outs, vec![reply(8, failed(ErrorCode::Encoding, None))]);
}

#[test]
fn submit_at_a_follower_is_forwarded_once_and_the_answer_relayed() {
    let mut b = follower3();
    let m = next_msg(&b);
    let k = set("k", "v");
    let outs = request(&mut b, 10, 7, submit(vec![k.clone()], false));
    assert_eq!(outs, vec![send(m, A, submit(vec![k.clone()], true))]);
    assert_eq!(respond(&mut b, 20, m, ok()), vec![reply(7, ok())]);
    // An error from the master is relayed as it is.
    request(&mut b, 30, 8, submit(vec![k], false));
    let outs = respond(&mut b, 40, m + 1, failed(ErrorCode::Majority, None));
    assert_eq!(outs, vec![reply(8, failed(ErrorCode::Majority, None))]);
}

#[test]
fn submit_already_forwarded_is_not_forwarded_again() {
    let mut b = follower3();
    let outs = request(&mut b, 10, 7, submit(vec![set("k", "v")], true));
    let e = err(ErrorCode::State).with_master(Some(s(A)));
    assert_eq!(outs, vec![reply(7, Response::Fail(FailResult::error(e)))]);
}

#[test]
fn submit_without_a_known_master_is_err_state() {
    let mut b = follower3();
    request(&mut b, 5000, 1, prepare(5, C, Some(2))); // voted: no master until c leads
    assert_eq!(b.master(), None);
    let outs = request(&mut b, 5001, 7, submit(vec![set("k", "v")], false));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, None))]);
}

#[test]
fn submit_forward_failures_start_an_election_after_the_configured_number() {
    let mut b = follower3();
    let k = set("k", "v");
    for i in 0..2u64 {
        let m = next_msg(&b);
        request(&mut b, 10 + i, 10 + i, submit(vec![k.clone()], false));
        let outs = unreachable_peer(&mut b, 20 + i, m);
        assert_eq!(outs, vec![reply(10 + i, failed(ErrorCode::State, None))]);
        assert_eq!(b.role(), Role::Participant);
    }
    let m = next_msg(&b);
    request(&mut b, 30, 12, submit(vec![k], false));
    let pid = next_persist(&b);
    let outs = unreachable_peer(&mut b, 40, m);
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            reply(12, failed(ErrorCode::State, None)),
            persist(pid, hard),
            send(m + 1, A, prepare(2, B, Some(2))),
            send(m + 2, C, prepare(2, B, Some(2))),
        ]
    );
    assert_eq!(b.role(), Role::Candidate);
}

#[test]
fn a_successful_forward_resets_the_failure_count() {
    let mut b = follower3();
    let k = set("k", "v");
    let answer = |b: &mut P, i: u64, r: Result<Response, Error>| {
        let m = next_msg(b);
        request(b, i, i, submit(vec![k.clone()], false));
        b.handle_response(i, MessageId(m), r);
        drain(b, i)
    };
    let down = || Err(Error::new(ErrorCode::Connect, "refused"));
    answer(&mut b, 1, down());
    answer(&mut b, 2, down());
    answer(&mut b, 3, Ok(ok()));
    answer(&mut b, 4, down());
    answer(&mut b, 5, down());
    assert_eq!(
        b.role(),
        Role::Participant,
        "2 failures in a row since the success"
    );
}

// ---------------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------------

#[test]
fn membership_add_commits_then_the_master_starts_the_new_member() {
    let mut a = master3();
    let (pid, m) = (next_persist(&a), next_msg(&a));
    let outs = drain_after(&mut a, 10, |a| a.add_member(10, RequestId(100), s(D), None));
    let hard = hard_with(&a, |h| h.staged = Some(staged(1, 3, Payload::Add(s(D)))));
    let add = addmember(1, 3, D, A);
    assert_eq!(
        outs,
        vec![
            send(m, B, add.clone()),
            send(m + 1, C, add),
            persist(pid, hard)
        ]
    );
    let outs = respond(&mut a, 20, m, ok());
    let hard = hard_with(&a, |h| {
        h.commit = 3;
        h.staged = None;
        h.members = strings(&[A, B, C, D]);
        h.members_version = 3;
    });
    let entry = Entry {
        seq: 3,
        payload: Payload::Add(s(D)),
    };
    let hb = accept(1, 4, vec![], Some(A));
    assert_eq!(
        outs,
        vec![
            committed(3, Payload::Add(s(D))),
            members_changed(&[A, B, C, D], 3),
            persist_full(pid + 1, hard, vec![entry], None),
            send(
                m + 2,
                D,
                start(1, 3, D, A, &[A, B, C, D], empty_snap(), Some(3))
            ),
            reply(100, ok()),
            send(m + 3, B, hb.clone()),
            send(m + 4, C, hb),
        ]
    );
}

/// Runs a command on `p` and drains its outputs.
fn drain_after(p: &mut P, now: u64, f: impl FnOnce(&mut P)) -> Vec<Output> {
    f(p);
    drain(p, now)
}

#[test]
fn membership_changes_go_one_at_a_time() {
    let mut a = master3();
    let m = next_msg(&a);
    drain_after(&mut a, 10, |a| a.add_member(10, RequestId(100), s(D), None));
    let outs = drain_after(&mut a, 11, |a| a.add_member(11, RequestId(101), s(E), None));
    assert_eq!(outs, vec![], "waits for the first change to commit");
    let outs = respond(&mut a, 20, m, ok());
    // After the add of d commits, e goes as a slot of its own, to the new member list.
    let add_e = addmember(1, 4, E, A);
    let sends: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(x) if x.request == add_e))
        .collect();
    assert_eq!(
        sends,
        vec![
            &send(m + 3, B, add_e.clone()),
            &send(m + 4, C, add_e.clone()),
            &send(m + 5, D, add_e.clone()),
        ]
    );
    assert!(outs.contains(&reply(100, ok())));
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Reply(r) if r.id == RequestId(101))));
    // With four members, b's vote alone (2 of 4) does not decide e.
    assert_eq!(respond(&mut a, 30, m + 3, ok()), vec![]);
    let outs = respond(&mut a, 31, m + 4, ok());
    assert_eq!(outs[0], committed(4, Payload::Add(s(E))));
    assert!(outs.contains(&reply(101, ok())));
}

#[test]
fn membership_stale_version_is_err_sequence() {
    let mut a = master3(); // member-list version 2
    let outs = drain_after(&mut a, 10, |a| {
        a.add_member(10, RequestId(100), s(D), Some(1))
    });
    assert_eq!(outs, vec![reply(100, failed(ErrorCode::Sequence, None))]);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(101), s(C), Some(3))
    });
    assert_eq!(outs, vec![reply(101, failed(ErrorCode::Sequence, None))]);
    let m = next_msg(&a);
    let outs = drain_after(&mut a, 10, |a| {
        a.add_member(10, RequestId(102), s(D), Some(2))
    });
    assert_eq!(outs[0], send(m, B, addmember(1, 3, D, A)));
}

#[test]
fn membership_change_already_in_effect_is_answered_at_once() {
    let mut a = master3();
    let outs = drain_after(&mut a, 10, |a| a.add_member(10, RequestId(100), s(B), None));
    assert_eq!(outs, vec![reply(100, ok())]);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(101), s(D), None)
    });
    assert_eq!(outs, vec![reply(101, ok())]);
}

#[test]
fn membership_the_last_member_cannot_be_removed() {
    let mut a = node(A);
    a.bootstrap(0).unwrap();
    drain(&mut a, 0);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(100), s(A), None)
    });
    assert_eq!(outs, vec![reply(100, failed(ErrorCode::State, None))]);
    assert_eq!(a.members(), strings(&[A]).as_slice());
}

#[test]
fn membership_bad_address_is_err_encoding() {
    let mut a = master3();
    for (i, bad) in ["", "http://d/", "http://d e"].into_iter().enumerate() {
        let outs = drain_after(&mut a, 10, |a| {
            a.add_member(10, RequestId(i as u64), s(bad), None)
        });
        assert_eq!(
            outs,
            vec![reply(i as u64, failed(ErrorCode::Encoding, None))]
        );
    }
}

#[test]
fn membership_admin_call_at_a_follower_is_forwarded() {
    let mut b = follower3();
    let m = next_msg(&b);
    let outs = drain_after(&mut b, 10, |b| {
        b.add_member(10, RequestId(100), s(D), Some(2))
    });
    let fwd = Request::MembersAdd(AdminMember {
        addr: s(D),
        version: Some(2),
        forwarded: true,
    });
    assert_eq!(outs, vec![send(m, A, fwd)]);
    assert_eq!(respond(&mut b, 20, m, ok()), vec![reply(100, ok())]);
}

#[test]
fn membership_master_removing_itself_notifies_answers_and_steps_down() {
    let mut a = master3();
    let m = next_msg(&a);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(100), s(A), None)
    });
    let rm = rmmember(1, 3, A, A);
    assert_eq!(outs[..2], [send(m, B, rm.clone()), send(m + 1, C, rm)]);
    let pid = next_persist(&a);
    let outs = respond(&mut a, 20, m, ok());
    let hard = hard_with(&a, |h| {
        h.status = Status::Removed;
        h.commit = 3;
        h.staged = None;
        h.members = strings(&[B, C]);
        h.members_version = 3;
    });
    let entry = Entry {
        seq: 3,
        payload: Payload::Rm(s(A)),
    };
    let notice = accept(1, 4, vec![], Some(A));
    let want = [
        committed(3, Payload::Rm(s(A))),
        members_changed(&[B, C], 3),
        persist_full(pid, hard.clone(), vec![entry], None),
        send(m + 2, B, notice.clone()),
        send(m + 3, C, notice),
        reply(100, ok()),
        ev(Event::LostMastership { instance: 1 }),
        ev(Event::Removed),
    ];
    assert_eq!(outs[..want.len()], want[..]);
    // At most a repeat of the same hard state may follow.
    for o in &outs[want.len()..] {
        assert!(
            matches!(o, Output::Persist(p) if p.hard == hard && p.entries.is_empty()),
            "{o:?}"
        );
    }
    assert_eq!(
        (a.role(), a.master(), a.poll_timeout()),
        (Role::Removed, None, None)
    );
}

#[test]
fn membership_removed_node_pushes_its_snapshot_to_a_candidate_behind_it() {
    let mut c = follower3();
    // b plays c here: removed at commit 3, its last member list is [a, c].
    request(
        &mut c,
        0,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(c.role(), Role::Removed);
    let m = next_msg(&c);
    let outs = request(&mut c, 5000, 7, prepare(2, C, Some(2)));
    assert_eq!(
        outs,
        vec![
            send(m, C, start(1, 3, C, B, &[A, C], empty_snap(), Some(3))),
            reply(7, prepare_refusal(1, ErrorCode::State, 3)),
        ]
    );
    // A candidate level with it learns nothing from it; nor does a non-member.
    let outs = request(&mut c, 5000, 8, prepare(2, C, Some(3)));
    assert_eq!(
        outs,
        vec![reply(8, prepare_refusal(1, ErrorCode::State, 3))]
    );
    let outs = request(&mut c, 5000, 9, prepare(2, D, Some(0)));
    assert_eq!(
        outs,
        vec![reply(9, prepare_refusal(1, ErrorCode::State, 3))]
    );
}

#[test]
fn membership_removed_node_refuses_accepts_and_submits() {
    let mut b = follower3();
    request(
        &mut b,
        0,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let outs = request(&mut b, 10, 7, accept(1, 4, vec![], Some(A)));
    assert_eq!(outs, vec![reply(7, accept_refusal(ErrorCode::State, None))]);
    let outs = request(&mut b, 10, 8, submit(vec![set("k", "v")], false));
    assert_eq!(outs, vec![reply(8, failed(ErrorCode::State, None))]);
    let outs = request(
        &mut b,
        10,
        9,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(outs, vec![reply(9, failed(ErrorCode::State, None))]);
    assert_eq!(b.start_election(10).unwrap_err().code, ErrorCode::State);
}

// ---------------------------------------------------------------------------------------------
// Restore from what the host stored
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_of_a_master_resumes_as_a_participant() {
    let mut net = cluster3();
    net.node(A).submit(0, RequestId(1), vec![set("k", "v")]);
    net.run();
    assert_eq!(
        net.client,
        vec![Reply {
            id: RequestId(1),
            response: committed_ok(3, 1)
        }]
    );
    let stored = net.disks[A].clone();
    let before = net.take(A);
    let a = Participant::restore(cfg(A), KvStore::new(), stored, 7000).unwrap();
    assert_eq!(a.role(), Role::Participant, "never master after a restart");
    assert!(!a.is_serving_master());
    assert_eq!(a.master(), None);
    assert_eq!(a.instance(), 1);
    assert_eq!(a.commit(), 3);
    assert_eq!(a.members(), strings(&[A, B, C]).as_slice());
    assert_eq!(a.members_version(), 2);
    assert_eq!(a.state(), before.state());
    assert_eq!(a.state().get("k"), Some("v"));
    let t = a.poll_timeout().unwrap();
    assert!((8000..9000).contains(&t), "{t}");
}

#[test]
fn restore_then_campaign_goes_above_the_stored_promise() {
    let mut net = cluster3();
    let stored = net.disks[B].clone();
    net.take(B);
    let mut b = Participant::restore(cfg(B), KvStore::new(), stored, 7000).unwrap();
    let t = b.poll_timeout().unwrap();
    let (pid, m) = (next_persist(&b), next_msg(&b));
    let outs = tick(&mut b, t);
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            persist(pid, hard),
            send(m, A, prepare(2, B, Some(2))),
            send(m + 1, C, prepare(2, B, Some(2))),
        ]
    );
}

#[test]
fn restore_keeps_the_staged_slot_and_the_removed_status() {
    let (mut b, st) = follower3_staged();
    let mut disk = Stored::default();
    // Rebuild what a host would have stored: the start, then the staged accept.
    let mut fresh = node(B);
    fresh.handle_request(
        0,
        RequestId(1),
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    fresh.handle_request(0, RequestId(2), accept(1, 3, vec![set("x", "1")], Some(A)));
    while let Some(o) = fresh.poll_output() {
        if let Output::Persist(p) = o {
            disk.apply(&p);
            fresh.persisted(0, p.id);
        }
    }
    let r = Participant::restore(cfg(B), KvStore::new(), disk.clone(), 10).unwrap();
    assert_eq!(r.staged(), Some(&st));
    assert_eq!(r.hard_state(), b.hard_state());
    // Removed.
    request(
        &mut b,
        20,
        3,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let mut h = disk.clone();
    h.hard = Some(b.hard_state().clone());
    h.snapshot = Some(Snapshot {
        seq: 3,
        data: empty_snap(),
    });
    h.entries.clear();
    let r = Participant::restore(cfg(B), KvStore::new(), h, 30).unwrap();
    assert_eq!((r.role(), r.poll_timeout()), (Role::Removed, None));
}

#[test]
fn restore_from_a_snapshot_and_entries() {
    let mut a = Participant::new(
        Config {
            snapshot_every: 2,
            ..cfg(A)
        },
        KvStore::new(),
    )
    .unwrap();
    let mut disk = Stored::default();
    let mut run = |a: &mut P, f: &dyn Fn(&mut P)| {
        f(a);
        while let Some(o) = a.poll_output() {
            if let Output::Persist(p) = o {
                disk.apply(&p);
                a.persisted(0, p.id);
            }
        }
    };
    run(&mut a, &|a| a.bootstrap(0).unwrap());
    for i in 1..=3u64 {
        run(&mut a, &|a| {
            a.submit(0, RequestId(i), vec![set(&alloc::format!("k{i}"), "v")])
        });
    }
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(2));
    assert_eq!(disk.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let r = Participant::restore(cfg(A), KvStore::new(), disk, 10).unwrap();
    assert_eq!(r.commit(), 3);
    assert_eq!(r.state(), a.state());
    assert_eq!(r.state().len(), 3);
}

#[test]
fn restore_of_nothing_is_a_fresh_unjoined_node() {
    let r = Participant::restore(cfg(B), KvStore::new(), Stored::default(), 10).unwrap();
    assert_eq!(
        (r.role(), r.commit(), r.poll_timeout()),
        (Role::Unjoined, 0, None)
    );
}

#[test]
fn restore_of_corrupt_state_says_what_is_wrong() {
    let mut net = cluster3();
    net.node(A).submit(0, RequestId(1), vec![set("k", "v")]);
    net.run();
    let good = net.disks[A].clone();
    assert!(Participant::restore(cfg(A), KvStore::new(), good.clone(), 0).is_ok());
    let err = |s: Stored| Participant::restore(cfg(A), KvStore::new(), s, 0).unwrap_err();
    // Another cluster's state.
    let mut other = good.clone();
    other.hard.as_mut().unwrap().cluster = s("c2");
    assert_eq!(
        err(other),
        RestoreError::WrongCluster {
            stored: s("c2"),
            configured: s(CLUSTER)
        }
    );
    // A hole in the entries.
    let mut hole = good.clone();
    hole.entries.remove(1);
    assert!(matches!(err(hole), RestoreError::Inconsistent(_)));
    // A commit index beyond the entries.
    let mut beyond = good.clone();
    beyond.hard.as_mut().unwrap().commit = 9;
    assert!(matches!(err(beyond), RestoreError::Inconsistent(_)));
    // A snapshot the application cannot read.
    let mut bad = good.clone();
    bad.snapshot = Some(Snapshot {
        seq: 0,
        data: s("not json"),
    });
    assert!(matches!(err(bad), RestoreError::Snapshot(_)));
}

// ---------------------------------------------------------------------------------------------
// Consistent reads (read index)
// ---------------------------------------------------------------------------------------------

fn read_ok(index: u64) -> Response {
    let mut f = FailResult::ok();
    f.seq = Some(index);
    Response::Fail(f)
}

fn heartbeat(instance: u64, seq: u64) -> Request {
    accept(instance, seq, vec![], Some(A))
}

#[test]
fn read_at_master_waits_for_a_round_confirmed_by_a_majority() {
    let mut a = master3();
    let m = next_msg(&a);
    // A read: its index is the commit (2); a round of heartbeats goes out, nothing is answered.
    let outs = request(&mut a, 10, 7, Request::ReadIndex(ReadIndex::default()));
    assert_eq!(
        outs,
        vec![send(m, B, heartbeat(1, 3)), send(m + 1, C, heartbeat(1, 3))]
    );
    // One answer of this round is, with ours, a majority of 3.
    let outs = respond(&mut a, 11, m + 1, accepted());
    assert_eq!(outs, vec![reply(7, read_ok(2))]);
    assert!(respond(&mut a, 12, m, accepted()).is_empty());
}

#[test]
fn read_round_answers_only_with_messages_sent_after_the_read() {
    let mut a = master3();
    let m = next_msg(&a);
    let _ = tick(&mut a, 100); // heartbeats of round 0 to b and c
    let outs = request(&mut a, 101, 7, Request::ReadIndex(ReadIndex::default()));
    assert_eq!(outs.len(), 2, "a round of its own: {outs:?}");
    // The answers to the heartbeats sent before the read arrived confirm nothing.
    assert!(respond(&mut a, 102, m, accepted()).is_empty());
    assert!(respond(&mut a, 102, m + 1, accepted()).is_empty());
    // An answer of the read's round does.
    assert_eq!(
        respond(&mut a, 103, m + 2, accepted()),
        vec![reply(7, read_ok(2))]
    );
}

#[test]
fn read_at_master_refused_by_a_higher_instance_fails_retryably() {
    let mut a = master3();
    let m = next_msg(&a);
    let _ = request(&mut a, 10, 7, Request::ReadIndex(ReadIndex::default()));
    let outs = respond(&mut a, 11, m, accept_refusal(ErrorCode::Denied, Some(5)));
    assert!(
        outs.contains(&reply(7, failed(ErrorCode::State, None))),
        "{outs:?}"
    );
    assert_eq!(a.role(), Role::Participant);
}

#[test]
fn read_at_follower_asks_the_master_and_waits_to_apply_the_index() {
    let mut b = follower3();
    let m = next_msg(&b);
    let outs = request(&mut b, 10, 7, Request::ReadIndex(ReadIndex::default()));
    assert_eq!(
        outs,
        vec![send(
            m,
            A,
            Request::ReadIndex(ReadIndex { forwarded: true })
        )]
    );
    // The master's index is 3; b is at 2: it waits.
    assert!(respond(&mut b, 11, m, read_ok(3)).is_empty());
    assert!(
        b.poll_timeout() <= Some(11 + cfg(B).election_max_ms),
        "a deadline is armed"
    );
    // b stages 3 and commits it with the next accept: then it answers.
    let x = set("x", "1");
    let _ = request(&mut b, 12, 8, accept(1, 3, vec![x], Some(A)));
    let outs = request(&mut b, 13, 9, heartbeat(1, 4));
    assert!(outs.contains(&reply(7, read_ok(3))), "{outs:?}");
    assert_eq!(b.state().get("x"), Some("1"));
}

#[test]
fn read_at_follower_that_cannot_catch_up_times_out() {
    let mut b = follower3();
    let m = next_msg(&b);
    let _ = request(&mut b, 10, 7, Request::ReadIndex(ReadIndex::default()));
    assert!(respond(&mut b, 11, m, read_ok(9)).is_empty());
    let late = 11 + cfg(B).election_max_ms;
    let outs = tick(&mut b, late);
    assert!(
        outs.contains(&reply(7, failed(ErrorCode::State, None))),
        "{outs:?}"
    );
}

#[test]
fn read_without_a_master_is_refused() {
    let mut n = node(A);
    let outs = request(&mut n, 0, 7, Request::ReadIndex(ReadIndex::default()));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, None))]);
}

// ---------------------------------------------------------------------------------------------
// Outputs that go ahead of a write in progress, and the delayed commit notice
// ---------------------------------------------------------------------------------------------

#[test]
fn a_chosen_batch_is_answered_and_the_next_proposed_while_the_masters_write_is_in_progress() {
    let mut a = master3();
    let (pid, m) = (next_persist(&a), next_msg(&a));
    let (k1, k2) = (set("k1", "1"), set("k2", "2"));
    a.handle_request(10, RequestId(100), submit(vec![k1.clone()], false));
    let acc1 = accept(1, 3, vec![k1.clone()], Some(A));
    assert_eq!(poll(&mut a), Some(send(m, B, acc1.clone())));
    assert_eq!(poll(&mut a), Some(send(m + 1, C, acc1)));
    let Some(Output::Persist(p)) = a.poll_output() else {
        panic!("the master's own staged copy is persisted");
    };
    assert_eq!(p.id, PersistId(pid));
    // The master's disk is slow: b and c vote before its own copy is durable. Two of three is
    // a majority, so the batch is chosen: it is answered at once, and the next submit is
    // proposed at once, both ahead of the write still in progress.
    a.handle_request(11, RequestId(101), submit(vec![k2.clone()], false));
    assert_eq!(poll(&mut a), None, "one slot in flight");
    a.handle_response(12, MessageId(m), Ok(accepted()));
    assert_eq!(poll(&mut a), None, "one vote of two");
    a.handle_response(12, MessageId(m + 1), Ok(accepted()));
    let acc2 = accept(1, 4, vec![k2.clone()], Some(A));
    assert_eq!(poll(&mut a), Some(committed(3, changes(&[&k1]))));
    assert_eq!(poll(&mut a), Some(reply(100, committed_ok(3, 1))));
    assert_eq!(poll(&mut a), Some(send(m + 2, B, acc2.clone())));
    assert_eq!(poll(&mut a), Some(send(m + 3, C, acc2)));
    assert_eq!(poll(&mut a), None, "the rest waits for the write");
    assert_eq!(a.commit(), 3);
    // Once the first write is durable the rest comes out: the write of the commit together
    // with the new staged slot.
    a.persisted(13, PersistId(pid));
    let outs = drain(&mut a, 13);
    let hard = hard_with(&a, |h| h.staged = Some(staged(1, 4, changes(&[&k2]))));
    let entry = Entry {
        seq: 3,
        payload: changes(&[&k1]),
    };
    assert_eq!(outs, vec![persist_full(pid + 1, hard, vec![entry], None)]);
}

#[test]
fn a_follower_answers_an_accept_only_after_its_staged_copy_is_durable() {
    // The early path is the master's alone: a follower's vote always waits for its write.
    let mut b = follower3();
    let x = set("x", "1");
    b.handle_request(0, RequestId(1), accept(1, 3, vec![x], Some(A)));
    assert!(matches!(b.poll_output(), Some(Output::Persist(_))));
    assert_eq!(poll(&mut b), None);
}

/// `master3` with the default commit notice (the cluster is formed without it).
fn master3_default_notice() -> P {
    let mut a = master3();
    a.cfg.commit_notice_ms = Config::new(CLUSTER, A).commit_notice_ms;
    assert_eq!(a.cfg.commit_notice_ms, 5);
    a
}

#[test]
fn an_idle_master_tells_its_followers_of_a_commit_after_commit_notice_ms() {
    let mut a = master3_default_notice();
    let m = next_msg(&a);
    let k = set("k", "v");
    let _ = request(&mut a, 10, 100, submit(vec![k.clone()], false));
    let outs = respond(&mut a, 11, m, accepted());
    assert!(outs.contains(&reply(100, committed_ok(3, 1))));
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Send(_))),
        "no empty accept at once: {outs:?}"
    );
    assert_eq!(a.poll_timeout(), Some(16));
    assert_eq!(tick(&mut a, 15), vec![]);
    let hb = accept(1, 4, vec![], Some(A));
    // Only c has a request outstanding (the first accept, unanswered): both get the notice.
    assert_eq!(
        tick(&mut a, 16),
        vec![send(m + 2, B, hb.clone()), send(m + 3, C, hb)]
    );
}

#[test]
fn a_submit_within_commit_notice_ms_carries_the_commit_instead_of_an_empty_accept() {
    let mut a = master3_default_notice();
    let m = next_msg(&a);
    let (k1, k2) = (set("k1", "1"), set("k2", "2"));
    let _ = request(&mut a, 10, 100, submit(vec![k1], false));
    let _ = respond(&mut a, 11, m, accepted());
    let outs = request(&mut a, 13, 101, submit(vec![k2.clone()], false));
    let acc = accept(1, 4, vec![k2], Some(A));
    let sends: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(_)))
        .collect();
    assert_eq!(
        sends,
        vec![&send(m + 2, B, acc.clone()), &send(m + 3, C, acc)]
    );
    // The timer is back at the heartbeat: nothing is due at the notice's time.
    assert_eq!(tick(&mut a, 16), vec![]);
}

#[test]
fn a_follower_forwards_a_submit_and_relays_the_answer_while_its_write_is_in_progress() {
    let mut b = follower3();
    let m = next_msg(&b);
    let x = set("x", "1");
    b.handle_request(0, RequestId(1), accept(1, 3, vec![x], Some(A)));
    assert!(matches!(b.poll_output(), Some(Output::Persist(_))));
    // Its disk is busy with the staged slot; the forward does not wait for it...
    let k = set("k", "v");
    b.handle_request(1, RequestId(2), submit(vec![k.clone()], false));
    assert_eq!(poll(&mut b), Some(send(m, A, submit(vec![k], true))));
    assert_eq!(poll(&mut b), None, "the vote waits for the write");
    // ...nor does the master's answer, relayed.
    b.handle_response(2, MessageId(m), Ok(ok()));
    assert_eq!(poll(&mut b), Some(reply(2, ok())));
    assert_eq!(poll(&mut b), None);
}

// ---------------------------------------------------------------------------------------------
// Results, and the deadline of a send
// ---------------------------------------------------------------------------------------------

#[test]
fn each_submit_of_a_batch_gets_the_results_of_its_own_changes() {
    let mut a = master3();
    let m = next_msg(&a);
    request(&mut a, 10, 100, submit(vec![set("k", "1")], false));
    // Queued behind the first: two submits, one batch, results in order.
    request(
        &mut a,
        11,
        101,
        submit(vec![set("k", "2"), set("j", "x")], false),
    );
    request(
        &mut a,
        12,
        102,
        submit(vec![KvChange::cas("k", Some("2"), "3").encode()], false),
    );
    respond(&mut a, 20, m, accepted());
    let outs = respond(&mut a, 30, m + 3, accepted());
    let replies: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Reply(_)))
        .collect();
    use serde_json::json;
    let r101 = FailResult::committed(4, vec![json!({"prev": "1"}), json!({"prev": null})]);
    let r102 = FailResult::committed(4, vec![json!({"ok": true, "value": "3"})]);
    assert_eq!(
        replies,
        vec![
            &reply(101, Response::Fail(r101)),
            &reply(102, Response::Fail(r102))
        ]
    );
}

#[test]
fn a_send_must_start_within_the_request_timeout() {
    let mut a = master3();
    a.handle_request(250, RequestId(100), submit(vec![set("k", "1")], false));
    let Some(Output::Send(s)) = a.poll_output() else {
        panic!("the accept goes out first");
    };
    assert_eq!(s.deadline, 250 + a.config().request_timeout_ms);
    assert!(s.ordered(), "an accept takes the peer's ordered lane");
    assert_eq!(s.url(CLUSTER), "http://b/_clusterc/c1/accept");
}
