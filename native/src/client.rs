//! Outgoing HTTP: the peer client (pooled keep-alive connections, a per-request timeout) that
//! turns every transport failure into the error the core expects, and the small client for
//! programs that talk to a cluster (the CLI's `submit` / `status` / `get`, tests, examples).

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clusterconsensus::wire::{FailResult, Method, Response};
use clusterconsensus::{Error, ErrorCode};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::Token;
use crate::ServeError;

/// Answers above this size are refused (a peer's answers are small; a snapshot travels in a
/// request, not an answer).
const MAX_ANSWER: usize = 16 << 20;

/// A pooled HTTP/1.1 client (`http://` and `https://`); cheap to clone (the pool is shared).
/// Every call is bounded by the client's timeout. Needs a tokio runtime.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// `Authorization: Bearer <token>` on every call (`--token-file`, `--peer-token-file`).
    auth: Option<HeaderValue>,
    /// Peer calls refused with 401 so far (a credential the peers do not accept).
    denied: Arc<AtomicU64>,
}

impl HttpClient {
    /// Calls without a token; `https://` addresses cannot be verified (no CA).
    pub fn new(timeout: Duration) -> HttpClient {
        let tls = crate::tls::client_config(None, None).expect("an empty root store always builds");
        HttpClient::with_security(timeout, None, tls)
    }

    /// Sends `token` on every call (`Authorization: Bearer`); verifies `https://` addresses
    /// with the CA certificates (PEM) in `ca`.
    pub fn secured(
        timeout: Duration,
        token: Option<&Token>,
        ca: Option<&Path>,
    ) -> Result<HttpClient, ServeError> {
        let tls = crate::tls::client_config(ca, None).map_err(ServeError::Tls)?;
        Ok(HttpClient::with_security(
            timeout,
            token.map(Token::header),
            tls,
        ))
    }

    /// Sends `auth` on every call; `https://` addresses are verified with `tls`.
    pub(crate) fn with_security(
        timeout: Duration,
        auth: Option<HeaderValue>,
        tls: rustls::ClientConfig,
    ) -> HttpClient {
        HttpClient::with_source(timeout, auth, tls, None)
    }

    /// As [`HttpClient::with_security`], with every outgoing connection bound to the local
    /// address `source` (`--source-addr`; None: the kernel picks by route). A multi-homed
    /// server needs it so that its peers, and their firewalls, see the address it was given.
    pub(crate) fn with_source(
        timeout: Duration,
        auth: Option<HeaderValue>,
        tls: rustls::ClientConfig,
        source: Option<IpAddr>,
    ) -> HttpClient {
        let mut conn = HttpConnector::new();
        conn.set_local_address(source);
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(timeout));
        conn.enforce_http(false);
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(conn);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(conn);
        HttpClient {
            client,
            timeout,
            auth,
            denied: Arc::default(),
        }
    }

    /// The time limit of each call (and of each wait on a stream).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET url`: the status and the body. `Err` carries the core's transport codes:
    /// `ERR_CONNECT` when no connection could be made, `ERR_CALL` for anything else (timeout,
    /// reset, an answer too large).
    pub async fn get(&self, url: &str) -> Result<(u16, Vec<u8>), Error> {
        let (s, b) = self.request(hyper::Method::GET, url, Vec::new()).await?;
        Ok((s.as_u16(), b.to_vec()))
    }

    /// `POST url` with a JSON body: the status and the body (errors as for [`HttpClient::get`]).
    pub async fn post(&self, url: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), Error> {
        let (s, b) = self.request(hyper::Method::POST, url, body).await?;
        Ok((s.as_u16(), b.to_vec()))
    }

    /// Submits `changes` as one batch to cluster `cluster` through the node at `node` (a base
    /// URL; a follower forwards to its master) and returns the protocol answer: on success
    /// `{"fail":false,"seq":N,"results":[...]}` with the app's result for each change, else the
    /// refusal. A `fail: true` answer is `Ok` too (see [`FailResult::into_result`]); `Err` is a
    /// transport failure or an HTTP error (its `{"code","err"}` when the body has one).
    pub async fn submit(
        &self,
        node: &str,
        cluster: &str,
        changes: &[String],
    ) -> Result<FailResult, Error> {
        let url = clusterconsensus::wire::url(node, cluster, Method::Submit.path());
        let body = serde_json::to_vec(&serde_json::json!({ "chg": changes }))
            .map_err(|e| Error::encoding(e.to_string()))?;
        let (status, body) = self.request(hyper::Method::POST, &url, body).await?;
        if status != hyper::StatusCode::OK {
            return Err(http_error(&url, status.as_u16(), &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::encoding(format!("{url}: unexpected answer: {e}")))
    }

    /// One HTTP exchange, bounded by the timeout. `Err` carries the core's transport codes:
    /// `ERR_CONNECT` when no connection could be made, `ERR_CALL` for anything else (timeout,
    /// reset, an answer too large).
    pub(crate) async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), Error> {
        let req = self.build(method, url, body, &[])?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(url, &e))?;
            let status = res.status();
            let body = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| Error::new(ErrorCode::Call, format!("{url}: reading answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(self.no_answer(url)),
        }
    }

    /// `GET url` with `headers`, answered once the head has arrived (within the timeout): the
    /// response, whose body the caller reads as it comes (a watch stream).
    pub(crate) async fn open(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        let req = self.build(hyper::Method::GET, url, Vec::new(), headers)?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(r) => r.map_err(|e| transport(url, &e)),
            Err(_) => Err(self.no_answer(url)),
        }
    }

    fn no_answer(&self, url: &str) -> Error {
        Error::new(
            ErrorCode::Call,
            format!("{url}: no answer within {} ms", self.timeout.as_millis()),
        )
    }

    fn build(
        &self,
        method: hyper::Method,
        url: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> Result<hyper::Request<Full<Bytes>>, Error> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| Error::new(ErrorCode::Connect, format!("bad address {url:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(Error::new(
                ErrorCode::Connect,
                format!("only http:// and https:// addresses are supported, not {url:?}"),
            ));
        }
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::new(ErrorCode::Call, format!("request to {url}: {e}")))
    }

    /// POSTs a protocol request to a peer and decodes its answer for `method`. Every outcome
    /// is something to hand to `Participant::handle_response`.
    pub async fn call(&self, url: &str, method: Method, body: Vec<u8>) -> Result<Response, Error> {
        let (status, body) = self.request(hyper::Method::POST, url, body).await?;
        if status != hyper::StatusCode::OK {
            // Not a protocol answer (the peer does not host the cluster, refused the body, ...):
            // to the core this call failed.
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            if status == hyper::StatusCode::UNAUTHORIZED {
                // Not a fault that heals by itself: the members' tokens (or certificates)
                // differ. Said at once, then every 100th time, not on every heartbeat.
                let n = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(100) {
                    tracing::warn!(
                        "a peer refused this node's credentials (HTTP 401, {n} refused calls \
                         so far): {url}: {text}; every member must accept the token the others \
                         send (the first line of --peer-token-file, else of --token-file)"
                    );
                }
            }
            return Err(Error::new(
                ErrorCode::Call,
                format!("{url}: HTTP {status}: {text}"),
            ));
        }
        Response::decode(method, &body)
    }
}

/// An HTTP error answer as an [`Error`]: its `{"code","err"}` when the body is one, else
/// `ERR_CALL` with the status and the start of the body.
pub(crate) fn http_error(url: &str, status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Coded {
        code: String,
        err: String,
    }
    if let Ok(c) = serde_json::from_slice::<Coded>(body) {
        if let Some(code) = ErrorCode::parse(&c.code) {
            return Error::new(code, format!("{url}: HTTP {status}: {}", c.err));
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    Error::new(ErrorCode::Call, format!("{url}: HTTP {status}: {text}"))
}

/// A failed exchange: `ERR_CONNECT` when no connection could be made, else `ERR_CALL`.
fn transport(url: &str, e: &hyper_util::client::legacy::Error) -> Error {
    let code = if e.is_connect() {
        ErrorCode::Connect
    } else {
        ErrorCode::Call
    };
    Error::new(code, format!("{url}: {}", error_chain(e)))
}

/// The error and its sources, so "connection refused" is not hidden behind "client error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
