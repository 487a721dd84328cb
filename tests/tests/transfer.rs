//! Leader transfer (docs/PROTOCOL.md section 9): `POST transfer` to a chosen voter and to the
//! most caught-up one, `clusterconsensus transfer`, and the hand-over of a master that gets
//! SIGTERM under a write load.
//!
//! Every node runs with an election timeout of 20-30 s: a new master that serves within the
//! few seconds these tests wait can only come from a transfer, never from an election, so the
//! tests assert on who is master and at which instance, not on how long it took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterconsensus_tests::*;

/// Election timeouts no test here waits out.
fn slow_elections() -> Vec<String> {
    ["--election-min-ms", "20000", "--election-max-ms", "30000"]
        .map(String::from)
        .to_vec()
}

fn instance(node: &str) -> u64 {
    status(node, "c1").unwrap()["instance"].as_u64().unwrap()
}

/// Waits until `node` reports `master` as the master of c1 at `instance`.
fn wait_follows(node: &str, master: &str, instance: u64) {
    wait_for(
        Duration::from_secs(5),
        &format!("{node} to follow {master} at instance {instance}"),
        || status(node, "c1").filter(|s| s["master"] == master && s["instance"] == instance),
    );
}

#[test]
fn transfer_to_a_chosen_voter_and_to_the_most_caught_up_one() {
    let c = Cluster::start("transfer-api", 3, &["c1"], &slow_elections());
    let m = c.wait_master("c1", Duration::from_secs(10));
    let t = (m + 1) % 3;
    for i in 0..5 {
        submit_ok(&c.nodes[m].url, "c1", &[set(&format!("k{i}"), "1")]).unwrap();
    }
    let i0 = instance(&c.nodes[m].url);

    // To a chosen voter, asked at the master: answered once the target leads, at the next
    // instance (one campaign, won at once).
    let body = json!({"to": c.nodes[t].url});
    let a = post_json(&c.nodes[m].url, "c1", "transfer", &body).unwrap();
    assert_eq!(a, json!({"fail": false, "err": null, "instance": i0 + 1}));
    let st = status(&c.nodes[t].url, "c1").unwrap();
    assert_eq!(
        (st["role"].as_str(), st["instance"].as_u64()),
        (Some("master"), Some(i0 + 1))
    );
    for n in &c.nodes {
        wait_follows(&n.url, &c.nodes[t].url, i0 + 1);
    }
    submit_ok(&c.nodes[m].url, "c1", &[set("after", "1")]).unwrap();
    for i in 0..5 {
        assert_eq!(
            kv_get(&c.nodes[t].url, "c1", &format!("k{i}")).as_deref(),
            Some("1")
        );
    }

    // `{}` asked at a follower: forwarded to the master, which picks a voter itself.
    let f = (0..3).find(|i| *i != t).unwrap();
    let a = post_json(&c.nodes[f].url, "c1", "transfer", &json!({})).unwrap();
    assert_eq!(a, json!({"fail": false, "err": null, "instance": i0 + 2}));
    // The answer comes once the target leads; it serves once its first entry commits, a
    // moment later. Elections take 20 s here, so a master within 5 s came from the transfer.
    let nm = c.wait_master("c1", Duration::from_secs(5));
    assert_ne!(nm, t, "mastership moved away from {}", c.nodes[t].url);
    assert_eq!(instance(&c.nodes[nm].url), i0 + 2);
    submit_ok(&c.nodes[t].url, "c1", &[set("after2", "1")]).unwrap();
}

#[test]
fn a_transfer_to_no_voter_is_refused_with_a_clear_error() {
    let c = Cluster::start("transfer-refused", 3, &["c1"], &[]);
    let m = c.wait_master("c1", Duration::from_secs(10));
    let me = &c.nodes[m].url;
    for (to, code, says) in [
        (me.as_str(), "ERR_DENIED", "is the master itself"),
        ("http://127.0.0.1:1", "ERR_DENIED", "is not a member"),
        (
            "http://127.0.0.1:1/",
            "ERR_ENCODING",
            "without trailing slash",
        ),
    ] {
        let a = post_json(me, "c1", "transfer", &json!({ "to": to })).unwrap();
        assert_eq!(a["fail"], true, "{a}");
        assert_eq!(a["err"]["code"], code, "{a}");
        let msg = a["err"]["err"].as_str().unwrap();
        assert!(msg.contains(says), "{to}: {msg}");
    }
    // A body that is not a transfer: 400, never a panic.
    let a = http("POST", &cluster_url(me, "c1", "transfer"), b"{\"to\": 5}").unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["code"], "ERR_ENCODING");
    assert_eq!(c.master("c1"), Some(m), "nothing moved");
}

#[test]
fn cli_transfer_exit_codes_and_json() {
    let c = Cluster::start("transfer-cli", 3, &["c1"], &slow_elections());
    let m = c.wait_master("c1", Duration::from_secs(10));
    let t = (m + 2) % 3;
    let i0 = instance(&c.nodes[m].url);
    let (code, out, err) = run_cli(&[
        "transfer",
        "--node",
        &c.nodes[m].url,
        "--cluster",
        "c1",
        "--to",
        &c.nodes[t].url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("mastership of c1 transferred to {}", c.nodes[t].url)
    );
    assert_eq!(c.wait_master("c1", Duration::from_secs(5)), t);

    // --json, through a follower, to the best voter.
    let f = (t + 1) % 3;
    let (code, out, err) = run_cli(&[
        "transfer",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v, json!({"fail": false, "err": null, "instance": i0 + 2}));

    // Refusals: exit 2 with the reason; with --json the refusal is printed too.
    let nm = c.wait_master("c1", Duration::from_secs(5));
    let (code, out, err) = run_cli(&[
        "transfer",
        "--node",
        &c.nodes[nm].url,
        "--cluster",
        "c1",
        "--to",
        &c.nodes[nm].url,
    ]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("is the master itself"), "{err}");
    let (code, out, err) = run_cli(&[
        "transfer",
        "--node",
        &c.nodes[nm].url,
        "--cluster",
        "c1",
        "--to",
        "http://127.0.0.1:1",
        "--json",
    ]);
    assert_eq!(code, 2, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["fail"].as_bool(), v["err"]["code"].as_str()),
        (Some(true), Some("ERR_DENIED"))
    );
    let (code, _, err) = run_cli(&[
        "transfer",
        "--node",
        "http://127.0.0.1:1",
        "--cluster",
        "c1",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// Writers that submit unique keys through every node in turn, retrying a refused or lost
/// submit elsewhere with the same key; every acknowledged key is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|w| {
                let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    let mut via = w;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("w{w}-{n}");
                        while !stop.load(Ordering::Relaxed) {
                            via += 1;
                            if submit_ok(&urls[via % urls.len()], "c1", &[set(&key, "1")]).is_ok() {
                                acked.lock().unwrap().push(key.clone());
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

#[test]
fn sigterm_of_the_master_under_load_hands_over_first_and_loses_nothing() {
    let mut c = Cluster::start("transfer-sigterm", 3, &["c1"], &slow_elections());
    let m = c.wait_master("c1", Duration::from_secs(10));
    let i0 = instance(&c.nodes[m].url);
    let load = Load::start(c.urls(), 3);
    wait_for(Duration::from_secs(10), "writes before the SIGTERM", || {
        (load.acked() >= 30).then_some(())
    });

    // The master hands over, then exits 0. With 20 s election timeouts, a master serving
    // within the next seconds is the transfer's.
    assert_eq!(c.nodes[m].terminate(), Some(0));
    let log =
        std::fs::read_to_string(c.dir.path().join(&c.nodes[m].name).join("node.log")).unwrap();
    assert!(log.contains("mastership handed over"), "{log}");
    let nm = wait_for(Duration::from_secs(5), "a new master", || {
        c.master("c1").filter(|nm| *nm != m)
    });
    assert_eq!(instance(&c.nodes[nm].url), i0 + 1);
    let at_handover = load.acked();
    wait_for(
        Duration::from_secs(10),
        "writes after the hand-over",
        || (load.acked() >= at_handover + 30).then_some(()),
    );
    let acked = load.stop();

    // Every acknowledged write is on the new master, and on the old one once it is back.
    c.nodes[m].restart();
    let master = c.nodes[nm].url.clone();
    wait_follows(&c.nodes[m].url, &master, i0 + 1);
    let want = settled_state(&c, "c1");
    for k in &acked {
        assert_eq!(want["data"][k.as_str()], "1", "acknowledged {k} is lost");
    }
    eprintln!("{} acknowledged writes, none lost", acked.len());
}
