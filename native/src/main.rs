//! `clusterconsensus`: the native host of the clusterconsensus core.
//!
//! The host is thin: HTTP in, core inputs; core outputs, HTTP and disk out. Per cluster one
//! task owns the `Participant` ([`cluster`]); [`http`] routes requests to it; [`storage`] makes
//! each `Persist` durable in a write-ahead log; [`client`] carries the outgoing calls. No
//! protocol decision lives here.

mod auth;
mod client;
mod cluster;
mod demo;
mod http;
mod metrics;
mod node;
mod storage;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::HttpClient;

/// A replicated key-value store: Paxos with an elected master, its peers speaking JSON over
/// HTTP.
#[derive(Parser, Debug)]
#[command(name = "clusterconsensus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// `NodeArgs` is large next to the others; the enum is parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node: serve one or more clusters over HTTP, durable under --data-dir.
    Node(NodeArgs),
    /// Start a 3-node cluster on 127.0.0.1 (child processes), bootstrap it, print its URLs.
    Demo(DemoArgs),
    /// Submit changes to a cluster through one of its nodes; exit code 2 if not committed.
    Submit(SubmitArgs),
    /// Print a node's status for a cluster as JSON; exit code 2 if it cannot be read.
    Status(StatusArgs),
    /// Read one key through a node (--consistent: linearizable); exit code 2 if it cannot be read,
    /// 3 if the key does not exist.
    Get(GetArgs),
}

/// Security flags of the client subcommands.
#[derive(Args, Debug, Clone)]
struct ClientSecurity {
    /// File whose first line is the cluster's token (sent as Authorization: Bearer).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an https:// node with.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

impl ClientSecurity {
    fn client(&self, timeout_ms: u64) -> Result<HttpClient, String> {
        let auth = match &self.token_file {
            Some(f) => Some(auth::Auth::from_file(f)?.header()),
            None => None,
        };
        Ok(HttpClient::with_security(
            Duration::from_millis(timeout_ms),
            auth,
            tls::client_config(self.tls_ca.as_deref())?,
        ))
    }
}

/// Security and resource limits of a node.
#[derive(Args, Debug, Clone)]
struct Limits {
    /// File whose first line is the cluster's token (16+ visible ASCII characters, the same on
    /// every member). Peer calls, submit, members/* and consistent reads then need
    /// `Authorization: Bearer <token>` (else 401 ERR_DENIED); the node sends it to its peers.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With --token-file: status and plain reads need the token too.
    #[arg(long, requires = "token_file")]
    auth_reads: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that https:// peers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client calls (submit, members/*, reads, status) handled at once; more get 503 ERR_STATE
    /// at once. The peer protocol is not counted.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_inflight: usize,
    /// Changes the master queues for the next accepts; past it submits get ERR_STATE.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queued: usize,
    /// Open connections; a new one past it is closed at once.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this, in ms; slower
    /// connections, idle keep-alive ones included, are closed.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// A request's body must arrive within this, in ms (else 408).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
}

#[derive(Args, Debug, Clone)]
struct Timing {
    /// How often the master sends heartbeats (and re-sends an unacknowledged accept), in ms.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in ms. A follower that heard from no
    /// master for the timeout campaigns; a master without a majority for this long steps down.
    #[arg(long, default_value_t = 1000)]
    election_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ms.
    #[arg(long, default_value_t = 1600)]
    election_max_ms: u64,
    /// Time limit of one call to a peer (connect, send, answer), in ms; past it the call
    /// counts as failed (ERR_CALL).
    #[arg(long, default_value_t = 1000)]
    request_timeout_ms: u64,
    /// Commits between snapshots: the on-disk log holds at most this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free port; the line "listening on URL"
    /// on stdout tells which).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Cluster id to serve ([A-Za-z0-9._-], 1-64 characters); repeat to serve several clusters
    /// from this process, each with its own state and storage.
    #[arg(long = "cluster", value_name = "ID", required = true)]
    clusters: Vec<String>,
    /// Directory for the durable state: one write-ahead log per cluster, <DIR>/<ID>.wal. With
    /// existing data the node resumes as the member it was.
    #[arg(long, value_name = "DIR", required_unless_present = "memory")]
    data_dir: Option<PathBuf>,
    /// Keep the state in memory only (it is lost when the process stops). For experiments.
    #[arg(long, conflicts_with = "data_dir")]
    memory: bool,
    /// This node's address as the peers reach it (its identity in the member list).
    /// Default: http://HOST:PORT of --listen.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Without existing data: become master of a new one-member cluster, then add each --peer.
    /// Ignored when the node resumes from existing data.
    #[arg(long)]
    bootstrap: bool,
    /// With --bootstrap: a node to add to the cluster (it must run unjoined); repeat for
    /// several. They are added one at a time, each once it answers.
    #[arg(long = "peer", value_name = "URL", requires = "bootstrap")]
    peers: Vec<String>,
    /// Local IP address that outgoing connections to peers are bound to (a multi-homed host:
    /// the address its peers and their firewalls expect). It must be an address of this host.
    /// Default: the kernel picks one by route.
    #[arg(long, value_name = "IP")]
    source_addr: Option<std::net::IpAddr>,
    /// Directory of the dashboard's static files, served at GET /.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../www"))]
    www: PathBuf,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_body: usize,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    limits: Limits,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Port of the first node; the others use the next two.
    #[arg(long, default_value_t = 9001)]
    base_port: u16,
    /// Where the three nodes keep their data (node1/, node2/, node3/). Default: a temporary
    /// directory, deleted when the demo stops. Given an existing demo directory, the nodes
    /// resume from it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The cluster id.
    #[arg(long, default_value = "cluster1")]
    cluster: String,
    /// Directory of the dashboard's static files, served by each node at GET /.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../www"))]
    www: PathBuf,
    /// Start every node with this --token-file: writes (and consistent reads) then need
    /// `Authorization: Bearer <token>`; paste the token into the dashboard's Token field.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With --token-file: start every node with --auth-reads (status and plain reads need the
    /// token too).
    #[arg(long, requires = "token_file")]
    auth_reads: bool,
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// A node of the cluster, e.g. http://127.0.0.1:9001 (a follower forwards to the master).
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
    /// The changes, submitted as one batch. For the key-value app:
    /// '{"op":"set","key":"a","value":"1"}' or '{"op":"del","key":"a"}'.
    #[arg(value_name = "CHANGE", required = true)]
    changes: Vec<String>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The node to ask, e.g. http://127.0.0.1:9001.
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// The node to ask, e.g. http://127.0.0.1:9001.
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// Linearizable: answered only after the master confirmed with a majority that it is
    /// still master and this node applied everything committed before the read. Without it the
    /// node's local state is read, which may be stale on a follower.
    #[arg(long)]
    consistent: bool,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
    /// The key.
    #[arg(value_name = "KEY")]
    key: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Node(a) => node::run(node_options(a)).await,
            Cmd::Demo(a) => demo::run(a).await,
            Cmd::Submit(a) => submit(a).await,
            Cmd::Status(a) => status(a).await,
            Cmd::Get(a) => get(a).await,
        }
    });
    // Stops the cluster tasks (closing their databases) without waiting on stuck calls.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn node_options(a: NodeArgs) -> node::NodeOptions {
    node::NodeOptions {
        listen: a.listen,
        clusters: a.clusters,
        data_dir: a.data_dir,
        advertise: a.advertise,
        bootstrap: a.bootstrap,
        peers: a.peers,
        source_addr: a.source_addr,
        www: a.www,
        max_body: a.max_body,
        heartbeat_ms: a.timing.heartbeat_ms,
        election_min_ms: a.timing.election_min_ms,
        election_max_ms: a.timing.election_max_ms,
        request_timeout_ms: a.timing.request_timeout_ms,
        snapshot_every: a.timing.snapshot_every,
        token_file: a.limits.token_file,
        auth_reads: a.limits.auth_reads,
        tls_cert: a.limits.tls_cert,
        tls_key: a.limits.tls_key,
        tls_ca: a.limits.tls_ca,
        max_inflight: a.limits.max_inflight,
        max_queued: a.limits.max_queued,
        max_connections: a.limits.max_connections,
        header_timeout_ms: a.limits.header_timeout_ms,
        body_timeout_ms: a.limits.body_timeout_ms,
    }
}

fn cluster_url(node: &str, cluster: &str, what: &str) -> String {
    format!("{}/_clusterc/{cluster}/{what}", node::trim_addr(node))
}

/// `clusterconsensus submit`: prints the answer; `Err` (exit 2) unless it committed.
async fn submit(a: SubmitArgs) -> Result<(), String> {
    let client = a.security.client(a.timeout_ms)?;
    let url = cluster_url(&a.node, &a.cluster, "submit");
    let body = serde_json::to_vec(&serde_json::json!({ "chg": a.changes })).unwrap_or_default();
    let (status, body) = client
        .request(hyper::Method::POST, &url, body)
        .await
        .map_err(|e| format!("submit to {url} failed: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    if status != hyper::StatusCode::OK {
        return Err(format!("submit to {url}: HTTP {status}: {text}"));
    }
    println!("{text}");
    let answer: clusterconsensus::wire::FailResult = serde_json::from_slice(&body)
        .map_err(|e| format!("submit to {url}: unexpected answer: {e}"))?;
    answer
        .into_result()
        .map_err(|e| format!("submit not committed: {e}"))
}

/// `clusterconsensus status`: pretty-prints the status JSON.
async fn status(a: StatusArgs) -> Result<(), String> {
    let client = a.security.client(a.timeout_ms)?;
    let url = cluster_url(&a.node, &a.cluster, "status");
    let (status, body) = client
        .request(hyper::Method::GET, &url, Vec::new())
        .await
        .map_err(|e| format!("status from {url} failed: {e}"))?;
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "status from {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("status from {url}: not JSON: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// `clusterconsensus get`: prints `{"key","value"}`; exit 3 for a missing key.
async fn get(a: GetArgs) -> Result<(), String> {
    let client = a.security.client(a.timeout_ms)?;
    let key: String = a
        .key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut url = cluster_url(&a.node, &a.cluster, &format!("kv/{key}"));
    if a.consistent {
        url.push_str("?consistent=true");
    }
    let (status, body) = client
        .request(hyper::Method::GET, &url, Vec::new())
        .await
        .map_err(|e| format!("read from {url} failed: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let missing = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|v| v.get("key").is_some() && v["value"].is_null());
    if status == hyper::StatusCode::NOT_FOUND && missing {
        eprintln!("no key {:?}", a.key);
        std::process::exit(3);
    }
    if status != hyper::StatusCode::OK {
        return Err(format!("read from {url}: HTTP {status}: {text}"));
    }
    println!("{text}");
    Ok(())
}
