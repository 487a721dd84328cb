//! The large-state measurement of the README (issue 10): a join at `LARGE_KEYS` keys (default
//! 300,000) of 100-byte values, about 41 MB, with the default body limit (1 MiB chunks) while one
//! client writes; then a follower killed, 90,000 writes in 90 entries (12 MB of changes, more
//! than the master keeps to catch it up by entries: it needs a snapshot), restarted. A
//! measurement, not a test: it prints its numbers and fails only when a bounded wait runs out.
//!
//! ```sh
//! cargo build --release -p clusterconsensus-server -p clusterconsensus-tests --bins
//! LARGE_KEYS=300000 CLUSTERCONSENSUS_BIN=target/release/clusterconsensus target/release/join_at_scale
//! ```

use std::time::Duration;

use clusterconsensus_tests::*;

fn main() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let keys: usize = std::env::var("LARGE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
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
