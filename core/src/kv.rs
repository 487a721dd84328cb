//! A small key-value state machine that the hosts, the simulation and the tests share.
//!
//! Changes are JSON strings:
//!
//! - `{"op":"set","key":K,"value":V}` sets a key,
//! - `{"op":"del","key":K}` deletes it,
//!
//! each optionally with `"client": C, "req": N` (N a positive integer) for exactly-once: the
//! store remembers the highest `req` applied per client, and a change whose `req` is not above
//! it is skipped. A client numbers its requests 1, 2, 3, ... and retries a failed one with the
//! same number (PROTOCOL.md section 3, submit).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::StateMachine;

/// One key-value change, as it appears inside a change string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvChange {
    pub op: KvOp,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvOp {
    Set,
    Del,
}

impl KvChange {
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> KvChange {
        KvChange {
            op: KvOp::Set,
            key: key.into(),
            value: Some(value.into()),
            client: None,
            req: None,
        }
    }

    pub fn del(key: impl Into<String>) -> KvChange {
        KvChange {
            op: KvOp::Del,
            key: key.into(),
            value: None,
            client: None,
            req: None,
        }
    }

    /// Tags the change with a client id and request number for exactly-once.
    pub fn with_client(mut self, client: impl Into<String>, req: u64) -> KvChange {
        self.client = Some(client.into());
        self.req = Some(req);
        self
    }

    /// The change string to submit.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a change string.
    pub fn parse(change: &str) -> Result<KvChange, String> {
        let c: KvChange = serde_json::from_str(change)
            .map_err(|e| alloc::format!("bad key-value change: {e}"))?;
        match (c.op, &c.value) {
            (KvOp::Set, None) => return Err("set needs a value".to_string()),
            (KvOp::Del, Some(_)) => return Err("del takes no value".to_string()),
            _ => {}
        }
        match (&c.client, c.req) {
            (Some(_), Some(0)) => Err("req must be positive".to_string()),
            (Some(_), Some(_)) | (None, None) => Ok(c),
            _ => Err("client and req go together".to_string()),
        }
    }
}

/// The key-value store: the data, and per client the last request number applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub clients: BTreeMap<String, u64>,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }
}

impl StateMachine for KvStore {
    fn validate(&self, change: &str) -> Result<(), String> {
        KvChange::parse(change).map(|_| ())
    }

    fn apply(&mut self, _seq: u64, change: &str) {
        let Ok(c) = KvChange::parse(change) else {
            return;
        };
        if let (Some(client), Some(req)) = (&c.client, c.req) {
            let last = self.clients.get(client).copied().unwrap_or(0);
            if req <= last {
                return; // a retry of a change already applied
            }
            self.clients.insert(client.clone(), req);
        }
        match c.op {
            KvOp::Set => {
                self.data.insert(c.key, c.value.unwrap_or_default());
            }
            KvOp::Del => {
                self.data.remove(&c.key);
            }
        }
    }

    fn snapshot(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &str) -> Result<(), String> {
        let s: KvStore = serde_json::from_str(snapshot)
            .map_err(|e| alloc::format!("bad key-value snapshot: {e}"))?;
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_del_and_snapshot() {
        let mut kv = KvStore::new();
        kv.apply(1, &KvChange::set("a", "1").encode());
        kv.apply(2, r#"{"op":"set","key":"b","value":"2"}"#);
        kv.apply(3, r#"{"op":"del","key":"a"}"#);
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.get("b"), Some("2"));
        let mut other = KvStore::new();
        other.restore(&kv.snapshot()).unwrap();
        assert_eq!(other, kv);
    }

    #[test]
    fn exactly_once_per_client_request() {
        let mut kv = KvStore::new();
        let c1 = KvChange::set("k", "first").with_client("c", 1).encode();
        let c2 = KvChange::set("k", "second").with_client("c", 2).encode();
        kv.apply(1, &c1);
        kv.apply(2, &c2);
        kv.apply(3, &c1); // a late retry of request 1
        assert_eq!(kv.get("k"), Some("second"));
        assert_eq!(kv.clients.get("c"), Some(&2));
    }

    #[test]
    fn validation() {
        let kv = KvStore::new();
        assert!(kv.validate(r#"{"op":"set","key":"a","value":"1"}"#).is_ok());
        assert!(kv
            .validate(r#"{"op":"set","key":"a","value":"1","client":"c-1","req":7}"#)
            .is_ok());
        for bad in [
            "chg1",
            "{}",
            r#"{"op":"set","key":"a"}"#,
            r#"{"op":"put","key":"a","value":"1"}"#,
            r#"{"op":"del","key":"a","value":"1"}"#,
            r#"{"op":"set","key":"a","value":"1","client":"c"}"#,
            r#"{"op":"set","key":"a","value":"1","client":"c","req":0}"#,
            r#"{"op":"set","key":"a","value":1}"#,
            r#"{"op":"set","key":"a","value":"1","extra":true}"#,
        ] {
            assert!(kv.validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restore_of_garbage_keeps_state() {
        let mut kv = KvStore::new();
        kv.apply(1, &KvChange::set("a", "1").encode());
        let before = kv.clone();
        assert!(kv.restore("not json").is_err());
        assert_eq!(kv, before);
    }
}
