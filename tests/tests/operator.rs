//! The operator commands `clusterconsensus member list|add|remove|promote`: their table and
//! lines for people, their `--json` for scripts, and exit code 2 for every failure.
//! `clusterconsensus transfer` is tested with the rest of leader transfer, in transfer.rs.

use std::time::Duration;

use clusterconsensus_tests::*;

/// `clusterconsensus member <args>`: (exit code, stdout, stderr).
fn member(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["member"];
    all.extend_from_slice(args);
    run_cli(&all)
}

/// `member list --json` through `node`.
fn list(node: &str) -> Value {
    let (code, out, err) = member(&["list", "--node", node, "--cluster", "c1", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The row of `addr` in a `member list --json`.
fn row<'a>(list: &'a Value, addr: &str) -> Option<&'a Value> {
    list["members"]
        .as_array()?
        .iter()
        .find(|m| m["addr"] == addr)
}

#[test]
fn member_list_shows_every_member_from_the_masters_view() {
    let c = Cluster::start("op-list", 3, &["c1"], &[]);
    let m = c.wait_master("c1", Duration::from_secs(10));
    let f = (m + 1) % 3;
    submit_ok(&c.nodes[m].url, "c1", &[set("a", "1")]).unwrap();

    // Asked through a follower, the table is the master's view: every member reachable.
    let (code, out, err) = member(&["list", "--node", &c.nodes[f].url, "--cluster", "c1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "the master answered: no note");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, ["ADDRESS", "ROLE", "MASTER", "REACHABLE", "LAG"]);
    for n in &c.nodes {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&n.url))
            .expect("a line per member");
        let cells: Vec<&str> = line.split_whitespace().collect();
        if n.url == c.nodes[m].url {
            assert_eq!(cells[1..], ["voter", "*", "yes", "0"], "{out}");
        } else {
            assert_eq!(cells[1..3], ["voter", "yes"], "{out}");
            assert!(cells[3].parse::<u64>().is_ok(), "a lag: {out}");
        }
    }

    let v = list(&c.nodes[f].url);
    assert_eq!(v["view"], json!(c.nodes[m].url), "{v}");
    assert_eq!(v["master"], json!(c.nodes[m].url), "{v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    let master_row = row(&v, &c.nodes[m].url).unwrap();
    assert_eq!(master_row["master"], true);
    assert_eq!(master_row["lag"], 0);
    for n in &c.nodes {
        let r = row(&v, &n.url).unwrap();
        assert_eq!(
            (r["role"].as_str(), r["reachable"].as_bool()),
            (Some("voter"), Some(true))
        );
    }

    // A follower whose master cannot be asked: its own view, said on stderr.
    let mut c = c;
    c.nodes[m].kill();
    let (code, out, err) = member(&["list", "--node", &c.nodes[f].url, "--cluster", "c1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(err.starts_with("note: "), "{err}");
}

#[test]
fn members_are_added_as_learners_promoted_and_removed() {
    let c = Cluster::start("op-change", 3, &["c1"], &[]);
    let m = c.wait_master("c1", Duration::from_secs(10));
    let via = &c.nodes[(m + 1) % 3].url;
    let fourth = Node::start(c.dir.path(), "node4", &["c1"], &[]);
    let fifth = Node::start(c.dir.path(), "node5", &["c1"], &[]);

    // A learner that stays one.
    let (code, out, err) = member(&[
        "add",
        "--node",
        via,
        "--cluster",
        "c1",
        "--no-promote",
        &fourth.url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "{}: added as a learner; it stays one until `member promote`",
            fourth.url
        )
    );
    let v = wait_for(Duration::from_secs(10), "the learner to catch up", || {
        let v = list(via);
        (row(&v, &fourth.url)?["lag"] == 0).then_some(v)
    });
    let r = row(&v, &fourth.url).unwrap();
    assert_eq!(
        (r["role"].as_str(), r["promote"].as_bool()),
        (Some("learner"), Some(false)),
        "{v}"
    );
    let (_, table, _) = member(&["list", "--node", via, "--cluster", "c1"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&fourth.url) && l.contains("learner (no auto-promote)")),
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        row(&list(via), &fourth.url).unwrap()["role"],
        "learner",
        "still a learner"
    );

    // Promoted by hand (a learner not caught up yet would be refused: retried until it is).
    let promoted = wait_for(Duration::from_secs(10), "the promotion", || {
        let (code, out, _) = member(&[
            "promote",
            "--node",
            via,
            "--cluster",
            "c1",
            "--json",
            &fourth.url,
        ]);
        (code == 0).then_some(out)
    });
    assert_eq!(
        serde_json::from_str::<Value>(&promoted).unwrap(),
        json!({"fail": false, "err": null})
    );
    assert_eq!(row(&list(via), &fourth.url).unwrap()["role"], "voter");

    // The default: a learner that the master promotes once caught up.
    let (code, out, err) = member(&["add", "--node", via, "--cluster", "c1", &fifth.url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("the master promotes it once it has caught up"),
        "{out}"
    );
    wait_for(
        Duration::from_secs(10),
        "the fifth to become a voter",
        || (row(&list(via), &fifth.url)?["role"] == "voter").then_some(()),
    );

    // A stale member-list version is refused: exit 2, the refusal on stderr, and as JSON on
    // stdout with --json.
    let (code, out, err) = member(&[
        "remove",
        "--node",
        via,
        "--cluster",
        "c1",
        "--version",
        "1",
        "--json",
        &fifth.url,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    let refusal: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(refusal["fail"], true, "{refusal}");
    assert_eq!(refusal["err"]["code"], "ERR_SEQUENCE", "{refusal}");
    assert!(
        err.starts_with("error: members/remove refused: ERR_SEQUENCE"),
        "{err}"
    );

    for n in [&fourth.url, &fifth.url] {
        let (code, out, err) = member(&["remove", "--node", via, "--cluster", "c1", n]);
        assert_eq!(
            (code, out.trim()),
            (0, format!("{n}: removed").as_str()),
            "{err}"
        );
    }
    let v = list(via);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(
        row(&v, &fourth.url).is_none() && row(&v, &fifth.url).is_none(),
        "{v}"
    );
}

#[test]
fn operator_commands_fail_with_exit_code_2() {
    let dir = TempDir::new("op-fail");
    let lone = Node::start(dir.path(), "node1", &["c1"], &[]);
    let cases: [&[&str]; 4] = [
        // Nobody listens there.
        &["list", "--node", "http://127.0.0.1:9", "--cluster", "c1"],
        // No such cluster on that node.
        &["list", "--node", &lone.url, "--cluster", "nope"],
        // An unjoined node knows no master to forward to.
        &[
            "add",
            "--node",
            &lone.url,
            "--cluster",
            "c1",
            "http://127.0.0.1:9",
        ],
        // Two kinds of member at once.
        &[
            "add",
            "--node",
            &lone.url,
            "--cluster",
            "c1",
            "--voter",
            "--no-promote",
            "http://x:1",
        ],
    ];
    for args in cases {
        let (code, out, err) = member(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}
