//! What the simulation shows: accessors, and the [`SimView`] of every node, message in
//! flight and client op that a browser draws.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::Serialize;

use super::{NetKind, Sim, SimApp, SimConfig};
use crate::error::ErrorCode;
use crate::output::Stored;
use crate::participant::{Participant, Role};
use crate::wire::Staged;

/// A client operation's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpView {
    pub id: u64,
    pub node: usize,
    pub change: String,
    pub invoked_at: u64,
    pub completed_at: Option<u64>,
    pub ok: Option<bool>,
    pub err: Option<String>,
    /// The code of the error, if it failed.
    #[serde(skip)]
    pub code: Option<ErrorCode>,
    /// For a consistent read: the key, and the value the node held when it answered.
    pub read_key: Option<String>,
    pub value: Option<String>,
}

/// One node as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub index: usize,
    pub addr: String,
    pub up: bool,
    pub role: Option<Role>,
    pub instance: u64,
    pub commit: u64,
    pub master: Option<String>,
    pub members: Vec<String>,
    pub staged: Option<Staged>,
    /// The application's state as [`SimApp::view`] shows it (`null` while down).
    pub state: serde_json::Value,
}

/// One message in flight as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub id: u64,
    pub from: usize,
    pub to: usize,
    pub method: &'static str,
    pub response: bool,
    pub body: String,
    pub sent_at: u64,
    pub arrives_at: Option<u64>,
}

/// Everything there is to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimView {
    pub now: u64,
    pub steps: u64,
    pub nodes: Vec<NodeView>,
    pub messages: Vec<MessageView>,
    pub violations: Vec<String>,
    pub ops: Vec<OpView>,
}

impl<S: SimApp> Sim<S> {
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].p.is_some()
    }

    /// Node `i`'s participant, if it is up.
    pub fn node(&self, i: usize) -> Option<&Participant<S>> {
        self.nodes[i].p.as_ref()
    }

    /// What node `i` has on its disk.
    pub fn stored(&self, i: usize) -> &Stored {
        &self.nodes[i].stored
    }

    pub fn is_serving_master(&self, i: usize) -> bool {
        self.node(i).is_some_and(|p| p.is_serving_master())
    }

    /// The index of an up, running (not paused) node that is serving master, if any.
    pub fn serving_master(&self) -> Option<usize> {
        (0..self.len()).find(|i| self.is_serving_master(*i) && !self.nodes[*i].paused)
    }

    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    pub fn op(&self, id: u64) -> Option<&OpView> {
        self.ops.get(&id)
    }

    pub fn op_done(&self, id: u64) -> bool {
        self.ops.get(&id).is_some_and(|o| o.completed_at.is_some())
    }

    /// Ops completed since the last call.
    pub fn take_completed(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.completed)
    }

    pub fn violations(&self) -> &[String] {
        &self.checker.violations
    }

    pub fn view(&self) -> SimView {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match &n.p {
                Some(p) => NodeView {
                    index: i,
                    addr: n.addr.clone(),
                    up: true,
                    role: Some(p.role()),
                    instance: p.instance(),
                    commit: p.commit(),
                    master: p.master().map(ToString::to_string),
                    members: p.members().to_vec(),
                    staged: p.staged().cloned(),
                    state: p.state().view(),
                },
                None => NodeView {
                    index: i,
                    addr: n.addr.clone(),
                    up: false,
                    role: None,
                    instance: n.stored.hard.as_ref().map_or(0, |h| h.promised),
                    commit: n.stored.hard.as_ref().map_or(0, |h| h.commit),
                    master: None,
                    members: n
                        .stored
                        .hard
                        .as_ref()
                        .map_or(Vec::new(), |h| h.members.clone()),
                    staged: n.stored.hard.as_ref().and_then(|h| h.staged.clone()),
                    state: serde_json::Value::Null,
                },
            })
            .collect();
        let messages = self
            .net
            .iter()
            .map(|(id, m)| MessageView {
                id: *id,
                from: m.from,
                to: m.to,
                method: m.method.path(),
                response: matches!(m.kind, NetKind::Response { .. }),
                body: String::from_utf8_lossy(&m.body).into_owned(),
                sent_at: m.sent_at,
                arrives_at: m.arrives_at,
            })
            .collect();
        SimView {
            now: self.now,
            steps: self.steps,
            nodes,
            messages,
            violations: self.checker.violations.clone(),
            ops: self.ops.values().cloned().collect(),
        }
    }
}
