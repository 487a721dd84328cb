//! `clusterconsensus`: a node of the key-value app, and its client.
//!
//! A thin command line over the `clusterconsensus_server` library: `node` and `demo` are the
//! library's [`cli`] for [`KvStore`]; `submit`, `status`, `get`, `put`, `del`, `cas` and
//! `watch` are small clients; `member`, `transfer` and `snapshot` the library's operator commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use clusterconsensus::wire::FailResult;
use clusterconsensus_server::cli::{
    self, CliError, ClientSecurity, Demo, DemoArgs, MemberArgs, NodeArgs, SnapshotArgs,
    TransferArgs,
};
use clusterconsensus_server::kv::{KvChange, KvStore};
use clusterconsensus_server::{percent_encode, Watch, WatchEvent};
use serde_json::{json, Value};

/// A replicated key-value store: Paxos with an elected master, its peers speaking JSON over
/// HTTP.
#[derive(Parser, Debug)]
#[command(name = "clusterconsensus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node: serve one or more clusters over HTTP, durable under --data-dir.
    Node(Box<NodeArgs>),
    /// Start a 3-node cluster on 127.0.0.1 (child processes), bootstrap it, print its URLs.
    Demo(DemoArgs),
    /// Submit changes to a cluster through one of its nodes; exit code 2 if not committed.
    Submit(SubmitArgs),
    /// Print a node's status for a cluster as JSON; exit code 2 if it cannot be read.
    Status(StatusArgs),
    /// Read one key through a node (--consistent: linearizable); exit code 2 if it cannot be read,
    /// 3 if the key does not exist.
    Get(GetArgs),
    /// List, add, remove or promote the members of a cluster; exit code 2 on failure.
    Member(MemberArgs),
    /// Move mastership to another voter (default: the most caught-up); exit code 2 on failure.
    Transfer(TransferArgs),
    /// Save a running cluster's state to a file (backup), or restore one into the data
    /// directory of a new one-member cluster; exit code 2 on failure.
    Snapshot(SnapshotArgs),
    /// Set a key; prints the result {"seq","prev"}; exit code 2 if not committed.
    Put(PutArgs),
    /// Delete a key; prints the result {"seq","prev"}; exit code 2 if not committed.
    Del(DelArgs),
    /// Compare-and-set a key; prints the result {"seq","ok","value"}; exit code 1 if it did
    /// not apply (the key did not have the expected value), 2 if not committed.
    Cas(CasArgs),
    /// Follow the committed entries, one JSON line per event; moves to another --node when one
    /// fails, without gap or duplicate. Exit code 2 when it cannot go on (ERR_GAP on every
    /// node, a refused token).
    Watch(WatchArgs),
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// A node of the cluster, e.g. http://127.0.0.1:9001 (a follower forwards to the master).
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
    /// The changes, submitted as one batch. For the key-value app:
    /// '{"op":"set","key":"a","value":"1"}' or '{"op":"del","key":"a"}'.
    #[arg(value_name = "CHANGE", required = true)]
    changes: Vec<String>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The node to ask, e.g. http://127.0.0.1:9001.
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// The node to ask, e.g. http://127.0.0.1:9001.
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// Linearizable: answered only after the master confirmed with a majority that it is
    /// still master and this node applied everything committed before the read. Without it the
    /// node's local state is read, which may be stale on a follower.
    #[arg(long)]
    consistent: bool,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
    /// The key.
    #[arg(value_name = "KEY")]
    key: String,
}

/// Where a write goes.
#[derive(Args, Debug)]
struct WriteTarget {
    /// A node of the cluster, e.g. http://127.0.0.1:9001 (a follower forwards to the master).
    #[arg(long, value_name = "URL")]
    node: String,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// How long to wait for the answer, in ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    target: WriteTarget,
    /// The key.
    #[arg(value_name = "KEY")]
    key: String,
    /// The value.
    #[arg(value_name = "VALUE")]
    value: String,
}

#[derive(Args, Debug)]
struct DelArgs {
    #[command(flatten)]
    target: WriteTarget,
    /// The key.
    #[arg(value_name = "KEY")]
    key: String,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("expected").required(true).args(["expect", "expect_absent"])))]
#[command(group(ArgGroup::new("new").required(true).args(["value", "del"])))]
struct CasArgs {
    #[command(flatten)]
    target: WriteTarget,
    /// The key.
    #[arg(value_name = "KEY")]
    key: String,
    /// Apply only if the key has this value.
    #[arg(long, value_name = "V")]
    expect: Option<String>,
    /// Apply only if the key does not exist.
    #[arg(long)]
    expect_absent: bool,
    /// The new value.
    #[arg(long, value_name = "W")]
    value: Option<String>,
    /// Delete the key instead.
    #[arg(long)]
    del: bool,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// A node to watch through, e.g. http://127.0.0.1:9001; repeat to give others to move to
    /// when it fails (with one --node, the cluster's members are learnt from its status).
    #[arg(long = "node", value_name = "URL", required = true)]
    nodes: Vec<String>,
    /// The cluster id.
    #[arg(long, value_name = "ID")]
    cluster: String,
    /// The seq of the first entry (default: the next one committed). An entry older than the
    /// node holds gives ERR_GAP: read the state, then watch from after its commit.
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
    /// Only key-value changes whose key starts with this.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Also print the progress events ({"type":"progress","commit":N}).
    #[arg(long)]
    progress: bool,
    /// Exit (code 0) after this many entries and membership changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Move to another node when one is silent this long, in ms (nodes send progress at least
    /// every second).
    #[arg(long, default_value_t = 5_000)]
    idle_timeout_ms: u64,
    #[command(flatten)]
    security: ClientSecurity,
}

/// The dashboard (`www/` of the repository), the default `--www` of `node` and `demo`.
const WWW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../www");

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logs();
    cli::run_main(async move {
        match cli.cmd {
            Cmd::Node(mut a) => {
                a.www.get_or_insert_with(|| PathBuf::from(WWW));
                Ok(cli::run_node(*a, KvStore::new).await?)
            }
            Cmd::Demo(mut a) => {
                a.www.get_or_insert_with(|| PathBuf::from(WWW));
                cli::demo(a, &hints).await
            }
            Cmd::Submit(a) => submit(a).await,
            Cmd::Status(a) => status(a).await,
            Cmd::Get(a) => get(a).await,
            Cmd::Member(a) => cli::member(a).await,
            Cmd::Transfer(a) => cli::transfer(a).await,
            Cmd::Snapshot(a) => cli::snapshot(a, KvStore::new).await,
            Cmd::Put(a) => write(&a.target, KvChange::set(a.key, a.value))
                .await
                .map(drop),
            Cmd::Del(a) => write(&a.target, KvChange::del(a.key)).await.map(drop),
            Cmd::Cas(a) => cas(a).await,
            Cmd::Watch(a) => watch(a).await,
        }
    })
}

/// How to try the key-value app on a running demo.
fn hints(d: &Demo) -> Vec<String> {
    vec![
        format!(
            "curl -s{} -X POST {} -d '{{\"chg\":[\"{{\\\"op\\\":\\\"set\\\",\\\"key\\\":\\\"a\\\",\\\"value\\\":\\\"1\\\"}}\"]}}'",
            d.write_auth,
            d.url(1, "submit")
        ),
        format!("curl -s{} {}", d.read_auth, d.url(2, "kv/a")),
    ]
}

fn cluster_url(node: &str, cluster: &str, what: &str) -> String {
    clusterconsensus::wire::url(node.trim(), cluster, what)
}

/// `clusterconsensus submit`: prints the answer; `Err` (exit 2) unless it committed.
async fn submit(a: SubmitArgs) -> Result<(), CliError> {
    let client = a.security.client(a.timeout_ms)?;
    let url = cluster_url(&a.node, &a.cluster, "submit");
    let body = serde_json::to_vec(&serde_json::json!({ "chg": a.changes })).unwrap_or_default();
    let (status, body) = client
        .post(&url, body)
        .await
        .map_err(|e| format!("submit to {url} failed: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("submit to {url}: HTTP {status}: {text}").into());
    }
    println!("{text}");
    let answer: FailResult = serde_json::from_slice(&body)
        .map_err(|e| format!("submit to {url}: unexpected answer: {e}"))?;
    answer
        .into_result()
        .map_err(|e| format!("submit not committed: {e}").into())
}

/// `clusterconsensus status`: pretty-prints the status JSON.
async fn status(a: StatusArgs) -> Result<(), CliError> {
    let client = a.security.client(a.timeout_ms)?;
    let url = cluster_url(&a.node, &a.cluster, "status");
    let (status, body) = client
        .get(&url)
        .await
        .map_err(|e| format!("status from {url} failed: {e}"))?;
    if status != 200 {
        return Err(format!(
            "status from {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("status from {url}: not JSON: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// `clusterconsensus get`: prints `{"key","value"}`; exit 3 for a missing key.
async fn get(a: GetArgs) -> Result<(), CliError> {
    let client = a.security.client(a.timeout_ms)?;
    let mut url = cluster_url(
        &a.node,
        &a.cluster,
        &format!("kv/{}", percent_encode(&a.key)),
    );
    if a.consistent {
        url.push_str("?consistent=true");
    }
    let (status, body) = client
        .get(&url)
        .await
        .map_err(|e| format!("read from {url} failed: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let missing = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|v| v.get("key").is_some() && v["value"].is_null());
    if status == 404 && missing {
        return Err(CliError::Exit(3, format!("no key {:?}", a.key)));
    }
    if status != 200 {
        return Err(format!("read from {url}: HTTP {status}: {text}").into());
    }
    println!("{text}");
    Ok(())
}

/// Submits one key-value change through `t` and prints its result with the entry's seq:
/// `{"seq":N,...}`; the result object, or `Err` (exit 2) unless it committed.
async fn write(t: &WriteTarget, change: KvChange) -> Result<Value, CliError> {
    let client = t.security.client(t.timeout_ms)?;
    let node = t.node.trim();
    let answer = client
        .submit(node, &t.cluster, &[change.encode()])
        .await
        .map_err(|e| format!("submit to {node} failed: {e}"))?;
    let seq = answer.seq;
    let results = answer.results.clone();
    answer
        .into_result()
        .map_err(|e| format!("not committed: {e}"))?;
    let mut result = match results.and_then(|r| r.into_iter().next()) {
        Some(Value::Object(o)) => o,
        other => {
            return Err(format!("the node answered no result for the change: {other:?}").into())
        }
    };
    result.insert("seq".into(), json!(seq));
    let result = Value::Object(result);
    println!("{result}");
    Ok(result)
}

/// `clusterconsensus cas`: exit 1 when the key did not have the expected value.
async fn cas(a: CasArgs) -> Result<(), CliError> {
    let expect = if a.expect_absent {
        None
    } else {
        a.expect.as_deref()
    };
    let change = match (a.value, a.del) {
        (Some(v), false) => KvChange::cas(&a.key, expect, v),
        _ => KvChange::cas_del(&a.key, expect),
    };
    let result = write(&a.target, change).await?;
    if result["ok"] == json!(true) {
        return Ok(());
    }
    Err(CliError::Exit(
        1,
        format!("cas did not apply: {:?} is {}", a.key, result["value"]),
    ))
}

/// `clusterconsensus watch`: one JSON line per event on stdout, a line on stderr for each move
/// to another node.
async fn watch(a: WatchArgs) -> Result<(), CliError> {
    use std::io::Write;
    let client = a.security.client(a.idle_timeout_ms)?;
    let learn = a.nodes.len() == 1;
    let mut w = Watch::new(client, &a.cluster, a.nodes)
        .learn_members(learn)
        .idle_timeout(Duration::from_millis(a.idle_timeout_ms.max(100)));
    if let Some(f) = a.from {
        w = w.from(f);
    }
    if let Some(p) = a.prefix {
        w = w.prefix(p);
    }
    let mut seen = 0u64;
    let mut node = w.node().to_string();
    let mut out = std::io::stdout();
    while a.count.is_none_or(|c| seen < c) {
        let event = match w.next().await {
            Ok(e) => e,
            Err(e) => {
                let mut line = json!({"type": "error", "code": e.code.as_str(), "err": e.err});
                if let Some(o) = e.oldest {
                    line["oldest"] = json!(o);
                }
                let _ = writeln!(out, "{line}");
                return Err(format!("watch stopped: {e}").into());
            }
        };
        if w.node() != node {
            node = w.node().to_string();
            eprintln!("watch: now on {node}");
        }
        if matches!(event, WatchEvent::Progress { .. }) && !a.progress {
            continue;
        }
        seen += u64::from(event.seq().is_some());
        // A closed stdout (`| head`) ends the watch quietly.
        if writeln!(out, "{}", event.to_line())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
