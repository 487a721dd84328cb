//! `clusterconsensus demo`: three `node` child processes on 127.0.0.1, bootstrapped into one
//! cluster. Real processes, so that `kill -9` of one shows a failover.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::auth::Auth;
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
    // Read (and checked) here rather than by each node, so that a bad file is one clear error
    // and not three exited children; absolute, so the banner's commands work from anywhere.
    let token = match &a.token_file {
        Some(f) => {
            let auth = Auth::from_file(f)?;
            let f = std::fs::canonicalize(f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
            Some((f, auth))
        }
        None => None,
    };
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
        if let Some((file, _)) = &token {
            cmd.arg("--token-file").arg(file);
            if a.auth_reads {
                cmd.arg("--auth-reads");
            }
        }
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
    // With --auth-reads the status page needs the token too.
    let client = match &token {
        Some((_, auth)) => HttpClient::with_security(
            Duration::from_millis(1000),
            Some(auth.header()),
            crate::tls::client_config(None)?,
        ),
        None => HttpClient::new(Duration::from_millis(1000)),
    };
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
    // The header curl needs for the calls the token protects (`write`), and for reads.
    let (write, read) = match &token {
        Some((file, _)) => {
            let h = format!(
                " -H \"Authorization: Bearer $(head -n1 {})\"",
                shell_quote(&file.display().to_string())
            );
            let read = if a.auth_reads {
                h.clone()
            } else {
                String::new()
            };
            (h, read)
        }
        None => (String::new(), String::new()),
    };
    if let Some((file, _)) = &token {
        let what = match a.auth_reads {
            true => "every call (status and reads too) needs",
            false => "writes and consistent reads need",
        };
        println!();
        println!("the nodes run with --token-file {}:", file.display());
        println!("  {what} `Authorization: Bearer <its first line>`.");
        println!("  The dashboard needs the token too: paste it into its Token field (live mode),");
        println!("  else its buttons are refused with 401 ERR_DENIED.");
    }
    println!();
    println!("try:");
    println!("  curl -s{write} -X POST {n}/_clusterc/{c}/submit -d '{{\"chg\":[\"{{\\\"op\\\":\\\"set\\\",\\\"key\\\":\\\"a\\\",\\\"value\\\":\\\"1\\\"}}\"]}}'");
    println!("  curl -s{read} {}/_clusterc/{c}/kv/a", urls[2]);
    println!("  curl -s{read} {}/_clusterc/{c}/status", urls[0]);
    println!("Ctrl-C stops the demo.");

    let sig = crate::node::shutdown_signal().await;
    eprintln!("{sig}: stopping the demo");
    drop(children);
    Ok(())
}

/// `s` as one word for a POSIX shell (for the commands the banner prints).
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
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

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn banner_paths_are_one_shell_word() {
        assert_eq!(shell_quote("/tmp/demo/token"), "/tmp/demo/token");
        assert_eq!(shell_quote("/tmp/my token"), "'/tmp/my token'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote("/tmp/$(x)"), "'/tmp/$(x)'");
        assert_eq!(shell_quote(""), "''");
    }
}
