//! Disk faults: a full disk (the data directory on a small tmpfs; these tests run as root), a
//! failing fsync (the storage's test-only seam `CC_TEST_DISK_FAULT`), and a log of a newer
//! format version. A node never acknowledges what it could not make durable, stops with one
//! line naming the file, and restarts without loss once the disk works again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clusterconsensus_tests::*;

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs on {} (needs root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }

    /// More space, the files kept.
    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node still running keeps its files until it is killed.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The line a node prints when it stops because its storage failed; checks it is the last line
/// of its log, the only one about the failure, with no panic or backtrace before it.
fn assert_stopped_with(node: &Node, line: &str) {
    let log = node.log_tail(10_000);
    assert_eq!(
        log.lines().last(),
        Some(line),
        "log of {}:\n{log}",
        node.name
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("storage failed")).count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("panicked") && !log.contains("backtrace"),
        "{log}"
    );
}

/// A value of 8 KiB, so that a few hundred fill a 2 MiB disk.
fn big(i: usize) -> String {
    format!("{i:08}").repeat(1024)
}

/// Submits batches of 4 big values through the nodes in `via` (in turn, moving on after a
/// failure) until `victim` exits; every acknowledged key (with the number its value was made
/// from) is returned, with the exit code.
fn fill_until_exit(c: &mut Cluster, via: &[usize], victim: usize) -> (Vec<(String, usize)>, i32) {
    let mut acked = Vec::new();
    let mut at = 0;
    for batch in 0..2_000 {
        let keys: Vec<String> = (0..4).map(|j| format!("k{batch}-{j}")).collect();
        let changes: Vec<String> = keys.iter().map(|k| set(k, &big(batch))).collect();
        match submit_ok(&c.nodes[via[at % via.len()]].url, "c1", &changes) {
            Ok(_) => acked.extend(keys.into_iter().map(|k| (k, batch))),
            Err(_) => at += 1,
        }
        if let Some(code) = c.nodes[victim].wait_exit(Duration::ZERO) {
            return (acked, code);
        }
    }
    panic!("{} did not stop after 2000 batches", c.nodes[victim].name);
}

/// Waits until every node has every key in `acked` with its value and all agree.
fn assert_all_have(c: &Cluster, acked: &[(String, usize)]) {
    let state = settled_state(c, "c1");
    for (k, i) in acked {
        assert_eq!(state["data"][k], json!(big(*i)), "{k} lost");
    }
}

/// The data directory of node `victim` on a 2 MiB tmpfs; writes until it is full. The node
/// stops with the line naming its log, the other two keep serving, and once the tmpfs is
/// larger the node restarts and catches up, with no acknowledged write lost.
fn full_disk(tag: &str, victim: usize) {
    let dir = TempDir::new(tag);
    let data = dir.path().join(format!("node{}", victim + 1)).join("data");
    let disk = Tmpfs::mount(&data, "2m");
    let path = dir.path().to_path_buf();
    let opts = |i: usize, args: &[String]| -> Result<NodeOptions, String> {
        Ok(NodeOptions::new(&binary(), &path, &format!("node{}", i + 1), &["c1"]).args(args))
    };
    let mut c = Cluster::launch_each(3, &["c1"], &[], dir, None, opts).unwrap();
    // Dropped before the cluster (also on a panic): the lazy unmount, then the nodes killed and
    // the directory removed, the mount point then an empty directory.
    let disk = disk;
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    // Node 1 bootstrapped the cluster and is its master while nothing fails.
    assert_eq!(c.master("c1"), Some(0));

    let (mut acked, code) = fill_until_exit(&mut c, &[0, 1, 2], victim);
    assert_eq!(code, 1);
    assert_stopped_with(
        &c.nodes[victim],
        &format!(
            "error: cluster \"c1\": storage failed, node stopped: write {}: No space left on \
             device (os error 28)",
            data.join("c1.wal").display()
        ),
    );
    // The other two serve on.
    c.wait_master("c1", Duration::from_secs(10));
    for i in 0..5 {
        let key = format!("after{i}");
        let via = &c.nodes[others[i % 2]].url;
        wait_for(Duration::from_secs(10), "a submit after the stop", || {
            submit_ok(via, "c1", &[set(&key, &big(i))]).ok()
        });
        acked.push((key, i));
    }
    eprintln!("{} writes acknowledged", acked.len());
    assert!(acked.len() > 5 + 4 * 20, "{} acknowledged", acked.len());

    disk.grow("16m");
    c.nodes[victim].restart();
    assert_all_have(&c, &acked);
}

#[test]
fn full_disk_on_a_follower_stops_it_and_it_catches_up_after() {
    full_disk("diskfull-follower", 1);
}

#[test]
fn full_disk_on_the_master_stops_it_and_it_catches_up_after() {
    full_disk("diskfull-master", 0);
}

/// A one-node cluster whose 10th record sync fails: every submit before it was acknowledged
/// and survives, the one whose sync failed is not acknowledged, and the node stops.
#[test]
fn failed_fsync_is_never_acknowledged_and_stops_the_node() {
    let dir = TempDir::new("fsyncfault");
    let path = dir.path().to_path_buf();
    let opts = |i: usize, args: &[String]| -> Result<NodeOptions, String> {
        Ok(
            NodeOptions::new(&binary(), &path, &format!("node{}", i + 1), &["c1"])
                .args(args)
                .env("CC_TEST_DISK_FAULT", "fsync:10"),
        )
    };
    let mut c = Cluster::launch_each(1, &["c1"], &[], dir, None, opts).unwrap();
    let url = c.nodes[0].url.clone();
    let mut acked = Vec::new();
    let refused = loop {
        let key = format!("k{}", acked.len());
        match submit_ok(&url, "c1", &[set(&key, "1")]) {
            Ok(_) => acked.push(key),
            Err(e) => break e,
        }
        assert!(acked.len() < 10, "10 submits acknowledged");
    };
    // Starting and each submit make a fixed number of records durable, so the sync that
    // fails is always the fifth submit's.
    assert_eq!(acked.len(), 4, "then: {refused}");
    assert_stopped_by_fsync(&mut c.nodes[0], 10);

    c.nodes[0].remove_env("CC_TEST_DISK_FAULT");
    c.nodes[0].restart();
    c.wait_master("c1", Duration::from_secs(10));
    for k in &acked {
        assert_eq!(kv_get(&url, "c1", k).as_deref(), Some("1"), "{k} lost");
    }
    submit_ok(&url, "c1", &[set("after", "1")]).unwrap();
}

/// Waits for the node to exit with code 1 after its `fsync:N` fault, with the one line that
/// names the log file.
fn assert_stopped_by_fsync(node: &mut Node, n: u32) {
    assert_eq!(node.wait_exit(Duration::from_secs(10)), Some(1));
    let wal = node.data_dir.join("c1.wal");
    assert_stopped_with(
        node,
        &format!(
            "error: cluster \"c1\": storage failed, node stopped: sync {}: injected I/O error \
             (CC_TEST_DISK_FAULT=fsync:{n})",
            wal.display()
        ),
    );
}

/// The same under 8 concurrent submitters, so that inputs are queued behind the failure: the
/// node still stops with the line naming the file (not with the writer thread gone), and every
/// acknowledged submit survives.
#[test]
fn failed_fsync_under_concurrent_submits_stops_with_the_line() {
    let dir = TempDir::new("fsyncconc");
    let path = dir.path().to_path_buf();
    let opts = |i: usize, args: &[String]| -> Result<NodeOptions, String> {
        Ok(
            NodeOptions::new(&binary(), &path, &format!("node{}", i + 1), &["c1"])
                .args(args)
                .env("CC_TEST_DISK_FAULT", "fsync:40"),
        )
    };
    let mut c = Cluster::launch_each(1, &["c1"], &[], dir, None, opts).unwrap();
    let url = c.nodes[0].url.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..1_000 {
                    let key = format!("t{t}-{i}");
                    if submit_ok(&url, "c1", &[set(&key, "1")]).is_err() {
                        break;
                    }
                    acked.push(key);
                }
                acked
            })
        })
        .collect();
    let acked: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_stopped_by_fsync(&mut c.nodes[0], 40);
    c.nodes[0].remove_env("CC_TEST_DISK_FAULT");
    c.nodes[0].restart();
    c.wait_master("c1", Duration::from_secs(10));
    let state = settled_state(&c, "c1");
    for k in &acked {
        assert_eq!(state["data"][k], json!("1"), "{k} lost");
    }
}

/// With one follower down, the master needs the other one's vote; that follower's first sync
/// fails, so it never votes for the write: nothing is acknowledged, and it stops. Once the
/// third node is back the cluster serves again, every acknowledged write kept.
#[test]
fn follower_whose_fsync_failed_never_votes() {
    let mut c = Cluster::start("fsyncvote", 3, &["c1"], &[]);
    assert_eq!(c.master("c1"), Some(0));
    let url = c.nodes[0].url.clone();
    let mut acked = Vec::new();
    for i in 0..5 {
        let key = format!("before{i}");
        submit_ok(&url, "c1", &[set(&key, "1")]).unwrap();
        acked.push(key);
    }
    settled_state(&c, "c1");
    c.nodes[2].kill();
    c.nodes[1].set_env("CC_TEST_DISK_FAULT", "fsync:1");
    c.nodes[1].restart();

    let answer = submit(&url, "c1", &[set("unvoted", "1")]);
    assert!(
        answer.as_ref().map_or(true, |v| v["fail"] != json!(false)),
        "acknowledged without a durable majority: {answer:?}"
    );
    assert_eq!(c.nodes[1].wait_exit(Duration::from_secs(10)), Some(1));
    let wal = c.nodes[1].data_dir.join("c1.wal");
    assert_stopped_with(
        &c.nodes[1],
        &format!(
            "error: cluster \"c1\": storage failed, node stopped: sync {}: injected I/O error \
             (CC_TEST_DISK_FAULT=fsync:1)",
            wal.display()
        ),
    );

    c.nodes[2].restart();
    c.nodes[1].remove_env("CC_TEST_DISK_FAULT");
    c.nodes[1].restart();
    c.wait_master("c1", Duration::from_secs(10));
    submit_ok(&url, "c1", &[set("after", "1")]).unwrap();
    acked.push("after".into());
    let state = settled_state(&c, "c1");
    for k in &acked {
        assert_eq!(state["data"][k], json!("1"), "{k} lost");
    }
}

/// A log written by a newer version is refused at startup, naming both versions.
#[test]
fn log_of_a_future_format_version_is_refused() {
    let dir = TempDir::new("futurelog");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let body = br#"{"version":4}"#;
    let mut wal = Vec::new();
    wal.extend_from_slice(&(body.len() as u32).to_le_bytes());
    wal.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    wal.extend_from_slice(body);
    std::fs::write(data.join("c1.wal"), &wal).unwrap();

    let dir_arg = data.display().to_string();
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir_arg,
        "--cluster",
        "c1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.lines().last(),
        Some(
            format!(
                "error: cluster \"c1\": storage: {}: log format version 4, but this build reads \
                 versions 1 to 3; run the clusterconsensus that wrote it (or a newer one)",
                data.join("c1.wal").display()
            )
            .as_str()
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(data.join("c1.wal")).unwrap(), wal);
}
