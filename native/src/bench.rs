//! `clusterconsensus-bench`: a 3-node cluster of real `clusterconsensus node` processes on
//! 127.0.0.1 (write-ahead log, fdatasync on), driven by C concurrent HTTP/1.1 keep-alive
//! clients, side by side with a 3-member etcd cluster when the `etcd` binary is present.
//!
//! Every client has its own connection and submits one key-value set (16-byte key, 100-byte
//! value) at a time: to us as the seed's `{"chg":[...]}` on `/_clusterc/<id>/submit`, to etcd as
//! `POST /v3/kv/put` of its JSON gateway. Both answer only once the write is durable on a
//! majority. The bench installs nothing; `scripts/bench.sh` installs etcd-server and runs the
//! full comparison.
//!
//! `--watchers N` measures the change stream instead: N watchers (`GET watch`) on one node while
//! C clients write, writes/s without them, with them and without them again in the same run,
//! and whether every watcher received every entry, in order.
//!
//! `--scale N` measures a state of N keys instead (bench_scale.rs): writes on the empty and the
//! full state beside etcd, a new member's join, a follower's catch-up, a restart of every node
//! after `kill -9`, and each node's peak RSS.
//!
//! Every load loop stops at its deadline; every child process is killed when the bench ends.
//!
//! Built on the library: the nodes are started and stopped with its testkit, the clusters are
//! watched with its [`HttpClient`]. The load itself is not: each load client drives one
//! HTTP/1.1 connection directly (hyper's `SendRequest`), because the pooled client costs the
//! load generator, which shares the machine with both clusters, enough CPU to lower the
//! measured throughput at high C (about 17% at C = 128 on a loaded 2-core machine).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use clusterconsensus_server::testkit::{parse_duration, Children, Cluster, Node, TempDir};
use clusterconsensus_server::HttpClient;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[path = "bench_scale.rs"]
mod scale;

/// Benchmark: our 3-node cluster (and etcd's, when `etcd` is on the PATH) under C concurrent
/// keep-alive clients, each submitting one 16-byte-key / 100-byte-value set at a time.
#[derive(Parser, Debug)]
#[command(name = "clusterconsensus-bench", version, about)]
struct Args {
    /// Concurrencies to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128,512")]
    concurrency: Vec<usize>,
    /// Measured time per concurrency (e.g. 5s, 500ms, 2m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load before each measured run.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrency of the extra run with the clients spread over all three nodes (followers
    /// forward to the master); 0 skips it.
    #[arg(long, default_value_t = 32)]
    forward_concurrency: usize,
    /// Skip etcd even when it is installed.
    #[arg(long)]
    no_etcd: bool,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: String,
    /// The node binary (default: `clusterconsensus` next to this program).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Where the nodes' (and etcd's) data and logs go; default a fresh directory under the
    /// system temp dir, removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of the comparison: load our cluster for this long (e.g. 10m) and sample each
    /// node's RSS every --sample, to show it stays flat.
    #[arg(long, value_parser = parse_duration)]
    soak: Option<Duration>,
    /// Concurrency of the soak.
    #[arg(long, default_value_t = 32)]
    soak_concurrency: usize,
    /// Sampling interval of the soak.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample: Duration,
    /// Distinct keys the clients write (the applied state is bounded by this).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Instead of the comparison: this many watchers (`GET watch`) on one node while
    /// --watch-concurrency clients write to the master; writes/s without the watchers, with
    /// them, and without them again, and whether every watcher received every entry.
    #[arg(long)]
    watchers: Option<usize>,
    /// Concurrency of the writers in the watch mode.
    #[arg(long, default_value_t = 32)]
    watch_concurrency: usize,
    /// The node the watchers follow: a follower (the default) or the master.
    #[arg(long, default_value = "follower", value_parser = ["follower", "master"])]
    watch_node: String,
    /// In the watch mode: runs with the watchers, each between two runs without them (the
    /// ratio is the mean of the runs with them over the mean of those without).
    #[arg(long, default_value_t = 2)]
    watch_rounds: usize,
    /// Instead of the comparison: the scale benchmark with this many keys (bench_scale.rs):
    /// empty and full state at C = 32 beside etcd, a join, a catch-up, a restart of all nodes,
    /// peak RSS.
    #[arg(long)]
    scale: Option<u64>,
    /// In the scale mode: the writes a killed follower misses before its restart.
    #[arg(long, default_value_t = 100_000)]
    scale_missed: u64,
}

const CLUSTER: &str = "bench";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let top = match &args.data_dir {
        Some(d) => TempDir::existing(d)?,
        None => TempDir::create("bench")?,
    };
    let dir = top.path().to_path_buf();
    let node_bin = match &args.node_bin {
        Some(b) => b.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
            exe.with_file_name(format!("clusterconsensus{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !node_bin.is_file() {
        return Err(format!(
            "no node binary at {} (cargo build --release --workspace --bins, or --node-bin)",
            node_bin.display()
        ));
    }
    let machine = machine();
    eprintln!("machine: {machine}");

    if let Some(soak) = args.soak {
        return run_soak(&args, &node_bin, &dir, soak, &machine).await;
    }
    if let Some(n) = args.watchers {
        return run_watch(&args, &node_bin, &dir, n, &machine).await;
    }
    if let Some(keys) = args.scale {
        return scale::run_scale(&args, &node_bin, &dir, keys, &machine).await;
    }

    // Both clusters run side by side and each concurrency measures ours, then etcd, so that
    // a machine whose load changes over time skews both alike. The idle one costs a few
    // heartbeats.
    let ours = Ours::start(&node_bin, &dir.join("ours")).await?;
    eprintln!("our cluster is up; master {}", ours.master);
    let etcd_bin = which(&args.etcd);
    let mut etcd_version = Value::Null;
    let etcd = match (&etcd_bin, args.no_etcd) {
        (_, true) => {
            eprintln!("etcd: skipped (--no-etcd)");
            None
        }
        (None, _) => {
            eprintln!(
                "etcd: no `{}` binary on the PATH; skipped (scripts/bench.sh installs it)",
                args.etcd
            );
            None
        }
        (Some(bin), false) => {
            etcd_version = Value::String(
                command_line(bin, &["--version"])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            let etcd = Etcd::start(bin, &dir.join("etcd")).await?;
            eprintln!("etcd cluster is up; leader {}", etcd.leader);
            Some(etcd)
        }
    };
    let target = Target::ours();
    let etcd_target = Target::etcd();
    let mut our_rows = Vec::new();
    let mut etcd_rows = Vec::new();
    for &c in &args.concurrency {
        let row = measure(
            &args,
            "ours",
            &target,
            &ours.urls_for(c, false),
            c,
            &ours.pids(),
        )
        .await;
        eprintln!("{}", row_line(&row));
        our_rows.push(row);
        if let Some(etcd) = &etcd {
            let urls = vec![etcd.leader.clone(); c];
            let row = measure(&args, "etcd", &etcd_target, &urls, c, &etcd.pids()).await;
            eprintln!("{}", row_line(&row));
            etcd_rows.push(row);
        }
    }
    let mut forward = None;
    if args.forward_concurrency > 0 {
        let c = args.forward_concurrency;
        let row = measure(
            &args,
            "ours-spread",
            &target,
            &ours.urls_for(c, true),
            c,
            &ours.pids(),
        )
        .await;
        eprintln!("{}", row_line(&row));
        forward = Some(row);
    }
    drop(ours);
    drop(etcd);

    // Report.
    let mut table = String::new();
    table.push_str(&format!(
        "{} s per concurrency after {} ms warm-up; 3 nodes on 127.0.0.1, fsync on; {machine}\n\n",
        args.duration.as_secs_f64(),
        args.warmup.as_millis()
    ));
    table.push_str(&header());
    for r in our_rows
        .iter()
        .chain(forward.iter())
        .chain(etcd_rows.iter())
    {
        table.push_str(&row_line(r));
        table.push('\n');
    }
    let mut ratios = Vec::new();
    if !etcd_rows.is_empty() {
        table.push_str("\nours / etcd (throughput: higher is better; p99: lower is better)\n\n");
        table.push_str(
            "|    C | throughput | p50   | p99   |\n|-----:|-----------:|------:|------:|\n",
        );
        for o in &our_rows {
            let Some(e) = etcd_rows.iter().find(|e| e.c == o.c) else {
                continue;
            };
            let t = o.per_sec / e.per_sec.max(1e-9);
            let p50 = o.p50_ms / e.p50_ms.max(1e-9);
            let p99 = o.p99_ms / e.p99_ms.max(1e-9);
            table.push_str(&format!(
                "| {:>4} | {t:>9.2}x | {p50:>5.2} | {p99:>5.2} |\n",
                o.c
            ));
            ratios.push(json!({"c": o.c, "throughput": t, "p50": p50, "p99": p99}));
        }
    }
    println!("{table}");
    if let Some(out) = &args.out {
        let v = json!({
            "machine": machine,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "ours": our_rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "ours_spread": forward.as_ref().map(Row::to_json),
            "etcd": etcd_rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "etcd_version": etcd_version,
            "ratio": ratios,
            "table": table,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("write {}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// How to phrase one write for a system, and how to tell that it succeeded.
#[derive(Clone)]
struct Target {
    path: String,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours,
    Etcd,
}

impl Target {
    fn ours() -> Target {
        Target {
            path: clusterconsensus::wire::path(CLUSTER, "submit"),
            kind: Kind::Ours,
        }
    }
    fn etcd() -> Target {
        Target {
            path: "/v3/kv/put".into(),
            kind: Kind::Etcd,
        }
    }

    fn body(&self, key: &str, value: &str) -> Bytes {
        match self.kind {
            Kind::Ours => {
                let change = format!(r#"{{"op":"set","key":"{key}","value":"{value}"}}"#);
                Bytes::from(serde_json::to_vec(&json!({ "chg": [change] })).unwrap_or_default())
            }
            Kind::Etcd => Bytes::from(format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                base64(key.as_bytes()),
                base64(value.as_bytes())
            )),
        }
    }

    fn ok(&self, status: hyper::StatusCode, body: &[u8]) -> bool {
        if status != hyper::StatusCode::OK {
            return false;
        }
        match self.kind {
            Kind::Ours => body.starts_with(br#"{"fail":false"#),
            Kind::Etcd => body.starts_with(br#"{"header""#),
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    ok: u64,
    errors: u64,
    lat_us: Vec<u32>,
    first_error: Option<String>,
}

impl ClientResult {
    /// Adds what another client saw (the first error seen stays).
    fn merge(&mut self, r: ClientResult) {
        self.ok += r.ok;
        self.errors += r.errors;
        self.lat_us.extend(r.lat_us);
        if self.first_error.is_none() {
            self.first_error = r.first_error;
        }
    }

    /// Sorts the latencies, then hands out the q-quantile of them in ms (0 for none).
    fn percentiles(&mut self) -> impl Fn(f64) -> f64 + '_ {
        self.lat_us.sort_unstable();
        let lat = &self.lat_us;
        move |q: f64| {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1000.0
        }
    }
}

/// One measured run.
struct Row {
    system: String,
    c: usize,
    committed: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    first_error: Option<String>,
    /// Per node: CPU seconds during the measured run, peak RSS (MiB) during it, RSS at its end.
    nodes: Vec<(f64, f64, f64)>,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "system": self.system, "c": self.c, "committed": self.committed,
            "per_sec": self.per_sec, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms, "errors": self.errors, "first_error": self.first_error,
            "nodes": self.nodes.iter().map(|(cpu, peak, rss)| json!({
                "cpu_s": cpu, "peak_rss_mib": peak, "rss_mib": rss
            })).collect::<Vec<_>>(),
        })
    }
}

fn header() -> String {
    "| system      |    C | changes/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s per node     | peak RSS MiB per node |\n\
     |-------------|-----:|----------:|-------:|-------:|---------:|-------:|--------------------|-----------------------|\n"
        .to_string()
}

fn row_line(r: &Row) -> String {
    let cpu: Vec<String> = r.nodes.iter().map(|n| format!("{:.2}", n.0)).collect();
    let rss: Vec<String> = r.nodes.iter().map(|n| format!("{:.1}", n.1)).collect();
    format!(
        "| {:<11} | {:>4} | {:>9.0} | {:>6.2} | {:>6.2} | {:>8.2} | {:>6} | {:<18} | {:<21} |",
        r.system,
        r.c,
        r.per_sec,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.errors,
        cpu.join(" / "),
        rss.join(" / ")
    )
}

/// Runs `c` clients (client i talks to `urls[i]`) for warm-up + duration and measures the
/// writes that started after the warm-up and finished before the deadline.
async fn measure(
    args: &Args,
    system: &str,
    target: &Target,
    urls: &[String],
    c: usize,
    pids: &[u32],
) -> Row {
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let mut handles = Vec::with_capacity(c);
    for (i, url) in urls.iter().enumerate().take(c) {
        let target = target.clone();
        let url = url.clone();
        let keys = args.keys;
        handles.push(tokio::spawn(async move {
            client_loop(
                i as u64,
                Keys::Cycle(keys),
                &url,
                &target,
                measure_from,
                deadline,
            )
            .await
        }));
    }
    // Start counting CPU and peak RSS at the end of the warm-up.
    tokio::time::sleep_until(tokio::time::Instant::from_std(measure_from)).await;
    for &p in pids {
        reset_peak_rss(p);
    }
    let before: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let mut all = ClientResult::default();
    for h in handles {
        if let Ok(r) = h.await {
            all.merge(r);
        }
    }
    let nodes = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| (cpu_seconds(p) - b, peak_rss_mib(p), rss_mib(p)))
        .collect();
    let (ok, errors, first_error) = (all.ok, all.errors, all.first_error.take());
    let pct = all.percentiles();
    Row {
        system: system.to_string(),
        c,
        committed: ok,
        per_sec: ok as f64 / args.duration.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        errors,
        first_error,
        nodes,
    }
}

/// One client: one keep-alive connection, one write at a time until the deadline. Reconnects
/// after a failure.
/// Which keys a client writes.
#[derive(Clone, Copy)]
enum Keys {
    /// Forever, cycling over this many keys.
    Cycle(u64),
    /// Each of this many keys once, shared out over `clients` clients; then the client stops.
    Fill { keys: u64, clients: u64 },
}

async fn client_loop(
    client: u64,
    keys: Keys,
    url: &str,
    target: &Target,
    measure_from: Instant,
    deadline: Instant,
) -> ClientResult {
    let mut res = ClientResult::default();
    let (addr, host) = match parse_http(url) {
        Ok(a) => a,
        Err(e) => {
            res.errors += 1;
            res.first_error = Some(e);
            return res;
        }
    };
    let value = "v".repeat(100);
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let index = match keys {
            Keys::Cycle(keys) => (client.wrapping_mul(1_000_003).wrapping_add(n)) % keys,
            Keys::Fill { keys, clients } => match client + (n - 1) * clients {
                i if i < keys => i,
                _ => break,
            },
        };
        let key = format!("key-{index:012}");
        let body = target.body(&key, &value);
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match tokio::time::timeout_at(deadline.into(), connect(addr)).await {
                Ok(Ok(s)) => sender = Some(s),
                Ok(Err(e)) => {
                    note_error(&mut res, Instant::now() >= measure_from, e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => break,
            }
        }
        let s = sender.as_mut().expect("connected above");
        let req = hyper::Request::post(target.path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        let t0 = Instant::now();
        let exchange = async {
            s.ready().await.map_err(|e| e.to_string())?;
            let r = s.send_request(req).await.map_err(|e| e.to_string())?;
            let status = r.status();
            let body = r
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        // A write still unanswered at the deadline is neither counted nor waited for long.
        let outcome =
            tokio::time::timeout_at((deadline + Duration::from_secs(2)).into(), exchange).await;
        let t1 = Instant::now();
        let counted = t0 >= measure_from && t1 <= deadline;
        match outcome {
            Ok(Ok((status, body))) if target.ok(status, &body) => {
                if counted {
                    res.ok += 1;
                    res.lat_us
                        .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                note_error(&mut res, counted, format!("HTTP {status}: {text}"));
            }
            Ok(Err(e)) => {
                sender = None;
                note_error(&mut res, counted, e);
            }
            Err(_) => break,
        }
    }
    res
}

fn note_error(res: &mut ClientResult, counted: bool, e: String) {
    if counted {
        res.errors += 1;
        res.first_error.get_or_insert(e);
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `http://host:port` to a socket address and the Host header.
fn parse_http(url: &str) -> Result<(SocketAddr, String), String> {
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?
        .trim_end_matches('/');
    let addr = host
        .parse::<SocketAddr>()
        .map_err(|e| format!("not an IP:port URL {url}: {e}"))?;
    Ok((addr, host.to_string()))
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16
            | (*ch.get(1).unwrap_or(&0) as u32) << 8
            | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The clusters
// ---------------------------------------------------------------------------------------------

struct Ours {
    cluster: Cluster,
    /// Node URLs and process ids, master first.
    urls: Vec<String>,
    pids: Vec<u32>,
    master: String,
}

impl Ours {
    /// Three nodes on free ports; the first bootstraps and adds the other two.
    async fn start(bin: &Path, dir: &Path) -> Result<Ours, String> {
        let (bin, dir) = (bin.to_path_buf(), dir.to_path_buf());
        let cluster = tokio::task::spawn_blocking(move || {
            let dir = TempDir::existing(&dir)?;
            Cluster::launch(&bin, dir, 3, &[CLUSTER], &[], None)
        })
        .await
        .map_err(|e| format!("starting our cluster: {e}"))??;
        let master = cluster.master(CLUSTER).ok_or("our cluster has no master")?;
        // Master first: CPU and RSS columns read master / follower / follower.
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by_key(|i| *i != master);
        let urls = order
            .iter()
            .map(|&i| cluster.nodes[i].url.clone())
            .collect();
        let pids = order
            .iter()
            .map(|&i| cluster.nodes[i].pid().unwrap_or(0))
            .collect();
        Ok(Ours {
            master: cluster.nodes[master].url.clone(),
            cluster,
            urls,
            pids,
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.pids.clone()
    }

    fn urls_for(&self, c: usize, spread: bool) -> Vec<String> {
        (0..c)
            .map(|i| {
                if spread {
                    self.urls[i % self.urls.len()].clone()
                } else {
                    self.master.clone()
                }
            })
            .collect()
    }
}

impl Drop for Ours {
    /// SIGTERM first: a node under a profiler writes its profile.
    fn drop(&mut self) {
        self.cluster.nodes.iter_mut().for_each(|n: &mut Node| {
            n.terminate();
        });
    }
}

struct Etcd {
    _children: Children,
    pids: Vec<u32>,
    leader: String,
}

impl Etcd {
    async fn start(bin: &Path, dir: &Path) -> Result<Etcd, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect::<Result<_, _>>()?;
        let client = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
        let initial = (0..3)
            .map(|i| format!("e{i}={}", peer(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Children(Vec::new());
        for i in 0..3 {
            let child = Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &client(i),
                    "--advertise-client-urls",
                    &client(i),
                ])
                .args([
                    "--listen-peer-urls",
                    &peer(i),
                    "--initial-advertise-peer-urls",
                    &peer(i),
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", "clusterconsensus-bench"])
                .stdout(Stdio::null())
                .stderr(file(&dir.join(format!("e{i}.log")))?)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("start {}: {e}", bin.display()))?;
            children.0.push(child);
        }
        let http = HttpClient::new(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not form within 30 s (logs in {})",
                    dir.display()
                ));
            }
            for c in &mut children.0 {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!(
                        "an etcd member exited ({st}); logs in {}",
                        dir.display()
                    ));
                }
            }
            for i in 0..3 {
                let v =
                    post_json(&http, &format!("{}/v3/maintenance/status", client(i)), "{}").await;
                let Some(v) = v else { continue };
                let me = v["header"]["member_id"].as_str().map(str::to_string);
                let leader = v["leader"].as_str().map(str::to_string);
                if me.is_some() && me == leader {
                    // The gateway works end to end once a put goes through.
                    let put = format!(
                        r#"{{"key":"{}","value":"{}"}}"#,
                        base64(b"warm"),
                        base64(b"up")
                    );
                    if post_json(&http, &format!("{}/v3/kv/put", client(i)), &put)
                        .await
                        .is_some()
                    {
                        let mut pids: Vec<u32> = children.0.iter().map(|c| c.id()).collect();
                        pids.swap(0, i); // leader first, like ours
                        return Ok(Etcd {
                            _children: children,
                            pids,
                            leader: client(i),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.pids.clone()
    }
}

async fn get_json(http: &HttpClient, url: &str) -> Option<Value> {
    match http.get(url).await {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

async fn post_json(http: &HttpClient, url: &str, body: &str) -> Option<Value> {
    match http.post(url, body.as_bytes().to_vec()).await {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

fn file(p: &Path) -> Result<File, String> {
    File::create(p).map_err(|e| format!("create {}: {e}", p.display()))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn which(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn command_line(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// utime + stime of a process, in seconds (clock ticks of 1/100 s, as on every Linux we run).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

fn status_kib(pid: u32, field: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0.0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

/// Resets VmHWM to the current RSS, so the peak covers only what follows.
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    format!("{cores} cores ({model}), {os}")
}

// ---------------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------------

async fn run_soak(
    args: &Args,
    bin: &Path,
    dir: &Path,
    soak: Duration,
    machine: &str,
) -> Result<(), String> {
    let ours = Ours::start(bin, &dir.join("soak")).await?;
    let pids = ours.pids();
    let c = args.soak_concurrency;
    let target = Target::ours();
    let urls = ours.urls_for(c, false);
    // Write every key once first, so that the applied state is at its full size before the
    // first sample: what grows after that is not the state.
    let fill_start = Instant::now();
    let mut fill = Vec::new();
    for (i, url) in urls.iter().cloned().enumerate() {
        let (target, clients) = (target.clone(), urls.len() as u64);
        let keys = Keys::Fill {
            keys: args.keys,
            clients,
        };
        let deadline = fill_start + Duration::from_secs(600);
        fill.push(tokio::spawn(async move {
            client_loop(i as u64, keys, &url, &target, fill_start, deadline).await
        }));
    }
    let (mut filled, mut fill_errors) = (0, 0);
    for h in fill {
        if let Ok(r) = h.await {
            filled += r.ok;
            fill_errors += r.errors;
        }
    }
    println!(
        "prefill: {filled} of {} keys written in {:.1} s, {fill_errors} errors",
        args.keys,
        fill_start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let deadline = start + soak;
    let mut handles = Vec::new();
    for (i, url) in urls.into_iter().enumerate() {
        let target = target.clone();
        let keys = Keys::Cycle(args.keys);
        handles.push(tokio::spawn(async move {
            client_loop(i as u64, keys, &url, &target, start, deadline).await
        }));
    }
    let master_http = HttpClient::new(Duration::from_secs(2));
    let mut samples = Vec::new();
    println!("|   t s |   commit | RSS MiB per node (master first) |");
    println!("|------:|---------:|---------------------------------|");
    loop {
        let t = start.elapsed().as_secs_f64();
        let commit = get_json(
            &master_http,
            &clusterconsensus::wire::url(&ours.master, CLUSTER, "status"),
        )
        .await
        .and_then(|v| v["commit"].as_u64())
        .unwrap_or(0);
        let rss: Vec<f64> = pids.iter().map(|&p| rss_mib(p)).collect();
        let shown: Vec<String> = rss.iter().map(|r| format!("{r:.1}")).collect();
        println!("| {t:>5.0} | {commit:>8} | {:<31} |", shown.join(" / "));
        samples.push(json!({"t_s": t, "commit": commit, "rss_mib": rss}));
        if Instant::now() >= deadline {
            break;
        }
        let next = (Instant::now() + args.sample).min(deadline);
        tokio::time::sleep_until(next.into()).await;
    }
    let (mut ok, mut errors) = (0, 0);
    for h in handles {
        if let Ok(r) = h.await {
            ok += r.ok;
            errors += r.errors;
        }
    }
    println!(
        "soak: {ok} writes committed, {errors} errors, {:.0}/s, C = {c}; {machine}",
        ok as f64 / soak.as_secs_f64()
    );
    if let Some(out) = &args.out {
        let v = json!({"machine": machine, "c": c, "duration_s": soak.as_secs_f64(), "committed": ok,
                       "errors": errors, "keys": args.keys, "samples": samples});
        std::fs::write(out, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("write {}: {e}", out.display()))?;
    }
    drop(ours);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Watchers
// ---------------------------------------------------------------------------------------------

/// What one watcher received: the entries (`id: S` lines) in order, each checked to be the one
/// after the last.
#[derive(Debug)]
struct Tally {
    /// The seq due next.
    next: AtomicU64,
    count: AtomicU64,
    /// Entries that were not the one due (a gap or a duplicate).
    out_of_order: AtomicU64,
    /// The node answered the watch (200, the stream follows).
    open: AtomicBool,
    /// Streams after the first (each after one ended).
    reconnects: AtomicU64,
    /// Why a stream ended first, if one did.
    ended: std::sync::Mutex<Option<String>>,
}

/// Finds the `id: N` lines of a stream's bytes, however they are cut into frames. Only the start
/// of each line is kept between frames: the data lines are never copied.
struct IdScan {
    head: Vec<u8>,
    /// The current line is longer than `head` holds (it is not an id line).
    long: bool,
    /// An `event: error` came.
    error: bool,
}

impl IdScan {
    const HEAD: usize = 32;

    fn push(&mut self, mut chunk: &[u8], tally: &Tally) {
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            self.take(&chunk[..i]);
            if !self.long {
                self.error |= self.head == b"event: error";
                if let Some(seq) = self
                    .head
                    .strip_prefix(b"id: ")
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let due = tally.next.load(Ordering::Relaxed);
                    if seq != due {
                        tally.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.count.fetch_add(1, Ordering::Relaxed);
                    tally.next.store(seq + 1, Ordering::Relaxed);
                }
            }
            self.head.clear();
            self.long = false;
            chunk = &chunk[i + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, part: &[u8]) {
        let room = Self::HEAD - self.head.len();
        if part.len() > room {
            self.long = true;
        }
        self.head.extend_from_slice(&part[..part.len().min(room)]);
    }
}

/// One watcher: `GET watch?from=NEXT` on its own connection, read until it is aborted. When a
/// stream ends (the node cut a watcher that fell behind, or installed a snapshot) it resumes on
/// the next node, as a client does, from the entry after the last it received.
async fn watcher(nodes: Vec<(SocketAddr, String)>, first: usize, tally: Arc<Tally>) {
    let mut at = first;
    loop {
        let (addr, host) = nodes[at % nodes.len()].clone();
        let why = watch_once(addr, &host, &tally).await;
        {
            let mut ended = tally.ended.lock().unwrap_or_else(|e| e.into_inner());
            ended.get_or_insert(why);
        }
        tally.reconnects.fetch_add(1, Ordering::Relaxed);
        at += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How much lower the watchers' thread runs than the writers and the nodes (a nice value): as
/// the nodes' stream threads, 10 unless `CLUSTERCONSENSUS_WATCH_NICE` (which the nodes the bench
/// starts inherit) says otherwise.
#[cfg(target_os = "linux")]
fn watchers_nice() -> i32 {
    std::env::var("CLUSTERCONSENSUS_WATCH_NICE")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(10, |n| n.clamp(0, 19))
}

thread_local! {
    /// The watchers' one read buffer: they all run on one current-thread runtime and none
    /// holds it across an await, so a large buffer (few reads per wake-up) costs 1 MiB in all.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
}

/// The body of a `Transfer-Encoding: chunked` response, from bytes however they are cut.
#[derive(Default)]
struct Chunked {
    stage: ChunkStage,
    size: usize,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum ChunkStage {
    /// The chunk's size, in hex.
    #[default]
    Size,
    /// The rest of the size line (extensions), up to its LF.
    Line,
    /// Data bytes still due in this chunk.
    Data(usize),
    /// The CRLF after a chunk's data (bytes still due).
    Crlf(u8),
    /// The last chunk (size 0) came.
    Done,
}

impl Chunked {
    /// Hands the data in `b` to `out`; true once the last chunk came.
    fn push(&mut self, mut b: &[u8], mut out: impl FnMut(&[u8])) -> bool {
        while !b.is_empty() {
            match self.stage {
                ChunkStage::Size => {
                    let c = b[0];
                    b = &b[1..];
                    match (c as char).to_digit(16) {
                        Some(d) => self.size = self.size * 16 + d as usize,
                        None if c == b'\n' => self.end_size(),
                        None => self.stage = ChunkStage::Line,
                    }
                }
                ChunkStage::Line => match memchr::memchr(b'\n', b) {
                    Some(i) => {
                        b = &b[i + 1..];
                        self.end_size();
                    }
                    None => b = &[],
                },
                ChunkStage::Data(n) => {
                    let k = n.min(b.len());
                    out(&b[..k]);
                    b = &b[k..];
                    self.stage = if k == n {
                        ChunkStage::Crlf(2)
                    } else {
                        ChunkStage::Data(n - k)
                    };
                }
                ChunkStage::Crlf(n) => {
                    b = &b[1..];
                    self.stage = if n == 1 {
                        ChunkStage::Size
                    } else {
                        ChunkStage::Crlf(n - 1)
                    };
                }
                ChunkStage::Done => return true,
            }
        }
        self.stage == ChunkStage::Done
    }

    fn end_size(&mut self) {
        self.stage = match self.size {
            0 => ChunkStage::Done,
            n => ChunkStage::Data(n),
        };
        self.size = 0;
    }
}

/// One stream, read until it ends: why it did. Raw HTTP/1.1 on a socket rather than hyper's
/// client, and one large read per wake-up: the watchers share the machine with the nodes and
/// the writers, and in a real deployment they would run elsewhere, so the bench keeps their
/// own cost low (see README, Performance, Watchers).
async fn watch_once(addr: SocketAddr, host: &str, tally: &Tally) -> String {
    let s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return format!("connect {addr}: {e}"),
    };
    let next = tally.next.load(Ordering::Relaxed);
    let path = clusterconsensus::wire::path(CLUSTER, &format!("watch?from={next}"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\naccept: text/event-stream\r\n\r\n");
    let mut req = req.as_bytes();
    while !req.is_empty() {
        let sent = match s.writable().await {
            Ok(()) => s.try_write(req),
            Err(e) => Err(e),
        };
        match sent {
            Ok(n) => req = &req[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return format!("send: {e}"),
        }
    }
    let mut head: Vec<u8> = Vec::new();
    let mut body: Option<Chunked> = None;
    let mut scan = IdScan {
        head: Vec::with_capacity(IdScan::HEAD),
        long: false,
        error: false,
    };
    loop {
        if let Err(e) = s.readable().await {
            return e.to_string();
        }
        let step = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let n = match s.try_read(&mut buf) {
                Ok(0) => return Err("the node closed the connection".to_string()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.to_string()),
            };
            let mut data = &buf[..n];
            if body.is_none() {
                head.extend_from_slice(data);
                let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") else {
                    return Ok(false);
                };
                let status = head.get(9..12).unwrap_or_default();
                if status != b"200" {
                    return Err(format!("HTTP {}", String::from_utf8_lossy(status)));
                }
                tally.open.store(true, Ordering::Relaxed);
                body = Some(Chunked::default());
                data = &data[data.len() - (head.len() - end - 4)..];
            }
            let chunks = body.as_mut().expect("the head was read");
            Ok(chunks.push(data, |d| scan.push(d, tally)))
        });
        match step {
            Ok(false) => {}
            Ok(true) if scan.error => return "the node sent an error event".into(),
            Ok(true) => return "the node ended the stream".into(),
            Err(e) => return e,
        }
    }
}

/// What the watchers of one phase received.
#[derive(Default)]
struct WatchPhase {
    /// Each had to receive seqs `from ..= last`.
    from: u64,
    last: u64,
    complete: usize,
    delivered: u64,
    out_of_order: u64,
    reconnects: u64,
    drained_s: f64,
    connect_s: f64,
    first_end: Option<String>,
}

/// Connects `n` watchers to `nodes[watched]` (all answered before the writers start), measures
/// the writers meanwhile, waits until every watcher has the last entry the node applied, and
/// tallies what they received.
async fn watch_phase(
    args: &Args,
    ours: &Ours,
    n: usize,
    watched: usize,
    (target, urls, c, pids): (&Target, &[String], usize, &[u32]),
) -> Result<(Row, f64, WatchPhase), String> {
    let node = ours.urls[watched].clone();
    let status = |url: String| async move {
        let http = HttpClient::new(Duration::from_secs(2));
        get_json(&http, &clusterconsensus::wire::url(&url, CLUSTER, "status"))
            .await
            .and_then(|v| v["commit"].as_u64())
            .unwrap_or(0)
    };
    let from = status(node.clone()).await + 1;
    // Each watcher starts on `node` and moves on to the next one if its stream ends.
    let nodes: Vec<(SocketAddr, String)> = ours
        .urls
        .iter()
        .map(|u| parse_http(u))
        .collect::<Result<_, _>>()?;
    let tallies: Vec<Arc<Tally>> = (0..n)
        .map(|_| {
            Arc::new(Tally {
                next: AtomicU64::new(from),
                count: AtomicU64::new(0),
                out_of_order: AtomicU64::new(0),
                open: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
                ended: std::sync::Mutex::new(None),
            })
        })
        .collect();
    // The watchers run on their own thread and current-thread runtime: their reading must not
    // queue up in front of the writers' answers on the writers' runtime. That thread runs at a
    // lower priority (as the node's stream threads do, watch::STREAM_NICE): the watchers stand
    // for clients on other machines, whose reading would not take the cluster's cores.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let spawner = watch_rt.handle().clone();
    let watch_thread = std::thread::spawn(move || {
        #[cfg(target_os = "linux")]
        {
            // `None`: this thread (Linux keeps a nice value per thread).
            use rustix::process::{getpriority_process, setpriority_process};
            let now = getpriority_process(None).unwrap_or(0);
            let _ = setpriority_process(None, (now + watchers_nice()).min(19));
        }
        let _ = watch_rt.block_on(stopped);
    });
    let connect_start = Instant::now();
    let mut handles = Vec::new();
    for t in &tallies {
        let (t, nodes) = (t.clone(), nodes.clone());
        handles.push(spawner.spawn(watcher(nodes, watched, t)));
    }
    let until = Instant::now() + Duration::from_secs(60);
    while tallies.iter().any(|t| !t.open.load(Ordering::Relaxed)) {
        if Instant::now() > until {
            return Err("the watchers did not all connect within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "{n} watchers on {node} ({}) from seq {from}, connected in {connect_s:.1} s",
        args.watch_node,
    );
    let me = std::process::id();
    let cpu0 = cpu_seconds(me);
    let row = measure(args, "watchers", target, urls, c, pids).await;
    let cpu = cpu_seconds(me) - cpu0;
    eprintln!("{}", row_line(&row));
    // Every watcher must get to the last entry the node applied.
    let last = status(node.clone()).await;
    let drain_start = Instant::now();
    let drain_until = drain_start + Duration::from_secs(120);
    while Instant::now() < drain_until
        && tallies
            .iter()
            .any(|t| t.next.load(Ordering::Relaxed) <= last)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_s = drain_start.elapsed().as_secs_f64();
    for h in &handles {
        h.abort();
    }
    let _ = stop.send(());
    let _ = watch_thread.join();
    let sum = |f: &dyn Fn(&Tally) -> u64| tallies.iter().map(|t| f(t)).sum::<u64>();
    let phase = WatchPhase {
        from,
        last,
        // Complete: every entry from `from` to `last` once, in order, across its reconnects
        // (each seq was the one after the last; entries after `last` may follow).
        complete: tallies
            .iter()
            .filter(|t| {
                t.out_of_order.load(Ordering::Relaxed) == 0 && t.next.load(Ordering::Relaxed) > last
            })
            .count(),
        delivered: sum(&|t| t.count.load(Ordering::Relaxed)),
        out_of_order: sum(&|t| t.out_of_order.load(Ordering::Relaxed)),
        reconnects: sum(&|t| t.reconnects.load(Ordering::Relaxed)),
        drained_s,
        connect_s,
        first_end: tallies
            .iter()
            .find_map(|t| t.ended.lock().ok().and_then(|e| e.clone())),
    };
    Ok((row, cpu, phase))
}

async fn run_watch(
    args: &Args,
    bin: &Path,
    dir: &Path,
    n: usize,
    machine: &str,
) -> Result<(), String> {
    let ours = Ours::start(bin, &dir.join("watch")).await?;
    let pids = ours.pids();
    let c = args.watch_concurrency;
    let target = Target::ours();
    let urls = ours.urls_for(c, false);
    // The urls and pids are master first.
    let watched = if args.watch_node == "master" { 0 } else { 1 };
    let node = ours.urls[watched].clone();
    let me = std::process::id();
    let mut rows = Vec::new();
    let mut bench_cpu = Vec::new();
    let mut phases = Vec::new();
    // Without watchers, then (with them, without them) --watch-rounds times: a machine whose
    // load drifts shows in the runs without, and each run with them sits between two without.
    for round in 0..=args.watch_rounds {
        if round > 0 {
            let (row, cpu, phase) =
                watch_phase(args, &ours, n, watched, (&target, &urls, c, &pids)).await?;
            bench_cpu.push(cpu);
            rows.push(row);
            phases.push(phase);
        }
        let cpu0 = cpu_seconds(me);
        let row = measure(args, "no watchers", &target, &urls, c, &pids).await;
        bench_cpu.push(cpu_seconds(me) - cpu0);
        eprintln!("{}", row_line(&row));
        rows.push(row);
    }

    let mean = |rows: Vec<&Row>| rows.iter().map(|r| r.per_sec).sum::<f64>() / rows.len() as f64;
    let base = mean(rows.iter().filter(|r| r.system == "no watchers").collect());
    let with = mean(rows.iter().filter(|r| r.system == "watchers").collect());
    let ratio = with / base.max(1e-9);
    let mut table = format!(
        "{} s per run after {} ms warm-up; 3 nodes on 127.0.0.1, fsync on; C = {c}; {n} watchers on the {} ({node}); {machine}\n\n",
        args.duration.as_secs_f64(),
        args.warmup.as_millis(),
        args.watch_node,
    );
    table.push_str(&header());
    for r in &rows {
        table.push_str(&row_line(r));
        table.push('\n');
    }
    let cpu: Vec<String> = bench_cpu.iter().map(|c| format!("{c:.2}")).collect();
    table.push_str(&format!(
        "\nwrites/s with the watchers: {with:.0} (mean of {}), {ratio:.2}x the mean without them ({base:.0})\n",
        phases.len(),
    ));
    for p in &phases {
        table.push_str(&format!(
            "watchers complete: {} of {n} (each seqs {}..={}: {} entries; {} delivered in all, \
             {} out of order, {} reconnects; connected in {:.1} s, drained {:.1} s after the writers stopped){}\n",
            p.complete,
            p.from,
            p.last,
            p.last + 1 - p.from,
            p.delivered,
            p.out_of_order,
            p.reconnects,
            p.connect_s,
            p.drained_s,
            p.first_end
                .as_ref()
                .map(|e| format!("; first stream end: {e}"))
                .unwrap_or_default(),
        ));
    }
    table.push_str(&format!(
        "CPU s of the bench process (writers and watchers) per run: {}\n",
        cpu.join(" / "),
    ));
    println!("{table}");
    if let Some(out) = &args.out {
        let v = json!({
            "machine": machine, "c": c, "watchers": n, "watch_node": args.watch_node,
            "duration_s": args.duration.as_secs_f64(),
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "ratio": ratio,
            "complete": phases.iter().map(|p| p.complete).min().unwrap_or(0),
            "phases": phases.iter().map(|p| json!({
                "from": p.from, "last": p.last, "complete": p.complete,
                "delivered": p.delivered, "out_of_order": p.out_of_order,
                "reconnects": p.reconnects, "drained_s": p.drained_s,
            })).collect::<Vec<_>>(),
            "bench_cpu_s": bench_cpu, "table": table,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("write {}: {e}", out.display()))?;
    }
    drop(ours);
    Ok(())
}
