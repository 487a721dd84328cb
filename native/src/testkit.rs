//! Helpers for tests, demos and benchmarks over real node processes (feature `testkit`): start
//! and stop nodes, form clusters, a blocking HTTP client, temporary directories, bounded waits.
//! The integration tests (`tests/`), the benchmark and `clusterconsensus demo` all use these.
//!
//! - A node listens on port 0 unless told otherwise and says which port it got (`listening on
//!   URL` on stdout), so tests run in parallel without port races. A restarted node reuses its
//!   port (its address is its identity in the member list).
//! - Every child is killed when its [`Node`] is dropped, also when a test panics; a panicking
//!   test prints the tail of each node's log.
//! - Every wait is bounded ([`wait_for`], [`wait_until`]); every HTTP call has a time limit.
//! - The functions that return `Result` never panic (for programs); the others are for tests
//!   and panic with what went wrong.
//!
//! A node program is any binary with the `node` subcommand of [`cli`](crate::cli): the
//! `clusterconsensus` binary ([`binary`]) or an example ([`example`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// The target directory of the running executable (`target/<profile>`): a test lives in
/// `target/<profile>/deps/`, a binary in `target/<profile>/`, an example in
/// `target/<profile>/examples/`.
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().map(Path::to_path_buf),
        _ => Some(dir.to_path_buf()),
    }
}

/// The `clusterconsensus` binary of the running executable's target directory (or
/// `$CLUSTERCONSENSUS_BIN`). Panics with the build command when it is missing.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CLUSTERCONSENSUS_BIN") {
        return PathBuf::from(p);
    }
    let name = format!("clusterconsensus{}", std::env::consts::EXE_SUFFIX);
    let bin = profile_dir().unwrap_or_default().join(name);
    assert!(
        bin.is_file(),
        "the node binary {} is missing: build it first with `cargo build --workspace --bins \
         --examples` (scripts/test-all.sh does), or set CLUSTERCONSENSUS_BIN",
        bin.display()
    );
    bin
}

/// The example program `name` of the running executable's target directory
/// (`target/<profile>/examples/<name>`). Panics with the build command when it is missing.
pub fn example(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let bin = profile_dir()
        .unwrap_or_default()
        .join("examples")
        .join(file);
    assert!(
        bin.is_file(),
        "the example {} is missing: build it first with `cargo build --workspace --bins \
         --examples` (scripts/test-all.sh does)",
        bin.display()
    );
    bin
}

/// A directory, removed on drop unless it was there before ([`TempDir::existing`]) or a
/// thread is panicking (its logs are worth keeping).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    remove: bool,
}

impl TempDir {
    /// A fresh directory under the system temp dir. Panics if it cannot be created.
    pub fn new(tag: &str) -> TempDir {
        TempDir::create(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh directory under the system temp dir.
    pub fn create(tag: &str) -> Result<TempDir, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "cc-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        Ok(TempDir {
            path: p,
            remove: true,
        })
    }

    /// `path` (created if missing), kept when dropped.
    pub fn existing(path: &Path) -> Result<TempDir, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir {
            path: path.to_path_buf(),
            remove: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.remove && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where a node's logs (its stderr) go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Log {
    /// Appended to this file.
    File(PathBuf),
    /// This process's stderr (a demo in a terminal).
    Inherit,
}

/// How to start one node process: `<program> node --listen 127.0.0.1:<port> --data-dir
/// <data_dir> --cluster <id>... <args>`.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub program: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub log: Log,
    /// 0: any free port.
    pub port: u16,
    pub clusters: Vec<String>,
    /// After the usual ones: `--bootstrap`, `--peer URL`, `--www DIR`, timing flags...
    pub args: Vec<String>,
    /// Set in the node's environment (e.g. the storage's test-only `CC_TEST_DISK_FAULT`).
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    /// A node of `program` serving `clusters`, with its data in `<dir>/<name>/data` and its
    /// log in `<dir>/<name>/node.log`, on any free port.
    pub fn new(program: &Path, dir: &Path, name: &str, clusters: &[&str]) -> NodeOptions {
        NodeOptions {
            program: program.to_path_buf(),
            name: name.to_string(),
            data_dir: dir.join(name).join("data"),
            log: Log::File(dir.join(name).join("node.log")),
            port: 0,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn args(mut self, args: &[String]) -> NodeOptions {
        self.args = args.to_vec();
        self
    }

    /// Sets `key=value` in the node's environment (also when it is restarted).
    pub fn env(mut self, key: &str, value: &str) -> NodeOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One node process, killed (`kill -9`) when dropped.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    pub name: String,
    /// Its address (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    opts: NodeOptions,
}

impl Node {
    /// Starts a `clusterconsensus` node in `dir/<name>/` (any free port) with `args` after the
    /// usual ones. Panics (with the node's log) if it does not start listening.
    pub fn start(dir: &Path, name: &str, clusters: &[&str], args: &[String]) -> Node {
        Node::start_with(&binary(), dir, name, clusters, args)
    }

    /// [`Node::start`] of another node program (an example app).
    pub fn start_with(
        program: &Path,
        dir: &Path,
        name: &str,
        clusters: &[&str],
        args: &[String],
    ) -> Node {
        let opts = NodeOptions::new(program, dir, name, clusters).args(args);
        Node::launch(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a node and waits (up to 20 s) until it says where it listens. `Err` (with the
    /// tail of its log) if it exits or stays silent.
    pub fn launch(opts: NodeOptions) -> Result<Node, String> {
        let mut n = Node {
            child: None,
            name: opts.name.clone(),
            url: String::new(),
            port: opts.port,
            data_dir: opts.data_dir.clone(),
            opts,
        };
        let args = n.opts.args.clone();
        n.spawn(n.opts.port, &args)?;
        Ok(n)
    }

    fn spawn(&mut self, port: u16, args: &[String]) -> Result<(), String> {
        let stderr = match &self.opts.log {
            Log::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("create {}: {e}", dir.display()))?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("open {}: {e}", path.display()))?;
                Stdio::from(f)
            }
            Log::Inherit => Stdio::inherit(),
        };
        let mut cmd = Command::new(&self.opts.program);
        cmd.arg("node")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&self.data_dir);
        for c in &self.opts.clusters {
            cmd.arg("--cluster").arg(c);
        }
        cmd.args(args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} ({}): {e}",
                self.name,
                self.opts.program.display()
            )
        })?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        self.child = Some(child);
        let url = rx.recv_timeout(Duration::from_secs(20)).map_err(|_| {
            let code = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            self.kill();
            format!(
                "node {} did not start listening ({}); log:\n{}",
                self.name,
                code.map_or("still running".to_string(), |c| format!("exited: {c}")),
                self.log_tail(40)
            )
        })?;
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("node {} printed a bad address {url:?}", self.name))?;
        self.url = url;
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same port and data dir (without `--bootstrap`/`--peer`:
    /// with existing data they would be ignored anyway), with the other flags it had. Panics if
    /// it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = Vec::new();
        let mut it = self.opts.args.clone().into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--bootstrap" => {}
                "--peer" => {
                    it.next();
                }
                _ => args.push(a),
            }
        }
        let (port, url) = (self.port, self.url.clone());
        // The port was just freed; retry briefly if the kernel has not released it yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(port, &args) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline || !e.contains("cannot listen") => {
                    panic!("restart of {} failed: {e}", self.name)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        assert_eq!(self.url, url, "a restarted node keeps its address");
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to exit; its exit code (then
    /// `kill -9` if it did not exit).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let code = wait_exit(&mut c, Duration::from_secs(10));
        if code.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        code
    }

    /// Waits up to `within` for the node to exit by itself; its exit code (-1 for a signal),
    /// or `None` if it still runs (or was not running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let code = wait_exit(self.child.as_mut()?, within)?;
        self.child = None;
        Some(code)
    }

    /// Removes `key` from the environment the node gets at its next [`restart`](Node::restart).
    pub fn remove_env(&mut self, key: &str) {
        self.opts.env.retain(|(k, _)| k != key);
    }

    /// Sets `key=value` in the environment the node gets at its next [`restart`](Node::restart).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.opts.env.push((key.to_string(), value.to_string()));
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of its log file (empty with [`Log::Inherit`]).
    pub fn log_tail(&self, lines: usize) -> String {
        let Log::File(path) = &self.opts.log else {
            return String::new();
        };
        let s = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}",
                self.name,
                self.url,
                self.log_tail(60)
            );
        }
    }
}

/// Several nodes serving the same clusters, formed with `--bootstrap --peer` as a user would.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub ids: Vec<String>,
    pub dir: TempDir,
    /// Sent on the status polls (nodes with `--auth-reads`).
    pub token: Option<String>,
}

impl Cluster {
    /// Starts `n` `clusterconsensus` nodes serving `ids` in a fresh temporary directory:
    /// `n-1` unjoined, then the first with `--bootstrap` and a `--peer` for each of the others;
    /// waits (20 s) until every node of every cluster has `n` members and a master serves.
    /// `args` go to every node. Panics if the cluster does not form.
    pub fn start(tag: &str, n: usize, ids: &[&str], args: &[String]) -> Cluster {
        Cluster::start_with(&binary(), tag, n, ids, args)
    }

    /// [`Cluster::start`] of another node program (an example app).
    pub fn start_with(
        program: &Path,
        tag: &str,
        n: usize,
        ids: &[&str],
        args: &[String],
    ) -> Cluster {
        let dir = TempDir::new(tag);
        Cluster::launch(program, dir, n, ids, args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `n` nodes of `program` with their data and logs in `dir` (`node1`, `node2`, ...:
    /// see [`NodeOptions::new`]), each on port `base_port + i` (any free port without one),
    /// and waits (30 s) until the cluster has formed.
    pub fn launch(
        program: &Path,
        dir: TempDir,
        n: usize,
        ids: &[&str],
        args: &[String],
        base_port: Option<u16>,
    ) -> Result<Cluster, String> {
        let path = dir.path().to_path_buf();
        let opts = |i: usize, args: &[String]| -> Result<NodeOptions, String> {
            let mut o = NodeOptions::new(program, &path, &format!("node{}", i + 1), ids).args(args);
            if let Some(b) = base_port {
                o.port = b.checked_add(i as u16).ok_or("the base port is too high")?;
            }
            Ok(o)
        };
        Cluster::launch_each(n, ids, args, dir, None, opts)
    }

    /// Starts nodes `1..n` unjoined with `opts(i, args)`, then node 0 with `--bootstrap` and a
    /// `--peer` for each of them, and waits (30 s) until every node of every cluster has `n`
    /// members and a master serves (asking with `token`, if the nodes need it for `status`).
    pub fn launch_each(
        n: usize,
        ids: &[&str],
        args: &[String],
        dir: TempDir,
        token: Option<&str>,
        opts: impl Fn(usize, &[String]) -> Result<NodeOptions, String>,
    ) -> Result<Cluster, String> {
        let mut nodes = Vec::new();
        for i in 1..n {
            nodes.push(Node::launch(opts(i, args)?)?);
        }
        let mut first = args.to_vec();
        first.push("--bootstrap".into());
        for p in &nodes {
            first.push("--peer".into());
            first.push(p.url.clone());
        }
        nodes.insert(0, Node::launch(opts(0, &first)?)?);
        let c = Cluster {
            nodes,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            dir,
            token: token.map(String::from),
        };
        c.wait_formed(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Waits until every node of every cluster has all the nodes as members and a master
    /// serves; `Err` naming what was missing (and any node that exited).
    pub fn wait_formed(&self, within: Duration) -> Result<(), String> {
        let n = self.nodes.len();
        for id in &self.ids {
            let formed = wait_until(within, || {
                let all = self.nodes.iter().all(|nd| {
                    self.status(&nd.url, id)
                        .is_some_and(|s| s["members"].as_array().map(Vec::len) == Some(n))
                });
                (all && self.master(id).is_some()).then_some(())
            });
            if formed.is_none() {
                return Err(format!(
                    "cluster {id:?} of {n} nodes did not form within {within:?} (logs in {})",
                    self.dir.path().display()
                ));
            }
        }
        Ok(())
    }

    fn status(&self, node: &str, id: &str) -> Option<Value> {
        get_json_with(node, id, "status", self.token.as_deref())
    }

    /// The index of a running node that serves as master of `id`.
    pub fn master(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            self.status(&n.url, id)
                .is_some_and(|s| s["serving"] == json!(true))
        })
    }

    /// Waits for a serving master of `id`; panics after `within`.
    pub fn wait_master(&self, id: &str, within: Duration) -> usize {
        wait_for(within, "a serving master", || self.master(id))
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}

/// A duration as people write it on a command line: `500ms`, `5s`, `1.5s`, `2m`, `1h` (a bare
/// number is seconds). For the benchmark's and the test binaries' flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Polls `f` every 25 ms until it returns `Some`, or `None` after `within`.
pub fn wait_until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `f` every 25 ms until it returns `Some`, or panics after `within` naming `what`.
pub fn wait_for<T>(within: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until(within, f).unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`) within 10 s. `Err` for a
/// transport failure.
pub fn http(method: &str, url: &str, body: &[u8]) -> Result<Answer, String> {
    http_timeout(method, url, body, Duration::from_secs(10))
}

pub fn http_timeout(
    method: &str,
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    http_request(method, url, None, body, timeout)
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`), with an optional bearer
/// token, bounded by `timeout` in all. `Err` for a transport failure. Plain `http://` only.
pub fn http_request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: std::net::SocketAddr = hostport.parse().map_err(|e| format!("{hostport}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {url}: {e}"))?;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left(deadline))).ok();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("send {url}: {e}"))?;
    s.write_all(body).map_err(|e| format!("send {url}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if Instant::now() >= deadline {
            return Err(format!("{url}: no answer within {timeout:?}"));
        }
        s.set_read_timeout(Some(left(deadline))).ok();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read {url}: {e}")),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: no HTTP head in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// `<node>/_clusterc/<id>/<what>`.
pub fn cluster_url(node: &str, id: &str, what: &str) -> String {
    clusterconsensus::wire::url(node, id, what)
}

/// `GET <what>` below the cluster's path within 3 s, with an optional token: the JSON of a
/// 200, else `None`.
pub fn get_json_with(node: &str, id: &str, what: &str, token: Option<&str>) -> Option<Value> {
    let url = cluster_url(node, id, what);
    let a = http_request("GET", &url, token, b"", Duration::from_secs(3)).ok()?;
    (a.status == 200)
        .then(|| serde_json::from_slice(&a.body).ok())
        .flatten()
}

/// `GET <what>` below the cluster's path within 3 s: the JSON of a 200, else `None`.
pub fn get_json(node: &str, id: &str, what: &str) -> Option<Value> {
    get_json_with(node, id, what, None)
}

/// `GET status`, or `None` if the node does not answer 200.
pub fn status(node: &str, id: &str) -> Option<Value> {
    get_json(node, id, "status")
}

/// `POST submit {"chg": changes}`; the JSON answer of a 200, else `Err`.
pub fn submit(node: &str, id: &str, changes: &[String]) -> Result<Value, String> {
    post_json(node, id, "submit", &json!({ "chg": changes }))
}

/// Submits and checks it committed (`{"fail":false}`); the answer (with `seq` and `results`).
pub fn submit_ok(node: &str, id: &str, changes: &[String]) -> Result<Value, String> {
    let v = submit(node, id, changes)?;
    if v["fail"] == json!(false) && v["err"].is_null() {
        Ok(v)
    } else {
        Err(format!("submit failed: {v}"))
    }
}

/// Posts to an admin or protocol path and returns the 200 answer's JSON.
pub fn post_json(node: &str, id: &str, what: &str, body: &Value) -> Result<Value, String> {
    let a = http(
        "POST",
        &cluster_url(node, id, what),
        body.to_string().as_bytes(),
    )?;
    if a.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("answer is not JSON: {e}"))
}

/// Runs the `clusterconsensus` binary with `args`; see [`run_program`].
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_program(&binary(), args)
}

/// Runs `program` with `args` and returns (exit code, stdout, stderr); a run that takes over
/// 20 s is killed and reported with exit code -1 (also -1 if it cannot start).
pub fn run_program(program: &Path, args: &[&str]) -> (i32, String, String) {
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return (
                -1,
                String::new(),
                format!("cannot run {}: {e}", program.display()),
            )
        }
    };
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let o = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let e = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let code = wait_exit(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        -1
    });
    (
        code,
        o.join().unwrap_or_default(),
        e.join().unwrap_or_default(),
    )
}

/// Waits up to `within` for `child` to exit; its exit code (-1 for a signal).
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Child processes that are not nodes (an etcd beside ours), stopped when dropped: SIGTERM,
/// then `kill -9` for whatever still runs after 5 s.
#[derive(Debug, Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
