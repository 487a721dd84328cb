//! Authentication (`--token-file`), TLS (`--tls-cert/--tls-key/--tls-ca`) and resource limits
//! (`--max-inflight`, `--max-queued`, `--max-connections`, header and body timeouts) on real
//! node processes: refused calls get the stated status and change nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clusterconsensus_tests::campaign::request;
use clusterconsensus_tests::*;

const TOKEN: &str = "s3cret-token-0123456789";

fn token_args(dir: &TempDir) -> Vec<String> {
    let f = dir.path().join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    vec!["--token-file".into(), f.display().to_string()]
}

fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let (s, b) = request(method, url, token, body.as_bytes(), Duration::from_secs(10)).unwrap();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[test]
fn without_the_token_every_protected_call_gets_401_and_changes_nothing() {
    let tokdir = TempDir::new("token");
    // The cluster forms only if the nodes send the token on their own calls.
    let c = Cluster::start("auth", 3, &["c1"], &token_args(&tokdir));
    let m = c.master("c1").unwrap();
    let f = (m + 1) % 3;
    let url = |i: usize, what: &str| cluster_url(&c.nodes[i].url, "c1", what);
    let (s, v) = call(
        "POST",
        &url(f, "submit"),
        Some(TOKEN),
        &json!({"chg": [set("a", "1")]}).to_string(),
    );
    assert_eq!((s, &v["fail"]), (200, &json!(false)), "{v}");
    let before = settled_state(&c, "c1");
    let instance = status(&c.nodes[m].url, "c1").unwrap()["instance"]
        .as_u64()
        .unwrap();
    let members: Vec<String> = c.urls();

    // Well-formed calls that would each change something if they were let in.
    let rogue = "http://127.0.0.1:1";
    let snap = json!({"data": {"a": "pwned"}, "clients": {}}).to_string();
    let calls: Vec<(&str, String)> = vec![
        ("submit", json!({"chg": [set("a", "pwned")]}).to_string()),
        ("prepare", json!({"instance": instance + 100, "master": {"addr": rogue}, "seq": 1_000_000}).to_string()),
        ("accept", json!({"instance": instance + 100, "seq": 1, "chg": [set("a", "pwned")], "master": {"addr": rogue}}).to_string()),
        ("addmember", json!({"instance": instance + 100, "seq": 1, "mem": {"addr": rogue}}).to_string()),
        ("rmmember", json!({"instance": instance + 100, "seq": 1, "mem": {"addr": members[m]}}).to_string()),
        ("start", json!({"instance": instance + 100, "seq": 1_000_000, "cluster": "c1", "self": {"addr": members[f]},
                         "master": {"addr": rogue}, "participants": [{"addr": rogue}, {"addr": members[f]}], "snap": snap}).to_string()),
        ("members/add", json!({"addr": rogue}).to_string()),
        ("members/remove", json!({"addr": members[f]}).to_string()),
        ("readindex", json!({}).to_string()),
    ];
    for i in 0..3 {
        for (what, body) in &calls {
            for token in [None, Some("wrong-token-0123456789"), Some("")] {
                let (s, v) = call("POST", &url(i, what), token, body);
                assert_eq!(s, 401, "{what} on node {i} with {token:?}: {v}");
                assert_eq!(v["code"], "ERR_DENIED", "{what}: {v}");
                assert!(v["err"].is_string());
            }
        }
        // Consistent reads need the token; plain reads and the status page stay open.
        let (s, v) = call(
            "GET",
            &format!("{}?consistent=true", url(i, "kv/a")),
            None,
            "",
        );
        assert_eq!((s, v["code"].as_str()), (401, Some("ERR_DENIED")), "{v}");
        let (s, v) = call(
            "GET",
            &format!("{}?consistent=true", url(i, "kv/a")),
            Some(TOKEN),
            "",
        );
        assert_eq!((s, v["value"].as_str()), (200, Some("1")), "{v}");
        assert_eq!(call("GET", &url(i, "kv/a"), None, "").0, 200);
        assert_eq!(call("GET", &url(i, "status"), None, "").0, 200);
    }

    // Nothing changed: same state everywhere, same master, same instance, same members.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(settled_state(&c, "c1"), before);
    assert_eq!(c.master("c1"), Some(m));
    let st = status(&c.nodes[m].url, "c1").unwrap();
    assert_eq!(st["instance"].as_u64(), Some(instance));
    assert_eq!(st["members"].as_array().unwrap().len(), 3);

    // The CLI carries the token.
    let tf = tokdir.path().join("token");
    let tf = tf.to_str().unwrap();
    let (code, _, err) = run_cli(&[
        "submit",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        &set("b", "2"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = run_cli(&[
        "submit",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--token-file",
        tf,
        &set("b", "2"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_cli(&[
        "get",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--consistent",
        "--token-file",
        tf,
        "b",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["value"], "2");
    let (code, _, _) = run_cli(&[
        "get",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "--consistent",
        "--token-file",
        tf,
        "nokey",
    ]);
    assert_eq!(code, 3);
}

#[test]
fn auth_reads_closes_the_status_page_and_plain_reads_too() {
    let tokdir = TempDir::new("token-reads");
    let mut args = token_args(&tokdir);
    args.push("--auth-reads".into());
    let dir = TempDir::new("auth-reads");
    let n = Node::start(dir.path(), "n1", &["c1"], &{
        let mut a = args.clone();
        a.push("--bootstrap".into());
        a
    });
    let url = |what: &str| cluster_url(&n.url, "c1", what);
    wait_for(Duration::from_secs(10), "the node to serve", || {
        let (s, v) = call("GET", &url("status"), Some(TOKEN), "");
        (s == 200 && v["serving"] == json!(true)).then_some(())
    });
    for what in ["status", "kv", "kv/a"] {
        let (s, v) = call("GET", &url(what), None, "");
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("ERR_DENIED")),
            "{what}: {v}"
        );
    }
    assert_eq!(call("GET", &url("kv"), Some(TOKEN), "").0, 200);
    // The dashboard's files stay open, and a CORS preflight needs no token.
    assert_ne!(call("GET", &format!("{}/", n.url), None, "").0, 401);
    assert_eq!(call("OPTIONS", &url("submit"), None, "").0, 204);
}

/// A CA, and a certificate it signed for 127.0.0.1, as PEM files in `dir`.
fn make_certs(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "clusterconsensus test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("node.pem"), leaf.pem()).unwrap();
    std::fs::write(p("node.key"), key.serialize_pem()).unwrap();
    (p("ca.pem"), p("node.pem"), p("node.key"))
}

#[test]
fn a_cluster_over_tls_with_a_token() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = make_certs(dir.path());
    let mut args = token_args(&dir);
    args.extend(["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca].map(String::from));
    let n2 = Node::start(dir.path(), "n2", &["c1"], &args);
    let n3 = Node::start(dir.path(), "n3", &["c1"], &args);
    assert!(n2.url.starts_with("https://127.0.0.1:"), "{}", n2.url);
    let mut first = args.clone();
    first.extend(["--bootstrap", "--peer", &n2.url, "--peer", &n3.url].map(String::from));
    let n1 = Node::start(dir.path(), "n1", &["c1"], &first);
    let tf = dir.path().join("token").display().to_string();
    let cli = |args: &[&str]| run_cli(args);
    // The three form a cluster over HTTPS (peers verify each other with the CA).
    wait_for(Duration::from_secs(30), "the TLS cluster to form", || {
        let (code, out, _) = cli(&[
            "status",
            "--node",
            &n3.url,
            "--cluster",
            "c1",
            "--tls-ca",
            &ca,
        ]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        (code == 0 && v["members"].as_array().map(Vec::len) == Some(3) && v["master"].is_string())
            .then_some(())
    });
    let (code, out, err) = cli(&[
        "submit",
        "--node",
        &n2.url,
        "--cluster",
        "c1",
        "--tls-ca",
        &ca,
        "--token-file",
        &tf,
        &set("k", "v"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&[
        "get",
        "--node",
        &n3.url,
        "--cluster",
        "c1",
        "--consistent",
        "--tls-ca",
        &ca,
        "--token-file",
        &tf,
        "k",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["value"], "v");
    // Without the CA the certificate is not trusted; plain HTTP gets no HTTP answer.
    let (code, _, err) = cli(&["status", "--node", &n1.url, "--cluster", "c1"]);
    assert_eq!(code, 2);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let plain = n1.url.replace("https://", "http://");
    let url = format!("{plain}/_clusterc/c1/status");
    if let Ok((s, _)) = request("GET", &url, None, b"", Duration::from_secs(3)) {
        assert_ne!(s, 200, "plain HTTP to a TLS port");
    }
}

/// `--peer-client-cert-auth`: the members present their certificates to each other, and a peer
/// call over a connection without a client certificate is refused even with the peer token;
/// clients need none. One node runs without the flag, as in the middle of turning it on one
/// node at a time: it presents its certificate all the same when a peer asks for one.
#[test]
fn peer_calls_need_a_client_certificate_with_peer_client_cert_auth() {
    const PEER: &str = "peer-token-0123456789";
    let dir = TempDir::new("mtls");
    let (ca, cert, key) = make_certs(dir.path());
    let peer = dir.path().join("peer-token");
    std::fs::write(&peer, format!("{PEER}\n")).unwrap();
    let mut args = token_args(&dir);
    args.extend(
        [
            "--peer-token-file",
            peer.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
        ]
        .map(String::from),
    );
    let mut flagged = args.clone();
    flagged.push("--peer-client-cert-auth".into());
    let n2 = Node::start(dir.path(), "n2", &["c1"], &args);
    let n3 = Node::start(dir.path(), "n3", &["c1"], &flagged);
    let mut first = flagged.clone();
    first.extend(["--bootstrap", "--peer", &n2.url, "--peer", &n3.url].map(String::from));
    let n1 = Node::start(dir.path(), "n1", &["c1"], &first);
    let urls = [&n1.url, &n2.url, &n3.url];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A client that trusts the CA but has no certificate of its own.
    let client = |token: &str| {
        let token = clusterconsensus_server::Token::new(token).unwrap();
        clusterconsensus_server::HttpClient::secured(
            Duration::from_secs(5),
            Some(&token),
            Some(std::path::Path::new(&ca)),
        )
        .unwrap()
    };
    let (as_client, as_peer) = (client(TOKEN), client(PEER));
    let get = |c: &clusterconsensus_server::HttpClient, url: String| {
        let (s, b) = rt.block_on(c.get(&url)).unwrap();
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };
    let post = |c: &clusterconsensus_server::HttpClient, url: String, body: &str| {
        let (s, b) = rt.block_on(c.post(&url, body.as_bytes().to_vec())).unwrap();
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };
    // The three form a cluster: they present their certificates on their calls.
    let master = wait_for(Duration::from_secs(30), "the cluster to form", || {
        let all = urls.iter().all(|u| {
            let (s, v) = get(&as_client, cluster_url(u, "c1", "status"));
            s == 200 && v["members"].as_array().map(Vec::len) == Some(3)
        });
        let serving = urls.iter().position(|u| {
            get(&as_client, cluster_url(u, "c1", "status")).1["serving"] == json!(true)
        });
        serving.filter(|_| all)
    });
    let instance = get(&as_client, cluster_url(urls[master], "c1", "status")).1["instance"].clone();

    // Without a client certificate the peer token opens no peer call on the nodes with the
    // flag; on the one without, it does.
    let stale = json!({"instance": 0, "seq": 1, "chg": []}).to_string();
    let (s, v) = post(&as_peer, cluster_url(&n2.url, "c1", "accept"), &stale);
    assert_eq!((s, &v["accepted"]), (200, &json!(false)), "{v}");
    for u in [&n1.url, &n3.url] {
        for (what, body) in [
            ("accept", json!({"instance": 0, "seq": 1, "chg": []})),
            (
                "prepare",
                json!({"instance": 1_000_000, "master": {"addr": "https://127.0.0.1:1"}, "seq": 1}),
            ),
            ("readindex", json!({})),
        ] {
            let (s, v) = post(&as_peer, cluster_url(u, "c1", what), &body.to_string());
            assert_eq!(
                (s, v["code"].as_str()),
                (401, Some("ERR_DENIED")),
                "{what}: {v}"
            );
            assert!(v["err"].as_str().unwrap().contains("certificate"), "{v}");
        }
    }
    // Clients need none: a submit through each node (a follower forwards it), then a
    // consistent read through each. n2 (without the flag) calls a node with it either way: as
    // master its accepts (the commit needs one of the others), as follower its readindex.
    for (i, u) in urls.iter().enumerate() {
        let body = json!({"chg": [set("k", &i.to_string())]}).to_string();
        let (s, v) = post(&as_client, cluster_url(u, "c1", "submit"), &body);
        assert_eq!((s, &v["fail"]), (200, &json!(false)), "via {u}: {v}");
    }
    for u in urls {
        let read = format!("{}?consistent=true", cluster_url(u, "c1", "kv/k"));
        let (s, v) = get(&as_client, read);
        assert_eq!((s, v["value"].as_str()), (200, Some("2")), "via {u}: {v}");
    }
    // The refused prepare changed no promise.
    let st = get(&as_client, cluster_url(urls[master], "c1", "status")).1;
    assert_eq!(
        (&st["instance"], &st["serving"]),
        (&instance, &json!(true)),
        "{st}"
    );

    // The flag needs the CA the certificates must chain to.
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--memory",
        "--cluster",
        "c1",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--peer-client-cert-auth",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-ca"), "{err}");
}

/// Reads until the server closes the connection; how long that took, or None past `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

#[test]
fn slow_clients_and_too_many_connections_are_cut_off() {
    let dir = TempDir::new("slow");
    let args: Vec<String> = [
        "--bootstrap",
        "--header-timeout-ms",
        "6000",
        "--body-timeout-ms",
        "600",
        "--max-connections",
        "8",
    ]
    .map(String::from)
    .to_vec();
    let n = Node::start(dir.path(), "n1", &["c1"], &args);
    wait_for(Duration::from_secs(10), "the node to serve", || {
        status(&n.url, "c1").filter(|s| s["serving"] == json!(true))
    });
    let addr = n.url.strip_prefix("http://").unwrap().to_string();

    // Slowloris: half a request head, then nothing. Closed by the header timeout (6 s); the
    // bounds are far apart so that a loaded machine cannot blur them (a run on a loaded
    // machine once took 2 s to close a connection "at once").
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /_clusterc/c1/submit HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(15)).expect("a slow head is cut off");
    assert!(
        took >= Duration::from_millis(4500),
        "{took:?}: before the header timeout"
    );

    // A body that stops halfway: 408 after the body timeout, nothing committed.
    let mut slow = TcpStream::connect(&addr).unwrap();
    let body = json!({"chg": [set("slow", "1")]}).to_string();
    write!(
        slow,
        "POST /_clusterc/c1/submit HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(&body.as_bytes()[..10]).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 512];
    let got = slow.read(&mut answer).unwrap();
    let head = String::from_utf8_lossy(&answer[..got]).to_string();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(kv_get(&n.url, "c1", "slow"), None);
    // The node closes that connection after its 408. Waited for, so that its place among the
    // --max-connections is free before the count below (left open, it made the ninth idle
    // connection, not the extra one, the one refused: a CI failure on a loaded machine).
    closed_within(&mut slow, Duration::from_secs(15)).expect("the node closes after a 408");
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));

    // Idle connections up to --max-connections; one more is closed at once; the node still
    // serves once the idle ones timed out.
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(&addr).unwrap();
    let took =
        closed_within(&mut extra, Duration::from_secs(5)).expect("the extra connection is closed");
    assert!(
        took < Duration::from_millis(3500),
        "{took:?}: not at once, but by the header timeout"
    );
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(15)).is_some(),
            "an idle connection is closed"
        );
    }
    wait_for(Duration::from_secs(5), "the node to serve again", || {
        status(&n.url, "c1")
    });
    submit_ok(&n.url, "c1", &[set("after", "1")]).unwrap();
}

#[test]
fn overload_is_refused_at_once_with_err_state() {
    let slow_election: Vec<String> = [
        "--election-min-ms",
        "4000",
        "--election-max-ms",
        "5000",
        "--max-inflight",
        "2",
        "--max-queued",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let mut c = Cluster::start("overload", 3, &["c1"], &slow_election);
    let m = c.master("c1").unwrap();
    let murl = c.nodes[m].url.clone();
    // The master queues at most 3 changes: 4 at once do not fit, refused before replication.
    let v = submit(
        &murl,
        "c1",
        &(0..4)
            .map(|i| set(&format!("q{i}"), "1"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        (&v["fail"], v["err"]["code"].as_str()),
        (&json!(true), Some("ERR_STATE")),
        "{v}"
    );
    submit_ok(
        &murl,
        "c1",
        &(0..3)
            .map(|i| set(&format!("q{i}"), "1"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(kv_get(&murl, "c1", "q3"), None);

    // Without its followers the master can commit nothing: submits wait (up to the election
    // timeout, then ERR_MAJORITY). Two of them fill --max-inflight 2.
    for i in 0..3 {
        if i != m {
            c.nodes[i].kill();
        }
    }
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let murl = murl.clone();
            std::thread::spawn(move || submit(&murl, "c1", &[set(&format!("w{i}"), "1")]))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (s, v) = call(
        "POST",
        &cluster_url(&murl, "c1", "submit"),
        None,
        &json!({"chg": [set("x", "1")]}).to_string(),
    );
    assert_eq!((s, v["code"].as_str()), (503, Some("ERR_STATE")), "{v}");
    // At once, not after the 4-5 s the waiting submits take (kept far apart for loaded machines).
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A client's readindex is client load like a read (it costs the master a round): refused
    // the same way, as are the app's reads, plain and consistent. The peer protocol is not
    // counted: an accept still gets its (refusing) protocol answer.
    let (s, v) = call("POST", &cluster_url(&murl, "c1", "readindex"), None, "{}");
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("ERR_STATE")),
        "readindex: {v}"
    );
    for read in ["kv/q0", "kv/q0?consistent=true", "kv?limit=1"] {
        let (s, v) = call("GET", &cluster_url(&murl, "c1", read), None, "");
        assert_eq!(
            (s, v["code"].as_str()),
            (503, Some("ERR_STATE")),
            "{read}: {v}"
        );
    }
    let stale = json!({"instance": 0, "seq": 1, "chg": []}).to_string();
    let (s, v) = call("POST", &cluster_url(&murl, "c1", "accept"), None, &stale);
    assert_eq!((s, &v["accepted"]), (200, &json!(false)), "accept: {v}");
    for w in waiting {
        let _ = w.join();
    }
    // Once they finished, calls are admitted again.
    assert!(status(&murl, "c1").is_some());
}
