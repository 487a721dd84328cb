//! Decoding every message type: the request and the response of every method, the key-value
//! changes and snapshots. Never a panic; whatever decodes re-encodes to something that decodes
//! to the same value.
#![no_main]

use clusterconsensus::kv::{KvChange, KvStore};
use clusterconsensus::wire::{Method, Request, Response};
use clusterconsensus::{restore_from, snapshot_to_string, StateMachine, Stored};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let methods = Method::ALL;
    let method = methods[sel as usize % methods.len()];
    assert_eq!(Method::from_path(method.path()), Some(method));
    if let Ok(r) = Request::decode(method, body) {
        assert_eq!(r.method(), method);
        let again = Request::decode(method, &r.encode()).expect("an encoded request decodes");
        assert_eq!(again, r);
    }
    if let Ok(r) = Response::decode(method, body) {
        let again = Response::decode(method, &r.encode()).expect("an encoded response decodes");
        assert_eq!(again, r);
    }
    if let Ok(s) = std::str::from_utf8(body) {
        if let Ok(c) = KvChange::parse(s) {
            assert_eq!(KvChange::parse(&c.encode()).as_ref(), Ok(&c));
        }
        let mut kv = KvStore::new();
        let _ = kv.apply(1, s);
        if let Ok(kv) = restore_from(&kv, s.as_bytes()) {
            let text = snapshot_to_string(kv.snapshot()).expect("a snapshot is UTF-8");
            let other = restore_from(&kv, text.as_bytes()).expect("a snapshot restores");
            assert_eq!(other, kv);
        }
    }
    // What a host reads back from its disk.
    let _ = serde_json::from_slice::<Stored>(body);
});
