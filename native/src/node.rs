//! `clusterconsensus node`: the server process. Opens each cluster's storage, restores or
//! creates its participant, starts its task, serves HTTP until SIGINT/SIGTERM, and runs the
//! `--bootstrap --peer` flow.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clusterconsensus::kv::KvStore;
use clusterconsensus::{Config, Participant};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, info, warn};

use crate::auth::Auth;
use crate::client::HttpClient;
use crate::cluster::{self, Cluster};
use crate::http::{self, Shared};
use crate::storage::Store;
use crate::tls;

/// Everything `node` needs, from the command line.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub listen: String,
    pub clusters: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub advertise: Option<String>,
    pub bootstrap: bool,
    pub peers: Vec<String>,
    /// The local address outgoing peer connections are bound to (None: chosen by route).
    pub source_addr: Option<IpAddr>,
    pub www: PathBuf,
    pub max_body: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub request_timeout_ms: u64,
    pub snapshot_every: u64,
    /// Security and limits (README, Reliability and security).
    pub token_file: Option<PathBuf>,
    pub auth_reads: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub max_inflight: usize,
    pub max_queued: usize,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
}

/// Runs a node until a shutdown signal. `Err` is a startup failure, said plainly.
pub async fn run(opts: NodeOptions) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    let scheme = if opts.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise = match &opts.advertise {
        Some(a) => trim_addr(a),
        None => {
            // The host as written (so `localhost` stays `localhost`), the port as bound (so
            // `:0` becomes the real one).
            let host = opts.listen.rsplit_once(':').map_or("", |(h, _)| h);
            let host = if host.is_empty() {
                local.ip().to_string()
            } else {
                host.to_string()
            };
            if local.ip().is_unspecified() {
                warn!("listening on {local}: pass --advertise with an address the peers can reach");
            }
            format!("{scheme}://{host}:{}", local.port())
        }
    };
    let auth = match &opts.token_file {
        Some(f) => Some(Auth::from_file(f)?),
        None => None,
    };
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(c, k)?)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if let Some(ip) = opts.source_addr {
        // Said once at startup rather than as a failed connect on every peer call.
        std::net::UdpSocket::bind((ip, 0))
            .map_err(|e| format!("cannot use --source-addr {ip}: {e}"))?;
    }
    let client = HttpClient::with_source(
        Duration::from_millis(opts.request_timeout_ms),
        auth.as_ref().map(Auth::header),
        tls::client_config(opts.tls_ca.as_deref())?,
        opts.source_addr,
    );

    let mut clusters = BTreeMap::new();
    let mut to_bootstrap = Vec::new();
    for id in &opts.clusters {
        if clusters.contains_key(id) {
            return Err(format!("cluster {id:?} given twice"));
        }
        let cfg = config(&opts, id, &advertise);
        cfg.validate().map_err(|e| format!("cluster {id:?}: {e}"))?;
        let store = match &opts.data_dir {
            Some(dir) => Store::open(dir, id)?,
            None => Store::Memory,
        };
        let stored = store.load().map_err(|e| format!("cluster {id:?}: {e}"))?;
        let resumed = stored.hard.is_some();
        if let Some(h) = &stored.hard {
            if h.self_addr != advertise {
                return Err(format!(
                    "{} belongs to the member {}, not {advertise}: pass --advertise {} or use another --data-dir",
                    store.path().map_or("the data".into(), |p| p.display().to_string()),
                    h.self_addr,
                    h.self_addr
                ));
            }
        }
        let participant = Participant::restore(cfg, KvStore::new(), stored, cluster::now_ms())
            .map_err(|e| format!("cluster {id:?}: {e}"))?;
        if resumed {
            info!(
                cluster = %id,
                role = participant.role().as_str(),
                commit = participant.commit(),
                instance = participant.instance(),
                "resumed from {}",
                store.path().map_or("memory".into(), |p| p.display().to_string())
            );
            if opts.bootstrap {
                info!(cluster = %id, "existing data: --bootstrap and --peer are ignored");
            }
        } else if opts.bootstrap {
            to_bootstrap.push(id.clone());
        } else {
            info!(cluster = %id, "unjoined: waiting for a start from a master");
        }
        clusters.insert(
            id.clone(),
            Cluster::spawn(participant, store, client.clone()),
        );
    }

    let peers: Vec<String> = opts.peers.iter().map(|p| trim_addr(p)).collect();
    for id in to_bootstrap {
        let c = clusters[&id].clone();
        tokio::spawn(cluster::bootstrap(c, peers.clone(), client.clone()));
    }

    let shared = Arc::new(Shared {
        clusters,
        max_body: opts.max_body,
        www: opts.www.clone(),
        auth,
        auth_reads: opts.auth_reads,
        inflight: Arc::new(tokio::sync::Semaphore::new(opts.max_inflight.max(1))),
        body_timeout: Duration::from_millis(opts.body_timeout_ms.max(1)),
    });
    let connections = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let header_timeout = Duration::from_millis(opts.header_timeout_ms.max(1));
    info!(%advertise, listen = %local, clusters = ?opts.clusters, "serving");
    // One machine-readable line on stdout (the logs go to stderr): scripts and the tests read it.
    println!("listening on {advertise}");

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, _) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, do not spin.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past --max-connections a new connection is closed at once: file descriptors
                // and memory stay bounded whatever clients do.
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    debug!("over --max-connections: closing a new connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |req| http::handle(shared.clone(), req));
                let mut builder = hyper::server::conn::http1::Builder::new();
                // Slow clients (slowloris): the head of every request, the first included,
                // must arrive within the header timeout, else the connection is closed.
                builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
                match &tls {
                    None => {
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                debug!("connection: {e}");
                            }
                            drop(permit);
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => return debug!("TLS handshake: {e}"),
                                Err(_) => return debug!("TLS handshake timed out"),
                            };
                            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                            if let Err(e) = conn.await {
                                debug!("connection: {e}");
                            }
                            drop(permit);
                        });
                    }
                }
            }
            sig = &mut stop => {
                info!("{sig}: shutting down");
                break;
            }
        }
    }
    drop(listener);
    // Calls in flight get a moment to finish; everything acknowledged is already on disk.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
    Ok(())
}

fn config(opts: &NodeOptions, id: &str, advertise: &str) -> Config {
    let mut cfg = Config::new(id, advertise);
    cfg.heartbeat_ms = opts.heartbeat_ms;
    cfg.election_min_ms = opts.election_min_ms;
    cfg.election_max_ms = opts.election_max_ms;
    cfg.snapshot_every = opts.snapshot_every;
    cfg.request_timeout_ms = opts.request_timeout_ms;
    cfg.max_queued = opts.max_queued;
    // Election timeouts must differ between nodes: seed from the address, the cluster and the
    // moment (RandomState adds per-process randomness on top).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(advertise.as_bytes());
    h.write(id.as_bytes());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(t.as_nanos());
    cfg.seed = h.finish();
    cfg
}

/// A member address is a base URL without trailing slash.
pub fn trim_addr(a: &str) -> String {
    a.trim().trim_end_matches('/').to_string()
}

/// Resolves on SIGINT or SIGTERM, naming it.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
