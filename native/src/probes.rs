//! Health probes for process supervisors and load balancers (Kubernetes' liveness and
//! readiness probes, a systemd watchdog script, a balancer's health check). Neither needs the
//! token: they say whether to send traffic here, not what the data is.
//!
//! - `GET /livez`: `200 {"live":true}` while the process serves HTTP. It asks no cluster
//!   anything, so a busy or partitioned node is still live: restarting it would not help.
//! - `GET /readyz[?cluster=ID]...`: `200` when every cluster this node serves (or each one
//!   named) has a master this node heard from within the election timeout and this node is at
//!   most `--ready-max-lag` committed entries behind it; else `503`. The body says, per
//!   cluster, why: `{"ready":B,"clusters":{ID:{"ready","role","master","commit","lag",
//!   "last_master_contact_ms","reason"?}}}`. A cluster it does not serve is `404`.
//!
//! How far behind: a follower knows the master's commit from the master's last accept (it
//! proposes and heartbeats at its commit + 1: [`Participant::known_commit`]), so `lag` is what
//! this node still has to apply of what it has seen committed. A master that serves is never
//! behind.

use std::collections::BTreeMap;
use std::time::Duration;

use clusterconsensus::{ErrorCode, Participant, Role, StateMachine};
use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::http::{error, json, method_not_allowed, HttpResponse, Shared};
use crate::reads::percent_decode;
use crate::App;

/// How long `/readyz` waits for a cluster's task to answer; a task that takes longer is not
/// ready to serve either.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One cluster's readiness on this node, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub role: &'static str,
    pub master: Option<String>,
    pub commit: u64,
    /// Committed entries this node has seen the master reach and not yet applied.
    pub lag: u64,
    /// Milliseconds since a live master was last heard from (0 on the master).
    pub last_master_contact_ms: Option<u64>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether `p` is ready to serve at `now`: a master that serves, or a follower that heard from
/// its master within the election timeout (`election_max_ms`) and is at most `max_lag` entries
/// behind it.
pub fn readiness<S: StateMachine>(p: &Participant<S>, now: u64, max_lag: u64) -> Readiness {
    let status = p.status(now);
    let lag = p.known_commit().saturating_sub(p.commit());
    let timeout = p.config().election_max_ms;
    let reason = match p.role() {
        Role::Unjoined => Some("unjoined: not yet added to the cluster".to_string()),
        Role::Removed => Some("removed from the cluster".to_string()),
        Role::Candidate => Some("no master: an election is in progress".to_string()),
        Role::Master if !p.is_serving_master() => {
            Some("master, not yet confirmed by a majority".to_string())
        }
        Role::Master => None,
        Role::Participant | Role::Learner => match (p.master(), status.last_master_contact_ms) {
            (None, _) => Some("no master known".to_string()),
            (Some(m), Some(ms)) if ms < timeout => (lag > max_lag).then(|| {
                format!("{lag} committed entries behind the master {m} (at most {max_lag})")
            }),
            (Some(m), ms) => Some(format!(
                "no word from the master {m} for {} (election timeout {timeout} ms)",
                ms.map_or("ever".to_string(), |ms| format!("{ms} ms"))
            )),
        },
    };
    Readiness {
        ready: reason.is_none(),
        role: p.role().as_str(),
        master: status.master,
        commit: p.commit(),
        lag,
        last_master_contact_ms: status.last_master_contact_ms,
        reason,
    }
}

/// `GET /livez`.
pub fn livez(method: &Method) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    json(StatusCode::OK, br#"{"live":true}"#.to_vec())
}

/// `GET /readyz`, for every cluster or those named by `?cluster=ID`.
pub async fn readyz<S: App>(
    shared: &Shared<S>,
    method: &Method,
    query: Option<&str>,
) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let mut named = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("cluster=") {
            let Some(id) = percent_decode(v) else {
                let msg = "bad percent-encoding in ?cluster=";
                return error(StatusCode::BAD_REQUEST, ErrorCode::Encoding, msg);
            };
            if !shared.clusters.contains_key(&id) {
                let msg = format!("this node hosts no cluster {id:?}");
                return error(StatusCode::NOT_FOUND, ErrorCode::State, &msg);
            }
            named.push(id);
        }
    }
    let max_lag = shared.ready_max_lag;
    let mut clusters = BTreeMap::new();
    for (id, cluster) in &shared.clusters {
        if !named.is_empty() && !named.contains(id) {
            continue;
        }
        let look = cluster.inspect(move |p, now| readiness(p, now, max_lag));
        let r = match tokio::time::timeout(INSPECT_TIMEOUT, look).await {
            Ok(Ok(r)) => serde_json::to_value(r).unwrap_or_default(),
            Ok(Err(gone)) => not_ready(&gone.to_string()),
            Err(_) => not_ready(&format!(
                "the cluster's task did not answer within {} ms",
                INSPECT_TIMEOUT.as_millis()
            )),
        };
        clusters.insert(id.clone(), r);
    }
    let ready = clusters.values().all(|r| r["ready"] == true);
    let body = serde_json::json!({"ready": ready, "clusters": clusters});
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

fn not_ready(reason: &str) -> serde_json::Value {
    serde_json::json!({"ready": false, "reason": reason})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_app::Nothing;
    use clusterconsensus::{Config, Output};

    fn node() -> Participant<Nothing> {
        Participant::new(Config::new("c1", "http://127.0.0.1:1"), Nothing).unwrap()
    }

    /// Carries out every output at once (a host with an instant disk and no peers).
    fn settle(p: &mut Participant<Nothing>, now: u64) {
        while let Some(out) = p.poll_output() {
            if let Output::Persist(w) = out {
                p.persisted(now, w.id);
            }
        }
    }

    #[test]
    fn an_unjoined_node_is_not_ready_and_says_why() {
        let r = readiness(&node(), 5, 1000);
        assert!(!r.ready);
        assert_eq!(r.role, "unjoined");
        assert!(r.reason.unwrap().contains("unjoined"));
    }

    #[test]
    fn a_master_is_ready_once_it_serves() {
        let mut p = node();
        p.bootstrap(0).unwrap();
        let before = readiness(&p, 0, 1000);
        settle(&mut p, 1);
        let after = readiness(&p, 1, 1000);
        assert!(!before.ready, "{before:?}");
        assert_eq!(
            after,
            Readiness {
                ready: true,
                role: "master",
                master: Some("http://127.0.0.1:1".into()),
                commit: p.commit(),
                lag: 0,
                last_master_contact_ms: Some(0),
                reason: None,
            }
        );
    }
}
