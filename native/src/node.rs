//! `clusterconsensus node`: the server process. Opens each cluster's storage, restores or
//! creates its participant, starts its task, serves HTTP until SIGINT/SIGTERM, and runs the
//! `--bootstrap --peer` flow.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clusterconsensus::{Config, KvStore, Participant};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, info, warn};

use crate::client::HttpClient;
use crate::cluster::{self, Cluster};
use crate::http::{self, Shared};
use crate::storage::Store;

/// Everything `node` needs, from the command line.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub listen: String,
    pub clusters: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub advertise: Option<String>,
    pub bootstrap: bool,
    pub peers: Vec<String>,
    pub www: PathBuf,
    pub max_body: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub request_timeout_ms: u64,
    pub snapshot_every: u64,
}

/// Runs a node until a shutdown signal. `Err` is a startup failure, said plainly.
pub async fn run(opts: NodeOptions) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    let advertise = match &opts.advertise {
        Some(a) => trim_addr(a),
        None => {
            // The host as written (so `localhost` stays `localhost`), the port as bound (so
            // `:0` becomes the real one).
            let host = opts.listen.rsplit_once(':').map_or("", |(h, _)| h);
            let host = if host.is_empty() { local.ip().to_string() } else { host.to_string() };
            if local.ip().is_unspecified() {
                warn!("listening on {local}: pass --advertise with an address the peers can reach");
            }
            format!("http://{host}:{}", local.port())
        }
    };
    let client = HttpClient::new(Duration::from_millis(opts.request_timeout_ms));

    let mut clusters = BTreeMap::new();
    let mut to_bootstrap = Vec::new();
    for id in &opts.clusters {
        if clusters.contains_key(id) {
            return Err(format!("cluster {id:?} given twice"));
        }
        let cfg = config(&opts, id, &advertise);
        cfg.validate().map_err(|e| format!("cluster {id:?}: {}", e.message))?;
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
        clusters.insert(id.clone(), Cluster::spawn(participant, store, client.clone()));
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
    });
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
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| http::handle(shared.clone(), req)),
                    );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!("connection: {e}");
                    }
                });
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
