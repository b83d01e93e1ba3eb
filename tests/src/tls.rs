//! TLS for the end-to-end suites: a private CA made by the test (rcgen), server certificates it
//! signs (with a chosen serial number), and a raw TLS client that reports the certificate the
//! server served and can make one HTTPS request.

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A private certificate authority in a directory of its own.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM): what clients are told to trust (`--ca-file`).
    pub ca_file: PathBuf,
    params: CertificateParams,
    key: KeyPair,
}

impl TestCa {
    pub fn new() -> Result<TestCa> {
        let dir = tempfile::tempdir()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Rakor test CA");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem())?;
        Ok(TestCa {
            dir,
            ca_file,
            params,
            key,
        })
    }

    /// Issue a server certificate for `names` (DNS names or IP literals) with `serial`, and
    /// write it and its key as `<stem>.crt` / `<stem>.key`. Returns (cert, key, cert DER).
    pub fn issue(
        &self,
        stem: &str,
        names: &[&str],
        serial: u64,
    ) -> Result<(PathBuf, PathBuf, CertificateDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        params.serial_number = Some(SerialNumber::from(serial));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let c = self.dir.path().join(format!("{stem}.crt"));
        let k = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok((c, k, cert.der().clone()))
    }

    /// A rustls client configuration that trusts this CA only.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        client_config_trusting(&self.ca_file)
    }
}

/// A rustls client configuration that trusts the PEM CA in `ca_file` only.
pub fn client_config_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Open a TLS connection to `addr` (verifying the certificate for `name`).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .context("TLS handshake timed out")??;
    Ok(tls)
}

/// The end-entity certificate `addr` serves to a new connection.
pub async fn served_certificate(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<CertificateDer<'static>> {
    let tls = connect(config, addr, name).await?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| anyhow!("no peer certificate"))
}

/// One HTTPS `GET path` (Connection: close): the status code and the body.
pub async fn https_get(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> Result<(u16, String)> {
    let mut tls = connect(config, addr, name).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    // A close_notify-less close is fine here: read what came.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
