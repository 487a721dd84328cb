//! The HTTP server: routes `/_clusterc/<clusterId>/...` to the cluster tasks, applies the HTTP
//! rules of PROTOCOL.md section 2, and serves the dashboard's static files at `/`.
//!
//! | path below `/_clusterc/<id>/` | method | answer |
//! |---|---|---|
//! | `prepare`, `accept`, `addmember`, `rmmember`, `start`, `submit`, `members/add`, `members/remove` | POST | 200 + the protocol answer |
//! | `status` | GET | 200 + the participant's status |
//! | `metrics` | GET | 200 + Prometheus text: commit, instance, role, counters, write latency |
//! | `kv` | GET | 200 + `{"commit","data"}`: the whole key-value state |
//! | `kv/<key>` | GET | 200 + `{"key","value"}`, or 404 + `{"key","value":null}` |
//! | `kv/<key>?consistent=true`, `kv?consistent=true` | GET | the same, linearizable (read index) |
//! | `readindex` | POST | 200 + `{"fail","err","seq"}` (a follower asks its master) |
//! | any | OPTIONS | 204 CORS preflight |
//!
//! Errors that are not protocol answers carry `{"code": "ERR_...", "err": "..."}`: 400 for a
//! body that does not decode, 401 (`ERR_DENIED`) without the token ([`crate::auth`]), 404 for an
//! unknown cluster, path or key, 405 for a wrong method, 408 for a body that arrives too slowly,
//! 413 for a body over the limit, 503 (`ERR_STATE`, retryable) while shutting down, when the
//! node is over its limit of concurrent client calls, or when a consistent read cannot be
//! served now (no serving master, no majority).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use clusterconsensus::wire::{Method as Call, Request};
use clusterconsensus::ErrorCode;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};

use crate::auth::Auth;
use crate::cluster::Cluster;

pub type HttpResponse = hyper::Response<Full<Bytes>>;

/// What every connection handler shares.
#[derive(Debug)]
pub struct Shared {
    pub clusters: BTreeMap<String, Cluster>,
    pub max_body: usize,
    pub www: PathBuf,
    /// `--token-file`: the token every protected call must carry.
    pub auth: Option<Auth>,
    /// `--auth-reads`: status and plain reads need the token too.
    pub auth_reads: bool,
    /// `--max-inflight`: client calls (everything but the peer protocol) handled at once; past
    /// it a call is refused at once with 503 `ERR_STATE` rather than queued.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// `--body-timeout-ms`: a body must arrive within this (slow clients get 408).
    pub body_timeout: std::time::Duration,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Status and plain reads: open unless `--auth-reads`.
    Read,
    /// Everything that changes state or reads linearizably.
    Protected,
}

/// Whether the query string asks for a consistent read (`consistent`, `consistent=true|1`).
fn wants_consistent(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| matches!(p, "consistent" | "consistent=true" | "consistent=1"))
    })
}

pub async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path().to_string();
    let res = match path.strip_prefix("/_clusterc/") {
        Some(rest) => {
            let mut res = cluster_route(&shared, req, rest).await;
            add_cors(res.headers_mut());
            res
        }
        None => static_file(&shared.www, req.method(), &path).await,
    };
    Ok(res)
}

async fn cluster_route(shared: &Shared, req: hyper::Request<Incoming>, rest: &str) -> HttpResponse {
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
    if sub == "status" || sub == "metrics" || sub == "kv" || sub.starts_with("kv/") {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD, OPTIONS");
        }
        // Only key-value reads can be linearizable; status and metrics describe this node.
        let consistent = sub.starts_with("kv") && wants_consistent(req.uri().query());
        let access = if consistent {
            Access::Protected
        } else {
            Access::Read
        };
        if let Some(denied) = check_auth(shared, &req, access) {
            return denied;
        }
        let Some(_permit) = admit(shared) else {
            return overloaded();
        };
        if consistent {
            if let Some(refused) = read_index(cluster).await {
                return refused;
            }
        }
        return read_route(cluster, sub).await;
    }
    let Some(call) = Call::from_path(sub) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::Call,
            &format!("no such method {sub:?}"),
        );
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST, OPTIONS");
    }
    // Checked before the body is read: an unauthenticated call reaches no cluster.
    if let Some(denied) = check_auth(shared, &req, Access::Protected) {
        return denied;
    }
    // The replication calls are bounded by the member count and must not starve behind
    // clients; the core says which calls count as client load.
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
        Err(gone) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::State,
            &gone.to_string(),
        ),
    }
}

/// `None` if the caller may go on; else the 401 to answer.
fn check_auth(
    shared: &Shared,
    req: &hyper::Request<Incoming>,
    access: Access,
) -> Option<HttpResponse> {
    let auth = shared.auth.as_ref()?;
    if access == Access::Read && !shared.auth_reads {
        return None;
    }
    if auth.allows(req.headers()) {
        return None;
    }
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Denied,
        "this call needs the cluster's token: Authorization: Bearer <token>",
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(res)
}

/// A permit for one client call, or `None` when `--max-inflight` calls are already running.
fn admit(shared: &Shared) -> Option<tokio::sync::OwnedSemaphorePermit> {
    shared.inflight.clone().try_acquire_owned().ok()
}

fn overloaded() -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::State,
        "overloaded: too many calls in progress; retry later",
    )
}

/// The read-index round of a consistent read: `None` once this node has applied everything
/// committed before the read arrived (read the local state now), else the 503 to answer.
async fn read_index(cluster: &Cluster) -> Option<HttpResponse> {
    let req = Request::ReadIndex(clusterconsensus::wire::ReadIndex::default());
    let err = match cluster.call(req).await {
        Ok(clusterconsensus::wire::Response::Fail(f)) => match f.into_result() {
            Ok(()) => return None,
            Err(e) => e,
        },
        Ok(other) => {
            clusterconsensus::Error::new(ErrorCode::Call, format!("unexpected answer {other:?}"))
        }
        Err(gone) => {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::State,
                &gone.to_string(),
            ))
        }
    };
    Some(error(
        StatusCode::SERVICE_UNAVAILABLE,
        err.code,
        &format!("consistent read refused: {}", err.message),
    ))
}

/// `status`, `kv` and `kv/<key>`: reads of the local state (not linearizable: a follower may
/// lag the master by a heartbeat).
async fn read_route(cluster: &Cluster, sub: &str) -> HttpResponse {
    if sub == "metrics" {
        return match cluster.metrics().await {
            Ok(text) => {
                let mut res = hyper::Response::new(Full::new(Bytes::from(text)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                res
            }
            Err(gone) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::State,
                &gone.to_string(),
            ),
        };
    }
    let answer = if sub == "status" {
        cluster
            .inspect(|p, now| {
                let mut v = serde_json::to_value(p.status(now)).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("serving".into(), p.is_serving_master().into());
                }
                Ok(v)
            })
            .await
    } else if sub == "kv" {
        cluster
            .inspect(|p, _| {
                let data: serde_json::Map<String, serde_json::Value> = p
                    .state()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.into()))
                    .collect();
                Ok(serde_json::json!({"commit": p.commit(), "data": data}))
            })
            .await
    } else {
        let raw = &sub["kv/".len()..];
        let Some(key) = percent_decode(raw) else {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::Encoding,
                "bad percent-encoding in key",
            );
        };
        cluster
            .inspect(move |p, _| match p.state().get(&key) {
                Some(v) => Ok(serde_json::json!({"key": key, "value": v})),
                None => Err(key),
            })
            .await
    };
    match answer {
        Ok(Ok(v)) => json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        // Not an error object: a client tells "no such key" from "no such cluster" (404 with
        // a code) by the shape alone.
        Ok(Err(key)) => json(
            StatusCode::NOT_FOUND,
            serde_json::to_vec(&serde_json::json!({"key": key, "value": null})).unwrap_or_default(),
        ),
        Err(gone) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::State,
            &gone.to_string(),
        ),
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
async fn static_file(www: &Path, method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
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

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn json(status: StatusCode, body: Vec<u8>) -> HttpResponse {
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

fn method_not_allowed(allow: &'static str) -> HttpResponse {
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
        HeaderValue::from_static("content-type, authorization"),
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

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
