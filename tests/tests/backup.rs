//! Backup, restore and recovery from a lone survivor, on real node processes:
//! `clusterconsensus snapshot save|restore` and `node --force-new-cluster`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterconsensus_tests::*;

/// A port that was free a moment ago: a restored node's address must be known before it
/// starts (it is the new cluster's first member).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A client that sets `k<i>` to `v<i>` for i = 0, 1, ... through `node`, one at a time, until
/// stopped or a submit fails; every acknowledged write with the seq that committed it.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, u64)>>>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl Writer {
    fn start(node: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a, node) = (stop.clone(), acked.clone(), node.to_string());
        let thread = std::thread::spawn(move || {
            for i in 0.. {
                if s.load(Ordering::Relaxed) {
                    return None;
                }
                let (k, v) = (format!("k{i:05}"), format!("v{i}"));
                match submit_ok(&node, "c1", &[set(&k, &v)]) {
                    Ok(answer) => {
                        let seq = answer["seq"]
                            .as_u64()
                            .expect("a committed submit has a seq");
                        a.lock().unwrap().push((k, v, seq));
                    }
                    Err(e) => return Some(e),
                }
            }
            None
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn wait_for(&self, n: usize) {
        wait_for(Duration::from_secs(60), "acknowledged writes", || {
            (self.count() >= n).then_some(())
        });
    }

    /// Stops it; the writes acknowledged and the error that stopped it, if one did.
    fn stop(self) -> (Vec<(String, String, u64)>, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until a submit fails (its node is gone; a submit's wait is bounded); the writes
    /// acknowledged and that error. Not [`stop`](Self::stop): a writer between two submits
    /// when the flag is set ends without having seen its node die.
    fn join(mut self) -> (Vec<(String, String, u64)>, Option<String>) {
        let err = self.thread.take().unwrap().join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (acked, err)
    }
}

/// `{"k..": "v..", ...}` of the writes committed at or before `seq`.
fn state_at(acked: &[(String, String, u64)], seq: u64) -> Value {
    let m: BTreeMap<&str, &str> = acked
        .iter()
        .filter(|w| w.2 <= seq)
        .map(|w| (w.0.as_str(), w.1.as_str()))
        .collect();
    json!(m)
}

/// Starts `name` in `dir` serving `r1` on `port` with `args`.
fn launch(dir: &Path, name: &str, port: u16, args: &[&str]) -> Node {
    let mut o = NodeOptions::new(&binary(), dir, name, &["c1"]);
    o.port = port;
    o.args = args.iter().map(|a| a.to_string()).collect();
    Node::launch(o).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts two fresh nodes that join through `first` and waits until the three form one
/// cluster with a serving master.
fn grow_to_three(first: Node, dir: TempDir) -> Cluster {
    let url = first.url.clone();
    let mut nodes = vec![first];
    for name in ["join1", "join2"] {
        nodes.push(launch(dir.path(), name, 0, &["--join", &url]));
    }
    let c = Cluster {
        nodes,
        ids: vec!["c1".into()],
        dir,
        token: None,
    };
    c.wait_formed(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// The body of a `Transfer-Encoding: chunked` answer (a streamed one).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&raw[..nl]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The header line of a snapshot file.
fn header(file: &Path) -> Value {
    let text = std::fs::read(file).unwrap();
    let line = text.split(|&b| b == b'\n').next().unwrap();
    serde_json::from_slice(line).unwrap()
}

#[test]
fn save_under_load_then_restore_gives_the_state_at_the_snapshots_seq_and_grows_to_three() {
    let c = Cluster::start("bk-save", 3, &["c1"], &[]);
    let m = c.wait_master("c1", Duration::from_secs(10));
    let f = (m + 1) % 3;
    let w = Writer::start(&c.nodes[m].url);
    w.wait_for(100);

    // Saved from a follower while the master commits.
    let file = c.dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "snapshot",
        "save",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--json",
        file_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let at_save = w.count();
    w.wait_for(at_save + 100);
    let (acked, failed) = w.stop();
    assert_eq!(failed, None);

    let saved: Value = serde_json::from_str(&out).unwrap();
    let head = header(&file);
    let seq = head["seq"].as_u64().unwrap();
    assert_eq!(saved["seq"], json!(seq));
    assert_eq!(head["format"], "clusterconsensus-snapshot");
    assert_eq!(head["version"], 1);
    assert_eq!(head["cluster"], "c1");
    let mut members = c.urls();
    members.sort();
    assert_eq!(head["members"], json!(members));
    assert_eq!(head["learners"], json!([]));
    // Under load: writes committed both before and after the snapshot's seq.
    assert!(acked.iter().any(|w| w.2 <= seq) && acked.iter().any(|w| w.2 > seq));
    assert!(!file.with_extension("snap.tmp").exists());
    assert!(!file.with_extension("snap.part").exists());

    // Restored as the only member of a new cluster at a known address.
    let dir = TempDir::new("bk-restored");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("restored").join("data");
    let (code, out, err) = run_cli(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        data.to_str().unwrap(),
        "--cluster",
        "c1",
        "--advertise",
        &url,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["seq"], json!(seq));
    assert_eq!(restored["member"], json!(url));
    drop(c);

    let node = launch(dir.path(), "restored", port, &[]);
    assert_eq!(node.url, url);
    wait_for(
        Duration::from_secs(10),
        "the restored node to serve",
        || status(&url, "c1").filter(|s| s["serving"] == json!(true)),
    );
    let st = status(&url, "c1").unwrap();
    assert_eq!(st["members"], json!([url]));
    assert_eq!(st["commit"], json!(seq));
    let want = state_at(&acked, seq);
    assert_eq!(
        kv_all(&url, "c1"),
        Some(json!({"commit": seq, "data": want}))
    );

    // It grows to three as any cluster does, and every member holds the state.
    let c2 = grow_to_three(node, dir);
    submit_ok(&url, "c1", &[set("after", "restore")]).unwrap();
    let all = settled_state(&c2, "c1");
    let mut want = want;
    want["after"] = json!("restore");
    assert_eq!(all["data"], want);
}

#[test]
fn damaged_or_truncated_snapshot_files_are_refused_and_nothing_is_written() {
    let c = Cluster::start("bk-bad", 1, &["c1"], &[]);
    for i in 0..20 {
        submit_ok(&c.nodes[0].url, "c1", &[set(&format!("k{i}"), "v")]).unwrap();
    }
    let file = c.dir.path().join("s.snap");
    let (code, _, err) = run_cli(&[
        "snapshot",
        "save",
        "--node",
        &c.nodes[0].url,
        "--cluster",
        "c1",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let good = std::fs::read(&file).unwrap();
    let line = good.iter().position(|&b| b == b'\n').unwrap() + 1;
    let n = good.len() - line;
    assert_eq!(header(&file)["bytes"], json!(n));

    let bad = c.dir.path().join("bad.snap");
    let bad_s = bad.to_str().unwrap().to_string();
    let data = c.dir.path().join("restored");
    let run_restore = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        run_cli(&[
            "snapshot",
            "restore",
            &bad_s,
            "--data-dir",
            data.to_str().unwrap(),
            "--cluster",
            "c1",
            "--advertise",
            "http://127.0.0.1:1",
        ])
    };
    let restore = |bytes: &[u8]| {
        let (code, out, err) = run_restore(bytes);
        assert!(!data.exists(), "nothing is written for a refused file");
        assert_eq!(out, "");
        (code, err)
    };
    let mut flipped = good.clone();
    flipped[line + n / 2] ^= 0x04;
    let (code, err) = restore(&flipped);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!(
            "error: snapshot restore: {bad_s}: damaged: checksum 0x"
        )),
        "{err}"
    );
    assert_eq!(
        restore(&good[..good.len() - 10]),
        (
            2,
            format!(
                "error: snapshot restore: {bad_s}: truncated: the header announces {n} bytes of \
                 state, the file holds {}\n",
                n - 10
            )
        )
    );
    assert_eq!(
        restore(&good[..line / 2]),
        (
            2,
            format!(
                "error: snapshot restore: {bad_s}: not a snapshot file, or truncated in its header \
                 (no complete header line)\n"
            )
        )
    );
    // The good file restores.
    let (code, _, err) = run_restore(&good);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(data.join("c1.wal").is_file());
}

#[test]
fn force_new_cluster_after_two_data_dirs_are_lost_keeps_every_acknowledged_write() {
    let mut c = Cluster::start("bk-force", 3, &["c1"], &[]);
    let m = c.wait_master("c1", Duration::from_secs(10));
    let w = Writer::start(&c.nodes[m].url);
    w.wait_for(200);
    // The master dies under load. The other two elect a master among themselves, which
    // commits whatever the old one had acknowledged (it was on one of them at least).
    c.nodes[m].kill();
    let (acked, failed) = w.join();
    assert!(failed.is_some(), "the writer stops at the master's death");
    let last = acked.last().unwrap().2;
    let (s, g) = ((m + 1) % 3, (m + 2) % 3);
    wait_for(Duration::from_secs(20), "the two to agree", || {
        let (a, b) = (
            status(&c.nodes[s].url, "c1")?,
            status(&c.nodes[g].url, "c1")?,
        );
        let serving = a["serving"] == json!(true) || b["serving"] == json!(true);
        let commit = a["commit"].as_u64()?;
        (serving && commit >= last && a["commit"] == b["commit"]).then_some(())
    });
    // Then both stop, and two of the three data dirs are lost for good.
    let port = c.nodes[s].port;
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.kill();
        if i != s {
            std::fs::remove_dir_all(&n.data_dir).unwrap();
        }
    }

    let name = c.nodes[s].name.clone();
    let node = launch(c.dir.path(), &name, port, &["--force-new-cluster"]);
    let url = node.url.clone();
    wait_for(
        Duration::from_secs(10),
        "the survivor to serve alone",
        || status(&url, "c1").filter(|s| s["serving"] == json!(true)),
    );
    assert_eq!(status(&url, "c1").unwrap()["members"], json!([url]));
    let state = kv_all(&url, "c1").unwrap();
    assert!(state["commit"].as_u64().unwrap() >= last);
    for (k, v, _) in &acked {
        assert_eq!(state["data"][k], json!(v), "acknowledged write {k} lost");
    }

    // Then it grows back to three, every member holding every acknowledged write.
    let dir = std::mem::replace(&mut c.dir, TempDir::new("bk-force-spare"));
    drop(c);
    let c2 = grow_to_three(node, dir);
    let all = settled_state(&c2, "c1");
    assert_eq!(all["data"], state["data"]);
    submit_ok(&url, "c1", &[set("after", "force")]).unwrap();
}

#[test]
fn force_new_cluster_is_refused_without_committed_state() {
    let dir = TempDir::new("bk-force-empty");
    let data = dir.path().join("data");
    let (code, out, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--cluster",
        "c1",
        "--force-new-cluster",
    ]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.ends_with(
            "error: cluster \"c1\": --force-new-cluster refused: no stored state: nothing to \
             keep (this data directory was never used)\n"
        ),
        "{err}"
    );
}

#[test]
fn the_snapshot_endpoint_needs_the_client_token_and_a_member() {
    const TOKEN: &str = "backup-token-0123456789";
    let tokdir = TempDir::new("bk-token");
    let tf = tokdir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    let tf = tf.to_str().unwrap();
    let c = Cluster::start("bk-auth", 1, &["c1"], &["--token-file".into(), tf.into()]);
    let node = &c.nodes[0].url;
    let a = http_request(
        "POST",
        &cluster_url(node, "c1", "submit"),
        Some(TOKEN),
        json!({"chg": [set("a", "1")]}).to_string().as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    let url = cluster_url(node, "c1", "snapshot");

    let a = http_request("GET", &url, None, b"", Duration::from_secs(5)).unwrap();
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (401, json!("ERR_DENIED"))
    );
    let a = http_request("POST", &url, Some(TOKEN), b"", Duration::from_secs(5)).unwrap();
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (405, json!("ERR_CALL"))
    );
    let a = http_request("GET", &url, Some(TOKEN), b"", Duration::from_secs(5)).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    let body = dechunk(&a.body);
    let line = body.split(|&b| b == b'\n').next().unwrap();
    let head: Value = serde_json::from_slice(line).unwrap();
    assert_eq!(
        head,
        json!({"cluster": "c1", "seq": 1, "members": [node], "learners": []})
    );

    // save without the token: exit 2, no file; with it: the file.
    let file = c.dir.path().join("s.snap");
    let fs = file.to_str().unwrap();
    let (code, out, err) = run_cli(&["snapshot", "save", "--node", node, "--cluster", "c1", fs]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with(&format!(
            "error: snapshot save: ERR_DENIED: {url}: HTTP 401: "
        )),
        "{err}"
    );
    assert!(!file.exists());
    let (code, out, err) = run_cli(&[
        "snapshot",
        "save",
        "--node",
        node,
        "--cluster",
        "c1",
        "--token-file",
        tf,
        fs,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "saved cluster c1 at seq 1 ({} bytes, members {node}) to {fs}\n",
            header(&file)["bytes"]
        )
    );

    // An unjoined node holds no state to back up.
    let lone = Node::start(c.dir.path(), "lone", &["c1"], &[]);
    let a = http_request(
        "GET",
        &cluster_url(&lone.url, "c1", "snapshot"),
        None,
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (503, json!("ERR_STATE"))
    );
}
