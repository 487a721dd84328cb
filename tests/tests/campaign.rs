//! The 1-minute fault campaign (partitions, one-way links, delays, loss, pauses, kills,
//! membership changes) over five real node processes, checked for linearizability, lost and
//! doubly applied writes, and convergence. `CAMPAIGN_SEED` replays a seed, `CAMPAIGN_SECS`
//! changes the length; the longer run is `scripts/campaign.sh --duration 10m`.

use std::io::Write;
use std::time::Duration;

use clusterconsensus_tests::campaign::{self, Config};

#[test]
fn one_minute_fault_campaign() {
    let seed = std::env::var("CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let secs = std::env::var("CAMPAIGN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut cfg = Config::new(seed, Duration::from_secs(secs));
    cfg.verbose = std::env::var("CAMPAIGN_VERBOSE").is_ok();
    eprintln!("campaign seed {seed} (replay: CAMPAIGN_SEED={seed} cargo test -p clusterconsensus-tests --test campaign)");
    let report = campaign::run(&cfg);
    // Past the test harness's capture: the verdict shows in every `cargo test` run.
    let _ = writeln!(std::io::stderr(), "{}", report.summary());
    assert!(
        report.faults_total() >= secs / 10,
        "too few faults: {}",
        report.summary()
    );
    assert!(report.ok(), "{}\n{:#?}", report.summary(), report.problems);
}
