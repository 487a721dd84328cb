//! The seed sweep: randomized scenarios on the simulated cluster, every safety property of
//! PROTOCOL.md section 4 checked after every step, the key-value history checked for
//! linearizability (stateright's `LinearizabilityTester`, per key), and liveness after the
//! faults heal.
//!
//! `SIM_SEEDS=N` changes the number of seeds (default 2000); `SIM_SEED=S` with the `replay`
//! test replays one seed and prints what it found.

use std::collections::BTreeMap;
use std::io::Write;

use clusterconsensus::sim::scenario::{self, HistEvent, HistOp, HistRet, ScenarioConfig};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

type Tester = LinearizabilityTester<u64, Register<Option<String>>>;

/// Checks the history per key (linearizability is local, so per key is enough).
fn linearizable(history: &[HistEvent]) -> Result<(), String> {
    let mut testers: BTreeMap<String, Tester> = BTreeMap::new();
    let mut key_of: BTreeMap<u64, String> = BTreeMap::new();
    for e in history {
        match e {
            HistEvent::Invoke { thread, op } => {
                let (key, op) = match op {
                    HistOp::Write { key, value } => (key, RegisterOp::Write(Some(value.clone()))),
                    HistOp::Read { key } => (key, RegisterOp::Read),
                };
                key_of.insert(*thread, key.clone());
                let t = testers
                    .entry(key.clone())
                    .or_insert_with(|| Tester::new(Register(None)));
                t.on_invoke(*thread, op)
                    .map_err(|e| format!("bad history: {e}"))?;
            }
            HistEvent::Return { thread, ret } => {
                let key = key_of.get(thread).ok_or("return without invoke")?;
                let ret = match ret {
                    HistRet::WriteOk => RegisterRet::WriteOk,
                    HistRet::ReadOk(v) => RegisterRet::ReadOk(v.clone()),
                };
                let t = testers.get_mut(key).expect("invoked before");
                t.on_return(*thread, ret)
                    .map_err(|e| format!("bad history: {e}"))?;
            }
        }
    }
    for (key, t) in &testers {
        if !t.is_consistent() {
            return Err(format!("history of key {key} is not linearizable"));
        }
    }
    Ok(())
}

const LIN_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// [`linearizable`] on its own thread; a check that outlives `budget` counts as a failure
/// (its thread is left to finish in the background).
fn linearizable_within(history: Vec<HistEvent>, budget: std::time::Duration) -> Result<(), String> {
    let n = history.len();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(linearizable(&history));
    });
    rx.recv_timeout(budget).unwrap_or_else(|_| {
        Err(format!(
            "linearizability check of {n} events did not finish in {budget:?}"
        ))
    })
}

/// Runs one seed; returns (steps, violations).
fn run_seed(seed: u64) -> (u64, Vec<String>, scenario::ScenarioResult) {
    let cfg = ScenarioConfig::random(seed);
    let r = scenario::run(&cfg);
    let mut violations = r.violations.clone();
    // Checking a history that is not linearizable explores every interleaving: only check
    // runs that passed the step checks, and give up (as a failure) after a time budget.
    if violations.is_empty() {
        if let Err(e) = linearizable_within(r.history.clone(), LIN_BUDGET) {
            violations.push(e);
        }
    }
    (r.steps, violations, r)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn sweep() {
    let seeds = env_u64("SIM_SEEDS").unwrap_or(2000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let results: Vec<(u64, u64, Vec<String>, scenario::ScenarioResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut seed = t;
                    while seed < seeds {
                        let (steps, v, r) = run_seed(seed);
                        out.push((seed, steps, v, r));
                        seed += threads;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let steps: u64 = results.iter().map(|r| r.1).sum();
    let failing: Vec<_> = results.iter().filter(|r| !r.2.is_empty()).collect();
    let violations: usize = failing.iter().map(|r| r.2.len()).sum();
    for (seed, _, v, _) in failing.iter().take(10) {
        eprintln!("seed {seed} failed:");
        for x in v.iter().take(5) {
            eprintln!("  {x}");
        }
        eprintln!(
            "  replay: {}",
            ScenarioConfig::random(*seed).replay_command()
        );
    }
    // Written to the process's stderr directly, past the test harness's capture: the summary
    // shows in every `cargo test` run, passing or not.
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "simulation: {} seeds, {steps} steps, {violations} violations ({:.1} s)",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let sum =
        |f: fn(&scenario::ScenarioResult) -> u64| results.iter().map(|r| f(&r.3)).sum::<u64>();
    let (ok, retried, abandoned) = (
        sum(|r| r.ops_ok),
        sum(|r| r.ops_retried),
        sum(|r| r.ops_abandoned),
    );
    let (elections, snapshots, membership, crashes, faults) = (
        sum(|r| r.stats.elections_won),
        sum(|r| r.stats.snapshots_installed),
        sum(|r| r.stats.membership_commits),
        sum(|r| r.stats.crashes),
        sum(|r| r.faults),
    );
    let _ = writeln!(
        err,
        "simulation coverage: {ok} client ops ok ({retried} retries, {abandoned} abandoned), \
         {elections} elections won, {snapshots} snapshots installed, {membership} membership \
         changes committed, {crashes} crashes, {faults} nemesis actions"
    );
    assert_eq!(results.len() as u64, seeds);
    // The sweep must exercise what it claims to (a vacuous run proves nothing).
    if seeds >= 100 {
        assert!(elections > seeds / 2 && snapshots > 0 && membership > 0 && crashes > 0);
    }
    assert!(failing.is_empty(), "{} seeds failed", failing.len());
}

#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(7);
    let cfg = ScenarioConfig::random(seed);
    let (steps, violations, r) = run_seed(seed);
    println!("seed {seed}: {cfg:?}");
    if std::env::var("SIM_TRACE").is_ok() {
        let t = scenario::run_traced(&cfg, true);
        for line in &t.trace {
            println!("{line}");
        }
    }
    println!(
        "steps {steps}, ops ok {}, retried {}, abandoned {}, faults {}, elected after {:?} ms, commit {}",
        r.ops_ok, r.ops_retried, r.ops_abandoned, r.faults, r.elected_after_ms, r.commit
    );
    for v in &violations {
        println!("violation: {v}");
    }
    assert!(r.ops_ok > 0, "no operation completed");
    assert!(violations.is_empty(), "{violations:?}");
}
