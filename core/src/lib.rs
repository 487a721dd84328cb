//! # clusterconsensus
//!
//! A replicated state machine: Paxos with an elected master, whose peers talk JSON over HTTP.
//! This crate is the sans-IO core: it reads messages and returns what to send, what to reply,
//! what to persist first, and what happened. It never reads a clock, opens a socket or spawns a
//! thread: time (`now`, milliseconds) and randomness (a seed) come in as inputs. It is
//! `#![no_std]` with `alloc`, so the same core runs on servers, in the browser and at the edge.
//!
//! ## The run loop
//!
//! ```
//! use clusterconsensus::kv::KvStore;
//! use clusterconsensus::{Config, Output, Participant, Reply, RequestId, Stored};
//!
//! let cfg = Config::new("cluster1", "http://127.0.0.1:9001");
//! let mut node = Participant::new(cfg, KvStore::new()).unwrap();
//! let mut disk = Stored::default();
//! let mut replies: Vec<Reply> = vec![];
//!
//! // After every input, drain every output, in order.
//! let mut drain = |node: &mut Participant<KvStore>, now: u64| {
//!     while let Some(out) = node.poll_output() {
//!         match out {
//!             // Write it durably, then report it. Until then `poll_output` hands out only
//!             // outputs that do not depend on it, so a host that writes in the background
//!             // (as the native host does) acts on each output as it comes.
//!             Output::Persist(p) => {
//!                 disk.apply(&p); // write + fsync, as one transaction
//!                 node.persisted(now, p.id);
//!             }
//!             // POST `send.request.encode()` to `send.url(cluster)`, then call
//!             // `node.handle_response(now, send.id, answer)` exactly once. Calls that are
//!             // `send.ordered()` go to one peer one at a time, in this order.
//!             Output::Send(_send) => unreachable!("one member: nobody to send to"),
//!             // Answer the incoming request `reply.id` with `reply.response.encode()`.
//!             Output::Reply(reply) => replies.push(reply),
//!             Output::Event(_event) => {}
//!         }
//!     }
//!     // When the log since the last snapshot is long enough (`Config::snapshot_every`): a
//!     // frozen view of the state to save off the hot path (on another thread), then
//!     // `snapshot_saved` with its size lets the log be compacted. Dropping it loses nothing.
//!     if let Some(job) = node.take_snapshot_job() {
//!         let text = clusterconsensus::snapshot_to_string(job.source).unwrap(); // write + fsync
//!         let bytes = text.len() as u64;
//!         disk.save_snapshot(clusterconsensus::Snapshot { seq: job.seq, data: text });
//!         node.snapshot_saved(now, job.seq, bytes); // then drain again: a Persist compacts the log
//!     }
//! };
//!
//! node.bootstrap(0).unwrap(); // master of a one-member cluster
//! drain(&mut node, 0);
//! assert!(node.is_serving_master());
//! // Inputs: handle_request (an incoming call, with the host's id for it), handle_response
//! // (the answer to a Send), handle_timeout (when `poll_timeout` is reached), and commands.
//! node.submit(5, RequestId(1), vec![r#"{"op":"set","key":"a","value":"1"}"#.into()]);
//! drain(&mut node, 5);
//! assert_eq!(node.state().get("a"), Some("1"));
//! assert_eq!(node.commit(), 1);
//! assert_eq!(node.poll_timeout(), Some(105)); // the next heartbeat
//! # drop(drain);
//! assert_eq!(replies.len(), 1);
//! assert_eq!(replies[0].id, RequestId(1)); // the submit, answered once committed: with the seq
//! // that committed it and the key-value app's result, the key's previous value
//! assert_eq!(
//!     String::from_utf8(replies[0].response.encode()).unwrap(),
//!     r#"{"fail":false,"err":null,"seq":1,"results":[{"prev":null}]}"#
//! );
//! ```
//!
//! Incoming HTTP bodies become a [`Request`] with [`Request::decode`] (an `ERR_ENCODING` error
//! is a `400`); outgoing answers are decoded with [`Response::decode`]. Restart a node from
//! what its host stored with [`Participant::restore`].

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

extern crate alloc;

mod config;
pub mod crc32;
mod error;
pub mod kv;
mod output;
mod participant;
pub mod pmap;
mod recovery;
mod state_machine;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use config::{Config, Mutant};
pub use error::{ConfigError, Error, ErrorCode, RestoreError};
pub use output::{
    Entry, Event, HardState, MessageId, Output, Persist, PersistId, Reply, RequestId, Send,
    Snapshot, SnapshotJob, Status, Stored,
};
pub use participant::{majority, Participant, PeerStatus, Role, SnapshotProgress, StatusReport};
pub use state_machine::{
    restore_from, snapshot_to_string, SnapshotSink, SnapshotSource, StateMachine, WholeRestore,
    WholeSnapshot,
};
pub use wire::{Changes, Member, Method, Payload, Request, Response, Staged};
