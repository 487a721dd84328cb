//! submit at a node: refused, queued, or forwarded to the master.

use super::*;

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
