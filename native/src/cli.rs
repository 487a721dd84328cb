//! The command line of a node for any app (feature `cli`): the flags of `node` and `demo`, and
//! [`app_main`], the whole `main` of an example app. The `clusterconsensus` binary is these
//! plus the key-value app's client subcommands.
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

use crate::auth::Token;
use crate::server::{
    shutdown_signal, Limits, Server, ServerBuilder, Startup, Storage, Timing, TlsFiles,
};
use crate::{App, ServeError};

pub use crate::demo::{run as demo, Demo};

/// Security and resource limits of a node.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// File whose first line is the cluster's token (16+ visible ASCII characters, the same on
    /// every member). Peer calls, submit, members/* and consistent reads then need
    /// `Authorization: Bearer <token>` (else 401 ERR_DENIED); the node sends it to its peers.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
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
    /// Commits between snapshots: the on-disk log holds at most this many entries.
    #[arg(long, default_value_t = 10_000)]
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
            });
        if let Some(a) = &self.advertise {
            b = b.advertise(a);
        }
        if let Some(ip) = self.source_addr {
            b = b.source_addr(ip);
        }
        if let Some(f) = &l.token_file {
            b = b.token(Token::from_file(f)?, l.auth_reads);
        }
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
        let startup = match self.bootstrap {
            true => Startup::Bootstrap {
                peers: self.peers.clone(),
            },
            false => Startup::Join,
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
            None => demo(cli.demo, &hints).await,
        }
    })
}
