//! The fault-injecting TCP proxy: one listener in front of every node, which the other nodes
//! reach it through (the node advertises the proxy's address as its own). Faults are decided
//! per directed pair of nodes, so partitions can be one-way.
//!
//! A connection's calling node is known from its source address alone: node `i` lives on its
//! own loopback address ([`node_ip`]) and binds its outgoing connections to it
//! (`--source-addr`). Attribution is one map lookup per connection, whatever the machine's size
//! or the number of sockets. The outside callers (the test's clients, the nemesis) connect from
//! [`CLIENTS_IP`] straight to the nodes, never through a proxy. A proxied connection from any
//! address that is not a node's is *unattributed*: counted and closed, never forwarded, so an
//! unknown caller can neither cross a partition nor go unnoticed (the campaign fails on any).
//! That includes [`CLIENTS_IP`]: it is also the kernel's default source on loopback, where a
//! node's call would come from had its `--source-addr` not applied.
//!
//! Packet-level semantics: a blocked link `a -> b` silently drops every byte from `a` to `b`.
//! A call from `a` to `b` then never arrives; a call from `b` to `a` arrives and has its effect
//! but its answer is lost (the caller times out), which is the nastiest case for a protocol.
//! Once a direction dropped a byte, that direction of the connection stays dead (a half-sent
//! HTTP message cannot be resumed), until either side closes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where the outside callers (clients, nemesis) connect from, straight to the nodes: the
/// kernel's default source address on loopback, which no node uses.
pub const CLIENTS_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The loopback addresses of the nodes start here: node `i` is `127.0.0.(FIRST_NODE_OCTET + i)`.
const FIRST_NODE_OCTET: usize = 10;

/// The most nodes a campaign can have, one loopback address each below 127.0.0.255.
pub const MAX_NODES: usize = 255 - FIRST_NODE_OCTET;

/// Node `i`'s own address: it listens there, binds its outgoing calls to it, and its proxy
/// listens there too (so the address in the member list says which node it is).
pub fn node_ip(i: usize) -> IpAddr {
    assert!(i < MAX_NODES, "node {i}: at most {MAX_NODES} nodes");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, (FIRST_NODE_OCTET + i) as u8))
}

/// The network's faults, shared by every proxy. Indexes are node numbers.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Directed links `(from, to)` whose bytes are dropped.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Added before every chunk is forwarded between two nodes, plus a uniform jitter.
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Per forwarded chunk between two nodes, the chance (in 1/1000) that the connection is
    /// cut (both directions closed).
    pub cut_per_mille: u32,
}

impl Faults {
    pub fn is_clear(&self) -> bool {
        self.blocked.is_empty()
            && self.delay_ms == 0
            && self.jitter_ms == 0
            && self.cut_per_mille == 0
    }
}

/// What the proxies did, counted as they go (never derived from the kernel's tables).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections from a node's address, faulted per directed pair.
    pub from_nodes: AtomicU64,
    /// Connections from an address that is not a node's: closed.
    pub unattributed: AtomicU64,
    /// `accept` failures (out of file descriptors and the like): a caller the proxy could not
    /// even look at.
    pub accept_errors: AtomicU64,
    /// Connections the node behind the proxy refused (it is down or restarting): the caller
    /// sees its connection closed, as it would with the node itself.
    pub refused: AtomicU64,
    /// Connections cut by a lossy network.
    pub cuts: AtomicU64,
    /// Chunks dropped on a blocked link: evidence that the partitions were applied.
    pub dropped: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub from_nodes: u64,
    pub unattributed: u64,
    pub accept_errors: u64,
    pub refused: u64,
    pub cuts: u64,
    pub dropped: u64,
}

/// What every proxy shares: the faults, who lives at which address, and the counters.
#[derive(Debug)]
pub struct Net {
    /// Replaced whole by [`Net::set`]; a forwarded chunk reads it with one lock and one `Arc`
    /// clone, never a copy of the fault set.
    faults: Mutex<Arc<Faults>>,
    nodes: BTreeMap<IpAddr, usize>,
    pub counters: Counters,
}

impl Net {
    pub fn new(nodes: usize) -> Arc<Net> {
        Arc::new(Net {
            faults: Mutex::new(Arc::new(Faults::default())),
            nodes: (0..nodes).map(|i| (node_ip(i), i)).collect(),
            counters: Counters::default(),
        })
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap() = Arc::new(f);
    }

    pub fn heal(&self) {
        self.set(Faults::default());
    }

    pub fn faults(&self) -> Arc<Faults> {
        self.faults.lock().unwrap().clone()
    }

    /// The node calling from `from`, None for any other address.
    pub fn caller(&self, from: IpAddr) -> Option<usize> {
        self.nodes.get(&from).copied()
    }

    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            from_nodes: get(&c.from_nodes),
            unattributed: get(&c.unattributed),
            accept_errors: get(&c.accept_errors),
            refused: get(&c.refused),
            cuts: get(&c.cuts),
            dropped: get(&c.dropped),
        }
    }
}

fn count(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// One proxy, in front of node `node`; it forwards to `target` (set once the node listens).
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub target: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proxy {
    /// Binds `node_ip(node):0` on `rt` and serves until the runtime stops.
    pub fn start(rt: &tokio::runtime::Runtime, net: Arc<Net>, node: usize) -> Proxy {
        let ip = node_ip(node);
        let listener = rt
            .block_on(TcpListener::bind((ip, 0)))
            .unwrap_or_else(|e| panic!("bind the proxy of node {node} on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let t = target.clone();
        rt.spawn(async move {
            let mut seq = 0u64;
            loop {
                let (conn, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        count(&net.counters.accept_errors);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(from) = net.caller(peer.ip()) else {
                    count(&net.counters.unattributed);
                    continue; // dropping `conn` closes it
                };
                count(&net.counters.from_nodes);
                seq += 1;
                let to = *t.lock().unwrap();
                let net = net.clone();
                let seed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (node as u64);
                tokio::spawn(async move {
                    let _ = conn.set_nodelay(true);
                    let up = match to {
                        Some(to) => TcpStream::connect(to).await.ok(),
                        None => None,
                    };
                    let Some(up) = up else {
                        count(&net.counters.refused);
                        return;
                    };
                    let _ = up.set_nodelay(true);
                    pipe(net, conn, up, from, node, seed).await;
                });
            }
        });
        Proxy { addr, target }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Forwards both directions between the calling node `from` and node `to`.
async fn pipe(net: Arc<Net>, down: TcpStream, up: TcpStream, from: usize, to: usize, seed: u64) {
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let a = copy(
        net.clone(),
        dr,
        uw,
        (from, to),
        seed,
        cut_tx.clone(),
        cut_rx.clone(),
    );
    let b = copy(net, ur, dw, (to, from), seed ^ 0xABCDEF, cut_tx, cut_rx);
    tokio::join!(a, b);
}

/// One direction. `link` is `(sender, receiver)`.
async fn copy(
    net: Arc<Net>,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    (s, d): (usize, usize),
    mut rng: u64,
    cut_tx: tokio::sync::watch::Sender<bool>,
    mut cut_rx: tokio::sync::watch::Receiver<bool>,
) {
    // The peers' messages are small (a snapshot is the exception, and it streams through in
    // chunks): a small buffer keeps a burst of connections cheap.
    let mut buf = vec![0u8; 16 << 10];
    let mut dead = false;
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = cut_rx.changed() => break,
        };
        let f = net.faults();
        if dead || f.blocked.contains(&(s, d)) {
            dead = true; // this direction is gone for good; keep reading so the sender is not stuck
            count(&net.counters.dropped);
            continue;
        }
        if f.cut_per_mille > 0 && (next(&mut rng) % 1000) < f.cut_per_mille as u64 {
            count(&net.counters.cuts);
            let _ = cut_tx.send(true);
            break;
        }
        let wait = f.delay_ms
            + if f.jitter_ms > 0 {
                next(&mut rng) % f.jitter_ms
            } else {
                0
            };
        drop(f);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    let _ = cut_tx.send(true);
}

/// xorshift64*: the proxies' own randomness (what is cut, how long a chunk waits).
pub fn next(s: &mut u64) -> u64 {
    if *s == 0 {
        *s = 0x2545_F491_4F6C_DD1D;
    }
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_known_by_address_alone() {
        let net = Net::new(3);
        assert_eq!(net.caller(node_ip(0)), Some(0));
        assert_eq!(net.caller(node_ip(2)), Some(2));
        // The clients' address (where a node without --source-addr would call from), a node
        // this network does not have, and an address nobody uses.
        assert_eq!(net.caller(CLIENTS_IP), None);
        assert_eq!(net.caller(node_ip(3)), None);
        assert_eq!(net.caller("127.0.0.2".parse().unwrap()), None);
    }
}
