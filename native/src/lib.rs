//! # clusterconsensus-server
//!
//! Serve any replicated state machine over JSON/HTTP: the hyper + tokio host of the
//! [`clusterconsensus`] core, with a write-ahead log for durable state. Give it your app (a
//! [`StateMachine`](clusterconsensus::StateMachine) and its [`Reads`]) and it runs a node that
//! serves one or more clusters of it: the protocol between the members, `submit` (answered once
//! committed, with your app's result for each change), plain and consistent reads of your
//! app's endpoints, status, metrics, TLS and a bearer token.
//!
//! ## Your app on three nodes
//!
//! A replicated counter, three nodes in one process (each would run on its own machine, with
//! [`Storage::Dir`]), a submit through a follower, a consistent read through the other:
//!
//! ```
//! use std::time::Duration;
//!
//! use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
//! use clusterconsensus_server::{
//!     HttpClient, ReadAnswer, ReadRequest, Reads, Server, Startup, Storage,
//! };
//! use serde_json::{json, Value};
//!
//! /// The app: every change is a number to add; the answer to each is the new value.
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl StateMachine for Counter {
//!     type Snapshot = WholeSnapshot;
//!     type Restore = WholeRestore<Counter>;
//!     fn validate(&self, change: &str) -> Result<(), String> {
//!         change.parse::<i64>().map(|_| ()).map_err(|e| e.to_string())
//!     }
//!     fn apply(&mut self, _seq: u64, change: &str) -> Value {
//!         self.0 += change.parse::<i64>().unwrap_or(0);
//!         json!(self.0)
//!     }
//!     fn snapshot(&self) -> WholeSnapshot {
//!         WholeSnapshot::new(self.0.to_string())
//!     }
//!     fn restore(&self) -> WholeRestore<Counter> {
//!         WholeRestore::new(|text| text.parse().map(Counter).map_err(|e| format!("{e}")))
//!     }
//! }
//!
//! /// Its read endpoint: `GET /_clusterc/<cluster>/value` (`?consistent=true` works too).
//! impl Reads for Counter {
//!     fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
//!         (req.path() == "value").then(|| ReadAnswer::ok(json!({"value": self.0})))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Two nodes that wait to be added, then one that bootstraps the cluster and adds them.
//!     let mut servers = Vec::new();
//!     for _ in 0..2 {
//!         let server = Server::builder("127.0.0.1:0", Storage::Memory)
//!             .cluster("counter", Counter::default(), Startup::Join)
//!             .bind()
//!             .await?;
//!         servers.push(server);
//!     }
//!     let peers: Vec<String> = servers.iter().map(|s| s.advertise().to_string()).collect();
//!     let first = Server::builder("127.0.0.1:0", Storage::Memory)
//!         .cluster("counter", Counter::default(), Startup::Bootstrap { peers: peers.clone() })
//!         .bind()
//!         .await?;
//!     servers.push(first);
//!
//!     // Serve until `stop` says so.
//!     let (stop, stopped) = tokio::sync::watch::channel(false);
//!     let mut running = Vec::new();
//!     for server in servers {
//!         let mut stopped = stopped.clone();
//!         let shutdown = async move {
//!             let _ = stopped.changed().await;
//!         };
//!         running.push(tokio::spawn(server.serve(shutdown)));
//!     }
//!
//!     // Once the follower has joined, submit through it (it forwards to the master).
//!     let client = HttpClient::new(Duration::from_secs(5));
//!     let status = format!("{}/_clusterc/counter/status", peers[0]);
//!     for attempt in 0.. {
//!         let (_, body) = client.get(&status).await?;
//!         let st: Value = serde_json::from_slice(&body)?;
//!         if st["members"].as_array().map(Vec::len) == Some(3) && st["master"].is_string() {
//!             break;
//!         }
//!         assert!(attempt < 400, "the cluster did not form: {st}");
//!         tokio::time::sleep(Duration::from_millis(25)).await;
//!     }
//!     let answer = client.submit(&peers[0], "counter", &["5".into(), "-2".into()]).await?;
//!     assert!(!answer.fail, "{answer:?}");
//!     assert_eq!(answer.results, Some(vec![json!(5), json!(3)])); // one result per change
//!
//!     // A linearizable read through the other node: it sees the submit.
//!     let url = format!("{}/_clusterc/counter/value?consistent=true", peers[1]);
//!     let (status, body) = client.get(&url).await?;
//!     assert_eq!((status, serde_json::from_slice::<Value>(&body)?), (200, json!({"value": 3})));
//!
//!     stop.send(true)?;
//!     for r in running {
//!         r.await??;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`cli::app_main`] (feature `cli`, on by default) turns such an app into a program with the
//! `node` subcommand of the `clusterconsensus` binary and a local 3-node demo: see
//! `examples/lock.rs` and `examples/counter.rs` (`cargo run --example lock`).
//!
//! ## What the node does
//!
//! The host is thin: per cluster one task owns the core's `Participant`, HTTP requests and peer
//! answers go in, its outputs come out as durable writes (a writer thread per cluster, one
//! fdatasync per write, made durable before anything that depends on them goes out), HTTP calls
//! (one ordered lane per peer for the calls the core marks ordered) and replies. No protocol
//! decision lives here. Endpoints, below `/_clusterc/<cluster>/`:
//!
//! | path | method | answer |
//! |---|---|---|
//! | `prepare`, `accept`, `addmember`, `rmmember`, `start`, `readindex` | POST | the peer protocol |
//! | `submit` | POST | `{"chg": [...]}` → `{"fail":false,"err":null,"seq":N,"results":[...]}` once committed |
//! | `members/add`, `members/remove` | POST | `{"addr": URL}` → once committed |
//! | `status`, `metrics` | GET | the node's view, Prometheus text |
//! | `snapshot` | GET | the committed state, for a backup ([`backup`]; needs the client token) |
//! | `watch?from=SEQ` | GET | the committed entries as this node applies them (server-sent events; `&wait=MS`: long poll) |
//! | anything else | GET | your [`Reads`] (`?consistent=true`: linearizable) |
//!
//! Outside it, `GET /livez` (the process serves) and `GET /readyz` (every cluster has a master
//! heard within the election timeout and this node is at most
//! [`ServerBuilder::ready_max_lag`] entries behind it; else `503` saying why), for health
//! probes; neither needs the token.
//!
//! A storage failure at run time stops the node: [`Server::serve`] returns
//! [`ServeError::Storage`] rather than go on without durable storage.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod auth;
pub mod backup;
mod bootstrap;
mod client;
mod cluster;
mod error;
mod http;
pub mod kv;
mod metrics;
mod probes;
mod reads;
mod server;
mod storage;
#[cfg(test)]
mod test_app;
mod tls;
mod watch;
mod watch_client;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
mod demo;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use auth::Token;
pub use client::HttpClient;
pub use error::ServeError;
pub use reads::{percent_decode, percent_encode, ChangeFilter, ReadAnswer, ReadRequest, Reads};
pub use server::{
    shutdown_signal, Limits, Server, ServerBuilder, Startup, Storage, Timing, TlsFiles,
};
pub use watch::WatchError;
pub use watch_client::{Watch, WatchEvent};

/// What a node can serve: a [`StateMachine`](clusterconsensus::StateMachine) with its
/// [`Reads`], that can move to the cluster's task (and whose snapshots can move to a writer
/// thread, and whose restores, which a chunked snapshot transfer keeps while it goes on, can
/// live on the cluster's task). Implemented for every such type.
pub trait App:
    clusterconsensus::StateMachine<Snapshot: Send + 'static, Restore: Send + 'static>
    + Reads
    + Send
    + 'static
{
}

impl<T> App for T
where
    T: clusterconsensus::StateMachine + Reads + Send + 'static,
    T::Snapshot: Send + 'static,
    T::Restore: Send + 'static,
{
}
