//! A deterministic simulated cluster: real [`Participant`]s on a virtual network with virtual
//! time and a seeded RNG (quinn's `Pair`, raft-rs's `Network`, in our shape).
//!
//! Every message is encoded to JSON and decoded again on arrival, as on the wire. Faults:
//! drop, delay (and so reorder), duplicate, directed partitions, crash and restart from what
//! was persisted (a persist completes after a random delay; a crash before that loses it),
//! and crashes armed to hit the middle of a write ([`Sim::crash_mid_write`]).
//! The safety properties of PROTOCOL.md section 4 are checked after every step (see
//! [`check`]); violations are recorded, never panicked on, so a browser can show them.
//!
//! Two ways to drive it:
//! - automatic: [`Sim::step`] processes the next event in virtual time (message arrivals,
//!   timers, persist completions);
//! - manual ([`Sim::set_manual`]): messages wait in flight until a test delivers, drops or
//!   reorders them one by one ([`Sim::deliver`], [`Sim::drop_message`], [`Sim::find`]),
//!   persists complete at once, and a timer fires only when the test fires it
//!   ([`Sim::fire_timeout`]).
//!
//! [`scenario`] runs randomized scenarios with clients and a nemesis, for the seed sweep.

pub mod check;
pub mod lincheck;
pub mod scenario;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::Serialize;

use crate::config::{Config, Rng};
use crate::error::{Error, ErrorCode};
use crate::kv::KvStore;
use crate::output::{Event, MessageId, Output, Persist, Stored};
use crate::participant::{Participant, Role};
use crate::state_machine::StateMachine;
use crate::wire::{AdminMember, Method, Request, Response, Staged, Submit};

use check::Checker;

/// What the simulation needs of an application besides [`StateMachine`]: a fresh, empty state
/// ([`Default`]), and optionally how the view shows it and how a client's consistent read
/// looks a key up. Any application can be checked in [`Sim`]; the key-value app is the default.
pub trait SimApp: StateMachine + Default {
    /// What [`NodeView::state`] shows of a node's state.
    fn view(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// The value of `key`, for [`Sim::read`].
    fn read(&self, _key: &str) -> Option<String> {
        None
    }
}

impl SimApp for KvStore {
    fn view(&self) -> serde_json::Value {
        self.iter()
            .map(|(k, v)| (String::from(k), serde_json::Value::from(v)))
            .collect::<serde_json::Map<String, serde_json::Value>>()
            .into()
    }
    fn read(&self, key: &str) -> Option<String> {
        self.get(key).map(String::from)
    }
}

/// Network and disk faults, drawn per message / per persist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Chance (per mille) that a message is lost.
    pub drop_permille: u32,
    /// Chance (per mille) that a request is delivered twice.
    pub dup_permille: u32,
    /// Message delay, uniform in `[min_delay_ms, max_delay_ms]`: different delays reorder.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A persist completes after up to this long (0: at once).
    pub persist_max_delay_ms: u64,
}

impl Faults {
    /// A network that neither loses nor reorders much: 1-5 ms, nothing dropped.
    pub fn none() -> Faults {
        Faults {
            drop_permille: 0,
            dup_permille: 0,
            min_delay_ms: 1,
            max_delay_ms: 5,
            persist_max_delay_ms: 0,
        }
    }
}

/// How to build a simulated cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimConfig {
    /// Members of the formed cluster.
    pub nodes: usize,
    /// Extra unjoined nodes that membership changes can add.
    pub spares: usize,
    pub seed: u64,
    pub faults: Faults,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// A request without an answer fails (at its sender) after this long.
    pub rpc_timeout_ms: u64,
    pub snapshot_every: u64,
    pub max_batch: usize,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            spares: 0,
            seed,
            faults: Faults::none(),
            heartbeat_ms: 50,
            election_min_ms: 500,
            election_max_ms: 1000,
            rpc_timeout_ms: 300,
            snapshot_every: 20,
            max_batch: 64,
        }
    }
}

/// The address of simulated node `i`.
pub fn addr(i: usize) -> String {
    format!("http://n{i}")
}

/// Who asked a request a node is answering.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    /// Another node (its incarnation and its message id).
    Node {
        node: usize,
        incarnation: u64,
        mid: MessageId,
    },
    /// A client operation of the harness.
    Client { op: u64 },
    /// A duplicate delivery: its answer goes nowhere.
    Duplicate,
    /// A request a test injected: its answer is kept for the test.
    Inject,
}

#[derive(Clone, Debug)]
struct Open {
    origin: Origin,
    to: usize,
    method: Method,
}

/// A message on the virtual network.
#[derive(Clone, Debug)]
struct NetMsg {
    from: usize,
    to: usize,
    method: Method,
    /// Request: the sender's message id and where its answer goes; response: the request id
    /// it answers at the receiver.
    kind: NetKind,
    body: Vec<u8>,
    sent_at: u64,
    /// `None` in manual mode until delivered.
    arrives_at: Option<u64>,
}

#[derive(Clone, Debug)]
enum NetKind {
    Request { origin: Origin },
    Response { origin: Origin },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(u64),
    Timer {
        node: usize,
        generation: u64,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    /// A transport failure reported to `node` for its message `mid`.
    Fail {
        node: usize,
        incarnation: u64,
        mid: MessageId,
    },
    /// A crash at a chosen time (a paused node is killed too).
    Crash {
        node: usize,
    },
}

struct Node<S: SimApp> {
    addr: String,
    p: Option<Participant<S>>,
    stored: Stored,
    incarnation: u64,
    timer_generation: u64,
    timer_at: Option<u64>,
    persist: Option<Persist>,
    /// Crash as soon as a write is in progress and everything released ahead of it is out;
    /// then, if set, crash the master this many ms later.
    crash_mid_write: Option<Option<u64>>,
    /// Stopped (SIGSTOP): events for it wait in `deferred` until it resumes.
    paused: bool,
    deferred: Vec<Ev>,
    /// Client requests sent to it while paused (the socket buffers them): served first when it
    /// resumes, before it notices how much time passed.
    deferred_calls: Vec<(u64, Request)>,
}

/// A client operation's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpView {
    pub id: u64,
    pub node: usize,
    pub change: String,
    pub invoked_at: u64,
    pub completed_at: Option<u64>,
    pub ok: Option<bool>,
    pub err: Option<String>,
    /// The code of the error, if it failed.
    #[serde(skip)]
    pub code: Option<ErrorCode>,
    /// For a consistent read: the key, and the value the node held when it answered.
    pub read_key: Option<String>,
    pub value: Option<String>,
}

/// One node as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub index: usize,
    pub addr: String,
    pub up: bool,
    pub role: Option<Role>,
    pub instance: u64,
    pub commit: u64,
    pub master: Option<String>,
    pub members: Vec<String>,
    pub staged: Option<Staged>,
    /// The application's state as [`SimApp::view`] shows it (`null` while down).
    pub state: serde_json::Value,
}

/// One message in flight as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub id: u64,
    pub from: usize,
    pub to: usize,
    pub method: &'static str,
    pub response: bool,
    pub body: String,
    pub sent_at: u64,
    pub arrives_at: Option<u64>,
}

/// Everything there is to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimView {
    pub now: u64,
    pub steps: u64,
    pub nodes: Vec<NodeView>,
    pub messages: Vec<MessageView>,
    pub violations: Vec<String>,
    pub ops: Vec<OpView>,
}

/// The simulated cluster of an application `S` (the key-value app by default).
pub struct Sim<S: SimApp = KvStore> {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    steps: u64,
    manual: bool,
    nodes: Vec<Node<S>>,
    events: BTreeMap<(u64, u64), Ev>,
    next_event: u64,
    net: BTreeMap<u64, NetMsg>,
    next_net: u64,
    open: BTreeMap<u64, Open>,
    next_rid: u64,
    /// Directed pairs that cannot talk (from, to).
    blocked: BTreeSet<(usize, usize)>,
    ops: BTreeMap<u64, OpView>,
    next_op: u64,
    /// Ops answered since the caller last looked ([`Sim::take_completed`]).
    completed: Vec<u64>,
    pub checker: Checker<S>,
    /// When set, a line per delivery, failure and node event (for replaying a failing seed).
    pub trace: Option<Vec<String>>,
    /// Answers to injected requests, by request id.
    injected: BTreeMap<u64, Response>,
}

impl<S: SimApp> core::fmt::Debug for Sim<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("steps", &self.steps)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Sim<KvStore> {
    /// A formed cluster of the key-value app: see [`Sim::with_app`].
    pub fn new(cfg: SimConfig) -> Sim<KvStore> {
        Sim::with_app(cfg)
    }

    /// Unjoined nodes of the key-value app: see [`Sim::unformed_with_app`].
    pub fn unformed(cfg: SimConfig) -> Sim<KvStore> {
        Sim::unformed_with_app(cfg)
    }
}

impl<S: SimApp> Sim<S> {
    /// A formed cluster of `cfg.nodes` members (node 0 bootstraps and adds the others through
    /// the protocol, on a fault-free network), plus `cfg.spares` unjoined nodes. The faults of
    /// `cfg` apply from then on.
    pub fn with_app(cfg: SimConfig) -> Sim<S> {
        let mut sim = Sim::unformed_with_app(cfg);
        sim.form();
        sim
    }

    /// Nodes that are all unjoined; [`Sim::bootstrap`] one of them to start.
    pub fn unformed_with_app(cfg: SimConfig) -> Sim<S> {
        let n = cfg.nodes + cfg.spares;
        let mut sim = Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            now: 0,
            steps: 0,
            manual: false,
            nodes: Vec::new(),
            events: BTreeMap::new(),
            next_event: 0,
            net: BTreeMap::new(),
            next_net: 1,
            open: BTreeMap::new(),
            next_rid: 1,
            blocked: BTreeSet::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            completed: Vec::new(),
            checker: Checker::default(),
            trace: None,
            injected: BTreeMap::new(),
        };
        for i in 0..n {
            let p = Participant::new(sim.node_config(i), S::default()).expect("valid config");
            sim.nodes.push(Node {
                addr: addr(i),
                p: Some(p),
                stored: Stored::default(),
                incarnation: 0,
                timer_generation: 0,
                timer_at: None,
                persist: None,
                crash_mid_write: None,
                paused: false,
                deferred: Vec::new(),
                deferred_calls: Vec::new(),
            });
        }
        sim
    }

    fn node_config(&mut self, i: usize) -> Config {
        let mut c = Config::new("sim", addr(i));
        c.heartbeat_ms = self.cfg.heartbeat_ms;
        c.election_min_ms = self.cfg.election_min_ms;
        c.election_max_ms = self.cfg.election_max_ms;
        c.snapshot_every = self.cfg.snapshot_every;
        c.max_batch = self.cfg.max_batch;
        c.seed = self.rng.next_u64();
        c
    }

    fn form(&mut self) {
        let faults = core::mem::replace(&mut self.cfg.faults, Faults::none());
        self.bootstrap(0);
        self.run_until(|s| s.is_serving_master(0), 10_000);
        for i in 1..self.cfg.nodes {
            let op = self.admin(0, Method::MembersAdd, &addr(i), None);
            self.run_until(|s| s.op_done(op), 10_000);
        }
        // Let heartbeats bring every member to the same commit.
        let horizon = self.now + 10 * self.cfg.heartbeat_ms;
        self.run_until(|s| s.now >= horizon, 10_000);
        self.cfg.faults = faults;
        self.checker.stats = check::Stats::default();
    }

    // -----------------------------------------------------------------------------------------
    // Reading
    // -----------------------------------------------------------------------------------------

    pub fn now(&self) -> u64 {
        self.now
    }
    pub fn steps(&self) -> u64 {
        self.steps
    }
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].p.is_some()
    }
    /// Node `i`'s participant, if it is up.
    pub fn node(&self, i: usize) -> Option<&Participant<S>> {
        self.nodes[i].p.as_ref()
    }
    /// What node `i` has on its disk.
    pub fn stored(&self, i: usize) -> &Stored {
        &self.nodes[i].stored
    }
    pub fn is_serving_master(&self, i: usize) -> bool {
        self.node(i).is_some_and(|p| p.is_serving_master())
    }
    /// The index of an up, running (not paused) node that is serving master, if any.
    pub fn serving_master(&self) -> Option<usize> {
        (0..self.len()).find(|i| self.is_serving_master(*i) && !self.nodes[*i].paused)
    }
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }
    pub fn op(&self, id: u64) -> Option<&OpView> {
        self.ops.get(&id)
    }
    pub fn op_done(&self, id: u64) -> bool {
        self.ops.get(&id).is_some_and(|o| o.completed_at.is_some())
    }
    /// Ops completed since the last call.
    pub fn take_completed(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.completed)
    }
    pub fn violations(&self) -> &[String] {
        &self.checker.violations
    }

    /// Ids of messages in flight from `from` to `to` (either may be `None` for any) of
    /// `method` (requests and responses to such requests; `response` picks which).
    pub fn find(
        &self,
        from: Option<usize>,
        to: Option<usize>,
        method: Option<Method>,
        response: bool,
    ) -> Vec<u64> {
        self.net
            .iter()
            .filter(|(_, m)| {
                from.is_none_or(|f| m.from == f)
                    && to.is_none_or(|t| m.to == t)
                    && method.is_none_or(|x| m.method == x)
                    && matches!(m.kind, NetKind::Response { .. }) == response
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The decoded request carried by message `id`, if it is a request in flight.
    pub fn request_of(&self, id: u64) -> Option<Request> {
        let m = self.net.get(&id)?;
        match m.kind {
            NetKind::Request { .. } => Request::decode(m.method, &m.body).ok(),
            NetKind::Response { .. } => None,
        }
    }

    pub fn view(&self) -> SimView {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match &n.p {
                Some(p) => NodeView {
                    index: i,
                    addr: n.addr.clone(),
                    up: true,
                    role: Some(p.role()),
                    instance: p.instance(),
                    commit: p.commit(),
                    master: p.master().map(ToString::to_string),
                    members: p.members().to_vec(),
                    staged: p.staged().cloned(),
                    state: p.state().view(),
                },
                None => NodeView {
                    index: i,
                    addr: n.addr.clone(),
                    up: false,
                    role: None,
                    instance: n.stored.hard.as_ref().map_or(0, |h| h.promised),
                    commit: n.stored.hard.as_ref().map_or(0, |h| h.commit),
                    master: None,
                    members: n
                        .stored
                        .hard
                        .as_ref()
                        .map_or(Vec::new(), |h| h.members.clone()),
                    staged: n.stored.hard.as_ref().and_then(|h| h.staged.clone()),
                    state: serde_json::Value::Null,
                },
            })
            .collect();
        let messages = self
            .net
            .iter()
            .map(|(id, m)| MessageView {
                id: *id,
                from: m.from,
                to: m.to,
                method: m.method.path(),
                response: matches!(m.kind, NetKind::Response { .. }),
                body: String::from_utf8_lossy(&m.body).into_owned(),
                sent_at: m.sent_at,
                arrives_at: m.arrives_at,
            })
            .collect();
        SimView {
            now: self.now,
            steps: self.steps,
            nodes,
            messages,
            violations: self.checker.violations.clone(),
            ops: self.ops.values().cloned().collect(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Driving
    // -----------------------------------------------------------------------------------------

    /// In manual mode messages wait for [`deliver`](Self::deliver) and persists complete at
    /// once. Switching back schedules the waiting messages.
    pub fn set_manual(&mut self, manual: bool) {
        self.manual = manual;
        if !manual {
            let waiting: Vec<u64> = self
                .net
                .iter()
                .filter(|(_, m)| m.arrives_at.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                let d = self.delay();
                self.schedule_arrival(id, self.now + d);
            }
        }
    }

    /// Processes the next event. Returns false if there is none.
    pub fn step(&mut self) -> bool {
        let Some((&(t, k), _)) = self.events.iter().next() else {
            return false;
        };
        let ev = self.events.remove(&(t, k)).expect("just seen");
        self.now = self.now.max(t);
        self.steps += 1;
        self.handle_event(ev);
        true
    }

    fn handle_event(&mut self, ev: Ev) {
        // A paused node sees nothing until it resumes, then everything in order.
        let target = match &ev {
            Ev::Arrive(id) => self.net.get(id).map(|m| m.to),
            Ev::Timer { node, .. } | Ev::PersistDone { node, .. } | Ev::Fail { node, .. } => {
                Some(*node)
            }
            Ev::Crash { .. } => None,
        };
        if let Some(n) = target.filter(|n| self.nodes[*n].paused) {
            self.nodes[n].deferred.push(ev);
            return;
        }
        match ev {
            Ev::Arrive(id) => self.arrive(id),
            Ev::Timer { node, generation } => {
                if self.nodes[node].timer_generation == generation {
                    self.nodes[node].timer_at = None;
                    if let Some(p) = self.nodes[node].p.as_mut() {
                        p.handle_timeout(self.now);
                    }
                    self.drain(node);
                }
            }
            Ev::PersistDone { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.finish_persist(node);
                    self.drain(node);
                }
            }
            Ev::Fail {
                node,
                incarnation,
                mid,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.log(|| format!("{node} request {} failed", mid.get()));
                    let e = Error::new(ErrorCode::Call, "timed out");
                    if let Some(p) = self.nodes[node].p.as_mut() {
                        p.handle_response(self.now, mid, Err(e));
                    }
                    self.drain(node);
                }
            }
            Ev::Crash { node } => self.crash(node),
        }
        self.check();
    }

    /// Runs events until `until` holds or `max_ms` of virtual time passed. Returns whether it
    /// holds.
    pub fn run_until(&mut self, until: impl Fn(&Sim<S>) -> bool, max_ms: u64) -> bool {
        let end = self.now + max_ms;
        while !until(self) {
            match self.events.keys().next() {
                Some(&(t, _)) if t <= end => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    return until(self);
                }
            }
        }
        true
    }

    /// Runs every event due in the next `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(&(t, _)) = self.events.keys().next() {
            if t > end {
                break;
            }
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Bootstraps node `i` as the master of a one-member cluster.
    pub fn bootstrap(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let _ = p.bootstrap(self.now);
        }
        self.drain(i);
    }

    /// A client submits one change at node `i`. Returns the op id; see [`op`](Self::op).
    pub fn submit(&mut self, i: usize, change: String) -> u64 {
        let req = Request::Submit(Submit {
            chg: alloc::vec![change.clone()],
            forwarded: false,
        });
        self.client_call(i, change, req, None)
    }

    /// A client makes a consistent read of `key` at node `i`; the op's `value` is what the node
    /// held when it answered.
    pub fn read(&mut self, i: usize, key: &str) -> u64 {
        let req = Request::ReadIndex(crate::wire::ReadIndex::default());
        self.client_call(i, format!("read {key}"), req, Some(key.to_string()))
    }

    /// A client calls `members/add` or `members/remove` at node `i`.
    pub fn admin(&mut self, i: usize, method: Method, member: &str, version: Option<u64>) -> u64 {
        let body = AdminMember {
            addr: member.to_string(),
            version,
            forwarded: false,
        };
        let req = match method {
            Method::MembersRemove => Request::MembersRemove(body),
            _ => Request::MembersAdd(body),
        };
        self.client_call(i, format!("{} {member}", method.path()), req, None)
    }

    fn client_call(
        &mut self,
        i: usize,
        change: String,
        req: Request,
        read_key: Option<String>,
    ) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            op,
            OpView {
                id: op,
                node: i,
                change,
                invoked_at: self.now,
                completed_at: None,
                ok: None,
                err: None,
                code: None,
                read_key,
                value: None,
            },
        );
        if self.nodes[i].p.is_none() {
            self.complete_op(op, Err(Error::new(ErrorCode::Connect, "node is down")));
            return op;
        }
        // Through JSON, like everything else.
        let req = Request::decode(req.method(), &req.encode()).expect("own encoding decodes");
        let rid = self.next_rid;
        self.next_rid += 1;
        self.open.insert(
            rid,
            Open {
                origin: Origin::Client { op },
                to: i,
                method: req.method(),
            },
        );
        if self.nodes[i].paused {
            self.nodes[i].deferred_calls.push((rid, req));
            return op;
        }
        if let Some(p) = self.nodes[i].p.as_mut() {
            p.handle_request(self.now, crate::RequestId(rid), req);
        }
        self.drain(i);
        self.check();
        op
    }

    /// Crashes node `i`: it loses everything not yet persisted. Requests it was answering
    /// fail at their senders after the RPC timeout; client calls on it fail (outcome unknown).
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].p.is_none() {
            return;
        }
        self.log(|| format!("{i} CRASH"));
        let n = &mut self.nodes[i];
        n.p = None;
        n.persist = None;
        n.crash_mid_write = None;
        n.paused = false;
        n.incarnation += 1;
        n.timer_generation += 1;
        n.timer_at = None;
        n.deferred_calls.clear(); // their clients learn below, with every open request
                                  // What it missed while paused now meets a dead node (its senders learn of it).
        let missed = core::mem::take(&mut n.deferred);
        for ev in missed {
            self.schedule(self.now, ev);
        }
        let dead: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.to == i)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in dead {
            let o = self.open.remove(&rid).expect("listed");
            if let Origin::Client { op } = o.origin {
                // The client's connection breaks: the outcome is unknown.
                self.complete_op(op, Err(Error::new(ErrorCode::Call, "node crashed")));
            } else if let Origin::Node {
                node,
                incarnation,
                mid,
            } = o.origin
            {
                let at = self.now + self.cfg.rpc_timeout_ms;
                self.schedule(
                    at,
                    Ev::Fail {
                        node,
                        incarnation,
                        mid,
                    },
                );
            }
        }
        self.checker.on_crash(i);
    }

    /// Crashes node `i` the next time it has a write in progress, right after everything the
    /// core released ahead of that write has gone out: the write is lost. This is the window
    /// where an answer sent before its write is durable breaks a promise, which random crashes
    /// hit too rarely.
    ///
    /// With `then_master_after_ms`, the master of that moment (if another node) crashes that
    /// long after: a vote sent before its write was durable may then be all that held a chosen
    /// value.
    pub fn crash_mid_write(&mut self, i: usize, then_master_after_ms: Option<u64>) {
        if self.nodes[i].p.is_some() {
            self.log(|| format!("{i} CRASH ARMED (next write)"));
            self.nodes[i].crash_mid_write = Some(then_master_after_ms);
        }
    }

    /// Stops node `i` (SIGSTOP): time passes for everyone else; nothing reaches it.
    pub fn pause(&mut self, i: usize) {
        if self.nodes[i].p.is_some() && !self.nodes[i].paused {
            self.log(|| format!("{i} PAUSE"));
            self.nodes[i].paused = true;
        }
    }

    /// Resumes a paused node (SIGCONT): what it missed arrives now, in order.
    pub fn resume(&mut self, i: usize) {
        if !self.nodes[i].paused {
            return;
        }
        self.log(|| format!("{i} RESUME"));
        self.nodes[i].paused = false;
        for (rid, req) in core::mem::take(&mut self.nodes[i].deferred_calls) {
            if let Some(p) = self.nodes[i].p.as_mut() {
                p.handle_request(self.now, crate::RequestId(rid), req);
            }
            self.drain(i);
        }
        self.check();
        for ev in core::mem::take(&mut self.nodes[i].deferred) {
            self.schedule(self.now, ev);
        }
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].p.is_some() {
            return;
        }
        self.log(|| format!("{i} RESTART"));
        let cfg = self.node_config(i);
        let stored = self.nodes[i].stored.clone();
        match Participant::restore(cfg, S::default(), stored, self.now) {
            Ok(p) => {
                self.checker.on_restart(i, p.commit());
                self.nodes[i].p = Some(p);
                self.drain(i);
            }
            Err(e) => self
                .checker
                .violation(self.now, format!("node {i} cannot restart: {e}")),
        }
        self.check();
    }

    /// Cuts the network into `groups`: nodes in different groups cannot talk (nodes in no
    /// group are cut off from everyone).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.log(|| format!("PARTITION {groups:?}"));
        self.blocked.clear();
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.len() {
            for b in 0..self.len() {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Blocks messages from `from` to `to` only (a one-way partition).
    pub fn block(&mut self, from: usize, to: usize) {
        self.log(|| format!("BLOCK {from} -> {to}"));
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.log(|| String::from("HEAL"));
        self.blocked.clear();
    }

    /// Loses message `id` (its sender sees a failure: at once in manual mode, after the RPC
    /// timeout otherwise). Returns whether it was in flight.
    pub fn drop_message(&mut self, id: u64) -> bool {
        let Some(m) = self.net.remove(&id) else {
            return false;
        };
        self.events.retain(|_, e| *e != Ev::Arrive(id));
        let at = if self.manual {
            self.now
        } else {
            self.now + self.cfg.rpc_timeout_ms
        };
        self.fail_origin(&m, at);
        self.run_due();
        true
    }

    /// Reports the transport failures already due (in manual mode: at once). Timers wait for
    /// [`fire_timeout`](Self::fire_timeout) or [`run_for`](Self::run_for).
    fn run_due(&mut self) {
        loop {
            let due = self
                .events
                .iter()
                .find(|((t, _), e)| *t <= self.now && matches!(e, Ev::Fail { .. }))
                .map(|(k, _)| *k);
            let Some(k) = due else {
                return;
            };
            let ev = self.events.remove(&k).expect("just found");
            self.steps += 1;
            self.handle_event(ev);
        }
    }

    /// Delivers message `id` now (manual mode, or ahead of its time).
    pub fn deliver(&mut self, id: u64) -> bool {
        if !self.net.contains_key(&id) {
            return false;
        }
        self.events.retain(|_, e| *e != Ev::Arrive(id));
        self.steps += 1;
        self.arrive(id);
        self.check();
        self.run_due();
        true
    }

    /// Delivers every message in flight, oldest first, until none is left or `max` were
    /// delivered (manual mode).
    pub fn deliver_all(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(&id) = self.net.keys().next() else {
                break;
            };
            self.deliver(id);
            n += 1;
        }
        n
    }

    /// Hands node `i` a request as if a peer sent it (a delayed or forged message) and returns
    /// its answer if it gave one at once.
    pub fn inject(&mut self, i: usize, req: Request) -> Option<Response> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.open.insert(
            rid,
            Open {
                origin: Origin::Inject,
                to: i,
                method: req.method(),
            },
        );
        if let Some(p) = self.nodes[i].p.as_mut() {
            p.handle_request(self.now, crate::RequestId(rid), req);
        }
        self.drain(i);
        self.check();
        self.injected.remove(&rid)
    }

    /// Fires node `i`'s timer now, whenever it was due.
    pub fn fire_timeout(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let t = p.poll_timeout().unwrap_or(self.now).max(self.now);
            self.now = t;
            p.handle_timeout(t);
        }
        self.drain(i);
        self.check();
    }

    /// Asks node `i` to start an election now.
    pub fn start_election(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].p.as_mut() {
            let _ = p.start_election(self.now);
        }
        self.drain(i);
        self.check();
    }

    /// Moves virtual time forward without processing anything (manual tests).
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    // -----------------------------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------------------------

    fn schedule(&mut self, at: u64, ev: Ev) {
        let k = self.next_event;
        self.next_event += 1;
        self.events.insert((at.max(self.now), k), ev);
    }

    fn delay(&mut self) -> u64 {
        let f = &self.cfg.faults;
        let (lo, hi) = (f.min_delay_ms, f.max_delay_ms.max(f.min_delay_ms));
        self.rng.range(lo, hi + 1)
    }

    fn chance(&mut self, permille: u32) -> bool {
        permille > 0 && self.rng.range(0, 1000) < u64::from(permille)
    }

    fn schedule_arrival(&mut self, id: u64, at: u64) {
        if let Some(m) = self.net.get_mut(&id) {
            m.arrives_at = Some(at);
        }
        self.schedule(at, Ev::Arrive(id));
    }

    /// Puts a message on the wire (or loses it).
    fn transmit(&mut self, m: NetMsg) {
        let id = self.next_net;
        self.next_net += 1;
        if !self.manual && self.chance(self.cfg.faults.drop_permille) {
            let at = self.now + self.cfg.rpc_timeout_ms;
            self.fail_origin(&m, at);
            return;
        }
        let dup = !self.manual
            && matches!(m.kind, NetKind::Request { .. })
            && self.chance(self.cfg.faults.dup_permille);
        if dup {
            let mut copy = m.clone();
            copy.kind = NetKind::Request {
                origin: Origin::Duplicate,
            };
            self.transmit(copy);
        }
        self.net.insert(id, m);
        if !self.manual {
            let d = self.delay();
            self.schedule_arrival(id, self.now + d);
        }
    }

    /// The sender of `m`'s request learns it failed, at `at`.
    fn fail_origin(&mut self, m: &NetMsg, at: u64) {
        let origin = match &m.kind {
            NetKind::Request { origin } | NetKind::Response { origin } => origin.clone(),
        };
        match origin {
            Origin::Node {
                node,
                incarnation,
                mid,
            } => self.schedule(
                at,
                Ev::Fail {
                    node,
                    incarnation,
                    mid,
                },
            ),
            // Clients and injected requests do not cross the network; duplicates have nobody
            // waiting for them.
            Origin::Client { .. } | Origin::Duplicate | Origin::Inject => {}
        }
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            let line = f();
            t.push(format!("t={} {line}", self.now));
        }
    }

    fn arrive(&mut self, id: u64) {
        let Some(m) = self.net.remove(&id) else {
            return;
        };
        let blocked = self.blocked.contains(&(m.from, m.to)) || self.nodes[m.to].p.is_none();
        self.log(|| {
            let kind = if matches!(m.kind, NetKind::Response { .. }) {
                "reply"
            } else {
                ""
            };
            let lost = if blocked { " LOST" } else { "" };
            let body = String::from_utf8_lossy(&m.body);
            format!(
                "{} -> {} {}{kind}{lost} {body}",
                m.from,
                m.to,
                m.method.path()
            )
        });
        if self.blocked.contains(&(m.from, m.to)) || self.nodes[m.to].p.is_none() {
            let at = if self.manual {
                self.now
            } else {
                (m.sent_at + self.cfg.rpc_timeout_ms).max(self.now)
            };
            return self.fail_origin(&m, at);
        }
        match m.kind {
            NetKind::Request { origin } => {
                let req = match Request::decode(m.method, &m.body) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!("undecodable {}: {e}", m.method.path());
                        return self.checker.violation(self.now, msg);
                    }
                };
                let rid = self.next_rid;
                self.next_rid += 1;
                self.open.insert(
                    rid,
                    Open {
                        origin,
                        to: m.to,
                        method: m.method,
                    },
                );
                if let Some(p) = self.nodes[m.to].p.as_mut() {
                    p.handle_request(self.now, crate::RequestId(rid), req);
                }
                self.drain(m.to);
            }
            NetKind::Response { origin } => {
                let Origin::Node {
                    node,
                    incarnation,
                    mid,
                } = origin
                else {
                    return;
                };
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                let res = Response::decode(m.method, &m.body);
                if let Err(e) = &res {
                    let msg = format!("undecodable {} response: {e}", m.method.path());
                    self.checker.violation(self.now, msg);
                }
                if let Some(p) = self.nodes[node].p.as_mut() {
                    p.handle_response(self.now, mid, res);
                }
                self.drain(node);
            }
        }
    }

    fn finish_persist(&mut self, i: usize) {
        let Some(p) = self.nodes[i].persist.take() else {
            return;
        };
        self.nodes[i].stored.apply(&p);
        if let Some(node) = self.nodes[i].p.as_mut() {
            node.persisted(self.now, p.id);
        }
    }

    /// Handles every output of node `i` until it has none. While a persist is in progress the
    /// core hands out only what does not depend on it.
    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].p.as_mut().and_then(|p| p.poll_output()) {
            match out {
                Output::Persist(p) => {
                    let delay = if self.manual {
                        0
                    } else {
                        self.rng.range(0, self.cfg.faults.persist_max_delay_ms + 1)
                    };
                    self.nodes[i].persist = Some(p);
                    if delay == 0 {
                        self.finish_persist(i);
                    } else {
                        let incarnation = self.nodes[i].incarnation;
                        self.schedule(
                            self.now + delay,
                            Ev::PersistDone {
                                node: i,
                                incarnation,
                            },
                        );
                    }
                }
                Output::Send(s) => {
                    let Some(to) = self.index_of(&s.to) else {
                        // Nobody there: connection refused.
                        let incarnation = self.nodes[i].incarnation;
                        self.schedule(
                            self.now + 1,
                            Ev::Fail {
                                node: i,
                                incarnation,
                                mid: s.id,
                            },
                        );
                        continue;
                    };
                    let m = NetMsg {
                        from: i,
                        to,
                        method: s.request.method(),
                        kind: NetKind::Request {
                            origin: Origin::Node {
                                node: i,
                                incarnation: self.nodes[i].incarnation,
                                mid: s.id,
                            },
                        },
                        body: s.request.encode(),
                        sent_at: self.now,
                        arrives_at: None,
                    };
                    self.transmit(m);
                }
                Output::Reply(r) => self.route_reply(i, r.id.0, r.response),
                Output::Event(e) => self.on_event(i, e),
            }
        }
        if let Some(then) = self.nodes[i]
            .crash_mid_write
            .filter(|_| self.nodes[i].persist.is_some())
        {
            let master = self.serving_master().filter(|m| *m != i);
            if let (Some(m), Some(after)) = (master, then) {
                self.schedule(self.now + after, Ev::Crash { node: m });
            }
            return self.crash(i);
        }
        self.rearm(i);
    }

    fn route_reply(&mut self, i: usize, rid: u64, response: Response) {
        let Some(o) = self.open.remove(&rid) else {
            let msg = format!("node {i} answered unknown request {rid}");
            return self.checker.violation(self.now, msg);
        };
        debug_assert_eq!(o.to, i);
        match o.origin {
            Origin::Client { op } => {
                let r = match &response {
                    Response::Fail(f) => f.clone().into_result(),
                    _ => Err(Error::new(ErrorCode::Call, "wrong response shape")),
                };
                if r.is_ok() && o.method == Method::ReadIndex {
                    let key = self.ops.get(&op).and_then(|o| o.read_key.clone());
                    let value = key.and_then(|k| {
                        let p = self.nodes[i].p.as_ref()?;
                        p.state().read(&k)
                    });
                    if let Some(o) = self.ops.get_mut(&op) {
                        o.value = value;
                    }
                }
                self.complete_op(op, r);
            }
            Origin::Node { node, .. } => {
                let m = NetMsg {
                    from: i,
                    to: node,
                    method: o.method,
                    kind: NetKind::Response { origin: o.origin },
                    body: response.encode(),
                    sent_at: self.now,
                    arrives_at: None,
                };
                self.transmit(m);
            }
            Origin::Duplicate => {}
            Origin::Inject => {
                self.injected.insert(rid, response);
            }
        }
    }

    fn complete_op(&mut self, op: u64, r: Result<(), Error>) {
        let now = self.now;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.completed_at = Some(now);
        o.ok = Some(r.is_ok());
        if let Err(e) = &r {
            o.err = Some(format!("{e}"));
            o.code = Some(e.code);
        }
        let change = o.change.clone();
        let read = o.read_key.is_some();
        self.completed.push(op);
        if r.is_ok() && !read {
            self.checker.on_acknowledged(now, &change);
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        self.log(|| format!("{i} event {e:?}"));
        match e {
            Event::Committed { seq, payload } => self.checker.on_commit(self.now, i, seq, payload),
            Event::SnapshotInstalled { seq } => self.checker.on_snapshot(i, seq),
            Event::BecameMaster { .. } => self.checker.stats.elections_won += 1,
            _ => {}
        }
    }

    fn rearm(&mut self, i: usize) {
        let t = self.nodes[i].p.as_ref().and_then(|p| p.poll_timeout());
        if t == self.nodes[i].timer_at {
            return;
        }
        self.nodes[i].timer_generation += 1;
        self.nodes[i].timer_at = t;
        if let Some(t) = t {
            let generation = self.nodes[i].timer_generation;
            self.schedule(
                t,
                Ev::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }

    fn check(&mut self) {
        let now = self.now;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(p) = &n.p {
                self.checker.check_node(now, i, p);
            }
        }
    }
}
