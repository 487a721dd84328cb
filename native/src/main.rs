//! `clusterconsensus`: a node of the key-value app, and its client.
//!
//! A thin command line over the `clusterconsensus_server` library: `node` and `demo` are the
//! library's [`cli`] for [`KvStore`]; `submit`, `status` and `get` are small clients; `member`
//! and `transfer` the library's operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clusterconsensus::wire::FailResult;
use clusterconsensus_server::cli::{
    self, CliError, ClientSecurity, Demo, DemoArgs, MemberArgs, NodeArgs, TransferArgs,
};
use clusterconsensus_server::kv::KvStore;
use clusterconsensus_server::percent_encode;

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
