//! The periodic snapshot, saved by the host off the hot path (docs/PROTOCOL.md section 11):
//! `take_snapshot_job` hands out a frozen view every `snapshot_every` commits, the entries go
//! on being persisted, and the log is compacted only once the host reports the snapshot saved.

use super::*;

/// A one-member cluster snapshotting every `every` commits, bootstrapped, its writes applied
/// to `disk`.
fn solo(every: u64, disk: &mut Stored) -> P {
    let mut a = Participant::new(
        Config {
            snapshot_every: every,
            ..cfg(A)
        },
        KvStore::new(),
    )
    .unwrap();
    a.bootstrap(0).unwrap();
    persist_all(&mut a, disk);
    a
}

/// Polls every output, applying each Persist to `disk` and reporting it durable; returns the
/// Persists.
fn persist_all(a: &mut P, disk: &mut Stored) -> Vec<Persist> {
    let mut out = Vec::new();
    while let Some(o) = a.poll_output() {
        if let Output::Persist(p) = o {
            disk.apply(&p);
            a.persisted(0, p.id);
            out.push(p);
        }
    }
    out
}

fn write(a: &mut P, disk: &mut Stored, i: u64) -> Vec<Persist> {
    write_at(a, disk, i, 0)
}

fn write_at(a: &mut P, disk: &mut Stored, i: u64, now: u64) -> Vec<Persist> {
    a.submit(
        now,
        RequestId(100 + i),
        vec![set(&alloc::format!("k{i}"), "v")],
    );
    persist_all(a, disk)
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

#[test]
fn a_job_is_due_every_snapshot_every_commits_and_the_entries_stay_in_the_log() {
    let mut disk = Stored::default();
    let mut a = solo(3, &mut disk);
    assert_eq!(a.commit(), 0);
    for i in 1..=2 {
        write(&mut a, &mut disk, i);
        assert!(a.take_snapshot_job().is_none());
    }
    let persists = write(&mut a, &mut disk, 3);
    assert_eq!(a.commit(), 3);
    // The commit that made the job due is persisted as an entry, not as a snapshot.
    assert!(persists
        .iter()
        .all(|p| p.snapshot.is_none() && p.compact.is_none()));
    assert_eq!(seqs(&disk.entries), [1, 2, 3]);
    let job = a.take_snapshot_job().expect("due at commit 3");
    assert_eq!(job.seq, 3);
    // Handed out once.
    assert!(a.take_snapshot_job().is_none());
    // The frozen view does not see later commits.
    write(&mut a, &mut disk, 4);
    let text = crate::snapshot_to_string(job.source).unwrap();
    let frozen = crate::restore_from(&KvStore::new(), text.as_bytes()).unwrap();
    assert_eq!(frozen.len(), 3);
    assert_eq!(a.state().len(), 4);
    assert_eq!(seqs(&disk.entries), [1, 2, 3, 4]);
    assert!(disk.snapshot.is_none());
}

#[test]
fn the_log_is_compacted_only_after_snapshot_saved() {
    let mut disk = Stored::default();
    let mut a = solo(2, &mut disk);
    write(&mut a, &mut disk, 1);
    write(&mut a, &mut disk, 2);
    let job = a.take_snapshot_job().unwrap();
    assert_eq!(job.seq, 2);
    write(&mut a, &mut disk, 3);
    assert_eq!(seqs(&disk.entries), [1, 2, 3]);
    let data = crate::snapshot_to_string(job.source).unwrap();
    disk.save_snapshot(Snapshot { seq: 2, data });
    a.snapshot_saved(5, 2, 0);
    let hard = a.hard_state().clone();
    let out = persist_all(&mut a, &mut disk);
    let got: Vec<_> = out
        .iter()
        .map(|p| (&p.hard, p.entries.len(), &p.snapshot, p.compact))
        .collect();
    assert_eq!(got, [(&hard, 0, &None, Some(2))]);
    assert_eq!(seqs(&disk.entries), [3]);
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(2));
    let r = Participant::restore(cfg(A), KvStore::new(), disk, 10).unwrap();
    assert_eq!((r.commit(), r.state()), (3, a.state()));
    // Reported twice, or stale: nothing more to write.
    a.snapshot_saved(6, 2, 0);
    a.snapshot_saved(6, 1, 0);
    assert_eq!(drain(&mut a, 6), []);
}

#[test]
fn a_newer_job_supersedes_and_an_older_save_after_it_is_ignored() {
    let mut disk = Stored::default();
    let mut a = solo(2, &mut disk);
    write(&mut a, &mut disk, 1);
    write(&mut a, &mut disk, 2);
    let old = a.take_snapshot_job().unwrap();
    write(&mut a, &mut disk, 3);
    write(&mut a, &mut disk, 4);
    let new = a.take_snapshot_job().unwrap();
    assert_eq!((old.seq, new.seq), (2, 4));
    let data = crate::snapshot_to_string(new.source).unwrap();
    disk.save_snapshot(Snapshot { seq: 4, data });
    a.snapshot_saved(0, 4, 0);
    let p = persist_all(&mut a, &mut disk);
    assert_eq!(p.iter().map(|p| p.compact).collect::<Vec<_>>(), [Some(4)]);
    // The older job finishing late changes nothing (its snapshot is not newer either).
    let data = crate::snapshot_to_string(old.source).unwrap();
    disk.save_snapshot(Snapshot { seq: 2, data });
    a.snapshot_saved(0, 2, 0);
    assert!(persist_all(&mut a, &mut disk).is_empty());
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(4));
    assert!(disk.entries.is_empty());
}

#[test]
fn a_job_never_saved_loses_nothing() {
    let mut disk = Stored::default();
    let mut a = solo(2, &mut disk);
    for i in 1..=6 {
        write(&mut a, &mut disk, i);
        let _dropped = a.take_snapshot_job();
    }
    assert_eq!(seqs(&disk.entries), [1, 2, 3, 4, 5, 6]);
    let r = Participant::restore(cfg(A), KvStore::new(), disk, 10).unwrap();
    assert_eq!((r.commit(), r.state()), (6, a.state()));
}

#[test]
fn restore_skips_entries_at_or_below_the_snapshot() {
    // A host whose log names a saved snapshot before it drops the entries it covers, and a
    // crash between the two.
    let mut disk = Stored::default();
    let mut a = solo(3, &mut disk);
    for i in 1..=3 {
        write(&mut a, &mut disk, i);
    }
    let job = a.take_snapshot_job().unwrap();
    write(&mut a, &mut disk, 4);
    let data = crate::snapshot_to_string(job.source).unwrap();
    disk.snapshot = Some(Snapshot { seq: 3, data });
    assert_eq!(seqs(&disk.entries), [1, 2, 3, 4]);
    let mut r = Participant::restore(cfg(A), KvStore::new(), disk.clone(), 10).unwrap();
    assert_eq!((r.commit(), r.state()), (4, a.state()));
    // The restored node counts only the entries after its snapshot toward the next job, and
    // compacts no further than it stored.
    assert!(r.take_snapshot_job().is_none());
    r.snapshot_saved(11, 3, 0);
    assert!(persist_all(&mut r, &mut disk).is_empty());
}

#[test]
fn a_saved_snapshot_counts_only_once_its_compaction_is_stored() {
    // On a follower the commit moves in memory before its Persist is durable, so a job may be
    // of a commit the stored hard state does not have yet. Until the compaction that names it
    // is stored, a restart ignores the saved snapshot (its member list and commit would be
    // newer than the stored hard state's).
    let mut disk = Stored::default();
    let mut a = solo(3, &mut disk);
    for i in 1..=2 {
        write(&mut a, &mut disk, i);
    }
    let mut before = disk.clone(); // the disk without commit 3's Persist
    write(&mut a, &mut disk, 3);
    let job = a.take_snapshot_job().expect("due at commit 3");
    let data = crate::snapshot_to_string(job.source).unwrap();
    before.save_snapshot(Snapshot {
        seq: 3,
        data: data.clone(),
    });
    assert_eq!((before.snapshot.as_ref(), before.saved.len()), (None, 1));
    let r = Participant::restore(cfg(A), KvStore::new(), before, 10).unwrap();
    assert_eq!(r.commit(), 2);
    // Saved after commit 3's Persist, then compacted: now it is the stored snapshot.
    disk.save_snapshot(Snapshot { seq: 3, data });
    a.snapshot_saved(0, 3, 10);
    let compacting = persist_all(&mut a, &mut disk);
    assert_eq!(
        compacting.iter().map(|p| p.compact).collect::<Vec<_>>(),
        [Some(3)]
    );
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(3));
    assert!(disk.saved.is_empty() && disk.entries.is_empty());
    let r = Participant::restore(cfg(A), KvStore::new(), disk, 10).unwrap();
    assert_eq!((r.commit(), r.state()), (3, a.state()));
}

#[test]
fn an_installed_snapshot_makes_an_unsaved_job_stale() {
    let mut b = node(B);
    let mut disk = Stored::default();
    b.handle_request(
        0,
        RequestId(1),
        start(1, 0, B, A, &[A, B], empty_snap(), Some(0)),
    );
    persist_all(&mut b, &mut disk);
    let mut kv = KvStore::new();
    let _ = kv.apply(5, &set("x", "1"));
    b.handle_request(
        1,
        RequestId(2),
        start(1, 5, B, A, &[A, B], snap_of(&kv), Some(5)),
    );
    let p = persist_all(&mut b, &mut disk);
    assert_eq!(p.iter().map(|p| p.compact).collect::<Vec<_>>(), [None]);
    assert_eq!(disk.snapshot.as_ref().map(|s| s.seq), Some(5));
    // A save at or below the installed snapshot is stale.
    b.snapshot_saved(2, 5, 0);
    b.snapshot_saved(2, 3, 0);
    assert!(persist_all(&mut b, &mut disk).is_empty());
}

/// Writes from `from` on until a snapshot job is due; the job's seq and the bytes the rule
/// counted for the writes (each change plus 8).
fn write_until_due(a: &mut P, disk: &mut Stored, from: u64) -> (u64, u64, u64) {
    write_until_due_at(a, disk, from, 0)
}

fn write_until_due_at(a: &mut P, disk: &mut Stored, from: u64, now: u64) -> (u64, u64, u64) {
    let mut bytes = 0;
    for i in from..from + 1000 {
        write_at(a, disk, i, now);
        bytes += (set(&alloc::format!("k{i}"), "v").len() + 8) as u64;
        if let Some(job) = a.take_snapshot_job() {
            return (job.seq, i, bytes);
        }
    }
    panic!("no snapshot job in 1000 writes");
}

#[test]
fn a_job_is_due_once_the_log_holds_as_many_bytes_as_the_state_at_least_snapshot_min_bytes() {
    let mut disk = Stored::default();
    let mut a = Participant::new(
        Config {
            snapshot_every: 10_000,
            snapshot_min_bytes: 100,
            ..cfg(A)
        },
        KvStore::new(),
    )
    .unwrap();
    a.bootstrap(0).unwrap();
    persist_all(&mut a, &mut disk);
    // No snapshot size known yet: the floor decides.
    let (seq, last, _) = write_until_due(&mut a, &mut disk, 1);
    assert_eq!(a.commit(), seq);
    a.snapshot_saved(0, seq, 1000);
    persist_all(&mut a, &mut disk);
    // A state of 1000 bytes: due with the write that brings the log to 1000 bytes, not before.
    let (seq2, last2, bytes) = write_until_due(&mut a, &mut disk, last + 1);
    let one_less = bytes - (set(&alloc::format!("k{last2}"), "v").len() + 8) as u64;
    assert!(bytes >= 1000 && one_less < 1000, "{one_less} .. {bytes}");
    assert_eq!(seq2, a.commit());
    // A smaller state: the floor again (100 bytes: three writes of about 40).
    a.snapshot_saved(0, seq2, 50);
    persist_all(&mut a, &mut disk);
    let (_, last3, bytes) = write_until_due(&mut a, &mut disk, last2 + 1);
    assert_eq!((last3 - last2, bytes >= 100), (3, true), "{bytes}");
    // A stale save (below the stored snapshot) does not change the size either.
    a.snapshot_saved(0, seq, 1_000_000);
    persist_all(&mut a, &mut disk);
    let (_, last4, _) = write_until_due(&mut a, &mut disk, last3 + 1);
    assert_eq!(last4 - last3, 3);
}

#[test]
fn a_restart_counts_the_bytes_of_the_log_after_the_stored_snapshot() {
    let mut disk = Stored::default();
    let c = Config {
        snapshot_every: 10_000,
        snapshot_min_bytes: 100,
        ..cfg(A)
    };
    let mut a = Participant::new(c.clone(), KvStore::new()).unwrap();
    a.bootstrap(0).unwrap();
    persist_all(&mut a, &mut disk);
    let (seq, last, _) = write_until_due(&mut a, &mut disk, 1);
    // The host saves the state's text; on a restart its length is the state's size.
    let text = crate::snapshot_to_string(a.state().snapshot()).unwrap();
    let threshold = (text.len() as u64).max(100);
    disk.save_snapshot(Snapshot {
        seq,
        data: text.clone(),
    });
    a.snapshot_saved(0, seq, text.len() as u64);
    persist_all(&mut a, &mut disk);
    // Two writes after the snapshot, then a restart: it counts them.
    let w = |i: u64| (set(&alloc::format!("k{i}"), "v").len() + 8) as u64;
    write(&mut a, &mut disk, last + 1);
    write(&mut a, &mut disk, last + 2);
    let before = w(last + 1) + w(last + 2);
    assert!(before < threshold && a.take_snapshot_job().is_none());
    let mut r = Participant::restore(c, KvStore::new(), disk.clone(), 10).unwrap();
    let mut now = 10;
    while !r.is_serving_master() {
        now += 500;
        assert!(now < 100_000, "the restarted node never serves");
        r.handle_timeout(now);
        persist_all(&mut r, &mut disk);
    }
    let (due, at, bytes) = write_until_due_at(&mut r, &mut disk, last + 3, now);
    assert_eq!(due, r.commit());
    let total = before + bytes;
    assert!(
        total >= threshold && total - w(at) < threshold,
        "{total} bytes, threshold {threshold}"
    );
}
