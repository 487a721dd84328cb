//! The command line of a node for any app (feature `cli`): the flags of `node` and `demo`, the
//! operator commands [`member`] (`list|add|remove|promote`), [`transfer`] and [`snapshot`]
//! (`save|restore`, backups), and [`app_main`],
//! the whole `main` of an example app. The `clusterconsensus` binary is these plus the
//! key-value app's client subcommands.
//!
//! ```no_run
//! # use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
//! # use clusterconsensus_server::Reads;
//! # #[derive(Default)] struct Counter(i64);
//! # impl StateMachine for Counter {
//! #     type Snapshot = WholeSnapshot; type Restore = WholeRestore<Counter>;
//! #     fn validate(&self, c: &str) -> Result<(), String> { Ok(()) }
//! #     fn apply(&mut self, _: u64, c: &str) -> serde_json::Value { serde_json::Value::Null }
//! #     fn snapshot(&self) -> WholeSnapshot { WholeSnapshot::new(self.0.to_string()) }
//! #     fn restore(&self) -> WholeRestore<Counter> { WholeRestore::new(|t| t.parse().map(Counter).map_err(|e| e.to_string())) }
//! # }
//! # impl Reads for Counter {}
//! // `counter node --listen 127.0.0.1:9001 --cluster c --data-dir d [--bootstrap --peer URL]...`
//! // runs one node; `counter [--base-port 9001]` a local 3-node cluster of child processes.
//! fn main() -> std::process::ExitCode {
//!     clusterconsensus_server::cli::app_main("counter", Counter::default, |_demo| vec![])
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::Token;
use crate::client::HttpClient;
use crate::server::{
    shutdown_signal, Limits, Server, ServerBuilder, Startup, Storage, Timing, TlsFiles,
};
use crate::{App, ServeError};

pub use crate::demo::{run as demo, Demo};

/// Security and resource limits of a node.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// File of the clients' token: one token a line (16+ visible ASCII characters; blank lines
    /// and # comments skipped), each accepted, so a new one can be added before the old one
    /// is removed. Submit, members/* and consistent reads then need `Authorization: Bearer
    /// <token>` (else 401 ERR_DENIED), and so do the peer calls unless --peer-token-file;
    /// without that the node sends the first token to its peers.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File of the members' token, in the --token-file format: the peer calls (prepare,
    /// accept, start, readindex, ...) then need it and the client token no longer opens
    /// them. It opens the client calls too. The node sends its first line on all its calls,
    /// so every member must accept the first line of every other member's file.
    #[arg(long, value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// With --token-file: status and plain reads need the token too.
    #[arg(long, requires = "token_file")]
    pub auth_reads: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that https:// peers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Peer calls must come over a connection with a client certificate that chains to
    /// --tls-ca (as etcd's flag); clients need none. The node presents --tls-cert as its
    /// client certificate to peers that ask for one, with or without this flag.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub peer_client_cert_auth: bool,
    /// Client calls (submit, members/*, readindex, reads, status) handled at once; more get
    /// 503 ERR_STATE at once. The peer protocol is not counted.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_inflight: usize,
    /// Changes the master queues for the next accepts; past it submits get ERR_STATE.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_queued: usize,
    /// Open connections; a new one past it is closed at once.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this, in ms; slower
    /// connections, idle keep-alive ones included, are closed.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this, in ms (else 408).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Watchers (watch streams and long polls) served at once; more get 503 ERR_STATE.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_watchers: usize,
    /// Recent committed entries kept in memory per cluster for watchers that start or resume
    /// behind; a watch from before them gets ERR_GAP.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub watch_window: usize,
    /// The most bytes of those entries kept per cluster (the newest is kept whatever its size).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub watch_window_bytes: usize,
}

/// Protocol timing of a node.
#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// How often the master sends heartbeats (and re-sends an unacknowledged accept), in ms.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in ms. A follower that heard from no
    /// master for the timeout campaigns; a master without a majority for this long steps down.
    #[arg(long, default_value_t = 1000)]
    pub election_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ms.
    #[arg(long, default_value_t = 1600)]
    pub election_max_ms: u64,
    /// Time limit of one call to a peer (connect, send, answer), in ms; past it the call
    /// counts as failed (ERR_CALL).
    #[arg(long, default_value_t = 1000)]
    pub request_timeout_ms: u64,
    /// The most entries the on-disk log holds: a snapshot is due after this many commits, or
    /// earlier once the log since the last one holds as many bytes of changes as the state
    /// (at least 8 MiB).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every: u64,
}

/// The flags of `node`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free port; the line "listening on URL"
    /// on stdout tells which).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Cluster id to serve ([A-Za-z0-9._-], 1-64 characters); repeat to serve several clusters
    /// from this process, each with its own state and storage.
    #[arg(long = "cluster", value_name = "ID", required = true)]
    pub clusters: Vec<String>,
    /// Directory for the durable state: one write-ahead log per cluster, DIR/ID.wal. With
    /// existing data the node resumes as the member it was.
    #[arg(long, value_name = "DIR", required_unless_present = "memory")]
    pub data_dir: Option<PathBuf>,
    /// Keep the state in memory only (it is lost when the process stops). For experiments.
    #[arg(long, conflicts_with = "data_dir")]
    pub memory: bool,
    /// This node's address as the peers reach it (its identity in the member list).
    /// Default: http://HOST:PORT of --listen.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Without existing data: become master of a new one-member cluster, then add each --peer.
    /// Ignored when the node resumes from existing data.
    #[arg(long)]
    pub bootstrap: bool,
    /// With --bootstrap: a node to add to the cluster (it must run unjoined); repeat for
    /// several. They are added one at a time, each once it answers.
    #[arg(long = "peer", value_name = "URL", requires = "bootstrap")]
    pub peers: Vec<String>,
    /// Without existing data: ask this member to add this node (repeat for several; any
    /// member will do, they are asked in turn until a master starts this node). It joins as a
    /// learner and becomes a voter once caught up. The node whose own address (--advertise)
    /// comes first in the list founds the cluster instead, unless another listed node answers
    /// as a member, so every node can be given the same list (a StatefulSet, a compose file).
    /// Ignored when the node resumes from existing data.
    #[arg(long = "join", value_name = "URL", conflicts_with = "bootstrap")]
    pub join: Vec<String>,
    /// Restart as the only member of each --cluster, keeping everything this node committed:
    /// for a cluster whose majority is lost for good (their disks gone). DANGER: run it on one
    /// node only, once (remove the flag afterwards), and never start the old members again
    /// with their data. Refused (exit 2) when the data directory holds no committed state.
    #[arg(long, conflicts_with_all = ["memory", "bootstrap", "join"])]
    pub force_new_cluster: bool,
    /// GET /readyz answers 503 while this node is more than this many committed entries
    /// behind its master.
    #[arg(long, value_name = "N", default_value_t = crate::server::READY_MAX_LAG)]
    pub ready_max_lag: u64,
    /// On SIGTERM or SIGINT, a master leaves at once instead of first handing its mastership
    /// to the most caught-up voter (waiting at most 2 s for that); the others then wait out an
    /// election timeout before writes go on.
    #[arg(long)]
    pub no_transfer_on_shutdown: bool,
    /// Local IP address that outgoing connections to peers are bound to (a multi-homed host:
    /// the address its peers and their firewalls expect). It must be an address of this host.
    /// Default: the kernel picks one by route.
    #[arg(long, value_name = "IP")]
    pub source_addr: Option<std::net::IpAddr>,
    /// Directory of static files (the dashboard), served at GET /. The `clusterconsensus`
    /// binary serves the repository's www/ by default; other apps serve none.
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_body: usize,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl NodeArgs {
    /// The node these flags describe, each cluster replicating a fresh `app()`.
    pub fn builder<S: App>(&self, app: impl Fn() -> S) -> Result<ServerBuilder<S>, ServeError> {
        let storage = match &self.data_dir {
            Some(d) if !self.memory => Storage::Dir(d.clone()),
            _ => Storage::Memory,
        };
        let t = &self.timing;
        let l = &self.limits;
        let mut b = Server::builder(&self.listen, storage)
            .timing(Timing {
                heartbeat_ms: t.heartbeat_ms,
                election_min_ms: t.election_min_ms,
                election_max_ms: t.election_max_ms,
                request_timeout_ms: t.request_timeout_ms,
                snapshot_every: t.snapshot_every,
            })
            .limits(Limits {
                max_body: self.max_body,
                max_inflight: l.max_inflight,
                max_queued: l.max_queued,
                max_connections: l.max_connections,
                header_timeout_ms: l.header_timeout_ms,
                body_timeout_ms: l.body_timeout_ms,
                max_watchers: l.max_watchers,
                watch_window: l.watch_window,
                watch_window_bytes: l.watch_window_bytes,
            })
            .ready_max_lag(self.ready_max_lag)
            .transfer_on_shutdown(
                (!self.no_transfer_on_shutdown).then_some(crate::server::TRANSFER_ON_SHUTDOWN),
            )
            .force_new_cluster(self.force_new_cluster);
        if let Some(a) = &self.advertise {
            b = b.advertise(a);
        }
        if let Some(ip) = self.source_addr {
            b = b.source_addr(ip);
        }
        if let Some(f) = &l.token_file {
            b = b.token(Token::from_file(f)?, l.auth_reads);
        }
        if let Some(f) = &l.peer_token_file {
            b = b.peer_token(Token::from_file(f)?);
        }
        b = b.peer_client_cert_auth(l.peer_client_cert_auth);
        if let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) {
            b = b.tls(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(ca) = &l.tls_ca {
            b = b.tls_ca(ca);
        }
        if let Some(w) = &self.www {
            b = b.www(w);
        }
        let startup = if self.bootstrap {
            Startup::Bootstrap {
                peers: self.peers.clone(),
            }
        } else if !self.join.is_empty() {
            Startup::JoinVia {
                via: self.join.clone(),
            }
        } else {
            Startup::Join
        };
        for id in &self.clusters {
            b = b.cluster(id, app(), startup.clone());
        }
        Ok(b)
    }
}

/// `node`: binds, prints `listening on <advertised URL>` on stdout (the one line scripts and
/// tests read; logs go to stderr), serves until SIGINT or SIGTERM.
pub async fn run_node<S: App>(args: NodeArgs, app: impl Fn() -> S) -> Result<(), ServeError> {
    let server = args.builder(app)?.bind().await?;
    println!("listening on {}", server.advertise());
    server
        .serve(async {
            let sig = shutdown_signal().await;
            tracing::info!("{sig}: shutting down");
        })
        .await
}

/// The flags of `demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Port of the first node; the others use the next two.
    #[arg(long, default_value_t = 9001)]
    pub base_port: u16,
    /// Where the three nodes keep their data (node1/, node2/, node3/). Default: a temporary
    /// directory, deleted when the demo stops. Given an existing demo directory, the nodes
    /// resume from it.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster id.
    #[arg(long, default_value = "cluster1")]
    pub cluster: String,
    /// Directory of static files (the dashboard), served by each node at GET /. The
    /// `clusterconsensus` binary serves the repository's www/ by default; other apps serve none.
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Start every node with this --token-file: writes (and consistent reads) then need
    /// `Authorization: Bearer <token>`; paste the token into the dashboard's Token field.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With --token-file: start every node with --auth-reads (status and plain reads need the
    /// token too).
    #[arg(long, requires = "token_file")]
    pub auth_reads: bool,
}

/// Sets up the logs: `RUST_LOG` (default `info`) to stderr.
pub fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs `f` on a multi-threaded tokio runtime and turns its outcome into the exit code: 0, or
/// `error: ...` on stderr and 1 for a storage failure of a running node (it stopped rather
/// than break a promise), 2 for anything else.
pub fn run_main<F>(f: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), CliError>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Message(format!("cannot start the runtime: {e}"))),
    };
    let res = rt.block_on(f);
    // Stops the cluster tasks without waiting on stuck calls.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    match e {
        CliError::Exit(code, m) => {
            eprintln!("{m}");
            return ExitCode::from(*code);
        }
        _ => eprintln!("error: {e}"),
    }
    match e {
        CliError::Serve(ServeError::Storage { .. }) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// What ends a command with an error.
#[derive(Debug)]
pub enum CliError {
    /// The node could not start, or stopped.
    Serve(ServeError),
    /// Anything else, said plainly.
    Message(String),
    /// Not a failure but an answer told by the exit code (e.g. 3: no such key), with a line for
    /// stderr.
    Exit(u8, String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Serve(e) => e.fmt(f),
            CliError::Message(m) | CliError::Exit(_, m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

impl From<ServeError> for CliError {
    fn from(e: ServeError) -> CliError {
        CliError::Serve(e)
    }
}

impl From<String> for CliError {
    fn from(m: String) -> CliError {
        CliError::Message(m)
    }
}

#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct AppCli {
    #[command(subcommand)]
    cmd: Option<AppCmd>,
    /// Without a subcommand: a local 3-node cluster (see `demo`).
    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Subcommand, Debug)]
enum AppCmd {
    /// Run a node: serve one or more clusters of this app over HTTP.
    Node(Box<NodeArgs>),
    /// Start a 3-node cluster on 127.0.0.1 (child processes), bootstrap it, print its URLs
    /// (the default).
    Demo(DemoArgs),
    /// List, add, remove or promote the members of a cluster; exit code 2 on failure.
    Member(MemberArgs),
    /// Move mastership to another voter; exit code 2 on failure.
    Transfer(TransferArgs),
    /// Save a running cluster's state to a file, or restore one into a new cluster's data
    /// directory; exit code 2 on failure.
    Snapshot(SnapshotArgs),
}

/// The whole `main` of an app's program: `<name> node <flags>` runs one node of it (the
/// `clusterconsensus node` flags), `<name> [demo] [--base-port 9001] ...` a local 3-node cluster
/// of such nodes as child processes, printing the lines `hints` returns (how to try the app).
pub fn app_main<S: App>(
    name: &'static str,
    app: impl Fn() -> S,
    hints: impl Fn(&Demo) -> Vec<String>,
) -> ExitCode {
    let about = format!(
        "{name}: nodes of a replicated app (clusterconsensus); without a subcommand, a local \
         3-node cluster of them (demo)"
    );
    let matches = AppCli::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .get_matches();
    let cli = AppCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logs();
    run_main(async move {
        match cli.cmd {
            Some(AppCmd::Node(a)) => Ok(run_node(*a, app).await?),
            Some(AppCmd::Demo(d)) => demo(d, &hints).await,
            Some(AppCmd::Member(m)) => member(m).await,
            Some(AppCmd::Transfer(t)) => transfer(t).await,
            Some(AppCmd::Snapshot(a)) => snapshot(a, &app).await,
            None => demo(cli.demo, &hints).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Operator commands: `member` and `transfer`, for any app's cluster.
// ---------------------------------------------------------------------------------------------

/// Security flags of the client subcommands.
#[derive(Args, Debug, Clone)]
pub struct ClientSecurity {
    /// File whose first line is the cluster's token (sent as Authorization: Bearer).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an https:// node with.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl ClientSecurity {
    /// A client with these settings whose calls each end within `timeout_ms`.
    pub fn client(&self, timeout_ms: u64) -> Result<HttpClient, CliError> {
        let token = match &self.token_file {
            Some(f) => Some(Token::from_file(f)?),
            None => None,
        };
        Ok(HttpClient::secured(
            Duration::from_millis(timeout_ms),
            token.as_ref(),
            self.tls_ca.as_deref(),
        )?)
    }
}

/// Which cluster an operator command is about, through which node, and how it answers.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A node of the cluster, e.g. http://127.0.0.1:9001 (a follower forwards changes to its
    /// master).
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    pub cluster: String,
    /// Print the answer as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for each answer, in ms.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub security: ClientSecurity,
}

impl Target {
    fn url(&self, what: &str) -> String {
        clusterconsensus::wire::url(self.node.trim().trim_end_matches('/'), &self.cluster, what)
    }
}

/// The flags of `member`.
#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub cmd: MemberCmd,
}

/// `member list|add|remove|promote`.
#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// List the members: address, voter or learner, the master, reachable and lag as the
    /// master sees them (asked through --node).
    List(Target),
    /// Add a member (it must run unjoined, or be started with --join): by default a learner
    /// that the master promotes to voter once it has caught up.
    Add(AddArgs),
    /// Remove a member, voter or learner.
    Remove(ChangeArgs),
    /// Make a learner a voter (refused with ERR_STATE while it has not caught up: retry).
    Promote(ChangeArgs),
}

/// The flags of `member add`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("kind").args(["learner", "no_promote", "voter"])))]
pub struct AddArgs {
    #[command(flatten)]
    pub target: Target,
    /// A learner that the master promotes once it has caught up (the default).
    #[arg(long)]
    pub learner: bool,
    /// A learner that stays one until `member promote`.
    #[arg(long)]
    pub no_promote: bool,
    /// A voter at once (until it has caught up, the cluster needs a majority of the larger
    /// member list).
    #[arg(long)]
    pub voter: bool,
    /// The member-list version seen (the `version` of status); refused with ERR_SEQUENCE if
    /// the list changed since.
    #[arg(long, value_name = "V")]
    pub version: Option<u64>,
    /// The new member's address, as it advertises itself.
    #[arg(value_name = "ADDR")]
    pub addr: String,
}

/// The flags of `member remove` and `member promote`.
#[derive(Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The member-list version seen (the `version` of status); refused with ERR_SEQUENCE if
    /// the list changed since.
    #[arg(long, value_name = "V")]
    pub version: Option<u64>,
    /// The member's address.
    #[arg(value_name = "ADDR")]
    pub addr: String,
}

/// The flags of `transfer`.
#[derive(Args, Debug)]
pub struct TransferArgs {
    #[command(flatten)]
    pub target: Target,
    /// The voter to hand mastership to. Default: the most caught-up voter.
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
}

/// `member ...`: prints a table or a line (JSON with --json); `Err` (exit 2) when the node
/// cannot be asked or refuses.
pub async fn member(args: MemberArgs) -> Result<(), CliError> {
    match args.cmd {
        MemberCmd::List(t) => member_list(t).await,
        MemberCmd::Add(a) => {
            let (what, mut body) = ("members/add", json!({"addr": a.addr.trim()}));
            let done = if a.voter {
                body["voter"] = true.into();
                "added as a voter".to_string()
            } else if a.no_promote {
                body["promote"] = false.into();
                "added as a learner; it stays one until `member promote`".to_string()
            } else {
                "added as a learner; the master promotes it once it has caught up".to_string()
            };
            if let Some(v) = a.version {
                body["version"] = v.into();
            }
            admin(&a.target, what, body, &format!("{}: {done}", a.addr.trim())).await
        }
        MemberCmd::Remove(a) => {
            let mut body = json!({"addr": a.addr.trim()});
            if let Some(v) = a.version {
                body["version"] = v.into();
            }
            let done = format!("{}: removed", a.addr.trim());
            admin(&a.target, "members/remove", body, &done).await
        }
        MemberCmd::Promote(a) => {
            let mut body = json!({"addr": a.addr.trim()});
            if let Some(v) = a.version {
                body["version"] = v.into();
            }
            let done = format!("{}: promoted to voter", a.addr.trim());
            admin(&a.target, "members/promote", body, &done).await
        }
    }
}

/// `transfer`: asks the master (through any node) to hand over its mastership.
pub async fn transfer(args: TransferArgs) -> Result<(), CliError> {
    let body = match &args.to {
        Some(to) => json!({"to": to.trim()}),
        None => json!({}),
    };
    let done = match &args.to {
        Some(to) => format!(
            "mastership of {} transferred to {}",
            args.target.cluster, to
        ),
        None => format!(
            "mastership of {} transferred to the most caught-up voter",
            args.target.cluster
        ),
    };
    admin(&args.target, "transfer", body, &done).await
}

/// POSTs an admin call and reports its `{"fail","err"}` answer: `done` (or the answer, with
/// --json) on success, else `Err`. A refusal is printed as JSON with --json too, for scripts.
async fn admin(t: &Target, what: &str, body: Value, done: &str) -> Result<(), CliError> {
    let client = t.security.client(t.timeout_ms)?;
    let url = t.url(what);
    let (status, answer) = client
        .post(&url, body.to_string().into_bytes())
        .await
        .map_err(|e| format!("{what} through {}: {e}", t.node))?;
    let text = String::from_utf8_lossy(&answer);
    if status != 200 {
        return Err(format!(
            "{what}: {}",
            crate::client::http_error(&url, status, &answer)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&answer)
        .map_err(|e| format!("{what}: {url} answered something that is not JSON ({e}): {text}"))?;
    let result: clusterconsensus::wire::FailResult = serde_json::from_value(v.clone())
        .map_err(|e| format!("{what}: unexpected answer from {url} ({e}): {text}"))?;
    if t.json {
        println!("{v}");
    }
    match result.into_result() {
        Ok(()) => {
            if !t.json {
                println!("{done}");
            }
            Ok(())
        }
        Err(e) => Err(format!("{what} refused: {e}").into()),
    }
}

/// One row of `member list`.
#[derive(Debug, Serialize)]
struct MemberRow {
    addr: String,
    /// `voter` or `learner`.
    role: &'static str,
    /// A learner: whether the master promotes it once it has caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    promote: Option<bool>,
    master: bool,
    /// As the node whose view this is sees it (`None`: unknown).
    reachable: Option<bool>,
    /// Committed entries it is behind (known on the master only).
    lag: Option<u64>,
    /// The commit it is known to hold (known on the master only).
    matched: Option<u64>,
}

/// `member list`: the status of --node, or of its master when it knows one (the master knows
/// every member's progress); the node's own view if the master cannot be reached.
async fn member_list(t: Target) -> Result<(), CliError> {
    let client = t.security.client(t.timeout_ms)?;
    let status_of = |node: String| {
        let client = client.clone();
        let url = clusterconsensus::wire::url(&node, &t.cluster, "status");
        async move {
            let (code, body) = client.get(&url).await.map_err(|e| e.to_string())?;
            if code != 200 {
                return Err(crate::client::http_error(&url, code, &body).to_string());
            }
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("{url}: not JSON: {e}"))
        }
    };
    let node = t.node.trim().trim_end_matches('/').to_string();
    let mine = status_of(node.clone())
        .await
        .map_err(|e| format!("member list: {e}"))?;
    let mut view = mine.clone();
    let mut note = None;
    match mine["master"].as_str() {
        Some(m) if mine["role"] != "master" => match status_of(m.to_string()).await {
            Ok(v) if v["role"] == "master" => view = v,
            Ok(v) => {
                note = Some(format!(
                    "the master {m} answers as {}: reachability from {node}'s view, lag unknown",
                    v["role"]
                ))
            }
            Err(e) => {
                note = Some(format!(
                    "the master cannot be asked ({e}): reachability from {node}'s view, lag \
                     unknown"
                ))
            }
        },
        Some(_) => {}
        None => note = Some(format!("{node} knows no master: its own view, lag unknown")),
    }
    let rows = member_rows(&view);
    if t.json {
        let out = json!({
            "cluster": t.cluster,
            "master": view["master"],
            "version": view["version"],
            "view": view["self"],
            "members": rows,
        });
        println!("{out}");
    } else {
        print!("{}", member_table(&rows));
    }
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    Ok(())
}

/// The members in `status` (voters, then learners), with what it knows of each.
fn member_rows(status: &Value) -> Vec<MemberRow> {
    let me = status["self"].as_str().unwrap_or("");
    let master = status["master"].as_str();
    let on_master = status["role"] == "master";
    let peer = |addr: &str| {
        status["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["addr"] == addr))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let row = |addr: &str, role: &'static str, promote: Option<bool>| {
        let p = peer(addr);
        let (reachable, lag, matched) = if addr == me {
            let lag = on_master.then_some(0);
            (
                Some(true),
                lag,
                on_master.then(|| status["commit"].as_u64()).flatten(),
            )
        } else {
            (
                p["reachable"].as_bool(),
                p["lag"].as_u64(),
                p["matched"].as_u64(),
            )
        };
        MemberRow {
            addr: addr.to_string(),
            role,
            promote,
            master: master == Some(addr),
            reachable,
            lag,
            matched,
        }
    };
    let mut rows = Vec::new();
    for m in status["members"].as_array().into_iter().flatten() {
        if let Some(a) = m.as_str() {
            rows.push(row(a, "voter", None));
        }
    }
    for l in status["learners"].as_array().into_iter().flatten() {
        if let Some(a) = l["addr"].as_str() {
            let promote = l["promote"].as_bool().unwrap_or(true);
            rows.push(row(a, "learner", Some(promote)));
        }
    }
    rows
}

/// `member list`'s table: one line per member under a header, columns aligned.
fn member_table(rows: &[MemberRow]) -> String {
    let mut lines = vec![[
        "ADDRESS".to_string(),
        "ROLE".into(),
        "MASTER".into(),
        "REACHABLE".into(),
        "LAG".into(),
    ]];
    for r in rows {
        let role = match r.promote {
            Some(false) => "learner (no auto-promote)".to_string(),
            _ => r.role.to_string(),
        };
        let yes_no = |b: Option<bool>| match b {
            Some(true) => "yes".to_string(),
            Some(false) => "no".to_string(),
            None => "-".to_string(),
        };
        lines.push([
            r.addr.clone(),
            role,
            if r.master { "*".into() } else { String::new() },
            yes_no(r.reachable),
            r.lag.map_or("-".to_string(), |l| l.to_string()),
        ]);
    }
    let mut width = [0usize; 5];
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Backups: `snapshot save` and `snapshot restore`.
// ---------------------------------------------------------------------------------------------

/// The flags of `snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: SnapshotCmd,
}

/// `snapshot save|restore`.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stream a consistent snapshot of the committed state from a running node into FILE (its
    /// seq, member list and a checksum in the header); FILE appears only once complete.
    Save(SaveArgs),
    /// Check FILE and prepare --data-dir so that `node` started with the same --data-dir,
    /// --cluster and --advertise runs as the only member of a new cluster holding its state,
    /// ready to add members. A damaged or truncated file is refused and nothing is written.
    Restore(RestoreArgs),
}

/// The flags of `snapshot save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// The node to read the state from (its committed state: a follower's may lag the
    /// master's), e.g. http://127.0.0.1:9001.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    pub cluster: String,
    /// How long to wait for the answer to start, and for each part of it, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Print what was saved as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: ClientSecurity,
    /// The file to write.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The flags of `snapshot restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot file (from `snapshot save`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The data directory to prepare (it must hold no data for --cluster).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The id of the new cluster (the snapshot's own, or another).
    #[arg(long, value_name = "ID")]
    pub cluster: String,
    /// The address the restored node will advertise (its --advertise, or http://HOST:PORT of
    /// its --listen): its identity as the new cluster's first member.
    #[arg(long, value_name = "URL")]
    pub advertise: String,
    /// Print what was restored as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `snapshot save|restore`; `Err` (exit 2) on any failure, with nothing left at the file or
/// data directory.
pub async fn snapshot<S: App>(args: SnapshotArgs, app: impl Fn() -> S) -> Result<(), CliError> {
    match args.cmd {
        SnapshotCmd::Save(a) => {
            let client = a.security.client(a.timeout_ms)?;
            let saved = crate::backup::save(&client, &a.node, &a.cluster, &a.file)
                .await
                .map_err(|e| format!("snapshot save: {e}"))?;
            let m = &saved.meta;
            if a.json {
                let v = json!({
                    "file": a.file.display().to_string(),
                    "cluster": m.cluster, "seq": m.seq, "members": m.members,
                    "learners": m.learners, "bytes": m.bytes, "crc32": saved.crc32,
                });
                println!("{v}");
            } else {
                println!(
                    "saved cluster {} at seq {} ({} bytes, members {}) to {}",
                    m.cluster,
                    m.seq,
                    m.bytes,
                    m.members.join(", "),
                    a.file.display()
                );
            }
            Ok(())
        }
        SnapshotCmd::Restore(a) => {
            let (file, dir) = (a.file.clone(), a.data_dir.clone());
            let (cluster, advertise) = (a.cluster.clone(), a.advertise.clone());
            let template = app();
            let r = crate::backup::restore(&file, &dir, &cluster, &advertise, &template)
                .map_err(|e| format!("snapshot restore: {e}"))?;
            let m = &r.meta;
            if a.json {
                let v = json!({
                    "cluster": a.cluster, "seq": m.seq, "bytes": m.bytes,
                    "from_cluster": m.cluster, "wal": r.wal.display().to_string(),
                    "member": crate::server::trim_addr(&a.advertise),
                });
                println!("{v}");
            } else {
                println!(
                    "restored {} (cluster {} at seq {}, {} bytes) into {}: start `node --data-dir \
                     {} --cluster {} --advertise {}`, then add members",
                    a.file.display(),
                    m.cluster,
                    m.seq,
                    m.bytes,
                    r.wal.display(),
                    a.data_dir.display(),
                    a.cluster,
                    crate::server::trim_addr(&a.advertise)
                );
            }
            Ok(())
        }
    }
}
