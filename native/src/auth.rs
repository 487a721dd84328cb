//! Who may call what: bearer tokens (`--token-file`, `--peer-token-file`) and, optionally, a
//! client certificate on the calls between members (`--peer-client-cert-auth`).
//!
//! Three kinds of call ([`Access`]):
//!
//! - **Peer calls**, the protocol between members ([`Method::is_peer_call`]: `prepare`,
//!   `accept`, `addmember`, `rmmember`, `start`, `readindex`, and whatever the core adds):
//!   they need the peer token when the node has one, else the client token (one token opens
//!   everything, as before there was a peer token). With `--peer-client-cert-auth` they also
//!   need a TLS client certificate that chains to `--tls-ca`. The client token never opens
//!   them once a peer token is set: a client can submit, but cannot forge an `accept`.
//! - **Client calls**: `submit`, `members/*` and consistent reads need the client token when
//!   the node has one. The peer token opens them too: the members forward clients' submits
//!   and membership changes to their master (after checking the client's token themselves),
//!   and probe each other's status while they bootstrap, all with the one credential a node
//!   sends. Without a client token they are open, whatever the peer token.
//! - **Reads**: the status page, metrics and plain (possibly stale) reads are open unless
//!   `--auth-reads`, then they are client calls. The dashboard's static files are always open.
//!
//! A refused call gets `401` with `{"code":"ERR_DENIED",...}` before its body is read, so it
//! reaches no cluster and changes nothing. The node sends one credential on all its own calls
//! ([`Policy::outgoing`]): the first line of the peer token file, else of the client token
//! file. A token file may hold several tokens, one a line, each of them accepted; so a new
//! token is rolled out as a second line on every member, then moved to the first line (now
//! sent), then the old one is removed, each step one member at a time, without a refused call
//! between members at any step.
//!
//! [`Method::is_peer_call`]: clusterconsensus::wire::Method::is_peer_call

use std::path::Path;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use crate::ServeError;

/// A bearer token: the secrets a call may carry (every line of a token file), and the one this
/// side sends (the first).
#[derive(Clone)]
pub struct Token {
    /// Every accepted secret; the first is the one sent.
    accepted: Vec<Vec<u8>>,
    header: HeaderValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<secret>)") // never print the secret
    }
}

impl Token {
    /// Reads the tokens of the file at `path`: see [`Token::parse`].
    pub fn from_file(path: &Path) -> Result<Token, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServeError::Token(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        Token::parse(&text)
            .map_err(|e| ServeError::Token(format!("token file {}: {e}", path.display())))
    }

    /// The tokens of a token file's text: one a line (surrounding whitespace ignored), blank
    /// lines and lines starting with `#` skipped, each 16 or more visible ASCII characters.
    /// Each is accepted; the first is the one sent.
    pub fn parse(text: &str) -> Result<Token, ServeError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((n, first)) = lines.next() else {
            return Err(ServeError::Token(
                "no token in it (blank lines and # comments are skipped)".into(),
            ));
        };
        let at = |n: usize, e: ServeError| ServeError::Token(format!("line {n}: {e}"));
        let mut token = Token::new(first).map_err(|e| at(n, e))?;
        for (n, line) in lines {
            token.accepted.push(secret(line).map_err(|e| at(n, e))?);
        }
        Ok(token)
    }

    /// One token of 16 or more visible ASCII characters.
    pub fn new(token: &str) -> Result<Token, ServeError> {
        let accepted = vec![secret(token)?];
        let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
            ServeError::Token(format!("the token is not a valid header value: {e}"))
        })?;
        Ok(Token { accepted, header })
    }

    /// Whether the request carries one of the tokens. Compares each in constant time (how
    /// many tokens there are is no secret).
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let v = v.as_bytes();
        let Some(given) = v
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| v[7..].trim_ascii())
        else {
            return false;
        };
        self.accepted
            .iter()
            .fold(false, |ok, t| constant_time_eq(given, t) | ok)
    }

    /// Whether the two accept a common token (a client token that also opens the peer calls).
    pub(crate) fn overlaps(&self, other: &Token) -> bool {
        self.accepted.iter().any(|t| other.accepted.contains(t))
    }

    /// The token this side sends (the first; for a client that builds its own requests).
    pub fn as_str(&self) -> &str {
        // Checked to be ASCII in `secret`.
        std::str::from_utf8(&self.accepted[0]).unwrap_or_default()
    }

    /// `Authorization: Bearer <first token>`, for this side's own calls.
    pub(crate) fn header(&self) -> HeaderValue {
        let mut h = self.header.clone();
        h.set_sensitive(true);
        h
    }
}

/// A token's bytes, once checked: 16 or more visible ASCII characters.
fn secret(token: &str) -> Result<Vec<u8>, ServeError> {
    let bad = |m: &str| Err(ServeError::Token(m.to_string()));
    if token.len() < 16 {
        return bad("the token must be at least 16 characters");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("the token must be visible ASCII without spaces");
    }
    Ok(token.as_bytes().to_vec())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// Who may call an endpoint (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Status, metrics and plain reads: open unless `auth_reads`.
    Read,
    /// A client's call that changes state or reads linearizably.
    Protected,
    /// The protocol between members.
    Peer,
}

/// Put in a request's extensions by the connection that carried it when its TLS handshake
/// verified a client certificate against `--tls-ca` (the handshake refuses one that does not
/// verify; a connection without one gets no marker).
#[derive(Clone, Copy, Debug)]
pub(crate) struct VerifiedClientCert;

/// What a node demands of its callers, and what it sends on its own calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    /// `--token-file`: client calls need it.
    pub client: Option<Token>,
    /// `--peer-token-file`: peer calls need it (and it opens client calls too).
    pub peer: Option<Token>,
    /// Status, metrics and plain reads need the client token too.
    pub auth_reads: bool,
    /// Peer calls need a verified client certificate.
    pub peer_cert: bool,
}

impl Policy {
    /// `Authorization` for the node's own calls (the peer protocol, forwarded client calls,
    /// the bootstrap's probes): the peer token if set, else the client token.
    pub fn outgoing(&self) -> Option<HeaderValue> {
        self.peer
            .as_ref()
            .or(self.client.as_ref())
            .map(Token::header)
    }

    /// `Ok` if a call of kind `access` with these headers (`cert`: over a connection with a
    /// verified client certificate) may go on; else what it lacks, for the 401.
    pub fn check(&self, access: Access, headers: &HeaderMap, cert: bool) -> Result<(), String> {
        match access {
            Access::Read if !self.auth_reads => Ok(()),
            Access::Read | Access::Protected => {
                let Some(client) = &self.client else {
                    return Ok(());
                };
                // Both compared, whichever matches: no timing tells which token was close.
                let peer = self.peer.as_ref().is_some_and(|t| t.allows(headers));
                match client.allows(headers) | peer {
                    true => Ok(()),
                    false => Err(
                        "this call needs the cluster's token: Authorization: Bearer <token>".into(),
                    ),
                }
            }
            Access::Peer => {
                if self.peer_cert && !cert {
                    return Err("a call between members: it needs a TLS client certificate \
                                that chains to this node's --tls-ca"
                        .into());
                }
                let (token, which) = match (&self.peer, &self.client) {
                    (Some(p), _) => (p, "the members' peer token (--peer-token-file)"),
                    (None, Some(c)) => (c, "the cluster's token"),
                    (None, None) => return Ok(()),
                };
                match token.allows(headers) {
                    true => Ok(()),
                    false => Err(format!(
                        "a call between members: it needs {which}: Authorization: Bearer <token>"
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        let a = Token::new("0123456789abcdef").unwrap();
        assert!(a.allows(&headers("Bearer 0123456789abcdef")));
        assert!(a.allows(&headers("bearer 0123456789abcdef")));
        assert!(!a.allows(&headers("Bearer 0123456789abcdeF")));
        assert!(!a.allows(&headers("Bearer 0123456789abcde")));
        assert!(!a.allows(&headers("Bearer 0123456789abcdef0")));
        assert!(!a.allows(&headers("Basic 0123456789abcdef")));
        assert!(!a.allows(&headers("Bearer")));
        assert!(!a.allows(&HeaderMap::new()));
        assert_eq!(a.header().to_str().unwrap(), "Bearer 0123456789abcdef");
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it ok").is_err());
        assert!(!format!("{a:?}").contains("0123"));
    }

    #[test]
    fn a_token_file_holds_several_tokens_and_the_first_is_sent() {
        let text = "\n# rolled out 2024-05: the new one first\n  new-token-0123456789  \n\n\
                    old-token-0123456789\n#old-comment-0123456789\n";
        let t = Token::parse(text).unwrap();
        assert_eq!(t.as_str(), "new-token-0123456789");
        assert_eq!(t.header().to_str().unwrap(), "Bearer new-token-0123456789");
        assert!(t.allows(&headers("Bearer new-token-0123456789")));
        assert!(t.allows(&headers("Bearer old-token-0123456789")));
        // A comment is not a token, nor a prefix or a join of two.
        assert!(!t.allows(&headers("Bearer #old-comment-0123456789")));
        assert!(!t.allows(&headers("Bearer old-comment-0123456789")));
        assert!(!t.allows(&headers("Bearer new-token-012345678")));
        assert!(!t.allows(&headers("Bearer new-token-0123456789old-token-0123456789")));
        assert!(t.overlaps(&Token::new("old-token-0123456789").unwrap()));
        assert!(!t.overlaps(&Token::new("other-token-0123456789").unwrap()));

        // Every line must be a usable token, and the error names the line.
        let e = Token::parse("good-token-0123456789\n\nshort\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("16 characters"), "{e}");
        let e = Token::parse("# nothing\n\n  \n").unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");
        let e = Token::parse("").unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");
    }

    const CLIENT: &str = "Bearer client-token-0123456789";
    const PEER: &str = "Bearer peer-token-0123456789";
    const OTHER: &str = "Bearer other-token-0123456789";

    fn policy(client: bool, peer: bool, auth_reads: bool, peer_cert: bool) -> Policy {
        Policy {
            client: client.then(|| Token::new("client-token-0123456789").unwrap()),
            peer: peer.then(|| Token::new("peer-token-0123456789").unwrap()),
            auth_reads,
            peer_cert,
        }
    }

    /// Whether a call of `access` with `auth` (and a verified client certificate or not) is
    /// let in.
    fn lets(p: &Policy, access: Access, auth: Option<&str>, cert: bool) -> bool {
        let h = auth.map(headers).unwrap_or_default();
        p.check(access, &h, cert).is_ok()
    }

    #[test]
    fn the_peer_token_keeps_clients_out_of_the_peer_calls() {
        use Access::*;
        let p = policy(true, true, false, false);
        assert!(!lets(&p, Peer, Some(CLIENT), false));
        assert!(!lets(&p, Peer, Some(OTHER), false));
        assert!(!lets(&p, Peer, None, false));
        assert!(lets(&p, Peer, Some(PEER), false));
        // The members' credential opens the client calls they forward.
        assert!(lets(&p, Protected, Some(CLIENT), false));
        assert!(lets(&p, Protected, Some(PEER), false));
        assert!(!lets(&p, Protected, Some(OTHER), false));
        assert!(!lets(&p, Protected, None, false));
        assert!(lets(&p, Read, None, false));
        assert_eq!(p.outgoing().unwrap().to_str().unwrap(), PEER);
        let e = p.check(Peer, &headers(CLIENT), false).unwrap_err();
        assert!(e.contains("peer token"), "{e}");

        // --auth-reads: reads are client calls.
        let p = policy(true, true, true, false);
        assert!(!lets(&p, Read, None, false));
        assert!(lets(&p, Read, Some(CLIENT), false));
        assert!(lets(&p, Read, Some(PEER), false));
    }

    #[test]
    fn without_a_peer_token_one_token_opens_everything_as_before() {
        use Access::*;
        let p = policy(true, false, false, false);
        for access in [Peer, Protected] {
            assert!(lets(&p, access, Some(CLIENT), false));
            assert!(!lets(&p, access, Some(OTHER), false));
            assert!(!lets(&p, access, None, false));
        }
        assert_eq!(p.outgoing().unwrap().to_str().unwrap(), CLIENT);
        // No token at all: everything open, nothing sent.
        let p = policy(false, false, false, false);
        assert!(lets(&p, Peer, None, false) && lets(&p, Protected, None, false));
        assert!(p.outgoing().is_none());
        // Only a peer token: the members are closed to clients, the client calls open.
        let p = policy(false, true, false, false);
        assert!(!lets(&p, Peer, None, false));
        assert!(lets(&p, Peer, Some(PEER), false));
        assert!(lets(&p, Protected, None, false));
    }

    #[test]
    fn peer_client_cert_auth_needs_the_certificate_and_the_token() {
        use Access::*;
        let p = policy(true, true, false, true);
        assert!(!lets(&p, Peer, Some(PEER), false));
        assert!(!lets(&p, Peer, Some(CLIENT), true));
        assert!(lets(&p, Peer, Some(PEER), true));
        // Clients need no certificate.
        assert!(lets(&p, Protected, Some(CLIENT), false));
        let e = p.check(Peer, &headers(PEER), false).unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        // A certificate alone is enough when there is no token.
        let p = policy(false, false, false, true);
        assert!(lets(&p, Peer, None, true));
        assert!(!lets(&p, Peer, None, false));
    }
}
