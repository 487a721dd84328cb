//! `campaign [--duration 10m] [--seed N] [--nodes 5] [--clients 5] [--token T] [--dir DIR] [-v]`:
//! one fault campaign over real node processes (see `clusterconsensus_tests::campaign`); prints
//! its summary line and exits 1 unless the verdict is PASS. `scripts/campaign.sh` builds and
//! runs it.

use std::time::Duration;

use clusterconsensus_tests::campaign::{self, Config};

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut cfg = Config::new(seed, Duration::from_secs(60));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--duration" => cfg.duration = parse_duration(&val()).unwrap_or_else(|e| die(&e)),
            "--seed" => cfg.seed = val().parse().unwrap_or_else(|_| die("bad --seed")),
            "--nodes" => {
                cfg.nodes = val()
                    .parse()
                    .ok()
                    .filter(|n| (1..=campaign::proxy::MAX_NODES).contains(n))
                    .unwrap_or_else(|| {
                        die(&format!(
                            "--nodes takes 1 to {} (one loopback address each)",
                            campaign::proxy::MAX_NODES
                        ))
                    })
            }
            "--clients" => cfg.clients = val().parse().unwrap_or_else(|_| die("bad --clients")),
            "--token" => cfg.token = Some(val()),
            "--dir" => cfg.dir = Some(val().into()),
            "-v" | "--verbose" => cfg.verbose = true,
            "-h" | "--help" => {
                println!("usage: campaign [--duration 10m] [--seed N] [--nodes 5] [--clients 5] [--token T] [--dir DIR] [-v]");
                return;
            }
            _ => die(&format!("unknown argument {a:?}")),
        }
    }
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

fn die(msg: &str) -> ! {
    eprintln!("campaign: {msg}");
    std::process::exit(2);
}
