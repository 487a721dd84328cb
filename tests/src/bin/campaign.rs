//! `campaign [--duration 10m] [--seed N] [--nodes 5] [--clients 5] [--token T] [--dir DIR] [-v]`:
//! one fault campaign over real node processes (see `clusterconsensus_tests::campaign`); prints
//! its summary line and exits 1 unless the verdict is PASS. `scripts/campaign.sh` builds and
//! runs it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clusterconsensus_server::testkit::parse_duration;
use clusterconsensus_tests::campaign::{self, Config};

/// One fault campaign over real node processes; exits 1 unless its verdict is PASS.
#[derive(Parser)]
#[command(name = "campaign")]
struct Args {
    /// How long faults are injected (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The seed of the run's choices (default: from the clock, printed first).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes, each on a loopback address of its own.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=campaign::proxy::MAX_NODES as u64))]
    nodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Run the nodes with a client token (and a peer token of their own).
    #[arg(long)]
    token: Option<String>,
    /// Where the nodes live (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print each fault as it is injected.
    #[arg(short, long)]
    verbose: bool,
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut cfg = Config::new(seed, args.duration);
    cfg.nodes = args.nodes as usize;
    cfg.clients = args.clients;
    cfg.token = args.token;
    cfg.dir = args.dir;
    cfg.verbose = args.verbose;
    eprintln!(
        "campaign: seed {} for {:?} (replay with --seed {})",
        cfg.seed, cfg.duration, cfg.seed
    );
    let report = campaign::run(&cfg);
    println!("{}", report.summary());
    for p in &report.problems {
        println!("  problem: {p}");
    }
    std::process::exit(if report.ok() { 0 } else { 1 });
}
