//! start at a node: installing a snapshot, joining, learning of a removal.

use super::*;

#[test]
fn start_with_a_newer_commit_is_installed_whatever_its_instance() {
    let (mut b, _) = follower3_staged();
    request(&mut b, 5000, 1, prepare(5, C, Some(2))); // promised 5 to c
    let snap = {
        let mut kv = KvStore::new();
        kv.apply(3, &set("x", "1"));
        kv.apply(4, &set("k", "v"));
        snap_of(&kv)
    };
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        5010,
        7,
        start(1, 4, B, A, &[A, B, C], snap.clone(), Some(2)),
    );
    let hard = hard_with(&b, |h| {
        h.commit = 4;
        h.staged = None; // covered by the snapshot
    });
    assert_eq!(
        (hard.promised, hard.promised_master.as_deref()),
        (5, Some(C))
    );
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 4 }),
            members_changed(&[A, B, C], 2),
            persist_full(pid, hard, vec![], Some(Snapshot { seq: 4, data: snap })),
            reply(7, ok()),
        ]
    );
    assert_eq!(b.state().get("k"), Some("v"));
    assert_eq!(
        (b.instance(), b.master()),
        (5, None),
        "promise and master unchanged"
    );
}

#[test]
fn start_at_the_same_commit_keeps_the_staged_slot() {
    let (mut b, st) = follower3_staged();
    let outs = request(
        &mut b,
        10,
        7,
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    assert_eq!(outs, vec![reply(7, ok())]);
    assert_eq!(b.staged(), Some(&st));
    // From a new master at a higher instance: adopts it, still keeps the slot.
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        11,
        8,
        start(3, 2, B, C, &[A, B, C], empty_snap(), Some(2)),
    );
    let hard = hard_with(&b, |h| {
        h.promised = 3;
        h.promised_master = Some(s(C));
    });
    assert_eq!(hard.staged, Some(st.clone()));
    assert_eq!(outs, vec![persist(pid, hard), reply(8, ok())]);
    assert_eq!(b.master(), Some(C));
}

#[test]
fn start_at_the_same_commit_from_a_lower_instance_is_refused_with_the_promise() {
    let mut b = follower3();
    request(&mut b, 5000, 1, prepare(5, C, Some(2)));
    let outs = request(
        &mut b,
        5010,
        7,
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::State, Some(5)))]);
}

#[test]
fn start_with_an_older_snapshot_is_err_sequence() {
    let mut b = follower3();
    let before = b.hard_state().clone();
    let outs = request(
        &mut b,
        10,
        7,
        start(4, 1, B, A, &[A, B, C], empty_snap(), Some(1)),
    );
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::Sequence, None))]);
    assert_eq!(b.hard_state(), &before);
}

#[test]
fn start_whose_participants_exclude_the_node_removes_it() {
    let mut b = follower3();
    let pid = next_persist(&b);
    let outs = request(
        &mut b,
        10,
        7,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let hard = hard_with(&b, |h| {
        h.status = Status::Removed;
        h.commit = 3;
        h.members = strings(&[A, C]);
        h.members_version = 3;
    });
    let snapshot = Some(Snapshot {
        seq: 3,
        data: empty_snap(),
    });
    assert_eq!(
        outs,
        vec![
            ev(Event::SnapshotInstalled { seq: 3 }),
            members_changed(&[A, C], 3),
            ev(Event::Removed),
            persist_full(pid, hard, vec![], snapshot),
            reply(7, ok()),
        ]
    );
    assert_eq!((b.role(), b.poll_timeout()), (Role::Removed, None));
}

#[test]
fn start_that_includes_a_removed_node_again_rejoins_it() {
    let mut b = follower3();
    request(
        &mut b,
        10,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(b.role(), Role::Removed);
    let outs = request(
        &mut b,
        20,
        7,
        start(1, 4, B, A, &[A, B, C], empty_snap(), Some(4)),
    );
    assert_eq!(
        outs[..3],
        [
            ev(Event::SnapshotInstalled { seq: 4 }),
            members_changed(&[A, B, C], 4),
            ev(Event::Joined),
        ]
    );
    assert_eq!(outs.last(), Some(&reply(7, ok())));
    assert_eq!(
        (b.role(), b.hard_state().status),
        (Role::Participant, Status::Joined)
    );
}

#[test]
fn start_for_another_cluster_is_refused() {
    let mut b = follower3();
    let Request::Start(mut st) = start(1, 9, B, A, &[A, B, C], empty_snap(), None) else {
        unreachable!()
    };
    st.cluster = s("other");
    let outs = request(&mut b, 10, 7, Request::Start(st));
    assert_eq!(outs, vec![reply(7, failed(ErrorCode::Denied, None))]);
    assert_eq!(b.commit(), 2);
}
