//! Optional TLS (rustls with the ring provider): `--tls-cert`/`--tls-key` make the node serve
//! HTTPS; `--tls-ca` is the certificate authority (PEM, one or more certificates) the node
//! trusts when it calls `https://` peers. Members then have `https://` addresses (pass
//! `--advertise https://...`), and a cluster can run across a network nobody trusts: TLS keeps
//! the tokens and the data private, the tokens keep strangers out.
//!
//! With `--peer-client-cert-auth` the members also prove who they are by certificate, as
//! etcd's flag of that name: the server asks every connection for a client certificate and
//! verifies one that is offered against `--tls-ca` (a connection without one is still served:
//! clients need none), and the node presents its own `--tls-cert` as its client certificate
//! on its calls. Which calls need the certificate is [`crate::auth`]'s decision.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, both PEM.
fn identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((certs, key))
}

/// The CA certificates (PEM) of `ca`.
fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
    {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    Ok(roots)
}

/// The server side: the certificate chain and its private key, both PEM. With `client_ca`,
/// a client certificate is asked for and, when offered, must chain to it (see the module
/// docs); without, none is asked for.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = identity(cert, key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            // Clients need no certificate; the peer calls are refused without one later.
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("{}: client certificate verifier: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The client side: trusts the certificates of `ca` (none: `https://` calls fail to verify);
/// with `client_cert` (a chain and its key, PEM), presents it to servers that ask for one.
pub fn client_config(
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => rustls::RootCertStore::empty(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let (certs, key) = identity(cert, key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("TLS client certificate and key: {e}"))
        }
    }
}
