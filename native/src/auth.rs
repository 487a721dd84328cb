//! Bearer-token authentication (`--token-file`): who may call what.
//!
//! With a token, every call that can change something or reveal linearizable state must carry
//! `Authorization: Bearer <token>`: the peer endpoints (`prepare`, `accept`, `addmember`,
//! `rmmember`, `start`, `readindex`), `submit`, `members/*` and consistent reads. The status
//! page and plain (possibly stale) reads stay open unless `--auth-reads`; the dashboard's
//! static files are always open. A refused call gets `401` with `{"code":"ERR_DENIED",...}`
//! before its body is read, so it reaches no cluster and changes nothing. The node sends the
//! same token on its own calls to its peers: every member of a cluster shares one token.

use std::path::Path;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use crate::ServeError;

/// The cluster's shared secret: what every protected call must carry, and what the node sends on
/// its own calls.
#[derive(Clone)]
pub struct Token {
    token: Vec<u8>,
    header: HeaderValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<secret>)") // never print the secret
    }
}

impl Token {
    /// Reads the token from the first line of `path` (surrounding whitespace is ignored). It
    /// must be 16 or more visible ASCII characters.
    pub fn from_file(path: &Path) -> Result<Token, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServeError::Token(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        Token::new(token)
            .map_err(|e| ServeError::Token(format!("token file {}: {e}", path.display())))
    }

    /// A token of 16 or more visible ASCII characters.
    pub fn new(token: &str) -> Result<Token, ServeError> {
        let bad = |m: &str| Err(ServeError::Token(m.to_string()));
        if token.len() < 16 {
            return bad("the token must be at least 16 characters");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("the token must be visible ASCII without spaces");
        }
        let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
            ServeError::Token(format!("the token is not a valid header value: {e}"))
        })?;
        Ok(Token {
            token: token.as_bytes().to_vec(),
            header,
        })
    }

    /// Whether the request carries the token. Compares in constant time.
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
        constant_time_eq(given, &self.token)
    }

    /// The secret itself (for a client that builds its own requests).
    pub fn as_str(&self) -> &str {
        // Checked to be ASCII in `new`.
        std::str::from_utf8(&self.token).unwrap_or_default()
    }

    /// `Authorization: Bearer <token>`, for the node's own calls.
    pub(crate) fn header(&self) -> HeaderValue {
        let mut h = self.header.clone();
        h.set_sensitive(true);
        h
    }
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
}
