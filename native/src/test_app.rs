//! An app for the library's unit tests that need a participant but not a state: the host's
//! probes and metrics look at the protocol, never at the app.

use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};

/// An app that keeps nothing and takes every change.
pub(crate) struct Nothing;

impl StateMachine for Nothing {
    type Snapshot = WholeSnapshot;
    type Restore = WholeRestore<Nothing>;
    fn validate(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn apply(&mut self, _: u64, _: &str) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn snapshot(&self) -> WholeSnapshot {
        WholeSnapshot::new("")
    }
    fn restore(&self) -> WholeRestore<Nothing> {
        WholeRestore::new(|_| Ok(Nothing))
    }
}
