//! Tests of the configuration loader: defaults, file, environment, flags, and error messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::load::default_table;
use super::*;
use std::io::Write as _;
use std::path::Path;

const SHIPPED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/rakor.toml"
));

/// A config file with `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "rakor-config-test-{}-{}.toml",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let f = TempFile::new(text);
    load(Some(&f.0), &[], &CliOverrides::default())
}

fn err_text(text: &str) -> String {
    load_text(text).unwrap_err().to_string()
}

fn err_env(pairs: &[(&str, &str)]) -> String {
    load(None, &env(pairs), &CliOverrides::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_load_without_a_file() {
    let c = load(None, &[], &CliOverrides::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(
        c.server.listen,
        "127.0.0.1:7880".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.media.port, 7882);
    assert_eq!(c.server.data_dir, PathBuf::from("./rakor-data"));
    assert_eq!(c.public_base_url(c.server.listen), "http://127.0.0.1:7880");
    assert_eq!(
        c.effective_advertise_ips(),
        vec![IpAddr::from([127, 0, 0, 1])]
    );
    let sfu = c.sfu_config();
    assert_eq!(sfu.bind, "127.0.0.1:7882".parse::<SocketAddr>().unwrap());
    assert_eq!(sfu.keyframe_request_interval, Duration::from_millis(500));
    assert_eq!(sfu.max_participants_per_room, 100);
}

#[test]
fn shipped_file_documents_exactly_the_defaults() {
    let parsed: Config = toml::from_str(SHIPPED).unwrap();
    assert_eq!(
        parsed,
        Config::default(),
        "config/rakor.toml drifted from Config::default()"
    );
    // Every key is written out (not merely defaulted), and nothing else.
    let file: toml::Table = SHIPPED.parse().unwrap();
    let defaults = default_table().unwrap();
    for (section, keys) in &defaults {
        let written = file
            .get(section)
            .and_then(|v| v.as_table())
            .unwrap_or_else(|| panic!("[{section}] missing"));
        let want: Vec<&String> = keys.as_table().unwrap().keys().collect();
        let got: Vec<&String> = written.keys().collect();
        assert_eq!(got, want, "keys of [{section}] in config/rakor.toml");
    }
    assert_eq!(file.len(), defaults.len());
    // And it loads through the real loader.
    assert_eq!(load_text(SHIPPED).unwrap(), Config::default());
}

#[test]
fn configuration_doc_names_every_key_and_env_var() {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ));
    for (section, keys) in &default_table().unwrap() {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                doc.contains(&format!("`{section}.{key}`")),
                "docs/configuration.md lacks `{section}.{key}`"
            );
            assert!(
                doc.contains(&env_name(section, key)),
                "docs/configuration.md lacks {}",
                env_name(section, key)
            );
        }
    }
}

#[test]
fn file_overrides_defaults() {
    let c = load_text(
        "[server]\nlisten = \"0.0.0.0:9000\"\nshutdown_grace = \"2s\"\n\
         [media]\nport = 0\nbind_ip = \"0.0.0.0\"\nadvertise_ips = [\"192.168.1.10\"]\n\
         [limits]\nmax_participants_per_room = 60\n",
    )
    .unwrap();
    assert_eq!(
        c.server.listen,
        "0.0.0.0:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(2));
    assert_eq!(c.media.port, 0);
    assert_eq!(c.media.advertise_ips, vec![IpAddr::from([192, 168, 1, 10])]);
    assert_eq!(c.limits.max_participants_per_room, 60);
    assert_eq!(
        c.media.socket_buffer_bytes,
        4 * 1024 * 1024,
        "untouched keys keep defaults"
    );
    assert_eq!(
        c.public_base_url("0.0.0.0:9000".parse().unwrap()),
        "http://127.0.0.1:9000"
    );
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let f = TempFile::new("[media]\nport = 9000\n[server]\nlog = \"debug\"\n");
    let vars = env(&[
        ("RAKOR_MEDIA_PORT", "9100"),
        ("RAKOR_SERVER_DATA_DIR", "/tmp/rakor-env"),
        ("RAKOR_MEDIA_BIND_IP", "0.0.0.0"),
        ("RAKOR_MEDIA_ADVERTISE_IPS", "192.168.1.10, 10.0.0.2"),
        ("RAKOR_AUTH_DEFAULT_TTL", "30m"),
        ("RAKOR_SERVER_PUBLIC_URL", "https://vc.example.go.id/"),
        ("RAKOR_CONFIG", "ignored: not a config key"),
        ("RAKOR_BIN", "ignored too"),
        ("PATH", "/usr/bin"),
    ]);
    let c = load(Some(&f.0), &vars, &CliOverrides::default()).unwrap();
    assert_eq!(c.media.port, 9100);
    assert_eq!(c.server.log, "debug", "file value kept where env is silent");
    assert_eq!(c.server.data_dir, PathBuf::from("/tmp/rakor-env"));
    assert_eq!(c.media.advertise_ips.len(), 2);
    assert_eq!(c.auth.default_ttl, Duration::from_secs(1800));
    assert_eq!(
        c.public_base_url(c.server.listen),
        "https://vc.example.go.id"
    );

    let flags = CliOverrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        media_port: Some(9200),
        data_dir: Some(PathBuf::from("/tmp/rakor-flag")),
        advertise_ips: vec![IpAddr::from([10, 1, 1, 1])],
        media_bind_ip: None,
    };
    let c = load(Some(&f.0), &vars, &flags).unwrap();
    assert_eq!(c.media.port, 9200);
    assert_eq!(c.server.listen.port(), 0);
    assert_eq!(c.server.data_dir, PathBuf::from("/tmp/rakor-flag"));
    assert_eq!(c.media.advertise_ips, vec![IpAddr::from([10, 1, 1, 1])]);
}

#[test]
fn env_names_follow_section_and_key() {
    assert_eq!(env_name("media", "port"), "RAKOR_MEDIA_PORT");
    assert_eq!(env_name("server", "data_dir"), "RAKOR_SERVER_DATA_DIR");
    assert_eq!(
        env_name("limits", "max_frame_bytes"),
        "RAKOR_LIMITS_MAX_FRAME_BYTES"
    );
}

/// (what, error message, substrings it must contain)
#[test]
fn errors_name_the_key_table() {
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown key in file",
            err_text("[media]\nprot = 1\n"),
            &["unknown key \"media.prot\"", "did you mean \"port\""],
        ),
        (
            "unknown section",
            err_text("[medai]\nport = 1\n"),
            &["unknown key \"medai\"", "did you mean \"media\""],
        ),
        (
            "top-level key",
            err_text("listen = \"1.2.3.4:5\"\n"),
            &["unknown key \"listen\""],
        ),
        (
            "section not a table",
            err_text("media = 5\n"),
            &["media: must be a table"],
        ),
        (
            "wrong type in file",
            err_text("[media]\nport = \"abc\"\n"),
            &["media.port:", "\"abc\"", "rakor-config-test"],
        ),
        (
            "port out of range",
            err_text("[media]\nport = 70000\n"),
            &["media.port:", "70000"],
        ),
        (
            "bad duration",
            err_text("[server]\nshutdown_grace = \"5 parsecs\"\n"),
            &["server.shutdown_grace:", "invalid duration \"5 parsecs\""],
        ),
        (
            "duration without unit",
            err_text("[server]\nshutdown_grace = 5\n"),
            &["server.shutdown_grace:", "with a unit"],
        ),
        (
            "bad IP",
            err_text("[media]\nbind_ip = \"localhost\"\n"),
            &["media.bind_ip:", "IP address"],
        ),
        (
            "bad IP in list",
            err_text("[media]\nadvertise_ips = [\"10.0.0.1\", \"nope\"]\n"),
            &["media.advertise_ips", "IP address"],
        ),
        (
            "bad listen",
            err_text("[server]\nlisten = \"localhost:7880\"\n"),
            &["server.listen:", "socket address"],
        ),
        (
            "syntax error",
            err_text("[media\nport = 1\n"),
            &["not valid TOML"],
        ),
        (
            "env: bad integer",
            err_env(&[("RAKOR_MEDIA_PORT", "abc")]),
            &["media.port: invalid value \"abc\"", "RAKOR_MEDIA_PORT"],
        ),
        (
            "env: out of range",
            err_env(&[("RAKOR_MEDIA_PORT", "-1")]),
            &["media.port:", "RAKOR_MEDIA_PORT"],
        ),
        (
            "env: unknown key",
            err_env(&[("RAKOR_MEDIA_PROT", "1")]),
            &["RAKOR_MEDIA_PROT", "did you mean \"RAKOR_MEDIA_PORT\""],
        ),
        (
            "env: unknown key, far",
            err_env(&[("RAKOR_SERVER_XYZZY_FOO", "1")]),
            &["RAKOR_SERVER_XYZZY_FOO", "RAKOR_SERVER_LISTEN"],
        ),
        (
            "env: bad duration",
            err_env(&[("RAKOR_AUTH_MAX_TTL", "forever")]),
            &["auth.max_ttl:", "RAKOR_AUTH_MAX_TTL"],
        ),
        (
            "env: bad IP",
            err_env(&[("RAKOR_MEDIA_BIND_IP", "999.1.1.1")]),
            &["media.bind_ip:", "RAKOR_MEDIA_BIND_IP"],
        ),
        (
            "advertise 0.0.0.0",
            err_env(&[("RAKOR_MEDIA_ADVERTISE_IPS", "0.0.0.0")]),
            &["media.advertise_ips:", "RAKOR_MEDIA_ADVERTISE_IPS"],
        ),
        (
            "advertise LAN on loopback bind",
            err_env(&[("RAKOR_MEDIA_ADVERTISE_IPS", "192.168.1.10")]),
            &["media.advertise_ips:", "media.bind_ip"],
        ),
        (
            "ttl order",
            err_text("[auth]\ndefault_ttl = \"48h\"\n"),
            &["auth.default_ttl:", "max_ttl"],
        ),
        (
            "zero interval",
            err_text("[media]\nkeyframe_request_interval = \"0s\"\n"),
            &["media.keyframe_request_interval:"],
        ),
        (
            "zero limit",
            err_text("[limits]\nmax_tracks_per_participant = 0\n"),
            &["limits.max_tracks_per_participant:"],
        ),
        (
            "tiny frame limit",
            err_text("[limits]\nmax_frame_bytes = 10\n"),
            &["limits.max_frame_bytes:"],
        ),
        (
            "bad public url",
            err_text("[server]\npublic_url = \"vc.example.go.id\"\n"),
            &["server.public_url:", "http://"],
        ),
        (
            "bad log filter",
            err_env(&[("RAKOR_SERVER_LOG", "info,[[[")]),
            &["server.log:", "RAKOR_SERVER_LOG"],
        ),
        (
            "empty data dir",
            err_text("[server]\ndata_dir = \"\"\n"),
            &["server.data_dir:"],
        ),
        (
            "short signing key",
            err_env(&[("RAKOR_AUTH_SIGNING_KEY", "c2hvcnQ=")]),
            &["auth.signing_key:", "at least 32"],
        ),
        (
            "nice below -20",
            err_text("[media]\nthread_nice = -21\n"),
            &["media.thread_nice:", "between -20 and 19"],
        ),
        (
            "env: nice above 19",
            err_env(&[("RAKOR_MEDIA_THREAD_NICE", "20")]),
            &["media.thread_nice:", "between -20 and 19"],
        ),
        (
            "real-time priority above 99",
            err_text("[media]\nthread_realtime = 100\n"),
            &["media.thread_realtime:"],
        ),
        (
            "slice below the kernel's shortest",
            err_text("[media]\nthread_slice_us = 99\n"),
            &["media.thread_slice_us:", "between 100 and 100000"],
        ),
        (
            "env: slice above the kernel's longest",
            err_env(&[("RAKOR_MEDIA_THREAD_SLICE_US", "100001")]),
            &["media.thread_slice_us:", "between 100 and 100000"],
        ),
        (
            "signing key not base64",
            err_env(&[("RAKOR_AUTH_SIGNING_KEY", "secret value!")]),
            &["auth.signing_key:", "base64"],
        ),
    ];
    for (what, msg, needles) in cases {
        for needle in needles {
            assert!(
                msg.contains(needle),
                "case {what}: {msg:?} lacks {needle:?}"
            );
        }
    }
}

#[test]
fn errors_never_echo_the_signing_key() {
    let msg = err_env(&[("RAKOR_AUTH_SIGNING_KEY", "topsecret-but-not-base64!")]);
    assert!(!msg.contains("topsecret"), "{msg}");
    let msg = err_text("[auth]\nsigning_key = \"c2hvcnQtc2VjcmV0\"\n");
    assert!(!msg.contains("c2hvcnQtc2VjcmV0"), "{msg}");
    let mut c = Config::default();
    c.auth.signing_key = SecretString::new("abcdef");
    assert!(!format!("{c:?}").contains("abcdef"));
}

#[test]
fn a_good_signing_key_is_accepted_from_env() {
    let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="; // 32 bytes
    let c = load(
        None,
        &env(&[("RAKOR_AUTH_SIGNING_KEY", key)]),
        &CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.auth.signing_key.expose(), key);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let e = load(
        Some(Path::new("/nonexistent/rakor.toml")),
        &[],
        &CliOverrides::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/rakor.toml"), "{e}");
}

#[test]
fn storage_database_url_selects_postgres_and_is_never_shown() {
    let c = load(
        None,
        &env(&[(
            "RAKOR_STORAGE_DATABASE_URL",
            "postgres://rakor:s3cret@db.internal:5432/rakor",
        )]),
        &CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        c.postgres_url(),
        Some("postgres://rakor:s3cret@db.internal:5432/rakor")
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    assert_eq!(Config::default().postgres_url(), None);
    let e = err_env(&[("RAKOR_STORAGE_DATABASE_URL", "mysql://x@y/z")]);
    assert!(
        e.contains("storage.database_url") && e.contains("postgres://"),
        "{e}"
    );
}

#[test]
fn chat_limits_come_from_the_chat_section_and_its_env_overrides() {
    let d = Config::default().chat.limits();
    assert_eq!(d, rakor_sfu::ChatLimits::default());
    let vars = env(&[
        ("RAKOR_CHAT_MAX_CHARS", "140"),
        ("RAKOR_CHAT_BURST", "2"),
        ("RAKOR_CHAT_PER_SECOND", "4"),
        ("RAKOR_CHAT_HISTORY", "0"),
    ]);
    let c = load(None, &vars, &CliOverrides::default()).unwrap();
    let l = c.sfu_config().chat;
    assert_eq!(
        (l.max_chars, l.burst, l.interval, l.history),
        (140, 2, Duration::from_millis(250), 0)
    );
    for (pairs, key) in [
        (&[("RAKOR_CHAT_PER_SECOND", "0")][..], "chat.per_second"),
        (&[("RAKOR_CHAT_BURST", "0")][..], "chat.burst"),
        (&[("RAKOR_CHAT_MAX_CHARS", "0")][..], "chat.max_chars"),
        (&[("RAKOR_CHAT_MAX_CHARS", "100000")][..], "chat.max_chars"),
        (&[("RAKOR_CHAT_HISTORY", "5000")][..], "chat.history"),
    ] {
        let e = err_env(pairs);
        assert!(e.contains(key) && e.contains("RAKOR_CHAT_"), "{e}");
    }
    assert!(err_env(&[("RAKOR_CHAT_MAX_CHAR", "1")]).contains("RAKOR_CHAT_MAX_CHARS"));
    // A small frame limit does not make the default chat limit invalid (the frame limit
    // refuses long messages first).
    let small = load(
        None,
        &env(&[("RAKOR_LIMITS_MAX_FRAME_BYTES", "2048")]),
        &CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(small.chat.max_chars, 2000);
}

#[test]
fn cluster_keys_from_the_environment_and_their_requirements() {
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let c = load(
        None,
        &env(&[
            (
                "RAKOR_CLUSTER_REDIS_URL",
                "redis://:r3dis-pw@redis.internal:6379",
            ),
            ("RAKOR_CLUSTER_NODE_ID", "node-a"),
            ("RAKOR_CLUSTER_REGION", "kab-semarang"),
            ("RAKOR_AUTH_SIGNING_KEY", key),
            ("RAKOR_SERVER_PUBLIC_URL", "https://node-a.prov.example"),
        ]),
        &CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.redis_url(), Some("redis://:r3dis-pw@redis.internal:6379"));
    assert!(!format!("{c:?}").contains("r3dis-pw"));
    assert_eq!(c.cluster_node_id(), "node-a");
    assert_eq!(c.cluster.region, "kab-semarang");
    // The redirect URL: from server.public_url unless cluster.public_url is set.
    let listen = SocketAddr::from(([127, 0, 0, 1], 7880));
    assert_eq!(
        c.cluster_signal_url(listen),
        "wss://node-a.prov.example/rtc"
    );
    assert_eq!(
        Config::default().cluster_signal_url(listen),
        "ws://127.0.0.1:7880/rtc"
    );
    // A single node has no node id (its attendance rows are "").
    assert_eq!(Config::default().cluster_node_id(), "");
    // Every node must share the signing key (and the TURN secret when TURN is on).
    let e = err_env(&[("RAKOR_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379")]);
    assert!(e.contains("auth.signing_key"), "{e}");
    let e = err_env(&[
        ("RAKOR_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379"),
        ("RAKOR_AUTH_SIGNING_KEY", key),
        ("RAKOR_TURN_ENABLED", "true"),
    ]);
    assert!(e.contains("turn.secret"), "{e}");
    let e = err_env(&[("RAKOR_CLUSTER_REDIS_URL", "http://127.0.0.1:6379")]);
    assert!(
        e.contains("cluster.redis_url") && e.contains("redis://"),
        "{e}"
    );
}

#[test]
fn thread_nice_accepts_the_whole_nice_range() {
    for nice in [-20, 0, 19] {
        let c = load_text(&format!("[media]\nthread_nice = {nice}\n")).unwrap();
        assert_eq!(c.media.thread_nice, nice);
    }
    assert_eq!(
        load(None, &[], &CliOverrides::default())
            .unwrap()
            .media
            .thread_nice,
        -10
    );
}

#[test]
fn thread_slice_takes_the_kernel_range_and_the_environment() {
    for us in [0, 100, 100_000] {
        let c = load_text(&format!("[media]\nthread_slice_us = {us}\n")).unwrap();
        assert_eq!(c.media.thread_slice_us, us);
        assert_eq!(c.sfu_config().thread_slice_us, us);
    }
    let c = load(
        None,
        &env(&[("RAKOR_MEDIA_THREAD_SLICE_US", "250")]),
        &CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.sfu_config().thread_slice_us, 250);
    assert_eq!(
        load(None, &[], &CliOverrides::default())
            .unwrap()
            .media
            .thread_slice_us,
        DEFAULT_THREAD_SLICE_US
    );
}
