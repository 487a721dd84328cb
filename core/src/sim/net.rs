//! The virtual network: messages in flight, their transmission and arrival, and the faults a
//! test applies to them (drop, deliver, partitions, one-way blocks).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Ev, NetKind, NetMsg, Open, Origin, Sim, SimApp};
use crate::wire::{Method, Request, Response};

impl<S: SimApp> Sim<S> {
    /// Ids of messages in flight from `from` to `to` (either may be `None` for any) of
    /// `method` (requests and responses to such requests; `response` picks which).
    pub fn find(
        &self,
        from: Option<usize>,
        to: Option<usize>,
        method: Option<Method>,
        response: bool,
    ) -> Vec<u64> {
        self.net
            .iter()
            .filter(|(_, m)| {
                from.is_none_or(|f| m.from == f)
                    && to.is_none_or(|t| m.to == t)
                    && method.is_none_or(|x| m.method == x)
                    && matches!(m.kind, NetKind::Response { .. }) == response
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The decoded request carried by message `id`, if it is a request in flight.
    pub fn request_of(&self, id: u64) -> Option<Request> {
        let m = self.net.get(&id)?;
        match m.kind {
            NetKind::Request { .. } => Request::decode(m.method, &m.body).ok(),
            NetKind::Response { .. } => None,
        }
    }

    /// Cuts the network into `groups`: nodes in different groups cannot talk (nodes in no
    /// group are cut off from everyone).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.log(|| format!("PARTITION {groups:?}"));
        self.blocked.clear();
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.len() {
            for b in 0..self.len() {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Blocks messages from `from` to `to` only (a one-way partition).
    pub fn block(&mut self, from: usize, to: usize) {
        self.log(|| format!("BLOCK {from} -> {to}"));
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.log(|| String::from("HEAL"));
        self.blocked.clear();
    }

    /// Loses message `id` (its sender sees a failure: at once in manual mode, after the RPC
    /// timeout otherwise). Returns whether it was in flight.
    pub fn drop_message(&mut self, id: u64) -> bool {
        let Some(m) = self.net.remove(&id) else {
            return false;
        };
        self.events.retain(|_, e| *e != Ev::Arrive(id));
        let at = if self.manual {
            self.now
        } else {
            self.now + self.cfg.rpc_timeout_ms
        };
        self.fail_origin(&m, at);
        self.run_due();
        true
    }

    /// Reports the transport failures already due (in manual mode: at once). Timers wait for
    /// [`fire_timeout`](Self::fire_timeout) or [`run_for`](Self::run_for).
    fn run_due(&mut self) {
        loop {
            let due = self
                .events
                .iter()
                .find(|((t, _), e)| *t <= self.now && matches!(e, Ev::Fail { .. }))
                .map(|(k, _)| *k);
            let Some(k) = due else {
                return;
            };
            let ev = self.events.remove(&k).expect("just found");
            self.steps += 1;
            self.handle_event(ev);
        }
    }

    /// Delivers message `id` now (manual mode, or ahead of its time).
    pub fn deliver(&mut self, id: u64) -> bool {
        if !self.net.contains_key(&id) {
            return false;
        }
        self.events.retain(|_, e| *e != Ev::Arrive(id));
        self.steps += 1;
        self.arrive(id);
        self.check();
        self.run_due();
        true
    }

    /// Delivers every message in flight, oldest first, until none is left or `max` were
    /// delivered (manual mode).
    pub fn deliver_all(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(&id) = self.net.keys().next() else {
                break;
            };
            self.deliver(id);
            n += 1;
        }
        n
    }

    pub(super) fn schedule_arrival(&mut self, id: u64, at: u64) {
        if let Some(m) = self.net.get_mut(&id) {
            m.arrives_at = Some(at);
        }
        self.schedule(at, Ev::Arrive(id));
    }

    /// Puts a message on the wire (or loses it).
    pub(super) fn transmit(&mut self, m: NetMsg) {
        let id = self.next_net;
        self.next_net += 1;
        if !self.manual && self.chance(self.cfg.faults.drop_permille) {
            let at = self.now + self.cfg.rpc_timeout_ms;
            self.fail_origin(&m, at);
            return;
        }
        let dup = !self.manual
            && matches!(m.kind, NetKind::Request { .. })
            && self.chance(self.cfg.faults.dup_permille);
        if dup {
            let mut copy = m.clone();
            copy.kind = NetKind::Request {
                origin: Origin::Duplicate,
            };
            self.transmit(copy);
        }
        self.net.insert(id, m);
        if !self.manual {
            let d = self.delay();
            self.schedule_arrival(id, self.now + d);
        }
    }

    /// The sender of `m`'s request learns it failed, at `at`.
    fn fail_origin(&mut self, m: &NetMsg, at: u64) {
        let origin = match &m.kind {
            NetKind::Request { origin } | NetKind::Response { origin } => origin.clone(),
        };
        match origin {
            Origin::Node {
                node,
                incarnation,
                mid,
            } => self.schedule(
                at,
                Ev::Fail {
                    node,
                    incarnation,
                    mid,
                },
            ),
            // Clients and injected requests do not cross the network; duplicates have nobody
            // waiting for them.
            Origin::Client { .. } | Origin::Duplicate | Origin::Inject => {}
        }
    }

    pub(super) fn arrive(&mut self, id: u64) {
        let Some(m) = self.net.remove(&id) else {
            return;
        };
        let blocked = self.blocked.contains(&(m.from, m.to)) || self.nodes[m.to].p.is_none();
        self.log(|| {
            let kind = if matches!(m.kind, NetKind::Response { .. }) {
                "reply"
            } else {
                ""
            };
            let lost = if blocked { " LOST" } else { "" };
            let body = String::from_utf8_lossy(&m.body);
            format!(
                "{} -> {} {}{kind}{lost} {body}",
                m.from,
                m.to,
                m.method.path()
            )
        });
        if self.blocked.contains(&(m.from, m.to)) || self.nodes[m.to].p.is_none() {
            let at = if self.manual {
                self.now
            } else {
                (m.sent_at + self.cfg.rpc_timeout_ms).max(self.now)
            };
            return self.fail_origin(&m, at);
        }
        match m.kind {
            NetKind::Request { origin } => {
                let req = match Request::decode(m.method, &m.body) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!("undecodable {}: {e}", m.method.path());
                        return self.checker.violation(self.now, msg);
                    }
                };
                match &req {
                    Request::Start(s) if s.is_chunk() => {
                        self.checker.stats.chunks_delivered += 1;
                    }
                    Request::Accept(a) if !a.entries.is_empty() => {
                        self.checker.stats.batches_delivered += 1;
                        self.checker.stats.batch_entries_delivered += a.entries.len() as u64;
                    }
                    _ => {}
                }
                let rid = self.next_rid;
                self.next_rid += 1;
                self.open.insert(
                    rid,
                    Open {
                        origin,
                        to: m.to,
                        method: m.method,
                    },
                );
                if let Some(p) = self.nodes[m.to].p.as_mut() {
                    p.handle_request(self.now, crate::RequestId(rid), req);
                }
                self.drain(m.to);
            }
            NetKind::Response { origin } => {
                let Origin::Node {
                    node,
                    incarnation,
                    mid,
                } = origin
                else {
                    return;
                };
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                let res = Response::decode(m.method, &m.body);
                if let Err(e) = &res {
                    let msg = format!("undecodable {} response: {e}", m.method.path());
                    self.checker.violation(self.now, msg);
                }
                if let Some(p) = self.nodes[node].p.as_mut() {
                    p.handle_response(self.now, mid, res);
                }
                self.drain(node);
            }
        }
    }
}
