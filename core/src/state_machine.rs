//! The application's replicated state machine.

use alloc::string::String;

/// The application a [`Participant`](crate::Participant) replicates.
///
/// Every node applies the same changes in the same order, so `apply` must be deterministic: same
/// state and change in, same state out, on every platform. Changes and snapshots are opaque
/// strings to the protocol.
pub trait StateMachine {
    /// Checks a change before it is replicated. A change refused here is answered with
    /// `ERR_ENCODING` and never enters the log.
    fn validate(&self, change: &str) -> Result<(), String>;

    /// Applies one committed change at log position `seq`. Called exactly once per committed
    /// change, in order. A change that passed `validate` must apply; anything else is ignored.
    fn apply(&mut self, seq: u64, change: &str);

    /// The whole state, as a string that `restore` accepts.
    fn snapshot(&self) -> String;

    /// Replaces the whole state with a snapshot. On `Err` the state MUST be unchanged.
    fn restore(&mut self, snapshot: &str) -> Result<(), String>;
}
