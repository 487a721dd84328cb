//! `--source-addr IP`: a node's outgoing peer connections come from that local address. The
//! peer here is a plain listener that records where each connection came from (any address in
//! 127/8 is local on Linux).

use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use clusterconsensus_tests::*;

/// Starts a bootstrapping node whose only `--peer` is a recording listener, and returns the
/// source address of the first connection the node makes to it.
fn first_peer_connection_from(extra: &[&str]) -> IpAddr {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    peer.set_nonblocking(true).unwrap();
    let dir = TempDir::new("source-addr");
    let mut args = vec![
        "--bootstrap".to_string(),
        "--peer".into(),
        format!("http://{}", peer.local_addr().unwrap()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let _node = Node::start(dir.path(), "n", &["c1"], &args);
    wait_for(Duration::from_secs(20), "a call to the peer", || {
        peer.accept().ok().map(|(_, from)| from.ip())
    })
}

#[test]
fn peer_connections_leave_from_the_source_address() {
    assert_eq!(
        first_peer_connection_from(&["--source-addr", "127.0.0.2"]),
        "127.0.0.2".parse::<IpAddr>().unwrap()
    );
    // Without the flag the kernel picks 127.0.0.1: the assertion above is the flag's doing.
    assert_eq!(
        first_peer_connection_from(&[]),
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn a_source_address_that_is_not_local_or_not_an_ip_stops_the_node() {
    // 192.0.2.1 (TEST-NET-1) is never an address of this host; nothing is sent to it.
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        "c1",
        "--memory",
        "--source-addr",
        "192.0.2.1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot use --source-addr 192.0.2.1"), "{err}");
    let (code, _, err) = run_cli(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        "c1",
        "--memory",
        "--source-addr",
        "localhost",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--source-addr"), "{err}");
}
