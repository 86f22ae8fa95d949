//! TLS material read from PEM files at start: the coordinator's server
//! certificate and key (plus, for mutual TLS, the CA that clients'
//! certificates must chain to), and for calls to `https://` participants
//! the CA to trust and an optional client certificate. Without
//! `participant_ca`, `https://` endpoints are checked against the system's
//! roots; with it, against that CA only.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::Config;

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

/// The gRPC server's TLS settings; `None` serves plaintext.
pub fn server_config(c: &Config) -> Result<Option<ServerTlsConfig>, String> {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read("tls_cert", cert)?, read("tls_key", key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &c.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("tls_client_ca", ca)?));
    }
    Ok(Some(tls))
}

/// TLS settings of calls to `https://` participants; `None` keeps tonic's
/// default (system roots, no client certificate).
pub fn client_config(c: &Config) -> Result<Option<ClientTlsConfig>, String> {
    if c.participant_ca.is_none() && c.participant_cert.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &c.participant_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("participant_ca", ca)?)),
        None => tls.with_enabled_roots(),
    };
    if let (Some(cert), Some(key)) = (&c.participant_cert, &c.participant_key) {
        tls = tls.identity(Identity::from_pem(
            read("participant_cert", cert)?,
            read("participant_key", key)?,
        ));
    }
    Ok(Some(tls))
}

/// TLS of calls to `https://` HTTP/JSON participants, from the same files
/// as [`client_config`]: `participant_ca` (else the system's roots) and an
/// optional client certificate. `None` when neither is configured: the
/// client then builds [`http_tls`]`(None, None)` at its first HTTP call.
pub fn http_client_config(c: &Config) -> Result<Option<rustls::ClientConfig>, String> {
    if c.participant_ca.is_none() && c.participant_cert.is_none() {
        return Ok(None);
    }
    let identity = c
        .participant_cert
        .as_deref()
        .zip(c.participant_key.as_deref());
    http_tls(c.participant_ca.as_deref(), identity).map(Some)
}

/// A rustls client configuration (ring, as tonic uses) trusting `ca` or,
/// without it, the system's roots; presenting `identity` (certificate and
/// key files) when given.
pub fn http_tls(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let pem = read("participant_ca", ca)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("participant_ca: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("participant_ca: {e}"))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as tonic does.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read("participant_cert", cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("participant_cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&read("participant_key", key)?)
                .map_err(|e| format!("participant_key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("participant_cert: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Makes ring (what tonic and the HTTP participants' client use) the
/// process' rustls provider, for clients that pick the default, such as the
/// OTLP exporter's reqwest client. Idempotent.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
