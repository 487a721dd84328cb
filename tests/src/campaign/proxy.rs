//! The fault-injecting TCP proxy: one listener in front of every node, which the other nodes
//! reach it through (the node advertises the proxy's address as its own). Faults are decided
//! per directed pair of nodes, so partitions can be one-way.
//!
//! A connection's source node is found by asking the kernel which of the node processes owns
//! the connecting socket (`/proc/net/tcp` for the inode, `/proc/<pid>/fd` for the owner), so
//! the nodes need no test-only flag. A connection from anything else (the test's clients, the
//! nemesis) is never faulted.
//!
//! Packet-level semantics: a blocked link `a -> b` silently drops every byte from `a` to `b`.
//! A call from `a` to `b` then never arrives; a call from `b` to `a` arrives and has its effect
//! but its answer is lost (the caller times out), which is the nastiest case for a protocol.
//! Once a direction dropped a byte, that direction of the connection stays dead (a half-sent
//! HTTP message cannot be resumed), until either side closes it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// What every proxy shares: the faults and the pid of each node process (0 while it is down).
#[derive(Debug, Default)]
pub struct Net {
    pub faults: Mutex<Faults>,
    pub pids: Mutex<Vec<u32>>,
}

impl Net {
    pub fn new(nodes: usize) -> Arc<Net> {
        Arc::new(Net {
            faults: Mutex::new(Faults::default()),
            pids: Mutex::new(vec![0; nodes]),
        })
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn heal(&self) {
        self.set(Faults::default());
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        self.faults.lock().unwrap().blocked.contains(&(from, to))
    }
}

/// One proxy, in front of node `node`; it forwards to `target` (set once the node listens).
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub target: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proxy {
    /// Binds 127.0.0.1:0 on `rt` and serves until the runtime stops.
    pub fn start(rt: &tokio::runtime::Runtime, net: Arc<Net>, node: usize) -> Proxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let t = target.clone();
        rt.spawn(async move {
            let mut seq = 0u64;
            loop {
                let Ok((conn, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                seq += 1;
                let to = *t.lock().unwrap();
                let net = net.clone();
                let seed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (node as u64);
                tokio::spawn(async move {
                    let Some(to) = to else { return };
                    let pids = net.pids.lock().unwrap().clone();
                    let proxy_port = addr.port();
                    let from =
                        tokio::task::spawn_blocking(move || owner(&pids, peer.port(), proxy_port))
                            .await
                            .ok()
                            .flatten();
                    let _ = conn.set_nodelay(true);
                    let Ok(up) = TcpStream::connect(to).await else {
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

/// Forwards both directions; `from` is the calling node (None: an outside client).
async fn pipe(
    net: Arc<Net>,
    down: TcpStream,
    up: TcpStream,
    from: Option<usize>,
    to: usize,
    seed: u64,
) {
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let a = copy(
        net.clone(),
        dr,
        uw,
        from.map(|f| (f, to)),
        seed,
        cut_tx.clone(),
        cut_rx.clone(),
    );
    let b = copy(
        net,
        ur,
        dw,
        from.map(|f| (to, f)),
        seed ^ 0xABCDEF,
        cut_tx,
        cut_rx,
    );
    tokio::join!(a, b);
}

/// One direction. `link` is `(sender, receiver)` for faults, None for unfaulted traffic.
async fn copy(
    net: Arc<Net>,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Option<(usize, usize)>,
    mut rng: u64,
    cut_tx: tokio::sync::watch::Sender<bool>,
    mut cut_rx: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut dead = false;
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = cut_rx.changed() => break,
        };
        let Some((s, d)) = link else {
            if w.write_all(&buf[..n]).await.is_err() {
                break;
            }
            continue;
        };
        if dead || net.blocked(s, d) {
            dead = true; // this direction is gone for good; keep reading so the sender is not stuck
            continue;
        }
        let f = net.faults.lock().unwrap().clone();
        if f.cut_per_mille > 0 && (next(&mut rng) % 1000) < f.cut_per_mille as u64 {
            let _ = cut_tx.send(true);
            break;
        }
        let wait = f.delay_ms
            + if f.jitter_ms > 0 {
                next(&mut rng) % f.jitter_ms
            } else {
                0
            };
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

/// Which node (index into `pids`) owns the socket 127.0.0.1:`port` connected to `proxy_port`.
fn owner(pids: &[u32], port: u16, proxy_port: u16) -> Option<usize> {
    let inode = socket_inode(port, proxy_port)?;
    let want = format!("socket:[{inode}]");
    for (i, pid) in pids.iter().enumerate() {
        if *pid == 0 {
            continue;
        }
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(want.as_str())) {
                return Some(i);
            }
        }
    }
    None
}

/// The inode of the TCP socket whose local port is `local` and remote port is `remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |s: &str| {
                s.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(f[1]) == Some(local) && port(f[2]) == Some(remote) {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inode != 0 {
                        return Some(inode);
                    }
                }
            }
        }
    }
    None
}
