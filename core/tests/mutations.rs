//! Mutation checks: each deliberate protocol bug of [`Mutant`] (a rule of docs/PROTOCOL.md
//! broken on purpose) must be caught by the simulation sweep's checks. A check that passes
//! with the bug in place proves nothing. Runs with the `mutants` feature:
//! `cargo test -p clusterconsensus --release --features mutants --test mutations -- --nocapture`
//! (scripts/test-all.sh does); each mutant runs seeds from 0 until `CAUGHT` of them fail, at
//! most `MUTANT_SEEDS` (default 4000), and prints which seeds caught it. `MUTANT=Name` runs
//! only the mutant of that name.

use std::io::Write;

use clusterconsensus::sim::scenario::{self, ScenarioConfig};
use clusterconsensus::Mutant;

/// Seeds that must fail before a mutant counts as caught.
const CAUGHT: usize = 3;

/// The failures of one seed with `mutant` in every node.
fn failures(seed: u64, mutant: Mutant) -> Vec<String> {
    let mut cfg = ScenarioConfig::random(seed);
    cfg.mutant = Some(mutant);
    let r = scenario::run(&cfg);
    let mut v = r.violations;
    if v.is_empty() {
        if let Err(e) = scenario::check_linearizable(&r.history, 1_000_000) {
            v.push(e);
        }
    }
    v
}

#[test]
fn every_mutant_is_caught_by_the_sweep() {
    let max: u64 = std::env::var("MUTANT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut missed = Vec::new();
    let only = std::env::var("MUTANT").ok();
    for mutant in Mutant::ALL {
        if only.as_ref().is_some_and(|m| *m != format!("{mutant:?}")) {
            continue;
        }
        // Seeds in rounds of `threads`, in parallel, until CAUGHT failed.
        let mut caught: Vec<(u64, String)> = Vec::new();
        let mut next = 0;
        while caught.len() < CAUGHT && next < max {
            let round: Vec<u64> = (next..(next + threads).min(max)).collect();
            next += round.len() as u64;
            let found = std::thread::scope(|s| {
                let handles: Vec<_> = round
                    .iter()
                    .map(|&seed| s.spawn(move || (seed, failures(seed, mutant))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            });
            for (seed, v) in found {
                if let Some(first) = v.into_iter().next() {
                    caught.push((seed, first));
                }
            }
        }
        let seeds: Vec<u64> = caught.iter().map(|(s, _)| *s).collect();
        let _ = writeln!(
            std::io::stderr(),
            "mutant {mutant:?}: caught by seeds {seeds:?} ({next} seeds run){}",
            caught
                .first()
                .map(|(s, v)| format!("; seed {s}: {v}"))
                .unwrap_or_default()
        );
        if caught.is_empty() {
            missed.push(mutant);
        }
    }
    assert!(missed.is_empty(), "not caught: {missed:?}");
}
