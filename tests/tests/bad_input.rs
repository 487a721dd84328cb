//! The bad inputs of conformance.json, an oversized body and malformed changes get the stated
//! HTTP status and error code; afterwards every node still serves and no data changed.

use std::time::Duration;

use clusterconsensus_tests::*;

const CONFORMANCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/conformance.json"
));

#[test]
fn bad_inputs_get_http_errors_and_change_nothing() {
    let c = Cluster::start("bad", 3, &["c1"], &[]);
    let m = c.master("c1").unwrap();
    for i in 0..3 {
        submit_ok(
            &c.nodes[i].url,
            "c1",
            &[set(&format!("k{i}"), &format!("v{i}"))],
        )
        .unwrap();
    }
    let before = settled_state(&c, "c1");
    assert_eq!(before["data"]["k2"], "v2");

    let spec: Value = serde_json::from_str(CONFORMANCE).unwrap();
    let bad = spec["bad_inputs"].as_array().unwrap();
    assert!(bad.len() >= 5);
    for node in &c.nodes {
        for case in bad {
            let method = case["method"].as_str().unwrap();
            let http_method = case["http_method"].as_str().unwrap_or("POST");
            let raw = case["raw"].as_str().unwrap();
            let url = cluster_url(&node.url, "c1", method);
            let a = http(http_method, &url, raw.as_bytes()).unwrap();
            let note = case["note"].as_str().unwrap_or("");
            assert_eq!(
                a.status as u64,
                case["http_status"].as_u64().unwrap(),
                "{note} on {url}"
            );
            let body = a.json();
            if let Some(code) = case["code"].as_str() {
                assert_eq!(body["code"], code, "{note}: {body}");
            }
            // Every error body is {"code","err"}.
            assert!(
                body["code"].as_str().is_some_and(|c| c.starts_with("ERR_")),
                "{note}: {body}"
            );
            assert!(body["err"].is_string(), "{note}: {body}");
        }
    }

    // Unknown cluster: 404 with an error body.
    let a = http(
        "POST",
        &cluster_url(&c.nodes[m].url, "nosuch", "submit"),
        b"{\"chg\":[]}",
    )
    .unwrap();
    assert_eq!(a.status, 404);
    assert!(a.json()["err"].is_string());
    // Wrong methods on the read endpoints.
    let a = http("POST", &cluster_url(&c.nodes[m].url, "c1", "status"), b"{}").unwrap();
    assert_eq!(a.status, 405);
    assert!(a.header("allow").is_some());

    // A 20 MiB body: 413 (to the master and to a follower), and the node stays up.
    let big = {
        let mut b = br#"{"chg":[""#.to_vec();
        b.resize(20 << 20, b'x');
        b.extend_from_slice(br#""]}"#);
        b
    };
    for i in [m, (m + 1) % 3] {
        let a = http_timeout(
            "POST",
            &cluster_url(&c.nodes[i].url, "c1", "submit"),
            &big,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(a.status, 413);
        assert_eq!(a.json()["code"], "ERR_ENCODING");
    }

    // Changes the key-value app cannot parse: refused by the core with ERR_ENCODING, in a 200
    // protocol answer, before anything is replicated; through the master and a follower.
    for change in [
        "chg1",
        "{}",
        r#"{"op":"set","key":"a"}"#,
        r#"{"op":"put","key":"a","value":"1"}"#,
    ] {
        for i in [m, (m + 2) % 3] {
            let v = submit(&c.nodes[i].url, "c1", &[set("ok", "1"), change.to_string()]).unwrap();
            assert_eq!(v["fail"], true, "{change}: {v}");
            assert_eq!(v["err"]["code"], "ERR_ENCODING", "{change}: {v}");
        }
    }
    // Malformed but decodable admin requests are protocol answers too.
    let v = post_json(&c.nodes[m].url, "c1", "members/add", &json!({"addr": ""})).unwrap();
    assert_eq!(v["err"]["code"], "ERR_ENCODING", "{v}");
    // A peer's accept from a stale instance: refused, nothing changes.
    let v = post_json(
        &c.nodes[(m + 1) % 3].url,
        "c1",
        "accept",
        &json!({"instance": 0, "seq": 1, "chg": ["junk"]}),
    )
    .unwrap();
    assert_eq!(v["accepted"], false, "{v}");

    // Still serving, nothing changed.
    for n in &c.nodes {
        assert!(status(&n.url, "c1").is_some(), "{} still serves", n.name);
    }
    assert_eq!(settled_state(&c, "c1"), before);
    assert_eq!(c.master("c1"), Some(m), "no election was caused");
    submit_ok(&c.nodes[(m + 1) % 3].url, "c1", &[set("after", "yes")]).unwrap();
    let after = settled_state(&c, "c1");
    assert_eq!(after["data"]["after"], "yes");
    assert_eq!(after["data"].as_object().unwrap().len(), 4);
}
