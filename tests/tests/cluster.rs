//! A cluster formed from the CLI serves submits on every node; the client subcommands; the
//! dashboard's static files; two clusters in the same processes.

use std::time::Duration;

use clusterconsensus_tests::*;

fn readable_everywhere(c: &Cluster, id: &str, key: &str, value: &str) {
    for n in &c.nodes {
        wait_for(
            Duration::from_secs(5),
            &format!("{key}={value} on {}", n.name),
            || (kv_get(&n.url, id, key).as_deref() == Some(value)).then_some(()),
        );
    }
}

#[test]
fn three_nodes_form_and_submits_to_master_and_follower_are_readable_everywhere() {
    let c = Cluster::start("form", 3, &["c1"], &[]);
    let m = c.master("c1").expect("a master");
    let f = (m + 1) % 3;

    // Status names the roles, the master and the members.
    let st = status(&c.nodes[m].url, "c1").unwrap();
    assert_eq!(st["role"], "master");
    assert_eq!(st["cluster"], "c1");
    assert_eq!(st["self"], c.nodes[m].url.as_str());
    let fst = wait_for(Duration::from_secs(5), "follower knows the master", || {
        status(&c.nodes[f].url, "c1").filter(|s| s["master"] == c.nodes[m].url.as_str())
    });
    assert_eq!(fst["role"], "participant");
    let mut members: Vec<String> = c.urls();
    members.sort();
    assert_eq!(fst["members"], json!(members));
    for field in [
        "instance",
        "commit",
        "version",
        "staged",
        "peers",
        "last_master_contact_ms",
    ] {
        assert!(fst.get(field).is_some(), "status has {field}: {fst}");
    }

    // The seed's submit body, to the master and to a follower (which forwards it).
    // Answered with the seq that committed them and the app's result per change (the key's
    // previous value), also through a follower.
    let v = submit_ok(&c.nodes[m].url, "c1", &[set("a", "1")]).unwrap();
    assert_eq!(v["results"], json!([{"prev": null}]), "{v}");
    let seq = v["seq"].as_u64().expect("a seq");
    let v = submit_ok(&c.nodes[f].url, "c1", &[set("b", "2"), set("c", "3")]).unwrap();
    assert_eq!(v["results"], json!([{"prev": null}, {"prev": null}]), "{v}");
    assert!(v["seq"].as_u64().expect("a seq") > seq, "{v}");
    readable_everywhere(&c, "c1", "a", "1");
    readable_everywhere(&c, "c1", "b", "2");
    readable_everywhere(&c, "c1", "c", "3");
    // The key-value app's pages: in key order, a cursor to the next page, the key count.
    let page = |q: &str| {
        let a = http("GET", &cluster_url(&c.nodes[f].url, "c1", q), b"").unwrap();
        assert_eq!(a.status, 200, "{q}");
        a.json()
    };
    let first = page("kv?limit=2");
    assert_eq!(first["items"], json!([["a", "1"], ["b", "2"]]));
    assert_eq!((&first["next"], &first["count"]), (&json!("b"), &json!(3)));
    let second = page("kv?limit=2&after=b");
    assert_eq!(second["items"], json!([["c", "3"]]));
    assert_eq!(second["next"], Value::Null);
    assert_eq!(second["commit"], first["commit"]);
    assert_eq!(page("kv?prefix=b")["items"], json!([["b", "2"]]));
    let bad = http(
        "GET",
        &cluster_url(&c.nodes[f].url, "c1", "kv?limit=0"),
        b"",
    )
    .unwrap();
    assert_eq!(
        (bad.status, bad.json()["code"].clone()),
        (400, json!("ERR_ENCODING"))
    );
    let none = http(
        "GET",
        &cluster_url(&c.nodes[f].url, "c1", "nothing/here"),
        b"",
    )
    .unwrap();
    assert_eq!(
        (none.status, none.json()["code"].clone()),
        (404, json!("ERR_CALL"))
    );
    // The metrics page: the state, the counters and the write latency, per node.
    let metric = |node: usize, name: &str| -> f64 {
        let a = http(
            "GET",
            &cluster_url(&c.nodes[node].url, "c1", "metrics"),
            b"",
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert!(a
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"));
        let text = String::from_utf8_lossy(&a.body).into_owned();
        let prefix = format!("clusterconsensus_{name}{{cluster=\"c1\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        line.and_then(|l| l[prefix.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let commit = status(&c.nodes[m].url, "c1").unwrap()["commit"]
        .as_f64()
        .unwrap();
    assert_eq!(metric(m, "commit_index"), commit);
    assert_eq!((metric(m, "is_master"), metric(f, "is_master")), (1.0, 0.0));
    assert_eq!(metric(m, "members"), 3.0);
    assert!(metric(m, "committed_changes_total") >= 3.0);
    assert!(metric(f, "write_seconds_count") >= metric(f, "committed_entries_total"));

    let missing = http("GET", &cluster_url(&c.nodes[f].url, "c1", "kv/nope"), b"").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"key": "nope", "value": null}));
    let unknown = http("GET", &cluster_url(&c.nodes[f].url, "nope", "kv/a"), b"").unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "ERR_STATE");

    // The client subcommands.
    let (code, out, err) = run_cli(&[
        "submit",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        &set("d", "4"),
    ]);
    assert_eq!(code, 0, "submit: {out} {err}");
    readable_everywhere(&c, "c1", "d", "4");
    let (code, out, _) = run_cli(&["status", "--node", &c.nodes[f].url, "--cluster", "c1"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("status prints JSON");
    assert_eq!(v["cluster"], "c1");
    // Failures: exit code 2 and a message.
    let (code, _, err) = run_cli(&[
        "submit",
        "--node",
        &c.nodes[f].url,
        "--cluster",
        "c1",
        "not a change",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("ERR_ENCODING"), "{err}");
    let (code, _, err) = run_cli(&["status", "--node", &c.nodes[f].url, "--cluster", "nosuch"]);
    assert_eq!(code, 2);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = run_cli(&["status", "--node", "http://127.0.0.1:1", "--cluster", "c1"]);
    assert_eq!(code, 2);
    assert!(err.contains("ERR_CONNECT"), "{err}");
    // `get`: a missing key is exit 3, an unknown cluster an error (exit 2).
    let get = |cluster: &str, key: &str| {
        run_cli(&["get", "--node", &c.nodes[f].url, "--cluster", cluster, key])
    };
    let (code, out, _) = get("c1", "d");
    assert_eq!((code, out.trim()), (0, r#"{"key":"d","value":"4"}"#));
    let (code, _, err) = get("c1", "nope");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no key"), "{err}");
    let (code, _, err) = get("nosuch", "d");
    assert_eq!(code, 2);
    assert!(err.contains("ERR_STATE"), "{err}");
}

#[test]
fn dashboard_files_and_cors() {
    let www = TempDir::new("www");
    std::fs::write(www.path().join("index.html"), "<!doctype html><p>hi</p>").unwrap();
    std::fs::write(www.path().join("app.js"), "export const x = 1;").unwrap();
    std::fs::create_dir_all(www.path().join("pkg")).unwrap();
    std::fs::write(www.path().join("pkg/core_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let dir = TempDir::new("www-node");
    let args = vec![
        "--www".to_string(),
        www.path().display().to_string(),
        "--bootstrap".into(),
    ];
    let n = Node::start(dir.path(), "solo", &["c1"], &args);
    wait_for(Duration::from_secs(5), "one-member master", || {
        status(&n.url, "c1").filter(|s| s["serving"] == json!(true))
    });

    for (path, ctype, body) in [
        ("/", "text/html", &b"<!doctype html><p>hi</p>"[..]),
        ("/index.html", "text/html", b"<!doctype html><p>hi</p>"),
        ("/app.js", "text/javascript", b"export const x = 1;"),
        ("/pkg/core_bg.wasm", "application/wasm", b"\0asm\x01\0\0\0"),
    ] {
        let a = http("GET", &format!("{}{path}", n.url), b"").unwrap();
        assert_eq!(a.status, 200, "{path}");
        assert!(
            a.header("content-type").unwrap().starts_with(ctype),
            "{path}: {:?}",
            a.headers
        );
        assert_eq!(a.body, body, "{path}");
    }
    for path in [
        "/nope.js",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/pkg/%2e%2e/%2e%2e/x",
    ] {
        let a = http("GET", &format!("{}{path}", n.url), b"").unwrap();
        assert_eq!(a.status, 404, "{path}");
    }

    // A dashboard from another origin: preflight, then the answers carry the CORS header.
    for what in ["submit", "members/add", "members/remove", "status"] {
        let a = http("OPTIONS", &cluster_url(&n.url, "c1", what), b"").unwrap();
        assert!(a.status == 204 || a.status == 200, "{what}: {}", a.status);
        assert_eq!(a.header("access-control-allow-origin"), Some("*"), "{what}");
        assert!(a
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST"));
        assert!(a
            .header("access-control-allow-headers")
            .unwrap()
            .contains("content-type"));
    }
    let body = json!({"chg": [set("k", "v")]}).to_string();
    let a = http(
        "POST",
        &cluster_url(&n.url, "c1", "submit"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    let a = http("GET", &cluster_url(&n.url, "c1", "kv/k"), b"").unwrap();
    assert_eq!(a.json(), json!({"key": "k", "value": "v"}));
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn two_clusters_in_the_same_three_processes_stay_independent() {
    let c = Cluster::start("two", 3, &["alpha", "beta"], &[]);
    let urls = c.urls();
    submit_ok(&urls[1], "alpha", &[set("x", "from-alpha")]).unwrap();
    submit_ok(
        &urls[2],
        "beta",
        &[set("x", "from-beta"), set("y", "only-beta")],
    )
    .unwrap();
    readable_everywhere(&c, "alpha", "x", "from-alpha");
    readable_everywhere(&c, "beta", "x", "from-beta");
    readable_everywhere(&c, "beta", "y", "only-beta");
    for u in &urls {
        assert_eq!(kv_get(u, "alpha", "y"), None);
    }

    // More traffic on alpha leaves beta's log alone.
    let beta_commit = status(&urls[0], "beta").unwrap()["commit"].clone();
    for i in 0..5 {
        submit_ok(&urls[i % 3], "alpha", &[set(&format!("a{i}"), "1")]).unwrap();
    }
    for u in &urls {
        assert_eq!(status(u, "beta").unwrap()["commit"], beta_commit);
        let a = kv_all(u, "alpha").unwrap();
        assert!(a["data"].get("y").is_none());
    }
    readable_everywhere(&c, "alpha", "a4", "1");

    // A cluster no process hosts.
    let a = http("GET", &cluster_url(&urls[0], "gamma", "status"), b"").unwrap();
    assert_eq!(a.status, 404);
    assert!(a.json()["code"].is_string());
}

#[test]
fn sigterm_stops_a_node_cleanly_and_it_resumes_from_its_data() {
    let dir = TempDir::new("term");
    let mut n = Node::start(
        dir.path(),
        "solo",
        &["c1", "c2"],
        &["--bootstrap".to_string()],
    );
    for id in ["c1", "c2"] {
        wait_for(Duration::from_secs(5), "one-member master", || {
            status(&n.url, id).filter(|s| s["serving"] == json!(true))
        });
    }
    submit_ok(&n.url, "c1", &[set("kept", "yes")]).unwrap();
    assert_eq!(n.terminate(), Some(0), "SIGTERM: clean exit");

    // Startup failures: exit code 2 and a clear message.
    let data = n.data_dir.display().to_string();
    let other = [
        "node",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        "c1",
        "--data-dir",
        &data,
    ];
    let (code, _, err) = run_cli(&other);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("belongs to the member"), "{err}");
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        "a/b",
        "--memory",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cluster id"), "{err}");
    let (code, _, err) = run_cli(&["node", "--listen", "127.0.0.1:0", "--cluster", "c1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--data-dir"), "{err}");

    n.restart();
    let url = n.url.clone();
    for id in ["c1", "c2"] {
        wait_for(
            Duration::from_secs(10),
            "the restarted node to be master again",
            || status(&url, id).filter(|s| s["serving"] == json!(true)),
        );
    }
    assert_eq!(kv_get(&url, "c1", "kept").as_deref(), Some("yes"));
    assert_eq!(kv_get(&url, "c2", "kept"), None);
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        &format!("127.0.0.1:{}", n.port),
        "--cluster",
        "c1",
        "--memory",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}
