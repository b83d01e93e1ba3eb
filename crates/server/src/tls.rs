//! Built-in HTTPS: the certificate and key of `server.tls_cert_file` / `server.tls_key_file`
//! (PEM), served by rustls (the `ring` provider) on `server.listen`, and re-read on SIGHUP.
//!
//! The certificate in use sits behind a [`ReloadableCert`] resolver: every new TLS handshake
//! asks it for the current one, so after a reload new connections get the new certificate and
//! open ones keep theirs. A reload that fails (unreadable file, not PEM, a key that does not
//! match the certificate) keeps the old certificate and logs an error.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The crypto provider of the server's TLS (ring: pure Rust and assembly, no cmake).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM certificate chain (end-entity first). An error names the file and says what is
/// wrong with it.
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(chain)
}

/// Read a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no usable PEM private key in it: {e}", path.display()))
}

/// The certificate chain and key of the two files, checked to belong together.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_cert_chain(cert_file)?;
    let key = read_private_key(key_file)?;
    let provider = provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "{}: the private key cannot be used: {e}",
            key_file.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(format!(
                "{} does not belong to the certificate in {}: {e}",
                key_file.display(),
                cert_file.display()
            ))
        }
    }
    Ok(Arc::new(certified))
}

/// The certificate every new handshake gets; replaced by [`ReloadableCert::reload`].
#[derive(Debug)]
pub struct ReloadableCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Load the two files (an error if they do not make a usable certificate).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let current = load_certified_key(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(current),
        })
    }

    /// Read the files again; on success new handshakes get the new certificate, on error the
    /// old one stays (the error says why).
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load_certified_key(&self.cert_file, &self.key_file)?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = fresh;
        Ok(())
    }

    /// The certificate in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server side of TLS: the acceptor for the listener and the resolver to reload.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub cert: Arc<ReloadableCert>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert).finish()
    }
}

impl Tls {
    /// TLS 1.2 and 1.3 with the certificate of the two files. No ALPN is offered: HTTP/1.1
    /// (WebSocket upgrades included) and TURN clients both work without it.
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let cert = Arc::new(ReloadableCert::load(cert_file, key_file)?);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    /// From the configuration: `None` when `server.tls_cert_file` is not set.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, String> {
        let s = &config.server;
        if !config.server.tls_enabled() {
            return Ok(None);
        }
        Self::new(&s.tls_cert_file, &s.tls_key_file).map(Some)
    }
}

/// Re-read the certificate on every SIGHUP until `stop` is cancelled.
pub fn spawn_reload_on_sighup(
    cert: Arc<ReloadableCert>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP (no certificate reload): {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match cert.reload() {
                Ok(()) => tracing::info!(
                    cert = %cert.cert_file.display(),
                    "SIGHUP: TLS certificate reloaded; new connections get it"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: TLS certificate NOT reloaded, the old one stays in use: {e}"
                ),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn write_pair(dir: &Path, name: &str, host: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rakor-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_a_pair_and_refuses_a_key_of_another_certificate() {
        let d = temp_dir("pair");
        let (c1, k1) = write_pair(&d, "a", "a.example");
        let (_c2, k2) = write_pair(&d, "b", "b.example");
        assert!(load_certified_key(&c1, &k1).is_ok());
        let err = load_certified_key(&c1, &k2).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        let err = load_certified_key(&d.join("missing.crt"), &k1).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::write(d.join("junk.crt"), "hello").unwrap();
        let err = load_certified_key(&d.join("junk.crt"), &k1).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
    }

    #[test]
    fn reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let d = temp_dir("reload");
        let (c, k) = write_pair(&d, "a", "a.example");
        let r = ReloadableCert::load(&c, &k).unwrap();
        let first = r.current().cert[0].clone();
        let (c2, k2) = write_pair(&d, "b", "b.example");
        std::fs::copy(&c2, &c).unwrap();
        std::fs::copy(&k2, &k).unwrap();
        r.reload().unwrap();
        let second = r.current().cert[0].clone();
        assert_ne!(first, second);
        std::fs::write(&c, "garbage").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(r.current().cert[0], second, "the old certificate stays");
    }
}
