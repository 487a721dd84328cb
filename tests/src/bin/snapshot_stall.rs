//! The cost of the periodic snapshot at a large state (issue 10, "built off the hot path"):
//! prefill `LARGE_KEYS` keys (default 2,000,000) of 100-byte values in batches of 1,000, then
//! `CONCURRENCY` clients (default 32) write one key each, one at a time, for `SECONDS` (default
//! 30) with `--snapshot-every SNAPSHOT_EVERY` (default 2,000 entries, so that several periodic
//! snapshots fall in the window); prints writes/s, p50, p99 and the maximum latency. A
//! measurement, not a test: run it against two builds with `CLUSTERCONSENSUS_BIN`.
//!
//! ```sh
//! cargo build --release -p clusterconsensus-server -p clusterconsensus-tests --bins
//! LARGE_KEYS=2000000 CLUSTERCONSENSUS_BIN=target/release/clusterconsensus target/release/snapshot_stall
//! ```

use std::time::{Duration, Instant};

use clusterconsensus_tests::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let keys = env("LARGE_KEYS", 2_000_000) as usize;
    let clients = env("CONCURRENCY", 32) as usize;
    let seconds = env("SECONDS", 30);
    let every = env("SNAPSHOT_EVERY", 2_000);
    let args: Vec<String> = vec!["--snapshot-every".into(), every.to_string()];
    let c = Cluster::start("stall", 3, &["c1"], &args);
    let master = |c: &Cluster| {
        c.nodes[c.wait_master("c1", Duration::from_secs(60))]
            .url
            .clone()
    };
    let v: String = std::iter::repeat_n('v', 100).collect();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut retries = 0;
    for i in 0..keys {
        batch.push(set(&format!("key{i:012}"), &v));
        if batch.len() == 1000 || i + 1 == keys {
            // A set is idempotent: a batch whose answer was lost (a new master) goes again.
            let mut to = master(&c);
            while submit_ok(&to, "c1", &batch).is_err() {
                retries += 1;
                std::thread::sleep(Duration::from_millis(200));
                to = master(&c);
            }
            batch.clear();
        }
    }
    eprintln!(
        "prefill: {keys} keys in {:.1} s ({retries} batches sent again)",
        t.elapsed().as_secs_f64()
    );
    let master = master(&c);
    let c = c;

    let until = Instant::now() + Duration::from_secs(seconds);
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    let first = nodes.iter().position(|n| *n == master).unwrap_or(0);
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let nodes = nodes.clone();
            std::thread::spawn(move || {
                let (mut lat, mut failed) = (Vec::new(), 0u64);
                let (mut i, mut to) = (0u64, first);
                while Instant::now() < until {
                    let t = Instant::now();
                    match submit_ok(&nodes[to], "c1", &[set(&format!("w{k}-{i}"), "x")]) {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => {
                            // The master changed (or is stalled): try the next node (a
                            // follower forwards), as a client would.
                            failed += 1;
                            to = (to + 1) % nodes.len();
                        }
                    }
                    i += 1;
                }
                (lat, failed)
            })
        })
        .collect();
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in threads {
        let (l, f) = t.join().unwrap();
        lat.extend(l);
        failed += f;
    }
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "keys={keys} C={clients} snapshot_every={every}: {:.0} writes/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failed} failed",
        lat.len() as f64 / seconds as f64,
        q(0.5),
        q(0.99),
        q(1.0),
    );
}
