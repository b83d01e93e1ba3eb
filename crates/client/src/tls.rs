//! TLS for `wss://`: which certificate authorities the client trusts. By default the system's
//! (the PEM bundle `rustls-native-certs` finds: `/etc/ssl/certs`, `SSL_CERT_FILE`, …); a private
//! CA is added with [`roots_with_ca_file`] (`rakor bot --ca-file`, `rakor loadtest --ca-file`)
//! and kept in [`crate::ClientOptions::tls_roots`], where TURN over TLS can reuse it too.

use crate::ClientError;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// The system's trusted roots (those that load; unreadable ones are skipped).
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system CA certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    roots
}

/// The system's roots plus every certificate in the PEM file `path` (a private CA). An error
/// if the file cannot be read or holds no usable certificate.
pub fn roots_with_ca_file(path: &Path) -> Result<Arc<RootCertStore>, ClientError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ClientError::InvalidOptions(format!("--ca-file {}: cannot read it: {e}", path.display()))
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ClientError::InvalidOptions(format!(
                "--ca-file {}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    let mut roots = system_roots();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ClientError::InvalidOptions(format!(
            "--ca-file {}: no usable CA certificate in it",
            path.display()
        )));
    }
    Ok(Arc::new(roots))
}

/// The rustls client configuration for `wss://` with `roots` (`None`: the system's).
pub fn client_config(
    roots: Option<&Arc<RootCertStore>>,
) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match roots {
        Some(r) => Arc::clone(r),
        None => Arc::new(system_roots()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidOptions(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
