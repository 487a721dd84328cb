//! The seed's error codes, as one enum, and the error value every fallible call returns.

use alloc::string::String;
use core::fmt;

/// One of the `ERR_*` codes of the seed (`clusterconsensus/errors.go`).
///
/// Retryable codes (`ERR_STATE`, `ERR_CALL`, `ERR_MAJORITY`) describe a moment, not the request:
/// the same request may succeed later. A failed submit has an unknown outcome; retry it with the
/// same (client, request) pair so the state machine applies it at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// The call could not be made or was not answered (timeout, overload).
    Call,
    /// Local storage failed.
    Io,
    /// A body, change or snapshot that does not decode.
    Encoding,
    /// The node is in the wrong state for the call (not master, unjoined, removed, ...).
    State,
    /// No majority could be reached.
    Majority,
    /// Refused: a higher promise, a stale candidate, not a member.
    Denied,
    /// Out of order: an older snapshot, a stale member-list version.
    Sequence,
    /// The follower misses entries before this one; it needs a snapshot (`start`).
    Gap,
    /// A peer could not be connected to.
    Connect,
}

impl ErrorCode {
    /// Every code, in the seed's order.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::Call,
        ErrorCode::Io,
        ErrorCode::Encoding,
        ErrorCode::State,
        ErrorCode::Majority,
        ErrorCode::Denied,
        ErrorCode::Sequence,
        ErrorCode::Gap,
        ErrorCode::Connect,
    ];

    /// The wire spelling, e.g. `"ERR_STATE"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Call => "ERR_CALL",
            ErrorCode::Io => "ERR_IO",
            ErrorCode::Encoding => "ERR_ENCODING",
            ErrorCode::State => "ERR_STATE",
            ErrorCode::Majority => "ERR_MAJORITY",
            ErrorCode::Denied => "ERR_DENIED",
            ErrorCode::Sequence => "ERR_SEQUENCE",
            ErrorCode::Gap => "ERR_GAP",
            ErrorCode::Connect => "ERR_CONNECT",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// Whether the same request may succeed if sent again later (docs/PROTOCOL.md section 2).
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::State | ErrorCode::Call | ErrorCode::Majority
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its code, a human message and, where the caller can act on them, the master's
/// address (to retry there) and the instance the refusing node has promised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The master this node knows of, when the error means "ask the master instead".
    pub master: Option<String>,
    /// The instance the refusing node has promised, on refusals caused by a higher promise.
    pub instance: Option<u64>,
    /// The refusing node's commit, on a refusal that says it is behind (`ERR_GAP`): what it
    /// needs next follows it.
    pub commit: Option<u64>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            master: None,
            instance: None,
            commit: None,
        }
    }

    pub fn with_master(mut self, master: Option<String>) -> Error {
        self.master = master;
        self
    }

    pub fn with_instance(mut self, instance: u64) -> Error {
        self.instance = Some(instance);
        self
    }

    pub fn with_commit(mut self, commit: u64) -> Error {
        self.commit = Some(commit);
        self
    }

    pub fn encoding(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Encoding, message)
    }

    pub fn state(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::State, message)
    }

    pub fn denied(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Denied, message)
    }

    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(m) = &self.master {
            write!(f, " (master: {m})")?;
        }
        if let Some(i) = self.instance {
            write!(f, " (promised instance {i})")?;
        }
        Ok(())
    }
}

impl core::error::Error for Error {}

/// A [`Config`](crate::Config) whose settings do not make sense: a mistake of whoever wrote it,
/// not something that may succeed later (unlike a wire refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad configuration: {}", self.0)
    }
}

impl core::error::Error for ConfigError {}

/// Why [`Participant::restore`](crate::Participant::restore) could not rebuild a node from what
/// its host stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    Config(ConfigError),
    /// The stored state belongs to another cluster.
    WrongCluster {
        stored: String,
        configured: String,
    },
    /// The stored snapshot does not restore (the application's message).
    Snapshot(String),
    /// The stored entries do not fit the stored hard state (a gap, a commit past their end).
    Inconsistent(String),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Config(e) => e.fmt(f),
            RestoreError::WrongCluster { stored, configured } => write!(
                f,
                "stored state belongs to cluster {stored:?}, not {configured:?}"
            ),
            RestoreError::Snapshot(m) => write!(f, "stored snapshot does not restore: {m}"),
            RestoreError::Inconsistent(m) => write!(f, "stored state is inconsistent: {m}"),
        }
    }
}

impl core::error::Error for RestoreError {}

impl From<ConfigError> for RestoreError {
    fn from(e: ConfigError) -> RestoreError {
        RestoreError::Config(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_retryability() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("ERR_NOPE"), None);
        assert_eq!(ErrorCode::parse(""), None);
        let retryable: alloc::vec::Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_retryable())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(retryable, ["ERR_CALL", "ERR_STATE", "ERR_MAJORITY"]);
    }

    #[test]
    fn display_names_code_and_hints() {
        let e = Error::state("not master")
            .with_master(Some("http://a".into()))
            .with_instance(7);
        assert_eq!(
            alloc::format!("{e}"),
            "ERR_STATE: not master (master: http://a) (promised instance 7)"
        );
    }
}
