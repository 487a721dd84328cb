//! The results of each submit of a batch, and the deadline of a send.

use super::*;

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
