//! The benchmark binary runs end to end: a short run against a fresh 3-node cluster (no etcd)
//! commits writes without errors. No timing is asserted: the numbers are the bench's business.

use std::process::Command;

use clusterconsensus_tests::{binary, TempDir, Value};

#[test]
fn bench_smoke_run_commits_without_errors() {
    let bench = binary().with_file_name(format!(
        "clusterconsensus-bench{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bench.is_file(),
        "{} is missing: cargo build --workspace --bins",
        bench.display()
    );
    let dir = TempDir::new("bench");
    let out = dir.path().join("bench.json");
    let run = Command::new(&bench)
        .args([
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--concurrency",
            "1,8",
        ])
        .args(["--forward-concurrency", "4", "--no-etcd", "--keys", "100"])
        .arg("--node-bin")
        .arg(binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("| ours "), "no table on stdout: {stdout}");
    let v: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the JSON file")).expect("JSON");
    let rows: Vec<&Value> = v["ours"]
        .as_array()
        .expect("ours rows")
        .iter()
        .chain([&v["ours_spread"]])
        .collect();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert!(
            r["committed"].as_u64().unwrap_or(0) > 0,
            "nothing committed: {r}"
        );
        assert_eq!(r["errors"].as_u64(), Some(0), "errors: {r}");
        assert_eq!(
            r["nodes"].as_array().map(Vec::len),
            Some(3),
            "per-node figures: {r}"
        );
        assert!(r["p50_ms"].as_f64().unwrap_or(0.0) > 0.0, "no latency: {r}");
    }
}
