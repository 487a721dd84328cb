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
//!
//! This file holds the configuration, the [`Sim`] and its event loop; beside it live the
//! network (`net`), node lifecycle (`nodes`), client operations (`clients`) and the view (`view`).

pub mod check;
mod clients;
pub mod lincheck;
mod net;
mod nodes;
pub mod scenario;
mod view;

pub use view::{MessageView, NodeView, OpView, SimView};

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

use crate::config::{Config, Rng};
use crate::error::{Error, ErrorCode};
use crate::kv::KvStore;
use crate::output::{MessageId, Persist, Stored};
use crate::participant::Participant;
use crate::state_machine::StateMachine;
use crate::wire::{Method, Request, Response};

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
    /// [`Config::snapshot_min_bytes`]: the floor of the size rule for periodic snapshots.
    pub snapshot_min_bytes: u64,
    /// The most a `start` carries of a snapshot ([`Config::snapshot_chunk`]): small, so that
    /// transfers go in several chunks that faults can drop, duplicate, reorder and cut.
    pub snapshot_chunk: usize,
    /// [`Config::catchup_bytes`].
    pub catchup_bytes: usize,
    /// [`Config::catchup_batch`]: a few entries per catch-up batch.
    pub catchup_batch: usize,
    pub max_batch: usize,
    /// A deliberate bug every node carries (feature `mutants`).
    #[cfg(feature = "mutants")]
    #[serde(skip)]
    pub mutant: Option<crate::Mutant>,
}

/// The core's default: in a simulation's small states, the count rule alone decides.
fn default_snapshot_min_bytes() -> u64 {
    Config::new("", "").snapshot_min_bytes
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
            snapshot_min_bytes: default_snapshot_min_bytes(),
            snapshot_chunk: 96,
            catchup_bytes: 1000,
            catchup_batch: 200,
            max_batch: 64,
            #[cfg(feature = "mutants")]
            mutant: None,
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
    /// The host of `node` finished saving its snapshot job: the file is durable.
    SnapshotSaved {
        node: usize,
        incarnation: u64,
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
    /// The periodic snapshot job its host is saving (a newer one replaces it), lost in a crash
    /// (a file not yet synced is gone after one).
    job: Option<crate::SnapshotJob<S::Snapshot>>,
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
                job: None,
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
        c.snapshot_min_bytes = self.cfg.snapshot_min_bytes;
        c.snapshot_chunk = self.cfg.snapshot_chunk;
        c.catchup_bytes = self.cfg.catchup_bytes;
        c.catchup_batch = self.cfg.catchup_batch;
        c.max_batch = self.cfg.max_batch;
        #[cfg(feature = "mutants")]
        {
            c.mutant = self.cfg.mutant;
        }
        c.seed = self.rng.next_u64();
        c
    }

    fn form(&mut self) {
        let faults = core::mem::replace(&mut self.cfg.faults, Faults::none());
        // Node 0 grows the cluster itself: each peer joins as a learner and is promoted once
        // it has caught up.
        let n = self.cfg.nodes;
        self.bootstrap_with(0, (1..n).map(addr).collect());
        self.run_until(
            |s| s.node(0).is_some_and(|p| p.members().len() == n),
            30_000,
        );
        // Let heartbeats bring every member to the same commit.
        let horizon = self.now + 10 * self.cfg.heartbeat_ms;
        self.run_until(|s| s.now >= horizon, 10_000);
        self.cfg.faults = faults;
        self.checker.stats = check::Stats::default();
    }

    // -----------------------------------------------------------------------------------------
    // Driving: the event loop
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
            Ev::Timer { node, .. }
            | Ev::PersistDone { node, .. }
            | Ev::Fail { node, .. }
            | Ev::SnapshotSaved { node, .. } => Some(*node),
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
            Ev::SnapshotSaved { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.save_snapshot(node);
                    self.drain(node);
                }
            }
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

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            let line = f();
            t.push(format!("t={} {line}", self.now));
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
