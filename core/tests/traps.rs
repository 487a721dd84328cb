//! The known traps of PROTOCOL.md section 5 (and the ones our own sweep found), each as a
//! deterministic, hand-scheduled run of the simulated cluster: the test chooses which message
//! is delivered, dropped or overtaken, and asserts the rule that keeps the cluster safe (or
//! live). Every run also passes the harness's safety checks after every step.

use clusterconsensus::kv::KvChange;
use clusterconsensus::sim::{addr, Sim, SimConfig};
use clusterconsensus::wire::{Accept, AdminMember, Member, Method, Request, Response};
use clusterconsensus::{majority, ErrorCode, Payload, Role};

fn set(key: &str, value: &str) -> String {
    KvChange::set(key, value).encode()
}

/// A formed cluster of `n`, node 0 master, in manual mode.
fn manual(n: usize, spares: usize) -> Sim {
    let mut cfg = SimConfig::new(n, 1);
    cfg.spares = spares;
    let mut s = Sim::new(cfg);
    assert!(s.is_serving_master(0));
    s.set_manual(true);
    s
}

/// Delivers every message in flight matching the filter; returns how many.
fn deliver(s: &mut Sim, from: Option<usize>, to: Option<usize>, m: Option<Method>) -> usize {
    let mut n = 0;
    for response in [false, true] {
        for id in s.find(from, to, m, response) {
            n += usize::from(s.deliver(id));
        }
    }
    n
}

/// Drops every message in flight matching the filter (both directions' kinds).
fn drop_all(s: &mut Sim, from: Option<usize>, to: Option<usize>, m: Option<Method>) -> usize {
    let mut n = 0;
    for response in [false, true] {
        for id in s.find(from, to, m, response) {
            n += usize::from(s.drop_message(id));
        }
    }
    n
}

/// Delivers until nothing is in flight.
fn quiesce(s: &mut Sim) {
    s.deliver_all(100_000);
}

fn assert_safe(s: &Sim) {
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

fn role(s: &Sim, i: usize) -> Option<Role> {
    s.node(i).map(|p| p.role())
}

/// Commits a change through the master (node `m`) on a quiet network; returns its seq.
fn commit(s: &mut Sim, m: usize, change: &str) -> u64 {
    let op = s.submit(m, change.to_string());
    quiesce(s);
    assert_eq!(s.op(op).unwrap().ok, Some(true), "{:?}", s.op(op));
    s.node(m).unwrap().commit()
}

/// Node `c` campaigns and only `voters` hear it (trying again above any higher promise it
/// learns of); returns whether it won.
fn campaign_with(s: &mut Sim, c: usize, voters: &[usize]) -> bool {
    for _ in 0..3 {
        s.advance(2_000);
        s.start_election(c);
        for &v in voters {
            deliver(s, Some(c), Some(v), Some(Method::Prepare));
            deliver(s, Some(v), Some(c), Some(Method::Prepare));
        }
        if role(s, c) == Some(Role::Master) {
            return true;
        }
    }
    false
}

/// Fires node `i`'s election timer (moving time past the others' contact with the master)
/// and delivers everything.
fn elect(s: &mut Sim, i: usize) {
    s.advance(2_000);
    s.fire_timeout(i);
    quiesce(s);
}

#[test]
fn trap_a_empty_accept_clears_no_staged_slot() {
    // 5 nodes. X is accepted by 0 (master), 1 and 2, acknowledged, not yet committed anywhere
    // else. Node 1 wins instance 2 with 3 and 4 (it recovers X from its own slot), but its
    // empty accept overtakes the recovery accept at 2 and 3, then 1 crashes. The next master
    // must still find X.
    let mut s = manual(5, 0);
    let x = set("k", "X");
    let op = s.submit(0, x.clone());
    let seq = s.node(0).unwrap().commit() + 1;
    deliver(&mut s, Some(0), Some(1), Some(Method::Accept));
    deliver(&mut s, Some(0), Some(2), Some(Method::Accept));
    deliver(&mut s, Some(1), Some(0), Some(Method::Accept));
    deliver(&mut s, Some(2), Some(0), Some(Method::Accept));
    assert_eq!(s.op(op).unwrap().ok, Some(true), "acknowledged");
    drop_all(&mut s, Some(0), None, None);
    s.crash(0);
    // Node 1 campaigns; only 3 and 4 answer.
    assert!(campaign_with(&mut s, 1, &[3, 4]));
    let instance = s.node(1).unwrap().instance();
    // The new master's empty accept overtakes the recovery accept at 2 and 3.
    for v in [2, 3] {
        let r = s.inject(
            v,
            Request::Accept(Accept {
                instance,
                seq,
                chg: vec![],
                master: Some(Member::new(addr(1))),
                entries: vec![],
            }),
        );
        assert!(matches!(r, Some(Response::Accept(a)) if a.accepted));
    }
    let staged = s
        .node(2)
        .unwrap()
        .staged()
        .cloned()
        .expect("2 keeps X staged");
    assert_eq!(staged.payload, Payload::Changes(vec![x.clone()].into()));
    drop_all(&mut s, None, None, None);
    s.crash(1);
    // Node 3 campaigns with 2 and 4: 2 reports X.
    assert!(campaign_with(&mut s, 3, &[2, 4]));
    quiesce(&mut s);
    assert_eq!(
        s.checker.chosen.get(&seq),
        Some(&Payload::Changes(vec![x].into()))
    );
    assert_eq!(s.node(3).unwrap().state().get("k"), Some("X"));
    assert_safe(&s);
}

#[test]
fn trap_b_empty_recovery_accept_uses_up_no_seq() {
    // 5 nodes. X reaches only 4 (and the master 0, which crashes): not acknowledged. Node 1
    // wins with 2 and 3, none of which holds X: its confirmation is empty and must not commit
    // anything at that seq. Then 1 crashes; 4 wins with 0 (restarted) and 2, recovers X and
    // commits it at that seq: 2 and 3 must apply X there, not "nothing".
    let mut s = manual(5, 0);
    let x = set("k", "X");
    s.submit(0, x.clone());
    let seq = s.node(0).unwrap().commit() + 1;
    deliver(&mut s, Some(0), Some(4), Some(Method::Accept));
    drop_all(&mut s, None, None, None);
    s.crash(0);
    assert!(campaign_with(&mut s, 1, &[2, 3]));
    // The empty confirmation reaches 2 and 3 and is acknowledged.
    for v in [2, 3] {
        deliver(&mut s, Some(1), Some(v), Some(Method::Accept));
        deliver(&mut s, Some(v), Some(1), Some(Method::Accept));
    }
    assert!(s.node(1).unwrap().is_serving_master());
    for v in [1, 2, 3] {
        assert_eq!(
            s.node(v).unwrap().commit(),
            seq - 1,
            "node {v} used up no seq"
        );
    }
    drop_all(&mut s, None, None, None);
    s.crash(1);
    s.restart(0);
    // 2 promised instance 2 to node 1: 4 learns it and goes above.
    assert!(campaign_with(&mut s, 4, &[0, 2]));
    quiesce(&mut s);
    s.fire_timeout(4); // a heartbeat lets the followers commit
    quiesce(&mut s);
    assert_eq!(
        s.checker.chosen.get(&seq),
        Some(&Payload::Changes(vec![x].into()))
    );
    for v in [0, 2, 3, 4] {
        assert_eq!(s.node(v).unwrap().state().get("k"), Some("X"), "node {v}");
    }
    assert_safe(&s);
}

#[test]
fn trap_c_retried_forwarded_submit_applies_once() {
    // A submit forwarded by follower 1 commits, but the master's answer to 1 is lost: the
    // client sees a failure and retries the same (client, request) after a later write.
    let mut s = manual(3, 0);
    let a = KvChange::set("k", "a").with_client("c1", 1).encode();
    let b = KvChange::set("k", "b").with_client("c1", 2).encode();
    let op = s.submit(1, a.clone());
    deliver(&mut s, Some(1), Some(0), Some(Method::Submit)); // forwarded
                                                             // Replicate and commit at the master, then lose the answer on its way to 1.
    for _ in 0..4 {
        deliver(&mut s, Some(0), None, Some(Method::Accept));
        deliver(&mut s, None, Some(0), Some(Method::Accept));
    }
    assert!(s.checker.changes.contains_key(&a), "a committed");
    assert_eq!(drop_all(&mut s, Some(0), Some(1), Some(Method::Submit)), 1);
    assert_eq!(
        s.op(op).unwrap().code,
        Some(ErrorCode::State),
        "outcome unknown"
    );
    commit(&mut s, 0, &b);
    let retry = s.submit(1, a.clone()); // the retry of request 1
    quiesce(&mut s);
    s.fire_timeout(0);
    quiesce(&mut s);
    assert_eq!(s.op(retry).unwrap().ok, Some(true));
    for i in 0..3 {
        assert_eq!(s.node(i).unwrap().state().get("k"), Some("b"), "node {i}");
    }
    assert_safe(&s);
}

#[test]
fn trap_d_two_to_one_self_removal() {
    // A 2-node cluster whose master removes itself. The removal commits on the master (both
    // accepted it); the notice to the survivor is lost. The survivor must still win alone.
    let mut s = manual(2, 0);
    let op = s.admin(0, Method::MembersRemove, &addr(0), None);
    deliver(&mut s, Some(0), Some(1), Some(Method::RmMember));
    deliver(&mut s, Some(1), Some(0), Some(Method::RmMember));
    assert_eq!(s.op(op).unwrap().ok, Some(true));
    assert_eq!(role(&s, 0), Some(Role::Removed));
    assert!(
        drop_all(&mut s, Some(0), Some(1), None) >= 1,
        "the notice is lost"
    );
    assert_eq!(
        s.node(1).unwrap().members().len(),
        2,
        "survivor still counts 0"
    );
    // The survivor campaigns; the removed node answers by pushing its state.
    elect(&mut s, 1);
    if !s.is_serving_master(1) {
        elect(&mut s, 1);
    }
    assert!(s.is_serving_master(1));
    assert_eq!(s.node(1).unwrap().members(), &[addr(1)]);
    assert_safe(&s);
}

#[test]
fn trap_e_isolated_node_with_higher_promise_catches_up() {
    // Node 2 is cut off and campaigns again and again (its promise climbs) while 0 and 1
    // commit. After the heal its refusals carry its promise: the master steps down and a new
    // election goes above it, and 2 catches up.
    let mut cfg = SimConfig::new(3, 5);
    cfg.faults.max_delay_ms = 3;
    let mut s = Sim::new(cfg);
    s.partition(&[vec![0, 1], vec![2]]);
    for i in 0..20 {
        s.submit(0, set("k", &format!("v{i}")));
        s.run_for(200);
    }
    let promised = s.node(2).unwrap().instance();
    assert!(promised > s.node(0).unwrap().instance(), "2 campaigned");
    s.heal();
    s.run_for(10_000);
    let m = s.serving_master().expect("a master");
    let p = s.node(m).unwrap();
    assert!(
        p.instance() > promised,
        "elected above the isolated node's promise"
    );
    assert_eq!(s.node(2).unwrap().commit(), p.commit());
    assert_eq!(s.node(2).unwrap().state().get("k"), Some("v19"));
    assert_safe(&s);
}

#[test]
fn trap_f_candidate_starts_an_unjoined_member() {
    // Node 3 is added as a voter at once (`"voter": true`; by default it would join as a
    // learner, and no majority would need it); the add commits everywhere but its `start` is
    // lost, then the master crashes. 1, 2 and 3 are the only majority of the four members: 1
    // must start 3.
    let mut s = manual(3, 1);
    let add = AdminMember {
        voter: true,
        ..AdminMember::new(addr(3))
    };
    let op = s.admin_call(0, Method::MembersAdd, add);
    deliver(&mut s, Some(0), None, Some(Method::AddMember));
    deliver(&mut s, None, Some(0), Some(Method::AddMember));
    assert_eq!(s.op(op).unwrap().ok, Some(true));
    assert!(drop_all(&mut s, Some(0), Some(3), Some(Method::Start)) >= 1);
    s.fire_timeout(0); // a heartbeat commits the add at 1 and 2
    deliver(&mut s, Some(0), Some(1), None);
    deliver(&mut s, Some(0), Some(2), None);
    assert_eq!(s.node(1).unwrap().members().len(), 4);
    assert_eq!(role(&s, 3), Some(Role::Unjoined));
    drop_all(&mut s, None, None, None);
    s.crash(0);
    elect(&mut s, 1);
    assert!(s.is_serving_master(1), "{:?}", s.node(1));
    assert_eq!(role(&s, 3), Some(Role::Participant));
    assert_safe(&s);
}

#[test]
fn trap_g_removed_node_that_missed_its_notice_stops_campaigning() {
    let mut s = manual(3, 0);
    let op = s.admin(0, Method::MembersRemove, &addr(2), None);
    deliver(&mut s, Some(0), Some(1), Some(Method::RmMember));
    deliver(&mut s, Some(1), Some(0), Some(Method::RmMember));
    assert_eq!(s.op(op).unwrap().ok, Some(true));
    drop_all(&mut s, Some(0), Some(2), None); // the rmmember and its notice
    quiesce(&mut s);
    assert_eq!(role(&s, 2), Some(Role::Participant), "2 does not know");
    elect(&mut s, 2);
    assert_eq!(role(&s, 2), Some(Role::Removed));
    assert_eq!(s.node(2).unwrap().poll_timeout(), None, "no more campaigns");
    assert!(s.is_serving_master(0), "the master was not disturbed");
    assert_safe(&s);
}

#[test]
fn trap_h_delayed_admin_add_with_old_version_is_refused() {
    let mut s = manual(3, 1);
    let v0 = s.node(0).unwrap().members_version();
    let add = s.admin(0, Method::MembersAdd, &addr(3), Some(v0));
    quiesce(&mut s);
    assert_eq!(s.op(add).unwrap().ok, Some(true));
    let v1 = s.node(0).unwrap().members_version();
    let rm = s.admin(0, Method::MembersRemove, &addr(3), Some(v1));
    quiesce(&mut s);
    assert_eq!(s.op(rm).unwrap().ok, Some(true));
    // The first request, delayed and delivered again.
    let late = Request::MembersAdd(AdminMember {
        version: Some(v0),
        ..AdminMember::new(addr(3))
    });
    let r = s.inject(0, late);
    assert!(
        matches!(&r, Some(Response::Fail(f)) if f.err.as_ref().map(|e| e.code) == Some(ErrorCode::Sequence)),
        "{r:?}"
    );
    quiesce(&mut s);
    assert!(!s.node(0).unwrap().members().contains(&addr(3)));
    assert_safe(&s);
}

#[test]
fn trap_i_one_way_partition_does_not_depose_a_live_master() {
    // Node 2 can send but not receive from the master: it times out and campaigns. The cluster
    // is idle, so 2 is not behind (a stale-candidate refusal would not save the master): the
    // others refuse because they heard from the master recently.
    let mut s = Sim::new(SimConfig::new(3, 9));
    let instance = s.node(0).unwrap().instance();
    s.block(0, 2);
    s.run_for(6_000);
    assert!(s.node(2).unwrap().instance() > instance, "2 campaigned");
    assert_eq!(s.node(2).unwrap().commit(), s.node(1).unwrap().commit());
    assert!(s.is_serving_master(0));
    assert_eq!(s.node(0).unwrap().instance(), instance, "never deposed");
    assert_eq!(s.node(1).unwrap().instance(), instance);
    for i in 0..10 {
        s.submit(0, set("k", &format!("v{i}")));
        s.run_for(200);
    }
    assert_eq!(s.node(1).unwrap().state().get("k"), Some("v9"));
    assert_eq!(s.node(0).unwrap().instance(), instance);
    assert_safe(&s);
}

#[test]
fn trap_j_majority_is_n_over_2_plus_1() {
    assert_eq!(
        (1..=6).map(majority).collect::<Vec<_>>(),
        vec![1, 2, 2, 3, 3, 4]
    );
    // Four nodes split 2/2: neither side may elect (with (n-1)/2 other votes both would, in
    // the same instance).
    let mut s = Sim::new(SimConfig::new(4, 3));
    s.partition(&[vec![0, 1], vec![2, 3]]);
    s.run_for(10_000);
    assert_eq!(s.serving_master(), None);
    s.heal();
    s.run_for(10_000);
    assert!(s.serving_master().is_some());
    assert_safe(&s);
}

#[test]
fn trap_k_in_flight_accept_is_resent_unchanged() {
    let mut s = manual(3, 0);
    let x = set("k", "X");
    s.submit(0, x.clone());
    let seq = s.node(0).unwrap().commit() + 1;
    drop_all(&mut s, Some(0), None, Some(Method::Accept)); // lost: must be re-sent
    s.submit(0, set("k", "Y")); // queued behind X
    s.fire_timeout(0);
    let resent: Vec<Request> = s
        .find(Some(0), None, Some(Method::Accept), false)
        .into_iter()
        .filter_map(|id| s.request_of(id))
        .collect();
    assert_eq!(resent.len(), 2);
    for r in resent {
        let Request::Accept(a) = r else {
            panic!("{r:?}")
        };
        assert_eq!((a.seq, a.chg), (seq, vec![x.clone()]));
    }
    quiesce(&mut s);
    s.fire_timeout(0);
    quiesce(&mut s);
    assert_eq!(
        s.checker.chosen.get(&seq),
        Some(&Payload::Changes(vec![x].into()))
    );
    assert_eq!(s.node(1).unwrap().state().get("k"), Some("Y"));
    assert_safe(&s);
}

#[test]
fn found_by_sweep_a_stale_vote_for_the_empty_confirmation_is_not_a_vote_for_the_batch() {
    // Seed 121 of the first sweep. A new master's empty confirmation and its first batch share
    // a seq; a late "accepted" for a re-sent copy of the empty accept must not count for the
    // batch.
    let mut s = manual(3, 0);
    drop_all(&mut s, None, None, None);
    s.crash(0);
    assert!(campaign_with(&mut s, 1, &[2]));
    let seq = s.node(1).unwrap().commit() + 1;
    s.fire_timeout(1); // re-sends the unconfirmed empty accept
    let copies = s.find(Some(1), Some(2), Some(Method::Accept), false);
    assert_eq!(copies.len(), 2);
    s.deliver(copies[0]);
    deliver(&mut s, Some(2), Some(1), Some(Method::Accept));
    assert!(s.is_serving_master(1));
    s.submit(1, set("k", "Y")); // proposed at the same seq; its accept to 2 is held
    s.deliver(copies[1]); // the stale empty copy, accepted
    deliver(&mut s, Some(2), Some(1), Some(Method::Accept));
    assert_eq!(
        s.node(1).unwrap().commit(),
        seq - 1,
        "Y holds only the master's own vote"
    );
    quiesce(&mut s);
    assert_eq!(s.node(1).unwrap().commit(), seq, "Y commits once 2 has it");
    assert_safe(&s);
}

#[test]
fn found_by_sweep_liveness_seeds_stay_fixed() {
    // Seeds whose scenarios once failed to elect or converge after healing (dueling stale
    // candidates; a candidate refusing the winner of its own instance; a voter following the
    // loser of an instance).
    for seed in [20, 86, 114, 242, 360, 508, 570, 789] {
        let cfg = clusterconsensus::sim::scenario::ScenarioConfig::random(seed);
        let r = clusterconsensus::sim::scenario::run(&cfg);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(r.ops_ok > 0);
    }
}

#[test]
fn consistent_read_at_a_paused_old_master_is_not_stale() {
    // The master is paused (SIGSTOP) long enough for the others to elect a new master and
    // commit a write. A read that reached the old master during the pause is served first when
    // it resumes, before it notices the time that passed: the read index makes it confirm its
    // mastership with a majority first, which fails, instead of answering from its old state.
    let mut s = Sim::new(SimConfig::new(3, 11));
    let w1 = s.submit(0, set("k", "1"));
    assert!(s.run_until(|s| s.op_done(w1), 5_000));
    s.pause(0);
    assert!(s.run_until(|s| s.serving_master().is_some_and(|m| m != 0), 10_000));
    let m = s.serving_master().unwrap();
    let w2 = s.submit(m, set("k", "2"));
    assert!(s.run_until(|s| s.op_done(w2), 5_000));
    assert_eq!(s.op(w2).unwrap().ok, Some(true));
    let stale = s.read(0, "k");
    let fresh = s.read(m, "k");
    s.resume(0);
    assert!(s.run_until(|s| s.op_done(stale) && s.op_done(fresh), 5_000));
    let r = s.op(stale).unwrap();
    assert!(
        r.ok == Some(false) || r.value.as_deref() == Some("2"),
        "the old master answered {r:?}"
    );
    assert_eq!(s.op(fresh).unwrap().value.as_deref(), Some("2"));
    // Through a follower too: it asks the master for the index and waits to apply it.
    let f = (0..3).find(|i| *i != m).unwrap();
    let via = s.read(f, "k");
    assert!(s.run_until(|s| s.op_done(via), 5_000));
    assert_eq!(s.op(via).unwrap().value.as_deref(), Some("2"));
    assert_safe(&s);
}

#[test]
fn trap_transfer_a_stale_target_s_late_prepare_is_refused_after_the_master_resumed() {
    // Leader transfer (docs/PROTOCOL.md section 9). Master 0 hands over to 1; 1 campaigns with
    // transfer prepares, but the one to 0 is lost and the one to 2 is held back. 0 abandons the
    // transfer after its bound and commits more with 2. Then 1's transfer prepare reaches 2:
    // the flag only waives the live-master rule, so 2 refuses a candidate behind its commit. A
    // voter that trusted the flag (the old master vouched for the target) would let 1 win
    // without the entries 0 committed since.
    let mut s = manual(3, 0);
    let op = s.transfer(0, Some(addr(1)));
    assert_eq!(
        deliver(&mut s, Some(0), Some(1), Some(Method::TimeoutNow)),
        1
    );
    assert_eq!(
        deliver(&mut s, Some(1), Some(0), Some(Method::TimeoutNow)),
        1
    );
    assert_eq!(role(&s, 1), Some(Role::Candidate));
    drop_all(&mut s, Some(1), Some(0), Some(Method::Prepare));
    let held = s.find(Some(1), Some(2), Some(Method::Prepare), false);
    assert_eq!(held.len(), 1);
    // 0 keeps its majority with 2 (heartbeats), hears nothing from 1, and gives up after
    // election_min_ms (500 in the simulation).
    for _ in 0..12 {
        s.advance(50);
        s.fire_timeout(0);
        drop_all(&mut s, Some(0), Some(1), None);
        deliver(&mut s, Some(0), Some(2), Some(Method::Accept));
        deliver(&mut s, Some(2), Some(0), Some(Method::Accept));
    }
    let o = s.op(op).unwrap().clone();
    assert_eq!(
        (o.ok, o.code),
        (Some(false), Some(ErrorCode::State)),
        "{o:?}"
    );
    assert!(s.is_serving_master(0), "the master resumed");
    // Two commits with 2 only: 2's commit moves past 1's.
    for v in ["A", "B"] {
        let op = s.submit(0, set("k", v));
        drop_all(&mut s, Some(0), Some(1), None);
        deliver(&mut s, Some(0), Some(2), Some(Method::Accept));
        deliver(&mut s, Some(2), Some(0), Some(Method::Accept));
        assert_eq!(s.op(op).unwrap().ok, Some(true));
    }
    s.fire_timeout(0);
    deliver(&mut s, Some(0), Some(2), Some(Method::Accept));
    let (c1, c2) = (s.node(1).unwrap().commit(), s.node(2).unwrap().commit());
    assert!(c2 > c1, "2 at {c2}, 1 at {c1}");
    // The late transfer prepare: refused.
    assert!(s.deliver(held[0]));
    deliver(&mut s, Some(2), Some(1), Some(Method::Prepare));
    assert_ne!(role(&s, 1), Some(Role::Master));
    assert_eq!(s.node(2).unwrap().master(), Some(addr(0).as_str()));
    assert_safe(&s);
}
