//! Several writers keep submitting (with client ids, retrying failures) while the master is
//! killed and restarted again and again: every acknowledged write survives and all nodes end
//! with the same state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterconsensus_tests::*;

const WRITERS: usize = 3;
const ROUNDS: usize = 3;

#[test]
fn repeated_master_kills_under_concurrent_writers() {
    let mut c = Cluster::start("churn", 3, &["c1"], &[]);
    let urls = c.urls();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
            std::thread::spawn(move || {
                let mut via = w;
                let mut req = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    req += 1;
                    // Retried with the same (client, req) until acknowledged: the outcome of a
                    // failed submit is unknown, and the app applies each pair at most once.
                    let change = json!({
                        "op": "set", "key": format!("w{w}-{req}"), "value": req.to_string(),
                        "client": format!("writer{w}"), "req": req,
                    })
                    .to_string();
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match submit_ok(&urls[via % 3], "c1", std::slice::from_ref(&change)) {
                            Ok(_) => {
                                acked.lock().unwrap().push((w, req));
                                break;
                            }
                            Err(_) => {
                                via += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
            })
        })
        .collect();

    for round in 0..ROUNDS {
        let m = c.wait_master("c1", Duration::from_secs(10));
        let before = acked.lock().unwrap().len();
        wait_for(Duration::from_secs(10), "writes to go on", || {
            (acked.lock().unwrap().len() >= before + 10).then_some(())
        });
        c.nodes[m].kill();
        wait_for(
            Duration::from_secs(10),
            &format!("writes after kill {round}"),
            || {
                let n = acked.lock().unwrap().len();
                (n >= before + 20).then_some(())
            },
        );
        c.nodes[m].restart();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let m = c.wait_master("c1", Duration::from_secs(10));
    submit_ok(&urls[m], "c1", &[set("done", "1")]).unwrap();
    let state = wait_for(
        Duration::from_secs(10),
        "every node to have the final state",
        || {
            let all: Vec<Value> = urls.iter().filter_map(|u| kv_all(u, "c1")).collect();
            (all.len() == 3 && all[0]["data"]["done"] == "1" && all.iter().all(|s| *s == all[0]))
                .then(|| all[0].clone())
        },
    );
    let data = state["data"].as_object().unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged over {ROUNDS} master kills",
        acked.len()
    );
    for (w, req) in &acked {
        assert_eq!(
            data.get(&format!("w{w}-{req}")),
            Some(&json!(req.to_string())),
            "lost w{w}-{req}"
        );
    }
}
