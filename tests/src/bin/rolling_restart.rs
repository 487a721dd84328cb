//! `rolling-restart [--writers N] [--rounds R] [--only transfer|no-transfer]`: a 3-node cluster
//! of real `clusterconsensus node` processes under a steady write load; each node in turn gets
//! SIGTERM, is started again on its data, and is waited for until it has caught up. Run once
//! with the default transfer-on-shutdown and once with `--no-transfer-on-shutdown`, each on a
//! fresh cluster. Prints per run the writes acknowledged, the submits that failed (each failed
//! attempt, a refused connection to the node being restarted included; the writer retries the
//! same write at the next node after 10 ms) and the writes that needed such a retry, the
//! longest time no write was
//! acknowledged while the restarts went on, and whether every acknowledged write is on every
//! node at the end. Exits 1 if any acknowledged write is lost. `scripts/rolling-restart.sh`
//! builds and runs it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use clusterconsensus_tests::*;

/// A rolling restart of 3 nodes under a write load, with and without transfer on shutdown.
#[derive(Parser)]
#[command(name = "rolling-restart")]
struct Args {
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Rounds of restarting every node.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Only one of the two runs.
    #[arg(long, value_parser = ["transfer", "no-transfer"])]
    only: Option<String>,
}

/// What the writers saw.
#[derive(Default)]
struct Counts {
    acked: Vec<String>,
    failed: u64,
    /// Writes that failed at least once before they were acknowledged.
    retried: u64,
    /// Time of the last acknowledgement, and the longest gap between two while measuring.
    last_ack: Option<Instant>,
    longest_stall: Duration,
}

struct Load {
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    acks: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `writers` threads, each submitting one unique key at a time, through the nodes in turn;
    /// a failed or refused submit is counted and retried (same key) at the next node.
    fn start(urls: Vec<String>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let acks = Arc::new(AtomicU64::new(0));
        let threads = (0..writers)
            .map(|w| {
                let (stop, measuring, counts, acks, urls) = (
                    stop.clone(),
                    measuring.clone(),
                    counts.clone(),
                    acks.clone(),
                    urls.clone(),
                );
                std::thread::spawn(move || {
                    let mut via = w;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("w{w}-{n}");
                        let body = json!({ "chg": [set(&key, "1")] }).to_string();
                        let mut failed_once = false;
                        while !stop.load(Ordering::Relaxed) {
                            let url = cluster_url(&urls[via % urls.len()], "c1", "submit");
                            let r =
                                http_timeout("POST", &url, body.as_bytes(), Duration::from_secs(5));
                            let ok = r.is_ok_and(|a| a.status == 200 && a.json()["fail"] == false);
                            let mut c = counts.lock().unwrap();
                            if ok {
                                let now = Instant::now();
                                if let Some(last) = c.last_ack {
                                    if measuring.load(Ordering::Relaxed) {
                                        c.longest_stall = c.longest_stall.max(now - last);
                                    }
                                }
                                c.last_ack = Some(now);
                                c.acked.push(key.clone());
                                if failed_once && measuring.load(Ordering::Relaxed) {
                                    c.retried += 1;
                                }
                                acks.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            if measuring.load(Ordering::Relaxed) {
                                c.failed += 1;
                            }
                            failed_once = true;
                            drop(c);
                            via += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            measuring,
            counts,
            acks,
            threads,
        }
    }

    fn acked(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.counts)
            .ok()
            .expect("writers stopped")
            .into_inner()
            .unwrap()
    }
}

fn commit_of(node: &str) -> Option<u64> {
    status(node, "c1")?["commit"].as_u64()
}

/// Waits until `node` follows a serving master and has reached the commit that master had
/// when asked.
fn wait_caught_up(c: &Cluster, i: usize) -> Result<(), String> {
    let url = c.nodes[i].url.clone();
    wait_until(Duration::from_secs(30), || {
        let m = c.master("c1")?;
        let target = commit_of(&c.nodes[m].url)?;
        let s = status(&url, "c1")?;
        let follows = s["master"] == c.nodes[m].url.as_str();
        (follows && s["commit"].as_u64()? >= target).then_some(())
    })
    .ok_or_else(|| format!("{} did not catch up within 30 s", c.nodes[i].name))
}

struct Outcome {
    acked: usize,
    failed: u64,
    retried: u64,
    longest_stall: Duration,
    lost: usize,
    took: Duration,
}

fn run(transfer: bool, writers: usize, rounds: usize) -> Result<Outcome, String> {
    let mut args = Vec::new();
    if !transfer {
        args.push("--no-transfer-on-shutdown".to_string());
    }
    let tag = if transfer {
        "rr-transfer"
    } else {
        "rr-no-transfer"
    };
    let dir = TempDir::create(tag)?;
    let mut c = Cluster::launch(&binary(), dir, 3, &["c1"], &args, None)?;
    c.wait_formed(Duration::from_secs(30))?;
    let load = Load::start(c.urls(), writers);
    wait_until(Duration::from_secs(10), || {
        (load.acked() >= 100).then_some(())
    })
    .ok_or("no steady load within 10 s")?;
    load.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..rounds {
        for i in 0..3 {
            let code = c.nodes[i].terminate();
            if code != Some(0) {
                return Err(format!(
                    "{} exited with {code:?} on SIGTERM",
                    c.nodes[i].name
                ));
            }
            c.nodes[i].restart();
            wait_caught_up(&c, i)?;
            // Steady state again before the next one: a second of writes.
            let at = load.acked();
            wait_until(Duration::from_secs(10), || {
                (load.acked() > at + 50).then_some(())
            })
            .ok_or("writes did not resume after a restart")?;
        }
    }
    load.measuring.store(false, Ordering::Relaxed);
    let took = started.elapsed();
    let counts = load.stop();
    let state = wait_until(Duration::from_secs(10), || {
        let all: Vec<Value> = c
            .nodes
            .iter()
            .filter_map(|n| kv_all(&n.url, "c1"))
            .collect();
        (all.len() == 3 && all.iter().all(|s| *s == all[0])).then(|| all[0].clone())
    })
    .ok_or("the nodes did not converge within 10 s")?;
    let lost = counts
        .acked
        .iter()
        .filter(|k| state["data"][k.as_str()] != "1")
        .count();
    Ok(Outcome {
        acked: counts.acked.len(),
        failed: counts.failed,
        retried: counts.retried,
        longest_stall: counts.longest_stall,
        lost,
        took,
    })
}

fn main() {
    let Args {
        writers,
        rounds,
        only,
    } = Args::parse();
    let modes = match only.as_deref() {
        Some("transfer") => vec![true],
        Some(_) => vec![false],
        None => vec![true, false],
    };
    println!(
        "rolling restart of 3 nodes ({rounds} round(s)), {writers} writers, release build: {}",
        binary().display()
    );
    let mut bad = false;
    for transfer in modes {
        let name = if transfer {
            "transfer on shutdown   "
        } else {
            "--no-transfer-on-shutdown"
        };
        match run(transfer, writers, rounds) {
            Ok(o) => {
                println!(
                    "{name}: {} writes acknowledged, {} failed submits ({} writes retried), \
                     longest write stall {} ms, {} acknowledged writes lost, restarts took {:.1} s",
                    o.acked,
                    o.failed,
                    o.retried,
                    o.longest_stall.as_millis(),
                    o.lost,
                    o.took.as_secs_f64()
                );
                bad |= o.lost > 0;
            }
            Err(e) => {
                println!("{name}: FAILED: {e}");
                bad = true;
            }
        }
    }
    std::process::exit(i32::from(bad));
}
