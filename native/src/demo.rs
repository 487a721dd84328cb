//! `clusterconsensus demo`: three `node` child processes on 127.0.0.1, bootstrapped into one
//! cluster. Real processes, so that `kill -9` of one shows a failover.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::client::HttpClient;
use crate::DemoArgs;

/// Kills the children when the demo ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory removed on drop (the default demo data).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(a: DemoArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let (dir, _temp) = match &a.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d =
                std::env::temp_dir().join(format!("clusterconsensus-demo-{}", std::process::id()));
            (d.clone(), Some(TempDir(d)))
        }
    };
    let ports: Vec<u16> = (0..3)
        .map(|i| a.base_port.checked_add(i).ok_or("--base-port too high"))
        .collect::<Result<_, _>>()?;
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut children = Children(Vec::new());
    // Followers first; the first node bootstraps and adds them (it waits until they answer).
    for i in [1, 2, 0] {
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[i]))
            .arg("--cluster")
            .arg(&a.cluster)
            .arg("--data-dir")
            .arg(dir.join(format!("node{}", i + 1)))
            .arg("--www")
            .arg(&a.www);
        if i == 0 {
            cmd.arg("--bootstrap");
            cmd.arg("--peer").arg(&urls[1]).arg("--peer").arg(&urls[2]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", i + 1))?;
        children.0.push(child);
    }

    // Wait until every node reports three members and one of them serves as master.
    let client = HttpClient::new(Duration::from_millis(1000));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::time::Instant::now() > deadline {
            return Err("the demo cluster did not form within 30 s (see the logs above)".into());
        }
        for c in &mut children.0 {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(format!(
                    "a node exited ({st}); is a port in use? (--base-port)"
                ));
            }
        }
        if formed(&client, &urls, &a.cluster).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pids: Vec<u32> = children.0.iter().map(|c| c.id()).collect();
    println!();
    println!(
        "demo cluster {:?} is up, data in {}",
        a.cluster,
        dir.display()
    );
    for (i, u) in urls.iter().enumerate() {
        // children were started in the order node2, node3, node1
        let pid = pids[(i + 2) % 3];
        println!("  node{}: {u}   (pid {pid}, dashboard {u}/)", i + 1);
    }
    let c = &a.cluster;
    let n = &urls[1];
    println!();
    println!("try:");
    println!("  curl -s -X POST {n}/_clusterc/{c}/submit -d '{{\"chg\":[\"{{\\\"op\\\":\\\"set\\\",\\\"key\\\":\\\"a\\\",\\\"value\\\":\\\"1\\\"}}\"]}}'");
    println!("  curl -s {}/_clusterc/{c}/kv/a", urls[2]);
    println!("  curl -s {}/_clusterc/{c}/status", urls[0]);
    println!("Ctrl-C stops the demo.");

    let sig = crate::node::shutdown_signal().await;
    eprintln!("{sig}: stopping the demo");
    drop(children);
    Ok(())
}

async fn formed(client: &HttpClient, urls: &[String], cluster: &str) -> bool {
    let mut serving = false;
    for u in urls {
        let url = format!("{u}/_clusterc/{cluster}/status");
        let Ok((s, body)) = client.request(hyper::Method::GET, &url, Vec::new()).await else {
            return false;
        };
        if !s.is_success() {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return false;
        };
        if v["members"].as_array().map_or(0, |m| m.len()) != 3 {
            return false;
        }
        serving |= v["serving"].as_bool() == Some(true);
    }
    serving
}
