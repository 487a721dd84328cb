//! Operator recovery: a new one-member cluster from what a node stored (`--force-new-cluster`)
//! or from a backup (`snapshot restore`).
//!
//! Both rewrite the member list outside the protocol, which is a protocol decision, so it lives
//! here rather than in a host. Each returns the [`Persist`] to make durable; the host MUST write
//! it (and fold it into what it restores from) before the node serves anything, so that a crash
//! right after cannot bring the node back as a member of the old cluster.
//!
//! The danger, said once for both: the old cluster's other members still hold the old member
//! list. Run this on one node only, and never start the old members again (wipe their data
//! first): two nodes each forced alone would be two clusters of the same name that diverge.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::Error;
use crate::output::{HardState, Persist, Snapshot, Status, Stored};
use crate::wire::Payload;

impl Stored {
    /// `--force-new-cluster`: makes this node the only member of its cluster, keeping everything
    /// it committed. Changes `self` in place and returns the write to make durable before the
    /// node serves (see the module doc); then [`Participant::restore`](crate::Participant::restore)
    /// from `self`. The node resumes as a follower of a one-member cluster, wins its own
    /// election at its next timeout and then takes new members (as learners) as usual.
    ///
    /// - The voters become this node alone, the learners none; the member-list version becomes
    ///   the commit, so an admin call made against the old list is refused.
    /// - A staged batch of changes is kept: it may have been chosen by the lost majority and
    ///   answered to its client, and the election recovers it (rule 3) as it would any staged
    ///   slot. A staged membership change is dropped: it would bring a lost member back.
    /// - The promise stays (instances only grow); the promised master is forgotten.
    ///
    /// Refused (`ERR_STATE`) when nothing is committed here: no stored state, a node that
    /// never joined or was removed, or a commit of 0 with nothing staged.
    pub fn force_new_cluster(&mut self) -> Result<Persist, Error> {
        let Some(hard) = self.hard.as_mut() else {
            return Err(Error::state(
                "no stored state: nothing to keep (this data directory was never used)",
            ));
        };
        match hard.status {
            Status::Joined => {}
            Status::Unjoined => {
                return Err(Error::state(
                    "this node never joined a cluster: it holds no committed state",
                ))
            }
            Status::Removed => {
                return Err(Error::state(
                    "this node was removed from its cluster: its state is not the cluster's",
                ))
            }
        }
        let staged = hard
            .staged
            .clone()
            .filter(|s| matches!(s.payload, Payload::Changes(_)));
        if hard.commit == 0 && staged.is_none() {
            return Err(Error::state(
                "nothing committed here (commit 0): start a new cluster with --bootstrap instead",
            ));
        }
        hard.staged = staged;
        hard.members = vec![hard.self_addr.clone()];
        hard.learners = Vec::new();
        hard.members_version = hard.commit;
        hard.promised_master = None;
        Ok(Persist::record(hard.clone(), Vec::new(), None))
    }

    /// `snapshot restore`: what a fresh node stores to found a new cluster `cluster` holding
    /// `snapshot`, with itself (`self_addr`) the only member. Returns the write that holds all
    /// of it (the snapshot and the hard state); the node replays it like any stored state.
    pub fn from_backup(cluster: &str, self_addr: &str, snapshot: Snapshot) -> Persist {
        let seq = snapshot.seq;
        let hard = HardState {
            cluster: cluster.into(),
            self_addr: self_addr.into(),
            status: Status::Joined,
            promised: 0,
            promised_master: None,
            commit: seq,
            staged: None,
            members: vec![self_addr.into()],
            learners: Vec::new(),
            members_version: seq,
        };
        Persist::record(hard, Vec::new(), Some(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvStore;
    use crate::wire::{Learner, Staged};
    use crate::{Config, Participant, Role};
    use alloc::string::{String, ToString};

    fn set(k: &str, v: &str) -> String {
        alloc::format!(r#"{{"op":"set","key":"{k}","value":"{v}"}}"#)
    }

    /// What a follower of a three-member cluster stored after two commits and a staged third.
    fn follower(staged: Option<Payload>) -> Stored {
        let hard = HardState {
            cluster: "c".into(),
            self_addr: "http://b".into(),
            status: Status::Joined,
            promised: 7,
            promised_master: Some("http://a".into()),
            commit: 2,
            staged: staged.map(|payload| Staged {
                instance: 7,
                seq: 3,
                payload,
            }),
            members: vec!["http://a".into(), "http://b".into(), "http://c".into()],
            learners: vec![Learner {
                addr: "http://d".into(),
                promote: true,
            }],
            members_version: 1,
        };
        let entries = (1..=2)
            .map(|seq| crate::Entry {
                seq,
                payload: Payload::Changes(vec![set(&alloc::format!("k{seq}"), "v")].into()),
            })
            .collect();
        Stored {
            hard: Some(hard),
            snapshot: None,
            entries,
            saved: Vec::new(),
        }
    }

    #[test]
    fn force_keeps_commit_and_staged_changes_and_makes_self_the_only_member() {
        let staged = Payload::Changes(vec![set("k3", "v")].into());
        let mut stored = follower(Some(staged.clone()));
        let before = stored.clone();
        let p = stored.force_new_cluster().unwrap();
        let mut want = before.hard.clone().unwrap();
        want.members = vec!["http://b".into()];
        want.learners = vec![];
        want.members_version = 2;
        want.promised_master = None;
        assert_eq!(p, Persist::record(want.clone(), vec![], None));
        // What a host folds in is what it wrote: entries untouched, the new hard state.
        let mut replay = before.clone();
        replay.apply(&p);
        assert_eq!(replay, stored);
        assert_eq!(stored.entries, before.entries);
        assert_eq!(
            stored.hard.as_ref().and_then(|h| h.staged.clone()),
            Some(Staged {
                instance: 7,
                seq: 3,
                payload: staged
            })
        );

        // Restored, it is a follower of a cluster of one that wins at its first timeout and
        // commits the staged batch (rule 3).
        let cfg = Config::new("c", "http://b");
        let mut node = Participant::restore(cfg, KvStore::new(), stored, 0).unwrap();
        assert_eq!(node.role(), Role::Participant);
        assert_eq!(node.members(), ["http://b".to_string()]);
        assert_eq!(node.commit(), 2);
        while !node.is_serving_master() {
            let now = node.poll_timeout().unwrap();
            node.handle_timeout(now);
            while let Some(out) = node.poll_output() {
                if let crate::Output::Persist(p) = out {
                    node.persisted(now, p.id);
                }
            }
            assert!(now < 10_000, "no master after {now} ms");
        }
        assert_eq!(node.commit(), 3);
        assert_eq!(node.state().get("k3"), Some("v"));
        assert_eq!(node.state().get("k1"), Some("v"));
    }

    #[test]
    fn force_drops_a_staged_membership_change() {
        let mut stored = follower(Some(Payload::Add("http://e".into())));
        let p = stored.force_new_cluster().unwrap();
        assert_eq!(p.hard.staged, None);
        assert_eq!(p.hard.members, ["http://b".to_string()]);
        assert_eq!(p.hard.commit, 2);
    }

    #[test]
    fn force_refuses_without_committed_state() {
        let refused = |mut s: Stored| s.force_new_cluster().unwrap_err().message;
        assert_eq!(
            refused(Stored::default()),
            "no stored state: nothing to keep (this data directory was never used)"
        );
        let mut unjoined = follower(None);
        unjoined.hard.as_mut().unwrap().status = Status::Unjoined;
        assert_eq!(
            refused(unjoined),
            "this node never joined a cluster: it holds no committed state"
        );
        let mut removed = follower(None);
        removed.hard.as_mut().unwrap().status = Status::Removed;
        assert_eq!(
            refused(removed),
            "this node was removed from its cluster: its state is not the cluster's"
        );
        let mut empty = follower(Some(Payload::Rm("http://c".into())));
        empty.entries.clear();
        empty.hard.as_mut().unwrap().commit = 0;
        let before = empty.clone();
        assert_eq!(
            refused(empty.clone()),
            "nothing committed here (commit 0): start a new cluster with --bootstrap instead"
        );
        // A refusal changes nothing.
        let _ = empty.force_new_cluster();
        assert_eq!(empty, before);
    }

    #[test]
    fn from_backup_founds_a_cluster_of_one_at_the_snapshots_seq() {
        let mut app = KvStore::new();
        let _ = crate::StateMachine::apply(&mut app, 1, &set("a", "1"));
        let data = crate::snapshot_to_string(crate::StateMachine::snapshot(&app)).unwrap();
        let p = Stored::from_backup(
            "new",
            "http://x",
            Snapshot {
                seq: 41,
                data: data.clone(),
            },
        );
        assert_eq!(p.hard.commit, 41);
        assert_eq!(p.hard.members, ["http://x".to_string()]);
        assert_eq!(p.hard.status, Status::Joined);
        assert_eq!(p.snapshot, Some(Snapshot { seq: 41, data }));
        let mut stored = Stored::default();
        stored.apply(&p);
        let node = Participant::restore(Config::new("new", "http://x"), KvStore::new(), stored, 0)
            .unwrap();
        assert_eq!(node.commit(), 41);
        assert_eq!(node.state().get("a"), Some("1"));
        assert_eq!(node.role(), Role::Participant);
    }
}
