//! Randomized scenarios for the seed sweep: 3 or 5 nodes, clients writing and reading keys
//! concurrently (retrying with a client id and request number, as docs/PROTOCOL.md section 3 tells
//! clients to), and a nemesis that drops, delays, duplicates, partitions (also one way and
//! around the master), crashes and restarts nodes and adds and removes members. Then every
//! fault heals and the scenario checks liveness: a master within a bounded time, every member
//! converged to the same commit and state, every client answered.
//!
//! Reads go through the log: a read submits a marker change and returns the key's value at the
//! marker's position in the chosen log. The history of writes and reads is returned for a
//! linearizability checker ([`super::lincheck`], through [`lincheck_history`]).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{addr, Faults, Sim, SimApp, SimConfig};
use crate::config::Rng;
use crate::error::ErrorCode;
use crate::kv::{KvChange, KvStore};
use crate::participant::Role;
use crate::wire::{AdminMember, Method, Payload};

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistOp {
    Write { key: String, value: String },
    Read { key: String },
}

/// Its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistRet {
    WriteOk,
    ReadOk(Option<String>),
}

/// Invocations and returns, in virtual-time order. A thread has at most one op in flight; a
/// client that gives up on an op (its outcome unknown) continues as a new thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistEvent {
    Invoke { thread: u64, op: HistOp },
    Return { thread: u64, ret: HistRet },
}

/// What a scenario does, drawn from its seed by [`ScenarioConfig::random`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub nodes: usize,
    pub spares: usize,
    pub clients: usize,
    pub keys: usize,
    /// Virtual time with faults.
    pub fault_ms: u64,
    /// After healing: a master must serve within this long...
    pub elect_within_ms: u64,
    /// ...and everything must converge within this long.
    pub settle_ms: u64,
    pub faults: Faults,
    pub crashes: bool,
    pub partitions: bool,
    pub membership: bool,
    /// Leader transfers (to a random member, or to the best voter) among the faults.
    pub transfers: bool,
    /// [`SimConfig::snapshot_chunk`]: most snapshots travel in several chunks.
    pub snapshot_chunk: usize,
    pub snapshot_every: u64,
    /// [`SimConfig::catchup_bytes`]: small, so that followers get snapshots as well as
    /// catch-ups by entries.
    pub catchup_bytes: usize,
    /// [`SimConfig::catchup_batch`]: 0 (one entry per accept) in a quarter of the scenarios,
    /// else a few entries per catch-up batch.
    pub catchup_batch: usize,
    /// [`SimConfig::snapshot_min_bytes`]: in a third of the scenarios a few hundred bytes, so
    /// that the size rule (a log as large as the state) decides when snapshots are due.
    pub snapshot_min_bytes: u64,
    /// A deliberate bug every node carries (feature `mutants`).
    #[cfg(feature = "mutants")]
    pub mutant: Option<crate::Mutant>,
}

impl ScenarioConfig {
    pub fn random(seed: u64) -> ScenarioConfig {
        let mut r = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5);
        let nodes = if r.range(0, 3) == 0 { 5 } else { 3 };
        ScenarioConfig {
            seed,
            nodes,
            spares: if r.range(0, 2) == 0 { 1 } else { 0 },
            clients: r.range(2, 5) as usize,
            keys: r.range(1, 4) as usize,
            fault_ms: r.range(2_000, 5_000),
            elect_within_ms: 5_000,
            settle_ms: 30_000,
            faults: Faults {
                drop_permille: r.range(0, 120) as u32,
                dup_permille: r.range(0, 50) as u32,
                min_delay_ms: 1,
                max_delay_ms: r.range(2, 60),
                persist_max_delay_ms: r.range(0, 10),
            },
            crashes: r.range(0, 4) != 0,
            partitions: r.range(0, 4) != 0,
            membership: r.range(0, 3) == 0,
            // Drawn last, so the seeds of the schedules before transfers existed draw the same.
            transfers: r.range(0, 2) == 0,
            snapshot_chunk: r.range(64, 256) as usize,
            snapshot_every: r.range(2, 30),
            catchup_bytes: r.range(0, 3000) as usize,
            // Drawn last, so the schedules of the seeds before batches existed draw the same.
            catchup_batch: match r.range(0, 4) {
                0 => 0,
                _ => r.range(1, 400) as usize,
            },
            // Drawn last, so the schedules of the seeds before the size rule draw the same.
            snapshot_min_bytes: match r.range(0, 3) {
                0 => r.range(20, 600),
                _ => SimConfig::new(1, 0).snapshot_min_bytes,
            },
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// The command that replays this scenario.
    pub fn replay_command(&self) -> String {
        format!(
            "SIM_SEED={} cargo test -p clusterconsensus --test simulation replay -- --nocapture",
            self.seed
        )
    }
}

/// What a scenario found.
#[derive(Clone, Debug, Default)]
pub struct ScenarioResult {
    pub seed: u64,
    pub steps: u64,
    pub violations: Vec<String>,
    pub history: Vec<HistEvent>,
    pub ops_ok: u64,
    pub ops_retried: u64,
    pub ops_abandoned: u64,
    pub faults: u64,
    /// Virtual ms from healing to a serving master.
    pub elected_after_ms: Option<u64>,
    pub commit: u64,
    pub stats: super::check::Stats,
    pub trace: Vec<String>,
}

struct Client {
    thread: u64,
    id: String,
    req: u64,
    n: u64,
    current: Option<Current>,
    next_at: u64,
    /// The node this client believes is master.
    target: usize,
}

struct Current {
    op: HistOp,
    /// The change to submit, or `None` for a consistent read (read index).
    change: Option<String>,
    attempts: u32,
    sim_op: Option<u64>,
    retry_at: u64,
}

const TICK_MS: u64 = 10;
const MAX_ATTEMPTS: u32 = 30;

/// Runs the scenario on the key-value app and checks it; never panics on a violation (they are
/// returned).
pub fn run(cfg: &ScenarioConfig) -> ScenarioResult {
    run_traced(cfg, false)
}

/// Like [`run`]; with `trace`, the result carries a line per message and event.
pub fn run_traced(cfg: &ScenarioConfig, trace: bool) -> ScenarioResult {
    run_app::<KvStore>(cfg, trace)
}

/// Runs the scenario on any app. Its clients submit key-value changes ([`KvChange`] JSON, and
/// a read's marker): the app must take them, and [`SimApp::read`] must answer a key's value as
/// a register would (the last value set, `None` once deleted), for the linearizability check.
/// How the app stores and snapshots its state is its own: that is what this runs it for.
pub fn run_app<S: SimApp>(cfg: &ScenarioConfig, trace: bool) -> ScenarioResult {
    let mut sc = SimConfig::new(cfg.nodes, cfg.seed);
    sc.spares = cfg.spares;
    sc.faults = cfg.faults.clone();
    sc.snapshot_chunk = cfg.snapshot_chunk;
    sc.snapshot_every = cfg.snapshot_every;
    sc.catchup_bytes = cfg.catchup_bytes;
    sc.catchup_batch = cfg.catchup_batch;
    sc.snapshot_min_bytes = cfg.snapshot_min_bytes;
    #[cfg(feature = "mutants")]
    {
        sc.mutant = cfg.mutant;
    }
    let mut sim = Sim::<S>::with_app(sc);
    if trace {
        sim.trace = Some(Vec::new());
    }
    let mut rng = Rng::new(cfg.seed ^ 0x0C11_E475);
    let mut res = ScenarioResult {
        seed: cfg.seed,
        ..ScenarioResult::default()
    };
    let mut next_thread = 0;
    let mut clients: Vec<Client> = (0..cfg.clients)
        .map(|_| {
            next_thread += 1;
            Client {
                thread: next_thread,
                id: format!("c{next_thread}"),
                req: 0,
                n: 0,
                current: None,
                next_at: 0,
                target: 0,
            }
        })
        .collect();
    let start = sim.now();
    let fault_end = start + cfg.fault_ms;
    let mut next_nemesis = start + rng.range(100, 600);
    // Fault phase, then the heal, then the settle phase.
    let mut healed_at = None;
    let mut pauses: Vec<(u64, usize)> = Vec::new();
    // Ops clients gave up on: (thread, the change of a write; `None` for a read).
    let mut abandoned: Vec<(u64, Option<String>)> = Vec::new();
    let hard_end = fault_end + cfg.settle_ms;
    loop {
        let now = sim.now();
        if healed_at.is_none() && now >= fault_end {
            sim.heal();
            sim.cancel_crashes();
            sim.cfg.faults = Faults::none();
            for i in 0..sim.len() {
                sim.resume(i);
                sim.restart(i);
            }
            healed_at = Some(now);
        } else if healed_at.is_some() {
            // A crash armed before the heal (`crash_mid_write`, and the master's crash it
            // schedules) can still hit after it: bring that node back too.
            for i in 0..sim.len() {
                sim.restart(i);
            }
        }
        // A paused node resumes when its pause is over; what it answers first then is the test.
        pauses.retain(|&(until, i)| {
            if now >= until {
                sim.resume(i);
            }
            now < until
        });
        if healed_at.is_none() && now >= next_nemesis {
            nemesis(&mut sim, &mut rng, cfg, &mut pauses);
            res.faults += 1;
            next_nemesis = now + rng.range(100, 700);
        }
        let accepting = healed_at.is_none();
        for c in clients.iter_mut() {
            drive_client(
                &mut sim,
                &mut rng,
                c,
                cfg,
                accepting,
                &mut res,
                &mut next_thread,
                &mut abandoned,
            );
        }
        if let Some(h) = healed_at {
            if res.elected_after_ms.is_none() && sim.serving_master().is_some() {
                res.elected_after_ms = Some(sim.now() - h);
            }
            let idle = clients.iter().all(|c| c.current.is_none());
            if idle && converged(&sim).is_ok() {
                break;
            }
            if sim.now() >= hard_end {
                break;
            }
        }
        sim.run_for(TICK_MS);
    }
    // Liveness.
    match res.elected_after_ms {
        Some(t) if t <= cfg.elect_within_ms => {}
        Some(t) => sim.checker.violation(
            sim.now(),
            format!("liveness: a master only {t} ms after healing"),
        ),
        None => sim
            .checker
            .violation(sim.now(), String::from("liveness: no master after healing")),
    }
    if let Err(e) = converged(&sim) {
        sim.checker
            .violation(sim.now(), format!("liveness: not converged: {e}"));
    }
    if clients.iter().any(|c| c.current.is_some()) {
        sim.checker.violation(
            sim.now(),
            String::from("liveness: a client is still waiting"),
        );
    }
    // Resolve the ops clients gave up on, now that the cluster has converged and nothing is in
    // flight: a read, and a write that is not in the log, took no effect and are dropped from
    // the history (sound: they constrain nothing); a write in the log stays unfinished, placed by
    // the checker anywhere after its invocation. Unresolved, a few of them make the check
    // explode.
    let gone: Vec<u64> = abandoned
        .iter()
        .filter(|(_, w)| {
            w.as_ref()
                .is_none_or(|w| !sim.checker.changes.contains_key(w))
        })
        .map(|(t, _)| *t)
        .collect();
    res.history
        .retain(|e| !matches!(e, HistEvent::Invoke { thread, .. } if gone.contains(thread)));
    res.steps = sim.steps();
    res.commit = sim
        .serving_master()
        .and_then(|m| sim.node(m))
        .map_or(0, |p| p.commit());
    res.violations = sim.violations().to_vec();
    res.stats = sim.checker.stats.clone();
    res.trace = sim.trace.take().unwrap_or_default();
    res
}

/// Every up member agrees with the serving master on commit and member list; every up
/// non-member knows it is out (removed) or never joined.
pub fn converged<S: SimApp>(sim: &Sim<S>) -> Result<(), String> {
    let m = sim.serving_master().ok_or("no serving master")?;
    let master = sim.node(m).expect("up");
    let (commit, members) = (master.commit(), master.members().to_vec());
    let learners = master.learners().to_vec();
    for i in 0..sim.len() {
        let Some(p) = sim.node(i) else {
            return Err(format!("node {i} is down"));
        };
        let learner = learners.iter().any(|l| l.addr == addr(i));
        if members.contains(&addr(i)) || learner {
            if p.commit() != commit || p.members() != members.as_slice() || p.learners() != learners
            {
                return Err(format!(
                    "node {i} at commit {} with {:?} and learners {:?}, master at {commit} with {members:?} and {learners:?}",
                    p.commit(),
                    p.members(),
                    p.learners(),
                ));
            }
            if p.master() != Some(addr(m).as_str()) {
                return Err(format!("node {i} follows {:?}, not node {m}", p.master()));
            }
        } else if !matches!(p.role(), Role::Removed | Role::Unjoined) {
            return Err(format!("node {i} is not a member but {:?}", p.role()));
        }
    }
    Ok(())
}

fn nemesis<S: SimApp>(
    sim: &mut Sim<S>,
    rng: &mut Rng,
    cfg: &ScenarioConfig,
    pauses: &mut Vec<(u64, usize)>,
) {
    let n = sim.len();
    let master = sim.serving_master();
    if cfg.transfers && rng.range(0, 4) == 0 {
        // A leader transfer asked at any node, to any node (also the master itself, a removed
        // node, a spare) or to the best voter: it succeeds, or fails cleanly, never unsafely.
        let at = rng.range(0, n as u64) as usize;
        let to = match rng.range(0, 3) {
            0 => None,
            _ => Some(addr(rng.range(0, n as u64) as usize)),
        };
        sim.transfer(at, to);
        return;
    }
    match rng.range(0, 13) {
        0 | 1 if cfg.partitions => {
            // A random split.
            let mut a = Vec::new();
            let mut b = Vec::new();
            for i in 0..n {
                if rng.range(0, 2) == 0 {
                    a.push(i)
                } else {
                    b.push(i)
                }
            }
            sim.partition(&[a, b]);
        }
        2 if cfg.partitions => {
            // Isolate the master.
            if let Some(m) = master {
                let rest = (0..n).filter(|i| *i != m).collect();
                sim.partition(&[alloc::vec![m], rest]);
            }
        }
        3 if cfg.partitions => {
            // One way: someone can send to the master but not hear it, or the reverse.
            if let Some(m) = master {
                let x = rng.range(0, n as u64) as usize;
                if x != m {
                    if rng.range(0, 2) == 0 {
                        sim.block(m, x);
                    } else {
                        sim.block(x, m);
                    }
                }
            }
        }
        4 | 5 => sim.heal(),
        6 | 7 if cfg.crashes => {
            // Often the master: that is what forces elections and recovery.
            let i = match master {
                Some(m) if rng.range(0, 2) == 0 => m,
                _ => rng.range(0, n as u64) as usize,
            };
            sim.crash(i);
        }
        8 if cfg.crashes => {
            for i in 0..n {
                sim.restart(i);
            }
        }
        11 if cfg.crashes => {
            // A process pause (GC, SIGSTOP), often of the master: it wakes up still believing
            // what it believed, and a client may ask it first.
            let i = match master {
                Some(m) if rng.range(0, 3) != 0 => m,
                _ => rng.range(0, n as u64) as usize,
            };
            sim.pause(i);
            let until = sim.now() + rng.range(300, 3_000);
            pauses.push((until, i));
        }
        12 if cfg.crashes => {
            // A crash that loses a write in progress, after what went out ahead of it.
            match master {
                Some(m) if rng.range(0, 2) == 0 => {
                    // Every follower at its next write, and the master soon after the first:
                    // if a vote went out before its write was durable, it may be all that
                    // held what the master chose.
                    let after = rng.range(1, 30);
                    for i in (0..n).filter(|i| *i != m) {
                        sim.crash_mid_write(i, Some(after));
                    }
                }
                _ => sim.crash_mid_write(rng.range(0, n as u64) as usize, None),
            }
        }
        9 | 10 if cfg.membership => {
            let Some(m) = master else {
                return;
            };
            let members = sim
                .node(m)
                .map(|p| p.members().to_vec())
                .unwrap_or_default();
            let version = sim.node(m).map(|p| p.members_version());
            let at = rng.range(0, n as u64) as usize;
            // Sometimes a stale version: it must be refused, not applied.
            let version = match rng.range(0, 3) {
                0 => None,
                1 => version,
                _ => version.map(|v| v.saturating_sub(1)),
            };
            let learners: Vec<String> = sim
                .node(m)
                .map(|p| p.learners().iter().map(|l| l.addr.clone()).collect())
                .unwrap_or_default();
            let outsiders: Vec<usize> = (0..n)
                .filter(|i| !members.contains(&addr(*i)) && !learners.contains(&addr(*i)))
                .collect();
            if !learners.is_empty() && rng.range(0, 3) == 0 {
                // Promote a learner, or remove it (also while it is still receiving the state).
                let x = learners[rng.range(0, learners.len() as u64) as usize].clone();
                let method = match rng.range(0, 2) {
                    0 => Method::MembersPromote,
                    _ => Method::MembersRemove,
                };
                sim.admin(at, method, &x, version);
            } else if !outsiders.is_empty() && (members.len() <= 2 || rng.range(0, 2) == 0) {
                // A learner the master promotes once it has caught up; sometimes one that stays
                // a learner until promoted; sometimes (the seed's way) a voter at once.
                let x = outsiders[rng.range(0, outsiders.len() as u64) as usize];
                let body = AdminMember {
                    version,
                    promote: rng.range(0, 4) != 0,
                    voter: rng.range(0, 6) == 0,
                    ..AdminMember::new(addr(x))
                };
                sim.admin_call(at, Method::MembersAdd, body);
            } else if members.len() > 2 {
                let x = &members[rng.range(0, members.len() as u64) as usize];
                sim.admin(at, Method::MembersRemove, &x.clone(), version);
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn drive_client<S: SimApp>(
    sim: &mut Sim<S>,
    rng: &mut Rng,
    c: &mut Client,
    cfg: &ScenarioConfig,
    accepting: bool,
    res: &mut ScenarioResult,
    next_thread: &mut u64,
    abandoned: &mut Vec<(u64, Option<String>)>,
) {
    let now = sim.now();
    let n = sim.len() as u64;
    if c.current.is_none() {
        if !accepting || now < c.next_at {
            return;
        }
        c.n += 1;
        let key = format!("k{}", rng.range(0, cfg.keys as u64));
        let (op, change) = match rng.range(0, 10) {
            0..=5 => {
                c.req += 1;
                let value = format!("{}-{}", c.id, c.n);
                let ch = KvChange::set(key.clone(), value.clone()).with_client(c.id.clone(), c.req);
                (HistOp::Write { key, value }, Some(ch.encode()))
            }
            6 | 7 => {
                // A read through the log: a marker whose position gives the value.
                let marker = format!("read {} {} {}", c.id, c.n, key);
                let ch = KvChange::set("__read", marker);
                (HistOp::Read { key }, Some(ch.encode()))
            }
            _ => (HistOp::Read { key }, None), // a consistent read (read index)
        };
        res.history.push(HistEvent::Invoke {
            thread: c.thread,
            op: op.clone(),
        });
        // Clients talk to every node, not only the master they know of: followers forward,
        // and a node that was paused or cut off gets asked too.
        if rng.range(0, 3) == 0 {
            c.target = rng.range(0, n) as usize;
        }
        c.current = Some(Current {
            op,
            change,
            attempts: 0,
            sim_op: None,
            retry_at: now,
        });
    }
    let cur = c.current.as_mut().expect("set above");
    match cur.sim_op {
        None if now >= cur.retry_at => {
            cur.attempts += 1;
            cur.sim_op = Some(match (&cur.change, &cur.op) {
                (Some(ch), _) => sim.submit(c.target, ch.clone()),
                (None, HistOp::Read { key }) => sim.read(c.target, key),
                (None, HistOp::Write { .. }) => unreachable!("writes carry a change"),
            });
        }
        None => {}
        Some(op) => {
            let Some(v) = sim.op(op).filter(|o| o.completed_at.is_some()).cloned() else {
                return;
            };
            cur.sim_op = None;
            if v.ok == Some(true) {
                let ret = match (&cur.op, &cur.change) {
                    (HistOp::Write { .. }, _) => HistRet::WriteOk,
                    (HistOp::Read { .. }, None) => HistRet::ReadOk(v.value.clone()),
                    (HistOp::Read { key }, Some(ch)) => match read_at_marker(sim, ch, key) {
                        Some(v) => HistRet::ReadOk(v),
                        None => {
                            let msg = format!("read marker {ch} is not in the log");
                            sim.checker.violation(now, msg);
                            HistRet::ReadOk(None)
                        }
                    },
                };
                res.history.push(HistEvent::Return {
                    thread: c.thread,
                    ret,
                });
                res.ops_ok += 1;
                c.current = None;
                c.next_at = now + rng.range(0, 50);
                return;
            }
            if v.code == Some(ErrorCode::Encoding) {
                let msg = format!("well-formed change refused: {:?}", v.err);
                sim.checker.violation(now, msg);
            }
            // Unknown outcome: retry the same change (same client and request number)
            // elsewhere, or give up and continue as a new thread.
            res.ops_retried += 1;
            c.target = match sim.serving_master() {
                Some(m) if rng.range(0, 3) != 0 => m,
                _ => rng.range(0, n) as usize,
            };
            if cur.attempts >= MAX_ATTEMPTS {
                res.ops_abandoned += 1;
                let write = match &cur.op {
                    HistOp::Write { .. } => cur.change.clone(),
                    HistOp::Read { .. } => None,
                };
                abandoned.push((c.thread, write));
                *next_thread += 1;
                c.thread = *next_thread;
                c.id = format!("c{}", c.thread);
                c.req = 0;
                c.current = None;
                return;
            }
            // Exponential backoff (10 ms doubling to 640 ms): a client rides out an outage of
            // several seconds before it gives up.
            let backoff = 10u64 << cur.attempts.min(6);
            cur.retry_at = now + rng.range(backoff, 2 * backoff);
        }
    }
}

/// The value of `key` just before the marker `change` in the chosen log.
fn read_at_marker<S: SimApp>(sim: &Sim<S>, change: &str, key: &str) -> Option<Option<String>> {
    let seq = *sim.checker.changes.get(change)?;
    let mut kv = sim.checker.state_at(seq - 1)?;
    let Some(Payload::Changes(batch)) = sim.checker.chosen.get(&seq) else {
        return None;
    };
    for ch in batch {
        if ch == change {
            return Some(kv.read(key));
        }
        kv.apply(seq, ch);
    }
    None
}

/// The history as the linearizability checker takes it ([`super::lincheck`]): an op invoked and
/// never answered (a write a client gave up on that is in the log) is of unknown outcome.
pub fn lincheck_history(history: &[HistEvent]) -> Vec<super::lincheck::RegisterEvent> {
    use super::lincheck::{Event, RegisterOp, RegisterRet};
    history
        .iter()
        .map(|e| match e {
            HistEvent::Invoke { thread, op } => {
                let (key, op) = match op {
                    HistOp::Write { key, value } => (key, RegisterOp::Write(Some(value.clone()))),
                    HistOp::Read { key } => (key, RegisterOp::Read),
                };
                let key = key.clone();
                Event::Invoke {
                    id: *thread,
                    key,
                    op,
                }
            }
            HistEvent::Return { thread, ret } => Event::Return {
                id: *thread,
                ret: match ret {
                    HistRet::WriteOk => RegisterRet::Ok,
                    HistRet::ReadOk(v) => RegisterRet::Value(v.clone()),
                },
            },
        })
        .collect()
}

/// Checks a scenario's history for linearizability, key by key, in at most `max_steps` search
/// steps per key: `Ok` with the most steps a key took, or what is wrong (a check that did not
/// decide is an error too: it could hide a violation).
pub fn check_linearizable(history: &[HistEvent], max_steps: u64) -> Result<u64, String> {
    let events = lincheck_history(history);
    let checked = super::lincheck::check(&super::lincheck::Register, &events, max_steps)
        .map_err(|e| format!("{e}"))?;
    match checked.verdict {
        super::lincheck::Verdict::Ok => Ok(checked.max_key_steps),
        v => Err(format!("{v}")),
    }
}
