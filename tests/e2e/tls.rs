//! Built-in HTTPS against the real binary: a private CA and server certificates made by the
//! test (rcgen), `server.tls_cert_file` / `server.tls_key_file` from the environment, real
//! `rakor-client`s over `wss://` trusting the CA (`ClientOptions::tls_roots`, `rakor bot
//! --ca-file`), certificate reload on SIGHUP seen by new connections, and the one-port demux
//! under garbage, silent, slow-handshake and malformed-frame connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::tls::{https_get, served_certificate, TestCa};
use rakor_e2e::Server;
use rakor_proto::{ParticipantId, TrackKind};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const MEDIA_WAIT: Duration = Duration::from_secs(20);

fn tls_env<'a>(cert: &'a Path, key: &'a Path) -> Vec<(&'static str, &'a str)> {
    vec![
        ("RAKOR_SERVER_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("RAKOR_SERVER_TLS_KEY_FILE", key.to_str().unwrap()),
    ]
}

fn wss_url(server: &Server) -> String {
    format!("wss://{}/rtc", server.http)
}

/// Wait for a server output line containing `needle` (the server's own event, not a sleep).
fn wait_output(server: &Server, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.output.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("the server never printed {needle:?}"),
        }
    }
}

fn has_media_from(r: &Report, from: &ParticipantId, min: u64) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= min && v.keyframes >= 1 && v.payload_matches >= min)
        && a.is_some_and(|a| a.packets >= min && a.payload_matches >= min)
}

/// Two participants join over `wss://` (the client trusts the test CA), exchange audio and
/// video; `/healthz` answers over HTTPS; the banner and join links say https/wss; a client
/// that does not trust the CA is refused at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_join_with_a_private_ca() {
    let ca = TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &["127.0.0.1", "localhost"], 1).unwrap();
    let server = Server::start_with_env(&[], &tls_env(&cert, &key)).unwrap();

    let (status, body) = https_get(
        ca.client_config().unwrap(),
        server.http,
        "127.0.0.1",
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");

    let roots = rakor_client::tls::roots_with_ca_file(&ca.ca_file).unwrap();
    let join = |id: &str, publish: bool| {
        let token = server.token("tls", id, "participant").unwrap();
        let mut opts = ClientOptions::new(wss_url(&server), token).publish(publish, publish);
        opts.tls_roots = Some(roots.clone());
        Client::connect(opts)
    };
    let a = join("a", true).await.expect("a joins over wss://");
    let b = join("b", false).await.expect("b joins over wss://");
    let a_id = a.participant_id().clone();
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        let r = b.stats();
        if has_media_from(&r, &a_id, 30) {
            assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no media over wss: {}",
            r.to_json()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = b.leave().await;

    // Without the CA: the handshake fails (the system roots do not know it).
    let token = server.token("tls", "stranger", "participant").unwrap();
    let err = Client::connect(ClientOptions::new(wss_url(&server), token).receive_only())
        .await
        .err()
        .expect("an untrusted certificate must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "unexpected error: {err}"
    );
    drop(a);
}

/// `rakor bot --ca-file` joins a `wss://` server signed by a private CA and reports the other
/// bot's media; without `--ca-file` it fails.
#[test]
fn rakor_bot_trusts_a_private_ca_with_ca_file() {
    let ca = TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &["127.0.0.1"], 1).unwrap();
    let server = Server::start_with_env(&[], &tls_env(&cert, &key)).unwrap();
    let bot = |id: &str, ca_file: Option<&Path>| {
        let token = server.token("bots", id, "participant").unwrap();
        let mut cmd = std::process::Command::new(rakor_e2e::rakor_bin());
        cmd.args(["bot", "--url", &wss_url(&server), "--token", &token])
            .args(["--duration", "6s", "--report", "json"]);
        if let Some(f) = ca_file {
            cmd.arg("--ca-file").arg(f);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let b1 = bot("bot-1", Some(&ca.ca_file));
    let b2 = bot("bot-2", Some(&ca.ca_file));
    let reports: Vec<Report> = [b1, b2]
        .into_iter()
        .map(|b| {
            let out = b.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "rakor bot --ca-file failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let ids: Vec<ParticipantId> = reports
        .iter()
        .map(|r| r.participant_id.clone().unwrap())
        .collect();
    assert!(
        has_media_from(&reports[0], &ids[1], 20),
        "{}",
        reports[0].to_json()
    );
    assert!(
        has_media_from(&reports[1], &ids[0], 20),
        "{}",
        reports[1].to_json()
    );

    let out = bot("bot-3", None).wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "a bot without --ca-file must not trust the private CA"
    );
}

/// SIGHUP re-reads the certificate: a new connection gets the new one (its serial number and
/// bytes); a bad new certificate keeps the old one in use and logs an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let ca = TestCa::new().unwrap();
    let (cert, key, der1) = ca.issue("live", &["127.0.0.1"], 1001).unwrap();
    let mut server = Server::start_with_env(&[], &tls_env(&cert, &key)).unwrap();
    let cfg = ca.client_config().unwrap();
    let served = served_certificate(cfg.clone(), server.http, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(served, der1, "the first certificate is served");
    // An open connection keeps working across the reload.
    let open = rakor_e2e::tls::connect(cfg.clone(), server.http, "127.0.0.1")
        .await
        .unwrap();

    let (c2, k2, der2) = ca.issue("next", &["127.0.0.1"], 1002).unwrap();
    std::fs::copy(&c2, &cert).unwrap();
    std::fs::copy(&k2, &key).unwrap();
    server.signal(libc::SIGHUP).unwrap();
    wait_output(&server, "TLS certificate reloaded", Duration::from_secs(10));
    let served = served_certificate(cfg.clone(), server.http, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(
        served, der2,
        "after SIGHUP a new connection gets the new certificate"
    );
    let serial = x509_serial(&served);
    assert_eq!(
        serial,
        1002u64
            .to_be_bytes()
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<_>>()
    );

    // A broken certificate file: the reload fails, the last good certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal(libc::SIGHUP).unwrap();
    wait_output(&server, "NOT reloaded", Duration::from_secs(10));
    let served = served_certificate(cfg.clone(), server.http, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(served, der2, "a bad new certificate keeps the old one");
    let (status, _) = https_get(cfg, server.http, "127.0.0.1", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    drop(open);
    assert!(server.is_running(), "rakor exited");
}

/// The serial number's content bytes (leading zero stripped) of a DER certificate: the first
/// INTEGER inside tbsCertificate after the optional [0] version.
fn x509_serial(der: &[u8]) -> Vec<u8> {
    fn header(b: &[u8]) -> (usize, usize) {
        // (header length, content length)
        let l = b[1] as usize;
        if l < 0x80 {
            (2, l)
        } else {
            let n = l & 0x7f;
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | b[2 + i] as usize;
            }
            (2 + n, len)
        }
    }
    let (h, _) = header(der); // Certificate SEQUENCE
    let tbs = &der[h..];
    let (h, _) = header(tbs); // tbsCertificate SEQUENCE
    let mut p = &tbs[h..];
    if p[0] == 0xa0 {
        let (h, l) = header(p);
        p = &p[h + l..];
    }
    assert_eq!(p[0], 0x02, "serial INTEGER");
    let (h, l) = header(p);
    p[h..h + l]
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect()
}

/// Bad connections on the one port — silence, garbage, a TLS handshake that stops after three
/// bytes, a half-sent RFC 4571 header, a well-framed STUN header followed by junk, plain HTTP
/// on the HTTPS port — do not stop an HTTPS request from another client, and each is closed
/// within the header-read timeout (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_on_the_port_do_not_stop_https() {
    let ca = TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &["127.0.0.1"], 1).unwrap();
    let mut env = tls_env(&cert, &key);
    env.push(("RAKOR_LIMITS_HTTP_HEADER_READ_TIMEOUT", "2s"));
    let server = Server::start_with_env(&[], &env).unwrap();
    let addr = server.http;

    let mut stun_frame = vec![0x00, 28, 0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    stun_frame.extend_from_slice(&[9u8; 12]); // transaction id
    stun_frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]); // junk attribute
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("silent", vec![]),
        (
            "garbage",
            b"\xff\xfe\x00garbage\x01\x02\x03\x04\x05".to_vec(),
        ),
        ("slow TLS handshake", vec![0x16, 0x03, 0x01]),
        ("half an RFC 4571 header", vec![0x00, 0x1c, 0x00, 0x01]),
        ("STUN frame for no connection", stun_frame),
        (
            "plain HTTP on HTTPS",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    let mut bad = Vec::new();
    for (what, bytes) in &cases {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        bad.push((*what, s, Instant::now()));
    }
    // Another client is served at once, while every bad connection is still open or closing.
    let t = Instant::now();
    let (status, _) = https_get(ca.client_config().unwrap(), addr, "127.0.0.1", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "HTTPS waited for the bad connections: {:?}",
        t.elapsed()
    );
    // Each bad connection is closed by the server within the 2 s timeout (+ slack).
    for (what, mut s, opened) in bad {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{what}: not closed by the server: {e}"),
            }
        }
        let took = opened.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{what}: closed only after {took:?}"
        );
        if what == "plain HTTP on HTTPS" {
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("HTTP/1.1 400") && text.contains("https://"),
                "{text}"
            );
        }
        eprintln!("{what}: closed after {took:?}");
    }
    // And the server still serves.
    let (status, _) = https_get(ca.client_config().unwrap(), addr, "127.0.0.1", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// A start with a key that does not belong to the certificate stops with a message naming
/// the keys; a plain-HTTP start on a non-loopback address warns about the camera.
#[test]
fn mismatched_key_refuses_to_start() {
    let ca = TestCa::new().unwrap();
    let (cert, _, _) = ca.issue("a", &["127.0.0.1"], 1).unwrap();
    let (_, other_key, _) = ca.issue("b", &["127.0.0.1"], 2).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(rakor_e2e::rakor_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--data-dir",
        ])
        .arg(data.path())
        .envs(tls_env(&cert, &other_key))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls_cert_file") && err.contains("does not belong"),
        "{err}"
    );
}

/// `rakor check-config` through the binary: exit 1 with a PROBLEM line for an advertised
/// address that is not this host's (the signing key redacted in the printed configuration);
/// exit 0 for a configuration that is fine here.
#[test]
fn check_config_exit_codes() {
    let data = tempfile::tempdir().unwrap();
    let key = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
    let out = std::process::Command::new(rakor_e2e::rakor_bin())
        .args([
            "check-config",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
        ])
        .args([
            "--media-bind-ip",
            "0.0.0.0",
            "--advertise-ip",
            "192.0.2.44",
            "--data-dir",
        ])
        .arg(data.path())
        .env("RAKOR_AUTH_SIGNING_KEY", key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("PROBLEM  media.advertise_ips: 192.0.2.44"),
        "{text}"
    );
    assert!(
        text.contains("signing_key = \"<redacted>\"") && !text.contains(key),
        "{text}"
    );

    let out = std::process::Command::new(rakor_e2e::rakor_bin())
        .args([
            "check-config",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No problems found"), "{text}");
}
