//! A Jepsen-style fault campaign over real `clusterconsensus node` processes on loopback.
//!
//! - Every node sits behind its own fault-injecting [`proxy`] and advertises the proxy's address,
//!   so every call between two nodes crosses a proxy that knows the calling node and can drop,
//!   delay or cut its traffic per direction. Node `i` has its own loopback address
//!   ([`proxy::node_ip`]) and calls its peers from it (`--source-addr`), so the proxy knows the
//!   caller from the connection's source address; a connection it cannot attribute fails the
//!   run.
//! - A nemesis, driven by a seed, injects one fault at a time for 1-5 s: symmetric partitions,
//!   a partition that isolates the master, one-way partitions (the master can send but not
//!   receive, or receive but not send), random one-way links, delays with jitter, a lossy
//!   network, SIGSTOP/SIGCONT of a node, SIGKILL and restart from its data dir, and removing
//!   or re-adding a member.
//! - Meanwhile clients write, compare-and-set (both with a client id and request number,
//!   retried on timeouts and retryable errors) and make consistent reads, recording every
//!   invocation and completion; and one watcher per node follows the change stream
//!   (`watch`), starting on its node and moving to the others when it fails.
//! - At the end the faults heal, removed members are added back, and the [`checker`] verifies
//!   linearizability per key, that no acknowledged write is missing, that no retried change was
//!   applied twice, that every node converged to the same state, and that every watcher saw
//!   every committed entry exactly once, in commit order, across its reconnects (the entries
//!   replayed give the converged state).

pub mod checker;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use checker::{Event, History, Watched};
use proxy::{node_ip, Faults, Net, Proxy};

pub const CLUSTER: &str = "c1";

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// How long faults are injected (the heal and the checks come after).
    pub duration: Duration,
    pub nodes: usize,
    pub clients: usize,
    /// Run the nodes with `--token-file` and have every caller send the token; the nodes get
    /// a `--peer-token-file` of their own too (the token with `-peers` appended), so the
    /// calls between them need a token the clients do not have.
    pub token: Option<String>,
    /// Where the nodes live; a fresh temp dir by default.
    pub dir: Option<PathBuf>,
    /// Print each fault as it is injected.
    pub verbose: bool,
}

impl Config {
    pub fn new(seed: u64, duration: Duration) -> Config {
        Config {
            seed,
            duration,
            nodes: 5,
            clients: 5,
            token: None,
            dir: None,
            verbose: false,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub elapsed: Duration,
    pub counts: checker::Counts,
    pub faults: BTreeMap<&'static str, u64>,
    /// Keys whose history was checked.
    pub keys: usize,
    pub problems: Vec<String>,
    pub final_commit: u64,
    /// From the final heal until a serving master committed a write (None: not within the
    /// budget).
    pub heal_to_master: Option<Duration>,
    /// What the proxies did (connections between nodes, unattributed ones, drops, cuts).
    pub proxy: proxy::Counts,
    /// Faults the nemesis chose but could not apply (a membership change the cluster refused).
    pub not_applied: u64,
    /// How long a master took to serve again after each fault but the last, within the calm
    /// that followed it.
    pub recovery: Recovery,
    /// What the watchers did.
    pub watch: WatchReport,
}

/// The watchers of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchReport {
    pub watchers: usize,
    /// The seqs each watcher had to see: `from..=last`.
    pub from: u64,
    pub last: u64,
    /// Connections after the first, all watchers together.
    pub reconnects: u64,
    /// Watchers that received entries from more than one node.
    pub moved: usize,
}

/// Recoveries from faults: after each heal, the time until a serving master committed a write,
/// measured during the calm before the next fault (so it is only known up to the calm's end).
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovery {
    /// Faults whose recovery was measured.
    pub faults: u64,
    /// Of those, the ones still without a serving master when the next fault came.
    pub not_within_calm: u64,
    /// The longest recovery that was seen.
    pub max: Duration,
}

impl Recovery {
    fn add(&mut self, took: Option<Duration>) {
        self.faults += 1;
        match took {
            Some(d) => self.max = self.max.max(d),
            None => self.not_within_calm += 1,
        }
    }
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }

    /// The one summary line.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let verdict = if self.ok() {
            "PASS (linearizable, no acknowledged write lost, no double apply, converged, \
             every watcher saw every entry once in order)"
                .to_string()
        } else {
            format!("FAIL ({})", self.problems.len())
        };
        let heal = match self.heal_to_master {
            Some(d) => format!("{} ms", d.as_millis()),
            None => "none".to_string(),
        };
        let p = &self.proxy;
        let w = &self.watch;
        format!(
            "campaign: seed {}, {:.0} s, {} operations ({} writes, {} cas of which {} applied, {} reads), \
             {} acknowledged, {} failed, \
             {} indeterminate, {} faults injected ({}), {} not applied, {} keys checked, final commit {}, \
             heal->master: {heal}, recovery after faults: max {} ms, {} of {} not within the calm, \
             {} connections between nodes ({} chunks dropped, {} cut), \
             unattributed connections: {}, {} watchers of seqs {}..={} ({} reconnects, {} moved to \
             other nodes), verdict: {verdict}",
            self.seed,
            self.elapsed.as_secs_f64(),
            c.operations,
            c.writes,
            c.cas,
            c.cas_applied,
            c.reads,
            c.acknowledged,
            c.failed,
            c.indeterminate,
            self.faults_total(),
            faults.join(", "),
            self.not_applied,
            self.keys,
            self.final_commit,
            self.recovery.max.as_millis(),
            self.recovery.not_within_calm,
            self.recovery.faults,
            p.from_nodes,
            p.dropped,
            p.cuts,
            p.unattributed,
            w.watchers,
            w.from,
            w.last,
            w.reconnects,
            w.moved,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP answer: status and body.
pub type Answer = (u16, Vec<u8>);

/// One HTTP/1.1 exchange on a fresh connection, bounded by `timeout` in all, with an optional
/// bearer token.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    crate::http_request(method, url, token, body, timeout).map(|a| (a.status, a.body))
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------
// Node processes
// ---------------------------------------------------------------------------------------------

/// The `clusterconsensus` binary: `$CLUSTERCONSENSUS_BIN`, or next to this executable (a
/// `campaign` binary) or one directory up (a test in `deps/`).
pub fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CLUSTERCONSENSUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("own path");
    let name = format!("clusterconsensus{}", std::env::consts::EXE_SUFFIX);
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(&name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the node binary {name} is not next to {}: build it with `cargo build --workspace --bins`, \
         or set CLUSTERCONSENSUS_BIN",
        exe.display()
    );
}

/// One node process behind its proxy. Its identity is the proxy's address; its own listening
/// port changes on every restart (port 0), and the proxy follows.
#[derive(Debug)]
pub struct NodeProc {
    pub index: usize,
    child: Option<Child>,
    pub proxy: Proxy,
    /// The node's own address (for clients and the nemesis, which bypass the proxy).
    pub direct: Arc<Mutex<String>>,
    dir: PathBuf,
    args: Vec<String>,
    pub paused: bool,
}

impl NodeProc {
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    pub fn direct(&self) -> String {
        self.direct.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process with `extra` arguments (only the first start bootstraps). Its logs
    /// go straight to `node.log` (no pipe that could fill up and stall it); its listening
    /// address is read from the "serving" line there. It listens on its own loopback address
    /// and calls its peers from it, which is how the proxies know it.
    pub fn spawn(&mut self, extra: &[String]) {
        let path = self.dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open node log");
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let ip = node_ip(self.index);
        let mut cmd = Command::new(node_binary());
        cmd.arg("node")
            .arg("--listen")
            .arg(format!("{ip}:0"))
            .arg("--source-addr")
            .arg(ip.to_string())
            .arg("--advertise")
            .arg(self.url())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--cluster")
            .arg(CLUSTER)
            .args(&self.args)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn clusterconsensus node");
        let deadline = Instant::now() + Duration::from_secs(20);
        let listen = loop {
            // Only what this start wrote: the log of a long run is large.
            let fresh = read_from(&path, from);
            if let Some(l) = fresh.lines().find_map(|l| l.split(" listen=").nth(1)) {
                break l.split_whitespace().next().unwrap_or("").to_string();
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {} did not start; log:\n{}",
                    self.index,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr: SocketAddr = listen.parse().expect("listen address");
        *self.direct.lock().unwrap() = format!("http://{addr}");
        *self.proxy.target.lock().unwrap() = Some(addr);
        self.child = Some(child);
        self.paused = false;
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

/// The text of `path` from byte `from` on (empty if it cannot be read).
fn read_from(path: &std::path::Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
    }
}

/// The processes, their proxies and the network between them.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub net: Arc<Net>,
    pub token: Option<String>,
    pub dir: PathBuf,
    _rt: tokio::runtime::Runtime,
    remove_dir: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        if self.remove_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// Starts `n` nodes behind proxies and forms one cluster with `--bootstrap --peer`.
    pub fn start(
        n: usize,
        dir: Option<PathBuf>,
        token: Option<String>,
        args: &[String],
    ) -> Cluster {
        assert!(
            (1..=proxy::MAX_NODES).contains(&n),
            "a campaign has 1 to {} nodes, not {n}",
            proxy::MAX_NODES
        );
        let remove_dir = dir.is_none();
        let dir = dir.unwrap_or_else(|| {
            static N: AtomicU64 = AtomicU64::new(0);
            std::env::temp_dir().join(format!(
                "cc-campaign-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ))
        });
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("campaign dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let net = Net::new(n);
        let mut args = args.to_vec();
        if let Some(t) = &token {
            let f = dir.join("token");
            std::fs::write(&f, format!("{t}\n")).expect("token file");
            args.push("--token-file".into());
            args.push(f.display().to_string());
            let f = dir.join("peer-token");
            std::fs::write(&f, format!("{t}-peers\n")).expect("peer token file");
            args.push("--peer-token-file".into());
            args.push(f.display().to_string());
        }
        let mut nodes: Vec<NodeProc> = (0..n)
            .map(|i| {
                let d = dir.join(format!("node{i}"));
                std::fs::create_dir_all(&d).unwrap();
                NodeProc {
                    index: i,
                    child: None,
                    proxy: Proxy::start(&rt, net.clone(), i),
                    direct: Arc::default(),
                    dir: d,
                    args: args.clone(),
                    paused: false,
                }
            })
            .collect();
        for node in nodes.iter_mut().skip(1) {
            node.spawn(&[]);
        }
        let mut first = vec!["--bootstrap".to_string()];
        for p in nodes.iter().skip(1) {
            first.push("--peer".into());
            first.push(p.url());
        }
        nodes[0].spawn(&first);
        let c = Cluster {
            nodes,
            net,
            token,
            dir,
            _rt: rt,
            remove_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let formed = c.master().is_some()
                && c.nodes.iter().all(|nd| {
                    c.status(nd.index)
                        .is_some_and(|s| s["members"].as_array().map(Vec::len) == Some(n))
                });
            if formed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form; log of node0:\n{}",
                c.nodes[0].log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let url = format!("{}/_clusterc/{CLUSTER}/status", self.nodes[i].direct());
        let (s, b) = request(
            "GET",
            &url,
            self.token.as_deref(),
            b"",
            Duration::from_millis(500),
        )
        .ok()?;
        (s == 200).then(|| json_of(&b))
    }

    /// A node serving as master (asking every running, unpaused node).
    pub fn master(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_up() && !n.paused)
            .map(|n| n.index)
            .find(|&i| self.status(i).is_some_and(|s| s["serving"] == json!(true)))
    }

    pub fn index_of(&self, url: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.url() == url)
    }

    /// The member list as the serving master sees it.
    pub fn members(&self) -> Option<BTreeSet<usize>> {
        let m = self.master()?;
        let s = self.status(m)?;
        Some(
            s["members"]
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().and_then(|a| self.index_of(a)))
                .collect(),
        )
    }

    /// How long after `since` a node that says it is serving master committed a write (a
    /// paused or partitioned old master may still say so; the write proves it), or None if
    /// none did by `deadline`.
    pub fn serving_master_since(&self, since: Instant, deadline: Instant) -> Option<Duration> {
        let body = json!({"chg": [json!({"op":"set","key":"heal/probe","value":"1"}).to_string()]})
            .to_string();
        while Instant::now() < deadline {
            if let Some(m) = self.master() {
                let url = format!("{}/_clusterc/{CLUSTER}/submit", self.nodes[m].direct());
                let left = deadline.saturating_duration_since(Instant::now());
                let committed = request(
                    "POST",
                    &url,
                    self.token.as_deref(),
                    body.as_bytes(),
                    left.clamp(Duration::from_millis(100), Duration::from_secs(2)),
                )
                .is_ok_and(|(s, b)| s == 200 && json_of(&b)["fail"] == json!(false));
                if committed {
                    return Some(since.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `members/add` or `members/remove` through node `via`; Ok once committed.
    pub fn change_member(&self, via: usize, what: &str, target: usize) -> Result<(), String> {
        let url = format!(
            "{}/_clusterc/{CLUSTER}/members/{what}",
            self.nodes[via].direct()
        );
        let body = json!({"addr": self.nodes[target].url()}).to_string();
        let (s, b) = request(
            "POST",
            &url,
            self.token.as_deref(),
            body.as_bytes(),
            Duration::from_secs(5),
        )?;
        let v = json_of(&b);
        if s == 200 && v["fail"] == json!(false) {
            Ok(())
        } else {
            Err(format!("HTTP {s}: {v}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// splitmix64: the nemesis' and the clients' choices, from the seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` if empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    pub fn chance(&mut self, per_cent: u64) -> bool {
        self.next_u64() % 100 < per_cent
    }

    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next_u64() % v.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// How long a key stays in use: ops on one key span a short window, so each key's history is
/// small enough for the linearizability search.
const EPOCH_MS: u128 = 2_000;
const KEYS_PER_EPOCH: u64 = 6;
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
const READ_DEADLINE: Duration = Duration::from_secs(3);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

struct ClientCtx {
    urls: Vec<Arc<Mutex<String>>>,
    token: Option<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

fn kv_change(key: &str, value: &str, client: &str, req: u64) -> String {
    json!({"op": "set", "key": key, "value": value, "client": client, "req": req}).to_string()
}

fn retryable(code: &str) -> bool {
    matches!(code, "ERR_STATE" | "ERR_CALL" | "ERR_MAJORITY")
}

/// A compare-and-set change: set `key` to `value` if it is `expect` (`None`: absent).
fn kv_cas(key: &str, expect: Option<&str>, value: &str, client: &str, req: u64) -> String {
    json!({"op": "cas", "key": key, "expect": expect, "value": value, "client": client, "req": req})
        .to_string()
}

/// How a submit with retries ended.
enum Submitted {
    /// Committed: the answer (with `results`).
    Committed(Value),
    /// Refused for good: no effect.
    Refused,
    /// Unknown: it may have committed, now or later.
    Unknown,
}

/// Submits `body` until it commits, is refused for good, or the deadline passes; every retry
/// goes to the next node (`via`).
fn submit_with_retries(ctx: &ClientCtx, body: &str, via: &mut usize, rng: &mut Rng) -> Submitted {
    let deadline = Instant::now() + WRITE_DEADLINE;
    // Whether an earlier attempt may have reached the cluster.
    let mut uncertain = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Submitted::Unknown;
        }
        let base = ctx.urls[*via % ctx.urls.len()].lock().unwrap().clone();
        let url = format!("{base}/_clusterc/{CLUSTER}/submit");
        match request(
            "POST",
            &url,
            ctx.token.as_deref(),
            body.as_bytes(),
            ATTEMPT_TIMEOUT.min(left),
        ) {
            Ok((200, b)) => {
                let v = json_of(&b);
                if v["fail"] == json!(false) && v["err"].is_null() {
                    return Submitted::Committed(v);
                }
                let code = v["err"]["code"].as_str().unwrap_or("");
                if !retryable(code) && !uncertain {
                    return Submitted::Refused;
                }
                uncertain = true;
            }
            Err(e) if e.starts_with("connect") => {}
            _ => uncertain = true,
        }
        *via += 1;
        std::thread::sleep(Duration::from_millis(rng.range(20, 80)));
    }
}

fn run_client(ctx: Arc<ClientCtx>, c: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ ((c as u64 + 1) << 40));
    let name = format!("c{c}");
    let mut thread = (c as u64) << 32;
    let mut req = 0u64;
    let mut via = c % ctx.urls.len();
    // The last value this client saw for each key: what its compare-and-sets expect.
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    let base = |ctx: &ClientCtx, i: usize| ctx.urls[i % ctx.urls.len()].lock().unwrap().clone();
    while !ctx.stop.load(Ordering::Relaxed) {
        let epoch = ctx.started.elapsed().as_millis() / EPOCH_MS;
        let key = format!("e{epoch}k{}", rng.range(0, KEYS_PER_EPOCH));
        let roll = rng.range(0, 100);
        if roll < 65 {
            // A write (40%) or a compare-and-set (25%), in one batch with two plain sets that
            // the data checks read: `w/C/N` (no acknowledged batch lost) and `last/C` (no old
            // request applied again).
            req += 1;
            let value = format!("{name}-{req}");
            let cas = roll >= 40;
            let expect = match rng.chance(75) {
                true => known.get(&key).cloned().flatten(),
                false => None,
            };
            let first = match cas {
                true => kv_cas(&key, expect.as_deref(), &value, &name, req),
                false => kv_change(&key, &value, &name, req),
            };
            let body = json!({"chg": [
                first,
                kv_change(&format!("w/{name}/{req}"), &value, &format!("{name}.w"), req),
                kv_change(&format!("last/{name}"), &req.to_string(), &format!("{name}.l"), req),
            ]})
            .to_string();
            ctx.history.push(match cas {
                true => Event::Cas {
                    thread,
                    key: key.clone(),
                    expect,
                    value: value.clone(),
                    client: name.clone(),
                    req,
                },
                false => Event::Write {
                    thread,
                    key: key.clone(),
                    value: value.clone(),
                    client: name.clone(),
                    req,
                },
            });
            match submit_with_retries(&ctx, &body, &mut via, &mut rng) {
                Submitted::Committed(answer) if cas => {
                    let r = &answer["results"][0];
                    let (ok, current) = (r["ok"].as_bool(), r["value"].as_str());
                    match ok {
                        Some(ok) => {
                            let current = current.map(String::from);
                            known.insert(key, current.clone());
                            ctx.history.push(Event::CasOk {
                                thread,
                                ok,
                                current,
                            });
                        }
                        // Committed without the result it must carry: what it did is unknown,
                        // and the checker says so if it matters.
                        None => {
                            ctx.history.push(Event::Info { thread });
                            thread += 1;
                        }
                    }
                }
                Submitted::Committed(_) => {
                    known.insert(key, Some(value));
                    ctx.history.push(Event::WriteOk { thread });
                }
                Submitted::Refused => {
                    ctx.history.push(Event::Fail { thread });
                    thread += 1;
                }
                Submitted::Unknown => {
                    ctx.history.push(Event::Info { thread });
                    thread += 1;
                }
            }
        } else {
            ctx.history.push(Event::Read {
                thread,
                key: key.clone(),
            });
            let deadline = Instant::now() + READ_DEADLINE;
            let outcome = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break None;
                }
                let url = format!(
                    "{}/_clusterc/{CLUSTER}/kv/{key}?consistent=true",
                    base(&ctx, via)
                );
                match request(
                    "GET",
                    &url,
                    ctx.token.as_deref(),
                    b"",
                    ATTEMPT_TIMEOUT.min(left),
                ) {
                    Ok((200, b)) => {
                        let v = json_of(&b);
                        break Some(v["value"].as_str().map(str::to_string));
                    }
                    // A missing key; an unknown cluster would carry an error code instead.
                    Ok((404, b))
                        if json_of(&b).get("key").is_some() && json_of(&b)["value"].is_null() =>
                    {
                        break Some(None)
                    }
                    _ => {}
                }
                via += 1;
                std::thread::sleep(Duration::from_millis(rng.range(20, 80)));
            };
            match outcome {
                Some(value) => {
                    known.insert(key, value.clone());
                    ctx.history.push(Event::ReadOk { thread, value })
                }
                None => {
                    ctx.history.push(Event::Fail { thread });
                    thread += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 15)));
    }
}

// ---------------------------------------------------------------------------------------------
// Watchers
// ---------------------------------------------------------------------------------------------

/// One watcher: follows the change stream from `from`, through node `first` and then the
/// others (their direct addresses, which change when a node restarts: the watch is made again
/// with the new list, from where it was), recording every entry until `stop`.
fn run_watcher(
    first: usize,
    urls: Vec<Arc<Mutex<String>>>,
    token: Option<String>,
    from: u64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Watched>>,
) {
    use clusterconsensus_server::{HttpClient, Token, Watch, WatchEvent};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("watcher runtime");
    let client = HttpClient::secured(
        Duration::from_secs(2),
        token.as_deref().and_then(|t| Token::new(t).ok()).as_ref(),
        None,
    )
    .expect("watcher client");
    let n = urls.len();
    let nodes = || -> Vec<String> {
        (0..n)
            .map(|k| urls[(first + k) % n].lock().unwrap().clone())
            .collect()
    };
    rt.block_on(async {
        let mut list = nodes();
        let make = |list: &[String], next: u64| {
            Watch::new(client.clone(), CLUSTER, list.to_vec())
                .from(next)
                .idle_timeout(Duration::from_secs(3))
        };
        let mut watch = make(&list, from);
        // Counts of the watches made before this one.
        let (mut reconnects, mut resent) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                next = watch.next() => match next {
                    Ok(WatchEvent::Entry { seq, chg }) => {
                        let mut l = log.lock().unwrap();
                        l.entries.push((seq, Some(chg)));
                        // By index: a node's direct address changes when it restarts.
                        let at = list.iter().position(|u| u == watch.node()).unwrap_or(0);
                        l.nodes.insert(format!("node{}", (first + at) % n));
                    }
                    Ok(WatchEvent::Members { seq, .. }) => {
                        log.lock().unwrap().entries.push((seq, None));
                    }
                    Ok(WatchEvent::Progress { .. }) => {}
                    Err(e) => {
                        log.lock().unwrap().gaps.push(e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            {
                let mut l = log.lock().unwrap();
                l.reconnects = reconnects + u64::from(watch.reconnects());
                l.resent = resent + watch.resent();
            }
            let now = nodes();
            if now != list {
                // A node restarted on another port: the same watch, from where it is.
                reconnects += u64::from(watch.reconnects()) + 1;
                resent += watch.resent();
                let next = watch.next_seq().unwrap_or(from);
                list = now;
                watch = make(&list, next);
            }
        }
    });
}

/// Where each watcher is: the seq of the next entry it needs.
fn watcher_next(watched: &[Arc<Mutex<Watched>>], from: u64) -> Vec<u64> {
    watched
        .iter()
        .map(|w| w.lock().unwrap().entries.last().map_or(from, |e| e.0 + 1))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Nemesis
// ---------------------------------------------------------------------------------------------

/// Node flags of a campaign: quick elections so that a minute holds many faults.
pub fn node_args() -> Vec<String> {
    [
        "--heartbeat-ms",
        "50",
        "--election-min-ms",
        "500",
        "--election-max-ms",
        "900",
        "--request-timeout-ms",
        "500",
        "--snapshot-every",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn say(cfg: &Config, t0: Instant, what: &str) {
    if cfg.verbose {
        eprintln!("[{:>6.1} s] {what}", t0.elapsed().as_secs_f64());
    }
}

/// Sleeps `ms`, or less if `end` comes first.
fn hold(ms: u64, end: Instant) {
    hold_until((Instant::now() + Duration::from_millis(ms)).min(end));
}

fn hold_until(until: Instant) {
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// Runs one campaign and checks it.
pub fn run(cfg: &Config) -> Report {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(cfg.nodes, cfg.dir.clone(), cfg.token.clone(), &node_args());
    let n = cfg.nodes;
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    // One watcher per node, from the entry after everything committed so far (no key-value
    // change yet: the entries they see, replayed, make the whole state).
    let watch_from = (0..n)
        .filter_map(|i| cluster.status(i)?["commit"].as_u64())
        .max()
        .unwrap_or(0)
        + 1;
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watched: Vec<Arc<Mutex<Watched>>> = (0..n).map(|_| Arc::default()).collect();
    let watchers: Vec<_> = (0..n)
        .map(|i| {
            let urls = cluster.nodes.iter().map(|nd| nd.direct.clone()).collect();
            let (token, stop, log) = (cfg.token.clone(), watch_stop.clone(), watched[i].clone());
            std::thread::spawn(move || run_watcher(i, urls, token, watch_from, stop, log))
        })
        .collect();
    let ctx = Arc::new(ClientCtx {
        urls: cluster.nodes.iter().map(|nd| nd.direct.clone()).collect(),
        token: cfg.token.clone(),
        history: history.clone(),
        stop: stop.clone(),
        started: Instant::now(),
    });
    let clients: Vec<_> = (0..cfg.clients)
        .map(|c| {
            let ctx = ctx.clone();
            let seed = cfg.seed;
            std::thread::spawn(move || run_client(ctx, c, seed))
        })
        .collect();

    let mut rng = Rng::new(cfg.seed);
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let end = Instant::now() + cfg.duration;
    let mut members: BTreeSet<usize> = (0..n).collect();
    let mut problems = Vec::new();
    let mut not_applied = 0u64;
    // When the last fault healed, and how long a master took to serve again after each.
    let mut healed_at: Option<Instant> = None;
    let mut recovery = Recovery::default();
    while Instant::now() < end {
        // The calm between two faults; it also measures the recovery from the last one.
        let calm = (Instant::now() + Duration::from_millis(rng.range(1000, 3000))).min(end);
        if let Some(h) = healed_at.take() {
            recovery.add(cluster.serving_master_since(h, calm));
        }
        hold_until(calm);
        if Instant::now() >= end {
            break;
        }
        let master = cluster.master();
        let dur = rng.range(1000, 5000);
        let others = |m: usize| (0..n).filter(move |&i| i != m);
        let kind = rng.next_u64() % 11;
        let name: &'static str = match kind {
            0 | 1 => {
                // A random minority against the rest (symmetric).
                let mut side: BTreeSet<usize> = BTreeSet::new();
                let k = rng.range(1, n as u64 / 2 + 1) as usize;
                while side.len() < k {
                    side.insert(rng.range(0, n as u64) as usize);
                }
                let mut f = Faults::default();
                for &a in &side {
                    for b in (0..n).filter(|b| !side.contains(b)) {
                        f.blocked.insert((a, b));
                        f.blocked.insert((b, a));
                    }
                }
                say(cfg, t0, &format!("partition {side:?} | rest for {dur} ms"));
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "partition"
            }
            2 => {
                let m = master.unwrap_or(0);
                let mut f = Faults::default();
                for b in others(m) {
                    f.blocked.insert((m, b));
                    f.blocked.insert((b, m));
                }
                say(cfg, t0, &format!("isolate master {m} for {dur} ms"));
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "isolate-master"
            }
            3 => {
                // One-way: nothing reaches the master; it still sends (and its calls land).
                let m = master.unwrap_or(0);
                let mut f = Faults::default();
                let inbound = rng.chance(50);
                for b in others(m) {
                    if inbound {
                        f.blocked.insert((b, m));
                    } else {
                        f.blocked.insert((m, b));
                    }
                }
                say(
                    cfg,
                    t0,
                    &format!(
                        "one-way: master {m} cannot {} for {dur} ms",
                        if inbound { "receive" } else { "send" }
                    ),
                );
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "one-way-master"
            }
            4 => {
                let mut f = Faults::default();
                for a in 0..n {
                    for b in 0..n {
                        if a != b && rng.chance(30) {
                            f.blocked.insert((a, b));
                        }
                    }
                }
                say(
                    cfg,
                    t0,
                    &format!("random one-way links {:?} for {dur} ms", f.blocked),
                );
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "one-way-random"
            }
            5 => {
                let f = Faults {
                    delay_ms: rng.range(5, 120),
                    jitter_ms: rng.range(1, 120),
                    ..Faults::default()
                };
                say(
                    cfg,
                    t0,
                    &format!(
                        "delay {} ms + jitter {} ms for {dur} ms",
                        f.delay_ms, f.jitter_ms
                    ),
                );
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "delay"
            }
            6 => {
                let f = Faults {
                    cut_per_mille: rng.range(20, 200) as u32,
                    delay_ms: rng.range(0, 20),
                    ..Faults::default()
                };
                say(
                    cfg,
                    t0,
                    &format!(
                        "lossy: cut {} per mille of chunks for {dur} ms",
                        f.cut_per_mille
                    ),
                );
                cluster.net.set(f);
                hold(dur, end);
                cluster.net.heal();
                "lossy"
            }
            7 => {
                let i = match master {
                    Some(m) if rng.chance(50) => m,
                    _ => rng.range(0, n as u64) as usize,
                };
                say(cfg, t0, &format!("SIGSTOP node {i} for {dur} ms"));
                cluster.nodes[i].pause();
                hold(dur, end);
                cluster.nodes[i].resume();
                "pause"
            }
            8 | 9 => {
                let i = match master {
                    Some(m) if rng.chance(60) => m,
                    _ => rng.range(0, n as u64) as usize,
                };
                let down = rng.range(200, 3000);
                say(
                    cfg,
                    t0,
                    &format!("SIGKILL node {i}, restart after {down} ms"),
                );
                cluster.nodes[i].kill();
                hold(down, end + Duration::from_secs(60));
                cluster.nodes[i].spawn(&[]);
                "kill"
            }
            _ => {
                // Membership: remove one member while all five serve, else add one back.
                if let Some(m) = cluster.members() {
                    members = m;
                }
                let via = master.unwrap_or(0);
                if members.len() == n {
                    let t = rng.range(0, n as u64) as usize;
                    say(cfg, t0, &format!("remove member {t}"));
                    if let Err(e) = cluster.change_member(via, "remove", t) {
                        say(cfg, t0, &format!("  remove failed: {e}"));
                        not_applied += 1;
                    }
                    "remove-member"
                } else {
                    let t = (0..n).find(|i| !members.contains(i)).unwrap();
                    say(cfg, t0, &format!("add member {t} back"));
                    if let Err(e) = cluster.change_member(via, "add", t) {
                        say(cfg, t0, &format!("  add failed: {e}"));
                        not_applied += 1;
                    }
                    "add-member"
                }
            }
        };
        *faults.entry(name).or_default() += 1;
        healed_at = Some(Instant::now());
    }

    // Heal: network, paused and killed nodes; measure how long until a master serves again;
    // let the clients run on a little (at least 3 s after the heal); stop them.
    say(cfg, t0, "heal");
    let healed_at = Instant::now();
    cluster.net.heal();
    for nd in cluster.nodes.iter_mut() {
        if nd.paused {
            nd.resume();
        }
        if !nd.is_up() {
            nd.spawn(&[]);
        }
    }
    let heal_to_master =
        cluster.serving_master_since(healed_at, healed_at + Duration::from_secs(60));
    match heal_to_master {
        Some(d) => say(
            cfg,
            t0,
            &format!("a master serves {} ms after the heal", d.as_millis()),
        ),
        None => {
            problems.push("no master committed a write within 60 s of healing".to_string());
            for i in 0..n {
                problems.push(format!("node {i} after the heal: {:?}", cluster.status(i)));
            }
        }
    }
    hold(3000, healed_at + Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }

    // Every node a member again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.members() {
            Some(m) if m.len() == n => break,
            Some(m) => {
                let t = (0..n).find(|i| !m.contains(i)).unwrap();
                let via = cluster.master().unwrap_or(0);
                if let Err(e) = cluster.change_member(via, "add", t) {
                    say(cfg, t0, &format!("re-adding {t} failed: {e}"));
                }
            }
            None => {}
        }
        if Instant::now() > deadline {
            problems.push(
                "the cluster did not get all its members back within 60 s of healing".to_string(),
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Converge: a write through the master, then every node at the same commit and state.
    let mut final_commit = 0;
    let mut data = serde_json::Map::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut marker_done = false;
    loop {
        if !marker_done {
            if let Some(m) = cluster.master() {
                let url = format!("{}/_clusterc/{CLUSTER}/submit", cluster.nodes[m].direct());
                let body =
                    json!({"chg": [json!({"op":"set","key":"healed","value":"1"}).to_string()]})
                        .to_string();
                marker_done = request(
                    "POST",
                    &url,
                    cluster.token.as_deref(),
                    body.as_bytes(),
                    Duration::from_secs(3),
                )
                .is_ok_and(|(s, b)| s == 200 && json_of(&b)["fail"] == json!(false));
            }
        }
        if marker_done {
            let states: Vec<Option<Value>> = (0..n)
                .map(|i| {
                    let node = cluster.nodes[i].direct();
                    crate::kv_state(&node, CLUSTER, cluster.token.as_deref())
                })
                .collect();
            let same = states.iter().all(|s| s.is_some() && *s == states[0]);
            if same
                && states[0]
                    .as_ref()
                    .is_some_and(|s| s["data"]["healed"] == "1")
            {
                let s = states[0].clone().unwrap();
                final_commit = s["commit"].as_u64().unwrap_or(0);
                data = s["data"].as_object().cloned().unwrap_or_default();
                break;
            }
        }
        if Instant::now() > deadline {
            problems
                .push("the nodes did not converge to one state within 60 s of healing".to_string());
            for i in 0..n {
                problems.push(format!("node {i}: {:?}", cluster.status(i)));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The watchers catch up to the final commit, then stop; then their checks.
    let mut watch = WatchReport {
        watchers: n,
        from: watch_from,
        last: final_commit,
        ..WatchReport::default()
    };
    if final_commit > 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while watcher_next(&watched, watch_from)
            .iter()
            .any(|&next| next <= final_commit)
        {
            if Instant::now() > deadline {
                problems.push(format!(
                    "the watchers did not reach the final commit {final_commit} within 60 s: \
                     they wait for seqs {:?}",
                    watcher_next(&watched, watch_from)
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    watch_stop.store(true, Ordering::Relaxed);
    for w in watchers {
        let _ = w.join();
    }
    let seen: Vec<Watched> = watched.iter().map(|w| w.lock().unwrap().clone()).collect();
    watch.reconnects = seen.iter().map(|w| w.reconnects).sum();
    watch.moved = seen.iter().filter(|w| w.nodes.len() > 1).count();
    if !data.is_empty() {
        problems.extend(checker::check_watchers(
            &seen,
            watch_from,
            final_commit,
            &data,
        ));
    }

    let proxied = cluster.net.counts();
    if proxied.unattributed > 0 {
        problems.push(format!(
            "unattributed connections: {}: the proxies closed connections from addresses no node \
             uses, so they could not fault them (a node calling from somewhere other than its \
             --source-addr?); the run proves less than it says",
            proxied.unattributed
        ));
    }
    if proxied.accept_errors > 0 {
        problems.push(format!(
            "the proxies failed to accept {} connections: faults the harness did not mean to inject",
            proxied.accept_errors
        ));
    }
    if proxied.from_nodes == 0 {
        problems.push(
            "no connection between nodes crossed the proxies: no fault could have applied"
                .to_string(),
        );
    }

    let h = history.events();
    let counts = checker::counts(&h);
    if !data.is_empty() {
        problems.extend(checker::check_data(&h, &data));
    }
    let mut keys = 0;
    match checker::linearizable(&h) {
        Ok(k) => keys = k,
        Err(e) => problems.push(e),
    }
    if counts.acknowledged == 0 {
        problems.push("no operation was acknowledged: the run proves nothing".into());
    }
    if !problems.is_empty() {
        eprintln!("campaign problems (logs in {}):", cluster.dir.display());
        for p in problems.iter().take(20) {
            eprintln!("  {p}");
        }
        cluster.remove_dir = false;
    }
    drop(cluster);
    Report {
        seed: cfg.seed,
        elapsed: t0.elapsed(),
        counts,
        faults,
        keys,
        problems,
        final_commit,
        heal_to_master,
        proxy: proxied,
        not_applied,
        recovery,
        watch,
    }
}
