//! prepare at a voter (PROTOCOL.md section 3, rules 1-6): refusals, and the vote.

use super::*;

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
