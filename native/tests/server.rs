//! The library's typed errors and its run loop, in process: what `bind` refuses, that `serve`
//! returns once its shutdown future resolves, and that a storage failure stops the node and
//! comes out of `serve` instead of exiting the process.

use std::time::Duration;

use clusterconsensus::{ConfigError, StateMachine, WholeRestore, WholeSnapshot};
use clusterconsensus_server::testkit::TempDir;
use clusterconsensus_server::{
    HttpClient, ReadAnswer, ReadRequest, Reads, ServeError, Server, ServerBuilder, Startup,
    Storage, Timing,
};
use serde_json::{json, Value};

/// A counter: every change is a number to add.
#[derive(Default)]
struct Counter(i64);

impl StateMachine for Counter {
    type Snapshot = WholeSnapshot;
    type Restore = WholeRestore<Counter>;
    fn validate(&self, change: &str) -> Result<(), String> {
        change.parse::<i64>().map(|_| ()).map_err(|e| e.to_string())
    }
    fn apply(&mut self, _seq: u64, change: &str) -> Value {
        self.0 += change.parse::<i64>().unwrap_or(0);
        json!(self.0)
    }
    fn snapshot(&self) -> WholeSnapshot {
        WholeSnapshot::new(self.0.to_string())
    }
    fn restore(&self) -> WholeRestore<Counter> {
        WholeRestore::new(|t| t.parse().map(Counter).map_err(|e| e.to_string()))
    }
}

impl Reads for Counter {
    fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
        (req.path() == "value").then(|| ReadAnswer::ok(json!({"value": self.0})))
    }
}

fn solo(storage: Storage) -> ServerBuilder<Counter> {
    Server::builder("127.0.0.1:0", storage).cluster(
        "c1",
        Counter::default(),
        Startup::Bootstrap { peers: vec![] },
    )
}

/// Submits through `url` until the one-member cluster commits it (it serves once its
/// bootstrap is confirmed); the results.
async fn submit(client: &HttpClient, url: &str, change: &str) -> Option<Vec<Value>> {
    for _ in 0..200 {
        if let Ok(a) = client.submit(url, "c1", &[change.to_string()]).await {
            if !a.fail {
                return a.results;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn bind_refuses_what_cannot_work_with_an_error_of_its_kind() {
    let err = |r: Result<Server<Counter>, ServeError>| r.expect_err("bind must fail");
    let e = err(Server::<Counter>::builder("127.0.0.1:0", Storage::Memory)
        .bind()
        .await);
    assert!(matches!(e, ServeError::NoClusters), "{e}");
    let e = err(solo(Storage::Memory)
        .cluster("c1", Counter::default(), Startup::Join)
        .bind()
        .await);
    assert!(
        matches!(&e, ServeError::DuplicateCluster(id) if id == "c1"),
        "{e}"
    );
    let e = err(Server::builder("127.0.0.1:0", Storage::Memory)
        .cluster("a/b", Counter::default(), Startup::Join)
        .bind()
        .await);
    assert!(
        matches!(&e, ServeError::Config { cluster, error: ConfigError(_) } if cluster == "a/b"),
        "{e}"
    );
    assert!(e.to_string().contains("cluster id"), "{e}");
    let slow = Timing {
        heartbeat_ms: 2000,
        ..Timing::default()
    };
    let e = err(solo(Storage::Memory).timing(slow).bind().await);
    assert!(matches!(e, ServeError::Config { .. }), "{e}");

    // A port in use.
    let taken = solo(Storage::Memory).bind().await.unwrap();
    let e = err(
        Server::builder(taken.local_addr().to_string(), Storage::Memory)
            .cluster("c1", Counter::default(), Startup::Join)
            .bind()
            .await,
    );
    assert!(matches!(e, ServeError::Bind { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot listen on"), "{e}");

    // Data of another member: a node that would take over someone else's identity.
    let dir = TempDir::new("server-member");
    let first = solo(Storage::Dir(dir.path().into()))
        .advertise("http://127.0.0.1:1")
        .bind()
        .await
        .unwrap();
    let local = format!("http://{}", first.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(first.serve(async {
        let _ = stopped.await;
    }));
    // Serving means its bootstrap is durable; then stop it.
    let client = HttpClient::new(Duration::from_secs(2));
    assert_eq!(submit(&client, &local, "1").await, Some(vec![json!(1)]));
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    let e = err(solo(Storage::Dir(dir.path().into()))
        .advertise("http://127.0.0.1:2")
        .bind()
        .await);
    assert!(
        matches!(&e, ServeError::WrongMember { stored, advertise, .. }
            if stored == "http://127.0.0.1:1" && advertise == "http://127.0.0.1:2"),
        "{e}"
    );
}

#[tokio::test]
async fn serve_returns_when_told_and_stops_listening() {
    let server = solo(Storage::Memory).bind().await.unwrap();
    let url = server.advertise().to_string();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = HttpClient::new(Duration::from_secs(2));
    assert_eq!(submit(&client, &url, "5").await, Some(vec![json!(5)]));
    let (status, body) = client
        .get(&format!("{url}/_clusterc/c1/value?consistent=true"))
        .await
        .unwrap();
    assert_eq!((status, body), (200, br#"{"value":5}"#.to_vec()));
    let _ = stop.send(());
    let res = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("serve returns after its shutdown future");
    assert!(res.unwrap().is_ok());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_storage_failure_stops_the_node_and_comes_out_of_serve() {
    let dir = TempDir::new("server-fail");
    // A snapshot at every commit; once its file is saved, the log's compaction goes to
    // `c1.wal.tmp`, which we make a directory after the log was opened, so that write fails
    // (even for root).
    let every = Timing {
        snapshot_every: 1,
        ..Timing::default()
    };
    let server = solo(Storage::Dir(dir.path().into()))
        .timing(every)
        .bind()
        .await
        .unwrap();
    std::fs::create_dir(dir.path().join("c1.wal.tmp")).unwrap();
    let url = server.advertise().to_string();
    let mut run = tokio::spawn(server.serve(std::future::pending()));
    let client = HttpClient::new(Duration::from_secs(2));
    // Submit until a change commits (the node serves once its bootstrap is confirmed) and the
    // snapshot write of that commit fails; serve stops with the error. (The submit itself may be
    // answered: its staged copy was durable on a majority, this node, before the commit.)
    let started = std::time::Instant::now();
    let change = ["1".to_string()];
    let res = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not stop"
        );
        tokio::select! {
            r = &mut run => break r.unwrap(),
            _ = client.submit(&url, "c1", &change) => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    match res {
        Err(ServeError::Storage { cluster, message }) => {
            assert_eq!(cluster, "c1");
            assert!(message.contains("c1.wal.tmp"), "{message}");
        }
        other => panic!("expected a storage failure, got {other:?}"),
    }
    let e = client.get(&format!("{url}/_clusterc/c1/status")).await;
    assert!(e.is_err(), "the node stopped listening: {e:?}");
}

/// The names of the snapshot files in `dir`.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("c1.snap-"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn periodic_snapshots_go_to_a_file_beside_the_log_and_a_restart_reads_it() {
    let dir = TempDir::new("server-snapfile");
    let every = Timing {
        snapshot_every: 3,
        ..Timing::default()
    };
    let server = solo(Storage::Dir(dir.path().into()))
        .timing(every.clone())
        .bind()
        .await
        .unwrap();
    let url = server.advertise().to_string();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = HttpClient::new(Duration::from_secs(2));
    for i in 1..=7 {
        assert_eq!(submit(&client, &url, "1").await, Some(vec![json!(i)]));
    }
    // The file is written off the cluster task: wait (bounded) for it and the compaction
    // that deletes the older ones.
    let mut files = Vec::new();
    for _ in 0..400 {
        files = snapshot_files(dir.path());
        if files.len() == 1 && files[0] != "c1.snap-3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(files.len(), 1, "{files:?}");
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    let seq: u64 = files[0]["c1.snap-".len()..].parse().unwrap();
    assert!((6..=7).contains(&seq), "{files:?}");
    // The log names the file and holds no state.
    let log =
        String::from_utf8_lossy(&std::fs::read(dir.path().join("c1.wal")).unwrap()).into_owned();
    assert!(log.contains(&format!("\"base\":{seq}")), "{log:?}");

    // The same member again, at its address.
    let server = Server::builder(addr.to_string(), Storage::Dir(dir.path().into()))
        .cluster(
            "c1",
            Counter::default(),
            Startup::Bootstrap { peers: vec![] },
        )
        .timing(every)
        .bind()
        .await
        .unwrap();
    let url = server.advertise().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    assert_eq!(submit(&client, &url, "1").await, Some(vec![json!(8)]));
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}
