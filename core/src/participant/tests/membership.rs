//! Membership: admin calls to add or remove a member, and removed nodes.

use super::*;

#[test]
fn membership_add_commits_then_the_master_starts_the_new_member() {
    let mut a = master3();
    let (pid, m) = (next_persist(&a), next_msg(&a));
    let outs = drain_after(&mut a, 10, |a| add_voter(a, 10, RequestId(100), s(D), None));
    let hard = hard_with(&a, |h| h.staged = Some(staged(1, 3, Payload::Add(s(D)))));
    let add = addmember(1, 3, D, A);
    assert_eq!(
        outs,
        vec![
            send(m, B, add.clone()),
            send(m + 1, C, add),
            persist(pid, hard)
        ]
    );
    let outs = respond(&mut a, 20, m, ok());
    let hard = hard_with(&a, |h| {
        h.commit = 3;
        h.staged = None;
        h.members = strings(&[A, B, C, D]);
        h.members_version = 3;
    });
    let entry = Entry {
        seq: 3,
        payload: Payload::Add(s(D)),
    };
    let hb = accept(1, 4, vec![], Some(A));
    assert_eq!(
        outs,
        vec![
            committed(3, Payload::Add(s(D))),
            members_changed(&[A, B, C, D], 3),
            persist_full(pid + 1, hard, vec![entry], None),
            send(
                m + 2,
                D,
                start(1, 3, D, A, &[A, B, C, D], empty_snap(), Some(3))
            ),
            reply(100, ok()),
            send(m + 3, B, hb.clone()),
            send(m + 4, C, hb),
        ]
    );
}

/// Runs a command on `p` and drains its outputs.
fn drain_after(p: &mut P, now: u64, f: impl FnOnce(&mut P)) -> Vec<Output> {
    f(p);
    drain(p, now)
}

#[test]
fn membership_changes_go_one_at_a_time() {
    let mut a = master3();
    let m = next_msg(&a);
    drain_after(&mut a, 10, |a| add_voter(a, 10, RequestId(100), s(D), None));
    let outs = drain_after(&mut a, 11, |a| add_voter(a, 11, RequestId(101), s(E), None));
    assert_eq!(outs, vec![], "waits for the first change to commit");
    let outs = respond(&mut a, 20, m, ok());
    // After the add of d commits, e goes as a slot of its own, to the new member list.
    let add_e = addmember(1, 4, E, A);
    let sends: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(x) if x.request == add_e))
        .collect();
    assert_eq!(
        sends,
        vec![
            &send(m + 3, B, add_e.clone()),
            &send(m + 4, C, add_e.clone()),
            &send(m + 5, D, add_e.clone()),
        ]
    );
    assert!(outs.contains(&reply(100, ok())));
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Reply(r) if r.id == RequestId(101))));
    // With four members, b's vote alone (2 of 4) does not decide e.
    assert_eq!(respond(&mut a, 30, m + 3, ok()), vec![]);
    let outs = respond(&mut a, 31, m + 4, ok());
    assert_eq!(outs[0], committed(4, Payload::Add(s(E))));
    assert!(outs.contains(&reply(101, ok())));
}

#[test]
fn membership_stale_version_is_err_sequence() {
    let mut a = master3(); // member-list version 2
    let outs = drain_after(&mut a, 10, |a| {
        add_voter(a, 10, RequestId(100), s(D), Some(1))
    });
    assert_eq!(outs, vec![reply(100, failed(ErrorCode::Sequence, None))]);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(101), s(C), Some(3))
    });
    assert_eq!(outs, vec![reply(101, failed(ErrorCode::Sequence, None))]);
    let m = next_msg(&a);
    let outs = drain_after(&mut a, 10, |a| {
        add_voter(a, 10, RequestId(102), s(D), Some(2))
    });
    assert_eq!(outs[0], send(m, B, addmember(1, 3, D, A)));
}

#[test]
fn membership_change_already_in_effect_is_answered_at_once() {
    let mut a = master3();
    let outs = drain_after(&mut a, 10, |a| add_voter(a, 10, RequestId(100), s(B), None));
    assert_eq!(outs, vec![reply(100, ok())]);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(101), s(D), None)
    });
    assert_eq!(outs, vec![reply(101, ok())]);
}

#[test]
fn membership_the_last_member_cannot_be_removed() {
    let mut a = node(A);
    a.bootstrap(0).unwrap();
    drain(&mut a, 0);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(100), s(A), None)
    });
    assert_eq!(outs, vec![reply(100, failed(ErrorCode::State, None))]);
    assert_eq!(a.members(), strings(&[A]).as_slice());
}

#[test]
fn membership_bad_address_is_err_encoding() {
    let mut a = master3();
    for (i, bad) in ["", "http://d/", "http://d e"].into_iter().enumerate() {
        let outs = drain_after(&mut a, 10, |a| {
            add_voter(a, 10, RequestId(i as u64), s(bad), None)
        });
        assert_eq!(
            outs,
            vec![reply(i as u64, failed(ErrorCode::Encoding, None))]
        );
    }
}

#[test]
fn membership_admin_call_at_a_follower_is_forwarded() {
    let mut b = follower3();
    let m = next_msg(&b);
    let outs = drain_after(&mut b, 10, |b| {
        add_voter(b, 10, RequestId(100), s(D), Some(2))
    });
    let fwd = Request::MembersAdd(AdminMember {
        version: Some(2),
        forwarded: true,
        voter: true,
        ..AdminMember::new(s(D))
    });
    assert_eq!(outs, vec![send(m, A, fwd)]);
    assert_eq!(respond(&mut b, 20, m, ok()), vec![reply(100, ok())]);
}

#[test]
fn membership_master_removing_itself_notifies_answers_and_steps_down() {
    let mut a = master3();
    let m = next_msg(&a);
    let outs = drain_after(&mut a, 10, |a| {
        a.remove_member(10, RequestId(100), s(A), None)
    });
    let rm = rmmember(1, 3, A, A);
    assert_eq!(outs[..2], [send(m, B, rm.clone()), send(m + 1, C, rm)]);
    let pid = next_persist(&a);
    let outs = respond(&mut a, 20, m, ok());
    let hard = hard_with(&a, |h| {
        h.status = Status::Removed;
        h.commit = 3;
        h.staged = None;
        h.members = strings(&[B, C]);
        h.members_version = 3;
    });
    let entry = Entry {
        seq: 3,
        payload: Payload::Rm(s(A)),
    };
    let notice = accept(1, 4, vec![], Some(A));
    let want = [
        committed(3, Payload::Rm(s(A))),
        members_changed(&[B, C], 3),
        persist_full(pid, hard.clone(), vec![entry], None),
        send(m + 2, B, notice.clone()),
        send(m + 3, C, notice),
        reply(100, ok()),
        ev(Event::LostMastership { instance: 1 }),
        ev(Event::Removed),
    ];
    assert_eq!(outs[..want.len()], want[..]);
    // At most a repeat of the same hard state may follow.
    for o in &outs[want.len()..] {
        assert!(
            matches!(o, Output::Persist(p) if p.hard == hard && p.entries.is_empty()),
            "{o:?}"
        );
    }
    assert_eq!(
        (a.role(), a.master(), a.poll_timeout()),
        (Role::Removed, None, None)
    );
}

#[test]
fn membership_removed_node_pushes_its_snapshot_to_a_candidate_behind_it() {
    let mut c = follower3();
    // b plays c here: removed at commit 3, its last member list is [a, c].
    request(
        &mut c,
        0,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(c.role(), Role::Removed);
    let m = next_msg(&c);
    let outs = request(&mut c, 5000, 7, prepare(2, C, Some(2)));
    assert_eq!(
        outs,
        vec![
            send(m, C, start(1, 3, C, B, &[A, C], empty_snap(), Some(3))),
            reply(7, prepare_refusal(1, ErrorCode::State, 3)),
        ]
    );
    // A candidate level with it learns nothing from it; nor does a non-member.
    let outs = request(&mut c, 5000, 8, prepare(2, C, Some(3)));
    assert_eq!(
        outs,
        vec![reply(8, prepare_refusal(1, ErrorCode::State, 3))]
    );
    let outs = request(&mut c, 5000, 9, prepare(2, D, Some(0)));
    assert_eq!(
        outs,
        vec![reply(9, prepare_refusal(1, ErrorCode::State, 3))]
    );
}

#[test]
fn membership_removed_node_refuses_accepts_and_submits() {
    let mut b = follower3();
    request(
        &mut b,
        0,
        1,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let outs = request(&mut b, 10, 7, accept(1, 4, vec![], Some(A)));
    assert_eq!(outs, vec![reply(7, accept_refusal(ErrorCode::State, None))]);
    let outs = request(&mut b, 10, 8, submit(vec![set("k", "v")], false));
    assert_eq!(outs, vec![reply(8, failed(ErrorCode::State, None))]);
    let outs = request(
        &mut b,
        10,
        9,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    assert_eq!(outs, vec![reply(9, failed(ErrorCode::State, None))]);
    assert_eq!(b.start_election(10).unwrap_err().code, ErrorCode::State);
}
