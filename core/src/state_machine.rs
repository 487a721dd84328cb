//! The application's replicated state machine, and how its state travels as a snapshot.
//!
//! A snapshot is a stream of bytes that the application writes and reads back incrementally,
//! so that neither side holds a second copy of a large state in memory: [`StateMachine::snapshot`]
//! takes a frozen view of the state (cheap to take, e.g. an O(1) clone of a persistent map) that
//! a host may serialize on another thread through [`SnapshotSource::fill`], and
//! [`StateMachine::restore`] returns a [`SnapshotSink`] that builds a new state from those bytes
//! as they arrive. The bytes MUST be UTF-8 text: a small snapshot travels in the seed's `start`
//! as a JSON string.
//!
//! An application whose state is small can use [`WholeSnapshot`] and [`WholeRestore`], which
//! serialize and parse the whole state in one piece:
//!
//! ```
//! use clusterconsensus::{StateMachine, WholeRestore, WholeSnapshot};
//! use serde_json::{json, Value};
//!
//! /// A replicated counter: every change is a number to add.
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl StateMachine for Counter {
//!     type Snapshot = WholeSnapshot;
//!     type Restore = WholeRestore<Counter>;
//!     fn validate(&self, change: &str) -> Result<(), String> {
//!         change.parse::<i64>().map(|_| ()).map_err(|e| e.to_string())
//!     }
//!     fn apply(&mut self, _seq: u64, change: &str) -> Value {
//!         self.0 += change.parse::<i64>().unwrap_or(0);
//!         json!(self.0) // the submit's answer carries the new value
//!     }
//!     fn snapshot(&self) -> WholeSnapshot {
//!         WholeSnapshot::new(self.0.to_string())
//!     }
//!     fn restore(&self) -> WholeRestore<Counter> {
//!         WholeRestore::new(|text| text.parse().map(Counter).map_err(|e| format!("{e}")))
//!     }
//! }
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use serde_json::Value;

/// The application a [`Participant`](crate::Participant) replicates.
///
/// Every node applies the same changes in the same order, so `apply` must be deterministic: same
/// state and change in, same state and result out, on every platform. Changes are opaque
/// strings to the protocol.
pub trait StateMachine: Sized {
    /// A frozen view of the state at one commit, which writes itself out as snapshot bytes.
    type Snapshot: SnapshotSource;
    /// Builds a new state from snapshot bytes.
    type Restore: SnapshotSink<State = Self>;

    /// Checks a change before it is replicated. A change refused here is answered with
    /// `ERR_ENCODING` and never enters the log.
    fn validate(&self, change: &str) -> Result<(), String>;

    /// Applies one committed change at log position `seq` and returns its result, which the
    /// submit that proposed the change receives (`Value::Null` for none). Called exactly once
    /// per committed change, in order, on every node. A change that passed `validate` must
    /// apply; anything else must leave the state unchanged.
    fn apply(&mut self, seq: u64, change: &str) -> Value;

    /// Applies one committed change, as [`apply`](Self::apply), where nobody reads its result:
    /// a follower's commit, a log replayed at start. The default calls `apply` and drops the
    /// result. An app may skip building the result here (a follower commits every change, so
    /// that is work on every node), but MUST leave its state exactly as `apply` would, including
    /// whatever it keeps to answer retries: any node may answer for it later.
    fn apply_unanswered(&mut self, seq: u64, change: &str) {
        let _ = self.apply(seq, change);
    }

    /// A frozen view of the current state. The participant takes it at a commit and the host
    /// serializes it, maybe on another thread while later changes apply, so it must not see
    /// them: take it in O(1) (a persistent map, a copy-on-write clone) for a large state.
    fn snapshot(&self) -> Self::Snapshot;

    /// Starts building a new state (with this one's settings) from snapshot bytes. The current
    /// state is not touched: the participant swaps the new one in only once every byte arrived
    /// and [`SnapshotSink::finish`] succeeded.
    fn restore(&self) -> Self::Restore;
}

/// Writes a snapshot out as bytes, a part at a time.
pub trait SnapshotSource {
    /// Appends the next part of the snapshot to `out`: about `max` bytes (more when one item of
    /// the state is larger). Returns `false` once the whole snapshot has been written (a call
    /// that writes the last bytes may already return `false`).
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> bool;
}

/// Builds a state from snapshot bytes, fed in order.
pub trait SnapshotSink {
    type State;
    /// The next bytes of the snapshot (any split: a part may end inside a line or a character).
    fn write(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The state, once every byte was written; `Err` for a snapshot that is incomplete or
    /// does not decode.
    fn finish(self) -> Result<Self::State, String>;
}

/// Reads a whole snapshot into one string: for tests, a small state, or the seed's `start`.
/// `Err` if the bytes are not UTF-8.
pub fn snapshot_to_string<S: SnapshotSource>(mut source: S) -> Result<String, String> {
    let mut out = Vec::new();
    while source.fill(&mut out, 1 << 20) {}
    String::from_utf8(out).map_err(|e| alloc::format!("snapshot is not UTF-8: {e}"))
}

/// Restores a state from a whole snapshot held in memory.
pub fn restore_from<S: StateMachine>(template: &S, snapshot: &[u8]) -> Result<S, String> {
    let mut sink = template.restore();
    sink.write(snapshot)?;
    sink.finish()
}

/// A snapshot already serialized in memory (for a small state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WholeSnapshot {
    data: String,
    at: usize,
}

impl WholeSnapshot {
    pub fn new(data: impl Into<String>) -> WholeSnapshot {
        WholeSnapshot {
            data: data.into(),
            at: 0,
        }
    }
}

impl SnapshotSource for WholeSnapshot {
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        let end = self.data.len().min(self.at + max.max(1));
        out.extend_from_slice(&self.data.as_bytes()[self.at..end]);
        self.at = end;
        self.at < self.data.len()
    }
}

/// Collects the whole snapshot, then parses it with a function (for a small state).
pub struct WholeRestore<S> {
    data: Vec<u8>,
    parse: fn(&str) -> Result<S, String>,
}

impl<S> WholeRestore<S> {
    pub fn new(parse: fn(&str) -> Result<S, String>) -> WholeRestore<S> {
        WholeRestore {
            data: Vec::new(),
            parse,
        }
    }
}

impl<S> core::fmt::Debug for WholeRestore<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WholeRestore({} bytes)", self.data.len())
    }
}

impl<S> SnapshotSink for WholeRestore<S> {
    type State = S;
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.data.extend_from_slice(bytes);
        Ok(())
    }
    fn finish(self) -> Result<S, String> {
        let text = core::str::from_utf8(&self.data)
            .map_err(|e| alloc::format!("snapshot is not UTF-8: {e}"))?;
        (self.parse)(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_snapshot_comes_out_in_parts_of_at_most_max() {
        let mut s = WholeSnapshot::new("abcdefghij");
        let mut out = Vec::new();
        let mut calls = 0;
        while s.fill(&mut out, 3) {
            calls += 1;
            assert!(out.len() <= 3 * calls);
        }
        assert_eq!(out, b"abcdefghij");
        assert_eq!(calls, 3); // 3 + 3 + 3, then the last byte with `false`
        assert!(!WholeSnapshot::new("").fill(&mut Vec::new(), 8));
    }

    #[test]
    fn whole_restore_parses_what_was_written_in_any_split() {
        let mut r =
            WholeRestore::new(|t: &str| t.parse::<u32>().map_err(|e| alloc::format!("{e}")));
        r.write(b"12").unwrap();
        r.write(b"34").unwrap();
        assert_eq!(r.finish(), Ok(1234));
        let mut r =
            WholeRestore::new(|t: &str| t.parse::<u32>().map_err(|e| alloc::format!("{e}")));
        r.write(&[0xff]).unwrap();
        assert!(r.finish().unwrap_err().contains("UTF-8"));
    }
}
