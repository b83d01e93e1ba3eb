//! `rakor check-config`: print the effective configuration (defaults, file, environment and
//! flags merged; secrets redacted) and what would go wrong with it on this host — an advertised
//! or bind address that is not this host's, a certificate that is unreadable, expired, not yet
//! valid, not for `server.public_url`'s host or whose key does not belong to it, ports already
//! in use or not bindable. Exit 0 when there is no problem, 1 when there is one, 2 when the
//! configuration itself is refused (as for `rakor serve`).

use crate::config::Config;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::SystemTime;

/// How bad a finding is: a problem makes the exit code 1; a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warning,
    Problem,
}

/// One finding: the key it is about and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, key: &str, message: impl Into<String>) -> Self {
        Self {
            severity,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Keys whose values are never printed.
fn is_secret(key: &str) -> bool {
    key == "signing_key" || key.contains("secret") || key.contains("password")
}

/// The effective configuration as TOML, secrets replaced by `"<redacted>"` (empty ones shown
/// as empty, so that "not set" stays visible).
pub fn render_effective(config: &Config) -> String {
    let mut table = match toml::Table::try_from(config) {
        Ok(t) => t,
        Err(e) => return format!("# cannot render the configuration: {e}\n"),
    };
    for (_, section) in table.iter_mut() {
        let Some(entries) = section.as_table_mut() else {
            continue;
        };
        for (key, value) in entries.iter_mut() {
            if is_secret(key) && value.as_str().is_some_and(|s| !s.is_empty()) {
                *value = toml::Value::String("<redacted>".into());
            }
        }
    }
    toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// Whether `ip` is an address of this host (binding a UDP socket to it succeeds).
fn is_local(ip: IpAddr) -> bool {
    ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Every check, in the order printed.
pub fn check(config: &Config, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    check_addresses(config, &mut out);
    check_tls(config, now, &mut out);
    check_ports(config, &mut out);
    out
}

fn check_addresses(c: &Config, out: &mut Vec<Finding>) {
    use Severity::*;
    let listen = c.server.listen.ip();
    if !is_local(listen) {
        out.push(Finding::new(
            Problem,
            "server.listen",
            format!("{listen} is not an address of this host; rakor serve cannot listen on it"),
        ));
    }
    if !is_local(c.media.bind_ip) {
        out.push(Finding::new(
            Problem,
            "media.bind_ip",
            format!("{} is not an address of this host", c.media.bind_ip),
        ));
    }
    for ip in c.effective_advertise_ips() {
        if is_local(ip) {
            out.push(Finding::new(
                Ok,
                "media.advertise_ips",
                format!("{ip} is an address of this host"),
            ));
        } else {
            out.push(Finding::new(
                Problem,
                "media.advertise_ips",
                format!(
                    "{ip} is not an address of this host: clients will send media there. Right \
                     only behind a 1:1 NAT that forwards {ip} (UDP and TCP, media port{}) to \
                     this host; otherwise advertise this host's LAN or public address",
                    if c.media.ice_tcp && c.media.ice_tcp_on_http_port {
                        " and the HTTPS port"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    if !c.server.tls_enabled() && !listen.to_canonical().is_loopback() {
        let proxied = c.server.public_url.trim().starts_with("https://");
        out.push(Finding::new(
            Warning,
            "server.tls_cert_file",
            if proxied {
                "plain HTTP on a non-loopback address: fine behind the TLS reverse proxy of \
                 server.public_url; browsers reaching this port directly refuse the camera"
                    .to_owned()
            } else {
                "plain HTTP on a non-loopback address and no https:// public_url: browsers on \
                 other machines will refuse the camera and microphone. Set server.tls_cert_file \
                 and server.tls_key_file, or use a TLS reverse proxy"
                    .to_owned()
            },
        ));
    }
}

fn check_tls(c: &Config, now: SystemTime, out: &mut Vec<Finding>) {
    use Severity::*;
    if !c.server.tls_enabled() {
        return;
    }
    let cert_file = &c.server.tls_cert_file;
    let chain = match crate::tls::read_cert_chain(cert_file) {
        Result::Ok(chain) => chain,
        Err(e) => {
            out.push(Finding::new(Problem, "server.tls_cert_file", e));
            return;
        }
    };
    match crate::tls::load_certified_key(cert_file, &c.server.tls_key_file) {
        Result::Ok(_) => out.push(Finding::new(
            Ok,
            "server.tls_key_file",
            "the private key belongs to the certificate",
        )),
        Err(e) => out.push(Finding::new(Problem, "server.tls_key_file", e)),
    }
    let Some(leaf) = chain.first() else { return };
    let parsed = match x509_parser::parse_x509_certificate(leaf) {
        Result::Ok((_, cert)) => cert,
        Err(e) => {
            out.push(Finding::new(
                Problem,
                "server.tls_cert_file",
                format!(
                    "{}: the certificate cannot be parsed: {e}",
                    cert_file.display()
                ),
            ));
            return;
        }
    };
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = parsed.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if until < now_s {
        out.push(Finding::new(
            Problem,
            "server.tls_cert_file",
            format!("the certificate expired on {}", validity.not_after),
        ));
    } else if from > now_s {
        out.push(Finding::new(
            Problem,
            "server.tls_cert_file",
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    } else if until - now_s < 14 * 86_400 {
        out.push(Finding::new(
            Warning,
            "server.tls_cert_file",
            format!(
                "the certificate expires on {} (renew it, then `systemctl reload rakor`)",
                validity.not_after
            ),
        ));
    } else {
        out.push(Finding::new(
            Ok,
            "server.tls_cert_file",
            format!("valid until {}", validity.not_after),
        ));
    }
    let (host, _) = c.public_host_port(c.server.listen);
    if c.server.public_url.trim().is_empty() && c.server.listen.ip().is_unspecified() {
        out.push(Finding::new(
            Warning,
            "server.public_url",
            "not set: cannot check which name the certificate must carry (set it to the \
             https:// address clients use)",
        ));
        return;
    }
    let names = cert_names(&parsed);
    if names.iter().any(|n| name_matches(n, &host)) {
        out.push(Finding::new(
            Ok,
            "server.tls_cert_file",
            format!("the certificate is for {host}"),
        ));
    } else {
        out.push(Finding::new(
            Problem,
            "server.tls_cert_file",
            format!(
                "the certificate is not for {host} (the host of {}); it names: {}",
                if c.server.public_url.trim().is_empty() {
                    "server.listen"
                } else {
                    "server.public_url"
                },
                if names.is_empty() {
                    "nothing (no subjectAltName)".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
}

/// The DNS names and IP addresses of the certificate's subjectAltName.
fn cert_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Result::Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A certificate name (possibly `*.example.org`) against a host name or IP literal.
fn name_matches(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    if let Some(suffix) = name.strip_prefix("*.") {
        return host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix);
    }
    match (name.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Result::Ok(a), Result::Ok(b)) => a == b,
        _ => name == host,
    }
}

fn check_ports(c: &Config, out: &mut Vec<Finding>) {
    use Severity::*;
    let mut tcp = vec![("server.listen", c.server.listen)];
    // One media port per media worker: media.port .. media.port + workers - 1.
    let media: Vec<SocketAddr> = if c.media.port == 0 {
        Vec::new()
    } else {
        (0..c.media_workers())
            .filter_map(|i| u16::try_from(usize::from(c.media.port) + i).ok())
            .map(|p| SocketAddr::new(c.media.bind_ip, p))
            .collect()
    };
    if c.media.ice_tcp {
        tcp.extend(media.iter().map(|m| ("media.port", *m)));
    }
    for (key, addr) in tcp {
        if addr.port() == 0 {
            continue;
        }
        match TcpListener::bind(addr) {
            Result::Ok(_) => out.push(Finding::new(Ok, key, format!("TCP {addr} is free"))),
            Err(e) => out.push(Finding::new(Problem, key, bind_problem("TCP", addr, &e))),
        }
    }
    for m in media {
        match UdpSocket::bind(m) {
            Result::Ok(_) => out.push(Finding::new(Ok, "media.port", format!("UDP {m} is free"))),
            Err(e) => out.push(Finding::new(
                Problem,
                "media.port",
                bind_problem("UDP", m, &e),
            )),
        }
    }
}

fn bind_problem(proto: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{proto} {addr} is in use (another rakor, or another program; `ss -lntup` shows which)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{proto} {addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE; the \
             systemd unit in config/ grants it)"
        ),
        _ => format!("{proto} {addr} cannot be bound: {e}"),
    }
}

/// Print the configuration and the findings; the exit code (0: no problem, 1: problems).
pub fn report(config: &Config) -> (String, bool) {
    let findings = check(config, SystemTime::now());
    let mut text = String::from("# Effective configuration (secrets redacted)\n\n");
    text.push_str(&render_effective(config));
    text.push_str("\n# Checks\n");
    let mut problems = 0usize;
    for f in &findings {
        let tag = match f.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "WARNING",
            Severity::Problem => {
                problems += 1;
                "PROBLEM"
            }
        };
        text.push_str(&format!("{tag}  {}: {}\n", f.key, f.message));
    }
    text.push_str(&match problems {
        0 => "\nNo problems found.\n".to_owned(),
        1 => "\n1 problem found.\n".to_owned(),
        n => format!("\n{n} problems found.\n"),
    });
    (text, problems > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::path::{Path, PathBuf};

    fn problems(f: &[Finding]) -> Vec<&Finding> {
        f.iter()
            .filter(|f| f.severity == Severity::Problem)
            .collect()
    }

    fn cert(dir: &Path, stem: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let c = params.self_signed(&key).unwrap();
        let (cp, kp) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cp, c.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        (cp, kp)
    }

    fn free_config() -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".parse().unwrap();
        c.media.port = 0;
        c
    }

    #[test]
    fn a_good_configuration_has_no_problem() {
        let dir = tempfile_dir("good");
        let (cp, kp) = cert(&dir, "good", &["vc.example.go.id"], false);
        let mut c = free_config();
        c.server.tls_cert_file = cp;
        c.server.tls_key_file = kp;
        c.server.public_url = "https://vc.example.go.id".into();
        let f = check(&c, SystemTime::now());
        assert!(problems(&f).is_empty(), "{f:#?}");
        let (text, failed) = report(&c);
        assert!(!failed && text.contains("No problems found"), "{text}");
    }

    #[test]
    fn finds_foreign_advertise_address_bad_certificates_and_busy_ports() {
        let dir = tempfile_dir("bad");
        // A TEST-NET address is not on this host.
        let mut c = free_config();
        c.media.bind_ip = "0.0.0.0".parse().unwrap();
        c.media.advertise_ips = vec!["192.0.2.77".parse().unwrap()];
        let f = check(&c, SystemTime::now());
        assert!(
            problems(&f)
                .iter()
                .any(|p| p.key == "media.advertise_ips" && p.message.contains("192.0.2.77")),
            "{f:#?}"
        );

        // A certificate for another host than public_url's.
        let (cp, kp) = cert(&dir, "other", &["other.example"], false);
        let mut c = free_config();
        c.server.tls_cert_file = cp.clone();
        c.server.tls_key_file = kp;
        c.server.public_url = "https://vc.example.go.id:8443".into();
        let f = check(&c, SystemTime::now());
        assert!(
            problems(&f)
                .iter()
                .any(|p| p.message.contains("not for vc.example.go.id")),
            "{f:#?}"
        );

        // An expired one, with a key of another certificate.
        let (ep, _) = cert(&dir, "expired", &["127.0.0.1"], true);
        let (_, wrong_key) = cert(&dir, "wrong", &["127.0.0.1"], false);
        let mut c = free_config();
        c.server.tls_cert_file = ep;
        c.server.tls_key_file = wrong_key;
        let f = check(&c, SystemTime::now());
        let p = problems(&f);
        assert!(p.iter().any(|p| p.message.contains("expired")), "{f:#?}");
        assert!(
            p.iter()
                .any(|p| p.key == "server.tls_key_file" && p.message.contains("does not belong")),
            "{f:#?}"
        );

        // Unreadable.
        let mut c = free_config();
        c.server.tls_cert_file = dir.join("missing.crt");
        c.server.tls_key_file = dir.join("missing.key");
        let f = check(&c, SystemTime::now());
        assert!(
            problems(&f)
                .iter()
                .any(|p| p.message.contains("cannot read")),
            "{f:#?}"
        );

        // Ports in use: the listen port (TCP) and the media port (UDP).
        let busy_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c = free_config();
        c.server.listen = busy_tcp.local_addr().unwrap();
        c.media.port = busy_udp.local_addr().unwrap().port();
        let f = check(&c, SystemTime::now());
        let p = problems(&f);
        assert!(
            p.iter()
                .any(|p| p.key == "server.listen" && p.message.contains("in use")),
            "{f:#?}"
        );
        assert!(
            p.iter()
                .any(|p| p.key == "media.port" && p.message.contains("UDP")),
            "{f:#?}"
        );
        let (_, failed) = report(&c);
        assert!(failed);
    }

    #[test]
    fn secrets_are_redacted_and_wildcards_match_one_label() {
        let mut c = Config::default();
        c.auth.signing_key =
            crate::config::SecretString::new("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==");
        let text = render_effective(&c);
        assert!(text.contains("signing_key = \"<redacted>\""), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(name_matches("*.example.org", "vc.example.org"));
        assert!(!name_matches("*.example.org", "a.vc.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(name_matches("VC.example.org", "vc.EXAMPLE.org"));
        assert!(name_matches("::1", "0:0::1"));
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rakor-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
