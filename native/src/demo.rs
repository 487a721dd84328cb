//! `demo`: three `node` child processes of the running program on 127.0.0.1, bootstrapped
//! into one cluster. Real processes, so that `kill -9` of one shows a failover.

use crate::auth::Token;
use crate::cli::{CliError, DemoArgs};
use crate::testkit::{Cluster, Log, NodeOptions, TempDir};

/// A running demo, for the lines that tell how to try the app.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The nodes' URLs, node 1 first.
    pub urls: Vec<String>,
    pub cluster: String,
    /// What a `curl` command needs for a write (` -H "Authorization: Bearer ..."` with a token,
    /// else empty), and for a read (the same with `--auth-reads`).
    pub write_auth: String,
    pub read_auth: String,
}

impl Demo {
    /// `<node i>/_clusterc/<cluster>/<what>`.
    pub fn url(&self, node: usize, what: &str) -> String {
        clusterconsensus::wire::url(&self.urls[node % self.urls.len()], &self.cluster, what)
    }
}

/// Starts the demo, prints its nodes and `hints(&demo)`, and runs until SIGINT or SIGTERM.
pub async fn run(a: DemoArgs, hints: &dyn Fn(&Demo) -> Vec<String>) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // Read (and checked) here rather than by each node, so that a bad file is one clear error
    // and not three exited children; absolute, so the banner's commands work from anywhere.
    let token = match &a.token_file {
        Some(f) => {
            let token = Token::from_file(f)?;
            let f = std::fs::canonicalize(f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
            Some((f, token))
        }
        None => None,
    };
    let dir = match &a.data_dir {
        Some(d) => TempDir::existing(d)?,
        None => TempDir::create("demo")?,
    };
    let data = dir.path().to_path_buf();
    let mut args = Vec::new();
    if let Some(w) = &a.www {
        args.extend(["--www".to_string(), w.display().to_string()]);
    }
    if let Some((file, _)) = &token {
        args.extend(["--token-file".to_string(), file.display().to_string()]);
        if a.auth_reads {
            args.push("--auth-reads".into());
        }
    }
    let (base, id) = (a.base_port, a.cluster.clone());
    let secret = token.as_ref().map(|(_, t)| t.as_str().to_string());
    // The nodes' logs go to this terminal. Followers first; node 1 bootstraps and adds them
    // (it waits until they answer).
    let launch = move || {
        let opts = |i: usize, args: &[String]| -> Result<NodeOptions, String> {
            let port = base.checked_add(i as u16).ok_or("--base-port too high")?;
            Ok(NodeOptions {
                program: exe.clone(),
                name: format!("node{}", i + 1),
                data_dir: data.join(format!("node{}", i + 1)),
                log: Log::Inherit,
                port,
                clusters: vec![id.clone()],
                args: args.to_vec(),
                env: Vec::new(),
            })
        };
        Cluster::launch_each(3, &[id.as_str()], &args, dir, secret.as_deref(), opts)
    };
    let cluster = tokio::task::spawn_blocking(launch)
        .await
        .map_err(|e| format!("starting the demo: {e}"))?
        .map_err(|e| format!("{e}\nis a port in use? (--base-port)"))?;

    let auth = |file: &std::path::Path| {
        format!(
            " -H \"Authorization: Bearer $(head -n1 {})\"",
            shell_quote(&file.display().to_string())
        )
    };
    let (write_auth, read_auth) = match &token {
        Some((file, _)) if a.auth_reads => (auth(file), auth(file)),
        Some((file, _)) => (auth(file), String::new()),
        None => (String::new(), String::new()),
    };
    let demo = Demo {
        urls: cluster.urls(),
        cluster: a.cluster.clone(),
        write_auth,
        read_auth,
    };
    println!();
    println!(
        "demo cluster {:?} is up, data in {}",
        a.cluster,
        cluster.dir.path().display()
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        let pid = n.pid().map_or("?".into(), |p| p.to_string());
        let www = match &a.www {
            Some(_) => format!(", dashboard {}/", n.url),
            None => String::new(),
        };
        println!("  node{}: {}   (pid {pid}{www})", i + 1, n.url);
    }
    if let Some((file, _)) = &token {
        let what = match a.auth_reads {
            true => "every call (status and reads too) needs",
            false => "writes and consistent reads need",
        };
        println!();
        println!("the nodes run with --token-file {}:", file.display());
        println!("  {what} `Authorization: Bearer <its first line>`.");
        if a.www.is_some() {
            println!(
                "  The dashboard needs the token too: paste it into its Token field (live mode),"
            );
            println!("  else its buttons are refused with 401 ERR_DENIED.");
        }
    }
    println!();
    println!("try:");
    for line in hints(&demo) {
        println!("  {line}");
    }
    println!("  curl -s{} {}", demo.read_auth, demo.url(0, "status"));
    println!("Ctrl-C stops the demo.");

    let sig = crate::server::shutdown_signal().await;
    eprintln!("{sig}: stopping the demo");
    // Killing the nodes can take a moment; not on the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    Ok(())
}

/// `s` as one word for a POSIX shell (for the commands the banner prints).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
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
