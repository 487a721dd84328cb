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
        Duration::from_secs(300),
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
