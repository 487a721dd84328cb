//! The seed sweep: randomized scenarios on the simulated cluster, every safety property of
//! PROTOCOL.md section 4 checked after every step, the key-value history checked for
//! linearizability (`clusterconsensus::sim::lincheck`, per key), and liveness after the
//! faults heal.
//!
//! `SIM_SEEDS=N` changes the number of fixed seeds (default 2000, seeds 0..N), `SIM_FRESH=N` the
//! number of fresh ones each run draws (default 500, from a base taken from the clock that the
//! summary line names; `SIM_FRESH_BASE=B` runs those again); `SIM_SEED=S` with the `replay` test
//! replays one seed and prints what it found.

use std::io::Write;
use std::time::{Duration, Instant};

use clusterconsensus::sim::scenario::{self, ScenarioConfig};

/// The most search steps the linearizability check of one key may take. The histories of the
/// sweep take at most a few thousand; a check that does not decide within this is a failure
/// (an undecided check can hide a violation), the same on every machine.
const LIN_STEPS: u64 = 1_000_000;

/// What checking one history took.
#[derive(Clone, Copy, Debug, Default)]
struct LinCheck {
    events: usize,
    time: Duration,
    /// The most steps one key took.
    steps: u64,
}

/// Checks the history per key (linearizability is local, so per key is enough).
fn linearizable(history: &[scenario::HistEvent]) -> (Result<(), String>, LinCheck) {
    let started = Instant::now();
    let checked = scenario::check_linearizable(history, LIN_STEPS);
    let took = LinCheck {
        events: history.len(),
        time: started.elapsed(),
        steps: *checked.as_ref().unwrap_or(&0),
    };
    (checked.map(|_| ()), took)
}

/// One seed's run.
struct Run {
    seed: u64,
    violations: Vec<String>,
    result: scenario::ScenarioResult,
    lin: Option<LinCheck>,
}

/// Runs one seed.
fn run_seed(seed: u64) -> Run {
    let cfg = ScenarioConfig::random(seed);
    let result = scenario::run(&cfg);
    let mut violations = result.violations.clone();
    // A history that is not linearizable makes the search explore every order: only check runs
    // that passed the step checks (the step budget bounds the rest).
    let mut lin = None;
    if violations.is_empty() {
        let (verdict, took) = linearizable(&result.history);
        if let Err(e) = verdict {
            violations.push(e);
        }
        lin = Some(took);
    }
    Run {
        seed,
        violations,
        result,
        lin,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Seeds above the fixed range that once failed, run in every sweep. From the 100,000-seed
/// release sweep of 2026-12-08: 17474 and 90287 (a learner removed while it lagged, or was
/// down, missed the one notice of its removal and, never campaigning, never learned of it; in
/// 90287 the master that removed it lost mastership too: now whoever is master re-sends it),
/// and nine seeds where a periodic snapshot saved before the Persist of its own commit was
/// durable was restored beside an older hard state ("commit is N but entries end at N+1":
/// the in-memory store took a saved snapshot as stored before the compaction that names it,
/// which a host's log never does; `Stored::saved`).
const FOUND: [u64; 11] = [
    17474, 18938, 19688, 23876, 27444, 28882, 37238, 40496, 40784, 41138, 90287,
];

#[test]
fn sweep() {
    let seeds = env_u64("SIM_SEEDS").unwrap_or(2000);
    // Besides the fixed seeds 0..SIM_SEEDS (the same every run, so a change that breaks one is
    // caught at once), every run explores SIM_FRESH seeds it has never tried, from a base drawn
    // from the clock and named in the summary line: a failure among them replays with its seed
    // (printed below) or the whole run with SIM_FRESH_BASE.
    let fresh = env_u64("SIM_FRESH").unwrap_or(500);
    let base = env_u64("SIM_FRESH_BASE").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Far above the fixed seeds, and not overlapping them when it wraps.
        (t % (u64::MAX / 2)).max(1 << 32)
    });
    let found: Vec<u64> = FOUND.iter().copied().filter(|s| *s >= seeds).collect();
    let all: Vec<u64> = (0..seeds)
        .chain(found.iter().copied())
        .chain(base..base + fresh)
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let results: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let all = &all;
                s.spawn(move || {
                    all.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&seed| run_seed(seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let steps: u64 = results.iter().map(|r| r.result.steps).sum();
    let failing: Vec<&Run> = results
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let violations: usize = failing.iter().map(|r| r.violations.len()).sum();
    for Run {
        seed, violations, ..
    } in failing.iter().take(10)
    {
        eprintln!("seed {seed} failed:");
        for x in violations.iter().take(5) {
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
        "simulation: {} seeds ({seeds} fixed, {} found earlier, {fresh} fresh from \
         SIM_FRESH_BASE={base}), {steps} steps, {violations} violations ({:.1} s)",
        results.len(),
        found.len(),
        started.elapsed().as_secs_f64()
    );
    let lin: Vec<LinCheck> = results.iter().filter_map(|r| r.lin).collect();
    let _ = writeln!(
        err,
        "linearizability: {} histories in {:.2} s, largest {} events, max {} ms, max {} steps for a key",
        lin.len(),
        lin.iter().map(|c| c.time).sum::<Duration>().as_secs_f64(),
        lin.iter().map(|c| c.events).max().unwrap_or(0),
        lin.iter().map(|c| c.time).max().unwrap_or_default().as_millis(),
        lin.iter().map(|c| c.steps).max().unwrap_or(0),
    );
    let sum =
        |f: fn(&scenario::ScenarioResult) -> u64| results.iter().map(|r| f(&r.result)).sum::<u64>();
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
    let (learners, promotions) = (sum(|r| r.stats.learners_added), sum(|r| r.stats.promotions));
    let transfers = sum(|r| r.stats.transfers);
    let chunks = sum(|r| r.stats.chunks_delivered);
    let (batches, batch_entries) = (
        sum(|r| r.stats.batches_delivered),
        sum(|r| r.stats.batch_entries_delivered),
    );
    let (cut_sender, cut_receiver) = (
        sum(|r| r.stats.crashes_sending_snapshot),
        sum(|r| r.stats.crashes_receiving_snapshot),
    );
    let (saved, cut_saving, cut_compacting) = (
        sum(|r| r.stats.snapshots_saved),
        sum(|r| r.stats.crashes_saving_snapshot),
        sum(|r| r.stats.crashes_before_compaction),
    );
    let _ = writeln!(
        err,
        "simulation coverage: {ok} client ops ok ({retried} retries, {abandoned} abandoned), \
         {elections} elections won, {snapshots} snapshots installed ({chunks} snapshot chunks \
         delivered), {batches} catch-up batches delivered ({batch_entries} entries), \
         {membership} membership changes committed ({learners} learners added, \
         {promotions} promoted), {transfers} leader transfers, {crashes} crashes ({cut_sender} \
         of a master sending a snapshot, {cut_receiver} of a node receiving one), {saved} periodic snapshots saved \
         ({cut_saving} crashes while saving one, {cut_compacting} before the log was \
         compacted), {faults} nemesis actions"
    );
    assert_eq!(results.len(), all.len());
    // The sweep must exercise what it claims to (a vacuous run proves nothing).
    if seeds >= 100 {
        assert!(elections > seeds / 2 && snapshots > 0 && membership > 0 && crashes > 0);
        assert!(learners > 0 && promotions > 0 && transfers > 0 && chunks > 0);
        assert!(batches > 0 && batch_entries > batches);
        assert!(cut_sender > 0 && cut_receiver > 0);
    }
    assert!(failing.is_empty(), "{} seeds failed", failing.len());
}

#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(7);
    let cfg = ScenarioConfig::random(seed);
    let Run {
        violations,
        result: r,
        lin,
        ..
    } = run_seed(seed);
    let steps = r.steps;
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
    if let Some(c) = lin {
        println!(
            "linearizability: {} events checked in {:?}, at most {} steps for a key",
            c.events, c.time, c.steps
        );
    }
    for v in &violations {
        println!("violation: {v}");
    }
    assert!(r.ops_ok > 0, "no operation completed");
    assert!(violations.is_empty(), "{violations:?}");
}
