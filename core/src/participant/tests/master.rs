//! The master: replicating submits, batching, resending, stepping down.

use super::*;

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

#[test]
fn master_catches_a_follower_up_by_the_entries_it_keeps_then_the_current_slot() {
    let mut a = master3();
    let m = next_msg(&a);
    let (k1, k2) = (set("k1", "1"), set("k2", "2"));
    request(&mut a, 10, 100, submit(vec![k1.clone()], false));
    respond(&mut a, 11, m + 1, accepted()); // c: 3 committed
    let m2 = next_msg(&a);
    request(&mut a, 12, 101, submit(vec![k2.clone()], false));
    let outs = respond(&mut a, 13, m2 + 1, accepted()); // c: 4 committed
    assert_eq!(a.commit(), 4, "{outs:?}");
    // b missed both: its answer to the first accept says it is at 2.
    let next = next_msg(&a);
    let outs = respond(&mut a, 20, m, gap_refusal_unbatched(2));
    assert_eq!(outs, vec![send(next, B, accept(1, 3, vec![k1], Some(A)))]);
    let outs = respond(&mut a, 21, next, accepted());
    assert_eq!(
        outs,
        vec![send(next + 1, B, accept(1, 4, vec![k2], Some(A)))]
    );
    // Caught up: the current slot (a heartbeat at 5) commits 4 there.
    let outs = respond(&mut a, 22, next + 1, accepted());
    assert_eq!(outs, vec![send(next + 2, B, accept(1, 5, vec![], Some(A)))]);
    assert_eq!(a.status(22).peers[0].matched, Some(3));
}
