//! The HTTP server: routes `/_clusterc/<clusterId>/...` to the cluster tasks, applies the HTTP
//! rules of PROTOCOL.md section 2, and serves the dashboard's static files at `/`.
//!
//! | path below `/_clusterc/<id>/` | method | answer |
//! |---|---|---|
//! | `prepare`, `accept`, `addmember`, `rmmember`, `start`, `submit`, `members/add`, `members/remove`, `readindex` | POST | 200 + the protocol answer |
//! | `status` | GET | 200 + the participant's status |
//! | `watch?from=SEQ[&prefix=P][&wait=MS]` | GET | the change stream ([`crate::watch`]): `text/event-stream`, or with `wait` a long poll's JSON |
//! | `metrics` | GET | 200 + Prometheus text: commit, instance, role, counters, write latency |
//! | `snapshot` | GET | the committed state for a backup ([`crate::backup`]): a JSON head line, then the app's snapshot bytes |
//! | anything else | GET | the app's [`Reads`](crate::Reads) (`?consistent=true`: after a read index) |
//! | any | OPTIONS | 204 CORS preflight |
//!
//! Outside `/_clusterc/`: `GET /livez` and `GET /readyz` ([`crate::probes`]), then the static
//! files.
//!
//! Errors that are not protocol answers carry `{"code": "ERR_...", "err": "..."}`: 400 for a
//! body that does not decode, 401 (`ERR_DENIED`) without the
//! credential the call needs ([`crate::auth`]: the peer token for the peer protocol, the client
//! token for the rest), 404 for an
//! unknown cluster or path, 405 for a wrong method, 408 for a body that arrives too slowly,
//! 410 (`ERR_GAP`) for a long poll from before the node's window, 413 for a body over the
//! limit, 503 (`ERR_STATE`, retryable) while shutting down, when the node is over its limit of
//! concurrent client calls or of watchers, or when a consistent read cannot be served now (no
//! serving master, no majority).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use clusterconsensus::wire::{Method as Call, Request};
use clusterconsensus::ErrorCode;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};

use crate::auth::{Access, Policy, VerifiedClientCert};
use crate::backup::SnapshotStream;
use crate::cluster::{Cluster, Gone};
use crate::reads::{percent_decode, ReadRequest};
use crate::watch::{self, WatchStream};
use crate::App;

/// An answer with its whole body at once (every route but a watch stream).
pub type HttpResponse = hyper::Response<Full<Bytes>>;
/// What the server answers: a whole body, or a stream (a watch, a backup's snapshot).
pub type ResponseBody = Either<Full<Bytes>, Either<WatchStream, SnapshotStream>>;

/// The longest a long poll (`watch?wait=MS`) waits.
pub const MAX_WAIT_MS: u64 = 60_000;

/// What every connection handler shares.
pub struct Shared<S: App> {
    pub clusters: BTreeMap<String, Cluster<S>>,
    pub max_body: usize,
    /// The dashboard's files (`None`: no static files).
    pub www: Option<PathBuf>,
    /// Which credential each kind of call needs.
    pub auth: Policy,
    /// Client calls (everything but the peer protocol) handled at once; past it a call is
    /// refused at once with 503 `ERR_STATE` rather than queued.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// A body must arrive within this (slow clients get 408).
    pub body_timeout: std::time::Duration,
    /// `/readyz`: most committed entries a ready node may be behind its master.
    pub ready_max_lag: u64,
    /// One permit per watcher (`watch` stream or long poll); none left: 503.
    pub watchers: Arc<tokio::sync::Semaphore>,
    pub max_watchers: usize,
}

/// Whether the query string asks for a consistent read (`consistent`, `consistent=true|1`).
fn wants_consistent(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| matches!(p, "consistent" | "consistent=true" | "consistent=1"))
    })
}

pub async fn handle<S: App>(
    shared: Arc<Shared<S>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let path = req.uri().path().to_string();
    let res = match path.strip_prefix("/_clusterc/") {
        Some(rest) => {
            let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let mut res = match shared.clusters.get(id) {
                Some(cluster) if sub == "watch" && req.method() != Method::OPTIONS => {
                    watch_route(&shared, cluster, &req).await
                }
                Some(cluster) if sub == "snapshot" && req.method() != Method::OPTIONS => {
                    crate::backup::route(&shared, cluster, &req).await
                }
                _ => cluster_route(&shared, req, rest).await.map(Either::Left),
            };
            add_cors(res.headers_mut());
            res
        }
        None => match path.as_str() {
            "/livez" => crate::probes::livez(req.method()).map(Either::Left),
            "/readyz" => crate::probes::readyz(&shared, req.method(), req.uri().query())
                .await
                .map(Either::Left),
            _ => static_file(shared.www.as_deref(), req.method(), &path)
                .await
                .map(Either::Left),
        },
    };
    Ok(res)
}

pub(crate) fn unavailable(gone: Gone) -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::State,
        &gone.to_string(),
    )
}

async fn cluster_route<S: App>(
    shared: &Shared<S>,
    req: hyper::Request<Incoming>,
    rest: &str,
) -> HttpResponse {
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(cluster) = shared.clusters.get(id) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::State,
            &format!("this node hosts no cluster {id:?}"),
        );
    };
    if req.method() == Method::OPTIONS {
        return preflight();
    }
    let Some(call) = Call::from_path(sub) else {
        return read_route(shared, cluster, &req, sub).await;
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST, OPTIONS");
    }
    // Checked before the body is read: an unauthenticated call reaches no cluster.
    let access = match call.is_peer_call() {
        true => Access::Peer,
        false => Access::Protected,
    };
    if let Some(denied) = check_auth(shared, &req, access) {
        return denied;
    }
    // The replication calls are bounded by the member count and must not starve behind
    // clients; the core says which calls count as client load (a client's readindex does).
    let _permit = match call.counts_as_client_load() {
        false => None,
        true => match admit(shared) {
            Some(p) => Some(p),
            None => return overloaded(),
        },
    };
    let body = match tokio::time::timeout(
        shared.body_timeout,
        read_body(req.into_body(), shared.max_body),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(res)) => return res,
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::Call,
                &format!(
                    "the body did not arrive within {} ms",
                    shared.body_timeout.as_millis()
                ),
            )
        }
    };
    let request = match Request::decode(call, &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    match cluster.call(request).await {
        Ok(answer) => json(StatusCode::OK, answer.encode()),
        Err(gone) => unavailable(gone),
    }
}

/// Every `GET` that is not a protocol method: `status` and `metrics` describe this node; any
/// other path is the app's ([`Reads`](crate::Reads)), plain or consistent.
async fn read_route<S: App>(
    shared: &Shared<S>,
    cluster: &Cluster<S>,
    req: &hyper::Request<Incoming>,
    sub: &str,
) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return match sub {
            "status" | "metrics" => method_not_allowed("GET, HEAD, OPTIONS"),
            _ => error(
                StatusCode::NOT_FOUND,
                ErrorCode::Call,
                &format!("no such method {sub:?}"),
            ),
        };
    }
    // Only the app's state can be read linearizably; status and metrics describe this node.
    let own = matches!(sub, "status" | "metrics");
    let consistent = !own && wants_consistent(req.uri().query());
    let access = if consistent {
        Access::Protected
    } else {
        Access::Read
    };
    if let Some(denied) = check_auth(shared, req, access) {
        return denied;
    }
    let Some(_permit) = admit(shared) else {
        return overloaded();
    };
    match sub {
        "status" => return status(cluster).await,
        "metrics" => return metrics(cluster).await,
        _ => {}
    }
    if consistent {
        if let Some(refused) = read_index(cluster).await {
            return refused;
        }
    }
    let read = ReadRequest::new(sub, req.uri().query().map(String::from), 0);
    match cluster.read(read).await {
        Ok(Some(a)) => {
            let status =
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json(status, serde_json::to_vec(&a.body).unwrap_or_default())
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            ErrorCode::Call,
            &format!("no such path {sub:?}"),
        ),
        Err(gone) => unavailable(gone),
    }
}

/// `watch`: the stream of committed entries from `from` (or from `Last-Event-ID` + 1, or from
/// now), filtered by the app ([`Reads::watch_filter`]); with `wait=MS` one long poll. A read:
/// the token is needed only with `auth_reads`. Each watcher holds one of `max_watchers`
/// places until it ends.
async fn watch_route<S: App>(
    shared: &Shared<S>,
    cluster: &Cluster<S>,
    req: &hyper::Request<Incoming>,
) -> hyper::Response<ResponseBody> {
    let whole = |r: HttpResponse| r.map(Either::Left);
    let bad = |m: &str| whole(error(StatusCode::BAD_REQUEST, ErrorCode::Encoding, m));
    if req.method() != Method::GET {
        return whole(method_not_allowed("GET, OPTIONS"));
    }
    if let Some(denied) = check_auth(shared, req, Access::Read) {
        return whole(denied);
    }
    let query = ReadRequest::new("watch", req.uri().query().map(String::from), 0);
    let number = |name: &str| query.param(name).map(|v| v.parse::<u64>().map_err(|_| v));
    let mut from = match number("from") {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(v)) => return bad(&format!("from must be a seq (a whole number), not {v:?}")),
    };
    if let Some(last) = req.headers().get("last-event-id") {
        match last
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            Some(n) => from = Some(n.saturating_add(1)),
            None => return bad("Last-Event-ID must be the seq of the last entry received"),
        }
    }
    let wait = match number("wait") {
        None => None,
        Some(Ok(ms)) => Some(std::time::Duration::from_millis(ms.min(MAX_WAIT_MS))),
        Some(Err(v)) => return bad(&format!("wait must be milliseconds, not {v:?}")),
    };
    let filter = match S::watch_filter(&query) {
        Ok(f) => f,
        Err(a) => {
            let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
            return whole(json(
                status,
                serde_json::to_vec(&a.body).unwrap_or_default(),
            ));
        }
    };
    let Ok(slot) = shared.watchers.clone().try_acquire_owned() else {
        return whole(error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::State,
            &format!(
                "this node serves its limit of {} watchers; watch through another node",
                shared.max_watchers
            ),
        ));
    };
    let cursor = cluster.watch.cursor(from, filter);
    let Some(wait) = wait else {
        let body = match cursor {
            Ok(c) => Either::Right(Either::Left(WatchStream::new(c, slot))),
            // The one error event, then the end (the client re-reads, or tries elsewhere).
            Err(refusal) => Either::Left(Full::new(refusal.event())),
        };
        let mut res = hyper::Response::new(body);
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return res;
    };
    let answer = match cursor {
        Ok(c) => watch::long_poll(c, wait).await,
        Err(refusal) => Err(refusal),
    };
    drop(slot);
    whole(match answer {
        Ok(body) => json(StatusCode::OK, body),
        Err(r) if r.code == ErrorCode::Gap => json(StatusCode::GONE, r.body()),
        Err(r) => json(StatusCode::SERVICE_UNAVAILABLE, r.body()),
    })
}

/// `None` if the caller may go on; else the 401 to answer.
pub(crate) fn check_auth<S: App>(
    shared: &Shared<S>,
    req: &hyper::Request<Incoming>,
    access: Access,
) -> Option<HttpResponse> {
    let cert = req.extensions().get::<VerifiedClientCert>().is_some();
    let why = shared.auth.check(access, req.headers(), cert).err()?;
    let mut res = error(StatusCode::UNAUTHORIZED, ErrorCode::Denied, &why);
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(res)
}

/// A permit for one client call, or `None` when `--max-inflight` calls are already running.
pub(crate) fn admit<S: App>(shared: &Shared<S>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    shared.inflight.clone().try_acquire_owned().ok()
}

pub(crate) fn overloaded() -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::State,
        "overloaded: too many calls in progress; retry later",
    )
}

/// The read-index round of a consistent read: `None` once this node has applied everything
/// committed before the read arrived (read the local state now), else the 503 to answer.
async fn read_index<S: App>(cluster: &Cluster<S>) -> Option<HttpResponse> {
    let req = Request::ReadIndex(clusterconsensus::wire::ReadIndex::default());
    let err = match cluster.call(req).await {
        Ok(clusterconsensus::wire::Response::Fail(f)) => match f.into_result() {
            Ok(()) => return None,
            Err(e) => e,
        },
        Ok(other) => {
            clusterconsensus::Error::new(ErrorCode::Call, format!("unexpected answer {other:?}"))
        }
        Err(gone) => return Some(unavailable(gone)),
    };
    Some(error(
        StatusCode::SERVICE_UNAVAILABLE,
        err.code,
        &format!("consistent read refused: {}", err.message),
    ))
}

/// `metrics`: this cluster's counters and state, in Prometheus' text format.
async fn metrics<S: App>(cluster: &Cluster<S>) -> HttpResponse {
    match cluster.metrics().await {
        Ok(text) => {
            let mut res = hyper::Response::new(Full::new(Bytes::from(text)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            res
        }
        Err(gone) => unavailable(gone),
    }
}

/// `status`: the participant's view (not linearizable: a follower may lag the master).
async fn status<S: App>(cluster: &Cluster<S>) -> HttpResponse {
    let answer = cluster
        .inspect(|p, now| {
            let mut v = serde_json::to_value(p.status(now)).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("serving".into(), p.is_serving_master().into());
            }
            v
        })
        .await;
    match answer {
        Ok(v) => json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        Err(gone) => unavailable(gone),
    }
}

/// Reads the whole body, or answers 413 past `max`. An oversized body is still read (and
/// dropped) up to a bound, so that the client, still sending, gets the 413 and not a reset.
async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Encoding,
            &format!("body over the limit of {max} bytes"),
        )
    };
    let drain_bound = max.saturating_mul(4).max(64 << 20);
    let declared = body.size_hint().exact().or(body.size_hint().upper());
    if declared.is_some_and(|n| n > drain_bound as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Encoding,
                    &format!("reading body: {e}"),
                ))
            }
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > drain_bound {
                return Err(too_large());
            }
            if seen <= max {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > max {
        return Err(too_large());
    }
    Ok(buf)
}

/// The dashboard: files below `www`, `index.html` for a directory.
async fn static_file(www: Option<&Path>, method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let Some(www) = www else {
        return error(StatusCode::NOT_FOUND, ErrorCode::State, "no such file");
    };
    let Some(decoded) = percent_decode(path) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::Encoding,
            "bad percent-encoding in path",
        );
    };
    let mut file = www.to_path_buf();
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        // No way out of `www`: no parent or hidden segments, no separators or NULs inside one.
        if seg.starts_with('.') || seg.contains('\\') || seg.contains('\0') {
            return error(StatusCode::NOT_FOUND, ErrorCode::State, "no such file");
        }
        file.push(seg);
    }
    let head = method == Method::HEAD;
    let found = tokio::task::spawn_blocking(move || {
        let file = if file.is_dir() {
            file.join("index.html")
        } else {
            file
        };
        std::fs::read(&file).ok().map(|b| (content_type(&file), b))
    })
    .await
    .ok()
    .flatten();
    match found {
        Some((ctype, bytes)) => {
            let len = bytes.len();
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(bytes)
            };
            let mut res = hyper::Response::new(Full::new(body));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if head {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            res
        }
        None if path == "/" => {
            let text = format!(
                "clusterconsensus node: the dashboard is not built (no index.html in {}).\n\
                 See /_clusterc/<clusterId>/status.\n",
                www.display()
            );
            let mut res = hyper::Response::new(Full::new(Bytes::from(text)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        }
        None => error(StatusCode::NOT_FOUND, ErrorCode::State, "no such file"),
    }
}

fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut res = hyper::Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An error that is not a protocol answer: `{"code","err"}`.
pub fn error(status: StatusCode, code: ErrorCode, msg: &str) -> HttpResponse {
    let body = serde_json::json!({"code": code.as_str(), "err": msg});
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

pub(crate) fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Call,
        &format!("method not allowed here; use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

fn preflight() -> HttpResponse {
    let mut res = hyper::Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, last-event-id"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}

/// A dashboard served from another origin may call every cluster endpoint.
fn add_cors(h: &mut hyper::HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_query() {
        assert!(wants_consistent(Some("consistent=true")));
        assert!(wants_consistent(Some("a=b&consistent")));
        assert!(wants_consistent(Some("consistent=1")));
        assert!(!wants_consistent(Some("consistent=false")));
        assert!(!wants_consistent(None));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/b.wasm")), "application/wasm");
        assert!(content_type(Path::new("x.js")).starts_with("text/javascript"));
        assert!(content_type(Path::new("index.html")).starts_with("text/html"));
    }
}
