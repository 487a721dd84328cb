//! Harness for the cross-crate integration tests in `tests/tests/`: real node processes on
//! 127.0.0.1, driven over HTTP. The process handling, the HTTP client, the temporary
//! directories and the bounded waits are the server library's testkit
//! (`clusterconsensus_server::testkit`, re-exported here); this crate adds the key-value app's
//! helpers and the fault campaign.
//!
//! The node binaries come from the same target directory as the test executable
//! (`target/<profile>/clusterconsensus`, `target/<profile>/examples/<app>`): build them first
//! with `cargo build --workspace --bins --examples` (scripts/test-all.sh does).

use std::time::Duration;

/// The fault campaign (proxy, nemesis, clients, checker); see `tests/tests/campaign.rs`.
pub mod campaign;

pub use clusterconsensus_server::testkit::*;

/// A key-value `set` change.
pub fn set(key: &str, value: &str) -> String {
    json!({"op": "set", "key": key, "value": value}).to_string()
}

/// The node's whole key-value state, `{"commit": N, "data": {KEY: VALUE, ...}}`, read page by
/// page (`GET kv?after=...`, with `token` if given) until the last; `None` if a page cannot be
/// read or the pages come from different commits (the state moved while it was read).
pub fn kv_state(node: &str, id: &str, token: Option<&str>) -> Option<Value> {
    let mut data = serde_json::Map::new();
    let mut commit = None;
    let mut after: Option<String> = None;
    loop {
        let what = match &after {
            Some(a) => format!(
                "kv?limit=10000&after={}",
                clusterconsensus_server::percent_encode(a)
            ),
            None => "kv?limit=10000".to_string(),
        };
        let page = get_json_with(node, id, &what, token)?;
        if *commit.get_or_insert(page["commit"].clone()) != page["commit"] {
            return None;
        }
        for item in page["items"].as_array()? {
            data.insert(item[0].as_str()?.to_string(), item[1].clone());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    Some(json!({"commit": commit?, "data": data}))
}

/// [`kv_state`] without a token.
pub fn kv_all(node: &str, id: &str) -> Option<Value> {
    kv_state(node, id, None)
}

/// Every node's whole key-value state of cluster `id` (and commit index), once they all agree.
pub fn settled_state(c: &Cluster, id: &str) -> Value {
    wait_for(Duration::from_secs(5), "all nodes to agree", || {
        let all: Vec<Value> = c.nodes.iter().filter_map(|n| kv_all(&n.url, id)).collect();
        (all.len() == c.nodes.len() && all.iter().all(|s| *s == all[0])).then(|| all[0].clone())
    })
}

/// `GET kv/<key>`: the value, or `None` (404 or no answer).
pub fn kv_get(node: &str, id: &str, key: &str) -> Option<String> {
    let a = http_timeout(
        "GET",
        &cluster_url(node, id, &format!("kv/{key}")),
        b"",
        Duration::from_secs(3),
    )
    .ok()?;
    (a.status == 200).then(|| a.json()["value"].as_str().unwrap_or_default().to_string())
}
