//! A state many times larger than the largest body a node accepts (`--max-body 256 KiB`, a
//! state of about 3 to 11 MB) reaches a new member and a follower that fell behind the retained log:
//! the snapshot travels as a chunked `start` (docs/PROTOCOL.md section 11). Before the chunked
//! transfer, the one-body `start` was refused with 413 and neither ever caught up.

use std::time::Duration;

use clusterconsensus_tests::*;

const KEYS: usize = 3000;

fn args() -> Vec<String> {
    ["--max-body", "262144", "--snapshot-every", "100"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `n` sets of keys `prefix0..` with 1,000-byte values, 100 per submit (a 100 KB body).
fn fill(node: &str, prefix: &str, n: usize, value: char) {
    let v: String = std::iter::repeat_n(value, 1000).collect();
    let changes: Vec<String> = (0..n)
        .map(|i| set(&format!("{prefix}{i:05}"), &v))
        .collect();
    for batch in changes.chunks(100) {
        submit_ok(node, "c1", batch).unwrap();
    }
}

/// Waits until `node` holds exactly the state `want` (data and commit).
fn wait_state(node: &str, want: &serde_json::Value, what: &str) {
    wait_for(Duration::from_secs(60), what, || {
        kv_all(node, "c1").filter(|s| s["data"] == want["data"])
    });
}

#[test]
fn a_new_member_and_a_lagging_follower_receive_a_state_larger_than_a_body() {
    let mut c = Cluster::start("large", 3, &["c1"], &args());
    let m = c.master("c1").unwrap();
    let master = c.nodes[m].url.clone();
    fill(&master, "k", KEYS, 'a');
    let want = kv_all(&master, "c1").unwrap();
    assert_eq!(want["data"].as_object().unwrap().len(), KEYS);

    // A 4th node added as a learner: the master streams it the state, then promotes it.
    let fourth = Node::start(c.dir.path(), "node4", &["c1"], &args());
    let v = post_json(&master, "c1", "members/add", &json!({"addr": fourth.url})).unwrap();
    assert_eq!(v, json!({"fail": false, "err": null}));
    wait_state(&fourth.url, &want, "the 4th member to hold the whole state");
    wait_for(
        Duration::from_secs(30),
        "the 4th member to be a voter",
        || status(&fourth.url, "c1").filter(|s| s["role"] == "participant"),
    );

    // A follower killed; more writes (9 MB) than the master keeps to catch a follower up by
    // entries (8 MiB) and than the log retains: it needs the state again.
    let f = (m + 1) % 3;
    c.nodes[f].kill();
    fill(&master, "k", KEYS / 2, 'b');
    fill(&master, "n", 7500, 'c');
    let want = kv_all(&master, "c1").unwrap();
    assert_eq!(want["data"].as_object().unwrap().len(), KEYS + 7500);
    c.nodes[f].restart();
    wait_state(&c.nodes[f].url, &want, "the restarted follower to catch up");
    let st = status(&c.nodes[f].url, "c1").unwrap();
    assert_eq!(st["commit"], want["commit"], "{st}");
}

/// A join while a client writes, then a follower killed, 90,000 writes in 90 entries (12 MB of
/// changes, more than the master keeps to catch it up by entries: it needs a snapshot),
/// restarted. With the default body limit (1 MiB chunks). In the test run at 20,000 keys; the
/// README's measurement sets `LARGE_KEYS` (300,000 keys of 100-byte values is about 41 MB):
/// `cargo build --release -p clusterconsensus-server --bins && LARGE_KEYS=300000
/// CLUSTERCONSENSUS_BIN=target/release/clusterconsensus cargo test -p clusterconsensus-tests
/// --test large_state join_at_scale -- --nocapture`
#[test]
fn join_at_scale() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let keys: usize = std::env::var("LARGE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let args: Vec<String> = vec![];
    let mut c = Cluster::start("scale", 3, &["c1"], &args);
    let m = c.master("c1").unwrap();
    let master = c.nodes[m].url.clone();
    let v: String = std::iter::repeat_n('v', 100).collect();
    let t = std::time::Instant::now();
    let changes: Vec<String> = (0..keys).map(|i| set(&format!("key{i:012}"), &v)).collect();
    for batch in changes.chunks(1000) {
        submit_ok(&master, "c1", batch).unwrap();
    }
    let count = |node: &str| get_json(node, "c1", "kv?limit=1").and_then(|p| p["count"].as_u64());
    assert_eq!(count(&master), Some(keys as u64));
    eprintln!("prefill: {keys} keys in {:.1} s", t.elapsed().as_secs_f64());

    let fourth = Node::start(c.dir.path(), "node4", &["c1"], &args);
    // One client writes one new key at a time during the join.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, master) = (stop.clone(), master.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match submit_ok(&master, "c1", &[set(&format!("w{ok:08}"), "x")]) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let t = std::time::Instant::now();
    let v = post_json(&master, "c1", "members/add", &json!({"addr": fourth.url})).unwrap();
    assert_eq!(v, json!({"fail": false, "err": null}));
    wait_for(
        Duration::from_secs(300),
        "the 4th member to hold the state",
        || (count(&fourth.url) >= Some(keys as u64)).then_some(()),
    );
    let holds = t.elapsed();
    // Bounded for a loaded machine: the learner catches up the entries committed during its
    // transfer one accept at a time while the writer goes on (seconds, not minutes, when idle).
    wait_for(
        Duration::from_secs(300),
        "the 4th member to be a voter",
        || status(&fourth.url, "c1").filter(|s| s["role"] == "participant"),
    );
    let voter = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = writer.join().unwrap();
    eprintln!(
        "join: the 4th member holds the {keys} keys {:.2} s after members/add, is a voter after \
         {:.2} s ({ok} writes meanwhile, {failed} failed)",
        holds.as_secs_f64(),
        voter.as_secs_f64()
    );

    let f = (m + 1) % 3;
    c.nodes[f].kill();
    let again: Vec<String> = changes
        .iter()
        .cycle()
        .take(90_000)
        .map(|x| x.replace("vvvv", "wwww"))
        .collect();
    for batch in again.chunks(1000) {
        submit_ok(&master, "c1", batch).unwrap();
    }
    let commit = |node: &str| status(node, "c1").and_then(|s| s["commit"].as_u64());
    let want = commit(&master).unwrap();
    let t = std::time::Instant::now();
    c.nodes[f].restart();
    wait_for(Duration::from_secs(300), "the follower to catch up", || {
        (commit(&c.nodes[f].url) >= Some(want)).then_some(())
    });
    eprintln!(
        "catch-up: the restarted follower reached commit {want} {:.2} s after its restart",
        t.elapsed().as_secs_f64()
    );
}
