//! The bootstrap flow of a node started with [`Startup::Bootstrap`](crate::Startup): become
//! master of a one-member cluster, then add each peer, one at a time, each once it answers.
//!
//! This is the one place where the host drives membership itself (it polls the participant and
//! calls `members/add` like a client would). It is isolated here on purpose: bootstrap and join
//! are moving into the core as commands and events, and this module will go with that change.

use std::time::Duration;

use clusterconsensus::wire::{AdminMember, Request, Response};
use clusterconsensus::{Error, ErrorCode};
use tracing::{error, info, warn};

use crate::client::HttpClient;
use crate::cluster::{Cluster, Gone};
use crate::App;

/// The bootstrap flow of `node --bootstrap --peer URL...`: become master of a one-member
/// cluster, then add each peer, one at a time, each once it answers and is committed.
pub async fn bootstrap<S: App>(cluster: Cluster<S>, peers: Vec<String>, client: HttpClient) {
    let id = cluster.id.clone();
    match cluster.bootstrap().await {
        Ok(Ok(())) => info!(cluster = %id, "bootstrapped a one-member cluster"),
        Ok(Err(e)) => {
            error!(cluster = %id, "bootstrap failed: {e}");
            return;
        }
        Err(Gone) => return,
    }
    // The core serves submits and membership changes once its first accept is confirmed.
    loop {
        match cluster.inspect(|p, _| p.is_serving_master()).await {
            Ok(true) => break,
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return,
        }
    }
    for peer in peers {
        wait_until_up(&client, &peer, &id).await;
        let mut attempt = 0u32;
        loop {
            let req = Request::MembersAdd(AdminMember::new(peer.clone()));
            let res = match cluster.call(req).await {
                Ok(Response::Fail(f)) => f.into_result(),
                Ok(_) => Err(Error::new(ErrorCode::Call, "unexpected answer shape")),
                Err(Gone) => return,
            };
            match res {
                Ok(()) => {
                    info!(cluster = %id, peer = %peer, "peer added");
                    break;
                }
                Err(e) if e.code == ErrorCode::Encoding => {
                    // Not a usable member address: retrying cannot help.
                    error!(cluster = %id, peer = %peer, "cannot add peer: {e}");
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt % 10 == 1 {
                        warn!(cluster = %id, peer = %peer, "adding peer failed, retrying: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// Waits until `peer` answers its status endpoint for this cluster: adding a member that is not
/// running yet would leave the cluster without a majority until it comes up.
async fn wait_until_up(client: &HttpClient, peer: &str, cluster: &str) {
    let url = clusterconsensus::wire::url(peer, cluster, "status");
    let mut attempt = 0u32;
    loop {
        match client.get(&url).await {
            Ok((s, _)) if (200..300).contains(&s) => return,
            Ok((s, _)) => {
                if attempt.is_multiple_of(25) {
                    warn!(
                        cluster,
                        peer, "peer answers HTTP {s} for this cluster; waiting"
                    );
                }
            }
            Err(e) => {
                if attempt.is_multiple_of(25) {
                    info!(cluster, peer, "waiting for peer to come up: {e}");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
