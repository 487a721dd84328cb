//! Settings of one participant.

use alloc::string::String;

use crate::error::ConfigError;

/// How a [`Participant`](crate::Participant) behaves. Times are milliseconds of the host's clock
/// (any monotonic origin: the participant only compares them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The cluster id (the `<clusterId>` of the paths).
    pub cluster: String,
    /// This node's address: the HTTP base URL the other members reach it at.
    pub self_addr: String,
    /// How often a master sends heartbeats (and re-sends an accept not yet acknowledged).
    pub heartbeat_ms: u64,
    /// How long a master with nothing more to propose waits before it tells its followers of
    /// a commit with an empty accept (a new batch within that time carries the news instead).
    /// Capped at `heartbeat_ms`; 0 sends it at once.
    pub commit_notice_ms: u64,
    /// Election timeouts are drawn uniformly from `[election_min_ms, election_max_ms)`.
    /// A master that hears from no majority for `election_min_ms` steps down, and a voter that
    /// heard from a live master less than `election_min_ms` ago refuses to vote.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Most changes in one accept (a single larger submit still goes alone).
    pub max_batch: usize,
    /// Most changes a master queues; past it submits are refused with `ERR_STATE`.
    pub max_queued: usize,
    /// A periodic snapshot is due once the log since the last one holds this many entries (an
    /// upper bound on the entries a host's log retains), or, earlier, once those entries'
    /// changes add up to as many bytes as the state's last snapshot (at least
    /// `snapshot_min_bytes`): a restart then reads at most about twice the state, and a
    /// large state is written out about once per its own size of changes, not per fixed count.
    pub snapshot_every: u64,
    /// The least bytes of changes between two snapshots of the size rule (see
    /// `snapshot_every`), so that a small state is not written out every few commits.
    pub snapshot_min_bytes: u64,
    /// The most a `start` carries of a snapshot, in bytes of its encoded (JSON-escaped) `snap`
    /// field: a larger snapshot travels as a chunked transfer (docs/PROTOCOL.md section 11).
    /// A host keeps it well below the largest body its peers accept.
    pub snapshot_chunk: usize,
    /// Bytes of the newest committed changes a node keeps in memory to catch a follower up by
    /// re-sending them (a follower further behind gets a snapshot). 0: always a snapshot.
    pub catchup_bytes: usize,
    /// The most bytes of changes one catch-up accept carries in its `entries` (docs/PROTOCOL.md
    /// section 12; at least one entry goes whatever its size). A host keeps it well below the
    /// largest body its peers accept, as with `snapshot_chunk`. 0: one entry per accept.
    pub catchup_batch: usize,
    /// Consecutive failures to forward a submit to the master before a follower campaigns.
    pub forward_failures_before_election: u32,
    /// How long an outgoing call may wait behind others to the same peer before it is
    /// dropped unsent ([`Send::deadline`](crate::Send::deadline)); hosts also use it as the
    /// time limit of one call.
    pub request_timeout_ms: u64,
    /// Seed of the randomized election timeouts.
    pub seed: u64,
    /// A deliberate protocol bug, for the simulation's mutation checks (feature `mutants`).
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
}

/// The deliberate protocol bugs that the simulation must catch (core/tests/mutations.rs), each
/// breaking one rule of docs/PROTOCOL.md. They take effect only with the `mutants` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// A voter answers a prepare before its promise is durable.
    VoteBeforeDurable,
    /// A follower answers an accept before its staged slot is durable.
    AcceptBeforeDurable,
    /// A master counts a learner's accept toward the majority.
    LearnerVotes,
    /// A learner is promoted however far behind it is.
    PromoteBehind,
    /// The target of a leader transfer counts the old master's `timeoutnow` as that master's
    /// vote, so it takes over without a majority of durable promises.
    TransferCountsMastersVote,
    /// A node receiving a chunked snapshot takes its commit at the first chunk, before the
    /// last chunk arrived and its checksum was verified.
    InstallBeforeLastChunk,
    /// A follower applies every entry of a catch-up batch, also those at or below its commit
    /// (a duplicated or overlapping batch applies them twice).
    BatchReapplies,
    /// The periodic snapshot compacts the log at once, before the host reported the snapshot
    /// saved (durable).
    CompactBeforeSnapshotDurable,
}

impl Mutant {
    pub const ALL: [Mutant; 8] = [
        Mutant::VoteBeforeDurable,
        Mutant::AcceptBeforeDurable,
        Mutant::LearnerVotes,
        Mutant::PromoteBehind,
        Mutant::TransferCountsMastersVote,
        Mutant::InstallBeforeLastChunk,
        Mutant::BatchReapplies,
        Mutant::CompactBeforeSnapshotDurable,
    ];
}

impl Config {
    /// Defaults for a node on a LAN: heartbeat 100 ms, election timeout 1-2 s.
    pub fn new(cluster: impl Into<String>, self_addr: impl Into<String>) -> Config {
        Config {
            cluster: cluster.into(),
            self_addr: self_addr.into(),
            heartbeat_ms: 100,
            commit_notice_ms: 5,
            election_min_ms: 1000,
            election_max_ms: 2000,
            max_batch: 4096,
            max_queued: 100_000,
            snapshot_every: 100_000,
            snapshot_min_bytes: 8 << 20,
            snapshot_chunk: 1 << 20,
            catchup_bytes: 8 << 20,
            catchup_batch: 1 << 20,
            forward_failures_before_election: 3,
            request_timeout_ms: 1000,
            seed: 0,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.into()));
        if !crate::wire::valid_cluster_id(&self.cluster) {
            return bad("cluster id must be 1-64 characters of [A-Za-z0-9._-]");
        }
        if self.self_addr.is_empty() {
            return bad("self address is empty");
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.election_min_ms {
            return bad("heartbeat must be above 0 and below the minimum election timeout");
        }
        if self.election_max_ms <= self.election_min_ms {
            return bad("election_max_ms must be above election_min_ms");
        }
        if self.max_batch == 0 || self.max_queued == 0 || self.snapshot_every == 0 {
            return bad("max_batch, max_queued and snapshot_every must be positive");
        }
        if self.snapshot_chunk < 64 {
            return bad("snapshot_chunk must be at least 64 bytes");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be positive");
        }
        Ok(())
    }
}

/// A small deterministic PRNG (SplitMix64): the core takes randomness only from its seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1A4_F87B)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_ones_do_not() {
        assert!(Config::new("c1", "http://a").validate().is_ok());
        let mut c = Config::new("c1", "http://a");
        c.heartbeat_ms = 1000;
        assert!(c.validate().is_err());
        let c = Config::new("bad/id", "http://a");
        assert!(c.validate().is_err());
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
