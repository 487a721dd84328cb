//! Catch-up batches (docs/PROTOCOL.md section 12): a master sends a follower that takes them
//! many committed entries per accept; the follower commits them, durably, before it answers.

use super::*;
use crate::wire::{CommittedEntry, Method};

/// An accept at `seq` carrying the committed `entries` before it.
fn batch(instance: u64, seq: u64, entries: &[(u64, &str)]) -> Request {
    let entries = entries
        .iter()
        .map(|(s, c)| CommittedEntry {
            seq: *s,
            payload: Payload::Changes(vec![String::from(*c)].into()),
        })
        .collect();
    Request::Accept(Accept {
        instance,
        seq,
        chg: vec![],
        master: Some(Member::new(A)),
        entries,
    })
}

/// `master3` after committing one submit of `k` at each of seqs 3, 4, ... with c's votes (b
/// heard nothing); returns the id of the first accept to b.
fn master_ahead_of_b(a: &mut P, keys: &[&str]) -> u64 {
    let first = next_msg(a);
    for (i, k) in keys.iter().enumerate() {
        let m = next_msg(a);
        request(
            a,
            10 + i as u64,
            100 + i as u64,
            submit(vec![set(k, "1")], false),
        );
        respond(a, 10 + i as u64, m + 1, accepted()); // c
    }
    assert_eq!(a.commit(), 2 + keys.len() as u64);
    first
}

#[test]
fn a_batch_is_an_accept_with_entries_on_the_wire() {
    let r = batch(1, 5, &[(3, "x"), (4, "y")]);
    let json = String::from_utf8(r.encode()).unwrap();
    assert_eq!(
        json,
        r#"{"instance":1,"seq":5,"chg":[],"master":{"addr":"http://a"},"entries":[{"seq":3,"chg":["x"]},{"seq":4,"chg":["y"]}]}"#
    );
    assert_eq!(Request::decode(Method::Accept, json.as_bytes()).unwrap(), r);
    // A membership entry reads like a staged slot without its instance.
    let m = r#"{"instance":1,"seq":4,"chg":[],"entries":[{"seq":3,"add":{"addr":"http://d"},"learner":true}]}"#;
    let Request::Accept(d) = Request::decode(Method::Accept, m.as_bytes()).unwrap() else {
        panic!()
    };
    let want = Payload::Learner(Learner {
        addr: s(D),
        promote: true,
    });
    assert_eq!(
        d.entries,
        vec![CommittedEntry {
            seq: 3,
            payload: want
        }]
    );
    // Our ERR_GAP says that we take batches; a plain accept carries no `entries`.
    let gap = String::from_utf8(gap_refusal(2).encode()).unwrap();
    assert_eq!(
        gap,
        r#"{"accepted":false,"err":{"code":"ERR_GAP","err":""},"seq":2,"entries":true}"#
    );
    let plain = String::from_utf8(accept(1, 3, vec![], Some(A)).encode()).unwrap();
    assert_eq!(
        plain,
        r#"{"instance":1,"seq":3,"chg":[],"master":{"addr":"http://a"}}"#
    );
}

#[test]
fn master_catches_a_batching_follower_up_with_every_kept_entry_in_one_accept() {
    let mut a = master3();
    let m = master_ahead_of_b(&mut a, &["k1", "k2", "k3"]);
    let (k1, k2, k3) = (set("k1", "1"), set("k2", "1"), set("k3", "1"));
    let next = next_msg(&a);
    // b's answer to the first accept: a gap at 2, and it takes batches.
    let outs = respond(&mut a, 20, m, gap_refusal(2));
    let want = batch(1, 6, &[(3, &k1), (4, &k2), (5, &k3)]);
    assert_eq!(outs, vec![send(next, B, want)]);
    assert_eq!(a.status(20).peers[0].matched, Some(2));
    // Accepted: it holds 5, the master's commit; the current slot (a heartbeat) follows.
    let outs = respond(&mut a, 21, next, accepted());
    assert_eq!(outs, vec![send(next + 1, B, accept(1, 6, vec![], Some(A)))]);
    assert_eq!(a.status(21).peers[0].matched, Some(5));
    assert_eq!(a.status(21).peers[0].lag, Some(0));
}

#[test]
fn a_batch_stops_at_the_byte_budget_and_the_next_one_follows_its_answer() {
    let (k1, k2, k3) = (set("k1", "1"), set("k2", "1"), set("k3", "1"));
    // Room for two entries of one change each (a change counts its length plus 8).
    let budget = 2 * (k1.len() + 8);
    let mut a = cluster_with(&[A, B, C], |c| c.catchup_batch = budget).take(A);
    let m = master_ahead_of_b(&mut a, &["k1", "k2", "k3"]);
    let next = next_msg(&a);
    let outs = respond(&mut a, 20, m, gap_refusal(2));
    assert_eq!(
        outs,
        vec![send(next, B, batch(1, 5, &[(3, &k1), (4, &k2)]))]
    );
    let outs = respond(&mut a, 21, next, accepted());
    assert_eq!(outs, vec![send(next + 1, B, batch(1, 6, &[(5, &k3)]))]);
    assert_eq!(a.status(21).peers[0].matched, Some(4));
    let outs = respond(&mut a, 22, next + 1, accepted());
    assert_eq!(outs, vec![send(next + 2, B, accept(1, 6, vec![], Some(A)))]);
}

#[test]
fn a_follower_that_does_not_say_it_takes_batches_gets_one_entry_per_accept() {
    let mut a = master3();
    let m = master_ahead_of_b(&mut a, &["k1", "k2"]);
    let next = next_msg(&a);
    let outs = respond(&mut a, 20, m, gap_refusal_unbatched(2));
    assert_eq!(
        outs,
        vec![send(next, B, accept(1, 3, vec![set("k1", "1")], Some(A)))]
    );
}

#[test]
fn a_follower_commits_a_batch_durably_before_it_answers() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let (x, y) = (set("x", "1"), set("y", "2"));
    let outs = request(&mut b, 10, 7, batch(1, 5, &[(3, &x), (4, &y)]));
    let (px, py) = (changes(&[&x]), changes(&[&y]));
    let hard = hard_with(&b, |h| h.commit = 4);
    let entries = vec![
        Entry {
            seq: 3,
            payload: px.clone(),
        },
        Entry {
            seq: 4,
            payload: py.clone(),
        },
    ];
    assert_eq!(
        outs,
        vec![
            committed(3, px),
            committed(4, py),
            persist_full(pid, hard, entries, None),
            reply(7, accepted())
        ]
    );
    assert_eq!((b.commit(), b.staged()), (4, None));
}

#[test]
fn a_duplicated_or_overlapping_batch_applies_nothing_twice() {
    let mut b = follower3();
    let (x, y, z) = (set("x", "1"), set("y", "2"), set("z", "3"));
    request(&mut b, 10, 7, batch(1, 5, &[(3, &x), (4, &y)]));
    // Overlapping: only 5 is new.
    let pid = next_persist(&b);
    let outs = request(&mut b, 11, 8, batch(1, 6, &[(3, &x), (4, &y), (5, &z)]));
    let hard = hard_with(&b, |h| h.commit = 5);
    let e = Entry {
        seq: 5,
        payload: changes(&[&z]),
    };
    assert_eq!(
        outs,
        vec![
            committed(5, changes(&[&z])),
            persist_full(pid, hard, vec![e], None),
            reply(8, accepted())
        ]
    );
    // The same batch again: nothing to commit, nothing to write.
    let outs = request(&mut b, 12, 9, batch(1, 6, &[(3, &x), (4, &y), (5, &z)]));
    assert_eq!(outs, vec![reply(9, accepted())]);
    assert_eq!(b.commit(), 5);
    assert_eq!(b.state().get("x"), Some("1"));
}

#[test]
fn a_batch_that_starts_past_the_followers_commit_is_a_gap() {
    let mut b = follower3();
    let outs = request(&mut b, 10, 7, batch(1, 6, &[(4, "a"), (5, "b")]));
    assert_eq!(outs, vec![reply(7, gap_refusal(2))]);
    assert_eq!(b.commit(), 2);
}

#[test]
fn a_follower_commits_no_entry_at_or_past_the_accepts_seq() {
    let mut b = follower3();
    let (x, y) = (set("x", "1"), set("y", "2"));
    // Only seq 3 is before the accept at 4: the entry at 4 is not said to be committed.
    let outs = request(&mut b, 10, 7, batch(1, 4, &[(3, &x), (4, &y)]));
    assert_eq!(b.commit(), 3);
    assert_eq!(outs.last(), Some(&reply(7, accepted())));
    assert!(!outs.contains(&committed(4, changes(&[&y]))), "{outs:?}");
}

#[test]
fn a_peer_whose_gap_stops_saying_it_takes_batches_gets_single_entries_again() {
    let mut a = master3();
    let m = master_ahead_of_b(&mut a, &["k1", "k2"]);
    let (k1, k2) = (set("k1", "1"), set("k2", "1"));
    let next = next_msg(&a);
    let outs = respond(&mut a, 20, m, gap_refusal(2));
    assert_eq!(
        outs,
        vec![send(next, B, batch(1, 5, &[(3, &k1), (4, &k2)]))]
    );
    // b restarted as a peer without batches: it took the batch for a heartbeat at 5.
    let outs = respond(&mut a, 21, next, gap_refusal_unbatched(2));
    assert_eq!(
        outs,
        vec![send(next + 1, B, accept(1, 3, vec![k1], Some(A)))]
    );
}
