//! What the core costs, alone: a 3-node cluster in memory where every message is JSON-encoded
//! and decoded (as the HTTP hosts do) and handled, every Persist is acknowledged at once into a
//! `Stored` (no disk), and clients keep the master's queue busy with key-value changes (16-byte
//! key, 100-byte value). For a few numbers of outstanding submits it prints committed changes,
//! messages and encoded bytes per second of wall-clock time.
//!
//! Run: `cargo bench -p clusterconsensus` (about 15 seconds once built). Each row is the
//! fastest of 3 runs.

use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::time::Instant;

use clusterconsensus::kv::{KvChange, KvStore};
use clusterconsensus::{
    Config, MessageId, Method, Output, Participant, Request, RequestId, Response, Stored,
};

const NODES: [&str; 3] = [
    "http://127.0.0.1:9001",
    "http://127.0.0.1:9002",
    "http://127.0.0.1:9003",
];
/// Distinct keys: the state stays bounded however long a run is.
const KEYS: u64 = 4096;
/// Client request ids live above this; peer request ids below.
const CLIENT: u64 = 1 << 48;

/// One message in flight: a request for `to`, or the answer to `from`'s message `msg`.
enum Wire {
    Request {
        from: usize,
        msg: MessageId,
        to: usize,
        method: Method,
        body: Vec<u8>,
    },
    Response {
        to: usize,
        msg: MessageId,
        method: Method,
        body: Vec<u8>,
    },
}

#[derive(Default)]
struct Counters {
    /// Peer messages delivered (requests and responses), and client submits and answers.
    peer_messages: u64,
    client_messages: u64,
    bytes_encoded: u64,
    persists: u64,
    /// Changes answered with success.
    committed: u64,
}

struct Cluster {
    nodes: Vec<Participant<KvStore>>,
    disks: Vec<Stored>,
    wire: VecDeque<Wire>,
    /// Incoming peer request id -> (sender, its message id, method), per receiving node.
    routes: Vec<BTreeMap<RequestId, (usize, MessageId, Method)>>,
    next_req: u64,
    /// Client answers, JSON-encoded as a host would send them.
    answers: Vec<Vec<u8>>,
    n: Counters,
    now: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = NODES
            .iter()
            .map(|a| Participant::new(Config::new("bench", *a), KvStore::new()).unwrap())
            .collect();
        Cluster {
            nodes,
            disks: vec![Stored::default(); NODES.len()],
            wire: VecDeque::new(),
            routes: vec![BTreeMap::new(); NODES.len()],
            next_req: 1,
            answers: Vec::new(),
            n: Counters::default(),
            now: 0,
        }
    }

    fn index(addr: &str) -> usize {
        NODES
            .iter()
            .position(|a| *a == addr)
            .expect("a cluster member")
    }

    /// Drains node `i`'s outputs: persists are applied and acknowledged, sends and replies are
    /// encoded onto the wire.
    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            match out {
                Output::Persist(p) => {
                    self.disks[i].apply(&p);
                    self.n.persists += 1;
                    self.nodes[i].persisted(self.now, p.id);
                }
                Output::Send(s) => {
                    let body = s.request.encode();
                    self.n.bytes_encoded += body.len() as u64;
                    self.wire.push_back(Wire::Request {
                        from: i,
                        msg: s.id,
                        to: Cluster::index(&s.to),
                        method: s.request.method(),
                        body,
                    });
                }
                Output::Reply(r) => {
                    let body = r.response.encode();
                    self.n.bytes_encoded += body.len() as u64;
                    if r.id.0 >= CLIENT {
                        self.answers.push(body);
                    } else {
                        let (to, msg, method) =
                            self.routes[i].remove(&r.id).expect("a routed request");
                        self.wire.push_back(Wire::Response {
                            to,
                            msg,
                            method,
                            body,
                        });
                    }
                }
                Output::Event(e) => {
                    black_box(e);
                }
            }
        }
    }

    /// Delivers the oldest message in flight; false if there is none.
    fn step(&mut self) -> bool {
        let Some(w) = self.wire.pop_front() else {
            return false;
        };
        self.n.peer_messages += 1;
        match w {
            Wire::Request {
                from,
                msg,
                to,
                method,
                body,
            } => {
                let req = Request::decode(method, &body).expect("a valid request");
                let rid = RequestId(self.next_req);
                self.next_req += 1;
                self.routes[to].insert(rid, (from, msg, method));
                self.nodes[to].handle_request(self.now, rid, req);
                self.drain(to);
            }
            Wire::Response {
                to,
                msg,
                method,
                body,
            } => {
                let res = Response::decode(method, &body).expect("a valid response");
                self.nodes[to].handle_response(self.now, msg, Ok(res));
                self.drain(to);
            }
        }
        true
    }

    /// Delivers everything in flight, in order, until the wire is empty.
    fn settle(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
        while self.step() {}
    }

    /// A client submit to node `i`, through JSON like every other message.
    fn submit(&mut self, i: usize, id: u64, change: String) {
        let body = Request::Submit(clusterconsensus::wire::Submit {
            chg: vec![change],
            forwarded: false,
        })
        .encode();
        self.n.bytes_encoded += body.len() as u64;
        self.n.client_messages += 1;
        let req = Request::decode(Method::Submit, &body).expect("a valid submit");
        self.nodes[i].handle_request(self.now, RequestId(CLIENT + id), req);
        self.drain(i);
    }

    /// Takes the client answers so far; panics on a failed submit.
    fn take_answers(&mut self) -> u64 {
        let n = self.answers.len() as u64;
        for body in self.answers.drain(..) {
            let res = Response::decode(Method::Submit, &body).expect("a valid answer");
            assert!(res.err().is_none(), "submit failed: {res:?}");
        }
        self.n.client_messages += n;
        self.n.committed += n;
        n
    }
}

/// Node 0 bootstraps and adds the other two.
fn three_nodes() -> Cluster {
    let mut c = Cluster::new();
    c.nodes[0].bootstrap(0).unwrap();
    c.settle();
    for (i, a) in NODES[1..].iter().enumerate() {
        c.nodes[0].add_member(0, RequestId(CLIENT + i as u64), a.to_string(), None);
        c.settle();
    }
    assert_eq!(c.answers.len(), 2);
    c.answers.clear();
    assert!(c.nodes[0].is_serving_master());
    // Each member joins as a learner and is then promoted, so the commit is past 2; the
    // followers learn the last commit from the master's next accept, here a timed notice.
    for _ in 0..4 {
        c.now += 50;
        for i in 0..c.nodes.len() {
            c.nodes[i].handle_timeout(c.now);
        }
        c.settle();
    }
    let commits: Vec<u64> = c.nodes.iter().map(|n| n.commit()).collect();
    assert!(commits.iter().all(|&n| n == commits[0]), "{commits:?}");
    c
}

fn change(i: u64) -> String {
    let key = format!("key-{:012}", i % KEYS); // 16 bytes
    let value = format!("{:0>100}", i); // 100 bytes
    debug_assert_eq!((key.len(), value.len()), (16, 100));
    KvChange::set(key, value).encode()
}

struct Run {
    outstanding: u64,
    changes: u64,
    secs: f64,
    slots: u64,
    n: Counters,
}

/// Keeps `outstanding` submits at the master until `total` changes committed.
fn run(outstanding: u64, total: u64) -> Run {
    let mut c = three_nodes();
    c.n = Counters::default();
    let commit0 = c.nodes[0].commit();
    let mut next = 0u64;
    let started = Instant::now();
    for _ in 0..outstanding.min(total) {
        c.submit(0, next, change(next));
        next += 1;
    }
    // Every answer is replaced by a new submit at once, so the queue stays full while the
    // slot in flight is decided.
    while c.n.committed < total {
        let moved = c.step();
        let done = c.take_answers();
        assert!(moved || done > 0, "no progress");
        for _ in 0..done {
            if next < total {
                c.submit(0, next, change(next));
                next += 1;
            }
        }
    }
    c.settle();
    let secs = started.elapsed().as_secs_f64();
    // Every node holds the same state at the end (the followers commit the last slot with the
    // next accept; compare up to the master's commit minus that one).
    let slots = c.nodes[0].commit() - commit0;
    assert!(c.nodes[1..]
        .iter()
        .all(|n| n.commit() + 1 >= c.nodes[0].commit()));
    black_box(&c.disks);
    Run {
        outstanding,
        changes: c.n.committed,
        secs,
        slots,
        n: c.n,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run small, as a check.
    let quick = !std::env::args().any(|a| a == "--bench");
    let plan: &[(u64, u64)] = if quick {
        &[(1, 200), (16, 2_000), (256, 10_000)]
    } else {
        &[(1, 50_000), (16, 200_000), (256, 500_000)]
    };
    println!("clusterconsensus core: 3 nodes in memory, JSON encode + decode + handle for every message,");
    println!("persists acknowledged at once, key-value sets (16-byte key, 100-byte value)");
    println!();
    println!(
        "{:>11} {:>9} {:>7} {:>13} {:>10} {:>13} {:>9} {:>8}",
        "outstanding",
        "changes",
        "secs",
        "changes/s",
        "slots/s",
        "messages/s",
        "MB/s enc",
        "chg/slot"
    );
    // The machine is shared and noisy: report the fastest of a few runs.
    let repeats = if quick { 1 } else { 3 };
    for &(outstanding, total) in plan {
        let r = (0..repeats)
            .map(|_| run(outstanding, total))
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run");
        let msgs = r.n.peer_messages + r.n.client_messages;
        println!(
            "{:>11} {:>9} {:>7.2} {:>13.0} {:>10.0} {:>13.0} {:>9.1} {:>8.1}",
            r.outstanding,
            r.changes,
            r.secs,
            r.changes as f64 / r.secs,
            r.slots as f64 / r.secs,
            msgs as f64 / r.secs,
            r.n.bytes_encoded as f64 / r.secs / 1e6,
            r.changes as f64 / r.slots as f64,
        );
    }
    println!();
    println!("messages = peer requests + peer responses + client submits + client answers;");
    println!("a slot is one accept decided on a majority (a batch of changes).");
}
