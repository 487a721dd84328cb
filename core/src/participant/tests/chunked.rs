//! Chunked snapshot transfer (docs/PROTOCOL.md section 11): the master streams a snapshot
//! larger than one chunk, the follower installs it only once complete and verified.

use super::*;
use crate::crc32::crc32;
use alloc::format;

/// A `start` carrying bytes `[offset, offset + snap.len())` of snapshot `seq` from master a.
fn chunk(seq: u64, snap: &str, offset: u64, more: bool, crc: Option<u32>) -> Request {
    let Request::Start(mut st) = start(1, seq, B, A, &[A, B, C], s(snap), Some(2)) else {
        unreachable!()
    };
    st.offset = Some(offset);
    st.more = more;
    st.crc = crc;
    Request::Start(st)
}

/// The follower's answer to a chunk: it holds `held` bytes.
fn holds(held: u64) -> Response {
    Response::Fail(FailResult {
        offset: Some(held),
        ..FailResult::ok()
    })
}

fn refused_at(code: ErrorCode, held: u64) -> Response {
    Response::Fail(FailResult {
        offset: Some(held),
        ..FailResult::error(err(code))
    })
}

/// The state at commit 4 with three keys, and its snapshot text.
fn state4() -> (KvStore, String) {
    let mut kv = KvStore::new();
    kv.apply(3, &set("k1", "one"));
    kv.apply(4, &set("k2", "two"));
    kv.apply(4, &set("k3", "three"));
    let text = snap_of(&kv);
    (kv, text)
}

#[test]
fn the_follower_installs_only_after_the_last_chunk_and_its_checksum() {
    let mut b = follower3();
    let (kv, text) = state4();
    let crc = crc32(text.as_bytes());
    let outs = request(&mut b, 10, 7, chunk(4, &text[..10], 0, true, None));
    assert_eq!(outs, vec![reply(7, holds(10))]);
    let outs = request(&mut b, 11, 8, chunk(4, &text[10..20], 10, true, None));
    assert_eq!(outs, vec![reply(8, holds(20))]);
    // Nothing of it applied before the last chunk.
    assert_eq!((b.commit(), b.state().get("k1")), (2, None));
    let pid = next_persist(&b);
    let outs = request(&mut b, 12, 9, chunk(4, &text[20..], 20, false, Some(crc)));
    let hard = hard_with(&b, |h| h.commit = 4);
    let snapshot = Some(Snapshot {
        seq: 4,
        data: text.clone(),
    });
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 4 }),
            members_changed(&[A, B, C], 2),
            persist_full(pid, hard, vec![], snapshot),
            reply(9, holds(text.len() as u64)),
        ]
    );
    assert_eq!(snap_of(b.state()), snap_of(&kv));
}

#[test]
fn status_shows_the_transfer_on_both_ends() {
    let mut b = follower3();
    let (_, text) = state4();
    assert_eq!(b.status(10).receiving, None);
    request(&mut b, 10, 7, chunk(4, &text[..10], 0, true, None));
    let got = b.status(10).receiving;
    assert_eq!(got, Some(crate::SnapshotProgress { seq: 4, bytes: 10 }));
    let (mut a, first, m) = master_with_a_lagging_follower();
    let progress = |a: &P| {
        a.status(30)
            .peers
            .into_iter()
            .find(|p| p.addr == B)
            .unwrap()
    };
    assert_eq!(
        progress(&a).snapshot,
        Some(crate::SnapshotProgress { seq: 3, bytes: 0 })
    );
    respond(&mut a, 30, m, holds(first.snap.len() as u64));
    let bytes = first.snap.len() as u64;
    assert_eq!(
        progress(&a).snapshot,
        Some(crate::SnapshotProgress { seq: 3, bytes })
    );
}

#[test]
fn a_chunk_out_of_order_is_answered_with_the_offset_expected_and_not_applied() {
    let mut b = follower3();
    let (_, text) = state4();
    let crc = crc32(text.as_bytes());
    // Nothing under way: any chunk but the first is answered "from 0".
    let outs = request(&mut b, 10, 6, chunk(4, &text[10..20], 10, true, None));
    assert_eq!(outs, vec![reply(6, refused_at(ErrorCode::Sequence, 0))]);
    request(&mut b, 10, 7, chunk(4, &text[..10], 0, true, None));
    // A gap, and a duplicate of a chunk already taken: both answered "from 10".
    let outs = request(&mut b, 11, 8, chunk(4, &text[20..], 20, false, Some(crc)));
    assert_eq!(outs, vec![reply(8, refused_at(ErrorCode::Sequence, 10))]);
    let outs = request(&mut b, 12, 9, chunk(4, &text[5..10], 5, true, None));
    assert_eq!(outs, vec![reply(9, refused_at(ErrorCode::Sequence, 10))]);
    assert_eq!(b.commit(), 2);
    // The transfer goes on from there.
    let outs = request(&mut b, 13, 10, chunk(4, &text[10..], 10, false, Some(crc)));
    assert_eq!(outs.last(), Some(&reply(10, holds(text.len() as u64))));
    assert_eq!((b.commit(), b.state().get("k3")), (4, Some("three")));
}

#[test]
fn a_wrong_checksum_is_refused_and_the_transfer_starts_over() {
    let mut b = follower3();
    let (_, text) = state4();
    let before = b.hard_state().clone();
    request(&mut b, 10, 7, chunk(4, &text[..10], 0, true, None));
    let bad = crc32(text.as_bytes()) ^ 1;
    let outs = request(&mut b, 11, 8, chunk(4, &text[10..], 10, false, Some(bad)));
    assert_eq!(outs, vec![reply(8, refused_at(ErrorCode::Encoding, 0))]);
    assert_eq!(b.hard_state(), &before);
    assert_eq!(b.state().get("k1"), None);
    // The partial transfer is gone: the last chunk again is answered "from 0".
    let crc = crc32(text.as_bytes());
    let outs = request(&mut b, 12, 9, chunk(4, &text[10..], 10, false, Some(crc)));
    assert_eq!(outs, vec![reply(9, refused_at(ErrorCode::Sequence, 0))]);
}

#[test]
fn the_first_chunk_of_a_newer_snapshot_supersedes_a_partial_one() {
    let mut b = follower3();
    let (_, text4) = state4();
    request(&mut b, 10, 7, chunk(4, &text4[..10], 0, true, None));
    let mut kv5 = KvStore::new();
    kv5.apply(5, &set("k9", "nine"));
    let text5 = snap_of(&kv5);
    let outs = request(&mut b, 11, 8, chunk(5, &text5[..12], 0, true, None));
    assert_eq!(outs, vec![reply(8, holds(12))]);
    // The older transfer's next chunk does not continue it.
    let outs = request(&mut b, 12, 9, chunk(4, &text4[10..], 10, true, None));
    assert_eq!(outs, vec![reply(9, refused_at(ErrorCode::Sequence, 0))]);
    let crc = crc32(text5.as_bytes());
    request(&mut b, 13, 10, chunk(5, &text5[12..], 12, false, Some(crc)));
    assert_eq!((b.commit(), b.state().get("k9")), (5, Some("nine")));
    assert_eq!(b.state().get("k1"), None);
}

/// A master of [a, b, c] whose chunks are at most 64 encoded bytes, at commit 3 with a state
/// larger than that; b answers its next accept with a gap. Returns the first chunk's Send.
fn master_with_a_lagging_follower() -> (P, Start, u64) {
    // `catchup_bytes: 0`: the master keeps no entries, so b needs a snapshot.
    let mut a = cluster_with(&[A, B, C], |c| {
        c.snapshot_chunk = 64;
        c.catchup_bytes = 0;
    })
    .take(A);
    let m = next_msg(&a);
    let chg: Vec<String> = (0..10).map(|i| set(&format!("key{i}"), "value")).collect();
    request(&mut a, 10, 100, submit(chg, false));
    respond(&mut a, 20, m + 1, accepted()); // c: committed at 3
    let m = next_msg(&a);
    let outs = respond(&mut a, 21, m - 2, gap_refusal(1)); // b
    let [Output::Send(snd)] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    let Request::Start(st) = snd.request.clone() else {
        panic!("{snd:?}")
    };
    (a, st, snd.id.get())
}

#[test]
fn the_master_sends_each_chunk_on_the_previous_ones_answer() {
    let (mut a, first, m) = master_with_a_lagging_follower();
    let text = snap_of(a.state());
    assert!(text.len() > 200, "several chunks: {}", text.len());
    let Request::Start(mut header) = start(1, 3, B, A, &[A, B, C], String::new(), Some(2)) else {
        unreachable!()
    };
    header.offset = Some(0);
    header.more = true;
    header.snap = first.snap.clone();
    assert_eq!(first, header);
    let (mut got, mut msg, mut st) = (String::new(), m, first);
    loop {
        assert!(serde_json::to_string(&st.snap).unwrap().len() <= 64);
        assert_eq!(st.offset, Some(got.len() as u64));
        got.push_str(&st.snap);
        let outs = respond(&mut a, 30, msg, holds(got.len() as u64));
        if !st.more {
            assert_eq!(st.crc, Some(crc32(text.as_bytes())));
            // Installed: b is sent the current slot (a heartbeat at commit + 1).
            assert_eq!(outs, vec![send(msg + 1, B, accept(1, 4, vec![], Some(A)))]);
            break;
        }
        assert_eq!(st.crc, None);
        let [Output::Send(snd)] = outs.as_slice() else {
            panic!("{outs:?}")
        };
        let Request::Start(next) = snd.request.clone() else {
            panic!("{snd:?}")
        };
        (msg, st) = (snd.id.get(), next);
    }
    assert_eq!(got, text);
}

#[test]
fn the_master_resumes_after_a_cut_from_the_offset_the_follower_holds() {
    let (mut a, first, m) = master_with_a_lagging_follower();
    let n1 = first.snap.len() as u64;
    let outs = respond(&mut a, 30, m, holds(n1));
    let [Output::Send(snd)] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    let (m2, second) = (snd.id.get(), snd.request.clone());
    // The second chunk's call is cut: nothing is sent until the next tick finds b behind.
    assert_eq!(unreachable_peer(&mut a, 31, m2), vec![]);
    let outs = tick(&mut a, 200);
    let hb = outs
        .iter()
        .find_map(|o| match o {
            Output::Send(x) if x.to == B => Some(x.id.get()),
            _ => None,
        })
        .expect("b is sent an accept again");
    // b answers the accept with the gap: the chunk in flight again, unchanged.
    let m3 = next_msg(&a);
    let outs = respond(&mut a, 210, hb, gap_refusal(1));
    assert_eq!(outs, vec![send(m3, B, second.clone())]);
    // b had taken it before the cut: it says so, and the master goes on after it.
    let Request::Start(second) = second else {
        unreachable!()
    };
    let n2 = n1 + second.snap.len() as u64;
    let outs = respond(&mut a, 220, m3, refused_at(ErrorCode::Sequence, n2));
    let [Output::Send(snd)] = outs.as_slice() else {
        panic!("{outs:?}")
    };
    let Request::Start(third) = snd.request.clone() else {
        panic!()
    };
    assert_eq!(third.offset, Some(n2));
    // b restarted and holds nothing: the transfer starts over from the first chunk.
    let outs = respond(
        &mut a,
        230,
        snd.id.get(),
        refused_at(ErrorCode::Sequence, 0),
    );
    assert_eq!(outs, vec![send(snd.id.get() + 1, B, Request::Start(first))]);
}
