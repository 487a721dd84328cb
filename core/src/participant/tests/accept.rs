//! accept (rules 1-4), addmember and rmmember at a follower.

use super::*;

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
    assert_eq!(outs, vec![persist(pid, hard), reply(7, gap_refusal(2))]);
    assert_eq!((b.commit(), b.staged()), (2, Some(&st)));
}

#[test]
fn accept_rule3_further_ahead_is_a_gap() {
    let mut b = follower3();
    let outs = request(&mut b, 10, 7, accept(1, 5, vec![], Some(A)));
    assert_eq!(outs, vec![reply(7, gap_refusal(2))]);
    let outs = request(&mut b, 10, 8, accept(1, 4, vec![set("y", "2")], Some(A)));
    assert_eq!(outs, vec![reply(8, gap_refusal(2))]);
    assert_eq!((b.commit(), b.staged()), (2, None));
}

#[test]
fn a_gap_shows_how_far_behind_the_follower_is() {
    let mut b = follower3();
    assert_eq!(b.known_commit(), 2);
    request(&mut b, 10, 7, accept(1, 9, vec![], Some(A)));
    assert_eq!((b.commit(), b.known_commit()), (2, 8));
    // An older accept (a late heartbeat) does not lower it; one of a deposed master (below
    // the instance promised since) does not count.
    request(&mut b, 11, 8, accept(1, 5, vec![], Some(A)));
    request(&mut b, 5000, 9, prepare(5, C, Some(2)));
    let outs = request(&mut b, 5001, 10, accept(1, 20, vec![], Some(A)));
    assert_eq!(
        outs,
        vec![reply(10, accept_refusal(ErrorCode::Denied, Some(5)))]
    );
    assert_eq!((b.commit(), b.known_commit()), (2, 8));
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
    let outs = request(&mut b, 10, 7, accept(1, 3, x.to_vec(), Some(A)));
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
