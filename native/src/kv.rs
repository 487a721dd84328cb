//! The key-value app's read endpoints: the [`Reads`] of [`KvStore`] (the app itself is
//! `clusterconsensus::kv`, in the core, so the simulation checks it too).
//!
//! | path | answer |
//! |---|---|
//! | `kv/<key>` (key percent-encoded) | `200 {"key": K, "value": V}`, or `404 {"key": K, "value": null}` |
//! | `kv?prefix=P&after=A&limit=L` | `200 {"commit": N, "items": [[K, V], ...], "next": K \| null, "count": KEYS}` |
//!
//! `kv` answers one page: the keys that start with `prefix` (default: every key) and come after
//! `after` (default: from the first), in key order, at most `limit` of them (default
//! [`DEFAULT_PAGE`], at most [`MAX_PAGE`]). `next` is the last key of the page when more keys
//! follow: ask again with `after=<next>`. `count` is the number of keys in the whole store,
//! `commit` the commit index of the state read. Pages read at different times may come from
//! different commits (compare `commit`); a consistent read (`?consistent=true`) of each page is
//! linearizable on its own.
//!
//! A watch (`watch?prefix=P`) sends only the changes whose key starts with `P`.

use std::sync::Arc;

pub use clusterconsensus::kv::{KvChange, KvOp, KvStore};
use serde::Deserialize;
use serde_json::json;

use crate::reads::{ChangeFilter, ReadAnswer, ReadRequest, Reads};

/// Keys in a `kv` page when the query gives no `limit`.
pub const DEFAULT_PAGE: usize = 1000;
/// The most keys one `kv` page holds: a read runs on the cluster's task, so its work is bounded.
pub const MAX_PAGE: usize = 10_000;

impl Reads for KvStore {
    fn read(&self, req: &ReadRequest) -> Option<ReadAnswer> {
        if req.path() == "kv" {
            return Some(page(self, req));
        }
        let key = match req.tail("kv")? {
            Ok(k) => k,
            Err(bad) => return Some(bad),
        };
        Some(match self.get(&key) {
            Some(v) => ReadAnswer::ok(json!({"key": key, "value": v})),
            None => ReadAnswer::not_found(json!({"key": key, "value": null})),
        })
    }

    /// `prefix=P`: the changes whose key starts with `P` (an empty `P`: every change).
    fn watch_filter(req: &ReadRequest) -> Result<Option<ChangeFilter>, ReadAnswer> {
        /// Only the key of a change: less to decode than a whole [`KvChange`].
        #[derive(Deserialize)]
        struct Keyed<'a> {
            #[serde(borrow)]
            key: std::borrow::Cow<'a, str>,
        }
        let prefix = match req.param("prefix") {
            None => return Ok(None),
            Some(p) if p.is_empty() => return Ok(None),
            Some(p) => p,
        };
        Ok(Some(Arc::new(move |change: &str| {
            serde_json::from_str::<Keyed>(change).is_ok_and(|c| c.key.starts_with(&prefix))
        })))
    }
}

fn page(kv: &KvStore, req: &ReadRequest) -> ReadAnswer {
    let limit = match req.param("limit") {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return ReadAnswer::bad_request(&format!(
                    "limit must be a number from 1 to {MAX_PAGE}"
                ))
            }
        },
    };
    let prefix = req.param("prefix").unwrap_or_default();
    let after = req.param("after");
    let p = kv.page(&prefix, after.as_deref(), limit);
    ReadAnswer::ok(json!({
        "commit": req.commit(),
        "items": p.items,
        "next": p.next,
        "count": kv.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterconsensus::StateMachine;
    use serde_json::Value;

    fn store(n: usize) -> KvStore {
        let mut kv = KvStore::new();
        for i in 0..n {
            kv.apply(
                1,
                &KvChange::set(format!("k{i:03}"), i.to_string()).encode(),
            );
        }
        kv.apply(2, &KvChange::set("a b", "spaced").encode());
        kv
    }

    fn get(kv: &KvStore, path: &str, query: Option<&str>) -> ReadAnswer {
        kv.read(&ReadRequest::new(path, query.map(String::from), 7))
            .expect("a kv route")
    }

    #[test]
    fn one_key_found_missing_and_badly_encoded() {
        let kv = store(3);
        let a = get(&kv, "kv/a%20b", None);
        assert_eq!(
            (a.status, a.body),
            (200, json!({"key": "a b", "value": "spaced"}))
        );
        let a = get(&kv, "kv/nope", None);
        assert_eq!(
            (a.status, a.body),
            (404, json!({"key": "nope", "value": null}))
        );
        assert_eq!(get(&kv, "kv/%zz", None).status, 400);
        assert!(kv.read(&ReadRequest::new("other", None, 0)).is_none());
        assert!(kv.read(&ReadRequest::new("kvx", None, 0)).is_none());
    }

    #[test]
    fn pages_walk_the_keys_with_a_cursor() {
        let kv = store(25);
        let a = get(&kv, "kv", None);
        assert_eq!(a.status, 200);
        assert_eq!(
            (a.body["commit"].clone(), a.body["count"].clone()),
            (json!(7), json!(26))
        );
        assert_eq!(a.body["items"].as_array().unwrap().len(), 26);
        assert_eq!(a.body["items"][0], json!(["a b", "spaced"]));
        assert_eq!(a.body["next"], Value::Null);

        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = match &after {
                Some(a) => format!(
                    "prefix=k&limit=10&after={}",
                    crate::reads::percent_encode(a)
                ),
                None => "prefix=k&limit=10".to_string(),
            };
            let a = get(&kv, "kv", Some(&q));
            assert_eq!(a.body["count"], json!(26));
            let items = a.body["items"].as_array().unwrap();
            assert!(items.len() <= 10);
            seen.extend(items.iter().map(|i| i[0].as_str().unwrap().to_string()));
            match a.body["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
        }
        let want: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_watch_filters_changes_by_key_prefix() {
        let req = |q: &str| ReadRequest::new("watch", Some(q.to_string()), 0);
        assert!(KvStore::watch_filter(&req("from=1")).unwrap().is_none());
        assert!(KvStore::watch_filter(&req("prefix=")).unwrap().is_none());
        let f = KvStore::watch_filter(&req("prefix=user%2F"))
            .unwrap()
            .unwrap();
        assert!(f(&KvChange::set("user/1", "x").encode()));
        assert!(f(&KvChange::cas("user/2", None, "x").encode()));
        assert!(!f(&KvChange::del("users").encode()));
        assert!(!f(&KvChange::set("other", "x").encode()));
        assert!(!f("not json"));
        // An escaped key decodes before the comparison.
        assert!(f(r#"{"op":"del","key":"user\/3"}"#));
    }

    #[test]
    fn a_bad_limit_is_a_400() {
        let kv = store(1);
        for q in ["limit=0", "limit=x", "limit=10001", "limit=-1"] {
            let a = get(&kv, "kv", Some(q));
            assert_eq!(
                (a.status, a.body["code"].as_str()),
                (400, Some("ERR_ENCODING")),
                "{q}"
            );
        }
        assert_eq!(get(&kv, "kv", Some("limit=10000")).status, 200);
    }
}
