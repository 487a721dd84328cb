//! `kill -9` of the master, and of every node in the middle of a stream of submits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterconsensus_tests::*;

#[test]
fn master_killed_a_new_one_serves_within_3s_and_the_old_one_rejoins() {
    let mut c = Cluster::start("failover", 3, &["c1"], &[]);
    let m = c.master("c1").unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        let key = format!("before{i}");
        submit_ok(&c.nodes[i % 3].url, "c1", &[set(&key, "1")]).unwrap();
        acked.push(key);
    }
    let old_instance = status(&c.nodes[m].url, "c1").unwrap()["instance"]
        .as_u64()
        .unwrap();

    c.nodes[m].kill();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != m).collect();
    // A new master serves submits within 3 s: keep submitting through the survivors.
    let mut attempt = 0;
    let first = wait_for(
        Duration::from_secs(10),
        "a submit to commit after the kill",
        || {
            attempt += 1;
            let key = format!("after-kill{attempt}");
            let via = &c.nodes[survivors[attempt % 2]].url;
            submit_ok(via, "c1", &[set(&key, "1")]).ok().map(|_| key)
        },
    );
    let took = killed.elapsed();
    eprintln!("a new master served a submit {took:?} after the kill");
    assert!(
        took <= Duration::from_secs(3),
        "new master served a submit after {took:?}"
    );
    acked.push(first);
    let nm = c.master("c1").expect("a serving master");
    assert_ne!(nm, m);
    let st = status(&c.nodes[nm].url, "c1").unwrap();
    assert!(st["instance"].as_u64().unwrap() > old_instance);
    for i in 0..5 {
        let key = format!("after{i}");
        submit_ok(&c.nodes[survivors[i % 2]].url, "c1", &[set(&key, "1")]).unwrap();
        acked.push(key);
    }
    for &s in &survivors {
        for k in &acked {
            wait_for(
                Duration::from_secs(5),
                &format!("{k} on {}", c.nodes[s].name),
                || kv_get(&c.nodes[s].url, "c1", k).map(|_| ()),
            );
        }
    }

    // The killed node, restarted from its data dir, rejoins as a participant and catches up.
    c.nodes[m].restart();
    let url = c.nodes[m].url.clone();
    let master_url = c.nodes[nm].url.clone();
    wait_for(
        Duration::from_secs(10),
        "the old master to follow the new one",
        || {
            status(&url, "c1")
                .filter(|s| s["role"] == "participant" && s["master"] == master_url.as_str())
        },
    );
    submit_ok(&url, "c1", &[set("via-restarted", "1")]).unwrap();
    acked.push("via-restarted".into());
    for k in &acked {
        wait_for(
            Duration::from_secs(5),
            &format!("{k} on the restarted node"),
            || kv_get(&url, "c1", k).map(|_| ()),
        );
    }
    let commit = status(&master_url, "c1").unwrap()["commit"].clone();
    wait_for(
        Duration::from_secs(5),
        "the restarted node at the master's commit",
        || status(&url, "c1").filter(|s| s["commit"] == commit),
    );
}

#[test]
fn kill_9_of_all_three_mid_stream_then_restart_loses_and_repeats_nothing() {
    let mut c = Cluster::start("crashall", 3, &["c1"], &[]);
    let urls = c.urls();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    // One writer: batch i sets k<i> and moves "last" to i. Applied twice, an old batch would
    // move "last" back below the highest k<i>.
    let writer = {
        let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            let mut via = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let chg = [
                    set(&format!("k{i}"), &i.to_string()),
                    set("last", &i.to_string()),
                ];
                match submit_ok(&urls[via % 3], "c1", &chg) {
                    Ok(_) => acked.lock().unwrap().push(i),
                    Err(_) => via += 1,
                }
            }
            i
        })
    };
    wait_for(
        Duration::from_secs(20),
        "some writes to be acknowledged",
        || (acked.lock().unwrap().len() >= 30).then_some(()),
    );
    for n in &mut c.nodes {
        n.kill();
    }
    stop.store(true, Ordering::Relaxed);
    let attempted = writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    eprintln!(
        "{} of {attempted} batches acknowledged before the crash",
        acked.len()
    );

    for n in &mut c.nodes {
        n.restart();
    }
    let m = c.wait_master("c1", Duration::from_secs(15));
    // A commit through the new master, so every node learns everything committed before.
    submit_ok(&urls[m], "c1", &[set("restarted", "1")]).unwrap();
    let states: Vec<Value> = c
        .nodes
        .iter()
        .map(|n| {
            wait_for(
                Duration::from_secs(10),
                &format!("{} to catch up", n.name),
                || kv_all(&n.url, "c1").filter(|s| s["data"]["restarted"] == "1"),
            )
        })
        .collect();
    let master_state = states[m].clone();
    let data = master_state["data"].as_object().unwrap();
    for i in &acked {
        assert_eq!(
            data.get(&format!("k{i}")),
            Some(&json!(i.to_string())),
            "acknowledged k{i} lost"
        );
    }
    let highest = (1..=attempted)
        .filter(|i| data.contains_key(&format!("k{i}")))
        .max()
        .unwrap();
    assert_eq!(
        data["last"],
        json!(highest.to_string()),
        "an old batch was applied again"
    );
    // Every node ends with the same state (followers commit with the next heartbeat).
    for (n, _) in c.nodes.iter().enumerate() {
        wait_for(Duration::from_secs(5), "equal states", || {
            kv_all(&urls[n], "c1").filter(|s| *s == master_state)
        });
    }
}
