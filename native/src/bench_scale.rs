//! `--scale N`: the scale benchmark of issue 10, in one run. Our 3-node cluster and etcd's side
//! by side: writes/s and p99 at C = 32 on the empty state; both prefilled with the same N keys
//! of 100-byte values; the same on the full state; then, ours only: the time from
//! `members/add` of a fresh 4th node until it is a voter holding every key, with the writes of
//! C = 32 clients during the join (failed submits, p99); the catch-up of a follower that missed
//! `--scale-missed` writes while it was down; the time for all four nodes, killed with `-9`
//! and restarted, to serve again and to hold the full state; and each node's peak RSS over the
//! whole run, sampled every 100 ms. It ends with the thresholds of the issue's "done when",
//! each marked met or not.

use std::collections::BTreeMap;
use std::sync::Mutex;

use clusterconsensus_server::testkit::{self, NodeOptions};

use super::*;

/// The concurrency of every load in this mode (the issue's).
const C: usize = 32;
/// Changes per prefill submit (ours) and puts per prefill txn (etcd's default `--max-txn-ops`).
const OUR_BATCH: u64 = 1000;
const ETCD_BATCH: u64 = 128;
const PREFILL_CLIENTS: u64 = 4;

/// The peak RSS of each named process, sampled every 100 ms by a thread of its own. The pids
/// change when a node restarts, so they are set by name.
struct RssSampler {
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    peaks: Arc<Mutex<BTreeMap<String, f64>>>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let s = RssSampler {
            pids: Arc::default(),
            peaks: Arc::default(),
            stop: Arc::default(),
        };
        let (pids, peaks, stop) = (s.pids.clone(), s.peaks.clone(), s.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<(String, u32)> = pids
                    .lock()
                    .map(|p| p.iter().map(|(n, p)| (n.clone(), *p)).collect())
                    .unwrap_or_default();
                for (name, pid) in now {
                    let rss = rss_mib(pid);
                    if let Ok(mut peaks) = peaks.lock() {
                        let e = peaks.entry(name).or_insert(0.0);
                        *e = e.max(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        s
    }

    fn track(&self, name: &str, pid: Option<u32>) {
        if let (Ok(mut pids), Some(pid)) = (self.pids.lock(), pid) {
            pids.insert(name.to_string(), pid);
        }
    }

    fn peaks(&self) -> BTreeMap<String, f64> {
        self.peaks.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes/s and latency percentiles of a load.
#[derive(Clone, Copy, Default)]
struct Load {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
}

/// C clients writing to `urls` (cycling over the `keys` prefilled keys) for `dur`, all counted.
async fn window(target: &Target, url: &str, keys: u64, dur: Duration) -> ClientResult {
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..C)
        .map(|i| {
            let (target, url) = (target.clone(), url.to_string());
            tokio::spawn(async move {
                client_loop(
                    i as u64,
                    Keys::Cycle(keys.max(1)),
                    &url,
                    &target,
                    start,
                    deadline,
                )
                .await
            })
        })
        .collect();
    let mut all = ClientResult::default();
    for h in handles {
        if let Ok(r) = h.await {
            all.merge(r);
        }
    }
    all
}

fn summarize(mut r: ClientResult, secs: f64) -> Load {
    let (ok, errors) = (r.ok, r.errors);
    let pct = r.percentiles();
    Load {
        per_sec: ok as f64 / secs.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        ok,
        errors,
    }
}

/// A warm-up window, then a measured one of `args.duration`.
async fn steady(args: &Args, target: &Target, url: &str, keys: u64) -> Load {
    let _ = window(target, url, keys, args.warmup).await;
    let r = window(target, url, keys, args.duration).await;
    summarize(r, args.duration.as_secs_f64())
}

fn set_change(i: u64, value: &str) -> String {
    format!(r#"{{"op":"set","key":"key-{i:012}","value":"{value}"}}"#)
}

/// Writes keys `0..keys` to our cluster through `master`, in batches, from a few threads.
fn prefill_ours(master: &str, keys: u64, value: &str) -> Result<(), String> {
    let batches = keys.div_ceil(OUR_BATCH);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..PREFILL_CLIENTS)
            .map(|w| {
                s.spawn(move || -> Result<(), String> {
                    for b in (w..batches).step_by(PREFILL_CLIENTS as usize) {
                        let range = b * OUR_BATCH..((b + 1) * OUR_BATCH).min(keys);
                        let chg: Vec<String> = range.map(|i| set_change(i, value)).collect();
                        let mut tries = 0;
                        while let Err(e) = testkit::submit_ok(master, CLUSTER, &chg) {
                            tries += 1;
                            if tries == 5 {
                                return Err(format!("prefill batch {b}: {e}"));
                            }
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| "a prefill thread panicked".to_string())?
        })
    })
}

/// The same keys into etcd, as transactions of puts through its JSON gateway.
async fn prefill_etcd(leader: &str, keys: u64, value: &str) -> Result<(), String> {
    let batches = keys.div_ceil(ETCD_BATCH);
    let value = base64(value.as_bytes());
    let tasks: Vec<_> = (0..PREFILL_CLIENTS)
        .map(|w| {
            let (url, value) = (format!("{leader}/v3/kv/txn"), value.clone());
            tokio::spawn(async move {
                let http = HttpClient::new(Duration::from_secs(30));
                for b in (w..batches).step_by(PREFILL_CLIENTS as usize) {
                    let ops: Vec<Value> = (b * ETCD_BATCH..((b + 1) * ETCD_BATCH).min(keys))
                        .map(|i| {
                            let key = base64(format!("key-{i:012}").as_bytes());
                            json!({"requestPut": {"key": key, "value": value}})
                        })
                        .collect();
                    let body = json!({ "success": ops }).to_string();
                    if post_json(&http, &url, &body).await.is_none() {
                        return Err(format!("etcd prefill txn {b} failed"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("etcd prefill: {e}"))??;
    }
    Ok(())
}

fn count(node: &str) -> Option<u64> {
    testkit::get_json(node, CLUSTER, "kv?limit=1").and_then(|p| p["count"].as_u64())
}

fn commit(node: &str) -> Option<u64> {
    testkit::status(node, CLUSTER).and_then(|s| s["commit"].as_u64())
}

/// Polls `f` every 50 ms on a blocking thread until it holds (its time since `since`) or
/// `within` passes (`None`).
async fn time_until(
    since: Instant,
    within: Duration,
    f: impl Fn() -> bool + Send + 'static,
) -> Option<f64> {
    tokio::task::spawn_blocking(move || {
        testkit::wait_until(within, || f().then_some(()))?;
        Some(since.elapsed().as_secs_f64())
    })
    .await
    .ok()
    .flatten()
}

/// Runs the whole scale benchmark and prints its table.
pub(super) async fn run_scale(
    args: &Args,
    node_bin: &Path,
    dir: &Path,
    keys: u64,
    machine: &str,
) -> Result<(), String> {
    let value = "v".repeat(100);
    let rss = RssSampler::start();
    let mut ours = Ours::start(node_bin, &dir.join("ours")).await?;
    for n in &ours.cluster.nodes {
        rss.track(&n.name, n.pid());
    }
    let master = ours.master.clone();
    eprintln!("our cluster is up; master {master}");
    let etcd = match (which(&args.etcd), args.no_etcd) {
        (Some(bin), false) => {
            let e = Etcd::start(&bin, &dir.join("etcd")).await?;
            for (i, p) in e.pids().iter().enumerate() {
                rss.track(&format!("etcd{}", i + 1), Some(*p));
            }
            Some(e)
        }
        _ => {
            eprintln!("etcd: skipped");
            None
        }
    };
    let (ours_t, etcd_t) = (Target::ours(), Target::etcd());

    let empty = steady(args, &ours_t, &master, keys).await;
    eprintln!(
        "ours, empty state: {:.0}/s p99 {:.1} ms",
        empty.per_sec, empty.p99_ms
    );
    let etcd_empty = match &etcd {
        Some(e) => Some(steady(args, &etcd_t, &e.leader, keys).await),
        None => None,
    };

    let t = Instant::now();
    tokio::task::block_in_place(|| prefill_ours(&master, keys, &value))?;
    let prefill_s = t.elapsed().as_secs_f64();
    eprintln!("ours: {keys} keys prefilled in {prefill_s:.1} s");
    if let Some(e) = &etcd {
        let t = Instant::now();
        prefill_etcd(&e.leader, keys, &value).await?;
        eprintln!(
            "etcd: {keys} keys prefilled in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let snapshot_bytes = tokio::task::block_in_place(|| {
        testkit::http(
            "GET",
            &testkit::cluster_url(&master, CLUSTER, "snapshot"),
            b"",
        )
        .map(|a| a.body.len() as u64)
    })
    .unwrap_or(0);
    let state_mb = snapshot_bytes as f64 / 1e6;
    eprintln!("our snapshot of the state: {state_mb:.1} MB");

    let full = steady(args, &ours_t, &master, keys).await;
    eprintln!(
        "ours, full state: {:.0}/s p99 {:.1} ms",
        full.per_sec, full.p99_ms
    );
    let etcd_full = match &etcd {
        Some(e) => Some(steady(args, &etcd_t, &e.leader, keys).await),
        None => None,
    };

    // The join, under the load of C clients.
    let opts = NodeOptions::new(node_bin, ours.cluster.dir.path(), "node4", &[CLUSTER]);
    let fourth = tokio::task::block_in_place(|| testkit::Node::launch(opts))?;
    rss.track(&fourth.name, fourth.pid());
    let url4 = fourth.url.clone();
    ours.cluster.nodes.push(fourth);
    let t = Instant::now();
    let add = json!({ "addr": url4 });
    tokio::task::block_in_place(|| testkit::post_json(&master, CLUSTER, "members/add", &add))?;
    let joined = {
        let url4 = url4.clone();
        tokio::spawn(time_until(t, Duration::from_secs(600), move || {
            testkit::status(&url4, CLUSTER).is_some_and(|s| s["role"] == "participant")
                && count(&url4) >= Some(keys)
        }))
    };
    let mut during = ClientResult::default();
    while !joined.is_finished() {
        during.merge(window(&ours_t, &master, keys, Duration::from_millis(500)).await);
    }
    let join_s = joined.await.ok().flatten();
    let during_s = t.elapsed().as_secs_f64();
    let first_error = during.first_error.clone();
    let during = summarize(during, during_s);
    match join_s {
        Some(s) => eprintln!("join: a voter holding {keys} keys {s:.2} s after members/add"),
        None => eprintln!("join: not a voter holding the state within 600 s"),
    }
    if let Some(e) = &first_error {
        eprintln!("join: first failed write: {e}");
    }

    // A follower misses `missed` writes.
    let f = (0..ours.cluster.nodes.len())
        .find(|&i| ours.cluster.nodes[i].url != master && ours.cluster.nodes[i].url != url4)
        .ok_or("no follower")?;
    ours.cluster.nodes[f].kill();
    let missed = args.scale_missed;
    let t = Instant::now();
    tokio::task::block_in_place(|| prefill_ours(&master, missed, "w"))?;
    eprintln!(
        "{missed} writes while a follower is down: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let want = tokio::task::block_in_place(|| commit(&master)).ok_or("no commit")?;
    let t = Instant::now();
    tokio::task::block_in_place(|| ours.cluster.nodes[f].restart());
    rss.track(&ours.cluster.nodes[f].name, ours.cluster.nodes[f].pid());
    let furl = ours.cluster.nodes[f].url.clone();
    let catch_up_s = time_until(t, Duration::from_secs(600), move || {
        commit(&furl) >= Some(want)
    })
    .await;

    // Every node killed with -9, then restarted.
    for n in ours.cluster.nodes.iter_mut() {
        n.kill();
    }
    let t = Instant::now();
    for n in ours.cluster.nodes.iter_mut() {
        tokio::task::block_in_place(|| n.restart());
        rss.track(&n.name, n.pid());
    }
    let urls: Vec<String> = ours.cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let serving = {
        let urls = urls.clone();
        time_until(t, Duration::from_secs(600), move || {
            urls.iter()
                .any(|u| testkit::submit_ok(u, CLUSTER, &[set_change(0, "r")]).is_ok())
        })
        .await
    };
    let want = keys.max(1);
    let full_state = time_until(t, Duration::from_secs(600), move || {
        let m = urls.iter().filter_map(|u| commit(u)).max().unwrap_or(0);
        urls.iter()
            .all(|u| count(u) >= Some(want) && commit(u) >= Some(m))
    })
    .await;
    let peaks = rss.peaks();
    drop(ours);
    drop(etcd);

    // Report.
    let secs = |s: Option<f64>| s.map_or("not within 600 s".to_string(), |s| format!("{s:.2} s"));
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    let mut out = String::new();
    out.push_str(&format!(
        "scale: {keys} keys x 100-byte values (our snapshot {state_mb:.1} MB); C = {C}, {} s \
         per measured run after {} ms warm-up; 3 nodes on 127.0.0.1, fsync on; {machine}\n\n",
        args.duration.as_secs_f64(),
        args.warmup.as_millis()
    ));
    out.push_str("| measure | ours | etcd |\n|---|---:|---:|\n");
    let pair = |o: &Load, e: Option<Load>| {
        (
            format!("{:.0}/s, p99 {:.1} ms", o.per_sec, o.p99_ms),
            e.map_or("-".to_string(), |e| {
                format!("{:.0}/s, p99 {:.1} ms", e.per_sec, e.p99_ms)
            }),
        )
    };
    let (a, b) = pair(&empty, etcd_empty);
    out.push_str(&format!("| writes, empty state | {a} | {b} |\n"));
    let (a, b) = pair(&full, etcd_full);
    out.push_str(&format!("| writes, {keys} keys | {a} | {b} |\n"));
    let rel = |o: &Load, e: &Load| {
        format!(
            "{:.2}x writes/s, {:.2}x p99",
            ratio(o.per_sec, e.per_sec),
            ratio(o.p99_ms, e.p99_ms)
        )
    };
    out.push_str(&format!(
        "| full / empty | {} | {} |\n",
        rel(&full, &empty),
        match (etcd_full, etcd_empty) {
            (Some(f), Some(e)) => rel(&f, &e),
            _ => "-".into(),
        }
    ));
    out.push_str(&format!("| prefill | {prefill_s:.1} s | |\n"));
    out.push_str(&format!(
        "| members/add until a voter holding every key | {} | |\n",
        secs(join_s)
    ));
    out.push_str(&format!(
        "| writes during the join | {} ok, {} failed, {:.0}/s, p99 {:.1} ms | |\n",
        during.ok, during.errors, during.per_sec, during.p99_ms
    ));
    out.push_str(&format!(
        "| catch-up of a follower that missed {missed} writes | {} | |\n",
        secs(catch_up_s)
    ));
    out.push_str(&format!(
        "| kill -9 of all 4 nodes, restart: a write commits / every node holds the state | {} / {} | |\n",
        secs(serving),
        secs(full_state)
    ));
    let node_peaks: Vec<String> = peaks
        .iter()
        .filter(|(n, _)| n.starts_with("node"))
        .map(|(n, p)| format!("{n} {p:.0}"))
        .collect();
    let etcd_peaks: Vec<String> = peaks
        .iter()
        .filter(|(n, _)| n.starts_with("etcd"))
        .map(|(n, p)| format!("{n} {p:.0}"))
        .collect();
    out.push_str(&format!(
        "| peak RSS per process, MiB | {} | {} |\n",
        node_peaks.join(", "),
        etcd_peaks.join(", ")
    ));

    // The issue's thresholds (stated for 2M keys).
    let max_rss = peaks
        .iter()
        .filter(|(n, _)| n.starts_with("node"))
        .map(|(_, p)| *p)
        .fold(0.0, f64::max);
    let rss_bound = 2.5 * snapshot_bytes as f64 / (1024.0 * 1024.0) + 64.0;
    let checks = [
        (
            format!(
                "writes/s full >= 0.8x empty ({:.2}x)",
                ratio(full.per_sec, empty.per_sec)
            ),
            full.per_sec >= 0.8 * empty.per_sec,
        ),
        (
            format!(
                "p99 full <= 2x empty ({:.2}x)",
                ratio(full.p99_ms, empty.p99_ms)
            ),
            full.p99_ms <= 2.0 * empty.p99_ms,
        ),
        (
            format!("join within 30 s ({})", secs(join_s)),
            join_s.is_some_and(|s| s <= 30.0),
        ),
        (
            format!("no failed submit during the join ({})", during.errors),
            during.errors == 0,
        ),
        (
            format!(
                "p99 during the join <= 3x empty ({:.2}x)",
                ratio(during.p99_ms, empty.p99_ms)
            ),
            during.p99_ms <= 3.0 * empty.p99_ms,
        ),
        (
            format!("catch-up within 30 s ({})", secs(catch_up_s)),
            catch_up_s.is_some_and(|s| s <= 30.0),
        ),
        (
            format!(
                "full state served within 15 s of the restart ({})",
                secs(full_state)
            ),
            full_state.is_some_and(|s| s <= 15.0),
        ),
        (
            format!("peak RSS <= 2.5x state + 64 MiB ({max_rss:.0} <= {rss_bound:.0} MiB)"),
            max_rss <= rss_bound,
        ),
    ];
    out.push_str("\nthresholds of issue 10 (stated for 2M keys):\n");
    for (what, met) in &checks {
        out.push_str(&format!(
            "- {}: {what}\n",
            if *met { "met" } else { "NOT met" }
        ));
    }
    println!("{out}");
    if let Some(path) = &args.out {
        let v = json!({
            "machine": machine, "keys": keys, "snapshot_bytes": snapshot_bytes,
            "empty": load_json(&empty), "full": load_json(&full),
            "etcd_empty": etcd_empty.as_ref().map(load_json),
            "etcd_full": etcd_full.as_ref().map(load_json),
            "prefill_s": prefill_s, "join_s": join_s, "during_join": load_json(&during),
            "catch_up_s": catch_up_s, "missed": missed,
            "restart_serving_s": serving, "restart_full_state_s": full_state,
            "peak_rss_mib": peaks,
            "table": out,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn load_json(l: &Load) -> Value {
    json!({"per_sec": l.per_sec, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "ok": l.ok, "errors": l.errors})
}
