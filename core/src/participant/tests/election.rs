//! Elections at a candidate, and the recovery of the staged slot by the winner.

use super::*;

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
    let first = accept(2, 3, x.to_vec(), Some(B));
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
    add_voter(net.node(A), 0, RequestId(1), s(D), None);
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
