//! The counter example (`native/examples/counter.rs`) on three real processes: concurrent
//! clients add exactly once per request, retrying through a `kill -9` of the master, and the
//! count is exact on every node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterconsensus_tests::*;

const ID: &str = "counters";

#[test]
fn every_increment_counts_once_across_a_master_kill() {
    let mut c = Cluster::start_with(&example("counter"), "counter", 3, &[ID], &[]);
    let urls = c.urls();
    const CLIENTS: u64 = 4;
    const ADDS: u64 = 30;
    // Every value an add answered: one per (client, req), each new value once.
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (urls, seen) = (urls.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut via = i as usize;
                for req in 1..=ADDS {
                    let change = json!({"op": "add", "counter": "hits", "by": 1,
                                        "client": format!("c{i}"), "req": req})
                    .to_string();
                    // Retried with the same req until it commits: applied once whatever the
                    // earlier attempts did.
                    let r = wait_for(
                        Duration::from_secs(20),
                        "an add to commit",
                        || match submit(&urls[via % urls.len()], ID, std::slice::from_ref(&change))
                        {
                            Ok(v) if v["fail"] == json!(false) => Some(v["results"][0].clone()),
                            _ => {
                                via += 1;
                                std::thread::sleep(Duration::from_millis(20));
                                None
                            }
                        },
                    );
                    seen.lock()
                        .unwrap()
                        .push(r["value"].as_i64().expect("a value"));
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(20), "some adds before the kill", || {
        (seen.lock().unwrap().len() >= 20).then_some(())
    });
    let m = c.wait_master(ID, Duration::from_secs(5));
    c.nodes[m].kill();
    let before = seen.lock().unwrap().len();
    for t in clients {
        t.join().expect("a client failed");
    }
    let total = (CLIENTS * ADDS) as i64;
    eprintln!("{before} of {total} adds answered before the master was killed");
    assert!(before < total as usize, "the kill came after every add");
    let mut values = seen.lock().unwrap().clone();
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=total).collect::<Vec<_>>(),
        "each add applied once, in some order"
    );

    // Every node, the restarted old master too, reads the exact count.
    c.nodes[m].restart();
    for u in &urls {
        let v = wait_for(Duration::from_secs(10), "a consistent read", || {
            let url = cluster_url(u, ID, "counter/hits?consistent=true");
            let a = http("GET", &url, b"").ok()?;
            (a.status == 200).then(|| a.json())
        });
        assert_eq!(v, json!({"counter": "hits", "value": total}), "on {u}");
    }
}
