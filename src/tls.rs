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
