//! Consistent reads (read index), at the master and at a follower.

use super::*;

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
