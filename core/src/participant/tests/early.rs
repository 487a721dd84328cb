//! Outputs that go ahead of a write in progress, and the delayed commit notice.

use super::*;

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
