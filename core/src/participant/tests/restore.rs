//! Restarting from what the host stored (`Participant::restore`).

use super::*;

#[test]
fn restore_of_a_master_resumes_as_a_participant() {
    let mut net = cluster3();
    net.node(A).submit(0, RequestId(1), vec![set("k", "v")]);
    net.run();
    assert_eq!(
        net.client,
        vec![Reply {
            id: RequestId(1),
            response: committed_ok(3, 1)
        }]
    );
    let stored = net.disks[A].clone();
    let before = net.take(A);
    let a = Participant::restore(cfg(A), KvStore::new(), stored, 7000).unwrap();
    assert_eq!(a.role(), Role::Participant, "never master after a restart");
    assert!(!a.is_serving_master());
    assert_eq!(a.master(), None);
    assert_eq!(a.instance(), 1);
    assert_eq!(a.commit(), 3);
    assert_eq!(a.members(), strings(&[A, B, C]).as_slice());
    assert_eq!(a.members_version(), 2);
    assert_eq!(a.state(), before.state());
    assert_eq!(a.state().get("k"), Some("v"));
    let t = a.poll_timeout().unwrap();
    assert!((8000..9000).contains(&t), "{t}");
}

#[test]
fn restore_then_campaign_goes_above_the_stored_promise() {
    let mut net = cluster3();
    let stored = net.disks[B].clone();
    net.take(B);
    let mut b = Participant::restore(cfg(B), KvStore::new(), stored, 7000).unwrap();
    let t = b.poll_timeout().unwrap();
    let (pid, m) = (next_persist(&b), next_msg(&b));
    let outs = tick(&mut b, t);
    let hard = hard_with(&b, |h| {
        h.promised = 2;
        h.promised_master = Some(s(B));
    });
    assert_eq!(
        outs,
        vec![
            persist(pid, hard),
            send(m, A, prepare(2, B, Some(2))),
            send(m + 1, C, prepare(2, B, Some(2))),
        ]
    );
}

#[test]
fn restore_keeps_the_staged_slot_and_the_removed_status() {
    let (mut b, st) = follower3_staged();
    let mut disk = Stored::default();
    // Rebuild what a host would have stored: the start, then the staged accept.
    let mut fresh = node(B);
    fresh.handle_request(
        0,
        RequestId(1),
        start(1, 2, B, A, &[A, B, C], empty_snap(), Some(2)),
    );
    fresh.handle_request(0, RequestId(2), accept(1, 3, vec![set("x", "1")], Some(A)));
    while let Some(o) = fresh.poll_output() {
        if let Output::Persist(p) = o {
            disk.apply(&p);
            fresh.persisted(0, p.id);
        }
    }
    let r = Participant::restore(cfg(B), KvStore::new(), disk.clone(), 10).unwrap();
    assert_eq!(r.staged(), Some(&st));
    assert_eq!(r.hard_state(), b.hard_state());
    // Removed.
    request(
        &mut b,
        20,
        3,
        start(1, 3, B, A, &[A, C], empty_snap(), Some(3)),
    );
    let mut h = disk.clone();
    h.hard = Some(b.hard_state().clone());
    h.snapshot = Some(Snapshot {
        seq: 3,
        data: empty_snap(),
    });
    h.entries.clear();
    let r = Participant::restore(cfg(B), KvStore::new(), h, 30).unwrap();
    assert_eq!((r.role(), r.poll_timeout()), (Role::Removed, None));
}

#[test]
fn restore_from_a_snapshot_and_entries() {
    let mut a = Participant::new(
        Config {
            snapshot_every: 2,
            ..cfg(A)
        },
        KvStore::new(),
    )
    .unwrap();
    let mut disk = Stored::default();
    let mut run = |a: &mut P, f: &dyn Fn(&mut P)| {
        f(a);
        // A host that saves every snapshot job at once.
        if let Some(job) = a.take_snapshot_job() {
            let data = crate::snapshot_to_string(job.source).unwrap();
            disk.save_snapshot(Snapshot { seq: job.seq, data });
            a.snapshot_saved(0, job.seq, 0);
        }
        while let Some(o) = a.poll_output() {
            if let Output::Persist(p) = o {
                disk.apply(&p);
                a.persisted(0, p.id);
            }
        }
    };
    run(&mut a, &|a| a.bootstrap(0).unwrap());
    for i in 1..=3u64 {
        run(&mut a, &|a| {
            a.submit(0, RequestId(i), vec![set(&alloc::format!("k{i}"), "v")])
        });
    }
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(2));
    assert_eq!(disk.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let r = Participant::restore(cfg(A), KvStore::new(), disk, 10).unwrap();
    assert_eq!(r.commit(), 3);
    assert_eq!(r.state(), a.state());
    assert_eq!(r.state().len(), 3);
}

#[test]
fn restore_of_nothing_is_a_fresh_unjoined_node() {
    let r = Participant::restore(cfg(B), KvStore::new(), Stored::default(), 10).unwrap();
    assert_eq!(
        (r.role(), r.commit(), r.poll_timeout()),
        (Role::Unjoined, 0, None)
    );
}

#[test]
fn restore_of_corrupt_state_says_what_is_wrong() {
    let mut net = cluster3();
    net.node(A).submit(0, RequestId(1), vec![set("k", "v")]);
    net.run();
    let good = net.disks[A].clone();
    assert!(Participant::restore(cfg(A), KvStore::new(), good.clone(), 0).is_ok());
    let err = |s: Stored| Participant::restore(cfg(A), KvStore::new(), s, 0).unwrap_err();
    // Another cluster's state.
    let mut other = good.clone();
    other.hard.as_mut().unwrap().cluster = s("c2");
    assert_eq!(
        err(other),
        RestoreError::WrongCluster {
            stored: s("c2"),
            configured: s(CLUSTER)
        }
    );
    // A hole in the entries.
    let mut hole = good.clone();
    hole.entries.remove(1);
    assert!(matches!(err(hole), RestoreError::Inconsistent(_)));
    // A commit index beyond the entries.
    let mut beyond = good.clone();
    beyond.hard.as_mut().unwrap().commit = 9;
    assert!(matches!(err(beyond), RestoreError::Inconsistent(_)));
    // A snapshot the application cannot read.
    let mut bad = good.clone();
    bad.snapshot = Some(Snapshot {
        seq: 0,
        data: s("not json"),
    });
    assert!(matches!(err(bad), RestoreError::Snapshot(_)));
}
