//! Leader transfer (docs/PROTOCOL.md section 9): at the master, at the target, at a voter, and
//! at the old master once it stepped down.

use super::*;
use crate::wire::{TimeoutNow, Transfer};

fn transfer(to: Option<&str>) -> Request {
    Request::Transfer(Transfer {
        to: to.map(s),
        forwarded: false,
    })
}

fn timeout_now(instance: u64, seq: u64) -> Request {
    Request::TimeoutNow(TimeoutNow {
        instance,
        seq,
        master: Member::new(A),
    })
}

fn transfer_prepare(instance: u64, cand: &str, seq: u64) -> Request {
    Request::Prepare(Prepare {
        instance,
        master: Member::new(cand),
        seq: Some(seq),
        transfer: true,
    })
}

/// A retryable refusal that names the master to ask instead.
fn failed_naming(code: ErrorCode, master: &str) -> Response {
    let e = err(code).with_master(Some(s(master)));
    Response::Fail(FailResult::error(e))
}

fn ok_at(instance: u64) -> Response {
    Response::Fail(FailResult {
        instance: Some(instance),
        ..FailResult::ok()
    })
}

#[test]
fn master_tells_a_caught_up_target_to_take_over_and_holds_submits_meanwhile() {
    let mut a = master3();
    let m = next_msg(&a);
    // b answered the heartbeat at 3: it holds commit 2. Nothing in flight: timeoutnow at once.
    let outs = request(&mut a, 10, 7, transfer(Some(B)));
    assert_eq!(outs, vec![send(m, B, timeout_now(1, 2))]);
    assert_eq!(respond(&mut a, 11, m, ok()), vec![]);
    // A submit waits: the commit must not move while the target takes over.
    assert_eq!(
        request(&mut a, 12, 8, submit(vec![set("x", "1")], false)),
        vec![]
    );
    assert_eq!(a.status(12).queued, 1);
    // b's transfer prepare: a votes although it is the live master, and steps down; the
    // waiting submit is refused retryably, naming b.
    let p = next_persist(&a);
    let outs = request(&mut a, 13, 9, transfer_prepare(2, B, 2));
    let hard = hard_with(&a, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            persist(p, hard),
            reply(8, failed_naming(ErrorCode::State, B)),
            ev(Event::LostMastership { instance: 1 }),
            reply(9, vote(2, 2, None)),
        ]
    );
    assert_eq!(a.role(), Role::Participant);
    // The transfer is answered once b leads: its first accept.
    let outs = request(&mut a, 14, 10, accept(2, 3, vec![], Some(B)));
    assert_eq!(outs, vec![reply(7, ok_at(2)), reply(10, accepted())]);
    assert_eq!(a.master(), Some(B));
}

#[test]
fn master_first_finishes_the_slot_in_flight_and_brings_the_target_to_its_commit() {
    let mut a = master3();
    let m = next_msg(&a);
    let x = set("x", "1");
    let _ = request(&mut a, 10, 7, submit(vec![x.clone()], false));
    // The slot at 3 is in flight: the transfer waits for it.
    assert_eq!(request(&mut a, 11, 8, transfer(None)), vec![]);
    // c accepts it: committed, the submit answered, the commit notice to both. b (the best
    // target when the transfer came: equal progress, lower address) holds commit 2 only.
    let p = next_persist(&a);
    let outs = respond(&mut a, 12, m + 1, accepted());
    let hb = accept(1, 4, vec![], Some(A));
    assert_eq!(
        outs,
        vec![
            committed(3, changes(&[&x])),
            reply(7, committed_ok(3, 1)),
            persist_full(
                p,
                a.hard_state().clone(),
                vec![Entry {
                    seq: 3,
                    payload: changes(&[&x])
                }],
                None
            ),
            send(m + 2, B, hb.clone()),
            send(m + 3, C, hb),
        ]
    );
    // b's answer to the slot shows commit 2; its answer to the notice shows commit 3: now.
    assert_eq!(respond(&mut a, 13, m, accepted()), vec![]);
    let outs = respond(&mut a, 14, m + 2, accepted());
    assert_eq!(outs, vec![send(m + 4, B, timeout_now(1, 3))]);
}

#[test]
fn the_best_target_is_the_most_caught_up_voter() {
    let mut a = master3();
    let m = next_msg(&a);
    let _ = request(&mut a, 10, 7, submit(vec![set("x", "1")], false));
    let _ = respond(&mut a, 11, m + 1, accepted()); // c: committed at 3, notices m+2 (b), m+3 (c)
    let _ = respond(&mut a, 12, m + 3, accepted()); // c holds 3; b has answered nothing
    let outs = request(&mut a, 13, 8, transfer(None));
    assert_eq!(outs, vec![send(m + 4, C, timeout_now(1, 3))]);
}

#[test]
fn a_transfer_to_no_voter_is_refused_with_a_clear_error() {
    let mut a = master3();
    for (to, code) in [
        (Some(A), ErrorCode::Denied),
        (Some(D), ErrorCode::Denied),
        (Some("http://b/"), ErrorCode::Encoding),
    ] {
        let outs = request(&mut a, 10, 7, transfer(to));
        assert_eq!(outs, vec![reply(7, failed(code, None))], "{to:?}");
    }
    let mut one = cluster(&[A]).take(A);
    let outs = request(&mut one, 10, 7, transfer(None));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, None))]);
    // A second transfer while one is in progress.
    let _ = request(&mut a, 11, 8, transfer(Some(B)));
    let outs = request(&mut a, 12, 9, transfer(Some(C)));
    assert_eq!(outs, vec![reply(9, failed(ErrorCode::State, None))]);
}

#[test]
fn a_follower_forwards_the_transfer_to_its_master_and_relays_the_answer() {
    let mut b = follower3();
    let m = next_msg(&b);
    let outs = request(&mut b, 10, 7, transfer(Some(C)));
    let fwd = Request::Transfer(Transfer {
        to: Some(s(C)),
        forwarded: true,
    });
    assert_eq!(outs, vec![send(m, A, fwd)]);
    assert_eq!(respond(&mut b, 11, m, ok_at(2)), vec![reply(7, ok_at(2))]);
}

#[test]
fn an_unanswered_transfer_is_abandoned_and_the_master_resumes() {
    let mut a = master3();
    let m = next_msg(&a);
    let _ = request(&mut a, 10, 7, transfer(Some(B)));
    let x = set("x", "1");
    assert_eq!(
        request(&mut a, 11, 8, submit(vec![x.clone()], false)),
        vec![]
    );
    // timeoutnow got lost, and b never campaigned: after election_min_ms (1000) a gives up,
    // answers the transfer, and proposes the submit that waited.
    let outs = unreachable_peer(&mut a, 500, m);
    assert_eq!(outs, vec![send(m + 1, B, timeout_now(1, 2))]);
    // (c keeps answering heartbeats: a keeps its majority.)
    let hb = accept(1, 3, vec![], Some(A));
    assert_eq!(
        tick(&mut a, 900),
        vec![send(m + 2, B, hb.clone()), send(m + 3, C, hb)]
    );
    assert_eq!(respond(&mut a, 901, m + 3, accepted()), vec![]);
    let outs = tick(&mut a, 1010);
    let slot = accept(1, 3, vec![x.clone()], Some(A));
    assert_eq!(
        outs,
        vec![
            reply(7, failed(ErrorCode::State, None)),
            send(m + 4, B, slot.clone()),
            send(m + 5, C, slot),
            persist(next_persist(&a) - 1, a.hard_state().clone()),
        ]
    );
    assert!(a.is_serving_master());
}

#[test]
fn a_target_refusing_timeoutnow_ends_the_transfer() {
    let mut a = master3();
    let m = next_msg(&a);
    let _ = request(&mut a, 10, 7, transfer(Some(B)));
    let outs = respond(&mut a, 11, m, failed(ErrorCode::Gap, None));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, None))]);
    assert!(a.is_serving_master());
}

#[test]
fn the_target_campaigns_at_once_and_says_it_is_a_transfer() {
    let mut b = follower3();
    let m = next_msg(&b);
    let p = next_persist(&b);
    let outs = request(&mut b, 10, 7, timeout_now(1, 2));
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            persist(p, hard),
            send(m, A, transfer_prepare(2, B, 2)),
            send(m + 1, C, transfer_prepare(2, B, 2)),
            reply(7, ok()),
        ]
    );
    assert_eq!(b.role(), Role::Candidate);
}

#[test]
fn a_target_behind_the_masters_commit_refuses_timeoutnow() {
    let mut b = follower3();
    let outs = request(&mut b, 10, 7, timeout_now(1, 3));
    let mut e = err(ErrorCode::Gap);
    e.commit = Some(2);
    assert_eq!(outs, vec![reply(7, Response::Fail(FailResult::error(e)))]);
    assert_eq!(b.role(), Role::Participant);
    // From an old instance, or at a learner: refused too.
    let outs = request(&mut b, 10, 8, timeout_now(0, 2));
    assert_eq!(outs, vec![reply(8, failed(ErrorCode::Denied, Some(1)))]);
}

#[test]
fn a_voter_that_hears_its_master_still_votes_for_a_transfer_candidate_but_not_a_stale_one() {
    let mut c = cluster3().take(C);
    // Without the flag, a live master (heard at 0) makes c refuse.
    let outs = request(&mut c, 10, 7, prepare(2, B, Some(2)));
    assert_eq!(
        outs,
        vec![reply(7, prepare_refusal(1, ErrorCode::Denied, 2))]
    );
    // With it, c votes.
    let outs = request(&mut c, 11, 8, transfer_prepare(2, B, 2));
    assert_eq!(outs[1..], [reply(8, vote(2, 2, None))]);
    // A transfer candidate behind c's commit is refused all the same.
    let outs = request(&mut c, 12, 9, transfer_prepare(3, B, 1));
    assert_eq!(
        outs,
        vec![reply(9, prepare_refusal(2, ErrorCode::Denied, 2))]
    );
}
