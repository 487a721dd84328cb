//! One cluster's task: it owns the [`Participant`], takes inputs from a channel, and carries
//! out its outputs (persist, send, reply, log) in the order the core hands them out.
//!
//! Nothing here decides anything about the protocol: the task only translates. Incoming calls
//! arrive with a oneshot for the answer; the core's `Reply` for that request id fills it.
//! Every `Send` becomes a spawned HTTP call whose outcome (answer or transport error) comes back
//! through the same channel, so each one gets exactly one `handle_response`. One timer is armed
//! from `poll_timeout`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clusterconsensus::wire::{Request, Response};
use clusterconsensus::{
    Error, ErrorCode, Event, KvStore, Output, Participant, Payload, RequestId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::client::HttpClient;
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
        id: u64,
        res: Result<Response, Error>,
    },
    /// Make this fresh node master of a one-member cluster.
    Bootstrap { reply: oneshot::Sender<Result<(), Error>> },
    Inspect(Inspect),
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
        let task = Task {
            node: participant,
            store: Arc::new(store),
            client,
            tx: tx.clone(),
            waiting: BTreeMap::new(),
            next_request: 1,
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

struct Task {
    node: Participant<KvStore>,
    store: Arc<Store>,
    client: HttpClient,
    /// To hand to the spawned calls, which report back here.
    tx: mpsc::Sender<Input>,
    /// Incoming calls waiting for the core's reply, by the request id we gave the core.
    waiting: BTreeMap<RequestId, oneshot::Sender<Response>>,
    next_request: RequestId,
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
                let id = self.next_request;
                self.next_request += 1;
                self.waiting.insert(id, reply);
                self.node.handle_request(now, id, req);
            }
            Input::Response { id, res } => self.node.handle_response(now, id, res),
            Input::Bootstrap { reply } => {
                let _ = reply.send(self.node.bootstrap(now));
            }
            Input::Inspect(f) => f(&self.node, now),
        }
    }

    /// Carries out every output, in order. A `Persist` is written and fsynced before anything
    /// polled after it is acted on (the core releases nothing more until `persisted`).
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(p) => {
                    let store = self.store.clone();
                    // The fsync blocks; let tokio move other tasks off this worker meanwhile.
                    let res = tokio::task::block_in_place(|| store.apply(&p));
                    if let Err(e) = res {
                        // Without durable storage the node could break promises it made: stop
                        // the whole process rather than go on half-alive.
                        error!(cluster = self.node.cluster(), "storage failed, stopping: {e}");
                        std::process::exit(1);
                    }
                    self.node.persisted(now_ms(), p.id);
                }
                Output::Send(send) => {
                    let url = format!(
                        "{}/_clusterc/{}/{}",
                        send.to,
                        self.node.cluster(),
                        send.request.method().path()
                    );
                    let method = send.request.method();
                    let body = send.request.encode();
                    let client = self.client.clone();
                    let tx = self.tx.clone();
                    let id = send.id;
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
                Output::Event(e) => self.log_event(e),
            }
        }
    }

    fn log_event(&self, e: Event) {
        let cluster = self.node.cluster();
        match e {
            Event::BecameMaster { instance } => info!(cluster, instance, "became master"),
            Event::LostMastership { instance } => info!(cluster, instance, "lost mastership"),
            Event::Committed { seq, payload } => match payload {
                Payload::Changes(c) => debug!(cluster, seq, changes = c.len(), "committed"),
                Payload::Add(a) => info!(cluster, seq, member = %a, "member added"),
                Payload::Rm(a) => info!(cluster, seq, member = %a, "member removed"),
            },
            Event::SnapshotInstalled { seq } => info!(cluster, seq, "snapshot installed"),
            Event::MembersChanged { members, version } => {
                info!(cluster, version, ?members, "members changed")
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
            let req = Request::MembersAdd(clusterconsensus::wire::AdminMember {
                addr: peer.clone(),
                version: None,
                forwarded: false,
            });
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
                    warn!(cluster, peer, "peer answers HTTP {s} for this cluster; waiting");
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
