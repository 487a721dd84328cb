//! Harness for the cross-crate integration tests in `tests/tests/`: real `clusterconsensus node`
//! processes on 127.0.0.1, driven over HTTP.
//!
//! - Every node listens on port 0 and says which port it got (`listening on URL` on stdout), so
//!   tests run in parallel without port races. A restarted node reuses its port (its address is
//!   its identity in the member list).
//! - Every child is killed when its [`Node`] is dropped, also when a test panics; a panicking
//!   test prints the tail of each node's log.
//! - Every wait is bounded ([`wait_for`]); every HTTP call has socket timeouts.
//! - The binary comes from the same target directory as the test executable
//!   (`target/<profile>/clusterconsensus`): build it first with `cargo build --workspace --bins`
//!   (scripts/test-all.sh does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The fault campaign (proxy, nemesis, clients, checker); see `tests/tests/campaign.rs`.
pub mod campaign;

pub use serde_json::{json, Value};

/// The `clusterconsensus` binary next to the test executable (or `$CLUSTERCONSENSUS_BIN`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CLUSTERCONSENSUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/<profile>/deps/<test> -> target/<profile>/clusterconsensus
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("clusterconsensus{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the node binary {} is missing: build it first with `cargo build --workspace --bins` \
         (scripts/test-all.sh does), or set CLUSTERCONSENSUS_BIN",
        bin.display()
    );
    bin
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "cc-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One `clusterconsensus node` process.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    pub name: String,
    /// Its address (`http://127.0.0.1:PORT`).
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    clusters: Vec<String>,
    extra: Vec<String>,
}

impl Node {
    /// Starts a node in `dir/<name>/` (port 0: any free port) with `args` after the usual ones
    /// (`--bootstrap`, `--peer URL`, `--www DIR`, timing flags...).
    pub fn start(dir: &Path, name: &str, clusters: &[&str], args: &[String]) -> Node {
        let mut n = Node {
            child: None,
            name: name.to_string(),
            url: String::new(),
            port: 0,
            data_dir: dir.join(name).join("data"),
            log: dir.join(name).join("node.log"),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            extra: args.to_vec(),
        };
        n.spawn(0, args);
        n
    }

    fn spawn(&mut self, port: u16, args: &[String]) {
        std::fs::create_dir_all(self.log.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut cmd = Command::new(binary());
        cmd.arg("node")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&self.data_dir);
        for c in &self.clusters {
            cmd.arg("--cluster").arg(c);
        }
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn clusterconsensus node");
        let stdout = child.stdout.take().unwrap();
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
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => {
                self.port = url.rsplit(':').next().unwrap().parse().unwrap();
                self.url = url;
            }
            Err(_) => panic!(
                "node {} did not start listening; log:\n{}",
                self.name,
                self.log_tail(40)
            ),
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same port and data dir (without `--bootstrap`/`--peer`: with
    /// existing data they would be ignored anyway), with the other flags it had.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = Vec::new();
        let mut it = self.extra.clone().into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--bootstrap" => {}
                "--peer" => {
                    it.next();
                }
                _ => args.push(a),
            }
        }
        let port = self.port;
        let url = self.url.clone();
        // The port was just freed; retry briefly if the kernel has not released it yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let res =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(port, &args)));
            if res.is_ok() {
                break;
            }
            self.kill();
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let fresh = log.get(before as usize..).unwrap_or("");
            if Instant::now() > deadline || !fresh.contains("cannot listen") {
                panic!(
                    "restart of {} failed; log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(self.url, url, "a restarted node keeps its address");
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to exit; its exit code.
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

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
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
}

impl Cluster {
    /// Starts `n` nodes serving `ids`: `n-1` unjoined, then the first with `--bootstrap` and a
    /// `--peer` for each of the others; waits until every node of every cluster has `n` members
    /// and a master serves. `args` go to every node.
    pub fn start(tag: &str, n: usize, ids: &[&str], args: &[String]) -> Cluster {
        let dir = TempDir::new(tag);
        let mut nodes = Vec::new();
        for i in 1..n {
            nodes.push(Node::start(
                dir.path(),
                &format!("node{}", i + 1),
                ids,
                args,
            ));
        }
        let mut first = args.to_vec();
        first.push("--bootstrap".into());
        for p in &nodes {
            first.push("--peer".into());
            first.push(p.url.clone());
        }
        nodes.insert(0, Node::start(dir.path(), "node1", ids, &first));
        let c = Cluster {
            nodes,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        for id in &c.ids {
            wait_for(Duration::from_secs(20), "the cluster to form", || {
                let all = c.nodes.iter().all(|nd| {
                    status(&nd.url, id)
                        .is_some_and(|s| s["members"].as_array().map(Vec::len) == Some(n))
                });
                (all && c.master(id).is_some()).then_some(())
            });
        }
        c
    }

    /// The index of a running node that serves as master of `id`.
    pub fn master(&self, id: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| status(&n.url, id).is_some_and(|s| s["serving"] == json!(true)))
    }

    pub fn wait_master(&self, id: &str, within: Duration) -> usize {
        wait_for(within, "a serving master", || self.master(id))
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}

/// Polls `f` every 25 ms until it returns `Some`, or panics after `within` naming `what`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
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

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`), bounded by socket
/// timeouts. `Err` for a transport failure.
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
/// token, bounded by `timeout` in all. `Err` for a transport failure. The one raw client of the
/// tests (the campaign's clients use it too).
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

pub fn cluster_url(node: &str, id: &str, what: &str) -> String {
    format!("{node}/_clusterc/{id}/{what}")
}

/// `GET <what>` below the cluster's path, within 3 s: the JSON of a 200, else `None`.
fn get_json(node: &str, id: &str, what: &str) -> Option<Value> {
    let a = http_timeout(
        "GET",
        &cluster_url(node, id, what),
        b"",
        Duration::from_secs(3),
    )
    .ok()?;
    (a.status == 200).then(|| a.json())
}

/// `GET status`, or `None` if the node does not answer 200.
pub fn status(node: &str, id: &str) -> Option<Value> {
    get_json(node, id, "status")
}

/// `POST submit {"chg": changes}`; the JSON answer of a 200, else `Err`.
pub fn submit(node: &str, id: &str, changes: &[String]) -> Result<Value, String> {
    post_json(node, id, "submit", &json!({ "chg": changes }))
}

/// Submits and checks it committed (`{"fail":false}`).
pub fn submit_ok(node: &str, id: &str, changes: &[String]) -> Result<(), String> {
    let v = submit(node, id, changes)?;
    if v["fail"] == json!(false) && v["err"].is_null() {
        Ok(())
    } else {
        Err(format!("submit failed: {v}"))
    }
}

/// A key-value `set` change.
pub fn set(key: &str, value: &str) -> String {
    json!({"op": "set", "key": key, "value": value}).to_string()
}

/// `GET kv`: the node's whole key-value state (`{"commit", "data"}`).
pub fn kv_all(node: &str, id: &str) -> Option<Value> {
    get_json(node, id, "kv")
}

/// Every node's whole key-value state of cluster `id` (and commit index), once they all agree.
pub fn settled_state(c: &Cluster, id: &str) -> Value {
    wait_for(Duration::from_secs(5), "all nodes to agree", || {
        let all: Vec<Value> = c.nodes.iter().filter_map(|n| kv_all(&n.url, id)).collect();
        (all.len() == c.nodes.len() && all.iter().all(|s| *s == all[0])).then(|| all[0].clone())
    })
}

/// `GET kv/<key>`: the value, or `None` (404 or no answer).
pub fn kv_get(node: &str, id: &str, key: &str) -> Option<String> {
    let a = http_timeout(
        "GET",
        &cluster_url(node, id, &format!("kv/{key}")),
        b"",
        Duration::from_secs(3),
    )
    .ok()?;
    (a.status == 200).then(|| a.json()["value"].as_str().unwrap_or_default().to_string())
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
    Ok(a.json())
}

/// Runs the binary with `args` and returns (exit code, stdout, stderr); a run that takes over
/// 20 s is killed and reported with exit code -1.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run clusterconsensus");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let code = wait_exit(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        -1
    });
    (code, o.join().unwrap(), e.join().unwrap())
}

/// Waits up to `within` for `child` to exit; its exit code (-1 for a signal).
fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
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
