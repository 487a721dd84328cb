//! Client operations (submit, consistent read, membership admin) and injected requests, and
//! how their answers are routed back and completed.

use alloc::format;
use alloc::string::{String, ToString};

use super::{NetKind, NetMsg, OpView, Open, Origin, Sim, SimApp};
use crate::error::{Error, ErrorCode};
use crate::wire::{AdminMember, Method, Request, Response, Submit};

impl<S: SimApp> Sim<S> {
    /// A client submits one change at node `i`. Returns the op id; see [`op`](Self::op).
    pub fn submit(&mut self, i: usize, change: String) -> u64 {
        let req = Request::Submit(Submit {
            chg: alloc::vec![change.clone()],
            forwarded: false,
        });
        self.client_call(i, change, req, None)
    }

    /// A client makes a consistent read of `key` at node `i`; the op's `value` is what the node
    /// held when it answered.
    pub fn read(&mut self, i: usize, key: &str) -> u64 {
        let req = Request::ReadIndex(crate::wire::ReadIndex::default());
        self.client_call(i, format!("read {key}"), req, Some(key.to_string()))
    }

    /// A client calls `members/add` (a learner, promoted once caught up), `members/remove` or
    /// `members/promote` at node `i`.
    pub fn admin(&mut self, i: usize, method: Method, member: &str, version: Option<u64>) -> u64 {
        let body = AdminMember {
            version,
            ..AdminMember::new(member)
        };
        self.admin_call(i, method, body)
    }

    /// A client makes the admin call `method` with `body` at node `i`.
    pub fn admin_call(&mut self, i: usize, method: Method, body: AdminMember) -> u64 {
        let member = body.addr.clone();
        let req = match method {
            Method::MembersRemove => Request::MembersRemove(body),
            Method::MembersPromote => Request::MembersPromote(body),
            _ => Request::MembersAdd(body),
        };
        self.client_call(i, format!("{} {member}", method.path()), req, None)
    }

    /// A client asks node `i` to hand mastership to `to` (or to the most caught-up voter).
    pub fn transfer(&mut self, i: usize, to: Option<String>) -> u64 {
        let what = format!("transfer {}", to.as_deref().unwrap_or("best"));
        let req = Request::Transfer(crate::wire::Transfer {
            to,
            forwarded: false,
        });
        self.client_call(i, what, req, None)
    }

    fn client_call(
        &mut self,
        i: usize,
        change: String,
        req: Request,
        read_key: Option<String>,
    ) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            op,
            OpView {
                id: op,
                node: i,
                change,
                invoked_at: self.now,
                completed_at: None,
                ok: None,
                err: None,
                code: None,
                read_key,
                value: None,
            },
        );
        if self.nodes[i].p.is_none() {
            self.complete_op(op, Err(Error::new(ErrorCode::Connect, "node is down")));
            return op;
        }
        // Through JSON, like everything else.
        let req = Request::decode(req.method(), &req.encode()).expect("own encoding decodes");
        let rid = self.next_rid;
        self.next_rid += 1;
        self.open.insert(
            rid,
            Open {
                origin: Origin::Client { op },
                to: i,
                method: req.method(),
            },
        );
        if self.nodes[i].paused {
            self.nodes[i].deferred_calls.push((rid, req));
            return op;
        }
        if let Some(p) = self.nodes[i].p.as_mut() {
            p.handle_request(self.now, crate::RequestId(rid), req);
        }
        self.drain(i);
        self.check();
        op
    }

    /// Hands node `i` a request as if a peer sent it (a delayed or forged message) and returns
    /// its answer if it gave one at once.
    pub fn inject(&mut self, i: usize, req: Request) -> Option<Response> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.open.insert(
            rid,
            Open {
                origin: Origin::Inject,
                to: i,
                method: req.method(),
            },
        );
        if let Some(p) = self.nodes[i].p.as_mut() {
            p.handle_request(self.now, crate::RequestId(rid), req);
        }
        self.drain(i);
        self.check();
        self.injected.remove(&rid)
    }

    pub(super) fn route_reply(&mut self, i: usize, rid: u64, response: Response) {
        let Some(o) = self.open.remove(&rid) else {
            let msg = format!("node {i} answered unknown request {rid}");
            return self.checker.violation(self.now, msg);
        };
        debug_assert_eq!(o.to, i);
        match o.origin {
            Origin::Client { op } => {
                let r = match &response {
                    Response::Fail(f) => f.clone().into_result(),
                    _ => Err(Error::new(ErrorCode::Call, "wrong response shape")),
                };
                if r.is_ok() && o.method == Method::Transfer {
                    self.checker.stats.transfers += 1;
                }
                if r.is_ok() && o.method == Method::ReadIndex {
                    let key = self.ops.get(&op).and_then(|o| o.read_key.clone());
                    let value = key.and_then(|k| {
                        let p = self.nodes[i].p.as_ref()?;
                        p.state().read(&k)
                    });
                    if let Some(o) = self.ops.get_mut(&op) {
                        o.value = value;
                    }
                }
                self.complete_op(op, r);
            }
            Origin::Node { node, .. } => {
                let m = NetMsg {
                    from: i,
                    to: node,
                    method: o.method,
                    kind: NetKind::Response { origin: o.origin },
                    body: response.encode(),
                    sent_at: self.now,
                    arrives_at: None,
                };
                self.transmit(m);
            }
            Origin::Duplicate => {}
            Origin::Inject => {
                self.injected.insert(rid, response);
            }
        }
    }

    pub(super) fn complete_op(&mut self, op: u64, r: Result<(), Error>) {
        let now = self.now;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.completed_at = Some(now);
        o.ok = Some(r.is_ok());
        if let Err(e) = &r {
            o.err = Some(format!("{e}"));
            o.code = Some(e.code);
        }
        let change = o.change.clone();
        let read = o.read_key.is_some();
        self.completed.push(op);
        if r.is_ok() && !read {
            self.checker.on_acknowledged(now, &change);
        }
    }
}
