//! Why a node could not start, or stopped: [`ServeError`].

use std::fmt;

use clusterconsensus::{ConfigError, RestoreError};

/// Why [`ServerBuilder::bind`](crate::ServerBuilder::bind) or
/// [`Server::serve`](crate::Server::serve) failed. Every variant but
/// [`ServeError::Storage`] happens at startup and is a mistake to fix (a port in use, a bad
/// setting, a data directory that belongs to someone else); `Storage` stops a running node,
/// because without durable storage it could break promises it made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening socket could not be opened (port in use, address not local, ...).
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// The local address for outgoing connections is not an address of this host.
    SourceAddr {
        ip: std::net::IpAddr,
        source: std::io::Error,
    },
    /// The TLS certificate, key or CA file could not be used.
    Tls(String),
    /// The cluster's token could not be used (too short, unreadable file, ...).
    Token(String),
    /// The node was given no cluster to serve.
    NoClusters,
    /// The same cluster id was given twice.
    DuplicateCluster(String),
    /// A cluster's settings do not make sense together (a bad id, timeouts out of order, ...).
    Config { cluster: String, error: ConfigError },
    /// A cluster's storage could not be opened or read (permissions, damaged log, ...).
    StorageOpen { cluster: String, message: String },
    /// The stored state is that of another member: the node would take over its identity.
    WrongMember {
        /// Where the data is.
        path: String,
        /// The member it belongs to.
        stored: String,
        /// The address this node advertises.
        advertise: String,
    },
    /// The stored state does not restore (another cluster's, an app's snapshot that does not
    /// decode, entries that do not fit).
    Restore {
        cluster: String,
        error: RestoreError,
    },
    /// `--force-new-cluster` was refused: the data directory holds no committed state to
    /// keep (or the rewrite could not be stored).
    ForceNewCluster { cluster: String, message: String },
    /// A write to a cluster's storage failed while serving: the node stopped every cluster
    /// rather than go on without durable storage.
    Storage { cluster: String, message: String },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServeError::SourceAddr { ip, source } => {
                write!(
                    f,
                    "cannot use --source-addr {ip} (outgoing connections): {source}"
                )
            }
            ServeError::Tls(m) => write!(f, "TLS: {m}"),
            ServeError::Token(m) => f.write_str(m),
            ServeError::NoClusters => f.write_str("no cluster to serve"),
            ServeError::DuplicateCluster(id) => write!(f, "cluster {id:?} given twice"),
            ServeError::Config { cluster, error } => write!(f, "cluster {cluster:?}: {error}"),
            ServeError::ForceNewCluster { cluster, message } => {
                write!(
                    f,
                    "cluster {cluster:?}: --force-new-cluster refused: {message}"
                )
            }
            ServeError::StorageOpen { cluster, message } => {
                write!(f, "cluster {cluster:?}: storage: {message}")
            }
            ServeError::WrongMember {
                path,
                stored,
                advertise,
            } => write!(
                f,
                "{path} belongs to the member {stored}, not {advertise}: advertise {stored} \
                 (--advertise) or use another data directory (--data-dir)"
            ),
            ServeError::Restore { cluster, error } => write!(f, "cluster {cluster:?}: {error}"),
            ServeError::Storage { cluster, message } => {
                write!(
                    f,
                    "cluster {cluster:?}: storage failed, node stopped: {message}"
                )
            }
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Bind { source, .. } | ServeError::SourceAddr { source, .. } => Some(source),
            ServeError::Config { error, .. } => Some(error),
            ServeError::Restore { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cluster_and_the_cause() {
        let e = ServeError::Config {
            cluster: "a/b".into(),
            error: ConfigError("cluster id must be 1-64 characters".into()),
        };
        assert_eq!(
            e.to_string(),
            "cluster \"a/b\": bad configuration: cluster id must be 1-64 characters"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = ServeError::Bind {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(e.to_string().starts_with("cannot listen on 127.0.0.1:1: "));
        let e = ServeError::WrongMember {
            path: "/d/c1.wal".into(),
            stored: "http://a".into(),
            advertise: "http://b".into(),
        };
        assert!(e
            .to_string()
            .starts_with("/d/c1.wal belongs to the member http://a, not http://b"));
    }
}
