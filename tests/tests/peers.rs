//! Peers kept apart from clients (`--peer-token-file`) on real node processes: the client token
//! opens no peer call, a member with another peer token is refused and says why, and a token
//! is rolled out (here: from one shared token to a peer token of its own, which is how an
//! existing cluster upgrades) one member at a time with writes going on and no call between
//! members refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterconsensus::wire::Method;
use clusterconsensus_tests::campaign::request;
use clusterconsensus_tests::*;

const CLIENT: &str = "client-token-0123456789";
const CLIENT_NEXT: &str = "client-token-next-0123456789";
const PEER: &str = "peer-token-0123456789";
const WRONG: &str = "wrong-token-0123456789";

/// What the node logs when a peer answers its call with 401 (crate `client`).
const REFUSED_LINE: &str = "a peer refused this node's credentials";

fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let (s, b) = request(method, url, token, body.as_bytes(), Duration::from_secs(10)).unwrap();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn write_file(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// Submits `changes` through `node` with `token`: the answer if it committed.
fn submit_with(node: &str, token: &str, changes: &[String]) -> Result<Value, String> {
    let url = cluster_url(node, "c1", "submit");
    let (s, v) = request(
        "POST",
        &url,
        Some(token),
        json!({ "chg": changes }).to_string().as_bytes(),
        Duration::from_secs(10),
    )
    .map(|(s, b)| {
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    })?;
    match (s, &v["fail"]) {
        (200, Value::Bool(false)) => Ok(v),
        _ => Err(format!("{url}: {s} {v}")),
    }
}

/// What every node says about itself that a forged peer call could change.
fn fingerprints(c: &Cluster) -> Vec<Value> {
    (0..c.nodes.len())
        .map(|i| {
            let st = status(&c.nodes[i].url, "c1").unwrap();
            json!([
                st["instance"],
                st["commit"],
                st["master"],
                st["members"],
                st["learners"],
                st["version"],
                st["staged"],
                st["role"]
            ])
        })
        .collect()
}

/// Every peer method ([`Method::is_peer_call`], so one the core adds is covered too) with a
/// well-formed body that would change something if it were let in; `{}` for a method this
/// test has no body for (the token is checked before the body is read).
fn forged_peer_calls(c: &Cluster, m: usize, f: usize) -> Vec<(&'static str, String)> {
    let instance = status(&c.nodes[m].url, "c1").unwrap()["instance"]
        .as_u64()
        .unwrap();
    let members = c.urls();
    let rogue = "http://127.0.0.1:1";
    let snap = json!({"data": {"a": "pwned"}, "clients": {}}).to_string();
    let i = instance + 100;
    Method::ALL
        .into_iter()
        .filter(|m| m.is_peer_call())
        .map(|method| {
            let body = match method {
                Method::Prepare => json!({"instance": i, "master": {"addr": rogue}, "seq": 1_000_000}),
                Method::Accept => json!({"instance": i, "seq": 1, "chg": [set("a", "pwned")], "master": {"addr": rogue}}),
                Method::AddMember => json!({"instance": i, "seq": 1, "mem": {"addr": rogue}}),
                Method::RmMember => json!({"instance": i, "seq": 1, "mem": {"addr": members[m]}}),
                Method::Start => json!({"instance": i, "seq": 1_000_000, "cluster": "c1",
                    "self": {"addr": members[f]}, "master": {"addr": rogue},
                    "participants": [{"addr": rogue}, {"addr": members[f]}], "snap": snap}),
                _ => json!({}),
            };
            (method.path(), body.to_string())
        })
        .collect()
}

fn no_peer_was_refused(c: &Cluster) {
    for n in &c.nodes {
        let log = std::fs::read_to_string(c.dir.path().join(&n.name).join("node.log"))
            .unwrap_or_default();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains(REFUSED_LINE)).collect();
        assert!(refused.is_empty(), "{}: {refused:#?}", n.name);
    }
}

#[test]
fn a_peer_call_with_the_client_token_gets_401_and_changes_nothing() {
    let dir = TempDir::new("peers-apart");
    // Two client tokens (a rotation under way), and the members' own.
    let client = write_file(
        &dir.path().join("client-token"),
        &format!("# clients move to the first\n{CLIENT_NEXT}\n\n{CLIENT}\n"),
    );
    let peer = write_file(&dir.path().join("peer-token"), &format!("{PEER}\n"));
    let args: Vec<String> = ["--token-file", &client, "--peer-token-file", &peer]
        .map(String::from)
        .to_vec();
    // The cluster forms only if the members send the peer token: the client token no longer
    // opens the peer calls.
    let c = Cluster::start("peers", 3, &["c1"], &args);
    let m = c.master("c1").unwrap();
    let f = (m + 1) % 3;
    let url = |i: usize, what: &str| cluster_url(&c.nodes[i].url, "c1", what);

    // Both client tokens submit, through a follower: it forwards to the master with the peer
    // token, which opens the client calls too.
    for (token, value) in [(CLIENT, "1"), (CLIENT_NEXT, "2")] {
        let v = submit_with(&c.nodes[f].url, token, &[set("a", value)]).unwrap();
        assert!(v["seq"].is_u64(), "{v}");
    }
    // A client call with the peer token is let in (see crate auth: the members' credential).
    submit_with(&c.nodes[m].url, PEER, &[set("b", "1")]).unwrap();
    let before_state = settled_state(&c, "c1");
    std::thread::sleep(Duration::from_millis(200));
    let before = fingerprints(&c);

    let calls = forged_peer_calls(&c, m, f);
    assert!(calls.len() >= 6, "{calls:?}");
    for i in 0..3 {
        for (what, body) in &calls {
            for token in [Some(CLIENT), Some(CLIENT_NEXT), Some(WRONG), None] {
                let (s, v) = call("POST", &url(i, what), token, body);
                assert_eq!(
                    (s, v["code"].as_str()),
                    (401, Some("ERR_DENIED")),
                    "{what} on node {i} with {token:?}: {v}"
                );
                if token.is_some() {
                    assert!(v["err"].as_str().unwrap().contains("peer token"), "{v}");
                }
            }
        }
        // The peer token opens them: a stale accept gets its (refusing) protocol answer, a
        // readindex its read index.
        let stale = json!({"instance": 0, "seq": 1, "chg": []}).to_string();
        let (s, v) = call("POST", &url(i, "accept"), Some(PEER), &stale);
        assert_eq!((s, &v["accepted"]), (200, &json!(false)), "{v}");
        let (s, v) = call("POST", &url(i, "readindex"), Some(PEER), "{}");
        assert_eq!(s, 200, "{v}");
        // A client's consistent read needs no peer token: the node asks its master itself.
        let read = format!("{}?consistent=true", url(i, "kv/a"));
        let (s, v) = call("GET", &read, Some(CLIENT), "");
        assert_eq!((s, v["value"].as_str()), (200, Some("2")), "{v}");
    }

    // Nothing changed: the same promise, commit, master and members on every node, the same
    // state.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fingerprints(&c), before);
    assert_eq!(settled_state(&c, "c1"), before_state);
    no_peer_was_refused(&c);

    // The client subcommands' --token-file is unchanged: they send the first token.
    let (code, out, err) = run_cli(&[
        "submit",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--token-file",
        &client,
        &set("cli", "1"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(kv_get(&c.nodes[m].url, "c1", "cli").as_deref(), Some("1"));
}

#[test]
fn a_member_with_another_peer_token_is_refused_and_says_why() {
    let dir = TempDir::new("peers-wrong");
    let peer = write_file(&dir.path().join("peer"), &format!("{PEER}\n"));
    let wrong = write_file(&dir.path().join("wrong"), &format!("{WRONG}\n"));
    let mut n2 = Node::start(
        dir.path(),
        "n2",
        &["c1"],
        &["--peer-token-file".into(), wrong],
    );
    let first: Vec<String> = ["--peer-token-file", &peer, "--bootstrap", "--peer", &n2.url]
        .map(String::from)
        .to_vec();
    let n1 = Node::start(dir.path(), "n1", &["c1"], &first);
    // n1 adds n2 and calls it with its peer token: n2 refuses, n1 says so in its log.
    let log = dir.path().join("n1").join("node.log");
    let line = wait_for(Duration::from_secs(20), "n1 to log the refusal", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains(REFUSED_LINE))
            .map(String::from)
    });
    assert!(line.contains("--peer-token-file"), "{line}");
    assert!(line.contains("401"), "{line}");
    // n2 never joined.
    let st = status(&n2.url, "c1").unwrap();
    assert_ne!(st["members"].as_array().map(Vec::len), Some(2), "{st}");
    assert!(!st["master"].is_string(), "{st}");
    assert!(n2.is_running());
    drop(n1);
}

/// Kills node `i` and starts it again on its port and data with `args` (other flags than it
/// had, unlike `Node::restart`).
fn relaunch(c: &mut Cluster, i: usize, args: &[String]) {
    let (port, url) = (c.nodes[i].port, c.nodes[i].url.clone());
    c.nodes[i].kill();
    let mut opts =
        NodeOptions::new(&binary(), c.dir.path(), &format!("node{}", i + 1), &["c1"]).args(args);
    opts.port = port;
    // The port was just freed; retry briefly if the kernel has not released it yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match Node::launch(opts.clone()) {
            Ok(n) => break n,
            Err(e) if Instant::now() > deadline || !e.contains("cannot listen") => {
                panic!("relaunch of node{} failed: {e}", i + 1)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(node.url, url);
    c.nodes[i] = node;
}

/// Writes with the client token, one at a time, each retried on every node until it commits;
/// a write that cannot commit within 20 s is a failure.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Writer {
    fn start(urls: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                let key = format!("w{n}");
                let t = Instant::now();
                let mut via = n;
                loop {
                    let last = match submit_with(&urls[via % urls.len()], CLIENT, &[set(&key, "1")])
                    {
                        Ok(_) => break,
                        Err(e) => e,
                    };
                    if t.elapsed() > Duration::from_secs(20) {
                        return Err(format!("{key} did not commit within 20 s: {last}"));
                    }
                    via += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                a.lock().unwrap().push(key);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    /// The writes acknowledged so far; panics with the writer's error if it gave up.
    fn count(&mut self) -> usize {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let r = self.thread.take().unwrap().join().unwrap();
            panic!("the writer stopped: {r:?}");
        }
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.thread.take().unwrap().join().unwrap();
        r.unwrap();
        self.acked.lock().unwrap().clone()
    }
}

/// Rolling out a peer token on a running cluster whose members shared one token (today's
/// deployment, where the client token is also the peer credential): the peer token file gets
/// the old token first and the new one second on every node, then the new one first, then the
/// old one goes; each step one node at a time. Starting from a peer token instead of the
/// shared one is the same rotation (without a peer token file the client token is the peer
/// credential, crate `auth`).
#[test]
fn a_new_peer_token_rolls_out_one_node_at_a_time_without_downtime() {
    let dir = TempDir::new("peers-rotate");
    let client = write_file(&dir.path().join("client-token"), &format!("{CLIENT}\n"));
    let legacy: Vec<String> = vec!["--token-file".into(), client.clone()];
    let mut c = Cluster::start("rotate", 3, &["c1"], &legacy);
    let peer_file = |i: usize| -> PathBuf { dir.path().join(format!("peer-token-{i}")) };
    let mut writer = Writer::start(c.urls());
    let started = Instant::now();
    // What each node sends to its peers, as the rollout goes.
    let mut sends = [CLIENT; 3];

    let phases = [
        (
            "the new token as a second line",
            format!("{CLIENT}\n{PEER}\n"),
            CLIENT,
        ),
        (
            "the new token first",
            format!("{PEER}\n# the old one, until every node sends the new one\n{CLIENT}\n"),
            PEER,
        ),
        ("the old token removed", format!("{PEER}\n"), PEER),
    ];
    for (step, (phase, text, sent)) in phases.iter().enumerate() {
        for i in 0..3 {
            let file = write_file(&peer_file(i), text);
            let mut args = legacy.clone();
            args.extend(["--peer-token-file".to_string(), file]);
            let acked = writer.count();
            relaunch(&mut c, i, &args);
            sends[i] = sent;
            // Back in the cluster: a write through it commits (forwarded with its new
            // credential when it is a follower) and the writes go on.
            let key = format!("via-{step}-{i}");
            wait_for(
                Duration::from_secs(20),
                "a write through the restarted node",
                || submit_with(&c.nodes[i].url, CLIENT, &[set(&key, "1")]).ok(),
            );
            wait_for(Duration::from_secs(20), "the writes to go on", || {
                (writer.count() > acked + 2).then_some(())
            });
            // Every node accepts what every node sends now.
            let stale = json!({"instance": 0, "seq": 1, "chg": []}).to_string();
            for (from, token) in sends.iter().enumerate() {
                for to in 0..3 {
                    let url = cluster_url(&c.nodes[to].url, "c1", "accept");
                    let (s, v) = call("POST", &url, Some(token), &stale);
                    assert_eq!(
                        s,
                        200,
                        "{phase}, node{}: node{} refuses node{}'s token: {v}",
                        i + 1,
                        to + 1,
                        from + 1
                    );
                }
            }
            no_peer_was_refused(&c);
        }
    }

    // The old shared token is the clients' only: it opens no peer call any more, and still
    // submits.
    let m = c.wait_master("c1", Duration::from_secs(20));
    for i in 0..3 {
        let url = cluster_url(&c.nodes[i].url, "c1", "prepare");
        let body =
            json!({"instance": 1_000_000, "master": {"addr": "http://127.0.0.1:1"}, "seq": 1});
        let (s, v) = call("POST", &url, Some(CLIENT), &body.to_string());
        assert_eq!((s, v["code"].as_str()), (401, Some("ERR_DENIED")), "{v}");
    }
    assert_eq!(c.master("c1"), Some(m));
    let acked = writer.finish();
    eprintln!(
        "rollout: 9 restarts in {:?}, {} writes acknowledged meanwhile",
        started.elapsed(),
        acked.len()
    );
    assert!(acked.len() > 20, "only {} writes", acked.len());
    // Every acknowledged write is there, on every node.
    let state = settled_state(&c, "c1");
    for key in &acked {
        assert_eq!(state["data"][key], "1", "{key} missing: {state}");
    }
    no_peer_was_refused(&c);
}
