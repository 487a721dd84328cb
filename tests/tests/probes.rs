//! `GET /livez` and `GET /readyz` on real nodes: a healthy cluster, a node that serves two
//! clusters of which one is not joined, a follower cut off from every majority, and a follower
//! that cannot catch up.

use std::time::Duration;

use clusterconsensus_tests::*;

const TOKEN: &str = "probe-token-0123456789";

/// Fast elections, so that a lost master is noticed within a second.
fn fast() -> Vec<String> {
    [
        "--heartbeat-ms",
        "50",
        "--election-min-ms",
        "300",
        "--election-max-ms",
        "600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `GET <node><path>` without a token: the status and the JSON body.
fn probe(node: &str, path: &str) -> (u16, Value) {
    let a = http("GET", &format!("{node}{path}"), b"").unwrap();
    let body = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    (a.status, body)
}

/// Waits until `/readyz` (with `query`) answers `want`; its body.
fn wait_ready(node: &str, query: &str, want: u16, within: Duration) -> Value {
    let what = format!("{node}/readyz{query} to answer {want}");
    wait_for(within, &what, || {
        let (s, v) = probe(node, &format!("/readyz{query}"));
        (s == want).then_some(v)
    })
}

#[test]
fn a_healthy_cluster_is_live_and_ready_without_the_token() {
    // The nodes want the token for everything, status included: the probes never do.
    let dir = TempDir::new("probes-token");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut args = fast();
    args.extend([
        "--token-file".to_string(),
        file.display().to_string(),
        "--auth-reads".into(),
    ]);
    let path = dir.path().to_path_buf();
    let launch = |i: usize, a: &[String]| {
        Ok(NodeOptions::new(&binary(), &path, &format!("node{}", i + 1), &["c1"]).args(a))
    };
    let c = Cluster::launch_each(3, &["c1"], &args, dir, Some(TOKEN), launch).unwrap();
    let m = c.wait_master("c1", Duration::from_secs(10));
    let status = http("GET", &cluster_url(&c.nodes[m].url, "c1", "status"), b"").unwrap();
    assert_eq!(status.status, 401, "the status page does need the token");
    for n in &c.nodes {
        assert_eq!(probe(&n.url, "/livez"), (200, json!({"live": true})));
        let v = wait_ready(&n.url, "", 200, Duration::from_secs(10));
        let c1 = &v["clusters"]["c1"];
        assert_eq!(v["ready"], true, "{v}");
        assert_eq!(c1["ready"], true, "{v}");
        assert_eq!(c1["lag"], 0, "{v}");
        assert_eq!(c1["master"], json!(c.nodes[m].url), "{v}");
        assert!(c1.get("reason").is_none(), "{v}");
        let role = if n.url == c.nodes[m].url {
            "master"
        } else {
            "participant"
        };
        assert_eq!(c1["role"], role, "{v}");
    }
    // Only GET and HEAD; a cluster this node does not serve is not found.
    let a = http("POST", &format!("{}/readyz", c.nodes[0].url), b"{}").unwrap();
    assert_eq!(a.status, 405);
    assert_eq!(probe(&c.nodes[0].url, "/readyz?cluster=nope").0, 404);
    let head = http("HEAD", &format!("{}/readyz", c.nodes[0].url), b"").unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
}

#[test]
fn readiness_is_per_cluster_and_an_unjoined_one_is_not_ready() {
    let c = Cluster::start("probes-two", 3, &["c1"], &fast());
    // A fourth node serves c1 and c2; nobody adds it to c2.
    let fourth = Node::start(c.dir.path(), "node4", &["c1", "c2"], &fast());
    let (s, v) = probe(&fourth.url, "/readyz");
    assert_eq!(s, 503, "{v}");
    for id in ["c1", "c2"] {
        assert_eq!(v["clusters"][id]["ready"], false, "{v}");
        assert_eq!(v["clusters"][id]["role"], "unjoined", "{v}");
        let reason = v["clusters"][id]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("unjoined"), "{v}");
    }

    let added = post_json(
        &c.nodes[0].url,
        "c1",
        "members/add",
        &json!({"addr": fourth.url}),
    );
    assert_eq!(added.unwrap(), json!({"fail": false, "err": null}));
    let v = wait_ready(&fourth.url, "?cluster=c1", 200, Duration::from_secs(10));
    assert_eq!(v["clusters"].as_object().map(|o| o.len()), Some(1), "{v}");
    // Everything together is still not ready: c2 is not joined.
    let (s, v) = probe(&fourth.url, "/readyz");
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["clusters"]["c1"]["ready"], true, "{v}");
    assert_eq!(v["clusters"]["c2"]["ready"], false, "{v}");
    assert_eq!(probe(&fourth.url, "/readyz?cluster=c2").0, 503);
    assert_eq!(probe(&fourth.url, "/readyz?cluster=c1&cluster=c2").0, 503);
}

#[test]
fn a_follower_without_a_master_is_live_but_not_ready() {
    let mut c = Cluster::start("probes-cut", 3, &["c1"], &fast());
    let m = c.wait_master("c1", Duration::from_secs(10));
    let lone = (m + 1) % 3;
    let other = (m + 2) % 3;
    wait_ready(&c.nodes[lone].url, "", 200, Duration::from_secs(10));

    // The master and the other follower die: no majority is left to elect anyone.
    c.nodes[m].kill();
    c.nodes[other].kill();
    let v = wait_ready(&c.nodes[lone].url, "", 503, Duration::from_secs(10));
    let c1 = &v["clusters"]["c1"];
    assert_eq!(c1["ready"], false, "{v}");
    let reason = c1["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no word from the master") || reason.contains("no master"),
        "{v}"
    );
    // It stays so (a lone voter cannot win an election), and it is still live.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(probe(&c.nodes[lone].url, "/readyz").0, 503);
    }
    assert_eq!(probe(&c.nodes[lone].url, "/livez").0, 200);

    // Once a majority is back, it follows a master again.
    c.nodes[other].restart();
    wait_ready(&c.nodes[lone].url, "", 200, Duration::from_secs(15));
}

#[test]
fn a_follower_that_cannot_catch_up_is_not_ready_and_says_how_far_behind() {
    // The third node takes bodies of at most 64 KiB: an entry of 100 KiB never reaches it,
    // whichever way the master sends it (the accept, the entries or a snapshot of the state
    // holding it), while heartbeats do. So it hears the master and falls ever further behind.
    let mut small = fast();
    small.extend([
        "--max-body".to_string(),
        "65536".into(),
        "--ready-max-lag".into(),
        "5".into(),
    ]);
    let dir = TempDir::new("probes-lag");
    let path = dir.path().to_path_buf();
    let c = Cluster::launch_each(3, &["c1"], &fast(), dir, None, |i, a| {
        let args = if i == 2 { small.clone() } else { a.to_vec() };
        Ok(NodeOptions::new(&binary(), &path, &format!("node{}", i + 1), &["c1"]).args(&args))
    })
    .unwrap();
    let m = c.wait_master("c1", Duration::from_secs(10));
    assert_ne!(
        m, 2,
        "the node with the small body limit bootstrapped nothing"
    );
    let slow = &c.nodes[2].url;
    for i in 0..3 {
        submit_ok(&c.nodes[m].url, "c1", &[set(&format!("k{i}"), "1")]).unwrap();
    }
    let v = wait_ready(slow, "", 200, Duration::from_secs(10));
    assert_eq!(v["clusters"]["c1"]["lag"], 0, "{v}");

    let big = "x".repeat(100 << 10);
    submit_ok(&c.nodes[m].url, "c1", &[set("big", &big)]).unwrap();
    let stuck = status(slow, "c1").unwrap()["commit"].as_u64().unwrap();
    for i in 0..10 {
        submit_ok(&c.nodes[m].url, "c1", &[set(&format!("after{i}"), "1")]).unwrap();
    }
    let v = wait_for(
        Duration::from_secs(10),
        "the slow node to see it is behind",
        || {
            let (s, v) = probe(slow, "/readyz");
            (s == 503 && v["clusters"]["c1"]["lag"].as_u64() > Some(5)).then_some(v)
        },
    );
    let c1 = &v["clusters"]["c1"];
    let reason = c1["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("committed entries behind the master"),
        "{v}"
    );
    assert!(reason.contains("at most 5"), "{v}");
    assert_eq!(
        c1["commit"].as_u64(),
        Some(stuck),
        "it applied nothing since: {v}"
    );
    assert_eq!(
        c1["master"],
        json!(c.nodes[m].url),
        "it hears the master: {v}"
    );
    // The others are ready, with a default limit of 1000 entries.
    for n in &c.nodes[..2] {
        assert_eq!(probe(&n.url, "/readyz").0, 200);
    }
}
