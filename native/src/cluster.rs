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
//!
//! Periodic snapshots ([`SnapshotJob`]) are written by a thread of their own, one at a
//! time (a newer job waits in place of an older queued one), streamed from the frozen view the
//! core hands out; the task only reports the file durable with `snapshot_saved`, and the
//! writer thread then compacts the log. A failed snapshot file is logged and not fatal: the
//! log keeps its entries and the next periodic snapshot tries again.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clusterconsensus::wire::{Method, Request, Response};
use clusterconsensus::{
    Error, ErrorCode, Event, MessageId, Output, Participant, Payload, Persist, PersistId,
    RequestId, SnapshotJob,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::client::HttpClient;
use crate::metrics::Metrics;
use crate::reads::{ReadAnswer, ReadRequest};
use crate::storage::{SnapshotFiles, Store};
use crate::watch::{Hub, WindowLimits};
use crate::{App, ServeError};

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

/// A read-only look at the participant, run on its task (status, the app's reads).
pub type Inspect<S> = Box<dyn FnOnce(&Participant<S>, u64) + Send>;

/// What the cluster task reacts to.
pub enum Input<S: App> {
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
    Inspect(Inspect<S>),
    /// The writer thread made the `Persist` with this id durable, in `took`.
    Persisted {
        id: PersistId,
        took: Duration,
    },
    /// The writer thread could not make a `Persist` durable: the task stops.
    StorageFailed(String),
    /// The snapshot thread finished the job at `seq`: the file is durable (`Ok` with its size),
    /// or it could not be written.
    SnapshotSaved {
        seq: u64,
        result: Result<u64, String>,
        took: Duration,
    },
    /// The metrics page (Prometheus text) of this cluster.
    Metrics(oneshot::Sender<String>),
}

/// The handle the HTTP server and the bootstrap flow use to reach a cluster's task.
pub struct Cluster<S: App> {
    pub id: String,
    tx: mpsc::Sender<Input<S>>,
    /// The change stream of what this node applies (`watch`).
    pub watch: Arc<Hub>,
}

impl<S: App> Clone for Cluster<S> {
    fn clone(&self) -> Self {
        Cluster {
            id: self.id.clone(),
            tx: self.tx.clone(),
            watch: self.watch.clone(),
        }
    }
}

impl<S: App> std::fmt::Debug for Cluster<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.id)
    }
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

impl<S: App> Cluster<S> {
    /// The handle and the task (not started: [`Task::start`]) of `participant`, persisting to
    /// `store`, keeping a `window` of recent entries for watchers.
    pub fn new(
        participant: Participant<S>,
        store: Store,
        client: HttpClient,
        window: WindowLimits,
    ) -> (Cluster<S>, Task<S>) {
        let (tx, rx) = mpsc::channel(4096);
        let id = participant.cluster().to_string();
        let watch = Hub::new(participant.commit(), window);
        let task = Task {
            watch: watch.clone(),
            lanes: BTreeMap::new(),
            node: participant,
            snapshots: store.snapshot_files(),
            saving: false,
            next_job: None,
            store: Some(store),
            writer: None,
            client,
            tx: tx.clone(),
            rx,
            waiting: BTreeMap::new(),
            next_request: 1,
            metrics: Metrics::default(),
        };
        (Cluster { id, tx, watch }, task)
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
        f: impl FnOnce(&Participant<S>, u64) -> T + Send + 'static,
    ) -> Result<T, Gone> {
        let (reply, rx) = oneshot::channel();
        let job: Inspect<S> = Box::new(move |p, now| {
            let _ = reply.send(f(p, now));
        });
        self.tx.send(Input::Inspect(job)).await.map_err(gone)?;
        rx.await.map_err(gone)
    }

    /// The app's answer to a read of its state as applied here (`None`: no such path).
    pub async fn read(&self, req: ReadRequest) -> Result<Option<ReadAnswer>, Gone> {
        self.inspect(move |p, _| p.state().read(&req.at(p.commit())))
            .await
    }
}

/// The writer thread: applies each `Persist` as one durable transaction, in order, and reports
/// it back to the task. A storage failure stops the task, and with it the node (see
/// [`ServeError::Storage`]): without durable storage the node could break promises it made, so
/// it must not go on half-alive. The failed `Persist` is never reported durable, so nothing that
/// depends on it leaves the core.
fn spawn_writer<S: App>(
    cluster: &str,
    store: Store,
    tx: mpsc::Sender<Input<S>>,
) -> std::io::Result<std_mpsc::Sender<Persist>> {
    let (wtx, wrx) = std_mpsc::channel::<Persist>();
    std::thread::Builder::new()
        .name(format!("writer-{cluster}"))
        .spawn(move || {
            for p in wrx.iter() {
                let started = Instant::now();
                let report = match store.apply(&p) {
                    Ok(()) => Input::Persisted {
                        id: p.id,
                        took: started.elapsed(),
                    },
                    Err(e) => Input::StorageFailed(e),
                };
                let failed = matches!(report, Input::StorageFailed(_));
                // Fails only when the task is gone (shutting down).
                if tx.blocking_send(report).is_err() {
                    return;
                }
                if failed {
                    // Nothing more is written, but the channel stays open until the task has
                    // read the failure: were it closed first, the task's next Persist would
                    // fail on it and stop the node with a message that does not say why.
                    for _ in wrx.iter() {}
                    return;
                }
            }
        })?;
    Ok(wtx)
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
async fn lane<S: App>(
    client: HttpClient,
    tx: mpsc::Sender<Input<S>>,
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

/// One cluster's task, built by [`Cluster::new`] and started by [`Task::start`].
pub struct Task<S: App> {
    /// One ordered lane per peer for the accept family (see [`lane`]).
    lanes: BTreeMap<String, mpsc::UnboundedSender<Outgoing>>,
    node: Participant<S>,
    /// Until [`Task::start`] hands it to the writer thread.
    store: Option<Store>,
    /// The writer thread (`None` for memory storage: nothing to wait for).
    writer: Option<std_mpsc::Sender<Persist>>,
    /// Where periodic snapshots are saved (`None` for memory storage: jobs are dropped).
    snapshots: Option<SnapshotFiles>,
    /// A snapshot thread is writing a job.
    saving: bool,
    /// The newest job waiting for the running one to finish.
    next_job: Option<SnapshotJob<S::Snapshot>>,
    client: HttpClient,
    /// To hand to the spawned calls, which report back here.
    tx: mpsc::Sender<Input<S>>,
    rx: mpsc::Receiver<Input<S>>,
    /// Incoming calls waiting for the core's reply, by the request id we gave the core.
    waiting: BTreeMap<RequestId, oneshot::Sender<Response>>,
    next_request: u64,
    metrics: Metrics,
    /// Where committed entries go for watchers.
    watch: Arc<Hub>,
}

impl<S: App> Task<S> {
    /// Starts the writer thread (for disk storage) and the task on `set`. A storage failure
    /// stops the task and comes out of `fatal`.
    pub fn start(
        mut self,
        set: &mut JoinSet<()>,
        fatal: mpsc::UnboundedSender<ServeError>,
    ) -> Result<(), ServeError> {
        let id = self.node.cluster().to_string();
        match self.store.take() {
            Some(Store::Memory) | None => {}
            Some(store) => {
                let w = spawn_writer(&id, store, self.tx.clone()).map_err(|e| {
                    ServeError::StorageOpen {
                        cluster: id.clone(),
                        message: format!("cannot start the writer thread: {e}"),
                    }
                })?;
                self.writer = Some(w);
            }
        }
        // Wakes this cluster's watchers; ends with the node, like the task.
        set.spawn(self.watch.clone().fan_out());
        set.spawn(async move {
            if let Err(message) = self.run().await {
                // The node's one line about it is the ServeError `serve` returns.
                debug!(cluster = %id, "storage failed, stopping the node: {message}");
                let _ = fatal.send(ServeError::Storage {
                    cluster: id,
                    message,
                });
            }
        });
        Ok(())
    }

    /// Runs until the node stops it, or `Err` once storage failed.
    async fn run(mut self) -> Result<(), String> {
        // A restored node may already have work queued (nothing today, but cheap to honour).
        self.drain()?;
        loop {
            let timer = self.node.poll_timeout();
            let sleep = tokio::time::sleep_until(deadline_instant(timer));
            tokio::select! {
                input = self.rx.recv() => match input {
                    Some(input) => self.on_input(input)?,
                    None => break,
                },
                _ = sleep, if timer.is_some() => self.node.handle_timeout(now_ms()),
            }
            self.drain()?;
        }
        debug!(cluster = self.node.cluster(), "cluster task stopped");
        Ok(())
    }

    fn on_input(&mut self, input: Input<S>) -> Result<(), String> {
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
            Input::StorageFailed(e) => return Err(e),
            Input::SnapshotSaved { seq, result, took } => {
                self.saving = false;
                match result {
                    Ok(bytes) => {
                        info!(
                            cluster = self.node.cluster(),
                            seq,
                            bytes,
                            ms = took.as_millis() as u64,
                            "snapshot saved"
                        );
                        self.node.snapshot_saved(now, seq, bytes);
                    }
                    // Not fatal: the log still holds every entry; the next job tries again.
                    Err(e) => warn!(
                        cluster = self.node.cluster(),
                        seq, "snapshot not saved, the log keeps its entries: {e}"
                    ),
                }
            }
        }
        Ok(())
    }

    /// Takes the core's periodic snapshot job, if one is due, and starts writing it on a
    /// thread of its own unless one is running (then it waits, replacing an older waiting one).
    fn run_snapshot_jobs(&mut self) {
        if let Some(job) = self.node.take_snapshot_job() {
            if self.snapshots.is_some() {
                self.next_job = Some(job);
            }
        }
        if self.saving {
            return;
        }
        let (Some(files), Some(job)) = (self.snapshots.clone(), self.next_job.take()) else {
            return;
        };
        let tx = self.tx.clone();
        let seq = job.seq;
        // A plain thread rather than tokio's blocking pool: a runtime shutting down waits for
        // its blocking tasks, and a node stopping must not wait for a large state's file.
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{}", self.node.cluster()))
            .spawn(move || {
                let started = Instant::now();
                let result = files.save(job.seq, job.source);
                let took = started.elapsed();
                // Fails only when the task is gone (shutting down).
                let _ = tx.blocking_send(Input::SnapshotSaved {
                    seq: job.seq,
                    result,
                    took,
                });
            });
        match spawned {
            Ok(_) => self.saving = true,
            Err(e) => warn!(
                cluster = self.node.cluster(),
                seq, "snapshot not saved, the log keeps its entries: cannot start a thread: {e}"
            ),
        }
    }

    /// Carries out every output, in order. A `Persist` goes to the writer thread; until
    /// `Input::Persisted` comes back the core hands out only outputs that do not depend on it
    /// (a master's next accept, the answers to a chosen batch), so those go out while the disk
    /// works.
    /// `Err` if the writer thread is gone, which a failed write does not do (see
    /// `spawn_writer`): that failure comes as `Input::StorageFailed`, naming the file.
    fn drain(&mut self) -> Result<(), String> {
        // The master sends the same accept to every follower: encode it once.
        let mut last: Option<(clusterconsensus::Request, Vec<u8>)> = None;
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(p) => match &self.writer {
                    Some(w) => {
                        if w.send(p).is_err() {
                            return Err("the storage writer thread is gone".into());
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
                    self.watch.on_event(&e);
                    self.log_event(e)
                }
            }
        }
        self.run_snapshot_jobs();
        Ok(())
    }

    /// The ordered lane to `peer`, started on first use.
    fn lane(&mut self, peer: &str) -> &mpsc::UnboundedSender<Outgoing> {
        if !self.lanes.contains_key(peer) {
            let (ltx, lrx) = mpsc::unbounded_channel();
            tokio::spawn(lane::<S>(self.client.clone(), self.tx.clone(), lrx));
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
