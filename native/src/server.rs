//! The node: [`ServerBuilder`] gathers the settings, [`ServerBuilder::bind`] opens the socket
//! and each cluster's storage and restores its participant, [`Server::serve`] runs until a
//! shutdown future resolves (or a storage failure stops it).

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clusterconsensus::{Config, Participant, Request, Role};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::auth::{Policy, Token, VerifiedClientCert};
use crate::client::HttpClient;
use crate::cluster::{self, Cluster, Task};
use crate::http::{self, Shared};
use crate::storage::Store;
use crate::{tls, App, ServeError};

/// Where a node keeps its clusters' durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// One write-ahead log per cluster, `<dir>/<cluster>.wal`. With existing data the node
    /// resumes as the member it was.
    Dir(PathBuf),
    /// Nothing durable: the state is lost when the node stops. For experiments and tests.
    Memory,
}

/// How a cluster starts on a node that has no data for it yet (with data it resumes as the
/// member it was, whatever this says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Wait unjoined for a master's `start` (after some member ran `members/add` for this
    /// node's address).
    Join,
    /// Become master of a new one-member cluster, then add each peer (base URLs of nodes that
    /// run unjoined), one at a time, each once it answers.
    Bootstrap { peers: Vec<String> },
    /// Ask the members at `via` (base URLs; any member will do, a follower forwards) to add
    /// this node, one after the other, until a master starts it: it joins as a learner and
    /// becomes a voter once it has caught up. Its own address in `via` is skipped.
    ///
    /// The node whose own address comes **first** in `via` founds the cluster instead (as
    /// `Bootstrap` with no peers), so every node of a set can be given the same list: the pods
    /// of a StatefulSet, the services of a compose file. Before it does, it asks the others in
    /// `via` for their status: if one answers as a member of the cluster, the cluster already
    /// exists (this node lost its data) and it joins through them rather than found a second
    /// cluster of the same name.
    JoinVia { via: Vec<String> },
}

/// Protocol timing. Every member of a cluster should use the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often the master sends heartbeats (and re-sends an unacknowledged accept).
    pub heartbeat_ms: u64,
    /// Election timeouts are drawn from `[election_min_ms, election_max_ms)`. A follower that
    /// heard from no master for its timeout campaigns; a master without a majority for
    /// `election_min_ms` steps down.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Time limit of one call to a peer (connect, send, answer); past it the call failed.
    pub request_timeout_ms: u64,
    /// The most entries the log on disk holds: a snapshot is due after this many commits, or
    /// earlier once the log since the last one holds as many bytes of changes as the state
    /// (at least 8 MiB; `Config::snapshot_every`).
    pub snapshot_every: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat_ms: 100,
            election_min_ms: 1000,
            election_max_ms: 1600,
            request_timeout_ms: 1000,
            snapshot_every: 100_000,
        }
    }
}

/// Resource limits: what a node accepts before it refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (larger: `413`). A snapshot larger than a quarter of it
    /// (or than 1 MiB) travels to a joining or lagging node in chunks (a chunked `start`). The
    /// sender sizes the chunks by its own limit: give every node of a cluster the same one.
    pub max_body: usize,
    /// Client calls (submit, members/*, readindex, reads, status) handled at once; more get
    /// `503 ERR_STATE` at once. The peer protocol is not counted.
    pub max_inflight: usize,
    /// Changes the master queues for its next accepts; past it submits get `ERR_STATE`.
    pub max_queued: usize,
    /// Open connections; a new one past it is closed at once.
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this; slower connections,
    /// idle keep-alive ones included, are closed.
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this (else `408`).
    pub body_timeout_ms: u64,
    /// Watchers (`watch` streams and long polls) served at once by this node; more get `503`.
    pub max_watchers: usize,
    /// Recent entries each cluster keeps for watchers that start or resume behind (a `from`
    /// older than them is a gap): at most this many, ...
    pub watch_window: usize,
    /// ... and at most this many bytes of them (the newest entry is kept whatever its size).
    pub watch_window_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 16 << 20,
            max_inflight: 1024,
            max_queued: 100_000,
            max_connections: 4096,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_watchers: 2048,
            watch_window: 10_000,
            watch_window_bytes: 32 << 20,
        }
    }
}

/// HTTPS: the certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

struct ClusterSpec<S> {
    id: String,
    app: S,
    startup: Startup,
}

/// The settings of a node; [`ServerBuilder::bind`] starts it. See the crate docs for an
/// example.
pub struct ServerBuilder<S> {
    listen: String,
    storage: Storage,
    advertise: Option<String>,
    timing: Timing,
    limits: Limits,
    token: Option<Token>,
    peer_token: Option<Token>,
    auth_reads: bool,
    tls: Option<TlsFiles>,
    peer_client_cert_auth: bool,
    tls_ca: Option<PathBuf>,
    source_addr: Option<IpAddr>,
    www: Option<PathBuf>,
    ready_max_lag: u64,
    transfer_on_shutdown: Option<Duration>,
    force_new_cluster: bool,
    clusters: Vec<ClusterSpec<S>>,
}

/// The default of [`ServerBuilder::transfer_on_shutdown`]: how long a stopping master waits
/// for its hand-over.
pub const TRANSFER_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// The default of [`ServerBuilder::ready_max_lag`].
pub(crate) const READY_MAX_LAG: u64 = 1000;

impl<S> std::fmt::Debug for ServerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.clusters.iter().map(|c| c.id.as_str()).collect();
        f.debug_struct("ServerBuilder")
            .field("listen", &self.listen)
            .field("storage", &self.storage)
            .field("advertise", &self.advertise)
            .field("clusters", &ids)
            .finish_non_exhaustive()
    }
}

impl<S: App> ServerBuilder<S> {
    /// A node listening on `listen` (`HOST:PORT`; port 0 picks a free one) that keeps its
    /// state in `storage`. Add at least one cluster.
    pub fn new(listen: impl Into<String>, storage: Storage) -> ServerBuilder<S> {
        ServerBuilder {
            listen: listen.into(),
            storage,
            advertise: None,
            timing: Timing::default(),
            limits: Limits::default(),
            token: None,
            peer_token: None,
            auth_reads: false,
            tls: None,
            peer_client_cert_auth: false,
            tls_ca: None,
            source_addr: None,
            www: None,
            ready_max_lag: READY_MAX_LAG,
            transfer_on_shutdown: Some(TRANSFER_ON_SHUTDOWN),
            force_new_cluster: false,
            clusters: Vec::new(),
        }
    }

    /// Serves cluster `id`, replicating `app` (the initial state, and the settings a restored
    /// state is built with), starting as `startup` says when there is no data for it yet.
    pub fn cluster(mut self, id: impl Into<String>, app: S, startup: Startup) -> Self {
        self.clusters.push(ClusterSpec {
            id: id.into(),
            app,
            startup,
        });
        self
    }

    /// This node's address as its peers reach it: its identity in the member list. Default:
    /// `http://HOST:PORT` (`https://` with TLS) of the listening socket, the host as written
    /// in `listen` and the port as bound.
    pub fn advertise(mut self, url: impl Into<String>) -> Self {
        self.advertise = Some(trim_addr(&url.into()));
        self
    }

    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The clients' token (`--token-file`): `submit`, `members/*` and consistent reads then
    /// need `Authorization: Bearer <token>` (else `401 ERR_DENIED`, decided before the body is
    /// read), and so do the peer calls unless there is a [`peer_token`](Self::peer_token);
    /// without one the node also sends it on its own calls. With `auth_reads`, `status`,
    /// `metrics` and plain reads need it too.
    pub fn token(mut self, token: Token, auth_reads: bool) -> Self {
        self.token = Some(token);
        self.auth_reads = auth_reads;
        self
    }

    /// The members' token (`--peer-token-file`): the peer calls
    /// ([`Method::is_peer_call`](clusterconsensus::wire::Method::is_peer_call)) then need it
    /// and the client token no longer opens them; it opens the client calls too (a member
    /// forwards clients' calls with it). The node sends its first token on all its own calls.
    /// See [`Token::parse`] for several tokens (rotation).
    pub fn peer_token(mut self, token: Token) -> Self {
        self.peer_token = Some(token);
        self
    }

    /// Peer calls must also come over a connection with a TLS client certificate that chains
    /// to [`tls_ca`](Self::tls_ca) (`--peer-client-cert-auth`); needs [`tls`](Self::tls) and
    /// `tls_ca`. The node presents its own TLS certificate to peers that ask for one (with or
    /// without this), so the flag can be turned on one member at a time.
    pub fn peer_client_cert_auth(mut self, on: bool) -> Self {
        self.peer_client_cert_auth = on;
        self
    }

    /// Serve HTTPS with this certificate and key.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// The CA certificates (PEM) that `https://` peers' certificates must chain to.
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }

    /// Binds every outgoing connection to peers to the local address `ip` (a multi-homed host:
    /// the address its peers and their firewalls expect). Default: the kernel picks by route.
    pub fn source_addr(mut self, ip: IpAddr) -> Self {
        self.source_addr = Some(ip);
        self
    }

    /// Serve the files of `dir` at `/` (the dashboard); without it only `/_clusterc/` answers.
    pub fn www(mut self, dir: impl Into<PathBuf>) -> Self {
        self.www = Some(dir.into());
        self
    }

    /// `GET /readyz` answers 200 only while this node is at most `entries` committed entries
    /// behind its master (default 1000), besides having heard from it within the
    /// election timeout.
    pub fn ready_max_lag(mut self, entries: u64) -> Self {
        self.ready_max_lag = entries;
        self
    }

    /// When [`Server::serve`]'s shutdown resolves, each cluster this node is master of first
    /// hands its mastership to the most caught-up voter (docs/PROTOCOL.md section 9), waiting
    /// at most `within` for all of them while it still serves the peers; the others then
    /// elect no one, they follow the new master at once. `None` (`--no-transfer-on-shutdown`)
    /// leaves at once, and the others wait out an election timeout. Default: 2 s.
    pub fn transfer_on_shutdown(mut self, within: Option<Duration>) -> Self {
        self.transfer_on_shutdown = within;
        self
    }

    /// `--force-new-cluster`: each cluster restarts with this node as its only member, keeping
    /// everything it committed, for a cluster whose majority is lost for good (the core's
    /// [`Stored::force_new_cluster`](clusterconsensus::Stored::force_new_cluster) decides
    /// how). The rewrite is durable before the node serves. [`bind`](Self::bind) fails
    /// ([`ServeError::ForceNewCluster`]) for a cluster with no committed state here. Run it on
    /// one node only, once: the other members must never come back with their old data.
    pub fn force_new_cluster(mut self, on: bool) -> Self {
        self.force_new_cluster = on;
        self
    }

    /// Opens the listening socket and each cluster's storage, and restores each cluster's
    /// participant (nothing runs until [`Server::serve`]).
    pub async fn bind(self) -> Result<Server<S>, ServeError> {
        if self.clusters.is_empty() {
            return Err(ServeError::NoClusters);
        }
        let bind_err = |source| ServeError::Bind {
            addr: self.listen.clone(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None => {
                // The host as written (so `localhost` stays `localhost`), the port as bound (so
                // `:0` becomes the real one).
                let host = self.listen.rsplit_once(':').map_or("", |(h, _)| h);
                let host = if host.is_empty() {
                    local.ip().to_string()
                } else {
                    host.to_string()
                };
                if local.ip().is_unspecified() {
                    warn!("listening on {local}: advertise an address the peers can reach");
                }
                format!("{scheme}://{host}:{}", local.port())
            }
        };
        let client_ca = match (self.peer_client_cert_auth, &self.tls, &self.tls_ca) {
            (false, _, _) => None,
            (true, Some(_), Some(ca)) => Some(ca.as_path()),
            (true, _, _) => {
                return Err(ServeError::Tls(
                    "--peer-client-cert-auth needs --tls-cert, --tls-key and --tls-ca".into(),
                ))
            }
        };
        let tls = match &self.tls {
            Some(f) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(&f.cert, &f.key, client_ca).map_err(ServeError::Tls)?,
            )),
            None => None,
        };
        let auth = Policy {
            client: self.token,
            peer: self.peer_token,
            auth_reads: self.auth_reads,
            peer_cert: self.peer_client_cert_auth,
        };
        if let (Some(c), Some(p)) = (&auth.client, &auth.peer) {
            if c.overlaps(p) {
                // Right in the middle of an upgrade to a peer token, wrong once it is done.
                warn!("a client token is also a peer token: clients can make the peer calls");
            }
        }
        if let Some(ip) = self.source_addr {
            // Said once at startup rather than as a failed connect on every peer call.
            if let Err(source) = std::net::UdpSocket::bind((ip, 0)) {
                return Err(ServeError::SourceAddr { ip, source });
            }
        }
        let client = HttpClient::with_source(
            Duration::from_millis(self.timing.request_timeout_ms),
            auth.outgoing(),
            tls::client_config(
                self.tls_ca.as_deref(),
                self.tls
                    .as_ref()
                    .map(|f| (f.cert.as_path(), f.key.as_path())),
            )
            .map_err(ServeError::Tls)?,
            self.source_addr,
        );

        let mut clusters = BTreeMap::new();
        let mut tasks = Vec::new();
        let mut to_bootstrap = Vec::new();
        for spec in self.clusters {
            let id = spec.id;
            if clusters.contains_key(&id) {
                return Err(ServeError::DuplicateCluster(id));
            }
            let cfg = config(&self.timing, &self.limits, &id, &advertise);
            if let Err(error) = cfg.validate() {
                return Err(ServeError::Config { cluster: id, error });
            }
            let open_err = |message| ServeError::StorageOpen {
                cluster: id.clone(),
                message,
            };
            let store = match &self.storage {
                Storage::Dir(dir) => Store::open(dir, &id).map_err(open_err)?,
                Storage::Memory => Store::Memory,
            };
            let stored = store.load().map_err(open_err)?;
            let resumed = stored.hard.is_some();
            let where_ = store
                .path()
                .map_or("memory".to_string(), |p| p.display().to_string());
            if let Some(h) = &stored.hard {
                if h.self_addr != advertise {
                    return Err(ServeError::WrongMember {
                        path: where_,
                        stored: h.self_addr.clone(),
                        advertise,
                    });
                }
            }
            let mut stored = stored;
            if self.force_new_cluster {
                let forced = |message| ServeError::ForceNewCluster {
                    cluster: id.clone(),
                    message,
                };
                let rewrite = stored.force_new_cluster().map_err(|e| forced(e.message))?;
                // Durable before anything is served: a crash from here on comes back forced.
                store.apply(&rewrite).map_err(forced)?;
                warn!(
                    cluster = %id,
                    commit = rewrite.hard.commit,
                    "--force-new-cluster: this node is now the only member of the cluster; \
                     never start its old members again with their data"
                );
            }
            let mut participant = Participant::restore(cfg, spec.app, stored, cluster::now_ms())
                .map_err(|error| ServeError::Restore {
                    cluster: id.clone(),
                    error,
                })?;
            match spec.startup {
                startup if resumed => {
                    info!(
                        cluster = %id,
                        role = participant.role().as_str(),
                        commit = participant.commit(),
                        instance = participant.instance(),
                        "resumed from {where_}"
                    );
                    if startup != Startup::Join {
                        info!(cluster = %id, "existing data: bootstrap and peers are ignored");
                    }
                }
                Startup::Bootstrap { peers } => {
                    to_bootstrap.push((id.clone(), peers.iter().map(|p| trim_addr(p)).collect()))
                }
                Startup::Join => {
                    info!(cluster = %id, "unjoined: waiting for a start from a master")
                }
                Startup::JoinVia { via } => {
                    let via: Vec<String> = via.iter().map(|v| trim_addr(v)).collect();
                    let others: Vec<String> =
                        via.iter().filter(|v| **v != advertise).cloned().collect();
                    let first = via.first() == Some(&advertise);
                    if others.is_empty() && !first {
                        return Err(ServeError::Config {
                            cluster: id,
                            error: clusterconsensus::ConfigError(
                                "join needs the address of another member".into(),
                            ),
                        });
                    }
                    if first && !cluster_exists(&client, &id, &others).await {
                        info!(cluster = %id, "first of the join list: founding the cluster");
                        to_bootstrap.push((id.clone(), Vec::new()));
                    } else {
                        info!(cluster = %id, via = ?others, "asking to join");
                        // The requests it queues go out once the task runs.
                        let now = cluster::now_ms();
                        if let Err(e) = participant.join(now, others) {
                            return Err(ServeError::Config {
                                cluster: id,
                                error: clusterconsensus::ConfigError(e.to_string()),
                            });
                        }
                    }
                }
            }
            let window = crate::watch::WindowLimits {
                entries: self.limits.watch_window,
                bytes: self.limits.watch_window_bytes,
            };
            let (handle, task) = Cluster::new(participant, store, client.clone(), window);
            clusters.insert(id, handle);
            tasks.push(task);
        }

        let shared = Arc::new(Shared {
            clusters,
            max_body: self.limits.max_body,
            www: self.www,
            auth,
            inflight: Arc::new(tokio::sync::Semaphore::new(self.limits.max_inflight.max(1))),
            body_timeout: Duration::from_millis(self.limits.body_timeout_ms.max(1)),
            ready_max_lag: self.ready_max_lag,
            watchers: Arc::new(tokio::sync::Semaphore::new(self.limits.max_watchers)),
            max_watchers: self.limits.max_watchers,
        });
        Ok(Server {
            listener,
            local,
            advertise,
            tls,
            client,
            shared,
            tasks,
            to_bootstrap,
            max_connections: self.limits.max_connections.max(1),
            header_timeout: Duration::from_millis(self.limits.header_timeout_ms.max(1)),
            transfer_on_shutdown: self.transfer_on_shutdown,
        })
    }
}

/// A node whose socket and storage are open: [`Server::serve`] runs it.
pub struct Server<S: App> {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    advertise: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    client: HttpClient,
    shared: Arc<Shared<S>>,
    tasks: Vec<Task<S>>,
    to_bootstrap: Vec<(String, Vec<String>)>,
    max_connections: usize,
    header_timeout: Duration,
    transfer_on_shutdown: Option<Duration>,
}

impl<S: App> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.local)
            .field("advertise", &self.advertise)
            .field("clusters", &self.shared.clusters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S: App> Server<S> {
    /// A node of the settings in `ServerBuilder`.
    pub fn builder(listen: impl Into<String>, storage: Storage) -> ServerBuilder<S> {
        ServerBuilder::new(listen, storage)
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// This node's address in the member list (what peers give to `members/add`).
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Runs the node: each cluster's task (and the bootstrap flow of those that bootstrap) and
    /// the HTTP server, until `shutdown` resolves (then it stops accepting, lets calls in flight
    /// finish for up to 2 s, stops everything it started and returns `Ok`), or until a storage
    /// failure (then it stops at once and returns [`ServeError::Storage`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            listener,
            local,
            advertise,
            tls,
            client,
            shared,
            tasks,
            to_bootstrap,
            max_connections,
            header_timeout,
            transfer_on_shutdown,
        } = self;
        // Everything this node spawns lives in these sets: dropped when `serve` returns, they
        // abort what still runs (a cluster task's writer thread ends with it).
        let mut clusters = JoinSet::new();
        let mut connections = JoinSet::new();
        let (fatal_tx, mut fatal) = mpsc::unbounded_channel();
        for task in tasks {
            task.start(&mut clusters, fatal_tx.clone())?;
        }
        for (id, peers) in to_bootstrap {
            let c = shared.clusters[&id].clone();
            clusters.spawn(crate::bootstrap::bootstrap(c, peers, client.clone()));
        }
        let ids: Vec<&String> = shared.clusters.keys().collect();
        info!(%advertise, listen = %local, clusters = ?ids, "serving");

        let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = std::pin::pin!(shutdown);
        // After `shutdown`: the hand-over of the clusters this node is master of, during which
        // it goes on serving (the target's prepare, the new master's first accept).
        let mut handing: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let failed = loop {
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
                    // Past max_connections a new connection is closed at once: file
                    // descriptors and memory stay bounded whatever clients do.
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        debug!("over the connection limit: closing a new connection");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    // Slow clients (slowloris): the head of every request, the first included,
                    // must arrive within the header timeout, else the connection is closed.
                    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
                    let watcher = graceful.watcher();
                    let acceptor = tls.clone();
                    connections.spawn(async move {
                        // Each request says whether its connection proved a client certificate
                        // (the peer calls may need one: crate::auth).
                        let service = |cert: bool| {
                            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                                if cert {
                                    req.extensions_mut().insert(VerifiedClientCert);
                                }
                                http::handle(shared.clone(), req)
                            })
                        };
                        let served = match acceptor {
                            None => {
                                // A connection that opens with a watch stream is served on the
                                // streams' own lower-priority threads (watch::STREAM_NICE). Its
                                // first bytes are only peeked at: hyper reads them as usual. No
                                // bytes within the header timeout: closed, as hyper would.
                                let mut head = [0u8; 512];
                                let stream_request = match tokio::time::timeout(header_timeout, stream.peek(&mut head)).await {
                                    Ok(Ok(n)) => crate::watch::is_stream_request(&head[..n]),
                                    Ok(Err(e)) => return debug!("connection: {e}"),
                                    Err(_) => return debug!("no request within the header timeout"),
                                };
                                let conn = builder.serve_connection(TokioIo::new(stream), service(false));
                                let served = watcher.watch(conn);
                                if stream_request && crate::watch::stream_nice() > 0 {
                                    match crate::watch::on_stream_runtime(served).await {
                                        Some(served) => served,
                                        None => return debug!("a watch connection's task failed"),
                                    }
                                } else {
                                    served.await
                                }
                            }
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => return debug!("TLS handshake: {e}"),
                                    Err(_) => return debug!("TLS handshake timed out"),
                                };
                                // Offered certificates were verified in the handshake.
                                let cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                                let conn = builder.serve_connection(TokioIo::new(stream), service(cert));
                                watcher.watch(conn).await
                            }
                        };
                        if let Err(e) = served {
                            debug!("connection: {e}");
                        }
                        drop(permit);
                    });
                }
                // Reap finished connections so the set stays the size of the open ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                e = fatal.recv() => break e,
                () = &mut stop, if handing.is_none() => {
                    match transfer_on_shutdown {
                        Some(within) => {
                            let clusters: Vec<Cluster<S>> = shared.clusters.values().cloned().collect();
                            handing = Some(Box::pin(hand_over_all(clusters, within)));
                        }
                        None => {
                            debug!("shutting down: no new connections");
                            break None;
                        }
                    }
                }
                () = async { handing.as_mut().expect("guarded").await }, if handing.is_some() => {
                    debug!("shutting down: no new connections");
                    break None;
                }
            }
        };
        drop(listener);
        if let Some(e) = failed {
            return Err(e);
        }
        // Calls in flight get a moment to finish; everything acknowledged is already durable.
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        Ok(())
    }
}

/// Hands over the mastership of every cluster in `clusters` this node is master of, all at
/// once, each waiting at most `within` (the core abandons a transfer by itself after its
/// election timeout; this bounds the wait for a slower answer).
async fn hand_over_all<S: App>(clusters: Vec<Cluster<S>>, within: Duration) {
    let mut all = JoinSet::new();
    for c in clusters {
        all.spawn(async move {
            let master = c.inspect(|p, _| p.role() == Role::Master).await;
            if master != Ok(true) {
                return;
            }
            info!(cluster = %c.id, "shutting down: handing mastership over first");
            let req = Request::Transfer(clusterconsensus::wire::Transfer::default());
            match tokio::time::timeout(within, c.call(req)).await {
                Ok(Ok(r)) => match r.err() {
                    None => info!(cluster = %c.id, "mastership handed over"),
                    Some(e) => warn!(cluster = %c.id, "mastership not handed over: {e}"),
                },
                Ok(Err(_)) => {}
                Err(_) => warn!(cluster = %c.id, "mastership not handed over within {within:?}"),
            }
        });
    }
    while all.join_next().await.is_some() {}
}

fn config(timing: &Timing, limits: &Limits, id: &str, advertise: &str) -> Config {
    let mut cfg = Config::new(id, advertise);
    cfg.heartbeat_ms = timing.heartbeat_ms;
    cfg.election_min_ms = timing.election_min_ms;
    cfg.election_max_ms = timing.election_max_ms;
    cfg.snapshot_every = timing.snapshot_every;
    cfg.request_timeout_ms = timing.request_timeout_ms;
    cfg.max_queued = limits.max_queued;
    // A snapshot travels in `start`s of at most a quarter of the largest body a peer accepts
    // (room for the rest of the body), 1 MiB at most: a larger state is a chunked transfer.
    cfg.snapshot_chunk = (limits.max_body / 4).clamp(64, 1 << 20);
    // A catch-up batch (an accept's `entries`) is bounded the same way: its JSON escaping can
    // grow the changes, and a quarter of the body limit leaves room for that.
    cfg.catchup_batch = cfg.snapshot_chunk;
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

/// Whether any of `others` answers its status for cluster `id` as a member (not unjoined):
/// then the cluster exists and a node first in a join list must not found another. Asked all
/// at once, each within the client's timeout; a node that does not answer says nothing.
async fn cluster_exists(client: &HttpClient, id: &str, others: &[String]) -> bool {
    let mut asks = JoinSet::new();
    for o in others {
        let (client, url) = (client.clone(), clusterconsensus::wire::url(o, id, "status"));
        asks.spawn(async move {
            let (code, body) = client.get(&url).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let role = v.get("role")?.as_str()?.to_string();
            (code == 200 && role != "unjoined").then_some(url)
        });
    }
    while let Some(done) = asks.join_next().await {
        if let Ok(Some(url)) = done {
            info!(
                cluster = id,
                "{url} is a member: the cluster exists, joining it"
            );
            return true;
        }
    }
    false
}

/// A member address is a base URL without trailing slash.
pub(crate) fn trim_addr(a: &str) -> String {
    a.trim().trim_end_matches('/').to_string()
}

/// Resolves on SIGINT or SIGTERM, naming it: the shutdown future of a node run from a terminal
/// or a service manager.
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
