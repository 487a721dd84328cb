//! Adding a 4th node with `members/add` and removing it with `members/remove`.

use std::time::Duration;

use clusterconsensus_tests::*;

#[test]
fn a_fourth_node_is_added_gets_the_state_submits_and_is_removed() {
    let c = Cluster::start("members", 3, &["c1"], &[]);
    let m = c.master("c1").unwrap();
    let f = (m + 1) % 3;
    for i in 0..5 {
        submit_ok(&c.nodes[m].url, "c1", &[set(&format!("old{i}"), "1")]).unwrap();
    }
    let fourth = Node::start(c.dir.path(), "node4", &["c1"], &[]);
    assert_eq!(status(&fourth.url, "c1").unwrap()["role"], "unjoined");

    // Sent to a follower, the add is forwarded to the master; answered once committed.
    let version = status(&c.nodes[m].url, "c1").unwrap()["version"].clone();
    let v = post_json(
        &c.nodes[f].url,
        "c1",
        "members/add",
        &json!({"addr": fourth.url, "version": version}),
    )
    .unwrap();
    assert_eq!(v, json!({"fail": false, "err": null}));
    // Committed as a learner: the master lists it among the learners at once...
    let st = status(&c.nodes[m].url, "c1").unwrap();
    assert!(
        st["learners"]
            .as_array()
            .is_some_and(|l| l.contains(&json!({"addr": fourth.url})))
            || st["members"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(fourth.url))),
        "{st}"
    );
    // ...and among the voters once it has the state (the master promotes it); the followers
    // learn each commit with the next accept (an idle master sends an empty one after
    // commit_notice_ms).
    let lists_fourth = |url: &str| {
        status(url, "c1").filter(|st| {
            st["members"]
                .as_array()
                .is_some_and(|m| m.contains(&json!(fourth.url)))
        })
    };
    for n in &c.nodes {
        wait_for(
            Duration::from_secs(10),
            "every member to list the 4th",
            || lists_fourth(&n.url).map(|_| ()),
        );
    }

    // It gets the snapshot, follows the master, and can submit.
    wait_for(Duration::from_secs(10), "the new member to join", || {
        status(&fourth.url, "c1").filter(|s| s["role"] == "participant" && s["master"].is_string())
    });
    wait_for(
        Duration::from_secs(5),
        "the snapshot on the new member",
        || kv_get(&fourth.url, "c1", "old4").map(|_| ()),
    );
    submit_ok(&fourth.url, "c1", &[set("from4", "1")]).unwrap();
    for n in c.nodes.iter().map(|n| &n.url).chain([&fourth.url]) {
        wait_for(Duration::from_secs(5), "from4 everywhere", || {
            kv_get(n, "c1", "from4").map(|_| ())
        });
    }

    // A request made against an old member-list version is refused.
    let v = post_json(
        &c.nodes[m].url,
        "c1",
        "members/remove",
        &json!({"addr": fourth.url, "version": version}),
    )
    .unwrap();
    assert_eq!(v["err"]["code"], "ERR_SEQUENCE", "{v}");

    // Remove it: it learns of its removal and reports `removed`.
    let v = post_json(
        &c.nodes[m].url,
        "c1",
        "members/remove",
        &json!({"addr": fourth.url}),
    )
    .unwrap();
    assert_eq!(v, json!({"fail": false, "err": null}));
    wait_for(
        Duration::from_secs(10),
        "the fourth node to report removed",
        || status(&fourth.url, "c1").filter(|s| s["role"] == "removed"),
    );
    let mut three = c.urls();
    three.sort();
    for n in &c.nodes {
        wait_for(Duration::from_secs(5), "three members again", || {
            status(&n.url, "c1").filter(|s| s["members"] == json!(three))
        });
    }
    // A removed node refuses submits; the cluster goes on.
    let v = submit(&fourth.url, "c1", &[set("late", "1")]).unwrap();
    assert_eq!(v["fail"], true);
    submit_ok(&c.nodes[f].url, "c1", &[set("after-remove", "1")]).unwrap();
}
