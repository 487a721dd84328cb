//! One cluster's task: it owns the [`Participant`], takes inputs from a channel, and carries
//! out its outputs (persist, send, reply, log) in the order the core hands them out.
//!
//! Nothing here decides anything about the protocol: the task only translates. Incoming calls
//! arrive with a oneshot for the answer; the core's `Reply` for that request id fills it.
//! Every `Send` becomes a spawned HTTP call whose outcome (answer or transport error) comes back
//! through the same channel, so each one gets exactly one `handle_response`. One timer is armed
//! from `poll_timeout`.
//!
//! Persists go to a dedicated writer thread (one per cluster) that writes the log record and
//! does the fdatasync, so the task never blocks the runtime and keeps feeding inputs to the core
//! while the disk works. The core withholds every output that depends on a `Persist` until
//! `persisted`, so this changes no ordering that matters; it is what makes group commit work:
//! submits that arrive during one fsync queue in the core and all go out in the next accept.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clusterconsensus::kv::KvStore;
use clusterconsensus::wire::{Method, Request, Response};
use clusterconsensus::{
    Error, ErrorCode, Event, MessageId, Output, Participant, Payload, Persist, PersistId, RequestId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::client::HttpClient;
use crate::metrics::Metrics;
use crate::storage::Store;

/// Milliseconds since this process started: the core's `now`, from a monotonic clock.
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The instant of `now_ms() == ms` (a day ahead for "never": the timer branch is off then).
fn deadline_instant(ms: Option<u64>) -> tokio::time::Instant {
    let ms = ms.unwrap_or_else(|| now_ms().saturating_add(86_400_000));
    let at = start().checked_add(Duration::from_millis(ms));
    tokio::time::Instant::from_std(at.unwrap_or_else(Instant::now))
}

/// A read-only look at the participant, run on its task (status, key-value reads).
pub type Inspect = Box<dyn FnOnce(&Participant<KvStore>, u64) + Send>;

/// What the cluster task reacts to.
pub enum Input {
    /// An incoming call (HTTP or the bootstrap flow); answered on `reply`.
    Request {
        req: Request,
        reply: oneshot::Sender<Response>,
    },
    /// The outcome of an outgoing call.
    Response {
        id: MessageId,
        res: Result<Response, Error>,
    },
    /// Make this fresh node master of a one-member cluster.
    Bootstrap {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Inspect(Inspect),
    /// The writer thread made the `Persist` with this id durable, in `took`.
    Persisted {
        id: PersistId,
        took: Duration,
    },
    /// The metrics page (Prometheus text) of this cluster.
    Metrics(oneshot::Sender<String>),
}

/// The handle the HTTP server and the bootstrap flow use to reach a cluster's task.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub id: String,
    tx: mpsc::Sender<Input>,
}

/// The cluster's task is gone: the node is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this node is shutting down")
    }
}

fn gone<T>(_: T) -> Gone {
    Gone
}

impl Cluster {
    /// Starts the task for `participant`, persisting to `store`.
    pub fn spawn(participant: Participant<KvStore>, store: Store, client: HttpClient) -> Cluster {
        let (tx, rx) = mpsc::channel(4096);
        let id = participant.cluster().to_string();
        let store = Arc::new(store);
        let writer = match &*store {
            Store::Memory => None,
            Store::Disk { .. } => Some(spawn_writer(&id, store.clone(), tx.clone())),
        };
        let task = Task {
            lanes: BTreeMap::new(),
            node: participant,
            writer,
            client,
            tx: tx.clone(),
            waiting: BTreeMap::new(),
            next_request: 1,
            metrics: Metrics::default(),
        };
        tokio::spawn(task.run(rx));
        Cluster { id, tx }
    }

    /// Hands a call to the core and waits for its answer (a submit is answered once committed).
    pub async fn call(&self, req: Request) -> Result<Response, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Request { req, reply })
            .await
            .map_err(gone)?;
        rx.await.map_err(gone)
    }

    /// This cluster's metrics, in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Metrics(reply)).await.map_err(gone)?;
        rx.await.map_err(gone)
    }

    pub async fn bootstrap(&self) -> Result<Result<(), Error>, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Bootstrap { reply })
            .await
            .map_err(gone)?;
        rx.await.map_err(gone)
    }

    /// Runs `f` on the participant (on its task) and returns what it computed.
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Participant<KvStore>, u64) -> T + Send + 'static,
    ) -> Result<T, Gone> {
        let (reply, rx) = oneshot::channel();
        let job: Inspect = Box::new(move |p, now| {
            let _ = reply.send(f(p, now));
        });
        self.tx.send(Input::Inspect(job)).await.map_err(gone)?;
        rx.await.map_err(gone)
    }
}

/// The writer thread: applies each `Persist` as one durable transaction, in order, and reports
/// it back to the task. A storage failure stops the process: without durable storage the node
/// could break promises it made, so it must not go on half-alive.
fn spawn_writer(
    cluster: &str,
    store: Arc<Store>,
    tx: mpsc::Sender<Input>,
) -> std_mpsc::Sender<Persist> {
    let (wtx, wrx) = std_mpsc::channel::<Persist>();
    let name = cluster.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("writer-{cluster}"))
        .spawn(move || {
            for p in wrx {
                let started = Instant::now();
                if let Err(e) = store.apply(&p) {
                    error!(cluster = %name, "storage failed, stopping: {e}");
                    std::process::exit(1);
                }
                // Fails only when the task is gone (shutting down).
                let took = started.elapsed();
                if tx
                    .blocking_send(Input::Persisted { id: p.id, took })
                    .is_err()
                {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        error!(
            cluster,
            "cannot start the storage writer thread, stopping: {e}"
        );
        std::process::exit(1);
    }
    wtx
}

/// A master-to-follower call waiting in its peer's lane.
struct Outgoing {
    url: String,
    method: Method,
    body: Vec<u8>,
    id: MessageId,
    /// The core's [`Send::deadline`](clusterconsensus::Send::deadline): not started after it.
    deadline: u64,
}

/// Sends the master's accepts, membership accepts and starts to one peer one at a time, in the
/// order the core emitted them. Concurrent calls would travel on different pooled connections
/// and could arrive out of order: seq S+1 before S is a gap at the follower, and the master
/// answers a gap with a `start` carrying the whole state. Under load that turned into a start
/// every few commits. A call whose deadline (set by the core) passed while it waited in the lane
/// fails without being sent (`ERR_CALL`, as a timeout would): the core re-sends what still
/// matters at its next tick, so a dead peer's lane cannot build up a backlog.
async fn lane(
    client: HttpClient,
    tx: mpsc::Sender<Input>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(o) = rx.recv().await {
        let res = if now_ms() > o.deadline {
            Err(Error::new(
                ErrorCode::Call,
                format!(
                    "{}: not sent, queued behind slower calls past the timeout",
                    o.url
                ),
            ))
        } else {
            client.call(&o.url, o.method, o.body).await
        };
        if let Err(e) = &res {
            debug!("{} failed: {e}", o.method.path());
        }
        if tx.send(Input::Response { id: o.id, res }).await.is_err() {
            return;
        }
    }
}

struct Task {
    /// One ordered lane per peer for the accept family (see [`lane`]).
    lanes: BTreeMap<String, mpsc::UnboundedSender<Outgoing>>,
    node: Participant<KvStore>,
    /// The writer thread (`None` for `--memory`: nothing to wait for).
    writer: Option<std_mpsc::Sender<Persist>>,
    client: HttpClient,
    /// To hand to the spawned calls, which report back here.
    tx: mpsc::Sender<Input>,
    /// Incoming calls waiting for the core's reply, by the request id we gave the core.
    waiting: BTreeMap<RequestId, oneshot::Sender<Response>>,
    next_request: u64,
    metrics: Metrics,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        // A restored node may already have work queued (nothing today, but cheap to honour).
        self.drain();
        loop {
            let timer = self.node.poll_timeout();
            let sleep = tokio::time::sleep_until(deadline_instant(timer));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                _ = sleep, if timer.is_some() => self.node.handle_timeout(now_ms()),
            }
            self.drain();
        }
        debug!(cluster = self.node.cluster(), "cluster task stopped");
    }

    fn on_input(&mut self, input: Input) {
        let now = now_ms();
        match input {
            Input::Request { req, reply } => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.waiting.insert(id, reply);
                self.node.handle_request(now, id, req);
            }
            Input::Response { id, res } => {
                if res.is_err() {
                    self.metrics.on_peer_call_failed();
                }
                self.node.handle_response(now, id, res)
            }
            Input::Bootstrap { reply } => {
                let _ = reply.send(self.node.bootstrap(now));
            }
            Input::Inspect(f) => f(&self.node, now),
            Input::Persisted { id, took } => {
                self.metrics.on_write(took);
                self.node.persisted(now, id)
            }
            Input::Metrics(reply) => {
                let _ = reply.send(self.metrics.render(&self.node));
            }
        }
    }

    /// Carries out every output, in order. A `Persist` goes to the writer thread; until
    /// `Input::Persisted` comes back the core hands out only outputs that do not depend on it
    /// (a master's next accept, the answers to a chosen batch), so those go out while the disk
    /// works.
    fn drain(&mut self) {
        // The master sends the same accept to every follower: encode it once.
        let mut last: Option<(clusterconsensus::Request, Vec<u8>)> = None;
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(p) => match &self.writer {
                    Some(w) => {
                        if w.send(p).is_err() {
                            error!(
                                cluster = self.node.cluster(),
                                "storage writer is gone, stopping"
                            );
                            std::process::exit(1);
                        }
                    }
                    None => self.node.persisted(now_ms(), p.id),
                },
                Output::Send(send) => {
                    let url = send.url(self.node.cluster());
                    let method = send.request.method();
                    let (ordered, deadline) = (send.ordered(), send.deadline);
                    let body = match &last {
                        Some((req, body)) if *req == send.request => body.clone(),
                        _ => {
                            let body = send.request.encode();
                            last = Some((send.request, body.clone()));
                            body
                        }
                    };
                    let id = send.id;
                    if ordered {
                        let lane = self.lane(&send.to);
                        // Fails only when the lane task is gone (shutting down).
                        let _ = lane.send(Outgoing {
                            url,
                            method,
                            body,
                            id,
                            deadline,
                        });
                        continue;
                    }
                    let client = self.client.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let res = client.call(&url, method, body).await;
                        if let Err(e) = &res {
                            debug!("{} failed: {e}", method.path());
                        }
                        // Fails only when the task is gone, and then nobody needs the answer.
                        let _ = tx.send(Input::Response { id, res }).await;
                    });
                }
                Output::Reply(r) => {
                    if let Some(tx) = self.waiting.remove(&r.id) {
                        // The caller may have hung up; the core has done its part.
                        let _ = tx.send(r.response);
                    }
                }
                Output::Event(e) => {
                    self.metrics.on_event(&e);
                    self.log_event(e)
                }
            }
        }
    }

    /// The ordered lane to `peer`, started on first use.
    fn lane(&mut self, peer: &str) -> &mpsc::UnboundedSender<Outgoing> {
        if !self.lanes.contains_key(peer) {
            let (ltx, lrx) = mpsc::unbounded_channel();
            tokio::spawn(lane(self.client.clone(), self.tx.clone(), lrx));
            self.lanes.insert(peer.to_string(), ltx);
        }
        &self.lanes[peer]
    }

    fn log_event(&self, e: Event) {
        let cluster = self.node.cluster();
        match e {
            Event::BecameMaster { instance } => info!(cluster, instance, "became master"),
            Event::LostMastership { instance } => info!(cluster, instance, "lost mastership"),
            Event::Committed { seq, payload } => match payload {
                Payload::Changes(c) => debug!(cluster, seq, changes = c.len(), "committed"),
                Payload::Add(a) => info!(cluster, seq, member = %a, "member added"),
                Payload::Learner(l) => info!(cluster, seq, learner = %l.addr, "learner added"),
                Payload::Rm(a) => info!(cluster, seq, member = %a, "member removed"),
            },
            Event::SnapshotInstalled { seq } => info!(cluster, seq, "snapshot installed"),
            Event::MembersChanged {
                members,
                learners,
                version,
            } => {
                let learners: Vec<&str> = learners.iter().map(|l| l.addr.as_str()).collect();
                info!(cluster, version, ?members, ?learners, "members changed")
            }
            Event::Joined => info!(cluster, "joined the cluster"),
            Event::Removed => warn!(cluster, "removed from the cluster"),
        }
    }
}

/// The bootstrap flow of `node --bootstrap --peer URL...`: become master of a one-member
/// cluster, then add each peer, one at a time, each once it answers and is committed.
pub async fn bootstrap(cluster: Cluster, peers: Vec<String>, client: HttpClient) {
    let id = cluster.id.clone();
    match cluster.bootstrap().await {
        Ok(Ok(())) => info!(cluster = %id, "bootstrapped a one-member cluster"),
        Ok(Err(e)) => {
            error!(cluster = %id, "bootstrap failed: {e}");
            return;
        }
        Err(Gone) => return,
    }
    // The core serves submits and membership changes once its first accept is confirmed.
    loop {
        match cluster.inspect(|p, _| p.is_serving_master()).await {
            Ok(true) => break,
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return,
        }
    }
    for peer in peers {
        wait_until_up(&client, &peer, &id).await;
        let mut attempt = 0u32;
        loop {
            let req = Request::MembersAdd(clusterconsensus::wire::AdminMember::new(peer.clone()));
            let res = match cluster.call(req).await {
                Ok(Response::Fail(f)) => f.into_result(),
                Ok(_) => Err(Error::new(ErrorCode::Call, "unexpected answer shape")),
                Err(Gone) => return,
            };
            match res {
                Ok(()) => {
                    info!(cluster = %id, peer = %peer, "peer added");
                    break;
                }
                Err(e) if e.code == ErrorCode::Encoding => {
                    // Not a usable member address: retrying cannot help.
                    error!(cluster = %id, peer = %peer, "cannot add peer: {e}");
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt % 10 == 1 {
                        warn!(cluster = %id, peer = %peer, "adding peer failed, retrying: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// Waits until `peer` answers its status endpoint for this cluster: adding a member that is not
/// running yet would leave the cluster without a majority until it comes up.
async fn wait_until_up(client: &HttpClient, peer: &str, cluster: &str) {
    let url = format!("{peer}/_clusterc/{cluster}/status");
    let mut attempt = 0u32;
    loop {
        match client.request(hyper::Method::GET, &url, Vec::new()).await {
            Ok((s, _)) if s.is_success() => return,
            Ok((s, _)) => {
                if attempt.is_multiple_of(25) {
                    warn!(
                        cluster,
                        peer, "peer answers HTTP {s} for this cluster; waiting"
                    );
                }
            }
            Err(e) => {
                if attempt.is_multiple_of(25) {
                    info!(cluster, peer, "waiting for peer to come up: {e}");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
