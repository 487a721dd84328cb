//! `Simulation`: the core's deterministic simulated cluster ([`clusterconsensus::sim::Sim`]),
//! driven from JavaScript and drawn by the dashboard.
//!
//! Everything is a function of the seed, the options and the sequence of calls, so the
//! simulation records every call that changes the cluster (submit, crash, restart, partition,
//! heal, drop) with the step and the virtual time at which it was made. [`Simulation::rewind`]
//! rebuilds the cluster from the seed and replays that record up to an earlier step: the past
//! is never stored, only recomputed, and a rewound cluster is identical to the one that was
//! there at that step (the tests check this). After a rewind the recorded future is kept until
//! the simulation is driven again (so the timeline can also move forward); the first
//! `step`/`run` or action then discards it.

use clusterconsensus::sim::{Faults, Sim, SimConfig};
use clusterconsensus::ErrorCode;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::js_err;

/// Most nodes a simulation may have (the ring gets crowded beyond this).
const MAX_NODES: usize = 15;

/// A user action, as recorded for replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    Submit { node: usize, change: String },
    Crash { node: usize },
    Restart { node: usize },
    Partition { groups: Vec<Vec<usize>> },
    Heal,
    Drop { message: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Recorded {
    /// `Sim::steps()` and `Sim::now()` when the action was made.
    step: u64,
    now: u64,
    #[serde(flatten)]
    action: Action,
}

/// A simulated cluster of real participants on a virtual network, deterministic for a seed.
///
/// ```js
/// const sim = new Simulation(5, 42, { minDelayMs: 20, maxDelayMs: 60 });
/// sim.run(1000);
/// const st = sim.state();
/// const master = st.nodes.find((n) => n.role === "master");
/// sim.crash(master.index);
/// sim.run(3000);                          // a new master is elected
/// sim.submit(0, JSON.stringify({ op: "set", key: "x", value: "1" }));
/// sim.rewind(st.steps);                   // back to before the crash
/// ```
#[wasm_bindgen]
#[derive(Debug)]
pub struct Simulation {
    cfg: SimConfig,
    sim: Sim,
    log: Vec<Recorded>,
    /// The furthest step reached on the current branch of history.
    horizon: u64,
}

#[wasm_bindgen]
impl Simulation {
    /// A formed cluster of `nodes` members (1 to 15) from `seed` (an integer; the same seed and
    /// the same calls give the same history). `options` may set `dropPermille`, `dupPermille`,
    /// `minDelayMs`, `maxDelayMs`, `persistMaxDelayMs`, `heartbeatMs`, `electionMinMs`,
    /// `electionMaxMs`, `rpcTimeoutMs`; the others keep the core's defaults.
    #[wasm_bindgen(constructor)]
    pub fn new(
        nodes: usize,
        seed: f64,
        options: Option<js_sys::Object>,
    ) -> Result<Simulation, JsValue> {
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(js_err(
                ErrorCode::State,
                format!("nodes must be 1 to {MAX_NODES}, not {nodes}"),
            ));
        }
        // Integers a JS number holds exactly.
        if !((0.0..=9_007_199_254_740_991.0).contains(&seed) && seed.fract() == 0.0) {
            return Err(js_err(
                ErrorCode::State,
                format!("seed must be a non-negative integer, not {seed}"),
            ));
        }
        let mut cfg = SimConfig::new(nodes, seed as u64);
        if let Some(o) = options {
            apply_options(&mut cfg, &o)?;
        }
        Ok(Simulation::build(cfg))
    }

    /// Processes the next event (a message arrives, a timer fires, a write completes), advancing
    /// virtual time to it. False if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        self.branch();
        let more = self.sim.step();
        self.horizon = self.sim.steps();
        more
    }

    /// Processes every event due in the next `ms` of virtual time (fractions are dropped).
    pub fn run(&mut self, ms: f64) {
        self.branch();
        if ms >= 1.0 {
            self.sim.run_for(ms as u64);
        }
        self.horizon = self.sim.steps();
    }

    /// A client submits `change` (for the key-value app, `{"op":"set","key":K,"value":V}`) at
    /// `node`; returns the operation's id, whose outcome appears in `state().ops`.
    pub fn submit(&mut self, node: usize, change: String) -> Result<f64, JsValue> {
        self.check_node(node)?;
        let id = self.record(Action::Submit { node, change });
        Ok(id as f64)
    }

    /// Crashes `node`: it loses whatever it had not yet written to its (virtual) disk.
    pub fn crash(&mut self, node: usize) -> Result<(), JsValue> {
        self.check_node(node)?;
        self.record(Action::Crash { node });
        Ok(())
    }

    /// Restarts a crashed `node` from its disk.
    pub fn restart(&mut self, node: usize) -> Result<(), JsValue> {
        self.check_node(node)?;
        self.record(Action::Restart { node });
        Ok(())
    }

    /// Cuts the network into `groups` (an array of arrays of node indexes): nodes in different
    /// groups cannot talk, and a node in no group talks to nobody. Replaces any earlier cut.
    pub fn partition(&mut self, groups: JsValue) -> Result<(), JsValue> {
        let text = js_sys::JSON::stringify(&groups)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default();
        let groups: Vec<Vec<usize>> = serde_json::from_str(&text).map_err(|_| {
            js_err(
                ErrorCode::Encoding,
                "partition takes an array of arrays of node indexes",
            )
        })?;
        for &n in groups.iter().flatten() {
            self.check_node(n)?;
        }
        self.record(Action::Partition { groups });
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.record(Action::Heal);
    }

    /// Loses message `id` (from `state().messages`); its sender sees a timeout. False if it
    /// was no longer in flight.
    #[wasm_bindgen(js_name = drop)]
    pub fn drop_message(&mut self, id: f64) -> bool {
        if !(id >= 0.0 && id.fract() == 0.0) {
            return false;
        }
        self.record(Action::Drop { message: id as u64 }) == 1
    }

    /// Everything to draw: `{now, steps, horizon, seed, nodes: [{index, addr, up, role,
    /// instance, commit, master, members, staged, data}], messages: [{id, from, to, method,
    /// response, body, sent_at, arrives_at}], violations: [string], ops: [{id, node, change,
    /// invoked_at, completed_at, ok, err}]}`. `violations` lists every breach of the safety
    /// properties (PROTOCOL.md section 4) found by the checks that run after every step.
    pub fn state(&self) -> JsValue {
        #[derive(Serialize)]
        struct State<V: Serialize> {
            #[serde(flatten)]
            view: V,
            horizon: u64,
            seed: u64,
        }
        let s = State {
            view: self.sim.view(),
            horizon: self.horizon,
            seed: self.cfg.seed,
        };
        let text = serde_json::to_string(&s).unwrap_or_default();
        js_sys::JSON::parse(&text).unwrap_or(JsValue::NULL)
    }

    /// Rebuilds the cluster as it was after step `step` (0 to `horizon`) by replaying the seed
    /// and the recorded actions. Returns the step reached.
    pub fn rewind(&mut self, step: f64) -> f64 {
        let target = if step.is_finite() && step > 0.0 {
            (step as u64).min(self.horizon)
        } else {
            0
        };
        let mut sim = Sim::new(self.cfg.clone());
        for r in self.log.iter().filter(|r| r.step <= target) {
            advance_to(&mut sim, r.step, r.now);
            apply(&mut sim, &r.action);
        }
        while sim.steps() < target && sim.step() {}
        self.sim = sim;
        self.sim.steps() as f64
    }

    /// The recorded actions of the current history: `[{step, now, action, ...}]`.
    pub fn history(&self) -> JsValue {
        let text = serde_json::to_string(&self.log).unwrap_or_default();
        js_sys::JSON::parse(&text).unwrap_or(JsValue::NULL)
    }

    /// Virtual time, in milliseconds.
    #[wasm_bindgen(getter)]
    pub fn now(&self) -> f64 {
        self.sim.now() as f64
    }

    /// Events processed so far.
    #[wasm_bindgen(getter)]
    pub fn steps(&self) -> f64 {
        self.sim.steps() as f64
    }

    /// The furthest step of the current history (what `rewind` can go forward to).
    #[wasm_bindgen(getter)]
    pub fn horizon(&self) -> f64 {
        self.horizon as f64
    }

    #[wasm_bindgen(getter)]
    pub fn seed(&self) -> f64 {
        self.cfg.seed as f64
    }

    /// Number of nodes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.sim.len()
    }

    /// The index of the node serving as master, if any.
    #[wasm_bindgen(getter)]
    pub fn master(&self) -> Option<usize> {
        self.sim.serving_master()
    }
}

impl Simulation {
    /// A simulation from a configuration (for Rust callers and tests).
    pub fn build(cfg: SimConfig) -> Simulation {
        let sim = Sim::new(cfg.clone());
        let horizon = sim.steps();
        Simulation {
            cfg,
            sim,
            log: Vec::new(),
            horizon,
        }
    }

    /// The simulated cluster.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Discards the recorded future after a rewind: driving the cluster makes a new branch.
    fn branch(&mut self) {
        let now = self.sim.steps();
        if self.horizon > now || self.log.last().is_some_and(|r| r.step > now) {
            self.log.retain(|r| r.step <= now);
            self.horizon = now;
        }
    }

    /// Applies and records `action`; returns what [`apply`] returned.
    fn record(&mut self, action: Action) -> u64 {
        self.branch();
        let r = Recorded {
            step: self.sim.steps(),
            now: self.sim.now(),
            action,
        };
        let out = apply(&mut self.sim, &r.action);
        // A drop that found nothing changed nothing: no need to replay it.
        if !matches!(r.action, Action::Drop { .. }) || out == 1 {
            self.log.push(r);
        }
        out
    }

    fn check_node(&self, node: usize) -> Result<(), JsValue> {
        if node < self.sim.len() {
            Ok(())
        } else {
            Err(js_err(
                ErrorCode::State,
                format!("no node {node} (nodes are 0 to {})", self.sim.len() - 1),
            ))
        }
    }
}

/// Applies one action; returns the op id of a submit, 1/0 for whether a drop found its
/// message, else 0.
fn apply(sim: &mut Sim, action: &Action) -> u64 {
    match action {
        Action::Submit { node, change } => sim.submit(*node, change.clone()),
        Action::Crash { node } => {
            sim.crash(*node);
            0
        }
        Action::Restart { node } => {
            sim.restart(*node);
            0
        }
        Action::Partition { groups } => {
            sim.partition(groups);
            0
        }
        Action::Heal => {
            sim.heal();
            0
        }
        Action::Drop { message } => u64::from(sim.drop_message(*message)),
    }
}

/// Replays events up to `step`, then lets virtual time pass to `now` (an action may have been
/// made after a `run` moved the clock past the last event; no event lies in between, or it
/// would have been processed and counted).
fn advance_to(sim: &mut Sim, step: u64, now: u64) {
    while sim.steps() < step && sim.step() {}
    if sim.now() < now {
        sim.run_for(now - sim.now());
    }
}

fn apply_options(cfg: &mut SimConfig, o: &js_sys::Object) -> Result<(), JsValue> {
    let num = |key: &str| -> Result<Option<u64>, JsValue> {
        let v = js_sys::Reflect::get(o, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
        if v.is_undefined() || v.is_null() {
            return Ok(None);
        }
        match v.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
            _ => Err(js_err(
                ErrorCode::State,
                format!("option {key} must be a non-negative integer"),
            )),
        }
    };
    let f: &mut Faults = &mut cfg.faults;
    if let Some(v) = num("dropPermille")? {
        f.drop_permille = v.min(1000) as u32;
    }
    if let Some(v) = num("dupPermille")? {
        f.dup_permille = v.min(1000) as u32;
    }
    if let Some(v) = num("minDelayMs")? {
        f.min_delay_ms = v;
    }
    if let Some(v) = num("maxDelayMs")? {
        f.max_delay_ms = v;
    }
    if let Some(v) = num("persistMaxDelayMs")? {
        f.persist_max_delay_ms = v;
    }
    if let Some(v) = num("heartbeatMs")? {
        cfg.heartbeat_ms = v.max(1);
    }
    if let Some(v) = num("electionMinMs")? {
        cfg.election_min_ms = v.max(1);
    }
    if let Some(v) = num("electionMaxMs")? {
        cfg.election_max_ms = v.max(cfg.election_min_ms);
    }
    if let Some(v) = num("rpcTimeoutMs")? {
        cfg.rpc_timeout_ms = v.max(1);
    }
    if f.max_delay_ms < f.min_delay_ms {
        f.max_delay_ms = f.min_delay_ms;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Native tests of what needs no JavaScript: replay and rewind determinism. The JS-facing
    //! behaviour is tested under Node in `tests/node.rs`.
    use super::*;

    fn kv(k: &str, v: &str) -> String {
        clusterconsensus::kv::KvChange::set(k, v).encode()
    }

    #[test]
    fn rewind_rebuilds_the_same_cluster() {
        let mut cfg = SimConfig::new(5, 11);
        cfg.faults.min_delay_ms = 5;
        cfg.faults.max_delay_ms = 30;
        let mut s = Simulation::build(cfg);
        s.sim.run_for(300);
        s.record(Action::Submit {
            node: 1,
            change: kv("a", "1"),
        });
        s.sim.run_for(120);
        let master = s.sim.serving_master().expect("a master");
        s.record(Action::Crash { node: master });
        s.sim.step();
        s.sim.step();
        s.record(Action::Partition {
            groups: vec![vec![0, 1], vec![2, 3, 4]],
        });
        s.sim.run_for(2_000);
        s.record(Action::Heal);
        s.record(Action::Submit {
            node: 2,
            change: kv("b", "2"),
        });
        s.sim.run_for(2_000);
        s.horizon = s.sim.steps();
        let end = s.sim.view();
        let end_steps = s.sim.steps();

        // Rewind to the very end: identical, byte for byte.
        s.rewind(end_steps as f64);
        let again = s.sim.view();
        assert_eq!(again.steps, end.steps);
        assert_eq!(
            serde_json::to_string(&again.nodes).unwrap(),
            serde_json::to_string(&end.nodes).unwrap()
        );
        assert_eq!(again.ops, end.ops);

        // Rewind to the middle, then forward again without driving: the future is still there.
        s.rewind((end_steps / 2) as f64);
        assert_eq!(s.sim.steps(), end_steps / 2);
        s.rewind(end_steps as f64);
        assert_eq!(s.sim.view().nodes, end.nodes);

        // Driving after a rewind discards the recorded future.
        s.rewind(1.0);
        s.step();
        assert!(s.log.iter().all(|r| r.step <= s.sim.steps()));
        assert_eq!(s.horizon, s.sim.steps());
    }
}
